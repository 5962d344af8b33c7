"""`bgvid cam` as a library: live background removal from a camera (or a file played as one) into
a virtual camera or a network stream.

    source (capture thread, newest frame only) -> convert -> segment -> smooth -> upsample
      -> [finish] -> composite -> sink

Real-time policy: a capture thread reads the source at its own pace and keeps only the newest
frame; the processing loop always takes the newest one and counts the frames it never saw as
dropped. Nothing queues up, so the loop can never fall further behind the camera. The frame path
is `bgvid run`'s own stages (SegmentStage, SmoothStage, UpsampleStage, FinishStage,
CompositeStage), pushed one frame at a time in this thread: no second implementation.

    >>> from bgvid.apps.cam import LiveSession, open_source, open_sink
    >>> src = open_source("clip.mp4", loop=True)
    >>> sink = open_sink("udp://127.0.0.1:5000", src.width, src.height, src.fps)
    >>> stats = LiveSession(src, sink, background="blur").run(duration=10)
    >>> stats.latency_ms(99), stats.fps, stats.dropped

Latency is measured from the moment a frame is read from the source (decoded, before colour
conversion) to the moment its result is handed to the sink (`latency`), and to the moment the
sink returns (`delivered`: includes encoding or the copy into the virtual camera).
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from ..errors import BgvidError, InputError

Report = Callable[[str], None]
DEFAULT_MODEL = "selfie-landscape"
# One ONNX Runtime thread: a 256x144 model runs in ~3 ms on it, and the capture thread (decoding)
# and the sink (encoding) need the other cores; with a pool of 2 on 2 cores the model took longer
# (4.8 vs 3.4 ms per frame, measured under load) and the tail latency rose.
LIVE_THREADS = 1
_CLOCK = time.perf_counter
_SCHEMES = re.compile(r"^[a-z][a-z0-9+.-]*://", re.I)


# --------------------------------------------------------------------------------------------
# Sources


@dataclass
class Captured:
    """One frame as it left the source: still a decoded av.VideoFrame (converted to RGB only if
    the loop takes it, so dropped frames cost no conversion)."""

    frame: Any  # av.VideoFrame
    seq: int  # 0-based count of frames the source produced (across loops)
    t_read: float  # perf_counter() when the frame was read
    media_time: float  # seconds on the source's clock (continues across loops)


class _Newest:
    """A one-slot mailbox: put() replaces what is there; take() waits for a frame."""

    def __init__(self):
        self._cond = threading.Condition()
        self._item: Optional[Captured] = None
        self._closed = False
        self.error: Optional[BaseException] = None

    def put(self, item: Captured) -> None:
        self.replace(item)

    def replace(self, item: Captured) -> bool:
        """Put `item`; True if it replaced one nobody took."""
        with self._cond:
            replaced = self._item is not None
            self._item = item
            self._cond.notify()
            return replaced

    def close(self, error: Optional[BaseException] = None) -> None:
        with self._cond:
            self._closed = True
            if error is not None and self.error is None:
                self.error = error
            self._cond.notify_all()

    def take(self, timeout: Optional[float] = None) -> Optional[Captured]:
        """The newest frame, or None once the source has ended (or on timeout)."""
        deadline = None if timeout is None else _CLOCK() + timeout
        with self._cond:
            while self._item is None and not self._closed:
                remaining = None if deadline is None else deadline - _CLOCK()
                if remaining is not None and remaining <= 0:
                    return None
                self._cond.wait(remaining if remaining is not None else 0.5)
            item, self._item = self._item, None
            if item is None and self.error is not None:
                raise self.error
            return item

    @property
    def ended(self) -> bool:
        with self._cond:
            return self._closed and self._item is None


def _parse_size(size) -> Optional[tuple[int, int]]:
    """'WxH' or (W, H) -> (W, H)."""
    if size is None:
        return None
    if isinstance(size, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX:]\s*(\d+)\s*", size)
        if not m:
            raise InputError(f"--size {size!r}: expected WIDTHxHEIGHT, e.g. 1280x720")
        size = (int(m.group(1)), int(m.group(2)))
    w, h = int(size[0]), int(size[1])
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise InputError(f"--size {w}x{h}: width and height must be 16..8192 pixels")
    return w, h


def _parse_fps(fps) -> Optional[Fraction]:
    if fps is None:
        return None
    try:
        value = Fraction(str(fps)).limit_denominator(1001)
    except (ValueError, ZeroDivisionError):
        raise InputError(f"--fps {fps!r}: expected a frame rate such as 30 or 29.97") from None
    if not 1 <= value <= 240:
        raise InputError(f"--fps {fps}: must be between 1 and 240")
    return value


def _av_message(exc: BaseException) -> str:
    text = getattr(exc, "strerror", None) or str(exc)
    return text.splitlines()[0] if text else type(exc).__name__


class Source:
    """A live frame source. start() launches the capture thread; take() returns the newest frame
    (or None at the end); close() stops it. `frames_read` counts what the source produced."""

    width: int
    height: int
    fps: Fraction
    description: str

    def __init__(self):
        self._slot = _Newest()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self.frames_read = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._capture_guarded, name="bgvid-capture", daemon=True)
            self._thread.start()

    def take(self, timeout: Optional[float] = None) -> Optional[Captured]:
        """The newest frame (waiting up to `timeout`), or None on timeout or at the end."""
        return self._slot.take(timeout)

    @property
    def ended(self) -> bool:
        """True once the source has no more frames (and the last one was taken)."""
        return self._slot.ended

    def _capture_guarded(self) -> None:
        try:
            self._capture()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the processing thread
            self._slot.close(exc if not self._stop.is_set() else None)
        else:
            self._slot.close()

    def _publish(self, frame, media_time: float) -> None:
        self._slot.put(Captured(frame, self.frames_read, _CLOCK(), media_time))
        self.frames_read += 1

    def _capture(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class FileSource(Source):
    """A video file or URL played as if it were a camera: each frame is released at its own
    timestamp (or every 1/fps seconds when `fps` is given), on the wall clock; `loop` starts it
    again at the end, with the media clock running on."""

    def __init__(self, path: str, *, size=None, fps=None, loop: bool = False):
        super().__init__()
        import av

        self.path = str(path)
        self.loop = loop
        if not _SCHEMES.match(self.path):
            p = Path(self.path)
            if not p.exists():
                raise InputError(f"{self.path}: no such file (--source takes a camera device, a video file or a URL)")
            if p.is_dir():
                raise InputError(f"{self.path}: is a folder; --source takes a camera device, a video file or a URL")
        try:
            with av.open(self.path, timeout=10.0) as container:
                if not container.streams.video:
                    raise InputError(f"{self.path}: has no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                self.width, self.height = _parse_size(size) or (stream.codec_context.width, stream.codec_context.height)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - PyAV/FFmpeg errors
            raise InputError(f"{self.path}: cannot open as video ({_av_message(exc)})") from None
        self._own_rate = Fraction(rate) if rate else None
        self.fixed_rate = _parse_fps(fps)
        self.fps = self.fixed_rate or self._own_rate or Fraction(25)
        self.description = (f"{self.path} ({self.width}x{self.height} at {float(self.fps):g} fps"
                            f"{', looping' if loop else ''})")

    def _capture(self) -> None:
        import av

        start = None  # wall clock of media time 0
        offset = 0.0  # media time where the current pass starts
        index = 0
        step = 1.0 / float(self.fps)
        while not self._stop.is_set():
            last, produced = offset, 0
            with av.open(self.path, timeout=10.0) as container:
                stream = container.streams.video[0]
                stream.thread_type = "AUTO"
                tb = float(stream.time_base) if stream.time_base else 0.0
                first_pts = None
                for frame in container.decode(stream):
                    if self._stop.is_set():
                        return
                    if self.fixed_rate is not None or frame.pts is None or not tb:
                        media = index * step
                    else:
                        if first_pts is None:
                            first_pts = frame.pts
                        media = offset + (frame.pts - first_pts) * tb
                    if start is None:
                        start = _CLOCK() - media
                    wait = start + media - _CLOCK()
                    if wait > 0 and self._stop.wait(wait):
                        return
                    self._publish(frame, media)
                    last, index, produced = media, index + 1, produced + 1
            if produced == 0:
                raise InputError(f"{self.path}: no video frames")
            if not self.loop:
                return
            offset = last + step  # the next pass starts one frame after this one ended


class DeviceSource(Source):
    """A V4L2 camera (Linux), read with PyAV's v4l2 input. The camera paces itself."""

    def __init__(self, device: str, *, size=None, fps=None, input_format: Optional[str] = None):
        super().__init__()
        import av

        self.path = device
        options = {}
        if size is not None:
            options["video_size"] = f"{size[0]}x{size[1]}"
        fps = _parse_fps(fps)
        if fps is not None:
            options["framerate"] = str(fps)
        if input_format:
            options["input_format"] = input_format
        if not Path(device).exists():
            raise InputError(f"{device}: no such camera device (is the webcam plugged in? `ls /dev/video*`)")
        try:
            self._container = av.open(device, format="v4l2", options=options)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"{device}: cannot open the camera ({_av_message(exc)}); "
                             "is another program using it, or does it not support the --size/--fps asked?") from None
        stream = self._container.streams.video[0]
        self.width, self.height = stream.codec_context.width, stream.codec_context.height
        rate = stream.average_rate or stream.guessed_rate or fps or 30
        self.fps = Fraction(rate)
        self.description = f"{device} ({self.width}x{self.height} at {float(self.fps):g} fps)"

    def _capture(self) -> None:
        stream = self._container.streams.video[0]
        first = None
        try:
            for frame in self._container.decode(stream):
                if self._stop.is_set():
                    return
                t = frame.time
                if first is None and t is not None:
                    first = t
                media = (t - first) if (t is not None and first is not None) else self.frames_read / float(self.fps)
                self._publish(frame, media)
        finally:
            self._container.close()

    def close(self) -> None:
        started = self._thread is not None
        super().close()
        if not started:
            self._container.close()


def open_source(spec: str, *, size=None, fps=None, loop: bool = False) -> Source:
    """'/dev/videoN' or a bare number N (a V4L2 camera), else a video file or URL played at its own
    frame rate (or `fps`), looping with `loop`."""
    spec = str(spec)
    if spec.isdigit():
        spec = f"/dev/video{spec}"
    if spec.startswith("/dev/video") or spec.startswith("/dev/v4l/"):
        return DeviceSource(spec, size=_parse_size(size), fps=fps)
    return FileSource(spec, size=size, fps=fps, loop=loop)


# --------------------------------------------------------------------------------------------
# Sinks


class Sink:
    """Takes finished RGB frames: send(rgb [H,W,3] uint8, media_time seconds)."""

    description = ""

    def send(self, rgb: np.ndarray, media_time: float) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        pass


class NullSink(Sink):
    """Discards frames (measures the pipeline alone)."""

    description = "null (frames discarded)"

    def __init__(self):
        self.frames = 0

    def send(self, rgb, media_time):
        self.frames += 1


class VirtualCamSink(Sink):
    """A virtual camera through pyvirtualcam (v4l2loopback on Linux, OBS Virtual Camera on Windows
    and macOS). `camera` injects any object with send(rgb) and close() (tests, other backends)."""

    def __init__(self, width: int, height: int, fps, *, device: Optional[str] = None,
                 backend: Optional[str] = None, camera=None):
        if camera is None:
            try:
                import pyvirtualcam
            except ImportError:
                raise BgvidError("--sink virtual needs pyvirtualcam: pip install 'bgvid[cam]' (and on Linux "
                                 "the v4l2loopback kernel module: sudo modprobe v4l2loopback "
                                 "exclusive_caps=1)") from None
            try:
                camera = pyvirtualcam.Camera(width=width, height=height, fps=float(fps), device=device,
                                             backend=backend, fmt=pyvirtualcam.PixelFormat.RGB)
            except Exception as exc:  # noqa: BLE001 - pyvirtualcam raises RuntimeError with the reason
                raise BgvidError(f"virtual camera: {exc}") from None
        self.camera = camera
        self.description = f"virtual camera {getattr(camera, 'device', '') or ''}".rstrip()

    def send(self, rgb, media_time):
        self.camera.send(np.ascontiguousarray(rgb))

    def close(self):
        self.camera.close()


STREAM_CODECS = ("libx264", "mpeg2video")


def _guess_format(url: str) -> Optional[str]:
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("udp", "tcp", "srt", "rtp", "pipe"):
        return "mpegts"
    if scheme in ("rtmp", "rtmps"):
        return "flv"
    if scheme == "rtsp":
        return "rtsp"
    return None  # a file: by extension


class StreamSink(Sink):
    """Encodes frames with PyAV and writes them to a URL (udp://host:port as MPEG-TS by default,
    rtmp:// as FLV, srt://, tcp://) or a file (.ts, .mkv, .mp4 by extension).

    Timestamps: pts = media_time * fps in a 1/fps time base, so a dropped frame leaves a gap of
    its duration rather than shifting the picture in time; never decreasing."""

    def __init__(self, url: str, width: int, height: int, fps, *, codec: str = "libx264",
                 bitrate: Optional[int] = None, fmt: Optional[str] = None):
        import av

        if codec not in STREAM_CODECS:
            raise InputError(f"--codec must be one of {', '.join(STREAM_CODECS)}, got {codec!r}")
        if width % 2 or height % 2:
            raise InputError(f"stream sink: {width}x{height} is odd; 4:2:0 video needs even sizes (use --size)")
        self.url = url
        self.fps = Fraction(fps).limit_denominator(1001)
        fmt = fmt or _guess_format(url)
        target = url
        options = {}
        if url.lower().startswith("udp://") and "pkt_size" not in url:
            target = url + ("&" if "?" in url else "?") + "pkt_size=1316"
        if fmt == "mpegts":
            options = {"flush_packets": "1"}
        try:
            self.container = av.open(target, "w", format=fmt, options=options)
        except Exception as exc:  # noqa: BLE001
            raise InputError(f"--sink {url}: cannot open for writing ({_av_message(exc)})") from None
        try:
            stream = self.container.add_stream(codec, rate=self.fps)
        except Exception as exc:  # noqa: BLE001
            self.container.close()
            raise BgvidError(f"--codec {codec}: this FFmpeg cannot encode it ({_av_message(exc)})") from None
        stream.width, stream.height = width, height
        stream.pix_fmt = "yuv420p"
        stream.time_base = Fraction(1) / self.fps
        stream.codec_context.time_base = Fraction(1) / self.fps
        if codec == "libx264":
            stream.options = {"preset": "ultrafast", "tune": "zerolatency",
                              "g": str(max(1, round(float(self.fps)) * 2))}
            stream.bit_rate = bitrate or int(width * height * float(self.fps) * 0.1)
        else:
            stream.codec_context.gop_size = max(1, round(float(self.fps)))
            stream.codec_context.max_b_frames = 0
            stream.bit_rate = bitrate or int(width * height * float(self.fps) * 0.25)
        self.stream = stream
        self._time_base = Fraction(1) / self.fps
        self._matrix = 1 if height >= 720 else 6  # AVColorSpace / swscale: BT.709, SMPTE 170M (BT.601)
        cc = stream.codec_context
        cc.colorspace, cc.color_range = self._matrix, 1
        cc.color_primaries = cc.color_trc = 1 if self._matrix == 1 else 6
        self._last = -1
        self.frames = 0
        self.description = f"{url} ({fmt or 'by extension'}, {codec}, {width}x{height} at {float(self.fps):g} fps)"

    def send(self, rgb, media_time):
        import av

        pts = int(round(media_time * float(self.fps)))
        if pts <= self._last:
            pts = self._last + 1
        self._last = pts
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        # Limited-range YUV with the matrix players assume for an untagged picture of this size
        # (BT.709 from 720 lines up, BT.601 below), and tagged with it.
        yuv = frame.reformat(format="yuv420p", dst_colorspace=self._matrix, dst_color_range=1)
        yuv.colorspace, yuv.color_range = self._matrix, 1
        yuv.color_primaries = yuv.color_trc = 1 if self._matrix == 1 else 6
        yuv.pts = pts
        yuv.time_base = self._time_base  # not stream.time_base: the muxer changes it (1/90000 in MPEG-TS)
        try:
            for packet in self.stream.encode(yuv):
                self.container.mux(packet)
        except OSError as exc:
            raise BgvidError(f"--sink {self.url}: {_av_message(exc)}") from None
        self.frames += 1

    def close(self):
        try:
            for packet in self.stream.encode(None):
                self.container.mux(packet)
        except Exception:  # noqa: BLE001 - closing after a failure
            pass
        finally:
            self.container.close()


def open_sink(spec: str, width: int, height: int, fps, *, codec: str = "libx264", camera=None) -> Sink:
    """'virtual' (pyvirtualcam), 'null', or a URL / file for a network stream."""
    if spec == "virtual" or camera is not None:
        return VirtualCamSink(width, height, fps, camera=camera)
    if spec == "null":
        return NullSink()
    if not _SCHEMES.match(spec) and not Path(spec).suffix:
        raise InputError(f"--sink {spec!r}: use 'virtual', a URL such as udp://127.0.0.1:5000, or a file name "
                         "with an extension (.ts, .mkv)")
    return StreamSink(spec, width, height, fps, codec=codec)


# --------------------------------------------------------------------------------------------
# Stats


def _percentile(values, q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


@dataclass
class LiveStats:
    """What a live session measured. Times in seconds inside; *_ms helpers for reports."""

    frames: int = 0  # frames the sink sent out
    dropped: int = 0  # frames the source produced that never reached the sink
    handed: int = 0  # frames the loop finished and handed to the sink
    dropped_at_sink: int = 0  # of `dropped`: finished, but replaced by a newer one before the sink took them
    model_runs: int = 0  # frames the model ran on (fewer than frames with every > 1)
    seconds: float = 0.0  # from reading the first frame taken to the sink's return on the last
    source_fps: float = 0.0
    latency: list = field(default_factory=list)  # read -> handed to the sink, per frame
    delivered: list = field(default_factory=list)  # read -> the sink returned, per frame
    stage_seconds: dict = field(default_factory=dict)  # summed per stage
    captured: int = 0  # frames the source produced (frames + dropped, plus one still unread at a stop)
    interrupted: bool = False
    first_read: Optional[float] = None  # perf_counter() of the first frame taken

    @property
    def fps(self) -> float:
        """Frames handed on per second, first to last."""
        return (self.frames - 1) / self.seconds if self.frames > 1 and self.seconds > 0 else 0.0

    def latency_ms(self, q: float = 50, *, delivered: bool = False) -> float:
        return 1000.0 * _percentile(self.delivered if delivered else self.latency, q)

    def stage_ms(self) -> dict:
        """Mean milliseconds per frame for each stage (segment: per model run)."""
        out = {}
        for name, total in self.stage_seconds.items():
            n = self.model_runs if name == "segment" else self.frames
            out[name] = 1000.0 * total / n if n else 0.0
        return out

    def summary(self) -> str:
        if not self.frames:
            return "no frames sent"
        return (f"{self.frames} frames in {self.seconds:.1f} s: {self.fps:.1f} fps (source {self.source_fps:g}), "
                f"latency p50 {self.latency_ms(50):.1f} ms p99 {self.latency_ms(99):.1f} ms "
                f"(to the sink's return: p50 {self.latency_ms(50, delivered=True):.1f} p99 "
                f"{self.latency_ms(99, delivered=True):.1f}), dropped {self.dropped}"
                + (f" ({self.dropped_at_sink} waiting for the sink)" if self.dropped_at_sink else ""))

    def to_json(self) -> dict:
        return {
            "frames": self.frames, "handed": self.handed, "dropped": self.dropped,
            "dropped_at_sink": self.dropped_at_sink,
            "captured": self.captured, "model_runs": self.model_runs,
            "seconds": round(self.seconds, 3), "fps": round(self.fps, 2), "source_fps": round(self.source_fps, 3),
            "latency_ms": {f"p{q}": round(self.latency_ms(q), 2) for q in (50, 90, 99)} | {
                "max": round(1000 * max(self.latency), 2) if self.latency else None},
            "delivered_ms": {f"p{q}": round(self.latency_ms(q, delivered=True), 2) for q in (50, 90, 99)},
            "stage_ms": {k: round(v, 3) for k, v in self.stage_ms().items()},
            "interrupted": self.interrupted,
        }


# --------------------------------------------------------------------------------------------
# The loop


def _deliver(sink: Sink, stats: LiveStats, rgb, media_time: float, t_read: float, handed: float) -> None:
    sink.send(rgb, media_time)
    done = _CLOCK()
    stats.stage_seconds["sink"] += done - handed
    stats.delivered.append(done - t_read)
    stats.frames += 1
    stats.seconds = done - stats.first_read


class _SinkWorker:
    """Runs the sink (encoding, the copy into the virtual camera) in its own thread, so the loop
    can start on the next frame while this one is encoded. Same policy as the capture side: one
    slot; a frame still waiting when the next one is handed on is replaced and counted as dropped,
    so a slow sink never builds a queue."""

    def __init__(self, sink: Sink, stats: LiveStats):
        self.sink, self.stats = sink, stats
        self.slot = _Newest()
        self.error: Optional[BaseException] = None
        self.thread = threading.Thread(target=self._run, name="bgvid-sink", daemon=True)
        self.thread.start()

    def put(self, rgb, media_time: float, t_read: float) -> None:
        if self.error is not None:
            raise self.error
        if self.slot.replace(Captured(rgb, -1, t_read, media_time)):
            self.stats.dropped += 1
            self.stats.dropped_at_sink += 1

    def _run(self) -> None:
        try:
            while True:
                item = self.slot.take()
                if item is None:
                    return
                _deliver(self.sink, self.stats, item.frame, item.media_time, item.t_read, _CLOCK())
        except BaseException as exc:  # noqa: BLE001 - raised in the loop's thread
            self.error = exc

    def finish(self) -> None:
        self.slot.close()
        self.thread.join()
        if self.error is not None:
            raise self.error


class LiveSession:
    """The live loop: newest frame in, composite out, one frame at a time through `bgvid run`'s
    stages. Build it, then run(); `stats` is readable at any time (also after Ctrl-C).

    background: 'blur', a colour, an image or a video (see bgvid run --background).
    every: run the model on every Nth frame and carry its matte forward in between (the smoother
           and the upsampler still run on every frame).
    smooth: temporal smoothing strength in [0, 1) (None/0 = off); default 0.5.
    threaded_sink: encode / send in a thread of its own (newest frame only), so the loop works on
           the next frame meanwhile; False sends in the loop's thread.
    """

    def __init__(self, source: Source, sink: Sink, *, background: str = "blur",
                 model: str = DEFAULT_MODEL, segmenter=None, every: int = 1, smooth: Optional[float] = 0.5,
                 refine: str = "none", choke: float = 0.0, feather: float = 0.0, threads: int = LIVE_THREADS,
                 provider: str = "cpu", threaded_sink: bool = True, report: Optional[Report] = None):
        from ..io.background import open_background
        from ..models.segmenter import Segmenter
        from ..stages.options import PictureOptions, build_chain

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise InputError(f"--every must be at least 1, got {every}")
        options = PictureOptions.preset("cam", model=model, smooth=smooth, refine=refine, choke=choke, feather=feather,
                                        background=background)
        self.report = report or (lambda m: None)
        self.source, self.sink = source, sink
        self.every = int(every)
        self.background = open_background(background)
        try:
            self.segmenter = segmenter or Segmenter.from_name(model, provider=provider, threads=threads,
                                                              report=self.report)
            if self.segmenter.recurrent and self.every > 1:
                raise InputError(f"--every {every}: model {self.segmenter.spec.name!r} is recurrent and must see "
                                 "every frame")
            chain = build_chain(options, self.segmenter, width=source.width, height=source.height,
                                background=self.background)
        except BaseException:
            self.background.close()
            raise
        self.chain = chain
        self.segment = chain.segment
        rest = chain.after_segment()
        self.stages = rest
        self.stats = LiveStats(source_fps=float(source.fps),
                               stage_seconds={"convert": 0.0, "segment": 0.0, **{s.name: 0.0 for s in rest},
                                              "sink": 0.0})
        self._carried = None  # the last model matte (model resolution), for --every
        self._processed = 0
        self._color = None  # the source's colour tags, from its first frame
        self.threaded_sink = threaded_sink and not isinstance(sink, NullSink)
        self._stop = threading.Event()

    @property
    def smooth_state(self):
        """The smoother's explicit state (None before the first frame or with smoothing off)."""
        for stage in self.stages:
            if stage.name == "smooth":
                return stage.state
        return None

    def stop(self) -> None:
        """Ask run() to return after the frame in hand (safe from another thread)."""
        self._stop.set()

    def warm_up(self) -> None:
        """Push one grey frame through every stage, then forget it (the smoother's state, the
        carried matte, the counters): the first real frame must not pay for ONNX Runtime's and
        OpenCV's first-call setup, which would count as latency."""
        grey = np.full((self.source.height, self.source.width, 3), 128, np.uint8)
        self.process(grey, -1)
        self._carried = None
        self._processed = 0
        self.stats.model_runs = 0
        for stage in self.stages:
            if stage.name == "smooth":
                stage.state = None

    def _to_rgb(self, frame) -> np.ndarray:
        """Decoded frame -> [H, W, 3] uint8 at the session's size, with `bgvid run`'s colour rules
        (the frame's matrix and range; untagged: BT.709 from 720 lines up, BT.601 below)."""
        from ..io.reader import _frame_color, _to_rgb

        if self._color is None:
            self._color = _frame_color(frame)
        return _to_rgb(frame, deep=False, color=self._color, size=(self.source.width, self.source.height))

    def process(self, rgb: np.ndarray, index: int, *, timings: Optional[dict] = None) -> np.ndarray:
        """One frame [H,W,3] uint8 -> the composite [H,W,3] uint8, through the stages."""
        from ..frames import FrameBatch

        batch = FrameBatch(rgb=rgb[None], frame_index=np.array([index], np.int64), pts=None,
                           time_base=Fraction(1, 1))
        times = timings if timings is not None else {}
        t = _CLOCK()
        if self._carried is None or self._processed % self.every == 0:
            (batch,) = self.segment.push(batch)
            self._carried = batch.alpha
            self.stats.model_runs += 1
            now = _CLOCK()
            times["segment"] = times.get("segment", 0.0) + now - t
            t = now
        else:
            batch.alpha = self._carried
        for stage in self.stages:
            (batch,) = stage.push(batch)
            now = _CLOCK()
            times[stage.name] = times.get(stage.name, 0.0) + now - t
            t = now
        self._processed += 1
        return batch.rgb[0]

    def run(self, *, frames: Optional[int] = None, duration: Optional[float] = None,
            on_frame: Optional[Callable[["LiveStats"], None]] = None) -> LiveStats:
        """Run until the source ends, `frames` frames were processed, `duration` seconds passed,
        stop() was called or Ctrl-C (KeyboardInterrupt is re-raised after the stats are final; the
        stats say interrupted=True). on_frame(stats) is called after every frame handed on."""
        if frames is not None and frames < 1:
            raise InputError(f"--frames must be at least 1, got {frames}")
        if duration is not None and duration <= 0:
            raise InputError(f"--duration must be positive, got {duration}")
        stats = self.stats
        sums = stats.stage_seconds
        self.warm_up()
        worker = _SinkWorker(self.sink, stats) if self.threaded_sink else None
        self.source.start()
        last_seq = -1
        started = _CLOCK()
        try:
            while not self._stop.is_set():
                if frames is not None and stats.handed >= frames:
                    break
                if duration is not None and _CLOCK() - started >= duration:
                    break
                got = self.source.take(timeout=0.25)
                if got is None:
                    if self.source.ended:
                        break
                    continue
                stats.dropped += got.seq - last_seq - 1
                last_seq = got.seq
                if stats.first_read is None:
                    stats.first_read = got.t_read
                    started = _CLOCK()
                t0 = _CLOCK()
                rgb = self._to_rgb(got.frame)
                got.frame = None
                sums["convert"] += _CLOCK() - t0
                out = self.process(rgb, got.seq, timings=sums)
                handed = _CLOCK()
                stats.latency.append(handed - got.t_read)
                stats.handed += 1
                if worker is not None:
                    worker.put(out, got.media_time, got.t_read)
                else:
                    _deliver(self.sink, stats, out, got.media_time, got.t_read, handed)
                if on_frame is not None:
                    on_frame(stats)
        except KeyboardInterrupt:
            stats.interrupted = True
            raise
        finally:
            self.source.close()
            stats.captured = self.source.frames_read
            if worker is not None:
                worker.finish()  # the frame in hand reaches the sink; a sink error is raised here
        return stats

    def close(self) -> None:
        try:
            self.sink.close()
        finally:
            self.source.close()
            self.chain.close()
            self.background.close()


def open_live(source: str | Source = "/dev/video0", sink: str | Sink = "virtual", *, background: str = "blur",
              model: str = DEFAULT_MODEL, size=None, fps=None, loop: bool = False, every: int = 1,
              smooth: Optional[float] = 0.5, refine: str = "none", codec: str = "libx264", camera=None,
              threads: int = LIVE_THREADS, threaded_sink: bool = True, report: Optional[Report] = None) -> LiveSession:
    """Open source, sink, model and background -> a LiveSession ready to run(); close() it after.
    Everything that can be wrong with the options fails here, before any frame is read."""
    report = report or (lambda m: None)
    size = _parse_size(size)
    _parse_fps(fps)
    src = source if isinstance(source, Source) else open_source(source, size=size, fps=fps, loop=loop)
    try:
        snk = sink if isinstance(sink, Sink) else open_sink(sink, src.width, src.height, src.fps, codec=codec,
                                                            camera=camera)
    except BaseException:
        src.close()
        raise
    try:
        session = LiveSession(src, snk, background=background, model=model, every=every, smooth=smooth,
                              refine=refine, threads=threads, threaded_sink=threaded_sink, report=report)
    except BaseException:
        snk.close()
        src.close()
        raise
    report(f"Live: {src.description} -> {snk.description}; model {session.segmenter.spec.name}, "
           f"background {session.background.description}")
    return session


def run_live(source: str | Source = "/dev/video0", sink: str | Sink = "virtual", *, frames: Optional[int] = None,
             duration: Optional[float] = None, on_frame=None, **options) -> LiveStats:
    """Live background removal from `source` (a V4L2 device, a file or URL played as a camera, or a
    Source) to `sink` ('virtual', 'null', a stream URL/file, or a Sink) until the source ends or
    `frames`/`duration` is reached. Returns LiveStats. Options as open_live(); `camera` injects a
    virtual-camera object (anything with send(rgb) and close())."""
    session = open_live(source, sink, **options)
    try:
        return session.run(frames=frames, duration=duration, on_frame=on_frame)
    finally:
        session.close()
