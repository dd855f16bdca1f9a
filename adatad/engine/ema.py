"""Exponential moving average of the weights (decay 0.999, buffers included), used for validation."""

from __future__ import annotations

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """torch's AveragedModel with an EMA rule over parameters *and* buffers, like OpenTAD's ModelEma.

    The first `update_parameters` call copies the weights; each later one does
    ema = decay * ema + (1 - decay) * weights.
    """
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / AveragedModel wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model
