"""Foreground colour decontamination: half-transparent pixels get the foreground's own colour.

Exact composites I = a*F + (1-a)*B with a known F let us score the estimate directly."""

from __future__ import annotations

import numpy as np
import pytest

from bgvid.eval.composites import make_composite
from bgvid.kernels import _foreground, decontaminate, estimate_foreground

FG = np.array([200, 40, 30]) / 255
BG = np.array([10, 220, 60]) / 255


def _uniform(dtype, h=48, w=80):
    """F and B constant, a slanted soft ramp between them (opaque left, transparent right)."""
    top = np.iinfo(dtype).max
    x = np.arange(w, dtype=np.float32)
    y = np.arange(h, dtype=np.float32)[:, None]
    alpha = np.clip((0.6 * w - x - 0.3 * y) / (0.3 * w), 0, 1).astype(np.float32)
    image = np.rint((alpha[..., None] * FG + (1 - alpha[..., None]) * BG) * top).astype(dtype)
    return image, alpha


def _lemur(media, background, size=(144, 256)):
    frame, alpha, truth = next(make_composite(media / "rgba" / "lemur_rgba.png", background, frames=1, size=size))
    return frame, alpha, truth


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("levels", ["auto", "dense"])
def test_uniform_foreground_is_recovered_exactly(dtype, levels):
    # F constant, B constant: F everywhere is the exact solution; we get it within 1/255 in every
    # half-transparent pixel (alpha down to 1/24: rounding I to 8 bits is all that perturbs it), and the
    # extension under alpha 0 is the same colour
    image, alpha = _uniform(dtype)
    estimate = estimate_foreground(image, alpha, levels=levels)
    assert estimate.dtype == np.float32 and estimate.shape == image.shape
    soft = (alpha > 0) & (alpha < 1)
    assert soft.sum() > 500
    assert np.abs(estimate[soft] - FG).max() < 1 / 255
    assert np.abs(estimate[alpha == 0] - FG).max() < 1 / 255
    observed = np.abs(image[soft] / np.iinfo(dtype).max - FG).max()
    assert observed > 100 / 255  # the mixed colour is far off


@pytest.mark.parametrize("name", ["green", "photo"])
def test_real_fur_edges_lose_the_old_background(media, name):
    """The lemur's soft fur (144x256) over a saturated green and over a real photo: edge colour error
    (MSE against the true foreground, 0.05 < alpha < 0.95) falls by at least 20x over green (measured
    ~116x: 121.5e-3 -> 1.05e-3) and 5x over the photo (measured ~8.2x: 28.4e-3 -> 3.47e-3), with the
    true alpha. Opaque pixels keep their colour exactly."""
    background = (np.full((300, 400, 3), (0, 255, 0), np.uint8) if name == "green"
                  else media / "backgrounds" / "still_GT26r.jpg")
    frame, alpha, truth = _lemur(media, background)
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert edge.sum() > 500
    estimate = estimate_foreground(frame, alpha)
    observed = ((frame / 255.0 - truth) ** 2)[edge].mean()
    estimated = ((estimate - truth) ** 2)[edge].mean()
    assert estimated * (20 if name == "green" else 5) < observed, (estimated, observed)

    opaque = alpha == 1
    assert opaque.sum() > 50  # the warped fur matte is exactly 1 in few pixels (more are 0.996..1)
    np.testing.assert_array_equal(np.rint(estimate[opaque] * 255).astype(np.uint8), frame[opaque])
    assert np.isfinite(estimate).all() and estimate.min() >= 0 and estimate.max() <= 1

    out = decontaminate(frame, alpha)
    assert out.dtype == np.uint8 and out.shape == frame.shape
    np.testing.assert_array_equal(out[opaque], frame[opaque])
    cleaned = ((out / 255.0 - truth) ** 2)[edge].mean()
    assert cleaned * (20 if name == "green" else 5) < observed, (cleaned, observed)


def test_band_solve_matches_the_dense_solve(media, monkeypatch):
    """levels="auto" solves the fine levels on the soft-edge band only; its edge pixels match the
    every-pixel solve (levels="dense") to well under 1/255, and the band path really runs."""
    frame, alpha, truth = _lemur(media, media / "backgrounds" / "still_GT26r.jpg")
    band_levels = []
    real = _foreground._band_level

    def spy(image, a, fb, idx, n_iter):
        band_levels.append((a.shape, idx.size / a.size))
        return real(image, a, fb, idx, n_iter)

    monkeypatch.setattr(_foreground, "_band_level", spy)
    auto = estimate_foreground(frame, alpha)
    assert band_levels and band_levels[-1][0] == alpha.shape, band_levels
    assert all(fraction < 1 / 3 for _, fraction in band_levels)
    monkeypatch.setattr(_foreground, "_band_level", real)
    dense = estimate_foreground(frame, alpha, levels="dense")
    edge = (alpha > 0.05) & (alpha < 0.95)
    assert np.abs(auto - dense)[edge].max() < 0.5 / 255


def test_near_opaque_plateau_keeps_its_colour():
    """A model matte is rarely exactly 0 or 1: a body at alpha 0.999 is not an edge. Outside the band
    it keeps the observed colour (to within rounding) instead of a blurred coarse-level colour."""
    rng = np.random.default_rng(1)
    h, w = 96, 160
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    x = np.arange(w, dtype=np.float32)
    alpha = np.tile(np.clip((100 - x) / 8, 0.0005, 0.999), (h, 1)).astype(np.float32)
    estimate = estimate_foreground(rgb, alpha)
    inner = alpha >= 0.999
    inner[:, 80:] = False  # well away from the soft ramp (x 92..100)
    np.testing.assert_array_equal(np.rint(estimate[inner] * 255).astype(np.uint8), rgb[inner])
    assert np.isfinite(estimate).all()


def test_single_frames_and_batches_agree():
    image, alpha = _uniform(np.uint8)
    other = image[:, ::-1].copy()
    batch = estimate_foreground(np.stack([image, other]), np.stack([alpha, alpha[:, ::-1]]))
    assert batch.shape == (2,) + image.shape and batch.dtype == np.float32
    np.testing.assert_array_equal(batch[0], estimate_foreground(image, alpha))
    np.testing.assert_array_equal(batch[1], estimate_foreground(other, alpha[:, ::-1].copy()))
    out = decontaminate(np.stack([image, other]), np.stack([alpha, alpha[:, ::-1]]))
    assert out.shape == (2,) + image.shape and out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], decontaminate(image, alpha))


def test_decontaminate_uint16_keeps_its_scale():
    image, alpha = _uniform(np.uint16)
    out = decontaminate(image, alpha)
    assert out.dtype == np.uint16 and out.shape == image.shape
    opaque, transparent = alpha == 1, alpha == 0
    soft = ~opaque & ~transparent
    np.testing.assert_array_equal(out[opaque], image[opaque])
    # the soft pixels now hold F on the 16-bit scale (within 1/255 of full scale)
    assert np.abs(out[soft].astype(np.float64) - FG * 65535).max() < 257
    # transparent pixels get the smooth extension (F here), not the old background: see decontaminate
    assert np.abs(out[transparent].astype(np.float64) - FG * 65535).max() < 257


def test_decontaminate_leaves_opaque_frames_and_pixels_alone():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 65535, (2, 32, 40, 3), dtype=np.uint16)
    assert decontaminate(rgb, np.ones((2, 32, 40), np.float32)) is rgb
    alpha = np.zeros((2, 32, 40), np.float32)
    alpha[:, :, 20:] = 1.0
    alpha[:, :, 18:22] = 0.5
    out = decontaminate(rgb, alpha)
    np.testing.assert_array_equal(out[alpha == 1], rgb[alpha == 1])
    assert (out[alpha == 0.5] != rgb[alpha == 0.5]).any()
    assert np.isfinite(estimate_foreground(rgb, np.zeros((2, 32, 40), np.float32))).all()


def test_bad_arguments():
    image, alpha = _uniform(np.uint8, 8, 8)
    with pytest.raises(ValueError):
        estimate_foreground(image, alpha, levels="fast")
    with pytest.raises(ValueError):
        estimate_foreground(image, alpha[:4])


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_fast_decontaminate_matches_the_reference(media, dtype, monkeypatch):
    """decontaminate() solves the full-size level on the band from gathers (no full-size float
    frame); it matches estimate_foreground + rounding within one code value everywhere, exactly on
    opaque pixels, and gives the same result on a thread pool."""
    from concurrent.futures import ThreadPoolExecutor

    frames, alphas = [], []
    for frame, alpha, _ in make_composite(media / "rgba" / "lemur_rgba.png", media / "backgrounds" / "still_GT26r.jpg",
                                          frames=2, size=(288, 512)):
        frames.append(frame)
        alphas.append(alpha)
    rgb, alpha = np.stack(frames), np.stack(alphas)
    if dtype == np.uint16:
        rgb = rgb.astype(np.uint16) * 257
    top = np.iinfo(dtype).max
    ran = []
    real = _foreground._decontaminate_frame

    def spy(*args):
        ran.append(real(*args))
        return ran[-1]

    monkeypatch.setattr(_foreground, "_decontaminate_frame", spy)
    fast = decontaminate(rgb, alpha)
    with ThreadPoolExecutor(2) as pool:
        pooled = decontaminate(rgb, alpha, executor=pool)
    monkeypatch.setattr(_foreground, "_decontaminate_frame", real)
    assert ran and all(ran), "the fast path did not run"
    reference = _foreground._reference_decontaminate(rgb, alpha, float(top))
    assert fast.dtype == rgb.dtype and fast.shape == rgb.shape
    step = 1 if dtype == np.uint8 else 257
    assert np.abs(fast.astype(np.int64) - reference).max() <= step
    np.testing.assert_array_equal(fast[alpha >= 1], rgb[alpha >= 1])
    np.testing.assert_array_equal(pooled, fast)


def _without_numba(monkeypatch):
    """Run the NumPy bodies: what an install without numba gets (a RuntimeWarning says so)."""
    monkeypatch.setattr(_foreground, "_jit_kernels", lambda: None)


@pytest.mark.parametrize("levels", ["auto", "dense"])
def test_compiled_kernels_match_the_numpy_bodies(media, levels, monkeypatch):
    # one algorithm, two bodies (numba and NumPy): the same float32 arithmetic, so the same foreground
    # within float rounding, on a real fur edge; the compiled one really ran
    assert _foreground._jit_kernels() is not None, "numba is a dependency of bgvid"
    frame, alpha, _ = _lemur(media, media / "backgrounds" / "still_GT26r.jpg", size=(288, 512))
    compiled = estimate_foreground(frame, alpha, levels=levels)
    fast_compiled = decontaminate(frame, alpha)
    _without_numba(monkeypatch)
    numpy_body = estimate_foreground(frame, alpha, levels=levels)
    fast_numpy = decontaminate(frame, alpha)
    assert np.abs(compiled - numpy_body).max() < 1e-4
    assert np.abs(fast_compiled.astype(int) - fast_numpy).max() <= 1


def test_missing_numba_is_said_once_and_still_decontaminates(monkeypatch):
    import builtins
    import warnings

    real_import = builtins.__import__

    def no_numba(name, *args, **kw):
        if name == "numba":
            raise ImportError("No module named 'numba'")
        return real_import(name, *args, **kw)

    _foreground._jit_kernels.cache_clear()
    monkeypatch.setattr(builtins, "__import__", no_numba)
    image, alpha = _uniform(np.uint8)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = decontaminate(image, alpha)
            decontaminate(image, alpha)
        assert [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)] == [
            "numba is not installed: decontamination runs its NumPy body, several times slower (pip install numba)"]
        assert "numba not installed" in _foreground.jit_status()
    finally:
        monkeypatch.setattr(builtins, "__import__", real_import)
        _foreground._jit_kernels.cache_clear()
    soft = (alpha > 0.05) & (alpha < 0.95)
    assert np.abs(out[soft].astype(int) - np.rint(FG * 255)).max() <= 1
