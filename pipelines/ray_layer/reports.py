"""Training report: curves PNG and markdown summary, generated only from a run's records.

The training loop records `history` (one dict per epoch), the effective config and a few run facts
(`stats`); every figure in the report is computed from those, so a report can be regenerated at any
time (`pipelines/report.py run`), e.g. for a run that crashed. Ray and MLflow are not imported here.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from adatad.atomic import atomic_write_bytes, atomic_write_text
from adatad.run_folder import RunFolder, RunFolderError, read_json

if TYPE_CHECKING:
    from matplotlib.figure import Figure


MAP_PREFIX = "mAP_"  # mAP_<tIoU> per threshold of the run's evaluation.tiou_thresholds, plus average_mAP
REQUIRED_KEYS = ("epoch", "loss", "cls_loss", "reg_loss", "lr_base", "lr_adapter", "epoch_time_s",
                 "clips_per_s", "data_wait_frac", "peak_memory_mb", "steps", "decode_failures")
LOSS_KEYS = ("loss", "cls_loss", "reg_loss")
# (key in Config.to_dict(), heading) in the order of the target run's summary.
CONFIG_GROUPS = (("data", "data"), ("model", "model"), ("train", "train"), ("evaluation", "evaluation"),
                 ("runtime", "runtime (ray)"),
                 ("tracking", "tracking"))
FIGSIZE = (12.0, 4.5)  # inches; the PNG is FIGSIZE * DPI pixels
DPI = 100


class ReportError(ValueError):
    """Unusable run records (one line naming the file/epoch/key and what was expected)."""


# ---------------------------------------------------------------- history


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
            ok = _is_number(row[key]) and (key in LOSS_KEYS or math.isfinite(row[key]))  # a diverged loss is NaN
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
            if not _is_number(row[key]):
                raise ReportError(f"{source}[{i}].{key}: expected a number in [0, 1], got {row[key]!r}")
        by_epoch[int(row["epoch"])] = row
    return [by_epoch[e] for e in sorted(by_epoch)]


def _validated(history: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [row for row in history if "average_mAP" in row]


def tious(history: Sequence[Mapping[str, Any]]) -> list[str]:
    """The tIoU thresholds the run was scored at, as its records name them ("0.3", ...)."""
    val = _validated(history)
    return [k.removeprefix(MAP_PREFIX) for k in val[0] if k.startswith(MAP_PREFIX)] if val else []


def map_keys(history: Sequence[Mapping[str, Any]]) -> list[str]:
    return [f"{MAP_PREFIX}{t}" for t in tious(history)] + ["average_mAP"]


# ---------------------------------------------------------------- curves


def build_figure(history: list[dict[str, Any]], title: str | None = None) -> Figure:
    """Two panels: training losses and validation mAP (percent, per tIoU and average) against epoch."""
    # Figure + Agg canvas directly (no pyplot): no global state, no display backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = check_history(history)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_map = fig.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    few = len(epochs) <= 40  # markers help read short runs; on long runs they clutter
    styles = (("loss", "total", "o-", 2.2), ("cls_loss", "classification", "s--", 1.4),
              ("reg_loss", "regression", "^:", 1.4))
    for key, label, fmt, width in styles:
        ax_loss.plot(epochs, [row[key] for row in history], fmt if few else fmt.strip("os^"), lw=width,
                     ms=4, label=label)
    ax_loss.set(title="Training loss", xlabel="epoch", ylabel="loss (mean over steps)")
    ax_loss.set_ylim(bottom=0)

    val = _validated(history)
    map_title = "Validation mAP"
    if val:
        val_epochs = [row["epoch"] for row in val]
        for t in tious(val):
            ax_map.plot(val_epochs, [100 * row[f"mAP_{t}"] for row in val], ".-" if few else "-", lw=0.9,
                        ms=4, alpha=0.75, label=t)
        ax_map.plot(val_epochs, [100 * row["average_mAP"] for row in val], "o-", color="black", lw=2.2,
                    ms=5, label="average")
        # The final value goes into the title: an annotation next to the point collides with lines.
        map_title += f" (last: {_pct(val[-1]['average_mAP'])} at epoch {val[-1]['epoch']})"
        # "best" ignores single-point lines, so with one validation pin the legend away from the point.
        ax_map.legend(title="tIoU", fontsize=8, title_fontsize=8, ncol=2, loc="best" if len(val) > 1 else "upper left")
    else:
        ax_map.text(0.5, 0.5, "no validation yet", transform=ax_map.transAxes, ha="center", va="center",
                    fontsize=14, color="0.45")
        ax_map.set_yticks([])
    ax_map.set(title=map_title, xlabel="epoch", ylabel="mAP (%)")

    # The mAP panel spans the validated epochs only: validation often starts late (epoch 49 of 60
    # in the target run) and its small changes would be squeezed into a sliver of the full range.
    for ax, xs in ((ax_loss, epochs), (ax_map, [row["epoch"] for row in val] or epochs)):
        lo, hi = min(xs), max(xs)
        pad = max(0.5, 0.03 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
        if lo == hi:  # MaxNLocator falls back to fractional ticks on a range below one epoch
            ax.set_xticks([lo])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=9, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def plot_training_curves(history: list[dict[str, Any]], out_png: str | Path, title: str | None = None) -> Path:
    """Write `training_curves.png` atomically (render into memory, then temp file + rename)."""
    fig = build_figure(history, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(out_png, buf.getvalue())


# ---------------------------------------------------------------- formatting


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric_from: int = 1) -> str:
    """Markdown table; columns from `numeric_from` on are right-aligned."""
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join(align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fmt_config(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        text = f"{value:g}"
        return text if any(c in text for c in ".en") else f"{text}.0"  # 1.0 stays visibly a float
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_fmt_config(v) for v in value) + "]"
    return str(value)


def _pct(fraction: float) -> str:
    return f"{100 * fraction:.2f}"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    human = f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
    return f"{seconds:,.1f} s ({human})"


def _number(value: Any) -> str:
    if isinstance(value, bool) or not _is_number(value):
        return _fmt_config(value)
    if isinstance(value, int) or float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.1f}"


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out += _flatten(value, name)
        else:
            out.append((name, value))
    return out


# ---------------------------------------------------------------- summary sections


def _as_dict(config: Any) -> Mapping[str, Any] | None:
    """Accept a `Config` as well as its `to_dict()` form."""
    return config.to_dict() if hasattr(config, "to_dict") else config


def _result_lines(history: list[dict[str, Any]]) -> list[str]:
    first, last = history[0], history[-1]
    lines = []
    val = _validated(history)
    if val:
        final = val[-1]
        per = ", ".join(f"{t}: {_pct(final[f'mAP_{t}'])}" for t in tious(val))
        lines.append(f"- final validation (epoch {final['epoch']}): average mAP "
                     f"**{_pct(final['average_mAP'])}%** ({per})")
        best = max(val, key=lambda r: r["average_mAP"])
        lines.append(f"- best validation: average mAP {_pct(best['average_mAP'])}% at epoch {best['epoch']}")
    else:
        lines.append("- no validated epoch yet")
    lines.append(f"- loss, epochs {first['epoch']} -> {last['epoch']}: {first['loss']:.4f} -> {last['loss']:.4f} "
                 f"(cls {last['cls_loss']:.4f}, reg {last['reg_loss']:.4f} at epoch {last['epoch']})")
    return lines


def _config_section(config: Mapping[str, Any] | None) -> list[str]:
    if not config:
        return ["No config was recorded."]
    out = []
    scalars = [(k, v) for k, v in config.items() if not isinstance(v, Mapping)]
    if scalars:
        out.append(", ".join(f"{k}: `{_fmt_config(v)}`" for k, v in scalars))
    known = [key for key, _ in CONFIG_GROUPS]
    groups = [(k, h) for k, h in CONFIG_GROUPS if isinstance(config.get(k), Mapping)]
    groups += [(k, k) for k, v in config.items() if isinstance(v, Mapping) and k not in known]
    for key, heading in groups:
        rows = [(name, _fmt_config(value)) for name, value in _flatten(config[key])]
        out += [f"### {heading}", _table(("setting", "value"), rows, numeric_from=2)]
    return out


def _loss_table(history: list[dict[str, Any]]) -> str:
    header = ("epoch", "loss", "cls loss", "reg loss", "lr base", "lr adapter", "steps", "time (s)",
              "clips/s", "data wait (%)", "peak mem (MB)", "decode failures")
    rows = [(row["epoch"], f"{row['loss']:.4f}", f"{row['cls_loss']:.4f}", f"{row['reg_loss']:.4f}",
             f"{row['lr_base']:.2e}", f"{row['lr_adapter']:.2e}", int(row["steps"]), f"{row['epoch_time_s']:.1f}",
             f"{row['clips_per_s']:.2f}", f"{100 * row['data_wait_frac']:.1f}", f"{row['peak_memory_mb']:,.0f}",
             int(row["decode_failures"])) for row in history]
    return _table(header, rows)


def _map_table(val: list[Mapping[str, Any]]) -> str:
    header = ("epoch", *(f"mAP@{t}" for t in tious(val)), "average", "val time (s)")
    rows = [(row["epoch"], *(_pct(row[k]) for k in map_keys(val)),
             f"{row['val_time_s']:.1f}" if _is_number(row.get("val_time_s")) else "-") for row in val]
    return _table(header, rows)


def _final_table(row: Mapping[str, Any]) -> str:
    return _table(("tIoU", *tious([row]), "average"),
                  [(f"mAP (%), epoch {row['epoch']}", *(_pct(row[k]) for k in map_keys([row])))])


# stats keys the training driver records -> (label, formatter). The run's identity (RUN_FACTS) leads
# the key statistics table; other stats keys follow the figures computed from the history.
STAT_LABELS = {
    "run_name": ("run name", str),
    "device": ("device", str),
    "storage": ("storage", str),
    "num_workers": ("training workers", _number),
    "wall_time_s": ("wall time", _duration),
    "checkpoint_size_mb": ("checkpoint size", lambda v: f"{v:,.1f} MB"),
}


RUN_FACTS = ("run_name", "device", "storage", "num_workers", "wall_time_s")


def _stat_rows(stats: Mapping[str, Any], keys: Sequence[str]) -> list[tuple[str, str]]:
    rows = []
    for key in (k for k in keys if k in stats):
        label, fmt = STAT_LABELS.get(key, (key, _number))
        try:
            rows.append((label, fmt(stats[key])))
        except (TypeError, ValueError):  # a fact of an unexpected type is still shown, as recorded
            rows.append((label, _fmt_config(stats[key])))
    return rows


def _key_stats(history: list[dict[str, Any]], stats: Mapping[str, Any]) -> str:
    n = len(history)
    train_s = [row["epoch_time_s"] for row in history]
    val = _validated(history)
    val_s = [row["val_time_s"] for row in val if _is_number(row.get("val_time_s"))]
    total_train = sum(train_s)
    rows: list[tuple[str, str]] = [
        *_stat_rows(stats, RUN_FACTS),
        ("epochs run", f"{n} (epochs {history[0]['epoch']}-{history[-1]['epoch']})"),
        ("optimiser steps", f"{int(sum(row['steps'] for row in history)):,}"),
        ("mean training time per epoch", _duration(total_train / n)),
    ]
    if val_s:
        rows.append(("mean validation time", f"{_duration(sum(val_s) / len(val_s))} over {len(val_s)} validations"))
        rows.append(("mean time per epoch incl. validation", _duration((total_train + sum(val_s)) / n)))
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
        rows.append(("best average mAP", f"{_pct(best['average_mAP'])}% at epoch {best['epoch']}"))
    util = sorted({k for row in history for k in row if "util" in k and _is_number(row[k])})
    for key in util:
        values = [row[key] for row in history if _is_number(row.get(key))]
        rows.append((f"{key} (mean over epochs)", _number(sum(values) / len(values))))
    rows += _stat_rows(stats, [k for k in stats if k not in RUN_FACTS])
    if not util and not any("util" in k for k in stats):
        rows.append(("utilisation", "not measured in this run"))
    return _table(("statistic", "value"), rows, numeric_from=2)


def render_summary(history: list[dict[str, Any]], config: Mapping[str, Any] | None,
                   stats: Mapping[str, Any] | None = None, curves: str | None = None) -> str:
    """The whole TRAINING_SUMMARY.md as a string."""
    history = check_history(history)
    config = _as_dict(config)
    stats = dict(stats or {})
    name = stats.get("run_name") or (config or {}).get("name") or "run"
    val = _validated(history)
    parts = [f"# Training summary: {name}",
             f"Generated by `pipelines/report.py` from the run records: {len(history)} epochs of history, "
             f"the effective config{' and run statistics' if stats else ''}. Epochs are counted from 0."]
    if curves:
        parts.append(f"![training curves]({curves})")
    parts += ["## Result", "\n".join(_result_lines(history))]
    parts += ["## Configuration", *_config_section(config)]
    parts += ["## Loss per epoch", _loss_table(history)]
    parts += ["## Validation mAP per epoch (%)",
              _map_table(val) if val else "No epoch has been validated yet."]
    parts += ["## Final mAP per tIoU (%)",
              _final_table(val[-1]) if val else "No epoch has been validated yet."]
    parts += ["## Key statistics", _key_stats(history, stats)]
    return "\n\n".join(parts) + "\n"


def write_summary(history: list[dict[str, Any]], config: Mapping[str, Any] | None, stats: Mapping[str, Any] | None,
                  out_md: str | Path, curves: str | None = None) -> Path:
    """Write TRAINING_SUMMARY.md atomically; `curves` is an image path to embed, relative to it."""
    return atomic_write_text(out_md, render_summary(history, config, stats, curves))


def write_reports(history: list[dict[str, Any]], config: Mapping[str, Any] | None, stats: Mapping[str, Any] | None,
                  out_dir: str | Path) -> dict[str, Path]:
    """Curves and summary into `out_dir`; returns {"curves": png path, "summary": md path}."""
    folder = RunFolder(Path(out_dir))
    config = _as_dict(config)
    thresholds = ((config or {}).get("evaluation") or {}).get("tiou_thresholds")
    history = check_history(history, tiou_thresholds=thresholds)
    name = (stats or {}).get("run_name") or (config or {}).get("name")
    return {
        "curves": plot_training_curves(history, folder.curves, title=name),
        "summary": write_summary(history, config, stats, folder.summary, curves=folder.curves.name),
    }


# ---------------------------------------------------------------- reading a run directory


def _read_json(path: Path) -> Any:
    try:
        return read_json(path)
    except RunFolderError as exc:
        raise ReportError(str(exc)) from None


def load_run(run_dir: str | Path) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Read history.json, config.yaml and the optional stats.json of a run directory."""
    folder = RunFolder(Path(run_dir))
    if not folder.path.is_dir():
        raise ReportError(f"run directory {folder.path} does not exist")
    history_file = folder.history
    if not history_file.is_file():
        raise ReportError(f"{history_file}: not found (the training loop writes it after every epoch)")
    history = check_history(_read_json(history_file), source=str(history_file))
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
        stats = _read_json(stats_file)
        if not isinstance(stats, dict):
            raise ReportError(f"{stats_file}: expected a JSON object of run facts, got {type(stats).__name__}")
    return history, config, stats


