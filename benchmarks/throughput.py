"""Throughput of bgvid, stage by stage and whole, against a naive loop, with the roofline.

    python benchmarks/throughput.py [--cases selfie:720p,selfie:1080p,isnet:720p] [--formats mov,webm]
                                    [--frames 120] [--isnet-frames 8] [--repeat 3] [--quiet-machine]

Clips: ../shared/media/clips/juggle.mp4 (1280x720, 24 fps) and a 1920x1080 copy made from it once
(bicubic upscale, H.264 crf 16, cached in $BGVID_BENCH_DIR, default /tmp/bgvid-bench).

For each model x clip, in one process (the stage-alone figures):
  decode         VideoReader over the frames (bgvid's batches, FFmpeg's threads)
  segment        SegmentStage on the decoded batches (resize to the model, normalise, ONNX Runtime)
  smooth         SmoothStage (per-frame models: on by default)
  upsample       UpsampleStage (bilinear, the default)
  decontaminate  DecontaminateStage (foreground colour estimate; not in --matte)
  encode         VideoWriter for the format (RGB->YUV, alpha plane, encoder, mux)
each `--repeat` times: frames per second (wall) and CPU seconds per frame (process user+system time,
all threads: what the stage costs the machine). Then per format, each in a fresh subprocess (so peak
RSS is the run's own): the whole run (bgvid.remove_background, model load included, as a user sees
it), the naive loop with the same model and encoder (decode 1 frame, model, resize, encode; batch
1, no overlap; see _common.naive_loop) and, for ProRes, the naive loop with prores_ks's default rate
search (and once more with the same encoder frame-threaded, as bgvid runs it). Also the whole run
with --no-decontaminate --no-smooth --refine none (exactly the work the naive loop does: no colour
estimate) and, with --before, with decontamination's NumPy bodies instead of its numba-compiled
kernels (an A/B of that change in the same session).

Roofline of the whole run = min(slowest stage alone, cores / sum of the stages' CPU s per frame):
the pipeline cannot beat its slowest stage, nor run more CPU seconds per second than there are
cores. "% roofline" = whole-run fps / roofline. Medians with min..max over the repetitions.
Prints tables; writes benchmarks/results/throughput.json (with the machine's description).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    JUGGLE,
    RESULTS,
    Timer,
    clip_1080p,
    cores,
    machine,
    naive_loop,
    peak_rss_mib,
    run_child,
    summary,
    table,
    write_json,
)

FORMATS = {"mov": ("ProRes 4444 .mov", "prores"), "webm": ("VP9 alpha .webm", "webm")}
STAGES = ("decode", "segment", "smooth", "upsample", "decontaminate", "encode")


def clip_for(name: str) -> Path:
    return {"720p": JUGGLE, "1080p": None}.get(name) or clip_1080p()


# ------------------------------------------------------------------------------------ child runs

def _child(payload: dict) -> dict:
    from _common import cpu_seconds

    what = payload["what"]
    clip, out, model, n = Path(payload["clip"]), Path(payload["out"]), payload["model"], int(payload["frames"])
    if what in ("run", "run_before"):
        import bgvid

        if what == "run_before":
            # A/B in the same session: decontamination's NumPy bodies (what an install without numba
            # runs), everything else unchanged.
            from bgvid.kernels import _foreground

            _foreground._jit_kernels = lambda: None
        c0 = cpu_seconds()
        r = bgvid.remove_background(clip, out, model=model, frames=f"0-{n - 1}", overwrite=True,
                                    **payload.get("options", {}))
        res = {"fps": r.fps, "wall": r.seconds, "cpu": cpu_seconds() - c0, "frames": r.frames,
               "stage_seconds": r.stage_seconds}
    else:
        res = naive_loop(clip, out, model, n, encoder=payload.get("encoder", "bgvid"))
    res["peak_rss_mib"] = peak_rss_mib()
    return res


# --------------------------------------------------------------------------------- stage alone

def _copy(batches):
    return [dataclasses.replace(b) for b in batches]


def _run_stage(stage, batches):
    out = []
    for b in batches:
        out.extend(stage.push(b))
    out.extend(stage.push(None))
    return out


def stages_alone(clip: Path, model: str, n: int, formats: list[str], repeat: int, tmp: Path) -> dict:
    from bgvid.apps.run import _default_batch
    from bgvid.io.reader import VideoReader, probe
    from bgvid.io.writer import VideoWriter
    from bgvid.kernels import DEFAULT_STRENGTH
    from bgvid.models.segmenter import Segmenter
    from bgvid.stages.stages import DecontaminateStage, SegmentStage, SmoothStage, UpsampleStage

    seg = Segmenter.from_name(model)
    batch = _default_batch(seg)
    info = probe(clip)
    res: dict = {}

    def measure(name, fn):
        walls, cpus, value = [], [], None
        for _ in range(repeat):
            with Timer() as t:
                value = fn()
            walls.append(t.wall)
            cpus.append(t.cpu)
        res[name] = {"fps": summary([n / w for w in walls]), "cpu_s_per_frame": summary([c / n for c in cpus])}
        return value

    def decode():
        with VideoReader(clip, frames=(0, n - 1), batch_size=batch) as reader:
            return list(reader)

    decoded = measure("decode", decode)
    segmented = measure("segment", lambda: _run_stage(SegmentStage(seg), _copy(decoded)))
    if seg.recurrent:
        smoothed = segmented
    else:
        smoothed = measure("smooth", lambda: _run_stage(SmoothStage(DEFAULT_STRENGTH), _copy(segmented)))
    upsampled = measure("upsample", lambda: _run_stage(UpsampleStage("none"), _copy(smoothed)))
    final = measure("decontaminate", lambda: _run_stage(DecontaminateStage(), _copy(upsampled)))
    for fmt in formats:
        kind = FORMATS[fmt][1]

        def encode(fmt=fmt, kind=kind):
            writer = VideoWriter(tmp / f"enc.{fmt}", info=info, kind=kind, audio=False, frames=(0, n - 1),
                                 overwrite=True)
            for b in final:
                writer.push(b)
            writer.push(None)

        measure(f"encode_{fmt}", encode)
    res["batch_size"] = batch
    return res


def roofline(alone: dict, fmt: str, n_cores: int) -> dict:
    names = [s for s in STAGES if s in alone or (s == "encode")]
    keys = [f"encode_{fmt}" if s == "encode" else s for s in names]
    keys = [k for k in keys if k in alone]
    fps = {k: alone[k]["fps"]["median"] for k in keys}
    cpu = {k: alone[k]["cpu_s_per_frame"]["median"] for k in keys}
    slowest = min(fps, key=fps.get)
    cpu_sum = sum(cpu.values())
    bound_stage, bound_cpu = fps[slowest], n_cores / cpu_sum
    return {"slowest_stage": slowest, "slowest_stage_fps": bound_stage, "cpu_s_per_frame_sum": cpu_sum,
            "cpu_bound_fps": bound_cpu, "roofline_fps": min(bound_stage, bound_cpu)}


# ---------------------------------------------------------------------------------------- main

def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--cases", default="selfie:720p,selfie:1080p,isnet:720p",
                   help="model:clip pairs, clip 720p (juggle.mp4) or 1080p (made from it)")
    p.add_argument("--formats", default="mov,webm")
    p.add_argument("--frames", type=int, default=120, help="frames per run for selfie (and other fast models)")
    p.add_argument("--frames-1080p", type=int, default=72)
    p.add_argument("--isnet-frames", type=int, default=8, help="frames per run for isnet / isnet-small")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--no-naive", action="store_true")
    p.add_argument("--no-plain", action="store_true",
                   help="skip the whole run with --no-decontaminate --no-smooth --refine none (the naive loop's work)")
    p.add_argument("--before", action="store_true",
                   help="also time the whole run with decontamination's NumPy bodies (no numba)")
    p.add_argument("--quiet-machine", action="store_true",
                   help="declare that nothing else ran on the machine (recorded in the JSON)")
    p.add_argument("--json", type=Path, default=RESULTS / "throughput.json")
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return

    n_cores = cores()
    desc = machine(quiet=bool(args.quiet_machine) if args.quiet_machine else False)
    formats = [f for f in args.formats.split(",") if f]
    results = []
    script = Path(__file__).resolve()
    with tempfile.TemporaryDirectory(prefix="bgvid-thr-") as tmp:
        tmp = Path(tmp)
        for case in args.cases.split(","):
            model, clip_name = case.split(":")
            clip = clip_for(clip_name)
            n = args.isnet_frames if model.startswith("isnet") else (
                args.frames_1080p if clip_name == "1080p" else args.frames)
            print(f"== {model} {clip_name} ({clip.name}), {n} frames, {args.repeat} repetitions", flush=True)
            alone = stages_alone(clip, model, n, formats, args.repeat, tmp)
            for fmt in formats:
                label = FORMATS[fmt][0]
                out = str(tmp / f"run.{fmt}")
                base = {"clip": str(clip), "out": out, "model": model, "frames": n}
                whole = [run_child(script, {**base, "what": "run"}) for _ in range(args.repeat)]
                row = {"model": model, "clip": clip_name, "format": label, "frames": n,
                       "stages_alone": {k: v for k, v in alone.items()
                                        if not k.startswith("encode_") or k == f"encode_{fmt}"},
                       "whole_run": {"fps": summary([w["fps"] for w in whole]),
                                     "cpu_s_per_frame": summary([w["cpu"] / w["frames"] for w in whole]),
                                     "peak_rss_mib": max(w["peak_rss_mib"] for w in whole),
                                     "stage_seconds_last": whole[-1]["stage_seconds"]}}
                if not args.no_plain:
                    plain = [run_child(script, {**base, "what": "run",
                                                "options": {"decontaminate": False, "smooth": None, "refine": "none"}})
                             for _ in range(args.repeat)]
                    row["whole_run_no_decontaminate"] = {
                        "fps": summary([w["fps"] for w in plain]),
                        "cpu_s_per_frame": summary([w["cpu"] / w["frames"] for w in plain]),
                        "peak_rss_mib": max(w["peak_rss_mib"] for w in plain)}
                if args.before:
                    before = [run_child(script, {**base, "what": "run_before"}) for _ in range(args.repeat)]
                    row["whole_run_before"] = {"fps": summary([w["fps"] for w in before]),
                                               "cpu_s_per_frame": summary([w["cpu"] / w["frames"] for w in before]),
                                               "peak_rss_mib": max(w["peak_rss_mib"] for w in before)}
                row["roofline"] = roof = roofline(alone, fmt, n_cores)
                row["whole_run_pct_of_roofline"] = 100 * row["whole_run"]["fps"]["median"] / roof["roofline_fps"]
                if not args.no_naive:
                    encs = ["bgvid"] + (["bgvid_frame_threads", "prores_ks"] if fmt == "mov" else [])
                    for enc in encs:
                        runs = [run_child(script, {**base, "what": "naive", "encoder": enc})
                                for _ in range(args.repeat)]
                        row[f"naive_{enc}"] = {"fps": summary([r["fps"] for r in runs]),
                                               "cpu_s_per_frame": summary([r["cpu"] / r["frames"] for r in runs]),
                                               "peak_rss_mib": max(r["peak_rss_mib"] for r in runs)}
                        row[f"speedup_vs_naive_{enc}"] = (row["whole_run"]["fps"]["median"]
                                                          / row[f"naive_{enc}"]["fps"]["median"])
                results.append(row)
                print_row(row)

    print()
    print(f"machine: {desc['cpu']}, {desc['cores']} cores, {desc['memory_gib']} GiB, load at start "
          f"{desc['loadavg_at_start'][0]:.2f}, quiet={desc['quiet']}")
    print_summary(results)
    write_json(args.json, {"machine": desc, "repeat": args.repeat, "cases": args.cases, "formats": formats,
                           "command": " ".join(sys.argv), "results": results})


def _fmt_range(s: dict) -> str:
    d = 1 if s["median"] >= 10 else 2
    return f"{s['median']:.{d}f} ({s['min']:.{d}f}-{s['max']:.{d}f})"


def print_row(row: dict) -> None:
    rows = []
    for k, v in row["stages_alone"].items():
        if isinstance(v, dict):
            rows.append({"stage": k, "fps": _fmt_range(v["fps"]), "cpu": v["cpu_s_per_frame"]["median"] * 1e3})
    w = row["whole_run"]
    rows.append({"stage": "WHOLE RUN", "fps": _fmt_range(w["fps"]), "cpu": w["cpu_s_per_frame"]["median"] * 1e3})
    if "whole_run_no_decontaminate" in row:
        b = row["whole_run_no_decontaminate"]
        rows.append({"stage": "whole run, naive loop's work", "fps": _fmt_range(b["fps"]),
                     "cpu": b["cpu_s_per_frame"]["median"] * 1e3})
    if "whole_run_before" in row:
        b = row["whole_run_before"]
        rows.append({"stage": "whole run, old decontamination", "fps": _fmt_range(b["fps"]),
                     "cpu": b["cpu_s_per_frame"]["median"] * 1e3})
    names = {"bgvid": "same encoder", "bgvid_frame_threads": "same encoder, frame threads",
             "prores_ks": "prores_ks default"}
    for enc in names:
        if f"naive_{enc}" in row:
            nv = row[f"naive_{enc}"]
            rows.append({"stage": f"naive loop ({names[enc]})",
                         "fps": _fmt_range(nv["fps"]), "cpu": nv["cpu_s_per_frame"]["median"] * 1e3})
    print(f"-- {row['model']} {row['clip']} -> {row['format']}")
    print(table(rows, [("stage", "stage", "s"), ("fps", "fps median (min-max)", "s"), ("cpu", "CPU ms/frame", ".1f")]))
    r = row["roofline"]
    print(f"roofline {r['roofline_fps']:.2f} fps = "
          f"min(slowest stage {r['slowest_stage']} {r['slowest_stage_fps']:.2f}, "
          f"{cores()} cores / {r['cpu_s_per_frame_sum'] * 1e3:.0f} CPU ms = {r['cpu_bound_fps']:.2f}); whole run "
          f"{row['whole_run_pct_of_roofline']:.0f}% of it; peak RSS {row['whole_run']['peak_rss_mib']:.0f} MiB",
          flush=True)


def print_summary(results: list[dict]) -> None:
    rows = []
    for r in results:
        rows.append({"case": f"{r['model']} {r['clip']} {r['format']}", "whole": r["whole_run"]["fps"]["median"],
                     "spread": r["whole_run"]["fps"]["spread_pct"], "roof": r["roofline"]["roofline_fps"],
                     "pct": r["whole_run_pct_of_roofline"],
                     "naive": r.get("naive_bgvid", {}).get("fps", {}).get("median"),
                     "x": r.get("speedup_vs_naive_bgvid"),
                     "naive_ks": r.get("naive_prores_ks", {}).get("fps", {}).get("median"),
                     "x_ks": r.get("speedup_vs_naive_prores_ks"), "rss": r["whole_run"]["peak_rss_mib"],
                     "before": r.get("whole_run_before", {}).get("fps", {}).get("median"),
                     "plain": r.get("whole_run_no_decontaminate", {}).get("fps", {}).get("median")})
    print(table(rows, [("case", "case", "s"), ("whole", "whole fps", ".2f"), ("spread", "spread %", ".0f"),
                       ("roof", "roofline", ".2f"), ("pct", "% roof", ".0f"), ("naive", "naive", ".2f"),
                       ("x", "x naive", ".2f"), ("naive_ks", "naive ks", ".2f"), ("x_ks", "x ks", ".2f"),
                       ("rss", "RSS MiB", ".0f"), ("before", "NumPy decont fps", ".2f"),
                       ("plain", "same-work fps", ".2f")]))


if __name__ == "__main__":
    main()
