"""Probe many videos with the real decoder at once: frame count, fps, frame size, first and last frame.

Why worker processes: a user's folder may hold hundreds of videos, and a damaged file can crash
ffmpeg inside decord; in a worker process that costs one probe (reported as a problem), not the
command. Workers are spawned (not forked: the caller may hold threads) and import decord only
through `adatad.data.video`, like every other decoder user.
"""

from __future__ import annotations

import contextlib
import math
import multiprocessing
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np

from adatad.data.check import quiet_decoder
from adatad.data.video import VideoDecodeError, VideoInfo, probe_video, read_frames


@dataclass(frozen=True)
class ProbedVideo:
    """The decoder's view of one file: `info` when it is usable, else `problem` (one line naming the file)."""

    path: str
    info: VideoInfo | None = None
    problem: str | None = None

    @property
    def duration(self) -> float:
        """Seconds by the decoder's clock (frames / fps)."""
        assert self.info is not None, self.problem
        return self.info.num_frames / self.info.fps


def inspect_video(path: str) -> ProbedVideo:
    """Open `path`, decode its first and last frame; a bad fps is a problem too (seconds need it)."""
    with quiet_decoder():
        try:
            info = probe_video(path)  # missing, empty, unreadable, not a video, no frames, first frame
        except VideoDecodeError as exc:
            return ProbedVideo(path, problem=str(exc))
        if not (math.isfinite(info.fps) and info.fps > 0):
            return ProbedVideo(path, problem=f"{path}: the decoder reports {info.fps!r} fps (expected > 0); "
                                             "re-encode the video with a frame rate")
        last = info.num_frames - 1
        try:
            if last > 0:
                read_frames(path, np.array([last], np.int64))
        except VideoDecodeError as exc:
            return ProbedVideo(path, problem=f"{exc} (frame {last} of {info.num_frames}: the file is probably "
                                             "truncated)")
    return ProbedVideo(path, info=info)


def inspect_videos(paths: Sequence[str], workers: int | None = None,
                   progress: Callable[[int, int], None] | None = None) -> list[ProbedVideo]:
    """:func:`inspect_video` for every path, in `workers` spawned processes (1 = in this process).

    Results come in the order of `paths`; `progress(done, total)` is called as they arrive.
    """
    paths = list(paths)
    workers = max(1, min(workers or min(8, os.cpu_count() or 1), len(paths) or 1))
    results: list[ProbedVideo] = []
    with contextlib.ExitStack() as stack:
        if workers == 1 or len(paths) < 2:
            outcomes = map(inspect_video, paths)
        else:
            pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")))
            outcomes = (_result(f, p) for f, p in zip([pool.submit(inspect_video, p) for p in paths], paths,
                                                      strict=True))
        for outcome in outcomes:
            results.append(outcome)
            if progress is not None:
                progress(len(results), len(paths))
    return results


def _result(future, path: str) -> ProbedVideo:
    try:
        return future.result()
    except Exception as exc:  # the worker died (decoder crash) or could not start
        return ProbedVideo(path, problem=f"{path}: the decoder process failed while probing it "
                                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})")
