"""Timeline picture of one video's detections (and its ground truth when known).

Why a picture: a results json of thousands of scored segments says little at a glance; one row per
class on a time axis in seconds shows at once whether the detector fires where the actions are.
Inputs use the results-json entry layout (``{"segment": [s, e], "label": name, "score": x}``) so the
function plots a detection file or live results alike. Matplotlib's Figure + Agg canvas are used
directly (no pyplot: no global state, no display needed) and the PNG always has the pixel size
:func:`timeline_size` states, whatever the labels, so callers and tests can rely on it.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from adatad.atomic import atomic_write_bytes
from adatad.locations import as_path

DPI = 100
WIDTH_PX = 1200
ROW_PX = 44  # one class row (ground-truth lane + detection lane)
TOP_PX = 56  # title
BOTTOM_PX = 64  # time axis, its label and the score colour bar
LEFT_PX = 170  # class names
RIGHT_PX = 96  # colour bar
COLORMAP = "Blues"
COLOR_FLOOR = 0.3  # the weakest drawn score gets this point of the colormap, so it stays visible on white


def timeline_size(num_classes: int, width_px: int = WIDTH_PX) -> tuple[int, int]:
    """(width, height) in pixels of the PNG :func:`plot_timeline` writes for ``num_classes`` rows."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if width_px < LEFT_PX + RIGHT_PX + 100:
        raise ValueError(f"width_px must be >= {LEFT_PX + RIGHT_PX + 100}, got {width_px}")
    return width_px, TOP_PX + BOTTOM_PX + ROW_PX * num_classes


def _entries_by_class(entries: Sequence[Mapping], class_names: Sequence[str], what: str
                      ) -> dict[int, list[tuple[float, float, float]]]:
    """label name -> row index; (start, length, score) per entry; unknown labels are an error."""
    index = {name: i for i, name in enumerate(class_names)}
    rows: dict[int, list[tuple[float, float, float]]] = {}
    for i, entry in enumerate(entries):
        label = entry.get("label")
        if label not in index:
            raise ValueError(f"{what}[{i}]: label {label!r} is not one of the classes {list(class_names)}")
        start, end = (float(v) for v in entry["segment"])
        rows.setdefault(index[label], []).append((start, max(end - start, 0.0), float(entry.get("score", 1.0))))
    return rows


def render_timeline(
    video_id: str,
    duration: float,
    class_names: Sequence[str],
    detections: Sequence[Mapping],
    ground_truth: Sequence[Mapping] | None = None,
    score_threshold: float = 0.1,
    width_px: int = WIDTH_PX,
) -> bytes:
    """The timeline as PNG bytes.

    Each class row has a thin grey lane on top for the ground truth (when given) and a lane below
    with every detection scoring >= ``score_threshold``, coloured by score (colour bar on the right;
    higher scores drawn last, so on top).
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import ListedColormap, Normalize
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    if not (math.isfinite(duration) and duration > 0):
        raise ValueError(f"video {video_id!r}: duration must be a positive number of seconds, got {duration!r}")
    num = len(class_names)
    width, height = timeline_size(num, width_px)
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((LEFT_PX / width, BOTTOM_PX / height, 1 - (LEFT_PX + RIGHT_PX) / width,
                       1 - (TOP_PX + BOTTOM_PX) / height))
    # Light (weak) to dark (strong); the colormap's near-white start is cut off.
    cmap = ListedColormap(colormaps[COLORMAP](np.linspace(COLOR_FLOOR, 1.0, 256)))
    norm = Normalize(vmin=max(0.0, min(score_threshold, 0.99)), vmax=1.0)

    shown = [d for d in detections if float(d["score"]) >= score_threshold]
    det_rows = _entries_by_class(shown, class_names, "detections")
    gt_rows = _entries_by_class(ground_truth, class_names, "ground_truth") if ground_truth is not None else {}
    for row in range(num):
        y = num - 1 - row  # first class at the top
        if row % 2 == 0:
            ax.axhspan(y, y + 1, color="0.96", zorder=0, linewidth=0)
        if gt_rows.get(row):
            ax.broken_barh([(s, w) for s, w, _ in gt_rows[row]], (y + 0.62, 0.3), facecolors="0.35",
                           edgecolors="none", zorder=2)
        dets = sorted(det_rows.get(row, []), key=lambda item: item[2])
        if dets:
            ax.broken_barh([(s, w) for s, w, _ in dets], (y + 0.08, 0.48),
                           facecolors=[cmap(norm(score)) for _, _, score in dets],
                           edgecolors="none", zorder=3)

    ax.set_xlim(0.0, float(duration))
    ax.set_ylim(0, num)
    ax.set_yticks([num - 1 - i + 0.5 for i in range(num)], labels=list(class_names), fontsize=9)
    ax.tick_params(axis="y", length=0)
    ax.set_xlabel("time (s)")
    ax.grid(axis="x", color="0.85", linewidth=0.6, zorder=1)
    ax.set_axisbelow(True)
    extra = "" if ground_truth is None else f", {len(ground_truth)} ground-truth segments (grey, top lane)"
    ax.set_title(f"{video_id}: {duration:.2f} s, {len(shown)} detections with score >= {score_threshold:g}{extra}",
                 fontsize=10, loc="left")
    if ground_truth is not None:
        ax.legend(handles=[Patch(color="0.35", label="ground truth")], loc="upper right", fontsize=8,
                  bbox_to_anchor=(1.0, 1.0 + 30 / (height - TOP_PX - BOTTOM_PX)), frameon=False)
    cax = fig.add_axes(((width - RIGHT_PX + 24) / width, BOTTOM_PX / height, 14 / width,
                        1 - (TOP_PX + BOTTOM_PX) / height))
    fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), cax=cax, label="score")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI)  # no bbox_inches="tight": the size stays timeline_size
    return buf.getvalue()


def plot_timeline(
    path: str | os.PathLike,
    video_id: str,
    duration: float,
    class_names: Sequence[str],
    detections: Sequence[Mapping],
    ground_truth: Sequence[Mapping] | None = None,
    score_threshold: float = 0.1,
    width_px: int = WIDTH_PX,
) -> Path:
    """Write :func:`render_timeline` to ``path`` atomically; returns the path."""
    png = render_timeline(video_id, duration, class_names, detections, ground_truth, score_threshold, width_px)
    return atomic_write_bytes(path, png)


def plot_timelines(plot_dir: str | os.PathLike, records: Sequence, results: Mapping[str, Sequence[Mapping]],
                   class_names: Sequence[str], ground_truth: Mapping[str, Sequence[Mapping]] | None,
                   min_score: float) -> list[Path]:
    """One timeline PNG per video of `records` (`VideoRecord`s) that has results, named `<video id>.png`;
    ground-truth events of other classes than `class_names` are left out."""
    written = []
    for record in records:
        if record.video_id not in results:
            continue
        events = None if ground_truth is None else ground_truth.get(record.video_id)
        if events is not None:
            events = [e for e in events if e["label"] in class_names]
        written.append(plot_timeline(as_path(plot_dir) / f"{record.video_id}.png", record.video_id, record.duration,
                                     class_names, results[record.video_id], events, min_score))
    return written
