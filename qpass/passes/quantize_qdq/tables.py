"""Constant tables read by a float Gather (word and position embeddings whose rows only float ops read: an Add
then a LayerNorm): stored as int8 codes with one scale per row, gathered as codes and dequantized after the
lookup, so the file holds a byte per entry and only the gathered rows are ever converted.

    Gather(table, ids)  ->  Mul(Cast(Gather(codes, ids)), Gather(row_scales, ids))

The rows' own scales keep each row's precision (better than quantize_static's one scale for the whole table, which
an Add of two embeddings would turn into noise); the result is Gather / Cast / Mul, exact in float32 on every
backend and in the golden interpreter.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.formats.qdq_params import quantize, symmetric_weight_params
from .store import ConstPool, short

#: smaller tables stay float (their codes and scales would save nothing)
MIN_TABLE_ELEMENTS = 1024


def row_quantizable(node: gs.Node) -> bool:
    """A Gather along axis 0 of a constant float table of at least 2 dimensions and ``MIN_TABLE_ELEMENTS``."""
    t = node.inputs[0] if node.inputs else None
    if not isinstance(t, gs.Constant) or len(node.inputs) < 2 or int(node.attrs.get("axis", 0)) != 0:
        return False
    v = np.asarray(t.values)
    return v.dtype.kind == "f" and v.ndim >= 2 and v.size >= MIN_TABLE_ELEMENTS


def row_quantize(pool: ConstPool, node: gs.Node) -> None:
    """Rewrite one float Gather (``row_quantizable``) to gather int8 codes and per-row scales."""
    table = np.asarray(node.inputs[0].values)
    p = symmetric_weight_params(table, 0, 127)
    base = short(node.inputs[0].name)
    codes = pool.get(quantize(table, p, -127, 127), base + "_rows_quantized")
    scales = pool.get(np.asarray(p.scale, table.dtype).reshape((-1,) + (1,) * (table.ndim - 1)), base + "_row_scale")
    ids, y = node.inputs[1], node.outputs[0]
    b = pool.b
    name = short(node.name)
    gathered = b.var(name + "_codes", dtype=np.int8, shape=y.shape)
    row_scale = b.var(name + "_scales", dtype=table.dtype, shape=None)
    as_float = b.var(name + "_float_codes", dtype=table.dtype, shape=y.shape)
    node.inputs[0] = codes
    node.outputs[0] = gathered
    b.node("Gather", [scales, ids], [row_scale], {"axis": 0}, name=name + "_row_scale")
    b.node("Cast", [gathered], [as_float], {"to": _onnx_dtype(table.dtype)}, name=name + "_Cast")
    b.node("Mul", [as_float, row_scale], [y], name=name + "_dequantize_rows")


def _onnx_dtype(dt: np.dtype) -> int:
    from onnx.helper import np_dtype_to_tensor_dtype
    return int(np_dtype_to_tensor_dtype(np.dtype(dt)))
