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
  upper case. A reversed range (M < N) is an error. `NNNNNN-MMMMMM@KKKKKK.png`: the layer is painted
  on key frame K (one of N..M) and follows the picture to the other frames (below).
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

Corrections that follow the picture (the motion: stages/track.py)
- `"keyframe": K` (optional): a JSON integer, one of the stroke's frames. The points are on frame K;
  on the other frames of the range the painted area is carried along the picture's motion, forwards
  and backwards from K. A keyframe that is not an integer (12.0, "12", true, null), negative, outside
  the stroke's frames or past the end of the video is an error naming the file and the stroke.
  Without it a stroke stays put, exactly as before.
- `"id"` (optional, read only with a keyframe): a non-empty string of at most MAX_ID_CHARS characters.
  Keyframed strokes with the same id are one correction, each with its own keyframe and points. On
  frame t it takes those of its strokes whose frames include t; of their key frames, the nearest at
  or before t and the nearest at or after t. On a key frame: that key frame's strokes exactly as
  painted; between two key frames: a linear blend of the two propagations, weight (t - K1)/(K2 - K1)
  on K2's; beyond the last (before the first): the nearest one alone. A correction blends at the
  place of its first stroke in the list. Before keyframes existed "id" was a key bgvid ignored: a
  stroke without a keyframe keeps ignoring it, unless it names a tracked correction (an error).
- On frames other than its key frame, a restore stroke keeps only the pixels within one brush
  diameter of what the matte entering the overrides calls subject (where the model sees a subject
  within four diameters at all): the guide, so that a carried restore does not spill past the
  subject's outline. On the key frame itself every stroke is exactly as painted.
- At most MAX_KEYS_PER_FRAME distinct key frames may be carried onto any one frame (each costs a
  step of its own chain per frame); a file over it names the stroke that goes over.

Limits (no real correction comes near them; a hostile or broken file stops with one line naming the
file, the stroke and the limit, before any frame is decoded):
- The file is at most MAX_JSON_BYTES (32 MiB); at most MAX_STROKES strokes, MAX_POINTS_PER_STROKE
  points in a stroke and MAX_POINTS in the file.
- Every JSON number, also in keys bgvid ignores, is at most MAX_NUMBER_CHARS characters long and
  finite (no NaN, Infinity or 1e999: they are not JSON, and the editor could not send them back);
  text is valid Unicode (no lone surrogates). Numbers are checked before they are converted.
- Coordinates lie within +-MAX_COORDINATE pixels; frame indices are at most 2**62.
- The brush diameter is clamped to the frame's diagonal when a stroke is rasterised (a brush wider
  than the frame is no correction anyone paints; in float32 a huge one turned the matte into NaN).
- Work per frame: each segment of a stroke (a pair of consecutive points) costs the area of its
  bounding box grown by the brush radius and clipped to the frame, at least MIN_SEGMENT_AREA
  pixels; the strokes on any one frame may cost at most WORK_PASSES times the frame's area
  (frames smaller than 640x480 count as 640x480).

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
from .stages import StageBase

__all__ = ["OverrideStage", "Overrides", "check_strokes", "decode_json", "load_json_document", "rasterize_stroke"]

# Limits (see the module docstring). Real corrections stay far below them; hostile files do not.
MAX_JSON_BYTES = 32 << 20
MAX_STROKES = 50_000
MAX_POINTS_PER_STROKE = 20_000
MAX_POINTS = 500_000
MAX_NUMBER_CHARS = 40  # a JSON number literal (JavaScript and Python write a double in <= 24)
MAX_COORDINATE = 1_000_000.0
WORK_PASSES = 500
MIN_WORK_AREA = 640 * 480
MIN_SEGMENT_AREA = 64 * 64  # what a segment costs at least (NumPy call overhead, ~20 us)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# fullmatch / \Z: "$" would also match before a trailing newline ("000000.png\n").
_NAME_RE = re.compile(r"([0-9]{6,})(?:-([0-9]{6,}))?(?:@([0-9]{6,}))?\.png", re.IGNORECASE)
_FRAMES_RE = re.compile(r"\s*([0-9]+)\s*(?:-\s*([0-9]+)\s*)?")
_MAX_FRAME_DIGITS = 19  # 2**62 has 19 digits: longer digit strings are out of range unconverted
_IGNORED_NAMES = {"thumbs.db", "desktop.ini"}
_JSON_NAME = "overrides.json"
_MAX_FRAME = 2**62
# Allowed bit depths per PNG colour type (PNG spec, table 11.1).
_PNG_DEPTHS = {0: (1, 2, 4, 8, 16), 2: (8, 16), 3: (1, 2, 4, 8), 4: (8, 16), 6: (8, 16)}
DEFAULT_CACHE_BYTES = 256 << 20
_STROKE_KEYS = ("frames", "mode", "size", "softness", "points")
_TRACK_KEYS = ("keyframe", "id")  # optional: a stroke that follows the picture (stages/track.py)
MAX_ID_CHARS = 200
MAX_KEYS_PER_FRAME = 64  # distinct key frames tracked on any one frame (each costs a chain step per frame)
GUIDE = True  # carried restore strokes keep near what the matte calls subject (benchmarks turn it off to measure)


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

    def blend_into(self, out, upload=None) -> None:
        """Blend in place into a [H, W] float32 matte (NumPy or CuPy). upload(host) -> device array moves
        the patch to a device matte (the overrides' documented side channel: only the painted box)."""
        h, w = self.shape
        region = out[self.y0:self.y0 + h, self.x0:self.x0 + w]
        move = upload or get_array_module(out).asarray
        if self.keep is None:
            region[...] = move(self.add)
            return
        region *= move(self.keep)
        if self.add is not None:
            region += move(self.add)


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
    where the stroke misses the frame. The radius is clamped to half the frame's diagonal."""
    radius = min(radius, _max_radius(width, height))
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


def _max_radius(width: int, height: int) -> float:
    """Half the frame's diagonal: the largest brush radius a stroke is rasterised with."""
    return math.hypot(width, height) / 2.0


def _stroke_work(points: np.ndarray, radius: float, width: int, height: int) -> int:
    """What _stroke_box costs for these points, in pixel evaluations: the stroke's box plus, per
    segment, its box (grown by the radius, clipped to the frame), at least MIN_SEGMENT_AREA."""
    radius = min(radius, _max_radius(width, height))

    def extent(lo, hi, limit: int):
        start = np.maximum(0.0, np.floor(lo - radius - 0.5))
        stop = np.minimum(float(limit), np.ceil(hi + radius - 0.5) + 1.0)
        return np.maximum(stop - start, 0.0)

    xs, ys = points[:, 0], points[:, 1]
    box = float(extent(xs.min(), xs.max(), width) * extent(ys.min(), ys.max(), height))
    if box == 0.0:
        return MIN_SEGMENT_AREA  # misses the frame: _stroke_box returns at once
    a, b = (points, points) if len(points) == 1 else (points[:-1], points[1:])
    w = extent(np.minimum(a[:, 0], b[:, 0]), np.maximum(a[:, 0], b[:, 0]), width)
    h = extent(np.minimum(a[:, 1], b[:, 1]), np.maximum(a[:, 1], b[:, 1]), height)
    return int(box + np.maximum(w * h, float(MIN_SEGMENT_AREA)).sum())


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
    if not (_finite(size) and size > 0):
        raise ValueError(f"size must be > 0, got {_show(size)}")
    if not (_finite(softness) and 0.0 <= softness <= 1.0):
        raise ValueError(f"softness must be within 0..1, got {_show(softness)}")
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
    key: Optional[int] = None  # "keyframe": the points are on this frame and follow the picture
    group: Optional[str] = None  # "id": strokes with the same id (and a keyframe) are one correction

    def render(self, width: int, height: int) -> Optional[_Patch]:
        box = _stroke_box(self.points, self.radius, self.softness, width, height)
        if box is None:
            return None
        y0, x0, cov = box
        return _patch_from(cov, 1.0 if self.restore else 0.0, y0, x0)

    def work(self, width: int, height: int) -> int:
        return _stroke_work(self.points, self.radius, width, height)


# -- checking JSON values: type, range and length before any conversion --------------------------

class _Refused:
    """A JSON value refused while parsing (a number too long, NaN, Infinity, 1e999), kept as a
    marker so that the error can name the stroke and the key it is in."""

    __slots__ = ("why",)

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return self.why


def _parse_int(text: str):
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused(f"a number of {len(text)} digits (at most {MAX_NUMBER_CHARS} characters)")
    return int(text)


def _parse_float(text: str):
    if len(text) > MAX_NUMBER_CHARS:
        return _Refused(f"a number of {len(text)} characters (at most {MAX_NUMBER_CHARS})")
    value = float(text)
    if not math.isfinite(value):
        return _Refused(f"{text} (out of range of a double)")
    return value


def _parse_constant(name: str):
    return _Refused(f"{name} (not a JSON number)")


_BIG = 10 ** MAX_NUMBER_CHARS


def _show(value, width: int = 60) -> str:
    """A short, safe description of any value for an error message (never a 4,300-digit repr)."""
    if isinstance(value, _Refused):
        return value.why
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        if -_BIG < value < _BIG:
            return repr(value)
        return f"an integer of about {int(value.bit_length() * 0.30103)} digits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        text = repr(value) if len(value) <= width else repr(value[:width]) + f"... ({len(value)} characters)"
        return text.encode("ascii", "backslashreplace").decode("ascii")
    if isinstance(value, (list, dict)):
        kind = "list" if isinstance(value, list) else "object"
        return f"a {kind} of {len(value)} item{'s' if len(value) != 1 else ''}"
    return f"a {type(value).__name__}"


def _bad_value(value) -> Optional[tuple[str, str]]:
    """The first value inside `value` that JSON cannot carry back out, as (where, why): a refused
    number, a non-finite float, an integer over MAX_NUMBER_CHARS digits, text that is not valid
    Unicode, a key that is not text, or a non-JSON type. None when everything is fine. Iterative:
    no depth limit to hit."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        where, v = stack.pop()
        if isinstance(v, _Refused):
            return where, v.why
        if isinstance(v, bool) or v is None:
            continue
        if isinstance(v, int):
            if not -_BIG < v < _BIG:
                return where, _show(v)
        elif isinstance(v, float):
            if not math.isfinite(v):
                return where, f"{v!r} (not a JSON number)"
        elif isinstance(v, str):
            if not _valid_unicode(v):
                return where, "text that is not valid Unicode (a lone surrogate)"
        elif isinstance(v, list):
            stack.extend((f"{where}[{i}]", item) for i, item in reversed(list(enumerate(v))))
        elif isinstance(v, dict):
            for k, item in reversed(list(v.items())):
                if not isinstance(k, str) or not _valid_unicode(k):
                    return where, f"a key {_show(k)} that is not valid text"
                stack.append((f"{where}.{k}" if where else k, item))
        else:
            return where, f"a {type(v).__name__} (not a JSON value)"
    return None


def _valid_unicode(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _finite(value) -> bool:
    """A real number (not bool) that is finite and fits a float; never raises."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    if isinstance(value, int):
        return -_BIG < value < _BIG
    return math.isfinite(value)


def _parse_frames(value, what: str) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= _MAX_FRAME:
            raise InputError(f"{what}: frames must be a frame index from 0 to 2**62, got {_show(value)}")
        first = last = value
    elif isinstance(value, str):
        m = _FRAMES_RE.fullmatch(value)
        if not m:
            raise InputError(f'{what}: bad frames {_show(value)}: expected "N" or "A-B" (0-based frame indices)')
        digits = [g for g in m.groups() if g is not None]
        if any(len(g.lstrip("0")) > _MAX_FRAME_DIGITS for g in digits):
            raise InputError(f"{what}: frame index in {_show(value)} is out of range (at most 2**62)")
        first = int(digits[0])
        last = int(digits[1]) if len(digits) > 1 else first
    else:
        raise InputError(f'{what}: frames must be a string "N" or "A-B", got {_show(value)}')
    if last < first:
        raise InputError(f"{what}: reversed frame range {first}-{last} (the end comes before the start)")
    if last > _MAX_FRAME:
        raise InputError(f"{what}: frame index {last} is out of range (at most 2**62)")
    return first, last


def _number(stroke: dict, key: str, what: str) -> float:
    value = stroke[key]
    if not _finite(value):
        raise InputError(f"{what}: {key} must be a finite number, got {_show(value)}")
    return float(value)


def _check_points(raw, what: str) -> None:
    if not isinstance(raw, list) or not raw:
        raise InputError(f"{what}: points must be a non-empty list of [x, y] pairs of finite numbers, "
                         f"got {_show(raw)}")
    if len(raw) > MAX_POINTS_PER_STROKE:
        raise InputError(f"{what}: {len(raw)} points, over the limit of {MAX_POINTS_PER_STROKE} points in a stroke "
                         "(split it into several strokes)")
    for i, p in enumerate(raw):
        if not (isinstance(p, list) and len(p) == 2 and _finite(p[0]) and _finite(p[1])):
            got = "[" + ", ".join(map(_show, p)) + "]" if isinstance(p, list) and len(p) == 2 else _show(p)
            raise InputError(f"{what}: points[{i}] must be an [x, y] pair of finite numbers, got {got}")
        if not (abs(p[0]) <= MAX_COORDINATE and abs(p[1]) <= MAX_COORDINATE):
            raise InputError(f"{what}: points[{i}] = [{_show(p[0])}, {_show(p[1])}] lies more than "
                             f"{MAX_COORDINATE:.0f} pixels from the frame's corner (the limit)")


def _parse_stroke(stroke: Any, index: int, source: str) -> _Stroke:
    what = f"{source}: stroke [{index}]"
    if not isinstance(stroke, dict):
        raise InputError(f"{what}: expected an object with keys {', '.join(_STROKE_KEYS)}, got {_show(stroke)}")
    missing = [k for k in _STROKE_KEYS if k not in stroke]
    if missing:
        raise InputError(f"{what}: missing key{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    first, last = _parse_frames(stroke["frames"], what)
    mode = stroke["mode"]
    if not isinstance(mode, str) or mode not in ("restore", "remove"):
        raise InputError(f'{what}: unknown mode {_show(mode)} (expected "restore" or "remove")')
    size = _number(stroke, "size", what)
    if size <= 0:
        raise InputError(f"{what}: size (brush diameter in pixels) must be > 0, got {_show(stroke['size'])}")
    softness = _number(stroke, "softness", what)
    if not 0.0 <= softness <= 1.0:
        raise InputError(f"{what}: softness must be within 0..1, got {_show(stroke['softness'])}")
    _check_points(stroke["points"], what)
    key, group = _parse_track_keys(stroke, first, last, what)
    # The keys bgvid ignores (the ones above are checked) must still be JSON it can write back.
    bad = _bad_value({k: v for k, v in stroke.items() if k not in _STROKE_KEYS or not isinstance(k, str)})
    if bad is not None:
        raise InputError(f"{what}: key {bad[0]}: {bad[1]}")
    return _Stroke(what, first, last, mode == "restore", size / 2.0, softness, _as_points(stroke["points"]),
                   key, group)


def _parse_track_keys(stroke: dict, first: int, last: int, what: str) -> tuple[Optional[int], Optional[str]]:
    """"keyframe" (an integer frame of the stroke's range) and "id" (text, read only with a keyframe: before
    keyframes existed "id" was a key bgvid ignored, and a file that uses it so renders as it always did)."""
    if "keyframe" not in stroke:
        return None, None
    key = stroke["keyframe"]
    if isinstance(key, bool) or not isinstance(key, int):
        raise InputError(f"{what}: keyframe must be a frame index (a JSON integer such as 12), got {_show(key)}")
    if key < 0:
        raise InputError(f"{what}: keyframe must be a frame index from 0, got {_show(key)}")
    if not first <= key <= last:
        raise InputError(f"{what}: keyframe {_show(key)} is outside the stroke's frames {first}-{last} "
                         "(the key frame is one of the frames it applies to)")
    group = stroke.get("id")
    if group is not None or "id" in stroke:
        if not isinstance(group, str) or not group or len(group) > MAX_ID_CHARS:
            raise InputError(f"{what}: id must be a non-empty string of at most {MAX_ID_CHARS} characters "
                             f"(strokes with the same id are one tracked correction), got {_show(group)}")
    return key, group


def decode_json(text: str, source) -> Any:
    """Parse an override document. Numbers are checked for length before they are converted (a
    refused one stays in the result as a marker that check_strokes reports with its stroke and
    key). Raises InputError naming `source` for anything that is not JSON."""
    try:
        return json.loads(text, parse_int=_parse_int, parse_float=_parse_float, parse_constant=_parse_constant)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise InputError(f"{source}: not valid JSON: nested too deeply") from None
    except (ValueError, TypeError, MemoryError) as exc:  # nothing in the parser should get here
        raise InputError(f"{source}: not valid JSON ({type(exc).__name__})") from None


def check_strokes(data: Any, *, source, width: int, height: int) -> list[_Stroke]:
    """Validate a decoded override document (a list of strokes) for a width x height video:
    every key, number and limit of the module docstring. Raises InputError naming `source`, the
    stroke and what was wrong; the editor refuses with the same message that `bgvid run` stops with."""
    source = str(source)
    if not isinstance(data, list):
        kind = "number" if isinstance(data, _Refused) else type(data).__name__
        raise InputError(f"{source}: expected a JSON list of strokes, got a {kind}")
    if len(data) > MAX_STROKES:
        raise InputError(f"{source}: {len(data)} strokes, over the limit of {MAX_STROKES} strokes in a file")
    strokes = []
    total = 0
    for i, item in enumerate(data):
        stroke = _parse_stroke(item, i, source)
        total += len(item["points"])
        if total > MAX_POINTS:
            raise InputError(f"{source}: stroke [{i}]: the strokes up to here have {total} points, over the limit "
                             f"of {MAX_POINTS} points in a file")
        strokes.append(stroke)
    _check_groups(data, strokes)
    _check_work(strokes, width, height, source)
    _check_keys_per_frame(strokes, source)
    return strokes


def _check_groups(data: list, strokes: Sequence[_Stroke]) -> None:
    """An "id" shared with keyframed strokes on a stroke without a keyframe is ambiguous: refused."""
    tracked = {}
    for s in strokes:
        if s.group is not None:
            tracked.setdefault(s.group, s)
    if not tracked:
        return
    for item, s in zip(data, strokes, strict=True):
        group = item.get("id") if s.key is None else None
        if isinstance(group, str) and group in tracked:
            other = tracked[group].source.rsplit(": ", 1)[-1]
            raise InputError(f"{s.source}: id {_show(group)} is a tracked correction ({other} has a keyframe), "
                             "but this stroke has none: give it its keyframe or another id")


def _check_keys_per_frame(strokes: Sequence[_Stroke], source: str) -> None:
    """Refuse files whose tracked strokes need more than MAX_KEYS_PER_FRAME key frames on one frame."""
    spans: dict[int, list[int]] = {}
    for s in strokes:
        if s.key is not None:
            span = spans.setdefault(s.key, [s.first, s.last])
            span[0], span[1] = min(span[0], s.first), max(span[1], s.last)
    if len(spans) <= MAX_KEYS_PER_FRAME:
        return
    events = sorted([(a, 1) for a, _ in spans.values()] + [(b + 1, -1) for _, b in spans.values()])
    running, at = 0, None
    for frame, step in events:
        running += step
        if running > MAX_KEYS_PER_FRAME:
            at = frame
            break
    if at is None:
        return
    seen: set[int] = set()
    for s in strokes:
        if s.key is not None and spans[s.key][0] <= at <= spans[s.key][1]:
            seen.add(s.key)
            if len(seen) > MAX_KEYS_PER_FRAME:
                raise InputError(f"{s.source}: frame {at} would be tracked from {len(seen)} key frames, over the limit "
                                 f"of {MAX_KEYS_PER_FRAME} on one frame: paint fewer key frames over this range")


def work_budget(width: int, height: int) -> int:
    """The most pixel evaluations the strokes on one frame may cost (see the module docstring)."""
    return WORK_PASSES * max(int(width) * int(height), MIN_WORK_AREA)


def _check_work(strokes: Sequence[_Stroke], width: int, height: int, source: str) -> None:
    """Refuse strokes whose rasterisation on some frame would cost more than work_budget()."""
    if not strokes:
        return
    budget = work_budget(width, height)
    work = [s.work(width, height) for s in strokes]
    # Sweep over range ends: the frame where the active strokes cost the most.
    events = sorted([(s.first, 0, w) for s, w in zip(strokes, work, strict=True)]
                    + [(s.last + 1, -1, -w) for s, w in zip(strokes, work, strict=True)])
    running, worst, at = 0, 0, 0
    for frame, _, w in events:
        running += w
        if running > worst:
            worst, at = running, frame
    if worst <= budget:
        return
    running = 0
    for i, (s, w) in enumerate(zip(strokes, work, strict=True)):  # the stroke that goes over, in list order
        if s.first <= at <= s.last:
            running += w
            if running > budget:
                alone = "" if running == w else f" with the strokes before it on frame {at}"
                area = f"{width}x{height}" if width * height >= MIN_WORK_AREA else "640x480, the least counted"
                raise InputError(
                    f"{source}: stroke [{i}]: rasterising it{alone} would cost {running:.3g} pixel evaluations, over "
                    f"the limit of {budget:.3g} per frame ({WORK_PASSES} passes over {area}): "
                    "use fewer points or a smaller brush")
    raise AssertionError("unreachable: the sweep found a frame over the budget")  # pragma: no cover


def _read_json(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_JSON_BYTES + 1)
    except OSError as exc:
        raise InputError(f"{path}: cannot read override strokes: {exc.strerror or exc}") from None
    if len(raw) > MAX_JSON_BYTES:
        raise InputError(f"{path}: override strokes file is over the limit of {MAX_JSON_BYTES >> 20} MiB")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path}: override strokes are not UTF-8 text") from None


def _load_json(path: Path, width: int, height: int) -> list[_Stroke]:
    return check_strokes(decode_json(_read_json(path), path), source=path, width=width, height=height)


def load_json_document(path, *, width: int, height: int) -> list:
    """An overrides.json as its JSON values (what the editor shows and writes back), checked
    exactly as `bgvid run` checks it: InputError naming the file."""
    path = Path(os.fspath(path))
    data = decode_json(_read_json(path), path)
    check_strokes(data, source=path, width=width, height=height)
    return data


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
    key: Optional[int] = None  # NNNNNN-MMMMMM@KKKKKK.png: painted on frame K, follows the picture

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


def _read_png_header(path: Path, first: int, last: int, width: int, height: int,
                     key: Optional[int] = None) -> _PngLayer:
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
    return _PngLayer(str(path), first, last, depth, color_type, trns, key)


def _display(path) -> str:
    """The path for a one-line message: as it is, or escaped where it holds a newline or another
    control character (a file name can)."""
    text = str(path)
    return text if text.isprintable() else ascii(text)


def _png_entry(path: Path) -> tuple[int, int, Optional[int]]:
    m = _NAME_RE.fullmatch(path.name)
    if not m:
        raise InputError(f"{_display(path)}: not an override file: expected NNNNNN.png, NNNNNN-MMMMMM.png or "
                         f"NNNNNN-MMMMMM@KKKKKK.png (6-digit, 0-based frame indices; @K: the key frame of a layer "
                         f"that follows the picture) or {_JSON_NAME}")
    if any(len(g.lstrip("0")) > _MAX_FRAME_DIGITS for g in m.groups() if g is not None):
        raise InputError(f"{path}: frame index is out of range (at most 2**62)")
    first = int(m.group(1))
    last = int(m.group(2)) if m.group(2) is not None else first
    if last < first:
        raise InputError(f"{path}: reversed frame range {first}-{last} (the end comes before the start)")
    if last > _MAX_FRAME:
        raise InputError(f"{path}: frame index {last} is out of range")
    key = int(m.group(3)) if m.group(3) is not None else None
    if key is not None and not first <= key <= last:
        raise InputError(f"{path}: key frame {key} (after @) is outside the layer's frames {first}-{last}")
    return first, last, key


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------

class _Cache:
    """A small LRU of rendered patches bounded in bytes (always keeps the newest one)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict[Any, Any] = OrderedDict()
        self.bytes = 0
        self.lock = threading.Lock()

    @staticmethod
    def _size(value) -> int:
        if value is None:
            return 0
        if isinstance(value, _Patch):
            return value.nbytes
        return sum(p.nbytes for p in value[2])  # a (y0, x0, planes) piece

    def get(self, key, build: Callable[[], Any]):
        with self.lock:
            if key in self.items:
                self.items.move_to_end(key)
                return self.items[key]
        value = build()
        with self.lock:
            if key not in self.items:
                self.items[key] = value
                self.bytes += self._size(value)
                while self.bytes > self.max_bytes and len(self.items) > 1:
                    _, old = self.items.popitem(last=False)
                    self.bytes -= self._size(old)
        return value


# --------------------------------------------------------------------------------------------------
# Corrections that follow the picture (the motion itself: stages/track.py)
# --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Part:
    """One painted layer of a tracked correction: a keyframed stroke or an NNNNNN-MMMMMM@KKKKKK.png."""

    index: int  # position in the file's layer list (the cache key)
    layer: Any  # _Stroke or _PngLayer, with .key set

    @property
    def key(self) -> int:
        return self.layer.key

    @property
    def first(self) -> int:
        return self.layer.first

    @property
    def last(self) -> int:
        return self.layer.last

    @property
    def reach(self) -> Optional[int]:
        """Restore strokes: how far from what the matte calls subject their carried coverage may reach
        (one brush diameter, in pixels); None for remove strokes and PNG layers."""
        layer = self.layer
        if isinstance(layer, _Stroke) and layer.restore:
            return max(1, int(math.ceil(2.0 * layer.radius)))
        return None


class _Tracked:
    """A correction that follows the picture: one keyframed stroke or PNG layer, or the keyframed strokes
    sharing an id. On frame t it takes the parts whose frames include t; of their key frames, the nearest
    one at or before t and the nearest at or after it. On a key frame, that key's parts exactly as painted;
    between two key frames a linear blend of the two propagations (weight (t - K1) / (K2 - K1) on K2's); on
    one side of all key frames, the nearest key's propagation alone. Blends at the position of its first
    part in the file."""

    def __init__(self, parts: list[_Part]):
        self.parts = parts

    @property
    def source(self) -> str:
        return self.parts[0].layer.source

    @property
    def first(self) -> int:
        return min(p.first for p in self.parts)

    @property
    def last(self) -> int:
        return max(p.last for p in self.parts)

    def keys_for(self, t: int) -> list[tuple[float, int, list[_Part]]]:
        """[(weight, key frame, parts painted on it)] for frame t: one entry, or two whose weights add to 1."""
        here = [p for p in self.parts if p.first <= t <= p.last]
        if not here:
            return []
        keys = sorted({p.key for p in here})
        before = [k for k in keys if k <= t]
        after = [k for k in keys if k >= t]
        lo = before[-1] if before else None
        hi = after[0] if after else None
        if lo is None or hi is None or lo == hi:
            k = lo if lo is not None else hi
            return [(1.0, k, [p for p in here if p.key == k])]
        w = (t - lo) / (hi - lo)
        return [(1.0 - w, lo, [p for p in here if p.key == lo]), (w, hi, [p for p in here if p.key == hi])]


def _group(layers: Sequence[Any]) -> list[Any]:
    """The blending order with keyframed layers gathered into corrections (an id's strokes at the place of
    its first stroke)."""
    out: list[Any] = []
    groups: dict[str, _Tracked] = {}
    for i, layer in enumerate(layers):
        if getattr(layer, "key", None) is None:
            out.append(layer)
            continue
        group = getattr(layer, "group", None)
        if group is not None and group in groups:
            groups[group].parts.append(_Part(i, layer))
            continue
        tracked = _Tracked([_Part(i, layer)])
        out.append(tracked)
        if group is not None:
            groups[group] = tracked
    return out


def _near_subject(alpha, y0: int, x0: int, h: int, w: int, reach: int):
    """The guide of a carried restore stroke: a [h, w] weight 0..1 over the box (y0, x0, h, w), on the
    matte's own device. 1 where the matte calls something subject within `reach` pixels (one brush
    diameter, a square window); 0 where it does not, but does within 4 x reach (the stroke drifted off
    the outline of a subject the model sees nearby); 1 again where the model sees nothing within 4 x reach
    (nothing to guide by: the correction is all there is). "Subject" ramps from alpha 0.25 to 0.75, so a
    small change of the matte makes a small change of the weight."""
    from ..kernels import backend_for

    be = backend_for(alpha)
    xp = be.xp
    far = 4 * reach
    H, W = alpha.shape[-2:]
    gy0, gy1 = max(0, y0 - far), min(H, y0 + h + far)
    gx0, gx1 = max(0, x0 - far), min(W, x0 + w + far)
    region = alpha[gy0:gy1, gx0:gx1]
    box = (slice(y0 - gy0, y0 - gy0 + h), slice(x0 - gx0, x0 - gx0 + w))
    near = xp.clip(be.max_square(region, reach)[box] * 2.0 - 0.5, 0.0, 1.0)
    seen = xp.clip(be.max_square(region, far)[box] * 2.0 - 0.5, 0.0, 1.0)
    return xp.maximum(near, 1.0 - seen).astype(xp.float32)


# --------------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------------

class Overrides:
    """Manual corrections for one video size, loaded and validated up front (see module docstring).
    Keyframed layers need a tracker over the video they follow (track_with(); OverrideStage makes one)."""

    def __init__(self, layers: Sequence[Any], *, width: int, height: int,
                 cache_bytes: int = DEFAULT_CACHE_BYTES):
        self.width, self.height = int(width), int(height)
        self._layers = _group(layers)  # in blending order
        self._first = np.array([layer.first for layer in self._layers], dtype=np.int64)
        self._last = np.array([layer.last for layer in self._layers], dtype=np.int64)
        self._cache = _Cache(cache_bytes)
        self._tracker = None
        self._chains: dict[int, Any] = {}
        self._lock = threading.Lock()

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
                first, last, key = _png_entry(entry)
                if not entry.is_file():
                    raise InputError(f"{entry}: not a file")
                pngs.append(_read_png_header(entry, first, last, width, height, key))
            pngs.sort(key=lambda layer: (layer.first, -layer.last, layer.source))
            if json_path is not None:
                strokes = _load_json(json_path, width, height)
        elif path.is_file():
            if path.suffix.lower() != ".json":
                raise InputError(f"{path}: overrides must be a folder of PNGs or a .json file of strokes")
            strokes = _load_json(path, width, height)
        else:
            raise InputError(f"{path}: override path not found")
        return cls([*pngs, *strokes], width=width, height=height, cache_bytes=cache_bytes)

    def __repr__(self) -> str:
        layers = [p.layer for layer in self._layers for p in (layer.parts if isinstance(layer, _Tracked) else
                                                                  [_Part(0, layer)])]
        n_png = sum(isinstance(layer, _PngLayer) for layer in layers)
        n_tracked = sum(isinstance(layer, _Tracked) for layer in self._layers)
        return (f"Overrides({n_png} PNG layers, {len(layers) - n_png} strokes, {n_tracked} tracked corrections, "
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

    # -- tracking -------------------------------------------------------------------------------
    @property
    def tracked(self) -> bool:
        """True when some layer follows the picture (a keyframed stroke or PNG layer)."""
        return any(isinstance(layer, _Tracked) for layer in self._layers)

    def _tracked_parts(self) -> list[_Part]:
        return [p for layer in self._layers if isinstance(layer, _Tracked) for p in layer.parts]

    def key_frames(self) -> list[tuple[int, str]]:
        """(key frame, source) of every tracked part, in file order."""
        return [(p.key, p.layer.source) for p in self._tracked_parts()]

    def tracking(self, frame_index: int) -> bool:
        """True when a tracked correction applies to this frame (its frames are wanted by the tracker)."""
        f = int(frame_index)
        return any(isinstance(self._layers[i], _Tracked) for i in self._active(f).tolist())

    def track_with(self, tracker) -> "Overrides":
        """Carry keyframed layers along `tracker`'s video (a stages.track.Tracker of this size)."""
        if (tracker.width, tracker.height) != (self.width, self.height):
            raise ValueError(f"tracker is {tracker.width}x{tracker.height}, overrides {self.width}x{self.height}")
        self._tracker = tracker
        self._chains = {}
        return self

    def _key_planes(self, part: _Part):
        """The part as painted on its key frame: (y0, x0, [coverage] or [coverage, target * coverage]) at full
        resolution inside its box, or None where it misses the frame."""
        def build():
            patch = self._patch(("part", part.index), part.layer)
            if patch is None:
                return None
            h, w = patch.shape
            cov = np.ones((h, w), np.float32) if patch.keep is None else np.float32(1.0) - patch.keep
            planes = [np.ascontiguousarray(cov, dtype=np.float32)]
            if isinstance(part.layer, _PngLayer):
                add = patch.add if patch.add is not None else np.zeros((h, w), np.float32)
                planes.append(np.ascontiguousarray(add, dtype=np.float32))
            return patch.y0, patch.x0, planes
        return self._cache.get(("key", part.index), build)

    def _chain(self, key: int):
        with self._lock:
            chain = self._chains.get(key)
            if chain is None:
                boxes = [b for b in (self._key_planes(p) for p in self._tracked_parts() if p.key == key)
                         if b is not None]
                x0 = min((b[1] for b in boxes), default=0)
                y0 = min((b[0] for b in boxes), default=0)
                x1 = max((b[1] + b[2][0].shape[1] for b in boxes), default=1)
                y1 = max((b[0] + b[2][0].shape[0] for b in boxes), default=1)
                chain = self._chains[key] = self._tracker.chain(key, (x0, y0, x1, y1))
            return chain

    def _carried(self, part: _Part, t: int):
        """The part carried from its key frame to frame t: (y0, x0, planes) or None (host arrays)."""
        from .track import MissingFrame, warp_planes

        def build():
            base = self._key_planes(part)
            if base is None:
                return None
            try:
                box = self._chain(part.key).at(t)
            except MissingFrame as exc:
                raise InputError(f"{part.layer.source}: keyframe {part.key}: cannot follow it to frame {t}: "
                                 f"{exc}") from None
            if box is None:
                return None
            return warp_planes(box, self._tracker, base[0], base[1], base[2])
        return self._cache.get(("carried", part.index, int(t)), build)

    def _apply_tracked(self, layer: _Tracked, out, t: int, guide, upload=None) -> None:
        entries = layer.keys_for(t)
        if not entries:
            return
        if self._tracker is None and any(key != t for _, key, _ in entries):
            raise InputError(f"{layer.source}: a keyframed correction needs the video it follows "
                             "(Overrides.track_with a Tracker; bgvid run and edit do this)")
        xp = get_array_module(out)
        move = upload or xp.asarray
        if len(entries) == 1 and entries[0][1] == t:  # on its key frame: exactly as painted
            for part in entries[0][2]:
                patch = self._patch(("part", part.index), part.layer)
                if patch is not None:
                    patch.blend_into(out, upload)
            return
        pieces = []  # (entry, y0, x0, coverage, add-or-None) on the matte's device, the guide applied
        for e, (_, key, parts) in enumerate(entries):
            for part in parts:
                piece = self._key_planes(part) if key == t else self._carried(part, t)
                if piece is None:
                    continue
                y0, x0, planes = piece
                cov = move(planes[0])
                if len(planes) > 1:  # a PNG layer: its own target, carried as painted
                    add = move(planes[1])
                elif part.layer.restore:
                    if key != t and guide is not None and GUIDE:  # the guide: no restore off the outline
                        cov = cov * _near_subject(guide, y0, x0, cov.shape[0], cov.shape[1], part.reach)
                    add = cov
                else:
                    add = None
                pieces.append((e, y0, x0, cov, add))
        if not pieces:
            return
        if len(entries) == 1:  # one key: each piece blends over the result so far, as untracked layers do
            for _, y0, x0, cov, add in pieces:
                region = out[y0:y0 + cov.shape[0], x0:x0 + cov.shape[1]]
                region *= 1.0 - cov
                if add is not None:
                    region += add
            return
        # Two keys: each key's parts composed into one affine map per pixel (out = a * keep + add), the two
        # maps blended by weight over their common box.
        y0 = min(p[1] for p in pieces)
        x0 = min(p[2] for p in pieces)
        y1 = max(p[1] + p[3].shape[0] for p in pieces)
        x1 = max(p[2] + p[3].shape[1] for p in pieces)
        keep_total = xp.zeros((y1 - y0, x1 - x0), xp.float32)
        add_total = xp.zeros((y1 - y0, x1 - x0), xp.float32)
        for e, (weight, _, _) in enumerate(entries):
            keep = xp.ones((y1 - y0, x1 - x0), xp.float32)
            add = xp.zeros((y1 - y0, x1 - x0), xp.float32)
            for pe, py, px, cov, padd in pieces:
                if pe != e:
                    continue
                sl = (slice(py - y0, py - y0 + cov.shape[0]), slice(px - x0, px - x0 + cov.shape[1]))
                keep[sl] *= 1.0 - cov
                add[sl] *= 1.0 - cov
                if padd is not None:
                    add[sl] += padd
            keep_total += xp.float32(weight) * keep
            add_total += xp.float32(weight) * add
        region = out[y0:y1, x0:x1]
        region *= keep_total
        region += add_total

    def correction_boxes(self, frame_index: int) -> list[tuple[list[int], tuple[int, int, int, int]]]:
        """Where each tracked correction lies on this frame: [(its parts' layer indices, (x0, y0, x1, y1))]
        (the editor's page uses it to find the correction under the brush)."""
        t = int(frame_index)
        out = []
        for i in self._active(t).tolist():
            layer = self._layers[i]
            if not isinstance(layer, _Tracked):
                continue
            boxes = []
            for _, key, parts in layer.keys_for(t):
                for part in parts:
                    piece = self._key_planes(part) if key == t else self._carried(part, t)
                    if piece is not None:
                        y0, x0, planes = piece
                        boxes.append((x0, y0, x0 + planes[0].shape[1], y0 + planes[0].shape[0]))
            if boxes:
                out.append(([p.index for p in layer.parts], (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                                              max(b[2] for b in boxes), max(b[3] for b in boxes))))
        return out

    # -- applying ---------------------------------------------------------------------------------
    def _active(self, frame_index: int) -> np.ndarray:
        f = int(frame_index)
        return np.flatnonzero((self._first <= f) & (self._last >= f))

    def _patch(self, key, layer) -> Optional[_Patch]:
        return self._cache.get(key, lambda: layer.render(self.width, self.height))

    def _check(self, shape) -> None:
        if tuple(shape) != (self.height, self.width):
            raise ValueError(f"matte is {shape[-1]}x{shape[-2]} but the overrides were loaded for "
                             f"{self.width}x{self.height}")

    def _apply_into(self, out, active: np.ndarray, upload=None, frame_index: int = 0, guide=None) -> None:
        for i in active.tolist():
            layer = self._layers[i]
            if isinstance(layer, _Tracked):
                self._apply_tracked(layer, out, int(frame_index), guide, upload)
                continue
            patch = self._patch(i, layer)
            if patch is not None:
                patch.blend_into(out, upload)

    def apply(self, alpha, frame_index: int):
        """alpha [H, W] float 0..1 (NumPy or CuPy) -> corrected float32 copy; the same object when
        no layer names this frame."""
        active = self._active(frame_index)
        if active.size == 0:
            return alpha
        self._check(alpha.shape)
        xp = get_array_module(alpha)
        out = alpha.astype(xp.float32, copy=True)
        self._apply_into(out, active, frame_index=frame_index, guide=alpha)
        return out


class OverrideStage(StageBase):
    """Pipeline stage: applies the overrides to batch.alpha ([N, H, W] at frame size) by
    batch.frame_index. The batch's alpha is replaced by a corrected copy, never written in place
    (an upstream stage may still hold the array, e.g. as temporal state). On a device the painted
    patches are rasterised on the host and cross up (a side channel of the painted boxes only).

    source: the input video, for keyframed layers: the tracker decodes from it the frames it is not
    handed (a span before a key frame, the frames between a key frame and a chunk's start, every frame
    on a device, where the batch's frames stay on the GPU) and is closed with the stage."""

    name = "overrides"

    def __init__(self, overrides: Overrides, *, source=None, tracker=None):
        self.overrides = overrides
        self.tracker = tracker
        self._own_tracker = False
        if overrides.tracked and tracker is None:
            if source is None:
                raise InputError(f"{overrides.key_frames()[0][1]}: a keyframed correction needs the video it "
                                 "follows (build_chain(..., source=INPUT))")
            from .track import Tracker

            self.tracker = Tracker.for_video(source, width=overrides.width, height=overrides.height)
            self._own_tracker = True
        if self.tracker is not None:
            count = self.tracker.count
            for key, where in overrides.key_frames():
                if count is not None and key >= count:
                    self.close()
                    raise InputError(f"{where}: keyframe {key} is past the end of the video ({count} frames, "
                                     f"0-{count - 1})")
            overrides.track_with(self.tracker)

    def close(self) -> None:
        if self._own_tracker and self.tracker is not None:
            self.tracker.close()

    def push(self, batch: Optional[FrameBatch]) -> list[FrameBatch]:
        if batch is None:
            return []
        if batch.alpha is None:
            raise ValueError("OverrideStage needs batch.alpha (place it after segmentation)")
        frames = np.asarray(batch.frame_index).tolist()
        active = [self.overrides._active(f) for f in frames]
        if not any(a.size for a in active):
            return [batch]
        self.overrides._check(batch.alpha.shape[1:])
        if self.tracker is not None and get_array_module(batch.rgb) is np:
            for i, f in enumerate(frames):  # frames decoded anyway: the tracker need not decode them again
                if self.overrides.tracking(f):
                    self.tracker.offer(f, batch.rgb[i])
        xp = get_array_module(batch.alpha)
        out = batch.alpha.astype(xp.float32, copy=True)
        upload = None
        if self.on_device(batch.alpha) and self.device is not None:
            def upload(host):
                return self.device.upload(np.ascontiguousarray(host, np.float32), side=True)
        for i, (f, a) in enumerate(zip(frames, active, strict=True)):
            if a.size:
                self.overrides._apply_into(out[i], a, upload, f, batch.alpha[i])
        batch.alpha = out
        return [batch]
