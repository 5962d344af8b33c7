"""Render-farm parts: the record each part carries, and `bgvid join` (concatenate parts without
re-encoding).

The farm contract is a pair of command lines:

    bgvid run SHOT --frames A-B -o part_A-B.mov     # any node, any order
    bgvid join part_*.mov -o shot.mov --audio-from SHOT

Every .mov/.webm that `bgvid run` writes carries a *part record*: a JSON container tag (PART_TAG) with
the source's identity (name, size and a sampled SHA-256 fingerprint), the inclusive input frame range
written, and the options that shape the picture (model and its hash, smoothing, refinement, ...).
join reads the records, never the file names: parts are ordered by frame range (part_10 sorts before
part_2 by name, not here), and a gap, an overlap, a part of another source or a part rendered with
other options is refused with a message naming the files.

Parts keep the source's timestamps (`--frames` does not rebase), so joining is a packet copy: ProRes is
intra-only and every VP9 part starts with a keyframe (each part is a fresh encoder, whose first frame
is always a keyframe; join checks it). The joined file carries a record too (the union range), so
joined files can be joined again.

Audio: --audio-from SHOT lays the source's audio back in through the same code as `bgvid run`
(copied when the container takes the codec, else transcoded; trimmed to the joined span unless the
parts cover the whole shot), so a complete join has the audio of a single run. Without it, the parts'
own audio is concatenated by packet, dropping the packets two neighbours share at their boundary.

PNG sequences need no join: frames are named by input frame index, so parts rendered into one folder
already form the shot.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

from ..errors import BgvidError, InputError

PathLike = Union[str, os.PathLike]
Report = Callable[[str], None]

PART_TAG = "bgvid_part"  # container tag holding the JSON record (Matroska shows it as BGVID_PART)
PART_VERSION = 1
_SAMPLE_BLOCK = 1 << 16  # fingerprint: 64 KiB blocks...
_SAMPLE_BLOCKS = 16  # ...this many, evenly spread from the first byte to the last
_JOINABLE = {"prores": ("mov", "prores"), "webm": ("webm", "vp9")}


# ------------------------------------------------------------------------------------ identity

def file_sha256(path: PathLike, *, chunk: int = 1 << 20) -> str:
    """SHA-256 of a whole file (hex)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def _sampled_sha256(path: str, size: int) -> str:
    h = hashlib.sha256(str(size).encode())
    with open(path, "rb") as f:
        if size <= _SAMPLE_BLOCK * _SAMPLE_BLOCKS:
            h.update(f.read())
        else:
            step = (size - _SAMPLE_BLOCK) / (_SAMPLE_BLOCKS - 1)
            for k in range(_SAMPLE_BLOCKS):
                f.seek(int(round(k * step)))
                h.update(f.read(_SAMPLE_BLOCK))
    return h.hexdigest()


def source_identity(path: PathLike) -> dict:
    """Who a part was rendered from: {"name", "size", "fingerprint"}. The fingerprint is a SHA-256
    over the size and 16 blocks of 64 KiB spread over the file (constant cost on a 100 GB shot; any
    re-encode or edit changes it). A folder / %d pattern of images: over the file names and sizes
    and the first and last image."""
    from .reader import is_pattern, list_sequence

    p = os.fspath(path)
    if os.path.isdir(p) or is_pattern(p):
        files = list_sequence(p)
        h = hashlib.sha256()
        for f in files:
            h.update(f"{f.name}\0{f.stat().st_size}\n".encode())
        for f in (files[:1] + files[-1:]) if files else []:
            h.update(f.read_bytes())
        return {"name": os.path.basename(p.rstrip("/" + os.sep)), "size": sum(f.stat().st_size for f in files),
                "fingerprint": h.hexdigest()}
    size = os.path.getsize(p)
    return {"name": os.path.basename(p), "size": size, "fingerprint": _sampled_sha256(p, size)}


_MODEL_HASHES: dict = {}


def model_sha256(path: PathLike) -> str:
    """SHA-256 of a model file, memoised by (path, size, mtime). A cached catalogue model's hash comes
    from the cache's record beside it (MODEL.onnx.json), which loading the model has just verified."""
    st = os.stat(path)
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _MODEL_HASHES:
        digest = None
        try:
            with open(os.fspath(path) + ".json") as f:
                meta = json.load(f)
            if meta.get("size") == st.st_size and len(str(meta.get("sha256", ""))) == 64:
                digest = str(meta["sha256"])
        except (OSError, ValueError, AttributeError):
            pass
        _MODEL_HASHES[key] = digest or file_sha256(path)
    return _MODEL_HASHES[key]


def part_record(src: PathLike, *, frames: tuple[int, Optional[int]], frame_count: Optional[int],
                options: dict) -> dict:
    """The record `bgvid run` writes into a .mov/.webm: source identity, inclusive input frame range
    (end None only when neither the range nor the container says where the input ends), options."""
    from .. import __version__

    start, end = int(frames[0]), frames[1]
    if end is None and frame_count:
        end = int(frame_count) - 1
    return {"v": PART_VERSION, "source": {**source_identity(src), "frames": frame_count},
            "frames": [start, None if end is None else int(end)], "options": options, "bgvid": __version__}


# ----------------------------------------------------------------------------------------- parts

@dataclass
class Part:
    """One segment as join sees it."""

    path: str
    record: dict
    kind: str  # "prores" | "webm"
    start: int
    end: Optional[int]  # from the record; None = to the end of the source (then: start + packets - 1)
    width: int
    height: int
    pix_fmt: str
    time_base: Fraction
    has_audio: bool

    @property
    def label(self) -> str:
        end = "end" if self.end is None else self.end
        return f"{self.path} (frames {self.start}-{end})"


def read_part(path: PathLike) -> Part:
    """Open a part and read its record. InputError (naming the file) for a missing file, a PNG
    sequence, a file FFmpeg cannot read, or a file without a bgvid part record."""
    import av

    p = os.fspath(path)
    if os.path.isdir(p) or "%" in os.path.basename(p) or p.lower().endswith(".png"):
        raise InputError(f"{p}: PNG sequences need no join: their frames are named by input frame index, "
                         "so render every part into the same folder (bgvid run SHOT --frames A-B -o frames/)")
    if not os.path.exists(p):
        raise InputError(f"{p}: no such file")
    try:
        c = av.open(p)
    except (av.FFmpegError, OSError) as e:
        raise InputError(f"{p}: not a video FFmpeg can read ({e})") from e
    try:
        if not c.streams.video:
            raise InputError(f"{p}: has no video stream")
        tags = {k.lower(): v for k, v in c.metadata.items()}
        raw = tags.get(PART_TAG)
        if raw is None:
            raise InputError(f"{p}: carries no bgvid part record (parts are the .mov/.webm files that "
                             "`bgvid run SHOT --frames A-B` writes; the source shot itself goes to --audio-from)")
        try:
            record = json.loads(raw)
            start = int(record["frames"][0])
            end = record["frames"][1]
            end = None if end is None else int(end)
            record["source"]["fingerprint"]
        except (ValueError, KeyError, TypeError, IndexError) as e:
            raise InputError(f"{p}: its bgvid part record is damaged ({e})") from e
        vs = c.streams.video[0]
        codec = vs.codec_context.name
        kind = "prores" if codec == "prores" else "webm" if codec == "vp9" else None
        if kind is None:
            raise InputError(f"{p}: holds {codec} video; join copies ProRes (.mov) and VP9 (.webm) parts")
        return Part(path=p, record=record, kind=kind, start=start, end=end, width=vs.codec_context.width,
                    height=vs.codec_context.height, pix_fmt=str(vs.codec_context.pix_fmt or ""),
                    time_base=Fraction(vs.time_base), has_audio=bool(c.streams.audio))
    finally:
        c.close()


def _diff_options(a: dict, b: dict) -> list[str]:
    keys = sorted(set(a) | set(b))
    return [f"{k}={a.get(k)!r} vs {b.get(k)!r}" for k in keys if a.get(k) != b.get(k)]


def order_parts(parts: Sequence[Part]) -> list[Part]:
    """Parts sorted by recorded frame range, after checking they belong together: one source, one
    set of options, one format, no gap and no overlap. Raises InputError naming the files."""
    if not parts:
        raise InputError("join needs at least one part")
    first = parts[0]
    src = first.record["source"]
    for q in parts[1:]:
        s = q.record["source"]
        if (s.get("fingerprint"), s.get("size")) != (src.get("fingerprint"), src.get("size")):
            raise InputError(f"{q.path} was rendered from {s.get('name')!r} ({s.get('size')} bytes) but "
                             f"{first.path} from {src.get('name')!r} ({src.get('size')} bytes): parts of "
                             "different sources cannot be joined")
        diff = _diff_options(first.record.get("options", {}), q.record.get("options", {}))
        if diff:
            raise InputError(f"{q.path} and {first.path} were rendered with different options "
                             f"({'; '.join(diff)}): the join would show a seam; render them alike")
        if q.kind != first.kind:
            raise InputError(f"{q.path} is {'ProRes .mov' if q.kind == 'prores' else 'VP9 .webm'} but "
                             f"{first.path} is {'ProRes .mov' if first.kind == 'prores' else 'VP9 .webm'}: "
                             "join copies packets, so every part must have the same format")
        if (q.width, q.height, q.pix_fmt) != (first.width, first.height, first.pix_fmt):
            raise InputError(f"{q.path} is {q.width}x{q.height} {q.pix_fmt} but {first.path} is "
                             f"{first.width}x{first.height} {first.pix_fmt}")
    ordered = sorted(parts, key=lambda q: (q.start, q.end if q.end is not None else math.inf))
    for a, b in zip(ordered, ordered[1:], strict=False):
        if a.end is None or b.start <= a.end:
            top = "end" if a.end is None or (b.end is not None and b.end < a.end) else a.end
            last = b.end if b.end is not None and (a.end is None or b.end < a.end) else top
            raise InputError(f"overlap: {a.label} and {b.label} both hold frames {b.start}-{last}")
        if b.start > a.end + 1:
            missing = f"{a.end + 1}-{b.start - 1}" if b.start - 1 > a.end + 1 else f"{a.end + 1}"
            raise InputError(f"gap: frames {missing} are missing between {a.label} and {b.label}; "
                             f"render them with `bgvid run SOURCE --frames {missing} -o PART`")
    return ordered


# ------------------------------------------------------------------------------------------ join

@dataclass
class JoinResult:
    output: Path
    frames: int
    first: int  # first input frame index in the output
    last: int  # last input frame index
    parts: list[str] = field(default_factory=list)  # in the order joined
    audio: str = "none"  # "source" (--audio-from), "parts", or "none"
    seconds: float = 0.0

    def to_json(self) -> dict:
        return {"output": str(Path(self.output).resolve()), "frames": self.frames, "range": [self.first, self.last],
                "parts": self.parts, "audio": self.audio, "seconds": round(self.seconds, 3)}


def _video_stream(out, ivs, kind: str, *, matte: bool):
    """The output video stream for copied packets, declared the way VideoWriter declares it (same
    encoder and settings, never fed a frame), so the joined file's headers match a single run's. A
    stream copied from a template would lose the frame rate (the .mov muxer then writes no timecode
    track; Matroska no DefaultDuration), the ProRes 4444 tag (ap4h) and Matroska's AlphaMode flag
    (without it browsers ignore VP9 alpha)."""
    from .writer import PRORES_CODEC, PRORES_MATTE_OPTIONS, PRORES_OPTIONS, VP9_OPTIONS

    icc = ivs.codec_context
    rate = ivs.average_rate or ivs.guessed_rate or ivs.base_rate or 25
    if kind == "prores":
        ovs = out.add_stream(PRORES_CODEC, rate=rate, options=dict(PRORES_MATTE_OPTIONS if matte else PRORES_OPTIONS))
        ovs.pix_fmt = "yuv422p10le" if matte else "yuva444p10le"
    else:
        ovs = out.add_stream("libvpx-vp9", rate=rate, options=dict(VP9_OPTIONS))
        ovs.pix_fmt = "yuv420p" if matte else "yuva420p"
    ovs.width, ovs.height = icc.width, icc.height
    ovs.time_base = ivs.time_base
    cc = ovs.codec_context
    cc.time_base = ivs.time_base
    if kind == "prores":
        cc.codec_tag = icc.codec_tag
    cc.color_range = icc.color_range
    cc.color_primaries = icc.color_primaries
    cc.color_trc = icc.color_trc
    cc.colorspace = icc.colorspace
    return ovs


def _count_video_packets(path: str) -> int:
    import av

    with av.open(path) as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def _temp_name(target: str) -> str:
    d, name = os.path.split(os.path.abspath(target))
    stem, ext = os.path.splitext(name)
    return os.path.join(d, f".{stem}.bgvid-tmp-{os.getpid()}{ext}")


def _check_output(dst: str, kind: str, overwrite: bool, parts: Sequence[Part]) -> None:
    from .writer import output_kind

    want = output_kind(dst)
    if want == "png":
        raise InputError(f"{dst}: PNG sequences need no join: render every part into the same folder")
    if want != kind:
        ext = ".mov" if kind == "prores" else ".webm"
        raise InputError(f"{dst}: the parts are {'ProRes' if kind == 'prores' else 'VP9'}, which join copies "
                         f"without re-encoding into {ext} only; name the output *{ext}")
    if os.path.isdir(dst):
        raise InputError(f"{dst}: is a folder; name a file")
    for q in parts:
        if os.path.exists(dst) and os.path.samefile(dst, q.path):
            raise InputError(f"{dst}: is one of the parts; join writes a new file")
    if os.path.lexists(dst) and not overwrite:
        raise InputError(f"{dst}: already exists (--force replaces it)")
    parent = os.path.dirname(os.path.abspath(dst))
    if not os.path.isdir(parent):
        raise InputError(f"{parent}: output folder does not exist")


def join_parts(parts: Sequence[PathLike], dst: PathLike, *, audio_from: Optional[PathLike] = None,
               audio: bool = True, overwrite: bool = False, report: Optional[Report] = None,
               progress: Optional[Callable[[int, Optional[int]], None]] = None) -> JoinResult:
    """Concatenate render-farm parts into `dst` without re-encoding (see the module docstring).

    Parts may come in any order; they are ordered by their recorded frame ranges. audio_from: the
    source shot, whose audio is laid back in (it must be the parts' source); audio=False drops
    audio. The output appears under its final name only when complete. Raises InputError for parts
    that do not belong together (naming the files), BgvidError for other failures."""
    import av

    from .reader import probe
    from .writer import _Audio, _disk_full

    report = report or (lambda m: None)
    started = time.perf_counter()
    paths = [os.fspath(p) for p in parts]
    if not paths:
        raise InputError("join needs at least one part")
    seen = {}
    for p in paths:
        key = os.path.realpath(p)
        if key in seen:
            raise InputError(f"{p}: given twice")
        seen[key] = p
    ordered = order_parts([read_part(p) for p in paths])
    first = ordered[0]
    kind = first.kind
    dst = os.fspath(dst)
    _check_output(dst, kind, overwrite, ordered)
    record = first.record
    src_rec = record["source"]
    total_src = src_rec.get("frames")

    src_info = None
    if audio and audio_from is not None:
        ident = source_identity(audio_from)
        if (ident["fingerprint"], ident["size"]) != (src_rec.get("fingerprint"), src_rec.get("size")):
            raise InputError(f"--audio-from {os.fspath(audio_from)}: is not the source of these parts (they were "
                             f"rendered from {src_rec.get('name')!r}, {src_rec.get('size')} bytes)")
        src_info = probe(audio_from)
        if not src_info.has_audio:
            report(f"{os.fspath(audio_from)} has no audio; the joined file has none either")
            src_info = None
    elif audio and any(q.has_audio for q in ordered):
        report("Audio: taken from the parts (--audio-from SHOT lays the source's audio in exactly as a single run)")

    tmp = _temp_name(dst)
    out = None
    srcs: list = []
    aud = None
    try:
        tb = first.time_base
        if kind == "prores":
            den = tb.denominator
            options = {"video_track_timescale": str(den), "movie_timescale": str(den * max(1, -(-1000 // den))),
                       "movflags": "+use_metadata_tags"}
            fmt = "mov"
        else:
            options, fmt = {}, "webm"
        try:
            out = av.open(tmp, "w", format=fmt, options=options)
        except (av.FFmpegError, OSError) as e:
            raise InputError(f"{os.path.dirname(tmp) or '.'}: cannot write there ({e})") from e
        c0 = av.open(first.path)
        srcs.append(c0)
        ivs = c0.streams.video[0]
        ovs = _video_stream(out, ivs, kind, matte=bool(record.get("options", {}).get("matte")))
        tc = ivs.metadata.get("timecode") or c0.metadata.get("timecode") or next(
            (st.metadata["timecode"] for st in c0.streams if st.type == "data" and st.metadata.get("timecode")), None)
        if tc:
            ovs.metadata["timecode"] = tc
        part_audio = audio and src_info is None and first.has_audio
        oas = None
        if part_audio:
            oas = out.add_stream_from_template(c0.streams.audio[0])
            oas.time_base = c0.streams.audio[0].time_base
        last_known = ordered[-1].end
        count_guess = None if last_known is None else last_known - first.start + 1
        joined = dict(record, frames=[first.start, last_known])
        out.metadata[PART_TAG] = json.dumps(joined, sort_keys=True)  # before the header is written
        if src_info is not None and not total_src:
            total_src = src_info.frame_count or _count_video_packets(os.fspath(audio_from))
        whole = first.start == 0 and (last_known is None or (bool(total_src) and last_known == total_src - 1))
        if src_info is not None:
            aud = _Audio(src_info, out, kind, trim=not whole)
        rate = Fraction(src_info.average_rate) if src_info is not None and src_info.average_rate else None

        done = 0
        last_pts = None
        last_time = None
        audio_end = None  # end of the last part-audio packet written, in its time base
        for q in ordered:
            c = c0 if q is first else av.open(q.path)
            if c is not c0:
                srcs.append(c)
            vs = c.streams.video[0]
            streams = [vs] + ([c.streams.audio[0]] if part_audio and c.streams.audio else [])
            n = 0
            for pkt in c.demux(*streams):
                if pkt.size == 0:
                    continue
                if pkt.stream.type == "audio":
                    if pkt.pts is None:
                        continue
                    t = pkt.pts * pkt.time_base
                    dur = (pkt.duration or 0) * pkt.time_base
                    if audio_end is not None:
                        if t < audio_end - dur / 2:
                            continue  # the neighbour already wrote this one (the packet two parts share)
                        if abs(t - audio_end) < dur / 2:  # a part's edit list may move it by a sample
                            pkt.pts = pkt.dts = int(round(audio_end / pkt.time_base))
                            t = audio_end
                    audio_end = t + dur
                    pkt.stream = oas
                    out.mux(pkt)
                    continue
                if n == 0 and kind == "webm" and not pkt.is_keyframe:
                    raise InputError(f"{q.path}: does not start on a keyframe, so it cannot be joined without "
                                     "re-encoding; render it again with bgvid run")
                pts = pkt.pts if pkt.pts is not None else pkt.dts
                if last_pts is not None and pts is not None and pts * pkt.time_base <= last_pts:
                    raise InputError(f"{q.path}: its timestamps ({float(pts * pkt.time_base):.3f}s) do not "
                                     f"follow the previous part's ({float(last_pts):.3f}s)")
                if pts is not None:
                    last_pts = pts * pkt.time_base
                    last_time = float(last_pts)
                    if aud is not None and aud.t_start is None:
                        aud.t_start = last_time
                pkt.stream = ovs
                out.mux(pkt)
                n += 1
                done += 1
                if aud is not None and last_time is not None:
                    aud.pump(last_time)
                if progress:
                    progress(done, count_guess)
            if q.end is not None and n != q.end - q.start + 1:
                raise InputError(f"{q.path}: holds {n} frames but its record says {q.start}-{q.end} "
                                 f"({q.end - q.start + 1}); the part is incomplete: render it again")
            if q.end is None:
                q.end = q.start + n - 1
            if c is not c0:
                c.close()
                srcs.remove(c)
        last = ordered[-1].end
        if aud is not None:
            until = None
            if not whole and last_time is not None:  # as VideoWriter: the last frame's end
                step = max(1, int(round(1 / (rate * ovs.time_base)))) if rate else 1
                until = last_time + float(step * ovs.time_base)
            aud.finish(until)
            aud.close()
            aud = None
        out.close()
        out = None
        os.replace(tmp, dst)
    except BaseException as e:
        if aud is not None:
            aud.close()
        if out is not None:
            try:
                out.close()
            except Exception:
                pass
        try:
            os.unlink(tmp)
        except OSError:
            pass
        if isinstance(e, (OSError, av.FFmpegError)) and _disk_full(e):
            raise BgvidError(f"{dst}: disk full while joining; the partial output was removed") from e
        if isinstance(e, av.FFmpegError):
            raise BgvidError(f"{dst}: joining failed: {e}") from e
        raise
    finally:
        for c in srcs:
            try:
                c.close()
            except Exception:
                pass
    return JoinResult(output=Path(dst), frames=done, first=first.start, last=int(last),
                      parts=[q.path for q in ordered],
                      audio="source" if src_info is not None else ("parts" if part_audio else "none"),
                      seconds=time.perf_counter() - started)
