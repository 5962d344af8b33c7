"""Invariants of guided_upsample's cropping: the band's box (found from the low-resolution matte)
holds every band pixel, and area-resized crops of the guide equal crops of the full resize. These are
what let it work on the band's bounding box only and still give the full-frame result bit for bit."""

from __future__ import annotations

import cv2
import numpy as np

from bgvid.kernels import _refine


def _ref_band(alpha, lo, hi, grow):
    soft = ((alpha > lo) & (alpha < hi)).astype(np.uint8)
    return cv2.dilate(soft, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)).astype(bool)


def test_band_box_holds_the_whole_band():
    rng = np.random.default_rng(5)
    for trial in range(40):
        mh, mw = rng.integers(8, 80, 2)
        h, w = rng.integers(20, 400, 2)
        kind = trial % 4
        m = rng.random((mh, mw), dtype=np.float32)
        if kind == 1:
            m = (m > 0.97).astype(np.float32)  # isolated hard pixels: soft only after upsampling
        elif kind == 2:
            m = np.where(m > 0.99, np.float32(0.02 + 1e-7), np.float32(0))  # just above lo
        elif kind == 3:
            m[:] = 0.0
            m[rng.integers(mh), rng.integers(mw)] = 1.0
        grow = int(rng.integers(1, 8))
        plain = cv2.resize(m, (int(w), int(h)), interpolation=cv2.INTER_LINEAR)
        band = _ref_band(plain, 0.02, 0.98, grow)
        box = _refine._band_box(m, (int(h), int(w)), lo=0.02, hi=0.98, grow=grow)
        if box is None:
            assert not band.any()
            continue
        r0, r1, c0, c1 = box
        inside = np.zeros_like(band)
        inside[r0:r1, c0:c1] = True
        assert not (band & ~inside).any()
        np.testing.assert_array_equal(_refine._band(plain[r0:r1, c0:c1], lo=0.02, hi=0.98, grow=grow),
                                      band[r0:r1, c0:c1])


def test_area_crops_equal_the_full_resize():
    rng = np.random.default_rng(9)
    for (h, w), (wh, ww) in [((720, 1280), (288, 512)), ((1080, 1920), (288, 512)), ((720, 1280), (256, 256)),
                             ((600, 800), (384, 512)), ((512, 1024), (256, 512))]:
        frame = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        full = cv2.resize(frame, (ww, wh), interpolation=cv2.INTER_AREA)
        for _ in range(15):
            y0, x0 = int(rng.integers(0, wh - 1)), int(rng.integers(0, ww - 1))
            y1, x1 = int(rng.integers(y0 + 1, wh + 1)), int(rng.integers(x0 + 1, ww + 1))
            planes = _refine._guide_crop(frame, (wh, ww), (y0, y1, x0, x1), np.float32(1 / 255.0))
            want = full[y0:y1, x0:x1].astype(np.float32) * np.float32(1 / 255.0)
            for c in range(3):
                np.testing.assert_array_equal(planes[c], want[..., c])
