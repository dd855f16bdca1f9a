"""From head outputs to per-video detections: decode windows, convert to seconds, merge windows with
Gaussian soft-NMS, and lay results out as the THUMOS/ActivityNet results json.

Spec: /work/shared/spec/adatad.md section 8.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor


@dataclass
class Detections:
    """Detections of one window or video (CPU tensors): segments (M, 2) float32, scores (M,) float32,
    labels (M,) int64. Units are window positions or seconds depending on the stage."""

    segments: Tensor
    scores: Tensor
    labels: Tensor

    def __post_init__(self) -> None:
        n = self.scores.shape[0]
        if self.segments.shape != (n, 2) or self.labels.shape != (n,):
            raise ValueError(f"Detections: inconsistent shapes segments {tuple(self.segments.shape)}, "
                             f"scores {tuple(self.scores.shape)}, labels {tuple(self.labels.shape)}")

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    @classmethod
    def empty(cls) -> Detections:
        return cls(torch.zeros(0, 2), torch.zeros(0), torch.zeros(0, dtype=torch.long))

    @classmethod
    def cat(cls, dets: Sequence[Detections]) -> Detections:
        if not dets:
            return cls.empty()
        return cls(torch.cat([d.segments for d in dets]), torch.cat([d.scores for d in dets]),
                   torch.cat([d.labels for d in dets]))


@torch.no_grad()
def decode_window(cls_logits: list[Tensor], reg_offsets: list[Tensor], level_masks: list[Tensor],
                  strides: Sequence[int], pre_nms_thresh: float = 0.001, pre_nms_topk: int = 2000) -> list[Detections]:
    """Per video of the batch: sigmoid scores of every valid (point, class) pair, keep those above
    `pre_nms_thresh`, then the `pre_nms_topk` best; segments in window positions
    [t*s - left*s, t*s + right*s]. No NMS here: windows are merged per video later."""
    device = cls_logits[0].device
    pos = torch.cat([torch.arange(m.shape[1], device=device, dtype=torch.float32) * s
                     for m, s in zip(level_masks, strides, strict=True)])
    stride = torch.cat([torch.full((m.shape[1],), float(s), device=device)
                        for m, s in zip(level_masks, strides, strict=True)])
    scores = torch.cat(cls_logits, dim=1).float().sigmoid()  # (B, P, K)
    offsets = torch.cat(reg_offsets, dim=1).float()  # (B, P, 2)
    valid = torch.cat(level_masks, dim=1).bool()  # (B, P)
    scores = scores.masked_fill(~valid[..., None], 0.0)
    num_classes = scores.shape[-1]

    out = []
    for b in range(scores.shape[0]):
        flat = scores[b].flatten()
        top_scores, top_idx = flat.topk(min(pre_nms_topk, flat.numel()))  # sorted, descending
        keep = top_scores > pre_nms_thresh
        top_scores, top_idx = top_scores[keep], top_idx[keep]
        pt = torch.div(top_idx, num_classes, rounding_mode="floor")
        labels = top_idx % num_classes
        p, s = pos[pt], stride[pt]
        segs = torch.stack([p - offsets[b, pt, 0] * s, p + offsets[b, pt, 1] * s], dim=1)
        out.append(Detections(segs.cpu(), top_scores.cpu(), labels.cpu()))
    return out


def window_to_seconds(dets: Detections, window_start_frame: float, frame_stride: float, fps: float,
                      duration: float) -> Detections:
    """Window positions -> seconds of the video: (pos * frame_stride + window_start_frame) / fps,
    clamped to [0, duration]."""
    segs = (dets.segments.double() * frame_stride + window_start_frame) / fps
    segs = segs.clamp(min=0.0, max=float(duration)).to(torch.float32)
    return Detections(segs, dets.scores.clone(), dets.labels.clone())


def soft_nms(dets: Detections, sigma: float = 0.7, max_seg_num: int = 2000, min_score: float = 0.0) -> Detections:
    """Gaussian soft-NMS per class (score *= exp(-IoU^2 / sigma) against each pick), keeping the overall
    top `max_seg_num`, sorted by descending score.

    One greedy loop over picks for all classes together: each step takes the best remaining box of any
    class and decays only its own class's boxes (a contiguous block after sorting by label). The picked
    scores never increase, so the first `max_seg_num` picks are exactly the reference's
    "per class, then overall top max_seg_num"; the loop stops there. Boxes whose decayed score falls
    below `min_score` are dropped (as the reference's C++ loop does).
    """
    if not sigma > 0:
        raise ValueError(f"soft_nms: sigma must be > 0, got {sigma}")
    n = len(dets)
    if n == 0 or max_seg_num <= 0:
        return Detections.empty()
    labels_in = dets.labels.cpu().numpy()
    order = np.argsort(labels_in, kind="stable")  # classes become contiguous blocks
    seg = dets.segments.cpu().numpy().astype(np.float64)[order]
    score = dets.scores.cpu().numpy().astype(np.float64)[order]
    lab = labels_in[order]
    starts, ends = seg[:, 0].copy(), seg[:, 1].copy()
    lengths = ends - starts
    bounds = np.flatnonzero(np.diff(lab)) + 1
    block_lo = np.concatenate([[0], bounds])
    block_hi = np.concatenate([bounds, [n]])

    # Current best (score, index) of each class block; -inf marks an exhausted block.
    best_idx = np.array([lo + np.argmax(score[lo:hi]) for lo, hi in zip(block_lo, block_hi, strict=True)])
    best_score = score[best_idx].copy()
    pick_idx = np.empty(min(n, max_seg_num), dtype=np.int64)
    pick_score = np.empty(len(pick_idx))
    count = 0
    while count < len(pick_idx):
        c = int(np.argmax(best_score))
        top = best_score[c]
        if not top >= min_score:  # also stops on -inf (everything picked)
            break
        i = int(best_idx[c])
        pick_idx[count], pick_score[count] = i, top
        count += 1
        lo, hi = block_lo[c], block_hi[c]
        score[i] = -np.inf
        inter = np.clip(np.minimum(ends[lo:hi], ends[i]) - np.maximum(starts[lo:hi], starts[i]), 0.0, None)
        iou = inter / np.maximum(lengths[lo:hi] + lengths[i] - inter, 1e-8)
        block = score[lo:hi]
        # Weight floored at exp(-700) > 0 so that -inf (picked / dropped) entries never become NaN.
        block *= np.exp(np.maximum(-(iou * iou) / sigma, -700.0))
        if min_score > 0:
            block[block < min_score] = -np.inf
        j = int(np.argmax(block))
        best_idx[c], best_score[c] = lo + j, block[j]

    sel = pick_idx[:count]
    return Detections(torch.from_numpy(seg[sel].astype(np.float32)),
                      torch.from_numpy(pick_score[:count].astype(np.float32)),
                      torch.from_numpy(lab[sel].astype(np.int64)))


def merge_video(dets_list: Sequence[Detections], sigma: float = 0.7, max_seg_num: int = 2000,
                min_score: float = 0.0) -> Detections:
    """All windows of one video (already in seconds) -> one soft-NMS over their union."""
    return soft_nms(Detections.cat(list(dets_list)), sigma=sigma, max_seg_num=max_seg_num, min_score=min_score)


def detections_to_entries(dets: Detections, class_names: Sequence[str]) -> list[dict]:
    """Result entries of one video: segment rounded to 2 decimals, score to 4, label as class name."""
    num = len(class_names)
    segs, scores, labels = dets.segments.tolist(), dets.scores.tolist(), dets.labels.tolist()
    entries = []
    for (s, e), score, label in zip(segs, scores, labels, strict=True):
        if not 0 <= label < num:
            raise ValueError(f"detection label {label} outside the {num} class names")
        entries.append({"segment": [round(s, 2), round(e, 2)], "label": class_names[label],
                        "score": round(score, 4)})
    return entries


def to_results_json(video_dets: Mapping[str, Detections], class_names: Sequence[str]) -> dict:
    """{"results": {video_id: [{"segment": [s, e], "label": name, "score": x}, ...]}}."""
    return {"results": {vid: detections_to_entries(d, class_names) for vid, d in video_dets.items()}}
