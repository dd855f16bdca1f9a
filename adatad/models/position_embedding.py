"""Absolute position embedding of the ActionFormer projection (OpenTAD's `use_abs_pe`).

OpenTAD's Charades, ActivityNet and Ego4D detectors add a fixed sinusoid table to the features right
after the embedding convs. The table is built by the model, never saved (a non-persistent buffer):
a checkpoint does not say whether its model used one, so the config must (docs/recipe.md, section
"ActivityNet and Charades: model and post-processing").
Numerics as OpenTAD's: the table in float64, cast to float32, then divided by sqrt(C) in float32 (a
float32 formula differs by up to 1.4e-6 at 512 positions and 5.6e-6 at 2,048).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def sinusoid_position_table(length: int, channels: int) -> Tensor:
    """(1, C, T) float32 on the CPU: sin(t / 10000^(2i/C)) on channel 2i, cos on 2i + 1, / sqrt(C)."""
    if length < 1 or channels < 1:
        raise ValueError(f"sinusoid_position_table: length and channels must be >= 1, got {length}, {channels}")
    j = np.arange(channels)
    angle = np.arange(length)[:, None] / np.power(10000.0, 2 * (j // 2) / channels)[None, :]
    table = np.where(j % 2 == 0, np.sin(angle), np.cos(angle))  # float64 (T, C)
    return torch.from_numpy(table).float().T[None] / (channels**0.5)


def position_table_for(table: Tensor, length: int, training: bool) -> Tensor:
    """The table's first `length` positions (1, C, length), as OpenTAD uses it.

    Training: the input may not be longer than the table (OpenTAD asserts it). Test: an input at
    least as long as the table gets the table linearly resized to its length (align_corners=False;
    at equal length that is the identity), a shorter one the table's first positions.
    """
    max_len = table.shape[-1]
    if training and length > max_len:
        raise ValueError(f"the projection got {length} positions but its absolute position embedding has "
                         f"model.head.max_seq_len={max_len}: a training input may not be longer")
    if not training and length >= max_len:
        return F.interpolate(table, size=length, mode="linear", align_corners=False)
    return table[:, :, :length]
