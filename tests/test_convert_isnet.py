"""ISNet rewrite: free N/H/W, one output, same mask as the original graph."""

from __future__ import annotations

import cv2  # opencv-python-headless, onnx: hard dependencies of bgvid (a missing one must fail, not skip)
import numpy as np
import onnx
import pytest

from bgvid.errors import ModelError
from bgvid.models.convert.isnet_onnx import rewrite_isnet

# ONNX Runtime comes from the `cpu` or `gpu` extra (one of the two, never both).
ort = pytest.importorskip("onnxruntime", reason='ONNX Runtime not installed: pip install -e ".[cpu]" (or .[gpu])')

MODELS = ["isnet", "isnet-small"]
_rewritten: dict[str, "onnx.ModelProto"] = {}  # the rewrite takes seconds: do it once per model


def _rewrite(model_source, name):
    if name not in _rewritten:
        _rewritten[name] = rewrite_isnet(model_source(name))
    return _rewritten[name]


def _session(model):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    data = model if isinstance(model, bytes) else model.SerializeToString()
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


def _mask(sess, x):
    return sess.run(["output"], {"input": x})[0]


def _portrait(media, h, w, variant=0):
    """The portrait as ISNet wants it: RGB stretched to h x w, (v - 128) / 256, NCHW.
    `variant` 1-3 give different images from the same file (flip, crops)."""
    path = media / "backgrounds" / "portrait_grace_hopper.jpg"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    img = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    ih, iw = img.shape[:2]
    img = [img, img[:, ::-1], img[: ih * 2 // 3], img[ih // 4 :, iw // 5 :]][variant]
    img = cv2.resize(np.ascontiguousarray(img), (w, h), interpolation=cv2.INTER_LINEAR)
    return ((img.astype(np.float32) - 128) / 256).transpose(2, 0, 1)[None].copy()


def _dims(value_info):
    return [d.dim_param or d.dim_value for d in value_info.type.tensor_type.shape.dim]


@pytest.mark.parametrize("name", MODELS)
def test_rewritten_graph_has_one_output_free_dims_and_passes_checker(model_source, name):
    model = _rewrite(model_source, name)
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert _dims(model.graph.input[0]) == ["N", 3, "H", "W"]
    assert _dims(model.graph.output[0]) == ["N", 1, "H", "W"]
    # no Resize is driven by hard-coded sizes any more
    assert all(len(n.input) < 4 or not n.input[3] for n in model.graph.node if n.op_type == "Resize")
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_rewritten_matches_original_at_1024(model_source, media, name):
    x = _portrait(media, 1024, 1024)
    original = _mask(_session(model_source(name)), x)
    rewritten = _mask(_session(_rewrite(model_source, name)), x)
    diff = float(np.abs(original - rewritten).max())
    print(f"{name}: 1024x1024 max abs diff rewritten vs original = {diff:.2e}")
    assert rewritten.shape == (1, 1, 1024, 1024)
    # The graphs compute the same thing (0.0 with ORT optimisations off); ORT fuses the fp16 graph
    # differently once the side outputs are gone, which moves values by ~2e-4.
    assert diff < 1e-3
    assert 0.2 < rewritten.mean() < 0.9  # a portrait: a real mask, not all 0 or all 1


def test_medium_batch_equals_single_runs(model_source, media):
    sess = _session(_rewrite(model_source, "isnet"))
    x = np.concatenate([_portrait(media, 512, 512, v) for v in range(4)])
    batched = _mask(sess, x)
    singles = np.concatenate([_mask(sess, x[i : i + 1]) for i in range(4)])
    assert batched.shape == (4, 1, 512, 512)
    assert float(np.abs(batched - singles).max()) < 1e-4
    assert float(np.abs(singles[0] - singles[1]).max()) > 0.01  # the four inputs really differ


@pytest.mark.parametrize("name", MODELS)
def test_non_square_multiple_of_128(model_source, media, name):
    y = _mask(_session(_rewrite(model_source, name)), _portrait(media, 384, 640))
    assert y.shape == (1, 1, 384, 640)
    assert np.isfinite(y).all() and y.min() >= 0 and y.max() <= 1


def test_not_isnet_raises_model_error():
    with pytest.raises(ModelError):
        rewrite_isnet(b"not an onnx file")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
    )
    with pytest.raises(ModelError):
        rewrite_isnet(helper.make_model(graph).SerializeToString())
