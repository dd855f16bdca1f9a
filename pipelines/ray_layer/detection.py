"""Batch detection on Ray Data: inspect videos -> decode windows -> `Predict` actors -> per-video merge.

Stages: each video is inspected by a Ray task (`adatad.data.inspect.inspect_video`: the decoder's
frame count and fps; a video that cannot be used goes straight to the errors); its sliding test
windows are cut from one decode on CPU actors (`datasets.test_dataset`, the validation dataset);
`Predict` actors (one GPU each when the cluster has GPUs and runtime.use_gpu is set, else CPU) run
the EMA weights; the driver merges each video's windows with soft-NMS as soon as all have arrived
(`adatad.engine.validation.WindowCollector`, the validation code).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adatad.config import Config, InferenceConfig
from adatad.data.annotations import UNKNOWN_FRAMES, VideoRecord
from adatad.data.clips import count_windows, plan_test_windows
from adatad.data.inspect import VideoInspection, inspect_video
from adatad.data.video import VideoDecodeError, read_frames
from adatad.engine.validation import WindowCollector
from adatad.postprocess import Detections

SUBSET = "detect"  # VideoRecord.subset of the videos given on the command line
PASSTHROUGH = ("video_index", "window_start_frame", "fps", "duration", "frame_stride", "valid")


class DetectInputError(ValueError):
    """A problem with detection's inputs, reported as one line."""


def inspect_videos_on_ray(paths: Sequence[Path], num_cpus: float) -> tuple[list[VideoRecord], dict[str, str]]:
    """Records from the decoder's own frame count and fps (duration = frames / fps), one Ray task per
    video (adatad.data.inspect only: no torch import in the task worker); videos that cannot be used
    go to the returned errors (video id -> one-line reason)."""
    import ray

    inspect = ray.remote(num_cpus=num_cpus, max_retries=0)(inspect_video)
    refs = [inspect.remote(str(p)) for p in paths]
    records, errors = [], {}
    for path, ref in zip(paths, refs, strict=True):
        result: VideoInspection = ray.get(ref)
        if result.problem is not None:
            errors[path.stem] = result.problem
        else:
            records.append(video_record(path, result))
    return records, errors


def video_record(path: Path, inspection: VideoInspection) -> VideoRecord:
    """A record without ground truth from a usable inspection (duration = frames / fps)."""
    info = inspection.info
    assert info is not None and inspection.problem is None, inspection.problem
    return VideoRecord(video_id=path.stem, path=str(path), subset=SUBSET, duration=inspection.duration,
                       num_frames=info.num_frames, fps=info.fps, segments=np.zeros((0, 2)),
                       labels=np.zeros((0,), np.int64))


def unprobed_record(path: Path) -> VideoRecord:
    """A record of a video not probed yet (frame count unknown): what a frame store check needs."""
    return VideoRecord(video_id=path.stem, path=str(path), subset=SUBSET, duration=1.0, num_frames=UNKNOWN_FRAMES,
                       fps=0.0, segments=np.zeros((0, 2)), labels=np.zeros((0,), np.int64))


class Predict:
    """Ray Data callable class: loads the detector once per actor and predicts batches of windows.

    Output columns have fixed shapes so they travel through Arrow: detections padded to
    `pre_nms_topk` rows (the most `decode_window` returns per window) with their `count`, plus the
    window bookkeeping columns (`PASSTHROUGH`). Windows whose decode failed (valid=False) are not
    run through the model and come out with count 0.
    """

    def __init__(self, state: Any, pre_nms_thresh: float, pre_nms_topk: int, amp: bool, threads: int) -> None:
        import ray

        from adatad.models.build import model_from_checkpoint

        if isinstance(state, ray.ObjectRef):
            state = ray.get(state)
        if threads > 0:
            torch.set_num_threads(threads)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, _ = model_from_checkpoint(state, use_ema=True)
        self.model = model.to(self.device).eval()
        self.pre_nms_thresh, self.pre_nms_topk, self.amp = pre_nms_thresh, pre_nms_topk, amp

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from adatad.engine.step import autocast

        valid = np.asarray(batch["valid"], dtype=bool)
        n, k = len(valid), self.pre_nms_topk
        out = {key: np.asarray(batch[key]) for key in PASSTHROUGH}
        out["segments"] = np.zeros((n, k, 2), np.float32)
        out["scores"] = np.zeros((n, k), np.float32)
        out["labels"] = np.full((n, k), -1, np.int64)
        out["count"] = np.zeros(n, np.int64)
        rows = np.flatnonzero(valid)
        if len(rows) == 0:
            return out
        frames, masks = batch["frames"], batch["masks"]
        if len(rows) < n:  # fancy indexing copies, so only when some window failed
            frames, masks = frames[rows], masks[rows]
        frames = torch.from_numpy(frames).to(self.device)  # writable: map_batches(zero_copy_batch=False)
        masks = torch.from_numpy(masks).to(self.device)
        with torch.no_grad(), autocast(self.device, self.amp):
            dets = self.model.predict(frames, masks, pre_nms_thresh=self.pre_nms_thresh,
                                      pre_nms_topk=self.pre_nms_topk)
        for row, d in zip(rows, dets, strict=True):
            m = len(d)
            out["segments"][row, :m] = d.segments.numpy()
            out["scores"][row, :m] = d.scores.numpy()
            out["labels"][row, :m] = d.labels.numpy()
            out["count"][row] = m
        return out


def predict_resources(cfg: Config, cluster_gpus: float, actors: int | None) -> tuple[int, float, float]:
    """(actors, GPUs per actor, CPUs per actor): one GPU each when runtime.use_gpu and GPUs exist."""
    from pipelines.ray_layer.trainer import uses_gpu

    use_gpu = uses_gpu(cfg, cluster_gpus)
    if actors is None:
        actors = int(cluster_gpus) if use_gpu else 1
    if actors < 1:
        raise DetectInputError(f"--predict-actors {actors}: expected >= 1")
    return actors, (1.0 if use_gpu else 0.0), max(cfg.runtime.cpus_per_worker, 0.0 if use_gpu else 1.0)


def build_dataset(cfg: Config, records: list[VideoRecord], state_ref: Any, actors: int, gpus: float,
                  cpus: float):
    """Windows -> decoded clips (the validation dataset) -> per-window detections (fixed shapes)."""
    from ray.data import ActorPoolStrategy

    from pipelines.ray_layer.datasets import test_dataset

    inf = cfg.model.inference
    return test_dataset(cfg, records).map_batches(
        Predict,
        fn_constructor_kwargs={"state": state_ref, "pre_nms_thresh": inf.pre_nms_thresh,
                               "pre_nms_topk": inf.pre_nms_topk, "amp": cfg.train.amp,
                               "threads": 0 if gpus else max(1, int(cpus))},
        batch_size=cfg.train.val_batch_size,
        batch_format="numpy",
        # Ray's zero-copy batches are read-only views, which torch.from_numpy warns about (it cannot
        # mark a tensor read-only); a writable copy of the window costs a memcpy next to the model.
        zero_copy_batch=False,
        compute=ActorPoolStrategy(size=actors),
        num_gpus=gpus,
        num_cpus=cpus,
    )


# ---------------------------------------------------------------- per-video merge on the driver


@dataclass
class _Window:
    start: int
    dets: Detections
    meta: dict[str, Any]


def iter_windows(batches: Iterator[dict[str, np.ndarray]]) -> Iterator[tuple[int, _Window]]:
    """(video index, window) per row of the Predict output, detections cut back to their count."""
    for batch in batches:
        for i in range(len(batch["count"])):
            m = int(batch["count"][i])
            dets = Detections(torch.from_numpy(batch["segments"][i, :m].copy()),
                              torch.from_numpy(batch["scores"][i, :m].copy()),
                              torch.from_numpy(batch["labels"][i, :m].copy()))
            meta = {key: batch[key][i] for key in PASSTHROUGH}
            yield int(meta["video_index"]), _Window(int(meta["window_start_frame"]), dets, meta)


def merge_one(index: int, windows: list[_Window], records: list[VideoRecord], class_names: list[str],
              inference: InferenceConfig) -> list[dict]:
    """One video's windows (sorted by start, for a deterministic merge) through WindowCollector."""
    windows = sorted(windows, key=lambda w: w.start)
    collector = WindowCollector()
    batch = {key: [w.meta[key] for w in windows] for key in PASSTHROUGH}
    collector.add_batch([w.dets for w in windows], batch)
    return collector.results(records, class_names, inference)["results"][records[index].video_id]


def decode_failure_message(record: VideoRecord, cfg: Config, start_frame: int) -> str:
    """The decoder's own message for a window that failed inside a decode actor (re-read here once)."""
    for plan in plan_test_windows(record, cfg.data):
        if plan.window_start_frame == start_frame:
            try:
                read_frames(record.path, plan.frame_indices, num_threads=cfg.data.decode_threads)
            except VideoDecodeError as exc:
                return str(exc)
            break
    return f"{record.path}: window at frame {start_frame} failed to decode in a decode actor (see its log)"


def collect(batches: Iterator[dict[str, np.ndarray]], records: list[VideoRecord], class_names: list[str],
            cfg: Config, inference: InferenceConfig) -> tuple[dict[str, list[dict]], dict[str, str], int]:
    """Merge each video as soon as all its windows arrived; returns (results, errors, windows seen)."""
    expected = [count_windows(r, cfg.data) for r in records]
    pending: dict[int, list[_Window]] = defaultdict(list)
    results: dict[str, list[dict]] = {}
    errors: dict[str, str] = {}
    seen = 0
    for index, window in iter_windows(batches):
        seen += 1
        pending[index].append(window)
        if len(pending[index]) < expected[index]:
            continue
        windows = pending.pop(index)
        failed = [w.start for w in windows if not bool(w.meta["valid"])]
        record = records[index]
        if failed:
            errors[record.video_id] = (f"{decode_failure_message(record, cfg, min(failed))} "
                                       f"({len(failed)} of {len(windows)} windows failed)")
        else:
            results[record.video_id] = merge_one(index, windows, records, class_names, inference)
    for index, windows in pending.items():  # cannot happen unless rows were lost on the way
        errors[records[index].video_id] = f"only {len(windows)} of {expected[index]} windows came back"
    return results, errors, seen


@dataclass
class DetectionOutcome:
    results: dict[str, list[dict]]
    errors: dict[str, str]
    records: list[VideoRecord]
    stats: dict[str, float]


def detect_videos(cfg: Config, state: dict[str, Any], paths: list[Path], class_names: list[str],
                  inference: InferenceConfig, resources: dict[str, float], predict_actors: int | None = None,
                  progress: Callable[[int], Any] | None = None, warn: Callable[[str], None] | None = None
                  ) -> DetectionOutcome:
    """The whole detection on the connected Ray cluster (module docstring).

    `progress(total_windows)` returns a bar with `update(done)` and `close()`; `stats` has videos,
    failed, windows, seconds, windows_per_s and, once a batch arrived, first_batch_s (start-up: probe,
    actors, model load, first batch) and steady_windows_per_s (the stream after the first batch).
    """
    import ray

    start = time.perf_counter()
    records, errors = inspect_videos_on_ray(paths, cfg.runtime.decode_actor_cpus)
    results: dict[str, list[dict]] = {}
    windows = 0
    first: tuple[float, int] | None = None
    if records:
        actors, gpus, cpus = predict_resources(cfg, resources.get("GPU", 0.0), predict_actors)
        needed = actors * cpus + cfg.runtime.val_decode_actors * cfg.runtime.decode_actor_cpus
        if needed > resources.get("CPU", 0.0) and warn is not None:
            warn(f"the actors ask for {needed:g} CPUs but the cluster has {resources.get('CPU', 0):g}; they wait "
                 "for an autoscaler (lower runtime.cpus_per_worker, --decode-actors or runtime.decode_actor_cpus "
                 "otherwise)")
        total = sum(count_windows(r, cfg.data) for r in records)
        ds = build_dataset(cfg, records, ray.put(state), actors, gpus, cpus)
        bar = progress(total) if progress is not None else None

        def arrivals() -> Iterator[dict[str, np.ndarray]]:
            nonlocal first
            done = 0
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                if first is None:
                    first = (time.perf_counter(), len(batch["count"]))
                done += len(batch["count"])
                if bar is not None:
                    bar.update(done)
                yield batch

        try:
            results, decode_errors, windows = collect(arrivals(), records, class_names, cfg, inference)
        finally:
            if bar is not None:
                bar.close()
        errors.update(decode_errors)
    seconds = time.perf_counter() - start
    stats: dict[str, float] = {"videos": len(paths), "failed": len(errors), "windows": windows,
                               "seconds": round(seconds, 3),
                               "windows_per_s": round(windows / seconds, 3) if seconds > 0 else 0.0}
    if first is not None:
        first_s, first_n = first[0] - start, first[1]
        stats["first_batch_s"] = round(first_s, 3)
        if windows > first_n and seconds > first_s:
            stats["steady_windows_per_s"] = round((windows - first_n) / (seconds - first_s), 3)
    return DetectionOutcome(dict(sorted(results.items())), dict(sorted(errors.items())), records, stats)
