"""The experiment YAML that `pipelines/prepare_dataset.py` writes for a prepared data set.

It composes a base recipe through `_base_` and sets only what the data decides: paths, class
count, names, and what the videos force:

- `data.max_segments`: a training window can hold every segment of its video, and a window with
  more segments than `max_segments` is an error, so it is raised to the most segments in a video;
- `data.frame_stride` (the recipe's snippet stride), by :func:`advise_frame_stride`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REFERENCE_FPS = 30.0  # THUMOS-14's frame rate, which the recipes' data.frame_stride is set for
MIN_ACTION_POSITIONS = 8  # the median action should span at least this many window positions


@dataclass(frozen=True)
class StrideAdvice:
    stride: int
    reasons: tuple[str, ...]  # why it differs from the base recipe's; empty = the base's value stands


def advise_frame_stride(fps: Sequence[float], action_seconds: Sequence[float], base_stride: int,
                        window_size: int) -> StrideAdvice:
    """The snippet stride for these videos, and why it differs from `base_stride` (set for 30 fps).

    1. Time per position as in the recipe: stride = round(base_stride x median fps / 30).
    2. Long actions: the window (window_size x stride frames) should span at least twice the
       90th-percentile action, or most long actions are cut at window edges; the stride grows.
    3. Short actions: the median action should cover >= MIN_ACTION_POSITIONS positions (the
       head's finest level regresses 0-4 positions); the stride shrinks, and this rule wins.
    """
    fps_median = float(np.median(fps))
    stride = max(1, round(base_stride * fps_median / REFERENCE_FPS))
    reasons = []
    if stride != base_stride:
        reasons.append(f"the videos run at {fps_median:g} fps (median; the recipe's stride {base_stride} is for "
                       f"{REFERENCE_FPS:g} fps): stride {stride} keeps about {base_stride / REFERENCE_FPS:.3f} s "
                       "per position")
    if len(action_seconds):
        long = float(np.percentile(action_seconds, 90))
        needed = math.ceil(2 * long * fps_median / window_size)
        if needed > stride:
            stride = needed
            reasons.append(f"90% of the actions last up to {long:.1f} s: stride {stride} makes a window of "
                           f"{window_size} positions span {window_size * stride / fps_median:.0f} s, twice that")
        short = float(np.median(action_seconds))
        most = max(1, math.floor(short * fps_median / MIN_ACTION_POSITIONS))
        if most < stride:
            stride = most
            reasons.append(f"the median action lasts {short:.2f} s: stride {stride} gives it "
                           f"{short * fps_median / stride:.1f} positions (>= {MIN_ACTION_POSITIONS} wanted)")
    return StrideAdvice(stride, tuple(reasons))


def _yaml(value: str | int) -> str:
    return json.dumps(value)  # a JSON scalar is a YAML scalar; quoting keeps paths with ':' or '#' intact


def config_text(*, name: str, base: str, header: Sequence[str], annotation_file: str, video_dir: str,
                class_map_file: str, video_ext: str, num_classes: int, train_subset: str, test_subset: str,
                experiment_name: str, frame_stride: StrideAdvice | None = None,
                max_segments: int | None = None) -> str:
    """The YAML text; `header` lines become comments at the top, None values keep the base's setting."""
    lines = [*(f"# {h}" if h else "#" for h in header), f"_base_: {_yaml(base)}", f"name: {_yaml(name)}", "",
             "data:",
             f"  annotation_file: {_yaml(annotation_file)}",
             f"  video_dir: {_yaml(video_dir)}",
             f"  class_map_file: {_yaml(class_map_file)}",
             f"  video_ext: {_yaml(video_ext)}",
             f"  train_subset: {_yaml(train_subset)}",
             f"  test_subset: {_yaml(test_subset)}"]
    if frame_stride is not None:
        lines += [f"  # {reason}" for reason in frame_stride.reasons]
        lines.append(f"  frame_stride: {frame_stride.stride}")
    if max_segments is not None:
        lines += ["  # a video has this many segments; a training window may hold them all",
                  f"  max_segments: {max_segments}"]
    lines += ["", "model:", "  head:", f"    num_classes: {num_classes}", "",
              "tracking:", f"  experiment_name: {_yaml(experiment_name)}", ""]
    return "\n".join(lines)
