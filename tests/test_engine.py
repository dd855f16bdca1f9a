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
    # The official recipe stops at epoch 60 of a 100-epoch cosine: lr there is ~0.377 x base (docs/recipe.md section 7).
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_torch_ema_of_an_unchanged_weight_is_that_weight_exactly(dtype) -> None:
    """The fact the shared EMA rests on (adatad/engine/ema.py): torch's EMA rule, lerp(ema, w, 1 - decay),
    never moves an entry whose weight stays put, at any magnitude (subnormal to near overflow)."""
    from torch.optim.swa_utils import get_ema_multi_avg_fn

    update = get_ema_multi_avg_fn(0.999)
    g = torch.Generator().manual_seed(0)
    info = torch.finfo(dtype)
    scales = torch.logspace(math.log10(info.tiny) - 2, math.log10(info.max) - 1, 4096, dtype=torch.float64)
    frozen = (torch.randn(4096, generator=g, dtype=torch.float64) * scales).to(dtype)
    frozen = frozen[torch.isfinite(frozen)]
    assert (frozen != 0).sum() > 3000 and frozen.abs().min() < info.tiny  # subnormals included
    trained = torch.randn(64, generator=g).to(dtype)
    ema_frozen, ema_trained = frozen.clone(), trained.clone()  # the first update is a copy
    for step in range(300):
        trained = trained + 0.01  # a weight the optimiser moves
        update([ema_frozen, ema_trained], [frozen, trained], torch.tensor(step + 1))
    assert torch.equal(ema_frozen, frozen)
    assert not torch.equal(ema_trained, trained)  # the rule does move what changes


# ---------------------------------------------------------------- trained model files and init_from


def _tiny_cfg(extra: list[str] | None = None):
    from adatad.config import CONFIG_DIR, load_config

    return load_config(CONFIG_DIR / "synthetic.yaml", ["train.ema_decay=0.5"] + (extra or []))


def _saved_run(tmp_path) -> tuple:
    """A run folder with two Ray-style checkpoint folders; the later one has EMA != model."""
    from adatad.engine.state import build_training_state, save_checkpoint

    cfg = _tiny_cfg()
    torch.manual_seed(0)
    state = build_training_state(cfg, steps_per_epoch=1, device=torch.device("cpu"))
    run = tmp_path / "run"
    save_checkpoint(state, cfg, run / "checkpoint_2026-01-01_10-00-00.000000", class_names=["a", "b", "c", "d"])
    with torch.no_grad():
        state.model.head.heads.scales[2].scale.fill_(3.0)
        state.ema.update_parameters(state.model)  # first update: a copy
        state.model.head.heads.scales[2].scale.fill_(5.0)
    save_checkpoint(state, cfg, run / "checkpoint_2026-01-01_11-00-00.000000", class_names=["a", "b", "c", "d"])
    return cfg, run


def test_read_trained_takes_the_latest_checkpoint_of_a_run_and_its_ema(tmp_path, one_torch_thread) -> None:
    from adatad.engine.state import read_checkpoint
    from adatad.models.build import model_from_checkpoint
    from adatad.models.trained import read_trained
    from adatad.models.weights import WeightsError
    from adatad.run_folder import CHECKPOINT_FILE

    cfg, run = _saved_run(tmp_path)
    latest = run / "checkpoint_2026-01-01_11-00-00.000000" / CHECKPOINT_FILE
    for given in (run, latest.parent, latest):
        trained = read_trained(given)
        assert (trained.path, trained.kind, trained.weights) == (latest, "adatad", "ema")
        assert trained.state["model"]["head.heads.scales.2.scale"].item() == 3.0
    plain = read_trained(run, use_ema=False)
    assert plain.weights == "model" and plain.state["model"]["head.heads.scales.2.scale"].item() == 5.0
    assert trained.state["class_names"] == ["a", "b", "c", "d"] and trained.state["ema"] is None
    assert trained.state["config"] == read_checkpoint(latest)["config"] == cfg.to_dict()
    model, _ = model_from_checkpoint(trained.state)
    assert model.head.heads.scales[2].scale.item() == 3.0
    first = read_trained(run / "checkpoint_2026-01-01_10-00-00.000000")
    assert first.state["model"]["head.heads.scales.2.scale"].item() == 1.0
    raw = read_checkpoint(latest)  # the EMA as saved (module.<key> + n_averaged): unwrapped by the builder
    assert model_from_checkpoint(raw)[0].head.heads.scales[2].scale.item() == 3.0
    assert model_from_checkpoint(raw, use_ema=False)[0].head.heads.scales[2].scale.item() == 5.0
    short = dict(trained.state, model={k: v for k, v in trained.state["model"].items() if "scales.2" not in k})
    with pytest.raises(WeightsError, match=r"^checkpoint: does not fit the model it describes: "
                                           r"1 missing \[head\.heads\.scales\.2\.scale\]$"):
        model_from_checkpoint(short)


def test_init_from_a_project_checkpoint_and_a_misfit_is_one_line(tmp_path, one_torch_thread) -> None:
    from adatad.engine.state import build_training_state
    from adatad.models.weights import WeightsError

    _, run = _saved_run(tmp_path)
    cfg = _tiny_cfg([f"model.init_from={run}", "model.backbone.allow_random_init=false"])
    torch.manual_seed(1)  # another random init: only the file can make the weights equal
    state = build_training_state(cfg, steps_per_epoch=1, device=torch.device("cpu"))
    for module in (state.model, state.ema.module):
        assert module.head.heads.scales[2].scale.item() == 3.0  # the file's EMA weights
    torch.manual_seed(0)
    reference = build_training_state(_tiny_cfg(), steps_per_epoch=1, device=torch.device("cpu")).model
    for (name, a), (_, b) in zip(state.model.state_dict().items(), reference.state_dict().items(), strict=True):
        if name != "head.heads.scales.2.scale":
            assert torch.equal(a, b), name

    gone = _tiny_cfg([f"model.init_from={tmp_path / 'moved.pth'}", "model.backbone.allow_random_init=false"])
    with pytest.raises(WeightsError, match="model.init_from: .*moved.pth: trained model file does not exist"):
        build_training_state(gone, steps_per_epoch=1, device=torch.device("cpu"))
    build_training_state(gone, steps_per_epoch=1, device=torch.device("cpu"), load_init_from=False)  # resuming

    wider = _tiny_cfg([f"model.init_from={run}", "model.head.num_classes=5"])
    with pytest.raises(WeightsError) as info:
        build_training_state(wider, steps_per_epoch=1, device=torch.device("cpu"))
    message = str(info.value)
    assert "\n" not in message and message.startswith("model.init_from: ")
    assert "does not fit this model: 2 of another shape [head.heads.cls_head.weight: file [4, 64, 3] vs model " \
           "[5, 64, 3], head.heads.cls_head.bias: file [4] vs model [5]]" in message, message
