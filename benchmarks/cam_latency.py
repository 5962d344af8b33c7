"""Latency of `bgvid cam`: a 720p clip played as a 30 fps camera, through the live loop, into a
sink. Per configuration: latency p50/p99 from the moment a frame is read from the source to the
moment its result is handed to the sink (and to the moment the sink returns), fps held, frames
dropped, and where the time goes (ms per frame for each stage).

    python benchmarks/cam_latency.py                      # 60 s per configuration (the issue's run)
    python benchmarks/cam_latency.py --seconds 10         # a quick look

Source: ../shared/media/clips/juggle.mp4 (1280x720, 24 fps) scaled to --size and played at --fps,
looping. Sinks: `null` (the pipeline alone) and a real MPEG-TS stream (libx264 ultrafast,
zerolatency) to udp://127.0.0.1 (nobody needs to listen: UDP just sends). Prints a table and
writes benchmarks/results/cam_latency.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CLIP = ROOT.parent / "shared" / "media" / "clips" / "juggle.mp4"
RESULTS = ROOT / "benchmarks" / "results" / "cam_latency.json"


def run_one(name: str, *, sink: str, background: str, kernel: str, seconds: float, size: str, fps: int,
            every: int, threads: int, port: int) -> dict:
    from bgvid.apps.cam import run_live

    target = f"udp://127.0.0.1:{port}" if sink == "udp" else "null"
    stats = run_live(str(CLIP), target, background=background, size=size, fps=fps, loop=True,
                     duration=seconds, every=every, threads=threads)
    row = {"name": name, "sink": "udp MPEG-TS libx264" if sink == "udp" else "null", "background": background,
           "composite_kernel": kernel, "every": every, **stats.to_json()}
    row["fps_held"] = bool(stats.dropped == 0 and stats.fps >= 0.98 * fps)
    return row


def stage_profile(size: str, iterations: int) -> dict:
    """Each stage alone on real 720p frames, in this thread, `iterations` times: the minimum is
    what a stage costs when nothing else wants the CPU (robust on a shared machine, where the live
    run's figures include waiting for a core), the median what it cost here and now."""
    import time

    import av

    from bgvid.apps.cam import NullSink, StreamSink, open_live

    w, h = (int(v) for v in size.split("x"))
    with av.open(str(CLIP)) as c:
        frames = [f for _, f in zip(range(8), c.decode(video=0), strict=False)]
    out = {}
    for kernel in ("stock",):
        for background in ("blur", "#00ff00"):
            session = open_live(str(CLIP), NullSink(), background=background, size=size, fps=30)
            sink = StreamSink("/dev/null", w, h, 30, fmt="mpegts")
            try:
                session.warm_up()
                samples = {}
                for i in range(iterations):
                    times = {}
                    t0 = time.perf_counter()
                    rgb = session._to_rgb(frames[i % len(frames)])
                    times["convert"] = time.perf_counter() - t0
                    result = session.process(rgb, i, timings=times)
                    t0 = time.perf_counter()
                    sink.send(result, i / 30)
                    times["sink (x264)"] = time.perf_counter() - t0
                    for k, v in times.items():
                        samples.setdefault(k, []).append(1000 * v)
            finally:
                sink.close()
                session.close()
            loop = [sum(v[i] for k, v in samples.items() if not k.startswith("sink")) for i in range(iterations)]
            out[f"{kernel} {background}"] = {
                "min_ms": {k: round(min(v), 2) for k, v in samples.items()} | {"loop (no sink)": round(min(loop), 2)},
                "median_ms": {k: round(float(np.median(v)), 2) for k, v in samples.items()}
                | {"loop (no sink)": round(float(np.median(loop)), 2)},
            }
    return out


def machine() -> dict:
    info = {"python": platform.python_version(), "machine": platform.machine(), "cores": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import av
        import onnxruntime

        info["onnxruntime"], info["pyav"] = onnxruntime.__version__, av.__version__
    except ImportError:
        pass
    return info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds per configuration (default 60)")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--fps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="ONNX Runtime threads (bgvid cam's default: 1)")
    parser.add_argument("--port", type=int, default=56001)
    parser.add_argument("--only", help="comma-separated configuration names")
    parser.add_argument("--profile-iterations", type=int, default=100, help="stage-alone repetitions (0: skip)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if not CLIP.is_file():
        sys.exit(f"{CLIP}: not found (the project's sample footage beside the checkout)")

    configs = [
        ("null/blur", dict(sink="null", background="blur", kernel="stock", every=1)),
        ("udp/blur", dict(sink="udp", background="blur", kernel="stock", every=1)),
        ("udp/colour", dict(sink="udp", background="#00ff00", kernel="stock", every=1)),
        ("udp/blur every 2", dict(sink="udp", background="blur", kernel="stock", every=2)),
    ]
    if args.only:
        wanted = set(args.only.split(","))
        configs = [c for c in configs if c[0] in wanted]
    load_before = os.getloadavg()
    rows = []
    for name, cfg in configs:
        print(f"running {name} for {args.seconds:g} s ...", file=sys.stderr, flush=True)
        rows.append(run_one(name, seconds=args.seconds, size=args.size, fps=args.fps, threads=args.threads,
                            port=args.port, **cfg))
    profile = {}
    if args.profile_iterations:
        print(f"profiling each stage alone, {args.profile_iterations} frames ...", file=sys.stderr, flush=True)
        profile = stage_profile(args.size, args.profile_iterations)
    load_after = os.getloadavg()

    stage_names = []
    for row in rows:
        for k in row["stage_ms"]:
            if k not in stage_names:
                stage_names.append(k)
    head = (f"{'configuration':<22}{'p50':>7}{'p99':>7}{'dlv99':>7}{'fps':>6}{'drop':>6}  "
            + "".join(f"{k[:9]:>10}" for k in stage_names))
    print(f"bgvid cam latency: {args.size} at {args.fps} fps, {args.seconds:g} s each, selfie-landscape, "
          f"ORT threads {args.threads}; ms (p50/p99: read -> handed to sink; dlv99: -> sink returned)")
    print(head)
    for row in rows:
        lat, dlv = row["latency_ms"], row["delivered_ms"]
        print(f"{row['name']:<22}{lat['p50']:>7.1f}{lat['p99']:>7.1f}{dlv['p99']:>7.1f}"
              f"{row['fps']:>6.1f}{row['dropped']:>6}  "
              + "".join(f"{row['stage_ms'].get(k, 0.0):>10.2f}" for k in stage_names))
    if profile:
        names = list(next(iter(profile.values()))["min_ms"])
        print("\neach stage alone, ms per 720p frame: min (best case, ~ a quiet machine) / median (here, now)")
        print(f"{'kernel/background':<22}" + "".join(f"{k[:13]:>15}" for k in names))
        for key, p in profile.items():
            print(f"{key:<22}" + "".join(f"{p['min_ms'][k]:>7.2f}/{p['median_ms'][k]:<7.2f}" for k in names))
    print(f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} on {os.cpu_count()} cores")
    result = {
        "command": "python benchmarks/cam_latency.py " + " ".join(sys.argv[1:]),
        "clip": "juggle.mp4", "size": args.size, "fps": args.fps, "seconds": args.seconds, "model": "selfie-landscape",
        "threads": args.threads, "machine": machine(), "load_average_before": load_before,
        "load_average_after": load_after,
        "note": "stage_ms: mean ms per frame in the processing loop (segment: per model run); the capture thread's "
                "decoding runs beside it and is not in these columns",
        "runs": rows,
        "stage_alone": profile,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
