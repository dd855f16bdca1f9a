"""A THUMOS-like synthetic data set: real H.264 mp4 files with visible actions at known times.

Why: the pipeline (decode -> augment -> train -> evaluate) must be exercised end to end on real
compressed video without the 20 GB THUMOS download, and a small model must be able to reach a
high mAP on it, which checks the detector and the evaluation together.

Each video has a seamless scrolling random texture as background plus per-frame uniform "sensor"
noise (so the encoder cannot skip the background and decoding costs like a real video), and
several non-overlapping action instances. An instance of class ``k`` is a large, saturated,
high-contrast shape whose shape, colour and motion are unique to ``k`` (see :data:`ACTION_CLASSES`);
it is drawn on exactly the frames ``f`` with ``round(start*fps) <= f < round(end*fps)``, and the
annotation is ``[f0/fps, f1/fps]``.

Layout written (OpenTAD THUMOS layout, docs/recipe.md section 1)::

    out_dir/videos/<video_id>.mp4
    out_dir/category_idx.txt        one class name per line, index order
    out_dir/synthetic_spec.json     the generation parameters (used to detect a stale data set)
    out_dir/annotations.json        {"database": {...}}, written LAST: its presence means complete

Train videos are named ``video_validation_XXXXXXX`` with subset "training" and test videos
``video_test_XXXXXXX`` with subset "validation", as in THUMOS-14. Everything is deterministic
given the seed: video ``i`` of a split depends only on (seed, split, i) and the other parameters.
``fps_cycle`` gives videos different frame rates (video ``i`` of a split runs at
``fps_cycle[i % len(fps_cycle)]``), to test that seconds stay right per video; the json then
states each video's own ``frame`` and ``duration``. :func:`segment_rows` lists the segments as
rows of the CSV that ``pipelines/prepare_dataset.py`` reads.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

ANNOTATION_FILE = "annotations.json"
CLASS_MAP_FILE = "category_idx.txt"
SPEC_FILE = "synthetic_spec.json"
VIDEO_DIR = "videos"


@dataclass(frozen=True)
class ActionClass:
    """A visually unique action: name, RGB colour, and what its shape does (drawn by ``_mask``)."""

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
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(f"synthetic data set: {message}; got {self}")

    def to_json(self) -> dict:
        """Parameters as saved in synthetic_spec.json; an empty fps_cycle is left out, so data sets
        generated before it existed still match their spec."""
        out = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        if not self.fps_cycle:
            del out["fps_cycle"]
        return out

    def video_fps(self, idx: int) -> int:
        """Frame rate of video ``idx`` of a split."""
        return self.fps_cycle[idx % len(self.fps_cycle)] if self.fps_cycle else self.fps


# Built-in demo set: small and cheap to decode so a tiny model trains to a high mAP on 2 CPU cores
# in minutes. 4 classes, 24 train + 8 test videos of 20-30 s, 160x96 at 30 fps.
DEMO_SPEC = SyntheticSpec(num_train=24, num_test=8, num_classes=4, duration_s=(20.0, 30.0),
                          fps=30, width=160, height=96)


def demo_spec() -> SyntheticSpec:
    """The built-in demo set parameters."""
    return DEMO_SPEC


# ----------------------------------------------------------------------------------------------
# Layout: which actions happen when


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


def _video_id(split: str, idx: int) -> tuple[str, str]:
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
        if spec.num_classes > 1:  # next action: a uniformly drawn *different* class
            label = (label + int(rng.integers(1, spec.num_classes))) % spec.num_classes
    return VideoLayout(*_video_id(split, idx), num_frames, int(rng.integers(2**31)), tuple(instances), fps)


# ----------------------------------------------------------------------------------------------
# Rendering (vectorised over a chunk of frames)


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Seamless (periodic) low-saturation grey texture (H, W, 3) int16, values about 40..175.

    Band-limited noise built in the Fourier domain is periodic, so scrolling with wrap-around
    shows no seam.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2) + 1.0 / max(height, width)
    spectrum = (rng.normal(size=(height, width)) + 1j * rng.normal(size=(height, width))) / radius**1.3
    img = np.fft.ifft2(spectrum).real
    img = (img - img.mean()) / (img.std() + 1e-9)
    grey = np.clip(108 + 28 * img, 40, 175)
    tint = 1.0 + rng.uniform(-0.06, 0.06, size=3)
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.int16)


def _rotate(dx: np.ndarray, dy: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _mask(label: int, xx: np.ndarray, yy: np.ndarray, t: np.ndarray, u: np.ndarray,
          p: tuple[float, ...], h: int, w: int) -> np.ndarray:
    """Boolean mask (T, H, W) of class ``label``'s shape; t = seconds since start, u = progress 0..1.

    xx (1, 1, W) and yy (1, H, 1) are pixel-centre coordinates; t and u have shape (T, 1, 1).
    """
    s = min(h, w)
    if label == 0:  # blue triangle bouncing
        size = 0.42 * s
        cx = (0.3 + 0.4 * p[0]) * w
        base = 0.85 * h - np.abs(np.sin(np.pi * (1.0 + 0.4 * p[1]) * t)) * (0.85 * h - size - 0.05 * h)
        top = base - size
        frac = (yy - top) / size
        return (frac >= 0) & (frac <= 1) & (np.abs(xx - cx) <= 0.55 * size * frac)
    if label == 1:  # green disc pulsing
        cx, cy = (0.3 + 0.4 * p[0]) * w, (0.35 + 0.3 * p[1]) * h
        r = 0.2 * s * (1 + 0.35 * np.sin(2 * np.pi * (1.0 + 0.5 * p[2]) * t))
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if label == 2:  # yellow bar rotating
        cx, cy = (0.35 + 0.3 * p[0]) * w, (0.4 + 0.2 * p[1]) * h
        angle = 2 * np.pi * (p[2] + (0.35 + 0.3 * p[3]) * t)
        a, b = _rotate(xx - cx, yy - cy, angle)
        return (np.abs(a) <= 0.38 * s) & (np.abs(b) <= 0.08 * s)
    if label == 3:  # red square sliding right
        half = 0.19 * s
        cx = (0.15 + 0.7 * u) * w
        cy = (0.35 + 0.3 * p[0]) * h
        return (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    if label == 4:  # magenta diamond spinning, sliding left
        cx = (0.85 - 0.7 * u) * w
        cy = (0.35 + 0.3 * p[0]) * h
        a, b = _rotate(xx - cx, yy - cy, 2 * np.pi * (0.5 + 0.5 * p[1]) * t)
        return np.abs(a) + np.abs(b) <= 0.24 * s
    if label == 5:  # cyan ring swinging
        phase = np.sin(2 * np.pi * (0.6 + 0.3 * p[0]) * t + 2 * np.pi * p[1])
        cx = 0.5 * w + 0.3 * w * phase
        cy = (0.45 + 0.1 * p[2]) * h + 0.1 * h * np.abs(phase)
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        return (d2 <= (0.22 * s) ** 2) & (d2 >= (0.12 * s) ** 2)
    if label == 6:  # orange cross tumbling diagonally
        cx = (0.2 + 0.6 * u) * w
        cy = (0.25 + 0.5 * (u if p[0] < 0.5 else 1 - u)) * h
        a, b = _rotate(xx - cx, yy - cy, 2 * np.pi * (0.3 + 0.3 * p[1]) * t)
        arm, thick = 0.22 * s, 0.06 * s
        return ((np.abs(a) <= arm) & (np.abs(b) <= thick)) | ((np.abs(a) <= thick) & (np.abs(b) <= arm))
    # label 7: white ellipse wobbling sideways
    cx = 0.5 * w + 0.2 * w * np.sin(2 * np.pi * (1.5 + 0.5 * p[0]) * t)
    cy = (0.4 + 0.2 * p[1]) * h
    ax = 0.26 * s * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t))
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / (0.14 * s)) ** 2 <= 1


class _Renderer:
    """Renders frames of one video in chunks: scrolling texture + actions + noise -> uint8 RGB."""

    def __init__(self, spec: SyntheticSpec, layout: VideoLayout) -> None:
        self.spec, self.layout = spec, layout
        rng = np.random.default_rng(layout.texture_seed)
        h, w = spec.height, spec.width
        self.tex = _texture(rng, 2 * h, 2 * w)
        self.tex_tiled = np.tile(self.tex, (2, 2, 1))  # any (h, w) window at offsets < tex size is a slice
        speed = rng.uniform(0.4, 1.2, size=2) * rng.choice([-1, 1], size=2)  # px per frame (x, y)
        self.speed = speed * np.array([1.0, 0.3])
        self.noise_rng = np.random.default_rng([layout.texture_seed, 1])
        self.xx = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]
        self.yy = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]
        self.colors = {k: np.array(ACTION_CLASSES[k].color, dtype=np.int16) for k in range(spec.num_classes)}

    def render(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``frames`` (T,) int -> uint8 (T, H, W, 3)."""
        spec, h, w = self.spec, self.spec.height, self.spec.width
        th, tw = self.tex.shape[:2]
        off_x = np.floor(frames * self.speed[0]).astype(np.int64) % tw
        off_y = np.floor(frames * self.speed[1]).astype(np.int64) % th
        clip = np.empty((len(frames), h, w, 3), dtype=np.int16)
        for i, (oy, ox) in enumerate(zip(off_y.tolist(), off_x.tolist(), strict=True)):
            clip[i] = self.tex_tiled[oy : oy + h, ox : ox + w]  # a slice copy is ~8x faster than a gather
        for inst in self.layout.instances:
            active = (frames >= inst.start_frame) & (frames < inst.end_frame)
            if not active.any():
                continue
            f = frames[active].astype(np.float32)[:, None, None]
            t = (f - inst.start_frame) / self.layout.fps
            u = (f - inst.start_frame) / max(inst.end_frame - inst.start_frame - 1, 1)
            mask = _mask(inst.label, self.xx, self.yy, t, u, inst.params, h, w)
            sub = clip[active]
            sub[mask] = self.colors[inst.label]
            clip[active] = sub
        if spec.noise:
            clip += self.noise_rng.integers(-spec.noise, spec.noise + 1, size=clip.shape, dtype=np.int16)
        return np.clip(clip, 0, 255).astype(np.uint8)


def render_frames(spec: SyntheticSpec, layout: VideoLayout, chunk: int = 64) -> Iterator[np.ndarray]:
    """Yield uint8 (T, H, W, 3) chunks of the video's frames in order (deterministic)."""
    renderer = _Renderer(spec, layout)
    for start in range(0, layout.num_frames, chunk):
        yield renderer.render(np.arange(start, min(start + chunk, layout.num_frames)))


# ----------------------------------------------------------------------------------------------
# Writing


def _publish(tmp: str, path: Path) -> None:
    """Give a finished temp file the usual 0644 mode (mkstemp makes 0600) and move it in place."""
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _count_frames(path: Path) -> int:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        if stream.frames:
            return int(stream.frames)
        return sum(1 for packet in container.demux(stream) if packet.size)


def write_video(spec: SyntheticSpec, layout: VideoLayout, path: Path) -> int:
    """Encode the video to ``path`` atomically (H.264, yuv420p); return the encoded frame count."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".mp4.tmp")
    os.close(fd)
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = container.add_stream("libx264", rate=Fraction(layout.fps))
            stream.width, stream.height, stream.pix_fmt = spec.width, spec.height, "yuv420p"
            # mbtree off: x264's macroblock-tree rate control was measured to give different
            # bitstreams for identical input from run to run (even single-threaded); without it
            # the output is bit-exact, which makes "same seed -> same frames" hold.
            # One x264 thread: parallelism comes from encoding several videos at once.
            options = {"preset": "veryfast", "threads": "1", "mbtree": "0"}
            if spec.bitrate_kbps is None:
                options["crf"] = str(spec.crf)
            else:
                stream.bit_rate = spec.bitrate_kbps * 1000
            stream.options = options
            pts = 0
            for chunk in render_frames(spec, layout):
                for img in chunk:
                    frame = av.VideoFrame.from_ndarray(img, format="rgb24")
                    frame.pts, frame.time_base = pts, Fraction(1, layout.fps)
                    pts += 1
                    container.mux(stream.encode(frame))
            container.mux(stream.encode(None))
        count = _count_frames(Path(tmp))
        if count != layout.num_frames:
            raise RuntimeError(f"{path}: encoded {count} frames, expected {layout.num_frames}")
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return count


def plan_dataset(spec: SyntheticSpec) -> list[VideoLayout]:
    """Layouts of all train then test videos."""
    return [plan_video(spec, "train", i) for i in range(spec.num_train)] + [
        plan_video(spec, "test", i) for i in range(spec.num_test)
    ]


def dataset_is_complete(out_dir: str | os.PathLike, spec: SyntheticSpec | None = None) -> bool:
    """True if ``out_dir`` holds a finished data set (and, if given, one generated from ``spec``)."""
    root = Path(out_dir)
    try:
        database = json.loads((root / ANNOTATION_FILE).read_text(encoding="utf-8"))["database"]
        saved = json.loads((root / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if not (root / CLASS_MAP_FILE).is_file():
        return False
    if spec is not None and saved != spec.to_json():
        return False
    return all((root / VIDEO_DIR / f"{vid}.mp4").is_file() for vid in database)


def saved_spec(out_dir: str | os.PathLike) -> dict | None:
    """The generation parameters recorded in ``out_dir``, or None."""
    try:
        return json.loads((Path(out_dir) / SPEC_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_one(args: tuple[SyntheticSpec, VideoLayout, Path]) -> int:
    return write_video(*args)


def generate_from_spec(out_dir: str | os.PathLike, spec: SyntheticSpec,
                       progress: Callable[[str], None] | None = None, workers: int = 1) -> Path:
    """Write the data set described by ``spec`` into ``out_dir``; return the annotation file.

    annotations.json is removed first and written last, so an interrupted run never leaves a data
    set that looks complete. Stale ``*.mp4`` files of an earlier generation are removed at the end.
    ``workers > 1`` encodes videos in that many processes (x264 itself runs single-threaded,
    because its threaded mode is not bit-exact from run to run).
    """
    spec.validate()
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    root = Path(out_dir)
    videos = root / VIDEO_DIR
    videos.mkdir(parents=True, exist_ok=True)
    ann_path = root / ANNOTATION_FILE
    ann_path.unlink(missing_ok=True)
    (root / SPEC_FILE).unlink(missing_ok=True)

    names = [c.name for c in ACTION_CLASSES[: spec.num_classes]]
    database: dict[str, dict] = {}
    layouts = plan_dataset(spec)
    jobs = [(spec, layout, videos / f"{layout.video_id}.mp4") for layout in layouts]
    with contextlib.ExitStack() as stack:
        if workers > 1 and len(jobs) > 1:
            # spawn, not fork: the caller may hold threads (torch, Ray) that fork would break
            pool = stack.enter_context(ProcessPoolExecutor(min(workers, len(jobs)),
                                                           mp_context=multiprocessing.get_context("spawn")))
            counts = pool.map(_write_one, jobs)
        else:
            counts = (write_video(*job) for job in jobs)
        for i, (layout, frames) in enumerate(zip(layouts, counts, strict=True)):
            database[layout.video_id] = {
                "subset": layout.subset,
                "duration": frames / layout.fps,
                "frame": frames,
                "annotations": [
                    {"segment": [inst.start_frame / layout.fps, inst.end_frame / layout.fps],
                     "label": names[inst.label]}
                    for inst in layout.instances
                ],
            }
            if progress is not None:
                progress(f"[{i + 1}/{len(layouts)}] {layout.video_id}: {frames} frames, "
                         f"{len(layout.instances)} actions")

    keep = {f"{vid}.mp4" for vid in database}
    for stale in videos.glob("*.mp4"):
        if stale.name not in keep:
            stale.unlink()
    _atomic_write_text(root / CLASS_MAP_FILE, "".join(f"{n}\n" for n in names))
    _atomic_write_text(root / SPEC_FILE, json.dumps(spec.to_json(), indent=1) + "\n")
    _atomic_write_text(ann_path, json.dumps({"database": database}, indent=1) + "\n")
    return ann_path


def generate_dataset(
    out_dir: str | os.PathLike,
    num_train: int = 20,
    num_test: int = 10,
    num_classes: int = 4,
    duration_s: float | tuple[float, float] = (20.0, 30.0),
    fps: int = 30,
    width: int = 320,
    height: int = 180,
    seed: int = 0,
    crf: int = 23,
    bitrate_kbps: int | None = None,
    action_duration_s: tuple[float, float] = (1.5, 6.0),
    gap_s: tuple[float, float] = (1.0, 5.0),
    noise: int = 16,
    progress: Callable[[str], None] | None = None,
    workers: int = 1,
    fps_cycle: tuple[int, ...] = (),
) -> Path:
    """Generate a synthetic THUMOS-like data set into ``out_dir``; return the annotation file.

    ``duration_s`` is a fixed length or a (min, max) range. Defaults: 320x180 at 30 fps like
    THUMOS; ``generate_dataset(out, **asdict(DEMO_SPEC))`` gives the demo set. ``fps_cycle``
    (e.g. (25, 30)) gives the videos of each split alternating frame rates instead of ``fps``.
    """
    if isinstance(duration_s, (int, float)):
        duration_s = (float(duration_s), float(duration_s))
    spec = SyntheticSpec(
        num_train=num_train, num_test=num_test, num_classes=num_classes,
        duration_s=(float(duration_s[0]), float(duration_s[1])), fps=fps, width=width, height=height,
        seed=seed, crf=crf, bitrate_kbps=bitrate_kbps,
        action_duration_s=(float(action_duration_s[0]), float(action_duration_s[1])),
        gap_s=(float(gap_s[0]), float(gap_s[1])), noise=noise, fps_cycle=tuple(fps_cycle),
    )
    return generate_from_spec(out_dir, spec, progress, workers)



def segment_rows(out_dir: str | os.PathLike, video_ext: str = "mp4") -> list[dict[str, str]]:
    """The generated set's segments as CSV rows (video file name, start, end, label, split), the
    input of ``pipelines/prepare_dataset.py``; split is "train" / "test". Seconds are written with
    full precision (repr), so the CSV states exactly the json's segments."""
    database = json.loads((Path(out_dir) / ANNOTATION_FILE).read_text(encoding="utf-8"))["database"]
    split_of = {"training": "train", "validation": "test"}
    return [{"video": f"{vid}.{video_ext}", "start": repr(float(a["segment"][0])), "end": repr(float(a["segment"][1])),
             "label": a["label"], "split": split_of[info["subset"]]}
            for vid, info in sorted(database.items()) for a in info["annotations"]]
