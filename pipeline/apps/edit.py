"""`bgvid edit`: the correction brush in the browser, for video.

A small local web server (stdlib `http.server`) serves one page (pipeline/apps/static/) on which a person
scrubs through the video, sees the model's matte as an overlay or a cut-out, and paints `restore` /
`remove` strokes over ranges of frames. Strokes are vectors in the `overrides.json` format of
`bgvid.stages.overrides`, so `bgvid run --overrides PATH` renders exactly what was painted.

What runs where
    * Frames: decoded on demand with PyAV (FrameSource): the demuxer's packet timestamps give the
      index -> pts table once (no decoding), a request seeks to the keyframe at or before the first
      frame it needs and decodes forward; a request just ahead of the last one continues decoding
      without seeking. Frames are identified by their pts, so the index is the one `bgvid run` uses
      (0-based, presentation order). Decoded frames sit in a small LRU bounded in bytes.
    * Mattes (MatteSource): the same Segmenter, temporal smoothing (with the same pre-roll as a
      `--frames` chunk) and upsampling as `bgvid run`; then PNG override layers of an overrides
      folder. JSON strokes are applied in the page (pipeline/apps/static/edit.js reproduces
      `_overrides.rasterize_stroke` exactly; tests/test_edit.py checks both agree) so painting is
      immediate; saving validates the strokes with `_overrides.Overrides.load` before the rename.
    * Strokes that follow the picture ("keyframe"): on a frame where a stroke is carried from its key
      frame, the page posts its strokes to api/preview/N and shows the matte the server renders with
      `bgvid run`'s own Overrides and tracker (stages/track.py, over this editor's decoded frames; flow
      pairs are kept across requests, the Overrides of the last few distinct stroke lists too, so
      scrubbing continues their tracks). The reply's X-Bgvid-Corrections header says where each
      tracked correction lies on the frame, for Shift+paint (a new key frame of the one under it).
    * Server (EditorServer): bound to 127.0.0.1 only; every URL starts with a random token
      (secrets.token_urlsafe), compared in constant time; the Host header must name the loopback
      address and port (DNS rebinding); writes need the token, JSON content and a same-origin (or
      absent) Origin. Routes are a fixed table: no part of a request path is ever joined onto the
      filesystem. Only INPUT is read and only the overrides file is written, atomically (temporary
      file in the same folder, fsync, rename).
"""

from __future__ import annotations

import bisect
import hmac
import http.server
import io
import json
import os
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable, Optional
from urllib.parse import urlsplit

import av
import numpy as np

from ..errors import BgvidError, InputError
from ..stages.track import ByteLRU

__all__ = ["EditorServer", "FrameError", "FrameSource", "MatteSource", "StrokeFile", "default_overrides_path"]

Report = Callable[[str], None]
MAX_BODY = 32 << 20  # a save request larger than this is refused (413): the limit of an overrides.json
# Server limits: a connection that sends nothing for IDLE_SECONDS, or has not sent its whole request
# (headers and body) after REQUEST_SECONDS, is dropped; at most MAX_CONNECTIONS are served at once
# (more are answered 503 at once, without a thread).
IDLE_SECONDS = 10.0
REQUEST_SECONDS = 60.0
MAX_CONNECTIONS = 32
_STATIC = {"": ("index.html", "text/html; charset=utf-8"),
           "edit.js": ("edit.js", "text/javascript; charset=utf-8"),
           "edit.css": ("edit.css", "text/css; charset=utf-8")}
_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


def run_default(option: str):
    """The default of a `bgvid run` option (its library function's), so the editor's matte follows
    `bgvid run` when nothing is given."""
    import inspect

    from .run import remove_background

    return inspect.signature(remove_background).parameters[option].default


class FrameError(BgvidError):
    """One frame could not be decoded (the page shows the message; other frames still work)."""

    def __init__(self, message: str, index: Optional[int] = None):
        super().__init__(message)
        self.index = index


# --------------------------------------------------------------------------------------------------
# Frames: decode on demand
# --------------------------------------------------------------------------------------------------

class FrameSource:
    """Frames of INPUT by 0-based index (presentation order, as `bgvid run` counts them), decoded on
    demand: rgb(n) -> [H, W, 3] uint8 (uint16 for deep inputs), rotated to the displayed frame.

    Raises FrameError for a frame the decoder cannot produce, InputError (from probe) for an input
    that is not a video at all. Thread-safe (one lock around the decoder)."""

    def __init__(self, path, *, cache_bytes: int = 192 << 20):
        from ..io.reader import is_pattern, list_sequence, probe

        self.info = probe(path)
        self.path = self.info.path
        self._lock = threading.RLock()
        self._cache = ByteLRU(cache_bytes)
        self._failed: dict[int, str] = {}
        self._files: Optional[list[Path]] = None
        self._container = None
        self._gen = None  # the running decode generator
        self._gen_last = -1  # index of the last frame it yielded
        if self.info.is_image:
            self.count = 1
            self._pts: list[int] = []
        elif os.path.isdir(self.path) or is_pattern(self.path):
            self._files = list_sequence(self.path)
            self.count = len(self._files)
            self._pts = []
        else:
            self._open_index()

    def _open_index(self) -> None:
        from ..io.reader import _open_container

        self._container = _open_container(self.path)
        streams = [s for s in self._container.streams.video
                   if not (s.disposition & av.stream.Disposition.attached_pic)]
        self._stream = streams[0]
        self._stream.codec_context.thread_type = "AUTO"
        pts, keys = [], []
        try:
            for packet in self._container.demux(self._stream):
                if packet.size == 0 or packet.is_discard:
                    continue
                if packet.pts is None:
                    pts = None  # no timestamps: decode in order from the start (slow but exact)
                    break
                pts.append(int(packet.pts))
                if packet.is_keyframe:
                    keys.append(int(packet.pts))
        except av.FFmpegError:
            pass  # a damaged tail: frames up to here are indexed; later ones report errors
        if pts is None:
            self._pts, self._keys = [], []
            self.count = self.info.frame_count or 0
            self._sequential = True
        else:
            self._pts = sorted(pts)
            self._keys = sorted(keys) or self._pts[:1]
            self.count = len(self._pts)
            self._sequential = False

    # ------------------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            self._gen = None
            if self._container is not None:
                self._container.close()
                self._container = None

    def rgb(self, n: int) -> np.ndarray:
        return self.frames(n, n)[0]

    def frames(self, first: int, last: int) -> list[np.ndarray]:
        """Frames first..last (inclusive), each [H, W, 3]."""
        if not (0 <= first <= last < self.count):
            raise FrameError(f"frame {last if last >= self.count else first} is outside the video "
                             f"(frames 0-{self.count - 1})")
        with self._lock:
            missing = [i for i in range(first, last + 1) if self._cache.get(i) is None]
            if missing:
                self._decode(missing[0], last)
            out = []
            for i in range(first, last + 1):
                frame = self._cache.get(i)
                if frame is None:
                    why = self._failed.get(i, "the decoder returned no picture for it")
                    raise FrameError(f"frame {i} of {Path(self.path).name} cannot be decoded: {why}", i)
                out.append(frame)
            return out

    def _convert(self, frame: av.VideoFrame) -> np.ndarray:
        from ..io.reader import _frame_color, _rotate, _to_rgb

        info = self.info
        coded = (info.height, info.width) if info.rotation in (90, -90) else (info.width, info.height)
        color = _frame_color(frame) if info.is_image or self._files is not None else info.color
        try:
            rgb = _to_rgb(frame, deep=info.bit_depth > 8, color=color, size=coded)
        except av.FFmpegError as exc:
            raise FrameError(f"frame cannot be converted: {exc}") from None
        return np.ascontiguousarray(_rotate(rgb, info.rotation))

    def _decode(self, first: int, last: int) -> None:
        from ..io.reader import _decode_image

        if self._files is not None or self.info.is_image:
            for i in range(first, last + 1):
                try:
                    frame = _decode_image(self._files[i]) if self._files is not None else _decode_image(Path(self.path))
                    self._cache.put(i, self._convert(frame))
                except (BgvidError, av.FFmpegError) as exc:
                    self._failed[i] = str(exc)
            return
        # Continue the running decoder when the frames asked for lie just ahead of it; else seek.
        fresh = self._gen is None or not (self._gen_last < first <= self._gen_last + 48)
        for attempt in range(2):
            if fresh:
                # The second attempt decodes from the very start: a demuxer that seeked past the
                # keyframe asked for must not make frames look undecodable.
                self._gen = self._decode_from(first if attempt == 0 else 0)
                self._gen_last = -1
            for index, frame in self._gen:
                if fresh and self._gen_last < 0 and index > first and attempt == 0:
                    break  # landed after the frame wanted: retry from the start
                self._gen_last = index
                if first <= index <= last:
                    try:
                        self._cache.put(index, self._convert(frame))
                    except FrameError as exc:
                        self._failed[index] = str(exc)
                if index >= last:
                    return
            else:
                self._gen = None  # the stream ended
                return
            fresh = True

    def _decode_from(self, first: int):
        """Yield (index, av.VideoFrame) from the keyframe at or before frame `first` onwards."""
        ctx = self._stream.codec_context
        if self._sequential:
            start_pts = None
            self._container.seek(0, stream=self._stream)
        else:
            k = bisect.bisect_right(self._keys, self._pts[first]) - 1
            start_pts = self._keys[max(k, 0)]
            self._container.seek(start_pts, stream=self._stream, backward=True, any_frame=False)
        ctx.flush_buffers()
        trusted_from = None  # frames before the first keyframe decoded (open GOP) are not trusted
        counter = 0
        packets = self._container.demux(self._stream)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return
            except av.FFmpegError as exc:
                self._fail_after(self._gen_last, f"unreadable data ({exc})")
                return
            if trusted_from is None and packet.is_keyframe and packet.pts is not None:
                trusted_from = packet.pts
            try:
                decoded = ctx.decode(packet if packet.size else None)
            except av.EOFError:
                decoded = []
            except av.FFmpegError as exc:
                index = self._index_of(packet.pts)
                if index is not None:
                    self._failed[index] = f"corrupt data ({getattr(exc, 'strerror', None) or exc})"
                continue
            for frame in decoded:
                if self._sequential:
                    index, counter = counter, counter + 1
                else:
                    if frame.pts is None or trusted_from is None or frame.pts < trusted_from:
                        continue
                    index = self._index_of(frame.pts)
                    if index is None:
                        continue
                yield index, frame

    def _index_of(self, pts) -> Optional[int]:
        if pts is None or not self._pts:
            return None
        i = bisect.bisect_left(self._pts, int(pts))
        return i if i < len(self._pts) and self._pts[i] == int(pts) else None

    def _fail_after(self, index: int, why: str) -> None:
        for i in range(index + 1, self.count):
            self._failed.setdefault(i, why)


def _frame_fetch(frames: FrameSource):
    """The tracker's frames, from the editor's own decoder and cache (stages.track.GreySource's fetch)."""
    from ..stages.track import MissingFrame

    def fetch(lo: int, hi: int):
        if hi >= frames.count:
            raise MissingFrame(hi, frames.count)
        for i in range(lo, hi + 1):
            yield i, frames.rgb(i)
    return fetch


# --------------------------------------------------------------------------------------------------
# Mattes: the same steps as `bgvid run`
# --------------------------------------------------------------------------------------------------

@dataclass
class _Chain:
    last: int  # last frame processed
    seg_state: object  # recurrent model state after `last`
    smooth_state: object  # smoother state after `last`


class MatteSource:
    """matte(n) -> [H, W] float32 0..1: what `bgvid run` computes for frame n before the JSON
    strokes (model, temporal smoothing warmed up like a `--frames n-n` chunk, upsampling, then
    the PNG layers of an overrides folder); raw(n): the same before any override (what the override
    stage receives). Consecutive frames continue the model's and the smoother's state instead of
    starting over; results are cached per frame."""

    def __init__(self, frames: FrameSource, segmenter, options=None, *, png_layers=None,
                 cache_bytes: int = 128 << 20):
        from ..stages.options import PictureOptions, build_chain

        self.frames = frames
        self.segmenter = segmenter
        self.options = options if options is not None else PictureOptions.preset("edit")
        # the matte before the strokes: the stages of `bgvid run` up to choke/feather (PNG layers below)
        self.chain = build_chain(self.options.replace(overrides=None, decontaminate=False, background=None),
                                 segmenter, width=frames.info.width, height=frames.info.height)
        self.smooth = self.options.smooth_strength(segmenter.recurrent)
        self.png_layers = png_layers
        self.preroll = self.options.preroll(segmenter.recurrent)
        self._low = ByteLRU(64 << 20)  # per-frame model output (per-frame models only)
        self._full = ByteLRU(cache_bytes)
        self._chain: Optional[_Chain] = None
        self._lock = threading.Lock()

    def matte(self, n: int) -> np.ndarray:
        alpha = self.raw(n)
        if self.png_layers is not None:
            alpha = np.ascontiguousarray(self.png_layers.apply(alpha, n), dtype=np.float32)
        return alpha

    def raw(self, n: int) -> np.ndarray:
        with self._lock:
            cached = self._full.get(n)
            if cached is not None:
                return cached
            start = max(0, n - self.preroll)
            chain = self._chain
            if chain is not None and start - 1 <= chain.last < n:
                first, seg_state, smooth_state = chain.last + 1, chain.seg_state, chain.smooth_state
            else:
                first, seg_state, smooth_state = start, None, None
            self._chain = None  # rebuilt below only if everything succeeds
            try:
                rgb = np.stack(self.frames.frames(first, n))
            except FrameError as exc:
                if exc.index is None or not first <= exc.index < n:
                    raise
                # A damaged frame among the warm-up frames: warm up on the frames after it.
                return self._retry(n, exc.index + 1)
            return self._finish(n, first, rgb, seg_state, smooth_state)

    def _retry(self, n: int, first: int) -> np.ndarray:
        while True:
            try:
                rgb = np.stack(self.frames.frames(first, n))
                break
            except FrameError as exc:
                if exc.index is None or not first <= exc.index < n:
                    raise
                first = exc.index + 1
        return self._finish(n, first, rgb, None, None)

    def _finish(self, n, first, rgb, seg_state, smooth_state) -> np.ndarray:
        """Frames first..n -> the matte of n, through `bgvid run`'s own stage objects."""
        from ..frames import FrameBatch

        low, seg_state = self._segment(rgb, list(range(first, n + 1)), seg_state)
        batch = FrameBatch(rgb=rgb, frame_index=np.arange(first, n + 1, dtype=np.int64), pts=None,
                           time_base=self.frames.info.time_base, alpha=low)
        smoother = self.chain.smooth
        if smoother is not None:
            smoother.state = smooth_state
            (batch,) = smoother.push(batch)
            smooth_state = smoother.state
        self._chain = _Chain(n, seg_state, smooth_state)
        last = FrameBatch(rgb=rgb[-1:], frame_index=batch.frame_index[-1:], pts=None, time_base=batch.time_base,
                          alpha=batch.alpha[-1:])
        for stage in self._per_frame():
            (last,) = stage.push(last)
        alpha = np.ascontiguousarray(last.alpha[0], dtype=np.float32)
        self._full.put(n, alpha)
        return alpha

    def _per_frame(self) -> list:
        """The chain's stages after temporal smoothing, in `bgvid run`'s order (upsampling, and whatever
        per-frame finishing the options add: solid mattes, levels, choke/feather), up to the overrides."""
        stages = self.chain.stages
        start = stages.index(self.chain.smooth if self.chain.smooth is not None else self.chain.segment) + 1
        return [s for s in stages[start:] if s is not self.chain.trim]

    def _segment(self, rgb: np.ndarray, indices: list[int], state):
        seg = self.segmenter
        if seg.recurrent:
            alpha, state = seg.segment(rgb, state, size="model")
            return alpha, state
        need = [k for k, i in enumerate(indices) if self._low.get(i) is None]
        if need:
            alpha, _ = seg.segment(rgb[need], None, size="model")
            for k, a in zip(need, alpha, strict=False):
                self._low.put(indices[k], np.ascontiguousarray(a))
        return np.stack([self._low.get(i) for i in indices]), None


# --------------------------------------------------------------------------------------------------
# The strokes file
# --------------------------------------------------------------------------------------------------

def default_overrides_path(src) -> Path:
    """clip.mp4 -> clip_overrides.json beside it; a folder of frames or a frames/%05d.png pattern
    -> frames_overrides.json beside the folder."""
    from ..io.reader import is_pattern

    src = Path(src)
    if is_pattern(src):
        src = src.parent if src.parent.name else Path.cwd()
    if src.is_dir():
        src = src.resolve()
        return src.parent / f"{src.name}_overrides.json"
    return src.parent / f"{src.stem}_overrides.json"


class StrokeFile:
    """The overrides.json the editor reads and writes. PATH may be a .json file (created on first
    save) or an existing override folder (its overrides.json; its PNG layers are shown under the
    strokes, never written)."""

    def __init__(self, path, *, width: int, height: int):
        path = Path(path)
        self.folder = path if path.is_dir() else None
        if self.folder is not None:
            self.path = path / "overrides.json"
        elif path.suffix.lower() == ".json":
            self.path = path
        else:
            raise InputError(f"{path}: --overrides must be a .json file (created if missing) or an "
                             "existing override folder")
        if self.folder is None and not self.path.parent.is_dir():
            raise InputError(f"{self.path}: folder {self.path.parent} does not exist")
        self.width, self.height = width, height
        self._lock = threading.Lock()

    def png_list(self) -> list:
        """The folder's PNG layers in blending order (checked as `bgvid run` checks them); [] without."""
        if self.folder is None:
            return []
        from ..stages.overrides import Overrides, _PngLayer, _Tracked

        loaded = Overrides.load(self.folder, width=self.width, height=self.height)
        layers = []
        for layer in loaded._layers:
            parts = [p.layer for p in layer.parts] if isinstance(layer, _Tracked) else [layer]
            layers += [x for x in parts if isinstance(x, _PngLayer)]
        return layers

    def png_layers(self, tracker=None):
        """The folder's PNG layers as an Overrides object (None without a folder or PNGs); keyframed
        layers follow the picture along `tracker`."""
        from ..stages.overrides import Overrides

        layers = self.png_list()
        if not layers:
            return None
        out = Overrides(layers, width=self.width, height=self.height)
        if tracker is not None:
            out.track_with(tracker)
        return out

    def load(self) -> list:
        """The strokes as JSON objects (validated as `bgvid run` validates them: InputError naming
        the file; [] when the file does not exist yet)."""
        from ..stages.overrides import load_json_document

        if not self.path.exists():
            return []
        return load_json_document(self.path, width=self.width, height=self.height)

    def save(self, strokes) -> int:
        """Validate and write atomically; returns the number of strokes. InputError for strokes
        `bgvid run` would refuse (the file is left as it was)."""
        from ..stages.overrides import Overrides, check_strokes

        # The checks of `bgvid run`, with its message, before anything is written.
        check_strokes(strokes, source=self.path, width=self.width, height=self.height)
        text = "[" + ",\n ".join(json.dumps(s, ensure_ascii=False, allow_nan=False) for s in strokes) + "]\n"
        with self._lock:
            # A new file gets the umask's mode (0o666 & ~umask), as every other file bgvid writes.
            tmp = str(self.path.parent / f".{self.path.name}.{secrets.token_hex(8)}.tmp.json")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as f:
                    f.write(text)
                    f.flush()
                    os.fsync(f.fileno())
                try:
                    Overrides.load(tmp, width=self.width, height=self.height)
                except InputError as exc:
                    raise InputError(str(exc).replace(tmp, str(self.path))) from None
                if self.path.exists():
                    os.chmod(tmp, self.path.stat().st_mode & 0o777)
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise
        return len(strokes)


# --------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------

class _DeadlineReader(io.RawIOBase):
    """The socket as the request's input stream, with a deadline for the whole request: each read
    waits at most IDLE_SECONDS and never past the deadline (then TimeoutError, which ends the
    connection), so a client that trickles its headers or body cannot hold a thread for long."""

    def __init__(self, sock, deadline: float):
        self.sock, self.deadline = sock, deadline

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        import time

        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("the request took too long to arrive")
        self.sock.settimeout(min(IDLE_SECONDS, left))
        return self.sock.recv_into(buffer)


class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "bgvid-edit"
    sys_version = ""
    protocol_version = "HTTP/1.0"  # one request per connection: nothing lingers at shutdown

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's signature
        pass

    def setup(self) -> None:
        import time

        self.timeout = IDLE_SECONDS  # the socket's timeout (the stdlib sets it in setup())
        super().setup()
        self.rfile = io.BufferedReader(_DeadlineReader(self.connection, time.monotonic() + REQUEST_SECONDS))

    # -- helpers ---------------------------------------------------------------------------------
    @property
    def editor(self) -> "EditorServer":
        return self.server.editor  # type: ignore[attr-defined]

    def _send(self, status: int, body: bytes, ctype: str, extra: Optional[dict] = None) -> None:
        self.connection.settimeout(IDLE_SECONDS)  # the reply: a reader that stops reading is dropped
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("X-Frame-Options", "DENY")
        self.send_header("Content-Security-Policy", _CSP)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj) -> None:
        try:
            body = json.dumps(obj, allow_nan=False).encode()  # the page's resp.json() reads only real JSON
        except (ValueError, TypeError) as exc:
            status, body = 500, json.dumps({"error": f"reply is not JSON: {exc}"}).encode()
        self._send(status, body, "application/json")

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": message})

    def send_error(self, code, message=None, explain=None):  # the stdlib's replies to broken requests
        self.close_connection = True
        self._error(code, message or self.responses.get(code, ("error",))[0])

    def _route(self) -> Optional[str]:
        """The path after /TOKEN/, or None after refusing the request."""
        ed = self.editor
        path = urlsplit(self.path).path
        prefix, _, rest = path.lstrip("/").partition("/")
        if not hmac.compare_digest(prefix.encode(), ed.token.encode()):  # the token first, before any work
            self._error(403, "forbidden: open the URL bgvid edit printed (it carries the access token)")
            return None
        host = self.headers.get("Host", "")
        if host not in ed.allowed_hosts:
            self._error(403, "forbidden: unexpected Host header")
            return None
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            self._error(403, "forbidden: cross-site request")
            return None
        if path == f"/{prefix}":
            self._send(302, b"", "text/plain", {"Location": f"/{ed.token}/"})
            return None
        return rest

    # -- methods ---------------------------------------------------------------------------------
    def do_GET(self):  # noqa: N802 - the stdlib's name
        rest = self._route()
        if rest is None:
            return
        ed = self.editor
        if rest in _STATIC:
            name, ctype = _STATIC[rest]
            self._send(200, ed.static(name), ctype)
            return
        if rest == "api/info":
            try:
                strokes = ed.strokes.load()
            except BgvidError as exc:
                self._error(422, str(exc))
                return
            self._json(200, {**ed.describe(), "strokes": strokes})
            return
        m = re.fullmatch(r"api/(frame|matte)/([0-9]{1,9})", rest)
        if m is None:
            self._error(404, "not found")
            return
        n = int(m.group(2))
        if n >= ed.frames.count:
            self._error(404, f"frame {n} is outside the video (frames 0-{ed.frames.count - 1})")
            return
        try:
            if m.group(1) == "frame":
                body, ctype = ed.frame_jpeg(n), "image/jpeg"
            else:
                body, ctype = ed.matte_png(n), "image/png"
        except BgvidError as exc:
            self._error(422, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug or a model failure: say it on the page too
            self.server.handle_error(self.request, self.client_address)
            self._error(500, f"frame {n}: {type(exc).__name__}: {exc}")
            return
        self._send(200, body, ctype)

    do_HEAD = do_GET

    def do_POST(self):  # noqa: N802
        rest = self._route()
        if rest is None:
            return
        ed = self.editor
        origin = self.headers.get("Origin")
        if origin is not None and origin not in ed.allowed_origins:
            self._error(403, "forbidden: cross-origin write")
            return
        preview = re.fullmatch(r"api/preview/([0-9]{1,9})", rest)
        if rest != "api/strokes" and preview is None:
            self._error(404, "not found")
            return
        if self.headers.get("Content-Type", "").split(";")[0].strip().lower() != "application/json":
            self._error(415, "send the strokes as application/json")
            return
        declared = self.headers.get("Content-Length", "").strip()
        if not re.fullmatch(r"[0-9]{1,12}", declared):  # checked before it is converted
            self._error(411, "Content-Length required")
            return
        length = int(declared)
        if length > MAX_BODY:
            self._error(413, f"request too large (at most {MAX_BODY >> 20} MiB)")
            return
        from ..stages.overrides import decode_json

        body = self.rfile.read(length)  # TimeoutError (the connection is dropped) past the deadline
        if len(body) != length:
            self._error(400, "request body shorter than its Content-Length")
            return
        if preview is not None:
            self._preview(int(preview.group(1)), body)
            return
        try:
            strokes = decode_json(body.decode("utf-8"), ed.strokes.path)
        except UnicodeDecodeError:
            self._error(400, "not valid JSON: not UTF-8 text")
            return
        except InputError as exc:
            self._error(400, str(exc))
            return
        try:
            count = ed.strokes.save(strokes)
        except InputError as exc:
            self._error(422, str(exc))
            return
        except OSError as exc:
            self._error(500, f"{ed.strokes.path}: cannot save: {exc.strerror or exc}")
            return
        except Exception as exc:  # noqa: BLE001 - a bug: say so on the page, keep serving
            self.server.handle_error(self.request, self.client_address)
            self._error(500, f"cannot save: {type(exc).__name__}: {exc}")
            return
        ed.report(f"Saved {count} stroke{'s' if count != 1 else ''} to {ed.strokes.path}")
        self._json(200, {"saved": count, "path": str(ed.strokes.path)})

    def _preview(self, n: int, body: bytes) -> None:
        """POST api/preview/N with the page's strokes: frame N as `bgvid run --overrides` renders it."""
        ed = self.editor
        if n >= ed.frames.count:
            self._error(404, f"frame {n} is outside the video (frames 0-{ed.frames.count - 1})")
            return
        try:
            png, boxes = ed.preview_png(n, body)
        except InputError as exc:
            self._error(422, str(exc))
            return
        except BgvidError as exc:
            self._error(422, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - a bug: say so on the page, keep serving
            self.server.handle_error(self.request, self.client_address)
            self._error(500, f"frame {n}: {type(exc).__name__}: {exc}")
            return
        self._send(200, png, "image/png", {"X-Bgvid-Corrections": json.dumps(boxes, separators=(",", ":"))})

    def do_PUT(self):  # noqa: N802
        if self._route() is not None:
            self._error(405, "method not allowed")

    do_DELETE = do_PATCH = do_OPTIONS = do_PUT


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() waits for requests in flight (a save completes)
    block_on_close = True
    allow_reuse_address = False
    request_queue_size = 64

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request, client_address):
        """A thread per connection, at most MAX_CONNECTIONS at once: one more is answered 503 at
        once from the accepting thread (a non-blocking send) and closed, no thread started."""
        if not self._slots.acquire(blocking=False):
            body = b'{"error": "busy: too many connections to bgvid edit"}'
            try:
                request.setblocking(False)
                request.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                             b"Retry-After: 1\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body))
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def handle_error(self, request, client_address):
        import sys

        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the page gave up on a request (it moved on to another frame): nothing to say
        super().handle_error(request, client_address)


class EditorServer:
    """The editor for one INPUT: FrameSource + MatteSource + StrokeFile behind a token-guarded
    HTTP server on 127.0.0.1. `url` is what the person opens. Use serve_forever() (blocking) or
    start() (a background thread), then close()."""

    def __init__(self, src, *, overrides=None, model: Optional[str] = None, device: str = "auto",
                 provider: Optional[str] = None, refine: Optional[str] = None, smooth="auto", choke: float = 0.0,
                 feather: float = 0.0, port: int = 0, report: Optional[Report] = None, token: Optional[str] = None):
        from ..stages.options import PictureOptions

        self.report = report or (lambda m: None)
        self.picture = PictureOptions.preset("edit", model=model, refine=refine or run_default("refine"),
                                             smooth=smooth, choke=choke, feather=feather)
        self._choke_feather = (float(choke), float(feather))
        self.src = Path(src)
        self.frames = FrameSource(self.src)
        try:
            self._setup(overrides, model, device, provider, refine, smooth, port, token)
        except BaseException:
            self.frames.close()
            raise
        self._thread: Optional[threading.Thread] = None
        self._static: dict[str, bytes] = {}

    def _setup(self, overrides, model, device, provider, refine, smooth, port, token) -> None:
        from ..device import default_model, resolve_device
        from ..models.segmenter import Segmenter

        info = self.frames.info
        if self.frames.count < 1:
            raise InputError(f"{self.src}: no frames to edit")
        self.strokes = StrokeFile(overrides if overrides is not None else default_overrides_path(self.src),
                                  width=info.width, height=info.height)
        self.strokes.load()  # a broken file is an error now, not after painting
        choice = resolve_device(device, provider)
        if model is None:
            model, why = default_model(choice)
            self.report(f"Model: {why}")
        self.segmenter = Segmenter.from_name(str(model), provider=choice.provider, report=self.report)
        smooth_arg = smooth
        smooth = self.picture.smooth_strength(self.segmenter.recurrent)
        from ..stages.track import GreySource, Tracker, track_size

        # Keyframed strokes and PNG layers follow the picture along the same tracker as `bgvid run`'s,
        # over the frames this editor decodes anyway.
        self.tracker = Tracker(GreySource(_frame_fetch(self.frames), track_size(info.height, info.width),
                                          count=self.frames.count), width=info.width, height=info.height)
        self._previews: OrderedDict = OrderedDict()  # strokes (sha256 of the request) -> Overrides
        self._previews_lock = threading.Lock()
        self.mattes = MatteSource(self.frames, self.segmenter, self.picture,
                                  png_layers=self.strokes.png_layers(self.tracker))
        self.model = self.segmenter.spec.name
        self.options = {"model": self.model, "refine": self.picture.refine, "smooth": smooth}
        self._smooth_flag = ("" if smooth_arg == "auto" else
                             (" --no-smooth" if not smooth_arg else f" --smooth {smooth_arg}"))
        self.token = token or secrets.token_urlsafe(24)
        try:
            self.httpd = _HTTPServer(("127.0.0.1", int(port)), _Handler)
        except OSError as exc:
            raise InputError(f"cannot listen on 127.0.0.1 port {port}: {exc.strerror or exc} (leave --port out "
                             "for a free port)") from None
        self.httpd.editor = self  # type: ignore[attr-defined]
        self.port = self.httpd.server_address[1]
        self.allowed_hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        self.allowed_origins = {f"http://{h}" for h in self.allowed_hosts}
        self.url = f"http://127.0.0.1:{self.port}/{self.token}/"

    # -- content ---------------------------------------------------------------------------------
    def static(self, name: str) -> bytes:
        if name not in self._static:
            self._static[name] = resources.files("bgvid.apps").joinpath("static", name).read_bytes()
        return self._static[name]

    def describe(self) -> dict:
        info = self.frames.info
        rate = float(info.average_rate) if info.average_rate else None
        run = f"bgvid run {_quote(self.src)} --overrides {_quote(self.strokes.folder or self.strokes.path)}"
        run += f" --model {self.model}"
        if self.options["refine"] != run_default("refine"):
            run += f" --refine {self.options['refine']}"
        run += self._smooth_flag
        for flag, value in zip(("--choke", "--feather"), self._choke_feather, strict=False):
            if value:
                run += f" {flag} {value:g}"
        from ..stages import overrides as _ov

        limits = {"points_per_stroke": _ov.MAX_POINTS_PER_STROKE, "points": _ov.MAX_POINTS, "strokes": _ov.MAX_STROKES}
        return {"name": self.src.name, "width": info.width, "height": info.height, "frames": self.frames.count,
                "fps": rate, "overrides": str(self.strokes.path), "run": run, "limits": limits, **self.options}

    def frame_jpeg(self, n: int) -> bytes:
        import cv2

        rgb = self.frames.rgb(n)
        if rgb.dtype == np.uint16:
            rgb = (rgb >> 8).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 92])
        if not ok:
            raise FrameError(f"frame {n}: cannot encode JPEG")
        return buf.tobytes()

    def _preview_overrides(self, body: bytes):
        """(Overrides, number of PNG layers) of a preview request's strokes (the folder's PNG layers first,
        in bgvid run's order), kept for the last few distinct requests so scrubbing continues their tracks."""
        import hashlib

        from ..stages.overrides import Overrides, check_strokes, decode_json

        key = hashlib.sha256(body).digest()
        with self._previews_lock:
            hit = self._previews.get(key)
            if hit is not None:
                self._previews.move_to_end(key)
                return hit
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise InputError("not valid JSON: not UTF-8 text") from None
        data = decode_json(text, self.strokes.path)
        strokes = check_strokes(data, source=self.strokes.path, width=self.frames.info.width,
                                height=self.frames.info.height)
        pngs = self.strokes.png_list()
        overrides = Overrides([*pngs, *strokes], width=self.frames.info.width, height=self.frames.info.height)
        overrides.track_with(self.tracker)
        hit = (overrides, len(pngs))  # a layer's index - len(pngs) = its stroke's index in the request
        with self._previews_lock:
            self._previews[key] = hit
            while len(self._previews) > 4:
                self._previews.popitem(last=False)
        return hit

    def preview_png(self, n: int, body: bytes) -> tuple[bytes, list]:
        """Frame n's matte with every override of the request's strokes applied as `bgvid run` applies them
        (keyframed ones carried along the picture), as an 8-bit PNG; and where each tracked correction of
        strokes lies on frame n: [{"first": index of its first stroke, "box": [x0, y0, x1, y1]}]."""
        overrides, offset = self._preview_overrides(body)
        alpha = overrides.apply(self.mattes.raw(n), n)
        boxes = [{"first": min(indices) - offset, "box": list(box)}
                 for indices, box in overrides.correction_boxes(n) if min(indices) >= offset]
        return self._png(alpha, n), boxes

    def matte_png(self, n: int) -> bytes:
        return self._png(self.mattes.matte(n), n)

    def _png(self, alpha, n: int) -> bytes:
        import cv2

        grey = np.rint(np.clip(alpha, 0.0, 1.0) * 255.0).astype(np.uint8)
        ok, buf = cv2.imencode(".png", grey, [cv2.IMWRITE_PNG_COMPRESSION, 1])
        if not ok:
            raise FrameError(f"frame {n}: cannot encode PNG")
        return buf.tobytes()

    # -- running ---------------------------------------------------------------------------------
    def serve_forever(self) -> None:
        self.httpd.serve_forever(poll_interval=0.2)

    def start(self) -> "EditorServer":
        self._thread = threading.Thread(target=self.serve_forever, name="bgvid-edit", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, let requests in flight finish (a save completes or leaves the old file),
        release the video."""
        if self._thread is not None:
            self.httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self.httpd.server_close()
        self.frames.close()
        self.tracker.close()

    def __enter__(self) -> "EditorServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quote(path) -> str:
    import shlex

    return shlex.quote(str(path))
