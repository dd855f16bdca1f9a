"""Command-line pieces every command shares: the config flags, the cluster flags, one-line errors."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from adatad.config import Config

DEFAULT_CONFIG = "configs/synthetic.yaml"
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class UsageError(RuntimeError):
    """A problem with the command line or the run folder, reported as one line."""


def add_config_arguments(p: argparse.ArgumentParser, default: str | None = DEFAULT_CONFIG,
                         config_help: str | None = None, set_help: str | None = None) -> None:
    """--config / --profile / --set."""
    p.add_argument("--config", default=None, help=config_help or f"experiment YAML (default: {default})")
    p.add_argument("--profile", default=None, help="GPU-memory profile from configs/profiles (e.g. 32gb, 64gb)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help=set_help or "override a config value, e.g. --set train.lr=2e-4 (repeatable)")


def add_cluster_arguments(p: argparse.ArgumentParser, verbose_help: str = "also show Ray's own output") -> None:
    """--cluster / --verbose."""
    p.add_argument("--cluster", default="local",
                   help="local (start Ray here), auto (attach to a running cluster) or an address")
    p.add_argument("--verbose", action="store_true", help=verbose_help)


def fail(message: object, code: int = EXIT_BAD_INPUT) -> int:
    """Print `error: <message>` on stderr (one line) and return the exit code."""
    print(f"error: {message}", file=sys.stderr)
    return code


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


def frame_store_problems(cfg: Config, records: list, config: str | None, overrides: list[str] | None = None,
                         videos: list[str] | None = None) -> list[str]:
    """When `data.frame_store` is set: every reason it cannot serve `records` under `cfg`, one line each
    ending with the command that fixes it (empty: it serves them, or no store is set)."""
    from adatad.frame_store.check import check_store

    if not cfg.data.frame_store:
        return []
    root = cfg.resolve_path(cfg.data.frame_store)
    report = check_store(root, records, cfg.data)
    return report.lines(frame_store_fix(cfg, report.mismatch, root, config, overrides, videos))


def frame_store_fix(cfg: Config, mismatch: bool, root: str, config: str | None, overrides: list[str] | None,
                    videos: list[str] | None = None) -> str:
    """The command that builds what a store check found missing: into `root`, or, when `root` holds
    another grid or frame size, into a sibling folder named for this config's (then point at it)."""
    if not mismatch:
        return prepare_frames_command(config, root, overrides, videos)
    from adatad.frame_store.spec import spec_for_config

    other = f"{root.rstrip('/')}-{spec_for_config(cfg.data).tag()}"
    return f"{prepare_frames_command(config, other, overrides, videos)}, then --set data.frame_store={other}"
