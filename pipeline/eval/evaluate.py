"""`bgvid eval`: score a produced matte against ground truth with RVM's metrics."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Literal, Optional, Union

import numpy as np

from ..errors import InputError

PathLike = Union[str, os.PathLike]
Channel = Literal["alpha", "luma"]


def _truth_frames(truth: Path, first: int, count: Optional[int]) -> list[Path]:
    from ..io.reader import list_sequence

    files = list_sequence(truth) if truth.is_dir() else [truth]
    if not files:
        raise InputError(f"{truth}: no ground-truth images")
    files = files[first:]
    return files if count is None else files[:count]


def _predictions(output: Path, channel: Channel) -> Iterator[np.ndarray]:
    from ..io.reader import read_rgba

    for _, _, rgba in read_rgba(output):
        plane = rgba[..., 3] if channel == "alpha" else rgba[..., 0]  # a --matte output carries it as grey
        yield plane.astype(np.float32) / 65535.0


def evaluate(output: PathLike, truth: PathLike, *, channel: Channel = "alpha", first: int = 0,
             binary_truth: Optional[bool] = None) -> dict:
    """Score `output` (any bgvid format) against `truth` (a folder of alpha or mask images in frame
    order, or one image). first: index of the truth image matching the output's first frame (a
    `--frames A-B` output pairs with truth A..B). Binary truth (0/255 masks, e.g. DAVIS) is detected
    and then IoU is the meaningful number. Returns the mean metrics and the frame count."""
    from .composites import read_alpha
    from .metrics import score_sequence

    output, truth = Path(output), Path(truth)
    if not truth.exists():
        raise InputError(f"{truth}: ground truth not found")
    files = _truth_frames(truth, first, None)
    preds = list(_predictions(output, channel))
    if len(preds) > len(files):
        raise InputError(f"{output}: {len(preds)} frames but only {len(files)} ground-truth images from index {first}")
    files = files[: len(preds)]
    truths = [read_alpha(f) for f in files]
    for f, t, p in zip(files, truths, preds, strict=False):
        if t.shape != p.shape:
            raise InputError(f"{f}: ground truth is {t.shape[1]}x{t.shape[0]}, the output {p.shape[1]}x{p.shape[0]}")
    is_binary = binary_truth if binary_truth is not None else all(np.isin(t, (0.0, 1.0)).all() for t in truths[:5])
    scores = score_sequence(preds, truths)
    scores["binary_truth"] = bool(is_binary)
    return scores
