"""Two frames per position end to end on CPU (OpenTAD's scale_factor 2, the VideoMAEv2-g 768x2 rows,
shrunk): config -> windows -> examples -> AdaTAD loss and predictions -> seconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from adatad.config import ConfigError, load_config
from adatad.data.annotations import VideoRecord
from adatad.data.batch import clip_to_example, collate_examples
from adatad.data.clips import ClipLoader, count_windows, plan_test_windows, record_to_row, window_rows
from adatad.models.build import build_model
from adatad.postprocess import window_to_seconds

SYNTHETIC = Path(__file__).resolve().parents[1] / "configs" / "synthetic.yaml"
TINY = ["data.window_size=32", "data.crop_size=32", "data.train_resize_short=32", "data.test_resize_short=32",
        "data.max_segments=4", "model.backbone.embed_dim=32", "model.backbone.depth=1",
        "model.head.embed_dim=32", "model.head.feat_channels=32"]


def tiny_config(frames_per_position: int = 2):
    return load_config(SYNTHETIC, [*TINY, f"data.frames_per_position={frames_per_position}"])


# 230 frames at stride 4 = 58 positions; 115 frames 2 apart, so the window over positions 26-57
# reads 63 real frames and masks its last position.
RECORD = VideoRecord("v", "/nowhere/v.mp4", "validation", 230 / 30.0, 230, 30.0,
                     np.array([[0.5, 2.0], [4.0, 7.0]]), np.array([1, 3]))


def examples(plans, max_segments: int) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(0)
    batch = collate_examples([clip_to_example(p, rng.integers(0, 256, (len(p.frame_indices), 32, 32, 3),
                                                                 dtype=np.uint8), max_segments) for p in plans])
    batch.pop("video_id")
    return {k: torch.from_numpy(v) for k, v in batch.items()}


def test_two_frames_per_position_train_and_predict_on_cpu():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    assert model.encoder.frames_per_position == 2

    train_loader = ClipLoader(cfg.data, train=True)
    rng = np.random.default_rng(1)
    plans = [train_loader.plan(record_to_row(RECORD, 0), rng) for _ in range(2)]
    assert all(p.frame_indices.shape == (64,) and p.mask.shape == (32,) for p in plans)
    batch = examples(plans, cfg.data.max_segments)
    model.train()
    losses = model(batch["frames"], batch["masks"], batch["segments"], batch["labels"], batch["num_segments"])
    assert torch.isfinite(losses["loss"])
    losses["loss"].backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "adapter" in n)

    rows = window_rows([RECORD], cfg.data)
    test_loader = ClipLoader(cfg.data, train=False)
    test_plans = [test_loader.plan(r, rng) for r in rows]
    assert len(test_plans) == count_windows(RECORD, cfg.data) == 3
    assert [int(p.mask.sum()) for p in test_plans] == [32, 32, 31]
    batch = examples(test_plans, cfg.data.max_segments)
    assert batch["frames"].shape == (3, 64, 32, 32, 3) and batch["masks"].shape == (3, 32)
    assert batch["frame_stride"].tolist() == [4, 4, 4]  # positions -> frames: the snippet stride
    model.eval()
    dets = model.predict(batch["frames"], batch["masks"], pre_nms_thresh=0.0, pre_nms_topk=10_000)
    assert len(dets[2]) < len(dets[1]) == len(dets[0])  # the masked position gives no candidates
    for i, d in enumerate(dets):
        start = int(batch["window_start_frame"][i])
        secs = window_to_seconds(d, start, int(batch["frame_stride"][i]), 30.0, RECORD.duration, clip=True)
        expected = ((d.segments.double() * 4 + start) / 30.0).clamp(0, RECORD.duration).float()
        torch.testing.assert_close(secs.segments, expected)
    assert [int(s) for s in batch["window_start_frame"]] == [0, 64, 104]


def test_masks_of_the_wrong_length_are_refused():
    cfg = tiny_config()
    model = build_model(cfg).eval()
    batch = examples(plan_test_windows(RECORD, cfg.data)[:1], cfg.data.max_segments)
    with pytest.raises(ValueError, match=r"positions=32 = 64 frames / 2 per position"):
        model.predict(batch["frames"], batch["masks"][:, :16])


def test_config_rejects_frames_per_position_that_does_not_divide_the_stride():
    with pytest.raises(ConfigError, match=r"data.frames_per_position: 3 is invalid, expected >= 1 and dividing "
                                          r"data.frame_stride \(4\)"):
        tiny_config(3)
    with pytest.raises(ConfigError, match="data.frames_per_position: 0 is invalid"):
        tiny_config(0)
    with pytest.raises(ConfigError, match=r"data.window_size: 4 is invalid, expected a positive multiple of 8, so"):
        load_config(SYNTHETIC, [*TINY, "data.frames_per_position=2", "data.window_size=4"])
    assert tiny_config(4).data.frames_per_position == 4 and tiny_config(1).data.frames_per_position == 1
