"""Reference kernels against independent truths (direct formulas in float64)."""

from __future__ import annotations

import numpy as np
import pytest

from bgvid.kernels import composite


@pytest.mark.parametrize("dtype,top", [(np.uint8, 255), (np.uint16, 65535)])
@pytest.mark.parametrize("background", ["colour", "fractional colour", "plate", "plates"])
def test_composite_matches_the_direct_formula(dtype, top, background):
    rng = np.random.default_rng(7)
    rgb = rng.integers(0, top + 1, (3, 17, 23, 3)).astype(dtype)
    alpha = rng.random((3, 17, 23), dtype=np.float32)
    alpha[:, :4] = 0.0
    alpha[:, 4:8] = 1.0
    bg = {"colour": np.array([0, top, top // 3]), "fractional colour": np.array([0.4, top / 2 + 0.3, 7.6]),
          "plate": rng.integers(0, top + 1, (17, 23, 3)).astype(dtype),
          "plates": rng.integers(0, top + 1, (3, 17, 23, 3)).astype(dtype)}[background]
    out = composite(rgb, alpha, bg)
    assert out.dtype == dtype and out.shape == rgb.shape
    a = alpha.astype(np.float64)[..., None]
    truth = np.rint(a * rgb + (1 - a) * np.rint(np.asarray(bg, np.float64)))
    assert np.abs(out.astype(np.float64) - truth).max() <= 1  # one code value of rounding
    plate = np.broadcast_to(np.rint(np.asarray(bg, np.float64)), rgb.shape)
    np.testing.assert_array_equal(out[:, :4], plate[:, :4])  # alpha 0: exactly the background
    np.testing.assert_array_equal(out[:, 4:8], rgb[:, 4:8])  # alpha 1: exactly the picture
