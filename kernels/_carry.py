"""A matte carried along the picture's motion to frames the model did not see (key-frame segmentation).

The object model of `--subject any` is the costliest step of the frame path, so it runs on key frames
only; between them the last matte follows the picture: the same dense optical flow as the temporal
smoother (OpenCV DIS on small grey frames, kernels/_smooth.py) from frame t back to frame t-1, and

    out_t = warp(out_{t-1})

The state is the smoother's own SmoothState, so key frames (smooth_mattes) and carried frames
(carry_mattes) alternate on one state: a key frame blends its new matte into the carried one exactly
as the smoother blends consecutive frames. Warping is a convex combination of the previous matte, so a
carried frame never widens the difference between two runs that started from different states: only
key frames shrink it (by `strength` each), which sets the pre-roll of a chunk (stages/options.py).
"""

from __future__ import annotations

import numpy as np

from ._backend import backend_for, get_array_module
from ._smooth import SmoothState, _dis, _flow_size, _grey, _grey_portable, _grid, _to_uint8


def carry_mattes(rgb, state: SmoothState, *, backend=None, transfer=None) -> tuple:
    """rgb [N,H,W,3] the frames after the state's last one -> (carried mattes [N,h,w] float32, state).
    h, w: the state's matte size. transfer: (to_host, to_device) for the flow's side channel on a device."""
    if state is None:
        raise ValueError("carry_mattes needs the state of a matte to carry (the first frame must be a key frame)")
    if backend is not None or get_array_module(rgb) is not np:
        return _carry_portable(backend or backend_for(rgb), rgb, state, transfer=transfer)
    import cv2

    h, w = state.alpha.shape
    fh, fw = _flow_size(h, w)
    grey = _grey(rgb, (h, w))
    out = np.empty((rgb.shape[0], h, w), np.float32)
    dis = _dis()
    for i, g in enumerate(grey):
        flow_guide = _to_uint8(g if (fh, fw) == (h, w) else cv2.resize(g, (fw, fh), interpolation=cv2.INTER_AREA))
        flow = dis.calc(flow_guide, state.flow_guide, None)
        if (fh, fw) != (h, w):
            flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
            flow[..., 0] *= np.float32(w / fw)
            flow[..., 1] *= np.float32(h / fh)
        where = np.add(flow, _grid(h, w), out=flow)
        out[i] = cv2.remap(state.alpha, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        state = SmoothState(alpha=out[i].copy(), guide=np.multiply(g, np.float32(1 / 255.0), dtype=np.float32),
                            flow_guide=flow_guide)
    return out, state


def _carry_portable(be, rgb, state: SmoothState, *, transfer=None):
    xp = be.xp
    h, w = state.alpha.shape
    fh, fw = _flow_size(h, w)
    grey = _grey_portable(be, rgb, (h, w))
    flow_grey = grey if (fh, fw) == (h, w) else be.resize(grey, (fh, fw), "area")
    flow_grey = xp.clip(xp.rint(flow_grey), 0, 255).astype(xp.uint8)
    ys, xs = xp.meshgrid(xp.arange(h, dtype=xp.float32), xp.arange(w, dtype=xp.float32), indexing="ij")
    to_host, to_device = transfer or be._transfer or ((lambda x, side=False: x), (lambda x, side=False: x))
    out = xp.empty((rgb.shape[0], h, w), xp.float32)
    dis = _dis()
    for i in range(rgb.shape[0]):
        now_host = to_host(flow_grey[i], side=True)  # the side channel, down: one small grey frame
        flow = to_device(dis.calc(now_host, state.flow_guide, None), side=True)  # and the flow up
        if (fh, fw) != (h, w):
            flow = be.resize(flow[None], (h, w), "bilinear")[0]
            fx, fy = flow[..., 0] * xp.float32(w / fw), flow[..., 1] * xp.float32(h / fh)
        else:
            fx, fy = flow[..., 0], flow[..., 1]
        out[i] = be.remap(state.alpha, xs + fx, ys + fy)
        state = SmoothState(alpha=out[i].copy(), guide=grey[i] * xp.float32(1 / 255.0), flow_guide=now_host)
    return out, state
