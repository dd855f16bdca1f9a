"""The whole fit: every epoch from where the training state stands to the end of the schedule.

Why in the library: the loop around the epochs (where a resumed run starts, which epochs validate,
the best mAP so far, the history) is the same whoever feeds the batches: Ray Train's workers
(`pipelines/ray_layer/worker.py` hands in its dataset shards and turns the hooks into reports and
progress events), a notebook, a debugger, the DataLoader baseline. A resumed state (its `epoch` and
`history` loaded from a checkpoint) continues with the next epoch.
"""

from __future__ import annotations

import logging
import resource
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from adatad.config import Config, TrainConfig
from adatad.data.annotations import VideoRecord
from adatad.data.check import DecodeFailures
from adatad.engine.epoch import Batch, StepProgress, Warn, clip_accounting, train_one_epoch, validate
from adatad.engine.state import TrainingState

log = logging.getLogger("adatad.train")


@dataclass(frozen=True)
class EpochResult:
    """One finished epoch, after `state.history` holds its metrics."""

    epoch: int
    metrics: dict[str, Any]
    seen: list[int]  # video index of every clip this process trained on
    results: dict | None  # the validation's predictions json (None: not a validation epoch)


@dataclass
class FitHooks:
    """What a caller is told during the fit; every hook is optional."""

    on_epoch_start: Callable[[int], None] | None = None  # epoch
    on_step: Callable[[int, StepProgress], None] | None = None  # epoch, progress after the step
    on_val_windows: Callable[[int, int], None] | None = None  # epoch, test windows read so far
    on_warning: Warn | None = None  # a line the user should see (decode failures)
    on_epoch_end: Callable[[EpochResult], None] | None = field(default=None)  # checkpoint, report


def best_average_map(history: Sequence[dict[str, Any]]) -> float | None:
    """The best validation mAP so far (None before the first validation); read from the records, so a
    resumed run and a history written with the old -1 sentinels give the same answer."""
    return max((h["average_mAP"] for h in history if "average_mAP" in h), default=None)


def validates(train: TrainConfig, epoch: int) -> bool:
    """Validation epochs: every `val_interval` from `val_start_epoch`, and always the last one."""
    return (epoch >= train.val_start_epoch and (epoch + 1) % train.val_interval == 0) or epoch == train.epochs - 1


def peak_memory_mb(device: torch.device) -> float:
    """This epoch's peak: CUDA's allocator on a GPU, the process's maximum RSS on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def fit(state: TrainingState, cfg: Config, train_batches: Callable[[int], Iterable[Batch]],
        val_batches: Callable[[int], Iterable[Batch]] | None, device: torch.device, *,
        train_paths: Sequence[str], test_records: Sequence[VideoRecord] = (), class_names: Sequence[str] = (),
        hooks: FitHooks | None = None, rank: int = 0) -> list[dict[str, Any]]:
    """Train epochs `state.epoch + 1 .. cfg.train.epochs - 1`; returns the history.

    An epoch's record holds only what was measured in it: `average_mAP`, `mAP_<tIoU>`, `val_time_s`
    and `best_average_mAP` (the best so far) on validated epochs only, no placeholder elsewhere;
    counts (`steps`, `decode_failures`, `clips_lost`, `clips_repeated`) are integers.

    `train_batches(epoch)` / `val_batches(epoch)` give an epoch's batches (a Ray Data shard's
    iterator, a DataLoader, a list). `train_paths[i]` is the file of training video `i` (names
    the files of decode failures; its length is the number of clips an epoch plans). Under
    torch.distributed every process calls `fit` with its own shards and `rank`; the metrics of
    every process count all processes' clips and windows.
    """
    hooks = hooks or FitHooks()
    t = cfg.train
    best_map = best_average_map(state.history)
    for epoch in range(state.epoch + 1, t.epochs):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        if hooks.on_epoch_start is not None:
            hooks.on_epoch_start(epoch)
        seen: list[int] = []
        failures = DecodeFailures(train_paths, cfg.data.max_decode_failures)
        on_step = (lambda p, e=epoch: hooks.on_step(e, p)) if hooks.on_step is not None else None
        metrics: dict[str, Any] = train_one_epoch(
            state, train_batches(epoch), device, clip_grad_norm=t.clip_grad_norm, amp=t.amp, failures=failures,
            where=f"epoch {epoch} rank {rank}", on_warning=hooks.on_warning, seen=seen, on_step=on_step)
        metrics.update(clip_accounting(seen, failures.failed, len(train_paths)))
        if rank == 0 and (metrics["clips_lost"] or metrics["clips_repeated"]):
            log.warning("epoch %d: %d training clip(s) lost, %d repeated (a node or actor failed mid-epoch)",
                        epoch, metrics["clips_lost"], metrics["clips_repeated"])
        metrics["epoch"] = epoch
        results = None
        if val_batches is not None and validates(t, epoch):
            val_metrics, results = validate_once(state.eval_model, cfg, val_batches(epoch), device, test_records,
                                                 class_names, hooks, epoch)
            metrics.update(val_metrics)
            best_map = val_metrics["average_mAP"] if best_map is None else max(best_map, val_metrics["average_mAP"])
            metrics["best_average_mAP"] = best_map
        metrics["peak_memory_mb"] = peak_memory_mb(device)  # training and validation of this epoch
        state.epoch = epoch
        state.history.append(metrics)
        if hooks.on_epoch_end is not None:
            hooks.on_epoch_end(EpochResult(epoch, metrics, seen, results))
    return state.history


def validate_once(model: torch.nn.Module, cfg: Config, batches: Iterable[Batch], device: torch.device,
                  records: Sequence[VideoRecord], class_names: Sequence[str], hooks: FitHooks | None = None,
                  epoch: int = -1) -> tuple[dict[str, float], dict]:
    """One validation with the config's settings (`test.py` runs it with given weights, epoch -1)."""
    hooks = hooks or FitHooks()
    failures = DecodeFailures([r.path for r in records], cfg.data.max_decode_failures, what="test windows")
    on_windows = (lambda n: hooks.on_val_windows(epoch, n)) if hooks.on_val_windows is not None else None
    return validate(model, batches, device, amp=cfg.train.amp, inference=cfg.model.inference, records=list(records),
                    class_names=list(class_names), tiou_thresholds=cfg.evaluation.tiou_thresholds,
                    failures=failures, on_windows=on_windows, on_warning=hooks.on_warning)
