"""The synthetic data set's parameters, and the plan they give: which action each video shows when.

Why a synthetic set: the pipeline (decode -> augment -> train -> evaluate) must be exercised end
to end on real compressed video without the 20 GB THUMOS download, and a small model must be able
to reach a high mAP on it, which checks the detector and the evaluation together.

Each video has several non-overlapping action instances; an instance of class ``k`` is visible
on exactly the frames ``f`` with ``round(start*fps) <= f < round(end*fps)``, and its annotation is
``[f0/fps, f1/fps]`` (pixels: :mod:`adatad.datasets.synthetic_render`; files:
:mod:`adatad.datasets.synthetic`). Train videos are named ``video_validation_XXXXXXX`` with subset
"training" and test videos ``video_test_XXXXXXX`` with subset "validation", as in THUMOS-14.
Everything is deterministic given the seed: video ``i`` of a split depends only on (seed, split,
i) and the other parameters. ``fps_cycle`` gives videos different frame rates (video ``i`` of a
split runs at ``fps_cycle[i % len(fps_cycle)]``), to test that seconds stay right per video.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class ActionClass:
    """A visually unique action: name, RGB colour, and what its shape does (drawn by ``synthetic_render._mask``)."""

    name: str
    color: tuple[int, int, int]
    description: str


# Names sort alphabetically in index order, so the class map derived from the labels (when
# category_idx.txt is absent) equals the written one for any prefix of this list.
ACTION_CLASSES: tuple[ActionClass, ...] = (
    ActionClass("BounceTriangle", (40, 80, 255), "blue triangle bouncing vertically"),
    ActionClass("PulseCircle", (40, 210, 60), "green disc pulsing in size"),
    ActionClass("RotateBar", (250, 220, 40), "yellow bar rotating about its centre"),
    ActionClass("SlideSquare", (235, 40, 40), "red square sliding to the right"),
    ActionClass("SpinDiamond", (225, 50, 225), "magenta diamond spinning while sliding left"),
    ActionClass("SwingRing", (40, 220, 230), "cyan ring swinging like a pendulum"),
    ActionClass("TumbleCross", (255, 140, 20), "orange cross tumbling diagonally"),
    ActionClass("WobbleEllipse", (250, 250, 250), "white ellipse wobbling sideways"),
)


@dataclass(frozen=True)
class SyntheticSpec:
    """Generation parameters; the defaults mimic THUMOS video (320x180, 30 fps)."""

    num_train: int = 20
    num_test: int = 10
    num_classes: int = 4
    duration_s: tuple[float, float] = (20.0, 30.0)  # video length range (equal ends: fixed)
    fps: int = 30
    width: int = 320
    height: int = 180
    seed: int = 0
    crf: int = 23  # x264 constant rate factor (ignored when bitrate_kbps is set)
    bitrate_kbps: int | None = None
    action_duration_s: tuple[float, float] = (1.5, 6.0)
    gap_s: tuple[float, float] = (1.0, 5.0)  # pause between consecutive actions
    noise: int = 16  # per-pixel uniform noise amplitude (+-noise grey levels per channel); 16 at crf 23
    # gives ~3.7 MB per minute at 320x180, close to a real 320x180 THUMOS video (about 3.5 MB per minute)
    fps_cycle: tuple[int, ...] = ()  # per-video frame rates (video i: fps_cycle[i % len]); () = all at fps
    # "thumos": THUMOS names and json; "anet": ActivityNet's conventions (adatad.datasets.synthetic_anet);
    # "epic": EPIC-KITCHENS-100's (adatad.datasets.synthetic_epic)
    layout: str = "thumos"
    single_class: bool = False  # every action of a video has one class (ActivityNet: one activity per video)

    def validate(self) -> None:
        """Raise ValueError naming the first bad parameter."""
        checks = [
            (self.num_train >= 0 and self.num_test >= 0 and self.num_train + self.num_test > 0,
             "num_train/num_test must be >= 0 with at least one video"),
            (1 <= self.num_classes <= len(ACTION_CLASSES), f"num_classes must be in [1, {len(ACTION_CLASSES)}]"),
            (0 < self.duration_s[0] <= self.duration_s[1], "duration_s must be (min, max) with 0 < min <= max"),
            (self.fps >= 1, "fps must be >= 1"),
            (self.width >= 16 and self.height >= 16 and self.width % 2 == 0 and self.height % 2 == 0,
             "width and height must be even and >= 16 (H.264 yuv420p)"),
            (0 <= self.crf <= 51, "crf must be in [0, 51]"),
            (self.bitrate_kbps is None or self.bitrate_kbps > 0, "bitrate_kbps must be > 0"),
            (0 < self.action_duration_s[0] <= self.action_duration_s[1],
             "action_duration_s must be (min, max) with 0 < min <= max"),
            (0 <= self.gap_s[0] <= self.gap_s[1], "gap_s must be (min, max) with 0 <= min <= max"),
            (0 <= self.noise <= 64, "noise must be in [0, 64]"),
            (all(isinstance(f, int) and f >= 1 for f in self.fps_cycle), "fps_cycle values must be integers >= 1"),
            (self.layout in LAYOUTS, f"layout must be one of {', '.join(LAYOUTS)}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"synthetic data set: {message}; got {self}")

    def to_json(self) -> dict:
        """Parameters as saved in synthetic_spec.json; an empty fps_cycle and the THUMOS defaults of
        layout and single_class are left out, so data sets generated before they existed still match."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        for key, default in (("fps_cycle", []), ("layout", "thumos"), ("single_class", False)):
            if out[key] == default:
                del out[key]
        return out

    def video_fps(self, idx: int) -> int:
        """Frame rate of video ``idx`` of a split."""
        return self.fps_cycle[idx % len(self.fps_cycle)] if self.fps_cycle else self.fps


# Built-in demo set: small and cheap to decode so a tiny model trains to a high mAP on 2 CPU cores
# in minutes. 4 classes, 24 train + 8 test videos of 20-30 s, 160x96 at 30 fps.
DEMO_SPEC = SyntheticSpec(num_train=24, num_test=8, num_classes=4, duration_s=(20.0, 30.0),
                          fps=30, width=160, height=96)


# Whole-video demo (configs/synthetic_anet.yaml): ActivityNet-like videos of 20-90 s at 15 fps (OpenTAD's
# re-encoded ActivityNet videos are 15 fps), few long actions of one class each, 6 classes.
ANET_DEMO_SPEC = SyntheticSpec(num_train=40, num_test=12, num_classes=6, duration_s=(20.0, 90.0), fps=15,
                               width=160, height=96, action_duration_s=(8.0, 40.0), gap_s=(2.0, 15.0),
                               layout="anet", single_class=True)


# EPIC-shaped demo (configs/synthetic_epic.yaml): videos of 45-75 s at 30 fps (OpenTAD's EPIC copy is
# 30 fps) dense with short actions (0.6-3 s, 0.3-2 s apart: about 20 per minute), 6 classes, read as
# windows of 8 frames per position.
EPIC_DEMO_SPEC = SyntheticSpec(num_train=20, num_test=6, num_classes=6, duration_s=(45.0, 75.0), fps=30,
                               width=160, height=96, action_duration_s=(0.6, 3.0), gap_s=(0.3, 2.0), layout="epic")


def demo_spec() -> SyntheticSpec:
    """The built-in demo set parameters."""
    return DEMO_SPEC


@dataclass(frozen=True)
class Instance:
    """One action occurrence, visible on frames [start_frame, end_frame)."""

    label: int
    start_frame: int
    end_frame: int
    params: tuple[float, ...]  # per-instance random shape parameters in [0, 1)


@dataclass(frozen=True)
class VideoLayout:
    video_id: str
    subset: str
    num_frames: int
    texture_seed: int
    instances: tuple[Instance, ...]
    fps: int


LAYOUTS = ("thumos", "anet", "epic")


def _video_id(split: str, idx: int, layout: str = "thumos") -> tuple[str, str]:
    if layout == "epic":  # EPIC's participant_video ids; OpenTAD's subsets "train" / "val"
        return (f"P01_{idx + 1:02d}", "train") if split == "train" else (f"P30_{idx + 1:02d}", "val")
    if layout == "anet":
        return f"anet_{'train' if split == 'train' else 'val'}_{idx + 1:05d}", "training" if split == "train" \
            else "validation"
    if split == "train":
        return f"video_validation_{idx + 1:07d}", "training"
    return f"video_test_{idx + 1:07d}", "validation"


def plan_video(spec: SyntheticSpec, split: str, idx: int) -> VideoLayout:
    """Deterministic layout of video ``idx`` of ``split`` ("train" or "test")."""
    split_code = {"train": 0, "test": 1}[split]
    rng = np.random.default_rng([spec.seed, split_code, idx])
    fps = spec.video_fps(idx)
    duration = float(rng.uniform(*spec.duration_s)) if spec.duration_s[1] > spec.duration_s[0] else spec.duration_s[0]
    num_frames = max(1, round(duration * fps))
    duration = num_frames / fps
    margin = min(0.5, duration / 10)

    spans: list[tuple[float, float]] = []
    t = margin + rng.uniform(0.0, spec.gap_s[1])
    while True:
        d = rng.uniform(*spec.action_duration_s)
        if t + d > duration - margin:
            break
        spans.append((t, t + d))
        t += d + rng.uniform(*spec.gap_s)
    if not spans:  # short video: one action covering up to half of it
        d = min(rng.uniform(*spec.action_duration_s), duration / 2)
        s = rng.uniform(margin, max(margin, duration - margin - d))
        spans.append((s, s + d))

    instances = []
    label = int(rng.integers(spec.num_classes))
    for s, e in spans:
        f0 = round(s * fps)
        f1 = min(max(round(e * fps), f0 + 1), num_frames)
        instances.append(Instance(label, f0, f1, tuple(rng.random(4).tolist())))
        if spec.num_classes > 1 and not spec.single_class:  # next action: a uniformly drawn *different* class
            label = (label + int(rng.integers(1, spec.num_classes))) % spec.num_classes
    return VideoLayout(*_video_id(split, idx, spec.layout), num_frames, int(rng.integers(2**31)), tuple(instances),
                       fps)


def plan_dataset(spec: SyntheticSpec) -> list[VideoLayout]:
    """Layouts of all train then test videos."""
    return [plan_video(spec, "train", i) for i in range(spec.num_train)] + [
        plan_video(spec, "test", i) for i in range(spec.num_test)
    ]
