"""The functions Ray Train runs on every worker: `train_loop_per_worker` and `evaluate_loop_per_worker`.

The fit itself is the library's (`adatad.engine.fit`: epochs, resume, validation schedule, best mAP,
history); a worker only adds what a Ray worker knows: its dataset shards, its rank, the checkpoint it
resumes from, the report (metrics and a checkpoint) per epoch, and the progress events it posts for
the driver's console.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch

from adatad.atomic import atomic_write_text
from adatad.config import Config, config_from_dict
from adatad.data.clips import row_to_record
from adatad.engine.epoch import StepProgress
from adatad.engine.fit import EpochResult, FitHooks, fit, validate_once
from adatad.engine.state import TrainingState, build_training_state, read_checkpoint, save_checkpoint
from adatad.models.build import model_from_checkpoint
from adatad.retry import set_window
from adatad.run_folder import HISTORY_FILE, PREDICTIONS_FILE, checkpoint_dir_name
from pipelines.ray_layer.checkpoint_upload import checkpoint_uploader
from pipelines.ray_layer.datasets import val_name
from pipelines.ray_layer.progress_relay import ProgressReporter
from pipelines.tracking.runs import start_system_metrics, stop_system_metrics

log = logging.getLogger("adatad.train")
TRAIN_VIDEOS_KEY = "train_video_indices"  # per-rank report entry: video index of every clip trained on
# Ray Train ranks the checkpoints by this report entry (RunConfig's CheckpointConfig): the epoch's average
# mAP, -1 where the epoch did not validate (those rank last; Ray always keeps the latest). It lives in the
# report only: the history and MLflow record mAP where it was measured, without placeholders.
CHECKPOINT_SCORE_KEY = "val_score"


def _warn(progress: ProgressReporter):
    """A warning for the log and, once, for the user's console."""
    def warn(text: str) -> None:
        log.warning(text)
        progress.post("warning", wait=True, text=text)
    return warn


def _val_batches(cfg: Config, rank: int):
    """This worker's test windows (`val_<rank>`: its own videos, see `datasets.validation_datasets`)."""
    shard = ray.train.get_dataset_shard(val_name(rank))
    return shard.iter_torch_batches(batch_size=cfg.train.val_batch_size,
                                    prefetch_batches=cfg.runtime.prefetch_batches, device="cpu")


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point: the library's fit (`adatad.engine.fit`) over this worker's shards, with a
    report (metrics, and on rank 0 a checkpoint) per epoch and progress events for the driver."""
    cfg = config_from_dict(loop_config["config"])
    set_window(cfg.runtime.storage_retry_s)  # reads and checkpoint uploads of a URI ride out an outage this long
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
    train_shard = ray.train.get_dataset_shard("train")

    clock = loop_config.get("epoch_clock")  # the decode actors draw this epoch's clips (datasets.EpochClock)

    def train_batches(epoch: int):
        if clock is not None:  # before the iterator asks Ray Data for the epoch, which starts its execution
            ray.get(clock.set.remote(rank, epoch))
        return train_shard.iter_torch_batches(batch_size=cfg.train.batch_size // world, device="cpu",
                                              prefetch_batches=cfg.runtime.prefetch_batches, drop_last=False)

    hooks = FitHooks(
        # rank 0's bar starts at the epoch's start, so its ETA counts the first step too
        on_epoch_start=(lambda epoch: progress.post("epoch_start", epoch=epoch, steps=steps)) if rank == 0 else None,
        on_step=_step_events(progress, steps) if rank == 0 else None,
        on_val_windows=lambda epoch, n: progress.post("val", epoch=epoch, windows=n),
        on_warning=_warn(progress),
        on_epoch_end=lambda done: _report(state, cfg, done, class_names, rank, progress))
    try:
        fit(state, cfg, train_batches, lambda epoch: _val_batches(cfg, rank), device,
            train_paths=loop_config.get("train_paths") or [], test_records=test_records, class_names=class_names,
            hooks=hooks, rank=rank)
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


def _step_events(progress: ProgressReporter, steps: int):
    def post(epoch: int, step: StepProgress) -> None:
        progress.post("step", epoch=epoch, step=step.step, steps=steps, loss=step.loss, lr=step.lr,
                      clips_per_s=step.clips_per_s, wait_frac=step.wait_frac)
    return post


def _report(state: TrainingState, cfg: Config, done: EpochResult, class_names: list[str], rank: int,
            progress: ProgressReporter) -> None:
    """Every rank reports which training videos it saw (callbacks get all ranks' reports: the shards
    must be disjoint and cover the epoch; kept out of the history); rank 0 adds the checkpoint."""
    reported = {**done.metrics, CHECKPOINT_SCORE_KEY: done.metrics.get("average_mAP", -1.0), TRAIN_VIDEOS_KEY: done.seen}
    if rank != 0:
        ray.train.report(reported, checkpoint=None)
        return
    log.info("epoch %d: %s", done.epoch, json.dumps(done.metrics))
    progress.post("epoch", wait=True, metrics=done.metrics)
    with tempfile.TemporaryDirectory() as directory:
        save_checkpoint(state, cfg, directory, class_names)
        atomic_write_text(Path(directory) / HISTORY_FILE, json.dumps(state.history, indent=1))
        if done.results is not None:
            atomic_write_text(Path(directory) / PREDICTIONS_FILE, json.dumps(done.results))
        ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(directory),
                         checkpoint_dir_name=checkpoint_dir_name(done.epoch),
                         checkpoint_upload_fn=checkpoint_uploader())


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
    hooks = FitHooks(on_val_windows=lambda epoch, n: progress.post("val", epoch=epoch, windows=n),
                     on_warning=_warn(progress))
    metrics, results = validate_once(model, cfg, _val_batches(cfg, rank), device, records,
                                     list(loop_config["class_names"]), hooks)
    if rank != 0:
        ray.train.report(metrics, checkpoint=None)
        return
    with tempfile.TemporaryDirectory() as directory:
        atomic_write_text(Path(directory) / PREDICTIONS_FILE, json.dumps(results))
        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
