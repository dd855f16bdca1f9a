"""Evaluate a trained model on the config's test subset (this project's OpenTAD `tools/test.py`).

    python pipelines/test.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml \\
        --checkpoint pretrained/adatad_videomae_s_thumos.pth            # OpenTAD's published weights
    python pipelines/test.py --checkpoint runs/synthetic-20261130-120000  # a run of this project
    python pipelines/test.py --checkpoint CKPT --config CONFIG --no-ema --out results/ --set runtime.num_workers=2

It runs exactly training's validation: the test videos decoded once each on Ray Data actors, their
sliding windows through the model on Ray Train workers (`runtime.num_workers`, a GPU each when
present), windows merged per video with the same soft-NMS, mAP at tIoU 0.3:0.1:0.7. It writes to
--out: predictions.json (ActivityNet results layout), metrics.json (`pipelines/evaluate.py`'s
format), TEST_SUMMARY.md and test.log (everything Ray printed), and prints the mAP table.

Weights: OpenTAD files (published `{epoch, state_dict_ema}` or training checkpoints) and this
project's checkpoints, run folders (latest checkpoint) or checkpoint folders; the EMA weights by
default, `--no-ema` for the plain ones. The model and its input geometry (window, stride, crop)
come from the checkpoint's own config where it has one (this project's files); an OpenTAD file
has none, so --config describes it. The videos, subset and class map always come from --config
(default: the checkpoint's config).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `pipelines` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adatad.atomic import atomic_write_text
from adatad.config import (
    WEIGHTS_FROM_TRAINED_FILE,
    Config,
    ConfigError,
    config_from_dict,
    deep_merge,
    load_config,
    parse_override,
)
from adatad.data.annotations import AnnotationError, VideoRecord
from adatad.data.check import check_videos, fill_frame_counts, format_problems
from adatad.engine.validation import metrics_of
from adatad.models.trained import TrainedModel, TrainedWeightsError, read_trained
from pipelines.console import Console, RunLog, format_duration
from pipelines.evaluate import format_table

# What the model saw in training: taken from the checkpoint's config, never from --config.
INPUT_KEYS = ("window_size", "frame_stride", "crop_size", "test_resize_short")
SUMMARY_FILE, PREDICTIONS_FILE, METRICS_FILE, LOG_FILE = "TEST_SUMMARY.md", "predictions.json", "metrics.json", \
    "test.log"


class TestInputError(ValueError):
    """A problem with the command line, reported as one line."""


@dataclass
class TestPlan:
    """Everything checked before Ray starts."""

    cfg: Config
    trained: TrainedModel
    records: list[VideoRecord]
    class_names: list[str]
    out: Path
    config_source: str


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True,
                   help="OpenTAD .pth, or this project's checkpoint.pt / checkpoint folder / run folder")
    p.add_argument("--config", default=None,
                   help="experiment YAML: test videos, subset, class map, runtime (default: the checkpoint's own; "
                        "required for OpenTAD files)")
    p.add_argument("--profile", default=None, help="GPU-memory profile from configs/profiles")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set runtime.num_workers=2 (repeatable)")
    p.add_argument("--no-ema", action="store_true", help="evaluate the plain weights instead of the EMA ones")
    p.add_argument("--out", default=None, help="output folder (default: <runtime.storage_path>/test-<name>-<time>)")
    p.add_argument("--cluster", default="local",
                   help="local (start Ray here), auto (attach to a running cluster) or an address")
    p.add_argument("--skip-data-check", action="store_true", help="do not check the test videos first")
    p.add_argument("--verbose", action="store_true", help="also show Ray's own output")
    return p


def test_config(trained: TrainedModel, config: str | None, overrides: list[str], profile: str | None) -> tuple[
        Config, str]:
    """--config (data, runtime, inference) + the checkpoint's model and input geometry."""
    if config is None:
        if trained.kind != "adatad":
            raise TestInputError(f"--checkpoint {trained.path}: an OpenTAD file has no config; pass --config "
                                 "(e.g. configs/thumos_videomae_s_768x1_160_adapter.yaml)")
        raw = dict(trained.state["config"])
        for item in overrides:
            raw = deep_merge(raw, parse_override(item))
        return config_from_dict(deep_merge(raw, WEIGHTS_FROM_TRAINED_FILE)), "the checkpoint's config"
    raw = load_config(config, overrides, profile).to_dict()
    if trained.kind == "adatad":
        own = trained.state["config"]
        raw["model"] = {**own["model"], "inference": raw["model"]["inference"]}
        raw["data"] = {**raw["data"], **{k: own["data"][k] for k in INPUT_KEYS}}
    return config_from_dict(deep_merge(raw, WEIGHTS_FROM_TRAINED_FILE)), config


def plan_test(args: argparse.Namespace) -> TestPlan:
    from pipelines.train import load_test_split

    base = load_config(args.config, args.overrides, args.profile) if args.config else None
    try:
        trained = read_trained(args.checkpoint, base, use_ema=not args.no_ema)
    except TrainedWeightsError as exc:
        raise TestInputError(f"--checkpoint: {exc}") from None
    cfg, source = test_config(trained, args.config, args.overrides, args.profile)
    records, class_names = load_test_split(cfg)
    stored = list(trained.state.get("class_names") or [])
    if stored and stored != class_names:
        raise TestInputError(f"--checkpoint {trained.path}: trained on classes {stored[:4]}... but the test data "
                             f"has {class_names[:4]}... ({len(class_names)}); the class maps differ")
    out = Path(args.out) if args.out else Path(cfg.resolve_path(cfg.runtime.storage_path)) / \
        f"test-{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return TestPlan(cfg, trained, records, class_names, out.resolve(), source)


def run_test(plan: TestPlan, console: Console | None = None) -> dict[str, Any]:
    """Training's validation on Ray Train (Ray must be connected); returns predictions and metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from adatad.data.clips import record_to_row
    from pipelines.data import validation_datasets
    from pipelines.progress import ProgressRelay, TrainingProgressView
    from pipelines.train import total_windows
    from pipelines.train_loop import PREDICTIONS_FILE as WORKER_FILE
    from pipelines.train_loop import evaluate_loop_per_worker

    cfg, r = plan.cfg, plan.cfg.runtime
    use_gpu = bool(r.use_gpu and ray.cluster_resources().get("GPU", 0) >= 1)
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if use_gpu else {}), **r.worker_resources}
    relay = ProgressRelay.remote() if console is not None else None
    with tempfile.TemporaryDirectory(prefix=".ray-", dir=plan.out) as storage:
        trainer = TorchTrainer(
            evaluate_loop_per_worker,
            train_loop_config={
                "config": cfg.to_dict(),
                "test_rows": [record_to_row(rec, i) for i, rec in enumerate(plan.records)],
                "class_names": plan.class_names,
                "weights": ray.put(plan.trained.state),
                "progress": relay,
            },
            scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=use_gpu,
                                                   resources_per_worker=resources),
            run_config=ray.train.RunConfig(name="test", storage_path=storage),
            datasets=validation_datasets(cfg, plan.records),
            dataset_config=ray.train.DataConfig(datasets_to_split=[]),
        )
        view = (TrainingProgressView(console, relay, 0, total_windows(cfg, plan.records)).start()
                if console is not None else None)
        start = time.perf_counter()
        try:
            result = trainer.fit()
        finally:
            if view is not None:
                view.stop()
        seconds = time.perf_counter() - start
        with result.checkpoint.as_directory() as directory:
            predictions = json.loads((Path(directory) / WORKER_FILE).read_text())
    metrics = metrics_of(predictions, plan.records, plan.class_names)
    return {"predictions": predictions, "metrics": metrics, "seconds": seconds,
            "device": f"cuda x {r.num_workers}" if use_gpu else f"cpu x {r.num_workers}"}


def summary_markdown(plan: TestPlan, outcome: dict[str, Any]) -> str:
    m = outcome["metrics"]
    detections = sum(len(v) for v in outcome["predictions"]["results"].values())
    rows = "\n".join(f"| {t} | {100 * v:.2f} |" for t, v in m["mAP"].items())
    return (f"# Test: {plan.cfg.name}\n\n"
            f"- checkpoint: `{plan.trained.path}` ({plan.trained.kind}, {plan.trained.weights} weights)\n"
            f"- data: `{plan.cfg.data.annotation_file}`, subset `{plan.cfg.data.test_subset}`: "
            f"{len(plan.records)} videos, {len(plan.class_names)} classes; config: {plan.config_source}\n"
            f"- {detections} detections; {format_duration(outcome['seconds'])} on {outcome['device']}\n\n"
            f"| tIoU | mAP (%) |\n|---|---|\n{rows}\n| **average** | **{100 * m['average_mAP']:.2f}** |\n")


def write_outputs(plan: TestPlan, outcome: dict[str, Any]) -> list[Path]:
    return [
        atomic_write_text(plan.out / PREDICTIONS_FILE, json.dumps(outcome["predictions"]) + "\n"),
        atomic_write_text(plan.out / METRICS_FILE, json.dumps(outcome["metrics"], indent=2) + "\n"),
        atomic_write_text(plan.out / SUMMARY_FILE, summary_markdown(plan, outcome)),
    ]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log: RunLog | None = None
    try:
        plan = plan_test(args)
        if not args.skip_data_check:
            problems = check_videos(plan.records)
            if problems:
                print(format_problems(problems, len(plan.records)), file=sys.stderr)
                return 2
        plan.records = fill_frame_counts(plan.records)  # a json without `frame`/`fps`: the decoder's
        plan.out.mkdir(parents=True, exist_ok=True)
        log = RunLog(plan.out / LOG_FILE, verbose=args.verbose).attach()
        console = Console(log)
        console.say(f"checkpoint: {plan.trained.path} ({plan.trained.kind}, {plan.trained.weights} weights)")
        console.say(f"test set: {len(plan.records)} videos of subset '{plan.cfg.data.test_subset}', "
                    f"{len(plan.class_names)} classes; output: {plan.out} (full log: {plan.out / LOG_FILE})")
        from pipelines.cluster import ClusterError, connect_for_run
        from pipelines.train import quiet_ray_data

        try:
            connect_for_run(args.cluster, plan.cfg.runtime, console.say)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log.attach_ray()
        quiet_ray_data(args.verbose)
        outcome = run_test(plan, console)
        written = write_outputs(plan, outcome)
        console.say(format_table(outcome["metrics"]))
        console.say(f"done in {format_duration(outcome['seconds'])}; wrote {', '.join(p.name for p in written)} "
                    f"in {plan.out}")
    except (TestInputError, ConfigError, AnnotationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
