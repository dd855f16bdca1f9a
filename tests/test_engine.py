"""Schedule and EMA against their direct formulas; the training step's AMP/clip plumbing on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from adatad.engine.ema import build_ema
from adatad.engine.schedule import build_scheduler, warmup_cosine_factor


def _lrs(steps_per_epoch: int, warmup: int, total: int, eta_min: float, base: float, n: int) -> list[float]:
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p], "lr": base}])
    sched = build_scheduler(opt, steps_per_epoch, warmup, total, eta_min)
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine_matches_formula() -> None:
    spe, warm, total, base, eta = 10, 5, 100, 2e-4, 1e-8
    lrs = _lrs(spe, warm, total, eta, base, 600)
    for it, lr in enumerate(lrs):
        if it < warm * spe:
            expected = base * it / (warm * spe)
        else:
            progress = (it - warm * spe) / ((total - warm) * spe)
            expected = eta + (base - eta) * 0.5 * (1 + math.cos(math.pi * progress))
        assert lr == pytest.approx(expected, rel=1e-9, abs=1e-15)
    # The official recipe stops at epoch 60 of a 100-epoch cosine: lr there is ~0.377 x base (spec §7).
    assert lrs[599] / base == pytest.approx(0.377, abs=0.01)


def test_schedule_is_per_group_and_resumes_identically() -> None:
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [a], "lr": 1e-4}, {"params": [b], "lr": 2e-4}])
    sched = build_scheduler(opt, 4, 1, 10, 1e-8)
    for _ in range(7):
        opt.step()
        sched.step()
    state = sched.state_dict(), opt.state_dict()
    lrs = [g["lr"] for g in opt.param_groups]
    assert lrs[1] == pytest.approx(2 * lrs[0], rel=1e-3)
    opt2 = torch.optim.AdamW([{"params": [a], "lr": 1e-4}, {"params": [b], "lr": 2e-4}])
    sched2 = build_scheduler(opt2, 4, 1, 10, 1e-8)
    opt2.load_state_dict(state[1])
    sched2.load_state_dict(state[0])
    for s, o in ((sched, opt), (sched2, opt2)):
        o.step()
        s.step()
    assert [g["lr"] for g in opt.param_groups] == [g["lr"] for g in opt2.param_groups]


def test_factor_edges() -> None:
    assert warmup_cosine_factor(0, 10, 100, 0.0) == 0.0
    assert warmup_cosine_factor(10, 10, 100, 0.0) == pytest.approx(1.0)
    assert warmup_cosine_factor(100, 10, 100, 0.1) == pytest.approx(0.1)
    assert warmup_cosine_factor(0, 0, 100, 0.0) == pytest.approx(1.0)


def test_ema_follows_formula_including_buffers() -> None:
    torch.manual_seed(0)
    model = torch.nn.BatchNorm1d(3)  # parameters and buffers
    ema = build_ema(model, decay=0.9)
    ema.update_parameters(model)  # first update copies
    expected = {k: v.clone().float() for k, v in model.state_dict().items() if v.is_floating_point()}
    for _ in range(3):
        with torch.no_grad():
            model.weight.add_(torch.randn(3))
            model.running_mean.add_(torch.randn(3))
        ema.update_parameters(model)
        for k, v in model.state_dict().items():
            if v.is_floating_point():
                expected[k] = 0.9 * expected[k] + 0.1 * v.float()
    got = ema.module.state_dict()
    for k, v in expected.items():
        torch.testing.assert_close(got[k].float(), v)
