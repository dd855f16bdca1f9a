"""`train_loop_per_worker`: the one function Ray Train runs on every worker.

All the maths lives in `adatad.engine`; this file owns what only a Ray worker knows: its dataset
shard, its rank, the checkpoint it resumes from, and the report (metrics + checkpoint) per epoch.
"""

from __future__ import annotations

import json
import logging
import math
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import ray.train
import ray.train.torch
import torch
import torch.distributed as dist

from adatad.atomic import atomic_write_text
from adatad.config import config_from_dict
from adatad.data.check import DecodeFailures
from adatad.data.clips import row_to_record
from adatad.engine.state import TrainingState, build_training_state, read_checkpoint, save_checkpoint
from adatad.engine.step import autocast, train_step
from adatad.engine.validation import WindowCollector, metrics_of
from adatad.models.build import model_from_checkpoint
from pipelines.data import val_name
from pipelines.progress import ProgressReporter
from pipelines.tracking import start_system_metrics, stop_system_metrics

log = logging.getLogger("adatad.train")
PREDICTIONS_FILE = "predictions.json"
TRAIN_VIDEOS_KEY = "train_video_indices"  # per-rank report entry: video index of every clip trained on


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _valid_only(batch: dict[str, torch.Tensor], failures: DecodeFailures, where: str,
                progress: ProgressReporter | None = None) -> tuple[dict[str, torch.Tensor], int]:
    """Drop examples whose video failed to decode (counted in `failures`, with a warning naming
    the files; DecodeFailureError past the ceiling); return the batch and how many were dropped."""
    valid = batch["valid"].bool()
    dropped = int((~valid).sum())
    if dropped:
        indices = batch["video_index"][~valid].tolist() if "video_index" in batch else [-1] * dropped
        paths = failures.add(indices)
        text = (f"{where}: skipped {dropped} clip(s) that failed to decode: {', '.join(paths)} "
                f"({len(failures)} this epoch; data.max_decode_failures={failures.ceiling})")
        log.warning(text)
        if progress is not None:
            progress.post("warning", wait=True, text=text)
        batch = {k: v[valid] for k, v in batch.items()}
    return batch, dropped


def run_epoch(state: TrainingState, shard: Any, cfg, device: torch.device, epoch: int, steps: int,
              rank: int, train_paths: list[str] | None = None, progress: ProgressReporter | None = None,
              seen: list[int] | None = None) -> dict[str, float]:
    """One pass over this worker's shard; returns the epoch's averaged training metrics.

    `train_paths[video_index]` names the file of a clip that failed to decode; `progress` gets a
    step event after every step (rank 0 only: every rank runs the same number of steps); `seen`
    collects the video index of every clip trained on.
    """
    per_worker = cfg.train.batch_size // cfg.runtime.num_workers
    sums = {"loss": 0.0, "cls_loss": 0.0, "reg_loss": 0.0}
    n_steps = clips = 0
    failures = DecodeFailures(train_paths or [], cfg.data.max_decode_failures)
    wait = 0.0
    start = time.perf_counter()
    if rank == 0 and progress is not None:  # the bar starts now, so its ETA counts the first step too
        progress.post("epoch_start", epoch=epoch, steps=steps)
    iterator = iter(shard.iter_torch_batches(batch_size=per_worker, prefetch_batches=cfg.runtime.prefetch_batches,
                                             device="cpu", drop_last=False))
    while True:
        t0 = time.perf_counter()
        batch = next(iterator, None)
        wait += time.perf_counter() - t0
        if batch is None:
            break
        batch, _ = _valid_only(batch, failures, f"epoch {epoch} rank {rank}", progress)
        if len(batch["frames"]) == 0:
            continue
        if seen is not None:
            seen.extend(int(i) for i in batch["video_index"])
        result = train_step(state.model, _to_device(batch, device), state.optimizer, state.scheduler, state.scaler,
                            state.ema, cfg.train.clip_grad_norm, device, cfg.train.amp)
        for key in sums:
            sums[key] += getattr(result, key)
        n_steps += 1
        clips += len(batch["frames"])
        if rank == 0 and progress is not None:
            now = time.perf_counter()
            progress.post("step", epoch=epoch, step=n_steps, steps=steps, loss=result.loss,
                          lr=state.optimizer.param_groups[0]["lr"], clips_per_s=clips / (now - start),
                          wait_frac=wait / (now - start))
    elapsed = time.perf_counter() - start
    metrics = {key: value / max(1, n_steps) for key, value in sums.items()}
    lrs = {g.get("name", str(i)): g["lr"] for i, g in enumerate(state.optimizer.param_groups)}
    metrics.update(
        lr_base=float(lrs.get("decay", next(iter(lrs.values())))),
        lr_adapter=float(lrs.get("adapter", 0.0)),
        epoch_time_s=elapsed,
        clips_per_s=clips / elapsed if elapsed > 0 else 0.0,
        data_wait_frac=wait / elapsed if elapsed > 0 else 0.0,
        steps=float(n_steps),
        decode_failures=float(len(failures)),
    )
    return metrics


@torch.no_grad()
def run_validation(model: torch.nn.Module, shard: Any, cfg, device: torch.device, records, class_names,
                   epoch: int = -1, progress: ProgressReporter | None = None) -> tuple[dict[str, float], dict]:
    """Predict this worker's test windows, gather every worker's, merge per video, evaluate.

    `model` is what validation evaluates (training: the EMA weights). `progress` gets this
    worker's running count of windows (the driver adds up the ranks).
    """
    model.eval()
    collector = WindowCollector()
    inf = cfg.model.inference
    failures = DecodeFailures([r.path for r in records], cfg.data.max_decode_failures, what="test windows")
    start = time.perf_counter()
    windows = 0
    if progress is not None:
        progress.post("val", epoch=epoch, windows=0)
    for batch in shard.iter_torch_batches(batch_size=cfg.train.val_batch_size,
                                          prefetch_batches=cfg.runtime.prefetch_batches, device="cpu"):
        windows += len(batch["valid"])
        if progress is not None:
            progress.post("val", epoch=epoch, windows=windows)
        batch, _ = _valid_only(batch, failures, "validation", progress)
        if len(batch["frames"]) == 0:
            continue
        with autocast(device, cfg.train.amp):
            dets = model.predict(batch["frames"].to(device), batch["masks"].to(device),
                                 pre_nms_thresh=inf.pre_nms_thresh, pre_nms_topk=inf.pre_nms_topk)
        collector.add_batch(dets, batch)
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        gathered: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(gathered, dict(collector.by_video))
        collector = WindowCollector()
        for part in gathered:
            collector.merge(part)
    results = collector.results(records, class_names, inf)
    evaluation = metrics_of(results, records, class_names)
    metrics = {f"mAP_{k}": float(v) for k, v in evaluation["mAP"].items()}
    metrics["average_mAP"] = float(evaluation["average_mAP"])
    metrics["val_time_s"] = time.perf_counter() - start
    return metrics, results


def train_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point; `loop_config` holds the config dict, test records and class names."""
    cfg = config_from_dict(loop_config["config"])
    test_records = [row_to_record(r) for r in loop_config["test_rows"]]
    class_names = list(loop_config["class_names"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    device = ray.train.torch.get_device()
    progress = ProgressReporter(loop_config.get("progress"), rank)
    torch.manual_seed(cfg.train.seed + rank)
    per_worker = cfg.train.batch_size // world
    steps = max(1, math.ceil(loop_config["num_train_videos"] / world / per_worker))

    checkpoint = ray.train.get_checkpoint()  # a resumed run's weights replace any model.init_from
    state = build_training_state(cfg, steps_per_epoch=steps, device=device, load_init_from=checkpoint is None)
    if checkpoint is not None:
        with checkpoint.as_directory() as directory:
            state.load_state_dict(read_checkpoint(directory))
        if rank == 0:
            log.info("resumed from the checkpoint of epoch %d", state.epoch)
            progress.post("note", wait=True, text=f"resumed from the checkpoint of epoch {state.epoch}")
    if world > 1:
        state.model = ray.train.torch.prepare_model(state.model, parallel_strategy_kwargs={"static_graph": True})
    else:
        state.model = ray.train.torch.prepare_model(state.model)

    tracking = loop_config.get("mlflow")  # {"uri", "run_id"}: system metrics of the training node
    monitor = start_system_metrics(tracking["uri"], tracking["run_id"]) if tracking and rank == 0 else None
    try:
        _train_epochs(state, cfg, loop_config, device, rank, steps, progress, test_records, class_names)
    finally:
        if monitor is not None:
            try:
                stop_system_metrics(monitor)
            except Exception as exc:  # noqa: BLE001 - never let monitoring hide the run's own outcome
                log.warning("system metrics: could not log the last sample: %s", exc)


def _train_epochs(state: TrainingState, cfg, loop_config: dict[str, Any], device: torch.device, rank: int,
                  steps: int, progress: ProgressReporter, test_records, class_names) -> None:
    """Epochs from the state's next one to the end: train, validate when due, report with a checkpoint."""
    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard(val_name(rank))  # this worker's test videos
    last_map: float = state.history[-1].get("best_average_mAP", -1.0) if state.history else -1.0
    for epoch in range(state.epoch + 1, cfg.train.epochs):
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        seen: list[int] = []
        metrics = run_epoch(state, train_shard, cfg, device, epoch, steps, rank, loop_config.get("train_paths"),
                            progress, seen)
        metrics["epoch"] = epoch
        results = None
        validate = (epoch >= cfg.train.val_start_epoch and (epoch + 1) % cfg.train.val_interval == 0) \
            or epoch == cfg.train.epochs - 1
        if validate:
            val_metrics, results = run_validation(state.eval_model, val_shard, cfg, device, test_records,
                                                  class_names, epoch, progress)
            metrics.update(val_metrics)
            last_map = max(last_map, val_metrics["average_mAP"])
        metrics["peak_memory_mb"] = _peak_memory_mb(device)  # training and validation of this epoch
        metrics["best_average_mAP"] = last_map
        # Checkpoint ranking: validated epochs by mAP; the rest rank last (Ray always keeps the latest).
        metrics["val_score"] = metrics.get("average_mAP", -1.0)
        state.epoch = epoch
        state.history.append(metrics)
        # Every rank reports which training videos it saw (callbacks get all ranks' reports): the
        # shards must be disjoint and cover the epoch. Kept out of the history.
        reported = {**metrics, TRAIN_VIDEOS_KEY: seen}
        if rank == 0:
            log.info("epoch %d: %s", epoch, json.dumps(metrics))
            progress.post("epoch", wait=True, metrics=metrics)
            with tempfile.TemporaryDirectory() as directory:
                save_checkpoint(state, cfg, directory, class_names)
                atomic_write_text(Path(directory) / "history.json", json.dumps(state.history, indent=1))
                if results is not None:
                    atomic_write_text(Path(directory) / PREDICTIONS_FILE, json.dumps(results))
                ray.train.report(reported, checkpoint=ray.train.Checkpoint.from_directory(directory))
        else:
            ray.train.report(reported, checkpoint=None)


def evaluate_loop_per_worker(loop_config: dict[str, Any]) -> None:
    """Ray Train entry point of `pipelines/test.py`: training's validation, once, with given weights.

    `loop_config["weights"]` is a `adatad.models.trained.TrainedModel.state` (or an ObjectRef of
    one); rank 0 reports the merged predictions in a checkpoint folder (PREDICTIONS_FILE).
    """
    cfg = config_from_dict(loop_config["config"])
    records = [row_to_record(r) for r in loop_config["test_rows"]]
    context = ray.train.get_context()
    rank = context.get_world_rank()
    device = ray.train.torch.get_device()
    weights = loop_config["weights"]
    if isinstance(weights, ray.ObjectRef):
        weights = ray.get(weights)
    model, _ = model_from_checkpoint(weights, use_ema=True)
    model.to(device)
    progress = ProgressReporter(loop_config.get("progress"), rank)
    metrics, results = run_validation(model, ray.train.get_dataset_shard(val_name(rank)), cfg, device, records,
                                      list(loop_config["class_names"]), -1, progress)
    if rank == 0:
        with tempfile.TemporaryDirectory() as directory:
            atomic_write_text(Path(directory) / PREDICTIONS_FILE, json.dumps(results))
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(directory))
    else:
        ray.train.report(metrics, checkpoint=None)
