"""AdaTAD: chunked VideoMAE encoder with adapters + ActionFormer head + detection loss.

Takes raw uint8 frames so that normalisation (docs/recipe.md §3: RGB, mean/std on the 0-255 scale)
runs on the model's device, next to the backbone.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from adatad.models.actionformer import ActionFormerHead
from adatad.models.chunked import ChunkedEncoder
from adatad.models.losses import DetectionLoss
from adatad.postprocess import Detections, decode_window

PIXEL_MEAN = (123.675, 116.28, 103.53)
PIXEL_STD = (58.395, 57.12, 57.375)


class AdaTAD(nn.Module):
    """End-to-end detector. Parameter names: `encoder.backbone.*` (frozen ViT, `*.adapter.*` trained),
    `head.*` (detector); `criterion` holds only the loss-normaliser buffer."""

    def __init__(self, encoder: ChunkedEncoder, head: ActionFormerHead, criterion: DetectionLoss,
                 pixel_mean: tuple[float, float, float] = PIXEL_MEAN,
                 pixel_std: tuple[float, float, float] = PIXEL_STD) -> None:
        super().__init__()
        if head.strides != criterion.strides:
            raise ValueError(f"head strides {head.strides} differ from loss strides {criterion.strides}")
        self.encoder = encoder
        self.head = head
        self.criterion = criterion
        # Non-persistent: constants of the recipe, not learnt state (kept out of checkpoints and EMA).
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(1, 3, 1, 1, 1), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(1, 3, 1, 1, 1), persistent=False)

    def normalize(self, frames: Tensor) -> Tensor:
        """uint8 (B, T, H, W, 3) RGB -> float32 (B, 3, T, H, W) normalised, on the model's device."""
        if frames.dim() != 5 or frames.shape[-1] != 3:
            raise ValueError(f"expected frames (B, T, H, W, 3), got {tuple(frames.shape)}")
        x = frames.to(self.pixel_mean.device, non_blocking=True).permute(0, 4, 1, 2, 3).float()
        return (x - self.pixel_mean) / self.pixel_std

    def _heads(self, frames: Tensor, masks: Tensor) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        feats = self.encoder(self.normalize(frames))
        masks = masks.to(feats.device, non_blocking=True).bool()
        if masks.shape != (feats.shape[0], feats.shape[2]):
            raise ValueError(f"masks {tuple(masks.shape)} do not match the positions of the frames (B={feats.shape[0]}, "
                             f"positions={feats.shape[2]} = {frames.shape[1]} frames / "
                             f"{self.encoder.frames_per_position} per position)")
        return self.head(feats, masks)

    def forward(self, frames: Tensor, masks: Tensor, segments: Tensor, labels: Tensor,
                num_segments: Tensor) -> dict[str, Tensor]:
        """Training losses {"loss", "cls_loss", "reg_loss"}; frames (B, N * frames_per_position, H, W, 3),
        masks (B, N) per position, segments (B, M, 2) in window positions,
        labels (B, M) padded with -1, num_segments (B,) real entries per video."""
        cls_logits, reg_offsets, level_masks = self._heads(frames, masks)
        counts = [int(n) for n in num_segments.tolist()]
        if len(counts) != frames.shape[0] or any(n < 0 or n > segments.shape[1] for n in counts):
            raise ValueError(f"num_segments {counts} does not fit segments {tuple(segments.shape)}")
        gt_segments = [segments[i, :n].float() for i, n in enumerate(counts)]
        gt_labels = [labels[i, :n].long() for i, n in enumerate(counts)]
        for i, lab in enumerate(gt_labels):
            if lab.numel() and (lab.min() < 0 or lab.max() >= self.criterion.num_classes):
                raise ValueError(f"video {i}: labels {lab.tolist()} outside [0, {self.criterion.num_classes})")
        return self.criterion(cls_logits, reg_offsets, level_masks, gt_segments, gt_labels)

    @torch.no_grad()
    def predict(self, frames: Tensor, masks: Tensor, pre_nms_thresh: float | None = 0.001,
                pre_nms_topk: int | None = 2000) -> list[Detections]:
        """Per-window detections in window positions (call `eval()` first for deterministic output);
        None for the threshold or the top-k keeps every valid (position, class) pair."""
        cls_logits, reg_offsets, level_masks = self._heads(frames, masks)
        return decode_window(cls_logits, reg_offsets, level_masks, self.head.strides,
                             pre_nms_thresh=pre_nms_thresh, pre_nms_topk=pre_nms_topk)
