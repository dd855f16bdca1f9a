"""How one stored frame is compressed: three codecs, chosen by measurement.

Measured on one core (benchmarks/README.md, "Frame store"; a 768-frame 320x180 window, Parquet
reads and decoding included): H.264 through decord 1.1-1.3 CPU s; from the store:

* ``yuv420-zstd`` (default): the frame as I420 planes (4:2:0 chroma, as the H.264 source carries
  it) compressed with zstd level 3: ~0.09 CPU s, ~50 KB per frame, PSNR ~53 dB against the
  decoder's RGB (only the RGB -> YUV rounding is lost);
* ``rgb-zstd``: the decoder's RGB bytes, zstd: lossless (bit-identical frames), ~0.13 CPU s, ~90 KB;
* ``jpeg``: libjpeg-turbo through OpenCV at ``quality`` (default 90): ~0.18 CPU s, ~18 KB, PSNR
  ~38 dB on these noisy synthetic frames (real footage: ~40 dB). The smallest files.

JPEG alone cannot reach the store's target (decode + augment <= 0.35 CPU s per training clip with
~0.15 s of augmentation), QOI and PNG cost more CPU than the zstd codecs for more bytes, and
WebP 3.5x the CPU of JPEG: the table in benchmarks/README.md has them all.

Why each frame is its own zstd frame instead of Parquet's page compression: a page holds several
frames, so a coarser grid served from a finer store (every k-th frame) would decompress them all.
zstd comes from pyarrow (already a dependency), JPEG from OpenCV's bundled libjpeg-turbo.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pyarrow as pa

CODECS: tuple[str, ...] = ("yuv420-zstd", "rgb-zstd", "jpeg")
DEFAULT_CODEC = "yuv420-zstd"
DEFAULT_JPEG_QUALITY = 90
ZSTD_LEVEL = 3  # zstd's own default: level 1 was 1 % larger here, levels 6-9 cost 5x the CPU for 1 % less


class CodecError(ValueError):
    """A codec name or quality that the store does not know."""


@dataclass(frozen=True)
class FrameCodec:
    """Encode a uint8 (H, W, 3) RGB frame to bytes and decode it back into a preallocated array."""

    name: str = DEFAULT_CODEC
    quality: int | None = None  # JPEG quality 1-100; None for the zstd codecs

    def __post_init__(self) -> None:
        if self.name not in CODECS:
            raise CodecError(f"frame codec {self.name!r}: expected one of {', '.join(CODECS)}")
        if self.name == "jpeg":
            if self.quality is None:
                object.__setattr__(self, "quality", DEFAULT_JPEG_QUALITY)
            if not 1 <= int(self.quality) <= 100:
                raise CodecError(f"JPEG quality {self.quality}: expected 1-100")
        elif self.quality is not None:
            raise CodecError(f"frame codec {self.name!r} takes no quality (only jpeg does), got {self.quality}")

    @property
    def lossless(self) -> bool:
        return self.name == "rgb-zstd"

    def describe(self) -> str:
        return f"jpeg q{self.quality}" if self.name == "jpeg" else self.name

    def encode(self, frame: np.ndarray) -> bytes:
        frame = np.ascontiguousarray(frame)
        if self.name == "jpeg":
            ok, buf = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                                   [cv2.IMWRITE_JPEG_QUALITY, int(self.quality)])
            if not ok:
                raise RuntimeError("OpenCV could not encode a JPEG frame")
            return buf.tobytes()
        raw = frame if self.name == "rgb-zstd" else cv2.cvtColor(_even(frame), cv2.COLOR_RGB2YUV_I420)
        return _zstd().compress(raw.tobytes(), asbytes=True)

    def decode_into(self, blob: bytes | pa.Buffer, out: np.ndarray) -> None:
        """Decode ``blob`` into ``out``, a C-contiguous uint8 (H, W, 3) array of the stored frame's size."""
        h, w = out.shape[:2]
        if self.name == "jpeg":
            frame = cv2.imdecode(np.frombuffer(blob, np.uint8), cv2.IMREAD_COLOR_RGB)
            if frame is None or frame.shape != out.shape:
                raise ValueError(f"JPEG frame does not decode to {out.shape}")
            out[...] = frame
            return
        if self.name == "rgb-zstd":
            raw = _zstd().decompress(blob, decompressed_size=out.nbytes, asbytes=False)
            out[...] = np.frombuffer(raw, np.uint8).reshape(out.shape)
            return
        eh, ew = h + h % 2, w + w % 2
        raw = _zstd().decompress(blob, decompressed_size=eh * ew * 3 // 2, asbytes=False)
        planes = np.frombuffer(raw, np.uint8).reshape(eh * 3 // 2, ew)
        if (eh, ew) == (h, w):
            cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420, dst=out)
        else:
            out[...] = cv2.cvtColor(planes, cv2.COLOR_YUV2RGB_I420)[:h, :w]


def _even(frame: np.ndarray) -> np.ndarray:
    """I420 needs even sides: an odd side gets its last row / column repeated (cut again on decode)."""
    h, w = frame.shape[:2]
    if h % 2 == 0 and w % 2 == 0:
        return frame
    return cv2.copyMakeBorder(frame, 0, h % 2, 0, w % 2, cv2.BORDER_REPLICATE)


_CODEC: list[pa.Codec] = []


def _zstd() -> pa.Codec:
    if not _CODEC:
        _CODEC.append(pa.Codec("zstd", compression_level=ZSTD_LEVEL))
    return _CODEC[0]
