"""OpenTAD's 14 ActivityNet-1.3 and Charades AdaTAD rows: the configs in configs/opentad/.

For each row (tests/fixtures/opentad_zoo_keys/README.md) the config `configs/opentad/<stem>.yaml`:
- composes, validates and holds the values of OpenTAD's config and its `_base_` chain, written out
  below independently of the YAML (`ROWS`, `FAMILIES`, `BACKBONES`);
- builds OpenTAD's detector (meta device): its parameter split, and its state-dict listing mapped
  one to one onto ours;
- reads a random file with exactly the row's keys in OpenTAD's published layout through
  `read_trained`, with the config as test.py builds it (`config_for_trained_file`);
- reads a depth-reduced file (1 or 2 ViT blocks at the full width, via `--set` keys) and the
  model detect.py builds from it predicts on the CPU with the position table equal to the sinusoid
  formula, then merges (and names the classes through a video classifier file of the row's kind) as
  the row's post-processing says; the S row of each head family and the `_cls` row also train a step.
Then the refusals: a config that would run such a file without its position table (which no file
holds), with a table of another length, or a THUMOS file with one; and OpenTAD's GPU layouts
(configs/profiles/opentad_{anet,charades}_*gpu.yaml) over the rows.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.data.class_names import resolve_class_names
from adatad.models.build import build_model, model_from_checkpoint
from adatad.models.opentad_keys import OPENTAD_ZOO_HEADS, convert_opentad_state_dict, zoo_head_of
from adatad.models.trained import read_trained
from adatad.models.weights import WeightsError, shapes_of
from adatad.postprocess import detections_to_entries, merge_video, window_to_seconds
from adatad.trained_settings import config_for_trained_file
from adatad.video_classifier import load_video_classifier
from tests.opentad_listing import LISTINGS, depth_reduced, meta_tensors, published_file, read_listing

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ZOO = CONFIG_DIR / "opentad"
THUMOS = CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml"
# width, depth, heads, patch, MLP width (the g's mlp_ratio 48/11 x 1408), OpenTAD's `pretrain` file
BACKBONES = {
    "S": (384, 12, 6, 16, 1536, "vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"),
    "B": (768, 12, 12, 16, 3072, "vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-860a3cd3.pth"),
    "L": (1024, 24, 16, 16, 4096, "vit-large-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-229dbb03.pth"),
    "H": (1280, 32, 16, 16, 5120, "vit-huge-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"),
    "g": (1408, 40, 16, 14, 6144, "vit-giant-p14_videomaev2-hybrid_pt_1200e_k710_ft_my.pth"),
}
ANET_TIOU = [0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95]
SIX_RANGES = [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]

# OpenTAD @3dd7b03: ANET_DS = configs/_base_/datasets/activitynet-1.3/e2e_resize_768_1x224x224.py,
# ANET_S = configs/adatad/anet/e2e_anet_videomae_s_192x4_160_adapter.py (every ActivityNet row's
# _base_), ANET_CLS = .../e2e_anet_videomae_l_192x4_224_adapter_cls.py, CHA_DS =
# configs/_base_/datasets/charades/e2e_train_trunc_test_sw_s4_512x1_224.py, CHA_S =
# configs/adatad/charades/e2e_charades_videomae_s_512x1_160_adapter.py, BASE_AF =
# configs/_base_/models/actionformer.py. Values after the `_base_` chain.
ANET_DATA = {
    "annotation_file": "data/activitynet-1.3/annotations/activity_net.v1-3.min.json",
    "class_map_file": "data/activitynet-1.3/annotations/category_idx.txt",
    "video_dir": "data/activitynet-1.3/raw_data/Anet_videos_15fps_short256", "video_prefix": "v_",
    "video_ext": "mp4",
    "block_list": "data/activitynet-1.3/raw_data/Anet_videos_15fps_short256/missing_files.txt",
    "train_subset": "training", "test_subset": "validation", "sampling": "resize", "window_size": 192,
    "frames_per_position": 4, "class_agnostic": True, "min_segment_fraction": 0.01, "fixed_fps": None,
}
FAMILIES = {
    "anet": {
        "data": ANET_DATA,
        "head": {"num_classes": 1, "embed_dim": 256, "feat_channels": 256, "arch": (2, 2, 5),
                 "regression_ranges": SIX_RANGES, "use_abs_pe": True, "max_seq_len": 192, "label_smoothing": 0.1,
                 "loss_weight": 2.0, "init_loss_norm": 200.0, "input_pdrop": 0.0, "proj_pdrop": 0.0},
        "inference": {"pre_nms_thresh": None, "pre_nms_topk": None, "multiclass_nms": False, "nms_sigma": 0.7,
                      "max_seg_num": 100, "min_score": 0.001, "voting_thresh": 0.9, "clip_before_nms": False},
        "train": {"lr": 1e-3, "epochs": 15, "schedule_epochs": 15, "warmup_epochs": 5, "batch_size": 16,
                  "val_interval": 1, "val_start_epoch": 8},
        "tiou": ANET_TIOU,
    },
    "anet_cls": {
        "data": {**ANET_DATA, "class_agnostic": False},
        "head": {"num_classes": 200, "embed_dim": 512, "feat_channels": 512, "arch": (2, 2, 5),
                 "regression_ranges": SIX_RANGES, "use_abs_pe": True, "max_seq_len": 192, "label_smoothing": 0.1,
                 "loss_weight": 1.0, "init_loss_norm": 200.0, "input_pdrop": 0.0, "proj_pdrop": 0.0},
        # post_processing `_delete_=True`: the nms dict alone, the pre-NMS code defaults 0.001 / 2000;
        # voting_thresh 0.9 stays in the file but the per-class NMS never votes
        "inference": {"pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "multiclass_nms": True, "nms_sigma": 0.75,
                      "max_seg_num": 100, "min_score": 0.001, "voting_thresh": 0.9, "clip_before_nms": False},
        "train": {"lr": 1e-3, "epochs": 15, "schedule_epochs": 20, "warmup_epochs": 5, "batch_size": 16,
                  "val_interval": 1, "val_start_epoch": 10},
        "tiou": ANET_TIOU,
    },
    "charades": {
        "data": {"annotation_file": "data/charades/annotations/charades.json",
                 "class_map_file": "data/charades/annotations/category_idx.txt",
                 "video_dir": "data/charades/raw_data/Charades_v1_480_30fps", "video_prefix": "", "video_ext": "mp4",
                 "block_list": None, "train_subset": "training", "test_subset": "testing", "sampling": "sliding",
                 "window_size": 512, "frames_per_position": 1, "class_agnostic": False,
                 "min_segment_fraction": 0.0, "fixed_fps": 30.0},
        "head": {"num_classes": 157, "embed_dim": 512, "feat_channels": 512, "arch": (2, 2, 7),
                 "regression_ranges": SIX_RANGES[:-1] + [(64, 128), (128, 256), (256, 10000)], "use_abs_pe": True,
                 "max_seq_len": 512, "label_smoothing": 0.0, "loss_weight": 1.0, "init_loss_norm": 100.0,
                 "input_pdrop": 0.3, "proj_pdrop": 0.0},
        # min_score: the nms dict sets none, batched_nms's default 0; voting_thresh 0.7 there is never
        # used by the per-class NMS (0 here, as in the THUMOS rows)
        "inference": {"pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "multiclass_nms": True, "nms_sigma": 0.3,
                      "max_seg_num": 1000, "min_score": 0.0, "voting_thresh": 0.0, "clip_before_nms": True},
        "train": {"lr": 1e-4, "epochs": 20, "schedule_epochs": 20, "warmup_epochs": 5, "batch_size": 16,
                  "val_interval": 1, "val_start_epoch": 7},
        "tiou": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
    },
}
CUHK = ("data/activitynet-1.3/classifiers/cuhk_val_simp_7.json", "cuhk")
INTERNVIDEO = ("data/activitynet-1.3/classifiers/new_3ensemble_uniformerv2_large_only_global_anet_16x10x3.json",
               "standard")
INTERNVIDEO2 = ("data/activitynet-1.3/classifiers/anet_UMTv2_6B_k710+K40_f16_frozenTuning.json_converted.json",
                "standard")
G_HALF = tuple(range(20, 40))


@dataclass(frozen=True)
class Row:
    stem: str  # OpenTAD's config stem = our file name = config `name` = the listing's name
    family: str  # key of FAMILIES
    backbone: str  # key of BACKBONES
    crop: int  # 160: short side 182 -> 160 in training, 160 at test; 224: 256 -> 224, 224
    adapter_layers: tuple[int, ...] | None  # None: every block
    adapter_lr: float
    classifier: tuple[str, str] | None  # external classifier (path, kind)
    total: int  # OpenTAD: every parameter, the unused fc_norm included
    projection: int
    neck: int
    head: int


def anet(stem, backbone, crop, layers, classifier, total, projection):
    return Row(stem, "anet", backbone, crop, layers, 1e-4, classifier, total, projection, 3_072, 790_793)


def charades(stem, backbone, adapter_lr, total, projection):
    return Row(stem, "charades", backbone, 160, None, adapter_lr, None, total, projection, 8_192, 3_394_215)


ROWS = [
    charades("e2e_charades_videomae_s_512x1_160_adapter", "S", 4e-4, 56_117_299, 29_828_096),
    charades("e2e_charades_videomae_b_512x1_160_adapter", "B", 4e-4, 124_051_891, 30_417_920),
    charades("e2e_charades_videomae_l_512x1_160_adapter", "L", 2e-4, 352_291_519, 30_811_136),
    charades("e2e_charades_videomae_h_512x1_160_adapter", "H", 1e-4, 695_807_431, 31_204_352),
    charades("e2e_charades_videomaev2_g_512x1_160_adapter", "g", 8e-5, 1_091_160_399, 31_400_960),
    anet("e2e_anet_videomae_s_192x4_160_adapter", "S", 160, None, CUHK, 29_731_989, 6_051_328),
    anet("e2e_anet_videomae_b_192x4_160_adapter", "B", 160, None, CUHK, 97_371_669, 6_346_240),
    anet("e2e_anet_videomae_l_192x4_160_adapter", "L", 160, None, CUHK, 325_414_689, 6_542_848),
    anet("e2e_anet_videomae_h_192x4_160_adapter", "H", 160, None, CUHK, 668_733_993, 6_739_456),
    anet("e2e_anet_videomaev2_g_192x4_160_adapter", "g", 160, None, CUHK, 1_063_988_657, 6_837_760),
    anet("e2e_anet_videomaev2_g_192x4_224_adapter", "g", 224, G_HALF, CUHK, 1_041_615_517, 6_837_760),
    anet("e2e_anet_videomaev2_g_192x4_224_adapter_internvideo", "g", 224, G_HALF, INTERNVIDEO, 1_041_615_517,
         6_837_760),
    anet("e2e_anet_videomaev2_g_192x4_224_adapter_internvideo2", "g", 224, G_HALF, INTERNVIDEO2, 1_041_615_517,
         6_837_760),
    Row("e2e_anet_videomae_l_192x4_224_adapter_cls", "anet_cls", "L", 224, None, 8e-5, None, 346_033_384,
        24_488_960, 6_144, 3_460_304),
]
IDS = [r.stem.removeprefix("e2e_").removesuffix("_adapter").replace("_adapter_", "_") for r in ROWS]
BY_STEM = {r.stem: r for r in ROWS}


def config_path(row: Row) -> Path:
    return ZOO / f"{row.stem}.yaml"


def reduced_depth(row: Row) -> int:
    """The fewest ViT blocks that keep the row's adapter pattern: 1 (adapters in every block), 2 for
    the rows whose adapters start at block 20 (a block without, then a block with one)."""
    return 2 if row.adapter_layers else 1


def depth_reducing_sets(row: Row) -> list[str]:
    """The `--set` keys of a CPU copy (as README "Model zoo" gives them for the THUMOS rows, with fewer
    blocks): `reduced_depth` blocks at the full width, adapters where the row has them, one patch."""
    crop = BACKBONES[row.backbone][3]
    layers = "[1]" if row.adapter_layers else "null"
    return [f"model.backbone.depth={reduced_depth(row)}", f"model.backbone.adapter_layers={layers}",
            f"data.crop_size={crop}", f"data.train_resize_short={crop}", f"data.test_resize_short={crop}"]


def row_file(row: Row, path: Path) -> Path:
    return published_file(read_listing(row.stem), path, int(FAMILIES[row.family]["head"]["init_loss_norm"]),
                          seed=len(row.stem))


def formula_table(length: int, channels: int) -> torch.Tensor:
    """The projection's table written out in plain Python floats (float64), as spec'd: cast to
    float32, then divided by sqrt(C) in float32. (1, C, T)."""
    rows = [[t / math.pow(10000.0, 2 * (j // 2) / channels) for j in range(channels)] for t in range(length)]
    table = [[math.sin(a) if j % 2 == 0 else math.cos(a) for j, a in enumerate(r)] for r in rows]
    return torch.tensor(table, dtype=torch.float64).float().T[None] / (channels**0.5)


# ---------------------------------------------------------------- the configs


def test_every_row_has_a_listing_and_a_config() -> None:
    listed = (LISTINGS / "README.md").read_text()
    for row in ROWS:
        assert f"`{row.stem}.tsv`" in listed and config_path(row).is_file(), row.stem
    assert len(ROWS) == len(BY_STEM) == 14


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_config_holds_opentads_values(row: Row) -> None:
    cfg = load_config(config_path(row))
    d, b, h, i, t = cfg.data, cfg.model.backbone, cfg.model.head, cfg.model.inference, cfg.train
    family = FAMILIES[row.family]
    dim, depth, heads, patch, hidden, pretrain = BACKBONES[row.backbone]
    assert cfg.name == row.stem
    # data: files, subsets, sampling (ActivityNet: resize 192 x 4; Charades: 512 x 1 windows at 30 fps)
    for key, value in family["data"].items():
        assert getattr(d, key) == value, f"data.{key}"
    assert (d.frame_stride, d.temporal_crop_ratio, d.test_window_overlap) == (4, (0.9, 1.0), 0.5)
    if row.family == "charades":  # random_trunc threshold 0.5 (unused by the resize sampling)
        assert d.trunc_thresh == 0.5
    # pixels: the row's pipeline
    assert (d.train_resize_short, d.crop_size, d.test_resize_short) == (
        (256, 224, 224) if row.crop == 224 else (182, 160, 160))
    assert (d.rrc_area_range, d.flip_ratio, d.color_jitter, d.image_augment) == (
        (0.08, 1.0), 0.5, (0.5, 0.5, 0.5, 0.1), True)
    # backbone
    assert (b.embed_dim, b.depth, b.num_heads, b.patch_size) == (dim, depth, heads, patch)
    assert (b.mlp_hidden_dim or int(b.embed_dim * b.mlp_ratio)) == hidden
    expected_layers = list(row.adapter_layers) if row.adapter_layers else None
    assert b.adapter_layers == expected_layers and b.adapter_type == "tia" and b.adapter_mlp_ratio == 0.25
    assert (b.tubelet_size, b.chunk_frames, b.pretrain_img_size, b.drop_path_rate) == (2, 16, 224, 0.1)
    assert b.checkpoint == f"pretrained/{pretrain}" and b.activation_checkpointing
    # projection, neck, head (BASE_AF and the row's projection / rpn_head)
    for key, value in family["head"].items():
        assert getattr(h, key) == value, f"model.head.{key}"
    assert (h.n_head, h.mha_win_size, h.path_pdrop, h.num_convs, h.cls_prior_prob) == (4, -1, 0.1, 2, 0.01)
    assert (h.center_sample_radius, h.focal_alpha, h.focal_gamma, h.loss_norm_momentum) == (1.5, 0.25, 2.0, 0.9)
    # post-processing and the video classifier
    for key, value in family["inference"].items():
        assert getattr(i, key) == value, f"model.inference.{key}"
    classifier = (i.external_classifier, i.external_classifier_type) if i.external_classifier else None
    assert classifier == row.classifier
    assert i.external_classifier_topk == 2
    # optimiser, schedule, workflow
    for key, value in family["train"].items():
        assert getattr(t, key) == value, f"train.{key}"
    assert (t.adapter_lr, t.backbone_lr, t.weight_decay, t.eta_min) == (row.adapter_lr, 0.0, 0.05, 1e-8)
    assert (t.ema, t.ema_decay, t.amp, t.clip_grad_norm) == (True, 0.999, True, 1.0)
    assert cfg.evaluation.tiou_thresholds == pytest.approx(family["tiou"])


def test_the_classifier_rows_share_one_detector() -> None:
    """The InternVideo rows are the g 224 row's detector (identical listings) with another classifier."""
    base = load_config(config_path(BY_STEM["e2e_anet_videomaev2_g_192x4_224_adapter"]))
    for suffix in ("_internvideo", "_internvideo2"):
        other = load_config(ZOO / f"e2e_anet_videomaev2_g_192x4_224_adapter{suffix}.yaml")
        assert (other.data, other.model.backbone, other.model.head, other.train) == (
            base.data, base.model.backbone, base.model.head, base.train)
        assert other.model.inference.external_classifier != base.model.inference.external_classifier
        assert read_listing(f"e2e_anet_videomaev2_g_192x4_224_adapter{suffix}") == read_listing(
            "e2e_anet_videomaev2_g_192x4_224_adapter")


def test_without_category_idx_the_class_map_is_the_jsons_sorted_labels(tmp_path: Path) -> None:
    """OpenTAD generates category_idx.txt as the sorted labels of the json when it is missing; the
    configs name OpenTAD's path, so a data folder without it gets that order (157 Charades classes)."""
    labels = [f"c{k:03d}" for k in range(157)][::-1]
    database = {f"V{k}": {"subset": "testing", "duration": 30.0, "annotations": [
        {"segment": [1.0, 2.0], "label": label}]} for k, label in enumerate(labels)}
    annotations = tmp_path / "charades.json"
    annotations.write_text(json.dumps({"database": database}))
    row = BY_STEM["e2e_charades_videomae_s_512x1_160_adapter"]
    cfg = load_config(config_path(row), [f"data.annotation_file={annotations}",
                                         f"data.class_map_file={tmp_path / 'category_idx.txt'}"])
    names = resolve_class_names(cfg)
    assert names.names == sorted(labels) and names.source == f"the labels of {annotations}"


@pytest.mark.parametrize("profile, stems, workers", [
    ("opentad_anet_4gpu", [r.stem for r in ROWS if r.family.startswith("anet") and r.crop == 160]
     + ["e2e_anet_videomae_l_192x4_224_adapter_cls"], 4),
    ("opentad_anet_8gpu", ["e2e_anet_videomaev2_g_192x4_224_adapter"], 8),
    ("opentad_charades_2gpu", [r.stem for r in ROWS if r.family == "charades" and r.backbone != "g"], 2),
    ("opentad_charades_4gpu", ["e2e_charades_videomaev2_g_512x1_160_adapter"], 4),
])
def test_opentads_gpu_layouts_split_the_rows_batch(profile: str, stems: list[str], workers: int) -> None:
    """OpenTAD's README: ActivityNet on 4 GPUs (the g 224 rows on 8), Charades on 2 (the g on 4),
    global batch 16 (and val/test batch 16) divided among them; only batch and loader settings change."""
    for stem in stems:
        plain = load_config(ZOO / f"{stem}.yaml")
        laid_out = load_config(ZOO / f"{stem}.yaml", profile=profile)
        assert (laid_out.train.batch_size, laid_out.runtime.num_workers) == (16, workers)
        assert laid_out.train.val_batch_size * workers == 16 and laid_out.runtime.use_gpu
        loader_workers = 8 if stem.startswith("e2e_anet") else 4  # solver.train.num_workers per process
        assert laid_out.runtime.decode_actors == laid_out.runtime.val_decode_actors == loader_workers * workers
        assert (laid_out.model, laid_out.data, laid_out.evaluation) == (plain.model, plain.data, plain.evaluation)
        assert laid_out.train.batch_size == plain.train.batch_size


# ---------------------------------------------------------------- OpenTAD's detector and files


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_the_model_is_opentads_and_its_listing_maps_one_to_one(row: Row) -> None:
    model = build_model(load_config(config_path(row)), device="meta")
    fc_norm = 2 * BACKBONES[row.backbone][0]  # OpenTAD's unused fc_norm, which this project does not build

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    assert count(model.head.projection) == row.projection
    assert count(model.head.neck) == row.neck
    assert count(model.head.heads) == row.head
    assert count(model) + fc_norm == row.total
    assert model.head.strides == [2**i for i in range(len(model.head.neck.norms))]
    # the listing, mapped
    own = shapes_of(model)
    listing = meta_tensors(row.stem, prefix="module.")
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
    head = FAMILIES[row.family]["head"]
    assert tuple(table.shape) == (1, head["embed_dim"], head["max_seq_len"])


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_published_file_loads_through_test_pys_reader(row: Row, tmp_path: Path) -> None:
    path = row_file(row, tmp_path / f"{row.stem}.pth")
    cfg = config_for_trained_file(None, str(config_path(row)))  # test.py / detect.py: --config, no --set
    trained = read_trained(path, cfg)
    assert (trained.kind, trained.weights) == ("opentad", "ema")
    model = trained.state["model"]
    assert len(model) == len(read_listing(row.stem)) - 3  # minus fc_norm (2) and the ViT's checked table
    assert model["criterion.loss_normalizer"].dtype == torch.float32
    head = trained.state["config"]["model"]["head"]
    assert (head["use_abs_pe"], head["max_seq_len"]) == (True, FAMILIES[row.family]["head"]["max_seq_len"])
    assert model["head.heads.cls_head.weight"].shape[0] == FAMILIES[row.family]["head"]["num_classes"]
    with_adapter = sorted({int(k.split(".")[3]) for k in model if ".adapter." in k})
    assert with_adapter == list(row.adapter_layers or range(BACKBONES[row.backbone][1]))


def write_classifier(path: Path, video: str, kind: str) -> Path:
    """A video classifier file of OpenTAD's layout: 5 classes, one video (`v_` stripped, as the
    CUHK file names them)."""
    key = "class" if kind == "cuhk" else "classes"
    path.write_text(json.dumps({"results": {video.removeprefix("v_"): [0.1, 0.5, 0.05, 0.3, 0.05]},
                                key: ["a", "b", "c", "d", "e"]}))
    return path


TRAINED_ON_CPU = {"e2e_anet_videomae_s_192x4_160_adapter", "e2e_charades_videomae_s_512x1_160_adapter",
                  "e2e_anet_videomae_l_192x4_224_adapter_cls"}


@pytest.mark.parametrize("row", ROWS, ids=IDS)
def test_a_depth_reduced_copy_reads_its_file_and_detects(row: Row, tmp_path: Path) -> None:
    """1 or 2 ViT blocks at the row's width, a crop of one patch, the row's whole head, window and
    position table: the model detect.py builds from a depth-reduced file predicts one window, which
    is merged, clipped and named as the row's post-processing says; the S row of each head family
    and the `_cls` row train a step too."""
    cfg = load_config(config_path(row), depth_reducing_sets(row))
    depth = reduced_depth(row)
    listing = depth_reduced(read_listing(row.stem), depth, [1] if row.adapter_layers else [0])
    path = published_file(listing, tmp_path / f"{row.stem}_depth{depth}.pth",
                          int(FAMILIES[row.family]["head"]["init_loss_norm"]), seed=3)
    trained = read_trained(path, cfg)
    assert len(trained.state["model"]) == len(listing) - 3
    model, _ = model_from_checkpoint(trained.state)  # as detect.py builds it: the file's weights, eval mode
    blocks = model.encoder.backbone.blocks
    assert [blk.adapter is not None for blk in blocks] == ([False, True] if row.adapter_layers else [True])

    # the position table: built by the model (in no file), equal to the formula at the row's length
    positions, s, crop = cfg.data.window_size, cfg.data.frames_per_position, cfg.data.crop_size
    table = model.head.projection.pos_embed
    assert torch.equal(table, formula_table(positions, cfg.model.head.embed_dim))

    frames = torch.randint(0, 256, (1, positions * s, crop, crop, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    masks = torch.ones(1, positions, dtype=torch.bool)
    masks[0, positions - 7:] = False
    i = cfg.model.inference
    (window,) = model.predict(frames, masks, i.pre_nms_thresh, i.pre_nms_topk)
    assert torch.isfinite(window.segments).all() and ((window.scores > 0) & (window.scores <= 1)).all()
    if row.family == "anet":  # no threshold, no top-k: every valid position of every level, label 0
        valid = sum(math.ceil((positions - 7) / 2**level) for level in range(len(model.head.strides)))
        assert len(window) == valid and window.labels.eq(0).all()
    else:
        assert 0 < len(window) <= i.pre_nms_topk

    # to seconds and the per-video merge, as validation and detect.py do for this row
    duration = 40.0
    if cfg.data.sampling == "resize":  # position / N x duration
        seconds = window_to_seconds(window, 0.0, 1.0, positions / duration)
    else:  # (position x 4 + window start) / 30
        seconds = window_to_seconds(window, 0.0, cfg.data.frame_stride, cfg.data.fixed_fps)
    merged = merge_video([seconds], sigma=i.nms_sigma, max_seg_num=i.max_seg_num, min_score=i.min_score,
                         multiclass=i.multiclass_nms, voting_thresh=i.voting_thresh, duration=duration,
                         clip_before_nms=i.clip_before_nms)
    assert 0 < len(merged) <= i.max_seg_num
    assert (merged.segments >= 0).all() and (merged.segments <= duration).all()
    if i.external_classifier:  # the classes come from the video classifier: top 2, OpenTAD's fusion
        kind = i.external_classifier_type
        classifier = load_video_classifier(str(write_classifier(tmp_path / "cls.json", "v_demo", kind)), kind)
        fused = classifier.fuse(merged, "v_demo", i.external_classifier_topk)
        n = len(merged)
        assert len(fused) == 2 * n and fused.labels[:n].eq(1).all() and fused.labels[n:].eq(3).all()
        expected = merged.scores.double() * 0.5  # the best class's p; OpenTAD's StandardClassifier: sqrt
        expected = expected.sqrt() if row.classifier[1] == "standard" else expected
        assert torch.allclose(fused.scores[:n].double(), expected, rtol=1e-6)
        entries = detections_to_entries(fused, classifier.class_names)
        assert {e["label"] for e in entries} == {"b", "d"}
    else:
        names = [f"class {k}" for k in range(cfg.model.head.num_classes)]
        assert len(detections_to_entries(merged, names)) == len(merged)

    if row.stem not in TRAINED_ON_CPU:
        return
    label = 0 if cfg.data.class_agnostic else 7  # data.class_agnostic gives the one-class head label 0
    losses = model.train()(frames, masks, segments=torch.tensor([[[10.0, 60.0], [0.0, 0.0]]]),
                           labels=torch.tensor([[label, -1]]), num_segments=torch.tensor([1]))
    assert all(torch.isfinite(v) for v in losses.values())
    losses["loss"].backward()
    assert model.head.projection.embed[0].conv.weight.grad is not None


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("stem, setting, message", [
    ("e2e_charades_videomae_s_512x1_160_adapter", "model.head.use_abs_pe=false",
     "Charades detectors .* set model.head.use_abs_pe=true and model.head.max_seq_len=512"),
    ("e2e_anet_videomae_s_192x4_160_adapter", "model.head.use_abs_pe=false",
     "ActivityNet-1.3 \\(class-agnostic\\) .* model.head.max_seq_len=192"),
    ("e2e_anet_videomae_s_192x4_160_adapter", "model.head.max_seq_len=96",
     "of 192 positions .* the config has max_seq_len=96"),
    ("e2e_anet_videomae_l_192x4_224_adapter_cls", "model.head.use_abs_pe=false", "200-class head"),
], ids=["charades-off", "anet-off", "anet-short-table", "anet-cls-off"])
def test_a_zoo_file_is_refused_without_its_position_table(stem, setting, message, tmp_path) -> None:
    row = BY_STEM[stem]
    path = row_file(row, tmp_path / "model.pth")
    with pytest.raises(WeightsError, match=message) as info:
        read_trained(path, load_config(config_path(row), [setting]))
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_a_thumos_file_is_refused_with_a_position_table(tmp_path) -> None:
    path = published_file(read_listing("e2e_thumos_videomae_s_768x1_160_adapter"), tmp_path / "thumos.pth", 100)
    random_vit = ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"]
    assert read_trained(path, load_config(THUMOS, random_vit)).kind == "opentad"
    with pytest.raises(WeightsError, match="THUMOS-14 detectors .* have no absolute position embedding"):
        read_trained(path, load_config(THUMOS, random_vit + ["model.head.use_abs_pe=true"]))


def test_zoo_heads_are_distinct_and_name_every_abs_pe_row() -> None:
    keys = [(z.embed_dim, z.levels, z.num_classes) for z in OPENTAD_ZOO_HEADS]
    assert len(set(keys)) == len(keys)
    with_table = {z.dataset.split(" ")[0] for z in OPENTAD_ZOO_HEADS if z.use_abs_pe}
    assert with_table == {"Charades", "ActivityNet-1.3", "Ego4D-MQ"}
    assert zoo_head_of(512, 8, 157).max_seq_len == 512 and zoo_head_of(384, 6, 3) is None
