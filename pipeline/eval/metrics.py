"""Matting quality measures, with the definitions and scalings of Robust Video Matting's evaluation
(PeterL1n/RobustVideoMatting, evaluation/evaluate_lr.py and evaluation/evaluate_hr.py, commit 17d1774).

All take float alpha mattes in 0..1, [H, W] (dtssd: [T, H, W]); like RVM they work in float32 (RVM reads
8-bit PNGs as float32 / 255). The numbers are RVM's reported units, not raw values:

    mad    mean |p - g|                         x 1e3
    mse    mean (p - g)^2                       x 1e3
    grad   sum (|grad p| - |grad g|)^2          / 1e3   (Gaussian-derivative filters, sigma 1.4)
    conn   sum |phi(p) - phi(g)|                / 1e3   (threshold step 0.1)
    dtssd  sqrt(mean(dp/dt - dg/dt)^2)          x 1e2   (per consecutive pair of frames)
    iou    |p > t  and  g > t| / |p > t  or  g > t|     (not an RVM measure; for binary ground truth)

Grad and Conn are sums, not means, so they grow with the picture size: compare them only at one size.

Where RVM's two scripts differ: evaluate_lr.py (numpy, the one with Conn) min-max normalises each matte
before Grad, evaluate_hr.py (PyTorch) does not. ``grad`` follows evaluate_lr.py by default;
``grad(..., normalize=False)`` is the evaluate_hr.py variant.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Iterable

import cv2
import numpy as np


def _pair(pred, true) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(pred, dtype=np.float32)
    g = np.asarray(true, dtype=np.float32)
    if p.shape != g.shape:
        raise ValueError(f"prediction {p.shape} and ground truth {g.shape} differ in shape")
    return p, g


def mad(pred, true) -> float:
    """Mean absolute difference, x1e3 (RVM MetricMAD): 1.0 means an average error of 0.001."""
    p, g = _pair(pred, true)
    return float(np.abs(p - g).mean(dtype=np.float64) * 1e3)


def mse(pred, true) -> float:
    """Mean squared difference, x1e3 (RVM MetricMSE)."""
    p, g = _pair(pred, true)
    return float(np.square(p - g).mean(dtype=np.float64) * 1e3)


@lru_cache(maxsize=4)
def gauss_filters(sigma: float = 1.4, epsilon: float = 1e-2) -> tuple[np.ndarray, np.ndarray]:
    """RVM's Grad kernels: (d/dx, d/dy) of a 2-D Gaussian, truncated where the Gaussian falls below
    `epsilon` (9x9 for sigma 1.4) and scaled to unit L2 norm. filter_x varies along columns (x)."""
    half = np.ceil(sigma * np.sqrt(-2 * np.log(np.sqrt(2 * np.pi) * sigma * epsilon)))
    x = np.arange(-half, half + 1)
    g = np.exp(-x ** 2 / (2 * sigma ** 2)) / (sigma * np.sqrt(2 * np.pi))
    dg = -x * g / sigma ** 2
    fx = np.outer(g, dg)  # rows: Gaussian, columns: its derivative
    fx /= np.sqrt((fx ** 2).sum())
    fx.flags.writeable = False  # cached: shared by every caller
    return fx, fx.T


def _gradient_magnitude(img: np.ndarray, sigma: float) -> np.ndarray:
    fx, fy = gauss_filters(sigma)
    gx = cv2.filter2D(img, -1, fx, borderType=cv2.BORDER_REPLICATE)
    gy = cv2.filter2D(img, -1, fy, borderType=cv2.BORDER_REPLICATE)
    return np.sqrt(gx ** 2 + gy ** 2)


def grad(pred, true, *, sigma: float = 1.4, normalize: bool = True) -> float:
    """Gradient error, /1e3 (RVM MetricGRAD): sum over pixels of the squared difference of the
    Gaussian-derivative gradient magnitudes (sigma 1.4, unit-norm 9x9 kernels, replicated borders).

    normalize=True (evaluate_lr.py) first stretches each matte to 0..1 with cv2.normalize(NORM_MINMAX),
    so a constant matte becomes all 0 and a matte that is a scaled copy of the truth scores 0;
    normalize=False is evaluate_hr.py, which uses the mattes as they are."""
    p, g = _pair(pred, true)
    if normalize:
        p = cv2.normalize(p, None, 1.0, 0.0, cv2.NORM_MINMAX)
        g = cv2.normalize(g, None, 1.0, 0.0, cv2.NORM_MINMAX)
    d = _gradient_magnitude(g, sigma) - _gradient_magnitude(p, sigma)
    return float(np.square(d, dtype=np.float64).sum() / 1000)


def conn(pred, true, *, step: float = 0.1) -> float:
    """Connectivity error, /1e3 (RVM MetricCONN, after Rhemann et al. 2009).

    For thresholds step, 2*step, ..., 1 take the largest 4-connected component of
    (pred >= t) & (true >= t); each pixel's level l is the last threshold below the first one at which
    it leaves that component (1 if it never does). phi(x) = 1 - (x - l) where x - l >= 0.15, else 1.
    Conn = sum |phi(pred) - phi(true)|: it counts alpha that is not connected to the main object."""
    p, g = _pair(pred, true)
    steps = np.arange(0, 1 + step, step)  # as RVM: the float steps (0.30000000000000004...) included
    level = np.full(g.shape, -1.0, dtype=np.float32)
    for i in range(1, len(steps)):
        both = ((g >= steps[i]) & (p >= steps[i])).astype(np.uint8)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(both, connectivity=4)
        largest = np.zeros(g.shape, dtype=bool)
        if n > 1:  # label 0 is the background
            largest = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
        level[(level == -1) & ~largest] = steps[i - 1]
    level[level == -1] = 1
    dg, dp = g - level, p - level
    phi_g = 1 - dg * (dg >= 0.15)
    phi_p = 1 - dp * (dp >= 0.15)
    return float(np.abs(phi_g - phi_p).sum(dtype=np.float64) / 1000)


def dtssd_pair(pred_t, pred_tm1, true_t, true_tm1) -> float:
    """dtSSD of one pair of consecutive frames, x1e2 (RVM MetricDTSSD):
    sqrt(sum(((p_t - p_t-1) - (g_t - g_t-1))^2) / pixels) * 100."""
    p, g = _pair(pred_t, true_t)
    p1, g1 = _pair(pred_tm1, true_tm1)
    if p1.shape != p.shape:
        raise ValueError(f"frames of different shapes: {p1.shape} and {p.shape}")
    d = (p - p1) - (g - g1)
    return float(np.sqrt(np.square(d, dtype=np.float64).sum() / g.size) * 1e2)


def dtssd(pred_seq, true_seq) -> float:
    """Mean dtSSD over the T-1 consecutive pairs of [T, H, W] sequences, x1e2 (see dtssd_pair); 0.0 for
    fewer than 2 frames. It is 0 when the error is constant over time and grows with flicker.

    RVM's scripts also log a 0 for frame 0 and average T values, so their clip figure is this one
    times (T-1)/T."""
    p, g = _pair(pred_seq, true_seq)
    if p.ndim != 3:
        raise ValueError(f"dtssd takes [T, H, W] sequences, got {p.shape}")
    if len(p) < 2:
        return 0.0
    return float(np.mean([dtssd_pair(p[t], p[t - 1], g[t], g[t - 1]) for t in range(1, len(p))]))


def iou(pred, true, threshold: float = 0.5) -> float:
    """Intersection over union of the masks pred > threshold and true > threshold (as the DAVIS checks
    in tests/test_segment.py). 1.0 when both masks are empty: nothing to find, nothing found."""
    p, g = _pair(pred, true)
    pm, gm = p > threshold, g > threshold
    union = np.count_nonzero(pm | gm)
    return 1.0 if union == 0 else float(np.count_nonzero(pm & gm) / union)


def score_sequence(pred_frames: Iterable, true_frames: Iterable) -> dict:
    """Means over a clip: {"mad", "mse", "grad", "conn", "iou": mean over frames, "dtssd": mean over
    consecutive pairs, "frames": count}. Takes two iterables of [H, W] mattes (generators are fine:
    one frame of each is held at a time). A length mismatch is a ValueError."""
    per_frame = {"mad": mad, "mse": mse, "grad": grad, "conn": conn, "iou": iou}
    sums = dict.fromkeys([*per_frame, "dtssd"], 0.0)
    n = 0
    prev = None
    sentinel = object()
    pred_it, true_it = iter(pred_frames), iter(true_frames)
    while True:
        p, g = next(pred_it, sentinel), next(true_it, sentinel)
        if p is sentinel or g is sentinel:
            if p is not g:
                raise ValueError(f"prediction and ground truth differ in length (one ended after {n} frames)")
            break
        p, g = _pair(p, g)
        for name, fn in per_frame.items():
            sums[name] += fn(p, g)
        if prev is not None:
            sums["dtssd"] += dtssd_pair(p, prev[0], g, prev[1])
        prev = (p, g)
        n += 1
    if n == 0:
        raise ValueError("no frames to score")
    out = {name: sums[name] / n for name in per_frame}
    out["dtssd"] = sums["dtssd"] / (n - 1) if n > 1 else 0.0
    out["frames"] = n
    return out
