"""The settings comparison across runs: the target run's "32 GB vs 64 GB" table, from run records.

Each setting (batch size, decode workers, prefetch, validation batch and workers, and any other
config value that differs) is a row; each run is a column; then the measured rows (clips/s, time
per epoch, peak memory, final average mAP) and a ratio column per run against the first. The runs'
params and per-epoch metrics come from MLflow (`pipelines/tracking/compare_runs.py` reads them).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from adatad.reports.markdown import table

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
    history: dict[str, list[float]]  # metric -> values ordered by epoch; mAP in percent


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
    Measure("final average mAP", "average_mAP", lambda v: v[-1], lambda v: f"{v:.2f} %"),
)


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
             "", table(header, comparison_table(runs))]
    lines += ["", "Measured rows come from each run's per-epoch MLflow metrics (clips_per_s, epoch_time_s, "
              "peak_memory_mb, average_mAP); ratios are each run over the first."]
    return "\n".join(lines) + "\n"
