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
- The projection's absolute position embedding (Charades, ActivityNet, Ego4D) is a non-persistent
  buffer: no file holds it, so nothing in a file says its model used one. `check_abs_pe` recognises
  the detectors of OpenTAD's zoo by their head (`OPENTAD_ZOO_HEADS`) and refuses a config that runs
  one without its table, or with a table of another length, or one that adds a table it never had.
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


@dataclass(frozen=True)
class ZooHead:
    """What OpenTAD's AdaTAD zoo detectors of one dataset share: the head that identifies them, and
    whether their projection adds an absolute position embedding (of how many positions)."""

    dataset: str
    embed_dim: int  # projection / neck width
    levels: int  # FPN levels (arch[2] + 1)
    num_classes: int
    use_abs_pe: bool
    max_seq_len: int | None  # the table's positions when use_abs_pe


# Every published AdaTAD row (configs/adatad/*/ at 3dd7b03; tests/fixtures/opentad_zoo_keys/README.md).
OPENTAD_ZOO_HEADS: tuple[ZooHead, ...] = (
    ZooHead("THUMOS-14", 512, 6, 20, False, None),
    ZooHead("Multi-THUMOS", 512, 6, 65, False, None),
    ZooHead("EPIC-KITCHENS-100 noun", 512, 6, 293, False, None),
    ZooHead("EPIC-KITCHENS-100 verb", 512, 6, 97, False, None),
    ZooHead("Charades", 512, 8, 157, True, 512),
    ZooHead("ActivityNet-1.3 (class-agnostic)", 256, 6, 1, True, 192),
    ZooHead("ActivityNet-1.3 (200-class head)", 512, 6, 200, True, 192),
    ZooHead("Ego4D-MQ", 512, 10, 110, True, 2048),
)


def zoo_head_of(embed_dim: int, levels: int, num_classes: int) -> ZooHead | None:
    """The zoo's detectors with this head, or None for a head none of them has (a user's own model)."""
    return next((z for z in OPENTAD_ZOO_HEADS
                 if (z.embed_dim, z.levels, z.num_classes) == (embed_dim, levels, num_classes)), None)


def check_abs_pe(embed_dim: int, levels: int, num_classes: int, use_abs_pe: bool, max_seq_len: int) -> None:
    """A file that fits a zoo detector's head must be run with that detector's position embedding.

    `max_seq_len`: the config's table length (model.head.max_seq_len, or data.window_size when unset).
    Heads no zoo row has are not checked: their config is all there is to go by.
    """
    zoo = zoo_head_of(embed_dim, levels, num_classes)
    if zoo is None:
        return
    head = f"{embed_dim}-d projection, {levels} levels, {num_classes} class{'es' if num_classes != 1 else ''}"
    if zoo.use_abs_pe and (not use_abs_pe or max_seq_len != zoo.max_seq_len):
        have = f"max_seq_len={max_seq_len}" if use_abs_pe else "model.head.use_abs_pe=false"
        raise WeightsError(f"OpenTAD's {zoo.dataset} detectors ({head}) add an absolute position embedding "
                           f"of {zoo.max_seq_len} positions that no checkpoint holds, but the config has {have}; "
                           f"set model.head.use_abs_pe=true and model.head.max_seq_len={zoo.max_seq_len}")
    if not zoo.use_abs_pe and use_abs_pe:
        raise WeightsError(f"OpenTAD's {zoo.dataset} detectors ({head}) have no absolute position embedding, "
                           "but the config adds one; set model.head.use_abs_pe=false")


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

