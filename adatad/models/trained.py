"""Read any trained model file: this project's checkpoints and OpenTAD's published AdaTAD detectors.

One entry point (`read_trained`) for everything that uses trained weights: detection, testing and
training's `model.init_from`. It accepts
- this project's `checkpoint.pt`, a Ray checkpoint folder holding one, or a run folder (its latest
  `checkpoint_*` folder); these carry their own config and class names;
- an OpenTAD `.pth` (`adatad.models.opentad`), which carries neither: the caller's config gives the
  architecture and the class names (its `data.class_map_file`).
Every file is checked against a model built from its config -- every key present, none extra,
every shape equal -- before any weight is used, and problems are one line naming the path.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adatad.config import WEIGHTS_FROM_TRAINED_FILE, Config, config_from_dict, deep_merge
from adatad.data.annotations import AnnotationError, load_class_names
from adatad.models.build import build_model
from adatad.models.opentad import (
    WEIGHT_ENTRIES,
    OpenTADCheckpointError,
    check_pos_embed,
    convert_opentad_state_dict,
    is_opentad_checkpoint,
    select_opentad_weights,
)

CHECKPOINT_FILE = "checkpoint.pt"  # this project's checkpoint inside a Ray checkpoint folder
RUN_CHECKPOINT_GLOB = "checkpoint_*"  # Ray's checkpoint folders in a run folder; names sort by time
EMA_PREFIX = "module."  # torch AveragedModel's state dict: module.<model key> + n_averaged

Shapes = dict[str, tuple[tuple[int, ...], torch.dtype]]
_REFERENCES: dict[str, tuple[Shapes, Tensor]] = {}  # `_reference` cache, by architecture


class TrainedWeightsError(ValueError):
    """A trained model file that cannot be used (one line, naming the path)."""


@dataclass
class TrainedModel:
    path: Path     # the file actually read
    kind: str      # "adatad" or "opentad"
    weights: str   # "ema" or "model": which weights were taken
    state: dict[str, Any]  # {"model": state dict in our names, "ema": None, "config": Config.to_dict(),
    #                          "class_names": list[str]} -- what `model_from_checkpoint` takes


def resolve_trained_path(path: str | os.PathLike) -> Path:
    """A file as given; a folder with `checkpoint.pt` -> that file; a run folder -> its latest checkpoint's."""
    path = Path(path)
    if path.is_dir():
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        found = sorted(p for p in path.glob(RUN_CHECKPOINT_GLOB) if (p / CHECKPOINT_FILE).is_file())
        if found:
            return found[-1] / CHECKPOINT_FILE
        raise TrainedWeightsError(f"{path}: neither {CHECKPOINT_FILE} nor {RUN_CHECKPOINT_GLOB} folders inside")
    if not path.is_file():
        raise TrainedWeightsError(f"{path}: trained model file does not exist")
    return path


def read_trained(path: str | os.PathLike, config: Config | None = None, use_ema: bool = True) -> TrainedModel:
    """Read and check a trained model file (see the module docstring); nothing is loaded into a model.

    use_ema: take the EMA weights (what validation and OpenTAD evaluate) when the file has them,
    else the plain weights; use_ema=False takes the plain weights (an error where a file has none).
    `config` gives the architecture of an OpenTAD file and is required for one; this project's
    files describe themselves, and `config` is ignored for them.
    """
    file = resolve_trained_path(path)
    raw = _load_torch_file(file)
    if isinstance(raw, Mapping) and "model" in raw and "config" in raw:
        return _read_project_checkpoint(file, raw, use_ema)
    if is_opentad_checkpoint(raw):
        if config is None:
            raise TrainedWeightsError(f"{file}: an OpenTAD checkpoint carries no config; pass the config that "
                                      "describes its architecture (e.g. configs/thumos_videomae_s_768x1_160_adapter.yaml)")
        return _read_opentad_checkpoint(file, raw, config, use_ema)
    keys = sorted(str(k) for k in raw)[:6] if isinstance(raw, Mapping) else type(raw).__name__
    raise TrainedWeightsError(f"{file}: neither an adatad checkpoint (keys 'model', 'config') nor an OpenTAD one "
                              f"(keys 'state_dict_ema' / 'state_dict'); found {keys}")


def load_weights(model: nn.Module, weights: Mapping[str, Tensor], source: str) -> None:
    """`model.load_state_dict(weights, strict=True)` with one-line errors and dtypes cast to the model's."""
    own = model.state_dict()
    reference = {k: (tuple(v.shape), v.dtype) for k, v in own.items()}
    problem = describe_misfit(reference, weights)
    if problem:
        raise TrainedWeightsError(f"{source}: does not fit this model: {problem}")
    model.load_state_dict(cast_like(reference, weights), strict=True)


# ---------------------------------------------------------------- checks shared by both kinds


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
    parts = [f"{len(keys)} {what} {_listing(keys)}" for what, keys in (
        ("missing", missing), ("unexpected", extra), ("of another shape", shaped), ("of another dtype", typed),
        ("not tensors", not_tensors)) if keys]
    return "; ".join(parts)


def cast_like(reference: Shapes, weights: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Weights in the reference's order and dtypes (e.g. OpenTAD's int64 EMA loss_normalizer -> float32)."""
    return {k: weights[k] if weights[k].dtype == dtype else weights[k].to(dtype)
            for k, (_, dtype) in reference.items()}


def _castable(src: torch.dtype, dst: torch.dtype) -> bool:
    """Floats take any real number type (an integer count such as OpenTAD's EMA loss_normalizer);
    anything else must match exactly."""
    if dst.is_floating_point:
        return src.is_floating_point or (src != torch.bool and not src.is_complex)
    return src == dst


def _listing(keys: Sequence[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return "[" + ", ".join(keys[:limit]) + "]" + more


# ---------------------------------------------------------------- the two kinds of file


def _load_torch_file(path: Path) -> Any:
    """torch.load(weights_only=True) with one-line errors; torch.save's zip format is checked first."""
    if not zipfile.is_zipfile(path):
        raise TrainedWeightsError(f"{path}: not a torch.save file (not a zip archive: truncated, corrupt or "
                                  "another format)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means "not usable here"
        raise TrainedWeightsError(f"{path}: cannot be read as a weights-only torch file ({_reason(exc)})") from None


def _reason(exc: Exception) -> str:
    """The one informative line of a torch.load failure (weights_only's is buried in advice)."""
    text = str(exc)
    refused = re.search(r"WeightsUnpickler error: (.*?\.)(?:\s|$)", text)
    if refused:
        return f"weights_only refused it: {refused.group(1)}"
    first = re.sub(r"\x1b\[[0-9;]*m", "", (text.strip().splitlines() or [""])[0])
    return f"{type(exc).__name__}: {first}"


def _read_project_checkpoint(path: Path, raw: Mapping[str, Any], use_ema: bool) -> TrainedModel:
    # As `model_from_checkpoint` does: the file holds every weight, so where the run's VideoMAE
    # weights came from does not matter (and need not exist here).
    try:
        cfg = config_from_dict(deep_merge(raw["config"], WEIGHTS_FROM_TRAINED_FILE))
    except (TypeError, ValueError, AttributeError) as exc:  # ConfigError is a ValueError
        raise TrainedWeightsError(f"{path}: its config is not valid here ({exc})") from None
    weights, which = raw["model"], "model"
    if use_ema and isinstance(raw.get("ema"), Mapping) and raw["ema"]:
        weights = {k.removeprefix(EMA_PREFIX): v for k, v in raw["ema"].items() if k.startswith(EMA_PREFIX)}
        which = "ema"
    if not isinstance(weights, Mapping):
        raise TrainedWeightsError(f"{path}: 'model' is a {type(weights).__name__}, expected a state dict")
    reference, _ = _reference(cfg)
    problem = describe_misfit(reference, weights)
    if problem:
        raise TrainedWeightsError(f"{path}: {which} weights do not fit the model its config describes: {problem}")
    state = {"model": cast_like(reference, weights), "ema": None, "config": dict(raw["config"]),
             "class_names": list(raw.get("class_names") or [])}
    return TrainedModel(path=path, kind="adatad", weights=which, state=state)


def _read_opentad_checkpoint(path: Path, raw: Mapping[str, Any], cfg: Config, use_ema: bool) -> TrainedModel:
    try:
        state, which = select_opentad_weights(raw, use_ema)
        conversion = convert_opentad_state_dict(state)
        reference, pos_table = _reference(cfg)
        problem = describe_misfit(reference, conversion.weights, conversion.unmapped, conversion.sources)
        if problem:
            raise OpenTADCheckpointError(f"OpenTAD '{WEIGHT_ENTRIES[which]}' does not fit the model of config "
                                         f"'{cfg.name}': {problem}")
        check_pos_embed(conversion.pos_embed, pos_table)
    except OpenTADCheckpointError as exc:
        raise TrainedWeightsError(f"{path}: {exc}") from None
    state_out = {"model": cast_like(reference, conversion.weights), "ema": None, "config": cfg.to_dict(),
                 "class_names": _config_class_names(cfg, path)}
    return TrainedModel(path=path, kind="opentad", weights=which, state=state_out)


def _config_class_names(cfg: Config, path: Path) -> list[str]:
    """The names of `data.class_map_file` when that file exists here (its line order is the model's
    class index order, as OpenTAD's category_idx.txt), else [] -- the caller then finds them elsewhere."""
    if not cfg.data.class_map_file:
        return []
    class_map = cfg.resolve_path(cfg.data.class_map_file)
    if not Path(class_map).is_file():
        return []
    try:
        names = load_class_names("", class_map)
    except AnnotationError as exc:
        raise TrainedWeightsError(f"{path}: data.class_map_file of the config: {exc}") from None
    if len(names) != cfg.model.head.num_classes:
        raise TrainedWeightsError(f"{path}: data.class_map_file {class_map} lists {len(names)} classes, but "
                                  f"model.head.num_classes is {cfg.model.head.num_classes}")
    return names


def _reference(cfg: Config) -> tuple[Shapes, Tensor]:
    """Keys, shapes and dtypes of the model `cfg` builds, and its ViT's sinusoid table.

    Building the full model takes seconds and ~200 MB, so only these small facts are kept, once
    per architecture (the model group and the window length: what `build_model` reads). The random
    init runs on a forked RNG: reading a file must not shift the caller's random stream.
    """
    model_group = cfg.to_dict()["model"]
    model_group["backbone"].update(checkpoint=None, allow_random_init=True)  # where weights come from
    model_group["init_from"] = None
    key = json.dumps({"model": model_group, "window_size": cfg.data.window_size}, sort_keys=True)
    if key not in _REFERENCES:
        raw = cfg.to_dict()
        raw["model"] = model_group
        with torch.random.fork_rng(devices=[]):
            model = build_model(config_from_dict(raw))
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
        while len(_REFERENCES) >= 4:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = (shapes, model.encoder.backbone.pos_table.clone())
    return _REFERENCES[key]
