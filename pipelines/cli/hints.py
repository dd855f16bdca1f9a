"""Commands printed for the user to type: they must run as typed (the interpreter that runs now)."""

from __future__ import annotations

import sys
from pathlib import Path


def python_command() -> str:
    """The interpreter to print in hints: the one running this command (relative to the current
    folder when inside it, e.g. `.venv/bin/python`), so a printed command runs as it is typed."""
    import os

    exe = sys.executable or "python"
    rel = os.path.relpath(exe)
    return rel if not rel.startswith("..") else exe


def prepare_frames_command(config: str | None, store: str, overrides: list[str] | None = None,
                           videos: list[str] | None = None) -> str:
    """The command that builds (or completes) the frame store `store` for a config (+ its --set values),
    of the config's videos or of `videos` (detect.py's inputs)."""
    sets = "".join(f" --set {o}" for o in overrides or [] if not o.strip().startswith("data.frame_store="))
    return (f"{python_command()} pipelines/prepare_frames.py" + (f" --config {config}" if config else "")
            + f"{sets} --store {store}" + (f" --videos {' '.join(videos)}" if videos else ""))


def trained_config(checkpoint: Path) -> str:
    """The config file a run's checkpoint was trained with (`<run>/config.yaml`), for printed commands."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        if (folder / "config.yaml").is_file():
            return str(folder / "config.yaml")
    return "<the config the checkpoint was trained with>"

