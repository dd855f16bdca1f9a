"""configs/opentad/: one config per published THUMOS-family AdaTAD row of OpenTAD, named as OpenTAD
names its config, checked against OpenTAD's values and its state-dict listings.

For each of the 12 rows (THUMOS-14 and Multi-THUMOS x VideoMAE-S/B/L/H/v2-g at 768x1 160 px and
v2-g at 768x2 224 px):
- the config composes, validates, and holds the values of OpenTAD's config and its `_base_` chain,
  written out below independently of the YAML (`ROWS`, `DATASETS`, `BACKBONES`);
- a published file (`{"epoch", "state_dict_ema"}`, `module.` prefix) with exactly the listing's keys,
  dtypes and shapes (tests/fixtures/opentad_zoo_keys/) is read by `read_trained` (what test.py and
  detect.py use) with that config, every tensor landing on its expected name; the model is built on
  the meta device and the file's tensors are one random row each, expanded (torch.save keeps the
  small storage), so the 1.1 B-parameter g rows stay far below 1 GB of memory;
- a depth-reduced copy (2 blocks at the full width; the README's `--set` keys) reads a depth-reduced
  file and runs one forward + predict + merge on CPU at a tiny crop.
"""

from __future__ import annotations

import resource
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from adatad.config import CONFIG_DIR, load_config
from adatad.data.class_names import resolve_class_names
from adatad.models.build import model_from_checkpoint
from adatad.models.trained import read_trained
from adatad.postprocess import detections_to_entries, merge_video
from adatad.trained_settings import config_for_trained_file
from tests.opentad_listing import VIT, depth_reduced, expected_name, read_listing, videomae_table

ZOO = CONFIG_DIR / "opentad"
README = CONFIG_DIR.parent / "README.md"
POS_EMBED = VIT + "pos_embed"
LOSS_NORM = "rpn_head.loss_normalizer"


@dataclass(frozen=True)
class ZooRow:
    stem: str            # OpenTAD's config stem = our file name = config `name`
    dataset: str         # key of DATASETS
    backbone: str        # key of BACKBONES
    scaled: bool         # the 768x2 224-px rows: 2 frames per position, adapters in blocks 20-39
    adapter_lr: float
    epochs: int
    val_start_epoch: int

    @property
    def adapter_layers(self) -> list[int] | None:
        return list(range(20, 40)) if self.scaled else None


# OpenTAD @3dd7b03, configs/adatad/{thumos,multi_thumos}/<stem>.py and their _base_ chains. The
# THUMOS g 768x2 file derives from the S file and sets no optimizer: its adapter lr is S's 2e-4.
ROWS = [
    ZooRow("e2e_thumos_videomae_s_768x1_160_adapter", "thumos", "S", False, 2e-4, 60, 40),
    ZooRow("e2e_thumos_videomae_b_768x1_160_adapter", "thumos", "B", False, 1e-4, 60, 40),
    ZooRow("e2e_thumos_videomae_l_768x1_160_adapter", "thumos", "L", False, 1e-4, 60, 40),
    ZooRow("e2e_thumos_videomae_h_768x1_160_adapter", "thumos", "H", False, 1e-4, 60, 40),
    ZooRow("e2e_thumos_videomaev2_g_768x1_160_adapter", "thumos", "g", False, 1e-4, 60, 40),
    ZooRow("e2e_thumos_videomaev2_g_768x2_224_adapter", "thumos", "g", True, 2e-4, 50, 37),
    ZooRow("e2e_multithumos_videomae_s_768x1_160_adapter", "multithumos", "S", False, 4e-4, 80, 49),
    ZooRow("e2e_multithumos_videomae_b_768x1_160_adapter", "multithumos", "B", False, 4e-4, 80, 49),
    ZooRow("e2e_multithumos_videomae_l_768x1_160_adapter", "multithumos", "L", False, 4e-4, 80, 49),
    ZooRow("e2e_multithumos_videomae_h_768x1_160_adapter", "multithumos", "H", False, 1e-4, 80, 49),
    ZooRow("e2e_multithumos_videomaev2_g_768x1_160_adapter", "multithumos", "g", False, 1e-4, 80, 49),
    ZooRow("e2e_multithumos_videomaev2_g_768x2_224_adapter", "multithumos", "g", True, 1e-4, 80, 49),
]
# The ActivityNet-1.3 and Charades rows: checked in tests/test_anet_charades_zoo.py (their values differ
# from the THUMOS family's in sampling, head and post-processing); the EPIC-KITCHENS-100, Ego4D-MQ and
# side-tuning rows (and OpenTAD's unpublished side S config, which the side g row builds on) in
# tests/test_epic_ego4d_side_zoo.py; listed here so that the folder holds exactly those configs.
OTHER_STEMS = [
    "e2e_anet_videomae_s_192x4_160_adapter", "e2e_anet_videomae_b_192x4_160_adapter",
    "e2e_anet_videomae_l_192x4_160_adapter", "e2e_anet_videomae_h_192x4_160_adapter",
    "e2e_anet_videomaev2_g_192x4_160_adapter", "e2e_anet_videomaev2_g_192x4_224_adapter",
    "e2e_anet_videomaev2_g_192x4_224_adapter_internvideo", "e2e_anet_videomaev2_g_192x4_224_adapter_internvideo2",
    "e2e_anet_videomae_l_192x4_224_adapter_cls",
    "e2e_charades_videomae_s_512x1_160_adapter", "e2e_charades_videomae_b_512x1_160_adapter",
    "e2e_charades_videomae_l_512x1_160_adapter", "e2e_charades_videomae_h_512x1_160_adapter",
    "e2e_charades_videomaev2_g_512x1_160_adapter",
    "e2e_epic_videomae_l_ft_768x8_160_adapter_noun", "e2e_epic_videomae_l_ft_768x8_160_adapter_verb",
    "e2e_ego4d_internvideo_1800x4_192_adapter_lr4e-4",
    "e2e_thumos_videomae_s_768x1_160_side", "e2e_thumos_videomaev2_g_768x2_224_side_2e-4",
]
DATASETS = {
    "thumos": {"annotation_file": "data/thumos-14/annotations/thumos_14_anno.json",
               "class_map_file": "configs/thumos14_classes.txt", "num_classes": 20, "arch": (2, 2, 5),
               "pre_nms_topk": 2000, "nms_sigma": 0.7, "max_seg_num": 2000,
               "tiou": [0.3, 0.4, 0.5, 0.6, 0.7]},
    "multithumos": {"annotation_file": "data/multithumos/annotations/multithumos_anno.json",
                    "class_map_file": "configs/multithumos_classes.txt", "num_classes": 65, "arch": (3, 0, 5),
                    "pre_nms_topk": 8000, "nms_sigma": 0.5, "max_seg_num": 8000,
                    "tiou": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]},
}
# width, depth, heads, patch, MLP width (the g's mlp_ratio 48/11 x 1408), OpenTAD's `pretrain` file
BACKBONES = {
    "S": (384, 12, 6, 16, 1536, "vit-small-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"),
    "B": (768, 12, 12, 16, 3072, "vit-base-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-860a3cd3.pth"),
    "L": (1024, 24, 16, 16, 4096, "vit-large-p16_videomae-k400-pre_16x4x1_kinetics-400_20221013-229dbb03.pth"),
    "H": (1280, 32, 16, 16, 5120, "vit-huge-p16_videomae-k400-pre_16x4x1_kinetics-400_my.pth"),
    "g": (1408, 40, 16, 14, 6144, "vit-giant-p14_videomaev2-hybrid_pt_1200e_k710_ft_my.pth"),
}


def row_id(row: ZooRow) -> str:
    return row.stem.removeprefix("e2e_").removesuffix("_adapter")


def config_path(row: ZooRow) -> Path:
    return ZOO / f"{row.stem}.yaml"


def depth_reducing_sets(row: ZooRow) -> list[str]:
    """The `--set` keys the README gives for a CPU run of a big row: 2 blocks, an adapter in each
    (the 768x2 rows: in the second only, as in blocks 20-39 of 40)."""
    layers = "[1]" if row.scaled else "null"
    return ["model.backbone.depth=2", f"model.backbone.adapter_layers={layers}"]


# ---------------------------------------------------------------- OpenTAD-layout files


def published_file(listing: list, path: Path, seed: int) -> dict[str, torch.Tensor]:
    """Save OpenTAD's published layout; values: one random row per tensor, expanded to its shape
    (distinct per tensor, kilobytes on disk), at std 0.02 (at std 1 the activations of a deep ViT
    overflow, and a detect.py run on the file finds nothing). Returns the tensors by key without
    `module.`."""
    gen = torch.Generator().manual_seed(seed)
    weights = {}
    for key, dtype, shape in listing:
        if key == POS_EMBED:
            value = videomae_table(shape[-2], shape[-1])[None]
        elif key == LOSS_NORM:
            value = torch.tensor(100)  # int64, as OpenTAD's EMA copy holds it
        elif not shape:
            value = 0.02 * torch.randn((), generator=gen)
        else:
            value = (0.02 * torch.randn(shape[-1], generator=gen)).expand(shape)
        assert value.dtype == dtype and tuple(value.shape) == shape, key
        weights[key] = value
    torch.save({"epoch": 59, "state_dict_ema": {f"module.{k}": v for k, v in weights.items()}}, path)
    return weights


def first_row(t: torch.Tensor) -> torch.Tensor:
    """A view of the first row of the last dimension: enough to tell two compact tensors apart."""
    return t[(0,) * (t.dim() - 1)] if t.dim() else t


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # tiny ops: faster on one thread (conftest)


# ---------------------------------------------------------------- the configs


def test_the_folder_holds_one_config_per_published_row_and_a_readme() -> None:
    stems = [r.stem for r in ROWS] + OTHER_STEMS
    assert sorted(p.name for p in ZOO.iterdir()) == sorted([f"{stem}.yaml" for stem in stems] + ["README.md"])
    listed = (ZOO / "README.md").read_text()
    zoo_section = README.read_text().split("## Model zoo", 1)[1].split("\n## ", 1)[0]
    for stem in stems:
        # README's zoo table names each row's config in its first column (the command template takes it)
        assert f"{stem}.yaml" in listed and f"| `{stem}` |" in zoo_section, stem


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_the_config_holds_opentads_values(row: ZooRow) -> None:
    cfg = load_config(config_path(row))
    d, b, h, i, t = cfg.data, cfg.model.backbone, cfg.model.head, cfg.model.inference, cfg.train
    ds = DATASETS[row.dataset]
    dim, depth, heads, patch, hidden, pretrain = BACKBONES[row.backbone]
    assert cfg.name == row.stem
    # data: dataset base, then the row's pipeline (768x2 rows: scale_factor 2, 256 -> 224 px)
    assert (d.annotation_file, d.class_map_file) == (ds["annotation_file"], ds["class_map_file"])
    assert (d.video_dir, d.video_ext, d.train_subset, d.test_subset) == (
        "data/thumos-14/raw_data/video", "mp4", "training", "validation")
    assert (d.window_size, d.frame_stride, d.trunc_thresh, d.temporal_crop_ratio, d.test_window_overlap) == (
        768, 4, 0.75, (0.9, 1.0), 0.5)
    assert (d.frames_per_position, d.train_resize_short, d.crop_size, d.test_resize_short) == (
        (2, 256, 224, 224) if row.scaled else (1, 182, 160, 160))
    assert (d.rrc_area_range, d.flip_ratio, d.color_jitter, d.image_augment) == (
        (0.08, 1.0), 0.5, (0.5, 0.5, 0.5, 0.1), True)
    # backbone
    assert (b.embed_dim, b.depth, b.num_heads, b.patch_size) == (dim, depth, heads, patch)
    assert (b.mlp_hidden_dim or int(b.embed_dim * b.mlp_ratio)) == hidden
    assert b.adapter_layers == row.adapter_layers and b.adapter_type == "tia" and b.adapter_mlp_ratio == 0.25
    assert (b.tubelet_size, b.chunk_frames, b.pretrain_img_size, b.drop_path_rate) == (2, 16, 224, 0.1)
    assert b.checkpoint == f"pretrained/{pretrain}" and b.activation_checkpointing
    # head (BASE_AF, the row's projection and rpn_head)
    assert (h.num_classes, h.arch, h.embed_dim, h.n_head, h.mha_win_size) == (
        ds["num_classes"], ds["arch"], 512, 4, -1)
    assert h.regression_ranges == [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]
    assert (h.center_sample_radius, h.focal_alpha, h.focal_gamma, h.init_loss_norm, h.loss_norm_momentum) == (
        1.5, 0.25, 2.0, 100.0, 0.9)
    # post-processing
    assert (i.pre_nms_thresh, i.pre_nms_topk, i.nms_sigma, i.max_seg_num, i.min_score) == (
        0.001, ds["pre_nms_topk"], ds["nms_sigma"], ds["max_seg_num"], 0.0)
    # optimiser, schedule, workflow
    assert (t.lr, t.adapter_lr, t.backbone_lr, t.weight_decay, t.eta_min) == (1e-4, row.adapter_lr, 0.0, 0.05, 1e-8)
    assert (t.epochs, t.schedule_epochs, t.warmup_epochs) == (row.epochs, 100, 5)
    assert (t.val_interval, t.val_start_epoch, t.ema, t.ema_decay, t.amp, t.clip_grad_norm) == (
        2, row.val_start_epoch, True, 0.999, True, 1.0)
    assert cfg.evaluation.tiou_thresholds == pytest.approx(ds["tiou"])


def test_the_multithumos_class_map_is_opentads_generated_order() -> None:
    """OpenTAD's `get_class_index` writes the json's labels sorted with Python's `sort`; the 20
    THUMOS-14 classes are among the 65."""
    names = [n for n in (CONFIG_DIR / "multithumos_classes.txt").read_text().splitlines() if n.strip()]
    thumos = (CONFIG_DIR / "thumos14_classes.txt").read_text().split()
    assert len(names) == len(set(names)) == 65 and names == sorted(names)
    assert set(thumos) <= set(names) and names.index("ShotPutBend") < names.index("Shotput")


def test_the_mlflow_model_of_a_run_is_named_after_its_config() -> None:
    from pipelines.tracking.model import MODEL_NAME, model_name

    assert [model_name(load_config(config_path(r)).name) for r in ROWS] == [r.stem for r in ROWS]
    assert model_name("sweep/trial 3:lr=1e-4") == "sweep_trial_3_lr_1e-4"  # MLflow refuses / : . % " '
    assert model_name(" ../ ") == MODEL_NAME == "model"


# ---------------------------------------------------------------- OpenTAD's published files


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_a_published_file_is_read_with_the_config(row: ZooRow, tmp_path: Path) -> None:
    listing = read_listing(row.stem)
    path = tmp_path / f"{row.stem}.pth"
    weights = published_file(listing, path, seed=len(row.stem))
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    cfg = config_for_trained_file(None, str(config_path(row)))  # test.py / detect.py: --config, no --set
    trained = read_trained(path, load_config(config_path(row)))
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before) / 1024
    assert grown_mib < 512, f"reading {row.stem} raised peak memory by {grown_mib:.0f} MiB"
    assert (trained.kind, trained.weights) == ("opentad", "ema")
    model = trained.state["model"]
    expected = {expected_name(k): k for k in weights if k not in (POS_EMBED, f"{VIT}fc_norm.weight",
                                                                  f"{VIT}fc_norm.bias")}
    assert set(model) == set(expected) and len(model) == len(listing) - 3
    for ours, theirs in expected.items():
        assert torch.equal(first_row(model[ours]), first_row(weights[theirs]).to(model[ours].dtype)), ours
    assert model["criterion.loss_normalizer"].dtype == torch.float32
    assert model["head.heads.cls_head.weight"].shape == (DATASETS[row.dataset]["num_classes"], 512, 3)
    with_adapter = sorted({int(k.split(".")[3]) for k in model if ".adapter." in k})
    assert with_adapter == (row.adapter_layers or list(range(BACKBONES[row.backbone][1])))
    # the class names test.py and detect.py take without the data set: the shipped class map
    names = resolve_class_names(cfg)
    assert len(names.names) == cfg.model.head.num_classes and names.source.endswith(
        DATASETS[row.dataset]["class_map_file"])


# ---------------------------------------------------------------- depth-reduced copies on CPU


@pytest.mark.parametrize("row", ROWS, ids=row_id)
def test_a_depth_reduced_copy_reads_its_file_and_detects(row: ZooRow, tmp_path: Path) -> None:
    """The README's depth-reducing `--set` keys with a depth-reduced file; then one window through
    the model built from that file as detect.py builds it (full width, 2 blocks, a tiny crop of
    2 x 2 patches, 64 positions) and the per-video merge with the row's soft-NMS."""
    patch = BACKBONES[row.backbone][3]
    crop = 2 * patch
    sets = depth_reducing_sets(row) + [f"data.crop_size={crop}", f"data.train_resize_short={crop}",
                                       f"data.test_resize_short={crop}", "data.window_size=64"]
    cfg = load_config(config_path(row), sets)
    listing = depth_reduced(read_listing(row.stem), 2, [1] if row.scaled else [0, 1])
    path = tmp_path / f"{row.stem}_depth2.pth"
    published_file(listing, path, seed=3)
    trained = read_trained(path, cfg)
    assert len(trained.state["model"]) == len(listing) - 3
    model, _ = model_from_checkpoint(trained.state)  # as detect.py builds it: the file's weights, eval mode

    blocks = model.encoder.backbone.blocks
    assert len(blocks) == 2 and [blk.adapter is not None for blk in blocks] == [not row.scaled, True]
    s = cfg.data.frames_per_position
    frames = torch.randint(0, 256, (1, 64 * s, crop, crop, 3), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    masks = torch.ones(1, 64, dtype=torch.bool)
    masks[0, 50:] = False  # the window runs past the end of its video
    i = cfg.model.inference
    (window,) = model.predict(frames, masks, pre_nms_thresh=i.pre_nms_thresh, pre_nms_topk=i.pre_nms_topk)
    points = sum(64 // 2**level for level in range(6))
    assert 0 < len(window) <= min(i.pre_nms_topk, points * cfg.model.head.num_classes)
    assert torch.isfinite(window.segments).all() and ((window.scores > 0) & (window.scores <= 1)).all()
    merged = merge_video([window], sigma=i.nms_sigma, max_seg_num=i.max_seg_num, min_score=i.min_score)
    entries = detections_to_entries(merged, resolve_class_names(cfg).names)
    assert len(entries) == len(merged) > 0
