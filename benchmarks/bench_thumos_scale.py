"""Validation decode at THUMOS scale: per-window decoding (today) vs decode-once sliding windows.

Why: a validation cuts each test video into windows of 768 positions x frame stride 4 = 3,072
raw frames with 50 % overlap (docs/recipe.md section 2). Decoding each window on its own passes
most frames through the H.264 decoder twice, plus a lead-in from the keyframe before each
window; decode-once (``ClipLoader.iter_video_windows``) reads each video once, front to back.

Data: synthetic THUMOS-like test videos (``adatad.datasets.synthetic``: 320x180, 30 fps, H.264 High
from x264 preset veryfast with its default 250-frame keyframe interval and B-frames; durations
drawn from 60-400 s), cached in --cache-dir. The script prints the measured keyframe interval
and B-frame share. Every window goes through the real test transform (resize short side 160,
center crop 160); both paths must give identical windows (checked by hashing every window).

Figures, one process, one decode thread, OpenCV on one thread:
  * decoded frames: frames the decoder must pass through. Per window, from the keyframe at or
    before the window's first frame index to its last index (decord's get_key_indices); for
    decode-once, frames 0 to the video's last needed index.
  * CPU seconds (time.process_time of this process, all threads) per video-hour and scaled to
    a THUMOS-14 validation (its test split: 212 videos, 1.35 M frames).
  * a training epoch: ``ClipLoader(train=True).load`` on one clip per video (random window,
    decode + full train augmentation): decoded frames and CPU seconds per clip.
The last line reads ``validation decode: D decoded frames for V video frames (ratio R)`` for the
decode-once path.

    .venv/bin/python benchmarks/bench_thumos_scale.py [--videos 8] [--cache-dir DIR] [--train-clips 8]
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adatad.config import CONFIG_DIR, DataConfig, load_config  # noqa: E402
from adatad.data.annotations import VideoRecord, load_annotations  # noqa: E402
from adatad.data.clips import ClipLoader, record_to_row, window_rows  # noqa: E402
from adatad.data.sampling import sliding_windows  # noqa: E402
from adatad.data.video import VideoStream  # noqa: E402
from adatad.datasets.synthetic import (  # noqa: E402
    ANNOTATION_FILE,
    VIDEO_DIR,
    dataset_is_complete,
    generate_from_spec,
)
from adatad.datasets.synthetic_plan import SyntheticSpec  # noqa: E402

THUMOS14_TEST_FRAMES = 1.35e6  # THUMOS-14 test split (our "validation" subset): 212 videos
THUMOS14_TRAIN_VIDEOS = 200  # THUMOS-14 validation split (our "training" subset): one clip each per epoch


def _machine() -> str:
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}"


def _load_average() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "n/a"


def _videos(cache: Path, count: int, seed: int) -> tuple[Path, float]:
    """The annotation file of ``count`` THUMOS-like test videos in ``cache`` (generated if missing)."""
    spec = SyntheticSpec(num_train=0, num_test=count, num_classes=4, duration_s=(60.0, 400.0), fps=30,
                         width=320, height=180, seed=seed)
    start = time.perf_counter()
    if not dataset_is_complete(cache, spec):
        generate_from_spec(cache, spec, progress=lambda line: print(f"  {line}", flush=True), workers=2)
    return cache / ANNOTATION_FILE, time.perf_counter() - start


def _keyframes(records: list[VideoRecord]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    """Per video: decord's keyframe indices and frame count."""
    keys, counts = {}, {}
    for record in records:
        with VideoStream(record.path) as stream:
            keys[record.video_id], counts[record.video_id] = stream.key_indices, stream.num_frames
    return keys, counts


def _b_frame_share(path: str, frames: int = 500) -> float:
    import av  # PyAV reads the picture types, which decord does not expose

    types = []
    with av.open(path) as container:
        for frame in container.decode(container.streams.video[0]):
            types.append(frame.pict_type.name if hasattr(frame.pict_type, "name") else str(frame.pict_type))
            if len(types) >= frames:
                break
    return sum(t in ("B", "3") for t in types) / len(types)


def _lead_in_span(indices: np.ndarray, keys: np.ndarray, num_frames: int) -> int:
    """Frames the decoder passes through to read ``indices`` from a fresh reader."""
    idx = np.clip(indices, 0, num_frames - 1)
    first, last = int(idx.min()), int(idx.max())
    key = int(keys[np.searchsorted(keys, first, side="right") - 1]) if len(keys) and keys[0] <= first else 0
    return last - key + 1


class _SkipFailures:
    """Counts decord's "Failed to skip frames" lines, which its C++ code writes to fd 2.

    decord2 gives up skipping frames after 10,000 polls of its decoder thread (a loaded machine)
    and then returns a wrong frame; the per-window path skips, decode-once does not. Other
    lines written to fd 2 meanwhile are passed on.
    """

    def __init__(self) -> None:
        self.count = 0

    @contextlib.contextmanager
    def watch(self):
        sys.stderr.flush()
        saved = os.dup(2)
        with tempfile.TemporaryFile() as tmp:
            os.dup2(tmp.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
                os.close(saved)
                tmp.seek(0)
                lines = tmp.read().decode(errors="replace").splitlines()
                self.count += sum("Failed to skip frames" in line for line in lines)
                other = [line for line in lines if line.strip() and "Failed to skip frames" not in line]
                if other:
                    print("\n".join(other), file=sys.stderr, flush=True)


def _digest(example: dict) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    for key in ("frames", "masks", "window_start_frame", "valid"):
        h.update(np.ascontiguousarray(example[key]).tobytes())
    return h.digest()


def _validation(records, data: DataConfig, keys, counts) -> dict:
    """Both paths over every test video, alternating per video (load changes hit both alike)."""
    loader = ClipLoader(data, train=False)
    rng = np.random.default_rng(0)
    out = {"cpu_window": 0.0, "cpu_once": 0.0, "dec_window": 0, "dec_once": 0, "windows": 0, "identical": 0,
           "invalid": 0}
    skips = {"window": _SkipFailures(), "once": _SkipFailures()}
    for index, record in enumerate(records):
        n, k = counts[record.video_id], keys[record.video_id]
        plans = sliding_windows(record, data.window_size, data.frame_stride, data.test_window_overlap)
        out["dec_window"] += sum(_lead_in_span(p.frame_indices, k, n) for p in plans)
        out["dec_once"] += int(min(max(int(p.frame_indices.max()) for p in plans), n - 1)) + 1
        per_window = []
        for row in window_rows([record], data):
            row["video_index"] = index
            with skips["window"].watch():
                start = time.process_time()
                example = loader.load(row, rng)
                out["cpu_window"] += time.process_time() - start
            per_window.append(_digest(example))
        once = []
        windows = loader.iter_video_windows(record_to_row(record, index))
        while True:
            with skips["once"].watch():
                start = time.process_time()
                example = next(windows, None)
                out["cpu_once"] += time.process_time() - start
            if example is None:
                break
            out["invalid"] += int(not example["valid"])
            once.append(_digest(example))
        out["windows"] += len(plans)
        out["identical"] += sum(a == b for a, b in zip(per_window, once, strict=True))
        print(f"  {record.video_id}: {record.num_frames} frames, {len(plans)} windows, "
              f"CPU s per-window {out['cpu_window']:.1f} / decode-once {out['cpu_once']:.1f} (cumulative)",
              flush=True)
    out["skip_window"], out["skip_once"] = skips["window"].count, skips["once"].count
    return out


def _training(records, data: DataConfig, keys, counts, clips: int) -> tuple[float, float, int]:
    """(mean decoded frames, mean CPU s) per training clip (random window, decode + augmentation),
    and decord's skip failures."""
    loader = ClipLoader(data, train=True)
    decoded, cpu, skips = [], [], _SkipFailures()
    for i in range(clips):
        record = records[i % len(records)]
        row = record_to_row(record, i)
        plan = loader.plan(row, np.random.default_rng(i))  # the window load() draws with the same seed
        decoded.append(_lead_in_span(plan.frame_indices, keys[record.video_id], counts[record.video_id]))
        with skips.watch():
            start = time.process_time()
            example = loader.load(row, np.random.default_rng(i))
            cpu.append(time.process_time() - start)
        if not example["valid"]:
            raise RuntimeError(f"{record.path}: training clip failed to decode")
    return float(np.mean(decoded)), float(np.mean(cpu)), skips.count


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=8, help="synthetic test videos (durations 60-400 s)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the videos are kept (default: a temp dir)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data set")
    p.add_argument("--train-clips", type=int, default=8, help="training clips (one per video, cycling)")
    args = p.parse_args()
    cv2.setNumThreads(1)
    wall = time.perf_counter()
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench_thumos_"))
    print(f"machine: {_machine()}; load average at start {_load_average()}")
    ann, gen_s = _videos(cache, args.videos, args.seed)
    records, _ = load_annotations(ann, cache / VIDEO_DIR, "validation")
    cfg = load_config(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml", [
        f"data.annotation_file={ann}", f"data.video_dir={cache / VIDEO_DIR}", "data.class_map_file=null",
        "model.head.num_classes=4", "model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"])
    data = cfg.data
    keys, counts = _keyframes(records)
    frames = sum(counts.values())
    hours = sum(counts[r.video_id] / r.fps for r in records) / 3600
    gops = np.concatenate([np.diff(k) for k in keys.values() if len(k) > 1])
    print(f"videos: {len(records)} synthetic THUMOS-like test videos (320x180, 30 fps, H.264), {frames} frames "
          f"= {hours:.2f} h, {min(counts.values())}-{max(counts.values())} frames each; cache {cache} "
          f"({gen_s:.0f} s to generate or check)")
    print(f"  keyframe interval: median {np.median(gops):.0f}, min {gops.min()}, max {gops.max()} frames; "
          f"B-frames: {_b_frame_share(records[0].path):.0%} of the first 500 frames of {records[0].video_id}")
    print(f"settings (THUMOS config): windows of {data.window_size} positions x frame stride {data.frame_stride} "
          f"= {data.window_size * data.frame_stride} frames, overlap {data.test_window_overlap}; test transform "
          f"resize short side {data.test_resize_short} + center crop {data.crop_size}; {data.decode_threads} "
          "decode thread; OpenCV 1 thread")
    print("decoded frames = frames the decoder passes through: per window, from the keyframe at or before its "
          "first index to its last index; decode-once, from frame 0 to the video's last needed index")

    val = _validation(records, data, keys, counts)
    scale = THUMOS14_TEST_FRAMES / frames
    print(f"validation ({val['windows']} windows; windows identical in both paths: {val['identical']} of "
          f"{val['windows']}; invalid: {val['invalid']}):")
    print(f"  {'path':<22}{'decoded frames':>15}{'x video':>9}{'CPU s':>9}{'CPU s / video-h':>17}"
          f"{'CPU s / THUMOS-14 val':>23}")
    for name, dec, cpu in (("per-window (today)", val["dec_window"], val["cpu_window"]),
                           ("decode-once", val["dec_once"], val["cpu_once"])):
        print(f"  {name:<22}{dec:>15}{dec / frames:>9.2f}{cpu:>9.1f}{cpu / hours:>17.0f}{cpu * scale:>23.0f}")
    print(f"  decode-once / per-window: CPU x{val['cpu_once'] / val['cpu_window']:.2f}, "
          f"decoded frames x{val['dec_once'] / val['dec_window']:.2f}")
    print(f"  decord 'Failed to skip frames' (a wrong frame returned): per-window {val['skip_window']}, "
          f"decode-once {val['skip_once']}")

    dec_clip, cpu_clip, train_skips = _training(records, data, keys, counts, args.train_clips)
    print(f"training (ClipLoader(train=True).load, {args.train_clips} clips, random window + full augmentation): "
          f"{dec_clip:.0f} decoded frames and {cpu_clip:.2f} CPU s per clip; a THUMOS-14 epoch "
          f"({THUMOS14_TRAIN_VIDEOS} clips): {dec_clip * THUMOS14_TRAIN_VIDEOS / 1e6:.2f} M decoded frames, "
          f"{cpu_clip * THUMOS14_TRAIN_VIDEOS:.0f} CPU s; decord skip failures {train_skips}")
    print(f"wall time {time.perf_counter() - wall:.0f} s; load average at end {_load_average()}")
    print(f"validation decode: {val['dec_once']} decoded frames for {frames} video frames "
          f"(ratio {val['dec_once'] / frames:.2f})")


if __name__ == "__main__":
    main()
