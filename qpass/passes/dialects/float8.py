"""QONNX ``FloatQuant`` <-> ONNX float8 QuantizeLinear / DequantizeLinear (opset 19), where the two are equal:
E4M3FN (4 exponent bits, 3 mantissa bits, bias 7, largest 448) and E5M2 (5, 2, 15, 57344), saturating, ROUND.
QuantizeLinear with ``saturate=1`` rounds ``x / s`` half to even onto the float8 grid (subnormals included) and
clamps to the largest finite value, which is FloatQuant's computation for those parameters."""
from __future__ import annotations

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx_graphsurgeon.ir.tensor import LazyValues

from qpass.errors import UnsupportedOpError
from qpass.ops import FloatQuant
from qpass.ops.base import const_value
from qpass.ops.common import QONNX_DOMAIN
from .grid import per_axis_shape, rank_of, scale_axis

FLOAT8_OPSET = 19


def _zero(b, elem: int) -> gs.Constant:
    name = b.names(f"{b.base}_zp8")
    return gs.Constant(name, LazyValues(onnx.helper.make_tensor(name, elem, [], [0.0])))


def float_quant_to_float8(b, node: gs.Node, out) -> None:
    consts = [const_value(t) for t in node.inputs]
    elem = FloatQuant.float8_type(node, consts)
    s = consts[1]
    if elem is None or s is None or np.any(s <= 0) or not np.all(np.isfinite(s)):
        raise UnsupportedOpError(f"FloatQuant node {node.name!r} has no exact float8 QuantizeLinear form (only "
                                 "saturating ROUND E4M3FN(bias 7, max 448) and E5M2(bias 15, max 57344) with a "
                                 "constant positive scale)")
    axis = scale_axis(s, rank_of(node.inputs[0]))
    if axis == "no":
        raise UnsupportedOpError(f"FloatQuant node {node.name!r}: its scale varies along several axes")
    attrs = {"axis": int(axis)} if axis is not None else {}
    sc = b.const(np.asarray(s, np.float32).reshape(-1) if axis is not None else np.float32(s.reshape(-1)[0]))
    zero = _zero(b, elem)
    if axis is not None:
        zero = gs.Constant(zero.name, LazyValues(onnx.helper.make_tensor(zero.name, elem, [int(np.size(s))],
                                                                         [0.0] * int(np.size(s)))))
    q = b.op("QuantizeLinear", [node.inputs[0], sc, zero], {**attrs, "saturate": 1}, dtype=None)
    b.op("DequantizeLinear", [q, sc, zero], attrs, out=out)


def float8_dq_to_float_quant(b, dq: gs.Node, elem: int) -> bool:
    """``QuantizeLinear(x, s, z8) -> DequantizeLinear(s, z8)`` with float8 codes -> FloatQuant; False if not that."""
    from qpass.ops.float_quant import FLOAT8_TYPES

    codes = dq.inputs[0]
    q = codes.inputs[0] if codes.inputs else None
    s = const_value(dq.inputs[1])
    if q is None or q.op != "QuantizeLinear" or s is None or const_value(q.inputs[1]) is None or \
            not np.array_equal(const_value(q.inputs[1]), s) or not int(q.attrs.get("saturate", 1)):
        return False
    e, m, bias, top = next(k for k, t in FLOAT8_TYPES.items() if t == elem)
    rank = rank_of(dq.outputs[0]) or rank_of(q.inputs[0])
    axis = int(q.attrs.get("axis", 1)) % max(rank or 1, 1) if np.size(s) > 1 else None
    sb = np.asarray(s, np.float32).reshape(per_axis_shape(np.size(s), axis, rank)) if axis is not None \
        else np.float32(s.reshape(-1)[0])
    out = dq.outputs[0]
    dq.outputs = []
    b.node("FloatQuant", [q.inputs[0], b.const(sb), b.const(np.float32(e)), b.const(np.float32(m)),
                          b.const(np.float32(bias)), b.const(np.float32(top))], [out],
           {"rounding_mode": "ROUND", "saturation": 1, "has_nan": int(elem == onnx.TensorProto.FLOAT8E4M3FN),
            "has_inf": int(elem == onnx.TensorProto.FLOAT8E5M2), "has_subnormal": 1}, domain=QONNX_DOMAIN,
           name=f"{out.name}_FloatQuant")
    return True
