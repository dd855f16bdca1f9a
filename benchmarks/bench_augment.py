"""Augmentation cost against decode cost, per 768-frame clip, one thread.

Why: the data pipeline must keep augmentation under ~30% of the decode time (spec/performance.md),
otherwise the decode actors, not the GPU, set the training speed. Measures on a THUMOS-like
synthetic video (320x180, 30 fps, H.264, textured moving background + noise):

  (a) decode only: decord, 768 consecutive frames, 1 thread
  (b) decode + the fast train chain (adatad.data.transforms.build_train_transform)
  (c) decode + a naive torchvision v2 chain (Resize 182 -> RandomResizedCrop 160 -> flip ->
      RandAugment(2, 9) -> ColorJitter(.5, .5, .5, .1)) on a few clips only: it is slow
  (d) decode + the test chain (build_test_transform)

The train chain draws different ops per clip, so its cost alone is also averaged over many draws
on one decoded clip. Decode-only and decode+augment runs alternate so that both see the same
machine load. Usage: python benchmarks/bench_augment.py [--clips 4] [--naive-clips 1] [--video x.mp4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from adatad.data.synthetic import generate_dataset
from adatad.data.transforms import build_test_transform, build_train_transform
from adatad.data.video import probe_video, read_frames

CLIP_LEN = 768


def make_video(out_dir: Path) -> Path:
    """One 30 s, 320x180, 30 fps synthetic THUMOS-like video."""
    generate_dataset(out_dir, num_train=1, num_test=0, duration_s=30.0, width=320, height=180, fps=30)
    return next((out_dir / "videos").glob("*.mp4"))


def naive_torchvision_chain() -> v2.Compose:
    return v2.Compose([
        v2.Resize(182),
        v2.RandomResizedCrop(160, scale=(0.08, 1.0)),
        v2.RandomHorizontalFlip(),
        v2.RandAugment(num_ops=2, magnitude=9),
        v2.ColorJitter(0.5, 0.5, 0.5, 0.1),
    ])


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=4, help="clips per measurement (a), (b), (d)")
    parser.add_argument("--naive-clips", type=int, default=1, help="clips for the slow torchvision chain (c)")
    parser.add_argument("--draws", type=int, default=30, help="train-chain draws on one clip, for its mean cost")
    parser.add_argument("--video", type=Path, default=None, help="use this video instead of a synthetic one")
    args = parser.parse_args()

    cv2.setNumThreads(1)  # one thread everywhere: the decode baseline is single-threaded too
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, test, naive = build_train_transform(), build_test_transform(), naive_torchvision_chain()

    with tempfile.TemporaryDirectory() as tmp:
        if args.video is None:
            _, gen_s = timed(lambda: make_video(Path(tmp)))
            path = next((Path(tmp) / "videos").glob("*.mp4"))
            print(f"synthetic video: {path.name}, {path.stat().st_size / 1e6:.1f} MB, generated in {gen_s:.1f} s")
        else:
            path = args.video
        info = probe_video(path)
        print(f"video: {info.width}x{info.height}, {info.num_frames} frames, {info.fps:.1f} fps; clip = {CLIP_LEN} frames")

        def clip_indices() -> np.ndarray:
            start = int(rng.integers(0, max(1, info.num_frames - CLIP_LEN + 1)))
            return np.arange(start, start + CLIP_LEN)

        times: dict[str, list[float]] = {"decode": [], "train": [], "test": [], "naive": []}
        read_frames(path, clip_indices())  # warm-up (page cache, decord init)
        for i in range(args.clips):
            _, t = timed(lambda: read_frames(path, clip_indices()))
            times["decode"].append(t)
            _, t = timed(lambda: train(read_frames(path, clip_indices()), rng))
            times["train"].append(t)
            _, t = timed(lambda: test(read_frames(path, clip_indices()), rng))
            times["test"].append(t)
            if i < args.naive_clips:
                def run_naive():
                    frames = torch.from_numpy(read_frames(path, clip_indices())).permute(0, 3, 1, 2)
                    return naive(frames)
                _, t = timed(run_naive)
                times["naive"].append(t)

        clip = read_frames(path, clip_indices())
        aug_only = [timed(lambda: train(clip, rng))[1] for _ in range(args.draws)]
        test_only = [timed(lambda: test(clip, rng))[1] for _ in range(5)]

    decode = statistics.median(times["decode"])
    print(f"\n{'step (per 768-frame clip, 1 thread)':52s} {'median s':>9s} {'min s':>7s} {'x decode':>9s}")
    rows = [
        ("(a) decode only (decord)", times["decode"]),
        ("(b) decode + fast train chain", times["train"]),
        ("(c) decode + naive torchvision v2 chain", times["naive"]),
        ("(d) decode + test chain", times["test"]),
        (f"    fast train chain alone (mean of {args.draws} draws)", aug_only),
        ("    test chain alone", test_only),
    ]
    for name, values in rows:
        if values:
            mid = statistics.mean(values) if "mean" in name else statistics.median(values)
            print(f"{name:52s} {mid:9.3f} {min(values):7.3f} {mid / decode:9.2f}")
    overhead = statistics.mean(aug_only) / decode
    print(f"\naugmentation adds {100 * overhead:.0f}% over decode (target <= 30%): "
          f"{'OK' if overhead <= 0.30 else 'OVER TARGET'}")


if __name__ == "__main__":
    main()
