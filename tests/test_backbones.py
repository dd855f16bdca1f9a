"""The five backbones of OpenTAD's AdaTAD zoo: VideoMAE-S/B/L/H at 160 px, VideoMAEv2-g at 160 px
(adapters in all 40 blocks) and 224 px (adapters in blocks 20-39).

For each THUMOS-14 row: the parameter counts of OpenTAD's detector (tests/fixtures/opentad_zoo_keys/
README.md, "Parameter split"), its state-dict listing mapped one to one onto ours (built on the meta
device: the g has 1.1 B parameters), and one forward of a depth-reduced copy at the full width. Then
the g read from an OpenTAD file without building it, and adapters on a range of blocks end to end.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass

import pytest
import torch

import adatad.models.trained as trained_module
import adatad.models.videomae as videomae_module
from adatad.config import CONFIG_DIR, load_config
from adatad.engine.param_groups import build_param_groups
from adatad.models.build import build_model
from adatad.models.chunked import ChunkedEncoder
from adatad.models.opentad_keys import convert_opentad_state_dict
from adatad.models.trained import read_trained
from adatad.models.videomae import VIDEOMAE_VARIANTS, VideoMAEBackbone
from adatad.models.weights import shapes_of
from tests.opentad_listing import VIT, meta_tensors, videomae_table

THUMOS = CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml"
RANDOM_BACKBONE = ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"]

# width, depth, heads, patch, MLP width (OpenTAD's configs; the g's mlp_ratio is 48/11)
SIZES = {"S": (384, 12, 6, 16, 1536), "B": (768, 12, 12, 16, 3072), "L": (1024, 24, 16, 16, 4096),
         "H": (1280, 32, 16, 16, 5120), "g": (1408, 40, 16, 14, 6144)}


@dataclass(frozen=True)
class ZooRow:
    listing: str                     # file stem in tests/fixtures/opentad_zoo_keys/
    variant: str
    crop: int                        # px
    adapter_layers: tuple[int, ...] | None  # None = every block
    backbone: int                    # OpenTAD: ViT incl. adapters and its unused fc_norm
    adapters: int
    total: int                       # OpenTAD: every parameter of the detector

    @property
    def id(self) -> str:
        return f"{self.variant}-{self.crop}"


ROWS = [
    ZooRow("e2e_thumos_videomae_s_768x1_160_adapter", "S", 160, None, 22_886_796, 1_006_860, 49_582_504),
    ZooRow("e2e_thumos_videomae_b_768x1_160_adapter", "B", 160, None, 90_231_564, 4_004_364, 117_517_096),
    ZooRow("e2e_thumos_videomae_l_768x1_160_adapter", "L", 160, None, 318_077_976, 14_217_240, 345_756_724),
    ZooRow("e2e_thumos_videomae_h_768x1_160_adapter", "H", 160, None, 661_200_672, 29_593_632, 689_272_636),
    ZooRow("e2e_thumos_videomaev2_g_768x1_160_adapter", "g", 160, None, 1_056_357_032, 44_746_280,
           1_084_625_604),
    ZooRow("e2e_thumos_videomaev2_g_768x2_224_adapter", "g", 224, tuple(range(20, 40)), 1_033_983_892,
           22_373_140, 1_062_252_464),
]
G224 = ROWS[-1]


def overrides(row: ZooRow) -> list[str]:
    """The THUMOS config turned into this row's model (OpenTAD's 224-px pipeline: short side 256, crop 224)."""
    dim, depth, heads, patch, hidden = SIZES[row.variant]
    out = RANDOM_BACKBONE + [f"model.backbone.embed_dim={dim}", f"model.backbone.depth={depth}",
                             f"model.backbone.num_heads={heads}", f"model.backbone.patch_size={patch}",
                             f"model.backbone.mlp_hidden_dim={hidden}", f"data.crop_size={row.crop}"]
    if row.adapter_layers is not None:
        out.append(f"model.backbone.adapter_layers={list(row.adapter_layers)}")
    if row.crop == 224:
        out += ["data.train_resize_short=256", "data.test_resize_short=224"]
    return out


def config(row: ZooRow):
    return load_config(THUMOS, overrides(row))


def test_the_variants_table_states_the_five_sizes() -> None:
    for variant, (dim, depth, heads, patch, hidden) in SIZES.items():
        with torch.device("meta"):
            model = videomae_module.build_videomae(variant)
        assert (model.embed_dim, model.depth, model.patch_size, model.mlp_hidden_dim) == (dim, depth, patch, hidden)
        assert VIDEOMAE_VARIANTS[variant]["num_heads"] == heads


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_parameter_counts_equal_opentads(row: ZooRow) -> None:
    model = build_model(config(row), device="meta")
    backbone = model.encoder.backbone
    vit = sum(p.numel() for n, p in backbone.named_parameters() if ".adapter." not in n)
    adapters = sum(p.numel() for n, p in backbone.named_parameters() if ".adapter." in n)
    fc_norm = 2 * backbone.embed_dim  # OpenTAD's unused fc_norm, which this project does not build
    assert adapters == row.adapters
    assert vit + adapters + fc_norm == row.backbone
    assert sum(p.numel() for p in model.parameters()) + fc_norm == row.total
    assert backbone.adapter_layers == list(row.adapter_layers or range(backbone.depth))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_the_detector_maps_one_to_one_onto_opentads_listing(row: ZooRow) -> None:
    model = build_model(config(row), device="meta")
    own = shapes_of(model)
    listing = meta_tensors(row.listing)
    conversion = convert_opentad_state_dict({f"module.{k}": v for k, v in listing.items()})
    assert conversion.unmapped == []
    assert conversion.dropped == [f"module.{VIT}fc_norm.weight", f"module.{VIT}fc_norm.bias"]
    assert len(conversion.weights) + 2 + 1 == len(listing)  # mapped + fc_norm + the checked table
    assert set(conversion.weights) == set(own)
    for ours, value in conversion.weights.items():
        assert tuple(value.shape) == own[ours][0], ours
    # the saved table is the pretraining grid's (224 px, 16 frames), which we compute instead
    dim, _, _, patch, _ = SIZES[row.variant]
    side = 224 // patch
    table = model.encoder.backbone.pretrain_table()
    assert tuple(conversion.pos_embed.shape) == (1, *table.shape) == (1, 8 * side * side, dim)
    with_adapter = sorted({int(k.split(".")[4]) for k in listing if ".adapter." in k})
    assert with_adapter == list(row.adapter_layers or range(SIZES[row.variant][1]))


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.id)
def test_a_depth_reduced_copy_runs_one_forward(row: ZooRow) -> None:
    """Two blocks at the full width (the g at 224 px: an adapter in the second only, as in 20-39 of
    40), adapters switched on, one 16-frame chunk at the row's crop; the g at 224 px gets two chunks,
    so its adapter's temporal conv crosses a chunk boundary (the 768x2 rows at scale 1). One chunk
    elsewhere keeps the full-width forwards to seconds on two cores."""
    dim, _, heads, patch, hidden = SIZES[row.variant]
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(embed_dim=dim, depth=2, num_heads=heads, patch_size=patch, mlp_hidden_dim=hidden,
                                adapter_layers=None if row.adapter_layers is None else [1])
    for block in backbone.blocks:
        if block.adapter is not None:
            torch.nn.init.normal_(block.adapter.up_proj.weight, std=0.02)
    encoder = ChunkedEncoder(backbone).eval()
    length = 32 if row is G224 else 16
    frames = torch.randn(1, 3, length, row.crop, row.crop, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        features = encoder(frames)
    side = row.crop // patch  # 160 px: 10 at patch 16, 11 at patch 14 (floored); 224 px at patch 14: 16
    assert backbone.grid_for(row.crop, row.crop) == (8, side, side)
    assert features.shape == (1, dim, length) and features.dtype == torch.float32
    assert torch.isfinite(features).all()
    assert [b.adapter is not None for b in backbone.blocks] == ([True, True] if row.adapter_layers is None
                                                               else [False, True])


# ---------------------------------------------------------------- the g from an OpenTAD file


def test_an_opentad_g_file_is_read_without_building_the_g(tmp_path, monkeypatch) -> None:
    """A published g-224 file (values compact: one random row per tensor, expanded) reads and checks
    against a model built on the meta device: no 4.4 GB ViT besides the file's."""
    cfg = config(G224)
    gen = torch.Generator().manual_seed(2)
    weights = {}
    for key, meta in meta_tensors(G224.listing).items():
        if key == f"{VIT}pos_embed":
            value = videomae_table(*meta.shape[-2:])[None]  # VideoMAE's fixed table, from its formula
        elif meta.dtype == torch.int64:  # the loss normaliser, as OpenTAD's EMA copy holds it
            value = torch.tensor(100)
        elif meta.ndim == 0:  # the head's scales
            value = torch.randn((), generator=gen)
        else:
            value = torch.randn(meta.shape[-1], generator=gen).expand(meta.shape)
        weights[f"module.{key}"] = value
    path = tmp_path / "e2e_thumos_videomaev2_g_768x2_224_adapter.pth"
    torch.save({"epoch": 49, "state_dict_ema": weights}, path)

    devices = []
    real_build = trained_module.build_model

    def spy(cfg, device=None):
        devices.append(device)
        return real_build(cfg, device=device)

    monkeypatch.setattr(trained_module, "build_model", spy)
    monkeypatch.setattr(trained_module, "_REFERENCES", {})
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    trained = read_trained(path, cfg)
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert devices == ["meta"]
    assert grown_mib < 1024, f"reading the g file raised peak memory by {grown_mib:.0f} MiB"
    model = trained.state["model"]
    assert len(model) == 935 - 3  # OpenTAD's entries minus fc_norm (2) and the checked pos_embed
    key = "encoder.backbone.blocks.39.adapter.up_proj.weight"
    assert torch.equal(model[key], weights[f"module.{VIT}blocks.39.adapter.up_proj.weight"])
    assert "encoder.backbone.blocks.19.adapter.gamma" not in model
    assert model["criterion.loss_normalizer"].dtype == torch.float32


# ---------------------------------------------------------------- adapters on a range of blocks


def test_adapters_on_the_second_half_train_end_to_end(monkeypatch) -> None:
    """The g-224 arrangement at depth 4 (adapters in blocks 2-3): blocks without an adapter are plain
    frozen blocks, get no checkpointing (their input needs no grad, as in OpenTAD's `with_cp and
    x.requires_grad`), and only the listed adapters are trained."""
    calls = []
    real = videomae_module.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return real(fn, *args, **kwargs)

    monkeypatch.setattr(videomae_module, "checkpoint", counting)
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(embed_dim=32, depth=4, num_heads=2, adapter_layers=[2, 3])
    encoder = ChunkedEncoder(backbone, use_checkpoint=True).train()
    assert [b.adapter is None for b in backbone.blocks] == [True, True, False, False]
    assert not any(".adapter." in k and k.startswith(("blocks.0.", "blocks.1.")) for k in backbone.state_dict())
    frames = torch.randn(2, 3, 48, 32, 32, generator=torch.Generator().manual_seed(3))
    encoder(frames).square().mean().backward()
    assert calls == [backbone.blocks[3]]  # block 2's input comes from frozen blocks: nothing to recompute
    for index in (2, 3):
        grad = backbone.blocks[index].adapter.up_proj.weight.grad
        assert grad is not None and grad.abs().sum() > 0
    assert all(p.grad is None for n, p in backbone.named_parameters() if ".adapter." not in n)
    groups = build_param_groups(encoder, base_lr=1e-4, adapter_lr=2e-4)
    adapter_group = next(g for g in groups if g["name"] == "adapter")
    assert len(adapter_group["params"]) == 2 * 9
    assert all(m.training is False for m in encoder.frozen_modules())
