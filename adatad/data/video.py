"""Decoding selected frames of a video file with decord.

Why a wrapper: decord's failures are assertion messages from C++ (or a bare "Error reading x...")
that do not say what is wrong with which file, and a reader left alive keeps the file and its
decoder buffers. ``read_frames`` opens one reader per call, decodes exactly the requested frames
with ``get_batch``, releases the reader, and turns every failure into a one-line
``VideoDecodeError`` naming the file and the reason. ``VideoStream`` keeps one reader open to read
a video front to back in ascending chunks (sliding test windows), decoding each frame once.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass

import numpy as np


def _import_decord():
    """Import decord (shipped by the `decord2` wheel) without its CUDA library preload.

    At import, decord2 dlopens every library under site-packages/nvidia/*/lib with RTLD_GLOBAL,
    for its GPU decoder. That includes libnvblas, which then takes over the CPU BLAS symbols:
    any later torch CPU matmul, or OpenCV gemm / SVD, in the same process segfaults. CPU decoding
    needs none of those libraries, so the ``nvidia`` package is hidden from decord's lookup while
    it imports. (If something imported decord before this module, the damage is already done.)
    """
    find_spec = importlib.util.find_spec

    def without_nvidia(name, *args, **kwargs):
        return None if name == "nvidia" else find_spec(name, *args, **kwargs)

    importlib.util.find_spec = without_nvidia
    try:
        import decord
    finally:
        importlib.util.find_spec = find_spec
    return decord


decord = _import_decord()


class VideoDecodeError(RuntimeError):
    """A video could not be read; the message names the file and the reason."""


@dataclass(frozen=True)
class VideoInfo:
    num_frames: int
    fps: float
    height: int
    width: int


def _check_file(path: str) -> None:
    """Cheap checks before handing the path to ffmpeg, whose own messages are unhelpful."""
    if not os.path.exists(path):
        raise VideoDecodeError(f"{path}: file not found")
    if not os.path.isfile(path):
        raise VideoDecodeError(f"{path}: not a regular file")
    if not os.access(path, os.R_OK):
        raise VideoDecodeError(f"{path}: not readable (permission denied)")
    if os.path.getsize(path) == 0:
        raise VideoDecodeError(f"{path}: file is empty (0 bytes)")


# decord prefixes its C++ messages with "[hh:mm:ss] /project/src/...cc:123: "; noise in a one-liner.
_DECORD_PREFIX = re.compile(r"\[\d{2}:\d{2}:\d{2}\] \S+?:\d+: ")


def _first_line(exc: BaseException) -> str:
    text = _DECORD_PREFIX.sub("", str(exc)).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _readable(path: str) -> str:
    """The file decord opens: `path`, or for a URI its copy in the node's cache (`node_cache.py`)."""
    if "://" not in path:
        _check_file(path)
        return path
    from adatad.data.node_cache import local_copy

    try:
        local = local_copy(path)
    except FileNotFoundError:
        raise VideoDecodeError(f"{path}: file not found") from None
    except OSError as exc:  # the store refused or could not be reached for longer than the retry window
        raise VideoDecodeError(f"{path}: cannot read ({exc})") from None
    if os.path.getsize(local) == 0:
        raise VideoDecodeError(f"{path}: file is empty (0 bytes)")
    return local


def _open(path: str, num_threads: int) -> decord.VideoReader:
    source = _readable(path)
    reason = None
    try:
        reader = decord.VideoReader(source, ctx=decord.cpu(0), num_threads=num_threads)
    except AssertionError:  # decord asserts on a zero frame count
        reason = "video has no frames"
    except (decord.DECORDError, RuntimeError) as exc:
        if "cannot find video stream" in str(exc):
            reason = "no video stream in the file"
        else:
            detail = _first_line(exc)
            reason = "cannot open as a video (corrupt, truncated or not a video)"
            reason += "" if detail.startswith("Error reading") else f": {detail}"  # decord's says nothing more
    # Raised outside the except block so the error does not chain decord's traceback (and with
    # it a half-built reader) as __context__.
    if reason is not None:
        raise VideoDecodeError(f"{path}: {reason}")
    if len(reader) <= 0:
        del reader
        raise VideoDecodeError(f"{path}: video has no frames")
    return reader


def _to_numpy(batch) -> np.ndarray:
    """decord returns its own NDArray under the default bridge; another bridge may be set globally."""
    if hasattr(batch, "asnumpy"):
        return batch.asnumpy()
    if hasattr(batch, "numpy"):  # torch bridge
        return batch.numpy()
    return np.asarray(batch)


def _decode(reader: decord.VideoReader, path: str, indices: np.ndarray, rewind: bool = True) -> np.ndarray | str:
    """The frames, or the reason they could not be decoded (so the caller raises reader-free).

    ``rewind``: seek back to frame 0 afterwards, the usual decord workaround for buffers growing
    over many get_batch calls on one reader (dmlc/decord#197, #208), kept for ``read_frames``.
    A forward stream must not rewind (its next read would restart from a keyframe); reading
    forward, its memory was measured flat (see ``VideoStream``).
    """
    try:
        frames = _to_numpy(reader.get_batch(indices.tolist()))
        if rewind:
            reader.seek(0)
    except (decord.DECORDError, RuntimeError, AssertionError, IndexError) as exc:
        if "DECORDArrayCopyFromTo" in str(exc):  # its RGB row padding breaks some widths (not corruption)
            return ("decord cannot convert frames of this width (decord2 fails on some widths, e.g. 48, 96 "
                    "or 144 px); re-encode the video to another width")
        return f"failed to decode frames (corrupt or truncated): {_first_line(exc)}"
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        return f"decoder returned {frames.dtype} {frames.shape}, expected uint8 ({len(indices)}, H, W, 3)"
    return np.ascontiguousarray(frames)


def _check_indices(path: str, indices: np.ndarray) -> np.ndarray:
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{path}: indices must be a non-empty 1-D integer array, got {idx.dtype} {idx.shape}")
    return idx


def _check_threads(path: str, num_threads: int) -> None:
    if num_threads < 0:
        raise ValueError(f"{path}: num_threads must be >= 0 (0 = decoder's choice), got {num_threads}")


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Frame count, fps and frame size; decodes only the first frame (to learn H and W)."""
    path = os.fspath(path)
    reader = _open(path, num_threads=1)
    num_frames, fps = len(reader), float(reader.get_avg_fps())
    first = _decode(reader, path, np.zeros(1, np.int64))
    del reader  # release the file and decoder now, not at the next garbage collection
    if isinstance(first, str):
        raise VideoDecodeError(f"{path}: {first}")
    return VideoInfo(num_frames=num_frames, fps=fps, height=int(first.shape[1]), width=int(first.shape[2]))


def read_frames(path: str | os.PathLike, indices: np.ndarray, num_threads: int = 1) -> np.ndarray:
    """Decode ``indices`` (clamped to [0, num_frames-1]) -> contiguous uint8 (T, H, W, 3).

    Clamping is deliberate: sampling plans are built from annotation frame counts, which can
    exceed what the container reports by a frame or two.
    """
    path = os.fspath(path)
    idx = _check_indices(path, indices)
    _check_threads(path, num_threads)
    reader = _open(path, num_threads)
    idx = np.clip(idx.astype(np.int64), 0, len(reader) - 1)
    frames = _decode(reader, path, idx)
    del reader  # one reader per call, released before returning or raising
    if isinstance(frames, str):
        raise VideoDecodeError(f"{path}: {frames}")
    return frames


class VideoStream:
    """One reader kept open to read a video front to back: ``read`` takes ascending indices.

    Why: overlapping test windows decoded one by one pass most frames through the decoder twice,
    plus each window's lead-in from its keyframe. A stream decodes each frame at most once.

    How decord is driven (measured on decord2 3.4): the reader remembers where it stopped, and a
    ``get_batch`` whose next index is that position decodes on without seeking. Any other
    forward index goes through decord's frame-skip loop, which on a loaded machine gives up
    after 10,000 polls of its decoder thread and returns a wrong frame ("Failed to skip frames
    effectively": 6 of 3,200 frames read at stride 4 in one run), or, in a later GOP, through a
    seek to its keyframe, which throws away the frames the decoder thread had read ahead (a
    seek at every GOP doubled the CPU time of a stream). So ``read`` asks for every frame from
    the last one decoded up to each requested index, keeping only the requested ones, and
    jumps (seeks) only over at least ``min_jump`` unneeded frames, to the keyframe before the
    next requested index. Frames are bit-identical to ``read_frames``'. There is no rewind
    after a read (unlike ``read_frames``): reading forward, decord's memory stays flat (measured
    over a 30-minute 320x180 video).

    Indices are clamped as in ``read_frames``; a read may repeat the index the previous one
    ended on (served from the kept last frame); a backward read is refused (ValueError), it
    would decode a GOP again. After a ``VideoDecodeError`` the reader is released and every
    later read raises it again. ``decoded_frames`` counts the frames passed through the decoder.
    """

    def __init__(self, path: str | os.PathLike, num_threads: int = 1, batch_frames: int = 64,
                 min_jump: int = 64) -> None:
        self.path = os.fspath(path)
        _check_threads(self.path, num_threads)
        if batch_frames < 1 or min_jump < 1:
            raise ValueError(f"{self.path}: batch_frames and min_jump must be >= 1, got {batch_frames}, {min_jump}")
        self.batch_frames, self.min_jump = batch_frames, min_jump
        self._reader: decord.VideoReader | None = _open(self.path, num_threads)
        self.num_frames = len(self._reader)
        self.fps = float(self._reader.get_avg_fps())
        self.key_indices = np.asarray(self._reader.get_key_indices(), dtype=np.int64).reshape(-1)
        self.decoded_frames = 0
        self._next = 0  # first frame the decoder has not passed through
        self._last_index = -1  # last index returned, and its frame
        self._last_frame: np.ndarray | None = None
        self._error: VideoDecodeError | None = None

    def __enter__(self) -> VideoStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the file and the decoder now, not at the next garbage collection."""
        self._reader = None
        self._last_frame = None

    def _keyframe_before(self, index: int) -> int:
        at = int(np.searchsorted(self.key_indices, index, side="right")) - 1
        return int(self.key_indices[at]) if at >= 0 else 0

    def _passes(self, wanted: np.ndarray) -> np.ndarray:
        """Frames to request for the ascending unique ``wanted``: runs ending at each wanted index."""
        runs, prev = [], self._next - 1
        for j in wanted.tolist():
            key = self._keyframe_before(j)
            start = key if key - (prev + 1) >= self.min_jump else prev + 1
            runs.append(np.arange(start, j + 1, dtype=np.int64))
            prev = j
        return np.concatenate(runs)

    def read(self, indices: np.ndarray) -> np.ndarray:
        """Decode ``indices`` (non-decreasing, none before the previous read's last) -> uint8 (T, H, W, 3)."""
        idx = _check_indices(self.path, indices)
        if self._error is not None:
            raise self._error
        if self._reader is None:
            raise ValueError(f"{self.path}: stream is closed")
        idx = np.clip(idx.astype(np.int64), 0, self.num_frames - 1)
        if (np.diff(idx) < 0).any() or idx[0] < self._last_index:
            raise ValueError(f"{self.path}: stream reads must move forward; got index {int(idx.min())} "
                             f"after {max(self._last_index, int(idx[0]))}")
        wanted = np.unique(idx[idx > self._last_index])
        kept = self._decode_wanted(wanted) if wanted.size else None
        shape = self._last_frame.shape if kept is None else kept.shape[1:]
        out = np.empty((len(idx), *shape), np.uint8)
        fresh = idx > self._last_index
        if kept is not None:
            out[fresh] = kept[np.searchsorted(wanted, idx[fresh])]
        if not fresh.all():
            out[~fresh] = self._last_frame
        self._last_index = int(idx[-1])
        self._last_frame = out[-1].copy()
        return out

    def _decode_wanted(self, wanted: np.ndarray) -> np.ndarray:
        passes = self._passes(wanted)
        kept: np.ndarray | None = None
        for at in range(0, len(passes), self.batch_frames):
            batch = passes[at:at + self.batch_frames]
            frames = _decode(self._reader, self.path, batch, rewind=False)
            if isinstance(frames, str):
                self.close()
                self._error = VideoDecodeError(f"{self.path}: {frames}")
                raise self._error
            self.decoded_frames += len(batch)
            self._next = int(batch[-1]) + 1
            if kept is None:
                kept = np.empty((len(wanted), *frames.shape[1:]), np.uint8)
            hit = np.isin(batch, wanted)
            kept[np.searchsorted(wanted, batch[hit])] = frames[hit]
        return kept
