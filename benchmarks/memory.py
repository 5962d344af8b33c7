"""Peak RSS of a whole `bgvid run` against video length: it must not grow with the number of frames.

    python benchmarks/memory.py [--model selfie] [--formats mov,webm] [--lengths 60,300,600] [--repeat 1]

The long clip is ../shared/media/clips/juggle.mp4 played back to back until 600 frames (made once,
H.264 crf 16, in $BGVID_BENCH_DIR, default /tmp/bgvid-bench). Every run is a fresh subprocess
(bgvid.remove_background with the defaults and process settings of `bgvid run`), so its peak RSS (getrusage ru_maxrss)
is its own. The shorter runs read the first frames of the same clip. The middle length shows whether
a difference is growth (300 -> 600 rises too) or the bounded queues filling once (a plateau).
MALLOC_MMAP_THRESHOLD_ and other allocator settings are inherited from the environment: glibc keeps
freed large blocks in per-thread arenas, so a threaded run's RSS can creep without any leak.
Prints a table; writes benchmarks/results/memory.json with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, clip_repeated, cpu_seconds, machine, peak_rss_mib, run_child, table, write_json  # noqa: E402

FORMATS = {"mov": "ProRes 4444 .mov", "webm": "VP9 alpha .webm", "mp4": "H.264 .mp4 over colour"}


def _child(payload: dict) -> dict:
    import bgvid
    from bgvid.cli.process import limit_malloc_arenas

    limit_malloc_arenas()  # as the `bgvid` command does at start-up

    before = peak_rss_mib()
    c0 = cpu_seconds()
    extra = {"background": "#00ff00"} if payload["out"].endswith(".mp4") else {}
    r = bgvid.remove_background(payload["clip"], payload["out"], model=payload["model"],
                                frames=f"0-{payload['frames'] - 1}", overwrite=True, **extra)
    return {"frames": r.frames, "fps": r.fps, "cpu": cpu_seconds() - c0, "peak_rss_mib": peak_rss_mib(),
            "rss_after_import_mib": before}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--model", default="selfie")
    p.add_argument("--formats", default="mov,webm")
    p.add_argument("--lengths", default="60,300,600")
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--quiet-machine", action="store_true")
    p.add_argument("--json", type=Path, default=RESULTS / "memory.json")
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    lengths = [int(x) for x in args.lengths.split(",")]
    clip = clip_repeated(max(lengths))
    desc = machine(quiet=bool(args.quiet_machine))
    rows = []
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory(prefix="bgvid-mem-") as tmp:
        for fmt in args.formats.split(","):
            peaks = {}
            for n in lengths:
                runs = [run_child(script, {"clip": str(clip), "out": str(Path(tmp) / f"o.{fmt}"),
                                           "model": args.model, "frames": n}) for _ in range(args.repeat)]
                peak = max(r["peak_rss_mib"] for r in runs)
                peaks[n] = peak
                rows.append({"format": FORMATS[fmt], "frames": n, "peak_rss_mib": peak,
                             "rss_after_import_mib": runs[0]["rss_after_import_mib"],
                             "fps": runs[-1]["fps"], "growth_pct": 100 * (peak / peaks[lengths[0]] - 1)})
                print(table(rows[-1:], [("format", "format", "s"), ("frames", "frames", "d"),
                                        ("peak_rss_mib", "peak RSS MiB", ".0f"), ("growth_pct", "vs first %", "+.1f")]),
                      flush=True)
    print(f"\nmodel {args.model}, clip {clip.name}; machine: {desc['cpu']}, {desc['cores']} cores")
    print(table(rows, [("format", "format", "s"), ("frames", "frames", "d"), ("peak_rss_mib", "peak RSS MiB", ".0f"),
                       ("growth_pct", f"vs {lengths[0]} frames %", "+.1f"), ("fps", "fps", ".1f")]))
    write_json(args.json, {"machine": desc, "model": args.model, "clip": clip.name, "lengths": lengths,
                           "command": " ".join(sys.argv), "rows": rows,
                           "target": "peak RSS at the longest length within 10% of the shortest"})


if __name__ == "__main__":
    main()
