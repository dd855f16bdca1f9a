"""A test run's plan (`pipelines/test.py`): the weights read and checked, the config composed, the test
split loaded, the output folder named; and what the run writes there. Everything before Ray starts."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adatad.atomic import atomic_write_text
from adatad.config import Config, load_config
from adatad.data.annotations import VideoRecord
from adatad.data.splits import load_test_split
from adatad.locations import (
    LocationError,
    ObjectPath,
    as_path,
    check_readable_location,
    check_writable_location,
    is_uri,
)
from adatad.models.trained import TrainedModel, read_trained
from adatad.models.weights import WeightsError
from adatad.reports.markdown import table
from adatad.run_folder import EvalFolder, timestamped
from adatad.trained_settings import config_for_trained_file
from pipelines.cli.args import UsageError
from pipelines.cli.console import format_duration
from pipelines.runs.preflight import check_external_classifier


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
        if is_uri(checkpoint):  # one line in seconds for a wrong bucket, credentials or endpoint
            check_readable_location(checkpoint, "--checkpoint")
        trained = read_trained(checkpoint, base, use_ema=not no_ema)
    except LocationError as exc:
        raise UsageError(str(exc)) from None
    except WeightsError as exc:
        raise UsageError(f"--checkpoint: {exc}") from None
    own = trained.state["config"] if trained.kind == "adatad" else None
    cfg = config_for_trained_file(own, config, overrides, profile)
    check_external_classifier(cfg)
    records, class_names = load_test_split(cfg, list(trained.state.get("class_names") or []))
    folder = as_path(out or cfg.resolve_path(cfg.runtime.storage_path))
    folder = folder if out else folder / timestamped(f"test-{cfg.name}")
    if isinstance(folder, ObjectPath):  # written at the end: a wrong bucket or key fails now, in seconds
        try:
            check_writable_location(str(folder), "--out" if out else "runtime.storage_path")
        except LocationError as exc:
            raise UsageError(str(exc)) from None
    return EvalPlan(cfg, trained, records, class_names, EvalFolder(folder.resolve()),
                    config or "the checkpoint's config")


def summary_markdown(plan: EvalPlan, outcome: dict[str, Any]) -> str:
    m = outcome["metrics"]
    detections = sum(len(v) for v in outcome["predictions"]["results"].values())
    rows = [*((t, f"{100 * v:.2f}") for t, v in m["mAP"].items()), ("**average**", f"**{100 * m['average_mAP']:.2f}**")]
    return (f"# Test: {plan.cfg.name}\n\n"
            f"- checkpoint: `{plan.trained.path}` ({plan.trained.kind}, {plan.trained.weights} weights)\n"
            f"- data: `{plan.cfg.data.annotation_file}`, subset `{plan.cfg.data.test_subset}`: "
            f"{len(plan.records)} videos, {len(plan.class_names)} classes; config: {plan.config_source}\n"
            f"- {detections} detections; {format_duration(outcome['seconds'])} on {outcome['device']}\n\n"
            f"{table(('tIoU', 'mAP (%)'), rows)}\n")


def write_outputs(plan: EvalPlan, outcome: dict[str, Any]) -> list[Path]:
    folder = plan.out
    return [
        atomic_write_text(folder.predictions, json.dumps(outcome["predictions"]) + "\n"),
        atomic_write_text(folder.metrics, json.dumps(outcome["metrics"], indent=2) + "\n"),
        atomic_write_text(folder.summary, summary_markdown(plan, outcome)),
    ]
