"""Train truncation and test sliding windows: property tests over many random videos.

Also covers the fixed-shape example/collate helpers of adatad.data.batch, which consume plans.
"""

from __future__ import annotations

import numpy as np
import pytest

from adatad.data.annotations import VideoRecord
from adatad.data.batch import clip_to_example, collate_examples
from adatad.data.sampling import ClipPlan, sample_train_window, sliding_windows, window_starts


def make_video(rng: np.random.Generator, num_frames: int | None = None, num_segments: int | None = None,
               max_seg_s: float = 20.0) -> VideoRecord:
    num_frames = int(rng.integers(1, 6000)) if num_frames is None else num_frames
    fps = float(rng.choice([25.0, 29.97, 30.0]))
    duration = num_frames / fps
    n = int(rng.integers(0, 8)) if num_segments is None else num_segments
    starts = rng.uniform(0, duration, size=n)
    ends = np.minimum(starts + rng.uniform(0.05, max_seg_s, size=n), duration)
    ok = ends > starts
    segs = np.stack([starts[ok], ends[ok]], axis=1)
    return VideoRecord("vid", "/data/vid.mp4", "training", duration, num_frames, fps,
                       segs.reshape(-1, 2), rng.integers(0, 20, size=len(segs)).astype(np.int64))


def positions(video: VideoRecord, stride: int) -> np.ndarray:
    return video.segments * video.fps / stride


def check_plan_frames(plan: ClipPlan, video: VideoRecord, window_size: int, stride: int) -> int:
    """Common invariants of any plan; returns its number of real positions."""
    assert plan.frame_indices.shape == (window_size,) and plan.frame_indices.dtype == np.int64
    assert plan.mask.shape == (window_size,) and plan.mask.dtype == bool
    length = int(plan.mask.sum())
    assert length >= 1 and plan.mask[:length].all()  # real positions form a prefix
    expected = plan.window_start_frame + np.arange(length) * stride
    np.testing.assert_array_equal(plan.frame_indices[:length], expected)  # maps back to raw frames
    assert plan.window_start_frame % stride == 0
    assert 0 <= plan.frame_indices.min() and plan.frame_indices.max() < video.num_frames
    assert (plan.frame_indices[length:] == plan.frame_indices[length - 1]).all()  # edge padding
    assert plan.segments.dtype == np.float32 and plan.labels.dtype == np.int64
    assert plan.segments.shape == (len(plan.labels), 2)
    assert (plan.segments >= 0).all() and (plan.segments <= length).all()
    assert (plan.segments[:, 1] >= plan.segments[:, 0]).all()
    assert plan.fps == video.fps and plan.duration == video.duration and plan.frame_stride == stride
    return length


def kept_ratio(video: VideoRecord, stride: int, start: int, length: int) -> np.ndarray:
    gt = positions(video, stride)
    inter = np.clip(np.minimum(gt[:, 1], start + length) - np.maximum(gt[:, 0], start), 0, None)
    return inter / (gt[:, 1] - gt[:, 0])


def test_train_truncation_properties_random_videos():
    rng = np.random.default_rng(0)
    sample_rng = np.random.default_rng(1)
    successes = fallbacks = 0
    for _ in range(400):
        video = make_video(rng)
        stride = int(rng.choice([1, 2, 4]))
        window = int(rng.choice([16, 64, 256, 768]))
        thresh = float(rng.choice([0.5, 0.75, 1.0]))
        plan = sample_train_window(video, window, stride, thresh, (0.9, 1.0), sample_rng)
        length = check_plan_frames(plan, video, window, stride)
        num_pos = len(range(0, video.num_frames, stride))
        start = plan.window_start_frame // stride
        if num_pos > window:
            assert length == window
        else:
            assert round(0.9 * num_pos) <= length <= num_pos
        gt = positions(video, stride)
        if length == num_pos and start == 0 and num_pos <= window:  # whole video: every GT kept
            np.testing.assert_allclose(plan.segments, np.clip(gt, 0, num_pos), rtol=1e-6, atol=1e-4)
            continue
        ratio = kept_ratio(video, stride, start, length)
        if len(gt) == 0:
            assert len(plan.segments) == 0
            continue
        keep = ratio >= thresh - 1e-9
        assert len(plan.segments) >= 1  # at least one GT survives
        if keep.any():
            successes += 1
            np.testing.assert_array_equal(plan.labels, video.labels[keep])
            np.testing.assert_allclose(plan.segments, np.clip(gt[keep], start, start + length) - start,
                                       rtol=1e-6, atol=1e-4)
            ratios_in_window = (plan.segments[:, 1] - plan.segments[:, 0]) / (gt[keep, 1] - gt[keep, 0])
            assert (ratios_in_window >= thresh - 1e-4).all()
        else:  # fallback: GTs reaching the best fraction of the chosen window are kept
            fallbacks += 1
            best = ratio >= ratio.max() - 1e-9
            assert ratio.max() > 0
            np.testing.assert_array_equal(plan.labels, video.labels[best])
    assert successes > 100 and fallbacks > 10


def test_train_fallback_for_gt_longer_than_window():
    # one 60 s GT in a 100 s video, window of 64 positions at stride 4 (8.5 s): no window keeps 75 %
    video = VideoRecord("v", "/v.mp4", "training", 100.0, 3000, 30.0, np.array([[20.0, 80.0]]),
                        np.array([3]))
    plan = sample_train_window(video, 64, 4, 0.75, (0.9, 1.0), np.random.default_rng(0))
    np.testing.assert_allclose(plan.segments, [[0.0, 64.0]])  # window fully inside the GT
    assert list(plan.labels) == [3]
    again = sample_train_window(video, 64, 4, 0.75, (0.9, 1.0), np.random.default_rng(0))
    assert again.window_start_frame == plan.window_start_frame  # deterministic given the rng


def test_train_short_video_crop_ratio_path():
    video = VideoRecord("v", "/v.mp4", "training", 20.0, 600, 30.0, np.array([[2.0, 4.0], [10.0, 19.0]]),
                        np.array([0, 1]))  # 150 positions at stride 4
    rng = np.random.default_rng(3)
    lengths, whole = [], 0
    for _ in range(300):
        plan = sample_train_window(video, 768, 4, 0.75, (0.9, 1.0), rng)
        length = check_plan_frames(plan, video, 768, 4)
        lengths.append(length)
        if length == 150:
            whole += 1
            assert plan.window_start_frame == 0
            np.testing.assert_allclose(plan.segments, [[15.0, 30.0], [75.0, 142.5]], rtol=1e-6)
    assert min(lengths) == round(0.9 * 150) and max(lengths) == 150
    assert 0 < whole < 300
    # without a crop ratio a short video is always taken whole
    plan = sample_train_window(video, 768, 4, 0.75, None, rng)
    assert plan.mask.sum() == 150 and plan.window_start_frame == 0


def test_train_long_video_uses_exact_window_and_seconds_to_positions():
    video = VideoRecord("v", "/v.mp4", "training", 200.0, 6000, 30.0, np.array([[100.0, 104.0]]),
                        np.array([5]))  # GT at positions [750, 780] for stride 4
    for seed in range(20):
        plan = sample_train_window(video, 768, 4, 0.75, (0.9, 1.0), np.random.default_rng(seed))
        start = plan.window_start_frame // 4
        assert plan.mask.all()
        np.testing.assert_allclose(plan.segments + start, [[750.0, 780.0]], atol=1e-3)


def test_train_rejects_bad_arguments():
    video = make_video(np.random.default_rng(0), num_frames=100, num_segments=1)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="trunc_thresh"):
        sample_train_window(video, 16, 4, 0.0, None, rng)
    with pytest.raises(ValueError, match="crop_ratio"):
        sample_train_window(video, 768, 4, 0.5, (0.9, 1.2), rng)
    with pytest.raises(ValueError, match="frame_stride"):
        sample_train_window(video, 16, 0, 0.5, None, rng)


def reference_starts(n: int, window: int, stride: int) -> list[int]:
    """OpenTAD's loop as stated in docs/recipe.md §2 (may repeat the last start)."""
    out = []
    for idx in range(max(1, n // stride)):
        start = idx * stride
        if start + window > n:
            out.append(max(0, n - window))
            break
        out.append(start)
    return out


def test_window_starts_match_spec_at_half_overlap_without_duplicates():
    for n in list(range(1, 3000, 7)) + [768, 1536, 2304, 384, 385, 1152]:
        ref = reference_starts(n, 768, 384)
        ours = window_starts(n, 768, 384).tolist()
        assert ours == sorted(set(ref))
        assert len(ours) == len(set(ours))
    assert reference_starts(1536, 768, 384) == [0, 384, 768, 768]  # the quirk we remove
    assert window_starts(1536, 768, 384).tolist() == [0, 384, 768]


def test_sliding_windows_cover_video_and_map_back_exactly():
    rng = np.random.default_rng(5)
    for _ in range(200):
        video = make_video(rng, num_frames=int(rng.integers(1, 3000)))
        stride = int(rng.choice([1, 2, 4]))
        window = int(rng.choice([16, 100, 256, 768]))
        overlap = float(rng.choice([0.0, 0.25, 0.5, 0.75]))
        plans = sliding_windows(video, window, stride, overlap)
        num_pos = len(range(0, video.num_frames, stride))
        covered = np.zeros(num_pos, dtype=bool)
        starts = [p.window_start_frame for p in plans]
        assert starts == sorted(set(starts))  # no duplicate windows
        gt = positions(video, stride)
        for plan in plans:
            length = check_plan_frames(plan, video, window, stride)
            start = plan.window_start_frame // stride
            assert length == min(window, num_pos)  # only a short video gives a short window
            covered[start : start + length] = True
            inside = (gt[:, 1] > start) & (gt[:, 0] < start + length)
            np.testing.assert_array_equal(plan.labels, video.labels[inside])
            np.testing.assert_allclose(plan.segments, np.clip(gt[inside], start, start + length) - start,
                                       rtol=1e-6, atol=1e-4)
        assert covered.all()
        # every raw frame that is a video position appears in some window
        frames = np.unique(np.concatenate([p.frame_indices[p.mask] for p in plans]))
        np.testing.assert_array_equal(frames, np.arange(0, video.num_frames, stride))


def test_sliding_windows_short_video_single_padded_window():
    video = VideoRecord("v", "/v.mp4", "validation", 10.0, 300, 30.0, np.array([[1.0, 2.0]]), np.array([2]))
    (plan,) = sliding_windows(video, 768, 4, 0.5)
    assert plan.mask.sum() == 75 and plan.window_start_frame == 0
    assert (plan.frame_indices[75:] == 296).all()
    np.testing.assert_allclose(plan.segments, [[7.5, 15.0]])


def test_sliding_rejects_bad_overlap():
    video = make_video(np.random.default_rng(0), num_frames=100, num_segments=0)
    with pytest.raises(ValueError, match="overlap_ratio"):
        sliding_windows(video, 16, 4, 1.0)


def test_clip_to_example_and_collate():
    video = VideoRecord("v", "/v.mp4", "validation", 10.0, 300, 30.0, np.array([[1.0, 2.0], [3.0, 4.0]]),
                        np.array([2, 0]))
    (plan,) = sliding_windows(video, 96, 4, 0.5)
    frames = np.zeros((96, 8, 10, 3), dtype=np.uint8)
    ex = clip_to_example(plan, frames, max_segments=4)
    assert ex["segments"].shape == (4, 2) and ex["segments"].dtype == np.float32
    np.testing.assert_allclose(ex["segments"][:2], [[7.5, 15.0], [22.5, 30.0]])
    assert (ex["segments"][2:] == 0).all()
    assert ex["labels"].tolist() == [2, 0, -1, -1] and ex["num_segments"] == 2
    assert ex["masks"].sum() == 75 and ex["video_id"] == "v" and ex["frame_stride"] == 4
    batch = collate_examples([ex, ex])
    assert batch["frames"].shape == (2, 96, 8, 10, 3) and batch["labels"].shape == (2, 4)
    assert batch["video_id"].tolist() == ["v", "v"] and batch["num_segments"].tolist() == [2, 2]
    assert batch["fps"].dtype == np.float64 and batch["window_start_frame"].dtype == np.int64
    with pytest.raises(ValueError, match="2 segments exceed max_segments=1"):
        clip_to_example(plan, frames, max_segments=1)
    with pytest.raises(ValueError, match=r"frames must have shape \(96, H, W, 3\)"):
        clip_to_example(plan, frames[:10], max_segments=4)
    other = clip_to_example(plan, np.zeros((96, 4, 4, 3), dtype=np.uint8), max_segments=4)
    with pytest.raises(ValueError, match="cannot stack key 'frames'"):
        collate_examples([ex, other])
