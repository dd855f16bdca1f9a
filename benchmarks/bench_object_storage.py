"""Decode actors reading from an object store: bytes on the wire and clips/s, against local files.

Why: on a cluster without a shared filesystem the videos (or the frame store) live in a bucket, and
the decode actors of every node read them from there (`adatad/data/node_cache.py`,
`adatad/data/frame_store/entry.py`). decord cannot read byte ranges (handed a file object it copies the
whole file into memory first), so a video is either fetched whole for every clip or kept in a
bounded cache on the node's disk; a frame store entry is Parquet and can be read by ranges (its
footer, the `index` column, the row groups a window covers) or cached too. This measures which
costs what.

Videos: bench_frame_store's synthetic THUMOS-like ones (320x180, 30 fps, H.264, 110-300 s each),
cached in --cache-dir; the store: the default codec for the THUMOS 768x1 config (every 4th frame).
The endpoint: moto's S3 server on this machine behind a counting proxy (tests/s3_server.py), so the
bytes are what crosses the wire (HTTP headers included) and the time has no network in it: a real
bucket adds its latency and bandwidth to every byte counted here.

  training clip     bytes and requests per clip (ClipLoader, THUMOS train chain, one process):
                    video fetched whole per clip (what reading without a cache costs; the object's
                    size), video through the node cache (first epoch: the whole video once per node;
                    later epochs: one HEAD), store entry by ranges (data.cache_gb=0), store entry
                    through the node cache (first epoch, later epochs)
  validation        bytes per video-hour (every test window of every video, decode-once)
  Ray Data          clips/s of the training dataset with 2 decode actors (as bench_frame_store):
                    local video, S3 video through the cache (cold: emptied first; warm), local
                    store, S3 store by ranges, S3 store through the cache (warm)

    .venv/bin/python benchmarks/bench_object_storage.py [--videos 2] [--cache-dir DIR] [--clips 8] [--ray-clips 24]
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from bench_frame_store import _machine, _ray_rates, _store, _videos  # noqa: E402

from adatad.config import CONFIG_DIR, load_config  # noqa: E402
from adatad.data import node_cache  # noqa: E402
from adatad.data.annotations import VideoRecord  # noqa: E402
from adatad.data.clips import ClipLoader, record_to_row  # noqa: E402
from adatad.data.frame_store.spec import spec_for_config  # noqa: E402
from adatad.datasets.synthetic import ANNOTATION_FILE, VIDEO_DIR  # noqa: E402
from tests.s3_server import S3Server  # noqa: E402


def _traffic(s3: S3Server, fn) -> tuple[int, int]:
    """(bytes sent by the endpoint, requests) while `fn()` runs."""
    before = s3.traffic
    fn()
    after = s3.traffic
    return after[0] - before[0], after[1] - before[1]


def _clips(records: list[VideoRecord], data, count: int, offset: int = 0) -> None:
    loader = ClipLoader(data, train=True)
    for i in range(count):
        example = loader.load(record_to_row(records[i % len(records)], i), np.random.default_rng(offset + i))
        if not example["valid"]:
            raise RuntimeError(f"clip {i} failed")


def _validation(records: list[VideoRecord], data) -> None:
    loader = ClipLoader(data, train=False)
    for index, record in enumerate(records):
        for example in loader.iter_video_windows(record_to_row(record, index)):
            if not example["valid"]:
                raise RuntimeError(f"{record.video_id}: invalid window")


def _mb(n: float) -> str:
    return f"{n / 1e6:.2f} MB"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", type=int, default=2, help="synthetic videos (110-300 s each)")
    p.add_argument("--cache-dir", type=Path, default=None, help="where the videos are kept (default: a temp dir)")
    p.add_argument("--clips", type=int, default=8, help="training clips per measurement")
    p.add_argument("--ray-clips", type=int, default=24, help="clips per Ray Data run (0: skip Ray)")
    args = p.parse_args()
    cv2.setNumThreads(1)
    wall = time.perf_counter()
    print(f"machine: {_machine()}")
    cache = args.cache_dir or Path(tempfile.mkdtemp(prefix="bench_frames_"))
    work = Path(tempfile.mkdtemp(prefix="bench_object_storage_"))
    # the node cache of this "node" (and its Ray actors); short: Ray's sockets go under it, <= 107 characters
    os.environ["TMPDIR"] = tempfile.mkdtemp(prefix="bos-", dir="/tmp")
    tempfile.tempdir = None
    records = _videos(cache, args.videos)
    cfg = load_config(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml", [
        f"data.annotation_file={cache / ANNOTATION_FILE}", f"data.video_dir={cache / VIDEO_DIR}",
        "data.class_map_file=null", "model.head.num_classes=4", "model.backbone.checkpoint=null",
        "model.backbone.allow_random_init=true"])
    hours = sum(r.num_frames / r.fps for r in records) / 3600
    sizes = [os.path.getsize(r.path) for r in records]
    print(f"videos: {len(records)} synthetic THUMOS-like (320x180, 30 fps, H.264), {hours:.3f} h, "
          f"{sum(sizes) / 1e6:.0f} MB ({sum(sizes) / hours / 1e9:.2f} GB per video-hour)")
    store = work / "store"
    _store(store, records, spec_for_config(cfg.data))
    store_bytes = sum(f.stat().st_size for f in store.rglob("*.parquet"))
    print(f"store: {store_bytes / 1e6:.0f} MB ({store_bytes / hours / 1e9:.2f} GB per video-hour)")

    s3 = S3Server()
    s3.export()
    s3.start()
    bucket = s3.bucket("bench")
    s3.upload_tree(cache / VIDEO_DIR, f"{bucket}/videos")
    s3.upload_tree(store, f"{bucket}/store")
    remote = [replace(r, path=f"{bucket}/videos/{Path(r.path).name}") for r in records]

    # training clips, one process: what each way of reading costs on the wire
    n = args.clips
    ranges = replace(cfg.data, frame_store=f"{bucket}/store", cache_gb=0.0)
    cached_store = replace(cfg.data, frame_store=f"{bucket}/store")
    shutil.rmtree(node_cache.cache_dir(), ignore_errors=True)
    first = {"video": _traffic(s3, lambda: _clips(remote, cfg.data, len(remote))),  # one clip per video
             "store": _traffic(s3, lambda: _clips(remote, cached_store, len(remote)))}
    later = {"video": _traffic(s3, lambda: _clips(remote, cfg.data, n, offset=100)),
             "store": _traffic(s3, lambda: _clips(remote, cached_store, n, offset=100))}
    ranged, ranged_requests = _traffic(s3, lambda: _clips(remote, ranges, n, offset=200))
    whole = float(np.mean(sizes))
    entry = store_bytes / len(remote)
    per = {k: (v[0] / len(remote), v[1] / len(remote)) for k, v in first.items()}
    after = {k: (v[0] / n, v[1] / n) for k, v in later.items()}
    print(f"training clip, bytes from the endpoint: video fetched whole per clip {_mb(whole)} (decord reads no "
          f"ranges); video through the node cache: first epoch {_mb(per['video'][0])} ({per['video'][1]:.1f} "
          f"requests), later epochs {after['video'][0]:.0f} B ({after['video'][1]:.1f}); store entry (mean "
          f"{_mb(entry)}) by ranges {_mb(ranged / n)} ({ranged_requests / n:.1f} requests) every epoch, through "
          f"the node cache first epoch {_mb(per['store'][0])} ({per['store'][1]:.1f}), later epochs "
          f"{after['store'][0]:.0f} B ({after['store'][1]:.1f})")

    shutil.rmtree(node_cache.cache_dir(), ignore_errors=True)
    val_video, _ = _traffic(s3, lambda: _validation(remote, cfg.data))
    val_ranges, val_requests = _traffic(s3, lambda: _validation(remote, ranges))
    print(f"validation, bytes per video-hour from the endpoint (cold cache): video {val_video / hours / 1e9:.2f} GB "
          f"(the files, once), store by ranges {val_ranges / hours / 1e9:.2f} GB ({val_requests / hours:.0f} "
          f"requests per video-hour); a warm node cache: a HEAD per video")

    rates: dict[str, float] = {}
    if args.ray_clips:
        import ray
        import ray.data

        ray.init(num_cpus=2, object_store_memory=2048 * 2**20, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING)
        ray.data.DataContext.get_current().enable_progress_bars = False
        logging.getLogger("ray.data").setLevel(logging.WARNING)
        try:
            rates["local video"] = _ray_rates(records, cfg, None, args.ray_clips)
            shutil.rmtree(node_cache.cache_dir(), ignore_errors=True)
            rates["S3 video, cold cache"] = _ray_rates(remote, cfg, None, args.ray_clips)
            rates["S3 video, warm cache"] = _ray_rates(remote, cfg, None, args.ray_clips)
            rates["local store"] = _ray_rates(records, cfg, store, args.ray_clips)
            rates["S3 store, ranges"] = _ray_rates(remote, replace(cfg, data=replace(cfg.data, cache_gb=0.0)),
                                                   f"{bucket}/store", args.ray_clips)
            _ray_rates(remote, cfg, f"{bucket}/store", len(remote) + 4)  # fills the cache
            rates["S3 store, warm cache"] = _ray_rates(remote, cfg, f"{bucket}/store", args.ray_clips)
        finally:
            ray.shutdown()
        print(f"Ray Data, 2 decode actors, {args.ray_clips} clips, clips/s after the first 4: "
              + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
    s3.close()
    print(f"wall time {time.perf_counter() - wall:.0f} s")
    if rates:
        print(f"object storage: clips/s video {rates['local video']:.2f} local -> {rates['S3 video, warm cache']:.2f} "
              f"S3 (node cache; cold {rates['S3 video, cold cache']:.2f}), store {rates['local store']:.2f} local -> "
              f"{rates['S3 store, warm cache']:.2f} S3 (node cache; ranges {rates['S3 store, ranges']:.2f})")
    print(f"object storage: bytes per training clip: video {_mb(whole)} whole / {_mb(per['video'][0])} first epoch, "
          f"{after['video'][0]:.0f} B later (node cache); store {_mb(ranged / n)} by ranges / {_mb(per['store'][0])} "
          f"first epoch, {after['store'][0]:.0f} B later (node cache); per validation video-hour "
          f"{val_video / hours / 1e9:.2f} GB (video) / {val_ranges / hours / 1e9:.2f} GB (store by ranges)")


if __name__ == "__main__":
    main()
