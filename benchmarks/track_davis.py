"""Corrections that follow the picture, on real footage: a user paints on frame 0 only; how much of the
correction is left on the frames after it, with no correction, with the strokes left in place, and with
the strokes tracked ("keyframe": 0).

    python benchmarks/track_davis.py [--models selfie,rvm] [--json OUT] [--ablate]

The user: on frame 0 of each DAVIS clip (../shared/media/davis, 60 frames at 854x480, ground-truth
masks), `bgvid run`'s own matte (default options) is compared with the truth; restore dabs are placed
where the model missed the subject and remove dabs where it added background, greedily, the largest
first: each dab is as large as it can be without crossing the true outline (the distance to it), at
most 40 dabs of each kind, none smaller than 6 px across, error blobs under 30 px ignored; softness 0.2.
Their range is the whole clip ("0-59").

The matte is computed once per clip and model (bgvid.iter_mattes with the model's defaults, no
overrides); the three variants then run through the same OverrideStage that `bgvid run` uses (the
tracker decoding from the clip's frames what it is not handed), so the stage's wall time per frame is
the cost of each variant. IoU: |alpha > 0.5 and truth| / |alpha > 0.5 or truth| per frame.

--ablate also runs the tracked strokes without the consistency checks, without the disocclusion check
and without the restore guide, and a second key frame: the same user repainting on frame 30 (the drift
fix: strokes sharing an id, keyframes 0 and 30).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

import bgvid
from bgvid.frames import FrameBatch
from bgvid.stages import overrides as _overrides
from bgvid.stages import track as _track
from bgvid.stages.overrides import Overrides, OverrideStage

HERE = Path(__file__).resolve().parent
MEDIA = HERE.parent.parent / "shared" / "media"
CLIPS = ("dance-jump", "swing")
MAX_DABS, MIN_DIAMETER, MIN_BLOB, SOFTNESS = 40, 6.0, 30, 0.2


def load_truth(name: str) -> np.ndarray:
    folder = MEDIA / "davis" / name / "masks"
    return np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted(folder.glob("*.png"))])


def dabs(alpha: np.ndarray, truth: np.ndarray, frames: str, key=None) -> list[dict]:
    """The simulated user's strokes on one frame (see the module docstring)."""
    pred = alpha > 0.5
    out = []
    for mode, target, allowed in (("restore", truth & ~pred, truth), ("remove", pred & ~truth, ~truth)):
        dist = cv2.distanceTransform(allowed.astype(np.uint8), cv2.DIST_L2, 5)
        todo = target.copy()
        n, labels, stats, _ = cv2.connectedComponentsWithStats(todo.astype(np.uint8), 8)
        for k in range(1, n):
            if stats[k, cv2.CC_STAT_AREA] < MIN_BLOB:
                todo[labels == k] = False
        yy, xx = np.ogrid[:truth.shape[0], :truth.shape[1]]
        for _ in range(MAX_DABS):
            if not todo.any():
                break
            d = np.where(todo, dist, 0)
            y, x = divmod(int(np.argmax(d)), d.shape[1])
            r = min(float(d[y, x]), 40.0)
            if 2 * r < MIN_DIAMETER:
                break
            todo &= (yy - y) ** 2 + (xx - x) ** 2 > r * r
            stroke = {"frames": frames, "mode": mode, "size": round(2 * r, 1), "softness": SOFTNESS,
                      "points": [[x + 0.5, y + 0.5]]}
            if key is not None:
                stroke["keyframe"] = key
            out.append(stroke)
    return out


def iou(alpha: np.ndarray, truth: np.ndarray) -> np.ndarray:
    pred = alpha > 0.5
    return (pred & truth).sum(axis=(-2, -1)) / np.maximum(1, (pred | truth).sum(axis=(-2, -1)))


def run_stage(path: Path, strokes: list, frames: np.ndarray, alphas: np.ndarray, src: Path) -> tuple[np.ndarray, dict]:
    """The override stage over the whole clip in batches of 4, as bgvid run drives it: corrected mattes and
    the stage's wall seconds (plus the tracker's counters)."""
    path.write_text(json.dumps(strokes))
    h, w = alphas.shape[1:]
    stage = OverrideStage(Overrides.load(path, width=w, height=h), source=src)
    out = np.empty_like(alphas)
    seconds = 0.0
    try:
        for i in range(0, len(frames), 4):
            batch = FrameBatch(rgb=frames[i:i + 4], frame_index=np.arange(i, min(i + 4, len(frames)), dtype=np.int64),
                               pts=None, time_base=None, alpha=alphas[i:i + 4])
            started = time.perf_counter()
            (done,) = stage.push(batch)
            seconds += time.perf_counter() - started
            out[i:i + len(done)] = done.alpha
    finally:
        stage.close()
    info = {"seconds": seconds}
    if stage.tracker is not None:
        info.update(flow_pairs=stage.tracker.flows.computed, flow_seconds=stage.tracker.flows.seconds,
                    decoded_again=stage.tracker.greys.decoded)
    return out, info


@contextmanager
def patched(**settings):
    """Temporarily change module constants of the tracker / overrides (ablations)."""
    where = {"CHECK": _track, "DIVERGENCE_LIMIT": _track, "GUIDE": _overrides}
    old = {k: getattr(where[k], k) for k in settings}
    for k, v in settings.items():
        setattr(where[k], k, v)
    try:
        yield
    finally:
        for k, v in old.items():
            setattr(where[k], k, v)


def summarise(gain: np.ndarray) -> dict:
    """Mean IoU gain over frames 1-30 and 1-59, and the share of frame 0's gain left 10, 30 and 59 frames on."""
    g0 = float(gain[0])
    return {"gain_1_30": float(gain[1:31].mean()), "gain_1_59": float(gain[1:].mean()),
            "left_at": {str(t): (float(gain[t]) / g0 if g0 else None) for t in (10, 30, 59)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="selfie,rvm")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "track_davis.json")
    parser.add_argument("--ablate", action="store_true")
    args = parser.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="bgvid-track-"))
    header = f"{'model':<8}{'clip':<12}{'variant':<26}{'IoU 1-30':>9}{'1-59':>7}{'gain 1-30':>10}{'left@10':>8}" \
             f"{'@30':>6}{'@59':>6}{'ms/frame':>9}{'flow ms':>8}"
    print(header)
    for model in args.models.split(","):
        for clip in CLIPS:
            src = MEDIA / "davis" / clip / "frames"
            truth = load_truth(clip)
            got = [(rgb, a) for _, _, rgb, a in bgvid.iter_mattes(src, model=model, device="cpu")]
            frames = np.stack([g[0] for g in got])
            alphas = np.stack([g[1] for g in got])
            frames_n = len(frames)
            base = iou(alphas, truth)
            last = f"0-{frames_n - 1}"
            # Do frame 0's errors last? The share of its missed (restore) and added (remove) pixels that are
            # still wrong at the same place 1, 5 and 10 frames later (the camera and the subject move little
            # in one frame: after one frame this is close to what perfect tracking would still find to fix).
            pred = alphas > 0.5
            missed, added = truth[0] & ~pred[0], pred[0] & ~truth[0]
            persist = {str(t): {"missed": float((missed & truth[t] & ~pred[t]).sum() / max(1, missed.sum())),
                                "added": float((added & pred[t] & ~truth[t]).sum() / max(1, added.sum()))}
                       for t in (1, 5, 10)}
            rows.append({"model": model, "clip": clip, "variant": "frame 0 errors still there (in place)",
                         "persistence": persist})
            print(f"{model:<8}{clip:<12}frame 0's errors still there after 1/5/10 frames: missed "
                  + "/".join(f"{persist[t]['missed']:.2f}" for t in persist) + ", added "
                  + "/".join(f"{persist[t]['added']:.2f}" for t in persist), flush=True)
            strokes = dabs(alphas[0], truth[0], last)
            variants = {"none": None, "in place": strokes,
                        "tracked": [dict(s, keyframe=0) for s in strokes]}
            settings = {"none": {}, "in place": {}, "tracked": {}}
            if args.ablate:
                for name, change in (("tracked, no checks", {"CHECK": False}),
                                     ("tracked, no disocclusion", {"DIVERGENCE_LIMIT": None}),
                                     ("tracked, no guide", {"GUIDE": False})):
                    variants[name], settings[name] = variants["tracked"], change
            for name, chosen in variants.items():
                if chosen is None:
                    corrected, info = alphas, {"seconds": 0.0}
                else:
                    with patched(**settings[name]):
                        corrected, info = run_stage(tmp / f"{model}_{clip}.json", chosen, frames, alphas, src)
                score = iou(corrected, truth)
                if name == "tracked":
                    tracked_alphas = corrected
                row = {"model": model, "clip": clip, "variant": name, "strokes": len(strokes),
                       "iou_0": float(score[0]), "iou_1_30": float(score[1:31].mean()),
                       "iou_1_59": float(score[1:].mean()), "per_frame_iou": [round(float(x), 4) for x in score],
                       "ms_per_frame": 1000 * info["seconds"] / frames_n,
                       "flow_ms_per_frame": 1000 * info.get("flow_seconds", 0.0) / frames_n,
                       **{k: v for k, v in info.items() if k != "seconds"}, **summarise(score - base)}
                rows.append(row)
                left = row["left_at"]
                cells = "".join(f"{(left[t] if left[t] is not None else float('nan')):>{w}.2f}"
                                for t, w in (("10", 8), ("30", 6), ("59", 6)))
                print(f"{model:<8}{clip:<12}{name:<26}{row['iou_1_30']:>9.3f}{row['iou_1_59']:>7.3f}"
                      f"{row['gain_1_30']:>+10.3f}{cells}{row['ms_per_frame']:>9.1f}{row['flow_ms_per_frame']:>8.1f}",
                      flush=True)
            # A bound, not a method: the tracked strokes' changes kept only where they move the matte towards
            # the truth (what a perfect guide could keep of them). What stays out of reach of any guide is
            # where the carried strokes land and whether frame 0's errors are still there to fix.
            helps = np.where(truth, tracked_alphas > alphas, tracked_alphas < alphas)
            score = iou(np.where(helps, tracked_alphas, alphas), truth)
            row = {"model": model, "clip": clip, "variant": "bound: perfect guide",
                   "iou_1_30": float(score[1:31].mean()), "iou_1_59": float(score[1:].mean()),
                   **summarise(score - base)}
            rows.append(row)
            left = row["left_at"]
            print(f"{model:<8}{clip:<12}{'bound: perfect guide':<26}{row['iou_1_30']:>9.3f}{row['iou_1_59']:>7.3f}"
                  f"{row['gain_1_30']:>+10.3f}{left['10']:>8.2f}{left['30']:>6.2f}{left['59']:>6.2f}", flush=True)
            if args.ablate:
                # The drift fix: the same user also paints on frame 30 (one correction: shared ids).
                fixed = [dict(s, keyframe=0) for s in strokes] + dabs(alphas[30], truth[30], last, key=30)
                for s in fixed:  # one correction per mode, with key frames 0 and 30
                    s["id"] = s["mode"]
                corrected, info = run_stage(tmp / f"{model}_{clip}_fix.json", fixed, frames, alphas, src)
                score = iou(corrected, truth)
                row = {"model": model, "clip": clip, "variant": "tracked + key frame 30", "strokes": len(fixed),
                       "iou_1_30": float(score[1:31].mean()), "iou_1_59": float(score[1:].mean()),
                       "per_frame_iou": [round(float(x), 4) for x in score],
                       "ms_per_frame": 1000 * info["seconds"] / frames_n, **summarise(score - base)}
                rows.append(row)
                print(f"{model:<8}{clip:<12}{'+ key frame 30':<26}{row['iou_1_30']:>9.3f}{row['iou_1_59']:>7.3f}"
                      f"{row['gain_1_30']:>+10.3f}{'':>20}{row['ms_per_frame']:>9.1f}", flush=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "load_at_start": os.getloadavg()[0], "opencv": cv2.__version__}
    settings = {"track_long_side": _track.TRACK_LONG_SIDE, "fb": [_track.FB_RELATIVE, _track.FB_ABSOLUTE],
                "divergence_limit": _track.DIVERGENCE_LIMIT, "flow": "DIS MEDIUM, finest scale 0",
                "user": {"max_dabs_per_mode": MAX_DABS, "min_diameter": MIN_DIAMETER, "min_blob": MIN_BLOB,
                         "softness": SOFTNESS}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
