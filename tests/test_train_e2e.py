"""A real short training run on a local Ray: checkpoint, MLflow metrics, reports.

Resuming a run (history, MLflow run, schedule and checkpoints continued; no epoch redone) is checked
on a killed driver and `--resume` in tests/test_faults.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from adatad.engine.state import read_checkpoint


def _client(db: Path) -> MlflowClient:
    return MlflowClient(f"sqlite:///{db}")


def test_run_produces_checkpoint_metrics_and_reports(trained_run: dict) -> None:
    summary, run_dir = trained_run["summary"], Path(trained_run["summary"]["run_dir"])
    history = json.loads((run_dir / "history.json").read_text())
    assert [h["epoch"] for h in history] == [0, 1]
    assert all(h["loss"] > 0 and h["steps"] >= 1 for h in history)
    assert 0.0 <= history[-1]["average_mAP"] <= 1.0
    state = read_checkpoint(summary["stats"]["checkpoint"])
    assert state["epoch"] == 1 and state["ema"] is not None
    assert {"optimizer", "scheduler", "scaler", "model"} <= set(state)
    png, md = run_dir / "training_curves.png", run_dir / "TRAINING_SUMMARY.md"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "mAP" in md.read_text()
    assert (run_dir / "config.yaml").is_file()

    client = _client(trained_run["mlflow_db"])
    run = client.get_run(summary["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [0, 1]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "average_mAP")] == [0, 1]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "TRAINING_SUMMARY.md", "config.yaml"} <= artifacts
    # The best checkpoint is the kept one with the highest validation mAP (Ray lists them worst first).
    kept = {p: json.loads((p / "history.json").read_text())[-1] for p in run_dir.glob("checkpoint_*") if p.is_dir()}
    assert len(kept) == 2
    best = max(kept, key=lambda p: (kept[p]["average_mAP"], kept[p]["epoch"]))
    assert Path(summary["stats"]["best_checkpoint"]) == best, {str(p): m["average_mAP"] for p, m in kept.items()}
    # MLflow's system metrics of the training node, sampled by the rank-0 worker.
    assert client.get_metric_history(run.info.run_id, "system/cpu_utilization_percentage")
    # A metric only where it was measured (no -1 placeholder points), mAP in percent as people read it.
    assert "val_score" not in run.data.metrics and run.data.tags["adatad.map_unit"] == "percent"
    for key in run.data.metrics:
        assert all(m.value >= 0 for m in client.get_metric_history(run.info.run_id, key)), key
    logged = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "average_mAP")}
    assert logged == pytest.approx({h["epoch"]: 100 * h["average_mAP"] for h in history})
    assert all(type(h[k]) is int for h in history for k in ("steps", "decode_failures", "clips_lost"))
    # Checkpoint folders named by epoch; the summary names the MLflow run and the utilisation it recorded.
    assert sorted(p.name for p in kept) == ["checkpoint_epoch_0000", "checkpoint_epoch_0001"]
    text = md.read_text()
    assert f"- MLflow run `{run.info.run_id}` in `sqlite:///{trained_run['mlflow_db']}`" in text
    assert "| CPU utilisation | mean " in text and text.index("## Loss per epoch") < text.index("## Configuration")
    # The best checkpoint's EMA detector is the run's MLflow model (what `mlflow ui` links to the run).
    model_id = summary["stats"]["mlflow_model"].removeprefix("models:/")
    assert model_id in {o.model_id for o in run.outputs.model_outputs}
    assert client.get_logged_model(model_id).source_run_id == run.info.run_id
