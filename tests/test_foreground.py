"""Foreground colour decontamination: half-transparent pixels get the foreground's own colour."""

from __future__ import annotations

import numpy as np

from bgvid._composite import make_composite
from bgvid.kernels import decontaminate, estimate_foreground


def test_uniform_foreground_and_background_are_recovered():
    # opaque on the left, a 12-pixel soft edge, background on the right; 1080 lines, the scale the
    # default window radii are given at
    alpha = np.tile(np.clip((40 - np.arange(64, dtype=np.float32)) / 12, 0, 1), (1080, 1))
    fg, bg = np.array([200, 40, 30]) / 255, np.array([10, 220, 60]) / 255
    image = np.rint((alpha[..., None] * fg + (1 - alpha[..., None]) * bg) * 255).astype(np.uint8)
    estimate = estimate_foreground(image, alpha)
    soft = (alpha > 0.1) & (alpha < 1)
    observed = np.abs(image[soft] / 255.0 - fg).max()
    assert np.abs(estimate[soft] - fg).max() < 16 / 255 < observed / 8  # blur-fusion is approximate


def test_real_fur_edges_lose_the_old_background(media):
    """The lemur's soft fur over a saturated green and over a real photo: edge colour error (MSE
    against the true foreground) falls by at least 4x with the true alpha."""
    for background in (np.full((300, 400, 3), (0, 255, 0), np.uint8), media / "backgrounds" / "still_GT26r.jpg"):
        frame, alpha, truth = next(make_composite(media / "rgba" / "lemur_rgba.png", background, frames=1,
                                                  size=(144, 256)))
        edge = (alpha > 0.05) & (alpha < 0.95)
        observed = ((frame / 255.0 - truth) ** 2)[edge].mean()
        estimated = ((estimate_foreground(frame, alpha) - truth) ** 2)[edge].mean()
        assert estimated * 4 < observed, (estimated, observed)


def test_decontaminate_leaves_opaque_and_transparent_pixels_alone():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65535, (2, 32, 40, 3), dtype=np.uint16)
    alpha = np.zeros((2, 32, 40), np.float32)
    alpha[:, :, 20:] = 1.0
    alpha[:, :, 18:22] = 0.5
    out = decontaminate(rgb, alpha)
    assert out.dtype == np.uint16 and out.shape == rgb.shape
    keep = (alpha == 0) | (alpha == 1)
    np.testing.assert_array_equal(out[keep], rgb[keep])
    assert (out[alpha == 0.5] != rgb[alpha == 0.5]).any()
