"""From a plan row to a fixed-shape example: sample -> decode -> transform.

One class does the whole per-clip work so the Ray Data actors and the DataLoader baseline run
exactly the same code. Rows are plain dicts (Arrow-friendly: numbers, strings, lists) because
they travel through Ray's object store; `record_to_row` / `row_to_record` convert.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from adatad.config import DataConfig
from adatad.data.annotations import VideoRecord
from adatad.data.batch import clip_to_example
from adatad.data.sampling import ClipPlan, sample_train_window, sliding_windows
from adatad.data.transforms import build_test_transform, build_train_transform
from adatad.data.video import VideoDecodeError, read_frames

log = logging.getLogger(__name__)


def record_to_row(record: VideoRecord, index: int) -> dict[str, Any]:
    """A video record as an Arrow-friendly row (segments flattened)."""
    return {
        "video_index": index,
        "video_id": record.video_id,
        "path": record.path,
        "subset": record.subset,
        "duration": float(record.duration),
        "num_frames": int(record.num_frames),
        "fps": float(record.fps),
        "segments": np.asarray(record.segments, dtype=np.float64).reshape(-1).tolist(),
        "labels": np.asarray(record.labels, dtype=np.int64).tolist(),
    }


def row_to_record(row: dict[str, Any]) -> VideoRecord:
    return VideoRecord(
        video_id=str(row["video_id"]),
        path=str(row["path"]),
        subset=str(row["subset"]),
        duration=float(row["duration"]),
        num_frames=int(row["num_frames"]),
        fps=float(row["fps"]),
        segments=np.asarray(row["segments"], dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(row["labels"], dtype=np.int64),
    )


def window_rows(records: list[VideoRecord], data: DataConfig) -> list[dict[str, Any]]:
    """Test rows: one per sliding window, each remembering its video and offset."""
    rows = []
    for index, record in enumerate(records):
        for plan in sliding_windows(record, data.window_size, data.frame_stride, data.test_window_overlap):
            row = record_to_row(record, index)
            row["frame_indices"] = plan.frame_indices.astype(np.int64)
            row["mask"] = plan.mask.astype(bool)
            row["window_start_frame"] = int(plan.window_start_frame)
            rows.append(row)
    return rows


@dataclass
class ClipLoader:
    """Turns rows into examples; `train=True` samples a random window and augments."""

    data: DataConfig
    train: bool

    def __post_init__(self) -> None:
        d = self.data
        if self.train:
            self.transform = build_train_transform(
                resize_short=d.train_resize_short,
                crop_size=d.crop_size,
                area_range=tuple(d.rrc_area_range),
                aspect_range=tuple(d.rrc_aspect_range),
                flip_ratio=d.flip_ratio,
                color_jitter=tuple(d.color_jitter),
                image_augment=d.image_augment,
            )
        else:
            self.transform = build_test_transform(resize_short=d.test_resize_short, crop_size=d.crop_size)

    def plan(self, row: dict[str, Any], rng: np.random.Generator) -> ClipPlan:
        record = row_to_record(row)
        d = self.data
        if self.train:
            return sample_train_window(
                record, d.window_size, d.frame_stride, d.trunc_thresh, tuple(d.temporal_crop_ratio), rng
            )
        plan = ClipPlan(
            video_id=record.video_id,
            path=record.path,
            frame_indices=np.asarray(row["frame_indices"], dtype=np.int64),
            mask=np.asarray(row["mask"], dtype=bool),
            segments=np.zeros((0, 2), np.float32),
            labels=np.zeros((0,), np.int64),
            window_start_frame=int(row["window_start_frame"]),
            fps=record.fps,
            duration=record.duration,
            frame_stride=d.frame_stride,
        )
        return plan

    def load(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """One example dict (see adatad.data.batch), plus `video_index` and `valid`.

        A video that fails to decode yields an all-zero example with valid=False, so the consumer
        can count and skip it (and stop past a ceiling) instead of a crash deep inside a worker.
        """
        plan = self.plan(row, rng)
        try:
            frames = read_frames(plan.path, plan.frame_indices, num_threads=self.data.decode_threads)
            frames = self.transform(frames, rng)
            valid = True
        except VideoDecodeError as exc:
            # One line on this actor's log (Ray forwards it to the driver); the consumer counts the
            # invalid example by video_index and names the file again when it stops the run.
            log.warning("skipping clip of video %r (video_index %s): %s", plan.video_id, row["video_index"], exc)
            size = self.data.crop_size
            frames = np.zeros((len(plan.frame_indices), size, size, 3), np.uint8)
            valid = False
        example = clip_to_example(plan, frames, self.data.max_segments)
        example.pop("video_id", None)  # strings do not convert to tensors; video_index does
        example["video_index"] = np.int64(row["video_index"])
        example["valid"] = np.bool_(valid)
        return example
