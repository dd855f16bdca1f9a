"""TRAINING_SUMMARY.md: the result and the epoch tables first, then the key statistics, the config last.

What a reader looks for comes first: the result (best and final mAP, the loss, where the run is in
MLflow), one row per epoch, the validations. The ~100 lines of config come last, collapsed in a
`<details>` block. Utilisation comes from the MLflow system metrics the run recorded (`stats`
carries their summary, `pipelines/tracking/finish.py`) and is left out when none were recorded.
mAP is in percent here, as everywhere a person reads it; the history holds fractions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adatad.atomic import atomic_write_text
from adatad.reports.curves import plot_training_curves
from adatad.reports.history import check_history, map_keys, tious, validated
from adatad.reports.markdown import config_value, duration, flatten, is_number, number, pct, table
from adatad.run_folder import RunFolder

# (key in Config.to_dict(), heading) in the order of the target run's summary.
CONFIG_GROUPS = (("data", "data"), ("model", "model"), ("train", "train"), ("evaluation", "evaluation"),
                 ("runtime", "runtime (ray)"),
                 ("tracking", "tracking"))
def _as_dict(config: Any) -> Mapping[str, Any] | None:
    """Accept a `Config` as well as its `to_dict()` form."""
    return config.to_dict() if hasattr(config, "to_dict") else config


def _result_lines(history: list[dict[str, Any]]) -> list[str]:
    first, last = history[0], history[-1]
    lines = []
    val = validated(history)
    if val:
        final = val[-1]
        per = ", ".join(f"{t}: {pct(final[f'mAP_{t}'])}" for t in tious(val))
        lines.append(f"- final validation (epoch {final['epoch']}): average mAP "
                     f"**{pct(final['average_mAP'])}%** ({per})")
        best = max(val, key=lambda r: r["average_mAP"])
        lines.append(f"- best validation: average mAP {pct(best['average_mAP'])}% at epoch {best['epoch']}")
    else:
        lines.append("- no validated epoch yet")
    lines.append(f"- loss, epochs {first['epoch']} -> {last['epoch']}: {first['loss']:.4f} -> {last['loss']:.4f} "
                 f"(cls {last['cls_loss']:.4f}, reg {last['reg_loss']:.4f} at epoch {last['epoch']})")
    return lines


def _mlflow_lines(stats: Mapping[str, Any]) -> list[str]:
    """Where the run is in MLflow: its id and store, the command that opens the UI, the run's page."""
    run_id = stats.get("mlflow_run_id")
    if not run_id:
        return []
    lines = [f"- MLflow run `{run_id}`" + (f" in `{stats['mlflow_tracking_uri']}`" if stats.get("mlflow_tracking_uri")
                                           else "")]
    command, page = stats.get("mlflow_ui_command"), stats.get("mlflow_ui")
    if command or page:  # a sqlite store needs `mlflow ui` started; a tracking server is its own UI
        lines.append("- browse: " + " then ".join(([f"`{command}`"] if command else []) + ([page] if page else [])))
    return lines


def _config_section(config: Mapping[str, Any] | None) -> list[str]:
    if not config:
        return ["No config was recorded."]
    out = ["The effective config (`config.yaml` in the run folder), as the run used it."]
    scalars = [(k, v) for k, v in config.items() if not isinstance(v, Mapping)]
    if scalars:
        out.append(", ".join(f"{k}: `{config_value(v)}`" for k, v in scalars))
    known = [key for key, _ in CONFIG_GROUPS]
    groups = [(k, h) for k, h in CONFIG_GROUPS if isinstance(config.get(k), Mapping)]
    groups += [(k, k) for k, v in config.items() if isinstance(v, Mapping) and k not in known]
    for key, heading in groups:
        rows = [(name, config_value(value)) for name, value in flatten(config[key])]
        out += [f"### {heading}", table(("setting", "value"), rows, numeric_from=2)]
    return out


def _loss_table(history: list[dict[str, Any]]) -> str:
    header = ("epoch", "loss", "cls loss", "reg loss", "lr base", "lr adapter", "steps", "time (s)",
              "clips/s", "data wait (%)", "peak mem (MB)", "decode failures")
    rows = [(row["epoch"], f"{row['loss']:.4f}", f"{row['cls_loss']:.4f}", f"{row['reg_loss']:.4f}",
             f"{row['lr_base']:.2e}", f"{row['lr_adapter']:.2e}", int(row["steps"]), f"{row['epoch_time_s']:.1f}",
             f"{row['clips_per_s']:.2f}", f"{100 * row['data_wait_frac']:.1f}", f"{row['peak_memory_mb']:,.0f}",
             int(row["decode_failures"])) for row in history]
    return table(header, rows)


def _map_table(val: list[Mapping[str, Any]]) -> str:
    header = ("epoch", *(f"mAP@{t}" for t in tious(val)), "average", "val time (s)")
    rows = [(row["epoch"], *(pct(row[k]) for k in map_keys(val)),
             f"{row['val_time_s']:.1f}" if is_number(row.get("val_time_s")) else "-") for row in val]
    return table(header, rows)


def _final_table(row: Mapping[str, Any]) -> str:
    return table(("tIoU", *tious([row]), "average"),
                  [(f"mAP (%), epoch {row['epoch']}", *(pct(row[k]) for k in map_keys([row])))])


# stats keys the training driver records -> (label, formatter). The run's identity (RUN_FACTS) leads
# the key statistics table; other stats keys follow the figures computed from the history.
STAT_LABELS = {
    "run_name": ("run name", str),
    "device": ("device", str),
    "storage": ("storage", str),
    "num_workers": ("training workers", number),
    "wall_time_s": ("wall time", duration),
    "checkpoint_size_mb": ("checkpoint size", lambda v: f"{v:,.1f} MB"),
}


RUN_FACTS = ("run_name", "device", "storage", "num_workers", "wall_time_s")
# stats keys shown elsewhere: the MLflow lines of the result, the utilisation rows.
SHOWN_APART = ("mlflow_run_id", "mlflow_tracking_uri", "mlflow_ui", "mlflow_ui_command", "system_metrics")


def _utilisation_rows(stats: Mapping[str, Any]) -> list[tuple[str, str]]:
    """One row per MLflow system metric in percent (`cpu_utilization_percentage`, `gpu_0_...`): mean and
    max over the run's samples, taken every 10 s on the node of the rank-0 training worker."""
    rows = []
    for key, summary in sorted((stats.get("system_metrics") or {}).items()):
        if not isinstance(summary, Mapping) or not {"mean", "max", "samples"} <= set(summary):
            continue
        label = key.removesuffix("_percentage").replace("_", " ").replace("utilization", "utilisation")
        label = label.replace("cpu", "CPU").replace("gpu ", "GPU ").replace("system memory", "memory")
        rows.append((label, f"mean {summary['mean']:.0f} %, max {summary['max']:.0f} % "
                            f"({int(summary['samples'])} samples, MLflow system metrics)"))
    return rows


def _stat_rows(stats: Mapping[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    rows = []
    for key in (k for k in keys if k in stats):
        label, fmt = STAT_LABELS.get(key, (key, number))
        try:
            rows.append((label, fmt(stats[key])))
        except (TypeError, ValueError):  # a fact of an unexpected type is still shown, as recorded
            rows.append((label, config_value(stats[key])))
    return rows


def _key_stats(history: list[dict[str, Any]], stats: Mapping[str, Any]) -> str:
    n = len(history)
    train_s = [row["epoch_time_s"] for row in history]
    val = validated(history)
    val_s = [row["val_time_s"] for row in val if is_number(row.get("val_time_s"))]
    total_train = sum(train_s)
    rows: list[tuple[str, str]] = [
        *_stat_rows(stats, RUN_FACTS),
        ("epochs run", f"{n} (epochs {history[0]['epoch']}-{history[-1]['epoch']})"),
        ("optimiser steps", f"{int(sum(row['steps'] for row in history)):,}"),
        ("mean training time per epoch", duration(total_train / n)),
    ]
    if val_s:
        rows.append(("mean validation time", f"{duration(sum(val_s) / len(val_s))} over {len(val_s)} validations"))
        rows.append(("mean time per epoch incl. validation", duration((total_train + sum(val_s)) / n)))
    # Time-weighted means: an epoch's clips/s and wait fraction count by how long it ran.
    if total_train > 0:
        clips = sum(row["clips_per_s"] * row["epoch_time_s"] for row in history)
        wait = sum(row["data_wait_frac"] * row["epoch_time_s"] for row in history)
        tput = [row["clips_per_s"] for row in history]
        rows.append(("throughput", f"{clips / total_train:.2f} clips/s (per epoch {min(tput):.2f}-{max(tput):.2f})"))
        worst = max(history, key=lambda r: r["data_wait_frac"])
        rows.append(("step time waiting for data", f"{100 * wait / total_train:.1f}% "
                     f"(max {100 * worst['data_wait_frac']:.1f}% at epoch {worst['epoch']})"))
    peak = max(history, key=lambda r: r["peak_memory_mb"])
    device = str(stats.get("device", ""))
    what = " (GPU, allocated)" if device.startswith("cuda") else " (process RSS)" if device == "cpu" else ""
    rows.append((f"peak memory{what}", f"{peak['peak_memory_mb']:,.0f} MB ({peak['peak_memory_mb'] / 1024:.2f} GB) "
                 f"at epoch {peak['epoch']}"))
    failures = int(sum(row["decode_failures"] for row in history))
    bad = sum(1 for row in history if row["decode_failures"] > 0)
    rows.append(("decode failures", f"{failures} in {bad} of {n} epochs" if failures else "0"))
    if val:
        best = max(val, key=lambda r: r["average_mAP"])
        rows.append(("best average mAP", f"{pct(best['average_mAP'])}% at epoch {best['epoch']}"))
    rows += _utilisation_rows(stats)  # none recorded (system metrics off): no row
    rows += _stat_rows(stats, [k for k in stats if k not in RUN_FACTS and k not in SHOWN_APART])
    return table(("statistic", "value"), rows, numeric_from=2)


def render_summary(history: list[dict[str, Any]], config: Mapping[str, Any] | None,
                   stats: Mapping[str, Any] | None = None, curves: str | None = None) -> str:
    """The whole TRAINING_SUMMARY.md as a string."""
    history = check_history(history)
    config = _as_dict(config)
    stats = dict(stats or {})
    name = stats.get("run_name") or (config or {}).get("name") or "run"
    val = validated(history)
    parts = [f"# Training summary: {name}",
             f"Generated by `pipelines/report.py` from the run records: {len(history)} epochs of history, "
             f"the effective config{' and run statistics' if stats else ''}. Epochs are counted from 0; mAP "
             "is in percent (`history.json` keeps fractions)."]
    parts += ["## Result", "\n".join(_result_lines(history) + _mlflow_lines(stats))]
    parts += ["## Loss per epoch", _loss_table(history)]
    parts += ["## Validation mAP per epoch (%)",
              _map_table(val) if val else "No epoch has been validated yet."]
    parts += ["## Final mAP per tIoU (%)",
              _final_table(val[-1]) if val else "No epoch has been validated yet."]
    if curves:
        parts.append(f"![training curves]({curves})")
    parts += ["## Key statistics", _key_stats(history, stats)]
    # Last and collapsed: ~100 lines a reader rarely needs before the numbers above.
    parts += ["<details><summary>Configuration</summary>", "## Configuration", *_config_section(config),
              "</details>"]
    return "\n\n".join(parts) + "\n"


def write_summary(history: list[dict[str, Any]], config: Mapping[str, Any] | None, stats: Mapping[str, Any] | None,
                  out_md: str | Path, curves: str | None = None) -> Path:
    """Write TRAINING_SUMMARY.md atomically; `curves` is an image path to embed, relative to it."""
    return atomic_write_text(out_md, render_summary(history, config, stats, curves))


def write_reports(history: list[dict[str, Any]], config: Mapping[str, Any] | None, stats: Mapping[str, Any] | None,
                  out_dir: str | Path) -> dict[str, Path]:
    """Curves and summary into `out_dir`; returns {"curves": png path, "summary": md path}."""
    folder = RunFolder(out_dir)  # a URI too: the files are written in one PUT each
    config = _as_dict(config)
    thresholds = ((config or {}).get("evaluation") or {}).get("tiou_thresholds")
    history = check_history(history, tiou_thresholds=thresholds)
    name = (stats or {}).get("run_name") or (config or {}).get("name")
    return {
        "curves": plot_training_curves(history, folder.curves, title=name),
        "summary": write_summary(history, config, stats, folder.summary, curves=folder.curves.name),
    }
