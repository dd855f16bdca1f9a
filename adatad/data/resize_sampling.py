"""Whole-video sampling (ActivityNet): every video resized to one window of ``N`` positions.

Why: ActivityNet videos are short next to their actions (an action often covers half the video),
so OpenTAD reads each video whole, at ``N x s`` frames spread evenly over it, instead of sliding
windows (``LoadFrames(method="resize")``, ``opentad/datasets/transforms/end_to_end.py``;
``AnetResizeDataset``, ``opentad/datasets/anet.py``). Its rules, kept exactly (docs/recipe.md,
"ActivityNet and Charades: data"):

- frame centres ``arange(stride / 2 - 0.5, total + stride / 2 - 0.5, stride)`` with
  ``stride = total / (N x s)`` in float64, clipped to ``[0, total - 1]`` and rounded half to even
  (1,000 frames, 768 of them: 0, 1, 3, 4, 5, 7, ...). ``total`` is the record's frame count (the
  decoder's when the json has none, as ActivityNet's has not). Where float rounding makes that
  ``arange`` one element longer (e.g. 8,189 frames at 768), OpenTAD's length assert fails; here
  the first ``N x s`` are taken;
- every position is valid (the mask is all True, also when a short video repeats frames);
- ground truth in positions: ``clip(seconds / duration, 0, 1) x N`` with the *json* duration;
- detections back to seconds: ``position / N x duration``, written into the per-window bookkeeping
  as ``window_start_frame = 0``, ``frame_stride = 1`` and ``fps = N / duration`` (positions per
  second), so ``adatad.postprocess.window_to_seconds`` needs no second formula.

Training uses the same plan (OpenTAD's train pipeline resizes too; augmentation is spatial only).
"""

from __future__ import annotations

import numpy as np

from adatad.data.annotations import VideoRecord
from adatad.data.sampling import ClipPlan


def resize_frame_indices(num_frames: int, num_read: int) -> np.ndarray:
    """The ``num_read`` frame indices (int64, non-decreasing) spread evenly over ``num_frames`` frames."""
    if num_frames < 1 or num_read < 1:
        raise ValueError(f"num_frames and num_read must be >= 1, got {num_frames}, {num_read}")
    stride = num_frames / num_read  # float64, as OpenTAD
    centres = np.arange(stride / 2 - 0.5, num_frames + stride / 2 - 0.5, stride)[:num_read]
    return np.clip(centres, 0, num_frames - 1).round().astype(np.int64)  # np.round: half to even


def resize_window(video: VideoRecord, window_size: int, frames_per_position: int = 1) -> ClipPlan:
    """The one window of ``video``: ``window_size * frames_per_position`` frames over the whole video,
    its training segments in positions (``clip(seconds / duration, 0, 1) * window_size``)."""
    if window_size < 1 or frames_per_position < 1:
        raise ValueError(f"window_size and frames_per_position must be >= 1, got {window_size}, "
                         f"{frames_per_position}")
    if video.num_frames < 1:
        raise ValueError(f"video '{video.video_id}': num_frames must be >= 1, got {video.num_frames}")
    if not video.duration > 0:
        raise ValueError(f"video '{video.video_id}': duration must be > 0, got {video.duration}")
    seconds = np.asarray(video.segments, dtype=np.float64).reshape(-1, 2)
    return ClipPlan(
        video_id=video.video_id,
        path=video.path,
        frame_indices=resize_frame_indices(video.num_frames, window_size * frames_per_position),
        mask=np.ones(window_size, dtype=bool),
        segments=(np.clip(seconds / video.duration, 0.0, 1.0) * window_size).astype(np.float32),
        labels=np.asarray(video.labels, dtype=np.int64).reshape(-1),
        window_start_frame=0,
        fps=window_size / float(video.duration),
        duration=float(video.duration),
        frame_stride=1,
    )
