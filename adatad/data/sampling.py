"""Temporal sampling plans: which raw frames form a window, and where the GT lies in it.

A *position* is one step of the detector's sequence: position ``p`` of a window starts at raw frame
``window_start_frame + p * frame_stride``. Video positions are ``arange(0, num_frames, frame_stride)``
(docs/recipe.md §2). GT is converted from seconds to positions as ``seconds * fps / frame_stride``
without OpenTAD's ``int()`` truncation to whole frames (a difference below one raw frame).

With ``frames_per_position = s > 1`` (OpenTAD's ``scale_factor``) a window of ``N`` positions reads
``N * s`` frames from the *read grid* ``arange(0, num_frames, frame_stride // s)``, and OpenTAD's
rules are kept exactly (``opentad/datasets/transforms/end_to_end.py: LoadFrames``): training
truncates on the read grid (window of ``N * s`` read frames, any start on that grid, GT scaled by
``s`` there and back); test windows are placed on positions and read frames ``[start * s,
(start + length) * s)`` of the grid, cut at its end; the mask floors ``real read frames // s``.
At ``s = 1`` the read grid is the positions and nothing changes.

Training uses random truncation (``sample_train_window``), testing uses overlapping sliding
windows (``sliding_windows``); ActivityNet's whole-video sampling (``data.sampling: resize``) is
:mod:`adatad.data.resize_sampling`. Both return :class:`ClipPlan`, which carries no pixels: decoding is
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
    frame_indices: np.ndarray  # (window_size * frames_per_position,) int64 raw frame indices, edge-padded
    mask: np.ndarray  # (window_size,) bool, True = real position (real read frames // frames_per_position)
    segments: np.ndarray  # (N, 2) float32, in window positions
    labels: np.ndarray  # (N,) int64
    window_start_frame: int
    fps: float
    duration: float
    frame_stride: int  # raw frames between positions (what converts positions to seconds)


def _num_positions(num_frames: int, frame_stride: int) -> int:
    """len(arange(0, num_frames, frame_stride))."""
    return -(-num_frames // frame_stride)


def frame_step(frame_stride: int, frames_per_position: int) -> int:
    """Raw frames between two frames a window reads: ``frame_stride / frames_per_position``."""
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be >= 1, got {frame_stride}")
    if frames_per_position < 1 or frame_stride % frames_per_position:
        raise ValueError(f"frames_per_position must be >= 1 and divide frame_stride ({frame_stride}), "
                         f"got {frames_per_position}")
    return frame_stride // frames_per_position


def read_grid_length(num_frames: int, frame_stride: int, frames_per_position: int = 1) -> int:
    """Frames on a video's read grid ``arange(0, num_frames, frame_stride // frames_per_position)``."""
    return _num_positions(num_frames, frame_step(frame_stride, frames_per_position))


def _check(video: VideoRecord, window_size: int, frame_stride: int, frames_per_position: int) -> int:
    if window_size < 1:
        raise ValueError(f"window_size must be >= 1, got {window_size}")
    frame_step(frame_stride, frames_per_position)
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
    frames_per_position: int,
    segments: np.ndarray,
    labels: np.ndarray,
) -> ClipPlan:
    """Window of ``length`` real read frames from read-grid frame ``start``, edge-padded to
    ``window_size * frames_per_position``; a position is valid only when all its frames are real."""
    step = frame_step(frame_stride, frames_per_position)
    read = start + np.minimum(np.arange(window_size * frames_per_position, dtype=np.int64), length - 1)
    return ClipPlan(
        video_id=video.video_id,
        path=video.path,
        frame_indices=read * step,
        mask=np.arange(window_size) < length // frames_per_position,
        segments=np.asarray(segments, dtype=np.float32).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.int64).reshape(-1),
        window_start_frame=int(start * step),
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
    frames_per_position: int = 1,
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

    With ``frames_per_position = s`` all of this runs on the read grid, as OpenTAD does: "positions"
    above are read frames, the window is ``window_size * s`` of them and the GT is ``s`` times its
    positions; the kept GT is divided by ``s`` again, and the mask floors the real read frames by ``s``.
    """
    s = frames_per_position
    _check(video, window_size, frame_stride, s)
    num_pos = read_grid_length(video.num_frames, frame_stride, s)  # read frames (= positions at s = 1)
    if not 0.0 < trunc_thresh <= 1.0:
        raise ValueError(f"trunc_thresh must be in (0, 1], got {trunc_thresh}")
    if max_trials < 1:
        raise ValueError(f"max_trials must be >= 1, got {max_trials}")
    gt = _gt_positions(video, frame_stride) * s  # on the read grid
    labels = np.asarray(video.labels, dtype=np.int64)
    window_frames = window_size * s

    length = window_frames
    if num_pos <= window_frames:
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
            return _make_plan(video, 0, num_pos, window_size, frame_stride, s,
                              _clip_shift(gt, 0, num_pos) / s, labels)

    num_starts = num_pos - length + 1
    if len(gt) == 0:
        start = int(rng.integers(0, num_starts))
        return _make_plan(video, start, length, window_size, frame_stride, s, gt, labels)

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
    return _make_plan(video, start, length, window_size, frame_stride, s,
                      _clip_shift(gt[keep], start, length) / s, labels[keep])


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
    frames_per_position: int = 1,
) -> list[ClipPlan]:
    """Test windows covering the whole video (see :func:`window_starts`).

    Windows shorter than ``window_size`` (short videos) are edge-padded and masked. Segments are
    the GTs overlapping the window, clipped to it; they are for reference only (evaluation uses
    the video-level GT in seconds). Windows are placed on positions whatever
    ``frames_per_position = s``; a window at position ``start`` with ``length`` positions reads
    frames ``[start * s, (start + length) * s)`` of the read grid, cut at the grid's end, so its last
    position can lack a real frame and is then masked (OpenTAD's ``sliding_window`` with
    ``scale_factor``).
    """
    s = frames_per_position
    num_pos = _check(video, window_size, frame_stride, s)
    num_read = read_grid_length(video.num_frames, frame_stride, s)
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
        real_frames = min(length * s, num_read - start * s)
        plans.append(_make_plan(video, start * s, real_frames, window_size, frame_stride, s,
                                _clip_shift(gt[inside], start, length), labels[inside]))
    return plans
