"""inspect_video (adatad.data.inspect) on one tiny synthetic mp4 and a missing file.

A real truncated file is in tests/test_check_data.py (its `tail_cut` video). Here the frames past
a cut are simulated instead: in a single-GOP video like the synthetic one, decord's read-ahead
thread reaches a damaged tail while the probe decodes frame 0 in some runs, not in others.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from adatad.data import inspect
from adatad.data.inspect import inspect_video, inspect_videos
from adatad.data.video import VideoDecodeError
from adatad.datasets.synthetic import VIDEO_DIR, generate_dataset


@pytest.fixture(scope="module")
def good(tmp_path_factory) -> Path:
    """A 20-frame, 10 fps, 64x48 synthetic video."""
    root = tmp_path_factory.mktemp("inspect")
    generate_dataset(root, num_train=1, num_test=0, num_classes=1, duration_s=2.0, fps=10, width=64, height=48)
    return next((root / VIDEO_DIR).glob("*.mp4"))


@pytest.fixture()
def cut_after_frame_9(monkeypatch) -> list[int]:
    """Frames after 9 fail to decode, as in a file whose tail is lost; returns the frames asked for."""
    real, asked = inspect.read_frames, []

    def read_frames(path: str, indices: np.ndarray) -> np.ndarray:
        asked.extend(int(i) for i in indices)
        if max(indices) > 9:
            raise VideoDecodeError(f"{path}: failed to decode frames (corrupt or truncated): Error sending packet.")
        return real(path, indices)

    monkeypatch.setattr(inspect, "read_frames", read_frames)
    return asked


def test_a_good_video_is_usable_with_its_length(good) -> None:
    result = inspect_video(good)
    assert result.problem is None and result.path == str(good)
    assert (result.info.num_frames, result.info.fps, result.info.height, result.info.width) == (20, 10.0, 48, 64)
    assert result.duration == pytest.approx(2.0)


def test_a_missing_file_is_one_line_and_no_info(tmp_path) -> None:
    missing = tmp_path / "missing.mp4"
    result = inspect_video(missing)
    assert result.info is None and result.problem == f"{missing}: file not found"
    with pytest.raises(AssertionError, match="file not found"):
        _ = result.duration


def test_last_frame_bounds_the_frame_that_must_decode(good, cut_after_frame_9) -> None:
    cut = inspect_video(good)  # the decoder's last frame, 19: past the cut
    assert cut.problem == (f"{good}: failed to decode frames (corrupt or truncated): Error sending packet. "
                           "(frame 19 of 20: the file is probably truncated)")
    assert cut.info.num_frames == 20  # what the decoder said is kept
    assert inspect_video(good, last_frame=99).problem == cut.problem  # past the end: the decoder's last frame
    assert cut_after_frame_9 == [19, 19]
    assert inspect_video(good, last_frame=5).problem is None  # the caller needs no frame past the cut
    assert inspect_video(good, last_frame=0).problem is None  # frame 0: decoded by the probe already
    assert cut_after_frame_9 == [19, 19, 5]


def test_a_bad_fps_is_a_problem_only_when_required(good, monkeypatch) -> None:
    real = inspect.probe_video
    monkeypatch.setattr(inspect, "probe_video", lambda path: dataclasses.replace(real(path), fps=float("nan")))
    result = inspect_video(good)
    assert result.problem == f"{good}: the decoder reports nan fps (expected > 0); re-encode the video with a frame rate"
    assert result.info.num_frames == 20
    assert inspect_video(good, require_fps=False).problem is None  # the caller has the fps from elsewhere


def test_inspect_videos_keeps_the_order_and_reports_progress(good, tmp_path) -> None:
    seen: list[tuple[int, int]] = []
    paths = [str(tmp_path / "missing.mp4"), str(good)]
    results = inspect_videos(paths, workers=1, progress=lambda done, total: seen.append((done, total)))
    assert [r.path for r in results] == paths and seen == [(1, 2), (2, 2)]
    assert results[0].problem.endswith("file not found") and results[1].problem is None
