"""bgvid against rembg (a real peer) on the same ISNet weights: speed per frame, the whole video path,
and matte quality on composites with known alpha.

    python benchmarks/rembg_compare.py [--venv /tmp/rembg-venv] [--frames 6] [--video-frames 48]

rembg is NOT a dependency of bgvid. It is installed into its own virtual environment and driven as a
subprocess, so its pins (it would downgrade Pillow here) never touch bgvid's environment:

    python3 -m venv /tmp/rembg-venv && /tmp/rembg-venv/bin/pip install "rembg[cpu,cli]"

Both sides run the very same ONNX file: bgvid's cached `isnet` (@imgly/background-removal-data
1.4.5 /models/medium, bgvid's graph rewrite of it), placed under REMBG_HOME as models/isnet.onnx and
given to rembg's `dis_custom` session (`-m dis_custom -x '{"model_path": ...}'`; `-m` is always
passed, rembg's default model would download). HF_HUB_OFFLINE=1 is set for rembg. Both infer at
1024x1024; so the difference is pre/post-processing and the pipeline around the model.

1. Per frame, on 720p composites with exact alpha (the lemur over a panning still, the plush over
   the handheld room clip; pipeline/_composite.py): rembg's Python API `remove(img, session=s)`
   with the session made once (RGBA out, as users call it), against bgvid's Segmenter (batch 1) +
   the matte brought to 720p bilinear or guided (bgvid's default). The tools are interleaved frame by
   frame (which goes first alternates) over --rounds passes, so a change in the machine's load falls
   on both alike. Median wall and CPU ms per frame, split into the model alone (ONNX Runtime's run,
   timed inside each tool) and the rest (pre/post-processing: what actually differs), and MAD / MSE /
   Grad against the true alpha (RVM's definitions, pipeline/_metrics.py).
2. The whole video path on --video-frames frames of juggle.mp4: a rembg user's (PyAV writes the
   frames as PNGs, `rembg p` on the folder, the RGBA PNGs are encoded back to ProRes 4444 with the
   same prores_ks settings bgvid uses) against `bgvid.remove_background(..., model="isnet")` to .mov
   with bgvid's defaults (guided refinement, decontamination), each timed end to end (model load
   included).
Prints tables; writes benchmarks/results/rembg.json with the machine's description.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import JUGGLE, MEDIA, RESULTS, WORK, machine, run_child, summary, table, write_json  # noqa: E402

SIZE = (720, 1280)

# Runs inside rembg's venv: per-frame timing through the Python API, session reused. It serves one
# frame per request (a frame index on stdin -> a JSON line on stdout), so the parent can interleave
# rembg's frames with bgvid's and both see the same machine at the same moment.
_WORKER = r"""
import json, sys, time
import numpy as np
from PIL import Image
from rembg import new_session, remove
frames_npz, model_path, out_npz = sys.argv[1:4]
frames = np.load(frames_npz)["rgb"]
t0 = time.perf_counter()
session = new_session("dis_custom", model_path=model_path)
print(json.dumps({"setup_s": time.perf_counter() - t0}), flush=True)
model_s = [0.0]
ort_run = session.inner_session.run
def timed_run(*args, **kw):  # the model alone, to split the frame's time into model and the rest
    t = time.perf_counter()
    try:
        return ort_run(*args, **kw)
    finally:
        model_s[0] += time.perf_counter() - t
session.inner_session.run = timed_run
alphas = {}
for line in sys.stdin:
    i = int(line)
    model_s[0] = 0.0
    t, c = time.perf_counter(), time.process_time()
    rgba = remove(Image.fromarray(frames[i]), session=session)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
    alphas[i] = np.asarray(rgba)[..., 3]
    print(json.dumps({"seconds": wall, "cpu_seconds": cpu, "model_seconds": model_s[0]}), flush=True)
np.savez(out_npz, alpha=np.stack([alphas[i] for i in sorted(alphas)]))
"""


class RembgWorker:
    """rembg's remove() in its own venv, one frame per call."""

    def __init__(self, venv: Path, home: Path, model: Path, frames_npz: Path, out_npz: Path):
        self.proc = subprocess.Popen([str(venv / "bin" / "python"), "-c", _WORKER, str(frames_npz), str(model),
                                      str(out_npz)], env=rembg_env(home), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.setup_s = self._reply()["setup_s"]

    def _reply(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"rembg worker exited with {self.proc.wait()}")
        return json.loads(line)

    def __call__(self, i: int) -> dict:
        self.proc.stdin.write(f"{i}\n")
        self.proc.stdin.flush()
        return self._reply()

    def close(self) -> None:
        self.proc.stdin.close()
        if self.proc.wait() != 0:
            raise RuntimeError("rembg worker failed")


def rembg_env(home: Path) -> dict:
    env = dict(os.environ, REMBG_HOME=str(home), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", ""))
    if not env["OMP_NUM_THREADS"]:
        del env["OMP_NUM_THREADS"]
    return env


def prepare_home(home: Path) -> Path:
    """REMBG_HOME/models/isnet.onnx = bgvid's cached isnet (hard link where possible)."""
    import bgvid

    src = Path(bgvid.model_path("isnet"))
    dst = home / "models" / "isnet.onnx"
    if not dst.exists() or dst.stat().st_size != src.stat().st_size:
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            if dst.exists():
                dst.unlink()
            os.link(src, dst)
        except OSError:
            shutil.copyfile(src, dst)
    return dst


def composites(frames: int):
    from bgvid.eval.composites import make_composite

    sets = {"lemur/still": (MEDIA / "rgba/lemur_rgba.png", MEDIA / "backgrounds/still_GT26r.jpg"),
            "plush/room": (MEDIA / "rgba/plush_rgba.png", MEDIA / "backgrounds/handheld_room.mp4")}
    out = {}
    for name, (fg, bg) in sets.items():
        rgb, alpha = [], []
        for frame, a, _ in make_composite(fg, bg, frames=frames, size=SIZE, seed=1):
            rgb.append(frame)
            alpha.append(a)
        out[name] = (np.stack(rgb), np.stack(alpha))
    return out


def score(pred: np.ndarray, true: np.ndarray) -> dict:
    from bgvid.eval.metrics import grad, mad, mse

    return {k: float(np.mean([f(p, t) for p, t in zip(pred, true, strict=False)])) for k, f in
            (("mad", mad), ("mse", mse), ("grad", grad))}


class BgvidPerFrame:
    """bgvid's Segmenter (batch 1) + the matte brought to full size, one frame per call."""

    def __init__(self, rgb: np.ndarray, refine: str):
        from bgvid.models.segmenter import Segmenter

        self.rgb, self.refine = rgb, refine
        self.seg = Segmenter.from_name("isnet")
        self.alphas = {}
        self.model_s = 0.0
        ort_run = self.seg.session.run

        def timed_run(*args, **kw):  # the model alone, as in the rembg worker
            t = time.perf_counter()
            try:
                return ort_run(*args, **kw)
            finally:
                self.model_s += time.perf_counter() - t

        self.seg.session.run = timed_run

    def __call__(self, i: int) -> dict:
        from bgvid.kernels import guided_upsample, resize_batch

        frame = self.rgb[i]
        self.model_s = 0.0
        t, c = time.perf_counter(), time.process_time()
        low = self.seg(frame[None], size="model")
        if self.refine == "guided":
            a = guided_upsample(low, frame[None])
        else:
            a = resize_batch(low, frame.shape[:2], interpolation="bilinear")
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        self.alphas[i] = a[0]
        return {"seconds": wall, "cpu_seconds": cpu, "model_seconds": self.model_s}


def interleaved(tools: dict, n_frames: int, rounds: int) -> dict:
    """Each tool on each frame, `rounds` times, alternating which tool goes first, so drifts in the
    machine's load fall on all tools alike. -> {label: {"seconds": [...], "cpu_seconds": [...]}}"""
    keys = ("seconds", "cpu_seconds", "model_seconds")
    times = {label: {k: [] for k in keys} for label in tools}
    labels = list(tools)
    for _ in range(rounds):
        for i in range(n_frames):
            order = labels if i % 2 == 0 else labels[::-1]
            for label in order:
                r = tools[label](i)
                for k in keys:
                    times[label][k].append(r[k])
    return times


def rembg_video_path(venv: Path, home: Path, model: Path, clip: Path, n: int, tmp: Path) -> dict:
    """Frames out with PyAV (PNG), `rembg p` on the folder, RGBA PNGs back into ProRes 4444."""
    import av
    from PIL import Image

    from bgvid.io.writer import PRORES_CODEC, PRORES_OPTIONS

    src_dir, dst_dir, out = tmp / "frames", tmp / "cutouts", tmp / "rembg.mov"
    src_dir.mkdir()
    dst_dir.mkdir()
    t0 = time.perf_counter()
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        rate = s.average_rate
        for i, f in enumerate(c.decode(s)):
            if i >= n:
                break
            f.to_image().save(src_dir / f"{i:06d}.png")
    t1 = time.perf_counter()
    proc = subprocess.run([str(venv / "bin" / "rembg"), "p", "-m", "dis_custom", "-x",
                           json.dumps({"model_path": str(model)}), str(src_dir), str(dst_dir)],
                          env=rembg_env(home), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"rembg p failed: {proc.stderr[-2000:]}")
    t2 = time.perf_counter()
    files = sorted(dst_dir.glob("*.png"))
    with av.open(str(out), "w") as dst:
        vout = dst.add_stream(PRORES_CODEC, rate=rate, options=dict(PRORES_OPTIONS))
        vout.pix_fmt = "yuva444p10le"
        first = np.asarray(Image.open(files[0]))
        vout.height, vout.width = first.shape[:2]
        for i, p in enumerate(files):
            rgba = np.asarray(Image.open(p).convert("RGBA")).astype(np.uint16) * 257
            f = av.VideoFrame.from_ndarray(rgba, format="rgba64le").reformat(format="yuva444p10le")
            f.pts = i
            dst.mux(vout.encode(f))
        dst.mux(vout.encode())
    t3 = time.perf_counter()
    return {"frames": len(files), "fps": len(files) / (t3 - t0), "wall": t3 - t0,
            "seconds": {"extract_png": t1 - t0, "rembg_p": t2 - t1, "encode_prores": t3 - t2}}


def _child(payload: dict) -> dict:
    from _common import cpu_seconds, peak_rss_mib

    import bgvid

    c0 = cpu_seconds()
    options = {"refine": payload["refine"]} if "refine" in payload else {}  # else bgvid's defaults
    r = bgvid.remove_background(payload["clip"], payload["out"], model="isnet", frames=f"0-{payload['frames'] - 1}",
                                overwrite=True, **options)
    return {"fps": r.fps, "wall": r.seconds, "frames": r.frames, "cpu": cpu_seconds() - c0,
            "peak_rss_mib": peak_rss_mib(), "stage_seconds": r.stage_seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--venv", type=Path, default=Path("/tmp/rembg-venv"))
    p.add_argument("--frames", type=int, default=6, help="composite frames per set for the per-frame comparison")
    p.add_argument("--rounds", type=int, default=2, help="passes over the frames, tools interleaved")
    p.add_argument("--video-frames", type=int, default=48)
    p.add_argument("--skip-video", action="store_true")
    p.add_argument("--video-bilinear", action="store_true", help="also time the whole bgvid run with --refine none")
    p.add_argument("--quiet-machine", action="store_true")
    p.add_argument("--json", type=Path, default=RESULTS / "rembg.json")
    args = p.parse_args()
    if args.child:
        print(json.dumps(_child(json.loads(args.child))))
        return
    if not (args.venv / "bin" / "rembg").exists():
        sys.exit(f"no rembg in {args.venv}: python3 -m venv {args.venv} && "
                 f"{args.venv}/bin/pip install 'rembg[cpu,cli]'")
    desc = machine(quiet=bool(args.quiet_machine))
    home = WORK / "rembg_home"
    model = prepare_home(home)
    version = subprocess.run([str(args.venv / "bin" / "python"), "-c", "import rembg, onnxruntime; "
                              "print(rembg.__version__, onnxruntime.__version__)"],
                             capture_output=True, text=True).stdout.split()
    result = {"machine": desc, "rembg": version[0] if version else None,
              "rembg_onnxruntime": version[1] if len(version) > 1 else None, "model": str(model),
              "command": " ".join(sys.argv), "per_frame": [], "video": None}
    rows = []
    with tempfile.TemporaryDirectory(prefix="bgvid-rembg-") as tmp:
        tmp = Path(tmp)
        for name, (rgb, truth) in composites(args.frames).items():
            np.savez(tmp / "frames.npz", rgb=rgb)
            rembg = RembgWorker(args.venv, home, model, tmp / "frames.npz", tmp / "rembg.npz")
            bilinear, guided = BgvidPerFrame(rgb, "none"), BgvidPerFrame(rgb, "guided")
            tools = {"rembg remove() (dis_custom, session reused)": rembg,
                     "bgvid Segmenter + bilinear upsample": bilinear, "bgvid Segmenter + guided upsample": guided}
            for tool in tools.values():
                tool(0)  # warm-up: first-call allocations, not counted
            times = interleaved(tools, len(rgb), args.rounds)
            rembg.close()
            rem_alpha = np.load(tmp / "rembg.npz")["alpha"].astype(np.float32) / 255
            alphas = {"rembg remove() (dis_custom, session reused)": rem_alpha,
                      "bgvid Segmenter + bilinear upsample": np.stack([bilinear.alphas[i] for i in range(len(rgb))]),
                      "bgvid Segmenter + guided upsample": np.stack([guided.alphas[i] for i in range(len(rgb))])}
            for label in tools:
                secs = times[label]
                row = {"composite": name, "tool": label, "ms_per_frame": summary([1e3 * s for s in secs["seconds"]]),
                       "cpu_ms_per_frame": summary([1e3 * s for s in secs["cpu_seconds"]]),
                       "model_ms_per_frame": summary([1e3 * s for s in secs["model_seconds"]]),
                       # what is not the shared model: pre/post-processing and the pipeline around it
                       "other_ms_per_frame": summary([1e3 * (s - m)
                                                      for s, m in zip(secs["seconds"], secs["model_seconds"],
                                                                      strict=False)]),
                       **score(alphas[label], truth)}
                result["per_frame"].append(row)
                rows.append({"composite": name, "tool": label, "ms": row["ms_per_frame"]["median"],
                             "lo": row["ms_per_frame"]["min"], "hi": row["ms_per_frame"]["max"],
                             "cpu": row["cpu_ms_per_frame"]["median"], "model": row["model_ms_per_frame"]["median"],
                             "other": row["other_ms_per_frame"]["median"],
                             "mad": row["mad"], "mse": row["mse"], "grad": row["grad"]})
            print(table(rows[-3:], [("composite", "composite", "s"), ("tool", "tool", "s"), ("ms", "ms/frame", ".0f"),
                                    ("lo", "min", ".0f"), ("hi", "max", ".0f"), ("cpu", "CPU ms", ".0f"),
                                    ("model", "model ms", ".0f"),
                                    ("other", "rest ms", ".0f"),
                                    ("mad", "MAD", ".2f"),
                                    ("mse", "MSE", ".2f"), ("grad", "Grad", ".2f")]), flush=True)
        if not args.skip_video:
            n = args.video_frames
            rv = rembg_video_path(args.venv, home, model, JUGGLE, n, tmp)
            bg = run_child(Path(__file__).resolve(), {"clip": str(JUGGLE), "out": str(tmp / "bgvid.mov"), "frames": n})
            result["video"] = {"frames": n, "clip": JUGGLE.name, "rembg": rv, "bgvid": bg}
            vrows = [{"path": "rembg: PyAV -> PNG, rembg p, PNG -> ProRes 4444", "fps": rv["fps"], "wall": rv["wall"]},
                     {"path": "bgvid run --model isnet (.mov)", "fps": bg["fps"], "wall": bg["wall"]}]
            if args.video_bilinear:
                bgb = run_child(Path(__file__).resolve(), {"clip": str(JUGGLE), "out": str(tmp / "bgvid_b.mov"),
                                                           "frames": n, "refine": "none"})
                result["video"]["bgvid_bilinear"] = bgb
                vrows.append({"path": "bgvid run --model isnet --refine none", "fps": bgb["fps"], "wall": bgb["wall"]})
            print(f"\nwhole video path, {n} frames of {JUGGLE.name} (1280x720), one run each")
            print(table(vrows, [("path", "path", "s"), ("fps", "fps", ".2f"), ("wall", "seconds", ".1f")]))
    write_json(args.json, result)


if __name__ == "__main__":
    main()
