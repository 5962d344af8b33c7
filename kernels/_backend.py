"""The per-pixel primitives every portable kernel body reaches through: one small interface made of what
NumPy + scipy.ndimage and CuPy + cupyx.scipy.ndimage both provide.

    be = backend_for(x)                  # picked by the array's module, never a global
    be.xp, be.ndi                        # numpy + scipy.ndimage | cupy + cupyx.scipy.ndimage
    be.resize(x, (h, w), "bilinear"|"area")   # [N,H,W(,C)] along H and W, OpenCV's pixel-centre rules
    be.box(x, radius, border)            # mean over a (2r+1)^2 window on the last two spatial axes
    be.gaussian(x, sigma)                # Gaussian on the spatial axes (OpenCV's default border)
    be.erode(x, radius) / be.dilate(x, radius)   # grey morphology with a disc (radius 0: identity)
    be.max_square(x, radius)             # max over a square window (band dilation)
    be.remap(x, map_x, map_y)            # bilinear sampling at (x, y), edge pixels replicated
    be.flow(grey_now, grey_prev)         # dense optical flow: a side channel on the CPU (see below)

The bodies in kernels/ that run on device arrays are written only against this interface and plain
array code, so CI, which has no GPU, runs exactly the code a GPU runs, through the NumPy/SciPy backend
(NUMPY below). The CPU product keeps its OpenCV/numba bodies where they are faster; tests hold the
portable bodies against them within stated tolerances (tests/test_portable.py).

Resizing is two small matrix products (rows, then columns) whose weights are OpenCV's: bilinear with
half-pixel centres and clamped edges (INTER_LINEAR), and for shrinking, the exact pixel-area overlaps
(INTER_AREA). The weights are built on the device from `xp.arange` (no host upload), cached per size.

Optical flow has no CuPy implementation; the smoother's flow runs on small grey frames (256 px long
side), so the device branch sends those down (~37 KB per frame at 256x144) and the flow field back up
(~295 KB): the one documented side channel of the temporal smoother. Each crossing is counted by the
device object when one is attached (stages/device.py), so tests can tell a side channel from a leak.
"""

from __future__ import annotations

import functools
import sys
from typing import Optional

import numpy as np


def get_array_module(x):
    """cupy for CuPy arrays, a stand-in's own module for test arrays that declare one
    (`__bgvid_array_module__`), numpy otherwise. Never imports CuPy unless it is already loaded."""
    own = getattr(type(x), "__bgvid_array_module__", None)
    if own is not None:
        return own
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy
    return np


class Backend:
    """One array module and its ndimage module, plus the primitives above. Stateless apart from caches."""

    def __init__(self, xp, ndi, name: str, transfer=None):
        self.xp, self._ndi, self.name = xp, ndi, name
        self._transfer = transfer  # (to_host, to_device) for the flow side channel; None: NumPy arrays

    @property
    def ndi(self):
        """The ndimage module (imported on first use: `import bgvid` stays light)."""
        if callable(self._ndi) and not hasattr(self._ndi, "uniform_filter"):
            self._ndi = self._ndi()
        return self._ndi

    # -------------------------------------------------------------------------------- resizing
    @functools.lru_cache(maxsize=64)  # noqa: B019 - backends live as long as the process (module singletons)
    def _weights(self, src: int, dst: int, mode: str):
        """[dst, src] float32 resampling matrix of one axis."""
        xp = self.xp
        if mode == "area" and dst < src:
            scale = src / dst
            lo = xp.arange(dst, dtype=xp.float64)[:, None] * scale
            hi = lo + scale
            edge = xp.arange(src, dtype=xp.float64)[None, :]
            overlap = xp.minimum(hi, edge + 1) - xp.maximum(lo, edge)
            return (xp.maximum(overlap, 0.0) / scale).astype(xp.float32)
        if dst == src:
            return xp.eye(src, dtype=xp.float32)
        d = xp.arange(dst, dtype=xp.float64)
        if mode == "area":
            # OpenCV's INTER_AREA when enlarging: a two-tap filter whose right weight is the part of the
            # destination pixel that lies past the source pixel's edge. The scale is OpenCV's 1 / (dst / src),
            # not src / dst: the two round apart where d * src / dst is a whole number (144 -> 640, d = 120:
            # 27 exactly, OpenCV's 26.99999 -> 26), a whole pixel of difference
            left = xp.floor(d * (1.0 / (dst / src)))
            frac = ((d + 1) - (left + 1) * (dst / src)).astype(xp.float32)  # float, as OpenCV's (float) cast
            frac = xp.where(frac <= 0, 0.0, frac - xp.floor(frac)).astype(xp.float64)
        else:
            # bilinear: centre of the destination pixel in source coordinates
            pos = (d + 0.5) * (src / dst) - 0.5
            left = xp.floor(pos)
            frac = pos - left
        frac = xp.where(left < 0, 0.0, frac)
        left = xp.clip(left, 0, src - 1)
        frac = xp.where(left >= src - 1, 0.0, frac)
        right = xp.minimum(left + 1, src - 1)
        cols = xp.arange(src, dtype=xp.float64)[None, :]
        w = (cols == left[:, None]) * (1.0 - frac[:, None]) + (cols == right[:, None]) * frac[:, None]
        return w.astype(xp.float32)

    def resize(self, x, size: tuple[int, int], mode: str = "bilinear"):
        """x [N,H,W] or [N,H,W,C] -> float32 [N,h,w(,C)] (integers are not rounded back: callers decide).
        mode: "bilinear" or "area" (OpenCV's INTER_AREA, also when enlarging)."""
        xp = self.xp
        h, w = int(size[0]), int(size[1])
        n, src_h, src_w = x.shape[:3]
        x = x.astype(xp.float32, copy=False)
        if (src_h, src_w) == (h, w):
            return x
        rest = x.shape[3:]
        wy = self._weights(src_h, h, mode)
        wx = self._weights(src_w, w, mode)
        flat = x.reshape(n, src_h, -1)  # [N, H, W*C]
        rows = xp.matmul(wy, flat).reshape((n, h, src_w) + rest)  # [N, h, W, C]
        moved = xp.moveaxis(rows, 2, -1)  # [N, h, C..., W]
        out = xp.matmul(moved, wx.T)  # [N, h, C..., w]
        return xp.ascontiguousarray(xp.moveaxis(out, -1, 2))

    # ------------------------------------------------------------------------------ filtering
    @staticmethod
    def _spatial(x, k: int) -> tuple:
        """Window sizes that filter only the two spatial axes of [N,H,W] or [N,H,W,C] (or [H,W])."""
        if x.ndim == 2:
            return (k, k)
        return (1, k, k) + (1,) * (x.ndim - 3)

    def box(self, x, radius: int, border: str = "reflect101"):
        """Window mean, as cv2.blur: border "reflect101" (OpenCV's default, scipy's "mirror") or
        "reflect" (cv2.BORDER_REFLECT, scipy's "reflect")."""
        mode = {"reflect101": "mirror", "reflect": "reflect"}[border]
        return self.ndi.uniform_filter(x, size=self._spatial(x, 2 * int(radius) + 1), mode=mode)

    def gaussian(self, x, sigma: float):
        """As cv2.GaussianBlur(x, (0, 0), sigma) on float data: radius round(4 sigma), reflect-101 border."""
        spatial = (0.0, sigma, sigma) + (0.0,) * (x.ndim - 3) if x.ndim >= 3 else (sigma, sigma)
        return self.ndi.gaussian_filter(x, sigma=spatial, mode="mirror", truncate=4.0)

    def _footprint(self, x, radius: int):
        """cv2.getStructuringElement(MORPH_ELLIPSE, (2r+1, 2r+1)) built on the device: row dy keeps the
        columns |dx| <= round(sqrt(r^2 - dy^2)); shaped to filter only the spatial axes of x."""
        xp, r = self.xp, int(radius)
        d = xp.arange(-r, r + 1, dtype=xp.float64)
        half = xp.rint(xp.sqrt(r * r - d * d))
        disc = xp.abs(d)[None, :] <= half[:, None]
        shape = (1, 2 * r + 1, 2 * r + 1) + (1,) * (x.ndim - 3) if x.ndim >= 3 else disc.shape
        return disc.reshape(shape)

    def erode(self, x, radius: int):
        """Grey erosion with a disc. Edge pixels replicated: for a convex, symmetric window that is the
        same as OpenCV's "ignore what lies outside"."""
        if not radius:
            return x
        return self.ndi.grey_erosion(x, footprint=self._footprint(x, radius), mode="nearest")

    def dilate(self, x, radius: int):
        if not radius:
            return x
        return self.ndi.grey_dilation(x, footprint=self._footprint(x, radius), mode="nearest")

    def max_square(self, x, radius: int):
        """Max over a (2r+1)^2 square (cv2.dilate with np.ones): for bool/uint8 masks too."""
        if not radius:
            return x
        return self.ndi.maximum_filter(x, size=self._spatial(x, 2 * int(radius) + 1), mode="nearest")

    # -------------------------------------------------------------------------------- warping
    def remap(self, image, map_x, map_y):
        """image [H,W] sampled bilinearly at (map_x, map_y) [h,w] (pixel units), edges replicated
        (cv2.remap with INTER_LINEAR and BORDER_REPLICATE)."""
        xp = self.xp
        coords = xp.stack([map_y, map_x])
        return self.ndi.map_coordinates(image, coords, order=1, mode="nearest")

    # ---------------------------------------------------------------------------- side channel
    def flow(self, grey_now, grey_prev, flow_factory):
        """Dense flow from grey_now back to grey_prev ([h,w] uint8) -> [h,w,2] float32 (dx, dy), on the
        device the frames came from. The flow itself runs on the CPU (OpenCV DIS); device frames cross
        as the documented side channel."""
        if self._transfer is None:
            return flow_factory().calc(grey_now, grey_prev, None)
        to_host, to_device = self._transfer
        now, prev = to_host(grey_now, side=True), to_host(grey_prev, side=True)
        return to_device(flow_factory().calc(now, prev, None), side=True)


def _numpy_backend() -> Backend:
    def ndimage():
        import scipy.ndimage

        return scipy.ndimage

    return Backend(np, ndimage, "numpy")


@functools.lru_cache(maxsize=None)
def _cupy_backend() -> Backend:
    import cupy
    import cupyx.scipy.ndimage

    def to_host(x, side: bool = False):
        return cupy.asnumpy(x)

    def to_device(x, side: bool = False):
        return cupy.asarray(x)

    return Backend(cupy, cupyx.scipy.ndimage, "cupy", transfer=(to_host, to_device))


NUMPY = _numpy_backend()


def backend_for(x, transfer: Optional[tuple] = None) -> Backend:
    """The backend of x's array module. Stand-in device modules (tests) carry their own."""
    xp = get_array_module(x)
    if xp is np:
        return NUMPY
    own = getattr(xp, "bgvid_backend", None)
    if own is not None:
        return own
    return _cupy_backend()
