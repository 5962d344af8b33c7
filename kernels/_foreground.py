"""Foreground colour estimation for straight-alpha outputs ("decontamination").

In a half-transparent pixel the frame holds I = a*F + (1-a)*B: foreground mixed with the old
background. Written as straight alpha, that I shows a halo of the old background wherever the
clip is composited. Blur-fusion (Forte & Pitie 2021, "Approximate Fast Foreground Colour
Estimation") recovers F with box filters only:

    F_blur = box(a*I) / box(a),  B_blur = box((1-a)*I) / box(1-a)
    F = F_blur + a * (I - a*F_blur - (1-a)*B_blur)

run twice, first with a large window (a robust local colour), then a small one (detail), on a
reduced working resolution for the blurs. A few box filters per frame: cheap enough for video.
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


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, radii: tuple[int, int] = (90, 6)) -> np.ndarray:
    """rgb [N,H,W,3] (or [H,W,3]) uint8/uint16, alpha [N,H,W] (or [H,W]) float 0..1
    -> foreground colour float32 0..1, same shape as rgb. Radii are in pixels of a 1080-line frame
    and scale with the frame height."""
    single = rgb.ndim == 3
    if single:
        rgb, alpha = rgb[None], alpha[None]
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    out = np.empty(rgb.shape, np.float32)
    h = rgb.shape[1]
    for i in range(rgb.shape[0]):
        image = rgb[i].astype(np.float32) * np.float32(1 / top)
        a = np.clip(alpha[i].astype(np.float32, copy=False), 0, 1)
        fg, bg = image, image
        for r in radii:
            fg, bg = _blur_fusion(image, a, fg, bg, max(1, round(r * h / 1080)))
        out[i] = fg
    return out[0] if single else out


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Replace the colour of half-transparent pixels (0 < alpha < 1) with the estimated foreground
    colour, on rgb's scale. Opaque pixels keep their colour exactly; transparent ones too (their
    colour is invisible in straight alpha, and keeping it keeps the file compressible)."""
    soft = (alpha > 0.0) & (alpha < 1.0)
    if not soft.any():
        return rgb
    top = 65535.0 if rgb.dtype == np.uint16 else 255.0
    estimate = np.rint(estimate_foreground(rgb, alpha) * top).astype(rgb.dtype)
    return np.where(soft[..., None], estimate, rgb)
