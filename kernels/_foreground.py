"""Foreground colour estimation for straight-alpha outputs ("decontamination").

In a half-transparent pixel the frame holds I = a*F + (1-a)*B: foreground mixed with the old
background. Written as straight alpha, that I shows a halo of the old background wherever the
clip is composited. Blur-fusion (Forte & Pitie 2021, "Approximate Fast Foreground Colour
Estimation") recovers F with box filters only:

    F_blur = box(a*I) / box(a),  B_blur = box((1-a)*I) / box(1-a)
    F = F_blur + a * (I - a*F_blur - (1-a)*B_blur)

run twice, first with a large window (a robust local colour), then a small one (detail). The
estimate is made at a working resolution with the long side at most 480 px and brought back up
bilinearly; it is only used in half-transparent pixels, where colour varies slowly. A few box
filters on a small image per frame: about 10 ms at 720p on one core, cheap enough for video.
"""

from __future__ import annotations

import numpy as np

from ._core import resize_batch


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    k = 2 * radius + 1
    return cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT)


def _blur_fusion(image: np.ndarray, alpha: np.ndarray, fg: np.ndarray, bg: np.ndarray, radius: int):
    a = alpha[..., None]
    blurred_a = _box(alpha, radius)[..., None]
    fg_blur = _box(fg * a, radius) / (blurred_a + 1e-5)
    bg_blur = _box(bg * (1 - a), radius) / (1 - blurred_a + 1e-5)
    fg = fg_blur + a * (image - a * fg_blur - (1 - a) * bg_blur)
    return np.clip(fg, 0.0, 1.0), bg_blur


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, radii: tuple[int, int] = (90, 6),
                        long_side: int = 480) -> np.ndarray:
    """rgb [N,H,W,3] (or [H,W,3]) uint8/uint16, alpha [N,H,W] (or [H,W]) float 0..1
    -> foreground colour float32 0..1, same shape as rgb. Radii are in pixels of a 1080-line frame
    and scale with the frame height; the work happens at most `long_side` px wide or high."""
    single = rgb.ndim == 3
    if single:
        rgb, alpha = rgb[None], alpha[None]
    n, h, w = rgb.shape[:3]
    scale = min(1.0, long_side / max(h, w))
    work = (max(1, round(h * scale)), max(1, round(w * scale)))
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    images = resize_batch(rgb, work, interpolation="area")
    alphas = resize_batch(np.clip(alpha.astype(np.float32, copy=False), 0, 1), work, interpolation="area")
    out = np.empty((n, *work, 3), np.float32)
    for i in range(n):
        image = images[i].astype(np.float32) * np.float32(1 / top)
        fg, bg = image, image
        for r in radii:
            fg, bg = _blur_fusion(image, alphas[i], fg, bg, max(1, round(r * work[0] / 1080)))
        out[i] = fg
    out = resize_batch(out, (h, w), interpolation="bilinear")
    return out[0] if single else out


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Replace the colour of half-transparent pixels (0 < alpha < 1) with the estimated foreground
    colour, on rgb's scale. Opaque pixels keep their colour exactly; transparent ones too (their
    colour is invisible in straight alpha, and keeping it keeps the file compressible)."""
    soft = (alpha > 0.0) & (alpha < 1.0)
    if not soft.any():
        return rgb
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    estimate = estimate_foreground(rgb, alpha)
    where = np.nonzero(soft)  # usually a thin band: convert only those pixels
    out = rgb.copy()
    out[where] = np.rint(estimate[where] * np.float32(top)).astype(rgb.dtype)
    return out
