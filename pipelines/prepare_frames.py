"""Build a frame store: decode each video once and keep the frames every window can read.

    python pipelines/prepare_frames.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml --store data/thumos-14/frames
    python pipelines/prepare_frames.py --config CONFIG --set data.frame_store=DIR  # the same: --store defaults to it
    python pipelines/prepare_frames.py --config CONFIG --store DIR --step 2        # also serves the 768x2 rows
    python pipelines/prepare_frames.py --config CONFIG --store DIR --videos new/   # videos for detect.py

Then train, test or detect with `--set data.frame_store=DIR`: windows are read from the store
instead of decoding the videos (the same frames, masks and ground truth; docs/architecture.md,
"The frame store"). One Ray task per video across the cluster's CPUs, a progress bar, resumable:
a video whose entry matches its file (size and content sample) and this store is skipped, each
entry is written whole or not at all, so a killed build loses only the videos in flight. A video
that cannot be decoded is listed by name (exit 1); the others are still stored. The store's grid
and frame size come from the config (every `frame_stride / frames_per_position`-th frame, short
side = the largest the transforms resize to); --step / --short-side ask for a finer grid or larger
frames so that other configs can share the store. Ray's own output goes to DIR/prepare_frames.log.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import PROJECT_ROOT, Config, ConfigError, load_config, resolve_path
from adatad.data.annotations import AnnotationError
from adatad.data.frame_store.build import BuiltEntry, VideoToStore, entry_is_current, remove_partial_entries
from adatad.data.frame_store.codec import CODECS, DEFAULT_CODEC, CodecError
from adatad.data.frame_store.spec import (
    StoreSpec,
    StoreSpecError,
    entry_path,
    read_manifest,
    spec_for_config,
    why_not_served,
    write_manifest,
)
from adatad.data.splits import load_splits
from adatad.data.video_files import VideoListError, list_videos
from adatad.locations import LocationError, as_path, check_writable_location, is_uri, join, open_input_file
from pipelines.cli.args import (
    DEFAULT_CONFIG,
    EXIT_FAILED,
    CommandParser,
    UsageError,
    add_cluster_arguments,
    add_config_arguments,
    fail,
)
from pipelines.cli.console import Console, format_duration
from pipelines.cli.hints import command_script, python_command
from pipelines.ray_layer.cluster import ClusterError, connect_for_run
from pipelines.ray_layer.run_log import RunLog
from pipelines.runs.uploads import LogUploads, local_log_for

LOG_FILE = "prepare_frames.log"


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__)
    add_config_arguments(p)
    p.add_argument("--store", default=None, metavar="DIR", help="the store's folder (default: data.frame_store)")
    p.add_argument("--split", choices=("train", "test", "all"), default="all",
                   help="which of the config's videos to store (default: all)")
    p.add_argument("--videos", nargs="+", default=None, metavar="DIR_OR_FILE",
                   help="store these video files / folders instead of the config's (e.g. for detect.py)")
    p.add_argument("--codec", choices=CODECS, default=None,
                   help=f"frame compression (default: {DEFAULT_CODEC}, or the existing store's)")
    p.add_argument("--quality", type=int, default=None, help="JPEG quality 1-100 (--codec jpeg; default 90)")
    p.add_argument("--step", type=int, default=None,
                   help="store every STEP-th frame; must divide the config's (default: the config's)")
    p.add_argument("--short-side", type=int, default=None,
                   help="largest stored short side in pixels (default: the config's largest resize)")
    add_cluster_arguments(p)
    return p


def _videos(args: argparse.Namespace, cfg: Config) -> list[VideoToStore]:
    if args.videos:
        return [VideoToStore(p.stem, str(p)) for p in list_videos(args.videos)]
    train, test, _ = load_splits(cfg)
    records = {"train": train, "test": test, "all": train + test}[args.split]
    unique = {r.path: r for r in records}.values()  # a video listed in two subsets is stored once
    return [VideoToStore(r.video_id, r.path, r.num_frames if r.frames_known else None) for r in unique]


def _spec(args: argparse.Namespace, cfg: Config, root: str) -> StoreSpec:
    """The build's spec: the existing store's, completed by the flags (which must agree with it)."""
    existing = read_manifest(root)
    wanted = spec_for_config(cfg.data, args.codec or DEFAULT_CODEC, args.quality, args.step, args.short_side)
    if existing is None:
        return wanted
    asked = {"codec": args.codec, "quality": args.quality, "step": args.step, "short_side": args.short_side}
    clash = [f"--{k.replace('_', '-')} {v}" for k, v in asked.items() if v is not None and getattr(existing, k) != v]
    why = why_not_served(existing, cfg.data)
    if clash or why:
        reason = why or f"{', '.join(clash)} differs"
        raise UsageError(f"{root} holds a frame store of {existing.describe()}: {reason}; use another folder "
                         f"(or delete this one)")
    return existing


def _pending(root: str, spec: StoreSpec, videos: list[VideoToStore]) -> tuple[list[VideoToStore], int, int]:
    """(videos to build, entries already current, entries kept although their source video is absent)."""
    def state(video: VideoToStore) -> str:
        if not os.path.exists(video.path):
            return "kept" if entry_path(root, video.path).is_file() else "build"  # build reports it missing
        return "current" if entry_is_current(root, video, spec) else "build"

    with ThreadPoolExecutor(max_workers=min(8, max(1, len(videos)))) as pool:
        states = list(pool.map(state, videos))
    todo = [v for v, s in zip(videos, states, strict=True) if s == "build"]
    return todo, states.count("current"), states.count("kept")


def _store_size(root: str, videos: list[VideoToStore]) -> tuple[int, int]:
    """(bytes, frames) of the entries of ``videos`` in the store."""
    import pyarrow.parquet as pq

    total, frames = 0, 0
    for video in videos:
        path = entry_path(root, video.path)
        if path.is_file():
            total += path.stat().st_size
            frames += pq.ParquetFile(open_input_file(path)).metadata.num_rows  # the footer (ranges at a URI)
    return total, frames


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with LogUploads() as uploads:
        return run(args, uploads)


def run(args: argparse.Namespace, uploads: LogUploads) -> int:
    log: RunLog | None = None
    try:
        config_file = args.config or PROJECT_ROOT / DEFAULT_CONFIG
        cfg = load_config(config_file, args.overrides, args.profile)
        if not (args.store or cfg.data.frame_store):
            raise UsageError("where should the store go? pass --store DIR (or set data.frame_store)")
        root = resolve_path(args.store or cfg.data.frame_store)
        spec = _spec(args, cfg, root)
        videos = _videos(args, cfg)
        todo, current, kept = _pending(root, spec, videos)
        if is_uri(root):  # a store in a bucket: one line now if it cannot be written there
            check_writable_location(root, "--store" if args.store else "data.frame_store")
        as_path(join(root, "videos")).mkdir(parents=True, exist_ok=True)
        remove_partial_entries(root)
        write_manifest(root, spec)
        local_log, remote_log = local_log_for(join(root, LOG_FILE))  # at a URI: written here, uploaded
        if remote_log is not None:
            uploads.follow(local_log, remote_log)
        log = RunLog(local_log, verbose=args.verbose).attach()
        console = Console(log)
        skipped = f"; {current} already stored" if current else ""
        skipped += f"; {kept} kept without their video file" if kept else ""
        console.say(f"frame store {root}: {spec.describe()}; {len(videos)} videos, {len(todo)} to store{skipped}")
        start = time.perf_counter()
        failed: list[BuiltEntry] = []
        if todo:
            connect_for_run(args.cluster, cfg.runtime, console.say, args.verbose)
            log.attach_ray()
            failed = _build(root, spec, todo, console)
        size, frames = _store_size(root, videos)
        console.say(f"done: {len(videos) - len(failed)} of {len(videos)} videos stored, {frames:,} frames, "
                    f"{size / 1e9:.2f} GB on disk, {format_duration(time.perf_counter() - start)}; full log: {log.path}")
        for entry in failed:
            print(f"failed: {entry.video_id}: {entry.error}", file=sys.stderr)
        if not cfg.data.frame_store or resolve_path(cfg.data.frame_store) != root:
            console.say(f"use it: {python_command()} {command_script('train')} --config {args.config or DEFAULT_CONFIG} "
                        f"--set data.frame_store={root}  (test.py and detect.py take the same --set)")
        return EXIT_FAILED if failed else 0
    except (UsageError, ConfigError, AnnotationError, ClusterError, VideoListError, StoreSpecError, LocationError,
            CodecError) as exc:
        return fail(exc)
    finally:
        if log is not None:
            log.close()


def _build(root: str, spec: StoreSpec, todo: list[VideoToStore], console: Console) -> list[BuiltEntry]:
    from pipelines.ray_layer.frame_store_build import build_on_ray

    failed: list[BuiltEntry] = []
    stored, frames, size, cpu = 0, 0, 0, 0.0
    bar = console.progress(len(todo), "storing")
    try:
        for done, entry in enumerate(build_on_ray(root, spec, todo), start=1):
            if entry.error:
                failed.append(entry)  # listed once, after the closing line
            else:
                stored, frames, size, cpu = stored + 1, frames + entry.frames, size + entry.bytes, cpu + entry.cpu_s
            bar.update(done, {"frames": f"{frames:,}", "GB": f"{size / 1e9:.2f}"})
    finally:
        bar.close()
    if stored:
        console.say(f"stored {stored} videos: {frames:,} frames, {size / 1e9:.2f} GB, {cpu:.0f} CPU s")
    return failed


if __name__ == "__main__":
    sys.exit(main())
