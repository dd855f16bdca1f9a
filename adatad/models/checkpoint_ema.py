"""The EMA in a training checkpoint: the frozen backbone is stored once, under 'model'.

The EMA of a weight that never changes is that weight (`adatad.engine.ema`), and the frozen ViT is
most of a big detector (VideoMAEv2-g: 1.01 of 1.08 B parameters), so writing it under both 'model'
and 'ema' doubled every checkpoint (8.6 GB per kept epoch for the g). `save_checkpoint` leaves those
entries out of 'ema' and lists them under `EMA_FROM_MODEL`; every reader asks `complete_ema` for the
whole EMA, which takes them back from 'model' (the same tensors, no copy). A checkpoint written
before this (a complete 'ema', no list) is read as it is. docs/recipe.md "Memory and checkpoints".
`chosen_weights` picks the weights every reader of a checkpoint dict uses (EMA or plain).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from torch import Tensor

from adatad.models.weights import EMA_PREFIX, WeightsError, key_listing, unwrap_ema

EMA_FROM_MODEL = "ema_from_model"  # checkpoint key: model keys whose EMA entry is the model's own


def leave_out_shared(ema_state: Mapping[str, Any], model_state: Mapping[str, Tensor],
                     candidates: Iterable[str]) -> tuple[dict[str, Any], list[str]]:
    """The EMA state dict (AveragedModel layout) without the `candidates` whose EMA value equals the
    model's, and the model keys left out.

    Equality is checked, not assumed, so a file can never hold an EMA that differs from what it
    restores; a candidate whose values differ simply stays in the EMA.
    """
    shared = [k for k in candidates
              if k in model_state and EMA_PREFIX + k in ema_state
              and _same_values(ema_state[EMA_PREFIX + k], model_state[k])]
    left_out = {EMA_PREFIX + k for k in shared}
    return {k: v for k, v in ema_state.items() if k not in left_out}, shared


def complete_ema(checkpoint: Mapping[str, Any], source: str) -> dict[str, Any] | None:
    """The checkpoint's whole EMA state dict (AveragedModel layout), or None when it has none.

    Entries listed under `EMA_FROM_MODEL` come back from 'model'; a listed key that 'model' lacks is
    a one-line WeightsError starting with `source` (the file, or what the caller calls it).
    """
    ema = checkpoint.get("ema")
    if not isinstance(ema, Mapping) or not ema:
        return None
    shared = list(checkpoint.get(EMA_FROM_MODEL) or [])
    if not shared:
        return dict(ema)
    model = checkpoint.get("model")
    model = model if isinstance(model, Mapping) else {}
    absent = [k for k in shared if k not in model]
    if absent:
        raise WeightsError(f"{source}: '{EMA_FROM_MODEL}' lists {len(absent)} keys that 'model' does not hold "
                           f"{key_listing(absent)}")
    return {**dict(ema), **{EMA_PREFIX + k: model[k] for k in shared}}


def _same_values(a: Any, b: Any) -> bool:
    if not (isinstance(a, Tensor) and isinstance(b, Tensor)) or a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.device == b.device and a.data_ptr() == b.data_ptr() and a.stride() == b.stride():
        return True  # the very same memory: the EMA shares the frozen parameters (`build_ema`)
    return bool(a.device == b.device and a.equal(b))


def chosen_weights(checkpoint: Mapping[str, Any], use_ema: bool, source: str) -> tuple[Mapping[str, Any], str]:
    """The weights a checkpoint dict is used with, and which they are ("ema" or "model"): the EMA when
    asked for and present (what validation used), else 'model'. Every reader of a checkpoint dict
    (`build.model_from_checkpoint`, `trained.read_trained`) chooses through here."""
    ema = complete_ema(checkpoint, source) if use_ema else None
    weights, which = (unwrap_ema(ema), "ema") if ema is not None else (checkpoint.get("model"), "model")
    if not isinstance(weights, Mapping):
        raise WeightsError(f"{source}: 'model' is a {type(weights).__name__}, expected a state dict")
    return weights, which
