"""Frame store vs decoding the videos: CPU per training clip and per validation video-hour, formats, Ray Data.

Why: every epoch decodes the same H.264 again (~1.8 CPU s per THUMOS training clip, most of it
frames between the grid frames a window reads); a frame store (``pipelines/prepare_frames.py``)
decodes each video once. Measured side by side in one run, one process, one thread (decord,
OpenCV, torch), on synthetic THUMOS-like videos (320x180, 30 fps, H.264 from x264 veryfast:
250-frame GOP, B-frames; textured moving background + noise, which compresses worse than real
footage), cached in --cache-dir. CPU = time.process_time of this process.

  formats      one 768-frame training window (stride 4) read back from a store entry of each codec:
               CPU s, bytes per frame, PSNR against decord's frames; JPEG also through
               torchvision.io.decode_jpeg (the CPU side of shipping compressed frames to the trainer)
               and, when installed, simplejpeg and QOI
  build        CPU s and bytes per video-hour of the default store (THUMOS config: every 4th frame)
  training     ClipLoader(train=True).load with the full THUMOS train chain, same seeds: video vs store
  validation   ClipLoader.iter_video_windows over every video: decode-once (today) vs store
  Ray Data     clips/s through pipelines/ray_layer/datasets.train_dataset, 2 decode actors
  on paper     THUMOS-14 and ActivityNet-1.3: disk, build time on 16 cores, clips/s 16 cores feed

The last two lines read ``frame store: training clip <a> -> <b> CPU s (x<r> less)`` and
``frame store: validation <a> -> <b> CPU s per video-hour (x<r> less)``.

    .venv/bin/python benchmarks/bench_frame_store.py [--videos 4] [--cache-dir DIR] [--train-clips 8] [--ray-clips 16]
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adatad.config import CONFIG_DIR, Config, load_config  # noqa: E402
from adatad.data.annotations import VideoRecord, load_annotations  # noqa: E402
from adatad.data.clips import ClipLoader, record_to_row  # noqa: E402
from adatad.data.frame_store.build import VideoToStore, build_entry  # noqa: E402
from adatad.data.frame_store.codec import FrameCodec  # noqa: E402
from adatad.data.frame_store.entry import EntryReader  # noqa: E402
from adatad.data.frame_store.spec import StoreSpec, entry_path, spec_for_config, write_manifest  # noqa: E402
from adatad.data.video import read_frames  # noqa: E402
from adatad.datasets.synthetic import ANNOTATION_FILE, VIDEO_DIR, dataset_is_complete, generate_from_spec  # noqa: E402
from adatad.datasets.synthetic_plan import SyntheticSpec  # noqa: E402

# THUMOS-14 (benchmarks/README.md, "THUMOS-14 at scale"): stride-4 frames the two subsets hold.
THUMOS14 = {"hours": 11.6 + 12.8, "stored_frames": 305e3 + 336e3}
# ActivityNet-1.3 training + validation subsets (10,024 + 4,926 videos, ~75 % of its 648 hours), resize
# sampling: 768 frames per video whatever its length; OpenTAD's copies are re-encoded at 15 fps.
ANET = {"videos": 14950, "hours": 0.75 * 648, "fps": 15, "frames_per_video": 768}
CORES = 16
CLIP_MB = 768 * 160 * 160 * 3 / 1e6  # a decoded, augmented training clip in the object store


def _machine() -> str:
    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    load = " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"
    return f"{model}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}; load average {load}"


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def _cpu(fn, repeat: int = 1):
    """(result of the last call, least CPU s of `repeat` calls)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.process_time()
        out = fn()
        best = min(best, time.process_time() - start)
    return out, best


def _videos(cache: Path, count: int) -> list[VideoRecord]:
    spec = SyntheticSpec(num_train=0, num_test=count, num_classes=4, duration_s=(110.0, 300.0), fps=30,
                         width=320, height=180, seed=1)
    if not dataset_is_complete(cache, spec):
        generate_from_spec(cache, spec, progress=lambda line: print(f"  {line}", flush=True), workers=2)
    records, _ = load_annotations(cache / ANNOTATION_FILE, cache / VIDEO_DIR, "validation")
    return records


def _store(root: Path, records: list[VideoRecord], spec: StoreSpec) -> tuple[float, int, float]:
    """Build the store; (CPU s, bytes, video hours)."""
    write_manifest(root, spec)
    cpu, size, hours = 0.0, 0, 0.0
    for r in records:
        built = build_entry(root, VideoToStore(r.video_id, r.path, r.num_frames), spec)
        if built.error:
            raise RuntimeError(built.error)
        cpu, size, hours = cpu + built.cpu_s, size + built.bytes, hours + built.video_hours
    return cpu, size, hours


def _formats(work: Path, record: VideoRecord, cfg: Config) -> dict[str, float]:
    """The formats table; returns the default codec's and JPEG q90's bytes per frame."""
    indices = np.arange(0, 768 * 4, 4)
    reference, video_cpu = _cpu(lambda: read_frames(record.path, indices), repeat=2)
    print(f"formats: one training window, 768 frames at stride 4 of {record.video_id} (320x180), least of 3 reads")
    print(f"  {'read the 768 frames':<34}{'CPU s':>7}{'KB/frame':>10}{'PSNR dB':>9}{'build CPU s/frame':>19}")
    print(f"  {'H.264 via decord (today)':<34}{video_cpu:>7.3f}{'-':>10}{'-':>9}{'-':>19}")
    sizes: dict[str, float] = {}
    jpeg_blobs: list[bytes] = []
    for codec, quality in (("yuv420-zstd", None), ("rgb-zstd", None), ("jpeg", 75), ("jpeg", 90), ("jpeg", 95)):
        spec = spec_for_config(cfg.data, codec, quality)
        root = work / f"format-{codec}-{quality}"
        build_cpu, size, _ = _store(root, [record], spec)
        with EntryReader(entry_path(root, record.path)) as entry:
            frames, cpu = _cpu(lambda e=entry: e.read(indices), repeat=3)
            per_frame = size / len(entry.indices)
            if (codec, quality) == ("jpeg", 90):
                jpeg_blobs = [FrameCodec("jpeg", 90).encode(f) for f in reference]
        name = FrameCodec(codec, quality).describe() + (" (default)" if codec == "yuv420-zstd" else "")
        sizes[name.split(" (")[0]] = per_frame
        psnr = _psnr(frames, reference)
        print(f"  {name:<34}{cpu:>7.3f}{per_frame / 1024:>10.1f}{psnr:>9.1f}{build_cpu / len(indices):>19.4f}")
    _other_decoders(jpeg_blobs, reference)
    return sizes


def _other_decoders(jpeg_blobs: list[bytes], reference: np.ndarray) -> None:
    import torch
    from torchvision.io import decode_jpeg

    torch.set_num_threads(1)
    tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in jpeg_blobs]
    frames, cpu = _cpu(lambda: decode_jpeg(tensors), repeat=3)
    out = np.stack([f.permute(1, 2, 0).numpy() for f in frames])
    print(f"  {'jpeg q90, torchvision decode_jpeg':<34}{cpu:>7.3f}{np.mean([len(b) for b in jpeg_blobs]) / 1024:>10.1f}"
          f"{_psnr(out, reference):>9.1f}{'':>19}  (batched list; the CPU side of nvJPEG's path)")
    try:
        import simplejpeg

        _, cpu = _cpu(lambda: [simplejpeg.decode_jpeg(b, fastdct=True, fastupsample=True) for b in jpeg_blobs], 3)
        print(f"  {'jpeg q90, simplejpeg (fast DCT)':<34}{cpu:>7.3f}")
    except ImportError:
        print("  (simplejpeg not installed: pip install simplejpeg to measure it)")
    try:
        import qoi

        blobs = [qoi.encode(np.ascontiguousarray(f)) for f in reference]
        _, cpu = _cpu(lambda: [qoi.decode(b) for b in blobs], 3)
        print(f"  {'QOI (lossless)':<34}{cpu:>7.3f}{np.mean([len(b) for b in blobs]) / 1024:>10.1f}{'inf':>9}")
    except ImportError:
        print("  (qoi not installed: pip install qoi to measure it)")


def _training(records: list[VideoRecord], cfg: Config, store: Path | None, clips: int) -> float:
    """Mean CPU s per clip (random window + full train chain), seeds 0..clips-1."""
    data = replace(cfg.data, frame_store=str(store) if store else None)
    loader = ClipLoader(data, train=True)
    loader.load(record_to_row(records[0], 0), np.random.default_rng(99))  # first-call set-up off the clock
    cpu = []
    for i in range(clips):
        start = time.process_time()
        example = loader.load(record_to_row(records[i % len(records)], i), np.random.default_rng(i))
        cpu.append(time.process_time() - start)
        if not example["valid"]:
            raise RuntimeError(f"clip {i} failed")
    return float(np.mean(cpu))


def _validation(records: list[VideoRecord], cfg: Config, store: Path | None) -> tuple[float, int]:
    """(CPU s over every test window of every video, windows)."""
    loader = ClipLoader(replace(cfg.data, frame_store=str(store) if store else None), train=False)
    cpu, windows = 0.0, 0
    for index, record in enumerate(records):
        start = time.process_time()
        for example in loader.iter_video_windows(record_to_row(record, index)):
            windows += 1
            if not example["valid"]:
                raise RuntimeError(f"{record.video_id}: invalid window")
        cpu += time.process_time() - start
    return cpu, windows


def _ray_rates(records: list[VideoRecord], cfg: Config, store: Path | None, clips: int) -> float:
    """Steady clips/s (after the first 4, which the prefetch may hold) of the training dataset with 2
    decode actors, read by one consumer as a Train worker reads its shard."""
    from pipelines.ray_layer.datasets import train_dataset

    cfg = replace(cfg, data=replace(cfg.data, frame_store=str(store) if store else None))
    cfg.runtime.decode_actors, cfg.runtime.decode_actor_cpus = 2, 0.9
    ds = train_dataset(cfg, (records * (clips // len(records) + 1))[:clips])
    count, first_at, first_n = 0, None, 4
    for batch in ds.iter_torch_batches(batch_size=1, prefetch_batches=2, device="cpu"):
        count += len(batch["frames"])
        if count == first_n:
            first_at = time.perf_counter()
    return (count - first_n) / (time.perf_counter() - first_at)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=4, help="synthetic videos (110-300 s each)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the videos are kept (default: a temp dir)")
    p.add_argument("--train-clips", type=int, default=8, help="training clips per path")
    p.add_argument("--ray-clips", type=int, default=32, help="clips per Ray Data run (0: skip Ray)")
    args = p.parse_args()
    cv2.setNumThreads(1)
    wall = time.perf_counter()
    print(f"machine: {_machine()}")
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench_frames_"))
    work = Path(tempfile.mkdtemp(prefix="bench_frame_store_"))
    records = _videos(cache, args.videos)
    cfg = load_config(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml", [
        f"data.annotation_file={cache / ANNOTATION_FILE}", f"data.video_dir={cache / VIDEO_DIR}",
        "data.class_map_file=null", "model.head.num_classes=4", "model.backbone.checkpoint=null",
        "model.backbone.allow_random_init=true"])
    hours_total = sum(r.num_frames / r.fps for r in records) / 3600
    print(f"videos: {len(records)} synthetic THUMOS-like (320x180, 30 fps, H.264), {hours_total:.3f} h; cache {cache}")

    sizes = _formats(work, records[0], cfg)

    spec = spec_for_config(cfg.data)
    build_cpu, size, hours = _store(work / "store", records, spec)
    jpeg_root = work / "store-jpeg"
    _store(jpeg_root, records, spec_for_config(cfg.data, "jpeg"))
    per_hour_gb = size / hours / 1e9
    print(f"build ({spec.describe()}): {build_cpu / hours:.0f} CPU s and {per_hour_gb:.2f} GB per video-hour "
          f"({build_cpu:.1f} CPU s, {size / 1e6:.0f} MB for {hours:.3f} h)")

    train_video = _training(records, cfg, None, args.train_clips)
    train_store = _training(records, cfg, work / "store", args.train_clips)
    train_jpeg = _training(records, cfg, jpeg_root, args.train_clips)
    print(f"training clip ({args.train_clips} clips, THUMOS train chain, CPU s per clip): video {train_video:.3f}, "
          f"store {train_store:.3f} (x{train_video / train_store:.1f} less), jpeg q90 store {train_jpeg:.3f} "
          f"(x{train_video / train_jpeg:.1f} less)")

    val_video, windows = _validation(records, cfg, None)
    val_store, _ = _validation(records, cfg, work / "store")
    val_jpeg, _ = _validation(records, cfg, jpeg_root)
    per_h = {k: v / hours_total for k, v in (("video", val_video), ("store", val_store), ("jpeg", val_jpeg))}
    print(f"validation ({windows} windows, CPU s per video-hour): decode-once {per_h['video']:.1f}, store "
          f"{per_h['store']:.1f} (x{per_h['video'] / per_h['store']:.1f} less), jpeg q90 store {per_h['jpeg']:.1f} "
          f"(x{per_h['video'] / per_h['jpeg']:.1f} less)")

    if args.ray_clips:
        import ray
        import ray.data

        ray.init(num_cpus=2, object_store_memory=2048 * 2**20, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            ray_video = _ray_rates(records, cfg, None, args.ray_clips)
            ray_store = _ray_rates(records, cfg, work / "store", args.ray_clips)
        finally:
            ray.shutdown()
        print(f"Ray Data, 2 decode actors, {args.ray_clips} clips, clips/s after the first 4: video {ray_video:.2f}, store {ray_store:.2f} "
              f"(x{ray_store / ray_video:.1f})")

    _on_paper(sizes, build_cpu / hours, train_store, train_jpeg)
    print(f"wall time {time.perf_counter() - wall:.0f} s")
    print(f"frame store: training clip {train_video:.2f} -> {train_store:.2f} CPU s (x{train_video / train_store:.1f} less)")
    print(f"frame store: validation {per_h['video']:.1f} -> {per_h['store']:.1f} CPU s per video-hour "
          f"(x{per_h['video'] / per_h['store']:.1f} less)")


def _on_paper(sizes: dict[str, float], build_per_hour: float, clip_cpu: float, clip_cpu_jpeg: float) -> None:
    """THUMOS-14 and ActivityNet-1.3 from the measured per-frame bytes and CPU (assumptions printed)."""
    print("on paper (measured bytes per frame and CPU above; real footage compresses better than this noise):")
    for name in ("yuv420-zstd", "jpeg q90"):
        print(f"  THUMOS-14 {name}: {THUMOS14['stored_frames'] * sizes[name] / 1e9:.0f} GB for "
              f"{THUMOS14['stored_frames'] / 1e3:.0f} k frames (every 4th, 320x180)")
    print(f"  THUMOS-14 build: {build_per_hour * THUMOS14['hours'] / CORES / 60:.0f} min on {CORES} cores "
          f"({build_per_hour:.0f} CPU s per video-hour x {THUMOS14['hours']:.1f} h)")
    anet_frames = ANET["videos"] * ANET["frames_per_video"]
    scale = (182 * 324) / (180 * 320)  # frames stored at short side 182 (16:9)
    for name in ("yuv420-zstd", "jpeg q90"):
        print(f"  ActivityNet-1.3 {name}: {anet_frames * sizes[name] * scale / 1e9:.0f} GB for "
              f"{anet_frames / 1e6:.1f} M frames (768 per video, 324x182)")
    anet_build = build_per_hour * ANET["hours"] * ANET["fps"] / 30 * scale
    print(f"  ActivityNet-1.3 build: {anet_build / CORES / 3600:.1f} h on {CORES} cores (every frame of "
          f"{ANET['hours']:.0f} h at {ANET['fps']} fps decoded once, as at 30 fps above, scaled)")
    for name, cpu in (("store", clip_cpu), ("jpeg q90 store", clip_cpu_jpeg)):
        rate = CORES / cpu
        print(f"  {CORES} cores feed {rate:.0f} training clips/s from the {name} = {rate * CLIP_MB / 1e3:.1f} GB/s "
              f"of decoded clips ({CLIP_MB:.0f} MB each) = {rate * CLIP_MB * 8 / 1e3:.0f} Gbit/s to a separate GPU node")


if __name__ == "__main__":
    main()
