"""Settings comparison across MLflow runs: the target run's "32 GB vs 64 GB" table, generated.

    python pipelines/report.py compare --runs RUN_A RUN_B [--tracking-uri URI] [--out compare.md]

Each setting (batch size, decode workers, prefetch, validation batch and workers, and any other
config value that differs) is a row; each run is a column; then the measured rows (clips/s,
time per epoch, peak memory, final average mAP) and a ratio column per run against the first.
Everything is read from the runs' MLflow params and per-epoch metric history. MLflow is imported
only when the command runs, so `report.py` stays fast to import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adatad.atomic import atomic_write_text

# (row label, MLflow param = dotted config key)
SETTING_ROWS = (
    ("batch size", "train.batch_size"),
    ("decode workers", "runtime.decode_actors"),
    ("prefetch", "runtime.prefetch_batches"),
    ("val batch", "train.val_batch_size"),
    ("val workers", "runtime.val_decode_actors"),
)
# Params that differ between any two runs without being a setting (where files and records go).
IGNORED_PARAM_PREFIXES = ("data.annotation_file", "data.video_dir", "data.class_map_file", "runtime.storage_path",
                          "tracking.", "model.backbone.checkpoint", "name")


class CompareError(ValueError):
    """A run that cannot be found or compared (one line naming the run and the store)."""


@dataclass
class RunRecord:
    run_id: str
    name: str
    params: dict[str, str]
    history: dict[str, list[float]]  # metric -> values ordered by epoch


@dataclass(frozen=True)
class Measure:
    label: str
    metric: str
    reduce: Callable[[list[float]], float]
    fmt: Callable[[float], str]


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    minutes, sec = divmod(round(s), 60)
    return f"{minutes // 60} h {minutes % 60:02d} min" if minutes >= 60 else f"{minutes} min {sec:02d} s"


def _megabytes(mb: float) -> str:
    return f"{mb / 1024:.2f} GiB" if mb >= 1024 else f"{mb:.0f} MiB"


MEASURES = (
    Measure("clips/s (mean over epochs)", "clips_per_s", _mean, lambda v: f"{v:.2f}"),
    Measure("time per epoch (mean)", "epoch_time_s", _mean, _seconds),
    Measure("peak memory", "peak_memory_mb", max, _megabytes),
    Measure("final average mAP", "average_mAP", lambda v: v[-1], lambda v: f"{100 * v:.2f} %"),
)


def _find_run(client, ref: str, uri: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_run(ref)
    except MlflowException:
        pass  # not a run id: look it up by name
    experiments = [e.experiment_id for e in client.search_experiments()]
    matches = client.search_runs(experiments, filter_string=f"attributes.run_name = '{ref}'") if experiments else []
    if not matches:
        raise CompareError(f"run {ref!r}: no MLflow run with that id or name in {uri}")
    if len(matches) > 1:
        ids = ", ".join(m.info.run_id for m in matches[:5])
        raise CompareError(f"run {ref!r}: {len(matches)} runs have that name in {uri} ({ids}); pass a run id")
    return matches[0]


def load_runs(uri: str, refs: Sequence[str]) -> list[RunRecord]:
    """Params and per-epoch history of each run (by id or run name)."""
    from mlflow.tracking import MlflowClient

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CompareError(f"--tracking-uri {uri}: the database file does not exist")
    client = MlflowClient(uri)
    records = []
    for ref in refs:
        run = _find_run(client, ref, uri)
        history = {}
        for measure in MEASURES:
            points = client.get_metric_history(run.info.run_id, measure.metric)
            history[measure.metric] = [p.value for p in sorted(points, key=lambda p: (p.step, p.timestamp))]
        records.append(RunRecord(run.info.run_id, run.info.run_name or run.info.run_id, dict(run.data.params),
                                 history))
    return records


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None


def _ratio(first: float | None, other: float | None) -> str:
    if first is None or other is None or first == 0:
        return "-"
    return f"{other / first:.2f}x"


def differing_params(runs: Sequence[RunRecord]) -> list[str]:
    """Config keys (beyond the fixed setting rows) whose value is not the same in every run."""
    fixed = {key for _, key in SETTING_ROWS}
    keys = sorted({k for r in runs for k in r.params})
    return [k for k in keys if k not in fixed and not k.startswith(IGNORED_PARAM_PREFIXES)
            and len({r.params.get(k) for r in runs}) > 1]


def comparison_table(runs: Sequence[RunRecord]) -> list[list[str]]:
    """Rows of [label, value per run..., ratio per later run...]."""
    rows: list[list[str]] = []
    settings = [*SETTING_ROWS, *((key, key) for key in differing_params(runs))]
    for label, key in settings:
        texts = [r.params.get(key, "-") for r in runs]
        numbers = [_number(r.params.get(key)) for r in runs]
        rows.append([label, *texts, *(_ratio(numbers[0], n) for n in numbers[1:])])
    for m in MEASURES:
        values = [m.reduce(r.history[m.metric]) if r.history.get(m.metric) else None for r in runs]
        rows.append([m.label, *(m.fmt(v) if v is not None else "-" for v in values),
                     *(_ratio(values[0], v) for v in values[1:])])
    return rows


def _headers(runs: Sequence[RunRecord]) -> list[str]:
    names = [r.name for r in runs]
    return [f"{r.name} ({r.run_id[:8]})" if names.count(r.name) > 1 else r.name for r in runs]


def render_comparison(runs: Sequence[RunRecord], uri: str) -> str:
    heads = _headers(runs)
    header = ["setting", *heads, *(f"{h} / {heads[0]}" for h in heads[1:])]
    lines = ["# Settings comparison", "",
             f"MLflow `{uri}`; runs: " + ", ".join(f"{h} = `{r.run_id}`" for h, r in zip(heads, runs, strict=True)),
             "", "| " + " | ".join(_cell(h) for h in header) + " |",
             "|---|" + "---:|" * (len(header) - 1)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in comparison_table(runs)]
    lines += ["", "Measured rows come from each run's per-epoch MLflow metrics (clips_per_s, epoch_time_s, "
              "peak_memory_mb, average_mAP); ratios are each run over the first."]
    return "\n".join(lines) + "\n"


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


# ---------------------------------------------------------------- `report.py compare`


def add_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN",
                   help="two or more MLflow run ids or run names; the first is the reference column")
    p.add_argument("--tracking-uri", default=None,
                   help="MLflow store (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)")
    p.add_argument("--out", type=Path, default=None, help="also write the table to this markdown file")


def run(args: argparse.Namespace) -> int:
    """Exit codes as report.py: 0 ok, 2 bad input, 1 could not write."""
    from pipelines.tracking.runs import default_tracking_uri  # MLflow is imported only when this runs

    uri = args.tracking_uri or default_tracking_uri()
    try:
        if len(args.runs) < 2:
            raise CompareError(f"--runs {' '.join(args.runs)}: give at least two runs to compare")
        markdown = render_comparison(load_runs(uri, args.runs), uri)
    except CompareError as exc:
        print(f"report.py compare: error: {exc}", file=sys.stderr)
        return 2
    print(markdown, end="")
    if args.out:
        print(atomic_write_text(args.out, markdown))
    return 0
