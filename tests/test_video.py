"""adatad.data.video: decoding the requested frames of real H.264 files, and clear errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest

from adatad.data import video
from adatad.data.video import VideoDecodeError, VideoInfo, VideoStream, probe_video, read_frames

NUM_FRAMES, HEIGHT, WIDTH, FPS = 40, 48, 64, 25
LEVEL_STEP = 6  # frame i is a flat grey image of level 6 * i, so its content names its index


def _write_mp4(path: Path, frames: np.ndarray, fps: int = FPS, faststart: bool = False) -> Path:
    options = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"crf": "8", "g": "8"}
        for img in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")))
        container.mux(stream.encode(None))
    return path


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("videos")
    levels = (np.arange(NUM_FRAMES) * LEVEL_STEP).astype(np.uint8)
    grey = np.broadcast_to(levels[:, None, None, None], (NUM_FRAMES, HEIGHT, WIDTH, 3)).copy()
    # 112 px wide: decord2 3.4 fails on a few widths (16, 24, 32, 48, 96, 144 seen), not this one
    noise = np.random.default_rng(0).integers(0, 256, (120, 64, 112, 3), dtype=np.uint8)
    paths = {
        "grey": _write_mp4(root / "grey.mp4", grey),
        "noise": _write_mp4(root / "noise.mp4", noise),
        "noise_faststart": _write_mp4(root / "noise_faststart.mp4", noise, faststart=True),
    }
    (root / "empty.mp4").write_bytes(b"")
    paths["empty"] = root / "empty.mp4"
    (root / "text.mp4").write_text("this is a text file, not a video\n" * 50)
    paths["text"] = root / "text.mp4"
    for name in ("noise", "noise_faststart"):  # cut in half: moov lost / frames lost
        data = paths[name].read_bytes()
        paths[f"{name}_half"] = root / f"{name}_half.mp4"
        paths[f"{name}_half"].write_bytes(data[: len(data) // 2])
    with av.open(str(root / "no_frames.mp4"), "w") as container:  # a stream was declared, nothing encoded
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height = WIDTH, HEIGHT
        container.start_encoding()  # writes the header even though no frame follows
        container.mux(stream.encode(None))
    paths["no_frames"] = root / "no_frames.mp4"
    return paths


def _frame_index(frame: np.ndarray) -> int:
    return int(round(float(frame.mean()) / LEVEL_STEP))


def test_probe_video_reports_count_fps_and_size(videos):
    info = probe_video(videos["grey"])
    assert info == VideoInfo(num_frames=NUM_FRAMES, fps=float(FPS), height=HEIGHT, width=WIDTH)


def test_read_frames_returns_the_requested_frames_by_content(videos):
    indices = np.array([3, 0, 17, 17, 39, 25])
    frames = read_frames(videos["grey"], indices)
    assert frames.dtype == np.uint8 and frames.shape == (len(indices), HEIGHT, WIDTH, 3)
    assert frames.flags["C_CONTIGUOUS"]
    assert [_frame_index(f) for f in frames] == indices.tolist()
    # flat frames decode flat (a colour or layout mix-up would not)
    assert np.abs(frames.astype(int) - (indices * LEVEL_STEP)[:, None, None, None]).max() <= 3


def test_read_frames_clamps_out_of_range_indices(videos):
    frames = read_frames(videos["grey"], np.array([-5, -1, 0, NUM_FRAMES - 1, NUM_FRAMES, 10_000]))
    assert [_frame_index(f) for f in frames] == [0, 0, 0, NUM_FRAMES - 1, NUM_FRAMES - 1, NUM_FRAMES - 1]


def test_read_frames_with_two_threads_matches_one_thread(videos):
    indices = np.arange(0, 120, 7)
    one = read_frames(videos["noise"], indices, num_threads=1)
    two = read_frames(videos["noise"], indices, num_threads=2)
    np.testing.assert_array_equal(one, two)


def test_bad_arguments_are_rejected(videos):
    with pytest.raises(ValueError, match="indices"):
        read_frames(videos["grey"], np.array([], np.int64))
    with pytest.raises(ValueError, match="indices"):
        read_frames(videos["grey"], np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="num_threads"):
        read_frames(videos["grey"], np.arange(3), num_threads=-1)


def _assert_clear_error(path: Path, reason: str, call=None) -> None:
    call = call or (lambda p: read_frames(p, np.arange(4)))
    with pytest.raises(VideoDecodeError) as info:
        call(path)
    message = str(info.value)
    assert str(path) in message, message
    assert reason in message, message
    assert "\n" not in message, message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("empty", "empty"),
        ("text", "cannot open as a video"),
        ("noise_half", "cannot open as a video"),  # moov atom (at the end) cut away
        ("no_frames", "no video stream"),
    ],
)
def test_unreadable_files_raise_a_one_line_error_naming_the_file(videos, name, reason):
    _assert_clear_error(videos[name], reason)
    _assert_clear_error(videos[name], reason, call=probe_video)


def test_truncated_faststart_file_fails_at_decode(videos):
    # The header survives the cut, so the file opens; the frames after the cut are gone.
    with pytest.raises(VideoDecodeError) as info:
        read_frames(videos["noise_faststart_half"], np.arange(120))
    assert str(videos["noise_faststart_half"]) in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_file_and_directory(videos, tmp_path):
    _assert_clear_error(tmp_path / "missing.mp4", "file not found")
    _assert_clear_error(tmp_path, "not a regular file")


def test_unreadable_permissions(videos, monkeypatch):
    # Tests run as root, for whom chmod 000 does not deny reading, so the permission check
    # (os.access) is made to answer "no" for this one file.
    target = os.fspath(videos["grey"])
    real_access = os.access
    monkeypatch.setattr(video.os, "access", lambda p, mode: False if os.fspath(p) == target else real_access(p, mode))
    _assert_clear_error(videos["grey"], "not readable")


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc to count open files")
def test_no_file_handles_leak_over_many_calls(videos):
    read_frames(videos["grey"], np.arange(4))  # warm up decord's one-time state
    before = _open_fds()
    for i in range(40):
        read_frames(videos["grey"], np.array([i % NUM_FRAMES, 0]))
        probe_video(videos["grey"])
        with pytest.raises(VideoDecodeError):
            read_frames(videos["noise_faststart_half"], np.arange(120))
        with pytest.raises(VideoDecodeError):
            read_frames(videos["text"], np.arange(2))
    for i in range(20):
        with VideoStream(videos["grey"]) as stream:
            stream.read(np.array([i, i + 1]))
        with pytest.raises(VideoDecodeError), VideoStream(videos["noise_faststart_half"]) as stream:
            stream.read(np.arange(120))
    assert _open_fds() == before


def test_importing_the_decoder_keeps_cpu_blas_working():
    # decord2 preloads libnvblas at import, after which CPU BLAS calls segfault; the module
    # hides it. A fresh interpreter, importing video.py first, then torch and OpenCV BLAS calls.
    code = ("import adatad.data.video, numpy as np, torch, cv2; a = torch.rand(64, 64); (a @ a).sum().item(); "
            "cv2.gemm(np.random.rand(64, 64), np.random.rand(64, 64), 1, None, 0); print('ok')")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr[-2000:]


# ----------------------------------------------------------------------------------------------
# VideoStream: one reader, ascending reads


def test_stream_reads_in_chunks_equal_read_frames(videos):
    indices = np.arange(0, 120, 3)
    with VideoStream(videos["noise"], batch_frames=5) as stream:
        assert (stream.num_frames, stream.fps) == (120, float(FPS))
        assert stream.key_indices[0] == 0 and len(stream.key_indices) > 5  # a keyframe every 8 frames
        chunks = [stream.read(indices[i:i + 7]) for i in range(0, len(indices), 7)]
    np.testing.assert_array_equal(np.concatenate(chunks), read_frames(videos["noise"], indices))


def test_stream_clamps_repeats_and_refuses_to_go_back(videos):
    with VideoStream(videos["grey"]) as stream:
        first = stream.read(np.array([-3, 0, 0, 5]))
        assert [_frame_index(f) for f in first] == [0, 0, 0, 5]
        again = stream.read(np.array([5, 5, 6]))  # may start where the last read ended
        assert [_frame_index(f) for f in again] == [5, 5, 6]
        tail = stream.read(np.array([NUM_FRAMES - 1, NUM_FRAMES + 10]))
        assert [_frame_index(f) for f in tail] == [NUM_FRAMES - 1] * 2
        with pytest.raises(ValueError, match="must move forward"):
            stream.read(np.array([3]))
        with pytest.raises(ValueError, match="must move forward"):
            stream.read(np.array([NUM_FRAMES - 1, NUM_FRAMES - 2]))
    with pytest.raises(ValueError, match="closed"):
        stream.read(np.array([NUM_FRAMES - 1]))


def test_stream_bad_arguments(videos):
    with pytest.raises(ValueError, match="num_threads"):
        VideoStream(videos["grey"], num_threads=-1)
    with pytest.raises(ValueError, match="batch_frames and min_jump"):
        VideoStream(videos["grey"], batch_frames=0)
    with VideoStream(videos["grey"]) as stream, pytest.raises(ValueError, match="indices"):
        stream.read(np.array([], np.int64))


@pytest.mark.parametrize(("name", "reason"), [("empty", "empty"), ("text", "cannot open as a video"),
                                              ("noise_half", "cannot open as a video")])
def test_stream_unreadable_files_raise_a_one_line_error(videos, name, reason):
    _assert_clear_error(videos[name], reason, call=VideoStream)


def test_stream_truncated_file_fails_at_the_lost_frames_and_stays_failed(videos):
    path = videos["noise_faststart_half"]
    with VideoStream(path) as stream:
        assert stream.read(np.arange(0, 20)).shape == (20, 64, 112, 3)  # before the cut
        with pytest.raises(VideoDecodeError) as info:
            stream.read(np.arange(20, 120))
        assert str(path) in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(VideoDecodeError):
            stream.read(np.arange(120, 121))
