"""TFLite -> ONNX for MediaPipe Selfie Segmentation (portrait 256x256 and landscape 144x256).

Covers exactly the op set those two graphs use (plus the trivial fused-activation variants), so
bgvid can run them with ONNX Runtime instead of shipping TensorFlow. The TFLite graph is NHWC; the
ONNX graph works in NCHW throughout (ONNX Runtime's fast conv path) with a single transpose at the
input and one at the output, so the public interface stays NHWC like the original.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import numpy as np

from ...errors import ModelError

if TYPE_CHECKING:
    import onnx

VERSION = 1  # bump when the produced graph changes; part of the model cache key

_OPSET = 17  # HardSwish needs 14, Shape(start, end) 15; 17 is widely supported by ORT/TensorRT
_CUSTOM = 32  # BuiltinOperator.CUSTOM
# TensorType -> numpy dtype, for the constant buffers we read.
_DTYPES = {0: np.float32, 1: np.float16, 2: np.int32, 3: np.uint8, 4: np.int64, 9: np.int8}
# ActivationFunctionType (fused into op options) -> our activation names.
_FUSED = {0: None, 1: "RELU", 2: "RELU_N1_TO_1", 3: "RELU6", 4: "TANH"}


def convert_tflite(data: bytes, *, graph_name: str = "bgvid") -> "onnx.ModelProto":
    """TFLite flatbuffer bytes -> ONNX model: input "input" float32 [N,H,W,3] NHWC RGB in 0..1 (N free,
    H/W as in the TFLite model), output "output" float32 [N,H,W,1]: probability of person (sigmoid applied)."""
    return _Converter(bytes(data)).run(graph_name)


class _Converter:
    def __init__(self, data: bytes):
        import tflite

        if len(data) < 8 or data[4:8] != b"TFL3":
            raise ModelError("not a TFLite model (no TFL3 identifier)")
        self.tfl = tflite
        self.data = data
        self.model = tflite.Model.GetRootAsModel(data, 0)
        if self.model.SubgraphsLength() != 1:
            raise ModelError(f"expected 1 TFLite subgraph, found {self.model.SubgraphsLength()}")
        self.graph = self.model.Subgraphs(0)
        self.builtin_names = {v: k for k, v in vars(tflite.BuiltinOperator).items() if not k.startswith("_")}
        self.nodes: list = []
        self.inits: list = []
        self.consts: dict[int, np.ndarray] = {}  # tensor index -> value, for weights (incl. dequantized)
        self.names: dict[int, str] = {}  # tensor index -> ONNX name of its NCHW activation
        self.used = {"input", "output"}

    # ---- helpers -------------------------------------------------------------------------------
    def shape(self, idx: int) -> tuple[int, ...]:
        t = self.graph.Tensors(idx)
        return tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()

    def tname(self, idx: int) -> str:
        return self.graph.Tensors(idx).Name().decode()

    def unique(self, name: str) -> str:
        base, n = name or "t", 1
        while name in self.used or not name:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        return name

    def const(self, idx: int) -> np.ndarray | None:
        """Value of a constant tensor (None for activations)."""
        if idx in self.consts:
            return self.consts[idx]
        t = self.graph.Tensors(idx)
        buf = self.model.Buffers(t.Buffer())
        if buf.Offset() > 1:  # large models keep buffers after the flatbuffer
            raw = self.data[buf.Offset() : buf.Offset() + buf.Size()]
        elif buf.DataLength():
            raw = buf.DataAsNumpy().tobytes()
        else:
            return None
        if t.Type() not in _DTYPES:
            raise ModelError(f"unsupported TFLite tensor type {t.Type()} for {t.Name().decode()}")
        self.consts[idx] = np.frombuffer(raw, _DTYPES[t.Type()]).reshape(self.shape(idx))
        return self.consts[idx]

    def weight(self, idx: int) -> np.ndarray:
        w = self.const(idx)
        if w is None:
            raise ModelError(f"TFLite tensor {self.tname(idx)} should be constant")
        return w.astype(np.float32)

    def init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        name = self.unique(name)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def value(self, idx: int) -> str:
        """ONNX name of a tensor used as an activation; constants become NCHW-broadcastable initializers."""
        if idx in self.names:
            return self.names[idx]
        c = self.const(idx)
        name = self.tname(idx)
        if c is None:
            raise ModelError(f"TFLite tensor {name} is used before it is produced")
        c = c.astype(np.float32) if c.dtype == np.float16 else c
        if c.ndim == 4:
            c = c.transpose(0, 3, 1, 2)
        elif c.ndim == 1 and c.size > 1:  # per-channel vector broadcasts over NHWC's last axis = C
            c = c.reshape(-1, 1, 1)
        elif c.ndim > 1:
            raise ModelError(f"unsupported constant operand shape {c.shape} ({name})")
        return self.init(name, c)

    def out(self, idx: int) -> str:
        name = self.unique(self.tname(idx))
        self.names[idx] = name
        return name

    def node(self, op_type: str, inputs: list[str], output: str, **attrs) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def emit(self, op_type: str, inputs: list[str], out_idx: int, fused: int = 0, **attrs) -> None:
        """One node producing tensor out_idx, followed by its fused activation if any."""
        if fused not in _FUSED:
            raise ModelError(f"unsupported fused activation {fused}")
        if _FUSED[fused] is None:
            self.node(op_type, inputs, self.out(out_idx), **attrs)
        else:
            raw = self.node(op_type, inputs, self.unique(self.tname(out_idx) + "_pre"), **attrs)
            self.activation(_FUSED[fused], raw, self.out(out_idx))

    def activation(self, kind: str, x: str, out: str) -> None:
        if kind in ("RELU6", "RELU_N1_TO_1"):  # Clip takes its bounds as inputs since opset 11
            lo, hi = (0.0, 6.0) if kind == "RELU6" else (-1.0, 1.0)
            lo_name = self.init(f"{out}_min", np.array(lo, np.float32))
            self.node("Clip", [x, lo_name, self.init(f"{out}_max", np.array(hi, np.float32))], out)
        else:
            op = {"RELU": "Relu", "TANH": "Tanh", "LOGISTIC": "Sigmoid", "HARD_SWISH": "HardSwish"}[kind]
            self.node(op, [x], out)

    @staticmethod
    def same_pads(in_hw, k_hw, strides, dilations) -> list[int]:
        """TFLite SAME: out = ceil(in / stride); the odd pixel of padding goes after (bottom/right)."""
        before, after = [], []
        for n, k, s, d in zip(in_hw, k_hw, strides, dilations, strict=False):
            total = max((-(-n // s) - 1) * s + (k - 1) * d + 1 - n, 0)
            before.append(total // 2)
            after.append(total - total // 2)
        return before + after

    # ---- ops -----------------------------------------------------------------------------------
    def op_conv(self, op, ins, outs, depthwise: bool) -> None:
        t = self.tfl
        opt = t.DepthwiseConv2DOptions() if depthwise else t.Conv2DOptions()
        opt.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        w = self.weight(ins[1])
        c_in = self.shape(ins[0])[3]
        # TFLite conv weights are OHWI, depthwise [1, H, W, C*mult]; ONNX wants OIHW (depthwise: I = 1).
        w = w.transpose(3, 0, 1, 2) if depthwise else w.transpose(0, 3, 1, 2)
        group = c_in if depthwise else c_in // w.shape[1]
        strides, dil = [opt.StrideH(), opt.StrideW()], [opt.DilationHFactor(), opt.DilationWFactor()]
        same = opt.Padding() == t.Padding.SAME
        pads = self.same_pads(self.shape(ins[0])[1:3], w.shape[2:], strides, dil) if same else [0, 0, 0, 0]
        name = self.tname(outs[0])
        inputs = [self.value(ins[0]), self.init(f"{name}_W", w)]
        if len(ins) > 2 and ins[2] >= 0:
            inputs.append(self.init(f"{name}_B", self.weight(ins[2])))
        self.emit("Conv", inputs, outs[0], opt.FusedActivationFunction(), kernel_shape=list(w.shape[2:]),
                  strides=strides, dilations=dil, pads=pads, group=group)

    def op_transpose_conv_bias(self, op, ins, outs) -> None:
        # MediaPipe custom op; its options are a raw TfLiteTransposeConvParams struct:
        # int32 padding (1 SAME, 2 VALID), int32 stride_w, int32 stride_h.
        padding, stride_w, stride_h = struct.unpack("<3i", op.CustomOptionsAsNumpy().tobytes()[:12])
        if padding not in (1, 2):
            raise ModelError(f"Convolution2DTransposeBias with unknown padding {padding}")
        w = self.weight(ins[1]).transpose(3, 0, 1, 2)  # OHWI -> IOHW; no spatial flip needed
        pads, extra = [0, 0, 0, 0], [0, 0]
        for i, (n, s, k) in enumerate(zip(self.shape(ins[0])[1:3], (stride_h, stride_w), w.shape[2:], strict=False)):
            want = n * s if padding == 1 else (n - 1) * s + k
            total = (n - 1) * s + k - want  # > 0: crop that much (pads), < 0: grow (output_padding)
            crop = max(total, 0)
            pads[i], pads[i + 2], extra[i] = crop // 2, crop - crop // 2, max(-total, 0)
        name = self.tname(outs[0])
        inputs = [self.value(ins[0]), self.init(f"{name}_W", w), self.init(f"{name}_B", self.weight(ins[2]))]
        self.emit("ConvTranspose", inputs, outs[0], kernel_shape=list(w.shape[2:]), strides=[stride_h, stride_w],
                  pads=pads, output_padding=extra)

    def op_average_pool(self, op, ins, outs) -> None:
        t = self.tfl
        opt = t.Pool2DOptions()
        opt.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        in_hw, k = self.shape(ins[0])[1:3], (opt.FilterHeight(), opt.FilterWidth())
        strides = [opt.StrideH(), opt.StrideW()]
        if tuple(k) == tuple(in_hw) and self.shape(outs[0])[1:3] == (1, 1):  # squeeze-excite: whole-frame mean
            return self.emit("GlobalAveragePool", [self.value(ins[0])], outs[0], opt.FusedActivationFunction())
        same = opt.Padding() == t.Padding.SAME
        pads = self.same_pads(in_hw, k, strides, (1, 1)) if same else [0, 0, 0, 0]
        # TFLite averages over the valid pixels only, i.e. padding is not counted.
        self.emit("AveragePool", [self.value(ins[0])], outs[0], opt.FusedActivationFunction(),
                  kernel_shape=list(k), strides=strides, pads=pads, count_include_pad=0)

    def op_mean(self, op, ins, outs) -> None:
        opt = self.tfl.ReducerOptions()
        opt.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        axes = sorted(int(a) % 4 for a in self.weight(ins[1]).astype(np.int64).ravel())
        if axes != [1, 2] or not opt.KeepDims():  # anything else would leave NHWC-as-NCHW bookkeeping
            raise ModelError(f"unsupported TFLite MEAN over axes {axes} keep_dims={opt.KeepDims()}")
        self.emit("GlobalAveragePool", [self.value(ins[0])], outs[0])

    def op_binary(self, op, ins, outs, onnx_op: str) -> None:
        opt = self.tfl.AddOptions() if onnx_op == "Add" else self.tfl.MulOptions()
        opt.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        self.emit(onnx_op, [self.value(ins[0]), self.value(ins[1])], outs[0], opt.FusedActivationFunction())

    def op_resize_bilinear(self, op, ins, outs) -> None:
        opt = self.tfl.ResizeBilinearOptions()
        opt.Init(op.BuiltinOptions().Bytes, op.BuiltinOptions().Pos)
        if opt.AlignCorners() and opt.HalfPixelCenters():
            raise ModelError("RESIZE_BILINEAR with both align_corners and half_pixel_centers")
        mode = "align_corners" if opt.AlignCorners() else "half_pixel" if opt.HalfPixelCenters() else "asymmetric"
        name = self.tname(outs[0])
        # Exact output sizes rather than float scales; the batch dim is dynamic so take N, C from Shape.
        nc = self.node("Shape", [self.value(ins[0])], self.unique(f"{name}_nc"), start=0, end=2)
        hw = self.init(f"{name}_hw", self.weight(ins[1]).astype(np.int64))
        sizes = self.node("Concat", [nc, hw], self.unique(f"{name}_sizes"), axis=0)
        self.emit("Resize", [self.value(ins[0]), "", "", sizes], outs[0], mode="linear",
                  coordinate_transformation_mode=mode)

    def op_dequantize(self, op, ins, outs) -> None:
        c = self.const(ins[0])
        if c is None or c.dtype != np.float16:  # fp16 weights only: quantized activations are out of scope
            raise ModelError("unsupported TFLite DEQUANTIZE (only constant float16 weights)")
        self.consts[outs[0]] = c.astype(np.float32)  # folded: becomes a float32 initializer where used

    def op_unary(self, op, ins, outs, kind: str) -> None:
        self.activation(kind, self.value(ins[0]), self.out(outs[0]))

    # ---- driver --------------------------------------------------------------------------------
    def run(self, graph_name: str) -> "onnx.ModelProto":
        from onnx import TensorProto, helper

        g = self.graph
        if g.InputsLength() != 1 or g.OutputsLength() != 1:
            raise ModelError(f"expected 1 input and 1 output, found {g.InputsLength()} and {g.OutputsLength()}")
        in_idx, out_idx = g.Inputs(0), g.Outputs(0)
        in_shape, out_shape = self.shape(in_idx), self.shape(out_idx)
        if len(in_shape) != 4 or len(out_shape) != 4:
            raise ModelError(f"expected NHWC input/output, found {in_shape} -> {out_shape}")
        self.node("Transpose", ["input"], self.out(in_idx), perm=[0, 3, 1, 2])

        handlers = {
            "CONV_2D": lambda *a: self.op_conv(*a, depthwise=False),
            "DEPTHWISE_CONV_2D": lambda *a: self.op_conv(*a, depthwise=True),
            "AVERAGE_POOL_2D": self.op_average_pool,
            "MEAN": self.op_mean,
            "ADD": lambda *a: self.op_binary(*a, "Add"),
            "MUL": lambda *a: self.op_binary(*a, "Mul"),
            "RESIZE_BILINEAR": self.op_resize_bilinear,
            "DEQUANTIZE": self.op_dequantize,
            "Convolution2DTransposeBias": self.op_transpose_conv_bias,
            **{k: (lambda *a, k=k: self.op_unary(*a, k)) for k in ("RELU", "RELU6", "TANH", "LOGISTIC", "HARD_SWISH")},
        }
        for i in range(g.OperatorsLength()):
            op = g.Operators(i)
            code = self.model.OperatorCodes(op.OpcodeIndex())
            # Old files only fill the int8 deprecated field, new ones the int32 field: the larger one is real.
            num = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
            if num == _CUSTOM:
                name = (code.CustomCode() or b"CUSTOM").decode()
            else:
                name = self.builtin_names.get(num, str(num))
            if name not in handlers:
                raise ModelError(f"unsupported TFLite op {name}")
            ins = [int(j) for j in op.InputsAsNumpy()] if op.InputsLength() else []
            handlers[name](op, ins, [int(j) for j in op.OutputsAsNumpy()])

        self.node("Transpose", [self.value(out_idx)], "output", perm=[0, 2, 3, 1])
        graph = helper.make_graph(
            self.nodes, graph_name,
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", *in_shape[1:]])],
            [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", *out_shape[1:]])],
            self.inits,
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="bgvid")
        model.ir_version = 8  # what opset 17 needs; keeps older ONNX Runtime builds able to load it
        return model
