"""The end of a run on the console: its outcome in a few lines, or the files that stopped it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from adatad.run_folder import RunFolder
from pipelines.cli.console import format_duration


def decode_failure_of(exc: BaseException) -> Exception | None:
    """The DecodeFailureError behind a failed Ray Train run (too many videos failed to decode), if any."""
    from adatad.data.check import DecodeFailureError

    failures = getattr(exc, "worker_failures", None) or {}  # ray.train.WorkerGroupError: rank -> exception
    return next((e for e in failures.values() if isinstance(e, DecodeFailureError)), None)


def closing_lines(summary: dict[str, Any]) -> list[str]:
    """The end of a run: best mAP, reports, checkpoint."""
    history = json.loads(RunFolder(summary["run_dir"]).history.read_text())
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
