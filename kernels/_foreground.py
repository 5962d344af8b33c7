"""Foreground colour estimation for straight-alpha outputs ("decontamination").

In a half-transparent pixel the frame holds I = a*F + (1-a)*B: foreground mixed with the old
background. Written as straight alpha, that I shows a halo of the old background wherever the clip is
composited. We estimate F (and B) with multi-level foreground estimation (Germer, Uelwer, Conrad &
Harmeling 2021, "Fast Multi-Level Foreground Estimation"; the method of pymatting's
estimate_foreground_ml). Per pixel p it minimises

    (a_p F_p + (1-a_p) B_p - I_p)^2 + sum_{q in N4(p)} w_pq ((F_p - F_q)^2 + (B_p - B_q)^2),
    w_pq = eps + omega * |a_p - a_q|                          (eps = 5e-3, omega = 0.1)

i.e. the composite equation plus smoothness that is strongest across alpha edges. Fixing the
neighbours, each pixel's (F_p, B_p) is a 2x2 linear solve per channel:

    [a^2 + W    a(1-a)    ] [F]   [a I     + sum w F_q]
    [a(1-a)     (1-a)^2 + W] [B] = [(1-a) I + sum w B_q],     W = sum_q w_pq > 0.

The solve runs on a pyramid from 1x1 up to full size (side lengths h^(l/n), w^(l/n), n = ceil(log2
max(h, w))), each level initialised from the previous one (bilinear), 10 iterations on levels whose
short side is <= 32 px and `iterations` (2) above. Unlike pymatting's in-place Gauss-Seidel sweep,
each iteration here is a vectorised Jacobi step (all pixels from the previous iterate: neighbour sums
from shifted views of an edge-padded array), so there is no per-pixel Python loop; with the coarse
levels supplying a good start it lands within a few 1/255 of the Gauss-Seidel result.

Speed (levels="auto"): only pixels near the soft edge need the fine levels. Once the dilated band of
soft pixels (1/255 < a < 254/255, dilated by max(3, iterations) px) covers less than a third of a
level, that level is solved on the band alone (gathers of the four neighbours by flat index;
everything else keeps the upsampled coarser solution). A Jacobi step moves information one pixel, so
with the band at least `iterations` wide the soft pixels of that level come out exactly as a dense
solve of the level would give them; only what the next level inherits from outside the band differs
(measured: under 1e-4/255 on the lemur's edge pixels). Outside the band a pixel with a >= 254/255
gets F = I (its error is then under (1-a) |F - B| / a < 1/254, i.e. sub-LSB at 8 bits) and one with
a <= 1/255 keeps the smooth extension from the coarser levels (invisible: it contributes < 1/255 of
its colour). This is what keeps model mattes, whose sigmoid leaves a near 0 / 1 but not exactly so
almost everywhere, from turning every pixel into "soft". levels="dense" solves every pixel on every
level (the reference; same edge colours, ~8x slower at 720p).

decontaminate() (uint8/uint16 frames, levels="auto") goes further and never builds the full-size
float level at all (_decontaminate_frame): it solves the levels below full size as above, then the
full-size level on the band alone from gathers (the band's pixels and their 4-neighbours, the
neighbours sampled bilinearly from the level below exactly as cv2.resize would), and fills the rest
in the frame's own dtype (opaque: the frame; transparent: the coarser solution upsampled). It
matches estimate_foreground + rounding within one code value (tests/test_foreground.py).

The Jacobi steps (band and dense) and the band's bilinear sampling run as numba-compiled loops
(_foreground_jit.py; a dependency, compiled on first use and cached on disk, never at import); the
NumPy bodies here, the same float32 arithmetic, are the reference (tests/test_foreground.py compares
them) and the path without numba.

Cost of decontaminate() at 1280x720 on selfie mattes of juggle.mp4 (band ~7%), one core
(cv2.setNumThreads(1)), this project's 2-core dev machine: ~34 ms/frame compiled, ~74 ms/frame with
the NumPy bodies (which spend ~30 ms on [4, n, 6] gathers); levels="dense" ~565 ms.
"""

from __future__ import annotations

import functools
import math
import threading
import warnings

import numpy as np

EPS = 5e-3  # smoothness weight everywhere
OMEGA = 1e-1  # extra smoothness weight per unit of alpha difference between neighbours
SMALL_SIZE = 32  # levels whose short side is at most this get SMALL_ITERATIONS
SMALL_ITERATIONS = 10
SOFT_MARGIN = 1.0 / 255  # a in (margin, 1 - margin) is "soft" for the band
BAND_RADIUS = 3  # px the soft set is dilated by, so each soft pixel sees solved neighbours
BAND_FRACTION = 1.0 / 3  # a level whose band covers more than this is solved densely (cheaper then)


# ------------------------------------------------------------------------------------------ solver

def _coefficients(a: np.ndarray, wsum: np.ndarray):
    """Inverse of the 2x2 system per pixel: (c_ff, c_fb, c_bb) with [F B] = C [b0 b1]."""
    a1 = 1.0 - a
    m00 = a * a + wsum
    m11 = a1 * a1 + wsum
    m01 = a * a1
    inv = 1.0 / (m00 * m11 - m01 * m01)  # = W (a^2 + (1-a)^2 + W) > 0
    return m11 * inv, -m01 * inv, m00 * inv


def _dense_level(image: np.ndarray, a: np.ndarray, fb: np.ndarray, n_iter: int) -> np.ndarray:
    """n_iter Jacobi steps on every pixel of one level. image [h,w,3], a [h,w], fb [h,w,6] (F | B)."""
    kernels = _jit_kernels()
    if kernels is not None and n_iter > 0:
        out = np.array(fb, np.float32, order="C")
        kernels[2](out, np.ascontiguousarray(a, np.float32), np.ascontiguousarray(image, np.float32), int(n_iter),
                   np.float32(EPS), np.float32(OMEGA))
        return out
    return _dense_level_numpy(image, a, fb, n_iter)


def _dense_level_numpy(image: np.ndarray, a: np.ndarray, fb: np.ndarray, n_iter: int) -> np.ndarray:
    """_dense_level in NumPy (the reference for the compiled kernel, and the path without numba)."""
    h, w = a.shape
    ap = np.pad(a, 1, mode="edge")  # clamped neighbours at the border: themselves, weight eps
    weights = [np.float32(EPS) + np.float32(OMEGA) * np.abs(a - ap[sy, sx])
               for sy, sx in _SHIFTS]
    wsum = weights[0] + weights[1] + weights[2] + weights[3]
    weights = [wk[..., None] for wk in weights]
    cff, cfb, cbb = (c[..., None] for c in _coefficients(a, wsum))
    b_f = a[..., None] * image
    b_b = image - b_f
    xp = np.pad(fb, ((1, 1), (1, 1), (0, 0)), mode="edge")
    inner = xp[1:-1, 1:-1]
    for _ in range(n_iter):
        s = weights[0] * xp[_SHIFTS[0]]
        for wk, shift in zip(weights[1:], _SHIFTS[1:], strict=False):
            s += wk * xp[shift]
        rf = s[..., :3]
        rf += b_f
        rb = s[..., 3:]
        rb += b_b
        np.clip(cff * rf + cfb * rb, 0.0, 1.0, out=inner[..., :3])
        np.clip(cfb * rf + cbb * rb, 0.0, 1.0, out=inner[..., 3:])
        xp[0], xp[-1] = xp[1], xp[-2]  # refresh the clamped border
        xp[:, 0], xp[:, -1] = xp[:, 1], xp[:, -2]
    return np.ascontiguousarray(inner)


_SHIFTS = ((slice(0, -2), slice(1, -1)), (slice(2, None), slice(1, -1)),
           (slice(1, -1), slice(0, -2)), (slice(1, -1), slice(2, None)))


def _neighbours(idx: np.ndarray, h: int, w: int) -> np.ndarray:
    """Flat indices of the 4-neighbours (up, down, left, right; edge-replicated) of flat indices idx -> [4, n]."""
    x = idx % w
    return np.stack([np.where(idx >= w, idx - w, idx), np.where(idx < (h - 1) * w, idx + w, idx),
                     np.where(x > 0, idx - 1, idx), np.where(x < w - 1, idx + 1, idx)])


def _jacobi_band(values: np.ndarray, rows: np.ndarray, nbr_rows: np.ndarray, ab: np.ndarray,
                 a_nbrs: np.ndarray, ib: np.ndarray, n_iter: int) -> None:
    """n_iter Jacobi steps for band pixels stored at `rows` of values [m, 6] (F and B), in place; their
    4-neighbours are at nbr_rows [4, n]. ab [n] and a_nbrs [4, n] are their alphas, ib [n, 3] their
    colours (0..1). Pixels not in `rows` stay fixed and serve as neighbours.

    Runs the compiled kernel where numba is installed (it is a dependency of bgvid; ~10x faster: the
    NumPy body spends its time on [4, n, 6] gathers), else the NumPy body. Same arithmetic, float32."""
    kernels = _jit_kernels()
    if kernels is None or n_iter <= 0 or rows.size == 0:
        _jacobi_band_numpy(values, rows, nbr_rows, ab, a_nbrs, ib, n_iter)
        return
    kernels[0](values, np.ascontiguousarray(rows, np.int64), np.ascontiguousarray(nbr_rows, np.int64),
           np.ascontiguousarray(ab, np.float32), np.ascontiguousarray(a_nbrs, np.float32),
           np.ascontiguousarray(ib, np.float32), int(n_iter), np.float32(EPS), np.float32(OMEGA))


def _jacobi_band_numpy(values: np.ndarray, rows: np.ndarray, nbr_rows: np.ndarray, ab: np.ndarray,
                       a_nbrs: np.ndarray, ib: np.ndarray, n_iter: int) -> None:
    """_jacobi_band in NumPy (the reference for the compiled kernel, and the path without numba)."""
    weights = np.float32(EPS) + np.float32(OMEGA) * np.abs(ab - a_nbrs)  # [4, n]
    cff, cfb, cbb = (c[:, None] for c in _coefficients(ab, weights.sum(axis=0)))
    weights = weights[..., None]
    b_f = ab[:, None] * ib
    b_b = ib - b_f
    new = np.empty((rows.size, 6), np.float32)
    for _ in range(n_iter):
        s = (np.take(values, nbr_rows, axis=0) * weights).sum(axis=0)  # [n, 6]
        rf = s[:, :3]
        rf += b_f
        rb = s[:, 3:]
        rb += b_b
        np.clip(cff * rf + cfb * rb, 0.0, 1.0, out=new[:, :3])
        np.clip(cfb * rf + cbb * rb, 0.0, 1.0, out=new[:, 3:])
        values[rows] = new


@functools.lru_cache(maxsize=None)
def _jit_kernels():
    """(band Jacobi steps, bilinear sampler, dense Jacobi steps) compiled with numba (_foreground_jit),
    or None without numba. Imported on first use, never at import; numba's on-disk cache means only
    the first process in an environment compiles."""
    try:
        import numba  # noqa: F401 - only whether it is there
    except ImportError:
        # numba is a dependency: without it the install is incomplete. Say so once, then go on slower.
        warnings.warn("numba is not installed: decontamination runs its NumPy body, several times slower "
                      "(pip install numba)", RuntimeWarning, stacklevel=3)
        return None

    from . import _foreground_jit as jit

    return jit.band_jacobi, jit.bilinear_at, jit.dense_jacobi


def jit_status() -> str:
    """One line for `bgvid doctor`: whether the compiled decontamination kernel is available."""
    try:
        import numba
    except ImportError:
        return "numba not installed: decontamination runs its NumPy body (~10x slower band solve)"
    return f"numba {numba.__version__} (compiled band solve)"


def _band_level(image: np.ndarray, a: np.ndarray, fb: np.ndarray, idx: np.ndarray, n_iter: int) -> None:
    """n_iter Jacobi steps on the pixels idx (flat indices) of one level, in place in fb [h,w,6];
    the other pixels stay as they are and serve as fixed neighbours."""
    h, w = a.shape
    flat_a = a.reshape(-1)
    nbrs = _neighbours(idx, h, w)
    _jacobi_band(fb.reshape(-1, 6), idx, nbrs, flat_a[idx], flat_a[nbrs], image.reshape(-1, 3)[idx], n_iter)


def _band(a: np.ndarray, radius: int = BAND_RADIUS) -> np.ndarray:
    import cv2

    soft = ((a > SOFT_MARGIN) & (a < 1.0 - SOFT_MARGIN)).view(np.uint8)
    k = 2 * radius + 1
    return cv2.dilate(soft, np.ones((k, k), np.uint8)).view(bool)


def _pyramid_sizes(h: int, w: int) -> list[tuple[int, int]]:
    n = max(1, math.ceil(math.log2(max(h, w))))
    sizes = []
    for level in range(n + 1):
        size = (max(1, round(h ** (level / n))), max(1, round(w ** (level / n))))
        if not sizes or size != sizes[-1]:
            sizes.append(size)
    return sizes


def _solve_pyramid(image: np.ndarray, alpha: np.ndarray, sizes: list, dense: bool, iterations: int):
    """The multi-level solve on sizes[0] .. sizes[-1] == image's size -> (fb [h,w,6], band of the
    last level or None where it was solved densely)."""
    import cv2

    # the pyramid of inputs, top down: each level area-averaged from the next finer one
    images, alphas = [image], [alpha]
    for sh, sw in reversed(sizes[:-1]):
        images.append(cv2.resize(images[-1], (sw, sh), interpolation=cv2.INTER_AREA))
        alphas.append(cv2.resize(alphas[-1], (sw, sh), interpolation=cv2.INTER_AREA))
    images.reverse()
    alphas.reverse()

    # start (1x1): F = alpha-weighted mean colour, B = (1 - alpha)-weighted one, taken on a small level
    k = next((i for i, (sh, sw) in enumerate(sizes) if min(sh, sw) >= 16), len(sizes) - 1)
    img, a = images[k], alphas[k][..., None]
    f0 = (img * a).reshape(-1, 3).sum(0) / max(float(a.sum()), 1e-6)
    b0 = (img * (1 - a)).reshape(-1, 3).sum(0) / max(float((1 - a).sum()), 1e-6)
    fb = np.clip(np.concatenate([f0, b0]), 0, 1).astype(np.float32).reshape(1, 1, 6)

    band = None
    for (sh, sw), img, a in zip(sizes, images, alphas, strict=False):
        if fb.shape[:2] != (sh, sw):
            fb = np.ascontiguousarray(cv2.resize(fb, (sw, sh), interpolation=cv2.INTER_LINEAR))
        n_iter = SMALL_ITERATIONS if min(sh, sw) <= SMALL_SIZE else iterations
        band = None
        if not dense and min(sh, sw) > SMALL_SIZE:
            band = _band(a, max(BAND_RADIUS, n_iter))
            idx = np.flatnonzero(band)
            if idx.size <= BAND_FRACTION * a.size:
                _band_level(img, a, fb, idx, n_iter)
            else:
                band = None
        if band is None:
            fb = _dense_level(img, a, fb, n_iter)
    return fb, band


def _estimate_frame(image: np.ndarray, alpha: np.ndarray, dense: bool, iterations: int, out: np.ndarray) -> None:
    """image [H,W,3] float32 0..1, alpha [H,W] float32 0..1 -> F into out [H,W,3] float32."""
    h, w = alpha.shape
    fb, band = _solve_pyramid(image, alpha, _pyramid_sizes(h, w), dense, iterations)
    out[...] = fb[..., :3]
    keep = alpha >= 1.0  # opaque: the observed colour exactly
    if band is not None:  # near-opaque pixels outside the band: the observed colour (module docstring)
        keep |= ~band & (alpha >= 1.0 - SOFT_MARGIN)
    np.copyto(out, image, where=keep[..., None])


# ------------------------------------------------------------------------------------------- API

def _scale(dtype) -> float:
    if dtype == np.uint8:
        return 255.0
    if dtype == np.uint16:
        return 65535.0
    if np.issubdtype(dtype, np.floating):
        return 1.0
    raise TypeError(f"rgb must be uint8, uint16 or float 0..1, got {dtype}")


def estimate_foreground(rgb: np.ndarray, alpha: np.ndarray, *, levels: str = "auto",
                        iterations: int = 2) -> np.ndarray:
    """rgb [H,W,3] (or [N,H,W,3]) uint8/uint16 (float 0..1 accepted too), alpha [H,W] (or [N,H,W])
    float 0..1 -> foreground [..., H, W, 3] float32 0..1 (straight colour).

    Pixels with alpha == 1 keep their observed colour exactly; where alpha == 0 the value is a smooth
    extension of the nearby foreground colour (finite, irrelevant for straight alpha).
    levels: "auto" (fine levels solved on the soft-edge band only; see the module docstring) or
    "dense" (every pixel of every level). iterations: Jacobi steps per level above 32 px."""
    if levels not in ("auto", "dense"):
        raise ValueError(f"levels must be 'auto' or 'dense', got {levels!r}")
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    rgb, alpha = np.asarray(rgb), np.asarray(alpha)
    single = rgb.ndim == 3
    if single:
        rgb, alpha = rgb[None], alpha[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or alpha.shape != rgb.shape[:3]:
        raise ValueError(f"rgb [N,H,W,3] / [H,W,3] with alpha [N,H,W] / [H,W]; got {rgb.shape}, {alpha.shape}")
    scale = np.float32(1.0 / _scale(rgb.dtype))
    out = np.empty(rgb.shape, np.float32)
    for i in range(rgb.shape[0]):
        image = rgb[i].astype(np.float32) * scale
        a = np.clip(np.nan_to_num(alpha[i].astype(np.float32, copy=False)), 0.0, 1.0)
        if (a >= 1.0).all():
            out[i] = image  # all opaque: F is the observed colour
        else:
            _estimate_frame(image, a, levels == "dense", iterations, out[i])
    return out[0] if single else out


_SCRATCH = threading.local()


def _scratch(name: str, shape: tuple, dtype) -> np.ndarray:
    """A frame-sized work array kept per thread and reused from frame to frame (contents undefined):
    allocating and freeing ~10 MB per frame on several threads fragments the allocator's arenas and
    the run's peak RSS creeps (benchmarks/memory.py), besides the page faults of fresh memory."""
    buffers = _SCRATCH.__dict__
    buf = buffers.get(name)
    if buf is None or buf.shape != tuple(shape) or buf.dtype != dtype:
        buf = buffers[name] = np.empty(shape, dtype)
    return buf


def _bilinear_at(fb: np.ndarray, ys: np.ndarray, xs: np.ndarray, h: int, w: int) -> np.ndarray:
    """fb [sh,sw,C] sampled at full-resolution pixels (ys, xs) of an (h, w) frame exactly as
    cv2.resize(fb, (w, h), INTER_LINEAR) would give them there (half-pixel centres, clamped edges),
    without making the full-resolution array."""
    sh, sw = fb.shape[:2]

    def axis(dst: int, src: int):
        c = (np.arange(dst, dtype=np.float64) + 0.5) * (src / dst) - 0.5
        c0 = np.floor(c)
        f = (c - c0).astype(np.float32)
        c0 = c0.astype(np.int64)
        f[c0 < 0] = 0.0
        c0 = np.clip(c0, 0, src - 1)
        f[c0 >= src - 1] = 0.0
        return c0, np.minimum(c0 + 1, src - 1), f

    y0, y1, fy = axis(h, sh)
    x0, x1, fx = axis(w, sw)
    kernels = _jit_kernels()
    if kernels is not None:
        return kernels[1](np.ascontiguousarray(fb.reshape(-1, fb.shape[2]), np.float32), sw, y0, y1, fy, x0, x1, fx,
                          np.ascontiguousarray(ys, np.int64), np.ascontiguousarray(xs, np.int64))
    y0, y1, fy = y0[ys], y1[ys], fy[ys][:, None]
    x0, x1, fx = x0[xs], x1[xs], fx[xs][:, None]
    flat = fb.reshape(-1, fb.shape[2])
    top = flat[y0 * sw + x0] * (1 - fx) + flat[y0 * sw + x1] * fx
    bottom = flat[y1 * sw + x0] * (1 - fx) + flat[y1 * sw + x1] * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32, copy=False)


def _decontaminate_frame(rgb: np.ndarray, alpha: np.ndarray, iterations: int, out: np.ndarray) -> bool:
    """decontaminate() of one uint8/uint16 frame with levels="auto", without a full-resolution float
    frame: the levels below full size are solved as in estimate_foreground; the full-size level only
    on its soft-edge band, from gathers of the band's pixels and their neighbours (the neighbours
    outside the band take the bilinear upsampling of the level below, as in _band_level). The other
    pixels are filled as estimate_foreground fills them: opaque and near-opaque-outside-the-band
    pixels keep their colour, the rest get the coarser solution upsampled (here in rgb's dtype: the
    smooth extension differs by at most one code value). Writes `out` (rgb's shape and dtype) and
    returns True; returns False (out untouched) where the full-size level would be solved densely
    (soft band over a third of the frame, tiny frames): the caller takes the reference path then."""
    import cv2

    h, w = alpha.shape
    sizes = _pyramid_sizes(h, w)
    n_iter = iterations
    rgb = np.ascontiguousarray(rgb)  # OpenCV below needs it (a no-op for decoded frames)
    if len(sizes) < 2 or min(h, w) <= SMALL_SIZE:
        return False
    a = np.clip(alpha.astype(np.float32, copy=False), 0.0, 1.0)
    if np.isnan(a.sum(dtype=np.float64)):  # cheaper than nan_to_num on every frame
        a = np.nan_to_num(a)
    band = _band(a, max(BAND_RADIUS, n_iter))
    idx = np.flatnonzero(band)
    if idx.size > BAND_FRACTION * a.size:
        return False
    top = _scale(rgb.dtype)
    scale = np.float32(1.0 / top)
    sh, sw = sizes[-2]
    # the level below full size, area-averaged from the full frame as _solve_pyramid does
    frame = _scratch("frame", rgb.shape, np.float32)
    np.copyto(frame, rgb)  # = rgb.astype(np.float32), into this thread's reused buffer
    small = cv2.resize(frame, (sw, sh), interpolation=cv2.INTER_AREA) * scale
    small_a = cv2.resize(a, (sw, sh), interpolation=cv2.INTER_AREA)
    fb, _ = _solve_pyramid(small, small_a, sizes[:-1], False, iterations)

    # everything not opaque starts from the coarser solution, upsampled in rgb's dtype
    f_small = np.clip(np.rint(fb[..., :3] * np.float32(top)), 0, top).astype(rgb.dtype)
    cv2.resize(f_small, (w, h), dst=out, interpolation=cv2.INTER_LINEAR)

    if idx.size:
        # band pixels and their 4-neighbours, in compact arrays
        k = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]], np.uint8)
        ext_mask = cv2.dilate(band.view(np.uint8), k).view(bool)
        ext = np.flatnonzero(ext_mask)
        pos = _scratch("pos", (h * w,), np.int64)  # only its entries at ext are ever read
        pos[ext] = np.arange(ext.size)
        values = _bilinear_at(fb, ext // w, ext % w, h, w)  # [m, 6]
        nbrs = _neighbours(idx, h, w)
        flat_a = a.reshape(-1)
        cidx = pos[idx]
        _jacobi_band(values, cidx, pos[nbrs], flat_a[idx], flat_a[nbrs],
                     rgb.reshape(-1, 3)[idx].astype(np.float32) * scale, n_iter)
        out.reshape(-1, 3)[idx] = np.clip(np.rint(values[cidx, :3] * np.float32(top)), 0, top).astype(rgb.dtype)
    keep = (a >= 1.0) | (~band & (a >= 1.0 - SOFT_MARGIN)) | ~(alpha < 1.0)
    cv2.copyTo(rgb, keep.view(np.uint8), out)  # ~6x faster than np.copyto with a broadcast mask
    return True


def decontaminate(rgb, alpha, *, executor=None, backend=None, **kw):
    """rgb [H,W,3] / [N,H,W,3] with every pixel that is not opaque (alpha < 1) set to the estimated
    foreground colour (estimate_foreground(rgb, alpha, **kw)), rounded back to rgb's dtype and scale
    (uint16 stays on 0..65535). Opaque pixels keep their colour exactly; returns rgb itself when every
    pixel is opaque.

    Half-transparent pixels get the estimate: that is the decontamination. Fully transparent ones get
    it too (the smooth extension of the nearby foreground colour) rather than keeping the old
    background: their colour is invisible on its own, but it does not stay on its own. VP9 alpha
    (.webm) is yuva420p, so each edge pixel's chroma is averaged with its 2x2 neighbours, transparent
    ones included, and any straight-alpha resize or blur downstream mixes neighbours the same way:
    the old background kept under alpha 0 would bring the halo back through that door. The extension
    is smooth, so it also costs no more bits than the background it replaces.

    executor: an optional concurrent.futures executor; the frames of a batch are then solved on it
    in parallel (NumPy and OpenCV release the GIL for most of the work). Same result either way.

    Device arrays (CuPy) take the portable body (_decontaminate_portable): every level solved densely,
    all frames of the batch at once; the soft-pixel colours agree with this body within a few code
    values (tests/test_portable.py)."""
    from ._backend import backend_for, get_array_module

    if backend is not None or get_array_module(rgb) is not np:
        return _decontaminate_portable(backend or backend_for(rgb), rgb, alpha, iterations=kw.get("iterations", 2))
    rgb = np.asarray(rgb)
    alpha = np.asarray(alpha)
    change = alpha < 1.0
    if not change.any():
        return rgb
    top = _scale(rgb.dtype)
    if top != 1.0 and kw.get("levels", "auto") == "auto":
        # the fast path, frame by frame (same result within one code value, see _decontaminate_frame)
        if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3 or alpha.shape != rgb.shape[:-1]:
            raise ValueError(f"rgb [N,H,W,3] / [H,W,3] with alpha [N,H,W] / [H,W]; got {rgb.shape}, {alpha.shape}")
        iterations = kw.get("iterations", 2)
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        frames, mattes, moves = (rgb, alpha, change) if rgb.ndim == 4 else (rgb[None], alpha[None], change[None])
        out = np.empty(frames.shape, frames.dtype)

        def one(i: int) -> None:
            if not moves[i].any():
                out[i] = frames[i]
            elif not _decontaminate_frame(frames[i], mattes[i], iterations, out[i]):
                out[i] = _reference_decontaminate(frames[i], mattes[i], top, **kw)

        if executor is not None and frames.shape[0] > 1:
            for job in [executor.submit(one, i) for i in range(frames.shape[0])]:
                job.result()
        else:
            for i in range(frames.shape[0]):
                one(i)
        return out if rgb.ndim == 4 else out[0]
    return _reference_decontaminate(rgb, alpha, top, **kw)


def _dense_level_portable(xp, image, a, fb, n_iter: int):
    """_dense_level_numpy for a batch [N, h, w, ...] on any array module: the same Jacobi step (neighbours
    from shifted views of an edge-padded array, clamped at the border), every frame at once."""
    if n_iter <= 0:
        return fb
    pad2 = ((0, 0), (1, 1), (1, 1))
    ap = xp.pad(a, pad2, mode="edge")
    shifts = [(slice(None),) + s for s in _SHIFTS]
    weights = [xp.float32(EPS) + xp.float32(OMEGA) * xp.abs(a - ap[s]) for s in shifts]
    wsum = weights[0] + weights[1] + weights[2] + weights[3]
    weights = [wk[..., None] for wk in weights]
    cff, cfb, cbb = (c[..., None] for c in _coefficients(a, wsum))
    b_f = a[..., None] * image
    b_b = image - b_f
    for _ in range(n_iter):
        padded = xp.pad(fb, pad2 + ((0, 0),), mode="edge")
        s = weights[0] * padded[shifts[0]]
        for wk, shift in zip(weights[1:], shifts[1:], strict=True):
            s = s + wk * padded[shift]
        rf = s[..., :3] + b_f
        rb = s[..., 3:] + b_b
        fb = xp.concatenate([xp.clip(cff * rf + cfb * rb, 0.0, 1.0), xp.clip(cfb * rf + cbb * rb, 0.0, 1.0)], axis=-1)
    return fb


def _decontaminate_portable(be, rgb, alpha, *, iterations: int = 2):
    """decontaminate() on any backend: the multi-level solve of estimate_foreground(levels="dense") for
    all frames of a batch at once (a GPU has the width to solve every pixel; the CPU body's band
    bookkeeping would cost more there than it saves), then the same rounding and opaque pass-through."""
    xp = be.xp
    n, h, w = rgb.shape[:3]
    top = 65535.0 if rgb.dtype == xp.uint16 else 255.0
    image = rgb.astype(xp.float32) * xp.float32(1.0 / top)
    a = xp.clip(xp.nan_to_num(alpha.astype(xp.float32)), 0.0, 1.0)
    sizes = _pyramid_sizes(h, w)
    images, alphas = [image], [a]
    for sh, sw in reversed(sizes[:-1]):
        images.append(be.resize(images[-1], (sh, sw), "area"))
        alphas.append(be.resize(alphas[-1], (sh, sw), "area"))
    images.reverse()
    alphas.reverse()
    k = next((i for i, (sh, sw) in enumerate(sizes) if min(sh, sw) >= 16), len(sizes) - 1)
    img, ak = images[k], alphas[k][..., None]
    f0 = (img * ak).sum(axis=(1, 2)) / xp.maximum(ak.sum(axis=(1, 2)), 1e-6)
    b0 = (img * (1 - ak)).sum(axis=(1, 2)) / xp.maximum((1 - ak).sum(axis=(1, 2)), 1e-6)
    fb = xp.clip(xp.concatenate([f0, b0], axis=-1), 0, 1).astype(xp.float32).reshape(n, 1, 1, 6)
    for (sh, sw), img, al in zip(sizes, images, alphas, strict=True):
        if fb.shape[1:3] != (sh, sw):
            fb = be.resize(fb, (sh, sw), "bilinear")
        n_iter = SMALL_ITERATIONS if min(sh, sw) <= SMALL_SIZE else iterations
        fb = _dense_level_portable(xp, img, al, fb, n_iter)
    foreground = xp.where((a >= 1.0)[..., None], image, fb[..., :3])
    estimate = xp.clip(xp.rint(foreground * xp.float32(top)), 0, top).astype(rgb.dtype)
    return xp.where((alpha < 1.0)[..., None], estimate, rgb)


def _reference_decontaminate(rgb: np.ndarray, alpha: np.ndarray, top: float, **kw) -> np.ndarray:
    change = alpha < 1.0
    estimate = estimate_foreground(rgb, alpha, **kw)
    if top != 1.0:
        estimate = np.clip(np.rint(estimate * np.float32(top)), 0, top)
    return np.where(change[..., None], estimate.astype(rgb.dtype), rgb)
