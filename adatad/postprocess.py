"""From head outputs to per-video detections: decode windows, convert to seconds, merge windows with
Gaussian soft-NMS (per class, or class-agnostic with segment voting), clip to the video, and lay
results out as the THUMOS/ActivityNet results json.

Recipe: docs/recipe.md §8 and "ActivityNet and Charades: model and post-processing".
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
                  strides: Sequence[int], pre_nms_thresh: float | None = 0.001,
                  pre_nms_topk: int | None = 2000) -> list[Detections]:
    """Per video of the batch: sigmoid scores of every valid (point, class) pair, keep those above
    `pre_nms_thresh`, then the `pre_nms_topk` best (None: no threshold / no limit, as OpenTAD does
    for one-class heads: every valid position of every level); sorted by descending score; segments
    in window positions [t*s - left*s, t*s + right*s]. No NMS here: windows are merged per video later."""
    device = cls_logits[0].device
    pos = torch.cat([torch.arange(m.shape[1], device=device, dtype=torch.float32) * s
                     for m, s in zip(level_masks, strides, strict=True)])
    stride = torch.cat([torch.full((m.shape[1],), float(s), device=device)
                        for m, s in zip(level_masks, strides, strict=True)])
    scores = torch.cat(cls_logits, dim=1).float().sigmoid()  # (B, P, K)
    offsets = torch.cat(reg_offsets, dim=1).float()  # (B, P, 2)
    valid = torch.cat(level_masks, dim=1).bool()  # (B, P)
    # Padded positions score -1: below any threshold, and dropped explicitly without one.
    scores = scores.masked_fill(~valid[..., None], -1.0)
    num_classes = scores.shape[-1]

    out = []
    for b in range(scores.shape[0]):
        flat = scores[b].flatten()
        k = flat.numel() if pre_nms_topk is None else min(pre_nms_topk, flat.numel())
        top_scores, top_idx = flat.topk(k)  # sorted, descending
        keep = top_scores > (pre_nms_thresh if pre_nms_thresh is not None else -1.0)
        top_scores, top_idx = top_scores[keep], top_idx[keep]
        pt = torch.div(top_idx, num_classes, rounding_mode="floor")
        labels = top_idx % num_classes
        p, s = pos[pt], stride[pt]
        segs = torch.stack([p - offsets[b, pt, 0] * s, p + offsets[b, pt, 1] * s], dim=1)
        out.append(Detections(segs.cpu(), top_scores.cpu(), labels.cpu()))
    return out


def window_to_seconds(dets: Detections, window_start_frame: float, frame_stride: float, fps: float,
                      duration: float | None = None, clip: bool = False) -> Detections:
    """Window positions -> seconds of the video: (pos * frame_stride + window_start_frame) / fps.

    Not clipped unless clip=True (to [0, duration]): where the clipping happens depends on the
    dataset (before the merge of sliding windows, after the NMS and voting of whole videos), so
    `merge_video` does it (`clip_to_duration`).
    """
    segs = (dets.segments.double() * frame_stride + window_start_frame) / fps
    if clip:
        if duration is None:
            raise ValueError("window_to_seconds: clip=True needs the video's duration")
        segs = segs.clamp(min=0.0, max=float(duration))
    return Detections(segs.to(torch.float32), dets.scores.clone(), dets.labels.clone())


def clip_to_duration(dets: Detections, duration: float) -> Detections:
    """Segments clipped to [0, duration] seconds (OpenTAD's truncation of every boundary)."""
    segs = dets.segments.clamp(min=0.0, max=float(duration))
    return Detections(segs, dets.scores.clone(), dets.labels.clone())


def soft_nms(dets: Detections, sigma: float = 0.7, max_seg_num: int = 2000, min_score: float = 0.0,
             class_agnostic: bool = False) -> Detections:
    """Gaussian soft-NMS per class (score *= exp(-IoU^2 / sigma) against each pick), keeping the overall
    top `max_seg_num`, sorted by descending score. class_agnostic: one pool, every box decays every
    other whatever their labels (OpenTAD `multiclass=False`); labels are kept.

    One greedy loop over picks for all classes together: each step takes the best remaining box of any
    class and decays only its own class's boxes, with a handful of vectorised NumPy ops. The picked
    scores never increase, so the first `max_seg_num` picks are exactly the reference's
    "per class, then overall top max_seg_num"; the loop stops there. Boxes scoring below `min_score`
    (after decay) are dropped, as in the reference's C++ loop, which never tests a class's first pick:
    that one is kept even below `min_score`. (No library offers Gaussian soft-NMS for
    1-D segments; torchvision's nms is hard NMS on boxes.)
    """
    if not sigma > 0:
        raise ValueError(f"soft_nms: sigma must be > 0, got {sigma}")
    n = len(dets)
    if n == 0 or max_seg_num <= 0:
        return Detections.empty()
    labels_in = dets.labels.cpu().numpy()
    groups = np.zeros_like(labels_in) if class_agnostic else labels_in
    order = np.argsort(groups, kind="stable")
    seg = dets.segments.cpu().numpy().astype(np.float64)[order]
    lab = labels_in[order]
    bounds = np.flatnonzero(np.diff(groups[order])) + 1
    first = np.concatenate([[0], bounds]).tolist()  # first index of each class block in `seg`
    blocks = list(zip(first, np.concatenate([bounds, [n]]).tolist(), strict=True))
    # Per class: contiguous copies plus two scratch buffers, so each step allocates nothing.
    starts = [seg[lo:hi, 0].copy() for lo, hi in blocks]
    ends = [seg[lo:hi, 1].copy() for lo, hi in blocks]
    lengths = [e - s for s, e in zip(starts, ends, strict=True)]
    score_sorted = dets.scores.cpu().numpy().astype(np.float64)[order]
    scores = [score_sorted[lo:hi].copy() for lo, hi in blocks]
    buf_a = [np.empty(hi - lo) for lo, hi in blocks]
    buf_b = [np.empty(hi - lo) for lo, hi in blocks]
    best_j = [int(np.argmax(sc)) for sc in scores]  # current best box of each class ...
    best_score = np.array([sc[j] for sc, j in zip(scores, best_j, strict=True)])  # ... and its score
    if min_score > 0:
        # Below min_score from the start: the reference drops these at its first decay pass (a
        # weight <= 1 never lifts them), except the class's first pick, which it never tests.
        for sc, j in zip(scores, best_j, strict=True):
            first_pick = sc[j]
            sc[sc < min_score] = -np.inf
            sc[j] = first_pick

    k = min(n, max_seg_num)
    pick_idx = np.empty(k, dtype=np.int64)
    pick_score = np.empty(k)
    neg_inv_sigma = -1.0 / sigma
    count = 0
    while count < k:
        c = int(best_score.argmax())
        top = best_score[c]
        if top == -np.inf:  # every box picked or dropped (only a first pick can be below min_score)
            break
        j = best_j[c]
        pick_idx[count], pick_score[count] = first[c] + j, top
        count += 1
        s, e, length, sc, w, u = starts[c], ends[c], lengths[c], scores[c], buf_a[c], buf_b[c]
        sc[j] = -np.inf  # picked; -inf entries stay -inf under the decay below
        np.minimum(e, e[j], out=w)
        np.maximum(s, s[j], out=u)
        np.subtract(w, u, out=w)
        np.maximum(w, 0.0, out=w)  # intersection
        np.add(length, length[j], out=u)
        np.subtract(u, w, out=u)
        np.maximum(u, 1e-8, out=u)  # union
        np.divide(w, u, out=w)  # IoU
        np.multiply(w, w, out=w)
        np.multiply(w, neg_inv_sigma, out=w)
        np.maximum(w, -700.0, out=w)  # weight >= exp(-700) > 0: -inf * weight never becomes NaN
        np.exp(w, out=w)
        np.multiply(sc, w, out=sc)
        if min_score > 0:
            sc[sc < min_score] = -np.inf
        jj = int(sc.argmax())
        best_j[c], best_score[c] = jj, sc[jj]

    sel = pick_idx[:count]
    return Detections(torch.from_numpy(seg[sel].astype(np.float32)),
                      torch.from_numpy(pick_score[:count].astype(np.float32)),
                      torch.from_numpy(lab[sel].astype(np.int64)))


def segment_voting(picked: Detections, pool: Detections, iou_thresh: float) -> Detections:
    """Each picked segment becomes the mean of the `pool` segments overlapping it with IoU >= iou_thresh,
    weighted by their scores (OpenTAD's `seg_voting`: the pool is every proposal that entered the NMS,
    with its score before any decay). Scores and labels stay. A segment no pool segment reaches (only
    possible for a zero-length one, whose IoU with itself is undefined) keeps its place."""
    if len(picked) == 0 or len(pool) == 0:
        return picked
    a = picked.segments.double()[:, None, :]  # (N, 1, 2)
    b = pool.segments.double()[None, :, :]  # (1, M, 2)
    inter = (torch.minimum(a[..., 1], b[..., 1]) - torch.maximum(a[..., 0], b[..., 0])).clamp(min=0)
    union = (a[..., 1] - a[..., 0]) + (b[..., 1] - b[..., 0]) - inter
    iou = inter / union  # NaN for two zero-length segments: never a neighbour
    weights = (iou >= iou_thresh).double() * pool.scores.double()[None, :]
    total = weights.sum(dim=1, keepdim=True)
    voted = (weights @ pool.segments.double()) / total.clamp(min=torch.finfo(torch.float64).tiny)
    segs = torch.where(total > 0, voted, picked.segments.double()).to(torch.float32)
    return Detections(segs, picked.scores.clone(), picked.labels.clone())


def merge_video(dets_list: Sequence[Detections], sigma: float = 0.7, max_seg_num: int = 2000,
                min_score: float = 0.0, multiclass: bool = True, voting_thresh: float = 0.0,
                duration: float | None = None, clip_before_nms: bool = True) -> Detections:
    """All windows of one video (in seconds) -> one soft-NMS over their union.

    multiclass: soft-NMS per class; else one class-agnostic soft-NMS followed by segment voting
    (when voting_thresh > 0) over all of the video's proposals. duration: clip the segments to
    [0, duration], before the NMS (clip_before_nms: sliding windows, as OpenTAD clips each window
    when it converts it to seconds) or after NMS and voting (OpenTAD's whole-video datasets, which
    run the NMS in positions and convert afterwards); None: no clipping.
    """
    pool = Detections.cat(list(dets_list))
    if duration is not None and clip_before_nms:
        # OpenTAD keeps each window's results as rounded python numbers (`gather_ddp_results`,
        # opentad/cores/test_engine.py) and runs the cross-window soft-NMS on those.
        pool = round_as_results(clip_to_duration(pool, duration))
    merged = soft_nms(pool, sigma=sigma, max_seg_num=max_seg_num, min_score=min_score,
                      class_agnostic=not multiclass)
    if not multiclass and voting_thresh > 0:
        merged = segment_voting(merged, pool, voting_thresh)
    if duration is not None and not clip_before_nms:
        merged = clip_to_duration(merged, duration)
    return merged


def round_as_results(dets: Detections) -> Detections:
    """Segments to 2 decimals and scores to 4 (Python's rounding), back in float32: what a results
    json holds (docs/recipe.md §8)."""
    segments = torch.tensor([[round(s, 2), round(e, 2)] for s, e in dets.segments.tolist()], dtype=torch.float32)
    scores = torch.tensor([round(x, 4) for x in dets.scores.tolist()], dtype=torch.float32)
    return Detections(segments.reshape(-1, 2), scores, dets.labels)


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
