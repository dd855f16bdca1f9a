"""The synthetic videos' pixels: a scrolling texture, sensor noise, and each action's unique shape.

Each frame has a seamless scrolling random texture as background plus per-frame uniform "sensor"
noise (so the encoder cannot skip the background and decoding costs like a real video). An action
of class ``k`` is a large, saturated, high-contrast shape whose shape, colour and motion are
unique to ``k`` (see :data:`adatad.datasets.synthetic_plan.ACTION_CLASSES`), drawn on the frames
its :class:`~adatad.datasets.synthetic_plan.Instance` covers. Rendering is vectorised over a chunk
of frames.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from adatad.datasets.synthetic_plan import ACTION_CLASSES, SyntheticSpec, VideoLayout


def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """Seamless (periodic) low-saturation grey texture (H, W, 3) int16, values about 40..175.

    Band-limited noise built in the Fourier domain is periodic, so scrolling with wrap-around
    shows no seam.
    """
    fy = np.fft.fftfreq(height)[:, None]
    fx = np.fft.fftfreq(width)[None, :]
    radius = np.sqrt(fy**2 + fx**2) + 1.0 / max(height, width)
    spectrum = (rng.normal(size=(height, width)) + 1j * rng.normal(size=(height, width))) / radius**1.3
    img = np.fft.ifft2(spectrum).real
    img = (img - img.mean()) / (img.std() + 1e-9)
    grey = np.clip(108 + 28 * img, 40, 175)
    tint = 1.0 + rng.uniform(-0.06, 0.06, size=3)
    return np.clip(grey[..., None] * tint, 0, 255).astype(np.int16)


def _rotate(dx: np.ndarray, dy: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c, s = np.cos(angle), np.sin(angle)
    return dx * c + dy * s, -dx * s + dy * c


def _mask(label: int, xx: np.ndarray, yy: np.ndarray, t: np.ndarray, u: np.ndarray,
          p: tuple[float, ...], h: int, w: int) -> np.ndarray:
    """Boolean mask (T, H, W) of class ``label``'s shape; t = seconds since start, u = progress 0..1.

    xx (1, 1, W) and yy (1, H, 1) are pixel-centre coordinates; t and u have shape (T, 1, 1).
    """
    s = min(h, w)
    if label == 0:  # blue triangle bouncing
        size = 0.42 * s
        cx = (0.3 + 0.4 * p[0]) * w
        base = 0.85 * h - np.abs(np.sin(np.pi * (1.0 + 0.4 * p[1]) * t)) * (0.85 * h - size - 0.05 * h)
        top = base - size
        frac = (yy - top) / size
        return (frac >= 0) & (frac <= 1) & (np.abs(xx - cx) <= 0.55 * size * frac)
    if label == 1:  # green disc pulsing
        cx, cy = (0.3 + 0.4 * p[0]) * w, (0.35 + 0.3 * p[1]) * h
        r = 0.2 * s * (1 + 0.35 * np.sin(2 * np.pi * (1.0 + 0.5 * p[2]) * t))
        return (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
    if label == 2:  # yellow bar rotating
        cx, cy = (0.35 + 0.3 * p[0]) * w, (0.4 + 0.2 * p[1]) * h
        angle = 2 * np.pi * (p[2] + (0.35 + 0.3 * p[3]) * t)
        a, b = _rotate(xx - cx, yy - cy, angle)
        return (np.abs(a) <= 0.38 * s) & (np.abs(b) <= 0.08 * s)
    if label == 3:  # red square sliding right
        half = 0.19 * s
        cx = (0.15 + 0.7 * u) * w
        cy = (0.35 + 0.3 * p[0]) * h
        return (np.abs(xx - cx) <= half) & (np.abs(yy - cy) <= half)
    if label == 4:  # magenta diamond spinning, sliding left
        cx = (0.85 - 0.7 * u) * w
        cy = (0.35 + 0.3 * p[0]) * h
        a, b = _rotate(xx - cx, yy - cy, 2 * np.pi * (0.5 + 0.5 * p[1]) * t)
        return np.abs(a) + np.abs(b) <= 0.24 * s
    if label == 5:  # cyan ring swinging
        phase = np.sin(2 * np.pi * (0.6 + 0.3 * p[0]) * t + 2 * np.pi * p[1])
        cx = 0.5 * w + 0.3 * w * phase
        cy = (0.45 + 0.1 * p[2]) * h + 0.1 * h * np.abs(phase)
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        return (d2 <= (0.22 * s) ** 2) & (d2 >= (0.12 * s) ** 2)
    if label == 6:  # orange cross tumbling diagonally
        cx = (0.2 + 0.6 * u) * w
        cy = (0.25 + 0.5 * (u if p[0] < 0.5 else 1 - u)) * h
        a, b = _rotate(xx - cx, yy - cy, 2 * np.pi * (0.3 + 0.3 * p[1]) * t)
        arm, thick = 0.22 * s, 0.06 * s
        return ((np.abs(a) <= arm) & (np.abs(b) <= thick)) | ((np.abs(a) <= thick) & (np.abs(b) <= arm))
    # label 7: white ellipse wobbling sideways
    cx = 0.5 * w + 0.2 * w * np.sin(2 * np.pi * (1.5 + 0.5 * p[0]) * t)
    cy = (0.4 + 0.2 * p[1]) * h
    ax = 0.26 * s * (1 + 0.2 * np.sin(2 * np.pi * 1.3 * t))
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / (0.14 * s)) ** 2 <= 1


class _Renderer:
    """Renders frames of one video in chunks: scrolling texture + actions + noise -> uint8 RGB."""

    def __init__(self, spec: SyntheticSpec, layout: VideoLayout) -> None:
        self.spec, self.layout = spec, layout
        rng = np.random.default_rng(layout.texture_seed)
        h, w = spec.height, spec.width
        self.tex = _texture(rng, 2 * h, 2 * w)
        self.tex_tiled = np.tile(self.tex, (2, 2, 1))  # any (h, w) window at offsets < tex size is a slice
        speed = rng.uniform(0.4, 1.2, size=2) * rng.choice([-1, 1], size=2)  # px per frame (x, y)
        self.speed = speed * np.array([1.0, 0.3])
        self.noise_rng = np.random.default_rng([layout.texture_seed, 1])
        self.xx = (np.arange(w, dtype=np.float32) + 0.5)[None, None, :]
        self.yy = (np.arange(h, dtype=np.float32) + 0.5)[None, :, None]
        self.colors = {k: np.array(ACTION_CLASSES[k].color, dtype=np.int16) for k in range(spec.num_classes)}

    def render(self, frames: np.ndarray) -> np.ndarray:
        """Frames ``frames`` (T,) int -> uint8 (T, H, W, 3)."""
        spec, h, w = self.spec, self.spec.height, self.spec.width
        th, tw = self.tex.shape[:2]
        off_x = np.floor(frames * self.speed[0]).astype(np.int64) % tw
        off_y = np.floor(frames * self.speed[1]).astype(np.int64) % th
        clip = np.empty((len(frames), h, w, 3), dtype=np.int16)
        for i, (oy, ox) in enumerate(zip(off_y.tolist(), off_x.tolist(), strict=True)):
            clip[i] = self.tex_tiled[oy : oy + h, ox : ox + w]  # a slice copy is ~8x faster than a gather
        for inst in self.layout.instances:
            active = (frames >= inst.start_frame) & (frames < inst.end_frame)
            if not active.any():
                continue
            f = frames[active].astype(np.float32)[:, None, None]
            t = (f - inst.start_frame) / self.layout.fps
            u = (f - inst.start_frame) / max(inst.end_frame - inst.start_frame - 1, 1)
            mask = _mask(inst.label, self.xx, self.yy, t, u, inst.params, h, w)
            sub = clip[active]
            sub[mask] = self.colors[inst.label]
            clip[active] = sub
        if spec.noise:
            clip += self.noise_rng.integers(-spec.noise, spec.noise + 1, size=clip.shape, dtype=np.int16)
        return np.clip(clip, 0, 255).astype(np.uint8)


def render_frames(spec: SyntheticSpec, layout: VideoLayout, chunk: int = 64) -> Iterator[np.ndarray]:
    """Yield uint8 (T, H, W, 3) chunks of the video's frames in order (deterministic)."""
    renderer = _Renderer(spec, layout)
    for start in range(0, layout.num_frames, chunk):
        yield renderer.render(np.arange(start, min(start + chunk, layout.num_frames)))
