"""Manual corrections: override files (`--overrides PATH`).

The original browser tool let a person paint the matte with `restore` (white) and `remove` (black)
strokes and a soft brush. bgvid reads the same corrections from files, so an editor, Nuke, Photoshop
or a script can write them. `PATH` is either a folder of PNGs (which may also hold an
`overrides.json`) or a `.json` file of strokes.

Every correction is a layer with a target alpha `t` and a coverage `c` (0..1 per pixel), blended
over the matte so far:

    a = a_in * (1 - c) + t * c

so full coverage gives exactly `t`, zero coverage leaves the matte untouched (bit for bit).
Overrides apply after refinement and temporal smoothing, on full-resolution mattes, so a correction
is exact on the frames it names and never leaks into neighbouring frames through the smoother.

Frame numbers are 0-based indices of decoded input frames in presentation order (the numbers
`--frames` uses); ranges are inclusive at both ends.

Raster layers: a folder of PNGs
- Names: `NNNNNN.png` (one frame) or `NNNNNN-MMMMMM.png` (every frame from N to M inclusive); six
  digits, zero padded (more digits are accepted for frames past 999999); the extension may be
  upper case. A reversed range (M < N) is an error.
- Grey level = target alpha: 0..1 from 8- or 16-bit grey (1/2/4-bit grey is scaled to full range as
  PNG specifies). An RGB(A) or palette PNG uses its BT.709 luma, 0.2126 R + 0.7152 G + 0.0722 B,
  which is exactly the grey level for neutral (R = G = B) pixels. Code values are used as they
  are: no gamma or colour-profile conversion, no EXIF orientation.
- PNG alpha = coverage (soft edges). A tRNS transparency (palette, grey or RGB colour key) counts
  as alpha. With no alpha channel and no tRNS, coverage is 1 everywhere: the PNG replaces the whole
  matte on its frames.
- The PNG must have the video's displayed size (rotation applied).
- Anything else in the folder is an error that names the file, except `overrides.json` (case
  insensitive), hidden files (`.DS_Store`, ...), `Thumbs.db` and `desktop.ini`.
- PNG headers and chunk structure (size, bit depth, truncation) are checked when the overrides are
  loaded, before any frame is decoded; pixel data is decoded when first needed and kept in a small
  cache, and only the bounding box of its non-zero coverage is kept.

Vector layers: `overrides.json`
    [{"frames": "100-150", "mode": "remove", "size": 40, "softness": 0.5,
      "points": [[812.5, 403], [830, 420]]}, ...]
- A JSON list of strokes; all five keys are required, other keys are ignored (room for comments).
- `frames`: `"N"` or `"A-B"` (inclusive; spaces allowed around the dash; a JSON integer also works).
- `mode`: `"restore"` (target 1) or `"remove"` (target 0).
- `size`: brush diameter in pixels, > 0. `softness`: 0..1, the fraction of the radius that falls
  off smoothly: 0 = hard edge (binary coverage, no anti-aliasing), 1 = falls off from the centre.
- `points`: one or more `[x, y]` in video pixel coordinates of the displayed (rotation-applied)
  frame, y down. Coordinates are continuous, as on an HTML canvas, in Nuke or SVG: (0, 0) is the
  top-left corner of the top-left pixel, pixel (column i, row j) has its centre at
  (i + 0.5, j + 0.5), and the frame spans [0, W] x [0, H]. Points may lie outside the frame.
- A stroke is the union of round dabs along the polyline through its points, rasterised from the
  distance d of each pixel centre to the polyline (not by stamping, so coverage is exact and does
  not depend on point spacing): with r = size / 2 and r0 = r * (1 - softness), coverage is 1 for
  d <= r0, 0 for d >= r, and smoothstep 3s^2 - 2s^3, s = (r - d) / (r - r0), in between.
- Errors (malformed JSON, not a list, missing key, bad `frames` text or reversed range, unknown
  mode, size <= 0, softness outside 0..1, bad points, non-finite numbers) name the file and the
  stroke's 0-based index in the list.

Order: PNG layers by first frame (for equal first frames the longer range first, so the narrower,
more specific one wins; then by name), then JSON strokes in list order; each blends over the
result so far.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
import threading
import zlib
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import InputError
from ..frames import FrameBatch
from ..kernels import get_array_module

__all__ = ["OverrideStage", "Overrides", "rasterize_stroke"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_NAME_RE = re.compile(r"^([0-9]{6,})(?:-([0-9]{6,}))?\.png$", re.IGNORECASE)
_FRAMES_RE = re.compile(r"^\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?$")
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
_JSON_NAME = "overrides.json"
_MAX_FRAME = 2**62
# Allowed bit depths per PNG colour type (PNG spec, table 11.1).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
DEFAULT_CACHE_BYTES = 256 << 20
_STROKE_KEYS = ("frames", "mode", "size", "softness", "points")


# --------------------------------------------------------------------------------------------------
# Patches: one layer rendered for one frame size
# --------------------------------------------------------------------------------------------------

@dataclass
class _Patch:
    """A layer inside its bounding box (y0:y0+h, x0:x0+w): out = a * keep + add.

    keep = 1 - coverage (None where coverage is 1 everywhere in the box: out = add);
    add = target * coverage (None where it is all zero: a remove stroke)."""

    y0: int
    x0: int
    keep: Optional[np.ndarray]
    add: Optional[np.ndarray]

    @property
    def shape(self) -> tuple[int, int]:
        ref = self.keep if self.keep is not None else self.add
        return ref.shape  # type: ignore[union-attr]

    @property
    def nbytes(self) -> int:
        return sum(x.nbytes for x in (self.keep, self.add) if x is not None)

    def blend_into(self, out) -> None:
        """Blend in place into a [H, W] float32 matte (NumPy or CuPy)."""
        h, w = self.shape
        region = out[self.y0:self.y0 + h, self.x0:self.x0 + w]
        xp = get_array_module(out)
        if self.keep is None:
            region[...] = xp.asarray(self.add)
            return
        region *= xp.asarray(self.keep)
        if self.add is not None:
            region += xp.asarray(self.add)


def _patch_from(coverage: np.ndarray, target, y0: int, x0: int) -> Optional[_Patch]:
    """coverage [h,w] float32 (already cropped); target a float32 array of the same shape, or 0.0/1.0."""
    if coverage.size == 0:
        return None
    full = bool((coverage == 1.0).all())
    keep = None if full else (np.float32(1.0) - coverage)
    if isinstance(target, np.ndarray):
        add = target if full else target * coverage
    elif target == 0.0:
        add = None if not full else np.zeros_like(coverage)
    else:
        add = coverage.copy() if not full else np.ones_like(coverage)
    return _Patch(y0, x0, keep, add)


# --------------------------------------------------------------------------------------------------
# Strokes
# --------------------------------------------------------------------------------------------------

def _span(lo: float, hi: float, r: float, limit: int) -> tuple[int, int]:
    """Pixel index range [start, stop) whose centres (i + 0.5) can lie within r of [lo, hi]."""
    start = max(0, int(math.floor(lo - r - 0.5)))
    stop = min(limit, int(math.ceil(hi + r - 0.5)) + 1)
    return start, stop


def _stroke_box(points: np.ndarray, radius: float, softness: float, width: int,
                height: int) -> Optional[tuple[int, int, np.ndarray]]:
    """Coverage of a stroke inside its bounding box: (y0, x0, coverage [h, w] float32), or None
    where the stroke misses the frame."""
    x0, x1 = _span(float(points[:, 0].min()), float(points[:, 0].max()), radius, width)
    y0, y1 = _span(float(points[:, 1].min()), float(points[:, 1].max()), radius, height)
    if x0 >= x1 or y0 >= y1:
        return None
    d2 = np.full((y1 - y0, x1 - x0), np.inf, dtype=np.float32)
    segments = [(points[0], points[0])] if len(points) == 1 else zip(points[:-1], points[1:], strict=False)
    for a, b in segments:
        sx0, sx1 = _span(min(a[0], b[0]), max(a[0], b[0]), radius, width)
        sy0, sy1 = _span(min(a[1], b[1]), max(a[1], b[1]), radius, height)
        sx0, sx1, sy0, sy1 = max(sx0, x0), min(sx1, x1), max(sy0, y0), min(sy1, y1)
        if sx0 >= sx1 or sy0 >= sy1:
            continue
        # Pixel centres relative to a (small numbers: float32 is precise enough).
        px = (np.arange(sx0, sx1, dtype=np.float64) + 0.5 - a[0]).astype(np.float32)[None, :]
        py = (np.arange(sy0, sy1, dtype=np.float64) + 0.5 - a[1]).astype(np.float32)[:, None]
        dx, dy = np.float32(b[0] - a[0]), np.float32(b[1] - a[1])
        length2 = float(dx) * float(dx) + float(dy) * float(dy)
        if length2 > 1e-12:
            t = np.clip((px * dx + py * dy) * np.float32(1.0 / length2), 0.0, 1.0)
            ex, ey = px - t * dx, py - t * dy
        else:
            ex, ey = px, py
        view = d2[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0]
        np.minimum(view, ex * ex + ey * ey, out=view)
    inner = radius * (1.0 - softness)
    if softness == 0.0 or inner >= radius:
        coverage = (d2 <= np.float32(radius * radius)).astype(np.float32)
    else:
        s = (np.float32(radius) - np.sqrt(d2)) * np.float32(1.0 / (radius - inner))
        np.clip(s, 0.0, 1.0, out=s)
        coverage = s * s * (np.float32(3.0) - np.float32(2.0) * s)
    return y0, x0, coverage


def _as_points(points) -> np.ndarray:
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
        raise ValueError("points must be a non-empty list of [x, y] pairs")
    if not np.isfinite(arr).all():
        raise ValueError("points must be finite numbers")
    keep = np.ones(len(arr), dtype=bool)  # consecutive duplicates add nothing
    keep[1:] = (arr[1:] != arr[:-1]).any(axis=1)
    return arr[keep]


def rasterize_stroke(points, *, size: float, softness: float, width: int, height: int) -> np.ndarray:
    """Coverage [height, width] float32 0..1 of one brush stroke (see the module docstring):
    the union of round dabs of diameter `size` along the polyline through `points` (x, y in pixel
    coordinates, pixel centres at i + 0.5), smoothstep falloff over the outer `softness` fraction
    of the radius. Only the stroke's bounding box is computed. Raises ValueError on bad arguments."""
    pts = _as_points(points)
    if not (math.isfinite(size) and size > 0):
        raise ValueError(f"size must be > 0, got {size}")
    if not (math.isfinite(softness) and 0.0 <= softness <= 1.0):
        raise ValueError(f"softness must be within 0..1, got {softness}")
    out = np.zeros((height, width), dtype=np.float32)
    box = _stroke_box(pts, size / 2.0, float(softness), width, height)
    if box is not None:
        y0, x0, cov = box
        out[y0:y0 + cov.shape[0], x0:x0 + cov.shape[1]] = cov
    return out


@dataclass(frozen=True)
class _Stroke:
    source: str  # "path: stroke [i]"
    first: int
    last: int
    restore: bool
    radius: float
    softness: float
    points: np.ndarray

    def render(self, width: int, height: int) -> Optional[_Patch]:
        box = _stroke_box(self.points, self.radius, self.softness, width, height)
        if box is None:
            return None
        y0, x0, cov = box
        return _patch_from(cov, 1.0 if self.restore else 0.0, y0, x0)


def _parse_frames(value, what: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        first = last = value
        if first < 0:
            raise InputError(f"{what}: frames must be >= 0, got {value}")
    elif isinstance(value, str):
        m = _FRAMES_RE.match(value)
        if not m:
            raise InputError(f'{what}: bad frames {value!r}: expected "N" or "A-B" (0-based frame indices)')
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
    else:
        raise InputError(f'{what}: frames must be a string "N" or "A-B", got {value!r}')
    if last < first:
        raise InputError(f"{what}: reversed frame range {first}-{last} (the end comes before the start)")
    if last > _MAX_FRAME:
        raise InputError(f"{what}: frame index {last} is out of range")
    return first, last


def _finite(value) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _number(stroke: dict, key: str, what: str) -> float:
    value = stroke[key]
    if not _finite(value):
        raise InputError(f"{what}: {key} must be a finite number, got {value!r}")
    return float(value)


def _parse_stroke(stroke: Any, index: int, path: Path) -> _Stroke:
    what = f"{path}: stroke [{index}]"
    if not isinstance(stroke, dict):
        raise InputError(f"{what}: expected an object with keys {', '.join(_STROKE_KEYS)}, got {stroke!r:.60}")
    missing = [k for k in _STROKE_KEYS if k not in stroke]
    if missing:
        raise InputError(f"{what}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    first, last = _parse_frames(stroke["frames"], what)
    mode = stroke["mode"]
    if mode not in ("restore", "remove"):
        raise InputError(f'{what}: unknown mode {mode!r} (expected "restore" or "remove")')
    size = _number(stroke, "size", what)
    if size <= 0:
        raise InputError(f"{what}: size (brush diameter in pixels) must be > 0, got {stroke['size']!r}")
    softness = _number(stroke, "softness", what)
    if not 0.0 <= softness <= 1.0:
        raise InputError(f"{what}: softness must be within 0..1, got {stroke['softness']!r}")
    raw = stroke["points"]
    ok = isinstance(raw, list) and len(raw) > 0 and all(
        isinstance(p, list) and len(p) == 2 and all(_finite(v) for v in p) for p in raw)
    if not ok:
        raise InputError(f"{what}: points must be a non-empty list of [x, y] pairs of finite numbers")
    return _Stroke(what, first, last, mode == "restore", size / 2.0, softness, _as_points(raw))


def _load_json(path: Path) -> list[_Stroke]:
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise InputError(f"{path}: cannot read override strokes: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(f"{path}: override strokes are not UTF-8 text") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(f"{path}: not valid JSON: nested too deeply") from None
    if not isinstance(data, list):
        raise InputError(f"{path}: expected a JSON list of strokes, got a {type(data).__name__}")
    return [_parse_stroke(stroke, i, path) for i, stroke in enumerate(data)]


# --------------------------------------------------------------------------------------------------
# PNG layers
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _PngLayer:
    source: str  # the path
    first: int
    last: int
    bit_depth: int
    color_type: int
    trns: Optional[tuple[int, ...]]  # grey or RGB colour key (colour types 0 and 2)

    def render(self, width: int, height: int) -> Optional[_Patch]:
        import cv2

        try:
            data = np.fromfile(self.source, dtype=np.uint8)
        except OSError as exc:
            raise InputError(f"{self.source}: cannot read override PNG: {exc.strerror or exc}") from None
        image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
        if image is None or image.dtype not in (np.uint8, np.uint16):
            raise InputError(f"{self.source}: cannot decode override PNG (corrupt image data)")
        if image.shape[:2] != (height, width):
            raise InputError(f"{self.source}: override PNG is {image.shape[1]}x{image.shape[0]}, "
                             f"the video is {width}x{height}")
        maxv = 255 if image.dtype == np.uint8 else 65535
        alpha = None
        if image.ndim == 2:
            grey = image
            if self.trns is not None:
                key = self.trns[0]
                if self.bit_depth < 8:  # libpng scaled the samples up to 8 bits
                    key = key * (255 // ((1 << self.bit_depth) - 1))
                alpha = np.where(grey == key, 0, maxv).astype(image.dtype)
            colour = None
        else:
            colour = image[..., :3]  # BGR
            if image.shape[2] == 4:
                alpha = image[..., 3]
            elif self.trns is not None and len(self.trns) == 3:
                r, g, b = self.trns
                alpha = np.where((colour == np.array([b, g, r], dtype=image.dtype)).all(axis=2), 0, maxv)
                alpha = alpha.astype(image.dtype)
            grey = None
            if np.array_equal(colour[..., 0], colour[..., 1]) and np.array_equal(colour[..., 1], colour[..., 2]):
                grey, colour = colour[..., 1], None

        # Crop to the bounding box of non-zero coverage before converting to float.
        y0, x0, y1, x1 = 0, 0, height, width
        if alpha is not None:
            rows = np.flatnonzero(alpha.any(axis=1))
            if rows.size == 0:
                return None
            cols = np.flatnonzero(alpha.any(axis=0))
            y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        box = (slice(y0, y1), slice(x0, x1))
        scale = np.float32(maxv)
        if grey is not None:
            target = _lut(maxv)[grey[box]]
        else:
            c = colour[box].astype(np.float32)
            b, g, r = c[..., 0], c[..., 1], c[..., 2]
            # BT.709 luma written so that a neutral pixel gives exactly its grey level.
            target = (g + np.float32(0.2126) * (r - g) + np.float32(0.0722) * (b - g)) / scale
            np.clip(target, 0.0, 1.0, out=target)
        if alpha is None:
            return _Patch(0, 0, None, np.ascontiguousarray(target))
        coverage = _lut(maxv)[alpha[box]]
        return _patch_from(coverage, target, y0, x0)


_LUTS: dict[int, np.ndarray] = {}


def _lut(maxv: int) -> np.ndarray:
    """code value -> float32 code / maxv (equal to float32(code / maxv) for every code)."""
    lut = _LUTS.get(maxv)
    if lut is None:
        lut = _LUTS[maxv] = np.arange(maxv + 1, dtype=np.float32) / np.float32(maxv)
    return lut


def _read_png_header(path: Path, first: int, last: int, width: int, height: int) -> _PngLayer:
    """Check signature, IHDR and chunk structure (no pixel decoding) and the size."""
    def bad(why: str) -> InputError:
        return InputError(f"{path}: not a readable PNG: {why}")

    try:
        with open(path, "rb") as f:
            total = os.fstat(f.fileno()).st_size
            if f.read(8) != _PNG_SIGNATURE:
                raise bad("no PNG signature")
            ihdr = None
            trns = None
            seen_idat = False
            pos = 8
            while True:
                head = f.read(8)
                if len(head) < 8:
                    raise bad("file is truncated (no IEND chunk)")
                length, ctype = struct.unpack(">I4s", head)
                pos += 8
                if pos + length + 4 > total:
                    raise bad(f"file is truncated inside the {ctype.decode('latin-1')!r} chunk")
                if ihdr is None:
                    if ctype != b"IHDR" or length != 13:
                        raise bad("IHDR is not the first chunk")
                    body = f.read(13)
                    (crc,) = struct.unpack(">I", f.read(4))
                    if zlib.crc32(ctype + body) & 0xFFFFFFFF != crc:
                        raise bad("IHDR checksum mismatch")
                    ihdr = struct.unpack(">IIBBBBB", body)
                elif ctype == b"tRNS" and length <= 6:
                    body = f.read(length)
                    f.seek(4, os.SEEK_CUR)
                    if ihdr[3] == 0 and length == 2:
                        trns = struct.unpack(">H", body)
                    elif ihdr[3] == 2 and length == 6:
                        trns = struct.unpack(">HHH", body)
                else:
                    seen_idat = seen_idat or ctype == b"IDAT"
                    f.seek(length + 4, os.SEEK_CUR)
                pos += length + 4
                if ctype == b"IEND":
                    break
    except OSError as exc:
        raise InputError(f"{path}: cannot read override PNG: {exc.strerror or exc}") from None
    w, h, depth, color_type, compression, filt, interlace = ihdr
    if color_type not in _PNG_DEPTHS or depth not in _PNG_DEPTHS[color_type] or compression or filt \
            or interlace > 1 or w == 0 or h == 0:
        raise bad(f"invalid header (colour type {color_type}, bit depth {depth})")
    if not seen_idat:
        raise bad("no image data")
    if (w, h) != (width, height):
        raise InputError(f"{path}: override PNG is {w}x{h}, the video is {width}x{height} "
                         "(displayed size, rotation applied)")
    return _PngLayer(str(path), first, last, depth, color_type, trns)


def _png_entry(path: Path) -> tuple[int, int]:
    m = _NAME_RE.match(path.name)
    if not m:
        raise InputError(f"{path}: not an override file: expected NNNNNN.png or NNNNNN-MMMMMM.png "
                         f"(6-digit, 0-based frame indices) or {_JSON_NAME}")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise InputError(f"{path}: reversed frame range {first}-{last} (the end comes before the start)")
    if last > _MAX_FRAME:
        raise InputError(f"{path}: frame index {last} is out of range")
    return first, last


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------

class _Cache:
    """A small LRU of rendered patches bounded in bytes (always keeps the newest one)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict[int, Optional[_Patch]] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    def get(self, key: int, build: Callable[[], Optional[_Patch]]) -> Optional[_Patch]:
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        patch = build()
        with self.lock:
            if key not in self.items:
                self.items[key] = patch
                self.bytes += patch.nbytes if patch is not None else 0
                while self.bytes > self.max_bytes and len(self.items) > 1:
                    _, old = self.items.popitem(last=False)
                    self.bytes -= old.nbytes if old is not None else 0
        return patch


class Overrides:
    """Manual corrections for one video size, loaded and validated up front (see module docstring)."""

    def __init__(self, layers: Sequence[Any], *, width: int, height: int,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.width, self.height = int(width), int(height)
        self._layers = list(layers)  # in blending order
        self._first = np.array([layer.first for layer in self._layers], dtype=np.int64)
        self._last = np.array([layer.last for layer in self._layers], dtype=np.int64)
        self._cache = _Cache(cache_bytes)

    @classmethod
    def load(cls, path, *, width: int, height: int, cache_bytes: int = DEFAULT_CACHE_BYTES) -> "Overrides":
        """Read a folder of PNGs (with an optional overrides.json) or a .json file of strokes.
        Every name, header, size and stroke is checked here; raises InputError naming the file."""
        if isinstance(width, bool) or isinstance(height, bool) or int(width) <= 0 or int(height) <= 0:
            raise ValueError(f"width and height must be positive, got {width}x{height}")
        path = Path(os.fspath(path))
        pngs: list[_PngLayer] = []
        strokes: list[_Stroke] = []
        if path.is_dir():
            json_path = None
            try:
                names = sorted(os.listdir(path))
            except OSError as exc:
                raise InputError(f"{path}: cannot list override folder: {exc.strerror or exc}") from None
            for name in names:
                entry = path / name
                if name.startswith(".") or name.lower() in _IGNORED_NAMES:
                    continue
                if name.lower() == _JSON_NAME and entry.is_file():
                    json_path = entry
                    continue
                first, last = _png_entry(entry)
                if not entry.is_file():
                    raise InputError(f"{entry}: not a file")
                pngs.append(_read_png_header(entry, first, last, width, height))
            pngs.sort(key=lambda layer: (layer.first, -layer.last, layer.source))
            if json_path is not None:
                strokes = _load_json(json_path)
        elif path.is_file():
            if path.suffix.lower() != ".json":
                raise InputError(f"{path}: overrides must be a folder of PNGs or a .json file of strokes")
            strokes = _load_json(path)
        else:
            raise InputError(f"{path}: override path not found")
        return cls([*pngs, *strokes], width=width, height=height, cache_bytes=cache_bytes)

    def __repr__(self) -> str:
        n_png = sum(isinstance(layer, _PngLayer) for layer in self._layers)
        return (f"Overrides({n_png} PNG layers, {len(self._layers) - n_png} strokes, "
                f"{self.width}x{self.height})")

    def ranges(self) -> list[tuple[int, int]]:
        """Frames touched, as sorted, merged, inclusive (first, last) ranges."""
        merged: list[list[int]] = []
        for first, last in sorted(zip(self._first.tolist(), self._last.tolist(), strict=False)):
            if merged and first <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], last)
            else:
                merged.append([first, last])
        return [(a, b) for a, b in merged]

    def frames(self) -> set[int]:
        """Every frame index some layer touches (see ranges() for a compact form)."""
        out: set[int] = set()
        for first, last in self.ranges():
            out.update(range(first, last + 1))
        return out

    def _active(self, frame_index: int) -> np.ndarray:
        f = int(frame_index)
        return np.flatnonzero((self._first <= f) & (self._last >= f))

    def _patch(self, i: int) -> Optional[_Patch]:
        layer = self._layers[i]
        return self._cache.get(i, lambda: layer.render(self.width, self.height))

    def _check(self, shape) -> None:
        if tuple(shape) != (self.height, self.width):
            raise ValueError(f"matte is {shape[-1]}x{shape[-2]} but the overrides were loaded for "
                             f"{self.width}x{self.height}")

    def _apply_into(self, out, active: np.ndarray) -> None:
        for i in active.tolist():
            patch = self._patch(i)
            if patch is not None:
                patch.blend_into(out)

    def apply(self, alpha, frame_index: int):
        """alpha [H, W] float 0..1 (NumPy or CuPy) -> corrected float32 copy; the same object when
        no layer names this frame."""
        active = self._active(frame_index)
        if active.size == 0:
            return alpha
        self._check(alpha.shape)
        xp = get_array_module(alpha)
        out = alpha.astype(xp.float32, copy=True)
        self._apply_into(out, active)
        return out


class OverrideStage:
    """Pipeline stage: applies the overrides to batch.alpha ([N, H, W] at frame size) by
    batch.frame_index. The batch's alpha is replaced by a corrected copy, never written in place
    (an upstream stage may still hold the array, e.g. as temporal state)."""

    name = "overrides"

    def __init__(self, overrides: Overrides):
        self.overrides = overrides

    def push(self, batch: Optional[FrameBatch]) -> list[FrameBatch]:
        if batch is None:
            return []
        if batch.alpha is None:
            raise ValueError("OverrideStage needs batch.alpha (place it after segmentation)")
        active = [self.overrides._active(f) for f in np.asarray(batch.frame_index).tolist()]
        if not any(a.size for a in active):
            return [batch]
        self.overrides._check(batch.alpha.shape[1:])
        xp = get_array_module(batch.alpha)
        out = batch.alpha.astype(xp.float32, copy=True)
        for i, a in enumerate(active):
            if a.size:
                self.overrides._apply_into(out[i], a)
        batch.alpha = out
        return [batch]
