"""Integer semantics of linear layers in QONNX fake-quant graphs (what streamlining reproduces bit for bit).

A Conv / ConvTranspose / Gemm / MatMul whose data input is the output of an activation ``Quant`` with a scalar
scale s_in (possibly through order-only ops) and whose weight is a ``Quant`` over a constant with zero point 0
(scale s_w per output channel) is evaluated as

    acc = op(c_in, c_w)                      exact integers: c_in = round(x / s_in), c_w = round(W / s_w)
    y   = f32(f32(acc) * f32(s_in * s_w)) + bias     (float32, per output channel)

which is the value of the float layer in exact arithmetic, rounded the way the streamlined graph computes it.
"""
from __future__ import annotations

import numpy as np

from qpass.ops import Quant, op_of
from qpass.ops.common import LINEAR_OPS, ORDER_ONLY_OPS
from .registry import NodeInfo

F32 = np.float32


def _quant_scale(node: NodeInfo, consts: dict) -> np.ndarray | None:
    """The scale of a Quant with constant parameters and zero point 0 (its attributes do not matter: the codes
    of a value already on its grid are round(value / scale) whatever the rounding mode, width or range)."""
    if op_of(node) is not Quant:
        return None
    p = Quant.params(node, [consts.get(x) for x in node.inputs])
    if p is None or np.any(p[1] != 0):
        return None
    return p[0]


def plan(nodes: list[NodeInfo], consts: dict) -> dict[str, dict]:
    """{linear node name: {"s_in": scalar, "s_w": array shaped like the weight's scale}}."""
    producer = {o: n for n in nodes for o in n.outputs if o}
    out = {}
    for n in nodes:
        if n.op_type not in LINEAR_OPS or n.domain or len(n.inputs) < 2:
            continue
        if n.op_type == "Gemm" and (int(n.attr("transA", 0)) or float(n.attr("alpha", 1.0)) != 1.0
                                    or float(n.attr("beta", 1.0)) != 1.0):
            continue
        src = producer.get(n.inputs[0])
        while src is not None and src.op_type in ORDER_ONLY_OPS and not src.domain:
            if src.op_type == "MaxPool" and len(src.outputs) > 1 and src.outputs[1]:
                src = None
                break
            src = producer.get(src.inputs[0])
        wq = producer.get(n.inputs[1])
        if src is None or wq is None or not wq.inputs or wq.inputs[0] not in consts:  # e.g. a Constant node
            continue
        s_in, s_w = _quant_scale(src, consts), _quant_scale(wq, consts)
        if s_in is None or s_w is None or s_in.size != 1 or np.any(s_in <= 0) or np.any(s_w <= 0):
            continue
        out[n.name] = {"s_in": F32(s_in.reshape(-1)[0]), "s_w": s_w}
    return out


def _out_channel_shape(n: NodeInfo, w: np.ndarray, y_ndim: int, s_w: np.ndarray) -> np.ndarray:
    """s_w (broadcastable to the weight) as a per-output-channel array broadcastable to the output."""
    flat = s_w.reshape(-1)
    if flat.size == 1:
        return flat.reshape(())
    shape = [1] * y_ndim
    shape[1 if n.op_type in ("Conv", "ConvTranspose") else y_ndim - 1] = flat.size
    return flat.reshape(shape)


def _bound(c_in: np.ndarray, c_w: np.ndarray) -> float:
    """An upper bound of every partial sum of the layer's integer MACs: max|c_in| * sum|c_w| (each output sums
    products with a subset of the weights)."""
    if not c_in.size or not c_w.size:
        return 0.0
    return float(np.abs(c_in).max()) * float(np.abs(c_w.astype(np.float64)).sum())


def run(n: NodeInfo, kernel, info: dict, x, w, b=None):
    s_in, s_w = info["s_in"], np.asarray(info["s_w"], F32)
    c_in = np.round(np.asarray(x, F32) / s_in).astype(F32)
    c_w = np.round(np.asarray(w, F32) / s_w).astype(F32)
    if _bound(c_in, c_w) >= 2 ** 53:  # beyond float64's integers: the kernels' int64 path
        c_in, c_w = c_in.astype(np.int64), c_w.astype(np.int64)
    acc = kernel(n, c_in, c_w)  # float64 accumulation (exact below 2^53, proven above) rounded once to float32
    acc = acc[0] if isinstance(acc, (tuple, list)) else acc
    s = _out_channel_shape(n, c_w, acc.ndim, (F32(s_in) * s_w).astype(F32))
    y = (np.asarray(acc, F32) * s).astype(F32)
    if b is not None:
        bias = np.asarray(b, F32)
        if n.op_type in ("Conv", "ConvTranspose"):
            bias = bias.reshape([1, -1] + [1] * (y.ndim - 2))
        y = (y + bias).astype(F32)
    return y
