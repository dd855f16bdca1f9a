"""Exponential moving average of the weights (decay 0.999, buffers included), used for validation.

A frozen parameter's EMA is the parameter itself, exactly: torch's update is
`lerp(ema, w, 1 - decay)` = ema + (1 - decay) * (w - ema), and after the first update (a copy)
w - ema is 0 for a weight that never changes, so ema + 0 = ema for every finite value (-0.0 comes
back as +0.0, an equal number; tests/test_engine.py checks the lerp). The EMA therefore shares the
frozen parameters with the model instead of copying them: the frozen ViT is held once on the GPU
(4 GiB less for VideoMAEv2-g) and once in a checkpoint (`adatad.models.checkpoint_ema`).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn


def build_ema(model: torch.nn.Module, decay: float) -> AveragedModel:
    """torch's AveragedModel with an EMA rule over parameters *and* buffers, like OpenTAD's ModelEma.

    The first `update_parameters` call copies the weights; each later one does
    ema = decay * ema + (1 - decay) * weights. The frozen parameters (requires_grad False when the
    EMA is built) are the model's own tensors in the EMA, and the update leaves them alone.
    """
    ema = AveragedModel(model, multi_avg_fn=_skip_shared(get_ema_multi_avg_fn(decay)), use_buffers=True)
    share_frozen_parameters(unwrap(ema), unwrap(model))
    return ema


def frozen_parameter_names(model: torch.nn.Module) -> list[str]:
    """State-dict keys of the parameters no optimiser moves (the frozen ViT): their EMA is themselves."""
    return [name for name, p in unwrap(model).named_parameters() if not p.requires_grad]


def share_frozen_parameters(copy: torch.nn.Module, model: torch.nn.Module) -> int:
    """Put `model`'s frozen Parameter objects in place of `copy`'s (same names); returns how many.

    The copy's own tensors are released, so the memory is held once; module order and names stay.
    """
    names = frozen_parameter_names(model)
    params = dict(model.named_parameters())
    for name in names:
        owner, _, attr = name.rpartition(".")
        setattr(copy.get_submodule(owner), attr, params[name])
    return len(names)


MultiAvgFn = Callable[[list[Tensor], list[Tensor], Tensor], None]


def _skip_shared(update: MultiAvgFn) -> MultiAvgFn:
    """The EMA rule over the pairs that are not one tensor: a shared frozen parameter is left alone
    (lerp towards itself would change nothing, but would write into the model's weights)."""

    def update_distinct(ema_params: list[Tensor], model_params: list[Tensor], n_averaged: Tensor) -> None:
        pairs = [(e, m) for e, m in zip(ema_params, model_params, strict=True) if e.data_ptr() != m.data_ptr()]
        if pairs:
            update([e for e, _ in pairs], [m for _, m in pairs], n_averaged)

    return update_distinct


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP / AveragedModel wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model
