"""Where a window's frames come from: the video files (decord) or a frame store.

``ClipLoader`` asks one ``FrameSource`` for a training clip (``read``: any raw frame indices) and
for a test video's windows (``open``: a reader kept open while the video's windows are cut, read in
ascending chunks). The plans (which indices, masks, ground truth) are the same either way; only
the pixels' origin changes (``data.frame_store``).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Protocol

import numpy as np

from adatad.config import resolve_path
from adatad.data.video import VideoStream, read_frames
from adatad.data.frame_store.entry import EntryReader
from adatad.data.frame_store.spec import entry_path


class FrameReader(Protocol):
    """An open video (or store entry): ``read`` takes non-decreasing raw indices across calls."""

    def read(self, indices: np.ndarray) -> np.ndarray: ...

    def __enter__(self) -> FrameReader: ...

    def __exit__(self, *exc: object) -> None: ...


class FrameSource(Protocol):
    def read(self, video_id: str, path: str, indices: np.ndarray) -> np.ndarray: ...

    def open(self, video_id: str, path: str) -> AbstractContextManager[FrameReader]: ...


class VideoFiles:
    """Decode the video files with decord (``num_threads`` decoder threads per read); videos at a URI
    from the node's cache of at most ``cache_gb`` (``adatad/data/node_cache.py``)."""

    def __init__(self, num_threads: int = 1, cache_gb: float | None = None) -> None:
        self.num_threads = num_threads
        _bound_cache(cache_gb)

    def read(self, video_id: str, path: str, indices: np.ndarray) -> np.ndarray:
        return read_frames(path, indices, num_threads=self.num_threads)

    def open(self, video_id: str, path: str) -> VideoStream:
        return VideoStream(path, self.num_threads)


class StoredFrames:
    """Read the frames from the frame store at ``root`` (entries named by video id); a store at a URI
    through the node's cache (``cache_gb`` > 0), else by byte ranges (``EntryReader``), either way
    retried through an outage of its endpoint."""

    def __init__(self, root: str, cache_gb: float | None = None) -> None:
        self.root = root
        self.cached = cache_gb is None or cache_gb > 0
        _bound_cache(cache_gb)

    def read(self, video_id: str, path: str, indices: np.ndarray) -> np.ndarray:
        with EntryReader(entry_path(self.root, path), video_id, cached=self.cached) as entry:
            return entry.read(indices)

    def open(self, video_id: str, path: str) -> EntryReader:
        return EntryReader(entry_path(self.root, path), video_id, cached=self.cached)


def _bound_cache(cache_gb: float | None) -> None:
    if cache_gb is not None:
        from adatad.data.node_cache import set_limit

        set_limit(int(cache_gb * 2**30))


def frame_source(frame_store: str | None, num_threads: int = 1, cache_gb: float | None = None) -> FrameSource:
    """The store at ``frame_store`` (relative paths from the work root, as every config path), else the videos."""
    return StoredFrames(resolve_path(frame_store), cache_gb) if frame_store else VideoFiles(num_threads, cache_gb)
