"""RGB(A) frames -> the encoder's planes, on the device the frames are on, packed into one array so the
frame path's one download per batch is one copy.

    planes = to_planes(rgb, alpha, PlaneSpec("yuva444p10le", matrix=1))   # -> Planes (packed, [N, total])
    host = planes.download(device.download)                              # one crossing
    host.plane(i, k)                                                     # frame i, plane k: [h, w]

Formats (what bgvid's writer encodes): yuva444p10le (ProRes 4444), yuva420p (VP9 alpha), yuv420p (H.264,
odd sizes padded by one edge pixel first; also the 8-bit matte), yuv422p10le (the ProRes matte),
rgba / rgba64 (PNG, in OpenCV's BGRA order) and gray16 (the PNG matte). YUV is limited range with the
matrix's Kr/Kb (AVColorSpace codes as the writer's colour tags: 1 BT.709, 5/6 BT.601, 9/10 BT.2020,
4 FCC, 7 SMPTE 240M; others BT.709, as the CPU path's swscale does):

    y = Kr R + (1 - Kr - Kb) G + Kb B        (R, G, B on 0..1)
    Y = (16 + 219 y) 2^(bits-8),  Cb = (128 + 224 (B - y) / (2 (1 - Kb))) 2^(bits-8),  Cr likewise with R, Kr

4:2:0 chroma follows swscale's default filter (see _chroma420), so the device path's chroma matches the
CPU path's within one code value. Alpha: round(a (2^bits - 1)).
This is the device path's converter; the CPU path keeps swscale (io/writer.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._backend import backend_for

KR_KB = {1: (0.2126, 0.0722), 4: (0.30, 0.11), 5: (0.299, 0.114), 6: (0.299, 0.114), 7: (0.212, 0.087),
         9: (0.2627, 0.0593), 10: (0.2627, 0.0593)}
FORMATS = ("yuva444p10le", "yuva420p", "yuv420p", "yuv422p10le", "rgba", "rgba64", "gray16")


@dataclass(frozen=True)
class PlaneSpec:
    pix_fmt: str  # one of FORMATS
    matrix: int = 1  # AVColorSpace of the output's tags
    matte: bool = False  # the planes carry the matte as a grey picture
    pad_even: bool = False  # H.264: odd sizes padded by one edge pixel

    def __post_init__(self):
        if self.pix_fmt not in FORMATS:
            raise ValueError(f"pix_fmt must be one of {', '.join(FORMATS)}, got {self.pix_fmt!r}")


@dataclass
class Planes:
    """One batch's planes packed as data [N, total] (one array: one download), plus where each plane
    lies: shapes[k] = (h, w) or (h, w, c), offsets[k] into a row of data."""

    data: object
    shapes: list
    offsets: list
    pix_fmt: str

    def download(self, fetch) -> "Planes":
        return Planes(fetch(self.data), self.shapes, self.offsets, self.pix_fmt)

    def plane(self, i: int, k: int):
        size = int(np.prod(self.shapes[k]))
        return self.data[i, self.offsets[k]:self.offsets[k] + size].reshape(self.shapes[k])

    def __len__(self) -> int:
        return int(self.data.shape[0])


def _pack(xp, planes: list, pix_fmt: str) -> Planes:
    n = planes[0].shape[0]
    shapes = [tuple(int(s) for s in p.shape[1:]) for p in planes]
    offsets, at = [], 0
    for s in shapes:
        offsets.append(at)
        at += int(np.prod(s))
    data = xp.concatenate([p.reshape(n, -1) for p in planes], axis=1)
    return Planes(data, shapes, offsets, pix_fmt)


def _pad_even(xp, x):
    h, w = x.shape[1:3]
    if h % 2 == 0 and w % 2 == 0:
        return x
    pad = ((0, 0), (0, h % 2), (0, w % 2)) + ((0, 0),) * (x.ndim - 3)
    return xp.pad(x, pad, mode="edge")


def _chroma420(xp, c):
    """[N, H, W] full-resolution chroma -> [N, ceil(H/2), ceil(W/2)] as swscale's default (bilinear)
    filter gives it: the mean of each horizontal pair, and across rows the taps 1/8 3/8 3/8 1/8 centred
    between the pair (edges replicated). Measured against PyAV's reformat on a real frame: within 1 code
    value (mean 0.28); a plain 2x2 mean was up to 8 off."""
    n, h, w = c.shape
    if w % 2:
        c = xp.pad(c, ((0, 0), (0, 0), (0, 1)), mode="edge")
    c = (c[:, :, 0::2] + c[:, :, 1::2]) * xp.float32(0.5)
    rows = (h + 1) // 2
    p = xp.pad(c, ((0, 0), (1, 2 * rows + 1 - h), (0, 0)), mode="edge")  # p[k] = c[k - 1], clamped
    return (xp.float32(0.125) * p[:, 0:2 * rows:2] + xp.float32(0.375) * p[:, 1:2 * rows + 1:2]
            + xp.float32(0.375) * p[:, 2:2 * rows + 2:2] + xp.float32(0.125) * p[:, 3:2 * rows + 3:2])


def _quantize(xp, x, top: float, dtype):
    return xp.rint(xp.clip(x, 0.0, 1.0) * xp.float32(top)).astype(dtype)


def to_planes(rgb, alpha, spec: PlaneSpec, *, backend=None) -> Planes:
    """rgb [N,H,W,3] uint8/uint16 (ignored for a matte), alpha [N,H,W] float 0..1 or None (opaque) ->
    the planes of spec.pix_fmt, packed."""
    be = backend or backend_for(alpha if rgb is None else rgb)
    xp = be.xp
    fmt = spec.pix_fmt
    n, h, w = (alpha if rgb is None else rgb).shape[:3]
    a = xp.ones((n, h, w), xp.float32) if alpha is None else alpha.astype(xp.float32)
    if spec.matte:
        if spec.pad_even:
            a = _pad_even(xp, a)
        if fmt == "gray16":
            return _pack(xp, [_quantize(xp, a, 65535, xp.uint16)], fmt)
        bits = 10 if fmt.endswith("10le") else 8
        dtype = xp.uint16 if bits > 8 else xp.uint8
        s = 1 << (bits - 8)
        y = (_quantize(xp, a, 219 * s, xp.float32) + 16 * s).astype(dtype)
        ch, cw = (y.shape[1], (y.shape[2] + 1) // 2) if fmt == "yuv422p10le" else ((y.shape[1] + 1) // 2,
                                                                                   (y.shape[2] + 1) // 2)
        grey = xp.full((n, ch, cw), 128 * s, dtype)
        return _pack(xp, [y, grey, grey], fmt)
    if fmt in ("rgba", "rgba64"):
        deep = fmt == "rgba64"
        top, dtype = (65535, xp.uint16) if deep else (255, xp.uint8)
        colour = rgb if rgb.dtype == dtype else (rgb.astype(xp.uint16) * 257 if deep else (rgb >> 8).astype(xp.uint8))
        bgra = xp.concatenate([colour[..., ::-1], _quantize(xp, a, top, dtype)[..., None]], axis=-1)
        return _pack(xp, [xp.ascontiguousarray(bgra)], fmt)
    if spec.pad_even:
        rgb, a = _pad_even(xp, rgb), _pad_even(xp, a)
    kr, kb = KR_KB.get(int(spec.matrix), KR_KB[1])
    scale = xp.float32(1.0 / (65535.0 if rgb.dtype == xp.uint16 else 255.0))
    r = rgb[..., 0].astype(xp.float32) * scale
    g = rgb[..., 1].astype(xp.float32) * scale
    b = rgb[..., 2].astype(xp.float32) * scale
    y = xp.float32(kr) * r + xp.float32(1.0 - kr - kb) * g + xp.float32(kb) * b
    cb = (b - y) * xp.float32(0.5 / (1.0 - kb))
    cr = (r - y) * xp.float32(0.5 / (1.0 - kr))
    bits = 10 if fmt.endswith("10le") else 8
    dtype = xp.uint16 if bits > 8 else xp.uint8
    s = xp.float32(1 << (bits - 8))
    if fmt in ("yuva420p", "yuv420p"):
        cb, cr = _chroma420(xp, cb), _chroma420(xp, cr)

    def luma(v):
        return xp.rint((16 + 219 * v) * s).astype(dtype)

    def chroma(v):
        return xp.rint((128 + 224 * v) * s).astype(dtype)

    planes = [luma(y), chroma(cb), chroma(cr)]
    if fmt.startswith("yuva"):
        planes.append(_quantize(xp, a, (1 << bits) - 1, dtype))
    return _pack(xp, planes, fmt)

