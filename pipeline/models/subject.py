"""What the subject of a shot is, and which models matte it: `--subject person|any|auto`.

    person  the person model alone (rvm: video matting of people, steady over time)
    any     people and every other salient subject: the person model fused with an object model
            (ISNet, on key frames at a reduced input; stages.ObjectsStage)
    auto    decided once per input file from a probe of frames spread over the whole file (whatever
            --frames says, so every chunk of a shot decides alike): `any` when the person model finds
            no person, or when it drops salient subjects the object model finds; `person` otherwise.

The probe runs both models on PROBE_FRAMES frames. On each, a *dropped subject* is a piece of the
object model's matte (after the same cleanup the object path applies) that

    - the person model leaves out: less than half of it lies on the person model's matte, and it is not
      a piece of the person's own outline (the object model's piece it belongs to, before the person is
      taken away, lies mostly off the person);
    - is a subject, not a piece of the set: at least MIN_SUBJECT of the frame, solid (SOLID of its
      pixels at >= 0.9 in the object model's raw matte: the model is sure of it), and inside the picture
      (it touches no edge of the frame: walls, floors, posts and furniture that the frame cuts are set).

`auto` picks `any` when no probe frame holds a person (person matte >= MIN_PERSON of the frame), or when
more than half of the probe frames (and at least two) hold a dropped subject: a subject that stays in
the shot, not a prop that passes through or a piece of set the camera pans past. The thresholds were
set on the project's footage (README, "Any subject"), where they pick `person` for every people-only
clip and `any` for the clips with an animal, a toy or a ball.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from ..errors import InputError

SUBJECTS = ("auto", "person", "any")
PERSON_MODEL = "rvm"
OBJECT_MODEL = "isnet"
# ISNet's input on the object path: the frame's aspect, sides multiples of 128, at most 640x1152 pixels
# (737k, 70% of its native 1024x1024; 640x1152 for 16:9). Measured (README "Any subject"): 384x640 lost
# ISNet's quality (lemur composite IoU 0.82, MAD 65); 512x896 kept it on one subject alone (lemur MAD 16.8,
# plush 5.5 against 19.8 / 3.6 at 1024x1024) but lost the pet beside a person in 7 of 12 frames where
# 1024x1024 and 640x1152 kept it (the path's MAD on that composite 38-42 at 512x896, 19-21 at 640x1152).
OBJECT_PIXELS = 640 * 1152
# The object model runs on 1 frame in 4; the matte follows the picture's motion in between (kernels/_carry).
# Measured at 640x1152 against every frame: lemur / plush / pet MAD 8.8 / 3.8 / 19.2 -> 9.4 / 4.8 / 20.7 at
# 1 in 3 -> 9.9 / 5.1 / 22.0 at 1 in 4, dtSSD 3.1 / 2.7 / 7.1 -> 3.2 / 3.1 / 7.2 -> 3.3 / 3.1 / 7.3. The model is
# ~1.0 s of a key frame at 640x1152 here, the rest of the path ~70 ms a frame: 1 in 3 ran a 720p clip to ProRes
# at 1.42-1.51 fps (the bar is 1.5), 1 in 4 at the figure in README "Any subject".
OBJECT_EVERY = 4
OBJECT_BATCH = 2  # frames per batch on the object path (fewer 720p frames in flight: peak RSS)
OBJECT_ARENA = False  # ONNX Runtime's CPU memory arena for the object model (off: peak RSS)

SOLID_MODELS = ("isnet", "isnet-small")  # per-frame models whose mattes are made solid by default

PROBE_FRAMES = 8
MIN_PERSON = 0.002  # share of the frame the person matte must cover to count as a person
MIN_SUBJECT = 0.002  # share of the frame a piece must cover to be looked at
MIN_DROPPED_AREA = 0.02  # share of the frame the dropped subjects of a probe frame must cover together
SURE = 0.8  # the object model is sure of a pixel
SOLID = 0.6  # ... of this share of a subject's pixels
OPEN = 0.01  # opening radius, as a share of the short side
CONTACT = 0.25  # a piece whose rim lies this much on the person extends the person's outline
MIN_DROPPED = 0.5  # auto chooses `any` when more than this share of probe frames hold a dropped subject

Report = Callable[[str], None]


def object_input_size(height: int, width: int, pixels: Optional[int] = None, multiple: int = 128) -> tuple[int, int]:
    """The object model's input (H, W) for height x width frames: multiples of `multiple`, between 60% and 100%
    of `pixels` (default OBJECT_PIXELS), the aspect closest to the frame's (ties: the larger input)."""
    pixels = int(pixels or OBJECT_PIXELS)
    aspect = width / height
    best = None
    for h in range(multiple, int(math.sqrt(pixels * 16)) + 1, multiple):
        for w in range(multiple, pixels // h + 1, multiple):
            if h * w > pixels or h * w < 0.6 * pixels:
                continue
            score = (abs(math.log((w / h) / aspect)), -h * w)
            if best is None or score < best[0]:
                best = (score, (h, w))
    return best[1]


def object_segmenter(path, **options):
    """The object model as the object path and the probe run it on the input at `path`: ISNet at
    object_input_size for the input's frames, without ONNX Runtime's CPU arena (OBJECT_ARENA). options:
    Segmenter.from_name's (provider, threads, device, report)."""
    from ..io.reader import probe
    from .segmenter import Segmenter

    info = probe(path)
    return Segmenter.from_name(OBJECT_MODEL, input_size=object_input_size(info.height, info.width),
                               arena=OBJECT_ARENA, **options)


@dataclass
class SubjectChoice:
    """The subject a run renders (person or any) and why; `probe` holds what auto measured (empty when
    the subject was given)."""

    subject: str
    reason: str
    probe: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"chosen": self.subject, "reason": self.reason, **({"probe": self.probe} if self.probe else {})}


def frame_stats(person: np.ndarray, objects_raw: np.ndarray, objects: np.ndarray) -> dict:
    """What the probe sees on one frame. person: the person model's matte; objects_raw: the object model's
    matte; objects: the same after cleanup; all [h, w] float 0..1 at one size."""
    import cv2

    h, w = objects.shape
    on_person = (person >= 0.5).astype(np.uint8)
    # what the object model keeps and the person model leaves out, opened so that slivers along the
    # person's outline (the two models disagreeing on an edge) and thin links (a wrist to a ball) go
    r = max(1, round(OPEN * min(h, w)))
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))
    left_out = ((objects >= 0.5) & (on_person == 0)).astype(np.uint8)
    left_out = cv2.morphologyEx(left_out, cv2.MORPH_OPEN, disc)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(left_out, connectivity=8)
    ring_disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    pieces = []
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        if area < MIN_SUBJECT * h * w:
            continue
        box = (slice(max(0, y - 2), y + bh + 2), slice(max(0, x - 2), x + bw + 2))
        piece = (labels[box] == k).astype(np.uint8)
        ring = (cv2.dilate(piece, ring_disc) > 0) & (piece == 0)
        edges = [y == 0, x == 0, x + bw >= w, y + bh >= h]  # top, left, right, bottom
        pieces.append({
            "share": round(area / (h * w), 4),
            "solid": round(float((objects_raw[box][piece > 0] >= SURE).mean()), 3),
            # set, not subject: cut by the top of the frame or by two of its edges (posts, walls, furniture,
            # the floor); a subject may stand on the bottom edge or come in from one side
            "set": bool(edges[0] or sum(edges) >= 2),
            "contact": round(float(on_person[box][ring].mean()) if ring.any() else 0.0, 3),
        })
    dropped = [p["share"] for p in pieces if p["solid"] >= SOLID and not p["set"] and p["contact"] < CONTACT]
    if sum(dropped) < MIN_DROPPED_AREA:
        dropped = []  # too little to be a subject of the shot: a ball in passing, a pillow, a distant prop
    return {"person": round(float(on_person.mean()), 4), "objects": round(float((objects >= 0.5).mean()), 4),
            "dropped": sorted(dropped, reverse=True), "pieces": pieces}


def decide(frames: list[dict]) -> tuple[str, str]:
    """(subject, reason) from the probe frames' frame_stats."""
    n = len(frames)
    people = sum(f["person"] >= MIN_PERSON for f in frames)
    if people == 0:
        return "any", f"no person in {n} probe frames"
    with_dropped = [f for f in frames if f["dropped"]]
    need = min(n, max(2, math.floor(MIN_DROPPED * n) + 1))
    if len(with_dropped) >= need:
        largest = max(max(f["dropped"]) for f in with_dropped)
        return "any", (f"people in {people} of {n} probe frames, and salient subjects the person model drops in "
                       f"{len(with_dropped)} of them, the largest {100 * largest:.1f}% of the frame")
    return "person", (f"people in {people} of {n} probe frames, and no other subject that stays in the shot: the "
                      f"person model drops one in {len(with_dropped)} of them, {need} needed")


def probe_indices(frame_count: int, probes: int = PROBE_FRAMES) -> list[int]:
    """Frames spread evenly over the whole file, first and last included."""
    if frame_count <= 0:
        raise InputError("the input has no frames to probe")
    return sorted({int(round(x)) for x in np.linspace(0, frame_count - 1, min(probes, frame_count))})


def _frame_count(path: Path) -> int:
    from ..io.reader import probe

    info = probe(path)
    if info.frame_count:
        return int(info.frame_count)
    from ..io.join import _count_video_packets

    return _count_video_packets(str(path))


def _read_frame(path: Path, index: int) -> np.ndarray:
    from ..io.reader import VideoReader

    with VideoReader(path, frames=(index, index), batch_size=1) as reader:
        for batch in reader:
            return batch.rgb[0]
    raise InputError(f"{path}: frame {index} could not be read")


def probe_subject(path, person_segmenter, object_segmenter, *, probes: int = PROBE_FRAMES,
                  report: Optional[Report] = None) -> SubjectChoice:
    """Decide `auto` for one input file (see the module docstring). Frames are read on the host and the
    models run on their own provider; the result depends on the file alone."""
    from ..kernels import resize_batch, solidify

    path = Path(path)
    count = _frame_count(path)
    indices = probe_indices(count, probes)
    where = "frames spread over" if len(indices) > 1 else "frame of"
    (report or (lambda m: None))(f"Subject: probing {len(indices)} {where} {path.name} with "
                                 f"{person_segmenter.spec.name} and {object_segmenter.spec.name}")
    frames = []
    for index in indices:
        rgb = _read_frame(path, index)[None]
        # a recurrent model from a zero state is unsure on its first frame: show it the frame twice
        _, state = person_segmenter.segment(rgb, None, size="model")
        person, _ = person_segmenter.segment(rgb, state, size="model")
        raw = object_segmenter(rgb, size="model")
        h, w = raw.shape[1:3]
        person = resize_batch(np.ascontiguousarray(person, np.float32), (h, w), interpolation="auto")
        stats = frame_stats(person[0], raw[0], solidify(raw)[0])
        frames.append({"frame": index, **stats})
    subject, reason = decide(frames)
    return SubjectChoice(subject, reason, {"frames": frames, "count": count})
