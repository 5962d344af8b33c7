"""`--subject person|any|auto` against plain rvm and plain isnet, on every shared clip (README, "Any
subject").

    python benchmarks/subject.py [--clips ...] [--methods ...] [--frames 60] [--json OUT]
    python benchmarks/subject.py --speed [--speed-frames 40]      # fps and peak RSS at 720p

Methods (each run as its own `bgvid.iter_mattes` in a fresh process, so peak RSS is its own):
    rvm      --model rvm
    isnet    --model isnet --no-cleanup: plain ISNet at 1024x1024 as before this issue (guided + smooth)
    isnet-clean  --model isnet: the same with its default cleanup (solid mattes): the edges before/after
    person   --subject person: the same chain as --model rvm (identical mattes, checked on carphone), so its
             row is rvm's
    any      --subject any: rvm + ISNet (object input, key frames) + cleanup
    auto     --subject auto: the probe alone (its choice, reason and seconds, in a fresh process); the matte
             is the chosen path's (the same chain on the same frames), so its measures are that row's

Clips: the composites with exact alpha (benchmarks/quality.py's lemur/still, plush/room, person/room, and
pet/room: the DAVIS person and the lemur side by side over the room clip, a person with a pet), DAVIS
dance-jump and swing (binary masks of one object), juggle (1280x720), bedroom (960x540), carphone (176x144)
and the person-free handheld_room, each on its first --frames frames.

Measures: IoU (alpha >= 0.5 against the truth >= 0.5), MAD, MSE x1e3, Grad, dtSSD x1e2 (RVM's definitions,
bgvid.eval.metrics) where there is truth; on every clip the foreground area (alpha >= 0.5), the share of
half-transparent core pixels (core: alpha >= 0.5 eroded by 10 px; half-transparent: 0.05 < alpha < 0.95)
and the core's mean frame-to-frame change with motion compensation (|a_t - warp(a_{t-1})| over the pixels
in the core of both, the warp along dense optical flow of the frames: OpenCV DIS at full resolution).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from _common import MEDIA, RESULTS, WORK, machine  # noqa: E402

COMPOSITES = ("lemur/still", "plush/room", "person/room", "pet/room")
CLIPS = COMPOSITES + ("dance-jump", "swing", "juggle", "bedroom", "carphone", "handheld_room")
METHODS = ("rvm", "isnet", "person", "any", "auto")  # and isnet-clean, asked for by name
RUN_OPTIONS = {
    "rvm": {"model": "rvm"},
    "isnet": {"model": "isnet", "cleanup": False},
    "isnet-clean": {"model": "isnet"},
    "person": {"subject": "person"},
    "any": {"subject": "any"},
    "auto": {"subject": "auto"},
}
CORE_ERODE = 10  # px: the definition of a subject's core


# ------------------------------------------------------------------------------------------- clips

def _pet_composite(frames: int, size=(288, 512)):
    """A person and a pet: the DAVIS dancer (left) and the lemur (right, at 55% scale, in the frame) moving
    over the room clip. Two straight-alpha layers over one background, rounded once: the alpha is exact."""
    from quality import davis_person_rgba

    from bgvid.eval.composites import background_frames, make_composite

    h, w = size
    black = np.zeros((8, 8, 3), np.uint8)
    person = make_composite(davis_person_rgba(), black, frames=frames, size=size, seed=3, motion="pan")
    ph, pw = int(h * 0.55), int(w * 0.55)
    pet = make_composite(MEDIA / "rgba/lemur_rgba.png", black, frames=frames, size=(ph, pw), seed=4, motion="pan")
    room = background_frames(MEDIA / "backgrounds/handheld_room.mp4", frames=frames, size=size, seed=1, motion="pan")
    for (_, a1, f1), (_, a2s, f2s), bg in zip(person, pet, room, strict=True):
        a1, f1 = np.roll(a1, -w // 5, axis=1), np.roll(f1, -w // 5, axis=1)
        a2, f2 = np.zeros((h, w), np.float32), np.zeros((h, w, 3), np.float32)
        x0 = int(w * 0.4)
        a2[h - ph:, x0:x0 + pw], f2[h - ph:, x0:x0 + pw] = a2s, f2s
        under = a2[..., None].astype(np.float64) * f2 + (1 - a2[..., None]) * bg
        comp = a1[..., None].astype(np.float64) * f1 + (1 - a1[..., None]) * under
        alpha = a1.astype(np.float64) + (1 - a1) * a2
        yield np.clip(np.round(comp * 255), 0, 255).astype(np.uint8), alpha.astype(np.float32)


def _write_clip(path: Path, frames) -> list:
    """Lossless RGB H.264 (libx264rgb, crf 0) of the frames; returns the alphas."""
    import av

    truth = []
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264rgb", rate=30)
        stream.pix_fmt, stream.options = "rgb24", {"crf": "0", "preset": "veryfast"}
        for i, (rgb, alpha) in enumerate(frames):
            if i == 0:
                stream.height, stream.width = rgb.shape[:2]
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
            truth.append(alpha)
        out.mux(stream.encode())
    return truth


def clip(name: str, frames: int):
    """(input path, truth [N,H,W] float32 or None, frame range) for a clip name."""
    WORK.mkdir(parents=True, exist_ok=True)
    if name in COMPOSITES:
        path = WORK / f"subject_{name.replace('/', '_')}_{frames}.mp4"
        truth_path = path.with_suffix(".npz")
        if not path.is_file() or not truth_path.is_file():
            if name == "pet/room":
                data = _pet_composite(frames)
            else:
                from quality import composite_sets

                from bgvid.eval.composites import make_composite

                fg, bg = composite_sets(frames)[name]
                data = ((f, a) for f, a, _ in make_composite(fg, bg, frames=frames, seed=1, motion="pan"))
            truth = _write_clip(path, data)
            np.savez_compressed(truth_path, truth=np.stack(truth))
        return path, np.load(truth_path)["truth"], None
    if name in ("dance-jump", "swing"):
        folder = MEDIA / "davis" / name
        masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted((folder / "masks").glob("*.png"))]
        return folder / "frames", np.stack(masks[:frames]).astype(np.float32), f"0-{min(frames, len(masks)) - 1}"
    path = {"juggle": MEDIA / "clips/juggle.mp4", "bedroom": MEDIA / "clips/bedroom.mp4",
            "carphone": MEDIA / "clips/carphone.mp4", "handheld_room": MEDIA / "backgrounds/handheld_room.mp4"}[name]
    from bgvid.io.reader import probe

    count = probe(path).frame_count or frames
    return path, None, f"0-{min(frames, count) - 1}"


# ----------------------------------------------------------------------------------------- one run

def run_one(name: str, method: str, frames: int, out: Path, every: int | None = None) -> None:
    """In this (fresh) process: the method's mattes of the clip -> OUT.npz (alpha as uint16, the frames'
    grey for the flow), with seconds, frames and peak RSS."""
    import bgvid
    import bgvid.apps.run as run_app

    if every:
        run_app.OBJECT_EVERY = every  # an experiment: the key-frame interval of the object path
    if os.environ.get("BGVID_BENCH_OBJECT_PIXELS"):  # an experiment: the object model's input size
        import bgvid.models.subject as subject_module

        subject_module.OBJECT_PIXELS = int(os.environ["BGVID_BENCH_OBJECT_PIXELS"])
    path, _, rng = clip(name, frames)
    messages: list[str] = []
    t0 = time.perf_counter()
    alphas, greys = [], []
    for _, _, rgb, alpha in bgvid.iter_mattes(path, frames=rng, device="cpu", report=messages.append,
                                              **RUN_OPTIONS[method]):
        alphas.append(np.round(np.clip(alpha, 0, 1) * 65535).astype(np.uint16))
        greys.append(cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY))
        if len(alphas) >= frames:
            break
    seconds = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    np.savez(out, alpha=np.stack(alphas), grey=np.stack(greys))
    out.with_suffix(".json").write_text(json.dumps({"seconds": seconds, "frames": len(alphas), "rss_mb": rss,
                                                    "messages": messages}))


def probe_one(name: str, frames: int, out: Path) -> None:
    """In this (fresh) process: --subject auto's probe of the clip -> OUT.json (choice, reason, seconds)."""
    from bgvid import Segmenter
    from bgvid.models.subject import PERSON_MODEL, object_segmenter, probe_subject

    path, _, _ = clip(name, frames)
    t0 = time.perf_counter()
    person = Segmenter.from_name(PERSON_MODEL)
    objects = object_segmenter(path)
    choice = probe_subject(path, person, objects)
    out.write_text(json.dumps({**choice.to_json(), "seconds": time.perf_counter() - t0,
                               "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def _subprocess(name: str, method: str, frames: int, every: int | None = None) -> tuple[np.ndarray, np.ndarray, dict]:
    tag = (f"_k{every}" if every else "") + (f"_p{os.environ['BGVID_BENCH_OBJECT_PIXELS']}"
                                             if os.environ.get("BGVID_BENCH_OBJECT_PIXELS") else "")
    out = WORK / f"subject_out_{name.replace('/', '_')}_{method}{tag}_{frames}.npz"
    cmd = [sys.executable, __file__, "--one", name, method, "--frames", str(frames), "--out", str(out)]
    if every:
        cmd += ["--every", str(every)]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    data = np.load(out)
    info = json.loads(out.with_suffix(".json").read_text())
    return data["alpha"].astype(np.float32) / 65535, data["grey"], info


# --------------------------------------------------------------------------------------- measures

def core_masks(alpha: np.ndarray) -> np.ndarray:
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CORE_ERODE + 1, 2 * CORE_ERODE + 1))
    return np.stack([cv2.erode((a >= 0.5).astype(np.uint8), disc) > 0 for a in alpha])


def half_transparent_core(alpha: np.ndarray, core: np.ndarray) -> float:
    half = (alpha > 0.05) & (alpha < 0.95)
    return float(half[core].sum() / max(1, core.sum()))


def core_change(alpha: np.ndarray, grey: np.ndarray, core: np.ndarray) -> float:
    """Mean |a_t - warp(a_{t-1})| over pixels in the core at t and (warped) at t-1."""
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    h, w = alpha.shape[1:]
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    total, count = 0.0, 0
    for t in range(1, len(alpha)):
        flow = dis.calc(grey[t], grey[t - 1], None)
        mx, my = xs + flow[..., 0], ys + flow[..., 1]
        prev = cv2.remap(alpha[t - 1], mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        prev_core = cv2.remap(core[t - 1].astype(np.float32), mx, my, cv2.INTER_NEAREST) > 0.5
        both = core[t] & prev_core
        total += float(np.abs(alpha[t] - prev)[both].sum())
        count += int(both.sum())
    return total / max(1, count)


def measure(alpha: np.ndarray, grey: np.ndarray, truth) -> dict:
    from bgvid.eval.metrics import score_sequence

    core = core_masks(alpha)
    row = {"area": float((alpha >= 0.5).mean()), "half_core": half_transparent_core(alpha, core),
           "core_change": core_change(alpha, grey, core)}
    if truth is not None:
        n = min(len(alpha), len(truth))
        scores = score_sequence(list(alpha[:n]), list(truth[:n]))
        row.update({k: scores[k] for k in ("iou", "mad", "mse", "grad", "dtssd")})
    return row


# ----------------------------------------------------------------------------------------- speed

def _rss_child(cmd) -> float:
    """Peak RSS (MB) of one child process (wait4's own rusage, not the maximum over all children)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_maxrss / 1024, proc


# ------------------------------------------------------------------------------------------- main

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", default=",".join(CLIPS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--every", type=int, default=None, help="experiment: the object path's key-frame interval")
    parser.add_argument("--json", type=Path, default=RESULTS / "subject.json")
    parser.add_argument("--one", nargs=2, metavar=("CLIP", "METHOD"), help=argparse.SUPPRESS)
    parser.add_argument("--probe", metavar="CLIP", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--speed", action="store_true", help="fps and peak RSS at 720p instead")
    parser.add_argument("--speed-frames", type=int, default=40)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    if args.one:
        run_one(args.one[0], args.one[1], args.frames, args.out, args.every)
        return
    if args.probe:
        probe_one(args.probe, args.frames, args.out)
        return
    if args.speed:
        rows = []
        for _ in range(args.repeat):
            for method in args.methods.split(","):
                opts = RUN_OPTIONS[method]
                cmd = [sys.executable, "-m", "bgvid", "run", str(MEDIA / "clips/juggle.mp4"), "--frames",
                       f"0-{args.speed_frames - 1}", "-o", str(WORK / f"speed_{method}.mov"), "--force", "--json",
                       "--device", "cpu"]
                for k, v in opts.items():
                    cmd += ["--no-cleanup"] if v is False else [f"--{k}", str(v)]
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                rss, proc = _rss_child(cmd)
                wall = time.perf_counter() - t0
                if proc.returncode:
                    raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.read()}")
                result = json.loads(proc.stdout.read())
                row = {"method": method, "frames": result["frames"], "fps_run": result["fps"],
                       "fps_process": round(result["frames"] / wall, 3), "seconds_process": round(wall, 2),
                       "peak_rss_mb": round(rss, 1), "load_1min_before": round(load, 2), "model": result["model"],
                       "subject": (result.get("subject") or {}).get("chosen"),
                       "stage_seconds": result["stage_seconds"]}
                rows.append(row)
                print(json.dumps(row), flush=True)
        out = args.json if args.json != RESULTS / "subject.json" else RESULTS / "subject_speed.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps({"machine": machine(), "clip": "juggle.mp4 1280x720 -> ProRes 4444",
                                   "rows": rows}, indent=2))
        print(f"wrote {out}")
        return
    rows = []
    methods = args.methods.split(",")
    args.json.parent.mkdir(parents=True, exist_ok=True)

    def save():  # after every row: an interrupted run keeps what it measured
        args.json.write_text(json.dumps({"frames": args.frames, "every": args.every, "machine": machine(),
                                         "rows": rows}, indent=2))
    order = [m for m in ("rvm", "isnet", "isnet-clean", "any")
             if m in methods or (m in ("rvm", "any") and {"person", "auto"} & set(methods))]
    for name in args.clips.split(","):
        _, truth, _ = clip(name, args.frames)
        done = {}
        for method in order + [m for m in ("person", "auto") if m in methods]:
            if method == "person":
                rows.append(dict(done["rvm"], method="person", same_as="rvm"))
                continue
            if method == "auto":
                out = WORK / f"subject_probe_{name.replace('/', '_')}_{args.frames}.json"
                subprocess.run([sys.executable, __file__, "--probe", name, "--frames", str(args.frames), "--out",
                                str(out)], check=True, stdout=subprocess.DEVNULL)
                found = json.loads(out.read_text())
                chosen = "rvm" if found["chosen"] == "person" else "any"
                row = dict(done[chosen], method="auto", same_as=chosen, chosen=found["chosen"],
                           reason=found["reason"], probe_seconds=round(found["seconds"], 2),
                           probe_frames=found["probe"]["frames"])
                rows.append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "probe_frames"}), flush=True)
                save()
                continue
            alpha, grey, info = _subprocess(name, method, args.frames, args.every)
            row = {"clip": name, "method": method, **measure(alpha, grey, truth), "frames": info["frames"],
                   "seconds": round(info["seconds"], 2), "fps": round(info["frames"] / info["seconds"], 3),
                   "peak_rss_mb": round(info["rss_mb"], 1), "size": list(alpha.shape[1:]),
                   "subject": [m for m in info["messages"] if m.startswith("Subject: ") and "probing" not in m]}
            rows.append(row)
            done[method] = row
            print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
            save()
    save()
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
