"""Shared helpers of the benchmark programs (throughput.py, memory.py, rembg_compare.py).

Not a test helper and not part of bgvid: measurement plumbing only. Timings are wall clock
(time.perf_counter) and process CPU time (user + system of every thread, from getrusage), so a
stage that runs on several threads (ONNX Runtime, FFmpeg) is charged all of its CPU seconds.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import av
import numpy as np

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
MEDIA = HERE.parent.parent / "shared" / "media"
JUGGLE = MEDIA / "clips" / "juggle.mp4"
WORK = Path(os.environ.get("BGVID_BENCH_DIR", "/tmp/bgvid-bench"))  # derived clips, reused between runs


# --------------------------------------------------------------------------------------- machine

def cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine(quiet: Optional[bool] = None) -> dict:
    """What the numbers came from. quiet: whether the operator says nothing else ran (None: unknown);
    the load average at the start is recorded either way."""
    import cv2
    import onnxruntime

    import bgvid

    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    return {
        "platform": platform.platform(), "cpu": _cpu_model(), "cores": cores(), "memory_gib": mem,
        "gpu": None, "python": platform.python_version(), "bgvid": bgvid.__version__,
        "onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "av": av.__version__,
        "opencv": cv2.__version__, "loadavg_at_start": list(os.getloadavg()),
        "quiet": quiet, "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


# ------------------------------------------------------------------------------------ measuring

def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class Timer:
    """with Timer() as t: ...  -> t.wall, t.cpu (process CPU seconds, all threads)."""

    def __enter__(self):
        self._w, self._c = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self._w
        self.cpu = cpu_seconds() - self._c


def summary(values: list[float]) -> dict:
    v = [float(x) for x in values]
    return {"median": float(np.median(v)), "min": min(v), "max": max(v),
            "spread_pct": 100.0 * (max(v) - min(v)) / float(np.median(v)) if np.median(v) else 0.0, "runs": v}


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float))
    print(f"wrote {path}")


def run_child(script: Path, payload: dict, *, timeout: float = 3600) -> dict:
    """Run `python script --child JSON` in a fresh process (clean peak RSS, no shared caches) and
    return the JSON object it prints on its last stdout line."""
    proc = subprocess.run([sys.executable, str(script), "--child", json.dumps(payload)], capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"child {payload} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------- clips

def clip_frames(path: Path) -> int:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        if s.frames:
            return int(s.frames)
        return sum(1 for _ in c.decode(s))


def make_clip(src: Path, dst: Path, *, height: Optional[int] = None, repeat: int = 1,
              max_frames: Optional[int] = None) -> Path:
    """A derived H.264 clip (crf 16, yuv420p): `src` scaled to `height` (keeping aspect, even width)
    and/or played `repeat` times back to back. Made once; reused while it exists."""
    if dst.exists():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.stem + ".part" + dst.suffix)
    n = 0
    with av.open(str(tmp), "w") as out:
        vout = None
        for _ in range(repeat):
            with av.open(str(src)) as inp:
                vin = inp.streams.video[0]
                if vout is None:
                    w, h = vin.width, vin.height
                    if height:
                        w, h = 2 * round(vin.width * height / vin.height / 2), height
                    vout = out.add_stream("libx264", rate=vin.average_rate,
                                          options={"crf": "16", "preset": "veryfast"})
                    vout.width, vout.height, vout.pix_fmt = w, h, "yuv420p"
                    vout.codec_context.colorspace = 1
                    vout.codec_context.color_primaries = 1
                    vout.codec_context.color_trc = 1
                for frame in inp.decode(vin):
                    if max_frames is not None and n >= max_frames:
                        break
                    f = frame.reformat(width=vout.width, height=vout.height, format="yuv420p",
                                       interpolation="BICUBIC")
                    f.pts = n
                    f.time_base = Fraction(1, 1) / Fraction(vin.average_rate)
                    out.mux(vout.encode(f))
                    n += 1
        out.mux(vout.encode())
    tmp.rename(dst)
    return dst


def clip_1080p() -> Path:
    return make_clip(JUGGLE, WORK / "juggle_1080p.mp4", height=1080)


def clip_repeated(frames: int) -> Path:
    """juggle.mp4 played back to back until `frames` frames (the memory test's long clip)."""
    n = clip_frames(JUGGLE)
    return make_clip(JUGGLE, WORK / f"juggle_x{frames}.mp4", repeat=-(-frames // n), max_frames=frames)


# ---------------------------------------------------------------------------------- naive loop

def naive_loop(clip: Path, out: Path, model: str, n_frames: int, *, encoder: str = "bgvid",
               threads: int = 0) -> dict:
    """What a user writes first: decode one frame, run the model on it, resize the matte, encode,
    repeat (batch 1, no overlap, no decontamination). encoder: "bgvid" = bgvid's own settings for the
    output (ProRes 4444 fixed quantiser, or VP9 realtime for .webm), with PyAV's default (slice)
    threading, which prores_ks cannot use; "bgvid_frame_threads" = the same, frame-threaded, as bgvid's
    writer runs it; "prores_ks" = prores_ks with its
    default rate search (profile 4444), as most guides use it. Model load is included in the time,
    as it is in a bgvid run. Returns {"fps", "wall", "cpu", "frames"}."""
    import cv2

    from bgvid.io.writer import PRORES_CODEC, PRORES_OPTIONS, VP9_OPTIONS
    from bgvid.models.segmenter import Segmenter

    webm = out.suffix == ".webm"
    with Timer() as t:
        seg = Segmenter.from_name(model, threads=threads)
        with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
            vin = src.streams.video[0]
            vin.thread_type = "AUTO"
            if webm:
                vout = dst.add_stream("libvpx-vp9", rate=vin.average_rate, options=dict(VP9_OPTIONS))
                vout.pix_fmt = "yuva420p"
            else:
                options = {"profile": "4444"} if encoder == "prores_ks" else dict(PRORES_OPTIONS)
                vout = dst.add_stream(PRORES_CODEC, rate=vin.average_rate, options=options)
                if encoder == "bgvid_frame_threads":  # prores_ks threads by frame, as bgvid's writer runs it
                    vout.codec_context.thread_type = "FRAME"
                vout.pix_fmt = "yuva444p10le"
            vout.width, vout.height = vin.width, vin.height
            n = 0
            for frame in src.decode(vin):
                if n >= n_frames:
                    break
                rgb = frame.to_ndarray(format="rgb24")
                low = seg(rgb[None], size="model")[0]
                alpha = cv2.resize(low, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
                if webm:
                    rgba = np.dstack([rgb, np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)])
                    f = av.VideoFrame.from_ndarray(rgba, format="rgba").reformat(format="yuva420p")
                else:
                    rgba = np.dstack([rgb.astype(np.uint16) * 257,
                                      np.rint(np.clip(alpha, 0, 1) * 65535).astype(np.uint16)])
                    f = av.VideoFrame.from_ndarray(rgba, format="rgba64le").reformat(format="yuva444p10le")
                f.pts = n
                for packet in vout.encode(f):
                    dst.mux(packet)
                n += 1
            for packet in vout.encode():
                dst.mux(packet)
    return {"fps": n / t.wall, "wall": t.wall, "cpu": t.cpu, "frames": n}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format) -> a plain text table."""
    cells = [[h for _, h, _ in columns]]
    for r in rows:
        cells.append([("" if r.get(k) is None else format(r[k], f)) for k, _, f in columns])
    widths = [max(len(c[i]) for c in cells) for i in range(len(columns))]
    lines = []
    for j, c in enumerate(cells):
        lines.append("  ".join(s.ljust(w) if i == 0 else s.rjust(w)
                               for i, (s, w) in enumerate(zip(c, widths, strict=False))))
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run_timed(fn: Callable[[], object]) -> tuple[object, float, float]:
    with Timer() as t:
        value = fn()
    return value, t.wall, t.cpu
