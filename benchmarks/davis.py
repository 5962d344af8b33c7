"""Segmentation IoU on real footage with ground-truth masks (../shared/media/davis), per clip and
model, with and without guided refinement and temporal smoothing; and how much of the person-free
handheld_room.mp4 each model calls foreground.

    python benchmarks/davis.py [--models selfie,isnet,rvm] [--json OUT]

The model runs once per clip (in order, state carried for recurrent models); the variants are applied
to the same low-resolution mattes, as bgvid run applies them (smooth at the matte's resolution, then
upsample). IoU: mean over frames of |alpha > 0.5 and mask| / |alpha > 0.5 or mask|.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import av
import cv2
import numpy as np

from bgvid import Segmenter
from bgvid.kernels import DEFAULT_STRENGTH, guided_upsample, resize_batch, smooth_mattes

HERE = Path(__file__).resolve().parent
MEDIA = HERE.parent.parent / "shared" / "media"
CLIPS = ("dance-jump", "swing")
VARIANTS = {"bilinear": ("none", False), "guided": ("guided", False),
            "bilinear+smooth": ("none", True), "guided+smooth": ("guided", True)}


def load_clip(name: str):
    folder = MEDIA / "davis" / name
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in sorted((folder / "frames").glob("*.jpg"))]
    masks = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) > 127 for p in sorted((folder / "masks").glob("*.png"))]
    return np.stack(frames), np.stack(masks)


def low_mattes(seg: Segmenter, frames: np.ndarray, batch: int = 4) -> np.ndarray:
    lows, state = [], None
    for i in range(0, len(frames), batch):
        low, state = seg.segment(frames[i:i + batch], state, size="model")
        lows.append(low)
    return np.concatenate(lows)


def finish(low: np.ndarray, frames: np.ndarray, refine: str, smooth: bool) -> np.ndarray:
    if smooth:
        low, _ = smooth_mattes(low, frames, None, strength=DEFAULT_STRENGTH)
    if refine == "guided":
        return guided_upsample(low, frames)
    return resize_batch(low, frames.shape[1:3], interpolation="bilinear")


def mean_iou(alpha: np.ndarray, masks: np.ndarray) -> float:
    pred = alpha > 0.5
    inter = (pred & masks).sum(axis=(1, 2))
    union = np.maximum(1, (pred | masks).sum(axis=(1, 2)))
    return float(np.mean(inter / union))


def room_frames(limit: int = 120) -> np.ndarray:
    with av.open(str(MEDIA / "backgrounds" / "handheld_room.mp4")) as container:
        frames = [f.to_ndarray(format="rgb24") for _, f in zip(range(limit), container.decode(video=0), strict=False)]
    return np.stack(frames)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="selfie,selfie-landscape,isnet,rvm")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "davis.json")
    args = parser.parse_args()
    rows = []
    clips = {name: load_clip(name) for name in CLIPS}
    room = room_frames()
    print(f"{'model':<18}{'clip':<12}" + "".join(f"{v:>17}" for v in VARIANTS))
    for model in args.models.split(","):
        seg = Segmenter.from_name(model)
        variants = {"native": ("none", False)} if seg.recurrent else VARIANTS  # rvm: full-res matte, no smoothing
        for clip, (frames, masks) in clips.items():
            started = time.perf_counter()
            low = low_mattes(seg, frames)
            seconds = time.perf_counter() - started
            scores = {v: mean_iou(finish(low, frames, *variants[v]), masks) for v in variants}
            rows.append({"model": model, "clip": clip, "frames": len(frames), "iou": scores,
                         "model_seconds": round(seconds, 1)})
            print(f"{model:<18}{clip:<12}" + "".join(f"{scores[v]:>17.3f}" for v in scores), flush=True)
        low = low_mattes(seg, room)
        share = {v: float(np.mean(finish(low, room, *variants[v]) > 0.5)) for v in variants}
        rows.append({"model": model, "clip": "handheld_room (no person)", "frames": len(room),
                     "foreground_share": share})
        print(f"{model:<18}{'room fg %':<12}" + "".join(f"{100 * share[v]:>16.1f}%" for v in share), flush=True)
    machine = {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
