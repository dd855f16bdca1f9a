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


def test_training_windows_hold_only_the_inside_of_segments_outside_the_video(tmp_path):
    """A file's segments after the video's end or of zero length never become targets; one partly
    outside is cut at the end (docs/recipe.md section 1). The whole-video path would otherwise clip an
    outside segment to a zero-length target at the last position."""
    import json

    from adatad.data.annotations import load_annotations

    annotations = [{"segment": [2.0, 4.0], "label": "A"}, {"segment": [18.0, 23.0], "label": "A"},
                   {"segment": [21.0, 24.0], "label": "B"}, {"segment": [9.0, 9.0], "label": "B"}]
    path = tmp_path / "anno.json"
    path.write_text(json.dumps({"database": {"v": {"subset": "training", "duration": 20.0, "frame": 600,
                                                   "annotations": annotations}}}))
    (video,), _ = load_annotations(path, tmp_path, "training", ["A", "B"])  # 150 positions at stride 4
    plan = sample_train_window(video, 768, 4, 0.75, None, np.random.default_rng(0))  # the whole video
    np.testing.assert_allclose(plan.segments, [[15.0, 30.0], [135.0, 150.0]], rtol=1e-6)
    assert list(plan.labels) == [0, 0]
    rng = np.random.default_rng(1)
    for _ in range(50):  # windows shorter than the video: every target has a length, inside the window
        plan = sample_train_window(video, 64, 4, 0.5, None, rng)
        length = check_plan_frames(plan, video, 64, 4)
        assert (plan.segments[:, 1] > plan.segments[:, 0]).all() and (plan.segments <= length).all()
        assert set(plan.labels.tolist()) <= {0}


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


# -- frames per position > 1 (OpenTAD's scale_factor) ------------------------------------------


def opentad_sliding_frames(num_frames: int, stride: int, s: int, window: int, start: int,
                           length: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenTAD's LoadFrames(method="sliding_window", scale_factor=s) for the window of positions
    [start, start + length), as docs/recipe.md §2 states it: frame indices and mask."""
    grid = np.arange(0, num_frames, stride // s)
    lo, hi = min(start * s, len(grid)), min((start + length) * s, len(grid))
    frames = grid[lo:hi]
    valid = len(frames) // s
    frames = np.pad(frames, (0, window * s - len(frames)), mode="edge")
    return frames, np.arange(window) < valid


def check_scaled_plan(plan: ClipPlan, video: VideoRecord, window: int, stride: int, s: int) -> int:
    """Invariants of a plan at s frames per position; returns the number of real read frames."""
    step = stride // s
    assert plan.frame_indices.shape == (window * s,) and plan.mask.shape == (window,)
    assert plan.frame_stride == stride and plan.window_start_frame % step == 0
    real = int(np.searchsorted(plan.frame_indices, plan.frame_indices[-1]) + 1)  # strictly rising prefix
    np.testing.assert_array_equal(plan.frame_indices[:real], plan.window_start_frame + np.arange(real) * step)
    assert (plan.frame_indices[real:] == plan.frame_indices[real - 1]).all()  # the last real frame repeats
    assert plan.frame_indices.max() < video.num_frames
    valid = int(plan.mask.sum())
    assert valid == real // s and plan.mask[:valid].all()  # floor: a position needs all its frames
    # Position p starts at raw frame window_start_frame + p * frame_stride: window_to_seconds stays right.
    np.testing.assert_array_equal(plan.frame_indices[: valid * s : s],
                                  plan.window_start_frame + np.arange(valid) * stride)
    return real


def test_scaled_thumos_g_record_floors_the_mask():
    """THUMOS g (768 x 2, stride 4): 2,398 frames = 600 snippets, but 1,199 frames at stride 2,
    so 599 valid positions; the 1,200th frame repeats the last real one."""
    video = VideoRecord("g", "/g.mp4", "validation", 2398 / 30.0, 2398, 30.0, np.array([[10.0, 20.0]]),
                        np.array([1]))
    (plan,) = sliding_windows(video, 768, 4, 0.5, frames_per_position=2)
    assert check_scaled_plan(plan, video, 768, 4, 2) == 1199
    assert plan.mask.sum() == 599 and plan.window_start_frame == 0
    np.testing.assert_array_equal(plan.frame_indices[:1199], np.arange(0, 2398, 2))
    assert (plan.frame_indices[1199:] == 2396).all()
    np.testing.assert_allclose(plan.segments, [[75.0, 150.0]])  # positions: seconds * fps / snippet stride
    # At one frame per position the same video has all 600 positions valid.
    (one,) = sliding_windows(video, 768, 4, 0.5)
    assert one.mask.sum() == 600 and one.frame_indices.shape == (768,)
    # Training reads the same grid: the whole video (no crop) gives the same frames and mask.
    whole = sample_train_window(video, 768, 4, 0.75, None, np.random.default_rng(0), frames_per_position=2)
    np.testing.assert_array_equal(whole.frame_indices, plan.frame_indices)
    np.testing.assert_array_equal(whole.mask, plan.mask)
    np.testing.assert_allclose(whole.segments, [[75.0, 150.0]])


def test_scaled_sliding_windows_match_opentad_frames_and_masks():
    rng = np.random.default_rng(7)
    full_last_window_masked = 0
    for _ in range(150):
        video = make_video(rng, num_frames=int(rng.integers(1, 1500)))
        stride, s = (int(v) for v in [(4, 2), (4, 4), (8, 2), (8, 8), (2, 2), (4, 1)][int(rng.integers(6))])
        window = int(rng.choice([16, 32, 100]))
        overlap = float(rng.choice([0.25, 0.5]))
        plans = sliding_windows(video, window, stride, overlap, frames_per_position=s)
        assert [p.window_start_frame for p in plans] == [p.window_start_frame
                                                         for p in sliding_windows(video, window, stride, overlap)]
        num_pos = len(range(0, video.num_frames, stride))
        for plan in plans:
            if video.num_frames > stride // s * (s - 1):  # at least one whole position
                check_scaled_plan(plan, video, window, stride, s)
            start = plan.window_start_frame // stride
            frames, mask = opentad_sliding_frames(video.num_frames, stride, s, window, start,
                                                  min(window, num_pos - start))
            np.testing.assert_array_equal(plan.frame_indices, frames)
            np.testing.assert_array_equal(plan.mask, mask)
            full_last_window_masked += int(num_pos >= window and start + window == num_pos and not mask[-1])
    assert full_last_window_masked > 5  # the floor rule also reaches full-length last windows


def test_scaled_last_window_of_a_long_video():
    """40 positions, 79 frames on the read grid: the last window (positions 24-39) misses one frame."""
    video = VideoRecord("v", "/v.mp4", "validation", 158 / 30.0, 158, 30.0, np.zeros((0, 2)), np.zeros(0, np.int64))
    plans = sliding_windows(video, 16, 4, 0.5, frames_per_position=2)
    assert [p.window_start_frame for p in plans] == [0, 32, 64, 96]
    assert [int(p.mask.sum()) for p in plans] == [16, 16, 16, 15]
    assert plans[-1].frame_indices[-3:].tolist() == [154, 156, 156]


def opentad_trunc(video: VideoRecord, window: int, stride: int, s: int, thresh: float, start: int,
                  length: int) -> tuple[np.ndarray, np.ndarray]:
    """OpenTAD's random_trunc at scale_factor s for a given start/length on the read grid: kept GT
    (in positions) and labels, taking the trial as successful (docs/recipe.md §2)."""
    gt = positions(video, stride) * s
    inter = np.clip(np.minimum(gt[:, 1], start + length) - np.maximum(gt[:, 0], start), 0, None)
    keep = inter / (gt[:, 1] - gt[:, 0]) >= thresh
    return (np.clip(gt[keep], start, start + length) - start) / s, video.labels[keep]


def test_scaled_train_truncation_runs_on_the_read_grid():
    rng = np.random.default_rng(2)
    sample_rng = np.random.default_rng(3)
    odd_starts = odd_lengths = 0
    for _ in range(300):
        video = make_video(rng, num_frames=int(rng.integers(200, 4000)))
        stride, s = (int(v) for v in [(4, 2), (4, 4), (8, 2)][int(rng.integers(3))])
        window = int(rng.choice([32, 64, 256]))
        plan = sample_train_window(video, window, stride, 0.75, (0.9, 1.0), sample_rng, frames_per_position=s)
        real = check_scaled_plan(plan, video, window, stride, s)
        num_read = len(range(0, video.num_frames, stride // s))
        start = plan.window_start_frame // (stride // s)  # on the read grid: any frame, not only positions
        if num_read > window * s:
            assert real == window * s and plan.mask.all()
        else:
            assert round(0.9 * num_read) <= real <= num_read  # crop ratio on read frames
        odd_starts += start % s != 0
        odd_lengths += real % s != 0
        if len(video.labels) and not (start == 0 and real == num_read):
            segments, labels = opentad_trunc(video, window, stride, s, 0.75, start, real)
            if len(labels):  # a successful trial (the fallback is D6)
                np.testing.assert_array_equal(plan.labels, labels)
                np.testing.assert_allclose(plan.segments, segments, rtol=1e-6, atol=1e-4)
    assert odd_starts > 20 and odd_lengths > 5


def test_scaled_sampling_rejects_frames_per_position_that_does_not_divide_the_stride():
    video = make_video(np.random.default_rng(0), num_frames=100, num_segments=1)
    with pytest.raises(ValueError, match=r"frames_per_position must be >= 1 and divide frame_stride \(4\), got 3"):
        sliding_windows(video, 16, 4, 0.5, frames_per_position=3)
    with pytest.raises(ValueError, match="frames_per_position"):
        sample_train_window(video, 16, 4, 0.5, None, np.random.default_rng(0), frames_per_position=0)
