"""MLflow tracking: one MLflow run per training run, per-epoch metrics logged exactly once.

The run id is stored in the Ray run folder, so a resumed run (driver restart, `--resume`, a worker
restarted by FailureConfig) keeps appending to the same MLflow run; epochs already logged are
skipped, so the metric history stays continuous with no duplicates. Experiments are tagged as
model-training experiments, a sweep is a parent run with one nested run per trial, and a finished
run carries its best checkpoint's EMA weights as an MLflow model (`log_trained_model`).
"""

from __future__ import annotations

import importlib.metadata
import logging
import math
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray.train
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from adatad.atomic import atomic_write_text
from adatad.config import Config, work_root

RUN_ID_FILE = "mlflow_run_id"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value
# MLflow's experiment-type tag. Values: the web app's ExperimentKind enum (genai_development,
# custom_model_development = "Machine learning", finetuning, forecasting, classification, regression,
# automl; mlflow/server/js/build/static/js/main.*.js; also mlflow/assistant/skills/
# mlflow-onboarding/SKILL.md). Without the tag the UI infers a kind (traces -> GenAI, runs ->
# machine learning). MLflow 3.17's UI lets its sidebar "GenAI | Model training" switch (or the
# URL's ?workflowType=machine_learning) pick the view first; in the GenAI view, runs with a logged
# model are listed as "Training runs" and the others as "Evaluation runs".
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
EXPERIMENT_KIND = "custom_model_development"
PARENT_RUN_TAG = MLFLOW_PARENT_RUN_ID  # MLflow's nesting tag: the UI shows the run under that parent
MODEL_NAME = "model"
# What unpickling the detector imports (the adatad code itself travels with the model).
MODEL_REQUIREMENTS = ("mlflow", "torch", "torchvision", "timm", "numpy")


def tracking_uri(cfg: Config) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else an absolute sqlite file under the project."""
    uri = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            raise ValueError(f"tracking.tracking_uri {uri!r}: use an absolute path (sqlite:////abs/path.db); "
                             "Ray workers change directory, so relative stores split the runs")
        return uri
    return f"sqlite:///{work_root() / 'mlflow.db'}"


def artifact_location(uri: str, name: str) -> str | None:
    """Artifacts of a sqlite store's experiment in `mlruns/<name>` beside the database file.

    MLflow's default is `./mlruns/<experiment id>` under the working directory of whoever creates
    the experiment, so stores in different folders (every test's store, a shell started elsewhere)
    would share, or scatter, artifact folders; a server (http URI) keeps its own artifact root.
    """
    if not uri.startswith("sqlite:///"):
        return None
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "experiment"
    return (Path(uri.removeprefix("sqlite:///").split("?")[0]).parent / "mlruns" / folder).as_uri()


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment `name`, created if missing, tagged as a model-training experiment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location(client.tracking_uri, name),
                                            tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
        except MlflowException:  # created meanwhile by a concurrent trial
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
    if EXPERIMENT_KIND_TAG not in experiment.tags:  # made by an older version or by hand: a user's choice stays
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
    return experiment.experiment_id


def log_params(client: MlflowClient, run_id: str, values: dict[str, Any]) -> None:
    """Params in batches (log_batch takes at most 100 per call), values cut to MLflow's limit."""
    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]
    for i in range(0, len(items), 100):
        client.log_batch(run_id, params=items[i:i + 100])


def new_run(uri: str, experiment: str, run_dir: Path, run_name: str, params: dict[str, Any],
            tags: dict[str, str] | None = None) -> str:
    """A new MLflow run with params; its id is stored in `run_dir` (which may not exist yet)."""
    client = MlflowClient(uri)
    run = client.create_run(experiment_id(client, experiment), run_name=run_name,
                            tags={"adatad.run_dir": str(run_dir), **(tags or {})})
    log_params(client, run.info.run_id, params)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / RUN_ID_FILE, run.info.run_id)
    return run.info.run_id


def open_run(uri: str, experiment: str, run_dir: Path, run_name: str, params: dict[str, Any],
             tags: dict[str, str] | None = None) -> str:
    """The MLflow run whose id is stored in `run_dir`: reopened when it exists, else a `new_run`."""
    id_file = run_dir / RUN_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
        MlflowClient(uri).update_run(run_id, status="RUNNING")
        return run_id
    return new_run(uri, experiment, run_dir, run_name, params, tags)


def start_or_resume_run(cfg: Config, uri: str, run_dir: Path, run_name: str,
                        params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    """The MLflow run of this Ray run folder (params = the effective config plus `params`).

    A `mlflow.parentRunId` tag in `tags` (a sweep's trial) nests the run under that parent.
    """
    return open_run(uri, cfg.tracking.experiment_name, run_dir, run_name, {**cfg.flat(), **(params or {})}, tags)


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)) and k != "epoch"}


def log_epoch(client: MlflowClient, run_id: str, metrics: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    step = int(metrics["epoch"])
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()])


def logged_epochs(client: MlflowClient, run_id: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, "loss")}


class MLflowEpochLogger(ray.train.UserCallback):
    """Ray Train callback (runs on the controller): rank 0's metrics of each report -> MLflow."""

    def __init__(self, uri: str, run_id: str) -> None:
        self.uri, self.run_id = uri, run_id
        self._done: set[int] | None = None

    def after_report(self, run_context, metrics: list[dict[str, Any]], checkpoint) -> None:
        if not metrics or "epoch" not in metrics[0]:
            return
        client = MlflowClient(self.uri)
        if self._done is None:
            self._done = logged_epochs(client, self.run_id)
        epoch = int(metrics[0]["epoch"])
        if epoch in self._done:
            return
        log_epoch(client, self.run_id, metrics[0])
        self._done.add(epoch)


def start_system_metrics(uri: str, run_id: str, sampling_interval_s: float = 10.0):
    """MLflow's system metrics of this machine into the run: CPU and memory use, disk, network and,
    with nvidia-ml-py on a GPU machine, each GPU's utilisation, memory and power (`system/*`).

    Started on the rank-0 training worker, so it measures the node that trains (on a cluster the
    driver may sit elsewhere). Returns the monitor; call `.finish()` to flush and stop it.
    """
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=sampling_interval_s, resume_logging=True,
                                   tracking_uri=uri)
    monitor.start()
    return monitor


def stop_system_metrics(monitor) -> None:
    """Stop the monitor and log one last sample: MLflow's loop drops the interval it is in when
    stopped, so a run shorter than one interval would otherwise have no system metrics at all."""
    monitor.finish()
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()


def finish_run(uri: str, run_id: str, artifacts: list[Path], status: str = "FINISHED") -> None:
    client = MlflowClient(uri)
    for path in artifacts:
        if Path(path).exists():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)


def ui_url(uri: str, run_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The run's page in `mlflow ui` (a server URI is its own UI), opened in the Model training view:
    MLflow 3.17's UI starts in its GenAI view unless the URL or the sidebar switch says otherwise."""
    experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui
    return f"{base}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


# ---------------------------------------------------------------- the trained model


@contextmanager
def _active_run(uri: str, run_id: str) -> Iterator[None]:
    """Make `run_id` MLflow's fluent active run for a `log_model` call, then undo every trace of it.

    `Model.log` (mlflow/models/model.py) talks to the global tracking URI and files the new
    LoggedModel under the active run's experiment (without one, under experiment 0), so the
    run is activated here; the previous tracking URI and the run's status are restored after.
    """
    import mlflow

    previous_uri = mlflow.get_tracking_uri() if mlflow.is_tracking_uri_set() else None
    mlflow.set_tracking_uri(uri)
    status = MlflowClient(uri).get_run(run_id).info.status
    try:
        mlflow.start_run(run_id=run_id, log_system_metrics=False)
        try:
            yield
        finally:
            mlflow.end_run(status=status)
    finally:
        mlflow.set_tracking_uri(previous_uri)


class _DropPickleWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Saving pytorch model by Pickle")


@contextmanager
def _quiet_pickle_warning() -> Iterator[None]:
    """Drop mlflow.pytorch's advice to save as "pt2" (a traced `forward`): this detector's `forward`
    computes training losses, so pickle is the only format that keeps `.predict`; nothing to act on."""
    logger, dropped = logging.getLogger("mlflow.pytorch"), _DropPickleWarning()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        logger.removeFilter(dropped)


def _requirements() -> list[str]:
    """Pinned versions of what loading the model imports (no pip-requirement inference: slow, noisy)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def log_trained_model(uri: str, run_id: str, checkpoint_dir: str | Path,
                      class_names: list[str] | None = None) -> str:
    """Log the checkpoint's EMA detector (the weights validation scored) as the run's MLflow model.

    Returns the model URI (`models:/<model id>`). The pytorch flavour fits: the detector is an
    nn.Module, and `mlflow.pytorch.load_model(uri)` gives it back ready for
    `.predict(frames, masks)`: frames uint8 (B, T, H, W, 3) RGB, masks bool (B, T) with
    T = data.window_size and H = W = data.crop_size, returning one `Detections` per window
    (segments (M, 2) in window positions, scores (M,), labels (M,) indexing `class_names`).
    Only the pyfunc wrapper does not fit (it calls `forward`, which computes training losses),
    so the signature documents the inputs and the model is meant for `mlflow.pytorch.load_model`.
    The model is pickled ("pt2" export would trace `forward`) with the `adatad` code bundled,
    so it loads wherever the pinned requirements are installed.
    """
    import mlflow.pytorch
    import numpy as np
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    import adatad
    from adatad.engine.state import read_checkpoint
    from adatad.models.build import model_from_checkpoint

    state = read_checkpoint(checkpoint_dir)
    model, cfg = model_from_checkpoint(state, use_ema=True)
    names = list(class_names or state.get("class_names") or [])
    t, size = cfg.data.window_size, cfg.data.crop_size
    signature = ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.uint8), (-1, t, size, size, 3), "frames"),
        TensorSpec(np.dtype(np.bool_), (-1, t), "masks"),
    ]))
    metadata = {"class_names": names, "window_size": t, "crop_size": size, "epoch": int(state.get("epoch", -1)),
                "ema": bool(state.get("ema")), "call": "mlflow.pytorch.load_model(uri).predict(frames, masks)",
                "output": "per window: Detections(segments (M, 2) in window positions, scores (M,), labels (M,))",
                "config": state["config"]}  # in MLmodel: extra_files would print a download progress bar
    with _active_run(uri, run_id), _quiet_pickle_warning():
        info = mlflow.pytorch.log_model(
            model, name=MODEL_NAME, signature=signature, metadata=metadata,
            code_paths=[str(Path(adatad.__file__).parent)], pip_requirements=_requirements(),
            serialization_format="pickle", step=max(int(state.get("epoch", 0)), 0),
        )
    return info.model_uri
