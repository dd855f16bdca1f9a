"""The flags every command shares (config, cluster), the one parser every command builds, and its
one-line errors.

Flag names mean one thing in every command (README, "Flags"): an output folder is `--out-dir`, an
output file `--out`; a run's or sweep's folder name `--run-name`; how many videos a command handles
at once on this machine `--workers`; `--cluster` wherever Ray runs. Spellings a command used before
keep working as hidden aliases (`CommandParser(aliases=...)`), so old scripts and notes still run.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Mapping, Sequence

from pipelines.cli.hints import python_command

DEFAULT_CONFIG = "configs/synthetic.yaml"
EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


class UsageError(RuntimeError):
    """A problem with the command line or the run folder, reported as one line."""


class CommandParser(argparse.ArgumentParser):
    """A command's parser: its docstring shown as written (continued example lines keep their breaks)
    with the interpreter that runs now in its examples, and old flag spellings accepted.

    `aliases` maps an old spelling to the flag that replaced it (`{"--out": "--out-dir"}`); the old
    one is rewritten before parsing, so required flags, defaults and errors are the new flag's, and
    `--help` shows only the new one.
    """

    def __init__(self, *args, aliases: Mapping[str, str] | None = None, **kwargs) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        if kwargs.get("description"):
            kwargs["description"] = with_interpreter(kwargs["description"])
        super().__init__(*args, **kwargs)
        self.aliases = dict(aliases or {})

    def parse_known_args(self, args: Sequence[str] | None = None, namespace=None):
        argv = sys.argv[1:] if args is None else list(args)
        return super().parse_known_args(rename_flags(argv, self.aliases), namespace)


def rename_flags(argv: Sequence[str], aliases: Mapping[str, str]) -> list[str]:
    """`argv` with old flag spellings replaced (`--out X`, `--out=X`); nothing after `--` is touched."""
    out: list[str] = []
    for i, token in enumerate(argv):
        if token == "--":
            return out + list(argv[i:])
        flag, eq, value = token.partition("=")
        out.append(aliases[flag] + eq + value if flag in aliases else token)
    return out


_EXAMPLE = re.compile(r"^(\s+)python (?=pipelines/)", re.MULTILINE)


def with_interpreter(text: str) -> str:
    """A docstring's example lines (`    python pipelines/...`) with the interpreter running now, so an
    example copied from `--help` runs as typed (`.venv/bin/python` outside an activated venv)."""
    return _EXAMPLE.sub(lambda m: f"{m.group(1)}{python_command()} ", text)


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

