"""The trained detector as an MLflow model: logged into its training run from the best checkpoint,
loaded back with `mlflow.pytorch.load_model` and run on a batch; its weights are the EMA weights."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from urllib.parse import urlparse

import mlflow
import mlflow.pytorch
import pytest
import torch
from mlflow.tracking import MlflowClient

from adatad.engine.state import read_checkpoint
from adatad.postprocess import Detections


def logged_model(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Log the session's trained run's best checkpoint once (memoised on disk for other test files)."""
    from pipelines.tracking.model import log_trained_model

    memo = tmp_path_factory.getbasetemp() / "logged_model.json"
    if memo.is_file():
        return json.loads(memo.read_text())
    uri = f"sqlite:///{trained_run['mlflow_db']}"
    summary = trained_run["summary"]
    before = (mlflow.is_tracking_uri_set(), os.environ.get("MLFLOW_TRACKING_URI"))
    start = time.perf_counter()
    model_uri = log_trained_model(uri, summary["mlflow_run_id"], summary["stats"]["best_checkpoint"])
    out = {"seconds": time.perf_counter() - start, "uri": uri, "run_id": summary["mlflow_run_id"],
           "checkpoint": summary["stats"]["best_checkpoint"], "model_uri": model_uri,
           "model_id": model_uri.removeprefix("models:/"), "db": str(trained_run["mlflow_db"]),
           "active_run_after": mlflow.active_run() is not None,
           "tracking_uri_unchanged": before == (mlflow.is_tracking_uri_set(), os.environ.get("MLFLOW_TRACKING_URI"))}
    memo.write_text(json.dumps(out))
    return out


@pytest.fixture(scope="module")
def logged(trained_run: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    return logged_model(trained_run, tmp_path_factory)


def _ema_weights(state: dict) -> dict[str, torch.Tensor]:
    return {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}


def test_loaded_model_is_the_ema_detector_and_predicts(logged: dict, monkeypatch: pytest.MonkeyPatch,
                                                      one_torch_thread) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged["uri"])  # models:/ URIs resolve in the tracking store
    model = mlflow.pytorch.load_model(logged["model_uri"])
    info = mlflow.models.get_model_info(logged["model_uri"])
    state = read_checkpoint(logged["checkpoint"])
    ema = _ema_weights(state)
    assert any(not torch.equal(state["model"][k], v) for k, v in ema.items())  # EMA != raw weights here
    weights = model.state_dict()
    assert weights.keys() == ema.keys() and all(torch.equal(weights[k], v) for k, v in ema.items())
    assert not model.training

    (frames_spec, masks_spec) = info.signature.inputs.inputs
    t, h, w, _ = frames_spec.shape[1:]
    frames = torch.randint(0, 256, (2, t, h, w, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    masks = torch.ones(2, t, dtype=torch.bool)
    masks[1, t // 2:] = False  # a window that runs past the end of its video
    dets = model.predict(frames, masks)
    assert len(dets) == 2 and all(isinstance(d, Detections) for d in dets)
    num_classes = len(info.metadata["class_names"])
    for d in dets:
        assert len(d) > 0 and d.segments.shape == (len(d), 2) and d.segments.dtype == torch.float32
        assert d.labels.dtype == torch.int64 and 0 <= d.labels.min() and d.labels.max() < num_classes
        assert ((d.scores > 0) & (d.scores <= 1)).all()


def test_model_signature_metadata_and_link_to_its_run(logged: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    from pipelines.tracking.runs import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG, ui_url

    monkeypatch.setenv("MLFLOW_TRACKING_URI", logged["uri"])
    assert logged["seconds"] < 60 and not logged["active_run_after"] and logged["tracking_uri_unchanged"]
    state = read_checkpoint(logged["checkpoint"])
    cfg = state["config"]
    t, size = cfg["data"]["window_size"], cfg["data"]["crop_size"]
    info = mlflow.models.get_model_info(logged["model_uri"])
    inputs = info.signature.inputs.inputs
    assert [(s.name, s.type.name, s.shape) for s in inputs] == [
        ("frames", "uint8", (-1, t, size, size, 3)), ("masks", "bool", (-1, t))]
    assert info.metadata["class_names"] == state["class_names"] and len(state["class_names"]) == 3
    assert info.metadata["config"] == cfg and info.metadata["epoch"] == state["epoch"]
    assert set(info.flavors) >= {"pytorch", "python_function"} and info.run_id == logged["run_id"]

    client = MlflowClient(logged["uri"])
    run = client.get_run(logged["run_id"])
    assert run.info.status == "FINISHED"  # logging into the finished run left its status alone
    assert logged["model_id"] in {o.model_id for o in run.outputs.model_outputs}  # the UI's run -> model link
    model = client.get_logged_model(logged["model_id"])
    # named after the run's config (configs/synthetic.yaml: "synthetic")
    assert (model.name, model.source_run_id, str(model.status)) == (cfg["name"], logged["run_id"], "READY")
    assert model.experiment_id == run.info.experiment_id
    assert {m.key for m in model.metrics if m.step == state["epoch"]} >= {"loss", "average_mAP"}
    folder = Path(urlparse(model.artifact_location).path)
    assert folder.is_relative_to(Path(logged["db"]).parent / "mlruns")  # beside the store, not under the cwd
    requirements = (folder / "requirements.txt").read_text().split()
    assert f"torch=={torch.__version__.split('+')[0]}" in requirements and f"mlflow=={mlflow.__version__}" in requirements
    assert (folder / "code" / "adatad" / "models" / "detector.py").is_file()
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    assert ui_url(logged["uri"], run.info.run_id) == (f"http://127.0.0.1:5000/#/experiments/{experiment.experiment_id}"
                                                       f"/runs/{run.info.run_id}?workflowType=machine_learning")
