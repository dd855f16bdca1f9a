"""OpenTAD's 14 ActivityNet-1.3 and Charades AdaTAD rows: the model side.

For each row (tests/fixtures/opentad_zoo_keys/README.md): the parameter split of OpenTAD's detector,
its state-dict listing mapped one to one onto ours (meta device), a random file with exactly its keys
in OpenTAD's published layout read by `read_trained` (what test.py and detect.py call), and a
depth-reduced copy (one ViT block at the full width, 32 px frames) that predicts and trains on the
CPU with the position table equal to the sinusoid formula. Then the refusals: a config that would
run such a file without its position table (which no file holds), with a table of another length,
or a THUMOS file with one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.models.build import build_model
from adatad.models.opentad_keys import OPENTAD_ZOO_HEADS, convert_opentad_state_dict, zoo_head_of
from adatad.models.trained import read_trained
from adatad.models.weights import WeightsError, shapes_of

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LISTINGS = Path(__file__).parent / "fixtures" / "opentad_zoo_keys"
THUMOS = CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml"
VIT = "backbone.model.backbone."
# width, depth, heads, patch, MLP width (OpenTAD's configs)
SIZES = {"S": (384, 12, 6, 16, 1536), "B": (768, 12, 12, 16, 3072), "L": (1024, 24, 16, 16, 4096),
         "H": (1280, 32, 16, 16, 5120), "g": (1408, 40, 16, 14, 6144)}

# The three head families, as OpenTAD's configs set them (configs/adatad/anet/*.py, charades/*.py).
ANET = ["data.sampling=resize", "data.class_agnostic=true", "data.window_size=192", "data.frames_per_position=4", "model.head.embed_dim=256",
        "model.head.feat_channels=256", "model.head.num_classes=1", "model.head.use_abs_pe=true",
        "model.head.label_smoothing=0.1", "model.head.loss_weight=2.0", "model.head.init_loss_norm=200",
        "model.inference.pre_nms_thresh=null", "model.inference.pre_nms_topk=null",
        "model.inference.multiclass_nms=false", "model.inference.voting_thresh=0.9",
        "model.inference.clip_before_nms=false", "model.inference.max_seg_num=100", "model.inference.min_score=0.001"]
ANET_CLS = ["data.sampling=resize", "data.window_size=192", "data.frames_per_position=4", "model.head.num_classes=200",
            "model.head.use_abs_pe=true", "model.head.label_smoothing=0.1", "model.head.init_loss_norm=200",
            "model.inference.nms_sigma=0.75", "model.inference.max_seg_num=100", "model.inference.min_score=0.001",
            "model.inference.clip_before_nms=false"]
CHARADES = ["data.fixed_fps=30", "data.window_size=512", "model.head.arch=[2, 2, 7]", "model.head.num_classes=157",
            "model.head.regression_ranges=[[0, 4], [4, 8], [8, 16], [16, 32], [32, 64], [64, 128], [128, 256], "
            "[256, 10000]]", "model.head.use_abs_pe=true", "model.head.input_pdrop=0.3",
            "model.inference.nms_sigma=0.3", "model.inference.max_seg_num=1000"]
FAMILIES = {"anet": ANET, "anet_cls": ANET_CLS, "charades": CHARADES}


@dataclass(frozen=True)
class Row:
    listing: str
    family: str
    variant: str
    crop: int
    adapter_layers: tuple[int, ...] | None
    total: int  # OpenTAD: every parameter, the unused fc_norm included
    projection: int
    neck: int
    head: int


def anet(listing, variant, crop, layers, total, projection):
    return Row(listing, "anet", variant, crop, layers, total, projection, 3_072, 790_793)


def charades(listing, variant, total, projection):
    return Row(listing, "charades", variant, 160, None, total, projection, 8_192, 3_394_215)


G_HALF = tuple(range(20, 40))
ROWS = [
    charades("e2e_charades_videomae_s_512x1_160_adapter", "S", 56_117_299, 29_828_096),
    charades("e2e_charades_videomae_b_512x1_160_adapter", "B", 124_051_891, 30_417_920),
    charades("e2e_charades_videomae_l_512x1_160_adapter", "L", 352_291_519, 30_811_136),
    charades("e2e_charades_videomae_h_512x1_160_adapter", "H", 695_807_431, 31_204_352),
    charades("e2e_charades_videomaev2_g_512x1_160_adapter", "g", 1_091_160_399, 31_400_960),
    anet("e2e_anet_videomae_s_192x4_160_adapter", "S", 160, None, 29_731_989, 6_051_328),
    anet("e2e_anet_videomae_b_192x4_160_adapter", "B", 160, None, 97_371_669, 6_346_240),
    anet("e2e_anet_videomae_l_192x4_160_adapter", "L", 160, None, 325_414_689, 6_542_848),
    anet("e2e_anet_videomae_h_192x4_160_adapter", "H", 160, None, 668_733_993, 6_739_456),
    anet("e2e_anet_videomaev2_g_192x4_160_adapter", "g", 160, None, 1_063_988_657, 6_837_760),
    anet("e2e_anet_videomaev2_g_192x4_224_adapter", "g", 224, G_HALF, 1_041_615_517, 6_837_760),
    anet("e2e_anet_videomaev2_g_192x4_224_adapter_internvideo", "g", 224, G_HALF, 1_041_615_517, 6_837_760),
    anet("e2e_anet_videomaev2_g_192x4_224_adapter_internvideo2", "g", 224, G_HALF, 1_041_615_517, 6_837_760),
    Row("e2e_anet_videomae_l_192x4_224_adapter_cls", "anet_cls", "L", 224, None, 346_033_384, 24_488_960, 6_144,
        3_460_304),
]
IDS = [r.listing.removeprefix("e2e_").removesuffix("_adapter").replace("_adapter_", "_") for r in ROWS]


def overrides(row: Row, depth: int | None = None, crop: int | None = None) -> list[str]:
    """The THUMOS config turned into this row's detector (depth / crop: a reduced copy)."""
    dim, full_depth, heads, patch, hidden = SIZES[row.variant]
    out = ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true",
           f"model.backbone.embed_dim={dim}", f"model.backbone.depth={depth or full_depth}",
           f"model.backbone.num_heads={heads}", f"model.backbone.patch_size={patch}",
           f"model.backbone.mlp_hidden_dim={hidden}", f"data.crop_size={crop or row.crop}"]
    if row.adapter_layers is not None:
        layers = list(row.adapter_layers) if depth is None else [depth - 1]
        out.append(f"model.backbone.adapter_layers={layers}")
    if row.crop == 224:
        out += ["data.train_resize_short=256", "data.test_resize_short=224"]
    return out + FAMILIES[row.family]


def config(row: Row, *extra: str, **reduce):
    return load_config(THUMOS, overrides(row, **reduce) + list(extra))


def read_listing(row: Row) -> dict[str, torch.Tensor]:
    """OpenTAD's state dict as meta tensors of the listed dtypes and shapes (keys with `module.`)."""
    out = {}
    for line in (LISTINGS / f"{row.listing}.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, dtype, shape, _kind = line.split("\t")
        dims = tuple(int(s) for s in shape.split(",")) if shape else ()
        out[key] = torch.empty(dims, dtype=getattr(torch, dtype), device="meta")
    return out


def formula_table(length: int, channels: int) -> torch.Tensor:
    """The projection's table written out in plain Python floats (float64), as spec'd: cast to
    float32, then divided by sqrt(C) in float32. (1, C, T)."""
    rows = [[t / math.pow(10000.0, 2 * (j // 2) / channels) for j in range(channels)] for t in range(length)]
    table = [[math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(r)] for r in rows]
    return torch.tensor(table, dtype=torch.float64).float().T[None] / (channels**0.5)


def published_file(row: Row, path: Path) -> Path:
    """A random file with exactly the row's keys, as OpenTAD publishes: {epoch, state_dict_ema}.
    Values are compact (one random row per tensor, expanded), so the g files cost no memory."""
    gen = torch.Generator().manual_seed(len(row.listing))
    weights = {}
    for key, meta in read_listing(row).items():
        if key == f"module.{VIT}pos_embed":
            n, c = meta.shape[-2:]  # VideoMAE's fixed table, which the reader checks
            angle = np.arange(n)[:, None] / np.power(10000.0, 2 * (np.arange(c)[None, :] // 2) / c)
            value = torch.from_numpy(np.where(np.arange(c) % 2 == 0, np.sin(angle), np.cos(angle))).float()[None]
        elif meta.dtype == torch.int64:  # the loss normaliser, as OpenTAD's EMA copy holds it
            value = torch.tensor(200 if row.family != "charades" else 100)
        elif meta.ndim == 0:
            value = torch.randn((), generator=gen)
        else:
            value = torch.randn(meta.shape[-1], generator=gen).expand(meta.shape)
        weights[key] = value
    torch.save({"epoch": 9, "state_dict_ema": weights}, path)
    return path


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_parameter_split_equals_opentads(row: Row) -> None:
    model = build_model(config(row), device="meta")
    fc_norm = 2 * SIZES[row.variant][0]  # OpenTAD's unused fc_norm, which this project does not build

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model.head.projection) == row.projection
    assert count(model.head.neck) == row.neck
    assert count(model.head.heads) == row.head
    assert count(model) + fc_norm == row.total
    assert model.head.strides == [2**i for i in range(len(model.head.neck.norms))]


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_listing_maps_one_to_one_and_holds_no_position_table(row: Row) -> None:
    model = build_model(config(row), device="meta")
    own = shapes_of(model)
    listing = read_listing(row)
    conversion = convert_opentad_state_dict(listing)
    assert conversion.unmapped == []
    assert len(conversion.weights) + 2 + 1 == len(listing)  # mapped + fc_norm + the ViT's checked table
    assert set(conversion.weights) == set(own)
    for ours, value in conversion.weights.items():
        assert tuple(value.shape) == own[ours][0], ours
    # the projection's table is a buffer of the model, in neither state dict
    assert not any("projection.pos_embed" in k for k in listing)
    assert "head.projection.pos_embed" not in own
    table = dict(model.named_buffers())["head.projection.pos_embed"]
    embed = 256 if row.family == "anet" else 512
    assert tuple(table.shape) == (1, embed, 192 if row.family.startswith("anet") else 512)


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_published_file_loads_through_the_reader(row: Row, tmp_path: Path) -> None:
    cfg = config(row)
    trained = read_trained(published_file(row, tmp_path / f"{row.listing}.pth"), cfg)
    assert (trained.kind, trained.weights) == ("opentad", "ema")
    model = trained.state["model"]
    assert len(model) == len(read_listing(row)) - 3  # minus fc_norm (2) and the ViT's checked table
    assert model["criterion.loss_normalizer"].dtype == torch.float32
    assert trained.state["config"]["model"]["head"]["use_abs_pe"] is True


# The InternVideo / InternVideo2 rows are the g-224 model itself (identical listings): run it once.
DISTINCT = [(r, i) for r, i in zip(ROWS, IDS, strict=True) if not r.listing.endswith(("_internvideo", "_internvideo2"))]


@pytest.mark.parametrize("row", [r for r, _ in DISTINCT], ids=[i for _, i in DISTINCT])
def test_a_depth_reduced_copy_predicts_and_trains_on_the_cpu(row: Row) -> None:
    """One ViT block at the row's width, 32 px frames, the row's whole head, window and table; a
    training step (forward and backward) for the S model of each head family."""
    torch.manual_seed(0)
    cfg = config(row, depth=1, crop=32)
    model = build_model(cfg)
    positions = cfg.data.window_size
    table = model.head.projection.pos_embed
    assert torch.equal(table, formula_table(positions, cfg.model.head.embed_dim))
    frames = torch.randint(0, 256, (1, positions * cfg.data.frames_per_position, 32, 32, 3), dtype=torch.uint8)
    masks = torch.ones(1, positions, dtype=torch.bool)
    masks[0, positions - 7:] = False
    inference = cfg.model.inference
    dets = model.eval().predict(frames, masks, inference.pre_nms_thresh, inference.pre_nms_topk)[0]
    assert torch.isfinite(dets.segments).all() and torch.isfinite(dets.scores).all()
    if row.family == "anet":  # no threshold, no top-k: every valid position of every level
        levels = len(model.head.strides)
        valid = sum(math.ceil((positions - 7) / 2**i) for i in range(levels))
        assert len(dets) == valid and dets.labels.eq(0).all()
    if not (row.variant == "S" or row.family == "anet_cls"):
        return
    label = 0 if row.family == "anet" else 7  # data.class_agnostic gives the one-class head label 0
    losses = model.train()(frames, masks, segments=torch.tensor([[[10.0, 60.0], [0.0, 0.0]]]),
                           labels=torch.tensor([[label, -1]]), num_segments=torch.tensor([1]))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert model.head.projection.embed[0].conv.weight.grad is not None


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("row, setting, message", [
    (ROWS[0], "model.head.use_abs_pe=false", "Charades detectors .* set model.head.use_abs_pe=true and "
                                             "model.head.max_seq_len=512"),
    (ROWS[5], "model.head.use_abs_pe=false", "ActivityNet-1.3 \\(class-agnostic\\) .* model.head.max_seq_len=192"),
    (ROWS[5], "model.head.max_seq_len=96", "of 192 positions .* the config has max_seq_len=96"),
    (ROWS[-1], "model.head.use_abs_pe=false", "200-class head"),
], ids=["charades-off", "anet-off", "anet-short-table", "anet-cls-off"])
def test_a_zoo_file_is_refused_without_its_position_table(row, setting, message, tmp_path) -> None:
    path = published_file(row, tmp_path / "model.pth")
    with pytest.raises(WeightsError, match=message) as info:
        read_trained(path, config(row, setting))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_thumos_file_is_refused_with_a_position_table(tmp_path) -> None:
    row = Row("e2e_thumos_videomae_s_768x1_160_adapter", "anet", "S", 160, None, 0, 0, 0, 0)
    path = published_file(row, tmp_path / "thumos.pth")
    cfg = load_config(THUMOS, ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"])
    assert read_trained(path, cfg).kind == "opentad"
    plus_table = load_config(THUMOS, ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true",
                                      "model.head.use_abs_pe=true"])
    with pytest.raises(WeightsError, match="THUMOS-14 detectors .* have no absolute position embedding"):
        read_trained(path, plus_table)


def test_zoo_heads_are_distinct_and_name_every_abs_pe_row() -> None:
    keys = [(z.embed_dim, z.levels, z.num_classes) for z in OPENTAD_ZOO_HEADS]
    assert len(set(keys)) == len(keys)
    with_table = {z.dataset.split(" ")[0] for z in OPENTAD_ZOO_HEADS if z.use_abs_pe}
    assert with_table == {"Charades", "ActivityNet-1.3", "Ego4D-MQ"}
    assert zoo_head_of(512, 8, 157).max_seq_len == 512 and zoo_head_of(384, 6, 3) is None
