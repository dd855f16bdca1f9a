"""Building one video's entry: decode its grid frames once, front to back, resize, encode, write.

The video is read as a stream (``VideoStream``: every frame passes the decoder once, as validation's
decode-once path reads it), 64 stored frames at a time, so memory stays at one chunk whatever the
video's length. Used by ``pipelines/prepare_frames.py`` (one Ray task per video) and by tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from adatad.data.transforms import ResizeShortSide
from adatad.data.video import VideoDecodeError, VideoStream
from adatad.data.frame_store.entry import ROWS_PER_GROUP, EntryInfo, FrameStoreError, read_entry_info, write_entry
from adatad.data.frame_store.fingerprint import source_fingerprint
from adatad.data.frame_store.spec import StoreSpec, entry_name, entry_path
from adatad.locations import as_path


@dataclass(frozen=True)
class VideoToStore:
    """One video a build stores: its id (for messages), file and the record's frame count."""

    video_id: str
    path: str
    record_frames: int | None = None  # None: the decoder's count (what training uses then)


@dataclass(frozen=True)
class BuiltEntry:
    video_id: str
    frames: int = 0
    bytes: int = 0
    cpu_s: float = 0.0
    video_hours: float = 0.0
    error: str | None = None  # the one-line reason the video could not be stored


def entry_is_current(root: str | Path, video: VideoToStore, spec: StoreSpec, fingerprint: str | None = None) -> bool:
    """True when the video's entry exists, was made with ``spec`` from this very file (fingerprint) and
    for its record's frame count."""
    path = entry_path(root, video.path)
    if not path.is_file():
        return False
    try:
        info = read_entry_info(path)
        fingerprint = fingerprint or source_fingerprint(video.path)
    except (OSError, FrameStoreError):
        return False
    return (info.spec == spec and info.source == fingerprint
            and (video.record_frames is None or info.record_frames == video.record_frames))


def build_entry(root: str | Path, video: VideoToStore, spec: StoreSpec, num_threads: int = 1) -> BuiltEntry:
    """Store ``video`` in the store at ``root`` (its entry replaced atomically); never raises for a bad
    video: a video that cannot be decoded comes back with ``error`` and leaves nothing behind."""
    start = time.process_time()
    try:
        with VideoStream(video.path, num_threads=num_threads) as stream:  # its one-line errors come first
            fingerprint = source_fingerprint(video.path)
            record_frames = video.record_frames or stream.num_frames
            indices = spec.stored_indices(stream.num_frames, record_frames)
            chunks = _encoded_chunks(stream, indices, spec)
            first, size = next(chunks)
            info = EntryInfo(video_id=entry_name(video.path), source=fingerprint, source_frames=stream.num_frames,
                             source_fps=stream.fps, source_size=first, size=size,
                             record_frames=record_frames, spec=spec)
            written = write_entry(entry_path(root, video.path), info, chunks)
            hours = stream.num_frames / stream.fps / 3600 if stream.fps > 0 else 0.0
    except (VideoDecodeError, OSError) as exc:
        reason = str(exc) if isinstance(exc, VideoDecodeError) else f"{video.path}: {exc.strerror or exc}"
        return BuiltEntry(video.video_id, cpu_s=time.process_time() - start, error=reason)
    return BuiltEntry(video.video_id, frames=len(indices), bytes=written, cpu_s=time.process_time() - start,
                      video_hours=hours)


def _encoded_chunks(stream: VideoStream, indices: np.ndarray, spec: StoreSpec
                    ) -> Iterator[tuple[np.ndarray, list[bytes]]]:
    """First yields (source size, stored size), then (indices, encoded frames) per row group."""
    codec = spec.frame_codec()
    resize = ResizeShortSide(spec.short_side)
    rng = np.random.default_rng(0)  # ResizeShortSide draws nothing; the transform signature needs one
    announced = False
    for at in range(0, len(indices), ROWS_PER_GROUP):
        chunk = indices[at:at + ROWS_PER_GROUP]
        frames = stream.read(chunk)
        source = frames.shape[1:3]
        if min(source) > spec.short_side:
            frames = resize(frames, rng)
        if not announced:
            yield tuple(int(v) for v in source), tuple(int(v) for v in frames.shape[1:3])
            announced = True
        yield chunk, [codec.encode(frame) for frame in frames]


def remove_partial_entries(root: str | Path) -> int:
    """Delete temporary files a killed build left in the store (``.<name>.*.tmp``); returns how many.
    A store at a URI has none: an entry is uploaded whole or not at all."""
    folder = as_path(root) / "videos"
    if not isinstance(folder, Path):
        return 0
    removed = 0
    if folder.is_dir():
        for leftover in folder.glob(".*.tmp"):
            leftover.unlink(missing_ok=True)
            removed += 1
    return removed

