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
