"""Config loading, composition, overrides and one-line validation errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from adatad.config import CONFIG_DIR, ConfigError, config_from_dict, load_config, parse_override, write_config

THUMOS = CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml"


def test_thumos_config_states_the_target_run() -> None:
    cfg = load_config(THUMOS)
    assert (cfg.data.window_size, cfg.data.frame_stride, cfg.data.crop_size) == (768, 4, 160)
    assert cfg.data.trunc_thresh == 0.75 and cfg.data.temporal_crop_ratio == (0.9, 1.0)
    assert cfg.data.rrc_area_range == (0.08, 1.0)
    b = cfg.model.backbone
    assert (b.embed_dim, b.depth, b.num_heads, b.adapter_mlp_ratio) == (384, 12, 6, 0.25)
    assert b.adapter_layers is None and b.activation_checkpointing
    t = cfg.train
    assert (t.lr, t.adapter_lr, t.backbone_lr, t.warmup_epochs, t.epochs, t.schedule_epochs) == (
        1e-4, 2e-4, 0.0, 5, 60, 100)
    assert t.amp and t.ema and t.ema_decay == 0.999 and t.clip_grad_norm == 1.0
    assert (t.batch_size, cfg.runtime.decode_actors, cfg.runtime.prefetch_batches) == (4, 6, 4)
    assert cfg.model.head.regression_ranges[-1] == (64.0, 10000.0)
    assert cfg.model.inference.nms_sigma == 0.7


def test_profiles_compose_over_the_experiment() -> None:
    cfg = load_config(THUMOS, profile="64gb")
    assert (cfg.train.batch_size, cfg.runtime.decode_actors, cfg.runtime.prefetch_batches) == (8, 12, 6)
    assert (cfg.train.val_batch_size, cfg.runtime.val_decode_actors) == (2, 4)
    assert cfg.model.backbone.embed_dim == 384  # untouched keys keep the experiment's values


def test_base_chain_and_override() -> None:
    cfg = load_config(CONFIG_DIR / "thumos_videomae_b_768x1_160_adapter.yaml", ["train.lr=3e-4", "data.flip_ratio=0"])
    assert cfg.model.backbone.embed_dim == 768 and cfg.model.backbone.depth == 12
    assert cfg.train.adapter_lr == 1e-4 and cfg.train.lr == 3e-4 and cfg.data.flip_ratio == 0.0


def test_synthetic_config_is_small() -> None:
    cfg = load_config(CONFIG_DIR / "synthetic.yaml")
    assert cfg.data.window_size < 768 and cfg.model.backbone.embed_dim < 384
    assert cfg.model.head.num_classes >= 2


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.lrr=1", "unknown key 'train.lrr' (did you mean 'train.lr'?)"),
        ("train.lr=-1", "train.lr: -1.0 is invalid, expected >= 0"),
        ("train.epochs=abc", "train.epochs: expected an integer, got 'abc'"),
        ("data.window_size=100", "data.window_size: 100 is invalid, expected a positive multiple of"),
        ("train.amp=3", "train.amp: expected true/false, got 3"),
        ("data.temporal_crop_ratio=[0.9]", "data.temporal_crop_ratio: expected 2 values, got 1"),
        ("model.backbone.adapter_layers=[0, 12]", "model.backbone.adapter_layers: [0, 12] is invalid"),
        ("train.batch_size=3", "train.batch_size: 3 is invalid"),
    ],
)
def test_bad_values_name_the_key(override: str, message: str) -> None:
    extra = ["runtime.num_workers=2"] if override.startswith("train.batch_size") else []
    with pytest.raises(ConfigError) as info:
        load_config(THUMOS, [override, *extra])
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_bad_override_syntax_and_profile() -> None:
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        parse_override("train.lr")
    with pytest.raises(ConfigError, match="expected KEY.PATH=VALUE"):
        parse_override("train..lr=1")
    with pytest.raises(ConfigError, match="profile 'huge' does not exist .*32gb, 64gb"):
        load_config(THUMOS, profile="huge")


def test_unknown_key_in_file_and_invalid_yaml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"_base_: {THUMOS}\nmodel:\n  backbon:\n    depth: 2\n")
    with pytest.raises(ConfigError, match="unknown key 'model.backbon' \\(did you mean 'model.backbone'\\?\\)"):
        load_config(bad)
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="broken.yaml: line"):
        load_config(broken)
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_missing_checkpoint_is_refused_unless_random_init_allowed() -> None:
    with pytest.raises(ConfigError, match="model.backbone.checkpoint: not set"):
        load_config(THUMOS, ["model.backbone.checkpoint=null"])
    cfg = load_config(THUMOS, ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"])
    assert cfg.model.backbone.checkpoint is None


def test_init_from_stands_in_for_the_backbone_checkpoint() -> None:
    cfg = load_config(THUMOS, ["model.backbone.checkpoint=null", "model.init_from=pretrained/adatad_s_thumos.pth"])
    assert cfg.model.init_from == "pretrained/adatad_s_thumos.pth" and not cfg.model.backbone.allow_random_init
    assert load_config(THUMOS).model.init_from is None
    with pytest.raises(ConfigError, match="or model.init_from to a trained AdaTAD/OpenTAD file"):
        load_config(THUMOS, ["model.backbone.checkpoint=null"])
    with pytest.raises(ConfigError, match="model.init_from: ' ' is invalid, expected the path of a trained model"):
        load_config(THUMOS, ["model.init_from=' '"])
    with pytest.raises(ConfigError, match="model.init_from: expected a string, got 3"):
        load_config(THUMOS, ["model.init_from=3"])


def test_effective_config_round_trips(tmp_path: Path) -> None:
    cfg = load_config(THUMOS, ["train.epochs=7"], profile="64gb")
    out = write_config(cfg, tmp_path / "run" / "config.yaml")
    assert yaml.safe_load(out.read_text())["train"]["epochs"] == 7
    assert load_config(out) == cfg
    assert config_from_dict(cfg.to_dict()) == cfg
    assert not list(out.parent.glob(".*.tmp"))  # no temp file left behind


def test_relative_paths_resolve_against_adatad_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = load_config(THUMOS)
    monkeypatch.delenv("ADATAD_ROOT", raising=False)
    assert cfg.resolve_path("data/x.json") == str(CONFIG_DIR.parent / "data" / "x.json")
    monkeypatch.setenv("ADATAD_ROOT", str(tmp_path))
    assert cfg.resolve_path("data/x.json") == str(tmp_path / "data" / "x.json")
    assert cfg.resolve_path("/abs/y") == "/abs/y"


def test_backbone_lr_other_than_zero_is_refused() -> None:
    """The ViT is frozen: a non-zero backbone lr would silently do nothing, so it is an error."""
    with pytest.raises(ConfigError, match=r"train.backbone_lr: 0.0001 is invalid, expected 0 \(the VideoMAE backbone"):
        load_config(CONFIG_DIR / "synthetic.yaml", ["train.backbone_lr=1e-4"])


def test_videomaev2_g_geometry_is_accepted() -> None:
    """Patch 14 at 160 px (floored to 11 x 11 tokens, as OpenTAD does), an MLP of 6144 = 48/11 x 1408,
    adapters on blocks 20-39; S keeps its defaults (MLP from the ratio)."""
    g = ["model.backbone.embed_dim=1408", "model.backbone.depth=40", "model.backbone.num_heads=16",
         "model.backbone.patch_size=14", "model.backbone.mlp_hidden_dim=6144",
         "model.backbone.adapter_layers=[20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, "
         "38, 39]"]
    b = load_config(THUMOS, g).model.backbone
    assert (b.patch_size, b.mlp_hidden_dim, b.adapter_layers) == (14, 6144, list(range(20, 40)))
    assert load_config(THUMOS).model.backbone.mlp_hidden_dim is None


@pytest.mark.parametrize(("override", "message"), [
    ("model.backbone.mlp_hidden_dim=0",
     "model.backbone.mlp_hidden_dim: 0 is invalid, expected null (= int(embed_dim * mlp_ratio)) or >= 1"),
    ("model.backbone.mlp_hidden_dim=6144.5", "model.backbone.mlp_hidden_dim: expected an integer, got 6144.5"),
    ("model.backbone.mlp_ratio=0", "model.backbone.mlp_ratio: 0.0 is invalid, expected > 0"),
    ("data.crop_size=12", "data.crop_size: 12 is invalid, expected >= model.backbone.patch_size (16)"),
    ("model.backbone.patch_size=0", "model.backbone.patch_size: 0 is invalid, expected >= 1"),
    ("model.backbone.pretrain_img_size=8",
     "model.backbone.pretrain_img_size: 8 is invalid, expected >= model.backbone.patch_size (16)"),
    ("model.backbone.adapter_layers=[3, 3]", "model.backbone.adapter_layers: [3, 3] is invalid, expected distinct"),
])
def test_bad_backbone_geometry_names_the_key(override: str, message: str) -> None:
    extra = ["data.train_resize_short=12", "data.test_resize_short=12"] if override.startswith("data.crop") else []
    with pytest.raises(ConfigError) as info:
        load_config(THUMOS, [override, *extra])
    assert message in str(info.value) and "\n" not in str(info.value)


# ---------------------------------------------------------------- ActivityNet / Charades keys


def test_new_head_and_inference_keys_default_to_the_thumos_behaviour() -> None:
    h, i = load_config(THUMOS).model.head, load_config(THUMOS).model.inference
    assert (h.label_smoothing, h.loss_weight, h.input_pdrop, h.proj_pdrop, h.use_abs_pe, h.max_seq_len) == (
        0.0, 1.0, 0.0, 0.0, False, None)
    assert (i.pre_nms_thresh, i.pre_nms_topk, i.multiclass_nms, i.voting_thresh, i.clip_before_nms) == (
        0.001, 2000, True, 0.0, True)
    assert (i.external_classifier, i.external_classifier_type, i.external_classifier_topk) == (None, "cuhk", 2)


def test_recipe_keys_reach_the_model() -> None:
    """Each key of OpenTAD's ActivityNet / Charades rows, as build_model hands it on (meta device)."""
    import torch

    from adatad.models.build import build_model

    cfg = load_config(THUMOS, ["model.backbone.checkpoint=null", "model.backbone.allow_random_init=true",
                               "model.head.label_smoothing=0.1", "model.head.loss_weight=2.0",
                               "model.head.input_pdrop=0.3", "model.head.proj_pdrop=0.2",
                               "model.head.use_abs_pe=true", "model.head.max_seq_len=384"])
    model = build_model(cfg, device="meta")
    assert (model.criterion.label_smoothing, model.criterion.loss_weight) == (0.1, 2.0)
    proj = model.head.projection
    assert isinstance(proj.input_drop, torch.nn.Dropout1d) and proj.input_drop.p == 0.3
    assert proj.stem[0].attn.proj_drop.p == 0.2 and proj.branch[0].mlp[2].p == 0.2
    assert tuple(proj.pos_embed.shape) == (1, 512, 384)
    default = build_model(load_config(THUMOS, ["model.backbone.checkpoint=null",
                                               "model.backbone.allow_random_init=true",
                                               "model.head.use_abs_pe=true"]), device="meta")
    assert tuple(default.head.projection.pos_embed.shape) == (1, 512, 768)  # null: data.window_size


def test_null_disables_the_pre_nms_threshold_and_top_k() -> None:
    i = load_config(THUMOS, ["model.inference.pre_nms_thresh=null", "model.inference.pre_nms_topk=null"]).model.inference
    assert i.pre_nms_thresh is None and i.pre_nms_topk is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.head.label_smoothing=1.0", "model.head.label_smoothing: 1.0 is invalid, expected in [0, 1)"),
        ("model.head.input_pdrop=-0.1", "model.head.input_pdrop: -0.1 is invalid"),
        ("model.head.proj_pdrop=1", "model.head.proj_pdrop: 1.0 is invalid"),
        ("model.head.max_seq_len=0", "model.head.max_seq_len: 0 is invalid, expected null (= data.window_size) "
                                     "or >= 1"),
        ("model.head.max_seq_len=1000", "model.head.max_seq_len: 1000 is invalid, expected divisible by "
                                        "2**model.head.arch[2] (32): the features of data.window_size=768 positions "
                                        "are padded to it"),
        ("model.head.mha_win_size=1", "model.head.mha_win_size: 1 is invalid, expected -1 (global) or a local window "
                                      "> 1, once or once per level (6 for arch [2, 2, 5])"),
        ("model.head.mha_win_size=[9, 9, 9]", "model.head.mha_win_size: [9, 9, 9] is invalid"),
        ("model.head.filter_similar_gt=maybe", "model.head.filter_similar_gt: expected true/false"),
        ("model.backbone.adapter_type=side", "model.backbone.adapter_type: 'side' is invalid, expected one of tia, "
                                             "plain, ladder, none"),
        ("model.head.use_abs_pe=yes please", "model.head.use_abs_pe: expected true/false"),
        ("model.inference.pre_nms_topk=0", "model.inference.pre_nms_topk: 0 is invalid, expected >= 1, or null"),
        ("model.inference.pre_nms_thresh=1.5", "model.inference.pre_nms_thresh: 1.5 is invalid"),
        ("model.inference.voting_thresh=1.2", "model.inference.voting_thresh: 1.2 is invalid, expected in [0, 1]"),
        ("model.inference.external_classifier_type=uniformer",
         "model.inference.external_classifier_type: 'uniformer' is invalid, expected one of cuhk, standard"),
        ("model.inference.external_classifier_topk=0", "model.inference.external_classifier_topk: 0 is invalid"),
        ("model.inference.external_classifier=cuhk.json",
         "model.inference.external_classifier: 'cuhk.json' is invalid, expected null for a detector of 20 classes"),
    ],
)
def test_bad_new_keys_name_the_key(override: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(THUMOS, [override])
    assert message in str(info.value) and "\n" not in str(info.value)


def test_an_external_classifier_goes_with_a_one_class_head() -> None:
    cfg = load_config(THUMOS, ["model.head.num_classes=1", "model.inference.external_classifier=c.json",
                               "model.inference.external_classifier_type=standard"])
    assert cfg.model.inference.external_classifier == "c.json"


TEN_RANGES = ("model.head.regression_ranges=[[0, 4], [2, 8], [4, 16], [8, 32], [16, 64], [32, 128], [64, 256], "
              "[128, 512], [256, 1024], [512, 10000]]")
EGO4D_WINDOW = ["data.window_size=1800", "data.frame_stride=8", "data.frames_per_position=4", "model.head.arch=[2, 2, 9]",
                TEN_RANGES]


def test_a_table_longer_than_the_window_pads_the_features_and_windows_go_per_level() -> None:
    """Ego4D's keys: 1,800 positions padded to max_seq_len 2,048 (the level check applies to 2,048, which
    2**9 divides, not to 1,800), a window per level, every GT's class at a point, a side network."""
    cfg = load_config(THUMOS, [*EGO4D_WINDOW, "model.head.max_seq_len=2048",
                               "model.head.mha_win_size=[17, 17, 17, 17, 17, 17, 17, -1, -1, -1]",
                               "model.head.filter_similar_gt=false"])
    h = cfg.model.head
    assert (h.max_seq_len, h.mha_win_size, h.filter_similar_gt) == (2048, [17] * 7 + [-1] * 3, False)
    with pytest.raises(ConfigError, match=r"data.window_size: 1800 is invalid, expected divisible by "
                                          r"2\*\*model.head.arch\[2\] \(512\)"):
        load_config(THUMOS, EGO4D_WINDOW)  # without the padding
    assert load_config(THUMOS).model.head.filter_similar_gt is True
    assert load_config(THUMOS, ["model.backbone.adapter_type=ladder"]).model.backbone.adapter_type == "ladder"
