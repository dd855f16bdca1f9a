"""One window + its decoded frames -> a fixed-shape example dict, and stacking of examples.

Fixed shapes (segments padded to ``max_segments``) let examples travel as plain arrays (e.g.
Arrow columns) and stack without custom collate logic on the training side.
"""

from __future__ import annotations

import numpy as np

from adatad.data.sampling import ClipPlan

Example = dict[str, np.ndarray | str | float]


def clip_to_example(plan: ClipPlan, frames: np.ndarray, max_segments: int) -> Example:
    """Fixed-shape example for ``plan`` with its decoded ``frames`` uint8 (T, H, W, 3).

    T is the plan's frame count, ``window_size * frames_per_position``; ``masks`` stays one entry
    per position (``window_size``), and ``frame_stride`` the raw frames between positions.

    Segments are zero-padded and labels padded with -1 up to ``max_segments``.
    """
    t = len(plan.frame_indices)
    if frames.ndim != 4 or frames.shape[0] != t or frames.shape[3] != 3:
        raise ValueError(
            f"video '{plan.video_id}': frames must have shape ({t}, H, W, 3), got {tuple(frames.shape)}"
        )
    if frames.dtype != np.uint8:
        raise ValueError(f"video '{plan.video_id}': frames must be uint8, got {frames.dtype}")
    n = len(plan.segments)
    if n > max_segments:
        raise ValueError(
            f"video '{plan.video_id}' window at frame {plan.window_start_frame}: {n} segments exceed "
            f"max_segments={max_segments}; raise max_segments"
        )
    segments = np.zeros((max_segments, 2), dtype=np.float32)
    segments[:n] = plan.segments
    labels = np.full((max_segments,), -1, dtype=np.int64)
    labels[:n] = plan.labels
    return {
        "frames": frames,
        "masks": np.asarray(plan.mask, dtype=bool),
        "segments": segments,
        "labels": labels,
        "num_segments": np.int64(n),
        "video_id": plan.video_id,
        "window_start_frame": np.int64(plan.window_start_frame),
        "fps": np.float64(plan.fps),
        "duration": np.float64(plan.duration),
        "frame_stride": np.int64(plan.frame_stride),
    }


def collate_examples(examples: list[Example]) -> dict[str, np.ndarray]:
    """Stack examples along a new batch axis (``video_id`` becomes a str array)."""
    if not examples:
        raise ValueError("collate_examples needs at least one example")
    keys = list(examples[0])
    batch: dict[str, np.ndarray] = {}
    for i, ex in enumerate(examples):
        if set(ex) != set(keys):
            raise ValueError(f"example {i} has keys {sorted(ex)}, expected {sorted(keys)}")
    for key in keys:
        values = [ex[key] for ex in examples]
        if key == "video_id":
            batch[key] = np.asarray(values, dtype=str)
            continue
        shapes = {np.shape(v) for v in values}
        if len(shapes) != 1:
            raise ValueError(f"cannot stack key '{key}': shapes differ across examples {sorted(shapes)}")
        batch[key] = np.stack([np.asarray(v) for v in values])
    return batch
