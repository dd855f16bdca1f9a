"""The settings a trained file owns, and the config a command runs a trained file with.

A trained model only works with the architecture and the input geometry it was trained with, so
`test.py` and `detect.py` take those from the file's own config, never from `--config` / `--set`
(which give the data, the runtime, inference settings and the like). An OpenTAD file has no config:
there `--config` describes the architecture too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from adatad.config import (
    WEIGHTS_FROM_TRAINED_FILE,
    Config,
    ConfigError,
    config_from_dict,
    deep_merge,
    load_config,
    parse_override,
)

# Key paths (a trailing dot: the whole group) whose value a trained file owns.
TRAINED_FILE_OWNS: tuple[str, ...] = ("model.backbone.", "model.head.", "data.window_size", "data.frame_stride",
                                      "data.frames_per_position", "data.sampling", "data.crop_size",
                                      "data.test_resize_short")


def owned_by_trained_file(key_path: str) -> bool:
    return any(key_path == k or (k.endswith(".") and (key_path.startswith(k) or key_path == k[:-1]))
               for k in TRAINED_FILE_OWNS)


def _owned_values(raw: dict[str, Any]) -> dict[str, Any]:
    """The owned part of a config dict, as a nested dict to merge."""
    out: dict[str, Any] = {}
    for key in TRAINED_FILE_OWNS:
        group, _, name = key.rstrip(".").partition(".")
        out.setdefault(group, {})[name] = raw[group][name]
    return out


def config_for_trained_file(own: dict[str, Any] | None, config_file: str | None, overrides: Sequence[str] = (),
                            profile: str | None = None) -> Config:
    """The config to run a trained file with.

    own: the file's own config (`Config.to_dict()`), None for an OpenTAD file. The base is
    `config_file` when given, else `own`; `overrides` (`--set`) apply to it but may not change a
    setting the file owns; then the owned settings are taken from `own`. Neither the VideoMAE file
    nor `model.init_from` is read afterwards: the trained file holds every weight.
    """
    if own is None:
        if config_file is None:
            raise ConfigError("an OpenTAD checkpoint has no config; pass --config "
                              "(e.g. configs/thumos_videomae_s_768x1_160_adapter.yaml)")
        raw = load_config(config_file, list(overrides), profile).to_dict()
        return config_from_dict(deep_merge(raw, WEIGHTS_FROM_TRAINED_FILE))
    for item in overrides:
        key = item.partition("=")[0].strip()
        if owned_by_trained_file(key):
            raise ConfigError(f"--set {key}: cannot change what the trained model owns (it was trained with the "
                              f"checkpoint's value); it owns {', '.join(TRAINED_FILE_OWNS)}")
    if config_file is not None:
        raw = load_config(config_file, list(overrides), profile).to_dict()
    else:
        raw = dict(own)
        for item in overrides:
            raw = deep_merge(raw, parse_override(item))
    return config_from_dict(deep_merge(deep_merge(raw, _owned_values(own)), WEIGHTS_FROM_TRAINED_FILE))
