"""A tiny segmentation model written on the spot (onnx, a hard dependency of bgvid): the matte is
the mean of the RGB channels at 16x16. For tests of what needs a model to start but not a real one
(the editor's server, the command line's checks), so they run where no model is cached."""

from __future__ import annotations

import json
from pathlib import Path


def tiny_model(folder: Path) -> Path:
    """Write tiny.onnx and its spec tiny.json into `folder`; returns the .onnx path (pass it as --model)."""
    from onnx import TensorProto, helper, save_model

    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 16, 16, 3])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 16, 16, 1])
    node = helper.make_node("ReduceMean", ["input"], ["output"], axes=[3], keepdims=1)
    model = helper.make_model(helper.make_graph([node], "tiny", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # readable by every ONNX Runtime bgvid supports
    path = Path(folder) / "tiny.onnx"
    save_model(model, str(path))
    path.with_suffix(".json").write_text(json.dumps({
        "input": {"name": "input", "layout": "NHWC", "size": [16, 16], "batch": True, "mean": 0.0, "std": 255.0},
        "output": {"name": "output", "kind": "probability"}}))
    return path
