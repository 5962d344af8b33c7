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
from ._smooth import (
    SmoothState,
    _back_map,
    _back_map_portable,
    _dis,
    _flow_guide,
    _flow_guides_portable,
    _flow_size,
    _grey,
    _grey_portable,
    _grid_portable,
    _no_transfer,
)


def carry_mattes(rgb, state: SmoothState, *, backend=None, transfer=None) -> tuple:
    """rgb [N,H,W,3] the frames after the state's last one -> (carried mattes [N,h,w] float32, state).
    h, w: the state's matte size. transfer: (to_host, to_device) for the flow's side channel on a device."""
    if state is None:
        raise ValueError("carry_mattes needs the state of a matte to carry (the first frame must be a key frame)")
    if backend is not None or get_array_module(rgb) is not np:
        return _carry_portable(backend or backend_for(rgb), rgb, state, transfer=transfer)
    import cv2

    h, w = state.alpha.shape
    out = np.empty((rgb.shape[0], h, w), np.float32)
    dis = _dis()
    for i, g in enumerate(_grey(rgb, (h, w))):
        flow_guide = _flow_guide(g, _flow_size(h, w))
        where = _back_map(dis, flow_guide, state.flow_guide, (h, w))
        out[i] = cv2.remap(state.alpha, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        state = SmoothState(alpha=out[i].copy(), guide=np.multiply(g, np.float32(1 / 255.0), dtype=np.float32),
                            flow_guide=flow_guide)
    return out, state


def _carry_portable(be, rgb, state: SmoothState, *, transfer=None):
    xp = be.xp
    h, w = state.alpha.shape
    grey = _grey_portable(be, rgb, (h, w))
    flow_grey = _flow_guides_portable(be, grey, _flow_size(h, w))
    to_host, to_device = transfer or be._transfer or _no_transfer()
    grid = _grid_portable(xp, h, w)
    out = xp.empty((rgb.shape[0], h, w), xp.float32)
    dis = _dis()
    for i in range(rgb.shape[0]):
        now_host = to_host(flow_grey[i], side=True)  # the side channel, down: one small grey frame
        map_x, map_y = _back_map_portable(be, dis, now_host, state.flow_guide, grid, to_device)  # flow up
        out[i] = be.remap(state.alpha, map_x, map_y)
        state = SmoothState(alpha=out[i].copy(), guide=grey[i] * xp.float32(1 / 255.0), flow_guide=now_host)
    return out, state
