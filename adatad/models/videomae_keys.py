"""VideoMAE checkpoint keys -> `VideoMAEBackbone`'s keys, for every layout the AdaTAD zoo's files use.

Plain functions on state dicts, no model: `load_videomae_checkpoint` uses them for VideoMAE files
and `adatad.models.opentad_keys` for the ViT inside OpenTAD's detectors. The layouts (docs/recipe.md
§4 "Backbones"):
- original: MCG-NJU VideoMAE (S/H K400 fine-tuned, `{"module": ...}` or `{"model": ...}`) and
  OpenGVLab VideoMAEv2 (`vit_g_hybrid_pt_1200e_k710_ft.pth`, `{"module": ...}`): `patch_embed.proj`,
  `blocks.N.mlp.fc1/fc2`, plus `fc_norm` and a classification `head`; no position table (theirs is
  a plain attribute). Pre-training files hold the same names under `encoder.` beside a `decoder`.
- mmaction2: `backbone.` prefix, `patch_embed.projection`, `blocks.N.mlp.layers.0.0` / `layers.1`,
  `backbone.pos_embed` (the fixed table, a buffer), `cls_head.fc_cls`. mmaction2's B/L releases wrap
  it in `{"meta", "state_dict"}`; OpenTAD's converters (`convert_videomae_finetuned.py`,
  `convert_videomaev2.py`, the `*_my.pth` files of S, H and g) save the flat state dict.
All of them map onto the same names; what differs between the five sizes is only shapes and depth.
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


LAYOUT_ORIGINAL = "original VideoMAE/VideoMAEv2 keys"
LAYOUT_PRETRAINING = "VideoMAE pre-training keys (encoder + decoder)"
LAYOUT_MMACTION = "mmaction2 keys"
_BLOCK = re.compile(r"^blocks\.(\d+)\.")


def videomae_layout(obj: object) -> str:
    """Which key layout a loaded file uses, and where its tensors sit (for messages and reports).

    E.g. "mmaction2 keys under 'state_dict'" (an mmaction2 release), "mmaction2 keys at the top
    level" (OpenTAD's converted `*_my.pth`), "original VideoMAE/VideoMAEv2 keys under 'module'".
    """
    where: list[str] = []
    while isinstance(obj, Mapping):
        name = next((k for k in _WRAPPERS if isinstance(obj.get(k), Mapping)), None)
        if name is None:
            break
        where.append(name)
        obj = obj[name]
    keys = [k for k in obj if isinstance(k, str)] if isinstance(obj, Mapping) else []
    if any(".mlp.layers." in k or "patch_embed.projection." in k for k in keys):
        kind = LAYOUT_MMACTION
    elif any(k.startswith(("decoder.", "encoder_to_decoder.")) for k in keys):
        kind = LAYOUT_PRETRAINING
    elif any(".mlp.fc1." in k or "patch_embed.proj." in k for k in keys):
        kind = LAYOUT_ORIGINAL
    else:
        kind = "no VideoMAE keys"
    place = "under " + "/".join(repr(w) for w in where) if where else "at the top level"
    return f"{kind} {place}"


def describe_vit(converted: Mapping[str, Tensor]) -> str:
    """The ViT a converted state dict describes, in `VideoMAEBackbone.describe`'s words.

    Read from shapes only: width, patch and tubelet from the patch embedding, depth from the
    highest block index, MLP width from block 0's first layer ("?" where the file lacks the key).
    """
    embed = converted.get("patch_embed.proj.weight")
    fc1 = converted.get("blocks.0.mlp.fc1.weight")
    indices = [int(m.group(1)) for k in converted if (m := _BLOCK.match(k))]
    width, tubelet, patch = (embed.shape[0], embed.shape[2], embed.shape[3]) if embed is not None and \
        embed.ndim == 5 else ("?", "?", "?")
    depth = max(indices) + 1 if indices else "?"
    hidden = fc1.shape[0] if fc1 is not None and fc1.ndim == 2 else "?"
    return f"{width}-d, {depth} blocks, patch {patch}, tubelet {tubelet}, MLP {hidden}"


def convert_videomae_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """Any layout's VideoMAE keys -> `VideoMAEBackbone`'s keys. Returns (converted, dropped keys)."""
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
