"""MLflow tracking: one MLflow run per training run, per-epoch metrics logged exactly once.

What is logged is what people read: a metric only at the epochs that measured it (mAP at validated
epochs, never a placeholder point), and mAP in percent, as the console, TRAINING_SUMMARY.md, the
curves and the sweep tables show it (`history.json` keeps fractions, the machine record). Runs
logged this way carry the tag `adatad.map_unit=percent`; older runs (fractions) lack it, and
`report.py compare` reads each in its own unit.

The run id is stored in the Ray run folder, so a resumed run (driver restart, `--resume`, a worker
restarted by FailureConfig) keeps appending to the same MLflow run; epochs already logged are
skipped, so the metric history stays continuous with no duplicates. Experiments are tagged as
model-training experiments and a sweep is a parent run with one nested run per trial. The Ray Train
callback that logs each epoch is `tracking_callback.MLflowEpochLogger` (this module imports no
Ray); a finished run's model is logged by `mlflow_model.log_trained_model`.
"""

from __future__ import annotations

import math
import os
import re
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from adatad.atomic import atomic_write_text
from adatad.config import Config, work_root
from adatad.locations import ObjectPath, is_uri
from adatad.run_folder import RunFolder

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
MAP_UNIT_TAG, MAP_UNIT = "adatad.map_unit", "percent"
NOT_LOGGED = frozenset({"epoch", "val_score"})  # the x axis; Ray's checkpoint ranking (= average_mAP where it exists)


def default_tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else an absolute sqlite file under the project (or $ADATAD_ROOT)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{work_root() / 'mlflow.db'}"


def tracking_uri(cfg: Config) -> str:
    """The config's `tracking.tracking_uri`, else `default_tracking_uri()`."""
    uri = cfg.tracking.tracking_uri or default_tracking_uri()
    if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
        raise ValueError(f"tracking.tracking_uri {uri!r}: use an absolute path (sqlite:////abs/path.db); "
                         "Ray workers change directory, so relative stores split the runs")
    return uri


def artifact_location(uri: str, name: str, storage: str | None = None) -> str | None:
    """Artifacts of a sqlite store's experiment in `mlruns/<name>` beside the database file; those of
    runs stored at a URI (`storage`, e.g. s3://bucket/runs) in `<storage>/mlruns/<name>`, on the same
    object store (MLflow uploads them there itself, with boto3 and the same AWS variables).

    MLflow's default is `./mlruns/<experiment id>` under the working directory of whoever creates
    the experiment, so stores in different folders (every test's store, a shell started elsewhere)
    would share, or scatter, artifact folders; a server (http URI) keeps its own artifact root.
    """
    folder = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "experiment"
    if storage is not None and is_uri(storage):
        return f"{storage.rstrip('/')}/mlruns/{folder}"
    if not uri.startswith("sqlite:///"):
        return None
    return (Path(uri.removeprefix("sqlite:///").split("?")[0]).parent / "mlruns" / folder).as_uri()


def artifacts_problem(uri: str, name: str, storage: str) -> str | None:
    """For runs stored at a URI: why the experiment `name` cannot keep their artifacts on that object
    store (it exists with its artifacts elsewhere), or None. Checked before a run starts."""
    if not is_uri(storage):
        return None
    experiment = MlflowClient(uri).get_experiment_by_name(name)
    if experiment is None:
        return None
    where, home = urlparse(experiment.artifact_location), urlparse(storage)
    if (where.scheme, where.netloc) == (home.scheme, home.netloc):
        return None
    return (f"tracking.experiment_name {name!r} keeps its artifacts in {experiment.artifact_location}, not on "
            f"{home.scheme}://{home.netloc} where --storage {storage} is: choose an experiment for runs stored "
            f"there, e.g. --set tracking.experiment_name={name}-{home.scheme}")


def experiment_id(client: MlflowClient, name: str, storage: str | None = None) -> str:
    """The experiment `name`, created if missing (artifacts: `artifact_location`), tagged as a
    model-training experiment."""
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        try:
            return client.create_experiment(name, artifact_location(client.tracking_uri, name, storage),
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


def new_run(uri: str, experiment: str, run_id_file: Path, run_name: str, params: dict[str, Any],
            tags: dict[str, str] | None = None) -> str:
    """A new MLflow run with params; its id is written to `run_id_file` (a run or sweep folder's
    `mlflow_run_id`, `adatad.run_folder`; the folder may not exist yet, and may be at a URI: a new
    experiment then keeps its artifacts on that object store)."""
    client = MlflowClient(uri)
    storage = str(run_id_file.parent.parent) if isinstance(run_id_file, ObjectPath) else None
    run = client.create_run(experiment_id(client, experiment, storage), run_name=run_name,
                            tags={"adatad.run_dir": str(run_id_file.parent), MAP_UNIT_TAG: MAP_UNIT, **(tags or {})})
    log_params(client, run.info.run_id, params)
    run_id_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_id_file, run.info.run_id)
    return run.info.run_id


def start_or_resume_run(cfg: Config, uri: str, folder: RunFolder, run_name: str,
                        params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    """The MLflow run of this Ray run folder: reopened when the folder names one (a resumed run),
    else a new run (params = the effective config plus `params`).

    A `mlflow.parentRunId` tag in `tags` (a sweep's trial) nests the run under that parent.
    """
    run_id = folder.read_mlflow_run_id()
    if run_id is not None:
        MlflowClient(uri).update_run(run_id, status="RUNNING")
        return run_id
    return new_run(uri, cfg.tracking.experiment_name, folder.mlflow_run_id, run_name,
                   {**cfg.flat(), **(params or {})}, tags)


def is_map(key: str) -> bool:
    """mAP-like metrics: fractions in the records, percent where people read them."""
    return "mAP" in key


def as_read(key: str, value: float) -> float:
    """A metric in the unit people read it: mAP in percent."""
    return 100.0 * value if is_map(key) else value


def numeric_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """The epoch's metrics as MLflow gets them: numbers only, mAP in percent; an mAP below 0 is the
    placeholder older histories wrote for "not validated" (-1) and is left out, not drawn."""
    numbers = {k: float(v) for k, v in metrics.items() if k not in NOT_LOGGED and isinstance(v, (int, float))
               and not isinstance(v, bool) and math.isfinite(float(v))}
    return {k: as_read(k, v) for k, v in numbers.items() if not (is_map(k) and v < 0)}


def log_epoch(client: MlflowClient, run_id: str, metrics: dict[str, Any]) -> None:
    now = int(time.time() * 1000)
    step = int(metrics["epoch"])
    client.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in numeric_metrics(metrics).items()])


def logged_epochs(client: MlflowClient, run_id: str) -> set[int]:
    return {m.step for m in client.get_metric_history(run_id, "loss")}


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
    """Log the files that exist (a file at a URI through a local copy: MLflow logs local files) and
    close the run with `status`."""
    import tempfile

    client = MlflowClient(uri)
    for path in artifacts:
        if isinstance(path, ObjectPath):
            if path.is_file():
                with tempfile.TemporaryDirectory() as folder:
                    client.log_artifact(run_id, str(path.download(Path(folder) / path.name)))
        elif Path(path).exists():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)


def system_metrics_summary(client: MlflowClient, run_id: str) -> dict[str, dict[str, float]]:
    """Mean, max and sample count of the run's MLflow system metrics of utilisation and memory use, in
    percent (`system/cpu_utilization_percentage`, `system/gpu_0_utilization_percentage`,
    `system/system_memory_usage_percentage`, ...): what TRAINING_SUMMARY.md shows. Empty when none."""
    keys = sorted(k for k in client.get_run(run_id).data.metrics if k.startswith("system/")
                  and k.endswith(("utilization_percentage", "memory_usage_percentage")))  # not the disk's fill
    summary = {}
    for key in keys:
        values = [m.value for m in client.get_metric_history(run_id, key)]
        if values:
            summary[key.removeprefix("system/")] = {"mean": round(sum(values) / len(values), 1),
                                                    "max": round(max(values), 1), "samples": len(values)}
    return summary


def ui_url(uri: str, run_id: str, ui: str = "http://127.0.0.1:5000") -> str:
    """The run's page in `mlflow ui` (a server URI is its own UI), opened in the Model training view:
    MLflow 3.17's UI starts in its GenAI view unless the URL or the sidebar switch says otherwise."""
    experiment = MlflowClient(uri).get_run(run_id).info.experiment_id
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else ui
    return f"{base}/#/experiments/{experiment}/runs/{run_id}?workflowType=machine_learning"


