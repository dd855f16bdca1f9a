"""One video file as the decoder sees it: opened, its first and last needed frame decoded, fps checked.

Why one function for it: the data check (`adatad.data.check`, threads), `prepare` (worker processes,
:func:`inspect_videos`) and `pipelines/detect.py` (Ray tasks) all ask whether a file is a usable
video before anything expensive reads it. They differ only in which last frame matters (an
annotation may need fewer frames than the file has) and whether the decoder's fps is needed (an
annotation may give it). A truncated file whose header survived opens fine and fails only at the
frames after the cut, hence the last frame.

Why worker processes in :func:`inspect_videos`: a user's folder may hold hundreds of videos, and a
damaged file can crash ffmpeg inside decord; in a worker process that costs one inspection
(reported as a problem), not the command. Workers are spawned (not forked: the caller may hold
threads) and import decord only through `adatad.data.video`, like every other decoder user.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from adatad.data.quiet_decoder import quiet_decoder
from adatad.data.video import VideoDecodeError, VideoInfo, probe_video, read_frames


@dataclass(frozen=True)
class VideoInspection:
    """The decoder's view of one file: usable when `problem` is None, else `problem` is one line naming it.

    `info` is None only when the file could not be opened; a problem found after opening (bad fps,
    an undecodable last frame) keeps what the decoder reported.
    """

    path: str
    info: VideoInfo | None = None
    problem: str | None = None

    @property
    def duration(self) -> float:
        """Seconds by the decoder's clock (frames / fps)."""
        assert self.info is not None, self.problem
        return self.info.num_frames / self.info.fps


def inspect_video(path: str | os.PathLike, last_frame: int | None = None,
                  require_fps: bool = True) -> VideoInspection:
    """Open `path` with the real decoder and decode its first frame and frame `last_frame`.

    `last_frame`: the last frame the caller will read (e.g. the annotation's frame count - 1); the
    decoder's last frame when None or past it. `require_fps`: a fps that is not finite and > 0 is
    a problem (seconds need it); False when the caller has the fps from elsewhere. The decoder's
    own stderr noise is the caller's to silence (:func:`quiet_decoder` is process-wide).
    """
    path = os.fspath(path)
    try:
        info = probe_video(path)  # missing, empty, unreadable, not a video, no frames, first frame
    except VideoDecodeError as exc:
        return VideoInspection(path, problem=str(exc))
    if require_fps and not (math.isfinite(info.fps) and info.fps > 0):
        return VideoInspection(path, info, f"{path}: the decoder reports {info.fps!r} fps (expected > 0); "
                                           "re-encode the video with a frame rate")
    last = info.num_frames - 1 if last_frame is None else min(last_frame, info.num_frames - 1)
    if last > 0:  # frame 0 was decoded by the probe
        try:
            read_frames(path, np.array([last], np.int64))
        except VideoDecodeError as exc:
            return VideoInspection(path, info, f"{exc} (frame {last} of {info.num_frames}: the file is probably "
                                               "truncated)")
    return VideoInspection(path, info)


def _inspect_quietly(path: str) -> VideoInspection:
    with quiet_decoder():
        return inspect_video(path)


def inspect_videos(paths: Sequence[str], workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[VideoInspection]:
    """:func:`inspect_video` for every path, in `workers` spawned processes (1 = in this process).

    Results come in the order of `paths`; `progress(done, total)` is called as they arrive. The
    decoder's stderr noise is silenced.
    """
    paths = list(paths)
    workers = max(1, min(workers or min(8, os.cpu_count() or 1), len(paths) or 1))
    results: list[VideoInspection] = []
    with contextlib.ExitStack() as stack:
        if workers == 1 or len(paths) < 2:
            outcomes = map(_inspect_quietly, paths)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            outcomes = (_result(f, p) for f, p in zip([pool.submit(_inspect_quietly, p) for p in paths], paths,
                                                      strict=True))
        for outcome in outcomes:
            results.append(outcome)
            if progress is not None:
                progress(len(results), len(paths))
    return results


def _result(future: Future, path: str) -> VideoInspection:
    try:
        return future.result()
    except Exception as exc:  # the worker died (decoder crash) or could not start
        return VideoInspection(path, problem=f"{path}: the decoder process failed while probing it "
                                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
