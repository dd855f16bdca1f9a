"""Augmentation cost against decode cost, per 768-frame clip, one thread.

Why: the data pipeline must keep augmentation under ~30% of the decode time (the target in benchmarks/README.md),
otherwise the decode actors, not the GPU, set the training speed. Measured on a THUMOS-like
synthetic video (adatad.datasets.synthetic: 320x180, 30 fps, H.264, textured moving background +
noise), long enough (110 s) for a training window of 768 positions at frame stride 4:

  (a)  decode only: decord, 768 consecutive frames, 1 thread (the reference measurement: consecutive frames, one thread)
  (a') decode only: 768 frames at stride 4 (what a training clip actually reads, docs/recipe.md §2)
  (b)  decode (a) + the fast train chain (adatad.data.transforms.build_train_transform)
  (c)  decode (a) + a naive torchvision v2 chain (Resize 182 -> RandomResizedCrop 160 -> flip ->
       RandAugment(2, 9) -> ColorJitter(.5, .5, .5, .1)) on 1-2 clips only: it is slow
  (d)  decode (a) + the test chain (build_test_transform)

The train chain draws different ops per clip, so its cost alone is averaged over many draws on
one decoded clip. Each row reports wall seconds and CPU seconds of this process (all threads):
on a shared machine the CPU time is the stable figure. OpenCV, torch and decord all run one
thread. Usage: python benchmarks/bench_augment.py [--clips 3] [--naive-clips 1] [--video x.mp4]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from torchvision.transforms import v2

from adatad.data.transforms import build_test_transform, build_train_transform
from adatad.data.video import probe_video, read_frames
from adatad.datasets.synthetic import generate_dataset

CLIP_LEN = 768
STRIDE = 4


def make_video(out_dir: Path, duration_s: float) -> Path:
    """One synthetic THUMOS-like video (320x180, 30 fps)."""
    generate_dataset(out_dir, num_train=1, num_test=0, duration_s=duration_s, width=320, height=180, fps=30)
    return next((out_dir / "videos").glob("*.mp4"))


def naive_torchvision_chain() -> v2.Compose:
    return v2.Compose([
        v2.Resize(182),
        v2.RandomResizedCrop(160, scale=(0.08, 1.0)),
        v2.RandomHorizontalFlip(),
        v2.RandAugment(num_ops=2, magnitude=9),
        v2.ColorJitter(0.5, 0.5, 0.5, 0.1),
    ])


def measure(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=3, help="clips per measurement (a), (a'), (b), (d)")
    parser.add_argument("--naive-clips", type=int, default=1, help="clips for the slow torchvision chain (c)")
    parser.add_argument("--draws", type=int, default=40, help="train-chain draws on one clip, for its mean cost")
    parser.add_argument("--video", type=Path, default=None, help="use this video instead of a synthetic one")
    args = parser.parse_args()

    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    train, test, naive = build_train_transform(), build_test_transform(), naive_torchvision_chain()

    with tempfile.TemporaryDirectory() as tmp:
        if args.video is None:
            start = time.perf_counter()
            path = make_video(Path(tmp), duration_s=(CLIP_LEN * STRIDE + 240) / 30)
            print(f"synthetic video: {path.stat().st_size / 1e6:.1f} MB, generated in {time.perf_counter() - start:.0f} s")
        else:
            path = args.video
        info = probe_video(path)
        print(f"video: {info.width}x{info.height}, {info.num_frames} frames, {info.fps:.1f} fps; "
              f"clip = {CLIP_LEN} frames")

        def window(stride: int) -> np.ndarray:
            span = CLIP_LEN * stride
            begin = int(rng.integers(0, max(1, info.num_frames - span + 1)))
            return np.arange(begin, begin + span, stride)

        rows: dict[str, list[tuple[float, float]]] = {k: [] for k in ("a", "a4", "b", "c", "d")}
        read_frames(path, window(1))  # warm-up: page cache, decord's one-time init
        for i in range(args.clips):  # interleaved, so that every row sees the same machine load
            rows["a"].append(measure(lambda: read_frames(path, window(1))))
            rows["a4"].append(measure(lambda: read_frames(path, window(STRIDE))))
            rows["b"].append(measure(lambda: train(read_frames(path, window(1)), rng)))
            rows["d"].append(measure(lambda: test(read_frames(path, window(1)), rng)))
            if i < args.naive_clips:
                rows["c"].append(measure(
                    lambda: naive(torch.from_numpy(read_frames(path, window(1))).permute(0, 3, 1, 2))))
        clip = read_frames(path, window(1))
        train_only = [measure(lambda: train(clip, rng)) for _ in range(args.draws)]
        test_only = [measure(lambda: test(clip, rng)) for _ in range(5)]

    def summary(values: list[tuple[float, float]], mean: bool = False) -> tuple[float, float]:
        pick = statistics.mean if mean else statistics.median
        return pick(v[0] for v in values), pick(v[1] for v in values)

    dec_wall, dec_cpu = summary(rows["a"])
    dec4_wall, dec4_cpu = summary(rows["a4"])
    print(f"\n{'per 768-frame clip, 1 thread':48s} {'wall s':>7s} {'cpu s':>7s} {'x (a)':>6s} {'x (a_)':>6s}")
    table = [
        ("(a)  decode, 768 consecutive frames", rows["a"], False),
        ("(a') decode, 768 frames at stride 4", rows["a4"], False),
        ("(b)  decode (a) + fast train chain", rows["b"], False),
        ("(c)  decode (a) + naive torchvision v2 chain", rows["c"], False),
        ("(d)  decode (a) + test chain", rows["d"], False),
        (f"     fast train chain alone (mean, {args.draws} draws)", train_only, True),
        ("     test chain alone", test_only, False),
    ]
    for name, values, mean in table:
        if values:
            wall, cpu = summary(values, mean)
            print(f"{name:48s} {wall:7.3f} {cpu:7.3f} {cpu / dec_cpu:6.2f} {cpu / dec4_cpu:6.2f}")
    aug_cpu = summary(train_only, mean=True)[1]
    print(f"\n(x (a) and x (a_) are CPU-time ratios against decode (a) and (a')). The train chain adds "
          f"{100 * aug_cpu / dec_cpu:.0f}% to (a) and {100 * aug_cpu / dec4_cpu:.0f}% to (a'); target <= 30%.")
    print(f"(wall-time ratios: (a) {dec_wall:.3f} s, (a') {dec4_wall:.3f} s; on an idle machine they match the CPU ones)")


if __name__ == "__main__":
    main()
