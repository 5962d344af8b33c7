"""Corrections that follow the picture: the motion a keyframed override layer is carried along.

A stroke with `"keyframe": K` (or a PNG layer named `A-B@K.png`) is painted in frame K's coordinates.
On every other frame t of its range the painted coverage is carried along the picture's own motion:

    flow      Dense optical flow (OpenCV DIS, MEDIUM preset at finest scale 0, i.e. at the grey frames'
              own size) between every pair of neighbouring frames, both directions, on grey frames with
              TRACK_LONG_SIDE (384 px) on the long side, computed once per pair and shared by every
              correction that passes through it. (The smoother's flow is another one: backward only, at
              256 px, and only when smoothing is on.)
    map       M_t: for each pixel of frame t (at tracking resolution), where it was on frame K. Chained
              one frame at a time from K, forwards (t > K) and backwards (t < K):
                  M_n = M_s(x + b(x))        b = flow from n back to s = n -+ 1, bilinear
              The coverage is warped, not the points: the key frame's coverage, rasterised once at full
              resolution, is sampled through M_t (upsampled to full resolution) once per frame, so a
              soft edge stays as painted and is never resampled twice. Carried coverage under FAINT
              (0.05) is dropped: the trace a moving edge leaves in a bilinear map.
    check     A confidence C_t (1 on the key frame) travels with the map and is multiplied, at every
              step, by two checks; the coverage is multiplied by C_t, so a correction fades out where its
              ground is covered or its flow cannot be trusted, rather than landing on whatever moved
              in front of it:
              - forward-backward consistency (Sundaram et al., ECCV 2010): a pixel whose step back and
                forth does not return to itself, |b + f(x + b)|^2 > FB_RELATIVE (|b|^2 + |f|^2) +
                FB_ABSOLUTE, is occluded or its flow is unreliable;
              - disocclusion: where the backward flow compresses (divergence < -DIVERGENCE_LIMIT), many
                pixels of frame n crowd onto one spot of frame s: what n shows there was hidden on s.
                DIS's smooth flow passes the first check at a moving edge; this one catches the
                background a moving subject uncovers (tests/test_track.py's square after 20 frames:
                47 -> 24 background pixels over 0.1 behind it; 591 -> 50 with a square as dark as its
                background).
    guide     (overrides.py, where the matte is at hand) a restore stroke carried to another frame keeps
              only the pixels within one brush diameter of what the matte entering the overrides calls
              subject, where the model sees a subject nearby at all: a restore that drifts off the
              subject's outline does not paint background.

Measured on DAVIS dance-jump and swing (benchmarks/track_davis.py, README "Override files"; exploratory
runs of the same user, 2-core CPU): how much of frame 0's gain is left on frame 1 was highest for DIS
MEDIUM at finest scale 0 (at 384 and 512 px alike; FAST, or MEDIUM at its default finest scale 1, kept
less); without the checks the carried strokes cost IoU from about frame 5 on, with them they fade out.
MEDIUM at 512 px cost 67 ms per frame pair (both directions) against 37 at 384 px for the same IoU.

Frames come from a GreySource: the frames a run decodes anyway are offered to it (CPU runs), and what
it lacks (a span before the key frame, the frames from K to a --frames chunk's start, every frame on a
GPU run) it decodes itself from the input with its own reader. So a chunk tracks from the key frame
wherever it starts and gives the same maps as a full run (the flow depends on the two grey frames only).
Everything here is host (NumPy/OpenCV) work on small grey frames; on a GPU run only the warped coverage
boxes cross, up (overrides.py).

Memory: the flow pairs (DEFAULT_FLOW_BYTES), the map boxes per key frame (DEFAULT_MAP_BYTES) and
GREY_FRAMES grey frames are bounded; a span walked in one go holds at most KeyChain.WALK grey frames.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np

from ..kernels import pixel_grid

__all__ = ["FlowPairs", "GreySource", "KeyChain", "Tracker", "reader_fetch", "track_size"]

TRACK_LONG_SIDE = 384
FB_RELATIVE = 0.01
FB_ABSOLUTE = 0.5  # squared tracking pixels
FAINT = 0.05  # carried coverage under this is dropped (the trace of a moving edge in the bilinear map)
CHECK = True  # the consistency checks (benchmarks/track_davis.py turns them off to measure them)
DIVERGENCE_LIMIT: Optional[float] = 0.3  # a backward flow compressing faster than this marks a disocclusion
DEFAULT_FLOW_BYTES = 64 << 20  # flow pairs kept (1.3 MB each at 384x216)
DEFAULT_MAP_BYTES = 64 << 20  # per-frame map boxes kept per key frame
GREY_FRAMES = 64  # small grey frames kept (83 KB each at 384x216)
_SEEK_AHEAD = 48  # a request this far ahead of the running decoder continues it instead of seeking


def track_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the grey frames the flow runs on: TRACK_LONG_SIDE on the long side, never upscaled."""
    scale = min(1.0, TRACK_LONG_SIDE / max(height, width))
    return max(8, round(height * scale)), max(8, round(width * scale))


def grey_small(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """[H, W, 3] uint8/uint16 host frame -> [h, w] uint8 grey at `size` (OpenCV's RGB2GRAY, area resize)."""
    import cv2

    if rgb.dtype == np.uint16:
        rgb = (rgb >> 8).astype(np.uint8)
    grey = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    if grey.shape != tuple(size):
        grey = cv2.resize(grey, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    return grey


class MissingFrame(Exception):
    """The input has no frame `index` (the layer that asked turns it into an InputError naming itself)."""

    def __init__(self, index: int, count: Optional[int]):
        super().__init__(f"frame {index} is past the end of the video"
                         + (f" ({count} frames, 0-{count - 1})" if count else ""))
        self.index, self.count = index, count


Fetch = Callable[[int, int], Iterator[tuple[int, np.ndarray]]]


def reader_fetch(src) -> tuple[Fetch, Callable[[], None], Optional[int]]:
    """(fetch, close, frame count) over the input file: fetch(lo, hi) yields (index, rgb) for lo..hi in
    order, continuing its running decoder when lo lies just ahead of it, else opening a reader that seeks
    (io.reader.VideoReader: the same frames as a run's own reader, tested in tests/test_seek.py)."""
    from ..io.reader import VideoReader, probe

    count = probe(src).frame_count
    state: dict = {"reader": None, "iter": None, "next": None, "pending": []}

    def close() -> None:
        if state["reader"] is not None:
            state["reader"].close()
        state.update(reader=None, iter=None, next=None, pending=[])

    def frames_from(start: int) -> Iterator[tuple[int, np.ndarray]]:
        reader = VideoReader(src, frames=(start, None), batch_size=4)
        state.update(reader=reader, next=start, pending=[])
        for batch in reader:
            for i, index in enumerate(batch.frame_index.tolist()):
                yield int(index), batch.rgb[i]

    def fetch(lo: int, hi: int) -> Iterator[tuple[int, np.ndarray]]:
        if count is not None and hi >= count:
            raise MissingFrame(hi, count)
        if state["iter"] is None or not (state["next"] <= lo <= state["next"] + _SEEK_AHEAD):
            close()
            if count is not None and lo >= count:
                raise MissingFrame(lo, count)
            state["iter"] = frames_from(lo)
        for index, rgb in state["iter"]:
            state["next"] = index + 1
            if index > hi:  # cannot happen in order; kept for safety
                break
            if index >= lo:
                yield index, rgb
            if index >= hi:
                return
        close()
        raise MissingFrame(hi, count)

    return fetch, close, count


class GreySource:
    """Small grey frames by input frame index. `offer()` takes frames the caller decoded anyway; what is
    missing is fetched (decoded) in order. The last GREY_FRAMES are kept. Thread-safe."""

    def __init__(self, fetch: Fetch, size: tuple[int, int], *, close: Optional[Callable[[], None]] = None,
                 count: Optional[int] = None, keep: int = GREY_FRAMES):
        self.size = tuple(size)
        self.count = count
        self._fetch, self._close = fetch, close
        self._keep = keep
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._lock = threading.RLock()
        self.decoded = 0  # frames this source decoded itself (a second decode; the benchmark reports it)

    def _put(self, index: int, grey: np.ndarray) -> None:
        self._cache[index] = grey
        self._cache.move_to_end(index)
        while len(self._cache) > self._keep:
            self._cache.popitem(last=False)

    def offer(self, index: int, rgb: np.ndarray) -> None:
        with self._lock:
            if int(index) not in self._cache:
                self._put(int(index), grey_small(rgb, self.size))

    def greys(self, lo: int, hi: int) -> list[np.ndarray]:
        """Grey frames lo..hi (inclusive), in order. Raises MissingFrame past the end of the input."""
        with self._lock:
            out: dict[int, np.ndarray] = {i: self._cache[i] for i in range(lo, hi + 1) if i in self._cache}
            missing = [i for i in range(lo, hi + 1) if i not in out]
            if missing:
                first, last = missing[0], missing[-1]
                for index, rgb in self._fetch(first, last):
                    grey = out[index] = grey_small(rgb, self.size)
                    self.decoded += 1
                    if hi - lo < self._keep:
                        self._put(index, grey)
            for i in range(lo, hi + 1):
                if i in self._cache:
                    self._cache.move_to_end(i)
            return [out[i] for i in range(lo, hi + 1)]

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
            if self._close is not None:
                self._close()


class ByteLRU:
    """A least-recently-used cache bounded in bytes (the newest item is kept even when it alone is over)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.items: OrderedDict = OrderedDict()
        self.bytes = 0

    def get(self, key):
        """The value kept under key, or None."""
        item = self.items.get(key)
        if item is None:
            return None
        self.items.move_to_end(key)
        return item[0]

    def put(self, key, value, nbytes: int | None = None) -> None:
        """nbytes: what value holds (default: value.nbytes, an array's)."""
        nbytes = value.nbytes if nbytes is None else int(nbytes)
        old = self.items.pop(key, None)
        if old is not None:
            self.bytes -= old[1]
        self.items[key] = (value, nbytes)
        self.bytes += nbytes
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, (_, dropped) = self.items.popitem(last=False)
            self.bytes -= dropped


class FlowPairs:
    """Both dense flows between frames t and t+1 (tracking resolution), each pair computed once and kept
    in an LRU bounded in bytes: every correction that passes through the pair shares it."""

    def __init__(self, greys: GreySource, *, max_bytes: int = DEFAULT_FLOW_BYTES):
        self.greys = greys
        self._cache = ByteLRU(max_bytes)
        self._lock = threading.Lock()
        self._dis = None
        self.computed = 0  # pairs computed, and the seconds they took (benchmarks report them)
        self.seconds = 0.0

    def pair(self, t: int, greys: Optional[tuple[np.ndarray, np.ndarray]] = None) -> tuple[np.ndarray, np.ndarray]:
        """(forward: t -> t+1, backward: t+1 -> t), each [h, w, 2] float32 displacements (dx, dy): where
        each pixel of the first frame is on the second. `greys`: frames t and t+1 when the caller has them."""
        with self._lock:
            hit = self._cache.get(t)
            if hit is not None:
                return hit
            import cv2

            a, b = greys if greys is not None else self.greys.greys(t, t + 1)
            if self._dis is None:
                self._dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
                self._dis.setFinestScale(0)  # the flow at the grey frames' own size, not half of it
            started = time.perf_counter()
            forward = self._dis.calc(a, b, None)
            backward = self._dis.calc(b, a, None)
            self.seconds += time.perf_counter() - started
            self.computed += 1
            self._cache.put(t, (forward, backward), forward.nbytes + backward.nbytes)
            return forward, backward


@dataclass(frozen=True)
class MapBox:
    """The chained map of one frame, cropped to where a key frame's region lands: for each tracking pixel
    (y0 + j, x0 + i) its position on the key frame (m, tracking pixel units) and the confidence c."""

    y0: int
    x0: int
    m: np.ndarray  # [h, w, 2] float32
    c: np.ndarray  # [h, w] float32 0..1

    @property
    def nbytes(self) -> int:
        return self.m.nbytes + self.c.nbytes


_NOTHING = MapBox(0, 0, np.zeros((0, 0, 2), np.float32), np.zeros((0, 0), np.float32))  # nothing lands


class KeyChain:
    """The map from key frame `key` to other frames, walked one frame at a time from the key (forwards and
    backwards), each frame's map kept cropped to `region` (the key frame's painted boxes, full-resolution
    (x0, y0, x1, y1)) in an LRU bounded in bytes. Frames asked in order (a run) cost one step each; the
    editor's random access walks from the nearest frame already reached on the same side."""

    WALK = 32  # frames fetched at once when walking (bounds the grey frames held)

    def __init__(self, tracker: "Tracker", key: int, region: tuple[int, int, int, int], *,
                 max_bytes: int = DEFAULT_MAP_BYTES):
        self.tracker, self.key = tracker, int(key)
        h, w = tracker.size
        sx, sy = w / tracker.width, h / tracker.height
        x0, y0, x1, y1 = region
        # The region in tracking pixels (pixel centres), grown by one tracking pixel.
        self._region = ((x0 + 0.5) * sx - 0.5 - 1.0, (y0 + 0.5) * sy - 0.5 - 1.0,
                        (x1 - 0.5) * sx - 0.5 + 1.0, (y1 - 0.5) * sy - 0.5 + 1.0)
        self._boxes = ByteLRU(max_bytes)
        self._heads: dict[int, tuple[int, np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def at(self, t: int) -> Optional[MapBox]:
        """The map box of frame t (t != key), or None where nothing of the region lands on it.
        Raises MissingFrame when a frame between the key and t is past the end of the input."""
        t = int(t)
        if t == self.key:
            raise ValueError("the key frame needs no map")
        with self._lock:
            box = self._boxes.get(t)
            if box is None:
                self._walk(t)
                box = self._boxes.get(t)
            return None if box is _NOTHING else box

    def _walk(self, t: int) -> None:
        d = 1 if t > self.key else -1
        head = self._heads.get(d)
        if head is None or (head[0] - t) * d > 0:
            h, w = self.tracker.size
            head = (self.key, pixel_grid(h, w).copy(), np.ones((h, w), np.float32))
        s, m, c = head
        while s != t:
            stop = s + d * min(self.WALK, abs(t - s))
            lo, hi = min(s, stop), max(s, stop)
            greys = self.tracker.greys.greys(lo, hi)
            for n in range(s + d, stop + d, d):
                p = min(n, n - d)
                pair = self.tracker.flows.pair(p, (greys[p - lo], greys[p + 1 - lo]))
                m, c = _step(m, c, pair, d)
                self._store(n, m, c)
            s = stop
            self._heads[d] = (s, m, c)

    def _store(self, n: int, m: np.ndarray, c: np.ndarray) -> None:
        x0, y0, x1, y1 = self._region
        lands = (c > 0) & (m[..., 0] >= x0) & (m[..., 0] <= x1) & (m[..., 1] >= y0) & (m[..., 1] <= y1)
        rows, cols = np.flatnonzero(lands.any(axis=1)), np.flatnonzero(lands.any(axis=0))
        if rows.size == 0:
            self._boxes.put(n, _NOTHING, 0)
            return
        h, w = c.shape
        r0, r1 = max(0, int(rows[0]) - 2), min(h, int(rows[-1]) + 3)
        c0, c1 = max(0, int(cols[0]) - 2), min(w, int(cols[-1]) + 3)
        box = MapBox(r0, c0, m[r0:r1, c0:c1].copy(), c[r0:r1, c0:c1].copy())
        self._boxes.put(n, box, box.nbytes)


def _step(m: np.ndarray, c: np.ndarray, pair: tuple[np.ndarray, np.ndarray], d: int):
    """One frame along the chain: (m, c) on frame s -> on frame n = s + d, with the consistency check."""
    import cv2

    forward, backward = pair  # p -> p+1 and p+1 -> p, p = min(s, n)
    back, there = (backward, forward) if d > 0 else (forward, backward)  # n -> s, s -> n
    h, w = c.shape
    where = np.add(pixel_grid(h, w), back)
    m = cv2.remap(m, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    c = cv2.remap(c, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    returned = cv2.remap(there, where, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    err = np.add(back, returned)
    err = err[..., 0] * err[..., 0] + err[..., 1] * err[..., 1]
    size = back[..., 0] ** 2 + back[..., 1] ** 2 + returned[..., 0] ** 2 + returned[..., 1] ** 2
    if CHECK:
        ok = err <= np.float32(FB_RELATIVE) * size + np.float32(FB_ABSOLUTE)
        if DIVERGENCE_LIMIT is not None:
            # Disocclusion: where the map folds (pixels of frame n crowd onto one spot of frame s), what
            # frame n shows was hidden on frame s; DIS's smooth flow hides that from the check above.
            div = (cv2.Sobel(back[..., 0], cv2.CV_32F, 1, 0, ksize=1)
                   + cv2.Sobel(back[..., 1], cv2.CV_32F, 0, 1, ksize=1))
            ok &= div >= np.float32(-2.0 * DIVERGENCE_LIMIT)  # Sobel ksize=1: twice the central difference
        c *= ok
    return m, c


def warp_planes(box: MapBox, tracker: "Tracker", y0: int, x0: int,
                planes: list[np.ndarray]) -> Optional[tuple[int, int, list[np.ndarray]]]:
    """Key-frame planes (full resolution, their box at (y0, x0)) carried to the frame of `box`, multiplied
    by its confidence: (y0, x0, planes) cropped to where the first plane (the coverage) is non-zero,
    or None."""
    import cv2

    W, H = tracker.width, tracker.height
    h, w = tracker.size
    fx, fy = W / w, H / h
    # Only the part of the map box that lands on these planes' box (tracking pixels, grown by one).
    ph, pw = planes[0].shape
    lx0, ly0 = (x0 + 0.5) / fx - 0.5 - 1.0, (y0 + 0.5) / fy - 0.5 - 1.0
    lx1, ly1 = (x0 + pw - 0.5) / fx - 0.5 + 1.0, (y0 + ph - 0.5) / fy - 0.5 + 1.0
    m = box.m
    lands = (box.c > 0) & (m[..., 0] >= lx0) & (m[..., 0] <= lx1) & (m[..., 1] >= ly0) & (m[..., 1] <= ly1)
    rows, cols = np.flatnonzero(lands.any(axis=1)), np.flatnonzero(lands.any(axis=0))
    if rows.size == 0:
        return None
    r0, r1 = max(0, int(rows[0]) - 2), min(box.c.shape[0], int(rows[-1]) + 3)
    c0, c1 = max(0, int(cols[0]) - 2), min(box.c.shape[1], int(cols[-1]) + 3)
    box = MapBox(box.y0 + r0, box.x0 + c0, box.m[r0:r1, c0:c1], box.c[r0:r1, c0:c1])
    bh, bw = box.c.shape

    def span(b0: int, b1: int, n: int, full: int, f: float) -> tuple[int, int]:
        lo = 0 if b0 == 0 else max(0, math.ceil((b0 + 0.5) * f - 0.5))
        hi = full if b1 == n else min(full, math.floor((b1 - 0.5) * f - 0.5) + 1)
        return lo, hi

    X0, X1 = span(box.x0, box.x0 + bw, w, W, fx)
    Y0, Y1 = span(box.y0, box.y0 + bh, h, H, fy)
    if X0 >= X1 or Y0 >= Y1:
        return None
    u = ((np.arange(X0, X1, dtype=np.float64) + 0.5) / fx - 0.5 - box.x0).astype(np.float32)
    v = ((np.arange(Y0, Y1, dtype=np.float64) + 0.5) / fy - 0.5 - box.y0).astype(np.float32)
    uu, vv = np.broadcast_to(u[None, :], (Y1 - Y0, X1 - X0)), np.broadcast_to(v[:, None], (Y1 - Y0, X1 - X0))
    uu, vv = np.ascontiguousarray(uu), np.ascontiguousarray(vv)
    mx = cv2.remap(np.ascontiguousarray(box.m[..., 0]), uu, vv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    my = cv2.remap(np.ascontiguousarray(box.m[..., 1]), uu, vv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    conf = cv2.remap(box.c, uu, vv, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # tracking pixel units on the key frame -> full-resolution pixel units in the planes' box
    kx = (mx + np.float32(0.5)) * np.float32(fx) - np.float32(0.5 + x0)
    ky = (my + np.float32(0.5)) * np.float32(fy) - np.float32(0.5 + y0)
    out = [cv2.remap(p, kx, ky, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0) * conf
           for p in planes]
    cov = out[0]
    faint = cov < np.float32(FAINT)  # traces the bilinear map leaves behind a moving edge: dropped
    for p in out:
        p[faint] = 0.0
    rows, cols = np.flatnonzero((cov > 0).any(axis=1)), np.flatnonzero((cov > 0).any(axis=0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    return Y0 + r0, X0 + c0, [np.ascontiguousarray(p[r0:r1, c0:c1]) for p in out]


class Tracker:
    """One video's tracking: its grey frames, the flow pairs between them, and a chain per key frame."""

    def __init__(self, greys: GreySource, *, width: int, height: int, flow_bytes: int = DEFAULT_FLOW_BYTES):
        self.greys = greys
        self.width, self.height = int(width), int(height)
        self.size = greys.size
        self.count = greys.count
        self.flows = FlowPairs(greys, max_bytes=flow_bytes)

    @classmethod
    def for_video(cls, src, *, width: int, height: int) -> "Tracker":
        """A tracker over the input file `src` (decodes what it is not offered with its own reader)."""
        size = track_size(height, width)
        fetch, close, count = reader_fetch(src)
        return cls(GreySource(fetch, size, close=close, count=count), width=width, height=height)

    def chain(self, key: int, region: tuple[int, int, int, int], **kw) -> KeyChain:
        return KeyChain(self, key, region, **kw)

    def offer(self, index: int, rgb: np.ndarray) -> None:
        self.greys.offer(index, rgb)

    def close(self) -> None:
        self.greys.close()
