"""Solid mattes from per-frame models, and compositor-style levels.

A per-frame segmentation model (ISNet above all) leaves three kinds of dirt a compositor would paint
out by hand: half-transparent blotches inside a subject (which also flicker from frame to frame), small
islands of foreground in the background, and faint plumes or haze away from any subject. `solidify`
removes them while the soft values along the subject's edge, where hair, fur and motion blur live,
are kept as the model made them:

    hard   = alpha >= 0.5
    hard  -= connected pieces smaller than `island` pixels              (islands removed)
    hard  += enclosed background pieces of at most `hole` pixels, or     (holes filled)
             whose mean alpha is at least `hole_alpha` (the model half-believes them: a blotch)
    d_in, d_out = Euclidean distance to the edge of hard, inside and outside it
    ramp(d) = clip((d - band/2) / (band/2), 0, 1)                        (0 up to band/2, 1 from band on)
    alpha  = min(max(alpha, ramp(d_in)), 1 - ramp(d_out)), and 0 on removed islands

so the interior is solid from `band` pixels inside the edge, nothing is left from `band` pixels
outside it, and between them the model's own values are only ever raised towards the solid profile
inside and lowered towards the empty one outside: a good soft edge, which already lies above/below
those ramps, is left as it was, and there is no step anywhere (a step would show as a Grad error and
as flicker where it moves). Islands are 8-connected, holes 4-connected (the usual pair, so a diagonal
gap does not make a hole). Thresholds are in pixels of the matte they run on; `default_cleanup(h, w)`
scales them with the frame (chosen on the composites of benchmarks/subject.py, see README "Any
subject").

`levels` is the compositor's clip black / clip white: alpha <= black -> 0, >= white -> 1, linear
between.

Each function has an OpenCV body for NumPy arrays and a portable body on kernels/_backend.py (NumPy +
scipy.ndimage, or CuPy + cupyx.scipy.ndimage) for device arrays; the portable body labels and measures
a whole batch at once (nothing connects across frames) and never brings a value back to the host.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._backend import backend_for, get_array_module


@dataclass(frozen=True)
class Cleanup:
    """Thresholds of `solidify`, in pixels of the matte."""

    band: int  # the soft edge: solid from `band` px inside, empty from `band` px outside
    island: int  # foreground pieces smaller than this are removed
    hole: int  # enclosed background pieces at most this big are filled
    hole_alpha: float = 0.35  # ... and larger ones whose mean alpha is at least this


def default_cleanup(height: int, width: int) -> Cleanup:
    """The thresholds for a height x width matte: an edge band of 1/72 of the short side (at least 4 px;
    10 at 720p), islands under 0.05% of the frame (at least 16 px; 461 at 720p), pinholes up to 0.01%
    (at least 4 px; 92 at 720p) always filled, larger holes where the model gave them a mean alpha of at
    least 0.35 (measured on the plush composite: its real holes, the goggles' strap ring and the gaps
    between arm and body, carry 0.17-0.43 with a true alpha of 0.04-0.24; a fill of everything up to
    0.05% of the frame or from 0.15 on filled them and doubled its Grad)."""
    area = int(height) * int(width)
    return Cleanup(band=max(4, round(min(height, width) / 72)), island=max(16, round(area * 5e-4)),
                   hole=max(4, round(area * 1e-4)))


def levels(alpha, black: float = 0.0, white: float = 1.0):
    """alpha <= black -> 0, >= white -> 1, a straight line between (0 <= black < white <= 1). One body:
    plain array arithmetic on the input's own module."""
    xp = get_array_module(alpha)
    if black == 0.0 and white == 1.0:
        return alpha
    scale = xp.float32(1.0 / (white - black))
    return xp.clip((alpha.astype(xp.float32) - xp.float32(black)) * scale, 0.0, 1.0)


def _ramp(xp, distance, band: int):
    half = band / 2.0
    return xp.clip((distance - xp.float32(half)) * xp.float32(1.0 / half), 0.0, 1.0).astype(xp.float32)


def solidify(alpha, cleanup: Optional[Cleanup] = None, *, backend=None):
    """alpha [N,H,W] float 0..1 -> the cleaned matte, float32 [N,H,W] (see the module docstring)."""
    if alpha.ndim != 3:
        raise ValueError(f"alpha must be [N,H,W], got shape {tuple(alpha.shape)}")
    c = cleanup or default_cleanup(*alpha.shape[1:3])
    if backend is not None or get_array_module(alpha) is not np:
        return _solidify_portable(backend or backend_for(alpha), alpha, c)
    import cv2

    out = np.empty(alpha.shape, np.float32)
    h, w = alpha.shape[1:3]
    for i in range(alpha.shape[0]):
        a = np.asarray(alpha[i], np.float32)
        hard = (a >= 0.5).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(hard, connectivity=8)
        small = stats[:, cv2.CC_STAT_AREA] < c.island
        small[0] = False  # label 0: the background
        island = small[labels] if small.any() else None
        if island is not None:
            hard[island] = 0
        n, labels, stats, _ = cv2.connectedComponentsWithStats(1 - hard, connectivity=4)
        x, y, bw, bh, area = (stats[:, k] for k in range(5))
        # enclosed: the bounding box touches no frame edge; label 0 is the subject itself
        enclosed = np.flatnonzero((x > 0) & (y > 0) & (x + bw < w) & (y + bh < h))
        fill = np.zeros(n, bool)
        for k in enclosed[enclosed > 0]:
            if area[k] <= c.hole:
                fill[k] = True
                continue
            box = (slice(y[k], y[k] + bh[k]), slice(x[k], x[k] + bw[k]))
            fill[k] = float(a[box][labels[box] == k].mean()) >= c.hole_alpha
        if fill.any():
            hard[fill[labels]] = 1
        # exact Euclidean distances to the nearest pixel on the other side; the frame's edge is no edge
        # of the subject (a subject cut by it stays solid up to it), and with nothing on the other side
        # OpenCV returns a huge distance, as wanted
        inside = cv2.distanceTransform(hard, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        outside = cv2.distanceTransform(1 - hard, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        o = np.maximum(a, _ramp(np, inside, c.band))
        np.minimum(o, 1.0 - _ramp(np, outside, c.band), out=o)
        if island is not None:
            o[island] = 0.0
        out[i] = o
    return out


def _distance(be, mask, band: int):
    """Per-frame Euclidean distance from each True pixel of mask [N,H,W] to the nearest False one, exact up
    to 2*band+2 (all the ramps need). One call for the batch: the frame axis is sampled so far apart that
    no distance crosses frames, and a column of False pixels 2*band+2 beyond the right edge gives every
    frame a False pixel (a frame without one would otherwise be measured to a virtual one)."""
    xp = be.xp
    n, h, w = mask.shape
    pad = 2 * band + 2
    padded = xp.concatenate([mask, xp.ones((n, h, pad - 1), dtype=bool), xp.zeros((n, h, 1), dtype=bool)], axis=2)
    d = be.ndi.distance_transform_edt(padded, sampling=(float(4 * (h + w + pad)), 1.0, 1.0))
    return d[:, :, :w].astype(xp.float32)


def _solidify_portable(be, alpha, c: Cleanup):
    xp, ndi = be.xp, be.ndi
    a = alpha.astype(xp.float32)
    hard = a >= 0.5
    # components never cross frames: connectivity only within each [H, W] plane
    eight = xp.zeros((3, 3, 3), dtype=bool)
    eight[1] = True
    four = xp.zeros((3, 3, 3), dtype=bool)
    four[1, 1, :] = True
    four[1, :, 1] = True
    labels, count = ndi.label(hard, structure=eight)
    area = xp.bincount(labels.ravel(), minlength=count + 1)
    small = area < c.island
    small[0] = False
    island = small[labels]
    hard = hard & ~island
    labels, count = ndi.label(~hard, structure=four)
    flat = labels.ravel()
    area = xp.bincount(flat, minlength=count + 1)
    total = xp.bincount(flat, weights=a.ravel(), minlength=count + 1)
    fill = (area <= c.hole) | (total >= c.hole_alpha * xp.maximum(area, 1))
    fill[0] = False
    edge = xp.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(),
                           labels[:, :, -1].ravel()])
    fill[edge] = False
    hard = hard | fill[labels]
    out = xp.maximum(a, _ramp(xp, _distance(be, hard, c.band), c.band))
    out = xp.minimum(out, 1.0 - _ramp(xp, _distance(be, ~hard, c.band), c.band))
    return xp.where(island, xp.float32(0.0), out).astype(xp.float32)
