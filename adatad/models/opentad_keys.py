"""OpenTAD's AdaTAD checkpoints -> this project's AdaTAD state dict.

OpenTAD (the official AdaTAD code) publishes trained detectors. Its files are torch pickles: a
training checkpoint holds `epoch, state_dict, optimizer, scheduler, state_dict_ema`, a published
(model-zoo) file only `epoch, state_dict_ema`. Keys carry the `module.` prefix of OpenTAD's DDP
wrapper (files without it are accepted too). Both detectors are the same network (docs/recipe.md
sections 4-6), so every tensor maps onto one of ours by name: `convert_opentad_state_dict` is that
mapping, the same for all five backbones (VideoMAE-S/B/L/H, VideoMAEv2-g; only shapes, depth and
which blocks carry an adapter differ). The key lists of OpenTAD's THUMOS detectors are in
tests/fixtures/opentad_zoo_keys/ (and the S one, after training, in
tests/fixtures/opentad_adatad_s_thumos_keys.tsv).
Problems are `WeightsError`s without the path: `adatad.models.trained`, which read the file, adds it.

Quirks handled here:
- `...backbone.pos_embed` is a saved copy of VideoMAE's fixed sinusoid table at 224 px (8 x 14 x 14
  tokens at patch 16, 8 x 16 x 16 for the g's patch 14); we rebuild that table from its formula
  (`VideoMAEBackbone.pretrain_table`) and only check the copy against it (`check_pos_embed`).
- `...backbone.fc_norm.{weight,bias}` are saved but unused on the detection path (OpenTAD returns
  the feature map before fc_norm): dropped, by name (`DROPPED_KEYS`).
- `rpn_head.loss_normalizer` is int64 in `state_dict_ema` (OpenTAD's EMA copies into the buffer as
  first built, `torch.tensor(100)`) and float32 in `state_dict`; the caller casts it to our float
  buffer `criterion.loss_normalizer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from torch import Tensor

from adatad.models.videomae_keys import convert_videomae_state_dict
from adatad.models.weights import WeightsError

DDP_PREFIX = "module."
# Which top-level entry holds which weights. OpenTAD evaluates the EMA weights (tools/test.py
# loads `state_dict_ema` when the run used EMA, as this recipe does).
WEIGHT_ENTRIES: dict[str, str] = {"ema": "state_dict_ema", "model": "state_dict"}

VIT_PREFIX = "backbone.model.backbone."  # BackboneWrapper.model (mmaction Recognizer3D).backbone
POS_EMBED_KEY = VIT_PREFIX + "pos_embed"
# Saved by OpenTAD, never used by its detector (nor ours): dropped on purpose.
DROPPED_KEYS: tuple[str, ...] = (VIT_PREFIX + "fc_norm.weight", VIT_PREFIX + "fc_norm.bias")
# OpenTAD module prefix -> our module prefix. Below the prefix the names are equal, except inside
# the ViT, where the VideoMAE renames apply (patch_embed.projection -> patch_embed.proj,
# mlp.layers.0.0 -> mlp.fc1, mlp.layers.1 -> mlp.fc2; `convert_videomae_state_dict`).
PREFIX_MAP: tuple[tuple[str, str], ...] = (
    (VIT_PREFIX, "encoder.backbone."),
    ("projection.", "head.projection."),
    ("neck.fpn_norms.", "head.neck.norms."),
    ("rpn_head.cls_convs.", "head.heads.cls_convs."),
    ("rpn_head.reg_convs.", "head.heads.reg_convs."),
    ("rpn_head.cls_head.", "head.heads.cls_head."),
    ("rpn_head.reg_head.", "head.heads.reg_head."),
    ("rpn_head.scale.", "head.heads.scales."),  # rpn_head.scale.N.scale -> head.heads.scales.N.scale
    ("rpn_head.loss_normalizer", "criterion.loss_normalizer"),
)
# The saved table may differ from ours by float rounding (or an fp16 re-save, ~5e-4); a table of
# another grid, frame count or a learnt embedding differs by O(1).
POS_EMBED_ATOL = 1e-3


@dataclass
class OpenTADConversion:
    weights: dict[str, Tensor]  # our key -> tensor, as stored in the file (dtype not changed)
    sources: dict[str, str]     # our key -> the file key it came from (for error messages)
    pos_embed: Tensor | None    # the saved fixed table, to check against ours
    dropped: list[str] = field(default_factory=list)   # file keys left out on purpose
    unmapped: list[str] = field(default_factory=list)  # file keys no rule maps (unexpected)


def is_opentad_checkpoint(obj: object) -> bool:
    """A mapping with OpenTAD's `state_dict_ema` and/or `state_dict` entry holding tensors."""
    return isinstance(obj, Mapping) and any(
        isinstance(obj.get(entry), Mapping) for entry in WEIGHT_ENTRIES.values())


def select_opentad_weights(obj: Mapping, use_ema: bool = True) -> tuple[Mapping[str, Tensor], str]:
    """The state dict to load and which one it is ("ema" or "model").

    use_ema: `state_dict_ema`, or `state_dict` when the file has no EMA (a run without EMA, whose
    `state_dict` is what OpenTAD evaluates). use_ema=False: `state_dict`, which published files lack.
    """
    present = [k for k in obj if isinstance(k, str)]
    if use_ema and isinstance(obj.get(WEIGHT_ENTRIES["ema"]), Mapping):
        which = "ema"
    elif isinstance(obj.get(WEIGHT_ENTRIES["model"]), Mapping):
        which = "model"
    elif use_ema:
        raise WeightsError(f"no 'state_dict_ema' or 'state_dict' in the file (top-level keys {present})")
    else:
        raise WeightsError(
            f"use_ema=False needs 'state_dict', but the file has only {present} (a published OpenTAD "
            "file keeps the EMA weights only; read it with use_ema=True)")
    state = obj[WEIGHT_ENTRIES[which]]
    bad = [str(k) for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise WeightsError(f"'{WEIGHT_ENTRIES[which]}' holds {len(bad)} entries that are not "
                                     f"named tensors: {bad[:4]}")
    return state, which


def convert_opentad_state_dict(state: Mapping[str, Tensor]) -> OpenTADConversion:
    """Map every OpenTAD detector key to ours (`PREFIX_MAP`); nothing is dropped silently.

    Keys no rule maps, and keys that would land on an already-filled name (a file holding a key
    both with and without `module.`), are returned in `unmapped` for the caller to refuse.
    """
    out = OpenTADConversion(weights={}, sources={}, pos_embed=None)
    for file_key, value in state.items():
        key = file_key.removeprefix(DDP_PREFIX)
        if key in DROPPED_KEYS:
            out.dropped.append(file_key)
            continue
        if key == POS_EMBED_KEY:
            out.pos_embed = value
            continue
        name = None
        for old, new in PREFIX_MAP:
            if key.startswith(old):
                rest = key[len(old):]
                if old == VIT_PREFIX:
                    # Reuse the VideoMAE renames; anything it would drop (e.g. a final `norm`) has no
                    # place in our encoder and is reported as unmapped instead.
                    converted, _ = convert_videomae_state_dict({rest: value})
                    rest = next(iter(converted), None)
                name = None if rest is None else new + rest
                break
        if name is None or name in out.weights:
            out.unmapped.append(file_key)
            continue
        out.weights[name] = value
        out.sources[name] = file_key
    return out


def check_pos_embed(pos_embed: Tensor | None, table: Tensor) -> None:
    """The file's saved sinusoid table must equal ours (`table`, (N, C)) within POS_EMBED_ATOL.

    We never load this table (ours is rebuilt from the formula and resized per input size, like
    OpenTAD's), so checking is the only way a file whose table differs -- another pretraining grid
    or frame count, a learnt embedding -- is refused instead of silently giving other features.
    """
    if pos_embed is None:
        raise WeightsError(f"missing {POS_EMBED_KEY} (every OpenTAD AdaTAD file saves it)")
    if pos_embed.numel() != table.numel() or pos_embed.shape[-1] != table.shape[-1]:
        raise WeightsError(f"{POS_EMBED_KEY}: shape {list(pos_embed.shape)}, expected "
                                     f"{[1, *table.shape]} (the model's pretraining grid)")
    diff = (pos_embed.detach().reshape(table.shape).double() - table.double()).abs().max().item()
    if not diff <= POS_EMBED_ATOL:  # also catches NaN
        raise WeightsError(f"{POS_EMBED_KEY}: differs from VideoMAE's fixed sinusoid table by up to "
                                     f"{diff:.3g} (expected <= {POS_EMBED_ATOL}); this file's backbone is not "
                                     "the frozen VideoMAE this project builds")

