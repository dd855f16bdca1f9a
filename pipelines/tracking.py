"""MLflow tracking: one MLflow run per training run, per-epoch metrics logged exactly once.

The run id is stored in the Ray run folder, so a resumed run (driver restart, `--resume`, a worker
restarted by FailureConfig) keeps appending to the same MLflow run; epochs already logged are
skipped, so the metric history stays continuous with no duplicates.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import ray.train
from mlflow.entities import Metric, Param
from mlflow.tracking import MlflowClient

from adatad.atomic import atomic_write_text
from adatad.config import Config, work_root

RUN_ID_FILE = "mlflow_run_id"
MAX_PARAM_LENGTH = 6000  # MLflow's limit on a param value


def tracking_uri(cfg: Config) -> str:
    """Config value, else $MLFLOW_TRACKING_URI, else an absolute sqlite file under the project."""
    uri = cfg.tracking.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if uri:
        if uri.startswith("sqlite:///") and not uri.startswith("sqlite:////"):
            raise ValueError(f"tracking.tracking_uri {uri!r}: use an absolute path (sqlite:////abs/path.db); "
                             "Ray workers change directory, so relative stores split the runs")
        return uri
    return f"sqlite:///{work_root() / 'mlflow.db'}"


def _experiment_id(client: MlflowClient, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    return experiment.experiment_id if experiment else client.create_experiment(name)


def start_or_resume_run(cfg: Config, uri: str, run_dir: Path, run_name: str,
                        params: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    """The MLflow run of this Ray run folder: reopened when it exists, else created with params."""
    client = MlflowClient(uri)
    id_file = run_dir / RUN_ID_FILE
    if id_file.is_file():
        run_id = id_file.read_text().strip()
        client.update_run(run_id, status="RUNNING")
        return run_id
    run = client.create_run(_experiment_id(client, cfg.tracking.experiment_name), run_name=run_name,
                            tags={"adatad.run_dir": str(run_dir), **(tags or {})})
    values = {**cfg.flat(), **(params or {})}
    items = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in sorted(values.items())]
    for i in range(0, len(items), 100):  # log_batch takes at most 100 params per call
        client.log_batch(run.info.run_id, params=items[i:i + 100])
    atomic_write_text(id_file, run.info.run_id)
    return run.info.run_id


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


def finish_run(uri: str, run_id: str, artifacts: list[Path], status: str = "FINISHED") -> None:
    client = MlflowClient(uri)
    for path in artifacts:
        if Path(path).exists():
            client.log_artifact(run_id, str(path))
    client.set_terminated(run_id, status=status)
