"""training_curves.png: losses, validation mAP and the input pipeline's pace per epoch, from the history alone.

The third panel is there because the input, not the GPU, usually sets a run's pace: clips/s and the
share of step time spent waiting for data show it epoch by epoch (decode actors too few or too slow:
the wait rises and clips/s falls; a frame store or more actors: the reverse)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING, Any

from adatad.atomic import atomic_write_bytes
from adatad.reports.history import check_history, tious, validated
from adatad.reports.markdown import pct

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGSIZE = (17.0, 4.5)  # inches; the PNG is FIGSIZE * DPI pixels
DPI = 100



def build_figure(history: list[dict[str, Any]], title: str | None = None) -> Figure:
    """Three panels against epoch: training losses; validation mAP (percent, per tIoU and average);
    clips/s and data wait (percent of step time)."""
    # Figure + Agg canvas directly (no pyplot): no global state, no display backend needed.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    history = check_history(history)
    fig = Figure(figsize=FIGSIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_map, ax_pace = fig.subplots(1, 3)
    epochs = [row["epoch"] for row in history]
    few = len(epochs) <= 40  # markers help read short runs; on long runs they clutter
    styles = (("loss", "total", "o-", 2.2), ("cls_loss", "classification", "s--", 1.4),
              ("reg_loss", "regression", "^:", 1.4))
    for key, label, fmt, width in styles:
        ax_loss.plot(epochs, [row[key] for row in history], fmt if few else fmt.strip("os^"), lw=width,
                     ms=4, label=label)
    ax_loss.set(title="Training loss", xlabel="epoch", ylabel="loss (mean over steps)")
    ax_loss.set_ylim(bottom=0)

    val = validated(history)
    map_title = "Validation mAP"
    if val:
        val_epochs = [row["epoch"] for row in val]
        for t in tious(val):
            ax_map.plot(val_epochs, [100 * row[f"mAP_{t}"] for row in val], ".-" if few else "-", lw=0.9,
                        ms=4, alpha=0.75, label=t)
        ax_map.plot(val_epochs, [100 * row["average_mAP"] for row in val], "o-", color="black", lw=2.2,
                    ms=5, label="average")
        # The final value goes into the title: an annotation next to the point collides with lines.
        map_title += f" (last: {pct(val[-1]['average_mAP'])} at epoch {val[-1]['epoch']})"
        # "best" ignores single-point lines, so with one validation pin the legend away from the point.
        ax_map.legend(title="tIoU", fontsize=8, title_fontsize=8, ncol=2, loc="best" if len(val) > 1 else "upper left")
    else:
        ax_map.text(0.5, 0.5, "no validation yet", transform=ax_map.transAxes, ha="center", va="center",
                    fontsize=14, color="0.45")
        ax_map.set_yticks([])
    ax_map.set(title=map_title, xlabel="epoch", ylabel="mAP (%)")

    pace_lines = _pace_panel(ax_pace, history, "o-" if few else "-")

    # The mAP panel spans the validated epochs only: validation often starts late (epoch 49 of 60
    # in the target run) and its small changes would be squeezed into a sliver of the full range.
    for ax, xs in ((ax_loss, epochs), (ax_map, [row["epoch"] for row in val] or epochs), (ax_pace, epochs)):
        lo, hi = min(xs), max(xs)
        pad = max(0.5, 0.03 * (hi - lo))
        ax.set_xlim(lo - pad, hi + pad)
        if lo == hi:  # MaxNLocator falls back to fractional ticks on a range below one epoch
            ax.set_xticks([lo])
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    ax_loss.legend(fontsize=9, loc="best")
    ax_pace.legend(pace_lines, [line.get_label() for line in pace_lines], fontsize=9, loc="best")
    if title:
        fig.suptitle(title)
    return fig


def _pace_panel(ax, history: list[dict[str, Any]], fmt: str) -> list:
    """clips/s on the left axis, data wait (% of step time) on a twin right axis; returns both lines."""
    epochs = [row["epoch"] for row in history]
    (speed,) = ax.plot(epochs, [row["clips_per_s"] for row in history], fmt, color="tab:blue", lw=1.8, ms=4,
                       label="clips/s")
    ax.set(title="Input pace", xlabel="epoch", ylabel="clips/s")
    ax.set_ylim(bottom=0)
    wait_ax = ax.twinx()
    (wait,) = wait_ax.plot(epochs, [100 * row["data_wait_frac"] for row in history], fmt.replace("o", "s"),
                           color="tab:red", lw=1.4, ms=4, label="data wait (%)")
    wait_ax.set_ylabel("waiting for data (% of step time)")
    wait_ax.set_ylim(0, 100)
    return [speed, wait]


def plot_training_curves(history: list[dict[str, Any]], out_png: str | Path, title: str | None = None) -> Path:
    """Write `training_curves.png` atomically (render into memory, then temp file + rename)."""
    fig = build_figure(history, title)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)
    return atomic_write_bytes(out_png, buf.getvalue())
