"""Every weight file of the project is read and checked here.

Five readers (VideoMAE files, this project's checkpoints, OpenTAD's detectors, training resume and
the rebuilt detector) once had their own `torch.load`, EMA unwrap and key checks, with three error
types. Now they share:
- `read_torch_file`: the project's only `torch.load`, always `weights_only=True`, after a format check
  (torch.save's zip, or the plain pickle of torch < 1.6) so a text file or a truncated download
  never reaches the unpickler;
- `WeightsError`: the one error type, a one-line message that names the path;
- `unwrap_ema`: torch AveragedModel's state dict -> the model's keys;
- `describe_misfit` / `cast_like` / `load_weights`: the one report of missing, unexpected, reshaped
  and retyped keys, and strict loading with it.
The key converters of the foreign layouts sit beside this module (`videomae_keys`, `opentad_keys`).
"""

from __future__ import annotations

import io
import os
import pickle
import re
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adatad.locations import ObjectPath, as_path

EMA_PREFIX = "module."  # torch AveragedModel's state dict: module.<model key> + n_averaged
NOT_A_ZIP = "not a zip archive: truncated, corrupt or another format"
MISSING = "file does not exist"

Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]  # key -> (shape, dtype) of a model's state dict


class WeightsError(ValueError):
    """A weights file that cannot be used (one line, naming the path).

    `reason` is the message without the path, for callers that frame it in their own words
    (`read_torch_file`'s failures); otherwise it is the whole message.
    """

    def __init__(self, message: str, reason: str | None = None) -> None:
        super().__init__(message)
        self.reason = message if reason is None else reason

    def __reduce__(self) -> tuple:  # keeps `reason` when pickled (Ray hands errors between processes)
        return type(self), (str(self), self.reason)


def read_torch_file(path: str | os.PathLike) -> Any:
    """`torch.load(path, weights_only=True)` on the CPU with one-line `WeightsError`s.

    The reason of a failure (`WeightsError.reason`) is `MISSING`, `NOT_A_ZIP`, or the one
    informative line of torch's error (`weights_only refused it: ...` or `<ExceptionType>: ...`).
    """
    path = as_path(path)
    try:
        if not path.is_file():
            raise WeightsError(f"{path}: {MISSING}", MISSING)
        # A file at a URI is read whole into memory (torch.load seeks all over it), then parsed as a local one.
        source = io.BytesIO(path.read_bytes()) if isinstance(path, ObjectPath) else path
    except OSError as exc:  # an object store that refuses the credentials or cannot be reached
        raise WeightsError(f"{path}: cannot read ({exc})", str(exc)) from None
    if not zipfile.is_zipfile(source) and not _legacy_torch_pickle(source):  # refused before any unpickling
        raise WeightsError(f"{path}: not a torch.save file ({NOT_A_ZIP})", NOT_A_ZIP)
    if isinstance(source, io.BytesIO):
        source.seek(0)  # is_zipfile left it at the end
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not usable here"
        reason = _reason(exc)
        raise WeightsError(f"{path}: cannot be read as a weights-only torch file ({reason})", reason) from None


# torch.save's legacy (torch < 1.6) files open with the pickled magic number 0x1950a86a20f9469cfc6c.
_LEGACY_MAGIC = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)[:-1]


def _legacy_torch_pickle(source: Path | io.BytesIO) -> bool:
    """A torch.save file of torch < 1.6, which some published backbones still are (weights_only
    reads those safely too); any other pickle is refused before unpickling."""
    if isinstance(source, io.BytesIO):
        source.seek(0)
        head = source.read(len(_LEGACY_MAGIC))
        source.seek(0)
        return head == _LEGACY_MAGIC
    with open(source, "rb") as fh:
        return fh.read(len(_LEGACY_MAGIC)) == _LEGACY_MAGIC


def _reason(exc: Exception) -> str:
    """The one informative line of a torch.load failure (weights_only's is buried in advice)."""
    text = str(exc)
    refused = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
    if refused:
        return f"weights_only refused it: {refused.group(1)}"
    first = re.sub(r"\x1b\[[0-9;]*m", "", (text.strip().splitlines() or [""])[0])
    return f"{type(exc).__name__}: {first}"


def unwrap_ema(ema_state: Mapping[str, Any]) -> dict[str, Any]:
    """torch AveragedModel's state dict (`module.<key>` and `n_averaged`) -> the model's own keys."""
    return {k.removeprefix(EMA_PREFIX): v for k, v in ema_state.items() if k.startswith(EMA_PREFIX)}


def shapes_of(model: nn.Module) -> Shapes:
    """The reference `describe_misfit` checks against: the model's state dict keys, shapes and dtypes."""
    return {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}


def load_weights(model: nn.Module, weights: Mapping[str, Tensor], source: str,
                 misfit: str = "does not fit this model") -> None:
    """`model.load_state_dict(weights, strict=True)` with one-line errors (`<source>: <misfit>: <what>`)
    and dtypes cast to the model's."""
    reference = shapes_of(model)
    problem = describe_misfit(reference, weights)
    if problem:
        raise WeightsError(f"{source}: {misfit}: {problem}")
    model.load_state_dict(cast_like(reference, weights), strict=True)


def describe_misfit(reference: Shapes, weights: Mapping[str, Tensor], unexpected: Sequence[str] = (),
                    sources: Mapping[str, str] | None = None) -> str:
    """Empty when `weights` has exactly the reference's keys, shapes and usable dtypes; else one line
    naming the offending keys (the first few of each kind, and how many).

    `unexpected`: extra file keys found by the caller (e.g. ones no rename rule knows); `sources`
    names the file key of each of our keys, so problems point into the file.
    """
    sources = sources or {}
    missing = [k for k in reference if k not in weights]
    extra = list(unexpected) + [sources.get(k, k) for k in weights if k not in reference]
    known = [(k, v) for k, v in weights.items() if k in reference and isinstance(v, Tensor)]
    not_tensors = [sources.get(k, k) for k, v in weights.items() if k in reference and not isinstance(v, Tensor)]
    shaped = [f"{sources.get(k, k)}: file {list(v.shape)} vs model {list(reference[k][0])}"
              for k, v in known if tuple(v.shape) != reference[k][0]]
    typed = [f"{sources.get(k, k)}: file {v.dtype} vs model {reference[k][1]}"
             for k, v in known if not _castable(v.dtype, reference[k][1])]
    parts = [f"{len(keys)} {what} {key_listing(keys)}" for what, keys in (
        ("missing", missing), ("unexpected", extra), ("of another shape", shaped), ("of another dtype", typed),
        ("not tensors", not_tensors)) if keys]
    return "; ".join(parts)


def cast_like(reference: Shapes, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Weights in the reference's order and dtypes (e.g. OpenTAD's int64 EMA loss_normalizer -> float32)."""
    return {k: weights[k] if weights[k].dtype == dtype else weights[k].to(dtype)
            for k, (_, dtype) in reference.items()}


def key_listing(keys: Sequence[str], limit: int = 4) -> str:
    """`[a, b, c, d] (+N more)`: the first few keys of a long list, and how many were left out."""
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


def _castable(src: torch.dtype, dst: torch.dtype) -> bool:
    """Floats take any real number type (an integer count such as OpenTAD's EMA loss_normalizer);
    anything else must match exactly."""
    if dst.is_floating_point:
        return src.is_floating_point or (src != torch.bool and not src.is_complex)
    return src == dst
