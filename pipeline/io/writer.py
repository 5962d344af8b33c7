"""Encoding: batches of straight RGB + alpha -> ProRes 4444 .mov, VP9-alpha .webm, PNG, or H.264 .mp4.

Formats (by output name, see output_kind):

    .mov   ProRes 4444 (prores_ks, tag ap4h), yuva444p10le, alpha at 10 bits (matte: ProRes 422 HQ, apch)
    .webm  VP9 (libvpx-vp9) yuva420p with an 8-bit alpha plane (matte: VP9 yuv420p)
    .png   one RGBA still (for image inputs)
    folder/, name without extension, or a pattern like out/%05d.png
           PNG sequence, RGBA, 8-bit (16-bit for inputs deeper than 8 bits), files named by input frame
           index (%06d.png in a folder) (matte: 16-bit grey PNGs)
    .mp4   H.264 yuv420p of ``batch.rgb`` alone (composited by the caller; alpha ignored; matte: H.264 grey).
           H.264 4:2:0 needs even sizes: an odd width/height gets one extra column/row copied from the edge.

ProRes, VP9 and PNG keep the exact input size, odd sizes included.

Encoder choices, measured on the shared 2-core development machine (10-frame clips):
    * prores_ks with a fixed quantiser (4), not prores_aw and not prores_ks's default rate search.
      1920x1080 (juggle.mp4 upscaled): prores_aw 9.8 fps, 1862 kB/frame, 48.8 dB RGB PSNR; prores_ks
      default 4.4 fps, 3635 kB, 59.5 dB; prores_ks q4 19.5 fps, 1811 kB, 49.0 dB. 1280x720: 21 / 9.9 /
      32 fps. Besides speed: prores_aw writes 10-bit alpha as a<<6 (opaque = 65472/65535 in the 16-bit
      bitstream, so "opaque" is 0.999) and refuses odd widths; prores_ks scales alpha to 16 bits exactly
      and takes any size.
    * libvpx-vp9 deadline=realtime, cpu-used=7, row-mt: 56 fps at 1280x720 against 6-8 fps for
      deadline=good (cpu-used 5..8) at 0.25 dB lower PSNR and ~5% more bytes. crf 10, not the usual 30:
      FFmpeg codes the alpha plane with the same settings as the colour, and only from crf ~10 down do
      99% of alpha values stay within 2/255 of the input (crf 20: 3/255, crf 30: 2-3/255 with spikes to
      16/255; mean 0.2/255 at crf 10). Cost at 640x360: 24 kB/frame against 18 (crf 20) and 13 (crf 30).
    * libx264 preset fast, crf 18: same PSNR as medium here, ~10% faster.

Colour: YUV is limited range ("tv"), converted with the input's matrix (``info.color``), and tagged with
its primaries / transfer / matrix. Alpha never goes through swscale (its rgba64 -> yuva conversion is
off by up to 1.5 LSB at 10 bits): the alpha plane is written as round(alpha * (2**bits - 1)).

Time: each output frame's pts is its input pts rescaled into the output time base. .mov/.mp4 keep the
input time base (track timescale = its denominator; the movie timescale is set to the same value, so the
edit list that carries a non-zero start pts is exact: with the default 1/1000 movie timescale a range
starting at 5005/30000 would read back as 4980). .webm uses 1/1000. A frames range keeps the original
timestamps (no rebasing). Audio is copied when the container takes the codec, else transcoded (AAC for
.mov/.mp4, Opus for .webm), interleaved as video is written and trimmed to the range's time span.

Safety: everything is written to a hidden temporary name beside the target (``.NAME.bgvid-tmp-PID.ext``;
PNG sequences: a hidden temporary folder) and renamed into place on success. An existing output is an
InputError unless overwrite=True; a full disk is a BgvidError and removes the temporary output.
"""

from __future__ import annotations

import errno
import math
import os
import re
import shutil
import weakref
from fractions import Fraction
from typing import Literal, Optional, Union

import av
import numpy as np

from ..errors import BgvidError, InputError
from ..frames import ColorInfo, FrameBatch, VideoInfo
from .reader import is_pattern, sws_colorspace

OutputKind = Literal["prores", "webm", "png", "mp4"]
PathLike = Union[str, os.PathLike]

SUPPORTED = (".mov (ProRes 4444 with alpha), .webm (VP9 with alpha), .mp4 (H.264, needs a background), "
             ".png (one image), or a folder / %06d.png pattern (PNG sequence)")

# Encoder settings (see the module docstring for the measurements behind them).
PRORES_CODEC = "prores_ks"
PRORES_QUANT = 4  # fixed quantiser: skips prores_ks's per-slice rate search (the slow part)
_PRORES_Q = {"flags": "+qscale", "global_quality": str(PRORES_QUANT * 118)}  # 118 = FF_QP2LAMBDA
PRORES_OPTIONS = {"profile": "4444", "alpha_bits": "16", **_PRORES_Q}
PRORES_MATTE_OPTIONS = {"profile": "hq", **_PRORES_Q}
VP9_OPTIONS = {"deadline": "realtime", "cpu-used": "7", "row-mt": "1", "crf": "10", "b": "0",
               "tile-columns": "2", "lag-in-frames": "0"}
X264_OPTIONS = {"preset": "fast", "crf": "18"}
# h264_nvenc (a GPU's video encoder), constant quality near x264's crf 18. Unverified: no GPU with NVENC
# has run it (the H200 this project was checked on has none).
NVENC_OPTIONS = {"preset": "p5", "tune": "hq", "rc": "vbr", "cq": "19", "b": "0"}
PNG_COMPRESSION = 1  # zlib level: fast; sizes within ~10% of level 6 on video frames

_COPY_AUDIO = {
    "prores": {"aac", "alac", "pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_s32le", "pcm_s32be",
               "pcm_f32le", "pcm_f32be"},
    "mp4": {"aac", "mp3"},
    "webm": {"opus", "vorbis"},
}
_DISK_FULL = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def output_kind(path: PathLike, *, matte: bool = False) -> OutputKind:
    """The output format for `path`: .mov -> "prores", .webm -> "webm", .mp4/.m4v -> "mp4", .png (one
    image), an existing folder, a name ending in a separator or without extension, or a %d pattern
    (``out/%05d.png``) -> "png". `matte` does not change the choice (each format has a matte form).
    Anything else is an InputError that lists the supported outputs."""
    p = os.fspath(path)
    if is_pattern(p):
        if not p.lower().endswith(".png"):
            raise InputError(f"{p}: a numbered sequence is written as PNG: end the pattern with .png "
                             "(e.g. out/%06d.png)")
        return "png"
    if p.endswith(("/", os.sep)) or os.path.isdir(p):
        return "png"
    ext = os.path.splitext(p)[1].lower()
    kinds = {".mov": "prores", ".webm": "webm", ".mp4": "mp4", ".m4v": "mp4", ".png": "png", "": "png"}
    if ext in kinds:
        return kinds[ext]  # type: ignore[return-value]
    raise InputError(f"{p}: cannot write {ext or 'this'} files; write {SUPPORTED}")


# -------------------------------------------------------------------------------------- helpers

def _numpy(x) -> np.ndarray:
    if x is None or isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get"):  # CuPy
        return x.get()
    return np.asarray(x)


def _disk_full(e: BaseException) -> bool:
    return getattr(e, "errno", None) in _DISK_FULL


def _set_plane(frame: av.VideoFrame, index: int, values: np.ndarray) -> None:
    plane = frame.planes[index]
    dtype = np.uint16 if values.dtype == np.uint16 else np.uint8
    row = plane.line_size // np.dtype(dtype).itemsize
    arr = np.frombuffer(plane, dtype=dtype).reshape(plane.height, row)
    arr[:, : plane.width] = values


def _quantize(alpha: np.ndarray, top: int, dtype) -> np.ndarray:
    a = np.asarray(alpha, dtype=np.float32)
    out = np.empty(a.shape, dtype=np.float32)
    np.multiply(np.clip(a, 0.0, 1.0), top, out=out)
    np.rint(out, out=out)
    return out.astype(dtype)


def _tag(frame: av.VideoFrame, color: ColorInfo) -> None:
    frame.color_range = 1
    frame.colorspace = color.matrix
    frame.color_primaries = color.primaries
    frame.color_trc = color.transfer


def _grey_yuv(alpha: np.ndarray, fmt: str, *, tag: ColorInfo) -> av.VideoFrame:
    """A limited-range grey picture of `alpha` (white = opaque) in planar YUV `fmt` (8 or 10 bit)."""
    h, w = alpha.shape
    frame = av.VideoFrame(w, h, fmt)
    bits = max(c.bits for c in frame.format.components)
    dtype = np.uint16 if bits > 8 else np.uint8
    scale = 1 << (bits - 8)
    y = _quantize(alpha, 219 * scale, np.float32).astype(dtype) + dtype(16 * scale)
    _set_plane(frame, 0, y)
    for k in (1, 2):
        pl = frame.planes[k]
        _set_plane(frame, k, np.full((pl.height, pl.width), 128 * scale, dtype=dtype))
    _tag(frame, tag)
    return frame


def _pad_even(a: np.ndarray) -> np.ndarray:
    h, w = a.shape[:2]
    ph, pw = h % 2, w % 2
    if not (ph or pw):
        return a
    pad = ((0, ph), (0, pw)) + ((0, 0),) * (a.ndim - 2)
    return np.pad(a, pad, mode="edge")


def _parse_timecode(tc: str, rate: Fraction) -> Optional[tuple[int, int, bool]]:
    """'HH:MM:SS:FF' (';' or '.' before FF = drop frame) -> (frame number, nominal fps, drop)."""
    m = re.fullmatch(r"(\d+):(\d\d):(\d\d)([:;.])(\d+)", tc.strip())
    if not m:
        return None
    hh, mm, ss, sep, ff = m.groups()
    fps = max(1, int(round(float(rate))))
    drop = sep in ";." and fps % 30 == 0
    total_minutes = int(hh) * 60 + int(mm)
    n = (total_minutes * 60 + int(ss)) * fps + int(ff)
    if drop:
        d = 2 * (fps // 30)
        n -= d * (total_minutes - total_minutes // 10)
    return n, fps, drop


def _format_timecode(n: int, fps: int, drop: bool) -> str:
    if drop:
        d = 2 * (fps // 30)
        per10 = fps * 600 - d * 9
        per1 = fps * 60 - d
        tens, rem = divmod(n, per10)
        if rem > d:
            n += d * 9 * tens + d * ((rem - d) // per1)
        else:
            n += d * 9 * tens
    ff = n % fps
    s = n // fps
    return f"{(s // 3600) % 24:02d}:{(s // 60) % 60:02d}:{s % 60:02d}{';' if drop else ':'}{ff:02d}"


def offset_timecode(tc: str, frames: int, rate: Optional[Fraction]) -> str:
    """`tc` moved on by `frames` frames at `rate` (drop-frame aware); unchanged if unparseable."""
    if not frames:
        return tc
    parsed = _parse_timecode(tc, Fraction(rate or 25))
    if parsed is None:
        return tc
    n, fps, drop = parsed
    return _format_timecode(n + frames, fps, drop)


# ----------------------------------------------------------------------------------------- audio

class _Audio:
    """Audio of the input, read a second time and muxed as the video advances (copy or transcode)."""

    def __init__(self, info: VideoInfo, output, kind: str, trim: bool):
        self.path = info.path
        self.output = output
        self.trim = trim
        self.t_start: Optional[float] = None  # seconds; set from the first video frame when trimming
        self.src = av.open(info.path, "r")
        try:
            self.ist = self.src.streams.audio[0]
            name = self.ist.codec_context.name
            self.copy = name in _COPY_AUDIO[kind]
            if self.copy:
                self.ost = output.add_stream_from_template(self.ist)
                self.ost.time_base = self.ist.time_base
            else:
                enc = "libopus" if kind == "webm" else "aac"
                ch = self.ist.codec_context.layout.nb_channels
                layout = "mono" if ch == 1 else "stereo"
                rate = self.ist.codec_context.sample_rate or 48000
                if enc == "libopus":
                    rate = 48000
                elif rate not in (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000):
                    rate = 48000
                self.ost = output.add_stream(enc, rate=rate)
                self.ost.layout = layout
                self.ost.format = "flt" if enc == "libopus" else "fltp"
                self.ost.time_base = Fraction(1, rate)
                self.rate = rate
                self.frame_size = 960 if enc == "libopus" else 1024
                self.resampler = av.AudioResampler(format=self.ost.format.name, layout=layout, rate=rate,
                                                   frame_size=self.frame_size)
                self.next_pts: Optional[int] = None
            self.packets = self.src.demux(self.ist)
            self.pending = None  # (time, packet or frame) not yet written
            self.done = False
        except BaseException:
            self.src.close()
            raise

    # ---------------------------------------------------------------------------------------
    def _next_item(self):
        """The next (start time s, end time s, packet) from the input, or None at the end."""
        while True:
            try:
                p = next(self.packets)
            except StopIteration:
                return None
            except av.FFmpegError as e:
                raise InputError(f"{self.path}: unreadable audio data: {e}") from e
            if p.size == 0 or (p.pts is None and p.dts is None):
                continue
            ts = p.pts if p.pts is not None else p.dts
            tb = p.time_base or self.ist.time_base
            start = float(ts * tb)
            end = start + float((p.duration or 0) * tb)
            return start, end, p

    def pump(self, until: Optional[float], *, final: bool = False) -> None:
        """Write input audio that starts before `until` seconds (all of it when None)."""
        while not self.done:
            if self.pending is None:
                self.pending = self._next_item()
                if self.pending is None:
                    self.done = True
                    break
            start, end, p = self.pending
            if until is not None and start >= until:
                break
            self.pending = None
            if self.trim and self.t_start is not None and end <= self.t_start and end > start:
                continue  # wholly before the range
            self._write(p, start, end, until if final else None)

    def _write(self, p, start: float, end: float, cut: Optional[float]) -> None:
        if self.copy:
            if self.output.format.name in ("webm", "matroska") and p.pts is not None and p.pts < 0:
                return  # Matroska cannot hold negative times: the muxer would shift every stream
            p.stream = self.ost
            self.output.mux(p)
            return
        try:
            frames = self.ist.codec_context.decode(p)
        except av.FFmpegError as e:
            raise InputError(f"{self.path}: corrupt audio at {start:.3f}s: {e}") from e
        for f in frames:
            self._encode_frame(f, cut)

    def _encode_frame(self, f: av.AudioFrame, cut: Optional[float]) -> None:
        t0 = float(f.pts * f.time_base) if f.pts is not None else None
        lo = (self.t_start if (self.trim and self.t_start is not None)
              else (0.0 if self.output.format.name in ("webm", "matroska") else None))
        if t0 is not None and (lo is not None or cut is not None):
            n = f.samples
            rate = f.sample_rate
            a = 0
            b = n
            if lo is not None and t0 < lo:
                a = min(n, int(round((lo - t0) * rate)))
            if cut is not None:
                b = max(a, min(n, int(round((cut - t0) * rate))))
            if a >= b:
                return
            if a > 0 or b < n:
                arr = f.to_ndarray()
                sub = (arr[:, a:b] if f.format.is_planar
                       else arr[:, a * len(f.layout.channels):b * len(f.layout.channels)])
                g = av.AudioFrame.from_ndarray(np.ascontiguousarray(sub), format=f.format.name, layout=f.layout.name)
                g.sample_rate = rate
                g.pts = None
                t0 = t0 + a / rate
                f = g
        if self.next_pts is None:
            self.next_pts = int(round((t0 or 0.0) * self.rate))
        f.pts = None
        for r in self.resampler.resample(f):
            self._emit(r)

    def _emit(self, r: av.AudioFrame) -> None:
        r.pts = self.next_pts
        r.time_base = Fraction(1, self.rate)
        self.next_pts += r.samples
        for pk in self.ost.encode(r):
            self.output.mux(pk)

    def finish(self, until: Optional[float]) -> None:
        self.pump(until, final=True)
        if not self.copy:
            try:
                rest = self.ist.codec_context.decode(None)
            except av.FFmpegError:
                rest = []
            for f in rest:
                self._encode_frame(f, until)
            if self.next_pts is not None:
                for r in self.resampler.resample(None):
                    self._emit(r)
            for pk in self.ost.encode(None):
                self.output.mux(pk)

    def close(self) -> None:
        try:
            self.src.close()
        except Exception:
            pass


# ---------------------------------------------------------------------------------------- writer

def _cleanup(paths: list) -> None:
    for p in paths:
        try:
            if os.path.isdir(p):
                shutil.rmtree(p, ignore_errors=True)
            elif os.path.lexists(p):
                os.unlink(p)
        except OSError:
            pass


class VideoWriter:
    """Write batches to `path` in the format `kind` (see output_kind); push(None) finishes.

    info: the input's VideoInfo (size, time base, colour, timecode, audio).
    matte: write the alpha as a grey picture (white = opaque) instead of colour.
    audio: carry the input's audio (not for PNG).
    frames: the inclusive (A, B) input range being written (B may be None): audio is trimmed to the
        range's span, a timecode is offset by A, timestamps are kept as they are.
    overwrite: replace an existing output (checked here, before any work). PNG sequences only ever
        touch the files of the frames they write: render-farm chunks can share a folder, and a stale
        frame outside this run's range stays where it is.
    threads: encoder and colour-conversion threads (0 = FFmpeg's choice).
    metadata: container-level tags (str -> str) for .mov/.mp4/.webm, e.g. the render-farm part record
        `bgvid join` reads (see _join.PART_TAG); ignored for PNG. .mov/.mp4 store them as QuickTime
        `mdta` keys (movflags use_metadata_tags); Matroska upper-cases tag names (read them back with
        case-insensitive keys).
    Use as a context manager: an exception inside the block aborts (nothing under the final name), a
    clean exit finishes.
    """

    def __init__(self, path: PathLike, *, info: VideoInfo, kind: OutputKind, matte: bool = False,
                 audio: bool = True, frames: Optional[tuple[int, Optional[int]]] = None,
                 overwrite: bool = False, threads: int = 0, metadata: Optional[dict] = None,
                 h264: str = "libx264"):
        self.path = os.fspath(path)
        self.metadata = {str(k): str(v) for k, v in (metadata or {}).items()}
        self._tagged = metadata is not None
        self.info = info
        self.kind = kind
        self.matte = matte
        self.frames = frames
        self.overwrite = overwrite
        self.threads = int(threads or 0)
        self.h264 = h264  # "libx264" (CPU threads) or "h264_nvenc" (a GPU's video encoder)
        self.deep = info.bit_depth > 8
        self.download = _numpy  # device -> host, for batches that bring device planes (the app sets its device's)
        self._temps: list[str] = []
        self._finished = False
        self._aborted = False
        self._container = None
        self._stream = None
        self._audio: Optional[_Audio] = None
        self._pool = None
        self._count = 0
        self._last_pts: Optional[int] = None
        self._last_in: Optional[tuple[int, Fraction]] = None
        self._first_time: Optional[float] = None
        self._last_time: Optional[float] = None
        self._finalizer = weakref.finalize(self, _cleanup, self._temps)
        if kind not in ("prores", "webm", "png", "mp4"):
            raise InputError(f"{self.path}: unknown output kind {kind!r}")

        self.sequence = kind == "png" and (is_pattern(self.path) or not self.path.lower().endswith(".png")
                                           or os.path.isdir(self.path))
        self._check_target()
        try:
            if kind == "png":
                self._open_png()
            else:
                self._open_av(audio)
        except BaseException:
            self.abort()
            raise

    # ----------------------------------------------------------------------------- set-up
    def _same_as_input(self, target: str) -> bool:
        src = self.info.path
        try:
            return os.path.exists(src) and os.path.exists(target) and os.path.samefile(src, target)
        except OSError:
            return False

    def _check_target(self) -> None:
        p = self.path
        if self.sequence:
            if is_pattern(p):
                self.seq_dir = os.path.dirname(p) or "."
                self.seq_name = os.path.basename(p)
            else:
                self.seq_dir = p.rstrip("/" + os.sep) or p
                self.seq_name = "%06d.png"
            target_dir = self.seq_dir
            parent = os.path.dirname(os.path.abspath(target_dir))
            if os.path.exists(target_dir) and not os.path.isdir(target_dir):
                raise InputError(f"{target_dir}: exists and is not a folder")
            if os.path.isdir(target_dir):
                if self._same_as_input(target_dir) and os.path.isdir(self.info.path):
                    raise InputError(f"{target_dir}: is the input folder; write the sequence elsewhere")
                if not os.access(target_dir, os.W_OK | os.X_OK):
                    raise InputError(f"{target_dir}: output folder is not writable")
                clash = self._sequence_clash()
                if clash and not self.overwrite:
                    raise InputError(f"{clash}: already exists (--force replaces it)")
            else:
                self._check_parent(parent)
            return
        if os.path.isdir(p):
            raise InputError(f"{p}: is a folder; name a file ({SUPPORTED})")
        if self._same_as_input(p):
            raise InputError(f"{p}: is the input; bgvid never writes over its input")
        if os.path.lexists(p) and not self.overwrite:
            raise InputError(f"{p}: already exists (--force replaces it)")
        self._check_parent(os.path.dirname(os.path.abspath(p)))
        if self.kind == "png" and not self.info.is_image:
            n = self._planned_count()
            if n is None or n > 1:
                raise InputError(f"{p}: a .png holds one picture but the input is a video; "
                                 "write a folder or a pattern such as frames/%06d.png")

    @staticmethod
    def _check_parent(parent: str) -> None:
        if not os.path.isdir(parent):
            raise InputError(f"{parent}: output folder does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise InputError(f"{parent}: output folder is not writable")

    def _planned_count(self) -> Optional[int]:
        n = self.info.frame_count
        if self.frames is None:
            return n
        a, b = self.frames
        if b is not None:
            return b - a + 1
        return None if n is None else max(0, n - a)

    def _planned_indices(self) -> Optional[range]:
        a = 0 if self.frames is None else int(self.frames[0])
        b = None if self.frames is None else self.frames[1]
        if b is None:
            if self.info.frame_count is None:
                return None
            b = self.info.frame_count - 1
        return range(a, int(b) + 1)

    def _sequence_clash(self) -> Optional[str]:
        idx = self._planned_indices()
        if idx is not None:
            for i in idx:
                f = os.path.join(self.seq_dir, self.seq_name % i)
                if os.path.lexists(f):
                    return f
            return None
        start = 0 if self.frames is None else int(self.frames[0])
        m = re.search(r"%(0?\d*)d", self.seq_name)
        rx = re.compile(re.escape(self.seq_name[: m.start()]) + r"(\d+)" + re.escape(self.seq_name[m.end():]) + r"\Z")
        for n in sorted(os.listdir(self.seq_dir)):
            mm = rx.match(n)
            if mm and int(mm.group(1)) >= start:
                return os.path.join(self.seq_dir, n)
        return None

    def _temp_name(self, target: str) -> str:
        d, name = os.path.split(os.path.abspath(target))
        stem, ext = os.path.splitext(name)
        return os.path.join(d, f".{stem}.bgvid-tmp-{os.getpid()}{ext}")

    def _open_png(self) -> None:
        if self.sequence:
            if os.path.isdir(self.seq_dir):
                tmp = os.path.join(self.seq_dir, f".bgvid-tmp-{os.getpid()}")
            else:
                tmp = self._temp_name(self.seq_dir.rstrip("/" + os.sep))
            self._mkdir_temp(tmp)
            self._tmp = tmp
        else:
            self._tmp = self._temp_name(self.path)
            self._touch(self._tmp)

    def _mkdir_temp(self, tmp: str) -> None:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        try:
            os.mkdir(tmp)
        except OSError as e:
            raise InputError(f"{os.path.dirname(tmp)}: cannot write there ({e.strerror})") from e
        self._temps.append(tmp)

    def _touch(self, tmp: str) -> None:
        try:
            with open(tmp, "wb"):
                pass
        except OSError as e:
            raise InputError(f"{os.path.dirname(tmp)}: cannot write there ({e.strerror})") from e
        self._temps.append(tmp)

    def _open_av(self, audio: bool) -> None:
        info = self.info
        kind = self.kind
        self._tmp = self._temp_name(self.path)
        self._touch(self._tmp)
        tb_in = Fraction(info.time_base) if info.time_base else Fraction(1, 25)
        rate = Fraction(info.average_rate) if info.average_rate else Fraction(25)
        options = {}
        if kind == "webm":
            self.tb = Fraction(1, 1000)
            fmt = "webm"
        else:
            den = tb_in.denominator
            if den > 0x7FFFFFFF:
                den = 90000
            self.tb = Fraction(1, den)
            fmt = "mov" if kind == "prores" else "mp4"
            # movie timescale: a multiple of the track's (so the edit list holding a late start is exact)
            # and at least 1000 (audio edits in it stay within a millisecond)
            movie = den * max(1, -(-1000 // den))
            options = {"video_track_timescale": str(den), "movie_timescale": str(movie)}
            flags = ("+faststart" if kind == "mp4" else "") + ("+use_metadata_tags" if self._tagged else "")
            if flags:
                options["movflags"] = flags
        try:
            self._container = av.open(self._tmp, "w", format=fmt, options=options)
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"{os.path.dirname(self._tmp)}: cannot write there ({e})") from e
        c = self._container
        for key, value in self.metadata.items():
            c.metadata[key] = value
        if kind == "prores":
            st = c.add_stream(PRORES_CODEC, rate=rate,
                              options=dict(PRORES_MATTE_OPTIONS if self.matte else PRORES_OPTIONS))
            st.pix_fmt = "yuv422p10le" if self.matte else "yuva444p10le"
            st.codec_context.codec_tag = "apch" if self.matte else "ap4h"
            self.enc_w, self.enc_h = info.width, info.height
        elif kind == "webm":
            st = c.add_stream("libvpx-vp9", rate=rate, options=dict(VP9_OPTIONS))
            st.pix_fmt = "yuv420p" if self.matte else "yuva420p"
            self.enc_w, self.enc_h = info.width, info.height
        else:
            st = c.add_stream(self.h264, rate=rate,
                              options=dict(NVENC_OPTIONS if self.h264 == "h264_nvenc" else X264_OPTIONS))
            st.pix_fmt = "yuv420p"
            self.enc_w, self.enc_h = info.width + info.width % 2, info.height + info.height % 2
        st.width, st.height = self.enc_w, self.enc_h
        st.time_base = self.tb
        st.codec_context.time_base = self.tb
        if self.threads:
            st.codec_context.thread_count = self.threads
        if kind == "prores":
            # prores_ks threads by frame, not by slice (PyAV's default type): 17 ms instead of 32 ms
            # per 720p 4444 frame on 2 cores, and the same bitstream byte for byte.
            st.codec_context.thread_type = "FRAME"
        cc = st.codec_context
        cc.color_range = 1
        cc.color_primaries = info.color.primaries
        cc.color_trc = info.color.transfer
        cc.colorspace = info.color.matrix
        if kind == "prores" and info.timecode:
            start = 0 if self.frames is None else int(self.frames[0])
            st.metadata["timecode"] = offset_timecode(info.timecode, start, info.average_rate)
        self._stream = st
        self._frame_dur = max(1, int(round(1 / (rate * self.tb)))) if rate else 1
        if audio and info.has_audio and not info.is_image:
            trim = self.frames is not None and (int(self.frames[0]) > 0 or self.frames[1] is not None)
            try:
                self._audio = _Audio(info, c, kind, trim)
            except InputError:
                raise
            except (av.FFmpegError, IndexError) as e:
                raise InputError(f"{info.path}: cannot read its audio ({e})") from e

    def update_metadata(self, tags: dict) -> None:
        """Add container tags before the first push (the header is written with the first frame).
        Needs metadata= (even {}) at construction for .mov/.mp4, whose muxer option is set then."""
        if self._count:
            raise BgvidError(f"{self.path}: container tags must be set before the first frame")
        for key, value in tags.items():
            self.metadata[str(key)] = str(value)
            if self._container is not None:
                self._container.metadata[str(key)] = str(value)

    # ------------------------------------------------------------------------------- writing
    def plane_spec(self):
        """What a device should hand this writer (kernels._planes.PlaneSpec): the encoder's pixel format
        with the output's colour matrix, so the frame path's one download is of encoder-ready planes."""
        from ..kernels._planes import PlaneSpec

        if self.kind == "png":
            if self.matte:
                return PlaneSpec("gray16", matte=True)
            return PlaneSpec("rgba64" if self.deep else "rgba")
        return PlaneSpec(self._stream.pix_fmt, matrix=int(self.info.color.matrix), matte=self.matte,
                         pad_even=self.kind == "mp4")

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._finished and not self._aborted:
            self.push(None)

    def push(self, batch: Optional[FrameBatch]) -> None:
        """Encode a batch; None finishes the file (flush, mux remaining audio, rename into place)."""
        if self._finished or self._aborted:
            raise BgvidError(f"{self.path}: the writer is already {'finished' if self._finished else 'aborted'}")
        try:
            if batch is None:
                self._finish()
            else:
                self._push(batch)
        except BaseException as e:
            self.abort()
            if isinstance(e, (OSError, av.FFmpegError)) and _disk_full(e):
                raise BgvidError(f"{self.path}: disk full while writing ({getattr(e, 'strerror', e)}); "
                                 "the partial output was removed") from e
            if isinstance(e, av.FFmpegError):
                raise BgvidError(f"{self.path}: encoding failed: {e}") from e
            if isinstance(e, OSError) and not isinstance(e, BgvidError):
                raise BgvidError(f"{self.path}: writing failed: {e}") from e
            raise

    def _push(self, batch: FrameBatch) -> None:
        if batch.planes is not None:
            self._push_planes(batch)
            return
        rgb = _numpy(batch.rgb)
        alpha = _numpy(batch.alpha)
        n = len(batch)
        h, w = self.info.height, self.info.width
        if rgb is not None and rgb.shape[1:3] != (h, w):
            raise BgvidError(f"{self.path}: frame size {rgb.shape[2]}x{rgb.shape[1]} differs from the "
                             f"input's {w}x{h}")
        pts_arr = None if batch.pts is None else np.asarray(batch.pts)
        tb = Fraction(batch.time_base) if batch.time_base else self.info.time_base
        if self.kind == "png" and self.sequence and n > 1:
            self._push_png_parallel(batch, rgb, alpha, pts_arr, tb)
            return
        for i in range(n):
            index = int(batch.frame_index[i])
            pts_in = None if pts_arr is None else int(pts_arr[i])
            a = None if alpha is None else alpha[i]
            self._write_one(index, pts_in, tb, rgb[i], a)

    def _push_planes(self, batch: FrameBatch) -> None:
        """A batch whose planes were made on a device: the frame path's one download, then straight into
        encoder frames (no colour conversion here)."""
        planes = batch.planes.download(self.download)
        pts_arr = None if batch.pts is None else np.asarray(batch.pts)
        tb = Fraction(batch.time_base) if batch.time_base else self.info.time_base
        for i in range(len(batch)):
            index = int(batch.frame_index[i])
            pts_in = None if pts_arr is None else int(pts_arr[i])
            self._write_one(index, pts_in, tb, None, None, planes=(planes, i))

    def _push_png_parallel(self, batch, rgb, alpha, pts_arr, tb) -> None:
        """PNG encoding (zlib) dominates PNG output: encode a batch's frames on a few threads (OpenCV
        releases the GIL)."""
        if self._pool is None:
            from concurrent.futures import ThreadPoolExecutor

            self._pool = ThreadPoolExecutor(max_workers=self.threads or min(4, os.cpu_count() or 1),
                                            thread_name_prefix="bgvid-png")
        jobs = []
        for i in range(len(batch)):
            index = int(batch.frame_index[i])
            pts_in = None if pts_arr is None else int(pts_arr[i])
            _, t = self._out_pts(index, pts_in, tb)
            if self._first_time is None:
                self._first_time = t
            self._last_time = t
            self._count += 1
            a = None if alpha is None else alpha[i]
            jobs.append(self._pool.submit(self._write_png, index, rgb[i], a))
        for j in jobs:
            j.result()

    def _out_pts(self, index: int, pts_in: Optional[int], tb: Fraction) -> tuple[int, float]:
        if pts_in is None:
            rate = Fraction(self.info.average_rate or 25)
            t = Fraction(index) / rate
        else:
            t = pts_in * tb
        if self.kind == "png":
            return 0, float(t)
        pts = int(math.floor(t / self.tb + Fraction(1, 2)))
        if self._last_pts is not None and pts <= self._last_pts:
            pts = self._last_pts + 1  # keep timestamps strictly increasing after rounding
        return pts, float(t)

    def _write_one(self, index: int, pts_in: Optional[int], tb: Fraction, rgb: Optional[np.ndarray],
                   alpha: Optional[np.ndarray], planes=None) -> None:
        pts, t = self._out_pts(index, pts_in, tb)
        if self._first_time is None:
            self._first_time = t
            if self._audio is not None and self._audio.trim:
                self._audio.t_start = t
        self._last_time = t
        self._count += 1
        if self.kind == "png":
            self._write_png(index, rgb, alpha, planes=planes)
            return
        frame = self._video_frame(rgb, alpha) if planes is None else self._planes_frame(*planes)
        frame.pts = pts
        frame.time_base = self.tb
        frame.duration = self._frame_dur
        self._last_pts = pts
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        if self._audio is not None:
            self._audio.pump(t)

    def _video_frame(self, rgb: np.ndarray, alpha: Optional[np.ndarray]) -> av.VideoFrame:
        kind, color = self.kind, self.info.color
        if self.matte:
            a = np.ones(rgb.shape[:2], np.float32) if alpha is None else alpha
            if kind == "prores":
                return _grey_yuv(a, "yuv422p10le", tag=color)
            if kind == "mp4":
                a = _pad_even(a)
            return _grey_yuv(a, "yuv420p", tag=color)
        if kind == "mp4":
            rgb = _pad_even(rgb)
        src_fmt = "rgb48le" if rgb.dtype == np.uint16 else "rgb24"
        if rgb.dtype not in (np.uint8, np.uint16):
            raise BgvidError(f"{self.path}: frames must be uint8 or uint16, got {rgb.dtype}")
        src = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=src_fmt)
        dst_fmt = self._stream.pix_fmt
        frame = src.reformat(format=dst_fmt, dst_colorspace=sws_colorspace(color.matrix), dst_color_range=1,
                             threads=self.threads or None)
        if kind in ("prores", "webm"):
            bits = 10 if kind == "prores" else 8
            a = np.ones(rgb.shape[:2], np.float32) if alpha is None else alpha
            _set_plane(frame, 3, _quantize(a, (1 << bits) - 1, np.uint16 if bits > 8 else np.uint8))
        _tag(frame, color)
        return frame

    def _planes_frame(self, planes, i: int) -> av.VideoFrame:
        frame = av.VideoFrame(self.enc_w, self.enc_h, planes.pix_fmt)
        for k in range(len(planes.shapes)):
            _set_plane(frame, k, planes.plane(i, k))
        _tag(frame, self.info.color)
        return frame

    def _png_bytes(self, rgb: np.ndarray, alpha: Optional[np.ndarray], planes=None) -> bytes:
        import cv2

        if planes is not None:
            ok, buf = cv2.imencode(".png", np.ascontiguousarray(planes[0].plane(planes[1], 0)),
                                   [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
            if not ok:
                raise BgvidError(f"{self.path}: PNG encoding failed")
            return buf.tobytes()

        if self.matte:
            a = np.ones(rgb.shape[:2], np.float32) if alpha is None else alpha
            img = _quantize(a, 65535, np.uint16)
        else:
            deep = self.deep or rgb.dtype == np.uint16
            if deep:
                c = rgb if rgb.dtype == np.uint16 else rgb.astype(np.uint16) * 257
                top, dtype = 65535, np.uint16
            else:
                c, top, dtype = rgb, 255, np.uint8
            img = np.empty(rgb.shape[:2] + (4,), dtype=dtype)
            img[..., 0] = c[..., 2]  # OpenCV writes BGRA
            img[..., 1] = c[..., 1]
            img[..., 2] = c[..., 0]
            img[..., 3] = top if alpha is None else _quantize(alpha, top, dtype)
        ok, buf = cv2.imencode(".png", img, [cv2.IMWRITE_PNG_COMPRESSION, PNG_COMPRESSION])
        if not ok:
            raise BgvidError(f"{self.path}: PNG encoding failed")
        return buf.tobytes()

    def _write_png(self, index: int, rgb: Optional[np.ndarray], alpha: Optional[np.ndarray], planes=None) -> None:
        data = self._png_bytes(rgb, alpha, planes)
        if self.sequence:
            target = os.path.join(self._tmp, self.seq_name % index)
        else:
            if self._count > 1:
                raise BgvidError(f"{self.path}: a .png holds one picture; write a folder or a %06d.png pattern")
            target = self._tmp
        with open(target, "wb") as f:
            f.write(data)

    # ------------------------------------------------------------------------------ finishing
    def _finish(self) -> None:
        if self._count == 0:
            raise BgvidError(f"{self.path}: no frames to write")
        if self.kind == "png":
            self._stop_pool()
            self._place_png()
        else:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
            if self._audio is not None:
                until = None
                if self._audio.trim and self.frames is not None and self.frames[1] is not None:
                    until = self._last_time + float(self._frame_dur * self.tb)
                self._audio.finish(until)
                self._audio.close()
                self._audio = None
            self._container.close()
            self._container = None
            os.replace(self._tmp, self.path)
            self._temps.remove(self._tmp)
        self._finished = True

    def _place_png(self) -> None:
        if not self.sequence:
            os.replace(self._tmp, self.path)
            self._temps.remove(self._tmp)
            return
        tmp, dest = self._tmp, self.seq_dir
        if not os.path.exists(dest) and os.path.dirname(os.path.abspath(tmp)) == os.path.dirname(os.path.abspath(dest)):
            os.rename(tmp, dest)
            self._temps.remove(tmp)
            return
        os.makedirs(dest, exist_ok=True)
        for name in sorted(os.listdir(tmp)):
            os.replace(os.path.join(tmp, name), os.path.join(dest, name))
        os.rmdir(tmp)
        self._temps.remove(tmp)

    def _stop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def abort(self) -> None:
        """Stop and delete the temporary output; nothing appears under the final name. Idempotent."""
        if self._finished:
            return
        self._aborted = True
        self._stop_pool()
        if self._audio is not None:
            self._audio.close()
            self._audio = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception:
                pass
            self._container = None
        _cleanup(self._temps)
        self._temps.clear()
