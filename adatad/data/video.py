"""Decoding selected frames of a video file with decord.

Why a wrapper: decord's failures are assertion messages from C++ (or a bare "Error reading x...")
that do not say what is wrong with which file, and a reader left alive keeps the file and its
decoder buffers. Here every call opens one reader, decodes exactly the requested frames with
``get_batch``, releases the reader, and turns every failure into a one-line ``VideoDecodeError``
naming the file and the reason.
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


def _open(path: str, num_threads: int) -> decord.VideoReader:
    _check_file(path)
    reason = None
    try:
        reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=num_threads)
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


def _decode(reader: decord.VideoReader, path: str, indices: np.ndarray) -> np.ndarray | str:
    """The frames, or the reason they could not be decoded (so the caller raises reader-free)."""
    try:
        frames = _to_numpy(reader.get_batch(indices.tolist()))
        # Known decord workaround: seeking back releases the decoder's cached buffers, which
        # otherwise grow over many get_batch calls.
        reader.seek(0)
    except (decord.DECORDError, RuntimeError, AssertionError, IndexError) as exc:
        if "DECORDArrayCopyFromTo" in str(exc):  # its RGB row padding breaks some widths (not corruption)
            return ("decord cannot convert frames of this width (decord2 fails on some widths, e.g. 48, 96 "
                    "or 144 px); re-encode the video to another width")
        return f"failed to decode frames (corrupt or truncated): {_first_line(exc)}"
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[0] != len(indices) or frames.shape[-1] != 3:
        return f"decoder returned {frames.dtype} {frames.shape}, expected uint8 ({len(indices)}, H, W, 3)"
    return np.ascontiguousarray(frames)


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
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.size == 0 or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(f"{path}: indices must be a non-empty 1-D integer array, got {idx.dtype} {idx.shape}")
    if num_threads < 0:
        raise ValueError(f"{path}: num_threads must be >= 0 (0 = decoder's choice), got {num_threads}")
    reader = _open(path, num_threads)
    idx = np.clip(idx.astype(np.int64), 0, len(reader) - 1)
    frames = _decode(reader, path, idx)
    del reader  # one reader per call, released before returning or raising
    if isinstance(frames, str):
        raise VideoDecodeError(f"{path}: {frames}")
    return frames
