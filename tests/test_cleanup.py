"""Solid mattes (kernels/_cleanup.solidify) and levels: what a compositor would otherwise paint by hand.

A synthetic matte holds one of each thing the cleanup must handle: a subject whose interior is blotchy
(half-transparent pixels and a blotch below 0.5), a real background hole inside it (alpha 0), a small
island and a faint plume away from it, and a smooth soft edge that must be left as the model made it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bgvid.kernels import NUMPY, Cleanup, default_cleanup, levels, solidify

H, W = 240, 320


def _synthetic():
    """(alpha [H, W], masks of the parts) of a disc subject at 64 px radius with a soft edge."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    r = np.hypot(yy - 120, xx - 150)
    alpha = np.clip((64 - r) / 6 + 0.5, 0, 1)  # a 6 px linear soft edge
    rng = np.random.default_rng(7)
    inside = r < 50
    alpha[inside] -= rng.uniform(0, 0.3, inside.sum())  # interior at 0.7-1.0: half-transparent pixels
    blotch = np.hypot(yy - 110, xx - 130) < 9  # a blotch the model half-believes (0.4): a hole in alpha >= 0.5
    alpha[blotch] = 0.4
    real = (np.abs(yy - 140) < 7) & (np.abs(xx - 175) < 7)  # real background seen through the subject
    alpha[real] = 0.0
    island = (np.abs(yy - 30) < 3) & (np.abs(xx - 290) < 3)  # 5x5 px of false foreground
    alpha[island] = 0.9
    plume = (np.abs(xx - 40) < 8) & (yy < 200)  # a faint plume rising through the frame
    alpha[plume] = 0.2
    edge = (r > 60) & (r < 68)
    near_real = (np.abs(yy - 140) < 7 + 5) & (np.abs(xx - 175) < 7 + 5)  # the real hole's own edge band
    return alpha.astype(np.float32), {"inside": inside & ~blotch & ~near_real, "blotch": blotch, "real": real,
                                      "island": island, "plume": plume, "edge": edge}


def _core(alpha, erode=10):
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode + 1, 2 * erode + 1))
    return cv2.erode((alpha >= 0.5).astype(np.uint8), disc) > 0


def test_cleanup_fills_a_hole_removes_an_island_and_keeps_the_edge():
    alpha, part = _synthetic()
    out = solidify(alpha[None])[0]
    assert out[part["blotch"]].min() == 1.0, "a blotch the model half-believed is filled"
    assert out[part["inside"]].min() == 1.0, "the interior is solid"
    assert out[part["island"]].max() == 0.0, "a small island is removed"
    assert out[part["plume"]].max() == 0.0, "a faint plume away from the subject is removed"
    # a hole the model is sure of (alpha 0, 14x14 px: more than a pinhole) is background seen through
    assert out[part["real"]].mean() < 0.05
    # the soft edge: a model's good ramp lies inside the envelope and comes out exactly as it went in
    assert np.abs(out[part["edge"]] - alpha[part["edge"]]).max() == 0.0
    # the measure: no half-transparent pixel left in the core (alpha >= 0.5 eroded by 10 px)
    core = _core(out)
    half = (out > 0.05) & (out < 0.95)
    before = _core(alpha)
    assert ((alpha > 0.05) & (alpha < 0.95))[before].mean() > 0.5
    assert half[core].mean() == 0.0


def test_cleanup_leaves_a_clean_matte_alone():
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    alpha = np.clip((60 - np.hypot(yy - 120, xx - 160)) / 3 + 0.5, 0, 1).astype(np.float32)
    assert np.array_equal(solidify(alpha[None])[0], alpha)
    empty = np.zeros((1, H, W), np.float32)
    empty[0, 100:103, 100:103] = 0.3  # haze with no subject anywhere goes too
    assert solidify(empty).max() == 0.0
    full = np.full((1, H, W), 0.8, np.float32)  # a subject filling the frame: solid to the frame's edges
    assert solidify(full).min() == 1.0


def test_default_thresholds_scale_with_the_frame():
    assert default_cleanup(720, 1280) == Cleanup(band=10, island=461, hole=92)
    assert default_cleanup(512, 896).band == 7
    small = default_cleanup(48, 64)
    assert small.band == 4 and small.island == 16 and small.hole == 4


@pytest.mark.parametrize("shape", [(H, W), (97, 131)])
def test_portable_cleanup_matches_the_cpu_body(shape):
    alpha, _ = _synthetic()
    rng = np.random.default_rng(3)
    batch = np.stack([cv2.resize(alpha, shape[::-1]), cv2.resize(np.roll(alpha, 17, axis=1), shape[::-1]),
                      np.clip(cv2.resize(alpha, shape[::-1]) + rng.normal(0, 0.15, shape), 0, 1),
                      np.zeros(shape), np.full(shape, 0.7)]).astype(np.float32)
    cpu = solidify(batch)
    portable = solidify(batch, backend=NUMPY)
    assert portable.dtype == np.float32 and portable.shape == batch.shape
    assert np.abs(portable - cpu).max() <= 1e-5


def test_levels():
    a = np.array([[[0.0, 0.1, 0.2, 0.5, 0.8, 0.9, 1.0]]], np.float32)
    out = levels(a, 0.2, 0.8)
    assert np.allclose(out, [[[0.0, 0.0, 0.0, 0.5, 1.0, 1.0, 1.0]]])
    assert levels(a, 0.0, 1.0) is a  # the identity costs nothing
    assert np.allclose(levels(a, 0.1, 1.0)[0, 0, 1:3], [0.0, 1 / 9])
