"""Synthetic footage for the tests of corrections that follow the picture (test_track.py, test_edit.py).

    make_square_clip(folder, frames=25)   a PNG sequence: a 40 px textured square (brighter than its
                                          background) moving right by 3 px per frame over a textured
                                          background; returns the folder (bgvid reads it as a video)
    square_at(t)                          (rows, cols) slices of the square on frame t
    blind_model(folder)                   a model that sees nothing (alpha 0 everywhere): a tiny ONNX graph
                                          and its spec; returns the .onnx path (pass it as --model)
    paint_square(t, count, **keys)        a restore stroke that fills the square as it is on frame t
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

W, H = 200, 128
SIDE, STEP, X0, Y0 = 40, 3, 20, 44


def square_at(t: int) -> tuple[slice, slice]:
    x = X0 + STEP * t
    return slice(Y0, Y0 + SIDE), slice(x, x + SIDE)


def _texture(rng, h: int, w: int, sigma: float) -> np.ndarray:
    import cv2

    return cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), sigma)


def make_square_clip(folder, frames: int = 25) -> Path:
    import cv2

    rng = np.random.default_rng(7)
    background = _texture(rng, H, W, 1.5)
    background = (background - background.min()) / np.ptp(background) * 150 + 10  # darker than the square
    square = _texture(rng, SIDE, SIDE, 1.0)
    square = (square - square.min()) / np.ptp(square) * 140 + 110
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t in range(frames):
        frame = background.copy()
        frame[square_at(t)] = square
        cv2.imwrite(str(folder / f"{t:04d}.png"), np.rint(frame).astype(np.uint8)[..., ::-1])
    return folder


def blind_model(folder) -> Path:
    from onnx import TensorProto, helper, numpy_helper, save_model

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16, 16, 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 16, 16, 1])
    zero = numpy_helper.from_array(np.zeros((1,), np.float32), "zero")
    nodes = [helper.make_node("ReduceMean", ["input"], ["mean"], axes=[3], keepdims=1),
             helper.make_node("Mul", ["mean", "zero"], ["output"])]
    model = helper.make_model(helper.make_graph(nodes, "blind", [x], [y], [zero]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = Path(folder) / "blind.onnx"
    save_model(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({
        "input": {"name": "input", "layout": "NHWC", "size": [16, 16], "batch": True, "mean": 0.0, "std": 255.0},
        "output": {"name": "output", "kind": "probability"}}))
    return path


def square_rows(t: int) -> list[list[float]]:
    """The zig-zag that fills the square on frame t with a hard 10 px brush: five rows."""
    rows, cols = square_at(t)
    x0, x1 = cols.start + 5, cols.stop - 5
    points = []
    for k, y in enumerate((Y0 + 5, Y0 + 12, Y0 + 20, Y0 + 28, Y0 + 35)):
        points += [[x0, y], [x1, y]] if k % 2 == 0 else [[x1, y], [x0, y]]
    return points


def paint_square(t: int, count: int = 25, **extra) -> dict:
    """A restore stroke on every frame of a `count`-frame clip, filling the square as it is on frame t."""
    stroke = {"frames": f"0-{count - 1}", "mode": "restore", "size": 10, "softness": 0, "points": square_rows(t)}
    stroke.update(extra)
    return stroke
