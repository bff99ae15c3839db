"""QONNX quantisers -> ONNX QuantizeLinear / Clip / DequantizeLinear, computing bit-identical values.

``Quant(x, s, z, b; signed, narrow, rounding_mode)`` (also ``IntQuant``), with constant parameters, any width
up to 16 bits, per-tensor or per-axis positive scales and integral zero points:

- ROUND and zero point 0: ``QuantizeLinear(x, s, 0) -> Clip(lo, hi) -> DequantizeLinear(s, 0)`` (no Clip when the
  grid is the whole code type). QuantizeLinear rounds ``x / s`` half to even and clamps, which is Quant's
  ``round(clip(x / s))`` because the bounds are integers.
- a grid narrower than its 16-bit code type: onnxruntime has no 16-bit Clip, so ``Div(x, s) -> Clip(lo, hi)``
  (exact in float) goes before ``QuantizeLinear(1, 0)``, as in the next form.
- any other rounding mode or a non-zero zero point: Quant computes ``round_mode(f32(x / s + z))``, which
  QuantizeLinear's ``round(x / s) + z`` does not (the float32 sum can land on a tie). The float prefix is written
  out: ``Div(x, s) [-> Add(z)] [-> rounding ops] -> QuantizeLinear(1, 0) -> Clip -> DequantizeLinear(s, z)``.
- a constant input (weights) in the ``qdq`` style: its codes are computed here and stored, ``codes ->
  DequantizeLinear(s, z)`` (onnxruntime's layout); the ``qcdq`` style keeps the float weights and the chain. A
  constant of 17 to 32 bits with zero point 0 (a bias) is stored as int32 codes in both styles.

``BipolarQuant(x, s)`` and the 1-bit signed Quant (the sign function) take their integer form
``Where(x >= 0, 1, -1) (int32) -> DequantizeLinear(s)`` (the Quant tests ``x / s >= 0``). A node outside these limits is refused with one line naming
it (a run-time parameter, more than 16 bits, a scale that is not positive or varies along several axes, a
fractional zero point).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.errors import UnsupportedOpError
from qpass.ir.builder import GraphBuilder
from qpass.ir.datatypes import IntType
from qpass.ops import BipolarQuant, Quant
from qpass.ops.base import const_value, scalar
from qpass.ops.rounding import lower_rounding, round_array
from .grid import MAX_BITS, full_range, rank_of, scale_axis, storage_dtype

STYLES = ("qcdq", "qdq")


def _refuse(node, why: str):
    raise UnsupportedOpError(f"{node.op} node {node.name!r} has no exact QuantizeLinear/DequantizeLinear form: {why}")


def _scale(node, s, x) -> int | None:
    """The per-axis axis of a positive finite scale (None: per tensor), or a refusal."""
    if s is None:
        _refuse(node, "its scale is computed at run time")
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        _refuse(node, "its scale is not positive and finite")
    axis = scale_axis(s, rank_of(x))
    if axis == "no":
        _refuse(node, f"its scale (shape {list(np.shape(s))}) does not vary along exactly one axis of the input")
    return axis


def _zero_point(node, z, s, x, axis) -> np.ndarray:
    """The zero point (float64, its own broadcast shape): integral, per tensor or along the scale's axis."""
    if z is None:
        _refuse(node, "its zero point is computed at run time")
    z = np.asarray(z, np.float64)
    if np.any(z != np.round(z)):
        _refuse(node, "its zero point is not an integer")
    if z.size != 1 and (axis is None or z.size != np.size(s) or scale_axis(z, rank_of(x)) != axis):
        _refuse(node, "its zero point varies differently from its scale")
    return z


def _onnx_param(v: np.ndarray, axis, n: int, dtype) -> np.ndarray:
    """A Q/DQ parameter: a scalar per tensor, else ``n`` values along the axis."""
    v = np.asarray(v).reshape(-1)
    return np.broadcast_to(v, (n,)).astype(dtype) if axis is not None else v[:1].reshape(()).astype(dtype)


def convert_quant(b: GraphBuilder, node: gs.Node, out: gs.Tensor, style: str) -> str | None:
    """Write the Q/C/DQ form of the Quant ``node`` (detached by the caller) into ``out``; the datatype of the stored
    codes when they are a constant (for the qonnx annotation), else None."""
    x, s_t, z_t, bw_t = node.inputs[:4]
    s, z, bw = const_value(s_t), const_value(z_t), const_value(bw_t)
    if bw is None:
        _refuse(node, "its bit width is computed at run time")
    bits = scalar(bw)
    stored = isinstance(x, gs.Constant) and (style == "qdq" or bits > MAX_BITS)
    axis = _scale(node, s, x)
    z = _zero_point(node, z, s, x, axis)
    if bits != int(bits) or not 1 <= bits <= (32 if stored and np.all(z == 0) else MAX_BITS):
        _refuse(node, f"{bits:g} bits (ONNX's integer codes hold at most {MAX_BITS}, int32 for a constant with "
                      "zero point 0)")
    if Quant.is_sign(node, bits):
        if np.any(z != 0):
            _refuse(node, "a 1-bit signed Quant with a non-zero zero point")
        return _bipolar_form(b, node, out, x, s, axis, style)
    lo, hi = Quant.grid(node, int(bits))
    dt = storage_dtype(min(lo, int(z.min())), max(hi, int(z.max()))) if bits <= MAX_BITS else np.dtype(np.int32)
    if dt is None:
        _refuse(node, f"its grid [{lo}, {hi}] with zero point {int(z.min())} fits no 8- or 16-bit code type")
    mode = Quant.attr(node, "rounding_mode")
    s32, z32, n = np.asarray(s, np.float32), z.astype(np.float32), np.size(s)
    attrs = {"axis": int(axis)} if axis is not None else {}
    # onnxruntime has no 16-bit Clip: a narrower grid in 16-bit codes is clipped in float, before QuantizeLinear
    float_clip = dt.itemsize == 2 and (lo, hi) != full_range(dt)
    if stored:
        v = (np.asarray(x.values, np.float32) / s32 + z32).astype(np.float32)
        q = b.const(round_array(np.clip(v, np.float32(lo), np.float32(hi)), mode).astype(dt), dt)
    elif mode in ("ROUND", "HALF_EVEN") and np.all(z == 0) and not float_clip:
        q = b.op("QuantizeLinear", [x, b.const(_onnx_param(s32, axis, n, np.float32)),
                                    b.const(_onnx_param(0, axis, n, dt), dt)], attrs, dtype=dt)
    else:
        u = b.op("Div", [x, b.const(s32)])
        if np.any(z != 0):
            u = b.op("Add", [u, b.const(z32)])
        if mode not in ("ROUND", "HALF_EVEN"):
            u = lower_rounding(b, u, mode)
        if float_clip:
            u = b.op("Clip", [u, b.const(np.float32(lo)), b.const(np.float32(hi))])
        q = b.op("QuantizeLinear", [u, b.const(np.float32(1.0)), b.const(dt.type(0), dt)], dtype=dt)
    if not isinstance(q, gs.Constant) and not float_clip and (lo, hi) != full_range(dt):
        q = b.op("Clip", [q, b.const(lo, dt), b.const(hi, dt)], dtype=dt)
    b.op("DequantizeLinear", [q, b.const(_onnx_param(s32, axis, n, np.float32)),
                              b.const(_onnx_param(z, axis, n, dt), dt)], attrs, out=out)
    return IntType(lo, hi).name if isinstance(q, gs.Constant) else None


def convert_bipolar(b: GraphBuilder, node: gs.Node, out: gs.Tensor, style: str) -> str | None:
    x, s_t = node.inputs[:2]
    s = const_value(s_t)
    return _bipolar_form(b, node, out, x, s, _scale(node, s, x), style)


def _bipolar_form(b, node, out, x, s, axis, style: str) -> str | None:
    """``Where(x >= 0, 1, -1)`` as int32 codes (onnxruntime's Where has no int8), dequantised by ``s``: the values
    of BipolarQuant(x, s). The 1-bit signed Quant (zero point 0) tests ``x / s >= 0``, as it computes (a tiny
    negative ``x`` can divide to -0)."""
    s32 = np.asarray(s, np.float32)
    if isinstance(x, gs.Constant) and style == "qdq":
        v = np.asarray(x.values, np.float32)
        codes = b.const(BipolarQuant.codes(v / s32 if node.op != "BipolarQuant" else v).astype(np.int32), np.int32)
    else:
        t = x if node.op == "BipolarQuant" else b.op("Div", [x, b.const(s32)])
        ge = b.op("GreaterOrEqual", [t, b.const(np.float32(0.0))], dtype=np.bool_)
        codes = b.op("Where", [ge, b.const(np.int32(1), np.int32), b.const(np.int32(-1), np.int32)], dtype=np.int32)
    attrs = {"axis": int(axis)} if axis is not None else {}
    n = np.size(s)
    b.op("DequantizeLinear", [codes, b.const(_onnx_param(s32, axis, n, np.float32)),
                              b.const(_onnx_param(0, axis, n, np.int32), np.int32)], attrs, out=out)
    return "BIPOLAR" if isinstance(codes, gs.Constant) else None


def _single_reader(t, op: str):
    return t.outputs[0] if len(t.outputs) == 1 and t.outputs[0].op == op else None


def convert_round_form(b: GraphBuilder, node: gs.Node) -> bool:
    """``Round(Div(x, s)) -> Quant(scale 1, zero point z, ROUND) -> Mul(s)`` (what ``qdq_to_qonnx`` makes of an
    asymmetric 8-bit QuantizeLinear -> DequantizeLinear) back to ``QuantizeLinear(x, s, z) -> (Clip) ->
    DequantizeLinear(s, z)``: both compute ``clamp(round(x / s), lo - z, hi - z) * s``. False when ``node`` is
    not that."""
    consts = [const_value(t) for t in node.inputs[:4]]
    rnd = node.inputs[0].inputs[0] if node.inputs[0].inputs else None
    div = rnd.inputs[0].inputs[0] if rnd is not None and rnd.op == "Round" and rnd.inputs[0].inputs else None
    mul = _single_reader(node.outputs[0], "Mul")
    if div is None or div.op != "Div" or mul is None or any(c is None or np.size(c) != 1 for c in consts[1:4]) \
            or consts[1].reshape(-1)[0] != 1 or Quant.attr(node, "rounding_mode") not in ("ROUND", "HALF_EVEN") \
            or len(node.inputs[0].outputs) != 1 or len(rnd.outputs[0].outputs) != 1:
        return False
    s, s2 = const_value(div.inputs[1]), const_value(mul.inputs[1])
    z, bits = float(consts[2].reshape(-1)[0]), int(scalar(consts[3]))
    if s is None or s2 is None or np.size(s) != 1 or not np.array_equal(s.reshape(-1), s2.reshape(-1)) \
            or not s.reshape(-1)[0] > 0 or z != round(z) or not 2 <= bits <= 8 or mul.inputs[0] is not node.outputs[0]:
        return False
    lo, hi = Quant.grid(node, bits)
    dt = storage_dtype(min(lo, int(z)), max(hi, int(z)))
    if dt is None or dt.itemsize != 1:
        return False
    out = mul.outputs[0]
    mul.outputs.clear()
    sc = b.const(np.float32(s.reshape(-1)[0]))
    zc = b.const(dt.type(int(z)), dt)
    q = b.op("QuantizeLinear", [div.inputs[0], sc, zc], dtype=dt)
    if (lo, hi) != full_range(dt):
        q = b.op("Clip", [q, b.const(lo, dt), b.const(hi, dt)], dtype=dt)
    b.op("DequantizeLinear", [q, sc, zc], out=out)
    return True
