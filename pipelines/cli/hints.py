"""Commands printed for the user to type: they must run as typed (the interpreter that runs now)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from adatad.config import Config


def python_command() -> str:
    """The interpreter to print in hints: the one running this command (relative to the current
    folder when inside it, e.g. `.venv/bin/python`), so a printed command runs as it is typed."""
    import os

    exe = sys.executable or "python"
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


def command_script(name: str) -> str:
    """A command's script as a printed command names it: `pipelines/<name>.py` from the project folder,
    its absolute path from anywhere else (so the line runs where it was printed)."""
    import os

    path = Path(__file__).resolve().parents[1] / f"{name}.py"
    rel = os.path.relpath(path)
    return rel if not rel.startswith("..") else str(path)


def resume_command(run_name: str, storage: str | None = None) -> str:
    """The command that continues a stopped or interrupted training run."""
    return (f"{python_command()} {command_script('train')} --resume --run-name {run_name}"
            + (f" --storage {storage}" if storage else ""))


def prepare_frames_command(config: str | None, store: str, overrides: list[str] | None = None,
                           videos: list[str] | None = None) -> str:
    """The command that builds (or completes) the frame store `store` for a config (+ its --set values),
    of the config's videos or of `videos` (detect.py's inputs)."""
    sets = "".join(f" --set {o}" for o in overrides or [] if not o.strip().startswith("data.frame_store="))
    return (f"{python_command()} {command_script('prepare_frames')}" + (f" --config {config}" if config else "")
            + f"{sets} --store {store}" + (f" --videos {' '.join(videos)}" if videos else ""))


def mlflow_ui_command(uri: str) -> str | None:
    """The command that serves a local store's UI (bound to loopback), or None for a tracking server,
    which is its own UI. `-m mlflow` with the running interpreter: a bare `mlflow` is not on PATH
    outside the venv."""
    if uri.startswith(("http://", "https://")):
        return None
    return f"{python_command()} -m mlflow ui --backend-store-uri {uri} --host 127.0.0.1"


def fetch_weights_command(config: str, overrides: Sequence[str] = ()) -> str:
    """The command that downloads the backbone file `config` names (its `--set` of that path kept)."""
    sets = "".join(f" --set {o}" for o in overrides if o.strip().startswith("model.backbone.checkpoint="))
    return f"{python_command()} {command_script('fetch_weights')} --config {config}{sets}"


def missing_backbone(cfg: Config, config: str, overrides: Sequence[str] = ()) -> str | None:
    """One line when the VideoMAE file the config trains from is not there (else None), naming the
    command that fetches it, or, for a file nobody may redistribute, the command that says how to get it."""
    from pipelines.weights.sources import source_for

    checkpoint = cfg.model.backbone.checkpoint
    if not checkpoint or cfg.model.init_from:  # random init, or every weight from a trained file
        return None
    path = Path(cfg.resolve_path(checkpoint))
    if path.exists():
        return None
    source = source_for(path)
    if source is None:
        return (f"VideoMAE checkpoint not found: {path} (no published source is known for this file name; "
                f"{python_command()} {command_script('fetch_weights')} --list shows the known ones)")
    command = fetch_weights_command(config, overrides)
    if source.url is None:
        return f"VideoMAE checkpoint not found: {path}; nobody may redistribute it, {command} says how to get it"
    return f"VideoMAE checkpoint not found: {path}; fetch it with: {command}"


def trained_config(checkpoint: Path) -> str:
    """The config file a run's checkpoint was trained with (`<run>/config.yaml`), for printed commands."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return str(folder / "config.yaml")
    return "<the config the checkpoint was trained with>"

