"""Matte quality on composites with exact alpha (the VideoMatte240K protocol, RVM's metrics).

    python benchmarks/quality.py [--models selfie,isnet] [--frames 120] [--variants ...] [--json OUT]

The foreground crosses 15-30% of the frame's width whatever --frames is, so --frames sets the speed:
120 frames is a walk (1-2.5 px per frame at 512x288, peaks ~5), 30 frames a dash. At a dash dtSSD is
dominated by where the edge is, not by flicker: a flicker-free Gaussian blur (sigma 4 px) of the true
alpha already scores dtSSD 6.7 on plush/room at 30 frames.

Composites: real RGBA foregrounds from ../shared/media/rgba moved over a panning still and over the
handheld room clip (no people in either background), plus a real person (a DAVIS frame cut out by
its mask) moving over the room. The model runs once per composite; the variants (refinement,
smoothing) are applied to the same low-resolution mattes, so the comparison isolates them.
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import cv2
import numpy as np

from bgvid import Segmenter
from bgvid.eval.composites import make_composite
from bgvid.eval.metrics import score_sequence
from bgvid.kernels import DEFAULT_STRENGTH, guided_upsample, resize_batch, smooth_mattes

HERE = Path(__file__).resolve().parent
MEDIA = HERE.parent.parent / "shared" / "media"


def davis_person_rgba() -> np.ndarray:
    frame = cv2.cvtColor(cv2.imread(str(MEDIA / "davis/dance-jump/frames/00030.jpg")), cv2.COLOR_BGR2RGB)
    mask = cv2.imread(str(MEDIA / "davis/dance-jump/masks/00030.png"), cv2.IMREAD_GRAYSCALE)
    ys, xs = np.nonzero(mask)
    crop = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    return np.dstack([frame[crop], mask[crop]]).astype(np.float32) / 255.0


def composite_sets(frames: int) -> dict:
    room = MEDIA / "backgrounds/handheld_room.mp4"
    still = MEDIA / "backgrounds/still_GT26r.jpg"
    return {
        "lemur/still": (MEDIA / "rgba/lemur_rgba.png", still),
        "plush/room": (MEDIA / "rgba/plush_rgba.png", room),
        "person/room": (davis_person_rgba(), room),
    }


VARIANTS = {
    "bilinear": dict(refine="none", smooth=None),
    "guided": dict(refine="guided", smooth=None),
    "bilinear+smooth": dict(refine="none", smooth=DEFAULT_STRENGTH),
    "guided+smooth": dict(refine="guided", smooth=DEFAULT_STRENGTH),
}


def run_variant(low: np.ndarray, frames: np.ndarray, refine: str, smooth) -> np.ndarray:
    if smooth is not None:
        low, _ = smooth_mattes(low, frames, None, strength=smooth)
    if refine == "guided":
        return guided_upsample(low, frames)
    return resize_batch(low, frames.shape[1:3], interpolation="bilinear")


def edge_foreground_mse(frames, alpha_true, fg_true, alpha_pred, foreground_pred) -> tuple[float, float]:
    """Foreground MSE (x1e3) where the true alpha is soft (0.05..0.95): the observed colour (what a
    tool without decontamination writes) against bgvid's decontaminated colour."""
    from bgvid.frames import FrameBatch
    from bgvid.stages.stages import DecontaminateStage

    batch = FrameBatch(rgb=frames.copy(), frame_index=np.arange(len(frames)), pts=None, time_base=None,
                       alpha=alpha_pred, foreground=foreground_pred)
    (out,) = DecontaminateStage().push(batch)
    edge = (alpha_true > 0.05) & (alpha_true < 0.95)
    observed = ((frames / 255.0 - fg_true) ** 2)[edge].mean() * 1e3
    cleaned = ((out.rgb / 255.0 - fg_true) ** 2)[edge].mean() * 1e3
    return float(observed), float(cleaned)


def print_changes(rows: list) -> None:
    """The comparisons the quality issue asks for, as relative changes."""
    by = {(r["set"], r["model"], r["variant"]): r for r in rows if "mad" in r}
    pairs = [("guided", "bilinear", ("mad", "grad")), ("bilinear+smooth", "bilinear", ("dtssd", "mad")),
             ("guided+smooth", "guided", ("dtssd", "mad"))]
    print("\nrelative change (negative = better)")
    for (set_name, model, variant), row in by.items():
        for new, old, keys in pairs:
            base = by.get((set_name, model, old))
            if variant == new and base:
                print(f"{set_name:<13}{model:<8}{new} vs {old}: " + ", ".join(
                    f"{k} {100 * (row[k] / base[k] - 1):+.1f}%" for k in keys if base[k]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="selfie,isnet")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--json", type=Path, default=HERE / "results" / "quality.json")
    args = parser.parse_args()
    rows = []
    for set_name, (fg, bg) in composite_sets(args.frames).items():
        data = list(make_composite(fg, bg, frames=args.frames, seed=1, motion="pan"))
        frames = np.stack([d[0] for d in data])
        truth = [d[1] for d in data]
        for model in args.models.split(","):
            seg = Segmenter.from_name(model)
            started = time.perf_counter()
            lows, fgs, state = [], [], None
            for i in range(0, len(frames), 4):  # state carried: recurrent models see the clip in order
                low, fg, state = seg.segment(frames[i:i + 4], state, size="model", with_foreground=True)
                lows.append(low)
                fgs.append(fg)
            low = np.concatenate(lows)
            fg_pred = None if fgs[0] is None else np.concatenate(fgs)
            observed, cleaned = edge_foreground_mse(frames, np.stack(truth), np.stack([d[2] for d in data]),
                                                    resize_batch(low, frames.shape[1:3], interpolation="bilinear"),
                                                    fg_pred)
            rows.append({"set": set_name, "model": model, "variant": "edge foreground MSE x1e3",
                         "observed": observed, "decontaminated": cleaned})
            print(f"{set_name:<13}{model:<8}edge foreground MSE x1e3: source colour {observed:.2f}, "
                  f"decontaminated {cleaned:.2f}", flush=True)
            model_s = time.perf_counter() - started
            for variant in args.variants.split(","):
                pred = run_variant(low, frames, **VARIANTS[variant])
                scores = score_sequence(list(pred), truth)
                rows.append({"set": set_name, "model": model, "variant": variant, **scores,
                             "model_seconds": round(model_s, 2)})
                print(f"{set_name:<13}{model:<8}{variant:<17}" + "  ".join(
                    f"{k} {scores[k]:8.3f}" for k in ("mad", "mse", "grad", "conn", "dtssd", "iou")), flush=True)
    print_changes(rows)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"frames": args.frames, "machine": machine, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
