"""Ray Data vs DataLoader on identical work: sample -> decode -> augment 768-frame clips at 160 px.

Prints, measured in one run on this machine:
  (a) decode only (decord alone, the physical limit),
  (b) decode + train augmentation through torch DataLoader(num_workers, prefetch_factor),
  (c) the same through the Ray Data actor pool (pipelines/ray_layer/datasets.py), with 1 and 2 actors,
  (d) driver + object-store memory of the Ray pipeline sampled over many clips (should stay flat).
Figures are clips/s and ratios against (a) / (b).

    .venv/bin/python benchmarks/bench_data_pipeline.py [--clips 8] [--memory-clips 200]
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adatad.config import CONFIG_DIR, load_config  # noqa: E402
from adatad.data.annotations import load_annotations, load_class_names  # noqa: E402
from adatad.data.batch import collate_examples  # noqa: E402
from adatad.data.clips import ClipLoader, record_to_row  # noqa: E402
from adatad.data.video import read_frames  # noqa: E402
from adatad.datasets.synthetic import generate_dataset  # noqa: E402


def thumos_like(root: Path, videos: int) -> Path:
    """320x180 30 fps videos long enough for a 768 x 4-frame window (~110 s)."""
    return generate_dataset(root, num_train=videos, num_test=0, num_classes=4, duration_s=(110.0, 110.0),
                            fps=30, width=320, height=180, seed=7)


class _Clips(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict], loader: ClipLoader, n: int) -> None:
        self.rows, self.loader, self.n = rows, loader, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        rng = np.random.default_rng()
        return self.loader.load(self.rows[i % len(self.rows)], rng)


def _collate(items: list[dict]) -> dict:
    return {k: torch.from_numpy(np.asarray(v)) for k, v in collate_examples(items).items()}


def bench_decode_only(cfg, records, n: int) -> float:
    loader = ClipLoader(cfg.data, train=True)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for i in range(n):
        plan = loader.plan(record_to_row(records[i % len(records)], i), rng)
        read_frames(plan.path, plan.frame_indices)
    return n / (time.perf_counter() - start)


def bench_dataloader(cfg, rows, n: int, workers: int, prefetch: int) -> tuple[float, float]:
    ds = _Clips(rows, ClipLoader(cfg.data, train=True), n)
    dl = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=workers, prefetch_factor=prefetch,
                                     collate_fn=_collate, persistent_workers=False)
    return _rates(len(b["frames"]) for b in dl)


def _rates(batch_sizes) -> tuple[float, float]:
    """(overall clips/s including start-up, steady clips/s after the first batch arrived)."""
    start = time.perf_counter()
    count, first_at, first_n = 0, None, 0
    for n in batch_sizes:
        count += n
        if first_at is None:
            first_at, first_n = time.perf_counter(), count
    end = time.perf_counter()
    steady = (count - first_n) / (end - first_at) if first_at and end > first_at else 0.0
    return count / (end - start), steady


def bench_ray(cfg, records, n: int, actors: int, prefetch: int, sample_memory: bool = False
              ) -> tuple[tuple[float, float], list[tuple[int, float, float]]]:
    import ray

    from pipelines.ray_layer.datasets import train_dataset

    cfg.runtime.decode_actors = actors
    cfg.runtime.decode_actor_cpus = 1.0 if actors == 1 else 0.9
    reps = max(1, n // len(records))
    ds = train_dataset(cfg, (records * reps)[:n])
    samples: list[tuple[int, float, float]] = []

    def sizes():
        count = 0
        for batch in ds.iter_torch_batches(batch_size=1, prefetch_batches=prefetch, device="cpu"):
            count += len(batch["frames"])
            if sample_memory and count % 20 == 0:
                store = ray.available_resources().get("object_store_memory", 0)
                total = ray.cluster_resources().get("object_store_memory", 0)
                rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                samples.append((count, rss, (total - store) / 2**20))
            yield len(batch["frames"])

    return _rates(sizes()), samples


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--clips", type=int, default=16, help="768-frame clips per throughput setting")
    p.add_argument("--memory-clips", type=int, default=200, help="clips for the memory-flatness run")
    args = p.parse_args()
    import ray

    work = Path(tempfile.mkdtemp(prefix="bench_data_"))
    t0 = time.perf_counter()
    ann = thumos_like(work / "thumos_like", videos=4)
    print(f"generated 4 THUMOS-like videos (320x180, 30 fps, 110 s) in {time.perf_counter() - t0:.0f} s")
    cfg = load_config(CONFIG_DIR / "thumos_videomae_s_768x1_160_adapter.yaml", [
        f"data.annotation_file={ann}", f"data.video_dir={ann.parent / 'videos'}", "data.class_map_file=null",
        "model.head.num_classes=4", "model.backbone.checkpoint=null", "model.backbone.allow_random_init=true"])
    names = load_class_names(str(ann))
    records, _ = load_annotations(str(ann), str(ann.parent / "videos"), "training", names)
    rows = [record_to_row(r, i) for i, r in enumerate(records)]
    n = args.clips

    a = bench_decode_only(cfg, records, n)
    print(f"(a) decode only, 1 process           : {a:.3f} clips/s  ({1 / a:.2f} s/clip)")
    print("    (overall clips/s incl. start-up | steady clips/s after the first clip)")
    b1, b1s = bench_dataloader(cfg, rows, n, workers=1, prefetch=2)
    print(f"(b) DataLoader, 1 worker, prefetch 2 : {b1:.3f} | {b1s:.3f} clips/s  "
          f"(aug overhead vs (a): {a / b1s - 1:+.0%})")
    b2, b2s = bench_dataloader(cfg, rows, n, workers=2, prefetch=2)
    print(f"(b) DataLoader, 2 workers            : {b2:.3f} | {b2s:.3f} clips/s")

    # 768x160x160x3 uint8 clips are 59 MB: a 512 MB store throttles 2 actors (measured: 0.78 clips/s);
    # 2 GB (Ray's default on a 7 GB+ machine is 30% of RAM) lets both run.
    ray.init(num_cpus=2, object_store_memory=2048 * 2**20, include_dashboard=False, log_to_driver=False)
    try:
        (c1, c1s), _ = bench_ray(cfg, records, n, actors=1, prefetch=2)
        print(f"(c) Ray Data, 1 actor                : {c1:.3f} | {c1s:.3f} clips/s  "
              f"(c/b same workers: {c1 / b1:.2f} | {c1s / b1s:.2f})")
        (c2, c2s), _ = bench_ray(cfg, records, n, actors=2, prefetch=2)
        print(f"(c) Ray Data, 2 actors               : {c2:.3f} | {c2s:.3f} clips/s  "
              f"(c/b same workers: {c2 / b2:.2f} | {c2s / b2s:.2f}; 2 vs 1 actor: {c2s / c1s:.2f}x steady)")
        demo = load_config(CONFIG_DIR / "synthetic.yaml")
        dnames = load_class_names(demo.resolve_path(demo.data.annotation_file))
        drecs, _ = load_annotations(demo.resolve_path(demo.data.annotation_file),
                                    demo.resolve_path(demo.data.video_dir), "training", dnames)
        (rate, _), samples = bench_ray(demo, drecs, args.memory_clips, actors=2, prefetch=2,
                                       sample_memory=True)
        print(f"(d) memory over {args.memory_clips} demo clips at {rate:.1f} clips/s "
              "(clips, driver peak RSS MiB, object store in use MiB):")
        for count, rss, store in samples[:: max(1, len(samples) // 10)]:
            print(f"      {count:4d}  {rss:8.0f}  {store:8.1f}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
