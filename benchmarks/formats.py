"""Whole-run throughput of `bgvid run` per output format on one clip, with a naive baseline.

    python benchmarks/formats.py [CLIP] [--model selfie] [--frames 0-119] [--json OUT.json]

Baseline, measured the same way in the same process: a naive loop with the same model and the same
ProRes 4444 encoder (decode one frame, run the model, resize, encode, repeat; batch 1, no overlap).
Prints a table and writes JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import av
import numpy as np

import bgvid
from bgvid._run import parse_frames
from bgvid._segment import Segmenter
from bgvid._video_out import PRORES_CODEC, PRORES_OPTIONS

HERE = Path(__file__).resolve().parent
DEFAULT_CLIP = HERE.parent.parent / "shared" / "media" / "clips" / "juggle.mp4"


def naive_loop(clip: Path, out: Path, model: str, frames: tuple[int, int], *, encoder: str = "bgvid") -> float:
    """One frame at a time through decode -> model -> resize -> rgba64 -> ProRes 4444.

    encoder "bgvid": the same prores_ks settings bgvid uses; "prores_ks": its default rate search, as
    most guides use it."""
    seg = Segmenter.from_name(model)
    start, end = frames
    started = time.perf_counter()
    with av.open(str(clip)) as src, av.open(str(out), "w") as dst:
        vin = src.streams.video[0]
        options = dict(PRORES_OPTIONS) if encoder == "bgvid" else {"profile": "4444"}
        vout = dst.add_stream(PRORES_CODEC, rate=vin.average_rate, options=options)
        vout.width, vout.height, vout.pix_fmt = vin.width, vin.height, "yuva444p10le"
        n = 0
        for i, frame in enumerate(src.decode(vin)):
            if i < start:
                continue
            if i > end:
                break
            rgb = frame.to_ndarray(format="rgb24")
            alpha = seg(rgb[None])[0]
            rgba = np.dstack([rgb.astype(np.uint16) * 257, np.rint(alpha * 65535).astype(np.uint16)])
            out_frame = av.VideoFrame.from_ndarray(rgba, format="rgba64le").reformat(format="yuva444p10le")
            out_frame.pts = n
            for packet in vout.encode(out_frame):
                dst.mux(packet)
            n += 1
        for packet in vout.encode():
            dst.mux(packet)
    return n / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip", nargs="?", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--model", default="selfie")
    parser.add_argument("--frames", default="0-119")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "formats.json")
    args = parser.parse_args()
    frames = parse_frames(args.frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = [("ProRes 4444 .mov", "o.mov", {}), ("VP9 alpha .webm", "o.webm", {}),
                 ("PNG sequence", "png/", {}), ("H.264 .mp4 over colour", "o.mp4", {"background": "#00ff00"}),
                 ("H.264 .mp4 over blur", "o.mp4", {"background": "blur"}), ("matte .mov", "o.mov", {"matte": True})]
        for label, name, extra in cases:
            runs = []
            for _ in range(args.repeat):
                result = bgvid.remove_background(args.clip, tmp / name, model=args.model, frames=args.frames,
                                                 overwrite=True, **extra)
                runs.append(result)
            fps = [r.fps for r in runs]
            rows.append({"case": label, "fps_median": float(np.median(fps)), "fps_min": min(fps), "fps_max": max(fps),
                         "frames": runs[0].frames, "stage_seconds": runs[-1].stage_seconds})
        for encoder, label in (("bgvid", "naive loop, same ProRes encoder"), ("prores_ks", "naive loop, prores_ks default")):
            naive = [naive_loop(args.clip, tmp / "naive.mov", args.model, frames, encoder=encoder) for _ in range(args.repeat)]
            rows.append({"case": label, "fps_median": float(np.median(naive)),
                         "fps_min": min(naive), "fps_max": max(naive), "frames": frames[1] - frames[0] + 1})
    with av.open(str(args.clip)) as c:
        s = c.streams.video[0]
        size = f"{s.width}x{s.height}"
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "python": platform.python_version(), "bgvid": bgvid.__version__}
    print(f"clip {args.clip.name} {size}, frames {args.frames}, model {args.model}, {os.cpu_count()} CPUs")
    print(f"{'case':<40}{'fps (median)':>14}{'min':>8}{'max':>8}")
    for row in rows:
        print(f"{row['case']:<40}{row['fps_median']:>14.1f}{row['fps_min']:>8.1f}{row['fps_max']:>8.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"clip": str(args.clip.name), "size": size, "model": args.model,
                                     "frames": args.frames, "machine": machine, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
