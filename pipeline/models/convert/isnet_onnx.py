"""Make the ISNet graph of @imgly/background-removal-data (fp16 "medium", quantised "small") size-free.

The export bakes batch 1 and 1024x1024 into every Resize (`sizes`), keeps the 11 deep-supervision
side outputs, and the fp16 file lists its nodes out of order (ONNX Runtime accepts that,
onnx.checker does not). The rewrite turns every Resize into a constant-`scales` Resize (ISNet only
upsamples by whole factors), keeps only `output` and its ancestors in topological order, and frees
N/H/W. H and W must be multiples of 64: the deepest map is 1/64 of the input, and any rounding in
the ceil-mode MaxPools breaks the skip Concats. The quantised file is batch-1 only: its
DynamicQuantizeLinear takes one scale over the whole batch, so images in a batch change each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ...errors import ModelError

if TYPE_CHECKING:
    import onnx

VERSION = 1  # bump when the produced graph changes; part of the model cache key

# Ops that work at any N/H/W. Anything else left in the graph (Shape, Slice, Expand, ...) may carry a
# baked 1024 that this rewrite does not know how to free, so it is refused.
_SIZE_FREE_OPS = {
    "Add", "Cast", "Concat", "Constant", "Conv", "ConvInteger", "DynamicQuantizeLinear", "MaxPool",
    "Mul", "Relu", "Reshape", "Resize", "Sigmoid",
}


def rewrite_isnet(data: bytes) -> "onnx.ModelProto":
    """Original ISNet .onnx bytes -> a graph with free N/H/W: input "input" [N,3,H,W] float32,
    single output "output" [N,1,H,W] float32 (probability)."""
    import onnx

    try:
        model = onnx.load_model_from_string(data)
    except Exception as e:  # protobuf raises its own DecodeError
        raise ModelError(f"ISNet: not an ONNX model ({e})") from e
    graph = model.graph
    if not any(o.domain in ("", "ai.onnx") and o.version >= 11 for o in model.opset_import):
        raise ModelError("ISNet: needs opset >= 11 (Resize with scales/sizes inputs)")
    graph_input = _check_io(graph)
    del graph.input[:]
    graph.input.append(graph_input)

    # Drop the side outputs first: shape inference then only has to walk what we keep.
    _keep_only_output(graph)
    _resizes_to_scales(model)
    _keep_only_output(graph)  # the Shape/Slice/Concat that built `sizes` are dead now

    init_names = {i.name for i in graph.initializer}
    const_names = {o for n in graph.node if n.op_type == "Constant" for o in n.output}
    for node in graph.node:
        if node.op_type not in _SIZE_FREE_OPS:
            raise ModelError(f"ISNet: unexpected {node.op_type} node {node.name!r} in the graph")
        # The quantised file reshapes biases ([C] -> [1,-1,1,1]); a Reshape of activations would
        # bake a size in.
        if node.op_type == "Reshape" and node.input[0] not in init_names | const_names:
            raise ModelError(f"ISNet: Reshape of activations ({node.name!r}) is not supported")

    _free_dims(graph.input[0], ["N", 3, "H", "W"])
    _free_dims(graph.output[0], ["N", 1, "H", "W"])
    del graph.value_info[:]  # inferred for 1x3x1024x1024: stale now
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise ModelError(f"ISNet: rewritten graph fails onnx.checker ({e})") from e
    return model


def _check_io(graph):
    """The one real input ("input"), after checking input and output look like ISNet's."""
    import onnx

    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]  # old exports list weights as inputs
    if [i.name for i in inputs] != ["input"] or not graph.output or graph.output[0].name != "output":
        raise ModelError(
            f"ISNet: expected input 'input' and first output 'output', got "
            f"{[i.name for i in inputs]} -> {[o.name for o in graph.output]}"
        )
    for vi, channels in ((inputs[0], 3), (graph.output[0], 1)):
        t = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        if t.elem_type != onnx.TensorProto.FLOAT or len(dims) != 4 or dims[1] != channels:
            raise ModelError(f"ISNet: {vi.name!r} is not a float32 [N,{channels},H,W] tensor")
    return inputs[0]


def _keep_only_output(graph) -> None:
    """Keep `output` and the nodes/initializers it needs, nodes in topological order."""
    producer = {o: n for n in graph.node for o in n.output if o}
    order, state = [], {}  # state: 1 while a node's inputs are being visited, 2 once placed
    stack = [(producer["output"], False)]
    while stack:
        node, inputs_done = stack.pop()
        key = id(node)
        if inputs_done:
            state[key] = 2
            order.append(node)
            continue
        if key in state:  # reached again through another consumer
            continue
        state[key] = 1
        stack.append((node, True))
        for name in reversed(node.input):
            p = producer.get(name)
            if p is None:
                continue
            if state.get(id(p)) == 1:
                raise ModelError(f"ISNet: the graph has a cycle through {p.name!r}")
            if id(p) not in state:
                stack.append((p, False))
    used = {name for n in order for name in n.input}
    kept_inits = [i for i in graph.initializer if i.name in used]
    del graph.node[:]
    graph.node.extend(order)
    del graph.initializer[:]
    graph.initializer.extend(kept_inits)
    del graph.output[1:]
    del graph.value_info[:]


def _resizes_to_scales(model) -> None:
    """Replace each Resize's `sizes` by the constant `scales` it amounts to at the exported size."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    # data_prop folds the fp16 file's Shape->Slice->Concat `sizes` into static output shapes.
    try:
        inferred = onnx.shape_inference.infer_shapes(model, data_prop=True).graph
    except Exception as e:
        raise ModelError(f"ISNet: shape inference failed ({e})") from e
    shapes = {}
    for vi in list(inferred.input) + list(inferred.value_info) + list(inferred.output):
        dims = vi.type.tensor_type.shape.dim
        if all(d.HasField("dim_value") for d in dims):
            shapes[vi.name] = [d.dim_value for d in dims]

    for node in model.graph.node:
        if node.op_type != "Resize" or len(node.input) < 4 or not node.input[3]:
            continue  # already scale-driven
        src, dst = shapes.get(node.input[0]), shapes.get(node.output[0])
        if src is None or dst is None or len(src) != 4 or len(dst) != 4:
            raise ModelError(f"ISNet: no static shape around Resize {node.name!r}")
        if src[:2] != dst[:2] or any(d % s for s, d in zip(src[2:], dst[2:], strict=False)):
            raise ModelError(f"ISNet: Resize {node.name!r} is not a whole-factor upsample: {src} -> {dst}")
        scales = np.array([1, 1] + [d / s for s, d in zip(src[2:], dst[2:], strict=False)], dtype=np.float32)
        name = f"{node.output[0]}_scales"
        model.graph.initializer.append(numpy_helper.from_array(scales, name))
        node.input[:] = [node.input[0], node.input[1], name]


def _free_dims(value_info, dims) -> None:
    shape = value_info.type.tensor_type.shape
    del shape.dim[:]
    for d in dims:
        if isinstance(d, str):
            shape.dim.add().dim_param = d
        else:
            shape.dim.add().dim_value = d
