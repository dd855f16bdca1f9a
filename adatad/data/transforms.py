"""Clip-level image transforms on uint8 (T, H, W, 3) arrays, cheap next to decoding.

Why not torchvision / imgaug frame by frame: that costs 7-12x the decode time of a 768-frame clip
(``benchmarks/README.md``, "Augmentation vs decode") and would starve the GPU. Here every transform draws its random
parameters once per clip (mmaction's ``to_deterministic`` semantics: every frame gets the same
crop, flip and colour change) and applies them with as few passes over memory as possible:

* per-value and per-pixel ops (lookup tables, bitwise ops, flip, the 3x3 sharpness filter) run
  as ONE OpenCV call over the clip viewed as a single tall image (T*H, W, 3) or plane (T*H, W*3);
* spatial resampling (resize, remap) and ops whose table or offset depends on each frame
  (contrast, autocontrast, equalize, jitter) loop over frames calling one OpenCV SIMD function
  per frame: OpenCV's warps take one image of at most 4 channels, a tall-image resize would
  blend neighbouring frames, and cache-sized per-frame calls are as fast as one big call;
* no float copy of the clip is ever made: colour maths happens on 3x3 matrices or 256-entry tables;
* ``__call__`` never modifies its input, but inside a Compose (or ImageAugment) the ops after
  the first new array work in place (``ClipTransform.apply_``), saving a 60 MB allocation and
  its page faults per op.

Train crops are fused: the random box is drawn on the frame as if its short side were already
resized (mmaction's Resize(-1, 182) -> RandomResizedCrop -> Resize(160, 160)), mapped back onto
the full-resolution frame, and cut + resized to 160x160 in one step, so every later op runs on
160x160 pixels. In a chain, the flip and ImageAugment's rotations / shears fold into that same
step (``_Warp``): one resampling of each frame instead of two.

Reference semantics (checked in tests/test_transforms.py): the ImageAugment ops follow PIL /
torchvision (lookup-table ops bit-exact; matrix and filter ops within 1-2 grey levels, because
OpenCV rounds where PIL truncates), ColorJitter follows mmaction's ColorJitter (float maths, one
clip at the end), except that its hue step is a rotation about the RGB grey axis (see
``hue_matrix``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import cv2
import numpy as np

Transform = Callable[[np.ndarray, np.random.Generator], np.ndarray]

# ITU-R 601 luma weights: PIL's "L" conversion, and the slightly different ones of torchvision /
# mmaction ColorJitter.
PIL_GRAY = np.array([0.299, 0.587, 0.114])
MMACTION_GRAY = np.array([0.2989, 0.587, 0.114])
_IDENTITY_LUT = np.arange(256, dtype=np.uint8)


# ----------------------------------------------------------------------------------------------
# helpers


def _check_clip(clip: np.ndarray) -> np.ndarray:
    """Validate and return a C-contiguous uint8 (T, H, W, 3) clip (no copy when already so)."""
    if not isinstance(clip, np.ndarray) or clip.dtype != np.uint8 or clip.ndim != 4 or clip.shape[-1] != 3:
        got = f"{clip.dtype} {clip.shape}" if isinstance(clip, np.ndarray) else type(clip).__name__
        raise ValueError(f"clip must be a uint8 array (T, H, W, 3), got {got}")
    if min(clip.shape[:3]) == 0:
        raise ValueError(f"clip must be non-empty, got shape {clip.shape}")
    return np.ascontiguousarray(clip)


def _tall(clip: np.ndarray) -> np.ndarray:
    """The clip as one (T*H, W, 3) image, a view: per-pixel OpenCV ops then run in one call."""
    return clip.reshape(-1, clip.shape[2], 3)


def _plane(clip: np.ndarray) -> np.ndarray:
    """The clip as one single-channel (T*H, W*3) image, a view, for per-value ops (LUT, bitwise)."""
    return clip.reshape(-1, clip.shape[2] * 3)


def _apply_frame_luts_(clip: np.ndarray, luts: np.ndarray) -> np.ndarray:
    """In place, per-frame tables: luts (T, 256) shared by the channels, or (T, 3, 256) one per channel."""
    if luts.ndim == 2:
        tables = np.ascontiguousarray(luts, dtype=np.uint8)
    else:  # OpenCV wants a per-channel table as a 256x1 3-channel image
        tables = np.ascontiguousarray(luts.transpose(0, 2, 1), dtype=np.uint8).reshape(len(clip), 256, 1, 3)
    for t in range(len(clip)):  # per frame: each frame has its own table, cv2.LUT is SIMD
        cv2.LUT(clip[t], tables[t], dst=clip[t])
    return clip


def _frame_channel_means(clip: np.ndarray) -> np.ndarray:
    """(T, 3) float64 channel means; cv2.mean per frame is ~20x faster than numpy's strided mean."""
    return np.array([cv2.mean(frame)[:3] for frame in clip])


def _frame_histograms(clip: np.ndarray) -> np.ndarray:
    """(T, 3, 256) int64 per-frame, per-channel histograms (cv2.calcHist per frame and channel)."""
    hist = np.empty((len(clip), 3, 256), np.float32)
    for t, frame in enumerate(clip):
        for c in range(3):
            hist[t, c] = cv2.calcHist([frame], [c], None, [256], [0, 256]).reshape(256)
    return hist.astype(np.int64)


def _trunc_to_uint8(values: np.ndarray) -> np.ndarray:
    """Clamp to [0, 255] and truncate, as PIL's blend and torchvision's uint8 cast do."""
    return np.clip(values, 0, 255).astype(np.uint8)


def _short_side_shape(height: int, width: int, short: int) -> tuple[int, int]:
    """(new_h, new_w) with the short side at ``short``, ratio kept; mmcv's rounding (int(x + 0.5))."""
    scale = short / min(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


class ClipTransform:
    """Base of the transforms: ``__call__`` never modifies its input.

    ``apply_`` may overwrite the clip it is given (``modifies_input``) to save a 60 MB allocation
    per op; Compose and ImageAugment call it only on arrays they created themselves. Geometric
    ops also implement ``absorb`` and composites ``expand``, which let a chain fold consecutive
    crops, flips, rotations and shears into one resampling (see ``_Warp``).
    """

    modifies_input = False

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clip = _check_clip(clip)
        return self.apply_(clip.copy() if self.modifies_input else clip, rng)

    def expand(self, rng: np.random.Generator) -> list[Transform] | None:
        """A composite's parts for this clip (drawing what it draws); None for a single op."""
        return None

    def absorb(self, warp: _Warp, rng: np.random.Generator) -> _Warp | None:
        """Fold this op into ``warp`` (drawing its parameters), or None (nothing drawn) if it can't."""
        return None

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _fixed_point_maps(inverse: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """cv2.remap maps (fixed point) of an output grid through a 2x3 output -> source matrix."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    map_x = (inverse[0, 0] * xx + inverse[0, 1] * yy + inverse[0, 2]).astype(np.float32)
    map_y = (inverse[1, 0] * xx + inverse[1, 1] * yy + inverse[1, 2]).astype(np.float32)
    return cv2.convertMaps(map_x, map_y, cv2.CV_16SC2)


class _Warp:
    """Geometric steps drawn for a clip but not applied yet, folded into one resampling.

    Why: a crop resized to 160x160 and then rotated is resampled twice, each a full pass over
    the clip; folded, it is one bilinear remap from the full-resolution frames (and better
    quality). ``matrix`` maps source pixels to output pixels (pixel centres at integers); source
    pixels outside ``box`` count as outside the frame, i.e. what the crop cut away gets the fill.
    While only a crop and flips are folded, applying is a plain resize (+ an in-place flip).
    """

    def __init__(self, height: int, width: int) -> None:
        self.matrix = np.eye(3)
        self.out_size = (height, width)
        self.box = (0, 0, width, height)
        self.identity = True  # nothing folded yet
        self.flipped = False
        self.general = False  # a rotation / shear / translation is folded in: remap needed
        self.fill = 0

    def then(self, matrix: np.ndarray) -> None:
        """Follow the current map by the 2x3 ``matrix`` (on the current output grid)."""
        self.matrix = np.vstack([matrix, [0.0, 0.0, 1.0]]) @ self.matrix
        self.identity = False

    def apply(self, clip: np.ndarray) -> np.ndarray:
        x0, y0, x1, y1 = self.box
        oh, ow = self.out_size
        source = clip[:, y0:y1, x0:x1]
        out = np.empty((len(clip), oh, ow, 3), np.uint8)
        if not self.general:
            for i in range(len(clip)):  # per frame: cv2.resize of a strided view, SIMD, no copy
                cv2.resize(source[i], (ow, oh), dst=out[i], interpolation=cv2.INTER_LINEAR)
            if self.flipped:
                cv2.flip(_tall(out), 1, dst=_tall(out))
            return out
        shift = np.array([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]])  # box-relative source
        map_xy, map_frac = _fixed_point_maps(np.linalg.inv(self.matrix @ shift)[:2], oh, ow)
        for i in range(len(clip)):  # per frame: OpenCV's remap takes one image of <= 4 channels
            cv2.remap(source[i], map_xy, map_frac, cv2.INTER_LINEAR, dst=out[i],
                      borderMode=cv2.BORDER_CONSTANT, borderValue=(self.fill,) * 3)
        return out


def _run_chain(transforms: Sequence[Transform], clip: np.ndarray, rng: np.random.Generator,
               owned: bool) -> np.ndarray:
    """Apply in order, folding runs of geometric ops into one warp; in place once ``owned``.

    ``owned``: the current array is one the chain made, so ops may overwrite it. Random draws
    happen in the same order as applying the ops one by one.
    """
    original = clip
    stack = list(transforms)[::-1]
    warp: _Warp | None = None
    while stack:
        transform = stack.pop()
        if isinstance(transform, ClipTransform):
            parts = transform.expand(rng)
            if parts is not None:
                stack.extend(reversed(parts))
                continue
            folded = transform.absorb(warp if warp is not None else _Warp(*clip.shape[1:3]), rng)
            if folded is not None:
                warp = folded
                continue
        if warp is not None and not warp.identity:
            clip, owned = warp.apply(clip), True
        warp = None
        if owned and isinstance(transform, ClipTransform):
            clip = transform.apply_(clip, rng)
        else:
            clip = transform(clip, rng)
            owned = owned or not np.may_share_memory(clip, original)
    if warp is not None and not warp.identity:
        clip = warp.apply(clip)
    return clip


# ----------------------------------------------------------------------------------------------
# geometry


class Compose(ClipTransform):
    """Apply transforms in order, passing the same per-clip generator to each."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _run_chain(self.transforms, _check_clip(clip), rng, owned=False)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _run_chain(self.transforms, clip, rng, owned=True)

    def expand(self, rng: np.random.Generator) -> list[Transform]:
        return self.transforms


class ResizeShortSide(ClipTransform):
    """Resize so the short side is ``size``, keeping the aspect ratio (bilinear, like mmcv)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"ResizeShortSide: size must be >= 1, got {size}")
        self.size = int(size)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        t, h, w, _ = clip.shape
        nh, nw = _short_side_shape(h, w, self.size)
        if (nh, nw) == (h, w):
            return clip
        out = np.empty((t, nh, nw, 3), np.uint8)
        for i in range(t):  # per frame: cv2.resize is SIMD but takes one image at a time
            cv2.resize(clip[i], (nw, nh), dst=out[i], interpolation=cv2.INTER_LINEAR)
        return out


class CenterCrop(ClipTransform):
    """Cut the central ``size`` x ``size`` square (mmaction's offsets: (W - size) // 2)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError(f"CenterCrop: size must be >= 1, got {size}")
        self.size = int(size)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = clip.shape[1:3]
        if h < self.size or w < self.size:
            raise ValueError(f"CenterCrop: frame {h}x{w} is smaller than the crop size {self.size}")
        top, left = (h - self.size) // 2, (w - self.size) // 2
        return np.ascontiguousarray(clip[:, top:top + self.size, left:left + self.size])


class RandomResizedCrop(ClipTransform):
    """Random box of random area and aspect ratio, resized to ``size`` x ``size``.

    Box sampling is mmaction's: 10 candidates with area ~ U(area_range) * frame area and
    log-uniform aspect ratio; the first that fits wins (offsets uniform over the valid range);
    if none fits, the centred square of the short side. With ``resize_short`` set, the box is
    drawn on the frame as if it had been resized to that short side first (mmaction's
    Resize(-1, resize_short) step), then mapped back to the full-resolution frame (rounded to
    whole source pixels), so the two resizes collapse into one.
    """

    def __init__(self, size: int, area_range: tuple[float, float] = (0.08, 1.0),
                 aspect_range: tuple[float, float] = (3 / 4, 4 / 3), max_attempts: int = 10,
                 resize_short: int | None = None) -> None:
        if size < 1:
            raise ValueError(f"RandomResizedCrop: size must be >= 1, got {size}")
        if not 0 < area_range[0] <= area_range[1]:
            raise ValueError(f"RandomResizedCrop: area_range must be (lo, hi) with 0 < lo <= hi, got {area_range}")
        if not 0 < aspect_range[0] <= aspect_range[1]:
            raise ValueError(f"RandomResizedCrop: aspect_range must be (lo, hi) with 0 < lo <= hi, got {aspect_range}")
        if resize_short is not None and resize_short < 1:
            raise ValueError(f"RandomResizedCrop: resize_short must be >= 1 or None, got {resize_short}")
        self.size = int(size)
        self.area_range = (float(area_range[0]), float(area_range[1]))
        self.aspect_range = (float(aspect_range[0]), float(aspect_range[1]))
        self.max_attempts = int(max_attempts)
        self.resize_short = resize_short

    def crop_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """(x0, y0, x1, y1) in pixels of a ``height`` x ``width`` frame."""
        log_lo, log_hi = math.log(self.aspect_range[0]), math.log(self.aspect_range[1])
        aspects = np.exp(rng.uniform(log_lo, log_hi, size=self.max_attempts))
        areas = rng.uniform(*self.area_range, size=self.max_attempts) * height * width
        crop_w = np.round(np.sqrt(areas * aspects)).astype(np.int64)
        crop_h = np.round(np.sqrt(areas / aspects)).astype(np.int64)
        for cw, ch in zip(crop_w, crop_h, strict=True):
            if 0 < ch <= height and 0 < cw <= width:
                x0 = int(rng.integers(0, width - cw + 1))
                y0 = int(rng.integers(0, height - ch + 1))
                return x0, y0, x0 + int(cw), y0 + int(ch)
        side = min(height, width)
        x0, y0 = (width - side) // 2, (height - side) // 2
        return x0, y0, x0 + side, y0 + side

    def source_box(self, height: int, width: int, rng: np.random.Generator) -> tuple[int, int, int, int]:
        """A random box in full-resolution pixels (drawn on the virtually resized frame if asked)."""
        vh, vw = (height, width) if self.resize_short is None else _short_side_shape(height, width, self.resize_short)
        x0, y0, x1, y1 = self.crop_box(vh, vw, rng)
        sx, sy = width / vw, height / vh
        left, right = round(x0 * sx), round(x1 * sx)
        top, bottom = round(y0 * sy), round(y1 * sy)
        left, top = min(left, width - 1), min(top, height - 1)
        return left, top, max(right, left + 1), max(bottom, top + 1)

    def absorb(self, warp: _Warp, rng: np.random.Generator) -> _Warp | None:
        if not warp.identity:  # a crop of an already warped frame: apply that first
            return None
        x0, y0, x1, y1 = self.source_box(*warp.out_size, rng)
        sx, sy = self.size / (x1 - x0), self.size / (y1 - y0)
        # cv2.resize's mapping of the box onto the output grid, pixel centres at integers
        warp.then(np.array([[sx, 0.0, (0.5 - x0) * sx - 0.5], [0.0, sy, (0.5 - y0) * sy - 0.5]]))
        warp.box, warp.out_size = (x0, y0, x1, y1), (self.size, self.size)
        return warp

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.absorb(_Warp(*clip.shape[1:3]), rng).apply(clip)


class Flip(ClipTransform):
    """Horizontal flip of every frame with probability ``p`` (one draw per clip)."""

    modifies_input = True

    def __init__(self, p: float = 0.5) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"Flip: p must be in [0, 1], got {p}")
        self.p = float(p)

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        clip = _check_clip(clip)
        return self._flip_(clip.copy()) if rng.random() < self.p else clip  # copy only when it flips

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self._flip_(clip) if rng.random() < self.p else clip

    def absorb(self, warp: _Warp, rng: np.random.Generator) -> _Warp | None:
        if rng.random() < self.p:
            warp.then(np.array([[-1.0, 0.0, warp.out_size[1] - 1.0], [0.0, 1.0, 0.0]]))
            warp.flipped = not warp.flipped
        return warp

    @staticmethod
    def _flip_(clip: np.ndarray) -> np.ndarray:
        # Mirroring each row of the tall image mirrors each frame; in place, ~15x faster than a ::-1 copy.
        cv2.flip(_tall(clip), 1, dst=_tall(clip))
        return clip


class Affine(ClipTransform):
    """Rotation / shear (degrees) and translation (fraction of width / height) about the centre.

    Bilinear, constant fill (imgaug's Affine defaults: order 1, cval 0). Signs follow
    torchvision's ``F.affine`` (positive angle = counter-clockwise). A pure translation moves
    by whole pixels (a copy, no resampling; at most half a pixel from the exact shift).
    Otherwise one fixed-point sampling map is computed per clip and cv2.remap runs per frame
    (25% faster than warpAffine, which recomputes the map for every frame); in a chain the op
    folds into the preceding crop / flip (one resampling, see ``_Warp``).
    """

    modifies_input = True

    def __init__(self, rotate: float = 0.0, shear_x: float = 0.0, shear_y: float = 0.0,
                 translate_x: float = 0.0, translate_y: float = 0.0, fill: int = 0) -> None:
        self.rotate, self.shear_x, self.shear_y = float(rotate), float(shear_x), float(shear_y)
        self.translate_x, self.translate_y = float(translate_x), float(translate_y)
        self.fill = int(fill)

    def matrix(self, height: int, width: int) -> np.ndarray:
        """2x3 forward map (source pixel -> output pixel), pixel centres at integer coordinates."""
        a = math.radians(self.rotate)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        shx = np.array([[1.0, -math.tan(math.radians(self.shear_x))], [0.0, 1.0]])
        shy = np.array([[1.0, 0.0], [-math.tan(math.radians(self.shear_y)), 1.0]])
        lin = rot @ shy @ shx
        centre = np.array([(width - 1) / 2, (height - 1) / 2])
        shift = centre + np.array([self.translate_x * width, self.translate_y * height]) - lin @ centre
        return np.hstack([lin, shift[:, None]])

    def _is_shift(self) -> bool:
        return self.rotate == 0 and self.shear_x == 0 and self.shear_y == 0

    def absorb(self, warp: _Warp, rng: np.random.Generator) -> _Warp | None:
        # A pure shift of a crop is cheaper as a copy than as a remap: folded only after a
        # rotation or shear is (then the remap is paid anyway).
        if (self._is_shift() and not warp.general) or (warp.general and warp.fill != self.fill):
            return None
        warp.then(self.matrix(*warp.out_size))
        warp.general, warp.fill = True, self.fill
        return warp

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if not self._is_shift():
            return self.absorb(_Warp(*clip.shape[1:3]), rng).apply(clip)
        h, w = clip.shape[1:3]
        dx, dy = round(self.translate_x * w), round(self.translate_y * h)
        dst = (slice(max(dy, 0), h + min(dy, 0)), slice(max(dx, 0), w + min(dx, 0)))
        src = (slice(max(-dy, 0), h + min(-dy, 0)), slice(max(-dx, 0), w + min(-dx, 0)))
        scratch = np.empty_like(clip[0])
        for frame in clip:  # per frame, in place through a one-frame buffer: no clip-sized temporary
            np.copyto(scratch, frame)
            frame.fill(self.fill)
            frame[dst] = scratch[src]
        return clip


class Cutout(ClipTransform):
    """Fill one square (side ``size`` x frame height) at a uniform random centre (imgaug Cutout).

    The square may stick out of the frame; only its visible part is filled. imgaug's default fill
    is the constant 128.
    """

    modifies_input = True

    def __init__(self, size: float = 0.2, fill: int = 128) -> None:
        if not 0.0 < size <= 1.0:
            raise ValueError(f"Cutout: size must be in (0, 1], got {size}")
        self.size, self.fill = float(size), int(fill)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        h, w = clip.shape[1:3]
        cx, cy = rng.uniform(0, 1) * w, rng.uniform(0, 1) * h
        side = max(1, round(self.size * h))
        x0, y0 = round(cx - side / 2), round(cy - side / 2)
        clip[:, max(0, y0):max(0, y0 + side), max(0, x0):max(0, x0 + side)] = self.fill
        return clip


# ----------------------------------------------------------------------------------------------
# photometric ops of ImageAugment (PIL semantics, as imgaug's pillike module reproduces them)


class _LutTransform(ClipTransform):
    """A fixed 256-entry table applied to every value of the clip: one in-place cv2.LUT."""

    modifies_input = True
    _lut: np.ndarray

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cv2.LUT(_plane(clip), self._lut, dst=_plane(clip))
        return clip


class Posterize(ClipTransform):
    """Keep the ``bits`` most significant bits of each channel (PIL / torchvision posterize).

    A bitwise AND (SIMD) is ~7x faster than the equivalent lookup table.
    """

    modifies_input = True

    def __init__(self, bits: int) -> None:
        if not 1 <= bits <= 8:
            raise ValueError(f"Posterize: bits must be in [1, 8], got {bits}")
        self.bits = int(bits)
        self._mask = (0xFF << (8 - self.bits)) & 0xFF

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cv2.bitwise_and(_plane(clip), self._mask, dst=_plane(clip))
        return clip


class Invert(ClipTransform):
    """255 - v, as a bitwise NOT (SIMD, ~7x faster than a lookup table)."""

    modifies_input = True

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cv2.bitwise_not(_plane(clip), dst=_plane(clip))
        return clip


class Solarize(_LutTransform):
    """Invert the values >= ``threshold`` (PIL / torchvision solarize)."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self._lut = np.where(_IDENTITY_LUT >= self.threshold, 255 - _IDENTITY_LUT, _IDENTITY_LUT).astype(np.uint8)


class Brightness(_LutTransform):
    """Blend with black: v * factor, clamped and truncated (PIL ImageEnhance.Brightness)."""

    def __init__(self, factor: float) -> None:
        if factor < 0:
            raise ValueError(f"Brightness: factor must be >= 0, got {factor}")
        self.factor = float(factor)
        self._lut = _trunc_to_uint8(_IDENTITY_LUT * np.float32(self.factor))


class Contrast(ClipTransform):
    """Blend each frame with its mean grey level (PIL ImageEnhance.Contrast, per frame).

    PIL takes the mean of the rounded "L" image, rounded to an integer; the mean of a rounded
    weighted sum equals the weighted sum of the channel means up to averaging error, so the
    channel means of each frame (cv2.mean) suffice. One table per frame.
    """

    modifies_input = True

    def __init__(self, factor: float) -> None:
        if factor < 0:
            raise ValueError(f"Contrast: factor must be >= 0, got {factor}")
        self.factor = float(factor)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        means = np.floor(_frame_channel_means(clip) @ PIL_GRAY + 0.5).astype(np.float32)[:, None]  # (T, 1)
        luts = _trunc_to_uint8(means + np.float32(self.factor) * (_IDENTITY_LUT[None, :] - means))
        return _apply_frame_luts_(clip, luts)


class Saturation(ClipTransform):
    """Blend with the grey image (PIL ImageEnhance.Color): one 3x3 colour matrix via cv2.transform."""

    modifies_input = True

    def __init__(self, factor: float) -> None:
        if factor < 0:
            raise ValueError(f"Saturation: factor must be >= 0, got {factor}")
        self.factor = float(factor)
        self._matrix = saturation_matrix(self.factor, PIL_GRAY).astype(np.float32)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        for frame in clip:  # per frame, in place: cache-sized calls beat one whole-clip call here
            cv2.transform(frame, self._matrix, dst=frame)
        return clip


class Sharpness(ClipTransform):
    """Blend with the 3x3 "smooth" filtered image, borders kept (PIL ImageEnhance.Sharpness).

    Blend and filter are both linear, so they are one 3x3 kernel: one cv2.filter2D per frame into
    a scratch buffer, whose interior is copied back (PIL leaves the 1-pixel border unchanged).
    """

    modifies_input = True
    _smooth = np.array([[1, 1, 1], [1, 5, 1], [1, 1, 1]], np.float64) / 13.0

    def __init__(self, factor: float) -> None:
        if factor < 0:
            raise ValueError(f"Sharpness: factor must be >= 0, got {factor}")
        self.factor = float(factor)
        identity = np.zeros((3, 3))
        identity[1, 1] = 1.0
        self._kernel = (self.factor * identity + (1.0 - self.factor) * self._smooth).astype(np.float32)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        scratch = np.empty_like(clip[0])
        for frame in clip:  # per frame: keeps each frame's borders its own; in place, no new clip array
            cv2.filter2D(frame, -1, self._kernel, dst=scratch, borderType=cv2.BORDER_REPLICATE)
            frame[1:-1, 1:-1] = scratch[1:-1, 1:-1]
        return clip


class Autocontrast(ClipTransform):
    """Stretch each frame's channels to [0, 255] (PIL ImageOps.autocontrast, cutoff 0, per frame)."""

    modifies_input = True

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        present = _frame_histograms(clip) > 0  # (T, 3, 256)
        lo = present.argmax(axis=-1)[..., None].astype(np.float64)
        hi = (255 - present[..., ::-1].argmax(axis=-1))[..., None].astype(np.float64)
        flat = hi <= lo
        scale = 255.0 / np.where(flat, 1.0, hi - lo)
        luts = _trunc_to_uint8(np.trunc(_IDENTITY_LUT * scale - lo * scale))
        return _apply_frame_luts_(clip, np.where(flat, _IDENTITY_LUT, luts))


class Equalize(ClipTransform):
    """Histogram equalisation of each frame and channel (PIL ImageOps.equalize's table).

    Per frame, as PIL (and imgaug's deterministic mode) does it: a clip-wide histogram would be
    a little cheaper but would not match the reference.
    """

    modifies_input = True

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        hist = _frame_histograms(clip)  # (T, 3, 256)
        num_pixels = clip.shape[1] * clip.shape[2]
        last_value = 255 - (hist[..., ::-1] > 0).argmax(axis=-1)
        count_last = np.take_along_axis(hist, last_value[..., None], axis=-1)[..., 0]
        step = (num_pixels - count_last) // 255  # (T, 3)
        cum = np.cumsum(hist, axis=-1)
        safe = np.maximum(step, 1)[..., None]
        luts = np.zeros(hist.shape, np.int64)
        luts[..., 1:] = (cum[..., :-1] + (safe // 2)) // safe
        luts = np.where((step == 0)[..., None], _IDENTITY_LUT, np.clip(luts, 0, 255))
        return _apply_frame_luts_(clip, luts)


# ----------------------------------------------------------------------------------------------
# colour matrices


def saturation_matrix(factor: float, gray: np.ndarray = MMACTION_GRAY) -> np.ndarray:
    """3x3 matrix of x -> factor * x + (1 - factor) * gray(x) (on RGB column vectors)."""
    return factor * np.eye(3) + (1.0 - factor) * np.ones((3, 1)) @ np.asarray(gray, np.float64)[None, :]


def hue_matrix(degrees: float) -> np.ndarray:
    """3x3 rotation of RGB about the grey axis by ``degrees`` (R -> G -> B for positive angles).

    Why not HSV (mmaction, torchvision): two colour-space conversions per pixel cost more than
    the rest of the augmentation; a rotation is linear, so it fuses with the other ColorJitter
    steps into one matrix. It keeps grey pixels grey and the mean of R, G, B, and moves hues by
    the requested angle. On smooth natural-like frames it differs from torchvision's HSV
    adjust_hue by a mean of ~5 grey levels at 10 degrees and ~14 at 36 degrees; the common YIQ
    rotation differs by ~6 and ~20, so this one was chosen.
    """
    a = math.radians(degrees)
    k = np.full(3, 1.0 / math.sqrt(3.0))
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return math.cos(a) * np.eye(3) + math.sin(a) * cross + (1.0 - math.cos(a)) * np.outer(k, k)


# ----------------------------------------------------------------------------------------------
# the two random photometric stages of the train pipeline


class ImageAugment(ClipTransform):
    """mmaction's ImgAug(transforms="default"): ``num_ops`` of 15 ops per clip, same for all frames.

    RandAugment-like set at magnitude ``level`` (9/10): ShearX/ShearY (17.19 * level degrees),
    TranslateX/TranslateY (0.2 * level of the size), Rotate (30 * level degrees), Posterize
    (int(4 * level) bits), Solarize (256 * level), Color/Contrast/Brightness/Sharpness
    (factor 1.8 * level + 0.1), Autocontrast, Equalize, Invert, Cutout (0.2 * level, square).
    The sign of each geometric op is drawn once here, at build time, from ``seed`` (mmaction
    draws it when the pipeline is built). Per clip, ``num_ops`` distinct ops are drawn and applied
    in list order (imgaug SomeOf without random order).
    """

    def __init__(self, num_ops: int = 2, level: float = 0.9, seed: int = 0) -> None:
        if not 0 <= num_ops <= 15:
            raise ValueError(f"ImageAugment: num_ops must be in [0, 15], got {num_ops}")
        sign_rng = np.random.default_rng([seed, 0x1A6])
        signs = [int(s) for s in sign_rng.choice([-1, 1], size=5)]
        factor = 1.8 * level + 0.1
        self.num_ops = int(num_ops)
        self.level = float(level)
        self.signs = signs
        self.ops: list[ClipTransform] = [
            Affine(shear_x=17.19 * level * signs[0]),
            Affine(shear_y=17.19 * level * signs[1]),
            Affine(translate_x=0.2 * level * signs[2]),
            Affine(translate_y=0.2 * level * signs[3]),
            Affine(rotate=30.0 * level * signs[4]),
            Posterize(max(1, int(4 * level))),
            Solarize(256 * level),
            Saturation(factor),
            Contrast(factor),
            Brightness(factor),
            Sharpness(factor),
            Autocontrast(),
            Equalize(),
            Invert(),
            Cutout(0.2 * level),
        ]

    def draw(self, rng: np.random.Generator) -> list[ClipTransform]:
        """The ops for one clip, in the order they apply."""
        return [self.ops[i] for i in np.sort(rng.choice(len(self.ops), size=self.num_ops, replace=False))]

    def __call__(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _run_chain(self.draw(rng), _check_clip(clip), rng, owned=False)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return _run_chain(self.draw(rng), clip, rng, owned=True)

    def expand(self, rng: np.random.Generator) -> list[Transform]:
        return list(self.draw(rng))


class ColorJitter(ClipTransform):
    """mmaction's ColorJitter: brightness, contrast, saturation, hue in an order fixed at build time.

    Per clip one factor each: brightness, contrast, saturation ~ U(1 - x, 1 + x), hue h ~ U(-x, x).
    As in mmaction the maths is in float with one clip at the end, and contrast blends each frame
    with its own mean grey. mmaction shifts OpenCV's hue (180 steps per turn) by int(255 * h)
    steps, i.e. 2 * int(255 * h) degrees (+-50 degrees for h = 0.1); the same angle is used here,
    as a rotation about the grey axis (see ``hue_matrix``). Every step is affine in RGB, so the
    whole jitter is one 3x3 matrix plus a per-frame offset (from contrast): one cv2.transform
    per frame, in place.
    """

    modifies_input = True

    def __init__(self, brightness: float = 0.5, contrast: float = 0.5, saturation: float = 0.5,
                 hue: float = 0.1, seed: int = 0) -> None:
        for name, value, bound in (("brightness", brightness, 1.0), ("contrast", contrast, 1.0),
                                   ("saturation", saturation, 1.0), ("hue", hue, 0.5)):
            if not 0.0 <= value <= bound:
                raise ValueError(f"ColorJitter: {name} must be in [0, {bound}], got {value}")
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.saturation, self.hue = float(saturation), float(hue)
        self.order = [int(i) for i in np.random.default_rng([seed, 0xC01]).permutation(4)]

    def draw(self, rng: np.random.Generator) -> tuple[float, float, float, float]:
        """(brightness, contrast, saturation factors, hue angle in degrees) for one clip."""
        b = rng.uniform(1 - self.brightness, 1 + self.brightness)
        c = rng.uniform(1 - self.contrast, 1 + self.contrast)
        s = rng.uniform(1 - self.saturation, 1 + self.saturation)
        h = rng.uniform(-self.hue, self.hue)
        return float(b), float(c), float(s), 2.0 * int(255 * h)

    def matrices(self, clip: np.ndarray, brightness: float, contrast: float, saturation: float,
                 hue_degrees: float) -> tuple[np.ndarray, np.ndarray]:
        """(3x3 colour matrix, (T, 3) per-frame offsets) of the jitter with these parameters."""
        lin = np.eye(3)
        offset = np.zeros((len(clip), 3))  # per-frame additive term, in output RGB
        for op in self.order:
            if op == 0 and brightness != 1:
                lin, offset = brightness * lin, brightness * offset
            elif op == 1 and contrast != 1:
                grey = (_frame_channel_means(clip) @ lin.T + offset) @ MMACTION_GRAY  # current mean grey, (T,)
                lin, offset = contrast * lin, contrast * offset + (1 - contrast) * grey[:, None]
            elif op == 2 and saturation != 1:
                m = saturation_matrix(saturation, MMACTION_GRAY)
                lin, offset = m @ lin, offset @ m.T
            elif op == 3 and hue_degrees != 0:
                m = hue_matrix(hue_degrees)
                lin, offset = m @ lin, offset @ m.T
        return lin, offset

    def apply_params_(self, clip: np.ndarray, brightness: float, contrast: float, saturation: float,
                      hue_degrees: float) -> np.ndarray:
        """In place, with given parameters (deterministic; used by apply_ and the tests)."""
        lin, offset = self.matrices(clip, brightness, contrast, saturation, hue_degrees)
        affine = np.empty((3, 4), np.float32)
        affine[:, :3] = lin
        for t, frame in enumerate(clip):  # per frame: the offset differs per frame; cv2.transform is SIMD
            affine[:, 3] = offset[t]
            cv2.transform(frame, affine, dst=frame)
        return clip

    def apply(self, clip: np.ndarray, brightness: float, contrast: float, saturation: float,
              hue_degrees: float) -> np.ndarray:
        """Like apply_params_, on a copy."""
        return self.apply_params_(_check_clip(clip).copy(), brightness, contrast, saturation, hue_degrees)

    def apply_(self, clip: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        return self.apply_params_(clip, *self.draw(rng))


# ----------------------------------------------------------------------------------------------
# pipelines (docs/recipe.md §3)


def build_train_transform(resize_short: int = 182, crop_size: int = 160,
                          area_range: tuple[float, float] = (0.08, 1.0),
                          aspect_range: tuple[float, float] = (3 / 4, 4 / 3), flip_ratio: float = 0.5,
                          color_jitter: tuple[float, float, float, float] | None = (0.5, 0.5, 0.5, 0.1),
                          image_augment: bool = True, seed: int = 0) -> Compose:
    """Resize(-1, resize_short) + RandomResizedCrop + Resize(crop) (fused) -> Flip -> ImgAug -> ColorJitter.

    ``seed`` fixes the build-time draws (ImageAugment's signs, ColorJitter's order), so every
    worker that builds the pipeline gets the same one; per-clip draws come from the rng passed
    to the call. ``color_jitter=None`` (or all zeros) disables the jitter.
    """
    transforms: list[Transform] = [
        RandomResizedCrop(crop_size, area_range, aspect_range, resize_short=resize_short)
    ]
    if flip_ratio > 0:
        transforms.append(Flip(flip_ratio))
    if image_augment:
        transforms.append(ImageAugment(seed=seed))
    if color_jitter is not None and any(color_jitter):
        if len(color_jitter) != 4:
            raise ValueError(f"color_jitter must be (brightness, contrast, saturation, hue), got {color_jitter}")
        transforms.append(ColorJitter(*color_jitter, seed=seed))
    return Compose(transforms)


def build_test_transform(resize_short: int = 160, crop_size: int = 160) -> Compose:
    """Resize(-1, resize_short) -> CenterCrop(crop_size)."""
    return Compose([ResizeShortSide(resize_short), CenterCrop(crop_size)])
