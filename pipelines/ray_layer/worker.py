"""The functions Ray Train runs on every worker: `train_loop_per_worker` and `evaluate_loop_per_worker`.

The epoch itself is the library's (`adatad.engine.epoch`); a worker only adds what a Ray worker
knows: its dataset shards, its rank, the checkpoint it resumes from, the report (metrics and a
checkpoint) per epoch, and the progress events it posts for the driver's console.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from adatad.atomic import atomic_write_text
from adatad.config import Config, config_from_dict
from adatad.data.check import DecodeFailures
from adatad.data.clips import row_to_record
from adatad.engine.epoch import StepProgress, clip_accounting, train_one_epoch, validate
from adatad.engine.state import TrainingState, build_training_state, read_checkpoint, save_checkpoint
from adatad.models.build import model_from_checkpoint
from adatad.run_folder import HISTORY_FILE, PREDICTIONS_FILE
from pipelines.ray_layer.datasets import val_name
from pipelines.ray_layer.progress_relay import ProgressReporter
from pipelines.ray_layer.tracking import start_system_metrics, stop_system_metrics

log = logging.getLogger("adatad.train")
TRAIN_VIDEOS_KEY = "train_video_indices"  # per-rank report entry: video index of every clip trained on


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _warn(progress: ProgressReporter):
    """A warning for the log and, once, for the user's console."""
    def warn(text: str) -> None:
        log.warning(text)
        progress.post("warning", wait=True, text=text)
    return warn


def _validate(model: torch.nn.Module, cfg: Config, rank: int, device: torch.device, records, class_names,
              epoch: int, progress: ProgressReporter) -> tuple[dict[str, float], dict]:
    """This worker's test videos (`val_<rank>`) through `adatad.engine.epoch.validate`; every rank
    gets the metrics of the whole test set."""
    shard = ray.train.get_dataset_shard(val_name(rank))
    batches = shard.iter_torch_batches(batch_size=cfg.train.val_batch_size,
                                       prefetch_batches=cfg.runtime.prefetch_batches, device="cpu")
    failures = DecodeFailures([r.path for r in records], cfg.data.max_decode_failures, what="test windows")
    return validate(model, batches, device, amp=cfg.train.amp, inference=cfg.model.inference, records=records,
                    class_names=class_names, tiou_thresholds=cfg.evaluation.tiou_thresholds, failures=failures,
                    on_warning=_warn(progress),
                    on_windows=lambda n: progress.post("val", epoch=epoch, windows=n))


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: epochs from the state's next one to the end; train, validate when
    due, report every epoch with a checkpoint (rank 0)."""
    cfg = config_from_dict(loop_config["config"])
    test_records = [row_to_record(r) for r in loop_config["test_rows"]]
    class_names = list(loop_config["class_names"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    progress = ProgressReporter(loop_config.get("progress"), rank)
    torch.manual_seed(cfg.train.seed + rank)
    steps = max(1, math.ceil(loop_config["num_train_videos"] / world / (cfg.train.batch_size // world)))
    state = _start_state(cfg, steps, device, rank, world, progress)
    tracking = loop_config.get("mlflow")  # {"uri", "run_id"}: system metrics of the training node
    monitor = start_system_metrics(tracking["uri"], tracking["run_id"]) if tracking and rank == 0 else None
    try:
        train_shard = ray.train.get_dataset_shard("train")
        best_map = state.history[-1].get("best_average_mAP", -1.0) if state.history else -1.0
        for epoch in range(state.epoch + 1, cfg.train.epochs):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            if rank == 0:  # the bar starts now, so its ETA counts the first step too
                progress.post("epoch_start", epoch=epoch, steps=steps)
            seen: list[int] = []
            batches = train_shard.iter_torch_batches(batch_size=cfg.train.batch_size // world, device="cpu",
                                                     prefetch_batches=cfg.runtime.prefetch_batches, drop_last=False)
            failures = DecodeFailures(loop_config.get("train_paths") or [], cfg.data.max_decode_failures)
            metrics: dict[str, Any] = train_one_epoch(
                state, batches, device, clip_grad_norm=cfg.train.clip_grad_norm, amp=cfg.train.amp,
                failures=failures, where=f"epoch {epoch} rank {rank}", on_warning=_warn(progress), seen=seen,
                on_step=_step_events(progress, epoch, steps) if rank == 0 else None)
            metrics.update(clip_accounting(seen, failures.failed, loop_config["num_train_videos"]))
            if rank == 0 and (metrics["clips_lost"] or metrics["clips_repeated"]):
                log.warning("epoch %d: %d training clip(s) lost, %d repeated (a node or actor failed mid-epoch)",
                            epoch, metrics["clips_lost"], metrics["clips_repeated"])
            metrics["epoch"] = epoch
            results = None
            if _validates(cfg, epoch):
                val_metrics, results = _validate(state.eval_model, cfg, rank, device, test_records, class_names,
                                                 epoch, progress)
                metrics.update(val_metrics)
                best_map = max(best_map, val_metrics["average_mAP"])
            metrics["peak_memory_mb"] = _peak_memory_mb(device)  # training and validation of this epoch
            metrics["best_average_mAP"] = best_map
            # Checkpoint ranking: validated epochs by mAP; the rest rank last (Ray always keeps the latest).
            metrics["val_score"] = metrics.get("average_mAP", -1.0)
            state.epoch = epoch
            state.history.append(metrics)
            _report(state, cfg, metrics, seen, results, class_names, rank, progress)
    finally:
        if monitor is not None:
            try:
                stop_system_metrics(monitor)
            except Exception as exc:  # noqa: BLE001 - never let monitoring hide the run's own outcome
                log.warning("system metrics: could not log the last sample: %s", exc)


def _start_state(cfg: Config, steps: int, device: torch.device, rank: int, world: int,
                 progress: ProgressReporter) -> TrainingState:
    """A fresh state, or the one of the checkpoint Ray Train resumes from; the model wrapped for DDP."""
    checkpoint = ray.train.get_checkpoint()  # a resumed run's weights replace any model.init_from
    state = build_training_state(cfg, steps_per_epoch=steps, device=device, load_init_from=checkpoint is None)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state.load_state_dict(read_checkpoint(directory))
        log.info("resumed from the checkpoint of epoch %d", state.epoch)
    if rank == 0:  # the driver tells a user's --resume from Ray Train's restart after a failure
        progress.post("start", wait=True, resumed_epoch=state.epoch if checkpoint is not None else None)
    kwargs = {"parallel_strategy_kwargs": {"static_graph": True}} if world > 1 else {}
    state.model = ray.train.torch.prepare_model(state.model, **kwargs)
    return state


def _validates(cfg: Config, epoch: int) -> bool:
    """Validation epochs: every `val_interval` from `val_start_epoch`, and always the last one."""
    t = cfg.train
    return (epoch >= t.val_start_epoch and (epoch + 1) % t.val_interval == 0) or epoch == t.epochs - 1


def _step_events(progress: ProgressReporter, epoch: int, steps: int):
    def post(step: StepProgress) -> None:
        progress.post("step", epoch=epoch, step=step.step, steps=steps, loss=step.loss, lr=step.lr,
                      clips_per_s=step.clips_per_s, wait_frac=step.wait_frac)
    return post


def _report(state: TrainingState, cfg: Config, metrics: dict[str, Any], seen: list[int], results: dict | None,
            class_names: list[str], rank: int, progress: ProgressReporter) -> None:
    """Every rank reports which training videos it saw (callbacks get all ranks' reports: the shards
    must be disjoint and cover the epoch; kept out of the history); rank 0 adds the checkpoint."""
    reported = {**metrics, TRAIN_VIDEOS_KEY: seen}
    if rank != 0:
        ray.train.report(reported, checkpoint=None)
        return
    log.info("epoch %d: %s", metrics["epoch"], json.dumps(metrics))
    progress.post("epoch", wait=True, metrics=metrics)
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(state, cfg, directory, class_names)
        atomic_write_text(Path(directory) / HISTORY_FILE, json.dumps(state.history, indent=1))
        if results is not None:
            atomic_write_text(Path(directory) / PREDICTIONS_FILE, json.dumps(results))
        ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(directory))


def evaluate_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point of `pipelines/test.py`: training's validation, once, with given weights.

    `loop_config["weights"]` is a `adatad.models.trained.TrainedModel.state` (or an ObjectRef of
    one); rank 0 reports the merged predictions in a checkpoint folder (PREDICTIONS_FILE).
    """
    cfg = config_from_dict(loop_config["config"])
    records = [row_to_record(r) for r in loop_config["test_rows"]]
    rank = ray.train.get_context().get_world_rank()
    device = ray.train.torch.get_device()
    weights = loop_config["weights"]
    if isinstance(weights, ray.ObjectRef):
        weights = ray.get(weights)
    model, _ = model_from_checkpoint(weights, use_ema=True)
    model.to(device)
    progress = ProgressReporter(loop_config.get("progress"), rank)
    metrics, results = _validate(model, cfg, rank, device, records, list(loop_config["class_names"]), -1, progress)
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as directory:
        atomic_write_text(Path(directory) / PREDICTIONS_FILE, json.dumps(results))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
