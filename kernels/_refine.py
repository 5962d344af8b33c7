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
from fractions import Fraction
from typing import Optional

import numpy as np

from ._backend import backend_for, get_array_module
from ._core import resize_batch


def _box_cv(x: np.ndarray, radius: int) -> np.ndarray:
    import cv2

    k = 2 * radius + 1
    return cv2.blur(x, (k, k), borderType=cv2.BORDER_REFLECT)


def working_size(height: int, width: int, long_side: int = 512) -> tuple[int, int]:
    scale = min(1.0, long_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def _colour_coefficients(guide: tuple, p, radius: int, eps: float, box=None, merge=None):
    """Per-window least squares p ~= a . I + b with ridge eps: a [h,w,3], b [h,w], box-averaged.

    guide is the colour as three contiguous [h,w] planes. Every window sum is a separate plane box
    filter: the same arithmetic as one 13-channel cv2.blur (bit for bit), but the per-pixel algebra
    below then runs on contiguous planes instead of strided channel views, and nothing is stacked.
    box(x, radius) and merge(planes) default to OpenCV's; the portable body passes the backend's
    (planes of any leading shape, e.g. [N,h,w]): one arithmetic for both."""
    import cv2

    _box = box or _box_cv
    # float64: eps is tiny (1e-5), so in flat windows a = cov / (var + eps) amplifies the rounding of the
    # window sums ~1e5-fold; in float32 two correct box filters (OpenCV's, a GPU's) then disagree by more
    # than a 10-bit step on ~0.1% of edge pixels. In float64 they agree.
    r, g, b_ = (x.astype("float64") for x in guide)
    p = p.astype("float64")
    eps = float(eps)
    m_r, m_g, m_b, m_p = _box(r, radius), _box(g, radius), _box(b_, radius), _box(p, radius)
    v0, v1, v2 = _box(r * p, radius) - m_r * m_p, _box(g * p, radius) - m_g * m_p, _box(b_ * p, radius) - m_b * m_p
    s11 = _box(r * r, radius) - m_r * m_r + eps
    s12 = _box(r * g, radius) - m_r * m_g
    s13 = _box(r * b_, radius) - m_r * m_b
    s22 = _box(g * g, radius) - m_g * m_g + eps
    s23 = _box(g * b_, radius) - m_g * m_b
    s33 = _box(b_ * b_, radius) - m_b * m_b + eps
    # Inverse of the symmetric 3x3 (Sigma + eps I) by cofactors, per pixel.
    c11, c12, c13 = s22 * s33 - s23 * s23, s13 * s23 - s12 * s33, s12 * s23 - s13 * s22
    c22, c23, c33 = s11 * s33 - s13 * s13, s13 * s12 - s11 * s23, s11 * s22 - s12 * s12
    inv_det = 1.0 / (s11 * c11 + s12 * c12 + s13 * c13)
    a0 = (c11 * v0 + c12 * v1 + c13 * v2) * inv_det
    a1 = (c12 * v0 + c22 * v1 + c23 * v2) * inv_det
    a2 = (c13 * v0 + c23 * v1 + c33 * v2) * inv_det
    b = m_p - a0 * m_r - a1 * m_g - a2 * m_b
    planes = [_box(a0, radius).astype("float32"), _box(a1, radius).astype("float32"),
              _box(a2, radius).astype("float32"), _box(b, radius).astype("float32")]
    return (merge or cv2.merge)(planes)  # [..., h, w, 4]: a (3) and b


def guided_upsample(matte, rgb, *, radius: Optional[int] = None, eps: float = 1e-5, long_side: int = 512,
                    band_threshold: float = 0.02, backend=None):
    """matte [N,h,w] float32 0..1 at any resolution, rgb [N,H,W,3] full frames -> [N,H,W] float32.

    The filter runs at a working resolution whose long side is max(long_side, the matte's long side),
    capped at the frame's: never below the matte's own detail. radius and eps apply there; the default
    radius spans one model pixel (at least 2), because a window must reach across the model's blur to
    find the edge in the picture."""
    n, height, width = rgb.shape[:3]
    if backend is not None or get_array_module(matte) is not np:
        return _guided_upsample_portable(backend or backend_for(matte), matte, rgb, radius=radius, eps=eps,
                                         long_side=long_side, band_threshold=band_threshold)
    matte = matte.astype(np.float32, copy=False)
    if matte.shape[1:3] == (height, width):
        return matte.copy()  # a full-resolution matte (rvm refines its own edges): nothing to lift
    work = working_size(height, width, max(long_side, max(matte.shape[1:3])))
    if radius is None:
        radius = max(2, math.ceil(max(work) / max(matte.shape[1:3])))
    out = np.empty((n, height, width), np.float32)
    scale = np.float32(1 / (65535.0 if rgb.dtype == np.uint16 else 255.0))
    grow = max(1, round(radius * height / work[0]))
    for i in range(n):
        # The bilinear matte is written straight into the output (what resize_batch computes, without
        # a second frame-sized array and copy: page faults on fresh 720p buffers cost more than the resize).
        plain = _resize_into(matte[i], out[i])
        # Only the soft band around the model's edge is refined: where the model is sure (0 or 1)
        # a low-contrast guide would otherwise smear its certainty into a grey haze. It is also where
        # all the full-resolution work happens (a few % of a frame), so the rest costs nothing.
        # The band is looked for only inside a box bounded from the low-resolution matte (the rest of
        # the frame cannot hold a soft pixel), which skips most of the frame-sized mask passes.
        box = _band_box(matte[i], (height, width), lo=band_threshold, hi=1.0 - band_threshold, grow=grow)
        if box is None:
            continue
        r0, r1, c0, c1 = box
        band = _band(plain[r0:r1, c0:c1], lo=band_threshold, hi=1.0 - band_threshold, grow=grow)
        local = np.flatnonzero(band)
        if local.size == 0:
            continue
        ys = local // (c1 - c0)
        xs = local - ys * (c1 - c0)
        ys += r0
        xs += c0
        where = ys * width + xs
        frame = rgb[i]
        p = resize_batch(matte[i:i + 1], work, interpolation="bilinear")[0]
        # Coefficients only over the band's bounding box (plus the filter's reach: two box passes
        # of `radius` and one bilinear tap), so they equal those of the whole frame there.
        margin = 2 * radius + 2
        y0 = max(0, int(int(ys[0]) * work[0] / height) - margin)
        y1 = min(work[0], int(np.ceil((int(ys[-1]) + 1) * work[0] / height)) + margin)
        x0 = max(0, int(int(xs.min()) * work[1] / width) - margin)
        x1 = min(work[1], int(np.ceil((int(xs.max()) + 1) * work[1] / width)) + margin)
        guide = _guide_crop(frame, work, (y0, y1, x0, x1), scale)
        coef = _colour_coefficients(guide, p[y0:y1, x0:x1], radius, np.float32(eps))
        # Sample the coefficient maps at the band's pixels only (bilinear, pixel centres aligned as in
        # a resize) instead of resizing four full-resolution planes.
        at = _sample(coef, (ys, xs), (height, width), scale_to=work, offset=(y0, x0))
        colour = np.take(frame.reshape(-1, 3), where, axis=0).astype(np.float32) * scale  # take: ~5x a fancy index
        refined = at[:, 0] * colour[:, 0] + at[:, 1] * colour[:, 1] + at[:, 2] * colour[:, 2] + at[:, 3]
        plain.reshape(-1)[where] = np.clip(refined, 0.0, 1.0)
    return out


def _guided_upsample_portable(be, matte, rgb, *, radius, eps, long_side, band_threshold):
    """guided_upsample on any backend, all frames at once, the whole frame at once: the same filter as
    the CPU body (which restricts the work to the soft band's bounding box and samples the coefficient
    maps only at the band's pixels; the values there are the same up to float rounding)."""
    xp = be.xp
    n, height, width = rgb.shape[:3]
    matte = matte.astype(xp.float32)
    if matte.shape[1:3] == (height, width):
        return matte.copy()
    work = working_size(height, width, max(long_side, max(matte.shape[1:3])))
    if radius is None:
        radius = max(2, math.ceil(max(work) / max(matte.shape[1:3])))
    grow = max(1, round(radius * height / work[0]))
    plain = be.resize(matte, (height, width), "bilinear")
    soft = ((plain > band_threshold) & (plain < 1.0 - band_threshold)).astype(xp.uint8)
    band = be.max_square(soft, grow).astype(bool)
    scale = xp.float32(1 / (65535.0 if rgb.dtype == xp.uint16 else 255.0))
    p = be.resize(matte, work, "bilinear")
    small = be.resize(rgb, work, "area") * scale  # [N, h, w, 3]
    guide = tuple(xp.ascontiguousarray(small[..., c]) for c in range(3))
    coef = _colour_coefficients(guide, p, radius, xp.float32(eps), box=lambda x, r: be.box(x, r, "reflect"),
                                merge=lambda planes: xp.stack(planes, axis=-1))
    at = be.resize(coef, (height, width), "bilinear")  # [N, H, W, 4]
    colour = rgb.astype(xp.float32) * scale
    refined = at[..., 0] * colour[..., 0] + at[..., 1] * colour[..., 1] + at[..., 2] * colour[..., 2] + at[..., 3]
    return xp.where(band, xp.clip(refined, 0.0, 1.0), plain).astype(xp.float32)


def _resize_into(image: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Bilinear resize of image [h,w] to dst's shape, written into dst (same call as resize_batch)."""
    import cv2

    height, width = dst.shape
    if image.shape == dst.shape:
        dst[...] = image
        return dst
    res = cv2.resize(image, (width, height), dst=dst, interpolation=cv2.INTER_LINEAR)
    if res is not dst:  # OpenCV allocated instead (dst not usable as is): copy
        dst[...] = res
    return dst


def _guide_crop(frame: np.ndarray, work: tuple[int, int], box: tuple[int, int, int, int], scale) -> tuple:
    """The area-resized frame at work size, cropped to box=(y0, y1, x0, x1), as three float32 planes
    on 0..1: only the crop (widened to whole source pixels) is resized, not the whole frame."""
    import cv2

    y0, y1, x0, x1 = box
    height, width = frame.shape[:2]
    rows, cols = _area_span(height, work[0], y0, y1), _area_span(width, work[1], x0, x1)
    if rows is None or cols is None:
        small = resize_batch(frame[None], work, interpolation="area")[0][y0:y1, x0:x1]
    else:
        (dy0, dy1, sy0, sy1), (dx0, dx1, sx0, sx1) = rows, cols
        if (dy1 - dy0, dx1 - dx0) == (sy1 - sy0, sx1 - sx0):
            small = frame[sy0:sy1, sx0:sx1]
        else:
            small = cv2.resize(frame[sy0:sy1, sx0:sx1], (dx1 - dx0, dy1 - dy0), interpolation=cv2.INTER_AREA)
        small = small[y0 - dy0:y1 - dy0, x0 - dx0:x1 - dx0]
    return tuple(np.multiply(small[..., c], scale, dtype=np.float32) for c in range(3))


def _area_span(n_src: int, n_dst: int, lo: int, hi: int):
    """Destination pixels [lo, hi) of an area resize n_src -> n_dst, widened to (dlo, dhi) whose
    edges fall on whole source pixels (slo, shi): resizing source [slo, shi) to dhi - dlo pixels gives
    exactly the full resize's pixels there, since OpenCV's area weights depend only on the positions
    relative to the pixel grid, the same in the crop. None where the scale is not a short binary
    fraction (its products would round differently in the crop)."""
    period = Fraction(n_src, n_dst).denominator
    if period & (period - 1) or period > 64:
        return None
    dlo = lo // period * period
    dhi = min(n_dst, -(-hi // period) * period)
    return dlo, dhi, dlo * n_src // n_dst, (n_src if dhi == n_dst else dhi * n_src // n_dst)


def _sample(image: np.ndarray, where, size: tuple[int, int], *, scale_to=None,
            offset=(0, 0)) -> np.ndarray:
    """Bilinear samples at the flat indices `where` (or its (rows, cols)) of a size=(H, W) grid, with
    the pixel-centre alignment of a resize -> [K, C]. The grid maps onto an image of shape scale_to
    (default: image's own), of which `image` [h,w,C] is the crop starting at offset=(row, col)."""
    import cv2

    height, width = size
    full_h, full_w = scale_to if scale_to is not None else image.shape[:2]
    ys, xs = np.divmod(where, width) if isinstance(where, np.ndarray) else where
    count = ys.size
    rows = -(-count // _SAMPLE_ROW)  # cv2.remap takes at most 32767 columns: fold into rows
    map_x = np.zeros(rows * _SAMPLE_ROW, np.float32)
    map_y = np.zeros(rows * _SAMPLE_ROW, np.float32)
    # Per-column / per-row lookup tables: the same float64 expression as per sample, evaluated once
    # per grid line, then gathered.
    col_at = ((np.arange(width) + 0.5) * (full_w / width) - 0.5 - offset[1]).astype(np.float32)
    row_at = ((np.arange(height) + 0.5) * (full_h / height) - 0.5 - offset[0]).astype(np.float32)
    np.take(col_at, xs, out=map_x[:count])
    np.take(row_at, ys, out=map_y[:count])
    out = cv2.remap(image, map_x.reshape(rows, -1), map_y.reshape(rows, -1), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * _SAMPLE_ROW, -1)[:count]


_SAMPLE_ROW = 8192


def _band_box(matte: np.ndarray, size: tuple[int, int], *, lo: float, hi: float, grow: int):
    """(r0, r1, c0, c1): the part of the size=(H, W) frame outside which _band(bilinear(matte)) is
    surely empty, or None if it is empty everywhere. A bilinear pixel is a convex mix of a 2x2 block of
    matte pixels, so it can fall in (lo, hi) only if every pixel of that block has, within its 3x3
    neighbourhood, one above lo and one below hi; the box is those pixels' reach (+-1 source pixel,
    +1 for rounding) plus the band's dilation, so a band found inside it equals the whole frame's."""
    import cv2

    tol = 1e-3  # far above the rounding of a float32 convex mix
    k = np.ones((3, 3), np.uint8)
    near = (cv2.dilate(matte, k) > lo - tol) & (cv2.erode(matte, k) < hi + tol)
    rows, cols = np.flatnonzero(near.any(axis=1)), np.flatnonzero(near.any(axis=0))
    if rows.size == 0:
        return None
    (r0, r1), (c0, c1) = (_reach(rows[0], rows[-1], matte.shape[0], size[0], grow),
                          _reach(cols[0], cols[-1], matte.shape[1], size[1], grow))
    return r0, r1, c0, c1


def _reach(j0: int, j1: int, n_src: int, n_dst: int, grow: int) -> tuple[int, int]:
    """Destination pixels [lo, hi) whose bilinear source position (x + 0.5) * s - 0.5 lies within
    [j0 - 1, j1 + 1], widened by 1 for rounding and by grow."""
    s = n_src / n_dst
    lo = math.floor((j0 - 0.5) / s - 0.5) - 1 - grow
    hi = math.ceil((j1 + 1.5) / s - 0.5) + 1 + grow
    return max(0, lo), min(n_dst, hi + 1)


def _band(alpha: np.ndarray, *, lo: float, hi: float, grow: int) -> np.ndarray:
    import cv2

    soft = (alpha > lo) & (alpha < hi)
    # Dilate the 0/1 bytes in place of a bool -> uint8 -> bool round trip (two fewer frame passes).
    return cv2.dilate(soft.view(np.uint8), np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).view(bool)
