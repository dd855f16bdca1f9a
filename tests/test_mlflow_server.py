"""The MLflow tracking server (what `mlflow ui` serves) shows a finished training run with its model
and a sweep: model-training experiments, a parent run with nested trial runs, per-epoch metric
history and the logged model, read through its REST API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.cluster_bed import free_ports
from tests.test_mlflow_model import logged_model
from tests.test_tune import SWEEP_EXPERIMENT, tiny_sweep

MLFLOW = str(Path(sys.executable).parent / "mlflow")


def _get(base: str, path: str, **params: str) -> dict:
    with urllib.request.urlopen(f"{base}{path}?{urllib.parse.urlencode(params)}", timeout=10) as response:
        return json.loads(response.read())


def _post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(f"{base}{path}", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def mlflow_server(trained_run: dict, tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("mlflow_server")
    sweep = tiny_sweep(trained_run, tmp_path_factory)  # writes into the same store as trained_run
    model = logged_model(trained_run, tmp_path_factory)  # the train run's model, in that store too
    (port,) = free_ports(1)
    server = subprocess.Popen(
        [MLFLOW, "server", "--backend-store-uri", f"sqlite:///{trained_run['mlflow_db']}", "--host", "127.0.0.1",
         "--port", str(port), "--workers", "1"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except (urllib.error.URLError, OSError):
                if server.poll() is not None or time.monotonic() > deadline:
                    log = (tmp_path / "server.log").read_text()[-2000:]
                    raise RuntimeError(f"mlflow server did not start: {log}") from None
                time.sleep(0.5)
        yield {"base": base, "sweep": sweep, "model": model, "train_run_id": trained_run["summary"]["mlflow_run_id"]}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)


def _steps(base: str, run_id: str, key: str) -> list[int]:
    history = _get(base, "/api/2.0/mlflow/metrics/get-history", run_id=run_id, metric_key=key)
    return sorted(m["step"] for m in history.get("metrics", []))


def test_server_lists_train_and_sweep_runs_with_epoch_history(mlflow_server: dict) -> None:
    base = mlflow_server["base"]
    train_exp = _get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name="adatad-tests")
    sweep_exp = _get(base, "/api/2.0/mlflow/experiments/get-by-name", experiment_name=SWEEP_EXPERIMENT)
    for experiment in (train_exp, sweep_exp):  # the UI's experiment type: machine learning (model training)
        tags = {t["key"]: t["value"] for t in experiment["experiment"]["tags"]}
        assert tags["mlflow.experimentKind"] == "custom_model_development"

    train_runs = _post(base, "/api/2.0/mlflow/runs/search",
                       {"experiment_ids": [train_exp["experiment"]["experiment_id"]]})["runs"]
    assert mlflow_server["train_run_id"] in {r["info"]["run_id"] for r in train_runs}
    assert _steps(base, mlflow_server["train_run_id"], "loss")[:2] == [0, 1]
    assert _steps(base, mlflow_server["train_run_id"], "average_mAP")[:2] == [0, 1]

    sweep_runs = _post(base, "/api/2.0/mlflow/runs/search",
                       {"experiment_ids": [sweep_exp["experiment"]["experiment_id"]],
                        "filter": "tags.`adatad.sweep` = 'tiny_lr'"})["runs"]
    parent_id = mlflow_server["sweep"]["parent_run_id"]
    expected = {row["mlflow_run_id"] for row in mlflow_server["sweep"]["rows"]}
    assert {r["info"]["run_id"] for r in sweep_runs} == expected | {parent_id} and len(expected) == 2
    for run in sweep_runs:
        assert run["info"]["status"] == "FINISHED"
        tags = {t["key"]: t["value"] for t in run["data"]["tags"]}
        if run["info"]["run_id"] == parent_id:
            assert "mlflow.parentRunId" not in tags
            continue
        assert tags["mlflow.parentRunId"] == parent_id  # how the UI nests trials under the sweep
        params = {p["key"]: p["value"] for p in run["data"]["params"]}
        assert float(params["train.adapter_lr"]) in (1e-4, 4e-4)
        assert _steps(base, run["info"]["run_id"], "loss") == [0, 1]
        assert _steps(base, run["info"]["run_id"], "clips_per_s") == [0, 1]
        assert _steps(base, run["info"]["run_id"], "average_mAP") == [1]
    artifacts = _get(base, "/api/2.0/mlflow/artifacts/list", run_id=parent_id)["files"]
    assert [f["path"] for f in artifacts] == ["SWEEP_RESULTS.md"]


def test_server_links_the_train_run_to_its_model(mlflow_server: dict) -> None:
    base, model_id = mlflow_server["base"], mlflow_server["model"]["model_id"]
    run = _get(base, "/api/2.0/mlflow/runs/get", run_id=mlflow_server["train_run_id"])["run"]
    assert model_id in {o["model_id"] for o in run["outputs"]["model_outputs"]}
    model = _get(base, f"/api/2.0/mlflow/logged-models/{model_id}")["model"]
    assert model["info"]["source_run_id"] == mlflow_server["train_run_id"] and model["info"]["name"] == "synthetic"
