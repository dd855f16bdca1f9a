"""OpenTAD's last AdaTAD rows: EPIC-KITCHENS-100 noun and verb, Ego4D-MQ and side-tuning (AdaTAD†).

For each row (tests/fixtures/opentad_zoo_keys/README.md) the config `configs/opentad/<stem>.yaml`:
- composes, validates and holds the values of OpenTAD's config and its `_base_` chain, written out
  below independently of the YAML (`ROWS`, `FAMILIES`);
- builds OpenTAD's detector on the meta device: its parameter split, and its state-dict listing
  mapped one to one onto ours;
- reads a random file with exactly the row's keys in OpenTAD's published layout through
  `read_trained`, with the config as test.py builds it (`config_for_trained_file`);
- reads a depth-reduced file (1 or 2 ViT blocks at the full width, a crop of one patch, the row's
  whole window: 6,144 frames for EPIC, 7,200 for Ego4D) and the model detect.py builds from it
  predicts and merges one window on the CPU; Ego4D and the side g also train a step.
`e2e_thumos_videomae_s_768x1_160_side` has no published model and no listing: its state dict is
checked against the one derived from the S adapter row's listing (the ladder adapters are the TIA's
shapes). Then the data conventions (EPIC's and Ego4D's annotation files, EPIC's floored mask), the
VideoMAE-L files these rows train from, and a refusal.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.data.annotations import load_annotations
from adatad.data.class_names import resolve_class_names
from adatad.data.clips import plan_test_windows
from adatad.models.build import build_model, model_from_checkpoint
from adatad.models.opentad_keys import convert_opentad_state_dict
from adatad.models.trained import read_trained
from adatad.models.videomae import VideoMAEBackbone, load_videomae_checkpoint
from adatad.models.weights import WeightsError, shapes_of
from adatad.postprocess import detections_to_entries, merge_video, window_to_seconds
from adatad.trained_settings import config_for_trained_file
from tests.opentad_listing import (
    BLOCK,
    VIT,
    depth_reduced,
    expected_name,
    ladder_reduced,
    meta_tensors,
    published_file,
    read_listing,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ZOO = CONFIG_DIR / "opentad"
TIOU_EGO = [0.1, 0.2, 0.3, 0.4, 0.5]
EPIC_RANGES = [(0, 4), (2, 8), (4, 16), (8, 32), (16, 64), (32, 10000)]
EGO4D_RANGES = EPIC_RANGES[:-1] + [(32, 128), (64, 256), (128, 512), (256, 1024), (512, 10000)]
SIX_RANGES = [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]

# OpenTAD @3dd7b03: EPIC_N / EPIC_V = configs/adatad/epic/e2e_epic_videomae_l_ft_768x8_160_adapter_{noun,verb}.py
# with their dataset bases configs/_base_/datasets/epic_kitchens-100/e2e_{noun,verb}_train_trunc_test_sw_s16_768x1_224.py;
# EGO = configs/adatad/ego4d/e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4.py with
# configs/_base_/datasets/ego4d_mq/e2e_train_trunc_test_sw_1800_s8.py; SIDE_S / SIDE_G =
# configs/adatad/thumos/e2e_thumos_videomae_s_768x1_160_side.py / ..._videomaev2_g_768x2_224_side_2e-4.py;
# all with configs/_base_/models/actionformer.py. Values after the `_base_` chain.
EPIC_DATA = {"video_dir": "data/epic_kitchens-100/raw_data/epic_kitchens_100_30fps_512x288", "video_prefix": "",
             "block_list": None, "train_subset": "train", "test_subset": "val", "sampling": "sliding",
             "window_size": 768, "frame_stride": 16, "frames_per_position": 8, "fixed_fps": 30.0,
             "trunc_thresh": 0.3, "temporal_crop_ratio": (0.9, 1.0), "test_window_overlap": 0.5,
             "train_resize_short": 182, "crop_size": 160, "test_resize_short": 160, "class_agnostic": False}
THUMOS_DATA = {"annotation_file": "data/thumos-14/annotations/thumos_14_anno.json",
               "class_map_file": "configs/thumos14_classes.txt", "video_dir": "data/thumos-14/raw_data/video",
               "train_subset": "training", "test_subset": "validation", "window_size": 768, "frame_stride": 4,
               "fixed_fps": None, "trunc_thresh": 0.75, "test_window_overlap": 0.5}
FAMILIES = {
    "epic": {
        "data": EPIC_DATA,
        "head": {"embed_dim": 512, "arch": (2, 2, 5), "regression_ranges": EPIC_RANGES, "mha_win_size": 9,
                 "use_abs_pe": False, "max_seq_len": None, "input_pdrop": 0.2, "proj_pdrop": 0.0,
                 "init_loss_norm": 250.0, "loss_weight": 0.5, "filter_similar_gt": True},
        # voting_thresh 0.75 in the file is never used by the per-class NMS (0 here, as the THUMOS rows)
        "inference": {"pre_nms_thresh": 0.001, "pre_nms_topk": 5000, "multiclass_nms": True, "nms_sigma": 0.4,
                      "max_seg_num": 2000, "min_score": 0.001, "voting_thresh": 0.0, "clip_before_nms": True},
        "train": {"lr": 1e-4, "adapter_lr": 8e-5, "epochs": 35, "schedule_epochs": 250, "warmup_epochs": 5,
                  "batch_size": 2, "val_interval": 2, "val_start_epoch": 19},
        "tiou": TIOU_EGO,
    },
    "ego4d": {
        "data": {"annotation_file": "data/ego4d/annotations/ego4d_v2_220429.json",
                 "class_map_file": "data/ego4d/annotations/category_idx.txt",
                 "video_dir": "data/ego4d/raw_data/MQ_data/mq_videos_short320", "video_prefix": "",
                 "block_list": None, "train_subset": "train", "test_subset": "val", "sampling": "sliding",
                 "window_size": 1800, "frame_stride": 8, "frames_per_position": 4, "fixed_fps": None,
                 "trunc_thresh": 0.3, "temporal_crop_ratio": (0.9, 1.0), "test_window_overlap": 0.0,
                 "train_resize_short": 220, "crop_size": 192, "test_resize_short": 192, "class_agnostic": False},
        "head": {"embed_dim": 512, "arch": (2, 2, 9), "regression_ranges": EGO4D_RANGES,
                 "mha_win_size": [17] * 7 + [-1] * 3, "use_abs_pe": True, "max_seq_len": 2048, "input_pdrop": 0.2,
                 "proj_pdrop": 0.1, "label_smoothing": 0.0, "init_loss_norm": 100.0, "loss_weight": 1.0,
                 "filter_similar_gt": False, "num_classes": 110},
        "inference": {"pre_nms_thresh": 0.001, "pre_nms_topk": 5000, "multiclass_nms": True, "nms_sigma": 2.0,
                      "max_seg_num": 2000, "min_score": 0.001, "voting_thresh": 0.0, "clip_before_nms": True},
        "train": {"lr": 1e-4, "adapter_lr": 4e-4, "epochs": 20, "schedule_epochs": 25, "warmup_epochs": 5,
                  "batch_size": 2, "val_interval": 1, "val_start_epoch": 12},
        "tiou": TIOU_EGO,
    },
    "side": {
        "data": THUMOS_DATA,
        "head": {"embed_dim": 512, "arch": (2, 2, 5), "regression_ranges": SIX_RANGES, "mha_win_size": -1,
                 "use_abs_pe": False, "max_seq_len": None, "input_pdrop": 0.1, "proj_pdrop": 0.0,
                 "label_smoothing": 0.0, "init_loss_norm": 100.0, "loss_weight": 1.0, "filter_similar_gt": True,
                 "num_classes": 20},
        "inference": {"pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "multiclass_nms": True, "nms_sigma": 0.7,
                      "max_seg_num": 2000, "min_score": 0.0, "voting_thresh": 0.0, "clip_before_nms": True},
        "train": {"lr": 1e-4, "adapter_lr": 2e-4, "schedule_epochs": 100, "warmup_epochs": 5, "val_interval": 2},
        "tiou": [0.3, 0.4, 0.5, 0.6, 0.7],
    },
}
L_SIZE = (1024, 24, 16, 16, None)  # width, depth, heads, patch, mlp_hidden_dim
G_SIZE = (1408, 40, 16, 14, 6144)


@dataclass(frozen=True)
class Row:
    stem: str  # OpenTAD's config stem = our file name = config `name` = the listing's name
    family: str
    size: tuple
    adapter_type: str  # "tia" (in-block adapters) or "ladder" (side network)
    adapter_layers: tuple[int, ...] | None  # None: every block
    adapter_mlp_ratio: float
    pretrain: str  # OpenTAD's `pretrain` file
    frames_per_position: int
    crop: int
    total: int  # OpenTAD: every parameter, the unused fc_norm of the adapter rows included
    backbone: int  # ViT + adapters (+ fc_norm)
    adapters: int
    projection: int
    head: int


L_EPIC = "pretrained/vit-large-p16_videomae-epic_{}.pth"
G_FILE = "pretrained/vit-giant-p14_videomaev2-hybrid_pt_1200e_k710_ft_my.pth"
ROWS = [
    Row("e2e_epic_videomae_l_ft_768x8_160_adapter_noun", "epic", L_SIZE, "tia", None, 0.25, L_EPIC.format("noun"), 8,
        160, 346_176_325, 318_077_976, 14_217_240, 24_488_960, 3_603_245),
    Row("e2e_epic_videomae_l_ft_768x8_160_adapter_verb", "epic", L_SIZE, "tia", None, 0.25, L_EPIC.format("verb"), 8,
        160, 345_875_073, 318_077_976, 14_217_240, 24_488_960, 3_301_993),
    Row("e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4", "ego4d", L_SIZE, "tia", tuple(range(12, 24)), 0.25,
        "pretrained/vit-large-p16_videomae_k700_mq_ft_internvideo.pth", 4, 192, 351_434_886, 310_969_356,
        7_108_620, 37_133_312, 3_321_978),
    Row("e2e_thumos_videomaev2_g_768x2_224_side_2e-4", "side", G_SIZE, "ladder", tuple(range(20, 40)), 0.125, G_FILE,
        2, 224, 1_050_457_648, 1_022_189_076, 10_581_140, 25_078_784, 3_183_644),
]
SIDE_S = "e2e_thumos_videomae_s_768x1_160_side"
IDS = [r.stem.removeprefix("e2e_").split("_videomae")[0] + "-" + r.stem.rsplit("_", 1)[-1] for r in ROWS]
BY_STEM = {r.stem: r for r in ROWS}
NECK = {"epic": 6_144, "ego4d": 10_240, "side": 6_144}


def config_path(stem: str) -> Path:
    return ZOO / f"{stem}.yaml"


def head_values(row: Row) -> dict:
    values = dict(FAMILIES[row.family]["head"])
    if row.family == "epic":  # nouns: 293 of 300 classes ever annotated, label smoothing 0.1; verbs: 97, none
        values.update(num_classes=293, label_smoothing=0.1) if row.stem.endswith("noun") else values.update(
            num_classes=97, label_smoothing=0.0)
    return values


# ---------------------------------------------------------------- the configs


def test_every_row_has_a_listing_and_a_config() -> None:
    listed = (Path(__file__).parent / "fixtures" / "opentad_zoo_keys" / "README.md").read_text()
    for row in ROWS:
        assert f"`{row.stem}.tsv`" in listed and config_path(row.stem).is_file(), row.stem
    assert config_path(SIDE_S).is_file() and not (Path(__file__).parent / "fixtures" / "opentad_zoo_keys" /
                                                   f"{SIDE_S}.tsv").exists()


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_config_holds_opentads_values(row: Row) -> None:
    cfg = load_config(config_path(row.stem))
    d, b, h, i, t = cfg.data, cfg.model.backbone, cfg.model.head, cfg.model.inference, cfg.train
    family = FAMILIES[row.family]
    assert cfg.name == row.stem
    for key, value in family["data"].items():
        if row.family == "side" and key in ("frame_stride", "window_size"):
            continue
        assert getattr(d, key) == value, f"data.{key}"
    if row.family == "epic":
        kind = row.stem.rsplit("_", 1)[-1]
        assert d.annotation_file == f"data/epic_kitchens-100/annotations/epic_kitchens_{kind}.json"
        assert d.class_map_file == f"data/epic_kitchens-100/annotations/category_idx_{kind}.txt"
    assert (d.frames_per_position, d.crop_size) == (row.frames_per_position, row.crop)
    assert (d.rrc_area_range, d.flip_ratio, d.color_jitter, d.image_augment) == (
        (0.08, 1.0), 0.5, (0.5, 0.5, 0.5, 0.1), True)
    dim, depth, heads, patch, hidden = row.size
    assert (b.embed_dim, b.depth, b.num_heads, b.patch_size, b.mlp_hidden_dim) == (dim, depth, heads, patch, hidden)
    assert (b.adapter_type, b.adapter_mlp_ratio) == (row.adapter_type, row.adapter_mlp_ratio)
    assert b.adapter_layers == (list(row.adapter_layers) if row.adapter_layers else None)
    # the ladder rows set no drop_path_rate (VisionTransformerLadder's default 0); the adapter rows 0.1
    assert b.drop_path_rate == (0.0 if row.adapter_type == "ladder" else 0.1)
    assert (b.tubelet_size, b.chunk_frames, b.pretrain_img_size) == (2, 16, 224)
    assert b.checkpoint == row.pretrain and b.activation_checkpointing
    for key, value in head_values(row).items():
        assert getattr(h, key) == value, f"model.head.{key}"
    assert (h.n_head, h.path_pdrop, h.num_convs, h.cls_prior_prob, h.feat_channels) == (4, 0.1, 2, 0.01, 512)
    assert (h.center_sample_radius, h.focal_alpha, h.focal_gamma, h.loss_norm_momentum) == (1.5, 0.25, 2.0, 0.9)
    for key, value in family["inference"].items():
        assert getattr(i, key) == value, f"model.inference.{key}"
    assert i.external_classifier is None
    for key, value in family["train"].items():
        assert getattr(t, key) == value, f"train.{key}"
    assert (t.backbone_lr, t.weight_decay, t.eta_min, t.ema, t.ema_decay, t.amp, t.clip_grad_norm) == (
        0.0, 0.05, 1e-8, True, 0.999, True, 1.0)
    if row.family == "side":  # the g 768x2 input, 50 epochs validated from 37 (SIDE_G's workflow)
        assert (d.train_resize_short, d.test_resize_short, t.epochs, t.val_start_epoch) == (256, 224, 50, 37)
    assert cfg.evaluation.tiou_thresholds == pytest.approx(family["tiou"])


def test_the_side_s_row_is_the_thumos_s_row_with_a_ladder() -> None:
    """SIDE_S differs from the S adapter row only in the backbone type, its ladder on blocks 6-11 (no
    drop path) and the projection's input dropout 0.1; OpenTAD publishes no model for it."""
    side = load_config(config_path(SIDE_S)).to_dict()
    adapter = load_config(config_path("e2e_thumos_videomae_s_768x1_160_adapter")).to_dict()
    b = side["model"]["backbone"]
    assert (b["adapter_type"], b["adapter_layers"], b["drop_path_rate"]) == ("ladder", list(range(6, 12)), 0.0)
    assert side["model"]["head"]["input_pdrop"] == 0.1
    for cfg in (side, adapter):
        cfg["model"]["backbone"].update(adapter_type=None, adapter_layers=None, drop_path_rate=None)
        cfg["model"]["head"]["input_pdrop"] = None
        cfg["name"] = None
    assert side == adapter


def test_epic_and_ego4d_need_opentads_two_gpu_layout() -> None:
    """OpenTAD trains both on 2 GPUs at a global batch of 2: `--profile opentad_2gpu` is that layout."""
    for stem in ("e2e_epic_videomae_l_ft_768x8_160_adapter_noun", "e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4"):
        plain = load_config(config_path(stem))
        laid_out = load_config(config_path(stem), profile="opentad_2gpu")
        assert (laid_out.train.batch_size, laid_out.runtime.num_workers, laid_out.train.val_batch_size) == (2, 2, 1)
        assert (laid_out.model, laid_out.data) == (plain.model, plain.data)


# ---------------------------------------------------------------- OpenTAD's detector and files


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_model_is_opentads_and_its_listing_maps_one_to_one(row: Row) -> None:
    model = build_model(load_config(config_path(row.stem)), device="meta")
    fc_norm = 0 if row.adapter_type == "ladder" else 2 * row.size[0]  # the ladder ViT has no fc_norm

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    backbone = model.encoder.backbone
    assert sum(p.numel() for n, p in backbone.named_parameters() if "adapter" in n) == row.adapters
    assert count(backbone) + fc_norm == row.backbone
    assert (count(model.head.projection), count(model.head.neck), count(model.head.heads)) == (
        row.projection, NECK[row.family], row.head)
    assert count(model) + fc_norm == row.total
    own = shapes_of(model)
    listing = meta_tensors(row.stem, prefix="module.")
    conversion = convert_opentad_state_dict(listing)
    assert conversion.unmapped == [] and len(conversion.dropped) == (0 if row.adapter_type == "ladder" else 2)
    assert len(conversion.weights) + len(conversion.dropped) + 1 == len(listing)  # + the ViT's checked table
    assert set(conversion.weights) == set(own)
    for ours, value in conversion.weights.items():
        assert tuple(value.shape) == own[ours][0], ours
    if row.adapter_type == "ladder":
        assert backbone.ladder_layers == list(row.adapter_layers) and backbone.adapter_layers == []
        assert len(backbone.ladders.adapters) == len(row.adapter_layers)
    else:
        assert backbone.adapter_layers == list(row.adapter_layers or range(row.size[1]))


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_published_file_loads_through_test_pys_reader(row: Row, tmp_path: Path) -> None:
    listing = read_listing(row.stem)
    path = published_file(listing, tmp_path / f"{row.stem}.pth", int(head_values(row)["init_loss_norm"]),
                          seed=len(row.stem))
    cfg = config_for_trained_file(None, str(config_path(row.stem)))  # test.py / detect.py: --config, no --set
    trained = read_trained(path, cfg)
    assert (trained.kind, trained.weights) == ("opentad", "ema")
    model = trained.state["model"]
    skipped = {f"{VIT}pos_embed", f"{VIT}fc_norm.weight", f"{VIT}fc_norm.bias"}
    assert set(model) == {expected_name(k) for k, _, _ in listing if k not in skipped}
    assert model["criterion.loss_normalizer"].dtype == torch.float32
    assert model["head.heads.cls_head.weight"].shape[0] == head_values(row)["num_classes"]
    if row.adapter_type == "ladder":
        assert sorted({int(k.split(".")[4]) for k in model if ".ladders." in k}) == list(range(20))
        assert not any(".adapter." in k for k in model)
    else:
        with_adapter = sorted({int(k.split(".")[3]) for k in model if ".adapter." in k})
        assert with_adapter == list(row.adapter_layers or range(row.size[1]))


def side_s_listing() -> list:
    """The side S detector's listing, derived from the S adapter row's (no published file or listing
    exists): its in-block adapters become the ladder adapters of blocks 6-11 (hidden 96, the same
    shapes), the ViT has no fc_norm, and the projection and head are the S row's."""
    listing = read_listing("e2e_thumos_videomae_s_768x1_160_adapter")
    template = [(BLOCK.match(k).group(2).removeprefix("adapter."), dt, s) for k, dt, s in listing
                if ".blocks.0.adapter." in k]
    out = []
    for key, dtype, shape in listing:
        if ".adapter." in key or ".fc_norm." in key:
            continue
        out.append((key, dtype, shape))
        if key == f"{VIT}blocks.11.mlp.layers.1.bias":
            out += [(f"{VIT}ladders.adapters.{i}.{rest}", dt, s) for i in range(6) for rest, dt, s in template]
    return out


def test_the_side_s_row_reads_a_file_of_its_derived_listing(tmp_path: Path) -> None:
    cfg = config_for_trained_file(None, str(config_path(SIDE_S)))
    listing = side_s_listing()
    model = build_model(cfg, device="meta")
    assert sum(p.numel() for p in model.parameters()) == sum(math.prod(s) for k, _, s in listing
                                                            if not k.endswith(("pos_embed", "loss_normalizer")))
    assert sum(p.numel() for p in model.encoder.backbone.ladders.parameters()) == 6 * 83_905
    trained = read_trained(published_file(listing, tmp_path / "side_s.pth", 100), cfg)
    assert len(trained.state["model"]) == len(listing) - 1  # minus the ViT's checked table


def one_patch_sets(row: Row, depth: int, layers: str) -> list[str]:
    patch = row.size[3]
    return [f"model.backbone.depth={depth}", f"model.backbone.adapter_layers={layers}", f"data.crop_size={patch}",
            f"data.train_resize_short={patch}", f"data.test_resize_short={patch}"]


TRAINED_ON_CPU = {"e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4", "e2e_thumos_videomaev2_g_768x2_224_side_2e-4"}


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_depth_reduced_copy_reads_its_file_and_detects(row: Row, tmp_path: Path) -> None:
    """The row's whole window (EPIC 768 x 8 = 6,144 frames, Ego4D 1,800 x 4 = 7,200 padded to 2,048
    positions) at a crop of one patch through 1 or 2 blocks at the full width: the EPIC rows with
    adapters in their one block, Ego4D with one in the second of two (as in 12-23 of 24), the side g
    with a ladder on both blocks; then the row's merge to seconds."""
    if row.adapter_type == "ladder":
        depth, layers = 2, "[0, 1]"
        listing = ladder_reduced(read_listing(row.stem), depth, 2)
    elif row.adapter_layers:
        depth, layers = 2, "[1]"
        listing = depth_reduced(read_listing(row.stem), depth, [1])
    else:
        depth, layers = 1, "null"
        listing = depth_reduced(read_listing(row.stem), depth, [0])
    cfg = load_config(config_path(row.stem), one_patch_sets(row, depth, layers))
    path = published_file(listing, tmp_path / f"{row.stem}_depth{depth}.pth", int(head_values(row)["init_loss_norm"]),
                          seed=3)
    trained = read_trained(path, cfg)
    model, _ = model_from_checkpoint(trained.state)  # as detect.py builds it: the file's weights, eval mode
    assert len(model.encoder.backbone.blocks) == depth

    positions, s, crop = cfg.data.window_size, cfg.data.frames_per_position, cfg.data.crop_size
    frames = torch.randint(0, 256, (1, positions * s, crop, crop, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    masks = torch.ones(1, positions, dtype=torch.bool)
    masks[0, positions - 7:] = False  # the window runs past the end of its video
    i = cfg.model.inference
    (window,) = model.predict(frames, masks, i.pre_nms_thresh, i.pre_nms_topk)
    assert 0 < len(window) <= i.pre_nms_topk
    assert torch.isfinite(window.segments).all() and ((window.scores > 0) & (window.scores <= 1)).all()
    seconds = window_to_seconds(window, 0.0, cfg.data.frame_stride, cfg.data.fixed_fps or 30.0)
    duration = (positions - 7) * cfg.data.frame_stride / 30.0
    merged = merge_video([seconds], sigma=i.nms_sigma, max_seg_num=i.max_seg_num, min_score=i.min_score,
                         multiclass=i.multiclass_nms, voting_thresh=i.voting_thresh, duration=duration,
                         clip_before_nms=i.clip_before_nms)
    assert 0 < len(merged) <= i.max_seg_num and (merged.segments <= duration).all()
    names = [f"id_{k:03d}" for k in range(cfg.model.head.num_classes)]
    assert len(detections_to_entries(merged, names)) == len(merged)

    if row.stem not in TRAINED_ON_CPU:
        return
    losses = model.train()(frames, masks, segments=torch.tensor([[[10.0, 60.0], [12.0, 64.0]]]),
                           labels=torch.tensor([[7, 3]]), num_segments=torch.tensor([2]))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    trainable = [p for n, p in model.named_parameters() if p.requires_grad]
    assert all(p.grad is not None for n, p in model.named_parameters() if "adapter" in n)
    assert all(not p.requires_grad for n, p in model.encoder.backbone.named_parameters() if "adapter" not in n)
    assert trainable and model.head.projection.embed[0].conv.weight.grad is not None


def test_ego4d_pads_1800_positions_to_2048_with_its_table() -> None:
    """The projection sees 2,048 positions (zeros and mask False after 1,800) with the absolute table of
    2,048 added unresized; every level holds whole positions of the padded length."""
    row = BY_STEM["e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4"]
    cfg = load_config(config_path(row.stem), ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"])
    model = build_model(cfg, device="meta")
    assert (model.head.pad_to, tuple(model.head.projection.pos_embed.shape)) == (2048, (1, 512, 2048))
    head = model.head.to_empty(device="cpu").eval()  # values do not matter: the levels' lengths and masks do
    with torch.no_grad():
        for p in head.parameters():
            p.normal_(0, 0.02, generator=torch.Generator().manual_seed(0))
        head.projection.pos_embed.zero_()
        _, _, level_masks = head(torch.randn(1, 1024, 1800), torch.ones(1, 1800, dtype=torch.bool))
    assert [m.shape[1] for m in level_masks] == [2048 // 2**k for k in range(10)]
    assert [int(m.sum()) for m in level_masks] == [math.ceil(1800 / 2**k) for k in range(10)]


def test_the_ego4d_file_is_refused_without_its_padded_table(tmp_path: Path) -> None:
    row = BY_STEM["e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4"]
    path = published_file(read_listing(row.stem), tmp_path / "ego4d.pth", 100)
    with pytest.raises(WeightsError, match=r"Ego4D-MQ detectors .* of 2048 positions .* "
                                           r"set model.head.use_abs_pe=true and model.head.max_seq_len=2048") as info:
        read_trained(path, load_config(config_path(row.stem), ["model.head.use_abs_pe=false"]))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- data conventions


def test_epic_annotations_load_at_30_fps_and_the_class_map_is_the_sorted_labels(tmp_path: Path) -> None:
    """OpenTAD's epic_kitchens_{noun,verb}.json: subsets train / val / test, `duration` only (no frame
    count: int(duration x 30) at fps=30), labels `id_NNN` beside `label_name`, test videos without
    annotations; without category_idx the class map is the json's labels sorted."""
    database = {
        "P01_01": {"subset": "train", "duration": 100.04, "annotations": [
            {"segment": [1.5, 3.25], "label": "id_012", "label_name": "tap"},
            {"segment": [2.0, 2.5], "label": "id_003", "label_name": "pan"}]},
        "P02_11": {"subset": "val", "duration": 300.0, "annotations": [
            {"segment": [10.0, 12.0], "label": "id_120", "label_name": "knife"}]},
        "P30_05": {"subset": "test", "duration": 50.0},
    }
    annotations = tmp_path / "epic_kitchens_noun.json"
    annotations.write_text(json.dumps({"version": "epic-kitchens-100-noun", "database": database}))
    row = BY_STEM["e2e_epic_videomae_l_ft_768x8_160_adapter_noun"]
    cfg = load_config(config_path(row.stem), [f"data.annotation_file={annotations}",
                                              f"data.class_map_file={tmp_path / 'category_idx_noun.txt'}",
                                              f"data.video_dir={tmp_path}", "model.head.num_classes=3"])
    names = resolve_class_names(cfg).names
    assert names == ["id_003", "id_012", "id_120"]
    d = cfg.data
    (train,), _ = load_annotations(annotations, d.video_dir, d.train_subset, names, fixed_fps=d.fixed_fps)
    (val,), _ = load_annotations(annotations, d.video_dir, d.test_subset, names, fixed_fps=d.fixed_fps)
    assert (train.num_frames, train.fps, val.num_frames) == (3001, 30.0, 9000)
    assert train.labels.tolist() == [1, 0] and val.path == str(tmp_path / "P02_11.mp4")
    # spec: 9,000 frames at snippet stride 16 are 563 snippets, 562 valid (the mask floors frames / 8)
    (plan,) = plan_test_windows(val, d)
    assert (len(plan.frame_indices), int(plan.mask.sum())) == (6144, 562)
    assert plan.frame_indices[1] - plan.frame_indices[0] == 2 and plan.frame_indices[-1] == 8998


def test_ego4d_annotations_keep_each_clips_frame_rate_and_a_480_s_clip_is_one_window(tmp_path: Path) -> None:
    """OpenTAD's ego4d_v2_220429.json: `frame` and `duration` per clip (fps = frame / duration, no fixed
    rate), subsets train / val / test. A 480-s clip at 30 fps is 1,800 positions: exactly one window."""
    database = {"clip_a": {"subset": "val", "duration": 480.0, "frame": 14400, "annotations": [
        {"segment": [3.0, 9.5], "label": "use_phone"}, {"segment": [3.0, 9.5], "label": "use_phone"}]},
        "clip_b": {"subset": "val", "duration": 300.0, "frame": 7500, "annotations": [
            {"segment": [1.0, 2.0], "label": "wash_dishes"}]}}
    annotations = tmp_path / "ego4d.json"
    annotations.write_text(json.dumps({"version": "v2", "database": database}))
    cfg = load_config(config_path("e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4"))
    records, _ = load_annotations(annotations, tmp_path, "val", ["use_phone", "wash_dishes"],
                                  fixed_fps=cfg.data.fixed_fps)
    a, b = records
    assert (a.fps, b.fps, len(a.segments)) == (30.0, 25.0, 1)  # an exact duplicate counts once
    (plan,) = plan_test_windows(a, cfg.data)
    assert (len(plan.frame_indices), int(plan.mask.sum()), plan.frame_indices[-1]) == (7200, 1800, 14398)


# ---------------------------------------------------------------- the VideoMAE-L files they train from


@pytest.mark.parametrize("layout", ["mmaction2", "original"])
def test_the_epic_and_internvideo_videomae_l_files_load(layout: str, tmp_path: Path) -> None:
    """OpenTAD loads `pretrain` with mmengine's `load_checkpoint` into its Recognizer3D, so the EPIC and
    InternVideo VideoMAE-L files it links are mmaction2 keys (flat, as its converter
    `convert_videomae_finetuned.py` saves them, with `fc_norm`, the saved table and a classifier of the
    fine-tuning's classes: 300 EPIC nouns here); the original InternVideo layout (`module`, `fc1`,
    `head`) loads too. One block at L's width, values compact."""
    torch.manual_seed(0)
    backbone = VideoMAEBackbone(embed_dim=1024, depth=1, num_heads=16, adapter_layers=[0])
    gen = torch.Generator().manual_seed(1)
    ours = {k: (torch.randn(v.shape[-1], generator=gen) * 0.02).expand(v.shape)
            for k, v in backbone.state_dict().items() if "adapter" not in k}
    if layout == "mmaction2":
        renames = [("patch_embed.proj.", "patch_embed.projection."), ("mlp.fc1.", "mlp.layers.0.0."),
                   ("mlp.fc2.", "mlp.layers.1.")]
        prefix, extra = "backbone.", {"backbone.pos_embed": torch.zeros(1, 1568, 1024),
                                      "backbone.fc_norm.weight": torch.ones(1024), "backbone.fc_norm.bias":
                                      torch.zeros(1024), "cls_head.fc_cls.weight": torch.zeros(300, 1024),
                                      "cls_head.fc_cls.bias": torch.zeros(300)}
    else:
        renames, prefix = [], ""
        extra = {"fc_norm.weight": torch.ones(1024), "fc_norm.bias": torch.zeros(1024),
                 "head.weight": torch.zeros(58, 1024), "head.bias": torch.zeros(58)}
    state = {}
    for key, value in ours.items():
        for old, new in renames:
            key = key.replace(old, new)
        state[prefix + key] = value
    state.update(extra)
    path = tmp_path / "vit-large-p16_videomae-epic_noun.pth"
    torch.save(state if layout == "mmaction2" else {"module": state}, path)
    report = load_videomae_checkpoint(backbone, path)
    assert report.unexpected == [] and all("adapter" in k for k in report.missing)
    loaded = backbone.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in ours.items())
    assert report.layout.startswith("mmaction2 keys at the top level" if layout == "mmaction2"
                                    else "original VideoMAE/VideoMAEv2 keys under 'module'")
