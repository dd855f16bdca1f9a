"""Evaluate trained weights on a config's test subset: training's validation, once, on Ray Train.

What `pipelines/test.py` runs (OpenTAD's `tools/test.py`): the test videos decoded once each on
Ray Data actors, their sliding windows through the model on Ray Train workers, windows merged per
video with the same soft-NMS, mAP at the config's tIoU thresholds.
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from adatad.atomic import atomic_write_text
from adatad.config import Config, load_config
from adatad.data.annotations import VideoRecord
from adatad.data.clips import count_windows
from adatad.data.splits import load_test_split
from adatad.engine.validation import metrics_of
from adatad.models.trained import TrainedModel, read_trained
from adatad.models.weights import WeightsError
from adatad.run_folder import PREDICTIONS_FILE, EvalFolder
from adatad.trained_settings import config_for_trained_file
from pipelines.ray_layer.cli import UsageError
from pipelines.ray_layer.console import Console, format_duration
from pipelines.ray_layer.training import check_external_classifier


@dataclass
class EvalPlan:
    """Everything checked before Ray starts."""

    cfg: Config
    trained: TrainedModel
    records: list[VideoRecord]
    class_names: list[str]
    out: EvalFolder
    config_source: str


def plan_evaluation(checkpoint: str, config: str | None, overrides: list[str], profile: str | None,
                    no_ema: bool, out: str | None) -> EvalPlan:
    """Read and check the weights, compose the config (`adatad.trained_settings`), load the test split."""
    base = load_config(config, overrides, profile) if config else None  # an OpenTAD file's architecture
    try:
        trained = read_trained(checkpoint, base, use_ema=not no_ema)
    except WeightsError as exc:
        raise UsageError(f"--checkpoint: {exc}") from None
    own = trained.state["config"] if trained.kind == "adatad" else None
    cfg = config_for_trained_file(own, config, overrides, profile)
    check_external_classifier(cfg)
    records, class_names = load_test_split(cfg)
    stored = list(trained.state.get("class_names") or [])
    if stored and stored != class_names:
        raise UsageError(f"--checkpoint {trained.path}: trained on classes {stored[:4]}... but the test data "
                         f"has {class_names[:4]}... ({len(class_names)}); the class maps differ")
    folder = Path(out) if out else Path(cfg.resolve_path(cfg.runtime.storage_path)) / \
        f"test-{cfg.name}-{datetime.now():%Y%m%d-%H%M%S}"
    return EvalPlan(cfg, trained, records, class_names, EvalFolder(folder.resolve()),
                    config or "the checkpoint's config")


def run_evaluation(plan: EvalPlan, console: Console | None = None) -> dict[str, Any]:
    """Training's validation on Ray Train (Ray must be connected); returns predictions and metrics."""
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from adatad.data.clips import record_to_row
    from pipelines.ray_layer.datasets import validation_datasets
    from pipelines.ray_layer.progress_relay import ProgressRelay, TrainingProgressView
    from pipelines.ray_layer.worker import evaluate_loop_per_worker

    cfg, r = plan.cfg, plan.cfg.runtime
    use_gpu = bool(r.use_gpu and ray.cluster_resources().get("GPU", 0) >= 1)
    resources = {"CPU": r.cpus_per_worker, **({"GPU": 1} if use_gpu else {}), **r.worker_resources}
    relay = ProgressRelay.remote() if console is not None else None
    with tempfile.TemporaryDirectory(prefix=".ray-", dir=plan.out.path) as storage:
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
        view = None
        if console is not None:
            windows = sum(count_windows(rec, cfg.data) for rec in plan.records)
            view = TrainingProgressView(console, relay, 0, windows).start()
        start = time.perf_counter()
        try:
            result = trainer.fit()
        finally:
            if view is not None:
                view.stop()
        seconds = time.perf_counter() - start
        with result.checkpoint.as_directory() as directory:
            predictions = json.loads((Path(directory) / PREDICTIONS_FILE).read_text())
    metrics = metrics_of(predictions, plan.records, plan.class_names, cfg.evaluation.tiou_thresholds)
    return {"predictions": predictions, "metrics": metrics, "seconds": seconds,
            "device": f"cuda x {r.num_workers}" if use_gpu else f"cpu x {r.num_workers}"}


def summary_markdown(plan: EvalPlan, outcome: dict[str, Any]) -> str:
    m = outcome["metrics"]
    detections = sum(len(v) for v in outcome["predictions"]["results"].values())
    rows = "\n".join(f"| {t} | {100 * v:.2f} |" for t, v in m["mAP"].items())
    return (f"# Test: {plan.cfg.name}\n\n"
            f"- checkpoint: `{plan.trained.path}` ({plan.trained.kind}, {plan.trained.weights} weights)\n"
            f"- data: `{plan.cfg.data.annotation_file}`, subset `{plan.cfg.data.test_subset}`: "
            f"{len(plan.records)} videos, {len(plan.class_names)} classes; config: {plan.config_source}\n"
            f"- {detections} detections; {format_duration(outcome['seconds'])} on {outcome['device']}\n\n"
            f"| tIoU | mAP (%) |\n|---|---|\n{rows}\n| **average** | **{100 * m['average_mAP']:.2f}** |\n")


def write_outputs(plan: EvalPlan, outcome: dict[str, Any]) -> list[Path]:
    folder = plan.out
    return [
        atomic_write_text(folder.predictions, json.dumps(outcome["predictions"]) + "\n"),
        atomic_write_text(folder.metrics, json.dumps(outcome["metrics"], indent=2) + "\n"),
        atomic_write_text(folder.summary, summary_markdown(plan, outcome)),
    ]
