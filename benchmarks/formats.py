"""Whole-run throughput of `bgvid run` per output format on one clip, with a naive baseline.

    python benchmarks/formats.py [CLIP] [--model selfie] [--frames 0-119] [--json OUT.json]

Baseline, measured the same way in the same process: the naive loop of _common.naive_loop (decode one
frame, run the model, resize, encode; batch 1, no overlap) with the same model and ProRes 4444 encoder,
on as many frames as the range, read from frame 0. benchmarks/throughput.py is the fuller harness
(stages alone, roofline, fresh processes); this one covers every output format.
Prints a table and writes JSON with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import av
import numpy as np

import bgvid
from bgvid.apps.run import parse_frames

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, naive_loop  # noqa: E402

HERE = Path(__file__).resolve().parent
DEFAULT_CLIP = HERE.parent.parent / "shared" / "media" / "clips" / "juggle.mp4"


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
        for encoder, label in (("bgvid", "naive loop, same ProRes encoder"),
                               ("prores_ks", "naive loop, prores_ks default")):
            count = frames[1] - frames[0] + 1
            naive = [naive_loop(args.clip, tmp / "naive.mov", args.model, count, encoder=encoder)["fps"]
                     for _ in range(args.repeat)]
            rows.append({"case": label, "fps_median": float(np.median(naive)),
                         "fps_min": min(naive), "fps_max": max(naive), "frames": count})
    with av.open(str(args.clip)) as c:
        s = c.streams.video[0]
        size = f"{s.width}x{s.height}"
    print(f"clip {args.clip.name} {size}, frames {args.frames}, model {args.model}, {os.cpu_count()} CPUs")
    print(f"{'case':<40}{'fps (median)':>14}{'min':>8}{'max':>8}")
    for row in rows:
        print(f"{row['case']:<40}{row['fps_median']:>14.1f}{row['fps_min']:>8.1f}{row['fps_max']:>8.1f}")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"clip": str(args.clip.name), "size": size, "model": args.model,
                                     "frames": args.frames, "machine": machine(), "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
