"""From a plan row to a fixed-shape example: sample -> decode -> transform.

One class does the whole per-clip work so the Ray Data actors and the DataLoader baseline run
exactly the same code. Rows are plain dicts (Arrow-friendly: numbers, strings, lists) because
they travel through Ray's object store; `record_to_row` / `row_to_record` convert.

Test videos come two ways, with identical examples: one row per window (`window_rows` +
`ClipLoader.load`, each window decoded on its own) or one row per video
(`ClipLoader.iter_video_windows`, all windows from a single decode; see window_stream.py).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from adatad.config import DataConfig
from adatad.data.annotations import VideoRecord
from adatad.data.batch import clip_to_example
from adatad.data.resize_sampling import resize_window
from adatad.data.sampling import ClipPlan, sample_train_window, sliding_windows
from adatad.data.transforms import (
    CenterCrop,
    Compose,
    ResizeShortSide,
    Transform,
    build_test_transform,
    build_train_transform,
)
from adatad.data.frame_source import frame_source
from adatad.data.video import VideoDecodeError
from adatad.data.window_stream import WindowStream
from adatad.data.frame_store.entry import FrameStoreError

log = logging.getLogger(__name__)


def record_to_row(record: VideoRecord, index: int) -> dict[str, Any]:
    """A video record as an Arrow-friendly row (segments flattened; the evaluation ground truth too,
    since validation on a worker scores against it)."""
    eval_segments, eval_labels = record.evaluation_ground_truth
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
        "eval_segments": np.asarray(eval_segments, dtype=np.float64).reshape(-1).tolist(),
        "eval_labels": np.asarray(eval_labels, dtype=np.int64).tolist(),
    }


def row_to_record(row: dict[str, Any]) -> VideoRecord:
    has_eval = "eval_segments" in row  # rows written before the evaluation ground truth travelled: `segments`
    return VideoRecord(
        video_id=str(row["video_id"]),
        path=str(row["path"]),
        subset=str(row["subset"]),
        duration=float(row["duration"]),
        num_frames=int(row["num_frames"]),
        fps=float(row["fps"]),
        segments=np.asarray(row["segments"], dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(row["labels"], dtype=np.int64),
        eval_segments=np.asarray(row["eval_segments"], dtype=np.float64).reshape(-1, 2) if has_eval else None,
        eval_labels=np.asarray(row["eval_labels"], dtype=np.int64) if has_eval else None,
    )


# The two streams drawn from (seed, epoch) kept apart (SeedSequence pads short entropy with zeros, so
# [seed, epoch] and [seed, epoch, 0] would be one stream).
_ORDER_STREAM, _CLIP_STREAM = 0, 1


def clip_rng(seed: int, epoch: int, video_index: int) -> np.random.Generator:
    """The randomness of one training clip: its window and its augmentation, from (seed, epoch, video).

    Why not one generator per decode actor: which actor decodes which clip, and in what order,
    depends on timing; a clip's randomness then would too, and a run could not be repeated. Seeded
    from the three numbers alone, the same config and `train.seed` give the same clips whatever
    decodes them, and every epoch and video still draws differently.
    """
    return np.random.default_rng([seed, epoch, _CLIP_STREAM, video_index])


def epoch_order(seed: int, epoch: int, num_videos: int) -> list[int]:
    """The order an epoch visits the training videos: a permutation drawn from (seed, epoch) alone, so
    it is new every epoch and the same in every run of the same seed."""
    return [int(i) for i in np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(num_videos)]


def plan_test_windows(record: VideoRecord, data: DataConfig) -> list[ClipPlan]:
    """The test windows of one video under ``data`` (every key that places them): its sliding
    windows, or its one resized window (``data.sampling``)."""
    if data.sampling == "resize":
        return [resize_window(record, data.window_size, data.frames_per_position)]
    return sliding_windows(record, data.window_size, data.frame_stride, data.test_window_overlap,
                           data.frames_per_position)


def seconds_bookkeeping(record: VideoRecord, data: DataConfig) -> tuple[float, int]:
    """(fps, frame_stride) of a test window's bookkeeping, which `window_to_seconds` turns positions into
    seconds with: the video's fps and the snippet stride; a resized video's positions per second of its
    json duration and 1 (adatad.data.resize_sampling)."""
    if data.sampling == "resize":
        return data.window_size / record.duration, 1
    return record.fps, data.frame_stride


def window_rows(records: list[VideoRecord], data: DataConfig) -> list[dict[str, Any]]:
    """Test rows: one per sliding window, each remembering its video and offset."""
    rows = []
    for index, record in enumerate(records):
        for plan in plan_test_windows(record, data):
            row = record_to_row(record, index)
            row["frame_indices"] = plan.frame_indices.astype(np.int64)
            row["mask"] = plan.mask.astype(bool)
            row["window_start_frame"] = int(plan.window_start_frame)
            rows.append(row)
    return rows


def count_windows(record: VideoRecord, data: DataConfig) -> int:
    """How many test windows (examples) ``iter_video_windows`` yields for this video."""
    return len(plan_test_windows(record, data))


# Ops that map each frame on its own, without randomness: a chain of them gives the same pixels
# whether it runs on a whole window or on any subset of its frames.
_PER_FRAME_OPS = (ResizeShortSide, CenterCrop)


def is_per_frame(transform: Transform) -> bool:
    """True if ``transform`` is a Compose of per-frame deterministic ops only."""
    return isinstance(transform, Compose) and all(isinstance(t, _PER_FRAME_OPS) for t in transform.transforms)


_NO_SEGMENTS = np.zeros((0, 2), np.float32)
_NO_LABELS = np.zeros((0,), np.int64)


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
        self.frames = frame_source(d.frame_store, d.decode_threads, d.cache_gb)  # the videos, or the store

    def plan(self, row: dict[str, Any], rng: np.random.Generator) -> ClipPlan:
        record = row_to_record(row)
        d = self.data
        if self.train:
            if d.sampling == "resize":
                plan = resize_window(record, d.window_size, d.frames_per_position)
            else:
                plan = sample_train_window(
                    record, d.window_size, d.frame_stride, d.trunc_thresh, tuple(d.temporal_crop_ratio), rng,
                    frames_per_position=d.frames_per_position,
                )
            if d.class_agnostic:  # OpenTAD's class_agnostic datasets: every segment is class 0
                plan = replace(plan, labels=np.zeros_like(plan.labels))
            return plan
        fps, frame_stride = seconds_bookkeeping(record, d)
        plan = ClipPlan(
            video_id=record.video_id,
            path=record.path,
            frame_indices=np.asarray(row["frame_indices"], dtype=np.int64),
            mask=np.asarray(row["mask"], dtype=bool),
            segments=_NO_SEGMENTS,
            labels=_NO_LABELS,
            window_start_frame=int(row["window_start_frame"]),
            fps=fps,
            duration=record.duration,
            frame_stride=frame_stride,
        )
        return plan

    def load(self, row: dict[str, Any], rng: np.random.Generator) -> dict[str, Any]:
        """One example dict (see adatad.data.batch), plus `video_index` and `valid`.

        A video that fails to decode yields an all-zero example with valid=False, so the consumer
        can count and skip it (and stop past a ceiling) instead of a crash deep inside a worker.
        """
        plan = self.plan(row, rng)
        try:
            frames = self.frames.read(plan.video_id, plan.path, plan.frame_indices)
            frames = self.transform(frames, rng)
        except (VideoDecodeError, FrameStoreError) as exc:
            # One line on this actor's log (Ray forwards it to the driver); the consumer counts the
            # invalid example by video_index and names the file again when it stops the run.
            log.warning("skipping clip of video %r (video_index %s): %s", plan.video_id, row["video_index"], exc)
            frames = None
        return self._example(plan, frames, row["video_index"])

    def iter_video_windows(self, row: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every test window of the video in ``row`` (a `record_to_row` row), in order: its sliding
        windows, or its one resized window (``data.sampling``).

        Each example equals what `load` gives for that window's `window_rows` row, but the video
        is decoded once, front to back (each frame once instead of about twice). If decoding
        fails part-way, the windows from there on come as all-zero examples with valid=False
        (one warning line), so the consumer still sees every window exactly once.
        """
        if self.train:
            raise ValueError("iter_video_windows yields test windows; build the ClipLoader with train=False")
        record = row_to_record(row)
        rng = np.random.default_rng(0)  # the test transform draws nothing; the argument is required
        d = self.data
        stream = WindowStream(record, d.window_size, d.frame_stride, d.test_window_overlap,
                              lambda clip: self.transform(clip, rng), per_frame=is_per_frame(self.transform),
                              num_threads=d.decode_threads, frames_per_position=d.frames_per_position,
                              sampling=d.sampling, open_reader=lambda: self.frames.open(record.video_id, record.path))
        windows = iter(stream)
        failed = False
        try:
            for index, plan in enumerate(stream.plans):
                frames = None
                if not failed:
                    try:
                        _, frames = next(windows)
                    except (VideoDecodeError, FrameStoreError) as exc:
                        failed = True
                        log.warning("video %r (video_index %s): windows %d-%d of %d invalid: %s", record.video_id,
                                    row["video_index"], index + 1, len(stream.plans), len(stream.plans), exc)
                # As `plan` builds for a window row: the window's GT is not carried (evaluation
                # uses the video-level GT in seconds).
                yield self._example(replace(plan, segments=_NO_SEGMENTS, labels=_NO_LABELS), frames,
                                    row["video_index"])
        finally:
            windows.close()  # a consumer that stops early releases the reader now

    def _example(self, plan: ClipPlan, frames: np.ndarray | None, video_index: int) -> dict[str, Any]:
        """The example dict; ``frames=None`` (decode failed) gives zeros and valid=False."""
        valid = frames is not None
        if frames is None:
            size = self.data.crop_size
            frames = np.zeros((len(plan.frame_indices), size, size, 3), np.uint8)
        example = clip_to_example(plan, frames, self.data.max_segments)
        example.pop("video_id", None)  # strings do not convert to tensors; video_index does
        example["video_index"] = np.int64(video_index)
        example["valid"] = np.bool_(valid)
        return example
