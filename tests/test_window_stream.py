"""Decode-once sliding windows (window_stream.py, ClipLoader.iter_video_windows) against the
per-window path (window_rows + ClipLoader.load) on real H.264 files: same windows, same bytes."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest

from adatad.config import DataConfig
from adatad.data import video
from adatad.data.annotations import VideoRecord
from adatad.data.clips import ClipLoader, count_windows, is_per_frame, record_to_row, window_rows
from adatad.data.sampling import sliding_windows
from adatad.data.transforms import build_test_transform, build_train_transform
from adatad.data.window_stream import WindowStream
from adatad.datasets.synthetic import generate_dataset

WINDOW, STRIDE = 16, 4  # 64 raw frames per window: several windows and GOPs in a few seconds of video


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A synthetic video (x264 defaults: 250-frame GOP, B-frames), a short-GOP one and broken copies."""
    root = tmp_path_factory.mktemp("window_stream")
    generate_dataset(root / "synthetic", num_train=0, num_test=1, num_classes=2, duration_s=(10.0, 10.0), fps=30,
                     width=112, height=64, seed=11)
    paths = {"synthetic": next((root / "synthetic" / "videos").glob("*.mp4"))}
    # 200 frames of noise, a keyframe every 10 frames, B-frames, moov at the front (faststart):
    # many GOP changes per window, and a half-cut copy still opens (frames are lost mid-way).
    frames = np.random.default_rng(0).integers(0, 256, (200, 64, 112, 3), dtype=np.uint8)
    paths["short_gop"] = root / "short_gop.mp4"
    with av.open(str(paths["short_gop"]), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 112, 64, "yuv420p"
        stream.options = {"crf": "20", "x264-params": "keyint=10:min-keyint=10:scenecut=0:bframes=2:b-adapt=0"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    for name, source in (("moov_lost", "synthetic"), ("cut_mid_way", "short_gop")):
        data = paths[source].read_bytes()
        paths[name] = root / f"{name}.mp4"
        paths[name].write_bytes(data[: len(data) // 2])
    return paths


def _data(overlap: float = 0.5, **changes) -> DataConfig:
    """A test config with a real resize (64 px short side -> 40) and center crop (32)."""
    return replace(DataConfig(window_size=WINDOW, frame_stride=STRIDE, test_window_overlap=overlap,
                              test_resize_short=40, crop_size=32, max_segments=8), **changes)


def _record(path: Path, num_frames: int, video_id: str = "v") -> VideoRecord:
    """num_frames is the annotation's count: it may differ from the file's (indices are clamped)."""
    return VideoRecord(video_id=video_id, path=str(path), subset="validation", duration=num_frames / 30.0,
                       num_frames=num_frames, fps=30.0, segments=np.array([[0.5, 1.5], [2.0, 5.0]]),
                       labels=np.array([0, 1]))


def _assert_same_example(got: dict, want: dict, where: str) -> None:
    assert sorted(got) == sorted(want), where
    for key, value in want.items():
        assert type(got[key]) is type(value), (where, key, type(got[key]), type(value))
        assert np.asarray(got[key]).dtype == np.asarray(value).dtype, (where, key)
        np.testing.assert_array_equal(got[key], value, err_msg=f"{where}: {key}")


# (file, annotation frame count): shorter than one window (64 frames: one padded window), exactly
# 64 positions (a whole number of window strides), 75 positions (the last window is shifted to
# end at the last position), more frames than the file has (300: indices clamped), and the
# short-GOP file with 50 positions. At 2 frames per position (frames 2 apart) 50, 298 and 197 frames
# leave an odd number of frames (25, 149, 99) on the read grid: the last position of the last
# window is masked.
CASES = [("synthetic", 50), ("synthetic", 256), ("synthetic", 298), ("synthetic", 310), ("short_gop", 197)]


@pytest.mark.parametrize("frames_per_position", [1, 2])
@pytest.mark.parametrize("overlap", [0.5, 0.25])
@pytest.mark.parametrize(("name", "num_frames"), CASES)
def test_stream_examples_equal_per_window_examples(files, name, num_frames, overlap, frames_per_position):
    data = _data(overlap, frames_per_position=frames_per_position)
    record = _record(files[name], num_frames)
    loader = ClipLoader(data, train=False)
    row = record_to_row(record, 3)
    per_window = [loader.load(r, np.random.default_rng(1)) for r in window_rows([record], data)]
    for r in per_window:
        r["video_index"] = np.int64(3)  # window_rows numbers videos from 0
    streamed = list(loader.iter_video_windows(row))
    assert len(streamed) == len(per_window) == count_windows(record, data) >= 1
    for k, (got, want) in enumerate(zip(streamed, per_window, strict=True)):
        assert want["valid"]
        _assert_same_example(got, want, f"{name} {num_frames} overlap {overlap} s {frames_per_position} window {k}")
    assert "video_id" not in streamed[0] and streamed[0]["frames"].shape == (WINDOW * frames_per_position, 32, 32, 3)
    assert streamed[0]["masks"].shape == (WINDOW,)


def test_window_count_and_padding_cases(files):
    """The cases above cover what they claim: one padded window, an exact fit, a partial last window."""
    data = _data()
    short, exact, partial = (sliding_windows(_record(files["synthetic"], n), WINDOW, STRIDE, 0.5)
                             for n in (50, 256, 298))
    assert len(short) == 1 and short[0].mask.sum() == 13
    assert all(p.mask.all() for p in exact) and exact[-1].window_start_frame == (64 - WINDOW) * STRIDE
    assert partial[-1].window_start_frame == (75 - WINDOW) * STRIDE  # shifted to end at the last position
    assert count_windows(_record(files["synthetic"], 298), data) == len(partial)


def test_scaled_padding_cases(files):
    """At 2 frames per position the cases above hold the floor rule: a window whose read frames run
    out mid-position masks that position, and its missing frame repeats the last real one."""
    record = _record(files["synthetic"], 298)  # 75 positions, 149 frames 2 apart
    plans = sliding_windows(record, WINDOW, STRIDE, 0.5, frames_per_position=2)
    assert [int(p.mask.sum()) for p in plans] == [16] * (len(plans) - 1) + [15]
    assert plans[-1].frame_indices[-2:].tolist() == [296, 296]
    (short,) = sliding_windows(_record(files["synthetic"], 50), WINDOW, STRIDE, 0.5, frames_per_position=2)
    assert short.mask.sum() == 12 and (short.frame_indices[24:] == 48).all()
    stream = WindowStream(record, WINDOW, STRIDE, 0.5, lambda clip: clip, frames_per_position=2)
    for (plan, frames), want in zip(stream, plans, strict=True):
        np.testing.assert_array_equal(plan.frame_indices, want.frame_indices)
        np.testing.assert_array_equal(frames, video.read_frames(record.path, want.frame_indices))


def test_test_transform_is_per_frame(files):
    """Transforming any subset of frames equals that subset of the transformed window, bit for bit."""
    frames = video.read_frames(files["synthetic"], np.arange(0, 120, 3))
    transform, rng = build_test_transform(resize_short=40, crop_size=32), np.random.default_rng(0)
    whole = transform(frames, rng)
    for lo, hi in ((0, 1), (3, 17), (17, 40)):
        np.testing.assert_array_equal(transform(frames[lo:hi], rng), whole[lo:hi])
    assert is_per_frame(transform)
    assert not is_per_frame(build_train_transform(resize_short=40, crop_size=32))


def test_clip_level_transform_runs_per_window(files):
    """per_frame=False: a transform that looks at the whole clip still gets exactly the window."""
    record = _record(files["short_gop"], 197)

    def clip_level(clip: np.ndarray) -> np.ndarray:  # depends on every frame of the clip
        return np.ascontiguousarray(clip[:, ::4, ::4] // 2 + clip.mean(axis=0).astype(np.uint8)[::4, ::4] // 2)

    stream = WindowStream(record, WINDOW, STRIDE, 0.5, clip_level, per_frame=False, chunk_positions=5)
    windows = list(stream)
    assert len(windows) == len(stream.plans) >= 3
    for plan, frames in windows:
        np.testing.assert_array_equal(frames, clip_level(video.read_frames(record.path, plan.frame_indices)))
    # the same transform applied per chunk would differ: the test above can tell the two apart
    chunked = list(WindowStream(record, WINDOW, STRIDE, 0.5, clip_level, per_frame=True, chunk_positions=5))
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(chunked, windows, strict=True))


class _RecordingReader(video.decord.VideoReader):
    """decord's reader, logging what is asked of it."""

    batches: list[list[int]] = []
    seeks: list[int] = []

    def get_batch(self, indices):
        _RecordingReader.batches.append(list(indices))
        return super().get_batch(indices)

    def seek(self, pos):
        _RecordingReader.seeks.append(pos)
        return super().seek(pos)


@pytest.mark.parametrize(("name", "num_frames", "frames_per_position"),
                         [("synthetic", 298, 1), ("short_gop", 197, 1), ("short_gop", 197, 2)])
def test_stream_decodes_every_frame_once(files, monkeypatch, name, num_frames, frames_per_position):
    monkeypatch.setattr(video.decord, "VideoReader", _RecordingReader)
    monkeypatch.setattr(_RecordingReader, "batches", [])
    monkeypatch.setattr(_RecordingReader, "seeks", [])
    data = _data(frames_per_position=frames_per_position)
    step = STRIDE // frames_per_position  # raw frames between the frames a window reads
    record = _record(files[name], num_frames)
    examples = list(ClipLoader(data, train=False).iter_video_windows(record_to_row(record, 0)))
    assert all(e["valid"] for e in examples) and len(examples) >= 4
    asked = np.concatenate(_RecordingReader.batches)
    with video.VideoStream(files[name]) as stream:
        keys = set(stream.key_indices.tolist())
    # Front to back, each frame once; a gap (frames no window needs) only ever ends on a keyframe,
    # where decord starts afresh instead of decoding through the gap.
    assert (np.diff(asked) > 0).all()
    assert all(int(asked[i + 1]) in keys for i in np.nonzero(np.diff(asked) > 1)[0])
    last_needed = (num_frames - 1) // step * step  # num_frames <= the file's frames here
    assert asked[0] == 0 and asked[-1] == last_needed
    assert set(range(0, last_needed + 1, step)) <= set(asked.tolist())
    assert _RecordingReader.seeks == []  # no rewind between reads
    # the per-window path asks for the overlapping positions about twice
    _RecordingReader.batches.clear()
    for r in window_rows([record], data):
        video.read_frames(r["path"], r["frame_indices"])
    per_window = sum(len(set(b)) for b in _RecordingReader.batches)
    assert per_window > 1.5 * len(np.unique(asked[asked % step == 0]))


def test_stream_jumps_to_keyframes_over_unneeded_frames(files, monkeypatch):
    """Far ahead (a later GOP): decoding resumes at that GOP's keyframe, not at the last frame read."""
    monkeypatch.setattr(video.decord, "VideoReader", _RecordingReader)
    monkeypatch.setattr(_RecordingReader, "batches", [])
    with video.VideoStream(files["short_gop"], batch_frames=8, min_jump=20) as stream:
        assert stream.key_indices.tolist() == list(range(0, 200, 10))
        frames = stream.read(np.array([2, 5, 47, 48, 48, 60, 131]))  # 6-39 skipped, 49-59 too short to skip
        again = stream.read(np.array([131, 199, 250]))  # starts at the previous last; 250 is clamped
    asked = np.concatenate(_RecordingReader.batches).tolist()
    assert asked == [*range(0, 6), *range(40, 61), *range(130, 132), *range(190, 200)]
    assert stream.decoded_frames == len(asked) and max(len(b) for b in _RecordingReader.batches) <= 8
    truth = video.read_frames(files["short_gop"], np.arange(200))
    np.testing.assert_array_equal(frames, truth[[2, 5, 47, 48, 48, 60, 131]])
    np.testing.assert_array_equal(again, truth[[131, 199, 199]])


# Whole-video (resize) sampling: a video shorter than the window's frames (frames repeat), about
# as long, and longer (frames spread); the short-GOP file; an annotation count past the file's end.
RESIZE_CASES = [("synthetic", 50), ("synthetic", 298), ("short_gop", 197), ("synthetic", 310)]


@pytest.mark.parametrize("frames_per_position", [1, 4])
@pytest.mark.parametrize(("name", "num_frames"), RESIZE_CASES)
def test_resized_stream_example_equals_per_window_example(files, monkeypatch, name, num_frames, frames_per_position):
    """The one resized window from the decode-once stream equals the per-window path's, bytes and
    bookkeeping, and the stream passes each frame through the decoder once, front to back."""
    data = _data(sampling="resize", frames_per_position=frames_per_position)
    record = _record(files[name], num_frames)
    loader = ClipLoader(data, train=False)
    rows = window_rows([record], data)
    assert len(rows) == count_windows(record, data) == 1 and rows[0]["window_start_frame"] == 0
    want = loader.load(rows[0], np.random.default_rng(1))
    monkeypatch.setattr(video.decord, "VideoReader", _RecordingReader)
    monkeypatch.setattr(_RecordingReader, "batches", [])
    monkeypatch.setattr(_RecordingReader, "seeks", [])
    (got,) = list(loader.iter_video_windows(record_to_row(record, 0)))
    _assert_same_example(got, want, f"resize {name} {num_frames} s {frames_per_position}")
    assert got["frames"].shape == (WINDOW * frames_per_position, 32, 32, 3) and got["masks"].all()
    assert got["fps"] == pytest.approx(WINDOW / record.duration) and got["frame_stride"] == 1
    asked = np.concatenate(_RecordingReader.batches)
    assert (np.diff(asked) > 0).all() and _RecordingReader.seeks == []


def test_resized_stream_holds_one_window(files):
    record = _record(files["synthetic"], 300)
    transform = build_test_transform(resize_short=40, crop_size=32)
    stream = WindowStream(record, 16, 4, 0.5, lambda clip: transform(clip, None), chunk_positions=3,
                          frames_per_position=4, sampling="resize")
    ((plan, frames),) = list(stream)
    assert frames.shape == (64, 32, 32, 3) and stream.peak_cached == 64 and plan.mask.all()
    with pytest.raises(ValueError, match="sampling must be 'sliding' or 'resize'"):
        WindowStream(record, 16, 4, 0.5, lambda clip: clip, sampling="whole")


@pytest.mark.parametrize("frames_per_position", [1, 2])
def test_memory_held_is_bounded_by_one_window_and_a_chunk(files, frames_per_position):
    """However long the video, at most (window_size + chunk_positions) * s - 1 frames are cached."""
    s = frames_per_position
    record = _record(files["synthetic"], 300)
    transform = build_test_transform(resize_short=40, crop_size=32)
    for window, chunk in ((8, 4), (8, 3), (16, 1)):
        stream = WindowStream(record, window, 2, 0.5, lambda clip: transform(clip, None), chunk_positions=chunk,
                              frames_per_position=s)
        count = sum(1 for _ in stream)
        assert count == len(stream.plans) >= 15
        assert window * s <= stream.peak_cached <= (window + chunk) * s - 1, (window, chunk, stream.peak_cached)


def test_moov_lost_gives_every_window_invalid(files, caplog):
    data = _data()
    record = _record(files["moov_lost"], 298)
    with caplog.at_level(logging.WARNING, logger="adatad.data.clips"):
        examples = list(ClipLoader(data, train=False).iter_video_windows(record_to_row(record, 5)))
    assert len(examples) == count_windows(record, data) >= 4
    assert not any(e["valid"] for e in examples)
    assert all(not e["frames"].any() and e["frames"].shape == (WINDOW, 32, 32, 3) for e in examples)
    assert [e["window_start_frame"] for e in examples] == [p.window_start_frame for p in
                                                           sliding_windows(record, WINDOW, STRIDE, 0.5)]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(files["moov_lost"]) in warnings[0] and "\n" not in warnings[0]


def test_file_cut_mid_way_gives_valid_windows_then_invalid_ones(files, caplog):
    """Frames lost part-way: the windows before the loss are intact, each window comes once."""
    data = _data()
    record = _record(files["cut_mid_way"], 197)
    loader = ClipLoader(data, train=False)
    with caplog.at_level(logging.WARNING, logger="adatad.data.clips"):
        examples = list(loader.iter_video_windows(record_to_row(record, 0)))
    valid = [bool(e["valid"]) for e in examples]
    assert len(examples) == count_windows(record, data)
    assert valid[0] and not valid[-1] and valid == sorted(valid, reverse=True)  # a prefix is valid
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and str(files["cut_mid_way"]) in warnings[0]
    compared = 0
    for k, (got, r) in enumerate(zip(examples, window_rows([record], data), strict=True)):
        if not got["valid"]:
            assert not got["frames"].any()
            continue
        # The reference reads the window from the cut file on its own; on a loaded machine decord now
        # and then fails such a read that the forward stream made fine (seen in 2 of ~20 suite runs,
        # the first window included), so it is tried up to three times, and a window the reference
        # never read is not compared.
        reference = next((ex for ex in (loader.load(r, np.random.default_rng(0)) for _ in range(3)) if ex["valid"]),
                         None)
        if reference is not None:
            _assert_same_example(got, reference, f"window {k}")
            compared += 1
    assert compared >= 1


def test_train_loader_refuses_test_windows():
    with pytest.raises(ValueError, match="train=False"):
        next(ClipLoader(_data(), train=True).iter_video_windows({}))


def test_consumer_stopping_early_releases_the_reader(files, monkeypatch):
    closed = []
    real_close = video.VideoStream.close
    monkeypatch.setattr(video.VideoStream, "close", lambda self: closed.append(1) or real_close(self))
    record = _record(files["synthetic"], 298)
    windows = ClipLoader(_data(), train=False).iter_video_windows(record_to_row(record, 0))
    assert next(windows)["valid"]
    windows.close()
    assert closed == [1]
