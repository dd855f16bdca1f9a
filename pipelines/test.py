"""Evaluate a trained model on the config's test subset (this project's OpenTAD `tools/test.py`).

    python pipelines/test.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml \\
        --checkpoint pretrained/adatad_videomae_s_thumos.pth            # OpenTAD's published weights
    python pipelines/test.py --checkpoint runs/synthetic-20261130-120000  # a run of this project
    python pipelines/test.py --checkpoint CKPT --config CONFIG --no-ema --out-dir results/ --set runtime.num_workers=2

It runs exactly training's validation: the test videos decoded once each on Ray Data actors, their
sliding windows through the model on Ray Train workers (`runtime.num_workers`, a GPU each when
present), windows merged per video with the same soft-NMS, mAP at the config's tIoU thresholds. It
writes to --out-dir: predictions.json (ActivityNet results layout), metrics.json (`pipelines/score.py`'s
format), TEST_SUMMARY.md and test.log (everything Ray printed), and prints the mAP table.

Weights: OpenTAD files (published `{epoch, state_dict_ema}` or training checkpoints) and this
project's checkpoints, run folders (latest checkpoint) or checkpoint folders; the EMA weights by
default, `--no-ema` for the plain ones. The model and its input geometry (window, stride, crop)
come from the checkpoint's own config where it has one (this project's files;
`adatad/trained_settings.py`); an OpenTAD file has none, so --config describes it. The videos,
subset and class map always come from --config (default: the checkpoint's config).
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import ConfigError
from adatad.data.annotations import AnnotationError, segment_note
from adatad.data.check import check_videos, format_problems
from adatad.data.frame_store.entry import FrameStoreError
from adatad.data.splits import with_frame_counts
from adatad.evaluation import format_map_table
from pipelines.cli.args import CommandParser, UsageError, add_cluster_arguments, add_config_arguments, fail
from pipelines.cli.console import Console, format_duration
from pipelines.cli.frame_store_check import frame_store_problems
from pipelines.cli.hints import trained_config
from pipelines.ray_layer.cluster import ClusterError, connect_for_run
from pipelines.ray_layer.evaluation import run_evaluation
from pipelines.ray_layer.run_log import RunLog
from pipelines.runs.evaluation_plan import plan_evaluation, write_outputs
from pipelines.runs.preflight import check_locations
from pipelines.runs.uploads import LogUploads, local_log_for


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__, aliases={"--out": "--out-dir"})
    p.add_argument("--checkpoint", required=True,
                   help="OpenTAD .pth, or this project's checkpoint.pt / checkpoint folder / run folder")
    add_config_arguments(p, config_help="experiment YAML: test videos, subset, class map, runtime (default: the "
                                        "checkpoint's own; required for OpenTAD files)",
                         set_help="override a config value, e.g. --set runtime.num_workers=2 (repeatable)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the plain weights instead of the EMA ones")
    p.add_argument("--out-dir", default=None,
                   help="output folder (default: <runtime.storage_path>/test-<name>-<time>; was --out)")
    p.add_argument("--skip-data-check", action="store_true", help="do not check the test videos first")
    add_cluster_arguments(p)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with LogUploads() as uploads:
        return run(args, uploads)


def run(args: argparse.Namespace, uploads: LogUploads) -> int:
    log: RunLog | None = None
    try:
        plan = plan_evaluation(args.checkpoint, args.config, args.overrides, args.profile, args.no_ema, args.out_dir)
        check_locations(plan.cfg, skip=("model.backbone.checkpoint", "model.init_from"))  # weights: the checkpoint's
        store_problems = frame_store_problems(plan.cfg, plan.records, args.config or trained_config(plan.trained.path),
                                              args.overrides)
        if store_problems:  # the store is read instead of the videos; each line names the command that fixes it
            for line in store_problems:
                print(f"error: {line}", file=sys.stderr)
            return 2
        if not plan.cfg.data.frame_store and not args.skip_data_check:
            problems = check_videos(plan.records)
            if problems:
                print(format_problems(problems, len(plan.records)), file=sys.stderr)
                return 2
        plan.records = with_frame_counts(plan.cfg, plan.records)  # a json without `frame`/`fps`: the decoder's
        out = plan.out
        out.path.mkdir(parents=True, exist_ok=True)
        local_log, remote_log = local_log_for(str(out.log))  # an output folder at a URI: the log uploaded
        log = RunLog(local_log, verbose=args.verbose).attach()
        if remote_log is not None:
            uploads.follow(local_log, remote_log)
        console = Console(log)
        note = segment_note(plan.cfg.resolve_path(plan.cfg.data.annotation_file), [plan.cfg.data.test_subset],
                            training=False)
        if note:
            console.say(f"note: {note}")
        console.say(f"checkpoint: {plan.trained.path} ({plan.trained.kind}, {plan.trained.weights} weights)")
        console.say(f"test set: {len(plan.records)} videos of subset '{plan.cfg.data.test_subset}', "
                    f"{len(plan.class_names)} classes; output: {out.path} (full log: {out.log})")
        connect_for_run(args.cluster, plan.cfg.runtime, console.say, args.verbose)
        log.attach_ray()
        outcome = run_evaluation(plan, console)
        written = write_outputs(plan, outcome)
        console.say(format_map_table(outcome["metrics"]))
        console.say(f"done in {format_duration(outcome['seconds'])}; wrote {', '.join(p.name for p in written)} "
                    f"in {out.path}")
    except (UsageError, ConfigError, AnnotationError, ClusterError, FrameStoreError) as exc:
        return fail(exc)
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
