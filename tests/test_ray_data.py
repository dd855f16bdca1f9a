"""The Ray Data pipeline on a local Ray: shapes, segment targets, per-epoch randomness, test windows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adatad.data.annotations import load_annotations, load_class_names
from adatad.data.clips import window_rows
from tests.conftest import tiny_config


def _setup(tiny_data: Path, tmp_path: Path):
    cfg = tiny_config(tiny_data, tmp_path / "runs", tmp_path / "mlflow.db")
    ann = cfg.resolve_path(cfg.data.annotation_file)
    names = load_class_names(ann)
    train, _ = load_annotations(ann, cfg.resolve_path(cfg.data.video_dir), "training", names)
    test, _ = load_annotations(ann, cfg.resolve_path(cfg.data.video_dir), "validation", names)
    return cfg, train, test


def test_train_batches_have_fixed_shapes_targets_and_fresh_randomness(ray_session, tiny_data: Path,
                                                                        tmp_path: Path) -> None:
    from pipelines.ray_layer.datasets import train_dataset

    cfg, train, _ = _setup(tiny_data, tmp_path)
    ds = train_dataset(cfg, train)
    epochs = []
    for _ in range(2):
        batches = list(ds.iter_torch_batches(batch_size=2, prefetch_batches=1, device="cpu"))
        epochs.append(batches)
        assert sum(len(b["frames"]) for b in batches) == len(train)
        for b in batches:
            n, t = len(b["frames"]), cfg.data.window_size
            assert tuple(b["frames"].shape) == (n, t, cfg.data.crop_size, cfg.data.crop_size, 3)
            assert str(b["frames"].dtype) == "torch.uint8"
            assert tuple(b["masks"].shape) == (n, t) and b["valid"].all()
            for i in range(n):
                k = int(b["num_segments"][i])
                assert k >= 1  # random truncation keeps at least one action
                seg, lab = b["segments"][i].numpy(), b["labels"][i].numpy()
                assert (lab[:k] >= 0).all() and (lab[:k] < cfg.model.head.num_classes).all()
                assert (lab[k:] == -1).all() and (seg[k:] == 0).all()
                assert (seg[:k, 0] < seg[:k, 1]).all() and (seg[:k] >= 0).all() and (seg[:k] <= t).all()
    # Each epoch re-executes with fresh actors: new windows/augmentations, not a replay.
    first = np.concatenate([b["frames"].numpy().reshape(-1) for b in epochs[0]])
    second = np.concatenate([b["frames"].numpy().reshape(-1) for b in epochs[1]])
    assert first.shape == second.shape and not np.array_equal(first, second)


def test_test_windows_come_through_in_full_with_their_offsets(ray_session, tiny_data: Path, tmp_path: Path) -> None:
    from pipelines.ray_layer.datasets import test_dataset

    cfg, _, test = _setup(tiny_data, tmp_path)
    expected = {(r["video_index"], r["window_start_frame"]) for r in window_rows(test, cfg.data)}
    got = set()
    for b in test_dataset(cfg, test).iter_torch_batches(batch_size=2, prefetch_batches=1, device="cpu"):
        assert str(b["frames"].dtype) == "torch.uint8" and b["valid"].all()
        got |= {(int(v), int(s)) for v, s in zip(b["video_index"], b["window_start_frame"], strict=True)}
    assert got == expected and len(expected) >= len(test)
