"""QOperator and dynamic-quantisation ops -> QDQ: each integer operator becomes DequantizeLinear on its
operands, the float op, and QuantizeLinear on its output, which is the pattern onnxruntime fuses back into the same
integer kernel (and the reference interpreter runs with that kernel's arithmetic).

- ``QLinearConv``, ``QLinearMatMul``, com.microsoft ``QGemm`` / ``QLinearAdd`` / ``QLinearMul`` /
  ``QLinearGlobalAveragePool`` / ``QLinearAveragePool`` (channels first): DQ -> op -> Q (an
  int32 bias becomes ``DequantizeLinear(bias, x_scale * w_scale)``, what onnxruntime's QDQ fusion reads back).
- ``ConvInteger`` / ``MatMulInteger``: ``DequantizeLinear(c, 1, z)`` on both operands, the float op, ``Cast`` to
  int32: the float sums of integer products are exact while every partial sum stays below 2^24, which is checked
  from the operand types and the weight (refused otherwise, naming the node).
- ``DynamicQuantizeLinear``: its scale and zero point computed with standard ops in onnxruntime's order
  (``GetQuantizationParameter``: the range widened to 0, ``(max - min) / 255``, 1 for an empty range, zero point
  ``rne(clamp(-min / scale, 0, 255))``), then ``QuantizeLinear``.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.errors import UnsupportedOpError
from qpass.ir.builder import GraphBuilder
from qpass.ops.base import const_value as const

EXACT_SUM = 2**24
MS = "com.microsoft"


def _dq(b: GraphBuilder, codes, scale, zp, axis_for_vector: int | None = None):
    attrs = {}
    s = const(scale)
    if axis_for_vector is not None and s is not None and s.size > 1:
        attrs["axis"] = axis_for_vector
    inputs = [codes, scale] + ([zp] if zp is not None and zp.name else [])
    return b.op("DequantizeLinear", inputs, attrs)


def _q(b, x, scale, zp, out):
    b.op("QuantizeLinear", [x, scale] + ([zp] if zp is not None and zp.name else []), out=out)


def _bias(b, bias, xs, ws):
    if bias is None or not bias.name:
        return None
    a, c = const(xs), const(ws)
    s = b.const((a.astype(np.float32) * c.astype(np.float32)).reshape(-1)) if a is not None and c is not None \
        else b.op("Mul", [xs, ws])
    return b.op("DequantizeLinear", [bias, s], {"axis": 0} if np.size(const(ws)) > 1 else {})


def _opt(node, i):
    return node.inputs[i] if len(node.inputs) > i and node.inputs[i].name else None


def qlinear_conv(b, node, outs):
    x, xs, xz, w, ws, wz, ys, yz = node.inputs[:8]
    bias = _bias(b, _opt(node, 8), xs, ws)
    y = b.op("Conv", [_dq(b, x, xs, xz), _dq(b, w, ws, wz, 0)] + ([bias] if bias is not None else []),
             dict(node.attrs))
    _q(b, y, ys, yz, outs[0])


def qlinear_matmul(b, node, outs):
    a, as_, az, w, ws, wz, ys, yz = node.inputs[:8]
    y = b.op("MatMul", [_dq(b, a, as_, az), _dq(b, w, ws, wz, 1)])
    _q(b, y, ys, yz, outs[0])


def qgemm(b, node, outs):
    a, as_, az, w, ws, wz = node.inputs[:6]
    attrs = {k: node.attrs[k] for k in ("alpha", "transA", "transB") if k in node.attrs}
    bias = _bias(b, _opt(node, 6), as_, ws)
    wd = _dq(b, w, ws, wz, 0 if int(node.attrs.get("transB", 0)) else 1)
    inputs = [_dq(b, a, as_, az), wd] + ([bias] if bias is not None else [])
    ys = _opt(node, 7)
    if ys is None:
        b.op("Gemm", inputs, attrs, out=outs[0])
        return
    _q(b, b.op("Gemm", inputs, attrs), ys, _opt(node, 8), outs[0])


def qlinear_binary(op):
    def convert(b, node, outs):
        a, as_, az, c, cs, cz, ys = node.inputs[:7]
        y = b.op(op, [_dq(b, a, as_, az), _dq(b, c, cs, cz)])
        _q(b, y, ys, _opt(node, 7), outs[0])
    return convert


def qlinear_pool(op):
    def convert(b, node, outs):
        if int(node.attrs.get("channels_last", 0)):
            raise UnsupportedOpError(f"{node.op} node {node.name!r} is channels-last; qpass converts channels-first "
                                     "pools only")
        x, xs, xz, ys, yz = node.inputs[:5]
        attrs = {k: v for k, v in node.attrs.items() if k != "channels_last"}
        _q(b, b.op(op, [_dq(b, x, xs, xz)], attrs), ys, yz, outs[0])
    return convert


def _max_abs(t, zp) -> int:
    """max |code - zero point| of an integer operand: from the constant itself, else from its type."""
    z = const(zp) if zp is not None else None
    z = np.zeros(1, np.int64) if z is None else z.astype(np.int64)
    v = const(t)
    if v is not None:
        return int(np.abs(v.astype(np.int64) - (z.reshape(-1, *([1] * (v.ndim - 1))) if z.size > 1 else z)).max())
    info = np.iinfo(np.dtype(t.dtype)) if t.dtype is not None else np.iinfo(np.uint8)
    return int(max(abs(info.min - z.min()), abs(info.max - z.min()), abs(info.min - z.max()), abs(info.max - z.max())))


def integer_op(op):
    def convert(b, node, outs):
        x, w = node.inputs[:2]
        xz, wz = _opt(node, 2), _opt(node, 3)
        wv = const(w)
        k = int(np.prod(wv.shape[1:])) if op == "Conv" and wv is not None else \
            (int(wv.shape[-2]) if wv is not None and wv.ndim >= 2 else None)
        if k is None or k * _max_abs(x, xz) * _max_abs(w, wz) >= EXACT_SUM:
            raise UnsupportedOpError(f"{node.op} node {node.name!r}: its integer sums may reach 2^24, beyond what a "
                                     "float QDQ layer computes exactly (or its weight is not a constant)")
        one = b.const(np.float32(1.0))
        wd = _dq(b, w, one, wz, 0 if op == "Conv" else 1) if wz is None or np.size(const(wz)) == 1 else \
            b.op("DequantizeLinear", [w, b.const(np.ones(np.size(const(wz)), np.float32)), wz],
                 {"axis": 0 if op == "Conv" else 1})
        y = b.op(op, [_dq(b, x, one, xz), wd], dict(node.attrs))
        b.op("Cast", [y], {"to": 6}, out=outs[0])  # INT32
    return convert


def dynamic_quantize(b, node, outs):
    x = node.inputs[0]
    y, ys, yz = (list(outs) + [None, None])[:3]
    zero = b.const(np.float32(0.0))
    lo = b.op("Min", [b.op("ReduceMin", [x], {"keepdims": 0}), zero])
    hi = b.op("Max", [b.op("ReduceMax", [x], {"keepdims": 0}), zero])
    d = b.op("Sub", [hi, lo])
    empty = b.op("Equal", [d, zero], dtype=np.bool_)
    scale = b.op("Where", [empty, b.const(np.float32(1.0)), b.op("Div", [d, b.const(np.float32(255.0))])],
                 out=ys if ys is not None else None)
    zf = b.op("Round", [b.op("Clip", [b.op("Sub", [zero, b.op("Div", [lo, scale])]), zero,
                                      b.const(np.float32(255.0))])])
    zp = b.op("Cast", [zf], {"to": 2}, out=yz if yz is not None else None, dtype=np.uint8)  # UINT8
    b.op("QuantizeLinear", [x, scale, zp], out=y, dtype=np.uint8)


CONVERTERS = {
    ("", "QLinearConv"): qlinear_conv,
    ("", "QLinearMatMul"): qlinear_matmul,
    (MS, "QGemm"): qgemm,
    (MS, "QLinearAdd"): qlinear_binary("Add"),
    (MS, "QLinearMul"): qlinear_binary("Mul"),
    (MS, "QLinearGlobalAveragePool"): qlinear_pool("GlobalAveragePool"),
    (MS, "QLinearAveragePool"): qlinear_pool("AveragePool"),
    ("", "ConvInteger"): integer_op("Conv"),
    ("", "MatMulInteger"): integer_op("MatMul"),
    ("", "DynamicQuantizeLinear"): dynamic_quantize,
}


def converter(node: gs.Node):
    return CONVERTERS.get(("" if node.domain in ("", "ai.onnx", None) else node.domain, node.op))
