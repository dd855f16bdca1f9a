"""A sweep's MLflow runs: the parent run the trials nest under, closed with the best trial; trials
ASHA stopped marked KILLED."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from adatad.run_folder import SweepFolder
from pipelines.sweeps.results import TrialRow, best_row
from pipelines.sweeps.spec import SweepSpec


def close_stopped_runs(rows: list[TrialRow], uri: str) -> None:
    """Trials stopped by ASHA are killed mid-run: mark their MLflow runs KILLED instead of RUNNING."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    for row in rows:
        if row.mlflow_run_id and client.get_run(row.mlflow_run_id).info.status == "RUNNING":
            client.set_tag(row.mlflow_run_id, "adatad.stopped", row.status)
            client.set_terminated(row.mlflow_run_id, status="FAILED" if row.status == "error" else "KILLED")


def open_sweep_run(uri: str, experiment: str, spec: SweepSpec, folder: SweepFolder, params: dict[str, Any]) -> str:
    """A new parent MLflow run for this sweep (id kept in the sweep folder); trials nest under it."""
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from pipelines.tracking.runs import new_run

    tags = {"adatad.sweep": spec.name, "adatad.sweep_run": folder.name,
            "adatad.swept_keys": ",".join(spec.swept_keys()),
            **({MLFLOW_RUN_NOTE: spec.description} if spec.description else {})}
    return new_run(uri, experiment, folder.mlflow_run_id, folder.name, params, tags)


def close_sweep_run(uri: str, run_id: str, rows: list[TrialRow], spec: SweepSpec, results_file: Path) -> str:
    """Best trial (metric, values, run), trial counts and the results table on the parent run; its
    status is FAILED when no trial succeeded. Returns the status."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    from pipelines.tracking.runs import as_read, finish_run, log_params

    client = MlflowClient(uri)
    best = best_row(rows, spec.mode)
    now = int(time.time() * 1000)
    counts = {f"trials_{s.replace(' ', '_')}": float(sum(r.status == s for r in rows))
              for s in ("finished", "stopped early", "error")}
    metrics = [Metric(k, v, now, 0) for k, v in counts.items()]
    if best is not None:
        metrics.append(Metric(f"best_{spec.metric}", as_read(spec.metric, float(best.best)), now, 0))
        log_params(client, run_id, {"best.trial_id": best.trial_id,
                                    **{f"best.{k}": v for k, v in best.params.items()}})
        if best.mlflow_run_id:
            client.set_tag(run_id, "adatad.best_run_id", best.mlflow_run_id)
    client.log_batch(run_id, metrics=metrics)
    status = "FAILED" if all(r.status == "error" for r in rows) else "FINISHED"
    finish_run(uri, run_id, [results_file], status=status)
    return status
