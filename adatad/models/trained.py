"""Read any trained model file: this project's checkpoints and OpenTAD's published AdaTAD detectors.

One entry point (`read_trained`) for everything that uses trained weights: detection, testing and
training's `model.init_from`. It accepts
- this project's `checkpoint.pt`, a Ray checkpoint folder holding one, or a run folder (its latest
  `checkpoint_*` folder); these carry their own config and class names;
- an OpenTAD `.pth` (`adatad.models.opentad_keys`), which carries neither: the caller's config gives the
  architecture, and `adatad.data.class_names` finds its class names from that config.
Every file is checked against a model built from its config -- every key present, none extra,
every shape equal -- before any weight is used, and problems are one line naming the path. Files are
read, unwrapped and checked through `adatad.models.weights`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adatad.config import WEIGHTS_FROM_TRAINED_FILE, Config, config_from_dict, deep_merge
from adatad.locations import as_path
from adatad.models.build import build_model, position_table_length
from adatad.models.checkpoint_ema import chosen_weights
from adatad.models.opentad_keys import (
    WEIGHT_ENTRIES,
    check_abs_pe,
    check_pos_embed,
    convert_opentad_state_dict,
    is_opentad_checkpoint,
    select_opentad_weights,
)
from adatad.models.weights import (
    MISSING,
    Shapes,
    WeightsError,
    cast_like,
    describe_misfit,
    read_torch_file,
    shapes_of,
)
from adatad.run_folder import CHECKPOINT_DIR_GLOB, CHECKPOINT_FILE, RunFolder

_REFERENCES: dict[str, tuple[Shapes, Tensor]] = {}  # `_reference` cache, by architecture


@dataclass
class TrainedModel:
    path: Path     # the file actually read
    kind: str      # "adatad" or "opentad"
    weights: str   # "ema" or "model": which weights were taken
    state: dict[str, Any]  # {"model": state dict in our names, "ema": None, "config": Config.to_dict(),
    #                          "class_names": list[str]} -- what `model_from_checkpoint` takes


def resolve_trained_path(path: str | os.PathLike) -> Path:
    """A file as given; a folder with `checkpoint.pt` -> that file; a run folder -> its latest checkpoint's.
    Any of them may be at a URI (`adatad.locations`)."""
    path = as_path(path)
    try:
        folder = path.is_dir()
    except OSError as exc:  # an object store that refuses the credentials or cannot be reached
        raise WeightsError(f"{path}: cannot read ({exc})", str(exc)) from None
    if folder:
        if (path / CHECKPOINT_FILE).is_file():
            return path / CHECKPOINT_FILE
        latest = RunFolder(path).latest_checkpoint()
        if latest is not None:
            return latest
        raise WeightsError(f"{path}: neither {CHECKPOINT_FILE} nor {CHECKPOINT_DIR_GLOB} folders inside")
    return path  # a missing file: `read_torch_file` says so


def read_trained(path: str | os.PathLike, config: Config | None = None, use_ema: bool = True) -> TrainedModel:
    """Read and check a trained model file (see the module docstring); nothing is loaded into a model.

    use_ema: take the EMA weights (what validation and OpenTAD evaluate) when the file has them,
    else the plain weights; use_ema=False takes the plain weights (an error where a file has none).
    `config` gives the architecture of an OpenTAD file and is required for one; this project's
    files describe themselves, and `config` is ignored for them.
    """
    file = resolve_trained_path(path)
    try:
        raw = read_torch_file(file)
    except WeightsError as exc:
        if exc.reason == MISSING:
            raise WeightsError(f"{file}: trained model file does not exist", MISSING) from None
        raise
    if is_project_checkpoint(raw):
        return _read_project_checkpoint(file, raw, use_ema)
    if is_opentad_checkpoint(raw):
        if config is None:
            raise WeightsError(f"{file}: an OpenTAD checkpoint carries no config; pass the config that "
                               "describes its architecture (e.g. configs/thumos_videomae_s_768x1_160_adapter.yaml)")
        return _read_opentad_checkpoint(file, raw, config, use_ema)
    keys = sorted(str(k) for k in raw)[:6] if isinstance(raw, Mapping) else type(raw).__name__
    raise WeightsError(f"{file}: neither an adatad checkpoint (keys 'model', 'config') nor an OpenTAD one "
                       f"(keys 'state_dict_ema' / 'state_dict'); found {keys}")


def is_project_checkpoint(obj: object) -> bool:
    """What `adatad.engine.state.save_checkpoint` writes: a mapping with 'model' and 'config'."""
    return isinstance(obj, Mapping) and "model" in obj and "config" in obj


# ---------------------------------------------------------------- the two kinds of file


def _read_project_checkpoint(path: Path, raw: Mapping[str, Any], use_ema: bool) -> TrainedModel:
    # As `model_from_checkpoint` does: the file holds every weight, so where the run's VideoMAE
    # weights came from does not matter (and need not exist here).
    try:
        cfg = config_from_dict(deep_merge(raw["config"], WEIGHTS_FROM_TRAINED_FILE))
    except (TypeError, ValueError, AttributeError) as exc:  # ConfigError is a ValueError
        raise WeightsError(f"{path}: its config is not valid here ({exc})") from None
    weights, which = chosen_weights(raw, use_ema, str(path))  # frozen EMA entries are stored once, under 'model'
    reference, _ = _reference(cfg)
    problem = describe_misfit(reference, weights)
    if problem:
        raise WeightsError(f"{path}: {which} weights do not fit the model its config describes: {problem}")
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
            raise WeightsError(f"OpenTAD '{WEIGHT_ENTRIES[which]}' does not fit the model of config "
                               f"'{cfg.name}': {problem}")
        check_pos_embed(conversion.pos_embed, pos_table)
        h = cfg.model.head
        check_abs_pe(h.embed_dim, h.arch[2] + 1, h.num_classes, h.use_abs_pe, position_table_length(cfg))
    except WeightsError as exc:  # the OpenTAD checks do not know the path
        raise WeightsError(f"{path}: {exc}") from None
    state_out = {"model": cast_like(reference, conversion.weights), "ema": None, "config": cfg.to_dict(),
                 "class_names": []}  # its class map is the config's: adatad.data.class_names
    return TrainedModel(path=path, kind="opentad", weights=which, state=state_out)


def _reference(cfg: Config) -> tuple[Shapes, Tensor]:
    """Keys, shapes and dtypes of the model `cfg` builds, and its ViT's sinusoid table.

    The model is built on the meta device (no memory, no values: a VideoMAEv2-g detector would
    otherwise take 4.4 GB before the file's own 4.4 GB are used), and the table is computed from
    its formula. Only these small facts are kept, once per architecture (the model group and the
    window length: what `build_model` reads). The RNG is forked: reading a file must not shift the
    caller's random stream.
    """
    model_group = cfg.to_dict()["model"]
    model_group["backbone"].update(checkpoint=None, allow_random_init=True)  # where weights come from
    model_group["init_from"] = None
    key = json.dumps({"model": model_group, "window_size": cfg.data.window_size}, sort_keys=True)
    if key not in _REFERENCES:
        raw = cfg.to_dict()
        raw["model"] = model_group
        with torch.random.fork_rng(devices=[]):
            model = build_model(config_from_dict(raw), device="meta")
        shapes = shapes_of(model)
        while len(_REFERENCES) >= 4:
            _REFERENCES.pop(next(iter(_REFERENCES)))
        _REFERENCES[key] = (shapes, model.encoder.backbone.pretrain_table())
    return _REFERENCES[key]
