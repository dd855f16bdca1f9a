"""A training run on Ray Train: plan it (config + run folder), fit the TorchTrainer, finish it.

`run_training` is the one code path of `pipelines/train.py` and of every Tune trial
(`sweep_trials.run_trial`): the same TorchTrainer, Ray Data input and MLflow logging.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adatad.atomic import atomic_write_text
from adatad.config import PROJECT_ROOT, Config, load_config, write_config
from adatad.data.clips import count_windows
from adatad.data.splits import load_splits, with_frame_counts
from adatad.run_folder import CHECKPOINT_FILE, HISTORY_FILE, RunFolder, latest_run
from pipelines.ray_layer.cli import DEFAULT_CONFIG, UsageError
from pipelines.ray_layer.console import Console, format_duration


@dataclass
class RunPlan:
    cfg: Config
    run_name: str
    storage: Path
    resumed: bool

    @property
    def run_dir(self) -> Path:
        return self.storage / self.run_name

    @property
    def folder(self) -> RunFolder:
        return RunFolder(self.run_dir)


def storage_folder(storage: str | None, cfg: Config) -> Path:
    """The folder that holds the run folders: `--storage`, else `runtime.storage_path` (relative to
    the project). It must be a filesystem path: on a multi-node cluster one that every node mounts at
    the same place (NFS), because Ray Train writes checkpoints there from the worker's node while the
    driver writes the run's history, reports and MLflow run id beside them with plain file calls."""
    where, value = ("--storage", storage) if storage else ("runtime.storage_path", cfg.runtime.storage_path)
    if "://" in value:
        raise UsageError(f"{where} {value}: cloud storage URIs are not supported; use a filesystem path that "
                         "every node mounts at the same place (e.g. NFS), see README 'On a Ray cluster'")
    folder = Path(storage) if storage else Path(cfg.resolve_path(value))
    if not folder.is_absolute():
        raise UsageError(f"--storage {storage}: expected an absolute path (Ray workers change directory)")
    return folder


def plan_run(config: str | None, overrides: list[str], profile: str | None, storage: str | None,
             run_name: str | None, resume: bool) -> RunPlan:
    """Config + run folder, with the resume rules checked before anything expensive starts."""
    base = load_config(config or PROJECT_ROOT / DEFAULT_CONFIG, overrides, profile)
    storage_dir = storage_folder(storage, base)
    if resume and run_name is None:
        latest = latest_run(storage_dir)
        if latest is None:
            raise UsageError(f"--resume: no run to resume in {storage_dir}")
        run_name = latest.name
    run_name = run_name or f"{base.name}-{datetime.now():%Y%m%d-%H%M%S}"
    folder = RunFolder(storage_dir / run_name)
    if resume:
        if not folder.config.is_file():
            raise UsageError(f"--resume: {folder.path} has no {folder.config.name}; nothing to resume")
        # The run's own effective config, plus any --set given now (e.g. more epochs).
        return RunPlan(load_config(folder.config, overrides), run_name, storage_dir, resumed=True)
    if folder.path.exists():
        raise UsageError(f"run folder {folder.path} exists: pass --resume to continue it, or choose another "
                         "--run-name")
    return RunPlan(base, run_name, storage_dir, resumed=False)


def check_initial_weights(cfg: Config, resumed: bool = False) -> None:
    """Load the configured VideoMAE file (or `model.init_from`) here, before Ray starts (one-line error).

    Training builds the model inside a Ray worker, where a wrong path or architecture would only
    surface after the cluster, datasets and workers are up. Reading the file once on the driver
    costs a few seconds and runs the exact loading code the workers run. A resumed run starts from
    its own checkpoint and needs neither file.
    """
    from adatad.models.build import build_model
    from adatad.models.trained import read_trained
    from adatad.models.weights import WeightsError

    if resumed:
        return
    if cfg.model.init_from:
        try:
            read_trained(cfg.resolve_path(cfg.model.init_from), cfg)
        except WeightsError as exc:
            raise UsageError(f"model.init_from: {exc}") from None
    elif cfg.model.backbone.checkpoint:
        try:
            build_model(cfg)
        except WeightsError as exc:
            raise UsageError(f"model.backbone.checkpoint: {exc}") from None


def check_external_classifier(cfg: Config) -> None:
    """Read the video classifier file (`model.inference.external_classifier`) here, before Ray starts:
    validation would otherwise meet a missing or malformed file only at the first validated epoch."""
    from adatad.video_classifier import VideoClassifierError, load_video_classifier

    i = cfg.model.inference
    if i.external_classifier:
        try:
            load_video_classifier(i.external_classifier, i.external_classifier_type)
        except VideoClassifierError as exc:
            raise UsageError(f"model.inference.external_classifier: {exc}") from None


def run_training(plan: RunPlan, extra_callbacks: list | None = None, mlflow_params: dict[str, Any] | None = None,
                 mlflow_tags: dict[str, str] | None = None, quiet: bool = False,
                 console: Console | None = None) -> dict[str, Any]:
    """Build and fit the TorchTrainer for `plan` (Ray must be connected); returns a summary dict.

    With a `console` (train.py), the workers' progress is drawn there: a bar and a line per epoch.
    """
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from adatad.data.clips import record_to_row
    from pipelines.ray_layer.datasets import train_dataset, validation_datasets
    from pipelines.ray_layer.progress_relay import ProgressRelay, TrainingProgressView
    from pipelines.ray_layer.tracking import finish_run, start_or_resume_run, tracking_uri, ui_url
    from pipelines.ray_layer.tracking_callback import MLflowEpochLogger
    from pipelines.ray_layer.worker import train_loop_per_worker

    cfg = plan.cfg
    console = None if quiet else (console or Console())
    train_records, test_records, class_names = load_splits(cfg)
    # A json without `frame`/`fps`: the decoder's (or the frame store's) counts; the command's check
    # already probed them.
    train_records, test_records = with_frame_counts(cfg, train_records), with_frame_counts(cfg, test_records)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, plan.folder.config)
    uri = tracking_uri(cfg)
    run_id = start_or_resume_run(cfg, uri, plan.folder, plan.run_name, mlflow_params, mlflow_tags)
    if console is not None:
        console.say(f"MLflow run {run_id} in {uri}")
        console.say(f"browse: mlflow ui --backend-store-uri {uri} --host 127.0.0.1  ->  {ui_url(uri, run_id)}")

    r = cfg.runtime
    use_gpu = bool(r.use_gpu and ray.cluster_resources().get("GPU", 0) >= 1)
    if r.use_gpu and not use_gpu and console is not None:
        console.warn("runtime.use_gpu is true but the cluster has no GPU; training on CPU")
    relay = ProgressRelay.remote() if console is not None else None
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if use_gpu else {}), **r.worker_resources}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "test_rows": [record_to_row(rec, i) for i, rec in enumerate(test_records)],
            "class_names": class_names,
            "num_train_videos": len(train_records),
            "train_paths": [rec.path for rec in train_records],  # names the files of decode failures
            "progress": relay,
            "mlflow": {"uri": uri, "run_id": run_id} if cfg.tracking.system_metrics else None,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=plan.run_name,
            storage_path=str(plan.storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                                         checkpoint_score_attribute="val_score",
                                                         checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=r.max_failures),
            callbacks=[MLflowEpochLogger(uri, run_id), *(extra_callbacks or [])],
        ),
        datasets={"train": train_dataset(cfg, train_records), **validation_datasets(cfg, test_records)},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),  # val_<rank>: see assign_videos
    )
    view = None
    if console is not None:
        windows = sum(count_windows(rec, cfg.data) for rec in test_records)
        view = TrainingProgressView(console, relay, cfg.train.epochs, windows).start()
    start = time.perf_counter()
    try:
        with stop_on_sigterm():  # ray.init installed its own handler (sys.exit): ours stops the run cleanly
            result = trainer.fit()
    except (KeyboardInterrupt, SystemExit) as exc:  # SIGTERM (`stop_on_sigterm`) or Ctrl-C (Ray aborts the run)
        if view is not None:
            view.stop()
            view = None
        # The run's controller and workers belong to this driver: disconnecting ends them, so nothing
        # else is written while the files below are; a local Ray stops altogether.
        ray.shutdown()
        stopped = save_stopped_run(plan, uri, run_id)
        why = _received[-1] if _received else (str(exc) or type(exc).__name__)
        raise RunStopped(plan.run_name, stopped, why) from exc
    except Exception:
        finish_run(uri, run_id, [], status="FAILED")
        raise
    finally:
        if view is not None:
            view.stop()
    wall = time.perf_counter() - start
    device = f"cuda ({r.num_workers} GPU worker(s))" if use_gpu else "cpu"
    return finalize_run(plan, result, wall, uri, run_id, device)


def finalize_run(plan: RunPlan, result, wall_s: float, uri: str, run_id: str, device: str = "unknown"
                 ) -> dict[str, Any]:
    """Copy the final records out of the last checkpoint, write reports, close the MLflow run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipelines.ray_layer.mlflow_model import log_trained_model
    from pipelines.ray_layer.reports import write_reports
    from pipelines.ray_layer.tracking import finish_run, log_epoch, logged_epochs

    if result.checkpoint is None:
        raise RuntimeError(f"run {plan.run_name}: training reported no checkpoint")
    with result.checkpoint.as_directory() as directory:
        history = json.loads((Path(directory) / HISTORY_FILE).read_text())
        size_mb = (Path(directory) / CHECKPOINT_FILE).stat().st_size / 2**20
    # Ray lists the kept checkpoints worst first: pick the highest val_score (the later on a tie).
    best = max(result.best_checkpoints, key=lambda cm: (cm[1].get("val_score", -1.0), cm[1].get("epoch", -1))) \
        if result.best_checkpoints else None
    # Ray registers a checkpoint before the MLflow callback logs its epoch, so a driver killed in
    # between leaves that epoch unlogged (a resumed run only logs new epochs): fill such gaps now.
    client = MlflowClient(uri)
    logged = logged_epochs(client, run_id)
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch(client, run_id, metrics)
    stats = {
        "run_name": plan.run_name,
        "storage": str(plan.storage),
        "checkpoint": result.checkpoint.path,
        "best_checkpoint": best[0].path if best else result.checkpoint.path,
        "checkpoint_size_mb": round(size_mb, 2),
        "wall_time_s": round(wall_s, 1),
        "num_workers": plan.cfg.runtime.num_workers,
        "device": device,
    }
    # The best checkpoint's EMA detector as an MLflow model of this run (the checkpoint on disk stays
    # the source of truth, so a failure here is a warning, not a failed run).
    if plan.cfg.tracking.log_model:
        try:
            with (best[0] if best else result.checkpoint).as_directory() as directory:
                stats["mlflow_model"] = log_trained_model(uri, run_id, directory)
        except (OSError, ValueError, MlflowException) as exc:
            print(f"warning: the MLflow model was not logged: {exc}", file=sys.stderr)
    folder = plan.folder
    atomic_write_text(folder.history, json.dumps(history, indent=1))
    atomic_write_text(folder.stats, json.dumps(stats, indent=1))
    reports = write_reports(history, plan.cfg.to_dict(), stats, folder.path)
    finish_run(uri, run_id, [folder.config, folder.history, folder.stats, *reports.values()])
    return {"final": history[-1], "stats": stats, "reports": {k: str(v) for k, v in reports.items()},
            "run_dir": str(folder.path), "mlflow_run_id": run_id}


_received: list[str] = []  # signals `stop_on_sigterm` turned into an interruption, newest last


class Terminated(KeyboardInterrupt):
    """SIGTERM (a preempted node, `ray job stop`, a scheduler's kill) turned into an interruption."""


@contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Meanwhile SIGTERM interrupts the driver like Ctrl-C, so a run stops cleanly (`save_stopped_run`)."""
    def terminate(signum: int, frame) -> None:
        _received.append(signal.Signals(signum).name)  # Ray may re-raise the interruption as its own
        raise Terminated(signal.Signals(signum).name)

    if threading.current_thread() is not threading.main_thread():  # only the main thread takes signals
        yield
        return
    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class RunStopped(Exception):
    """The driver was stopped (SIGTERM, Ctrl-C) after `epochs` finished epochs; `--resume` continues."""

    def __init__(self, run_name: str, epochs: int, why: str) -> None:
        super().__init__(f"run {run_name} stopped ({why}) after {epochs} finished epoch(s)")
        self.run_name, self.epochs, self.why = run_name, epochs, why


def save_stopped_run(plan: RunPlan, uri: str, run_id: str) -> int:
    """What a stopped run has, written whole: the history and reports of its last registered checkpoint
    (a checkpoint Ray was still copying is ignored), MLflow epochs it had not logged, and the MLflow run
    marked KILLED (a resumed run reopens it). Returns the number of finished epochs."""
    from mlflow.tracking import MlflowClient

    from pipelines.ray_layer.reports import write_reports
    from pipelines.ray_layer.tracking import finish_run, log_epoch, logged_epochs

    folder = plan.folder
    latest = folder.latest_checkpoint()
    if latest is None:
        finish_run(uri, run_id, [folder.config], status="KILLED")
        return 0
    history = json.loads((latest.parent / HISTORY_FILE).read_text())
    client = MlflowClient(uri)
    logged = logged_epochs(client, run_id)
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch(client, run_id, metrics)
    atomic_write_text(folder.history, json.dumps(history, indent=1))
    reports = write_reports(history, plan.cfg.to_dict(), {"run_name": plan.run_name}, folder.path)
    finish_run(uri, run_id, [folder.config, folder.history, *reports.values()], status="KILLED")
    return len(history)


def decode_failure_of(exc: BaseException) -> Exception | None:
    """The DecodeFailureError behind a failed Ray Train run (too many videos failed to decode), if any."""
    from adatad.data.check import DecodeFailureError

    failures = getattr(exc, "worker_failures", None) or {}  # ray.train.WorkerGroupError: rank -> exception
    return next((e for e in failures.values() if isinstance(e, DecodeFailureError)), None)


def closing_lines(summary: dict[str, Any]) -> list[str]:
    """The end of a run: best mAP, reports, checkpoint."""
    history = json.loads(RunFolder(Path(summary["run_dir"])).history.read_text())
    final, stats = summary["final"], summary["stats"]
    validated = [h for h in history if "average_mAP" in h]
    lines = [f"done: {len(history)} epochs in {format_duration(stats['wall_time_s'])}, final loss {final['loss']:.4f}"]
    if validated:
        best = max(validated, key=lambda h: h["average_mAP"])
        per_tiou = "  ".join(f"{k.removeprefix('mAP_')} {100 * v:.2f}" for k, v in best.items()
                             if k.startswith("mAP_"))
        lines.append(f"best average mAP {100 * best['average_mAP']:.2f} % at epoch {int(best['epoch'])} "
                     f"(tIoU {per_tiou})")
    lines.append(f"reports: {', '.join(summary['reports'].values())}")
    lines.append(f"best checkpoint: {stats['best_checkpoint']}"
                 + (f" (MLflow model {stats['mlflow_model']})" if stats.get("mlflow_model") else ""))
    return lines
