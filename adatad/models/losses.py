"""Training losses of the ActionFormer head: sigmoid focal loss + 1-D DIoU loss, normalised by an
EMA of the number of positive points.

Recipe: docs/recipe.md §6, rows "Losses".
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn
from torchvision.ops import sigmoid_focal_loss

from adatad.models.assigner import assign_targets, make_points


def decode_offsets(points: Tensor, offsets: Tensor) -> Tensor:
    """(..., 2) offsets in stride units at points (..., 4) -> absolute segments (..., 2) in positions."""
    pos, stride = points[..., 0], points[..., 3]
    return torch.stack([pos - offsets[..., 0] * stride, pos + offsets[..., 1] * stride], dim=-1)


def diou_loss_1d(pred: Tensor, target: Tensor, eps: float = 1e-7) -> Tensor:
    """Per-pair DIoU loss of 1-D segments (M, 2): 1 - IoU + centre_distance^2 / enclosing_length^2."""
    inter = (torch.minimum(pred[:, 1], target[:, 1]) - torch.maximum(pred[:, 0], target[:, 0])).clamp(min=0)
    union = (pred[:, 1] - pred[:, 0]) + (target[:, 1] - target[:, 0]) - inter
    iou = inter / union.clamp(min=eps)
    enclosing = torch.maximum(pred[:, 1], target[:, 1]) - torch.minimum(pred[:, 0], target[:, 0])
    centre_dist = 0.5 * ((pred[:, 0] + pred[:, 1]) - (target[:, 0] + target[:, 1]))
    return 1.0 - iou + centre_dist.square() / enclosing.square().clamp(min=eps)


class DetectionLoss(nn.Module):
    """Assignment + focal (classification) + DIoU (regression) losses of one batch.

    `loss_normalizer` is a buffer (saved with the model, averaged by EMA) holding an EMA of
    max(#positive points, 1); it is updated on every training-mode forward. In eval mode the
    batch's own max(#pos, 1) is used, as in the reference.
    `filter_similar_gt` False gives a point the classes of every GT it qualifies for (`assign_targets`).
    `label_smoothing` s turns targets t into t (1 - s) + s / (K + 1); `loss_weight` multiplies the
    regression loss (the returned "reg_loss" is the weighted one, as OpenTAD logs it); a weight
    <= 0 means OpenTAD's adaptive weight cls_loss / max(reg_loss, 0.01), without gradient.
    """

    def __init__(self, num_classes: int, strides: Sequence[int], regression_ranges: Sequence[tuple[float, float]],
                 center_sample_radius: float = 1.5, focal_alpha: float = 0.25, focal_gamma: float = 2.0,
                 init_loss_norm: float = 100.0, loss_norm_momentum: float = 0.9, label_smoothing: float = 0.0,
                 loss_weight: float = 1.0, filter_similar_gt: bool = True):
        super().__init__()
        if len(strides) != len(regression_ranges):
            raise ValueError(f"{len(strides)} strides but {len(regression_ranges)} regression ranges")
        self.num_classes = num_classes
        self.strides = list(strides)
        self.regression_ranges = [(float(lo), float(hi)) for lo, hi in regression_ranges]
        self.center_sample_radius = center_sample_radius
        self.focal_alpha = focal_alpha
        self.focal_gamma = focal_gamma
        self.loss_norm_momentum = loss_norm_momentum
        self.label_smoothing = label_smoothing
        self.loss_weight = loss_weight
        self.similar_len_tol = 1e-3 if filter_similar_gt else None  # `assign_targets`
        self.register_buffer("loss_normalizer", torch.tensor(float(init_loss_norm)))

    def forward(self, cls_logits: list[Tensor], reg_offsets: list[Tensor], level_masks: list[Tensor],
                gt_segments: list[Tensor], gt_labels: list[Tensor]) -> dict[str, Tensor]:
        if len(gt_segments) != cls_logits[0].shape[0] or len(gt_labels) != len(gt_segments):
            raise ValueError(f"batch of {cls_logits[0].shape[0]} but {len(gt_segments)} gt_segments "
                             f"and {len(gt_labels)} gt_labels")
        device = cls_logits[0].device
        points = make_points([m.shape[1] for m in level_masks], self.strides, self.regression_ranges, device=device)
        targets = [assign_targets(points, s.to(device), lab.to(device), self.num_classes, self.center_sample_radius,
                                  self.similar_len_tol)
                   for s, lab in zip(gt_segments, gt_labels, strict=True)]
        gt_cls = torch.stack([t[0] for t in targets])  # (B, P, K)
        gt_reg = torch.stack([t[1] for t in targets])  # (B, P, 2)

        logits = torch.cat(cls_logits, dim=1).float()  # (B, P, K)
        offsets = torch.cat(reg_offsets, dim=1).float()  # (B, P, 2)
        valid = torch.cat(level_masks, dim=1).bool()  # (B, P)
        pos = (gt_cls.sum(-1) > 0) & valid
        num_pos = pos.sum().clamp(min=1).to(torch.float32)  # tensor: no host sync on GPU

        if self.training:
            m = self.loss_norm_momentum
            self.loss_normalizer.mul_(m).add_((1 - m) * num_pos.detach())
            normalizer = self.loss_normalizer.clone()
        else:
            normalizer = num_pos

        target = gt_cls[valid]
        if self.label_smoothing > 0:
            target = target * (1 - self.label_smoothing) + self.label_smoothing / (self.num_classes + 1)
        cls_loss = sigmoid_focal_loss(logits[valid], target, alpha=self.focal_alpha, gamma=self.focal_gamma,
                                      reduction="sum") / normalizer

        pts = points.expand(pos.shape[0], -1, -1)[pos]  # (M, 4)
        pred_seg = decode_offsets(pts, offsets[pos])
        gt_seg = decode_offsets(pts, gt_reg[pos])
        reg_loss = diou_loss_1d(pred_seg, gt_seg).sum() / normalizer  # 0 (with a graph) when no positives
        if self.loss_weight > 0:
            reg_loss = reg_loss * self.loss_weight
        else:
            reg_loss = reg_loss * (cls_loss.detach() / reg_loss.detach().clamp(min=0.01))
        return {"loss": cls_loss + reg_loss, "cls_loss": cls_loss, "reg_loss": reg_loss}
