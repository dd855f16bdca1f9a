"""One optimisation step: autocast forward, scaled backward, unscale + clip, step, schedule, EMA."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.optim.swa_utils import AveragedModel

from adatad.engine.ema import unwrap


@dataclass
class StepResult:
    loss: float
    cls_loss: float
    reg_loss: float
    grad_norm: float
    skipped: bool  # GradScaler skipped the step (inf/nan gradients)


def autocast(device: torch.device, enabled: bool) -> torch.autocast:
    """fp16 autocast on CUDA; a disabled context elsewhere (CPU fp16 autocast is slow and lossy)."""
    use = enabled and device.type == "cuda"
    return torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use)


def build_scaler(device: torch.device, enabled: bool) -> torch.amp.GradScaler:
    return torch.amp.GradScaler(device.type, enabled=enabled and device.type == "cuda")


def train_step(
    model: torch.nn.Module,
    batch: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    ema: AveragedModel | None,
    clip_grad_norm: float,
    device: torch.device,
    amp: bool,
    loss_weight: float = 1.0,
) -> StepResult:
    """Run one step on `batch` (tensors already on `device`).

    `loss_weight` 0 makes a step that changes nothing through this process's gradient: a DDP
    process whose whole batch failed to decode still has to take part in the step (see
    `adatad.engine.epoch.train_one_epoch`)."""
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with autocast(device, amp):
        losses = model(
            batch["frames"], batch["masks"], batch["segments"], batch["labels"], batch["num_segments"]
        )
    loss = losses["loss"]
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss is {loss.item()} (cls {losses['cls_loss'].item()}, "
                                 f"reg {losses['reg_loss'].item()}); check the data and the learning rate")
    scaler.scale(loss * loss_weight).backward()
    scaler.unscale_(optimizer)
    params = [p for g in optimizer.param_groups for p in g["params"]]
    grad_norm = torch.nn.utils.clip_grad_norm_(params, clip_grad_norm) if clip_grad_norm > 0 else torch.zeros(())
    scale_before = scaler.get_scale() if scaler.is_enabled() else 1.0
    scaler.step(optimizer)
    scaler.update()
    skipped = scaler.is_enabled() and scaler.get_scale() < scale_before
    scheduler.step()
    if ema is not None:
        ema.update_parameters(unwrap(model))
    return StepResult(
        loss=float(loss.detach()),
        cls_loss=float(losses["cls_loss"].detach()),
        reg_loss=float(losses["reg_loss"].detach()),
        grad_norm=float(grad_norm),
        skipped=bool(skipped),
    )
