"""OpenTAD state-dict listings (tests/fixtures/opentad_zoo_keys/*.tsv) and what the zoo tests build
from them: the rows of a listing, meta tensors, a depth-reduced listing (in-block adapters or a side
network's ladder), VideoMAE's fixed position table, a file in OpenTAD's published layout and the
name our model gives each OpenTAD key.

The names are written from docs/recipe.md ("Loading OpenTAD's trained checkpoints"), not from
adatad/models/opentad_keys.py, so a test comparing the two can fail.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

FIXTURES = Path(__file__).parent / "fixtures"
LISTINGS = FIXTURES / "opentad_zoo_keys"
VIT = "backbone.model.backbone."
BLOCK = re.compile(r"^backbone\.model\.backbone\.blocks\.(\d+)\.(.*)$")
# Our name for an OpenTAD name, first match wins.
EXPECTED_NAMES = [
    (r"^backbone\.model\.backbone\.patch_embed\.projection\.", "encoder.backbone.patch_embed.proj."),
    (r"^backbone\.model\.backbone\.(blocks\.\d+\.mlp)\.layers\.0\.0\.", r"encoder.backbone.\1.fc1."),
    (r"^backbone\.model\.backbone\.(blocks\.\d+\.mlp)\.layers\.1\.", r"encoder.backbone.\1.fc2."),
    (r"^backbone\.model\.backbone\.", "encoder.backbone."),
    (r"^projection\.", "head.projection."),
    (r"^neck\.fpn_norms\.", "head.neck.norms."),
    (r"^rpn_head\.scale\.(\d+)\.scale$", r"head.heads.scales.\1.scale"),
    (r"^rpn_head\.loss_normalizer$", "criterion.loss_normalizer"),
    (r"^rpn_head\.(cls_convs|reg_convs|cls_head|reg_head)\.", r"head.heads.\1."),
]

ListingRow = tuple[str, torch.dtype, tuple[int, ...], str]


def read_listing_file(path: Path) -> list[ListingRow]:
    """(key without `module.`, dtype, shape, kind) of every entry, in the file's order."""
    out = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, dtype, shape, kind = line.split("\t")
        out.append((key.removeprefix("module."), getattr(torch, dtype),
                    tuple(int(s) for s in shape.split(",")) if shape else (), kind))
    return out


def read_listing(stem: str) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(key without `module.`, dtype, shape) of a zoo row's listing `LISTINGS/<stem>.tsv`."""
    return [(key, dtype, shape) for key, dtype, shape, _kind in read_listing_file(LISTINGS / f"{stem}.tsv")]


def meta_tensors(stem: str, prefix: str = "") -> dict[str, torch.Tensor]:
    """A row's state dict as meta tensors (no memory), keys as `prefix + key`."""
    return {f"{prefix}{k}": torch.empty(s, dtype=dt, device="meta") for k, dt, s in read_listing(stem)}


def depth_reduced(listing: list, depth: int, adapter_blocks: list[int]) -> list:
    """The listing of the same detector with `depth` ViT blocks and adapters on `adapter_blocks`:
    blocks >= depth dropped, every adapter's rows copied from the first block that has one (all
    blocks and all adapters of a ViT have the same shapes)."""
    template = [(BLOCK.match(k), dt, s) for k, dt, s in listing if ".adapter." in k]
    first = int(template[0][0].group(1))
    adapter_rows = [(m.group(2), dt, s) for m, dt, s in template if int(m.group(1)) == first]
    out = []
    for key, dtype, shape in listing:
        m = BLOCK.match(key)
        if m is None:
            out.append((key, dtype, shape))
        elif int(m.group(1)) < depth and not m.group(2).startswith("adapter."):
            out.append((key, dtype, shape))
            if m.group(2) == "mlp.layers.1.bias" and int(m.group(1)) in adapter_blocks:  # a block's last row
                out += [(f"{VIT}blocks.{m.group(1)}.{rest}", dt, s) for rest, dt, s in adapter_rows]
    return out


LADDER = re.compile(r"^backbone\.model\.backbone\.ladders\.adapters\.(\d+)\.")


def ladder_reduced(listing: list, depth: int, adapters: int) -> list:
    """The listing of the same side-network detector with `depth` ViT blocks and the first `adapters`
    ladder adapters (all adapters of a ladder have the same shapes)."""
    out = []
    for key, dtype, shape in listing:
        block, ladder = BLOCK.match(key), LADDER.match(key)
        if (block is None or int(block.group(1)) < depth) and (ladder is None or int(ladder.group(1)) < adapters):
            out.append((key, dtype, shape))
    return out


def videomae_table(n: int, dim: int) -> torch.Tensor:
    """VideoMAE's fixed table (n, dim): angle = pos / 10000^(2*(j//2)/d); sin on even j, cos on odd j."""
    angle = np.arange(n)[:, None] / np.power(10000.0, 2 * (np.arange(dim)[None, :] // 2) / dim)
    return torch.from_numpy(np.where(np.arange(dim)[None, :] % 2 == 0, np.sin(angle), np.cos(angle))).float()


def expected_name(key: str) -> str:
    """Our model's name for an OpenTAD key (without `module.`)."""
    for pattern, repl in EXPECTED_NAMES:
        if re.search(pattern, key):
            return re.sub(pattern, repl, key)
    raise AssertionError(f"no expected name for {key}")


def published_file(listing: list, path: Path, loss_norm: int, seed: int = 0) -> Path:
    """OpenTAD's published layout, {epoch, state_dict_ema} with `module.` keys; values: one random row
    per tensor at std 0.02, expanded (kilobytes on disk, so the g files cost no memory)."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for key, dtype, shape in listing:
        if key == f"{VIT}pos_embed":
            value = videomae_table(shape[-2], shape[-1])[None]
        elif dtype == torch.int64:  # the loss normaliser, as OpenTAD's EMA copy holds it
            value = torch.tensor(loss_norm)
        elif not shape:
            value = 0.02 * torch.randn((), generator=gen)
        else:
            value = (0.02 * torch.randn(shape[-1], generator=gen)).expand(shape)
        assert value.dtype == dtype and tuple(value.shape) == shape, key
        weights[f"module.{key}"] = value
    torch.save({"epoch": 9, "state_dict_ema": weights}, path)
    return path
