"""ActivityNet whole-video sampling (adatad/data/resize_sampling.py) against OpenTAD's rules, the data
keys of ActivityNet and Charades, and the whole-video demo config (docs/recipe.md, "ActivityNet and
Charades: data")."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from adatad.config import CONFIG_DIR, ConfigError, DataConfig, load_config
from adatad.data.annotations import VideoRecord
from adatad.data.batch import clip_to_example, collate_examples
from adatad.data.clips import ClipLoader, count_windows, plan_test_windows, record_to_row, seconds_bookkeeping
from adatad.data.resize_sampling import resize_frame_indices, resize_window
from adatad.postprocess import Detections, window_to_seconds


def opentad_resize_indices(total: int, frame_num: int) -> np.ndarray:
    """OpenTAD's LoadFrames(method="resize") as written: arange of centres, clip, round."""
    stride = total / frame_num
    idx = np.arange(stride / 2 - 0.5, total + stride / 2 - 0.5, stride)
    return np.clip(idx, 0, total - 1).round().astype(int)


def record(num_frames: int = 1000, duration: float = 66.6, segments=((3.0, 20.0), (30.0, 70.0)),
           labels=(4, 7)) -> VideoRecord:
    return VideoRecord("v1", "/data/v_v1.mp4", "validation", duration, num_frames, num_frames / duration,
                       np.asarray(segments, np.float64).reshape(-1, 2), np.asarray(labels, np.int64))


def test_spec_example_1000_frames():
    idx = resize_frame_indices(1000, 768)
    assert idx[:8].tolist() == [0, 1, 3, 4, 5, 7, 8, 9]
    assert idx.dtype == np.int64 and len(idx) == 768 and idx[-1] == 999 and (np.diff(idx) >= 0).all()


def test_indices_equal_opentad_for_many_lengths():
    rng = np.random.default_rng(0)
    for total in [1, 2, 5, 100, 767, 768, 769, 1000, 1799, 2701, *rng.integers(1, 40_000, 200).tolist()]:
        for frames in (768, 128, 64):
            want = opentad_resize_indices(total, frames)
            if len(want) != frames:  # OpenTAD's own assert would fail here (float rounding of arange)
                continue
            np.testing.assert_array_equal(resize_frame_indices(total, frames), want, err_msg=f"{total} {frames}")


def test_a_length_where_opentad_arange_overruns_keeps_the_first_frames():
    assert len(opentad_resize_indices(8189, 768)) == 769  # OpenTAD asserts here
    idx = resize_frame_indices(8189, 768)
    np.testing.assert_array_equal(idx, opentad_resize_indices(8189, 768)[:768])
    assert len(idx) == 768 and idx[-1] <= 8188


def test_resize_window_plan_ground_truth_and_mask():
    video = record(num_frames=100, duration=66.6)  # shorter than 192 x 4 frames: frames repeat
    plan = resize_window(video, 192, 4)
    assert plan.frame_indices.shape == (768,) and plan.mask.shape == (192,) and plan.mask.all()
    np.testing.assert_array_equal(plan.frame_indices, opentad_resize_indices(100, 768))
    # clip(seconds / json duration, 0, 1) x N: the second segment runs past the end, so it ends at N
    np.testing.assert_allclose(plan.segments, [[3.0 / 66.6 * 192, 20.0 / 66.6 * 192], [30.0 / 66.6 * 192, 192.0]],
                               rtol=1e-6)
    assert plan.labels.tolist() == [4, 7] and plan.window_start_frame == 0 and plan.frame_stride == 1
    assert plan.fps == pytest.approx(192 / 66.6) and plan.duration == 66.6


def test_positions_map_back_to_seconds_by_the_json_duration():
    video = record(num_frames=999, duration=50.0)  # the decoder's count does not enter the seconds
    plan = resize_window(video, 192)
    data = replace(DataConfig(), sampling="resize", window_size=192)
    assert seconds_bookkeeping(video, data) == (plan.fps, plan.frame_stride)
    dets = Detections(torch.tensor([[0.0, 96.0], [48.0, 192.0], [-3.0, 200.0]]), torch.ones(3),
                      torch.zeros(3, dtype=torch.long))
    out = window_to_seconds(dets, plan.window_start_frame, plan.frame_stride, plan.fps, plan.duration, clip=True)
    np.testing.assert_allclose(out.segments.numpy(), [[0.0, 25.0], [12.5, 50.0], [0.0, 50.0]], rtol=1e-6)
    # the example carries the same bookkeeping through a batch
    example = clip_to_example(plan, np.zeros((192, 4, 4, 3), np.uint8), 8)
    assert example["frame_stride"] == 1 and example["window_start_frame"] == 0
    assert example["fps"] == pytest.approx(192 / 50.0)


def test_sliding_bookkeeping_unchanged():
    video = record()
    fps, stride = seconds_bookkeeping(video, DataConfig())
    assert fps == video.fps and stride == 4
    plans = plan_test_windows(video, DataConfig(window_size=64))
    assert all(p.fps == video.fps and p.frame_stride == 4 for p in plans) and len(plans) > 1


def test_config_dispatch_one_window_per_video_and_training_plan():
    data = replace(DataConfig(), sampling="resize", window_size=16, frames_per_position=4, class_agnostic=True)
    video = record(num_frames=3000, duration=100.0)
    assert count_windows(video, data) == 1
    (plan,) = plan_test_windows(video, data)
    np.testing.assert_array_equal(plan.frame_indices, opentad_resize_indices(3000, 64))
    loader = ClipLoader(data, train=True)
    train_plan = loader.plan(record_to_row(video, 0), np.random.default_rng(0))
    np.testing.assert_array_equal(train_plan.frame_indices, plan.frame_indices)  # no temporal randomness
    np.testing.assert_allclose(train_plan.segments, plan.segments)
    assert train_plan.labels.tolist() == [0, 0]  # class_agnostic: every segment is class 0
    sliding = ClipLoader(replace(data, sampling="sliding", frame_stride=4, class_agnostic=False), train=True)
    assert sliding.plan(record_to_row(video, 0), np.random.default_rng(0)).labels.tolist() != [0, 0]


@pytest.mark.parametrize(("key", "value", "message"), [
    ("data.sampling", "whole", "data.sampling: 'whole' is invalid, expected one of sliding, resize"),
    ("data.video_prefix", "a/b", "data.video_prefix: 'a/b' is invalid"),
    ("data.fixed_fps", 0, "data.fixed_fps: 0.0 is invalid"),
    ("data.min_segment_fraction", 1.0, "data.min_segment_fraction: 1.0 is invalid"),
    ("data.class_agnostic", True, "data.class_agnostic: True is invalid, expected false with model.head.num_classes=4"),
    ("data.block_list", "", "data.block_list: '' is invalid"),
])
def test_data_keys_are_checked(key, value, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(CONFIG_DIR / "synthetic.yaml", [f"{key}={value!r}" if isinstance(value, str) else f"{key}={value}"])


def test_resize_does_not_need_frames_per_position_to_divide_the_stride():
    cfg = load_config(CONFIG_DIR / "synthetic.yaml", ["data.sampling=resize", "data.frames_per_position=8"])
    assert cfg.data.frames_per_position == 8
    with pytest.raises(ConfigError, match="data.frames_per_position"):
        load_config(CONFIG_DIR / "synthetic.yaml", ["data.frames_per_position=8"])


def test_anet_demo_config_loads_builds_and_runs_one_tiny_forward():
    """configs/synthetic_anet.yaml: whole-video sampling, 1-class head, class-agnostic NMS with voting and
    the classifier fusion, tIoU 0.5:0.05:0.95; a forward of its model on one resized window."""
    from adatad.models.build import build_model

    cfg = load_config(CONFIG_DIR / "synthetic_anet.yaml")
    d, i = cfg.data, cfg.model.inference
    assert (d.sampling, d.video_prefix, d.class_agnostic, cfg.model.head.num_classes) == ("resize", "v_", True, 1)
    assert d.block_list and i.external_classifier and not i.multiclass_nms and i.voting_thresh == 0.9
    assert cfg.evaluation.tiou_thresholds == pytest.approx(np.arange(0.5, 0.96, 0.05).tolist())
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    plan = resize_window(record(num_frames=700, duration=46.7), d.window_size, d.frames_per_position)
    frames = np.random.default_rng(0).integers(0, 256, (len(plan.frame_indices), d.crop_size, d.crop_size, 3),
                                               dtype=np.uint8)
    batch = collate_examples([clip_to_example(plan, frames, d.max_segments)])
    with torch.no_grad():
        (dets,) = model.predict(torch.from_numpy(batch["frames"]), torch.from_numpy(batch["masks"]),
                                pre_nms_thresh=i.pre_nms_thresh, pre_nms_topk=i.pre_nms_topk)
    assert len(dets) > 0 and (dets.labels == 0).all()
