"""What a frame store holds (its spec, in ``frame_store.json``) and which configs it serves.

A store holds, per video, the frames on one *grid*:

* ``sampling: sliding`` with ``step: k``: raw frames ``0, k, 2k, ...`` plus the video's last frame
  (a plan's index past the decoder's end is clamped to it, as ``read_frames`` clamps). A config
  reads the grid ``arange(0, num_frames, frame_stride / frames_per_position)``
  (``adatad.data.sampling``), random truncation and sliding windows alike, so a store serves it when
  its step divides the config's: a step-2 store serves the 768x2 rows (step 2) and the 768x1 rows
  (step 4, every second stored frame);
* ``sampling: resize`` with ``frames: n``: the ``n`` frames of the one whole-video window
  (``adatad.data.resize_sampling``; ActivityNet's 192 x 4 = 768); a step-1 store serves it too.

Frames are stored at their own size unless the short side exceeds ``short_side``; then they are
resized to it (``ResizeShortSide``, the transforms' own resize). ``short_side`` defaults to the
largest size a config's transforms resize the short side to (train ``Resize(-1, 182)``, test 160),
so nothing a transform uses is lost; a store serves configs needing at most its ``short_side``.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from adatad.atomic import atomic_write_text
from adatad.config import DataConfig
from adatad.data.resize_sampling import resize_frame_indices
from adatad.data.sampling import frame_step
from adatad.data.frame_store.codec import DEFAULT_CODEC, FrameCodec
from adatad.locations import as_path

MANIFEST_FILE = "frame_store.json"
ENTRY_DIR = "videos"
ENTRY_SUFFIX = ".parquet"
STORE_VERSION = 1


class StoreSpecError(ValueError):
    """A store folder whose spec is missing, unreadable or not the one asked for."""


@dataclass(frozen=True)
class StoreSpec:
    codec: str = DEFAULT_CODEC
    quality: int | None = None  # JPEG only
    sampling: str = "sliding"  # "sliding" (every `step`-th frame) or "resize" (`frames` per video)
    step: int | None = 4
    frames: int | None = None
    short_side: int = 182

    def __post_init__(self) -> None:
        object.__setattr__(self, "quality", FrameCodec(self.codec, self.quality).quality)  # validates
        if self.sampling == "sliding":
            if not isinstance(self.step, int) or self.step < 1 or self.frames is not None:
                raise StoreSpecError(f"a sliding store needs step >= 1 and no frames, got step {self.step}, "
                                     f"frames {self.frames}")
        elif self.sampling == "resize":
            if not isinstance(self.frames, int) or self.frames < 1 or self.step is not None:
                raise StoreSpecError(f"a resize store needs frames >= 1 and no step, got frames {self.frames}, "
                                     f"step {self.step}")
        else:
            raise StoreSpecError(f"store sampling {self.sampling!r}: expected 'sliding' or 'resize'")
        if self.short_side < 1:
            raise StoreSpecError(f"store short_side must be >= 1, got {self.short_side}")

    def frame_codec(self) -> FrameCodec:
        return FrameCodec(self.codec, self.quality)

    def grid(self) -> str:
        return f"every {self.step}. frame" if self.sampling == "sliding" else f"{self.frames} frames per video"

    def tag(self) -> str:
        """A folder-name suffix, e.g. `step4-182px`."""
        grid = f"step{self.step}" if self.sampling == "sliding" else f"resize{self.frames}"
        return f"{grid}-{self.short_side}px"

    def describe(self) -> str:
        """e.g. `every 4. frame, short side <= 182 px, yuv420-zstd`."""
        return f"{self.grid()}, short side <= {self.short_side} px, {self.frame_codec().describe()}"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> StoreSpec:
        keys = {k: raw[k] for k in ("codec", "quality", "sampling", "step", "frames", "short_side") if k in raw}
        return cls(**keys)

    def stored_indices(self, source_frames: int, record_frames: int) -> np.ndarray:
        """The raw frame indices an entry holds for a video of ``source_frames`` decodable frames whose
        record says ``record_frames`` (what resize sampling spreads its frames over)."""
        if self.sampling == "sliding":
            grid = np.arange(0, source_frames, self.step, dtype=np.int64)
            return np.union1d(grid, [source_frames - 1])
        return np.unique(np.clip(resize_frame_indices(record_frames, self.frames), 0, source_frames - 1))


def needed_short_side(data: DataConfig) -> int:
    """The largest short side a config's transforms resize frames to (train and test)."""
    return max(int(data.train_resize_short), int(data.test_resize_short))


def spec_for_config(data: DataConfig, codec: str = DEFAULT_CODEC, quality: int | None = None,
                    step: int | None = None, short_side: int | None = None) -> StoreSpec:
    """The store a config reads: its grid and short side (``step`` / ``short_side`` may ask for a finer
    grid or larger frames, to share the store with other configs)."""
    need = needed_short_side(data)
    if short_side is not None and short_side < need:
        raise StoreSpecError(f"--short-side {short_side}: this config resizes frames to {need} px; a smaller "
                             f"store would lose what its transforms use")
    if data.sampling == "resize":
        if step not in (None, 1):
            raise StoreSpecError(f"--step {step}: a whole-video config (data.sampling: resize) reads "
                                 f"{data.window_size * data.frames_per_position} frames spread over each video; "
                                 f"only --step 1 (every frame) also serves it")
        if step == 1:
            return StoreSpec(codec, quality, "sliding", 1, None, short_side or need)
        return StoreSpec(codec, quality, "resize", None, data.window_size * data.frames_per_position,
                         short_side or need)
    need_step = frame_step(data.frame_stride, data.frames_per_position)
    if step is not None and (step < 1 or need_step % step):
        raise StoreSpecError(f"--step {step}: this config reads every {need_step}. frame; the store's step must "
                             f"divide it")
    return StoreSpec(codec, quality, "sliding", step or need_step, None, short_side or need)


def why_not_served(spec: StoreSpec, data: DataConfig) -> str | None:
    """Why a store of ``spec`` cannot serve ``data``'s windows (None: it can)."""
    need = spec_for_config(data)
    if spec.short_side < need.short_side:
        return f"its frames have short side <= {spec.short_side} px, this config resizes to {need.short_side} px"
    if need.sampling == "sliding":
        if spec.sampling != "sliding" or need.step % spec.step:
            return f"it holds {spec.grid()}, this config reads every {need.step}. frame"
    elif not (spec.sampling == "sliding" and spec.step == 1) and (spec.sampling, spec.frames) != ("resize", need.frames):
        return f"it holds {spec.grid()}, this config reads {need.frames} frames spread over each video"
    return None


def needed_indices(data: DataConfig, record_frames: int) -> np.ndarray:
    """Every raw frame index a window of this config may read from a video whose record counts
    ``record_frames`` frames (before clamping to the decoder's count)."""
    if data.sampling == "resize":
        return np.unique(resize_frame_indices(record_frames, data.window_size * data.frames_per_position))
    return np.arange(0, record_frames, frame_step(data.frame_stride, data.frames_per_position), dtype=np.int64)


def entry_name(video_path: str | Path) -> str:
    """An entry is named by its video's file name without extension (what ``detect.py`` calls a video's
    id; a config's id can differ by a prefix, e.g. ActivityNet's ``v_``), so one store serves both."""
    return Path(video_path).stem


def entry_path(root: str | Path, video_path: str | Path) -> Path:
    """The entry of the video file ``video_path`` in the store at ``root`` (a URI gives an ObjectPath)."""
    return as_path(root) / ENTRY_DIR / f"{entry_name(video_path)}{ENTRY_SUFFIX}"


def read_manifest(root: str | Path) -> StoreSpec | None:
    """The store's spec, or None when ``root`` holds no store (no ``frame_store.json``)."""
    path = as_path(root) / MANIFEST_FILE
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != STORE_VERSION:
            raise StoreSpecError(f"{path}: store version {raw.get('version')!r}, this code reads {STORE_VERSION}; "
                                 f"build the store again")
        return StoreSpec.from_dict(raw)
    except (OSError, json.JSONDecodeError, TypeError, ValueError) as exc:
        if isinstance(exc, StoreSpecError):
            raise
        raise StoreSpecError(f"{path}: not a frame store manifest ({exc})") from None


def write_manifest(root: str | Path, spec: StoreSpec) -> Path:
    payload = {"version": STORE_VERSION, **spec.to_dict()}
    return atomic_write_text(as_path(root) / MANIFEST_FILE, json.dumps(payload, indent=2) + "\n")
