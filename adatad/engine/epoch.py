"""One epoch over any iterable of batches: `train_one_epoch` and `validate`.

Why here and not in the Ray worker: training or validating must work from a plain list of batches,
a DataLoader or a Ray Data shard alike (a notebook, the DataLoader baseline, Ray Train). The Ray
worker only hands its shard's batch iterator in and forwards the callbacks' events to the driver.

Batches are dicts of CPU tensors as `adatad.data.batch.collate_examples` makes them (frames uint8
(B, T, H, W, 3), masks, segments, labels, num_segments, window bookkeeping, `valid`, `video_index`).
Examples whose video failed to decode (`valid` False) are dropped and counted in a
`DecodeFailures`, which stops the epoch past its ceiling.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from adatad.config import InferenceConfig
from adatad.data.annotations import VideoRecord
from adatad.data.check import DecodeFailures
from adatad.engine.state import TrainingState
from adatad.engine.step import autocast, train_step
from adatad.engine.validation import WindowCollector, metrics_of
from adatad.evaluation import DEFAULT_TIOU_THRESHOLDS

Batch = dict[str, torch.Tensor]
Warn = Callable[[str], None]


@dataclass(frozen=True)
class StepProgress:
    """What a progress display shows after each training step."""

    step: int
    loss: float
    lr: float
    clips_per_s: float
    wait_frac: float


def drop_failed(batch: Batch, failures: DecodeFailures, where: str, on_warning: Warn | None = None) -> Batch:
    """`batch` without the examples whose video failed to decode (counted in `failures`, which raises
    DecodeFailureError past its ceiling); `on_warning` gets one line naming the files."""
    if "valid" not in batch:
        return batch
    valid = batch["valid"].bool()
    dropped = int((~valid).sum())
    if not dropped:
        return batch
    indices = batch["video_index"][~valid].tolist() if "video_index" in batch else [-1] * dropped
    paths = failures.add(indices)
    if on_warning is not None:
        on_warning(f"{where}: skipped {dropped} clip(s) that failed to decode: {', '.join(paths)} "
                   f"({len(failures)} this epoch; data.max_decode_failures={failures.ceiling})")
    return {k: v[valid] for k, v in batch.items()}


def train_one_epoch(state: TrainingState, batches: Iterable[Batch], device: torch.device, *,
                    clip_grad_norm: float, amp: bool, failures: DecodeFailures | None = None,
                    where: str = "epoch", on_step: Callable[[StepProgress], None] | None = None,
                    on_warning: Warn | None = None, seen: list[int] | None = None) -> dict[str, float]:
    """One pass over `batches`; returns the epoch's averaged training metrics.

    `on_step` gets a `StepProgress` after every step; `seen` collects the `video_index` of every
    clip trained on (to check that workers' shards are disjoint). The time spent waiting for the
    next batch is measured here, so `data_wait_frac` says how much the input held training back.
    """
    failures = failures if failures is not None else DecodeFailures([], ceiling=2**62)
    sums = {"loss": 0.0, "cls_loss": 0.0, "reg_loss": 0.0}
    n_steps = n_trained = clips = 0  # optimizer steps; steps with at least one decoded clip
    wait = 0.0
    start = time.perf_counter()
    iterator = iter(batches)
    while True:
        t0 = time.perf_counter()
        batch = next(iterator, None)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        decoded = drop_failed(batch, failures, where, on_warning)
        if len(decoded["frames"]) == 0:
            if _processes() > 1:
                # Under DDP every process takes every step (the gradient all-reduce pairs them up;
                # the shards have equal batch counts): a process whose whole batch failed to decode
                # steps on it with its loss weighted 0, adding nothing to the averaged gradient.
                train_step(state.model, {k: v.to(device) for k, v in batch.items()}, state.optimizer,
                           state.scheduler, state.scaler, state.ema, clip_grad_norm, device, amp, loss_weight=0.0)
                n_steps += 1
            continue
        batch = decoded
        if seen is not None:
            seen.extend(int(i) for i in batch["video_index"])
        result = train_step(state.model, {k: v.to(device, non_blocking=True) for k, v in batch.items()},
                            state.optimizer, state.scheduler, state.scaler, state.ema, clip_grad_norm, device, amp)
        for key in sums:
            sums[key] += getattr(result, key)
        n_steps += 1
        n_trained += 1
        clips += len(batch["frames"])
        if on_step is not None:
            elapsed = time.perf_counter() - start
            on_step(StepProgress(n_steps, result.loss, state.optimizer.param_groups[0]["lr"], clips / elapsed,
                                 wait / elapsed))
    elapsed = time.perf_counter() - start
    metrics = {key: value / max(1, n_trained) for key, value in sums.items()}
    lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(state.optimizer.param_groups)}
    metrics.update(
        lr_base=float(lrs.get("decay", next(iter(lrs.values())))),
        lr_adapter=float(lrs.get("adapter", 0.0)),
        epoch_time_s=elapsed,
        clips_per_s=clips / elapsed if elapsed > 0 else 0.0,
        data_wait_frac=wait / elapsed if elapsed > 0 else 0.0,
        steps=n_steps,
        decode_failures=len(failures),
    )
    return metrics


@torch.no_grad()
def predict_windows(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, *, amp: bool,
                    inference: InferenceConfig, failures: DecodeFailures | None = None,
                    on_windows: Callable[[int], None] | None = None, on_warning: Warn | None = None
                    ) -> WindowCollector:
    """Detections of every test window in `batches`, in seconds, under their video index.

    `on_windows` gets the running count of windows read (including failed ones).
    """
    model.eval()
    collector = WindowCollector()
    failures = failures if failures is not None else DecodeFailures([], ceiling=2**62, what="test windows")
    windows = 0
    if on_windows is not None:
        on_windows(0)  # a progress display opens its bar before the first window arrives
    for batch in batches:
        windows += len(batch["frames"])
        if on_windows is not None:
            on_windows(windows)
        batch = drop_failed(batch, failures, "validation", on_warning)
        if len(batch["frames"]) == 0:
            continue
        with autocast(device, amp):
            dets = model.predict(batch["frames"].to(device), batch["masks"].to(device),
                                 pre_nms_thresh=inference.pre_nms_thresh, pre_nms_topk=inference.pre_nms_topk)
        collector.add_batch(dets, batch)
    return collector


def clip_accounting(trained: list[int], failed: list[int], num_videos: int) -> dict[str, int]:
    """How an epoch's input compares with its plan (one clip per training video): `clips_lost`
    videos that no process received, `clips_repeated` extra receptions, `decode_failures` clips
    that failed to decode. `trained` and `failed` hold the video index of every clip this process
    trained on or received undecodable; under torch.distributed the counts cover every process
    (each gets the same numbers).

    Why: a lost node can take clips with it (Ray Data re-executes what it can); what it cannot
    recover must show up in the history instead of silently shrinking an epoch. And a clip that
    failed on any process belongs in the epoch's count, not only those of the process that logs.
    """
    parts: list[Any] = [(list(trained), list(failed))]
    if _processes() > 1:
        parts = [None] * _processes()
        dist.all_gather_object(parts, (list(trained), list(failed)))
    everything = [i for t, f in parts for i in (*t, *f)]
    received = set(everything)
    return {"clips_lost": sum(1 for i in range(num_videos) if i not in received),
            "clips_repeated": len(everything) - len(received),
            "decode_failures": sum(len(f) for _, f in parts)}


def _processes() -> int:
    """How many processes train together under torch.distributed (1 without it)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_across_processes(collector: WindowCollector) -> WindowCollector:
    """Every process's windows in one collector, when torch.distributed runs several processes
    (each validates its own videos); the collector itself otherwise."""
    if _processes() == 1:
        return collector
    gathered: list[Any] = [None] * _processes()
    dist.all_gather_object(gathered, dict(collector.by_video))
    merged = WindowCollector()
    for part in gathered:
        merged.merge(part)
    return merged


def validate(model: torch.nn.Module, batches: Iterable[Batch], device: torch.device, *, amp: bool,
             inference: InferenceConfig, records: list[VideoRecord], class_names: list[str],
             tiou_thresholds: Sequence[float] = DEFAULT_TIOU_THRESHOLDS, failures: DecodeFailures | None = None,
             on_windows: Callable[[int], None] | None = None, on_warning: Warn | None = None
             ) -> tuple[dict[str, float], dict]:
    """Predict the test windows in `batches`, merge them per video (soft-NMS) and evaluate.

    Under torch.distributed every process passes its own videos' windows and all get the metrics
    of the whole test set. Returns (metrics: mAP_<tIoU> and average_mAP as fractions plus
    val_time_s, results json of every video).
    """
    start = time.perf_counter()
    collector = predict_windows(model, batches, device, amp=amp, inference=inference, failures=failures,
                                on_windows=on_windows, on_warning=on_warning)
    collector = gather_across_processes(collector)
    results = collector.results(records, class_names, inference)
    evaluation = metrics_of(results, records, class_names, tiou_thresholds)
    metrics = {f"mAP_{k}": float(v) for k, v in evaluation["mAP"].items()}
    metrics["average_mAP"] = float(evaluation["average_mAP"])
    metrics["val_time_s"] = time.perf_counter() - start
    return metrics, results
