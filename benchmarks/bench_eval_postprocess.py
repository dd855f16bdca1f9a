"""Time the detection core's CPU-side work on one thread.

1. mAP evaluation of a THUMOS-test-sized run: 213 videos x 20 classes, ~15 GT and 200 detections
   per video (target < 1 s).
2. Post-processing of one test video: 4 sliding windows (T=768, 6 levels, 20 classes) decoded to the
   full 2000 pre-NMS candidates each, converted to seconds, merged by one Gaussian soft-NMS
   (target < 20 ms per window).

    python benchmarks/bench_eval_postprocess.py [--repeats 5]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adatad.evaluation import evaluate_map  # noqa: E402
from adatad.postprocess import Detections, decode_window, merge_video, soft_nms, window_to_seconds  # noqa: E402

NUM_CLASSES = 20
CLASS_NAMES = [f"class_{i:02d}" for i in range(NUM_CLASSES)]


def timed(fn: Callable[[], object], repeats: int) -> tuple[float, float]:
    """(best wall time, best CPU time of this thread) in seconds over `repeats` calls, after a warm-up.

    CPU time is what one unshared core would take; on a busy machine wall time also counts waiting.
    """
    fn()
    wall, cpu = [], []
    for _ in range(repeats):
        w0, c0 = time.perf_counter(), time.thread_time()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return min(wall), min(cpu)


def make_eval_data(rng: np.random.Generator, num_videos: int = 213, dets_per_video: int = 200):
    """THUMOS-like: each video shows 1-2 classes, ~15 short actions; detections cluster around them."""
    gt, preds = {}, {}
    for v in range(num_videos):
        vid = f"video_test_{v:07d}"
        duration = rng.uniform(60, 600)
        classes = rng.choice(NUM_CLASSES, size=rng.integers(1, 3), replace=False)
        n_gt = max(1, int(rng.poisson(15)))
        starts = np.sort(rng.uniform(0, duration - 12, n_gt))
        lengths = rng.uniform(1, 10, n_gt)
        labels = rng.choice(classes, n_gt)
        gt[vid] = [{"segment": [float(s), float(s + ln)], "label": CLASS_NAMES[c]}
                   for s, ln, c in zip(starts, lengths, labels, strict=True)]
        n_near = int(0.6 * dets_per_video)
        g = rng.integers(0, n_gt, n_near)
        jitter = rng.uniform(-0.3, 0.3, (n_near, 2)) * lengths[g, None]
        near = np.stack([starts[g], starts[g] + lengths[g]], 1) + jitter
        near_lab = np.where(rng.random(n_near) < 0.85, labels[g], rng.integers(0, NUM_CLASSES, n_near))
        n_rand = dets_per_video - n_near
        rs = rng.uniform(0, duration - 10, n_rand)
        rand = np.stack([rs, rs + rng.uniform(0.5, 10, n_rand)], 1)
        segs = np.clip(np.concatenate([near, rand]), 0, duration)
        lab = np.concatenate([near_lab, rng.integers(0, NUM_CLASSES, n_rand)])
        score = np.concatenate([rng.beta(4, 2, n_near), rng.beta(1, 6, n_rand)])
        preds[vid] = [{"segment": [round(float(a), 2), round(float(b), 2)], "label": CLASS_NAMES[c],
                       "score": round(float(sc), 4)} for (a, b), c, sc in zip(segs, lab, score, strict=True)]
    return gt, preds


def make_window_outputs(gen: torch.Generator, window_size: int = 768, levels: int = 6):
    """Random head outputs of one window (batch 1): logits spread so scores span (0, 1)."""
    lengths = [window_size // 2**i for i in range(levels)]
    cls = [torch.randn(1, t, NUM_CLASSES, generator=gen) * 2 - 4 for t in lengths]
    reg = [torch.rand(1, t, 2, generator=gen) * 6 for t in lengths]
    masks = [torch.ones(1, t, dtype=torch.bool) for t in lengths]
    return cls, reg, masks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    torch.set_num_threads(1)
    strides = [1, 2, 4, 8, 16, 32]

    gt, preds = make_eval_data(np.random.default_rng(0))
    n_gt = sum(len(v) for v in gt.values())
    n_det = sum(len(v) for v in preds.values())
    wall, cpu = timed(lambda: evaluate_map(gt, preds, CLASS_NAMES), args.repeats)
    m = evaluate_map(gt, preds, CLASS_NAMES)
    print(f"evaluation: {len(gt)} videos, {NUM_CLASSES} classes, {n_gt} GT, {n_det} detections "
          f"(average mAP {100 * m['average_mAP']:.1f}%): wall {wall * 1e3:.0f} ms, CPU {cpu * 1e3:.0f} ms")

    gen = torch.Generator().manual_seed(0)
    windows = [make_window_outputs(gen) for _ in range(4)]
    fps, frame_stride, duration = 30.0, 4, 4.0 * 3072 / 30.0

    def decode_all() -> list[Detections]:
        return [window_to_seconds(decode_window(*w, strides)[0], i * 1536, frame_stride, fps, duration)
                for i, w in enumerate(windows)]

    dets = decode_all()
    assert all(len(d) == 2000 for d in dets)
    d_wall, d_cpu = timed(decode_all, args.repeats)
    n_wall, n_cpu = timed(lambda: merge_video(dets), args.repeats)
    t_wall, t_cpu = timed(lambda: merge_video(decode_all()), args.repeats)
    merged = merge_video(dets)
    print(f"post-processing, 4 windows x 2000 candidates -> {len(merged)} detections (best of {args.repeats}):")
    print(f"  decode + to seconds: wall {d_wall / 4 * 1e3:.1f} ms, CPU {d_cpu / 4 * 1e3:.1f} ms per window")
    print(f"  soft-NMS of 8000:    wall {n_wall * 1e3:.1f} ms, CPU {n_cpu * 1e3:.1f} ms per video")
    print(f"  total:               wall {t_wall / 4 * 1e3:.1f} ms, CPU {t_cpu / 4 * 1e3:.1f} ms per window")

    one_class = Detections.cat(dets)
    one_class = Detections(one_class.segments, one_class.scores, torch.zeros_like(one_class.labels))
    w_wall, w_cpu = timed(lambda: soft_nms(one_class), args.repeats)
    print(f"  worst case, all 8000 in one class: soft-NMS wall {w_wall * 1e3:.1f} ms, CPU {w_cpu * 1e3:.1f} ms")

if __name__ == "__main__":
    main()
