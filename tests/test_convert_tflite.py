"""convert_tflite: MediaPipe Selfie Segmentation .tflite -> ONNX that reproduces MediaPipe's own masks."""

from __future__ import annotations

import struct

import numpy as np
import onnx  # onnx and tflite: hard dependencies of bgvid (a missing one must fail, not skip)
import pytest
import tflite

from bgvid.errors import ModelError
from bgvid.models.convert.tflite_onnx import convert_tflite

# ONNX Runtime comes from the `cpu` or `gpu` extra (one of the two, never both).
ort = pytest.importorskip("onnxruntime", reason='ONNX Runtime not installed: pip install -e ".[cpu]" (or .[gpu])')

REFERENCE = "selfie_mediapipe_0.10.21.npz"
# (catalog name, reference key prefix, model input H, W)
MODELS = [("selfie", "portrait", 256, 256), ("selfie-landscape", "landscape", 144, 256)]
BY_MODEL = pytest.mark.parametrize("name,key,h,w", MODELS, ids=[m[0] for m in MODELS])


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _run(model, x: np.ndarray) -> np.ndarray:
    return _session(model).run(["output"], {"input": x})[0]


def _dims(value_info) -> list:
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@BY_MODEL
def test_graph_is_valid_with_free_batch(model_source, name, key, h, w):
    model = convert_tflite(model_source(name))
    onnx.checker.check_model(model, full_check=True)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert _dims(model.graph.input[0]) == ["N", h, w, 3]
    assert _dims(model.graph.output[0]) == ["N", h, w, 1]


@BY_MODEL
def test_matches_mediapipe(model_source, reference_dir, name, key, h, w):
    ref = np.load(reference_dir / REFERENCE)
    x = (ref[f"{key}_input_rgb"] / 255.0).astype(np.float32)[None]
    assert x.shape == (1, h, w, 3)
    got = _run(convert_tflite(model_source(name)), x)
    want = ref[f"{key}_mask"]
    assert got.shape == (1, h, w, 1)
    assert np.abs(got[0, :, :, 0] - want).max() < 1e-3


@BY_MODEL
def test_batch_of_three_equals_three_single_runs(model_source, reference_dir, name, key, h, w):
    ref = np.load(reference_dir / REFERENCE)
    img = (ref[f"{key}_input_rgb"] / 255.0).astype(np.float32)
    noise = np.random.default_rng(0).random((h, w, 3), dtype=np.float32)
    batch = np.stack([img, img[:, ::-1], noise])
    session = _session(convert_tflite(model_source(name)))
    together = session.run(["output"], {"input": batch})[0]
    alone = np.concatenate([session.run(["output"], {"input": batch[i : i + 1]})[0] for i in range(3)])
    assert together.shape == (3, h, w, 1)
    np.testing.assert_allclose(together, alone, rtol=0, atol=1e-5)


@BY_MODEL
def test_output_is_a_probability(model_source, name, key, h, w):
    rng = np.random.default_rng(1)
    batch = np.stack([np.zeros((h, w, 3)), np.ones((h, w, 3)), rng.random((h, w, 3))]).astype(np.float32)
    out = _run(convert_tflite(model_source(name)), batch)
    assert np.isfinite(out).all()
    assert out.min() >= 0.0 and out.max() <= 1.0


def _retag_op(data: bytes, old: str, new: str) -> bytes:
    """The model with every `old` builtin op code rewritten in place to `new`: patches both the int8
    legacy field and the int32 field of OperatorCode (vtable slots 4 and 10) through the flatbuffer
    table the tflite reader exposes, since the tflite package has no writer."""
    codes = vars(tflite.BuiltinOperator)
    model = tflite.Model.GetRootAsModel(data, 0)
    out = bytearray(data)
    for i in range(model.OperatorCodesLength()):
        oc = model.OperatorCodes(i)
        if max(oc.BuiltinCode(), oc.DeprecatedBuiltinCode()) == codes[old]:
            for slot, fmt in ((4, "<b"), (10, "<i")):
                if oc._tab.Offset(slot):
                    struct.pack_into(fmt, out, oc._tab.Pos + oc._tab.Offset(slot), codes[new])
    assert out != bytearray(data), f"{old} not found"
    return bytes(out)


def test_unknown_op_raises_model_error(model_source):
    data = _retag_op(model_source("selfie"), "HARD_SWISH", "FLOOR")
    with pytest.raises(ModelError, match="unsupported TFLite op FLOOR"):
        convert_tflite(data)


def test_not_a_tflite_file_raises_model_error():
    with pytest.raises(ModelError):
        convert_tflite(b"\x00" * 64)
