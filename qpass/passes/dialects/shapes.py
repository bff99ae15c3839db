"""Shapes for an imported QONNX graph: ONNX shape inference stops at custom-domain ops, so every op qpass has a
class for is stood in for by its ``shape_stand_in`` (qonnx's ``make_shape_compatible_op``) while the shapes are
inferred; the model gets value_info for every tensor it lacked one for."""
from __future__ import annotations

import onnx

from qpass.ops import op_of


def _shaped(v: onnx.ValueInfoProto) -> bool:
    return v.type.HasField("tensor_type") and v.type.tensor_type.HasField("shape")


def fill_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    g = model.graph
    known = {v.name for v in list(g.value_info) + list(g.output) + list(g.input) if _shaped(v)}
    custom = [n for n in g.node if n.domain not in ("", "ai.onnx") and op_of(n) is not None]
    if not custom or all(o in known for n in g.node for o in n.output if o):
        return model
    stand = onnx.ModelProto()
    stand.CopyFrom(model)
    for n in stand.graph.node:
        op = op_of(n) if n.domain not in ("", "ai.onnx") else None
        s = op.shape_stand_in(n) if op is not None else None
        if s is not None:
            n.CopyFrom(s)
    try:
        inferred = onnx.shape_inference.infer_shapes(stand, data_prop=True)
    except (onnx.shape_inference.InferenceError, RuntimeError, ValueError):
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    out.graph.value_info.extend(v for v in inferred.graph.value_info if v.name not in known and _shaped(v))
    return out
