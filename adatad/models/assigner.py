"""Points of the feature pyramid and their training targets (ActionFormer centre-sampling assignment).

Recipe: docs/recipe.md §6, rows "Points" and "Targets". Positions are window positions
(one sampled frame = 1); level l's point t sits at t * stride_l (no half-cell offset).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def make_points(level_lengths: Sequence[int], strides: Sequence[int],
                regression_ranges: Sequence[tuple[float, float]], device: torch.device | str | None = None,
                dtype: torch.dtype = torch.float32) -> Tensor:
    """All points of all levels, concatenated: (P, 4) = [position, range_lo, range_hi, stride]."""
    if not len(level_lengths) == len(strides) == len(regression_ranges):
        raise ValueError(f"levels disagree: {len(level_lengths)} lengths, {len(strides)} strides, "
                         f"{len(regression_ranges)} regression ranges")
    rows = []
    for length, stride, (lo, hi) in zip(level_lengths, strides, regression_ranges, strict=True):
        pos = torch.arange(length, device=device, dtype=dtype) * stride
        extra = torch.tensor([lo, hi, stride], device=device, dtype=dtype).expand(length, 3)
        rows.append(torch.cat([pos[:, None], extra], dim=1))
    return torch.cat(rows, dim=0)


@torch.no_grad()
def assign_targets(points: Tensor, gt_segments: Tensor, gt_labels: Tensor, num_classes: int,
                   center_sample_radius: float = 1.5, similar_len_tol: float | None = 1e-3) -> tuple[Tensor, Tensor]:
    """Targets of one video: cls (P, K) multi-hot in {0, 1} and reg (P, 2) = (left, right) / stride.

    A point is positive for a GT when it lies strictly inside centre +- radius * stride clipped to the
    GT, and the GT's max(left, right) is within the level's regression range. Among qualifying GTs the
    shortest wins the regression target; every GT within `similar_len_tol` of that length adds its
    class (THUMOS has near-duplicate annotations); `similar_len_tol=None` lets every qualifying GT add
    its class (OpenTAD's `filter_similar_gt=False`, the Ego4D row). Vectorised over points x GTs.
    """
    num_pts = points.shape[0]
    gt_segments = gt_segments.to(points.dtype).reshape(-1, 2)
    if gt_segments.shape[0] == 0:
        return points.new_zeros((num_pts, num_classes)), points.new_zeros((num_pts, 2))
    pos, lo, hi, stride = points[:, 0:1], points[:, 1:2], points[:, 2:3], points[:, 3:4]  # (P, 1)
    starts, ends = gt_segments[None, :, 0], gt_segments[None, :, 1]  # (1, N)

    left, right = pos - starts, ends - pos  # (P, N)
    centre = 0.5 * (starts + ends)
    radius = stride * center_sample_radius
    inside_centre = torch.minimum(pos - torch.maximum(centre - radius, starts),
                                  torch.minimum(centre + radius, ends) - pos) > 0
    max_dist = torch.maximum(left, right)
    in_range = (max_dist >= lo) & (max_dist <= hi)

    lens = (ends - starts).expand(num_pts, -1)
    lens = lens.masked_fill(~(inside_centre & in_range), float("inf"))
    min_len, min_idx = lens.min(dim=1)  # (P,)
    chosen = torch.isfinite(lens)  # (P, N)
    if similar_len_tol is not None:
        chosen &= lens <= min_len[:, None] + similar_len_tol

    one_hot = F.one_hot(gt_labels.long().reshape(-1), num_classes).to(points.dtype)  # (N, K)
    cls_targets = (chosen.to(points.dtype) @ one_hot).clamp_(max=1.0)
    idx = torch.arange(num_pts, device=points.device)
    reg_targets = torch.stack([left[idx, min_idx], right[idx, min_idx]], dim=1) / stride
    # Points without a GT keep whatever GT 0 gave them; only positive points' targets are ever used.
    return cls_targets, reg_targets
