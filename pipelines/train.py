"""Train AdaTAD with Ray Train (TorchTrainer), Ray Data input, MLflow tracking and reports.

    python pipelines/train.py --cluster local                       # the synthetic demo config
    python pipelines/train.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml --profile 64gb
    python pipelines/train.py --cluster auto --set train.epochs=10   # attach to `ray start --head`
    python pipelines/train.py --resume                               # continue the latest run
"""

from __future__ import annotations

import argparse
import sys

if __package__ in (None, "") and __name__ == "__main__":  # run as a script: see pipelines/_bootstrap.py
    import _bootstrap  # noqa: F401

from adatad.config import ConfigError
from adatad.data.annotations import AnnotationError, segment_note, subset_translation_note
from adatad.data.check import check_videos, format_problems
from adatad.data.frame_store.entry import FrameStoreError
from adatad.data.splits import load_splits
from pipelines.cli.args import CommandParser, UsageError, add_cluster_arguments, add_config_arguments, fail
from pipelines.cli.console import Console
from pipelines.cli.frame_store_check import frame_store_problems
from pipelines.cli.hints import resume_command
from pipelines.ray_layer.cluster import ClusterError, connect_for_run
from pipelines.ray_layer.run_log import RunLog
from pipelines.ray_layer.training import run_training
from pipelines.runs.closing import closing_lines, decode_failure_of
from pipelines.runs.plan import plan_run
from pipelines.runs.preflight import (
    check_artifact_store,
    check_external_classifier,
    check_initial_weights,
    check_locations,
)
from pipelines.runs.stop import RunStopped, stop_on_sigterm
from pipelines.runs.uploads import LogUploads

EXIT_STOPPED = 143  # 128 + SIGTERM, as a shell reports a process stopped by it


def build_parser() -> argparse.ArgumentParser:
    p = CommandParser(description=__doc__)
    add_config_arguments(p)
    p.add_argument("--run-name", default=None, help="name of the run folder (default: <config name>-<time>)")
    p.add_argument("--storage", default=None, help="absolute folder for runs (default: runtime.storage_path)")
    p.add_argument("--resume", action="store_true",
                   help="continue --run-name (or the latest run in the storage folder) from its last epoch")
    p.add_argument("--skip-data-check", action="store_true", help="do not check every video before training")
    add_cluster_arguments(p, "also show Ray's own output (Ray Data progress and plans, Train reports, worker logs)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    with stop_on_sigterm(), LogUploads() as uploads:  # a run folder at a URI: its log uploaded as it goes
        return run(args, uploads)


def run(args: argparse.Namespace, uploads: LogUploads | None = None) -> int:
    log: RunLog | None = None
    try:
        plan = plan_run(args.config, args.overrides, args.profile, args.storage, args.run_name, args.resume)
        cfg = plan.cfg
        check_locations(cfg, skip=("model.backbone.checkpoint", "model.init_from") if plan.resumed else ())
        check_artifact_store(cfg, plan.storage)
        train, test, classes = load_splits(cfg)
        store_problems = frame_store_problems(cfg, train + test, str(plan.folder.config) if plan.resumed
                                              else args.config, args.overrides)
        if store_problems:  # the store is read instead of the videos; each line names the command that fixes it
            for line in store_problems:
                print(f"error: {line}", file=sys.stderr)
            return 2
        if not cfg.data.frame_store and not args.skip_data_check:
            problems = check_videos(train + test)
            if problems:
                print(format_problems(problems, len(train) + len(test)), file=sys.stderr)
                return 2
        check_initial_weights(cfg, plan.resumed, args.config, args.overrides)
        check_external_classifier(cfg)
        if plan.local != plan.folder and uploads is not None:  # the run folder is at a URI
            uploads.follow(plan.local.log, plan.folder.log)
        log = RunLog(plan.local.log, verbose=args.verbose).attach()
        console = Console(log)
        note = subset_translation_note(cfg.resolve_path(cfg.data.annotation_file),
                                       [cfg.data.train_subset, cfg.data.test_subset])
        if note:
            console.say(f"note: {note}")
        segments = segment_note(cfg.resolve_path(cfg.data.annotation_file), [cfg.data.train_subset, cfg.data.test_subset])
        if segments:
            console.say(f"note: {segments}")
        console.say(f"config '{cfg.name}': {len(train)} training videos, {len(test)} test videos, "
                    f"{len(classes)} classes; epochs {cfg.train.epochs} (0-{cfg.train.epochs - 1}), "
                    f"batch {cfg.train.batch_size}")
        console.say(f"run folder: {plan.run_dir}" + (" (resumed)" if plan.resumed else "")
                    + f"; full log: {plan.folder.log}"
                    + (f" (written to {plan.local.log}, uploaded every 30 s)" if plan.local != plan.folder else ""))
        connect_for_run(args.cluster, cfg.runtime, console.say, args.verbose)
        log.attach_ray()
        console.say(f"if interrupted: {resume_command(plan.run_name, args.storage and str(plan.storage))}")
        summary = run_training(plan, console=console)
    except (ConfigError, AnnotationError, UsageError, ClusterError, FrameStoreError) as exc:
        return fail(exc)
    except RunStopped as exc:
        print(f"stopped: {exc}; continue with: {resume_command(exc.run_name, args.storage)}", file=sys.stderr)
        return EXIT_STOPPED
    except KeyboardInterrupt as exc:  # before training started: nothing to keep
        print(f"stopped ({exc or 'interrupted'}) before training started", file=sys.stderr)
        return EXIT_STOPPED
    except Exception as exc:
        decode = decode_failure_of(exc)
        if decode is None:
            raise
        return fail(decode)  # the worker's list of failing files, not its traceback
    finally:
        if log is not None:
            log.close()
    for line in closing_lines(summary):
        console.say(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
