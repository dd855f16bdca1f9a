"""VideoMAE checkpoint keys (original MCG-NJU layout, mmaction2 layout) -> `VideoMAEBackbone`'s keys.

Plain functions on state dicts, no model: `load_videomae_checkpoint` uses them for VideoMAE files
and `adatad.models.opentad_keys` for the ViT inside OpenTAD's detectors.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from torch import Tensor

_WRAPPERS = ("state_dict", "model", "module")
_PREFIXES = ("module.", "backbone.", "encoder.")  # DDP, mmaction2, VideoMAE pre-training encoder
# Top-level names this encoder never uses: pre-training decoder, classification head, final norms,
# the stored position table (we rebuild the sinusoid table), mmengine's preprocessor buffers.
_DROPPED_ROOTS = {"decoder", "encoder_to_decoder", "mask_token", "head", "cls_head", "fc_norm", "norm",
                  "pos_embed", "data_preprocessor"}
_RENAMES = (
    (re.compile(r"^patch_embed\.projection\."), "patch_embed.proj."),
    (re.compile(r"^(blocks\.\d+\.mlp)\.layers\.0\.0\."), r"\1.fc1."),
    (re.compile(r"^(blocks\.\d+\.mlp)\.layers\.1\."), r"\1.fc2."),
)


def unwrap_state_dict(obj: object) -> object:
    """Descend through "state_dict" / "model" / "module" wrappers to the tensor dict."""
    while isinstance(obj, Mapping):
        inner = next((obj[k] for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if inner is None:
            break
        obj = inner
    return obj


def convert_videomae_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """MCG-NJU or mmaction2 VideoMAE keys -> this module's keys. Returns (converted, dropped keys)."""
    converted: dict[str, Tensor] = {}
    dropped: list[str] = []
    for key, value in state.items():
        name = key
        stripped = True
        while stripped:
            stripped = False
            for prefix in _PREFIXES:
                if name.startswith(prefix):
                    name, stripped = name[len(prefix):], True
        if name.split(".", 1)[0] in _DROPPED_ROOTS:
            dropped.append(key)
            continue
        for pattern, repl in _RENAMES:
            name = pattern.sub(repl, name)
        converted[name] = value
    return converted, dropped
