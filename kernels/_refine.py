"""Edge-aware upsampling of a low-resolution matte: the fast guided filter (He & Sun, 2015).

The model's matte (256x256 or 1024x1024, stretched) is soft and blocky at full resolution. A guided
filter fits, in every small window, alpha ~= a * I + b to the frame's luminance I, so matte edges
snap to image edges. The "fast" form solves for a and b at a reduced working resolution and only
upsamples the two coefficient maps, so the full-resolution cost is one multiply-add per pixel.
"""

from __future__ import annotations

import numpy as np

from ._core import resize_batch, to_float_rgb


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    k = 2 * radius + 1
    return cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT)


def luma(rgb: np.ndarray) -> np.ndarray:
    """[N,H,W,3] uint8/uint16 -> [N,H,W] float32 0..1 (BT.709 weights)."""
    x = to_float_rgb(rgb) * np.float32(1 / 255.0)
    return x[..., 0] * 0.2126 + x[..., 1] * 0.7152 + x[..., 2] * 0.0722


def working_size(height: int, width: int, long_side: int = 512) -> tuple[int, int]:
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def guided_upsample(matte: np.ndarray, rgb: np.ndarray, *, radius: int = 4, eps: float = 1e-3,
                    long_side: int = 512, band_threshold: float = 0.02) -> np.ndarray:
    """matte [N,h,w] float32 0..1 at any resolution, rgb [N,H,W,3] full frames -> [N,H,W] float32.

    radius and eps apply at the working resolution (long side `long_side`): radius 4 spans about
    one model pixel of a 256-pixel matte; eps 1e-3 keeps flat regions flat (a luma step below about
    0.03 does not move the edge)."""
    n, height, width = rgb.shape[:3]
    work = working_size(height, width, long_side)
    guide_full = luma(rgb)
    guide = resize_batch(guide_full, work, interpolation="area")
    p = resize_batch(matte.astype(np.float32, copy=False), work, interpolation="bilinear")
    out = np.empty((n, height, width), np.float32)
    for i in range(n):
        g, q = guide[i], p[i]
        mean_g = _box(g, radius)
        mean_p = _box(q, radius)
        cov = _box(g * q, radius) - mean_g * mean_p
        var = _box(g * g, radius) - mean_g * mean_g
        a = cov / (var + np.float32(eps))
        b = mean_p - a * mean_g
        ab = np.stack([_box(a, radius), _box(b, radius)])
        a_full, b_full = resize_batch(ab, (height, width), interpolation="bilinear")
        refined = np.clip(a_full * guide_full[i] + b_full, 0.0, 1.0)
        # Only the soft band around the model's edge is refined: where the model is sure (0 or 1)
        # a low-contrast guide would otherwise smear its certainty into a grey haze.
        plain = resize_batch(matte[i:i + 1].astype(np.float32, copy=False), (height, width), interpolation="bilinear")[0]
        band = _band(plain, lo=band_threshold, hi=1.0 - band_threshold, grow=max(1, round(radius * height / work[0])))
        out[i] = np.where(band, refined, plain)
    return out


def _band(alpha: np.ndarray, *, lo: float, hi: float, grow: int) -> np.ndarray:
    import cv2

    soft = ((alpha > lo) & (alpha < hi)).astype(np.uint8)
    return cv2.dilate(soft, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)
