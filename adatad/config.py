"""Typed run configuration: YAML files composed from a base, profiles and `--set` overrides.

One dataclass per group of settings (every value is explained in docs/recipe.md) (data, model, train, runtime, tracking). Loading rejects
unknown keys (with a "did you mean"), wrong types and impossible values, always naming the full
key path, so a typo fails in the first second instead of after an hour of decoding.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from adatad.atomic import atomic_write_text

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = PROJECT_ROOT / "configs"


def work_root() -> Path:
    """Base of relative data/run/tracking paths: $ADATAD_ROOT, else the project folder.

    A `ray job submit --working-dir .` runs from an uploaded copy of the code without data/ or
    runs/; setting ADATAD_ROOT (runtime env) points relative paths back at the real project.
    """
    root = os.environ.get("ADATAD_ROOT")
    return Path(root).expanduser().resolve() if root else PROJECT_ROOT


def resolve_path(path: str) -> str:
    """A config path made absolute: relative to :func:`work_root` (Ray workers chdir elsewhere).
    A URI (`s3://...`, `adatad.locations`) is a location already and stays as given."""
    if "://" in path and not path.startswith("file://"):
        return path
    p = Path(os.path.expanduser(path.removeprefix("file://")))
    return str(p if p.is_absolute() else (work_root() / p).resolve())


PROFILE_DIR = CONFIG_DIR / "profiles"
BASE_KEY = "_base_"


# Merged into the config of a model whose every weight comes from a trained file (a checkpoint, an
# OpenTAD .pth): neither the VideoMAE file nor model.init_from is read (or needs to exist) then.
WEIGHTS_FROM_TRAINED_FILE: dict[str, Any] = {
    "model": {"init_from": None, "backbone": {"checkpoint": None, "allow_random_init": True}}}


# model.inference.external_classifier_type: OpenTAD's CUHKANETClassifier and StandardClassifier.
EXTERNAL_CLASSIFIER_TYPES: tuple[str, ...] = ("cuhk", "standard")


class ConfigError(ValueError):
    """A config problem, reported as one line naming the file and/or key path."""


@dataclass
class DataConfig:
    """Where the videos and annotations are, and how windows and pixels are sampled."""

    annotation_file: str = "data/thumos-14/annotations/thumos_14_anno.json"
    video_dir: str = "data/thumos-14/raw_data/video"
    class_map_file: str | None = None
    video_ext: str = "mp4"
    train_subset: str = "training"
    test_subset: str = "validation"
    window_size: int = 768  # positions N per window (the detector's sequence length)
    frame_stride: int = 4  # snippet stride: raw frames between two positions
    # Frames read per position (OpenTAD's scale_factor; 2 for the VideoMAEv2-g 768x2 rows): a window
    # reads window_size * frames_per_position frames at stride frame_stride / frames_per_position,
    # and the encoder resizes its features back to window_size positions (docs/recipe.md §2).
    frames_per_position: int = 1
    trunc_thresh: float = 0.75
    temporal_crop_ratio: tuple[float, float] = (0.9, 1.0)
    test_window_overlap: float = 0.5
    max_segments: int = 128
    train_resize_short: int = 182
    crop_size: int = 160
    rrc_area_range: tuple[float, float] = (0.08, 1.0)
    rrc_aspect_range: tuple[float, float] = (0.75, 4.0 / 3.0)
    flip_ratio: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.5, 0.5, 0.5, 0.1)
    image_augment: bool = True
    test_resize_short: int = 160
    decode_threads: int = 1
    max_decode_failures: int = 10
    # ActivityNet and Charades (docs/recipe.md, "ActivityNet and Charades: data"):
    # "sliding" = random truncation for training, overlapping windows for test (THUMOS, Charades);
    # "resize" = every video read whole as one window of window_size positions x frames_per_position
    # frames, in training and test (ActivityNet: 192 x 4).
    sampling: str = "sliding"
    video_prefix: str = ""  # file of video <id>: video_dir/<video_prefix><id>.<video_ext> (ActivityNet: "v_")
    # A file of video ids (one per line, or a json list) left out of training, test and evaluation:
    # OpenTAD's block_list (missing_files.txt) and ActivityNet's blocked.json.
    block_list: str | None = None
    # Frame rate that places windows and converts positions to seconds, frame count int(duration x
    # fixed_fps), whatever the json or the decoder says (Charades: 30); null = the video's own.
    fixed_fps: float | None = None
    class_agnostic: bool = False  # train every segment as class 0 (a 1-class head; classes come from a classifier)
    # Training drops segments no longer than this share of their video (OpenTAD's filter_gt on
    # ActivityNet: 0.01); 0 drops only zero-length ones. Evaluation scores every segment.
    min_segment_fraction: float = 0.0
    # A frame store (pipelines/prepare_frames.py): read every window's frames from it instead of
    # decoding the videos; null = decode the videos (docs/architecture.md, "The frame store").
    frame_store: str | None = None
    # Videos and frame store entries at a URI (s3://...) are read from a cache on each node's disk, at
    # most this size per node (adatad/data/node_cache.py); 0: only the file in use is kept (videos) and
    # store entries are read by byte ranges.
    cache_gb: float = 20.0


SAMPLING_MODES = ("sliding", "resize")
ADAPTER_TYPES = ("tia", "plain", "ladder", "none")


@dataclass
class BackboneConfig:
    """VideoMAE ViT + temporal-informative adapters (docs/recipe.md §4-5)."""

    embed_dim: int = 384
    depth: int = 12
    num_heads: int = 6
    mlp_ratio: float = 4.0
    mlp_hidden_dim: int | None = None  # None = int(embed_dim * mlp_ratio); VideoMAEv2-g: 6144 (48/11 x 1408)
    patch_size: int = 16  # VideoMAEv2-g: 14; a crop that is not a multiple is floored (160 px -> 11 x 11)
    tubelet_size: int = 2
    pretrain_img_size: int = 224
    chunk_frames: int = 16
    drop_path_rate: float = 0.1
    adapter_layers: list[int] | None = None  # None = every block
    adapter_mlp_ratio: float = 0.25
    # "tia" / "plain": an adapter inside each listed block; "ladder": OpenTAD's side network
    # (AdaTAD†, VisionTransformerLadder): one adapter beside the frozen ViT per listed block, fed
    # that block's output, summed onto the last listed block's output; "none": no adapters.
    adapter_type: str = "tia"
    activation_checkpointing: bool = True
    checkpoint: str | None = None
    allow_random_init: bool = False


@dataclass
class HeadConfig:
    """ActionFormer projection, neck, heads and loss (docs/recipe.md §6)."""

    num_classes: int = 20
    embed_dim: int = 512
    arch: tuple[int, int, int] = (2, 2, 5)
    n_head: int = 4
    # Attention window of the projection's transformer blocks: -1 global, w > 1 local (|i - j| <= w // 2);
    # one value for every level, or one per level (Ego4D: 17 on levels 0-6, global on 7-9).
    mha_win_size: int | list[int] = -1
    path_pdrop: float = 0.1
    feat_channels: int = 512
    num_convs: int = 2
    cls_prior_prob: float = 0.01
    regression_ranges: list[tuple[float, float]] = field(
        default_factory=lambda: [(0, 4), (4, 8), (8, 16), (16, 32), (32, 64), (64, 10000)]
    )
    center_sample_radius: float = 1.5
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    init_loss_norm: float = 100.0
    loss_norm_momentum: float = 0.9
    # OpenTAD's filter_similar_gt: a point inside several GTs takes the classes of those within 1e-3
    # of the shortest one's length (true) or of every one of them (false: Ego4D); the regression
    # target is the shortest GT's either way.
    filter_similar_gt: bool = True
    # Training recipe of OpenTAD's ActivityNet / Charades rows (docs/recipe.md §6): label smoothing of
    # the focal-loss targets, weight of the regression loss (<= 0: OpenTAD's adaptive weight), channel
    # dropout of the projection's input, dropout inside its transformer blocks.
    label_smoothing: float = 0.0
    loss_weight: float = 1.0
    input_pdrop: float = 0.0
    proj_pdrop: float = 0.0
    # Absolute position embedding after the embedding convs (Charades, ActivityNet, Ego4D). Not in any
    # checkpoint: a model trained with it must be run with it (docs/recipe.md, ActivityNet and Charades).
    use_abs_pe: bool = False
    # The projection's input length: the table's positions, and features shorter than it are
    # zero-padded to it, mask False (OpenTAD's pad_data; Ego4D: 1,800 -> 2,048); null = data.window_size.
    max_seq_len: int | None = None


@dataclass
class InferenceConfig:
    """Per-window decoding and per-video soft-NMS (docs/recipe.md §8; ActivityNet's class-agnostic
    path and the external video classifier: docs/recipe.md, ActivityNet and Charades)."""

    pre_nms_thresh: float | None = 0.001  # null: no score threshold (OpenTAD's one-class rows)
    pre_nms_topk: int | None = 2000  # null: every valid (position, class) pair
    nms_sigma: float = 0.7
    max_seg_num: int = 2000
    min_score: float = 0.0
    # false: one soft-NMS over all labels, then segment voting (OpenTAD `multiclass=False`)
    multiclass_nms: bool = True
    # IoU of segment voting; 0 = off; ignored while multiclass_nms is true, as in OpenTAD (THUMOS sets 0.7)
    voting_thresh: float = 0.0
    # true: segments are clipped to the video before the NMS (sliding windows); false: after it and
    # after voting (OpenTAD's whole-video datasets, ActivityNet)
    clip_before_nms: bool = True
    # Video-level classifier that names the classes of a one-class detector: a json file
    # {"results": {video: [p, ...]}, "class" | "classes": [name, ...]}; "cuhk": score x p,
    # "standard" (InternVideo, InternVideo2): sqrt(score x p); each detection once per top-k class.
    external_classifier: str | None = None
    external_classifier_type: str = "cuhk"
    external_classifier_topk: int = 2


@dataclass
class ModelConfig:
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    inference: InferenceConfig = field(default_factory=InferenceConfig)
    # Trained weights a fresh training run starts from: this project's checkpoint (file, checkpoint
    # folder or run folder) or an OpenTAD AdaTAD .pth (adatad.models.trained.read_trained; its EMA
    # weights). The file holds every weight, the ViT's too. A resumed run's own checkpoint wins.
    init_from: str | None = None


@dataclass
class TrainConfig:
    """Optimisation and schedule (docs/recipe.md §7)."""

    epochs: int = 60
    schedule_epochs: int = 100
    warmup_epochs: int = 5
    batch_size: int = 4
    lr: float = 1e-4
    adapter_lr: float = 2e-4
    backbone_lr: float = 0.0
    weight_decay: float = 0.05
    eta_min: float = 1e-8
    clip_grad_norm: float = 1.0
    amp: bool = True
    ema: bool = True
    ema_decay: float = 0.999
    seed: int = 42
    val_interval: int = 2
    val_start_epoch: int = 40
    val_batch_size: int = 1
    checkpoints_to_keep: int = 2


@dataclass
class RuntimeConfig:
    """Ray resources: the knobs that replace DataLoader workers and prefetch."""

    num_workers: int = 1
    use_gpu: bool = True
    cpus_per_worker: float = 1.0
    decode_actors: int = 6
    decode_actor_cpus: float = 1.0
    prefetch_batches: int = 4
    val_decode_actors: int = 1
    local_num_cpus: int | None = None
    object_store_memory_mb: int | None = None
    max_failures: int = 1
    storage_path: str = "runs"
    # How long reads and writes of a URI (storage, data) are retried while its endpoint cannot be
    # reached; an outage that lasts longer stops the run as SIGTERM does (adatad/retry.py).
    storage_retry_s: float = 120.0
    # Custom Ray resources (e.g. {"gpu_node": 1}) that pin train workers / decode actors to nodes
    # started with `ray start --resources='{"gpu_node": 1}'`; empty = anywhere.
    worker_resources: dict[str, float] = field(default_factory=dict)
    decode_actor_resources: dict[str, float] = field(default_factory=dict)
    # Training clips reach the trainer in the epoch's order (Ray Data's preserve_order), so a run
    # repeats with any number of decode actors; false: as the actors finish them (an actor that is
    # ahead need not wait for a slower one's clip; batches then vary between runs).
    preserve_order: bool = True


@dataclass
class TrackingConfig:
    tracking_uri: str | None = None  # None = sqlite file under the project
    experiment_name: str = "adatad"
    log_model: bool = True  # the best checkpoint's EMA detector as the run's MLflow model (~200 MB at full size)
    system_metrics: bool = True  # CPU/memory/GPU of the training node every 10 s


@dataclass
class EvaluationConfig:
    """How validation, test.py and the reports score detections (docs/recipe.md §9)."""

    # tIoU thresholds of the mAP table; the average over them is the headline number
    # (THUMOS-14 0.3:0.1:0.7, Multi-THUMOS and Charades 0.1:0.1:0.9, ActivityNet 0.5:0.05:0.95).
    tiou_thresholds: list[float] = field(default_factory=lambda: [0.3, 0.4, 0.5, 0.6, 0.7])


@dataclass
class Config:
    name: str = "adatad"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict[str, Any]:
        return _to_plain(dataclasses.asdict(self))

    def flat(self) -> dict[str, Any]:
        """Dotted keys -> values, for MLflow params and comparison tables."""
        return flatten(self.to_dict())

    def resolve_path(self, path: str) -> str:
        """Absolute path: Ray workers chdir into trial folders, so relative paths break there."""
        return resolve_path(path)


# ---------------------------------------------------------------- loading and merging


def load_config(
    path: str | os.PathLike,
    overrides: list[str] | None = None,
    profile: str | None = None,
) -> Config:
    """Read an experiment YAML (with its `_base_` chain), apply a profile and `--set` overrides."""
    from adatad.locations import as_path

    raw = _load_yaml_tree(as_path(path), seen=())
    if profile:
        profile_file = PROFILE_DIR / f"{profile}.yaml"
        if not profile_file.is_file():
            known = sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))
            raise ConfigError(f"profile {profile!r} does not exist (known profiles: {', '.join(known)})")
        raw = deep_merge(raw, _load_yaml_tree(profile_file, seen=()))
    for item in overrides or []:
        raw = deep_merge(raw, parse_override(item))
    cfg = from_dict(Config, raw, path="")
    validate(cfg)
    return cfg


def config_from_dict(raw: dict[str, Any]) -> Config:
    """Rebuild a config saved with `Config.to_dict` (checkpoints, Tune trials)."""
    cfg = from_dict(Config, raw, path="")
    validate(cfg)
    return cfg


def _load_yaml_tree(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """`path` may be an `adatad.locations.ObjectPath` (a run's config.yaml on object storage)."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: circular {BASE_KEY} chain")
    try:
        present = path.is_file()
    except OSError as exc:  # an object store that cannot be reached, or refuses the credentials
        raise ConfigError(str(exc)) from None
    if not present:
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1} column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}:{where} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    bases = data.pop(BASE_KEY, [])
    bases = [bases] if isinstance(bases, str) else bases
    merged: dict[str, Any] = {}
    for base in bases:
        merged = deep_merge(merged, _load_yaml_tree(path.parent / base, seen + (path,)))
    return deep_merge(merged, data)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Key-by-key merge of nested mappings; lists and scalars are replaced whole."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(item: str) -> dict[str, Any]:
    """`a.b.c=value` -> nested dict; the value is read as YAML (numbers, lists, null, strings)."""
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {item!r}: expected KEY.PATH=VALUE, e.g. train.lr=2e-4")
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at column {len(key) + 2 + mark.column}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"override {item!r}: value is not valid YAML{where} ({problem})") from None
    # YAML 1.1 reads "1e-4" as a string; accept it as the float users mean.
    if isinstance(value, str):
        try:
            value = float(value) if any(c in value for c in "eE.") else value
        except ValueError:
            pass
    nested: dict[str, Any] = {}
    cursor = nested
    parts = key.split(".")
    for part in parts[:-1]:
        cursor = cursor.setdefault(part, {})
    cursor[parts[-1]] = value
    return nested


# ---------------------------------------------------------------- typed conversion


def from_dict(cls: type, raw: Any, path: str) -> Any:
    """Build dataclass `cls` from a mapping, checking keys and types recursively."""
    where = path or "<root>"
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            guess = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {_join(path, guess[0])!r}?)" if guess else ""
            raise ConfigError(f"unknown key {_join(path, str(key))!r}{hint}")
    kwargs = {key: _coerce(hints[key], value, _join(path, key)) for key, value in raw.items()}
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, path)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for option in inner:
            try:
                return _coerce(option, value, path)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{path}: {value!r} does not match {tp}")
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, got {type(value).__name__} {value!r}")
        key_type, value_type = args or (Any, Any)
        return {_coerce(key_type, k, path): _coerce(value_type, v, f"{path}.{k}") for k, v in value.items()}
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, got {type(value).__name__} {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{path}: expected {len(args)} values, got {len(value)}: {list(value)}")
            return tuple(_coerce(a, v, f"{path}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True)))
        item_type = args[0] if args else Any
        items = [_coerce(item_type, v, f"{path}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{path}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{path}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise ConfigError(f"{path}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{path}: expected a string, got {value!r}")
    raise ConfigError(f"{path}: unsupported type {tp}")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, name))
        else:
            out[name] = value
    return out


# ---------------------------------------------------------------- validation


def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {value!r} is invalid, expected {expected}")


def validate(cfg: Config) -> None:
    """Reject impossible values (one line, full key path) before any expensive work starts."""
    d, b, h, t, r, i = cfg.data, cfg.model.backbone, cfg.model.head, cfg.train, cfg.runtime, cfg.model.inference
    _check(d.frame_stride >= 1, "data.frame_stride", d.frame_stride, ">= 1")
    _check(d.sampling in SAMPLING_MODES, "data.sampling", d.sampling, f"one of {', '.join(SAMPLING_MODES)}")
    if d.sampling == "resize":  # frames spread over the whole video: no snippet stride to divide
        _check(d.frames_per_position >= 1, "data.frames_per_position", d.frames_per_position, ">= 1")
    else:
        _check(d.frames_per_position >= 1 and d.frame_stride % d.frames_per_position == 0,
               "data.frames_per_position", d.frames_per_position, f">= 1 and dividing data.frame_stride ({d.frame_stride})")
    _check("/" not in d.video_prefix and "\\" not in d.video_prefix, "data.video_prefix", d.video_prefix,
           "a file-name prefix without path separators (ActivityNet: v_)")
    _check(d.frame_store is None or d.frame_store.strip() != "", "data.frame_store", d.frame_store,
           "a folder made by pipelines/prepare_frames.py, or null")
    _check(d.block_list is None or d.block_list.strip() != "", "data.block_list", d.block_list,
           "the path of a file of video ids, or null")
    _check(d.fixed_fps is None or (math.isfinite(d.fixed_fps) and d.fixed_fps > 0), "data.fixed_fps", d.fixed_fps,
           "a frame rate > 0 (Charades: 30), or null for each video's own")
    _check(0.0 <= d.min_segment_fraction < 1.0, "data.min_segment_fraction", d.min_segment_fraction, "in [0, 1)")
    _check(not d.class_agnostic or cfg.model.head.num_classes == 1, "data.class_agnostic", d.class_agnostic,
           f"false with model.head.num_classes={cfg.model.head.num_classes} (a class-agnostic run trains a 1-class head)")
    # A window reads window_size x frames_per_position frames, cut into whole backbone chunks.
    multiple = b.chunk_frames // math.gcd(b.chunk_frames, d.frames_per_position)
    _check(d.window_size > 0 and d.window_size % multiple == 0, "data.window_size", d.window_size,
           f"a positive multiple of {multiple}, so that its data.window_size x data.frames_per_position "
           f"({d.frames_per_position}) frames fill whole model.backbone.chunk_frames ({b.chunk_frames}) chunks")
    _check(0.0 < d.trunc_thresh <= 1.0, "data.trunc_thresh", d.trunc_thresh, "in (0, 1]")
    lo, hi = d.temporal_crop_ratio
    _check(0.0 < lo <= hi <= 1.0, "data.temporal_crop_ratio", list(d.temporal_crop_ratio), "0 < lo <= hi <= 1")
    _check(0.0 <= d.test_window_overlap < 1.0, "data.test_window_overlap", d.test_window_overlap, "in [0, 1)")
    lo, hi = d.rrc_area_range
    _check(0.0 < lo <= hi <= 1.0, "data.rrc_area_range", list(d.rrc_area_range), "0 < lo <= hi <= 1")
    _check(0.0 <= d.flip_ratio <= 1.0, "data.flip_ratio", d.flip_ratio, "in [0, 1]")
    _check(d.max_segments >= 1, "data.max_segments", d.max_segments, ">= 1")
    _check(d.max_decode_failures >= 0, "data.max_decode_failures", d.max_decode_failures, ">= 0")
    _check(d.cache_gb >= 0, "data.cache_gb", d.cache_gb, ">= 0")
    _check(d.decode_threads >= 0, "data.decode_threads", d.decode_threads, ">= 0 (0 = decord's default)")
    for name in ("crop_size", "train_resize_short", "test_resize_short"):
        _check(getattr(d, name) > 0, f"data.{name}", getattr(d, name), "> 0")
    # Not necessarily a multiple: the patch embedding floors (VideoMAEv2-g: 160 px / 14 -> 11 x 11).
    _check(d.crop_size >= b.patch_size, "data.crop_size", d.crop_size,
           f">= model.backbone.patch_size ({b.patch_size})")
    _check(d.train_resize_short >= d.crop_size, "data.train_resize_short", d.train_resize_short,
           f">= data.crop_size ({d.crop_size})")
    _check(d.test_resize_short >= d.crop_size, "data.test_resize_short", d.test_resize_short,
           f">= data.crop_size ({d.crop_size})")
    _check(b.embed_dim % b.num_heads == 0, "model.backbone.embed_dim", b.embed_dim,
           f"divisible by model.backbone.num_heads ({b.num_heads})")
    _check(b.chunk_frames % b.tubelet_size == 0, "model.backbone.chunk_frames", b.chunk_frames,
           f"a multiple of model.backbone.tubelet_size ({b.tubelet_size})")
    _check(b.patch_size >= 1, "model.backbone.patch_size", b.patch_size, ">= 1")
    _check(b.pretrain_img_size >= b.patch_size, "model.backbone.pretrain_img_size", b.pretrain_img_size,
           f">= model.backbone.patch_size ({b.patch_size})")
    _check(b.mlp_ratio > 0, "model.backbone.mlp_ratio", b.mlp_ratio, "> 0")
    _check(b.mlp_hidden_dim is None or b.mlp_hidden_dim >= 1, "model.backbone.mlp_hidden_dim", b.mlp_hidden_dim,
           "null (= int(embed_dim * mlp_ratio)) or >= 1")
    _check(b.adapter_type in ADAPTER_TYPES, "model.backbone.adapter_type", b.adapter_type,
           f"one of {', '.join(ADAPTER_TYPES)}")
    if b.adapter_layers is not None:
        bad = [x for x in b.adapter_layers if not 0 <= x < b.depth]
        _check(not bad, "model.backbone.adapter_layers", b.adapter_layers, f"indices in [0, {b.depth})")
        _check(len(set(b.adapter_layers)) == len(b.adapter_layers), "model.backbone.adapter_layers",
               b.adapter_layers, "distinct block indices (e.g. [20, 21, ..., 39] for the VideoMAEv2-g at 224 px)")
    _check(0.0 <= b.drop_path_rate < 1.0, "model.backbone.drop_path_rate", b.drop_path_rate, "in [0, 1)")
    _check(h.num_classes >= 1, "model.head.num_classes", h.num_classes, ">= 1")
    _check(h.embed_dim % h.n_head == 0, "model.head.embed_dim", h.embed_dim,
           f"divisible by model.head.n_head ({h.n_head})")
    levels = h.arch[2] + 1
    _check(len(h.regression_ranges) == levels, "model.head.regression_ranges", h.regression_ranges,
           f"{levels} ranges (one per level of arch {list(h.arch)})")
    windows = [h.mha_win_size] * levels if isinstance(h.mha_win_size, int) else h.mha_win_size
    _check(len(windows) == levels and all(w == -1 or w > 1 for w in windows), "model.head.mha_win_size",
           h.mha_win_size, f"-1 (global) or a local window > 1, once or once per level ({levels} for arch "
           f"{list(h.arch)})")
    _check(h.max_seq_len is None or h.max_seq_len >= 1, "model.head.max_seq_len", h.max_seq_len,
           "null (= data.window_size) or >= 1")
    padded = max(d.window_size, h.max_seq_len or 0)  # the projection's input length
    if padded == d.window_size:
        _check(d.window_size % (2 ** h.arch[2]) == 0, "data.window_size", d.window_size,
               f"divisible by 2**model.head.arch[2] ({2 ** h.arch[2]}) so every level has whole positions")
    else:
        _check(padded % (2 ** h.arch[2]) == 0, "model.head.max_seq_len", h.max_seq_len,
               f"divisible by 2**model.head.arch[2] ({2 ** h.arch[2]}): the features of data.window_size="
               f"{d.window_size} positions are padded to it, and every level needs whole positions")
    tious = cfg.evaluation.tiou_thresholds
    _check(bool(tious) and all(0 < x <= 1 for x in tious) and list(tious) == sorted(set(tious)),
           "evaluation.tiou_thresholds", tious, "increasing values in (0, 1]")
    _check(i.pre_nms_topk is None or i.pre_nms_topk >= 1, "model.inference.pre_nms_topk", i.pre_nms_topk,
           ">= 1, or null for every valid (position, class) pair")
    _check(i.pre_nms_thresh is None or 0 <= i.pre_nms_thresh < 1, "model.inference.pre_nms_thresh",
           i.pre_nms_thresh, "in [0, 1), or null for no threshold")
    _check(i.nms_sigma > 0, "model.inference.nms_sigma", i.nms_sigma, "> 0")
    _check(0 <= i.voting_thresh <= 1, "model.inference.voting_thresh", i.voting_thresh,
           "in [0, 1] (0 = no segment voting)")
    _check(i.external_classifier is None or i.external_classifier.strip() != "", "model.inference.external_classifier",
           i.external_classifier, "the path of a video classifier json, or null")
    _check(i.external_classifier_type in EXTERNAL_CLASSIFIER_TYPES, "model.inference.external_classifier_type",
           i.external_classifier_type, f"one of {', '.join(EXTERNAL_CLASSIFIER_TYPES)}")
    _check(i.external_classifier_topk >= 1, "model.inference.external_classifier_topk",
           i.external_classifier_topk, ">= 1")
    _check(i.external_classifier is None or h.num_classes == 1, "model.inference.external_classifier",
           i.external_classifier, f"null for a detector of {h.num_classes} classes (the classifier names the "
           "class of a one-class detector: model.head.num_classes=1)")
    for name in ("label_smoothing", "input_pdrop", "proj_pdrop"):
        _check(0 <= getattr(h, name) < 1, f"model.head.{name}", getattr(h, name), "in [0, 1)")
    # The ViT outside the adapters is frozen (docs/recipe.md §4, §7): no optimiser group trains it.
    _check(t.backbone_lr == 0, "train.backbone_lr", t.backbone_lr,
           "0 (the VideoMAE backbone is frozen; only adapters and the head are trained)")
    for name in ("lr", "adapter_lr", "weight_decay", "eta_min", "clip_grad_norm"):
        _check(getattr(t, name) >= 0, f"train.{name}", getattr(t, name), ">= 0")
    _check(t.epochs >= 1, "train.epochs", t.epochs, ">= 1")
    _check(t.schedule_epochs >= t.epochs, "train.schedule_epochs", t.schedule_epochs,
           f">= train.epochs ({t.epochs})")
    _check(0 <= t.warmup_epochs < t.schedule_epochs, "train.warmup_epochs", t.warmup_epochs,
           f"in [0, train.schedule_epochs={t.schedule_epochs})")
    _check(t.batch_size >= 1, "train.batch_size", t.batch_size, ">= 1")
    _check(t.batch_size % r.num_workers == 0, "train.batch_size", t.batch_size,
           f"divisible by runtime.num_workers ({r.num_workers}); it is the global batch")
    _check(t.val_batch_size >= 1, "train.val_batch_size", t.val_batch_size, ">= 1")
    _check(0.0 < t.ema_decay < 1.0, "train.ema_decay", t.ema_decay, "in (0, 1)")
    _check(t.val_interval >= 1, "train.val_interval", t.val_interval, ">= 1")
    _check(t.checkpoints_to_keep >= 1, "train.checkpoints_to_keep", t.checkpoints_to_keep, ">= 1")
    _check(t.seed >= 0, "train.seed", t.seed, ">= 0 (it seeds the clips of every epoch and video)")
    _check(r.num_workers >= 1, "runtime.num_workers", r.num_workers, ">= 1")
    _check(r.decode_actors >= 1, "runtime.decode_actors", r.decode_actors, ">= 1")
    _check(r.val_decode_actors >= 1, "runtime.val_decode_actors", r.val_decode_actors, ">= 1")
    _check(r.cpus_per_worker >= 0, "runtime.cpus_per_worker", r.cpus_per_worker, ">= 0")
    _check(r.decode_actor_cpus > 0, "runtime.decode_actor_cpus", r.decode_actor_cpus, "> 0")
    _check(r.prefetch_batches >= 0, "runtime.prefetch_batches", r.prefetch_batches, ">= 0")
    _check(r.max_failures >= -1, "runtime.max_failures", r.max_failures, ">= -1 (-1 = retry forever)")
    _check(r.storage_retry_s > 0, "runtime.storage_retry_s", r.storage_retry_s, "> 0")
    for name in ("worker_resources", "decode_actor_resources"):
        for key, amount in getattr(r, name).items():
            _check(key not in ("CPU", "GPU", "memory"), f"runtime.{name}", key,
                   "a custom resource name (CPU/GPU come from cpus_per_worker/decode_actor_cpus/use_gpu)")
            _check(amount >= 0, f"runtime.{name}.{key}", amount, ">= 0")
    m = cfg.model
    _check(m.init_from is None or m.init_from.strip() != "", "model.init_from", m.init_from,
           "the path of a trained model file, or null")
    if b.checkpoint is None and not b.allow_random_init and m.init_from is None:
        raise ConfigError(
            "model.backbone.checkpoint: not set; AdaTAD needs pre-trained VideoMAE weights "
            "(set the path, or model.init_from to a trained AdaTAD/OpenTAD file, which holds them, "
            "or model.backbone.allow_random_init=true for smoke tests)"
        )


def write_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the effective config as YAML atomically (temp file + rename)."""
    return atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))
