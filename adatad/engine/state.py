"""Everything a training run carries between steps, built from a config and saved in one file.

Model, EMA, optimizer, GradScaler and scheduler live together so a checkpoint restores the exact
schedule state (resume continues the same lr curve, the same EMA, the same loss scale).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.optim.swa_utils import AveragedModel

from adatad.atomic import atomic_open
from adatad.config import Config
from adatad.engine.ema import build_ema, frozen_parameter_names, unwrap
from adatad.engine.param_groups import build_param_groups
from adatad.engine.schedule import build_scheduler
from adatad.engine.step import build_scaler
from adatad.models.build import build_model
from adatad.models.checkpoint_ema import EMA_FROM_MODEL, complete_ema, leave_out_shared
from adatad.models.trained import is_project_checkpoint, read_trained
from adatad.models.weights import MISSING, WeightsError, load_weights, read_torch_file
from adatad.run_folder import CHECKPOINT_FILE


@dataclass
class TrainingState:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    scaler: torch.amp.GradScaler
    ema: AveragedModel | None
    epoch: int = -1  # last completed epoch
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def eval_model(self) -> torch.nn.Module:
        """The weights validation uses: the EMA when enabled (docs/recipe.md section 7)."""
        return unwrap(self.ema) if self.ema is not None else unwrap(self.model)

    def state_dict(self, cfg: Config, class_names: list[str] | None = None) -> dict[str, Any]:
        """What a checkpoint holds; the EMA without the frozen entries, which 'model' holds already
        (`adatad.models.checkpoint_ema`; readers get the whole EMA back from `complete_ema`)."""
        model = unwrap(self.model).state_dict()
        ema, shared = None, []
        if self.ema is not None:
            ema, shared = leave_out_shared(self.ema.state_dict(), model, frozen_parameter_names(self.model))
        return {
            "class_names": list(class_names or []),
            "model": model,
            "ema": ema,
            EMA_FROM_MODEL: shared,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "history": self.history,
            "config": cfg.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(state["model"])
        ema = complete_ema(state, "checkpoint")  # old checkpoints hold the whole EMA; new ones share
        if self.ema is not None and ema is not None:
            self.ema.load_state_dict(ema)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.history = list(state["history"])


def build_training_state(cfg: Config, steps_per_epoch: int, device: torch.device,
                         load_init_from: bool = True) -> TrainingState:
    """A fresh run's state; with `model.init_from` the model starts from that file's (EMA) weights.

    The weights are loaded before the EMA is created, so the EMA starts from them too. A resumed
    run loads its own checkpoint over all of this afterwards (`TrainingState.load_state_dict`);
    it may pass load_init_from=False, so the init file is neither read again nor needed any more.
    """
    t = cfg.train
    init_from = cfg.model.init_from if load_init_from else None
    model = build_model(_without_backbone_file(cfg) if cfg.model.init_from else cfg)
    if init_from:
        load_init_weights(model, cfg)
    model = model.to(device)
    groups = build_param_groups(model, base_lr=t.lr, adapter_lr=t.adapter_lr, weight_decay=t.weight_decay)
    optimizer = torch.optim.AdamW(groups, lr=t.lr)
    scheduler = build_scheduler(optimizer, steps_per_epoch, t.warmup_epochs, t.schedule_epochs, t.eta_min)
    scaler = build_scaler(device, t.amp)
    ema = build_ema(model, t.ema_decay) if t.ema else None
    return TrainingState(model=model, optimizer=optimizer, scheduler=scheduler, scaler=scaler, ema=ema)


def load_init_weights(model: torch.nn.Module, cfg: Config) -> None:
    """Load `model.init_from` (this project's checkpoint or an OpenTAD file) into `model` built from `cfg`.

    One-line errors name the key and the file; the architecture of `cfg` must fit the file exactly.
    """
    path = cfg.resolve_path(cfg.model.init_from)
    try:
        trained = read_trained(path, cfg, use_ema=True)
        load_weights(model, trained.state["model"], f"{trained.path} ({trained.kind} {trained.weights} weights)")
    except WeightsError as exc:
        raise WeightsError(f"model.init_from: {exc}") from None


def _without_backbone_file(cfg: Config) -> Config:
    """`cfg` without the VideoMAE file: init_from holds the ViT weights, so reading it would be wasted."""
    backbone = dataclasses.replace(cfg.model.backbone, checkpoint=None, allow_random_init=True)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, backbone=backbone))


def save_checkpoint(state: TrainingState, cfg: Config, directory: str | os.PathLike,
                    class_names: list[str] | None = None) -> Path:
    """Everything to resume or deploy: weights, EMA, optimiser/schedule/scaler, config, class names."""
    path = Path(directory) / CHECKPOINT_FILE
    with atomic_open(path, "wb") as fh:
        torch.save(state.state_dict(cfg, class_names), fh)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a training checkpoint file (or a directory holding one) safely (`read_torch_file`).

    Everything it holds is returned as saved (to resume: optimizer, scheduler, EMA), except that the
    EMA comes back whole: the frozen entries the file stores once, under 'model', are put back in it
    (`complete_ema`; the same tensors, no copy). A file that is not this project's checkpoint, or
    cannot be read, is a one-line WeightsError.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    try:
        state = read_torch_file(path)
    except WeightsError as exc:
        if exc.reason == MISSING:
            raise WeightsError(f"checkpoint {path} does not exist", MISSING) from None
        raise WeightsError(f"{path}: not an adatad training checkpoint ({exc.reason})") from None
    if not is_project_checkpoint(state):
        raise WeightsError(f"{path}: not an adatad training checkpoint (expected keys 'model' and 'config')")
    if EMA_FROM_MODEL in state:
        state["ema"] = complete_ema(state, str(path))
        del state[EMA_FROM_MODEL]
    return state
