"""The Ray Train callback that logs each epoch to MLflow (kept apart: it is the one piece of MLflow
tracking that imports Ray)."""

from __future__ import annotations

from typing import Any

import ray.train
from mlflow.tracking import MlflowClient

from pipelines.tracking.runs import log_epoch, logged_epochs


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
