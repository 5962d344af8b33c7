"""Edge-aware upsampling of a low-resolution matte: the fast colour guided filter (He & Sun, 2015).

The model's matte (256x256 or 1024x1024, stretched) is soft and blocky at full resolution. A guided
filter fits, in every small window, alpha ~= a . I + b to the frame's colour I (a 3-vector a, so an
edge between two colours of equal brightness still guides the matte; a luma guide lost those and
raised MAD), so matte edges snap to image edges. The "fast" form solves for a and b at a working
resolution and only upsamples the coefficient maps: the full-resolution cost is a 3-term
multiply-add per pixel.

Defaults (radius 2, eps 1e-5, working long side max(512, matte)) were chosen on the composites of
benchmarks/quality.py, where they lower both MAD and Grad against bilinear for selfie and isnet;
larger radii or eps sharpen more (lower Grad) but smear isnet's already fine edges (higher MAD).
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np

from ._core import resize_batch


def _box(x: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    k = 2 * radius + 1
    return cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT)


def working_size(height: int, width: int, long_side: int = 512) -> tuple[int, int]:
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _colour_coefficients(guide: np.ndarray, p: np.ndarray, radius: int, eps: float):
    """Per-window least squares p ~= a . I + b with ridge eps: a [h,w,3], b [h,w], box-averaged."""
    r, g, b_ = guide[..., 0], guide[..., 1], guide[..., 2]
    # One multi-channel box filter for every window sum (cv2.blur filters all channels in one pass).
    sums = _box(np.stack([r, g, b_, p, r * p, g * p, b_ * p, r * r, r * g, r * b_, g * g, g * b_, b_ * b_], axis=-1), radius)
    m_r, m_g, m_b, m_p = sums[..., 0], sums[..., 1], sums[..., 2], sums[..., 3]
    v0, v1, v2 = sums[..., 4] - m_r * m_p, sums[..., 5] - m_g * m_p, sums[..., 6] - m_b * m_p
    s11 = sums[..., 7] - m_r * m_r + eps
    s12 = sums[..., 8] - m_r * m_g
    s13 = sums[..., 9] - m_r * m_b
    s22 = sums[..., 10] - m_g * m_g + eps
    s23 = sums[..., 11] - m_g * m_b
    s33 = sums[..., 12] - m_b * m_b + eps
    # Inverse of the symmetric 3x3 (Sigma + eps I) by cofactors, per pixel.
    c11, c12, c13 = s22 * s33 - s23 * s23, s13 * s23 - s12 * s33, s12 * s23 - s13 * s22
    c22, c23, c33 = s11 * s33 - s13 * s13, s13 * s12 - s11 * s23, s11 * s22 - s12 * s12
    inv_det = 1.0 / (s11 * c11 + s12 * c12 + s13 * c13)
    a0 = (c11 * v0 + c12 * v1 + c13 * v2) * inv_det
    a1 = (c12 * v0 + c22 * v1 + c23 * v2) * inv_det
    a2 = (c13 * v0 + c23 * v1 + c33 * v2) * inv_det
    coef = np.stack([a0, a1, a2, m_p - a0 * m_r - a1 * m_g - a2 * m_b], axis=-1)
    return _box(coef, radius)  # [h, w, 4]: a (3) and b


def guided_upsample(matte: np.ndarray, rgb: np.ndarray, *, radius: Optional[int] = None, eps: float = 1e-5,
                    long_side: int = 512, band_threshold: float = 0.02) -> np.ndarray:
    """matte [N,h,w] float32 0..1 at any resolution, rgb [N,H,W,3] full frames -> [N,H,W] float32.

    The filter runs at a working resolution whose long side is max(long_side, the matte's long side),
    capped at the frame's: never below the matte's own detail. radius and eps apply there; the default
    radius spans one model pixel (at least 2), because a window must reach across the model's blur to
    find the edge in the picture."""
    n, height, width = rgb.shape[:3]
    matte = matte.astype(np.float32, copy=False)
    if matte.shape[1:3] == (height, width):
        return matte.copy()  # a full-resolution matte (rvm refines its own edges): nothing to lift
    work = working_size(height, width, max(long_side, max(matte.shape[1:3])))
    if radius is None:
        radius = max(2, math.ceil(max(work) / max(matte.shape[1:3])))
    out = np.empty((n, height, width), np.float32)
    plain_all = resize_batch(matte, (height, width), interpolation="bilinear")
    scale = np.float32(1 / (65535.0 if rgb.dtype == np.uint16 else 255.0))
    for i in range(n):
        plain = plain_all[i]
        # Only the soft band around the model's edge is refined: where the model is sure (0 or 1)
        # a low-contrast guide would otherwise smear its certainty into a grey haze. It is also where
        # all the full-resolution work happens (a few % of a frame), so the rest costs nothing.
        band = _band(plain, lo=band_threshold, hi=1.0 - band_threshold, grow=max(1, round(radius * height / work[0])))
        out[i] = plain
        where = np.flatnonzero(band)
        if where.size == 0:
            continue
        frame = rgb[i]
        guide = resize_batch(frame[None], work, interpolation="area")[0].astype(np.float32) * scale
        p = resize_batch(matte[i:i + 1], work, interpolation="bilinear")[0]
        # Coefficients only over the band's bounding box (plus the filter's reach: two box passes
        # of `radius` and one bilinear tap), so they equal those of the whole frame there.
        rows, cols = np.divmod(where[[0, -1]], width)[0], np.divmod(where, width)[1]
        margin = 2 * radius + 2
        y0 = max(0, int(rows[0] * work[0] / height) - margin)
        y1 = min(work[0], int(np.ceil((rows[1] + 1) * work[0] / height)) + margin)
        x0 = max(0, int(cols.min() * work[1] / width) - margin)
        x1 = min(work[1], int(np.ceil((cols.max() + 1) * work[1] / width)) + margin)
        coef = _colour_coefficients(guide[y0:y1, x0:x1], p[y0:y1, x0:x1], radius, np.float32(eps))
        # Sample the coefficient maps at the band's pixels only (bilinear, pixel centres aligned as in
        # a resize) instead of resizing four full-resolution planes.
        at = _sample(coef, where, (height, width), scale_to=work, offset=(y0, x0))
        colour = frame.reshape(-1, 3)[where].astype(np.float32) * scale
        refined = at[:, 0] * colour[:, 0] + at[:, 1] * colour[:, 1] + at[:, 2] * colour[:, 2] + at[:, 3]
        out[i].reshape(-1)[where] = np.clip(refined, 0.0, 1.0)
    return out


def _sample(image: np.ndarray, where: np.ndarray, size: tuple[int, int], *, scale_to=None,
            offset=(0, 0)) -> np.ndarray:
    """Bilinear samples at the flat indices `where` of a size=(H, W) grid, with the pixel-centre
    alignment of a resize -> [K, C]. The grid maps onto an image of shape scale_to (default: image's
    own), of which `image` [h,w,C] is the crop starting at offset=(row, col)."""
    import cv2

    height, width = size
    full_h, full_w = scale_to if scale_to is not None else image.shape[:2]
    ys, xs = np.divmod(where, width)
    rows = -(-where.size // _SAMPLE_ROW)  # cv2.remap takes at most 32767 columns: fold into rows
    map_x = np.zeros(rows * _SAMPLE_ROW, np.float32)
    map_y = np.zeros(rows * _SAMPLE_ROW, np.float32)
    map_x[:where.size] = (xs + 0.5) * (full_w / width) - 0.5 - offset[1]
    map_y[:where.size] = (ys + 0.5) * (full_h / height) - 0.5 - offset[0]
    out = cv2.remap(image, map_x.reshape(rows, -1), map_y.reshape(rows, -1), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * _SAMPLE_ROW, -1)[:where.size]


_SAMPLE_ROW = 8192


def _band(alpha: np.ndarray, *, lo: float, hi: float, grow: int) -> np.ndarray:
    import cv2

    soft = ((alpha > lo) & (alpha < hi)).astype(np.uint8)
    return cv2.dilate(soft, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)
