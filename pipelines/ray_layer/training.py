"""A training run on Ray Train: fit the TorchTrainer for a plan (`pipelines/runs/plan.py`), then finish it.

`run_training` is the one code path of `pipelines/train.py` and of every Tune trial
(`sweeps.run_trial`): the same TorchTrainer (`trainer.py`), Ray Data input and MLflow logging.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from adatad.config import write_config
from adatad.data.clips import count_windows
from adatad.data.splits import load_splits, with_frame_counts
from adatad.run_folder import CHECKPOINT_FILE, HISTORY_FILE
from pipelines.cli.console import Console
from pipelines.cli.hints import mlflow_ui_command
from pipelines.runs.plan import RunPlan
from pipelines.runs.preflight import config_locations
from pipelines.runs.stop import RunStopped, stop_on_sigterm, stop_reason
from pipelines.runs.storage_watch import StorageWatch
from pipelines.tracking.finish import finish_training_run, save_stopped_run

log = logging.getLogger("adatad.train")


def run_training(plan: RunPlan, extra_callbacks: list | None = None, mlflow_params: dict[str, Any] | None = None,
                 mlflow_tags: dict[str, str] | None = None, quiet: bool = False,
                 console: Console | None = None) -> dict[str, Any]:
    """Build and fit the TorchTrainer for `plan` (Ray must be connected); returns a summary dict.

    With a `console` (train.py), the workers' progress is drawn there: a bar and a line per epoch.
    """
    import ray
    import ray.train

    from adatad.data.clips import record_to_row
    from pipelines.ray_layer.cluster import on_driver_node
    from pipelines.ray_layer.datasets import EpochClock, train_dataset, validation_datasets
    from pipelines.ray_layer.progress_relay import ProgressRelay, TrainingProgressView
    from pipelines.ray_layer.tracking_callback import MLflowEpochLogger
    from pipelines.ray_layer.trainer import build_trainer
    from pipelines.ray_layer.worker import CHECKPOINT_SCORE_KEY, train_loop_per_worker
    from pipelines.tracking.runs import finish_run, start_or_resume_run, tracking_uri, ui_url

    cfg = plan.cfg
    console = None if quiet else (console or Console())
    train_records, test_records, class_names = load_splits(cfg)
    # A json without `frame`/`fps`: the decoder's (or the frame store's) counts; the command's check
    # already probed them.
    train_records, test_records = with_frame_counts(cfg, train_records), with_frame_counts(cfg, test_records)
    plan.local.path.mkdir(parents=True, exist_ok=True)
    plan.publish(write_config(cfg, plan.local.config))
    uri = tracking_uri(cfg)
    run_id = start_or_resume_run(cfg, uri, plan.folder, plan.run_name, mlflow_params, mlflow_tags)
    if console is not None:
        console.say(f"MLflow run {run_id} in {uri}")
        serve = mlflow_ui_command(uri)
        console.say(f"browse: {serve}  ->  {ui_url(uri, run_id)}" if serve else f"browse: {ui_url(uri, run_id)}")

    relay = ProgressRelay.options(**on_driver_node()).remote() if console is not None else None
    clock = EpochClock.options(**on_driver_node()).remote()  # the epoch decode actors draw clips for
    trainer, use_gpu = build_trainer(
        train_loop_per_worker,
        {
            "config": cfg.to_dict(),
            "test_rows": [record_to_row(rec, i) for i, rec in enumerate(test_records)],
            "class_names": class_names,
            "num_train_videos": len(train_records),
            "train_paths": [rec.path for rec in train_records],  # names the files of decode failures
            "progress": relay,
            "epoch_clock": clock,
            "mlflow": {"uri": uri, "run_id": run_id} if cfg.tracking.system_metrics else None,
        },
        cfg, name=plan.run_name, storage=str(plan.storage),
        datasets={"train": train_dataset(cfg, train_records, clock), **validation_datasets(cfg, test_records)},
        split=["train"],  # val_<rank>: each worker reads its own videos (datasets.assign_videos)
        ordered=["train"] if cfg.runtime.preserve_order else [],  # a run repeats whatever actor is faster
        checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                                     checkpoint_score_attribute=CHECKPOINT_SCORE_KEY,
                                                     checkpoint_score_order="max"),
        max_failures=cfg.runtime.max_failures,
        callbacks=[MLflowEpochLogger(uri, run_id), *(extra_callbacks or [])])
    if cfg.runtime.use_gpu and not use_gpu and console is not None:
        console.warn("runtime.use_gpu is true but the cluster has no GPU; training on CPU")
    view = None
    if console is not None:
        windows = sum(count_windows(rec, cfg.data) for rec in test_records)
        view = TrainingProgressView(console, relay, cfg.train.epochs, windows).start()
    start = time.perf_counter()
    # An object store the run uses (storage, data): an outage said once, one that lasts stops the run.
    watch = StorageWatch([str(plan.storage), *config_locations(cfg).values()], cfg.runtime.storage_retry_s,
                         console.warn if console is not None else log.warning)
    try:
        with watch, stop_on_sigterm():  # ray.init installed its own handler (sys.exit): ours stops the run cleanly
            result = trainer.fit()
    except (KeyboardInterrupt, SystemExit) as exc:  # SIGTERM (`stop_on_sigterm`) or Ctrl-C (Ray aborts the run)
        view = _stop_view(view)
        # The run's controller and workers belong to this driver: disconnecting ends them, so nothing
        # else is written while the files below are; a local Ray stops altogether.
        ray.shutdown()
        stopped = save_stopped_run(plan, uri, run_id)
        raise RunStopped(plan.run_name, stopped, stop_reason(exc)) from exc
    except Exception as exc:
        if watch.outage:  # the workers failed on the store before the watch gave up on it: a stop too
            view = _stop_view(view)
            ray.shutdown()
            stopped = save_stopped_run(plan, uri, run_id)
            raise RunStopped(plan.run_name, stopped, watch.stopped_for or "the object store does not answer") from exc
        finish_run(uri, run_id, [], status="FAILED")
        raise
    finally:
        if view is not None:
            view.stop()
    wall = time.perf_counter() - start
    device = f"cuda ({cfg.runtime.num_workers} GPU worker(s))" if use_gpu else "cpu"
    return finalize_run(plan, result, wall, uri, run_id, device)


def _stop_view(view):
    if view is not None:
        view.stop()
    return None


def finalize_run(plan: RunPlan, result, wall_s: float, uri: str, run_id: str, device: str = "unknown"
                 ) -> dict[str, Any]:
    """A completed fit's `ray.train.Result` -> the run folder's records, reports and MLflow run
    (`pipelines/tracking/finish.py`); returns the run's summary."""
    if result.checkpoint is None:
        raise RuntimeError(f"run {plan.run_name}: training reported no checkpoint")
    with result.checkpoint.as_directory() as directory:
        history = json.loads((Path(directory) / HISTORY_FILE).read_text())
        size_mb = (Path(directory) / CHECKPOINT_FILE).stat().st_size / 2**20
    # Ray lists the kept checkpoints worst first: pick the highest val_score (the later on a tie).
    best = max(result.best_checkpoints, key=lambda cm: (cm[1].get("val_score", -1.0), cm[1].get("epoch", -1))) \
        if result.best_checkpoints else None
    best_checkpoint = best[0] if best else result.checkpoint
    stats = {
        "run_name": plan.run_name,
        "storage": str(plan.storage),
        # Ray's path is inside its filesystem (no scheme for a URI): the same folder, named from the run's
        "checkpoint": str(plan.run_dir / Path(result.checkpoint.path).name),
        "best_checkpoint": str(plan.run_dir / Path(best_checkpoint.path).name),
        "checkpoint_size_mb": round(size_mb, 2),
        "wall_time_s": round(wall_s, 1),
        "num_workers": plan.cfg.runtime.num_workers,
        "device": device,
    }
    with best_checkpoint.as_directory() as directory:
        reports = finish_training_run(plan, history, uri, run_id, stats=stats, model_checkpoint=Path(directory))
    return {"final": history[-1], "stats": stats, "reports": {k: str(v) for k, v in reports.items()},
            "run_dir": str(plan.folder.path), "mlflow_run_id": run_id}
