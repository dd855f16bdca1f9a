"""Detect actions in new videos with a trained checkpoint: Ray Data batch inference -> results json.

    python pipelines/detect.py --checkpoint runs/synthetic/checkpoint_... --videos data/synthetic/videos
    python pipelines/detect.py --checkpoint CKPT --videos a.mp4 b.mkv --plot-dir plots --annotations GT.json
    python pipelines/detect.py --checkpoint adatad_s_thumos.pth --config configs/thumos_videomae_s_768x1_160_adapter.yaml \\
        --videos DIR --out detections.json                          # OpenTAD's published weights

Stages (`pipelines/ray_layer/detection.py`): list videos -> inspect each with the decoder (Ray
tasks: real frame count and fps; a video that cannot be used goes straight to "errors") -> sliding
test windows, each video decoded once on CPU actors -> `Predict` actors (a GPU each when the
cluster has GPUs and runtime.use_gpu is set, else CPU) with the EMA weights -> per-video merge +
soft-NMS on the driver (the training validation code) -> one json, written atomically and readable
by `pipelines/score.py`:

    {"results": {video_id: [{"segment": [s, e], "label": name, "score": x}, ...]},
     "errors": {video_id: "one-line reason"}}

The model and its input geometry (architecture, window, frame stride, crop) always come from the
checkpoint (`adatad/trained_settings.py`); `--config` / `--set` change the rest (runtime,
model.inference, the overlap of test windows, ...). An OpenTAD checkpoint has no config: `--config`
then describes its architecture as well. EMA weights by default, `--no-ema` for the plain ones.
Ray's own output goes to `<out>.log` beside the json (`--verbose` shows it too).
Bad input: one line on stderr and exit code 2. Exit code 1 when no video could be processed.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.atomic import atomic_write_text
from adatad.config import Config, ConfigError, InferenceConfig, load_config
from adatad.data.annotations import AnnotationError
from adatad.data.class_names import resolve_class_names
from adatad.data.video_files import VIDEO_EXTENSIONS, VideoListError, list_videos
from adatad.evaluation import EvaluationInputError, load_ground_truth_of_all_subsets
from adatad.locations import (
    LocationError,
    check_readable_location,
    check_writable_location,
    is_uri,
    parent_of,
)
from adatad.models.trained import read_trained
from adatad.models.weights import WeightsError
from adatad.trained_settings import config_for_trained_file
from adatad.visualize import plot_timelines
from pipelines.cli.args import EXIT_FAILED, CommandParser, add_cluster_arguments, fail
from pipelines.cli.console import Console
from pipelines.cli.frame_store_check import frame_store_problems
from pipelines.cli.hints import trained_config
from pipelines.ray_layer.cluster import ClusterError, connect, ray_data_progress_bars
from pipelines.ray_layer.detection import DetectInputError, detect_videos, unprobed_record
from pipelines.ray_layer.run_log import RunLog
from pipelines.runs.uploads import LogUploads, local_log_for


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__)
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint.pt, a Ray checkpoint folder holding one, a run folder (latest checkpoint), "
                        "or an OpenTAD .pth (with --config)")
    p.add_argument("--no-ema", action="store_true", help="use the plain weights instead of the EMA ones")
    p.add_argument("--videos", required=True, nargs="+", metavar="DIR_OR_FILE",
                   help=f"video files and/or folders (a folder: its files ending in {', '.join(VIDEO_EXTENSIONS)})")
    p.add_argument("--config", default=None,
                   help="YAML whose settings replace the checkpoint's, except the model and its input geometry "
                        "(for an OpenTAD checkpoint: its whole model)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a detection-time setting, e.g. --set runtime.val_decode_actors=2 (repeatable)")
    p.add_argument("--out", default="detections.json", help="results json (default: detections.json)")
    p.add_argument("--plot-dir", default=None, help="write a timeline PNG per video into this folder")
    p.add_argument("--plot-min-score", type=float, default=0.1,
                   help="detections drawn in the timeline have at least this score (default: 0.1)")
    p.add_argument("--min-score", type=float, default=None,
                   help="keep detections scoring at least this (default: model.inference.min_score)")
    p.add_argument("--top-k", type=int, default=None,
                   help="keep at most this many detections per video (default: model.inference.max_seg_num)")
    p.add_argument("--annotations", default=None,
                   help="THUMOS-style annotation json: ground truth drawn in the timelines (any subset)")
    p.add_argument("--class-map", default=None,
                   help="class names, one per line, in the model's index order (default: adatad/data/class_names.py)")
    p.add_argument("--decode-actors", type=int, default=None,
                   help="decode actors (default: runtime.val_decode_actors)")
    p.add_argument("--predict-actors", type=int, default=None,
                   help="model actors (default: one per GPU, or 1 without GPUs)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary line")
    add_cluster_arguments(p)
    return p


@dataclasses.dataclass
class DetectPlan:
    """Everything checked before Ray starts: a bad input fails in a second with one line."""

    checkpoint: Path
    state: dict[str, Any]  # `TrainedModel.state`: the chosen weights, config and class names
    cfg: Config
    inference: InferenceConfig  # with --min-score / --top-k applied
    class_names: list[str]
    class_source: str
    ground_truth: dict[str, list[dict]] | None
    paths: list[Path]


def plan_detection(args: argparse.Namespace) -> DetectPlan:
    for flag, value in (("--out", args.out and parent_of(args.out)), ("--plot-dir", args.plot_dir)):
        if value and is_uri(value):  # written at the end: a wrong bucket or key fails now, in seconds
            try:
                check_writable_location(value, flag)
            except LocationError as exc:
                raise DetectInputError(str(exc)) from None
    base = load_config(args.config, args.overrides) if args.config else None  # an OpenTAD file's architecture
    try:
        if is_uri(args.checkpoint):  # one line in seconds for a wrong bucket, credentials or endpoint
            check_readable_location(args.checkpoint, "--checkpoint")
    except LocationError as exc:
        raise DetectInputError(str(exc)) from None
    try:
        # Every key, shape and dtype is checked against the model the config builds (on the meta
        # device): weights that do not fit fail here, not in a Predict actor.
        file = read_trained(args.checkpoint, base, use_ema=not args.no_ema)
    except (WeightsError, ValueError) as exc:
        raise DetectInputError(f"--checkpoint: {exc}") from None
    own = file.state["config"] if file.kind == "adatad" else None
    cfg = config_for_trained_file(own, args.config, args.overrides)
    if args.config is None and not any(o.strip().startswith("data.frame_store=") for o in args.overrides):
        # The videos given are decoded unless a store is asked for here: the frame store the model was
        # trained with holds its data set's videos, rarely the new ones detect.py is pointed at.
        cfg.data.frame_store = None
    inference = dataclasses.replace(
        cfg.model.inference,
        min_score=cfg.model.inference.min_score if args.min_score is None else args.min_score,
        max_seg_num=cfg.model.inference.max_seg_num if args.top_k is None else args.top_k,
    )
    if inference.max_seg_num < 1:
        raise DetectInputError(f"--top-k {args.top_k}: expected >= 1")
    if args.decode_actors is not None:
        if args.decode_actors < 1:
            raise DetectInputError(f"--decode-actors {args.decode_actors}: expected >= 1")
        cfg.runtime.val_decode_actors = args.decode_actors
    found = resolve_class_names(cfg, args.class_map, args.annotations, hint="pass --class-map or --annotations",
                                stored=list(file.state.get("class_names") or []))
    class_names, source = found.names, found.source
    gt = load_ground_truth_of_all_subsets(args.annotations) if args.annotations and args.plot_dir else None
    paths = list_videos(args.videos)
    problems = frame_store_problems(cfg, [unprobed_record(p) for p in paths], args.config or trained_config(file.path),
                                    args.overrides, args.videos)
    if problems:  # windows would be read from the store: each line names the command that fixes it
        raise DetectInputError("\nerror: ".join(problems))
    return DetectPlan(file.path, file.state, cfg, inference, class_names, source, gt, paths)


def run(args: argparse.Namespace) -> dict[str, Any]:
    """The whole detection; Ray is connected here unless it already is. Returns the written json plus
    `stats` (`detection.detect_videos`) and `plots`."""
    plan = plan_detection(args)
    local_log, remote_log = local_log_for(re.sub(r"\.[^./]*$", "", args.out) + ".log")  # <out>.log
    log = RunLog(local_log, verbose=args.verbose).attach()
    uploads = LogUploads()
    if remote_log is not None:
        uploads.follow(local_log, remote_log)
    try:
        console = Console(log, quiet=args.quiet)
        console.say(f"checkpoint {plan.checkpoint}; {len(plan.class_names)} classes from {plan.class_source}; "
                    f"{len(plan.paths)} videos; full log: {remote_log or log.path}")
        cfg = plan.cfg
        resources = connect(args.cluster, cfg.runtime.local_num_cpus, None, cfg.runtime.object_store_memory_mb)
        log.attach_ray()
        with ray_data_progress_bars(args.verbose):  # the console draws its own bar
            outcome = detect_videos(cfg, plan.state, plan.paths, plan.class_names, plan.inference, resources,
                                    args.predict_actors, lambda total: console.progress(total, "detect"),
                                    console.warn)
        output = {"results": outcome.results, "errors": outcome.errors}
        atomic_write_text(args.out, json.dumps(output) + "\n")
        plots = plot_timelines(args.plot_dir, outcome.records, outcome.results, plan.class_names,
                               plan.ground_truth, args.plot_min_score) if args.plot_dir else []
        stats = outcome.stats
        console.say(f"{len(outcome.results)} videos detected, {len(outcome.errors)} failed; {stats['windows']} "
                    f"windows in {stats['seconds']:.1f} s ({stats['windows_per_s']:.2f} windows/s); wrote {args.out}"
                    + (f" and {len(plots)} timelines in {args.plot_dir}" if plots else ""))
        for vid, message in outcome.errors.items():
            print(f"failed: {vid}: {message}", file=sys.stderr)
        return {**output, "stats": stats, "plots": [str(p) for p in plots]}
    finally:
        log.close()
        uploads.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        output = run(args)
    except (DetectInputError, VideoListError, ConfigError, AnnotationError, EvaluationInputError,
            ClusterError) as exc:
        return fail(exc)
    except OSError as exc:  # e.g. --out or --plot-dir in an unwritable place
        return fail(f"{exc.filename or ''}: {exc.strerror or exc}")
    return 0 if output["results"] or not output["errors"] else EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
