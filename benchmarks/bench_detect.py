"""Detection throughput (windows/s) of pipelines/detect.py on a local Ray with 2 CPUs.

End to end (probe -> decode actors -> Predict actor -> per-video merge -> json), plus each stage
alone in this process (decode + test transform with the same ClipLoader; model forward with the
same AdaTAD.predict) so the end-to-end number can be read against its bottleneck.

    .venv/bin/python benchmarks/bench_detect.py                                  # synthetic demo config
    .venv/bin/python benchmarks/bench_detect.py --videos data/synthetic/videos --runs 2
    .venv/bin/python benchmarks/bench_detect.py --set data.window_size=256

Without --checkpoint a randomly initialised model of --config is saved first (throughput does not
depend on the weights; detections above pre_nms_thresh are fewer with random weights, so the
merge stage is if anything cheaper than for a trained model). Without --videos, --num-videos
THUMOS-like synthetic videos (320x180, 30 fps) are generated into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from adatad.config import CONFIG_DIR, Config, load_config  # noqa: E402


def random_checkpoint(cfg: Config, directory: Path) -> Path:
    from adatad.engine.state import build_training_state, save_checkpoint

    state = build_training_state(cfg, steps_per_epoch=1, device=torch.device("cpu"))
    return save_checkpoint(state, cfg, directory)


def make_videos(root: Path, count: int, duration_s: float) -> tuple[Path, Path]:
    """(video folder, class map) of `count` synthetic test videos."""
    from adatad.datasets.synthetic import generate_dataset

    generate_dataset(root, num_train=0, num_test=count, num_classes=4, duration_s=(duration_s, duration_s),
                     fps=30, width=320, height=180, seed=7, workers=2)
    return root / "videos", root / "category_idx.txt"


def stage_decode(cfg: Config, records, max_windows: int) -> float:
    """Windows/s of decode + test transform alone (one process, decode_threads from the config)."""
    from adatad.data.clips import ClipLoader, window_rows

    rows = window_rows(records, cfg.data)[:max_windows]
    loader = ClipLoader(cfg.data, train=False)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for row in rows:
        loader.load(row, rng)
    return len(rows) / (time.perf_counter() - start)


def stage_model(checkpoint: Path, cfg: Config, threads: int, batches: int) -> float:
    """Windows/s of AdaTAD.predict alone on val_batch_size windows, `threads` torch threads."""
    from adatad.engine.state import read_checkpoint
    from adatad.models.build import model_from_checkpoint

    torch.set_num_threads(threads)
    model, _ = model_from_checkpoint(read_checkpoint(checkpoint))
    d, b = cfg.data, cfg.train.val_batch_size
    frames = torch.randint(0, 256, (b, d.window_size, d.crop_size, d.crop_size, 3), dtype=torch.uint8)
    masks = torch.ones(b, d.window_size, dtype=torch.bool)
    model.predict(frames, masks)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        model.predict(frames, masks)
    return batches * b / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(CONFIG_DIR / "synthetic.yaml"))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--class-map", default=None, help="needed with --videos when the checkpoint's is missing")
    parser.add_argument("--videos", default=None, help="folder of videos (default: generate synthetic ones)")
    parser.add_argument("--num-videos", type=int, default=4)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per generated video")
    parser.add_argument("--copies", type=int, default=1, help="list each video this many times (as new ids)")
    parser.add_argument("--runs", type=int, default=2, help="end-to-end runs in one Ray session")
    parser.add_argument("--cpus", type=int, default=2)
    args = parser.parse_args()

    from adatad.data.video_files import list_videos
    from adatad.trained_settings import owned_by_trained_file
    from pipelines import detect
    from pipelines.ray_layer.cluster import connect

    cfg = load_config(args.config, args.overrides)
    work = Path(tempfile.mkdtemp(prefix="bench_detect_"))
    class_map = args.class_map
    if args.videos:
        videos = Path(args.videos)
    else:
        print(f"generating {args.num_videos} synthetic videos of {args.duration:g} s in {work} ...", flush=True)
        videos, class_map = make_videos(work / "data", args.num_videos, args.duration)
    if args.copies > 1:  # more work per run without generating more videos: the same files under new ids
        copies = work / "copies"
        copies.mkdir()
        for path in list_videos([str(videos)]):
            for i in range(args.copies):
                (copies / f"{path.stem}_copy{i}{path.suffix}").symlink_to(path)
        videos = copies
    checkpoint = Path(args.checkpoint) if args.checkpoint else random_checkpoint(cfg, work)
    if args.checkpoint:
        from adatad.engine.state import read_checkpoint
        from adatad.models.build import model_from_checkpoint

        _, cfg = model_from_checkpoint(read_checkpoint(checkpoint))

    connect("local", num_cpus=args.cpus, num_gpus=0, object_store_memory_mb=cfg.runtime.object_store_memory_mb)
    end_to_end = []
    for i in range(args.runs):
        argv = ["--checkpoint", str(checkpoint), "--videos", str(videos), "--out", str(work / f"det{i}.json"),
                "--quiet"] + (["--class-map", str(class_map)] if class_map else [])
        for item in args.overrides:
            if not owned_by_trained_file(item.partition("=")[0]):
                argv += ["--set", item]
        result = detect.run(detect.build_parser().parse_args(argv))
        stats = result["stats"]
        end_to_end.append(stats)
        print(f"run {i}: {stats['videos']} videos, {stats['windows']} windows in {stats['seconds']:.1f} s = "
              f"{stats['windows_per_s']:.2f} windows/s overall; first batch after {stats['first_batch_s']:.1f} s, "
              f"then {stats.get('steady_windows_per_s', 0.0):.2f} windows/s", flush=True)

    import ray

    ray.shutdown()
    from adatad.data.inspect import inspect_video
    from pipelines.ray_layer.detection import video_record

    records = [video_record(p, inspect_video(p)) for p in list_videos([str(videos)])]
    decode = stage_decode(cfg, records, max_windows=8)
    model1 = stage_model(checkpoint, cfg, threads=1, batches=4)
    model2 = stage_model(checkpoint, cfg, threads=2, batches=4)
    d = cfg.data
    summary = {
        "config": Path(args.config).name, "overrides": args.overrides, "cpus": args.cpus,
        "window": f"{d.window_size} positions x stride {d.frame_stride}, {d.crop_size} px crop",
        "model": f"depth {cfg.model.backbone.depth}, embed {cfg.model.backbone.embed_dim}",
        "videos": end_to_end[-1]["videos"], "windows": end_to_end[-1]["windows"],
        "end_to_end_windows_per_s": [s["windows_per_s"] for s in end_to_end],
        "first_batch_s": [s["first_batch_s"] for s in end_to_end],
        "steady_windows_per_s": [s.get("steady_windows_per_s") for s in end_to_end],
        "decode_only_windows_per_s_1_process": round(decode, 2),
        "model_only_windows_per_s_1_thread": round(model1, 2),
        "model_only_windows_per_s_2_threads": round(model2, 2),
    }
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
