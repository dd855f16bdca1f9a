"""`report.py compare`: the runs' MLflow params and per-epoch metrics, read for the settings table.

    python pipelines/report.py compare --runs RUN_A RUN_B [--tracking-uri URI] [--out compare.md]

Each setting (batch size, decode workers, prefetch, validation batch and workers, and any other
config value that differs) is a row; each run is a column; then the measured rows (clips/s,
time per epoch, peak memory, final average mAP) and a ratio column per run against the first.
Everything is read from the runs' MLflow params and per-epoch metric history (the table itself is
`adatad/reports/comparison.py`); mAP is read in each run's own unit (percent, or the fractions of
runs logged before `adatad.map_unit`). MLflow is imported only when the command runs, so
`report.py` stays fast to import.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from adatad.atomic import atomic_write_text
from adatad.reports.comparison import MEASURES, CompareError, RunRecord, render_comparison


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
    """Params and per-epoch history of each run (by id or run name); mAP in percent."""
    from mlflow.tracking import MlflowClient

    from pipelines.tracking.runs import MAP_UNIT, MAP_UNIT_TAG, is_map

    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
        raise CompareError(f"--tracking-uri {uri}: the database file does not exist")
    client = MlflowClient(uri)
    records = []
    for ref in refs:
        run = _find_run(client, ref, uri)
        percent = run.data.tags.get(MAP_UNIT_TAG) == MAP_UNIT
        history = {}
        for measure in MEASURES:
            points = client.get_metric_history(run.info.run_id, measure.metric)
            scale = 100.0 if is_map(measure.metric) and not percent else 1.0  # an older run's fractions
            history[measure.metric] = [scale * p.value for p in sorted(points, key=lambda p: (p.step, p.timestamp))
                                       if not (is_map(measure.metric) and p.value < 0)]
        records.append(RunRecord(run.info.run_id, run.info.run_name or run.info.run_id, dict(run.data.params),
                                 history))
    return records


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
