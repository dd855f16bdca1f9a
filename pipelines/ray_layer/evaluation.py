"""`pipelines/test.py` on Ray Train: training's validation, once, with given weights.

The test videos are decoded once each on Ray Data actors, their sliding windows go through the model
on Ray Train workers (the one trainer set-up, `trainer.py`), windows are merged per video with the
same soft-NMS and scored at the config's tIoU thresholds. The plan is `pipelines/runs/evaluation_plan.py`.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from adatad.data.clips import count_windows
from adatad.engine.validation import metrics_of
from adatad.run_folder import PREDICTIONS_FILE
from pipelines.cli.console import Console
from pipelines.runs.evaluation_plan import EvalPlan


def run_evaluation(plan: EvalPlan, console: Console | None = None) -> dict[str, Any]:
    """Training's validation on Ray Train (Ray must be connected); returns predictions and metrics."""
    import ray

    from adatad.data.clips import record_to_row
    from pipelines.ray_layer.cluster import on_driver_node
    from pipelines.ray_layer.datasets import validation_datasets
    from pipelines.ray_layer.progress_relay import ProgressRelay, TrainingProgressView
    from pipelines.ray_layer.trainer import build_trainer
    from pipelines.ray_layer.worker import evaluate_loop_per_worker

    cfg, r = plan.cfg, plan.cfg.runtime
    relay = ProgressRelay.options(**on_driver_node()).remote() if console is not None else None
    local_out = plan.out.path if isinstance(plan.out.path, Path) else None  # Ray's scratch: never a URI
    with tempfile.TemporaryDirectory(prefix=".ray-", dir=local_out) as storage:
        trainer, use_gpu = build_trainer(
            evaluate_loop_per_worker,
            {
                "config": cfg.to_dict(),
                "test_rows": [record_to_row(rec, i) for i, rec in enumerate(plan.records)],
                "class_names": plan.class_names,
                "weights": ray.put(plan.trained.state),
                "progress": relay,
            },
            cfg, name="test", storage=storage, datasets=validation_datasets(cfg, plan.records))
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


