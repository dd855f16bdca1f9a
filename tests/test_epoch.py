"""One epoch without Ray: `adatad.engine.epoch` trains and validates from plain lists of batches.

The batches come from the same `ClipLoader` the Ray Data actors run, stacked by hand: what a
notebook or a DataLoader baseline does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.data.batch import collate_examples
from adatad.data.clips import ClipLoader, record_to_row
from adatad.data.splits import load_splits
from adatad.engine.epoch import StepProgress, train_one_epoch, validate
from adatad.engine.state import build_training_state
from tests.conftest import tiny_config


def _batches(examples: list[dict], size: int) -> list[dict[str, torch.Tensor]]:
    out = []
    for i in range(0, len(examples), size):
        stacked = collate_examples(examples[i:i + size])
        stacked.pop("video_id", None)  # strings stay out of tensors
        out.append({k: torch.from_numpy(np.asarray(v)) for k, v in stacked.items()})
    return out


def test_train_and_validate_one_epoch_from_plain_lists(tiny_data: Path, tmp_path: Path, one_torch_thread) -> None:
    cfg = tiny_config(tiny_data, tmp_path / "runs", tmp_path / "mlflow.db",
                      extra=["evaluation.tiou_thresholds=[0.1, 0.5]"])
    train_records, test_records, class_names = load_splits(cfg)
    rng = np.random.default_rng(0)
    train_loader, test_loader = ClipLoader(cfg.data, train=True), ClipLoader(cfg.data, train=False)
    train = _batches([train_loader.load(record_to_row(r, i), rng) for i, r in enumerate(train_records)], 2)
    windows = [w for i, r in enumerate(test_records) for w in test_loader.iter_video_windows(record_to_row(r, i))]
    test = _batches(windows, 2)

    torch.manual_seed(0)
    state = build_training_state(cfg, steps_per_epoch=len(train), device=torch.device("cpu"))
    before = {k: v.clone() for k, v in state.model.state_dict().items()}
    steps: list[StepProgress] = []
    metrics = train_one_epoch(state, train, torch.device("cpu"), clip_grad_norm=1.0, amp=False,
                              on_step=steps.append)
    assert metrics["steps"] == len(train) == len([s.step for s in steps]) and steps[-1].step == len(train)
    assert metrics["loss"] > 0 and metrics["decode_failures"] == 0
    assert round(metrics["clips_per_s"] * metrics["epoch_time_s"]) == len(train_records)
    changed = [k for k, v in state.model.state_dict().items() if not torch.equal(v, before[k])]
    assert any("adapter" in k for k in changed) and any(k.startswith("head.") for k in changed)
    assert not any("blocks.0.attn.qkv" in k for k in changed)  # the ViT stays frozen

    seen: list[int] = []
    val, results = validate(state.eval_model, test, torch.device("cpu"), amp=False, inference=cfg.model.inference,
                            records=test_records, class_names=class_names,
                            tiou_thresholds=cfg.evaluation.tiou_thresholds, on_windows=seen.append)
    assert seen[0] == 0 and seen[-1] == len(windows)
    assert set(val) == {"mAP_0.1", "mAP_0.5", "average_mAP", "val_time_s"}
    assert val["average_mAP"] == pytest.approx((val["mAP_0.1"] + val["mAP_0.5"]) / 2)
    assert sorted(results["results"]) == sorted(r.video_id for r in test_records)
