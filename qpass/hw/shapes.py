"""Model preparation for the hardware analysis: unique node names and per-tensor shapes."""
from __future__ import annotations

import onnx

from qpass.ops import op_of
from qpass.ops.common import QONNX_DOMAINS

#: QONNX ops whose output has the shape of their first input


def ensure_names(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with a unique name on every node (unchanged when they already have)."""
    names = [n.name for n in model.graph.node]
    if all(names) and len(set(names)) == len(names):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    seen: set[str] = set()
    for i, n in enumerate(out.graph.node):
        base = n.name or f"{n.op_type}_{i}"
        name, k = base, 1
        while name in seen:
            name, k = f"{base}_{k}", k + 1
        n.name = name
        seen.add(name)
    return out


def _has_shape(v: onnx.ValueInfoProto) -> bool:
    t = v.type.tensor_type
    return v.type.HasField("tensor_type") and t.HasField("shape") and len(t.shape.dim) > 0


def with_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """The model with value_info for every tensor whose shape ONNX shape inference can find once the element-wise
    QONNX ops are stood in for by Identity (qonnx's make_shape_compatible_op). Existing shapes are kept; missing or
    rank-0 ones are filled in. The model is returned unchanged when every node output already has a shape."""
    g = model.graph
    known = {v.name for v in list(g.value_info) + list(g.output) if _has_shape(v)}
    if all(o in known for n in g.node for o in n.output if o):
        return model
    stand = onnx.ModelProto()
    stand.CopyFrom(model)
    del stand.graph.value_info[:]
    for o in stand.graph.output:
        if not _has_shape(o):
            o.type.tensor_type.ClearField("shape")
    for n in stand.graph.node:
        op = op_of(n) if n.domain in QONNX_DOMAINS else None
        stand_in = op.shape_stand_in(n) if op is not None else None
        if stand_in is not None:
            n.CopyFrom(stand_in)
    try:
        inferred = onnx.shape_inference.infer_shapes(stand, data_prop=True)
    except Exception:  # noqa: BLE001 - best effort; nodes without shapes stay on the host
        return model
    got = {v.name: v for v in list(inferred.graph.value_info) + list(inferred.graph.output) if _has_shape(v)}
    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [v for v in out.graph.value_info if _has_shape(v)]
    del out.graph.value_info[:]
    out.graph.value_info.extend(keep)
    for name, v in got.items():
        if name in known or name in {i.name for i in g.input}:
            continue
        if name in {o.name for o in g.output}:
            o = next(o for o in out.graph.output if o.name == name)
            o.type.tensor_type.shape.CopyFrom(v.type.tensor_type.shape)
            continue
        t = onnx.ValueInfoProto()
        t.CopyFrom(v)
        out.graph.value_info.append(t)
    return out
