"""All sliding test windows of one video from a single front-to-back decode.

Why: test windows overlap (50 % by default, docs/recipe.md section 2), so decoding each window on
its own passes every frame through the decoder about twice, plus a lead-in from the keyframe
before each window (1.8x the video's frames on THUMOS-14). Here the video is read once, in
ascending chunks of positions (``VideoStream``); each position is decoded and transformed once
and kept only while a later window still needs it, so memory stays near two windows (the
cache plus the window being assembled) however long the video is.

With ``frames_per_position = s > 1`` the unit of the cache is a frame of the read grid
(``frame_stride / s`` raw frames apart) instead of a position; at ``s = 1`` the two are the same.

With ``sampling="resize"`` (ActivityNet, :mod:`adatad.data.resize_sampling`) the video is one
window of frames spread over all of it; it is read front to back in chunks of its (non-decreasing)
frame indices, each chunk transformed as it arrives, so only the transformed window is held.

Windows, masks and frames equal the per-window path's (``sliding_windows`` plans, decoded with
``read_frames`` and transformed as a whole clip) exactly, provided the transform maps each frame
on its own (``per_frame=True``; the test transform, resize short side + center crop, does). For
a transform that looks at the whole clip, pass ``per_frame=False``: raw frames are cached and
the transform runs on each assembled window instead.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager

import numpy as np

from adatad.data.annotations import VideoRecord
from adatad.data.resize_sampling import resize_window
from adatad.data.sampling import ClipPlan, frame_step, read_grid_length, sliding_windows
from adatad.data.video import VideoStream

ReaderFactory = Callable[[], AbstractContextManager]  # opens the video (or store entry) for ascending reads

FrameTransform = Callable[[np.ndarray], np.ndarray]  # uint8 (T, H, W, 3) -> uint8 (T, H', W', 3)


class _FrameCache:
    """Consecutive frames of the read grid held as decoded chunks, oldest first."""

    def __init__(self) -> None:
        self.chunks: deque[tuple[int, np.ndarray]] = deque()  # (first read-grid index, frames)

    @property
    def size(self) -> int:
        """Frames held (what bounds memory)."""
        return sum(len(frames) for _, frames in self.chunks)

    def append(self, first: int, frames: np.ndarray) -> None:
        self.chunks.append((first, frames))

    def drop_before(self, index: int) -> None:
        """Release chunks that end before ``index`` (a chunk reaching past it stays whole)."""
        while self.chunks and self.chunks[0][0] + len(self.chunks[0][1]) <= index:
            self.chunks.popleft()

    def window(self, start: int, stop: int, length: int) -> np.ndarray:
        """Frames [start, stop) as a new (length, ...) array, edge-padded with the last one."""
        shape = self.chunks[0][1].shape[1:]
        out = np.empty((length, *shape), np.uint8)
        for first, frames in self.chunks:
            lo, hi = max(start, first), min(stop, first + len(frames))
            if lo < hi:
                out[lo - start:hi - start] = frames[lo - first:hi - first]
        out[stop - start:] = out[stop - start - 1]
        return out


class WindowStream:
    """The sliding windows of ``record`` (``self.plans``, in order) and, iterated, their frames.

    Iterating yields ``(plan, frames)`` per window, frames uint8 (window_size * frames_per_position,
    H, W, 3) after ``transform``; a decode failure raises ``VideoDecodeError`` at the window that
    needed the missing frames (earlier windows were already yielded). ``chunk_positions`` positions
    (``chunk_positions * frames_per_position`` frames) are decoded per ``VideoStream.read``;
    ``peak_cached`` reports the most frames held at once (at most
    ``(window_size + chunk_positions) * frames_per_position - 1``). ``open_reader`` opens what the
    frames are read from (default: the video through ``VideoStream``; a frame store entry reads the
    same indices, ``adatad.data.frame_source``).
    """

    def __init__(self, record: VideoRecord, window_size: int, frame_stride: int, overlap_ratio: float,
                 transform: FrameTransform, per_frame: bool = True, num_threads: int = 1,
                 chunk_positions: int = 64, frames_per_position: int = 1, sampling: str = "sliding",
                 open_reader: ReaderFactory | None = None) -> None:
        if chunk_positions < 1:
            raise ValueError(f"video '{record.video_id}': chunk_positions must be >= 1, got {chunk_positions}")
        if sampling not in ("sliding", "resize"):
            raise ValueError(f"video '{record.video_id}': sampling must be 'sliding' or 'resize', got {sampling!r}")
        self.record, self.resize = record, sampling == "resize"
        self.window_frames = window_size * frames_per_position
        if self.resize:
            self.plans: list[ClipPlan] = [resize_window(record, window_size, frames_per_position)]
        else:
            self.plans = sliding_windows(record, window_size, frame_stride, overlap_ratio, frames_per_position)
            self.step = frame_step(frame_stride, frames_per_position)  # raw frames between read frames
            self.num_read = read_grid_length(record.num_frames, frame_stride, frames_per_position)
        self.transform, self.per_frame = transform, per_frame
        self.num_threads, self.chunk_frames = num_threads, chunk_positions * frames_per_position
        self.open_reader = open_reader or (lambda: VideoStream(record.path, num_threads))
        self.peak_cached = 0

    def __len__(self) -> int:
        return len(self.plans)

    def __iter__(self) -> Iterator[tuple[ClipPlan, np.ndarray]]:
        if self.resize:
            yield from self._resized()
            return
        cache = _FrameCache()
        decoded_to = 0  # read-grid frames before this one have been decoded (or were never needed)
        with self.open_reader() as stream:
            for plan in self.plans:
                start = plan.window_start_frame // self.step
                # Real frames are a prefix: the whole window, or what is left of the read grid
                # (the mask can count fewer positions: it floors real frames / frames_per_position).
                stop = min(start + self.window_frames, self.num_read)
                cache.drop_before(start)
                decoded_to = max(decoded_to, start)
                while decoded_to < stop:
                    end = min(stop, decoded_to + self.chunk_frames)
                    frames = stream.read(np.arange(decoded_to, end, dtype=np.int64) * self.step)
                    cache.append(decoded_to, self.transform(frames) if self.per_frame else frames)
                    self.peak_cached = max(self.peak_cached, cache.size)
                    decoded_to = end
                window = cache.window(start, stop, self.window_frames)
                yield plan, window if self.per_frame else self.transform(window)

    def _resized(self) -> Iterator[tuple[ClipPlan, np.ndarray]]:
        """The one window of a resized video: its frame indices read in ascending chunks."""
        plan = self.plans[0]
        parts = []
        with self.open_reader() as stream:
            for at in range(0, len(plan.frame_indices), self.chunk_frames):
                frames = stream.read(plan.frame_indices[at:at + self.chunk_frames])
                parts.append(self.transform(frames) if self.per_frame else frames)
                self.peak_cached = max(self.peak_cached, sum(len(p) for p in parts))
        window = np.concatenate(parts)
        yield plan, window if self.per_frame else self.transform(window)
