"""Tiny synthetic test media, generated with PyAV (no files are checked in).

Every picture is a pure function of the frame index, so a test can compute what it expects:

    pattern(i, w, h)        RGB: red rises left->right, green rises top->bottom, blue is 0, and a white
                            square moves right by 2 px per frame. The gradients make orientation
                            (rotation, flips) easy to check after lossy coding.
    alpha_pattern(i, w, h)  float32 0..1: a horizontal ramp times a soft disc whose centre moves.

Clip makers (all return the Path written, all keep clips tiny):

    make_clip(path, width=, height=, frames=, fps=, audio=, vfr=, rotation=, pix_fmt=, codec=, timecode=, alpha=)
    make_image(path, width=, height=, depth=8, alpha=False)
    make_image_sequence(folder, count=, width=, height=, pattern="%04d.png", start=0)
    make_audio_only(path, seconds=)
    truncate(path, keep=0.5)
    vfr_pts(frames) -> list[int]        the timestamps (time base 1/1000) make_clip(vfr=True) writes
"""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Optional, Sequence

import av
import numpy as np

VFR_TIME_BASE = Fraction(1, 1000)
_VFR_STEPS = (40, 40, 80, 20, 60, 40, 100, 30)  # ms between frames, repeating


def pattern(i: int, width: int, height: int, *, depth: int = 8) -> np.ndarray:
    """RGB picture of frame `i`: uint8 for depth 8, else uint16 at full 16-bit scale (values use the
    whole `depth`-bit range, so a 10-bit pattern has steps an 8-bit path cannot represent)."""
    top = (1 << depth) - 1
    xs = np.linspace(0.0, 1.0, width)[None, :]
    ys = np.linspace(0.0, 1.0, height)[:, None]
    r = np.broadcast_to(np.round(xs * top), (height, width))
    g = np.broadcast_to(np.round(ys * top), (height, width))
    img = np.stack([r, g, np.zeros((height, width))], axis=-1)
    side = max(2, min(width, height) // 6)
    x0 = (2 * i) % max(1, width - side)
    y0 = height // 2 - side // 2
    img[y0:y0 + side, x0:x0 + side, :] = top
    if depth == 8:
        return img.astype(np.uint8)
    return (img * (65535 / top)).round().astype(np.uint16)


def alpha_pattern(i: int, width: int, height: int) -> np.ndarray:
    """float32 [H, W] 0..1: a left->right ramp multiplied by a soft disc that drifts with `i`."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    ramp = xx / max(1, width - 1)
    cx = width * (0.4 + 0.02 * (i % 10))
    cy = height * 0.5
    radius = 0.35 * min(width, height)
    d = np.hypot(xx - cx, yy - cy)
    disc = np.clip((radius - d) / (0.25 * radius) + 0.5, 0.0, 1.0)
    return (0.15 + 0.85 * ramp * disc).astype(np.float32)


def vfr_pts(frames: int) -> list[int]:
    """Irregular timestamps (time base 1/1000) used by make_clip(vfr=True)."""
    pts, t = [], 0
    for k in range(frames):
        pts.append(t)
        t += _VFR_STEPS[k % len(_VFR_STEPS)]
    return pts


def _default_codec(path: Path, pix_fmt: Optional[str]) -> str:
    ext = path.suffix.lower()
    if ext == ".webm":
        return "libvpx-vp9"
    if ext == ".mov" and pix_fmt and ("10" in pix_fmt or "12" in pix_fmt):
        return "prores_ks"
    return "libx264"


def _default_pix_fmt(codec: str, width: int, height: int, alpha: bool) -> str:
    if codec == "libvpx-vp9":
        return "yuva420p" if alpha else "yuv420p"
    if codec.startswith("prores"):
        return "yuva444p10le" if alpha else "yuv422p10le"
    if codec == "libx264":
        # x264 cannot code odd sizes in 4:2:0; 4:4:4 keeps odd test sizes possible.
        return "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
    return "yuv420p"


def make_clip(path, *, width: int = 64, height: int = 48, frames: int = 10, fps: int | Fraction = 25,
              audio: bool | str = False, vfr: bool = False, rotation: int = 0, pix_fmt: Optional[str] = None,
              codec: Optional[str] = None, timecode: Optional[str] = None, alpha: bool = False,
              start_pts: int = 0, faststart: bool = False, color: Optional[tuple[int, int, int]] = None,
              audio_seconds: Optional[float] = None, picture=None) -> Path:
    """Write a tiny clip of `pattern` frames and return its Path.

    audio: False, True/"aac" (AAC 48 kHz stereo), "pcm" (pcm_s16le, .mov/.mkv), "opus" (.webm/.mkv)
        or "mp3"; a 440 Hz tone lasting the clip (or `audio_seconds`).
    vfr: timestamps from vfr_pts() in time base 1/1000 instead of a constant rate.
    rotation: display-matrix rotation in degrees (as PyAV's set_display_rotation / frame.rotation:
        counter-clockwise; a player shows the coded picture turned by that angle).
    pix_fmt/codec: default by extension: .mp4/.mkv H.264 (yuv420p, yuv444p for odd sizes), .mov H.264 or
        ProRes 422 (prores_ks) when pix_fmt is 10/12-bit, .webm VP9.
    alpha: VP9 yuva420p with alpha_pattern as the alpha (WebM), or ProRes 4444 yuva444p10le (.mov).
    timecode: "HH:MM:SS:FF" stored as the video stream's timecode (.mov writes a tmcd track).
    start_pts: added to every video timestamp (a clip that does not start at 0).
    picture: picture(i, width, height) -> RGB uint8 (or uint16 full scale) to use instead of pattern.
    color: (primaries, transfer, matrix) tags; frames are converted with that matrix. Untagged if None.
    """
    path = Path(path)
    codec = codec or _default_codec(path, pix_fmt)
    if alpha and codec == "libx264":
        codec = "libvpx-vp9" if path.suffix.lower() == ".webm" else "prores_ks"
    pix_fmt = pix_fmt or _default_pix_fmt(codec, width, height, alpha)
    fmt = av.VideoFormat(pix_fmt)
    depth = max(c.bits for c in fmt.components)
    has_alpha = any(c.is_alpha for c in fmt.components)

    options = {}
    if faststart:
        options["movflags"] = "+faststart"
    out = av.open(str(path), "w", options=options)
    try:
        rate = Fraction(fps)
        opts = {}
        if codec == "libx264":
            opts = {"preset": "ultrafast", "crf": "10", "bf": "2"}
        elif codec == "libvpx-vp9":
            opts = {"deadline": "realtime", "cpu-used": "8", "crf": "10", "b": "0"}
        elif codec == "prores_ks":
            opts = {"profile": "4444" if alpha else "hq"}
        vs = out.add_stream(codec, rate=rate, options=opts)
        vs.width, vs.height, vs.pix_fmt = width, height, pix_fmt
        tb = VFR_TIME_BASE if vfr else Fraction(1, 1) / rate
        vs.codec_context.time_base = tb
        vs.time_base = tb
        if codec.startswith("prores") and alpha:
            vs.codec_context.codec_tag = "ap4h"
        if rotation:
            vs.set_display_rotation(rotation)
        if timecode:
            vs.metadata["timecode"] = timecode
        matrix = 2
        if color is not None:
            vs.codec_context.color_primaries, vs.codec_context.color_trc, vs.codec_context.colorspace = color
            vs.codec_context.color_range = 1
            matrix = color[2]

        astream = None
        if audio:
            astream = _add_audio(out, "aac" if audio is True else str(audio))

        pts_list = vfr_pts(frames) if vfr else list(range(frames))
        a_seconds = audio_seconds if audio_seconds is not None else float(frames / rate)
        audio_chunks = _audio_chunks(astream, a_seconds) if astream is not None else iter(())
        next_audio = next(audio_chunks, None)

        for i in range(frames):
            t = float(pts_list[i] * tb)
            while next_audio is not None and astream is not None and float(next_audio.pts * next_audio.time_base) <= t:
                for p in astream.encode(next_audio):
                    out.mux(p)
                next_audio = next(audio_chunks, None)
            rgb = (picture or pattern)(i, width, height) if picture is not None else \
                pattern(i, width, height, depth=8 if depth <= 8 else 16)
            if rgb.dtype == np.uint16:
                src_fmt = "rgba64le" if has_alpha else "rgb48le"
            else:
                src_fmt = "rgba" if has_alpha else "rgb24"
            if has_alpha:
                a = alpha_pattern(i, width, height)
                scale = 65535 if rgb.dtype == np.uint16 else 255
                rgb = np.concatenate([rgb, np.round(a * scale).astype(rgb.dtype)[..., None]], axis=-1)
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format=src_fmt)
            kw = dict(format=pix_fmt, dst_color_range=1)
            if matrix not in (0, 2):
                kw["dst_colorspace"] = {10: 9}.get(matrix, matrix)
            frame = frame.reformat(**kw)
            if has_alpha:
                _set_alpha_plane(frame, alpha_pattern(i, width, height))
            frame.pts = pts_list[i] + start_pts
            frame.time_base = tb
            for p in vs.encode(frame):
                out.mux(p)
        for p in vs.encode():
            out.mux(p)
        while next_audio is not None and astream is not None:
            for p in astream.encode(next_audio):
                out.mux(p)
            next_audio = next(audio_chunks, None)
        if astream is not None:
            for p in astream.encode():
                out.mux(p)
    finally:
        out.close()
    return path


def _set_alpha_plane(frame: av.VideoFrame, alpha: np.ndarray) -> None:
    plane = frame.planes[3]
    bits = max(c.bits for c in frame.format.components)
    dtype = np.uint16 if bits > 8 else np.uint8
    arr = np.frombuffer(plane, dtype=dtype).reshape(plane.height, -1)
    arr[:, : plane.width] = np.round(alpha * ((1 << bits) - 1)).astype(dtype)


def _add_audio(out, kind: str):
    codec = {"aac": "aac", "pcm": "pcm_s16le", "opus": "libopus", "mp3": "libmp3lame"}[kind]
    rate = 48000
    stream = out.add_stream(codec, rate=rate)
    stream.layout = "stereo"
    fmt = {"aac": "fltp", "pcm_s16le": "s16", "libopus": "flt", "libmp3lame": "fltp"}[codec]
    stream.format = fmt
    return stream


def _audio_chunks(stream, seconds: float):
    rate = stream.rate
    fmt = stream.format.name
    frame_size = stream.codec_context.frame_size or 1024
    if stream.codec_context.name == "libopus":
        frame_size = 960
    total = int(round(seconds * rate))
    t = 0
    while t < total:
        n = min(frame_size, total - t) if stream.codec_context.name == "pcm_s16le" else frame_size
        k = np.arange(t, t + n)
        tone = 0.2 * np.sin(2 * np.pi * 440.0 * k / rate)
        if k[-1] >= total:
            tone[k >= total] = 0.0
        if fmt == "s16":
            data = np.round(np.stack([tone, tone]).T * 32767).astype(np.int16).reshape(1, -1)
        elif fmt == "flt":
            data = np.stack([tone, tone]).T.astype(np.float32).reshape(1, -1)
        else:  # planar float
            data = np.stack([tone, tone]).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(data, format=fmt, layout="stereo")
        frame.sample_rate = rate
        frame.pts = t
        frame.time_base = Fraction(1, rate)
        yield frame
        t += n


def make_image(path, *, width: int = 64, height: int = 48, depth: int = 8, alpha: bool = False, index: int = 0) -> Path:
    """A still of pattern(index): PNG (8- or 16-bit, optional alpha_pattern alpha), JPEG, WebP, ..."""
    import cv2

    path = Path(path)
    rgb = pattern(index, width, height, depth=depth)
    img = rgb
    if alpha:
        a = alpha_pattern(index, width, height)
        scale = 255 if depth == 8 else 65535
        img = np.concatenate([rgb, np.round(a * scale).astype(rgb.dtype)[..., None]], axis=-1)
    bgr = cv2.cvtColor(img, cv2.COLOR_RGBA2BGRA if alpha else cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(path), bgr):
        raise RuntimeError(f"could not write {path}")
    return path


def make_image_sequence(folder, *, count: int = 5, width: int = 64, height: int = 48,
                        pattern: str = "%04d.png", start: int = 0) -> Path:
    """`count` PNG stills pattern(0..count-1) named by `pattern` % (start + i) in `folder`."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        make_image(folder / (pattern % (start + i)), width=width, height=height, index=i)
    return folder


def make_audio_only(path, *, seconds: float = 0.5) -> Path:
    """An .m4a/.mp4 (AAC) or .wav (PCM) file with one audio stream and no video."""
    path = Path(path)
    out = av.open(str(path), "w")
    try:
        stream = _add_audio(out, "pcm" if path.suffix.lower() == ".wav" else "aac")
        for frame in _audio_chunks(stream, seconds):
            for p in stream.encode(frame):
                out.mux(p)
        for p in stream.encode():
            out.mux(p)
    finally:
        out.close()
    return path


def truncate(path, *, keep: float = 0.5) -> Path:
    """Cut the file to `keep` of its size (a download that stopped half-way)."""
    path = Path(path)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def read_video_pts(path, *, decoder: Optional[str] = None) -> tuple[list[int], Fraction]:
    """Presentation timestamps of every decoded frame of the first video stream, and its time base."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return [f.pts for f in _decode(c, s, decoder)], s.time_base


def decode_frames(path, *, decoder: Optional[str] = None) -> Sequence[av.VideoFrame]:
    """All frames of the first video stream (decoder: e.g. "libvpx-vp9" to keep VP9 alpha)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return list(_decode(c, s, decoder))


def _decode(container, stream, decoder: Optional[str]):
    if decoder is None:
        yield from container.decode(stream)
        return
    ctx = av.CodecContext.create(decoder, "r")
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        for f in ctx.decode(packet):
            f.pts = f.pts if f.pts is not None else None
            yield f
    yield from ctx.decode(None)


def bgvid_cli(*args, check=None, **kw) -> subprocess.CompletedProcess:
    """`python -m bgvid ARGS...` as a user runs it; with check=N, assert the exit status (stderr shown)."""
    proc = subprocess.run([sys.executable, "-m", "bgvid", *map(str, args)], capture_output=True, text=True, **kw)
    if check is not None:
        assert proc.returncode == check, (proc.returncode, proc.stderr)
    return proc
