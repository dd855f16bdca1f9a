"""Checks a command runs before Ray starts, so a wrong file fails in a second with one line: the
initial weights, the external video classifier, the frame store (`pipelines/cli/frame_store_check.py`)."""

from __future__ import annotations

from collections.abc import Sequence

from adatad.config import Config
from pipelines.cli.args import DEFAULT_CONFIG, UsageError
from pipelines.cli.hints import missing_backbone


def check_initial_weights(cfg: Config, resumed: bool = False, config: str | None = None,
                          overrides: Sequence[str] = ()) -> None:
    """Load the configured VideoMAE file (or `model.init_from`) here, before Ray starts (one-line error).

    Training builds the model inside a Ray worker, where a wrong path or architecture would only
    surface after the cluster, datasets and workers are up. Reading the file once on the driver
    costs a few seconds and runs the exact loading code the workers run. A resumed run starts from
    its own checkpoint and needs neither file. A VideoMAE file that is not there yet gets the
    command that fetches it (`config` / `overrides`: the command line's, for that command).
    """
    from adatad.models.build import build_model
    from adatad.models.trained import read_trained
    from adatad.models.weights import WeightsError

    if resumed:
        return
    if cfg.model.init_from:
        try:
            read_trained(cfg.resolve_path(cfg.model.init_from), cfg)
        except WeightsError as exc:
            raise UsageError(f"model.init_from: {exc}") from None
    elif cfg.model.backbone.checkpoint:
        missing = missing_backbone(cfg, config or DEFAULT_CONFIG, overrides)
        if missing:
            raise UsageError(f"model.backbone.checkpoint: {missing}")
        try:
            build_model(cfg)
        except WeightsError as exc:
            raise UsageError(f"model.backbone.checkpoint: {exc}") from None


def check_external_classifier(cfg: Config) -> None:
    """Read the video classifier file (`model.inference.external_classifier`) here, before Ray starts:
    validation would otherwise meet a missing or malformed file only at the first validated epoch."""
    from adatad.video_classifier import VideoClassifierError, load_video_classifier

    i = cfg.model.inference
    if i.external_classifier:
        try:
            load_video_classifier(i.external_classifier, i.external_classifier_type)
        except VideoClassifierError as exc:
            raise UsageError(f"model.inference.external_classifier: {exc}") from None


def config_locations(cfg: Config) -> dict[str, str]:
    """The config's locations a run reads, by key (only those set)."""
    d, m = cfg.data, cfg.model
    found = {"data.annotation_file": d.annotation_file, "data.class_map_file": d.class_map_file,
             "data.video_dir": d.video_dir, "data.frame_store": d.frame_store, "data.block_list": d.block_list,
             "model.backbone.checkpoint": m.backbone.checkpoint, "model.init_from": m.init_from}
    return {key: value for key, value in found.items() if value}


def check_locations(cfg: Config, skip: tuple[str, ...] = ()) -> None:
    """Every location of the config that is a URI: there and readable with these credentials from this
    machine, checked here in seconds (one line naming the key and URI) rather than after retries deep in
    a run. Also sets how long this process rides out an outage of the store (`runtime.storage_retry_s`)."""
    from adatad.locations import LocationError, check_readable_location, is_uri
    from adatad.retry import set_window

    set_window(cfg.runtime.storage_retry_s)
    for key, value in config_locations(cfg).items():
        if key not in skip and is_uri(value):
            try:
                check_readable_location(value, key)
            except LocationError as exc:
                raise UsageError(str(exc)) from None


def check_artifact_store(cfg: Config, storage: object) -> None:
    """Runs stored at a URI keep their MLflow artifacts on the same object store: the config's experiment
    must not exist with its artifacts elsewhere (one line with the fix)."""
    from adatad.locations import is_uri

    if not is_uri(str(storage)):
        return
    from pipelines.tracking.runs import artifacts_problem, tracking_uri

    problem = artifacts_problem(tracking_uri(cfg), cfg.tracking.experiment_name, str(storage))
    if problem:
        raise UsageError(problem)
