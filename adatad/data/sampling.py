"""Temporal sampling plans: which raw frames form a window, and where the GT lies in it.

A *position* is one sampled frame: position ``p`` of a window covers raw frame
``window_start_frame + p * frame_stride``. Video positions are ``arange(0, num_frames, frame_stride)``
(docs/recipe.md §2). GT is converted from seconds to positions as ``seconds * fps / frame_stride``
without OpenTAD's ``int()`` truncation to whole frames (a difference below one raw frame).

Training uses random truncation (``sample_train_window``), testing uses overlapping sliding
windows (``sliding_windows``). Both return :class:`ClipPlan`, which carries no pixels: decoding is
a separate step so the plans can be shipped cheaply to decode workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from adatad.data.annotations import VideoRecord


@dataclass
class ClipPlan:
    """One window of one video: raw frame indices (edge-padded), validity mask and GT in positions."""

    video_id: str
    path: str
    frame_indices: np.ndarray  # (window_size,) int64 raw frame indices, edge-padded
    mask: np.ndarray  # (window_size,) bool, True = real position
    segments: np.ndarray  # (N, 2) float32, in window positions
    labels: np.ndarray  # (N,) int64
    window_start_frame: int
    fps: float
    duration: float
    frame_stride: int


def _num_positions(num_frames: int, frame_stride: int) -> int:
    """len(arange(0, num_frames, frame_stride))."""
    return -(-num_frames // frame_stride)


def _check(video: VideoRecord, window_size: int, frame_stride: int) -> int:
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    if video.num_frames < 1:
        raise ValueError(f"video '{video.video_id}': num_frames must be >= 1, got {video.num_frames}")
    return _num_positions(video.num_frames, frame_stride)


def _gt_positions(video: VideoRecord, frame_stride: int) -> np.ndarray:
    """GT segments (N, 2) in video positions (float64)."""
    return np.asarray(video.segments, dtype=np.float64).reshape(-1, 2) * (video.fps / frame_stride)


def _make_plan(
    video: VideoRecord,
    start: int,
    length: int,
    window_size: int,
    frame_stride: int,
    segments: np.ndarray,
    labels: np.ndarray,
) -> ClipPlan:
    """Window of ``length`` real positions starting at video position ``start``, edge-padded."""
    pos = start + np.minimum(np.arange(window_size, dtype=np.int64), length - 1)
    return ClipPlan(
        video_id=video.video_id,
        path=video.path,
        frame_indices=pos * frame_stride,
        mask=np.arange(window_size) < length,
        segments=np.asarray(segments, dtype=np.float32).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        window_start_frame=int(start * frame_stride),
        fps=float(video.fps),
        duration=float(video.duration),
        frame_stride=int(frame_stride),
    )


def _clip_shift(gt: np.ndarray, start: int, length: int) -> np.ndarray:
    """GT (N, 2) in video positions -> clipped to [start, start + length] and shifted to the window."""
    return np.clip(gt, start, start + length) - start


def sample_train_window(
    video: VideoRecord,
    window_size: int,
    frame_stride: int,
    trunc_thresh: float,
    crop_ratio: tuple[float, float] | None,
    rng: np.random.Generator,
    max_trials: int = 200,
) -> ClipPlan:
    """Random truncation of a training video (OpenTAD ``random_trunc``).

    Videos with more than ``window_size`` positions get a window of exactly ``window_size``.
    Shorter ones get a crop of length drawn uniformly in ``[round(r0*L), round(r1*L)]`` (``L`` =
    positions) when ``crop_ratio`` is set; a crop equal to ``L`` keeps the whole video with all GT.
    Otherwise up to ``max_trials`` random starts are tried (drawn at once, first success taken,
    which is the same distribution as OpenTAD's sequential loop) until at least one GT keeps
    ``>= trunc_thresh`` of its length inside the window; those GTs are kept, clipped and shifted.
    If no trial succeeds (e.g. a GT longer than ``window_size / trunc_thresh``), the trial with the
    largest kept fraction is used and the GTs reaching that fraction are kept, rather than
    OpenTAD's last random trial that may keep nothing.
    """
    num_pos = _check(video, window_size, frame_stride)
    if not 0.0 < trunc_thresh <= 1.0:
        raise ValueError(f"trunc_thresh must be in (0, 1], got {trunc_thresh}")
    if max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
    gt = _gt_positions(video, frame_stride)
    labels = np.asarray(video.labels, dtype=np.int64)

    length = window_size
    if num_pos <= window_size:
        if crop_ratio is None:
            length = num_pos
        else:
            r0, r1 = crop_ratio
            if not 0.0 < r0 <= r1 <= 1.0:
                raise ValueError(f"crop_ratio must satisfy 0 < r0 <= r1 <= 1, got {crop_ratio}")
            lo = max(round(r0 * num_pos), 1)
            hi = min(round(r1 * num_pos), num_pos)
            length = int(rng.integers(lo, hi + 1))
        if length == num_pos:  # whole video
            return _make_plan(video, 0, num_pos, window_size, frame_stride,
                              _clip_shift(gt, 0, num_pos), labels)

    num_starts = num_pos - length + 1
    if len(gt) == 0:
        start = int(rng.integers(0, num_starts))
        return _make_plan(video, start, length, window_size, frame_stride, gt, labels)

    starts = rng.integers(0, num_starts, size=max_trials)  # (trials,)
    inter = np.clip(
        np.minimum(starts[:, None] + length, gt[None, :, 1]) - np.maximum(starts[:, None], gt[None, :, 0]),
        0.0,
        None,
    )
    ratio = inter / np.maximum(gt[None, :, 1] - gt[None, :, 0], 1e-12)  # (trials, N) kept fraction
    ok = (ratio >= trunc_thresh).any(axis=1)
    if ok.any():
        trial = int(np.argmax(ok))
        keep = ratio[trial] >= trunc_thresh
    else:
        best = ratio.max(axis=1)
        trial = int(np.argmax(best))
        keep = (ratio[trial] >= best[trial]) & (ratio[trial] > 0)
    start = int(starts[trial])
    return _make_plan(video, start, length, window_size, frame_stride,
                      _clip_shift(gt[keep], start, length), labels[keep])


def window_starts(num_positions: int, window_size: int, stride: int) -> np.ndarray:
    """Start positions of the sliding windows over a video of ``num_positions`` positions.

    OpenTAD's rule (docs/recipe.md §2): starts ``idx * stride`` for ``idx in range(max(1, N // stride))``;
    a window that would overrun is shifted to end at ``N`` and the iteration stops. Two deviations,
    both invisible at the default overlap 0.5 except for the first: (1) identical starts are
    de-duplicated (OpenTAD can emit the last window twice, e.g. N = 2 * window_size, which only
    doubles its detections before NMS); (2) if the windows stop short of ``N`` (possible when the
    stride exceeds ``window_size - stride``, e.g. overlap 0), a final window ending at ``N`` is
    appended so every position is covered.
    """
    n_idx = max(1, num_positions // stride)
    starts = np.arange(n_idx, dtype=np.int64) * stride
    overrun = starts + window_size > num_positions
    if overrun.any():
        first = int(np.argmax(overrun))
        starts = starts[: first + 1]
        starts[first] = max(0, num_positions - window_size)
    elif starts[-1] + window_size < num_positions:
        starts = np.append(starts, max(0, num_positions - window_size))
    return np.unique(starts)  # sorted, duplicates removed


def sliding_windows(
    video: VideoRecord,
    window_size: int,
    frame_stride: int,
    overlap_ratio: float,
) -> list[ClipPlan]:
    """Test windows covering the whole video (see :func:`window_starts`).

    Windows shorter than ``window_size`` (short videos) are edge-padded and masked. Segments are
    the GTs overlapping the window, clipped to it; they are for reference only (evaluation uses
    the video-level GT in seconds).
    """
    num_pos = _check(video, window_size, frame_stride)
    if not 0.0 <= overlap_ratio < 1.0:
        raise ValueError(f"overlap_ratio must be in [0, 1), got {overlap_ratio}")
    stride = int(window_size * (1.0 - overlap_ratio) + 1e-9)
    if stride < 1:
        raise ValueError(f"window stride window_size*(1-overlap_ratio) is < 1 for {window_size}, {overlap_ratio}")
    gt = _gt_positions(video, frame_stride)
    labels = np.asarray(video.labels, dtype=np.int64)
    plans = []
    for start in window_starts(num_pos, window_size, stride).tolist():
        length = min(window_size, num_pos - start)
        inside = (gt[:, 1] > start) & (gt[:, 0] < start + length)
        plans.append(_make_plan(video, start, length, window_size, frame_stride,
                                _clip_shift(gt[inside], start, length), labels[inside]))
    return plans
