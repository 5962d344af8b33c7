"""The plain reference pipeline the issues measure bgvid against: stretch-resize bilinear, model,
bilinear back to frame size. No refinement, no smoothing."""

from __future__ import annotations

import numpy as np

from bgvid import Segmenter
from bgvid.kernels import resize_batch


def plain_pipeline(seg: Segmenter, rgb: np.ndarray) -> np.ndarray:
    """[N,H,W,3] uint8 -> [N,H,W] float32 alpha."""
    small = resize_batch(rgb, seg.spec.size, interpolation="bilinear").astype(np.float32)
    x = (small - seg.spec.mean) / seg.spec.std
    if seg.spec.layout == "NCHW":
        x = x.transpose(0, 3, 1, 2)
    (raw,) = seg.session.run([seg.spec.output_name], {seg.spec.input_name: np.ascontiguousarray(x)})
    raw = raw[:, 0] if seg.spec.layout == "NCHW" else raw[..., 0]
    return resize_batch(raw.astype(np.float32), rgb.shape[1:3], interpolation="bilinear")


def mean_iou(alphas, masks, threshold: float = 0.5) -> float:
    scores = []
    for alpha, mask in zip(alphas, masks, strict=False):
        pred = alpha > threshold
        scores.append((pred & mask).sum() / max(1, (pred | mask).sum()))
    return float(np.mean(scores))
