"""A finished run's best checkpoint as an MLflow model of the run (`mlflow.pytorch`)."""

from __future__ import annotations

import importlib.metadata
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.tracking import MlflowClient

MODEL_NAME = "model"  # the name of a run whose config name has no usable character
# What unpickling the detector imports (the adatad code itself travels with the model).
MODEL_REQUIREMENTS = ("mlflow", "torch", "torchvision", "timm", "numpy")


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


def model_name(config_name: str) -> str:
    """The MLflow model name of a run: its config's `name`, so that the models of different configs
    (e.g. configs/opentad/<OpenTAD stem>.yaml) are told apart in a store. MLflow refuses
    `/ : . % " '` in a logged model's name; every character but letters, digits, `_` and `-`
    becomes `_`."""
    name = re.sub(r"[^A-Za-z0-9_-]", "_", config_name.strip())
    return name if name.strip("_") else MODEL_NAME


def _requirements() -> list[str]:
    """Pinned versions of what loading the model imports (no pip-requirement inference: slow, noisy)."""
    return [f"{name}=={importlib.metadata.version(name)}" for name in MODEL_REQUIREMENTS]


def log_trained_model(uri: str, run_id: str, checkpoint_dir: str | Path,
                      class_names: list[str] | None = None) -> str:
    """Log the checkpoint's EMA detector (the weights validation scored) as the run's MLflow model.

    Returns the model URI (`models:/<model id>`); the model is named after the run's config
    (`model_name`). The pytorch flavour fits: the detector is an
    nn.Module, and `mlflow.pytorch.load_model(uri)` gives it back ready for
    `.predict(frames, masks)`: frames uint8 (B, T x s, H, W, 3) RGB, masks bool (B, T) with
    T = data.window_size, s = data.frames_per_position, H = W = data.crop_size, returning one `Detections` per window
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
    frames = t * cfg.data.frames_per_position  # a window reads frames_per_position frames per position
    signature = ModelSignature(inputs=Schema([
        TensorSpec(np.dtype(np.uint8), (-1, frames, size, size, 3), "frames"),
        TensorSpec(np.dtype(np.bool_), (-1, t), "masks"),
    ]))
    metadata = {"class_names": names, "window_size": t, "frames_per_position": cfg.data.frames_per_position,
                "crop_size": size, "epoch": int(state.get("epoch", -1)),
                "ema": bool(state.get("ema")), "call": "mlflow.pytorch.load_model(uri).predict(frames, masks)",
                "output": "per window: Detections(segments (M, 2) in window positions, scores (M,), labels (M,))",
                "config": state["config"]}  # in MLmodel: extra_files would print a download progress bar
    with _active_run(uri, run_id), _quiet_pickle_warning():
        info = mlflow.pytorch.log_model(
            model, name=model_name(cfg.name), signature=signature, metadata=metadata,
            code_paths=[str(Path(adatad.__file__).parent)], pip_requirements=_requirements(),
            serialization_format="pickle", step=max(int(state.get("epoch", 0)), 0),
        )
    return info.model_uri
