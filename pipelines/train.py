"""Train AdaTAD with Ray Train (TorchTrainer), Ray Data input, MLflow tracking and reports.

    python pipelines/train.py --cluster local                       # the synthetic demo config
    python pipelines/train.py --config configs/thumos_videomae_s_768x1_160_adapter.yaml --profile 64gb
    python pipelines/train.py --cluster auto --set train.epochs=10   # attach to `ray start --head`
    python pipelines/train.py --resume                               # continue the latest run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `pipelines` importable without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adatad.atomic import atomic_write_text
from adatad.config import PROJECT_ROOT, Config, ConfigError, load_config, write_config
from adatad.data.annotations import (
    AnnotationError,
    VideoRecord,
    load_annotations,
    load_class_names,
    subset_translation_note,
)
from adatad.data.check import check_videos, fill_frame_counts, format_problems
from pipelines.console import Console, RunLog, format_duration

DEFAULT_CONFIG = "configs/synthetic.yaml"
CONFIG_FILE = "config.yaml"
LOG_FILE = "train.log"  # the whole run's output: our lines, Ray's and the workers'


class UsageError(RuntimeError):
    """A problem with the command line or the run folder, reported as one line."""


@dataclass
class RunPlan:
    cfg: Config
    run_name: str
    storage: Path
    resumed: bool

    @property
    def run_dir(self) -> Path:
        return self.storage / self.run_name


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """--config / --profile / --set, shared by every command that loads a run config."""
    p.add_argument("--config", default=None, help=f"experiment YAML (default: {DEFAULT_CONFIG})")
    p.add_argument("--profile", default=None, help="GPU-memory profile from configs/profiles (e.g. 32gb, 64gb)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set train.lr=2e-4 (repeatable)")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_arguments(p)
    p.add_argument("--cluster", default="local",
                   help="local (start Ray here), auto (attach to a running cluster) or an address")
    p.add_argument("--run-name", default=None, help="name of the run folder (default: <config name>-<time>)")
    p.add_argument("--storage", default=None, help="absolute folder for runs (default: runtime.storage_path)")
    p.add_argument("--resume", action="store_true",
                   help="continue --run-name (or the latest run in the storage folder) from its last epoch")
    p.add_argument("--skip-data-check", action="store_true", help="do not check every video before training")
    p.add_argument("--verbose", action="store_true",
                   help="also show Ray's own output (Ray Data progress and plans, Train reports, worker logs)")
    return p


def plan_run(args: argparse.Namespace) -> RunPlan:
    """Config + run folder, with the resume rules checked before anything expensive starts."""
    base = load_config(args.config or PROJECT_ROOT / DEFAULT_CONFIG, args.overrides, args.profile)
    storage = Path(args.storage or base.resolve_path(base.runtime.storage_path))
    if not storage.is_absolute():
        raise UsageError(f"--storage {args.storage}: expected an absolute path (Ray workers change directory)")
    run_name = args.run_name
    if args.resume and run_name is None:
        runs = sorted((p for p in storage.glob(f"*/{CONFIG_FILE}")), key=lambda p: p.stat().st_mtime)
        if not runs:
            raise UsageError(f"--resume: no run to resume in {storage}")
        run_name = runs[-1].parent.name
    run_name = run_name or f"{base.name}-{datetime.now():%Y%m%d-%H%M%S}"
    run_dir = storage / run_name
    saved = run_dir / CONFIG_FILE
    if args.resume:
        if not saved.is_file():
            raise UsageError(f"--resume: {run_dir} has no {CONFIG_FILE}; nothing to resume")
        # The run's own effective config, plus any --set given now (e.g. more epochs).
        cfg = load_config(saved, args.overrides)
        return RunPlan(cfg, run_name, storage, resumed=True)
    if run_dir.exists():
        raise UsageError(f"run folder {run_dir} exists: pass --resume to continue it, or choose another --run-name")
    return RunPlan(base, run_name, storage, resumed=False)


def class_names_of(cfg: Config) -> list[str]:
    """The configured class map, else the labels of the annotation file (as OpenTAD generates it)."""
    d = cfg.data
    class_map = cfg.resolve_path(d.class_map_file) if d.class_map_file else None
    if class_map and not Path(class_map).is_file():
        class_map = None
    names = load_class_names(cfg.resolve_path(d.annotation_file), class_map)
    if len(names) != cfg.model.head.num_classes:
        raise ConfigError(f"model.head.num_classes: {cfg.model.head.num_classes} but {class_map or d.annotation_file} "
                          f"has {len(names)} classes")
    return names


def load_subset(cfg: Config, subset: str, class_names: list[str]) -> list[VideoRecord]:
    d = cfg.data
    records, _ = load_annotations(cfg.resolve_path(d.annotation_file), cfg.resolve_path(d.video_dir), subset,
                                  class_names, d.video_ext)
    return records


def load_splits(cfg: Config) -> tuple[list[VideoRecord], list[VideoRecord], list[str]]:
    class_names = class_names_of(cfg)
    return (load_subset(cfg, cfg.data.train_subset, class_names),
            load_subset(cfg, cfg.data.test_subset, class_names), class_names)


def load_test_split(cfg: Config) -> tuple[list[VideoRecord], list[str]]:
    """The test subset alone (evaluating needs no training videos)."""
    class_names = class_names_of(cfg)
    return load_subset(cfg, cfg.data.test_subset, class_names), class_names


def check_initial_weights(cfg: Config, resumed: bool = False) -> None:
    """Load the configured VideoMAE file (or `model.init_from`) here, before Ray starts (one-line error).

    Training builds the model inside a Ray worker, where a wrong path or architecture would only
    surface after the cluster, datasets and workers are up. Reading the file once on the driver
    costs a few seconds and runs the exact loading code the workers run. A resumed run starts from
    its own checkpoint and needs neither file.
    """
    from adatad.models.build import build_model
    from adatad.models.trained import TrainedWeightsError, read_trained
    from adatad.models.videomae import CheckpointError

    if resumed:
        return
    if cfg.model.init_from:
        try:
            read_trained(cfg.resolve_path(cfg.model.init_from), cfg)
        except TrainedWeightsError as exc:
            raise UsageError(f"model.init_from: {exc}") from None
    elif cfg.model.backbone.checkpoint:
        try:
            build_model(cfg)
        except (FileNotFoundError, CheckpointError) as exc:
            raise UsageError(f"model.backbone.checkpoint: {exc}") from None


def total_windows(cfg: Config, records: list[VideoRecord]) -> int:
    """Test windows of all `records` (the validation progress bar's length)."""
    from adatad.data.clips import count_windows

    return sum(count_windows(r, cfg.data) for r in records)


def run_training(plan: RunPlan, extra_callbacks: list | None = None, mlflow_params: dict[str, Any] | None = None,
                 mlflow_tags: dict[str, str] | None = None, quiet: bool = False,
                 console: Console | None = None) -> dict[str, Any]:
    """Build and fit the TorchTrainer for `plan` (Ray must be connected); returns a summary dict.

    Used unchanged by `train.py` and by every Tune trial (`tune.py`), so both run one code path.
    With a `console` (train.py), the workers' progress is drawn there: a bar and a line per epoch.
    """
    import ray.train
    from ray.train.torch import TorchTrainer

    from adatad.data.clips import record_to_row
    from pipelines.data import train_dataset, validation_datasets
    from pipelines.progress import ProgressRelay, TrainingProgressView
    from pipelines.tracking import MLflowEpochLogger, finish_run, start_or_resume_run, tracking_uri, ui_url
    from pipelines.train_loop import train_loop_per_worker

    cfg = plan.cfg
    console = None if quiet else (console or Console())
    train_records, test_records, class_names = load_splits(cfg)
    # A json without `frame`/`fps`: the decoder's counts (main's data check already probed them).
    train_records, test_records = fill_frame_counts(train_records), fill_frame_counts(test_records)
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    write_config(cfg, plan.run_dir / CONFIG_FILE)
    uri = tracking_uri(cfg)
    run_id = start_or_resume_run(cfg, uri, plan.run_dir, plan.run_name, mlflow_params, mlflow_tags)
    if console is not None:
        console.say(f"MLflow run {run_id} in {uri}")
        console.say(f"browse: mlflow ui --backend-store-uri {uri} --host 127.0.0.1  ->  {ui_url(uri, run_id)}")

    r = cfg.runtime
    gpus = ray.cluster_resources().get("GPU", 0)
    use_gpu = bool(r.use_gpu and gpus >= 1)
    if r.use_gpu and not use_gpu and console is not None:
        console.warn("runtime.use_gpu is true but the cluster has no GPU; training on CPU")
    relay = ProgressRelay.remote() if console is not None else None
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if use_gpu else {}), **r.worker_resources}
    trainer = TorchTrainer(
        train_loop_per_worker,
        train_loop_config={
            "config": cfg.to_dict(),
            "test_rows": [record_to_row(rec, i) for i, rec in enumerate(test_records)],
            "class_names": class_names,
            "num_train_videos": len(train_records),
            "train_paths": [rec.path for rec in train_records],  # names the files of decode failures
            "progress": relay,
            "mlflow": {"uri": uri, "run_id": run_id} if cfg.tracking.system_metrics else None,
        },
        scaling_config=ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=use_gpu,
                                               resources_per_worker=resources),
        run_config=ray.train.RunConfig(
            name=plan.run_name,
            storage_path=str(plan.storage),
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=cfg.train.checkpoints_to_keep,
                                                         checkpoint_score_attribute="val_score",
                                                         checkpoint_score_order="max"),
            failure_config=ray.train.FailureConfig(max_failures=r.max_failures),
            callbacks=[MLflowEpochLogger(uri, run_id), *(extra_callbacks or [])],
        ),
        datasets={"train": train_dataset(cfg, train_records), **validation_datasets(cfg, test_records)},
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),  # val_<rank>: see assign_videos
    )
    view = (TrainingProgressView(console, relay, cfg.train.epochs, total_windows(cfg, test_records)).start()
            if console is not None else None)
    start = time.perf_counter()
    try:
        result = trainer.fit()
    except Exception:
        finish_run(uri, run_id, [], status="FAILED")
        raise
    finally:
        if view is not None:
            view.stop()
    wall = time.perf_counter() - start
    device = f"cuda ({r.num_workers} GPU worker(s))" if use_gpu else "cpu"
    return finalize_run(plan, result, wall, uri, run_id, device)


def finalize_run(plan: RunPlan, result, wall_s: float, uri: str, run_id: str, device: str = "unknown"
                 ) -> dict[str, Any]:
    """Copy the final records out of the last checkpoint, write reports, close the MLflow run."""
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from adatad.engine.state import CHECKPOINT_FILE
    from pipelines.report import write_reports
    from pipelines.tracking import finish_run, log_epoch, log_trained_model, logged_epochs

    if result.checkpoint is None:
        raise RuntimeError(f"run {plan.run_name}: training reported no checkpoint")
    with result.checkpoint.as_directory() as directory:
        history = json.loads((Path(directory) / "history.json").read_text())
        size_mb = (Path(directory) / CHECKPOINT_FILE).stat().st_size / 2**20
    # Ray lists the kept checkpoints worst first: pick the highest val_score (the later on a tie).
    best = max(result.best_checkpoints, key=lambda cm: (cm[1].get("val_score", -1.0), cm[1].get("epoch", -1))) \
        if result.best_checkpoints else None
    final = history[-1]
    # Ray registers a checkpoint before the MLflow callback logs its epoch, so a driver killed in
    # between leaves that epoch unlogged (a resumed run only logs new epochs): fill such gaps now.
    client = MlflowClient(uri)
    logged = logged_epochs(client, run_id)
    for metrics in history:
        if int(metrics["epoch"]) not in logged:
            log_epoch(client, run_id, metrics)
    stats = {
        "run_name": plan.run_name,
        "storage": str(plan.storage),
        "checkpoint": result.checkpoint.path,
        "best_checkpoint": best[0].path if best else result.checkpoint.path,
        "checkpoint_size_mb": round(size_mb, 2),
        "wall_time_s": round(wall_s, 1),
        "num_workers": plan.cfg.runtime.num_workers,
        "device": device,
    }
    # The best checkpoint's EMA detector as an MLflow model of this run (the checkpoint on disk stays
    # the source of truth, so a failure here is a warning, not a failed run).
    if plan.cfg.tracking.log_model:
        try:
            with (best[0] if best else result.checkpoint).as_directory() as directory:
                stats["mlflow_model"] = log_trained_model(uri, run_id, directory)
        except (OSError, ValueError, MlflowException) as exc:
            print(f"warning: the MLflow model was not logged: {exc}", file=sys.stderr)
    run_dir = plan.run_dir
    atomic_write_text(run_dir / "history.json", json.dumps(history, indent=1))
    atomic_write_text(run_dir / "stats.json", json.dumps(stats, indent=1))
    reports = write_reports(history, plan.cfg.to_dict(), stats, run_dir)
    artifacts = [run_dir / CONFIG_FILE, run_dir / "history.json", run_dir / "stats.json", *reports.values()]
    finish_run(uri, run_id, artifacts)
    return {"final": final, "stats": stats, "reports": {k: str(v) for k, v in reports.items()},
            "run_dir": str(run_dir), "mlflow_run_id": run_id}


def decode_failure_of(exc: BaseException) -> Exception | None:
    """The DecodeFailureError behind a failed Ray Train run (too many videos failed to decode), if any."""
    from adatad.data.check import DecodeFailureError

    failures = getattr(exc, "worker_failures", None) or {}  # ray.train.WorkerGroupError: rank -> exception
    return next((e for e in failures.values() if isinstance(e, DecodeFailureError)), None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log: RunLog | None = None
    try:
        plan = plan_run(args)
        train, test, classes = load_splits(plan.cfg)
        if not args.skip_data_check:
            problems = check_videos(train + test)
            if problems:
                print(format_problems(problems, len(train) + len(test)), file=sys.stderr)
                return 2
        check_initial_weights(plan.cfg, plan.resumed)
        log = RunLog(plan.run_dir / LOG_FILE, verbose=args.verbose).attach()
        console = Console(log)
        cfg = plan.cfg
        note = subset_translation_note(cfg.resolve_path(cfg.data.annotation_file),
                                       [cfg.data.train_subset, cfg.data.test_subset])
        if note:
            console.say(f"note: {note}")
        console.say(f"config '{cfg.name}': {len(train)} training videos, {len(test)} test videos, "
                    f"{len(classes)} classes; epochs {cfg.train.epochs} (0-{cfg.train.epochs - 1}), "
                    f"batch {cfg.train.batch_size}")
        console.say(f"run folder: {plan.run_dir}" + (" (resumed)" if plan.resumed else "")
                    + f"; full log: {plan.run_dir / LOG_FILE}")
        from pipelines.cluster import ClusterError, connect_for_run

        try:
            connect_for_run(args.cluster, cfg.runtime, console.say)
        except ClusterError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        log.attach_ray()
        quiet_ray_data(args.verbose)
        console.say(f"if interrupted: python pipelines/train.py --resume --run-name {plan.run_name}"
                    + (f" --storage {plan.storage}" if args.storage else ""))
        summary = run_training(plan, console=console)
    except (ConfigError, AnnotationError, UsageError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        decode = decode_failure_of(exc)
        if decode is None:
            raise
        print(f"error: {decode}", file=sys.stderr)  # the worker's list of failing files, not its traceback
        return 2
    finally:
        if log is not None:
            log.close()
    for line in closing_lines(summary):
        console.say(line)
    return 0


def quiet_ray_data(verbose: bool) -> None:
    """Ray Data's per-operator progress bars (redrawn many times a second) only with --verbose."""
    import ray.data

    ray.data.DataContext.get_current().enable_progress_bars = verbose


def closing_lines(summary: dict[str, Any]) -> list[str]:
    """The end of a run: best mAP, reports, checkpoint, how to browse and to continue."""
    history = json.loads(Path(summary["run_dir"], "history.json").read_text())
    final, stats = summary["final"], summary["stats"]
    validated = [h for h in history if "average_mAP" in h]
    lines = [f"done: {len(history)} epochs in {format_duration(stats['wall_time_s'])}, final loss {final['loss']:.4f}"]
    if validated:
        best = max(validated, key=lambda h: h["average_mAP"])
        per_tiou = "  ".join(f"{k.removeprefix('mAP_')} {100 * v:.2f}" for k, v in best.items()
                             if k.startswith("mAP_"))
        lines.append(f"best average mAP {100 * best['average_mAP']:.2f} % at epoch {int(best['epoch'])} "
                     f"(tIoU {per_tiou})")
    lines.append(f"reports: {', '.join(summary['reports'].values())}")
    lines.append(f"best checkpoint: {stats['best_checkpoint']}"
                 + (f" (MLflow model {stats['mlflow_model']})" if stats.get("mlflow_model") else ""))
    return lines


if __name__ == "__main__":
    sys.exit(main())
