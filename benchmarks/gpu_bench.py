"""GPU benchmark (the device check's last stage): per-stage GPU milliseconds, the GPU frame path alone (upload
to planes downloaded), end-to-end fps with --device cuda, the encoder alone, and the same machine's CPU
path as the baseline, on short clips (120 frames at 720p, 60 at 1080p, made from juggle.mp4).

    python benchmarks/gpu_bench.py --clips FOLDER_WITH_clips/ --out gpu_bench.json

Targets of issue #16 (benchmark targets, not tests), 1080p on an H200: the GPU stages from upload to planes
downloaded >= 300 fps for rvm and >= 1000 fps for selfie; end to end >= 90% of the encoder alone; >= 5x the
same machine's CPU path. Prints a table and writes JSON with the machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import numpy as np


def make_clip(src: Path, dst: Path, size: tuple[int, int], frames: int) -> Path:
    """frames of src scaled to size (H, W), as H.264 (a fast, lossless-enough test input)."""
    import av

    with av.open(str(src)) as inp, av.open(str(dst), "w") as out:
        st = out.add_stream("libx264", rate=Fraction(24), options={"preset": "ultrafast", "crf": "12"})
        st.height, st.width = size
        st.pix_fmt = "yuv420p"
        n = 0
        for frame in inp.decode(video=0):
            f = frame.reformat(width=size[1], height=size[0], format="yuv420p")
            f.pts = None
            for p in st.encode(f):
                out.mux(p)
            n += 1
            if n == frames:
                break
        for p in st.encode(None):
            out.mux(p)
    return dst


def decode_rgb(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as c:
        return np.stack([f.to_ndarray(format="rgb24") for f in c.decode(video=0)])


def stage_times(model: str, rgb: np.ndarray, batch: int = 8) -> dict:
    """Each stage of the device chain alone, CUDA-event timed, ms per frame (median over batches); and
    the chain from upload to planes downloaded, fps."""
    import cupy

    from bgvid.device import CudaDevice
    from bgvid.frames import FrameBatch
    from bgvid.kernels._planes import PlaneSpec
    from bgvid.models.segmenter import Segmenter
    from bgvid.stages.options import PictureOptions, build_chain

    dev = CudaDevice(0)
    seg = Segmenter.from_name(model, provider="cuda", device=dev, pull=False)
    opts = PictureOptions()
    h, w = rgb.shape[1:3]
    chain = build_chain(opts, seg, width=w, height=h, device=dev, planes=PlaneSpec("yuva444p10le", matrix=1))
    times: dict[str, list] = {}
    done = 0
    start = time.perf_counter()
    for i in range(0, len(rgb), batch):
        idx = np.arange(i, min(i + batch, len(rgb)), dtype=np.int64)
        b = FrameBatch(rgb=rgb[idx[0]:idx[-1] + 1], frame_index=idx, pts=idx, time_base=Fraction(1, 24))
        for stage in chain.stages:
            t0, t1 = cupy.cuda.Event(), cupy.cuda.Event()
            t0.record()
            (b,) = stage.push(b)
            t1.record()
            t1.synchronize()
            times.setdefault(stage.name, []).append(cupy.cuda.get_elapsed_time(t0, t1) / len(idx))
        t0 = time.perf_counter()
        b.planes.download(dev.download)
        times.setdefault("download", []).append((time.perf_counter() - t0) * 1000 / len(idx))
        done += len(idx)
    seconds = time.perf_counter() - start
    warm = {k: float(np.median(v[1:] if len(v) > 1 else v)) for k, v in times.items()}
    return {"ms_per_frame": {k: round(v, 3) for k, v in warm.items()},
            "gpu_path_fps_first_pass": round(done / seconds, 1),
            "gpu_path_fps_warm": round(1000 / sum(warm.values()), 1)}


def run_fps(clip: Path, out: Path, model: str, device: str, **options) -> dict:
    import bgvid

    r = bgvid.remove_background(clip, out, model=model, device=device, overwrite=True, **options)
    return {"fps": round(r.fps, 1), "frames": r.frames, "stage_seconds": {k: round(v, 3) for k, v in
                                                                            r.stage_seconds.items()}}


def encoder_alone(clip: Path, tmp: Path, fmt: str) -> float:
    """The writer alone on the clip's frames (CPU colour conversion + encode), fps."""
    from bgvid.frames import FrameBatch
    from bgvid.io.reader import probe
    from bgvid.io.writer import VideoWriter, output_kind

    rgb = decode_rgb(clip)
    info = probe(clip)
    alpha = np.ones(rgb.shape[:3], np.float32)
    dst = tmp / f"enc.{fmt}"
    kind = output_kind(str(dst))
    w = VideoWriter(dst, info=info, kind=kind, audio=False, overwrite=True)
    t0 = time.perf_counter()
    for i in range(0, len(rgb), 8):
        idx = np.arange(i, min(i + 8, len(rgb)), dtype=np.int64)
        w.push(FrameBatch(rgb=rgb[idx[0]:idx[-1] + 1], frame_index=idx, pts=None, time_base=info.time_base,
                          alpha=alpha[idx[0]:idx[-1] + 1] if kind != "mp4" else None))
    w.push(None)
    return round(len(rgb) / (time.perf_counter() - t0), 1)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    import cupy

    import bgvid

    props = cupy.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    report = {"machine": {"gpu": name, "cpu_cores": os.cpu_count(), "python": platform.python_version(),
                          "bgvid": bgvid.__version__}, "cases": []}
    with tempfile.TemporaryDirectory(prefix="bgvid-gpu-bench-") as t:
        tmp = Path(t)
        src = args.clips / "clips" / "juggle.mp4"
        clips = {"720p": make_clip(src, tmp / "c720.mp4", (720, 1280), 120),
                 "1080p": make_clip(src, tmp / "c1080.mp4", (1080, 1920), 60)}
        for res, clip in clips.items():
            rgb = decode_rgb(clip)
            enc = {fmt: encoder_alone(clip, tmp, fmt) for fmt in ("mov", "webm", "mp4")}
            for model in ("rvm", "selfie"):
                row = {"resolution": res, "model": model, "encoder_alone_fps": enc,
                       "stages": stage_times(model, rgb)}
                for fmt, extra in (("mov", {}), ("webm", {}), ("mp4", {"background": "#2080ff"})):
                    row[f"cuda_{fmt}"] = run_fps(clip, tmp / f"o.{fmt}", model, "cuda", **extra)
                if res == "1080p":  # the baseline: the same machine's CPU path, same clip (ProRes)
                    row["cpu_mov"] = run_fps(clip, tmp / "cpu.mov", model, "cpu")
                report["cases"].append(row)
                s = row["stages"]
                print(f"{res:>6} {model:<7} GPU path {s['gpu_path_fps_warm']:>7.1f} fps | cuda mov "
                      f"{row['cuda_mov']['fps']:>6.1f} webm {row['cuda_webm']['fps']:>6.1f} mp4 "
                      f"{row['cuda_mp4']['fps']:>6.1f} | encoder alone {enc} | "
                      + (f"cpu mov {row['cpu_mov']['fps']:.1f}" if "cpu_mov" in row else ""), flush=True)
                print("        ms/frame: " + ", ".join(f"{k} {v:.2f}" for k, v in s["ms_per_frame"].items()))
    args.out.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
