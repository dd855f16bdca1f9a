"""Reports of training runs: curves and summary of one run, or a settings table across MLflow runs.

    python pipelines/report.py run --run-dir runs/synthetic            # -> training_curves.png, TRAINING_SUMMARY.md
    python pipelines/report.py compare --runs RUN_A RUN_B [--tracking-uri URI] [--out compare.md]

`run` regenerates the reports `train.py` writes at the end, from the run folder's records alone
(`history.json`, `config.yaml`, `stats.json`), e.g. for a run that crashed. `compare` is the target
run's "32 GB vs 64 GB" table, generated from the runs' MLflow params and metrics. MLflow is imported
only when `compare` runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.reports.history import ReportError, load_run
from adatad.reports.summary import write_reports
from adatad.run_folder import RunFolder
from pipelines.cli.args import CommandParser
from pipelines.tracking import compare_runs as compare


def _add_run_args(p: argparse.ArgumentParser) -> None:
    names = RunFolder(Path("."))
    p.add_argument("--run-dir", required=True, type=Path,
                   help=f"run directory holding {names.history.name}, {names.config.name} and optionally "
                        f"{names.stats.name}")
    p.add_argument("--out-dir", type=Path, default=None, help="where to write the report (default: --run-dir)")


def _cmd_run(args: argparse.Namespace) -> int:
    history, config, stats = load_run(args.run_dir)
    paths = write_reports(history, config, stats, args.out_dir or args.run_dir)
    for path in paths.values():
        print(path)
    return 0


# name -> (help, add arguments, handler returning the exit code)
COMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]] = {
    "run": ("curves PNG + TRAINING_SUMMARY.md for one run directory", _add_run_args, _cmd_run),
    "compare": ("settings comparison table across MLflow runs", compare.add_args, compare.run),
}


def build_parser() -> argparse.ArgumentParser:
    parser = CommandParser(prog="report.py", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (help_text, add_args, handler) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.set_defaults(handler=handler)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Exit codes: 0 ok, 2 bad input (usage or unusable records), 1 could not write the report."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ReportError as exc:
        print(f"report.py {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"report.py {args.command}: error: cannot write the report: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
