"""A sweep's outcome: its trials as rows (from Tune's results), the best one, and the table of
SWEEP_RESULTS.md and the console (the MLflow side: `pipelines/tracking/sweep_runs.py`).

Metrics a person reads are shown in one unit: mAP-like metrics (fractions in the records) as
percent, as the epoch lines show them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adatad.reports.markdown import table
from adatad.run_folder import SweepFolder
from pipelines.sweeps.spec import SETTING_KEY, SweepSpec


@dataclass
class TrialRow:
    """One line of the trials table."""

    trial_id: str
    params: dict[str, Any]
    status: str
    epochs: int
    final: float | None
    best: float | None
    clips_per_s: float | None
    mlflow_run_id: str | None
    error: str | None = None


def swept_values(spec: SweepSpec, params: dict[str, Any]) -> dict[str, Any]:
    """The trial's values under their config keys (a settings bundle expanded), plus its name."""
    out: dict[str, Any] = {}
    if SETTING_KEY in params:
        out["sweep.setting"] = params[SETTING_KEY]
        out.update(spec.settings[params[SETTING_KEY]])
    out.update({k: v for k, v in params.items() if k != SETTING_KEY})
    return out


def _trial_id(result) -> str:
    trial_id = result.metrics.get("trial_id") if result.metrics else None
    return str(trial_id) if trial_id else Path(result.path).name


def collect_rows(results, spec: SweepSpec, folder: SweepFolder, max_epochs: int) -> list[TrialRow]:
    """The trials table from Tune's results (per-epoch dataframes) and the trials' run folders."""
    rows = []
    for result in results:
        trial_id = _trial_id(result)
        df = result.metrics_dataframe
        epochs = 0 if df is None or "epoch" not in df else int(df["epoch"].notna().sum())
        values = df[spec.metric].dropna().tolist() if df is not None and spec.metric in df else []
        speed = df["clips_per_s"].dropna().tolist() if df is not None and "clips_per_s" in df else []
        if result.error is not None:
            status = "error"
        elif epochs < max_epochs:
            status = "stopped early"
        else:
            status = "finished"
        best = (max(values) if spec.mode == "max" else min(values)) if values else None
        rows.append(TrialRow(
            trial_id=trial_id, params=swept_values(spec, result.config), status=status, epochs=epochs,
            final=values[-1] if values else None, best=best,
            clips_per_s=sum(speed) / len(speed) if speed else None,
            mlflow_run_id=folder.trial_run(spec.trial_run_name(trial_id)).read_mlflow_run_id(),
            error=str(result.error).strip().splitlines()[-1][:200] if result.error is not None else None,
        ))
    return rows


def best_row(rows: list[TrialRow], mode: str) -> TrialRow | None:
    scored = [r for r in rows if r.best is not None]
    if not scored:
        return None
    return max(scored, key=lambda r: r.best) if mode == "max" else min(scored, key=lambda r: r.best)


def fmt(value: Any) -> str:
    """A table cell: floats with 4 significant digits, '-' for missing."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_metric(metric: str, value: float | None) -> str:
    """A metric value as people read it: mAP-like fractions as percent (as the epoch lines)."""
    if value is None:
        return "-"
    return f"{100 * value:.2f} %" if "mAP" in metric else fmt(value)


def render_results(rows: list[TrialRow], spec: SweepSpec, sweep_dir: str, uri: str,
                   parent_run_id: str | None = None) -> str:
    """Markdown: what was swept, the trials table (best first) and the best setting."""
    keys = list(dict.fromkeys(k for r in rows for k in r.params))
    best = best_row(rows, spec.mode)
    order = sorted(rows, key=lambda r: (r.best is None, -(r.best or 0) if spec.mode == "max" else (r.best or 0)))
    header = ["trial", *keys, "status", "epochs", f"best {spec.metric}", f"final {spec.metric}",
              "clips/s", "MLflow run"]
    lines = [f"# Sweep `{spec.name}`", "",
             *([spec.description, ""] if spec.description else []),
             f"- sweep file: `{spec.source}`",
             f"- folder: `{sweep_dir}`",
             f"- MLflow: `{uri}`" + (f", sweep run `{parent_run_id}` (one nested run per trial)"
                                     if parent_run_id else ""),
             f"- metric: {spec.metric} ({spec.mode}), scheduler: {spec.scheduler}", ""]
    cells = [[r.trial_id, *(fmt(r.params.get(k)) for k in keys), r.status, str(r.epochs),
              fmt_metric(spec.metric, r.best), fmt_metric(spec.metric, r.final), fmt(r.clips_per_s),
              r.mlflow_run_id or "-"] for r in order]
    lines += [table(header, cells, numeric_from=len(header)), ""]
    if best is None:
        lines.append(f"No trial reported {spec.metric}.")
    else:
        shown = ", ".join(f"{k}={fmt(v)}" for k, v in best.params.items())
        lines.append(f"**Best setting**: {shown} -> {spec.metric} {fmt_metric(spec.metric, best.best)} "
                     f"(trial {best.trial_id}, MLflow run {best.mlflow_run_id or '-'})")
    errors = [r for r in rows if r.error]
    if errors:
        lines += ["", "Errors:", *(f"- {r.trial_id}: {r.error}" for r in errors)]
    return "\n".join(lines) + "\n"
