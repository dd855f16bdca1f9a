"""Linear warmup + cosine annealing, stepped per iteration (docs/recipe.md §7)."""

from __future__ import annotations

import math

import torch


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, eta_min_ratio: float) -> float:
    """Multiplier of the base lr at iteration `step`.

    Warmup rises linearly from 0; the cosine then falls from 1 to `eta_min_ratio` at `total_steps`.
    The official recipe sizes the cosine for 100 epochs but stops at 60, so it never finishes.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    return eta_min_ratio + (1.0 - eta_min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    steps_per_epoch: int,
    warmup_epochs: int,
    schedule_epochs: int,
    eta_min: float,
) -> torch.optim.lr_scheduler.LambdaLR:
    """A LambdaLR (torch's own, so its state dict checkpoints and resumes) with one lambda per group."""
    warmup = warmup_epochs * steps_per_epoch
    total = schedule_epochs * steps_per_epoch
    lambdas = []
    for group in optimizer.param_groups:
        base = group.get("initial_lr", group["lr"])
        ratio = eta_min / base if base > 0 else 0.0
        lambdas.append(lambda s, r=ratio: warmup_cosine_factor(s, warmup, total, r))
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
