"""The snippet stride (`data.frame_stride`) a prepared data set's config should set, and why.

The recipes' stride is chosen for THUMOS (30 fps, its action lengths); other videos need another
one so that a window position keeps about the same time and the actions fit the window. Written as
comments into the config by :mod:`adatad.datasets.config_yaml` and printed as notes by `prepare`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

REFERENCE_FPS = 30.0  # THUMOS-14's frame rate, which the recipes' data.frame_stride is set for
MIN_ACTION_POSITIONS = 8  # the median action should span at least this many window positions


@dataclass(frozen=True)
class StrideAdvice:
    """The advised stride; its reasons become comments above `frame_stride` in the written config."""

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
