"""A run's per-epoch records: checked, sorted, and read back from a run folder.

The training loop records `history` (one dict per epoch), the effective config and a few run facts
(`stats`); every report is computed from those, so it can be regenerated at any time
(`pipelines/report.py run`), e.g. for a run that crashed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from adatad.reports.markdown import is_number
from adatad.run_folder import RunFolder, RunFolderError, read_json

MAP_PREFIX = "mAP_"  # mAP_<tIoU> per threshold of the run's evaluation.tiou_thresholds, plus average_mAP
REQUIRED_KEYS = ("epoch", "loss", "cls_loss", "reg_loss", "lr_base", "lr_adapter", "epoch_time_s",
                 "clips_per_s", "data_wait_frac", "peak_memory_mb", "steps", "decode_failures")
LOSS_KEYS = ("loss", "cls_loss", "reg_loss")


class ReportError(ValueError):
    """Unusable run records (one line naming the file/epoch/key and what was expected)."""


def check_history(history: Any, source: str = "history",
                  tiou_thresholds: Sequence[float] | None = None) -> list[dict[str, Any]]:
    """Validate the per-epoch records and return them sorted by epoch.

    A resumed run can record an epoch twice (it re-runs the epoch after the last checkpoint);
    the later record wins because it is the one the final model descends from.
    """
    if not isinstance(history, list):
        raise ReportError(f"{source}: expected a list of per-epoch records, got {type(history).__name__}")
    if not history:
        raise ReportError(f"{source}: empty history (no epoch finished yet), nothing to report")
    by_epoch: dict[int, dict[str, Any]] = {}
    # Every validated epoch has the run's thresholds (evaluation.tiou_thresholds, when known).
    expected = (tuple(f"{MAP_PREFIX}{float(t):g}" for t in tiou_thresholds) + ("average_mAP",)
                if tiou_thresholds else None)
    for i, row in enumerate(history):
        if not isinstance(row, dict):
            raise ReportError(f"{source}[{i}]: expected a mapping, got {type(row).__name__}")
        for key in REQUIRED_KEYS:
            if key not in row:
                raise ReportError(f"{source}[{i}]: missing key {key!r} (expected keys: {', '.join(REQUIRED_KEYS)})")
            ok = is_number(row[key]) and (key in LOSS_KEYS or math.isfinite(row[key]))  # a diverged loss is NaN
            if not ok:
                raise ReportError(f"{source}[{i}].{key}: expected a finite number, got {row[key]!r}")
        if not float(row["epoch"]).is_integer() or row["epoch"] < 0:
            raise ReportError(f"{source}[{i}].epoch: expected a whole number >= 0, got {row['epoch']!r}")
        present = tuple(k for k in row if k.startswith(MAP_PREFIX)) + (("average_mAP",) if "average_mAP" in row else ())
        if present:
            expected = expected or present
            missing = [k for k in expected if k not in present]
            extra = [k for k in present if k not in expected]
            if missing or extra:
                raise ReportError(f"{source}[{i}] (epoch {row['epoch']}): validated epoch "
                                  + (f"lacks {', '.join(missing)}" if missing else f"has {', '.join(extra)}")
                                  + f" (expected {', '.join(expected)})")
        for key in present:
            if not is_number(row[key]):
                raise ReportError(f"{source}[{i}].{key}: expected a number in [0, 1], got {row[key]!r}")
        by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def validated(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in history if "average_mAP" in row]


def tious(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tIoU thresholds the run was scored at, as its records name them ("0.3", ...)."""
    val = validated(history)
    return [k.removeprefix(MAP_PREFIX) for k in val[0] if k.startswith(MAP_PREFIX)] if val else []


def map_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{MAP_PREFIX}{t}" for t in tious(history)] + ["average_mAP"]



def read_records(path: Path) -> Any:
    try:
        return read_json(path)
    except RunFolderError as exc:
        raise ReportError(str(exc)) from None


def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Read history.json, config.yaml and the optional stats.json of a run directory."""
    folder = RunFolder(run_dir)  # a URI too (adatad.locations)
    if not folder.path.is_dir():
        raise ReportError(f"run directory {folder.path} does not exist")
    history_file = folder.history
    if not history_file.is_file():
        raise ReportError(f"{history_file}: not found (the training loop writes it after every epoch)")
    history = check_history(read_records(history_file), source=str(history_file))
    config_file = folder.config
    if not config_file.is_file():
        raise ReportError(f"{config_file}: not found (the training driver writes the effective config there)")
    try:
        config = yaml.safe_load(config_file.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ReportError(f"{config_file}: invalid YAML{where}: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(config, dict):
        raise ReportError(f"{config_file}: expected a mapping of config groups, got {type(config).__name__}")
    stats: Any = {}
    stats_file = folder.stats
    if stats_file.exists():
        stats = read_records(stats_file)
        if not isinstance(stats, dict):
            raise ReportError(f"{stats_file}: expected a JSON object of run facts, got {type(stats).__name__}")
    return history, config, stats
