"""The flags every command shares (config, cluster) and its one-line errors."""

from __future__ import annotations

import argparse
import sys

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

