"""Temporal smoothing of mattes with explicit state, motion-compensated.

Per-frame models flicker: the same edge comes out a little different every frame. An exponential
filter removes that, but a plain one either lags behind motion or, if its weight rises with motion
(the first design here), does nothing exactly where flicker shows: on the edges of a moving person.
So the previous output is first carried along the picture's own motion: dense optical flow (OpenCV
DIS, on small grey frames) from frame t back to frame t-1, and the previous matte and picture are
warped with it. Then

    D_t   = box-averaged |luma_t - warp(luma_{t-1})|       (what the flow failed to explain)
    w_t   = w_min + (1 - w_min) * clip(D_t / motion_scale, 0, 1)
    out_t = w_t * alpha_t + (1 - w_t) * warp(out_{t-1})

Where the flow explains the picture (still or moving alike) the matte settles (w = w_min); where it
does not (occlusions, new things, cuts) the new matte is taken as it is (w -> 1). strength = 1 - w_min.

Warm-up: the flow and D_t depend on the frames only, never on the state. Warping with bilinear
weights is a convex combination, so it never increases the largest difference between two mattes.
Two runs that differ only in the state they start from therefore differ after n frames by at most
prod(1 - w_t) <= strength**n (alpha in 0..1), and n = ceil(log(1/255) / log(strength)) frames of
pre-roll make a chunk that starts mid-video join a full run within 1/255: 16 frames at the default
strength 0.7.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np

from ._backend import backend_for, get_array_module

DEFAULT_STRENGTH = 0.7
FLOW_LONG_SIDE = 256  # grey frames for the flow: ~2 ms per pair on one core, enough for matte motion


def warmup_frames(strength: float, tolerance: float = 1 / 255) -> int:
    """Pre-roll frames after which the starting state no longer matters (within tolerance)."""
    if strength <= 0:
        return 0
    return math.ceil(math.log(tolerance) / math.log(strength))


@dataclass
class SmoothState:
    """What the smoother carries from one frame to the next. alpha and guide live where the mattes do
    (NumPy or CuPy); flow_guide is always a host array: the flow runs on the CPU (see _backend)."""

    alpha: np.ndarray  # [h, w] float32, last output at the matte's resolution
    guide: np.ndarray  # [h, w] float32, last frame's luma at the matte's resolution
    flow_guide: np.ndarray  # [fh, fw] uint8, last frame's grey at the flow's resolution (host)


def _flow_size(h: int, w: int) -> tuple[int, int]:
    scale = min(1.0, FLOW_LONG_SIDE / max(h, w))
    return max(16, round(h * scale)), max(16, round(w * scale))


def smooth_mattes(alpha, rgb, state: Optional[SmoothState], *, strength: float = DEFAULT_STRENGTH,
                  motion_scale: float = 0.1, radius: int = 2, backend=None, transfer=None) -> tuple:
    """alpha [N,h,w] float32 (any resolution), rgb [N,H,W,3] the frames -> (smoothed [N,h,w], state).

    Frames are taken in order; pass the returned state with the next batch. transfer: (to_host,
    to_device) for the flow's side channel on a device (default: the backend's own)."""
    if not 0.0 <= strength < 1.0:
        raise ValueError(f"strength must be in [0, 1), got {strength}")
    if backend is not None or get_array_module(alpha) is not np:
        return _smooth_portable(backend or backend_for(alpha), alpha, rgb, state, strength=strength,
                                motion_scale=motion_scale, radius=radius, transfer=transfer)
    import cv2

    w_min = np.float32(1.0 - strength)
    h, w = alpha.shape[1:3]
    fh, fw = _flow_size(h, w)
    grey = _grey(rgb, (h, w))
    guides = [np.multiply(g, np.float32(1 / 255.0), dtype=np.float32) for g in grey]
    flow_guides = [_flow_guide(g, (fh, fw)) for g in grey]
    out = np.empty((alpha.shape[0], h, w), np.float32)
    k = 2 * radius + 1
    dis = None
    for i in range(alpha.shape[0]):
        a, g = alpha[i].astype(np.float32, copy=False), guides[i]
        if state is None or state.alpha.shape != a.shape:
            out[i] = a
        else:
            dis = dis or _dis()
            where = _back_map(dis, flow_guides[i], state.flow_guide, (h, w))
            prev_alpha = cv2.remap(state.alpha, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            prev_guide = cv2.remap(state.guide, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            diff = cv2.blur(np.abs(g - prev_guide), (k, k))
            weight = w_min + (1 - w_min) * np.clip(diff * np.float32(1 / motion_scale), 0, 1)
            out[i] = weight * a + (1 - weight) * prev_alpha
        state = SmoothState(alpha=out[i].copy(), guide=g, flow_guide=flow_guides[i])
    return out, state


@functools.lru_cache(maxsize=8)
def pixel_grid(h: int, w: int) -> np.ndarray:
    """[h, w, 2] float32 pixel coordinates (x, y), cached per size (read-only, shared by calls)."""
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    grid = np.dstack([xs, ys])
    grid.setflags(write=False)
    return grid


def _grey(rgb: np.ndarray, size: tuple[int, int]) -> list:
    """Frames -> float32 grey on 0..255 at size: OpenCV's 8-bit RGB2GRAY at full resolution (exact integer
    weights, reproduced by _grey_portable), then an area resize in float (the guide and the flow both want
    an unaliased picture; in float, so a GPU's resize gives the same values)."""
    import cv2

    if rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    out = []
    for frame in rgb:
        grey = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2GRAY).astype(np.float32)
        out.append(grey if grey.shape == tuple(size) else
                   cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA))
    return out


def _to_uint8(grey: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(grey), 0, 255).astype(np.uint8)


def _flow_guide(grey: np.ndarray, flow_size: tuple[int, int]) -> np.ndarray:
    """A float grey frame (0..255) -> the uint8 picture the flow runs on, area-resized to flow_size (at the
    matte's own size, the usual 256 px matte, the frame as it is)."""
    import cv2

    fh, fw = flow_size
    return _to_uint8(grey if grey.shape == (fh, fw) else cv2.resize(grey, (fw, fh), interpolation=cv2.INTER_AREA))


def _back_map(dis, now: np.ndarray, before: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Where each pixel of frame `now` was in frame `before` (both uint8 flow guides): DIS flow brought to
    `size` and added to the pixel grid, one interleaved (x, y) [h, w, 2] map for cv2.remap (it samples as
    from two planes)."""
    import cv2

    h, w = size
    flow = dis.calc(now, before, None)
    fh, fw = flow.shape[:2]
    if (fh, fw) != (h, w):
        flow = cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR)
        flow[..., 0] *= np.float32(w / fw)
        flow[..., 1] *= np.float32(h / fh)
    return np.add(flow, pixel_grid(h, w), out=flow)


def _flow_guides_portable(be, grey, flow_size: tuple[int, int]):
    """_flow_guide on a backend, for a batch [N, h, w] (stays on the device until the side channel)."""
    xp = be.xp
    small = grey if tuple(grey.shape[1:3]) == tuple(flow_size) else be.resize(grey, flow_size, "area")
    return xp.clip(xp.rint(small), 0, 255).astype(xp.uint8)


def _grid_portable(xp, h: int, w: int) -> tuple:
    """(xs, ys) [h, w] float32 pixel coordinates on the backend, made once per batch."""
    ys, xs = xp.meshgrid(xp.arange(h, dtype=xp.float32), xp.arange(w, dtype=xp.float32), indexing="ij")
    return xs, ys


def _back_map_portable(be, dis, now_host, before_host, grid: tuple, to_device):
    """_back_map on a backend: the flow of two host flow guides goes up (the side channel) and becomes the
    (map_x, map_y) pair be.remap takes. grid: _grid_portable's (xs, ys) at the matte's size."""
    xp = be.xp
    xs, ys = grid
    h, w = xs.shape
    flow = to_device(dis.calc(now_host, before_host, None), side=True)
    fh, fw = flow.shape[:2]
    if (fh, fw) != (h, w):
        flow = be.resize(flow[None], (h, w), "bilinear")[0]
        fx, fy = flow[..., 0] * xp.float32(w / fw), flow[..., 1] * xp.float32(h / fh)
    else:
        fx, fy = flow[..., 0], flow[..., 1]
    return xs + fx, ys + fy


def _no_transfer():
    return (lambda x, side=False: x), (lambda x, side=False: x)


def _dis():
    import cv2

    return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)


def _smooth_portable(be, alpha, rgb, state: Optional[SmoothState], *, strength: float, motion_scale: float,
                     radius: int, transfer=None):
    """smooth_mattes on any backend: the same formulas, frame by frame (each frame needs the last output).
    The flow is the one side channel: each frame's small grey picture goes down once (kept on the host in
    the state for the next frame's flow) and the flow field comes back up."""
    xp = be.xp
    w_min = xp.float32(1.0 - strength)
    n, h, w = alpha.shape[:3]
    fh, fw = _flow_size(h, w)
    grey = _grey_portable(be, rgb, (h, w))  # [N, h, w] float32 grey on 0..255, rounded as cv2's uint8
    guides = grey * xp.float32(1 / 255.0)
    flow_grey = _flow_guides_portable(be, grey, (fh, fw))
    out = xp.empty((n, h, w), xp.float32)
    to_host, to_device = transfer or be._transfer or _no_transfer()
    grid = _grid_portable(xp, h, w)
    dis = None
    for i in range(n):
        a, g = alpha[i].astype(xp.float32), guides[i]
        now_host = to_host(flow_grey[i], side=True)  # the side channel, down: one small grey frame
        if state is None or tuple(state.alpha.shape) != (h, w):
            out[i] = a
        else:
            dis = dis or _dis()
            map_x, map_y = _back_map_portable(be, dis, now_host, state.flow_guide, grid, to_device)  # flow up
            prev_alpha = be.remap(state.alpha, map_x, map_y)
            prev_guide = be.remap(state.guide, map_x, map_y)
            diff = be.box(xp.abs(g - prev_guide), radius, "reflect101")
            weight = w_min + (1 - w_min) * xp.clip(diff * xp.float32(1 / motion_scale), 0, 1)
            out[i] = weight * a + (1 - weight) * prev_alpha
        state = SmoothState(alpha=out[i].copy(), guide=g, flow_guide=now_host)
    return out, state


def _grey_portable(be, rgb, size):
    """_grey on any backend -> float32 [N, h, w] on 0..255: OpenCV's RGB2GRAY integer arithmetic (15-bit
    weights, rounded), then the area resize in float."""
    xp = be.xp
    if rgb.dtype == xp.uint16:
        rgb = (rgb >> 8).astype(xp.uint8)
    c = rgb.astype(xp.int32)
    grey = ((c[..., 0] * 9798 + c[..., 1] * 19235 + c[..., 2] * 3735 + 16384) >> 15).astype(xp.float32)
    return be.resize(grey, size, "area")
