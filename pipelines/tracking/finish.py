"""One finish for a training run, completed or stopped: its records written whole, its MLflow run closed.

Both ends write the same things from a checkpoint Ray registered: `history.json` (and, for a
completed run, `stats.json` and the MLflow model of its best checkpoint), the reports, the epochs
MLflow had not logged (Ray registers a checkpoint before the MLflow callback logs its epoch, so a
driver stopped in between leaves that epoch unlogged), and the MLflow run closed as FINISHED or
KILLED (a resumed run reopens it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from adatad.atomic import atomic_write_text
from adatad.reports.summary import write_reports
from adatad.run_folder import HISTORY_FILE, RunFolder
from pipelines.cli.hints import mlflow_ui_command
from pipelines.runs.plan import RunPlan
from pipelines.tracking.runs import finish_run, log_epoch, logged_epochs, system_metrics_summary, ui_url


def finish_training_run(plan: RunPlan, history: list[dict[str, Any]], uri: str, run_id: str, *,
                        status: str = "FINISHED", stats: dict[str, Any] | None = None,
                        model_checkpoint: Path | None = None) -> dict[str, Path]:
    """Write the run folder's records and reports, log unlogged epochs (and the model from
    `model_checkpoint`, a checkpoint folder, when the config asks: its name goes into `stats`), close
    the MLflow run with `status`. Returns the reports written."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from pipelines.tracking.model import log_trained_model

    client = MlflowClient(uri)
    logged = logged_epochs(client, run_id)
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch(client, run_id, metrics)
    stats = stats if stats is not None else {"run_name": plan.run_name}  # gets `mlflow_model` when logged
    # Where the run is in MLflow, and the utilisation MLflow's system metrics recorded, for the summary.
    stats.update(mlflow_run_id=run_id, mlflow_tracking_uri=uri, mlflow_ui=ui_url(uri, run_id),
                 mlflow_ui_command=mlflow_ui_command(uri), system_metrics=system_metrics_summary(client, run_id))
    # The best checkpoint's EMA detector as an MLflow model of this run (the checkpoint on disk stays
    # the source of truth, so a failure here is a warning, not a failed run).
    if model_checkpoint is not None and plan.cfg.tracking.log_model:
        try:
            stats["mlflow_model"] = log_trained_model(uri, run_id, model_checkpoint)
        except (OSError, ValueError, MlflowException) as exc:
            print(f"warning: the MLflow model was not logged: {exc}", file=sys.stderr)
    folder = plan.local  # the run folder, or beside it for a URI: MLflow logs files, then they are uploaded
    written = [atomic_write_text(folder.history, json.dumps(history, indent=1))]
    if status == "FINISHED":
        written.append(atomic_write_text(folder.stats, json.dumps(stats, indent=1)))
    reports = write_reports(history, plan.cfg.to_dict(), stats, folder.path)
    plan.publish(*written, *reports.values())
    finish_run(uri, run_id, [folder.config, *written, *reports.values()], status=status)
    return {name: plan.folder.path / Path(path).name for name, path in reports.items()}


def save_stopped_run(plan: RunPlan, uri: str, run_id: str) -> int:
    """What a stopped run has, from its last registered checkpoint (one Ray was still copying is
    ignored), finished as KILLED. Returns the number of finished epochs."""
    folder: RunFolder = plan.folder
    try:
        latest = folder.latest_checkpoint()
        history = json.loads((latest.parent / HISTORY_FILE).read_text()) if latest is not None else None
    except OSError as exc:  # a run folder at a URI whose store does not answer: its checkpoints stay there
        print(f"warning: the run's records were not written ({exc}); its checkpoints are kept in {folder.path}",
              file=sys.stderr, flush=True)
        from mlflow.tracking import MlflowClient

        finish_run(uri, run_id, [], status="KILLED")  # no artifacts: they would go to the same store
        return len(logged_epochs(MlflowClient(uri), run_id))  # the epochs the run registered and logged
    if history is None:
        finish_run(uri, run_id, [plan.local.config], status="KILLED")
        return 0
    finish_training_run(plan, history, uri, run_id, status="KILLED")
    return len(history)
