"""Decoding: videos, still images and image sequences -> batches of RGB frames (PyAV).

Inputs
    * a video file (anything FFmpeg demuxes; WebM/Matroska VP8/VP9 with alpha is decoded with libvpx so
      the alpha plane survives, though the alpha of an input plays no part in segmentation);
    * a single still image (IMAGE_EXTENSIONS): a 1-frame video, ``info.is_image = True``;
    * a folder of images, sorted by name (digit runs compared as numbers, hidden files skipped), or a
      printf pattern such as ``frames/%05d.png`` (files ordered by their number): an image-sequence
      video at 25 fps (time base 1/25, pts = position in the sequence).

Frames
    ``FrameBatch.rgb`` is [N, H, W, 3] uint8, or uint16 at full 16-bit scale when ``info.bit_depth > 8``,
    straight from the decoder in presentation order, turned to the displayed orientation (display matrix,
    multiples of 90 degrees; flips are ignored). YUV is converted with the input's own matrix and range;
    an untagged input is read the way players read it: BT.601 below 720 lines, BT.709 from 720 lines up
    (``info.color`` records what was assumed, so the writer converts back with the same matrix).
    ``frame_index`` counts decoded frames from 0; ``pts`` is in the input stream's time base (made up
    from the frame rate where the container has none).

Frame ranges are inclusive: ``frames=(A, B)`` yields input frames A..B, ``(A, None)`` A..end. Frames
before A are decoded and dropped (no seeking yet); decoding stops after B.
"""

from __future__ import annotations

import os
import re
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import av
import numpy as np

from ..errors import InputError
from ..frames import ColorInfo, FrameBatch, VideoInfo

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
SEQUENCE_RATE = Fraction(25)  # frame rate given to image sequences and stills

PathLike = Union[str, os.PathLike]

_PATTERN_RE = re.compile(r"%(0?\d*)d")
_SWS_MATRIX = {1: 1, 4: 4, 5: 5, 6: 6, 7: 7, 9: 9, 10: 9}  # AVColorSpace -> swscale colorspace


# ----------------------------------------------------------------------------------------- helpers

def is_pattern(path: PathLike) -> bool:
    """True for printf-style sequence names such as ``frames/%05d.png``."""
    return bool(_PATTERN_RE.search(os.path.basename(os.fspath(path))))


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def _is_image_name(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def list_sequence(path: PathLike) -> list[Path]:
    """Image files of a folder (natural name order) or of a printf pattern (by number)."""
    path = Path(path)
    if path.is_dir():
        names = sorted((n for n in os.listdir(path) if _is_image_name(n) and (path / n).is_file()), key=_natural_key)
        return [path / n for n in names]
    folder = path.parent
    base = path.name
    m = _PATTERN_RE.search(base)
    assert m is not None
    width = m.group(1)
    digits = r"\d+" if not width else (r"\d{%d,}" % int(width) if width.startswith("0") else r"\d+")
    rx = re.compile(re.escape(base[: m.start()]) + "(" + digits + ")" + re.escape(base[m.end():]) + r"\Z")
    if not folder.is_dir():
        raise InputError(f"{path}: folder {folder} does not exist")
    found = []
    for n in os.listdir(folder):
        mm = rx.match(n)
        if mm and not n.startswith("."):
            found.append((int(mm.group(1)), n))
    found.sort()
    return [folder / n for _, n in found]


def _guess_color(primaries: int, transfer: int, matrix: int, height: int, is_rgb: bool) -> ColorInfo:
    """Fill unspecified tags: BT.601 (525 or 625 line) below 720 lines, BT.709 otherwise; RGB sources
    (PNG, JPEG decoded to RGB, gbrp) are taken as BT.709."""
    sd = height < 720 and not is_rgb
    if primaries in (0, 2, 3):
        primaries = (5 if height == 576 else 6) if sd else 1
    if transfer in (0, 2, 3):
        transfer = 6 if sd else 1
    if matrix in (0, 2, 3):
        matrix = (5 if height == 576 else 6) if sd else 1
    return ColorInfo(primaries=int(primaries), transfer=int(transfer), matrix=int(matrix))


def _frame_color(frame: av.VideoFrame) -> ColorInfo:
    """The colour a decoded frame is tagged with, unspecified tags guessed (JPEG: BT.601 full range)."""
    matrix = frame.colorspace
    if matrix in (0, 2) and frame.format.name.startswith("yuvj"):
        matrix = 5  # JFIF
    return _guess_color(frame.color_primaries, frame.color_trc, matrix, frame.height, _is_rgb(frame.format))


def sws_colorspace(matrix: int) -> int:
    """AVColorSpace -> the swscale colorspace PyAV's reformat takes (BT.709 for unknown ones)."""
    return _SWS_MATRIX.get(int(matrix), 1)


def _rotation_of(frame: av.VideoFrame) -> int:
    try:
        rot = float(frame.rotation or 0)
    except Exception:
        return 0
    k = int(round(rot / 90.0)) % 4
    return {0: 0, 1: 90, 2: 180, 3: -90}[k]


def _rotate(arr: np.ndarray, rotation: int) -> np.ndarray:
    """Turn a decoded [H, W, C] picture counter-clockwise by `rotation` degrees (display matrix angle,
    as FFmpeg's autorotate does)."""
    if rotation == 0:
        return arr
    return np.rot90(arr, k=(rotation // 90) % 4)


def _depth_of(fmt: av.VideoFormat) -> int:
    bits = [c.bits for c in fmt.components if not c.is_alpha]
    return max(bits) if bits else 8


def _is_rgb(fmt: av.VideoFormat) -> bool:
    return bool(fmt.is_rgb) or fmt.name.startswith(("gray", "ya", "pal", "monob", "monow"))


def _to_rgb(frame: av.VideoFrame, *, deep: bool, color: ColorInfo, size: Optional[tuple[int, int]] = None,
            threads: Optional[int] = None) -> np.ndarray:
    """Decoded frame -> [H, W, 3] uint8 (uint16 when deep) with the given matrix, the frame's own range."""
    kw = {}
    if not _is_rgb(frame.format):
        kw["src_colorspace"] = sws_colorspace(color.matrix)
        rng = frame.color_range
        if frame.format.name.startswith("yuvj"):
            rng = 2
        kw["src_color_range"] = 2 if rng == 2 else 1
    if size is not None and (frame.width, frame.height) != size:
        kw["width"], kw["height"] = size
    out = frame.reformat(format="rgb48le" if deep else "rgb24", threads=threads, **kw)
    return out.to_ndarray()


def _alpha_of(frame: av.VideoFrame) -> Optional[np.ndarray]:
    """The alpha plane of a planar YUVA / GBRA frame as uint16 0..65535, exactly rescaled; None if none."""
    comps = frame.format.components
    alpha = [c for c in comps if c.is_alpha]
    if not alpha or not frame.format.is_planar:
        return None
    c = alpha[0]
    plane = frame.planes[c.plane]
    dtype = np.dtype("<u2") if c.bits > 8 else np.dtype(np.uint8)
    if frame.format.is_big_endian and c.bits > 8:
        dtype = np.dtype(">u2")
    row = plane.line_size // dtype.itemsize
    a = np.frombuffer(plane, dtype=dtype).reshape(plane.height, row)[:, : plane.width]
    top = (1 << c.bits) - 1
    return np.round(a.astype(np.float64) * (65535.0 / top)).astype(np.uint16)


# ------------------------------------------------------------------------------------ the decoder

class _StreamDecoder:
    """One video stream of a container, decoded in presentation order with errors made readable."""

    def __init__(self, path: str, *, threads: int = 0, alpha: bool = False):
        self.path = path
        self.container = _open_container(path)
        try:
            streams = [s for s in self.container.streams.video
                       if not (s.disposition & av.stream.Disposition.attached_pic)]
            if not streams:
                kinds = sorted({s.type for s in self.container.streams}) or ["no streams"]
                raise InputError(f"{path}: no video stream (the file holds {', '.join(kinds)})")
            self.stream = streams[0]
            self.stream.codec_context.thread_type = "AUTO"
            self.stream.codec_context.thread_count = threads
            name = self.stream.codec_context.name
            self.ctx = None  # a separate decoder (libvpx, to keep VP8/VP9 alpha)
            wants_alpha = alpha or self.stream.metadata.get("alpha_mode") == "1" or \
                self.stream.metadata.get("ALPHA_MODE") == "1"
            if wants_alpha and name in ("vp9", "vp8"):
                lib = "libvpx-vp9" if name == "vp9" else "libvpx"
                try:
                    self.ctx = av.CodecContext.create(lib, "r")
                    self.ctx.thread_count = threads
                except Exception:  # libvpx missing: native decoder, alpha lost
                    self.ctx = None
            self.codec_name = name  # the stream's codec (the decoder may be libvpx)
        except BaseException:
            self.container.close()
            raise
        self.decoded = 0
        self.seeked = False

    def seek(self, pts: int) -> None:
        """Position the demuxer on the keyframe at or before pts (stream time base)."""
        self.container.seek(pts, stream=self.stream, backward=True, any_frame=False)
        self.seeked = True

    def frames(self) -> Iterator[av.VideoFrame]:
        """Every frame in presentation order; raises InputError on corrupt or truncated data."""
        dec = self.ctx if self.ctx is not None else self.stream.codec_context
        it = self.container.demux(self.stream)
        while True:
            try:
                packet = next(it)
            except StopIteration:
                break
            except av.FFmpegError as e:
                raise InputError(f"{self.path}: unreadable data at frame {self.decoded}: {_msg(e)}") from e
            try:
                if packet.size == 0 and self.ctx is not None:
                    out = dec.decode(None)
                else:
                    out = dec.decode(packet)
            except av.EOFError:
                out = []
            except av.FFmpegError as e:
                raise InputError(f"{self.path}: corrupt data at frame {self.decoded}: {_msg(e)}") from e
            for f in out:
                self.decoded += 1
                yield f
        self._check_complete()

    def _check_complete(self) -> None:
        expected = self.stream.frames or 0
        if self.seeked or expected <= 0 or self.decoded >= expected:
            return
        try:
            entries = self.stream.index_entries
            ends = [e.pos + e.size for e in entries if e.pos >= 0]
            size = os.path.getsize(self.path)
        except Exception:
            ends, size = [], None
        if ends and size is not None and max(ends) <= size:
            return  # every sample is in the file: an edit list hides some, nothing is missing
        raise InputError(f"{self.path}: truncated at frame {self.decoded} of {expected}")

    def close(self) -> None:
        try:
            self.container.close()
        except Exception:
            pass


def _msg(e: BaseException) -> str:
    s = getattr(e, "strerror", None) or str(e)
    return str(s)


def _open_container(path: str):
    try:
        return av.open(path, "r")
    except av.FFmpegError as e:
        raise InputError(f"{path}: not a video or image FFmpeg can read ({_msg(e)})") from e
    except OSError as e:  # permissions etc.
        raise InputError(f"{path}: cannot be opened ({e.strerror or e})") from e


def _check_path(path: PathLike) -> str:
    p = os.fspath(path)
    if "://" in p:
        return p
    if is_pattern(p):
        return p
    if not os.path.exists(p):
        raise InputError(f"{p}: no such file or folder")
    if os.path.isdir(p):
        return p
    if not os.path.isfile(p):
        raise InputError(f"{p}: not a regular file")
    if os.path.getsize(p) == 0:
        raise InputError(f"{p}: the file is empty")
    return p


def _decode_image(path: Path) -> av.VideoFrame:
    """First frame of an image file, or InputError naming it."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise InputError(f"{path}: the file is empty")
    dec = _StreamDecoder(str(path))
    try:
        for f in dec.frames():
            return f
    finally:
        dec.close()
    raise InputError(f"{path}: holds no picture")


# ------------------------------------------------------------------------------------------ probe

def probe(path: PathLike) -> VideoInfo:
    """What `path` is: a video, a still image, or an image sequence (folder or %d pattern).

    Raises InputError "<path>: <what is wrong>" for a missing or empty file, a file FFmpeg cannot read,
    a file without a video stream, or a folder/pattern without images. Decodes the first frame (for the
    display rotation and the real pixel format)."""
    p = _check_path(path)
    if os.path.isdir(p) or is_pattern(p):
        return _probe_sequence(p)
    dec = _StreamDecoder(p)
    try:
        s = dec.stream
        first = next(dec.frames(), None)
        if first is None:
            raise InputError(f"{p}: the video stream holds no decodable frame")
        fmt = first.format
        rotation = _rotation_of(first)
        cc = s.codec_context
        def tag(stream_value: int, frame_value: int) -> int:
            return frame_value if stream_value in (None, 2) else stream_value

        color = _guess_color(tag(cc.color_primaries, first.color_primaries), tag(cc.color_trc, first.color_trc),
                             tag(cc.colorspace, first.colorspace), first.height, _is_rgb(fmt))
        cname = (dec.container.format.name or "")
        is_image = (p.lower().endswith(IMAGE_EXTENSIONS) or cname.endswith("_pipe") or cname == "image2") \
            and (s.frames or 0) <= 1
        w, h = first.width, first.height
        if rotation in (90, -90):
            w, h = h, w
        timecode = s.metadata.get("timecode") or dec.container.metadata.get("timecode")
        if timecode is None:
            for other in dec.container.streams:
                if other.type == "data" and other.metadata.get("timecode"):
                    timecode = other.metadata["timecode"]
                    break
        if is_image:
            count, tb, rate = 1, Fraction(1, 25), SEQUENCE_RATE
            color = ColorInfo()  # stills are sRGB: written out as BT.709
        else:
            count = s.frames if (s.frames or 0) > 0 else None
            tb = Fraction(s.time_base) if s.time_base else Fraction(1, 25)
            rate = s.average_rate or s.guessed_rate or s.base_rate
            rate = Fraction(rate) if rate else None
        return VideoInfo(
            path=p, width=w, height=h, frame_count=count, time_base=tb, average_rate=rate,
            bit_depth=_depth_of(fmt), rotation=rotation, color=color,
            has_audio=(not is_image) and len(dec.container.streams.audio) > 0,
            timecode=timecode, is_image=is_image, codec=dec.codec_name,
        )
    finally:
        dec.close()


def _probe_sequence(p: str) -> VideoInfo:
    files = list_sequence(p)
    if not files:
        what = "folder" if os.path.isdir(p) else "pattern"
        raise InputError(f"{p}: the {what} matches no image files ({', '.join(IMAGE_EXTENSIONS)})")
    first = _decode_image(files[0])
    rotation = _rotation_of(first)
    w, h = first.width, first.height
    if rotation in (90, -90):
        w, h = h, w
    return VideoInfo(
        path=p, width=w, height=h, frame_count=len(files), time_base=Fraction(1, 25),
        average_rate=SEQUENCE_RATE, bit_depth=_depth_of(first.format), rotation=rotation,
        color=ColorInfo(),  # stills are sRGB: written out as BT.709
        has_audio=False, timecode=None, is_image=False, codec=files[0].suffix.lstrip(".").lower(),
    )


# ----------------------------------------------------------------------------------------- reader

SEEK_MIN_FRAMES = 48  # below this, decoding the frames before a range costs less than planning a seek


class _SeekFailed(Exception):
    """The stream did not land where its packets said it would: decode from the start instead."""


def _shown_pts(path: str, stream_index: int) -> Optional[list[int]]:
    """Presentation timestamps of every frame the decoder will show, in order, from the packets alone
    (no decoding: milliseconds for thousands of frames); None where they cannot be trusted (missing
    or repeated pts), so the caller decodes from the start as before."""
    try:
        with av.open(path) as container:
            stream = container.streams[stream_index]
            pts = []
            for packet in container.demux(stream):
                if packet.size == 0 or packet.is_discard:  # flush packets; samples an edit list hides
                    continue
                if packet.pts is None:
                    return None
                pts.append(int(packet.pts))
    except av.FFmpegError:
        return None
    pts.sort()
    if len(set(pts)) != len(pts):
        return None
    return pts


class VideoReader:
    """Decoded frames of `path` in presentation order, in batches of `batch_size`.

    frames: inclusive (A, B) range of frame indices, (A, None) for A..end; None for all. Checked here
        when the frame count is known (InputError if reversed or out of bounds), otherwise when the
        stream ends short of it.
    threads: decoder threads (0 = FFmpeg's choice, one per core).
    Use as an iterator once; close() (or a with-block) releases the file.
    """

    def __init__(self, path: PathLike, *, frames: Optional[tuple[int, Optional[int]]] = None,
                 batch_size: int = 8, threads: int = 0):
        self.info = probe(path)
        self.path = self.info.path
        self.batch_size = max(1, int(batch_size))
        self.threads = int(threads or 0)
        self.start, self.end = _check_range(self.path, frames, self.info.frame_count)
        self._ranged = frames is not None
        self._closed = False
        self._dec: Optional[_StreamDecoder] = None
        self._iter: Optional[Iterator[FrameBatch]] = None

    # context manager
    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        if self._iter is not None:
            try:
                self._iter.close()  # type: ignore[attr-defined]
            except Exception:
                pass
        if self._dec is not None:
            self._dec.close()
            self._dec = None

    def __iter__(self) -> Iterator[FrameBatch]:
        if self._iter is None:
            self._iter = self._batches()
        return self._iter

    # ---------------------------------------------------------------------------------------
    def _raw(self) -> Iterator[tuple[int, Optional[int], np.ndarray]]:
        """(index, pts, rgb) for every frame from index 0, rotated; stops after self.end."""
        info = self.info
        deep = info.bit_depth > 8
        if os.path.isdir(self.path) or is_pattern(self.path):
            files = list_sequence(self.path)
            for i, f in enumerate(files):
                if self.end is not None and i > self.end:
                    return
                if i < self.start:
                    yield i, i, None  # dropped before decoding: cheap for stills
                    continue
                frame = _decode_image(f)
                rgb = _rotate(_to_rgb(frame, deep=deep, color=_frame_color(frame)), info.rotation)
                if rgb.shape[:2] != (info.height, info.width):
                    raise InputError(f"{f}: {rgb.shape[1]}x{rgb.shape[0]}, but the sequence is "
                                     f"{info.width}x{info.height} (from {files[0].name})")
                yield i, i, rgb
            return
        if self.start >= SEEK_MIN_FRAMES and not info.is_image:
            try:
                yield from self._raw_seeking()
                return
            except _SeekFailed:
                if self._dec is not None:
                    self._dec.close()
        yield from self._raw_from_start()

    def _convert(self, frame: av.VideoFrame, index: int) -> np.ndarray:
        """A decoded frame -> upright RGB at the stream's size and depth (a still keeps its own tags)."""
        info = self.info
        coded = (info.height, info.width) if info.rotation in (90, -90) else (info.width, info.height)
        try:
            rgb = _to_rgb(frame, deep=info.bit_depth > 8, color=_frame_color(frame) if info.is_image else info.color,
                          size=coded)
        except av.FFmpegError as e:
            raise InputError(f"{self.path}: cannot convert frame {index}: {_msg(e)}") from e
        return _rotate(rgb, info.rotation)

    def _raw_seeking(self) -> Iterator[tuple[int, Optional[int], np.ndarray]]:
        """A range that starts far in: seek to the keyframe before frame `start` and decode from there.
        The frame index of each decoded frame comes from its pts' rank among all packets' pts; until
        frame `start` is proven found (its exact pts), nothing is yielded, so any surprise falls back
        to decoding from the start (_SeekFailed) with identical results."""
        self._dec = _StreamDecoder(self.path, threads=self.threads)
        dec = self._dec
        shown = _shown_pts(self.path, dec.stream.index)
        if shown is None or len(shown) <= self.start:
            raise _SeekFailed
        target = shown[self.start]
        dec.seek(target)
        index = None
        for frame in dec.frames():
            if frame.pts is None:
                if index is None:
                    raise _SeekFailed
                if index + 1 >= len(shown):
                    return
                pts = shown[index + 1]
            else:
                pts = int(frame.pts)
            if index is None:
                if pts < target:
                    continue  # from the keyframe up to the range: decoded, not converted
                if pts != target:
                    raise _SeekFailed
                index = self.start
            else:
                index += 1
            yield index, pts, self._convert(frame, index)
            if self.end is not None and index >= self.end:
                return
        if index is None:
            raise _SeekFailed

    def _raw_from_start(self) -> Iterator[tuple[int, Optional[int], np.ndarray]]:
        info = self.info
        self._dec = _StreamDecoder(self.path, threads=self.threads)
        dec = self._dec
        tb = info.time_base
        step = None
        if info.average_rate:
            step = 1 / (Fraction(info.average_rate) * tb)
        last_pts: Optional[int] = None
        index = 0
        for frame in dec.frames():
            pts = frame.pts
            if pts is None:
                if last_pts is None:
                    pts = 0
                else:
                    pts = last_pts + (int(round(step)) if step else 1)
            last_pts = pts
            if index < self.start:
                index += 1
                continue
            yield index, int(pts), self._convert(frame, index)
            if (self.end is not None and index >= self.end) or info.is_image:
                return
            index += 1

    def _batches(self) -> Iterator[FrameBatch]:
        info = self.info
        dtype = np.uint16 if info.bit_depth > 8 else np.uint8
        n = self.batch_size
        buf: list[np.ndarray] = []
        idx: list[int] = []
        pts: list[int] = []
        seen = 0
        try:
            for i, p, rgb in self._raw():
                seen = i + 1
                if rgb is None:
                    continue
                buf.append(rgb)
                idx.append(i)
                pts.append(p)
                if len(buf) == n:
                    yield _batch(buf, idx, pts, info.time_base, dtype)
                    buf, idx, pts = [], [], []
            if buf:
                yield _batch(buf, idx, pts, info.time_base, dtype)
            if self._ranged:
                _check_range_at_end(self.path, self.start, self.end, seen)
        finally:
            if self._dec is not None:
                self._dec.close()
                self._dec = None


def _batch(buf, idx, pts, tb, dtype) -> FrameBatch:
    rgb = np.empty((len(buf),) + buf[0].shape, dtype=dtype)
    for k, a in enumerate(buf):
        rgb[k] = a
    return FrameBatch(rgb=rgb, frame_index=np.asarray(idx, dtype=np.int64),
                      pts=np.asarray(pts, dtype=np.int64), time_base=Fraction(tb))


def _range_text(start: int, end: Optional[int]) -> str:
    return f"{start}-{'' if end is None else end}" if end != start else f"{start}"


def _check_range(path: str, frames, count: Optional[int]) -> tuple[int, Optional[int]]:
    if frames is None:
        return 0, None
    try:
        start, end = frames
    except (TypeError, ValueError):
        raise InputError(f"--frames {frames!r}: expected (first, last)") from None
    start = int(start)
    end = None if end is None else int(end)
    if start < 0 or (end is not None and end < 0):
        raise InputError(f"--frames {_range_text(start, end)}: frame indices start at 0")
    if end is not None and end < start:
        raise InputError(f"--frames {start}-{end}: the range is reversed ({start} > {end})")
    if count is not None:
        if start >= count or (end is not None and end >= count):
            raise InputError(f"--frames {_range_text(start, end)}: {path} has {count} frames (0-{count - 1})")
    return start, end


def _check_range_at_end(path: str, start: int, end: Optional[int], seen: int) -> None:
    if start >= seen or (end is not None and end >= seen):
        raise InputError(f"--frames {_range_text(start, end)}: {path} ended after {seen} frames "
                         f"(0-{max(seen - 1, 0)})")


# ------------------------------------------------------------------------------------- read_rgba

def read_rgba(path: PathLike) -> Iterator[tuple[int, Optional[int], np.ndarray]]:
    """Read back any bgvid output as (frame_index, pts, RGBA uint16 [H, W, 4] 0..65535).

    * ProRes 4444 .mov (decoded as yuva444p12le: alpha kept at 12 bits), WebM VP8/VP9 with alpha (always
      through libvpx: FFmpeg's native VP9 decoder drops alpha), MP4 and any other video: frame_index
      counts output frames from 0, pts in the file's video time base. No alpha plane -> alpha 65535.
    * PNG file, folder of PNGs, or %d pattern: frame_index is the number in the file name (position
      when there is none), pts None. 8-bit PNGs are scaled by 257, grey is replicated to RGB.
    Colour is converted with the file's tagged matrix and range (untagged: as probe() guesses).
    """
    p = _check_path(path)
    if os.path.isdir(p) or is_pattern(p) or (p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p)):
        files = [Path(p)] if os.path.isfile(p) else list_sequence(p)
        single = os.path.isfile(p)
        for pos, f in enumerate(files):
            nums = re.findall(r"\d+", f.stem)
            index = int(nums[-1]) if nums and not single else pos
            yield index, None, _read_image_rgba(f)
        return
    dec = _StreamDecoder(p, alpha=True)
    try:
        index = 0
        for frame in dec.frames():
            rgb = _to_rgb(frame, deep=True, color=_frame_color(frame))
            out = np.empty(rgb.shape[:2] + (4,), dtype=np.uint16)
            out[..., :3] = rgb
            a = _alpha_of(frame)
            out[..., 3] = 65535 if a is None else a
            yield index, frame.pts, _rotate(out, _rotation_of(frame))
            index += 1
    finally:
        dec.close()


def _read_image_rgba(path: Path) -> np.ndarray:
    import cv2

    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise InputError(f"{path}: not an image OpenCV can read")
    if img.dtype == np.uint8:
        img = img.astype(np.uint16) * 257
    elif img.dtype != np.uint16:
        img = np.clip(np.round(img.astype(np.float64) * 65535), 0, 65535).astype(np.uint16)
    if img.ndim == 2:
        img = img[..., None]
    c = img.shape[2]
    out = np.empty(img.shape[:2] + (4,), dtype=np.uint16)
    if c == 1:
        out[..., :3] = img
        out[..., 3] = 65535
    elif c == 2:
        out[..., :3] = img[..., :1]
        out[..., 3] = img[..., 1]
    else:
        out[..., 0] = img[..., 2]
        out[..., 1] = img[..., 1]
        out[..., 2] = img[..., 0]
        out[..., 3] = img[..., 3] if c == 4 else 65535
    return out
