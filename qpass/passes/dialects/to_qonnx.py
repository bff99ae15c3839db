"""ONNX QuantizeLinear -> (Clip) -> DequantizeLinear chains and stored codes -> QONNX quantisers, bit-identically.

- stored codes ``DequantizeLinear(c, s, z)`` read as a linear layer's weight (8/16 bits): ``Quant(W, s, z, bits)``
  over the dequantised constant ``W`` (exact: ``W / s + z`` rounds back to ``c``); the grid is the code type's, or
  the qonnx datatype annotation of the codes when it holds them (``INT4``, ``BIPOLAR`` -> ``BipolarQuant``). Other
  stored codes (int32 biases, batch-norm parameters) become their float values.
- ``QuantizeLinear(x, s, z) -> Clip(a, b) -> DequantizeLinear(s, z)``: onnxruntime computes
  ``clamp(round(x / s), lo - z, hi - z) + z``, so the QONNX form has zero point 0 and the centred grid
  ``[lo - z, hi - z]`` (``lo, hi`` = the code type's range narrowed by the Clip). When that is a QONNX grid
  (uint8 with z = 0 or 128, int8 with z = 0 or -128, any Clip to a 2..16-bit grid) it is one ``Quant``. Otherwise
  (a zero point in the Quant would round ``f32(x / s + z)``, not ``round(x / s) + z``): per tensor
  ``Round(Div(x, s)) -> Quant(1, z) -> Mul(s)`` on the code type's grid; per axis a ``Max`` / ``Min`` to
  ``[f32((lo - z) * s), f32((hi - z) * s)]`` before a Quant on the narrowest grid holding the ranges.
- the forms ``to_qcdq`` writes for other rounding modes and zero points (``Div -> Add -> rounding ->
  QuantizeLinear(1, 0) -> Clip -> DequantizeLinear``) and the bipolar integer form (``Where(x >= 0, 1, -1) ->
  DequantizeLinear``) come back as the Quant / BipolarQuant they were.

A DequantizeLinear with run-time parameters (dynamic quantisation) is left as it is.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ir.builder import GraphBuilder
from qpass.ir.datatypes import int_type_from_name
from qpass.ops import DequantizeLinear, QuantizeLinear
from qpass.ops.base import const_value as const
from qpass.ops.common import LINEAR_OPS, QONNX_DOMAIN
from qpass.reference.numerics import dequantize_linear
from .grid import containing_grid, full_range, grid_of, per_axis_shape, rank_of

ROUNDING_OPS = {"Floor": "FLOOR", "Ceil": "CEIL"}


def _params(node, rank):
    """(scale f32, zero point int64, code dtype, axis) of a constant-parameter Q or DQ node, else None."""
    s = const(node.inputs[1]) if len(node.inputs) > 1 else None
    if s is None or rank is None:
        return None
    z = const(node.inputs[2]) if len(node.inputs) > 2 and node.inputs[2].name else None
    dt = QuantizeLinear.code_dtype(node, z)
    if z is None:
        z = np.zeros(np.shape(s), dt)
    if dt not in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int16), np.dtype(np.uint16), np.dtype(np.int32)):
        return None
    axis = QuantizeLinear.axis(node, rank) if np.size(s) > 1 else None
    return np.asarray(s, np.float32), np.asarray(z).astype(np.int64), dt, axis


def _quant(b: GraphBuilder, x, out, scale, zp, grid, mode="ROUND") -> gs.Node:
    bits, signed, narrow = grid
    n = b.node("Quant", [x, b.const(scale, np.float32), b.const(zp, np.float32), b.const(np.float32(bits))], [out],
               {"signed": int(signed), "narrow": int(narrow), "rounding_mode": mode}, domain=QONNX_DOMAIN,
               name=f"{out.name}_Quant")
    return n


def _shaped(v, axis, rank):
    v = np.asarray(v)
    return v.reshape(per_axis_shape(v.size, axis, rank)) if axis is not None and v.size > 1 else v.reshape(-1)[0]


def convert_dq(b: GraphBuilder, dq: gs.Node, annotations: dict[str, str]) -> str | None:
    """Replace ``dq`` (and make its Q / Clip dead) by the QONNX quantiser computing the same values; None when
    done, else why it stays."""
    codes, out = dq.inputs[0], dq.outputs[0]
    rank = rank_of(out) or rank_of(codes)
    p = _params(dq, rank)
    if p is None:
        return "run-time or unsupported scale / zero point"
    s, z, dt, axis = p
    if isinstance(codes, gs.Constant):
        _constant(b, dq, s, z, dt, axis, rank, annotations.get(codes.name))
        return None
    src = codes.inputs[0] if codes.inputs else None
    clip = None
    if src is not None and src.op == "Clip":
        clip, codes = src, src.inputs[0]
        src = codes.inputs[0] if codes.inputs else None
    if src is not None and src.op == "Where" and dt in (np.dtype(np.int8), np.dtype(np.int32)) and clip is None:
        return _bipolar(b, dq, src, s, z, axis, rank)
    if src is None or src.op != "QuantizeLinear" or QuantizeLinear.check(src):
        return "its codes do not come from a QuantizeLinear"
    qp = _params(src, rank_of(src.inputs[0]) or rank)
    lo, hi = full_range(dt)
    if clip is not None:
        cb = [const(t) if t is not None and t.name else None for t in clip.inputs[1:3]] + [None, None]
        if any(v is not None and v.size != 1 for v in cb[:2]):
            return "its Clip bounds are not scalars"
        lo = lo if cb[0] is None else max(lo, int(np.ceil(float(cb[0]))))
        hi = hi if cb[1] is None else min(hi, int(np.floor(float(cb[1]))))
    if qp is None or qp[2] != dt:
        return "its QuantizeLinear has run-time parameters or another code type"
    if np.size(qp[0]) == 1 and qp[0].reshape(-1)[0] == 1 and np.all(qp[1] == 0) and not np.all(s == 1):
        return _prefix(b, dq, src, s, z, axis, rank, lo, hi)
    if qp[3] != axis or not np.array_equal(qp[0].reshape(-1), s.reshape(-1)) or \
            not np.array_equal(np.broadcast_to(qp[1].reshape(-1), (np.size(s),)),
                               np.broadcast_to(z.reshape(-1), (np.size(s),))):
        return "QuantizeLinear and DequantizeLinear parameters differ"
    _standard(b, dq, src.inputs[0], s, z, axis, rank, lo, hi)
    return None


def _standard(b, dq, x, s, z, axis, rank, lo, hi) -> None:
    out = dq.outputs[0]
    dq.outputs = []
    zc = np.broadcast_to(z.reshape(-1), (np.size(s),)).astype(np.int64)
    grid = grid_of(lo - int(zc[0]), hi - int(zc[0])) if np.all(zc == zc[0]) else None
    if grid is not None:
        _quant(b, x, out, _shaped(s, axis, rank), np.float32(0), grid)
    elif axis is None:
        _round_form(b, x, out, s, int(zc[0]), lo, hi)
    else:  # per-axis asymmetric centred ranges: clip to them first, on the narrowest grid holding them
        lo_c, hi_c = lo - zc, hi - zc
        bits, signed = containing_grid(int(lo_c.min()), int(hi_c.max()))
        a, c = (lo_c * s.reshape(-1)).astype(np.float32), (hi_c * s.reshape(-1)).astype(np.float32)
        _check_bounds(a, s, lo_c)
        _check_bounds(c, s, hi_c)
        x = b.op("Min", [b.op("Max", [x, b.const(_shaped(a, axis, rank))]), b.const(_shaped(c, axis, rank))])
        _quant(b, x, out, _shaped(s, axis, rank), np.float32(0), (bits, signed, False))


def _round_form(b, x, out, s, z: int, lo: int, hi: int) -> None:
    """``Round(x / s) -> Quant(scale 1, zero point z) -> Mul(s)``: onnxruntime's ``clamp(round(x / s), lo - z,
    hi - z)`` exactly (the Quant adds and removes z on integers) on the code type's own grid, its output integer
    codes that streamlining reads directly."""
    sv = np.float32(s.reshape(-1)[0])
    u = b.op("Round", [b.op("Div", [x, b.const(sv)])])
    codes = b.var(f"{out.name}_codes", out)
    _quant(b, u, codes, np.float32(1.0), np.float32(z), grid_of(lo, hi))
    b.node("Mul", [codes, b.const(sv)], [out], name=f"{out.name}_Mul")


def _check_bounds(v, s, want) -> None:
    got = np.round(np.asarray(v, np.float32) / np.asarray(s, np.float32).reshape(-1))
    assert np.array_equal(got, want.astype(np.float32)), "clip bound does not round back to its code"


def _constant(b, dq, s, z, dt, axis, rank, annotation) -> None:
    codes = np.asarray(dq.inputs[0].values)
    out = dq.outputs[0]
    dq.outputs = []
    values = dequantize_linear(codes, s, z, axis).astype(np.float32)
    if dt == np.dtype(np.int32) or not any(c.op in LINEAR_OPS and len(c.inputs) > 1 and c.inputs[1] is out
                                           for c in out.outputs):
        out.to_constant(values)  # a bias or a batch-norm parameter: its float values, as DequantizeLinear gives
        return
    w = b.const(values, name=f"{out.name}_float")
    it = int_type_from_name(annotation) if annotation else None
    if annotation == "BIPOLAR" and np.all(np.abs(codes.astype(np.int64) - z) == 1):  # BipolarQuant's codes
        b.node("BipolarQuant", [w, b.const(_shaped(s, axis, rank))], [out], domain=QONNX_DOMAIN,
               name=f"{out.name}_BipolarQuant")
        return
    lo, hi = full_range(dt)
    if it is not None and it.lo <= codes.min() and codes.max() <= it.hi and grid_of(it.lo, it.hi):
        lo, hi = it.lo, it.hi
    _quant(b, w, out, _shaped(s, axis, rank), _shaped(z.astype(np.float32), axis, rank) if np.any(z) else
           np.float32(0), grid_of(lo, hi))


def _bipolar(b, dq, where, s, z, axis, rank) -> str | None:
    """``Where(x >= 0, 1, -1) -> DQ(s)`` -> BipolarQuant(x, s); ``Where(Div(x, s) >= 0, ...)`` -> the 1-bit Quant."""
    ge = where.inputs[0].inputs[0] if where.inputs[0].inputs else None
    t, f = const(where.inputs[1]), const(where.inputs[2])
    if ge is None or ge.op != "GreaterOrEqual" or np.any(z != 0) or t is None or f is None or \
            np.any(t != 1) or np.any(f != -1) or const(ge.inputs[1]) is None or np.any(const(ge.inputs[1]) != 0):
        return "its codes do not come from a QuantizeLinear"
    x = ge.inputs[0]
    div = x.inputs[0] if x.inputs and x.inputs[0].op == "Div" else None
    sd = const(div.inputs[1]) if div is not None else None
    out = dq.outputs[0]
    dq.outputs = []
    if sd is not None and np.array_equal(np.asarray(sd, np.float32).reshape(-1), s.reshape(-1)):
        _quant(b, div.inputs[0], out, _shaped(s, axis, rank), np.float32(0), (1, True, False))
        return None
    b.node("BipolarQuant", [x, b.const(_shaped(s, axis, rank))], [out], domain=QONNX_DOMAIN,
           name=f"{out.name}_BipolarQuant")
    return None


def _prefix(b, dq, q, s, z, axis, rank, lo, hi) -> str | None:
    """``Div(x, s) [-> Add(z)] [-> rounding] -> QuantizeLinear(1, 0) -> Clip -> DQ(s, z)`` -> Quant(x, s, z)."""
    u = q.inputs[0]
    c = u.inputs[0] if u.inputs else None
    if c is not None and c.op == "Clip" and all(const(t) is not None and const(t).size == 1 for t in c.inputs[1:3]):
        lo, hi = max(lo, int(np.ceil(float(const(c.inputs[1]))))), min(hi, int(np.floor(float(const(c.inputs[2])))))
        u = c.inputs[0]
    mode, u = _rounding_of(u)
    grid = grid_of(lo, hi)
    p = u.inputs[0] if u.inputs else None
    zq = np.float32(0)
    if p is not None and p.op == "Add" and const(p.inputs[1]) is not None:
        zq, u = const(p.inputs[1]).astype(np.float32), p.inputs[0]
        p = u.inputs[0] if u.inputs else None
    if p is None or p.op != "Div" or const(p.inputs[1]) is None or grid is None:
        return "a QuantizeLinear with scale 1 after an unrecognised float computation"
    sq = const(p.inputs[1]).astype(np.float32)
    if not (np.array_equal(sq.reshape(-1), s.reshape(-1)) and
            np.array_equal(np.broadcast_to(np.asarray(zq).reshape(-1), (np.size(s),)),
                           np.broadcast_to(z.reshape(-1), (np.size(s),)).astype(np.float32))):
        return "the float prefix's scale or zero point differs from the DequantizeLinear's"
    out = dq.outputs[0]
    dq.outputs = []
    _quant(b, p.inputs[0], out, sq, zq, grid, mode)
    return None


def _rounding_of(u) -> tuple[str, gs.Tensor]:
    """(rounding mode, the tensor before the rounding ops ``lower_rounding`` writes); ROUND when there are none."""
    p = u.inputs[0] if u.inputs else None
    if p is not None and p.op in ROUNDING_OPS:
        return ROUNDING_OPS[p.op], p.inputs[0]
    if p is None or p.op != "Mul" or len(p.inputs) != 2:
        return "ROUND", u
    sign, r = (n.inputs[0] if n.inputs else None for n in p.inputs)
    if sign is None or r is None or sign.op != "Sign" or r.op not in ("Floor", "Ceil"):
        return "ROUND", u
    x = sign.inputs[0]
    inner = r.inputs[0].inputs[0] if r.inputs[0].inputs else None
    if inner is not None and inner.op == "Abs":
        return ("DOWN" if r.op == "Floor" else "UP"), x
    if inner is not None and inner.op in ("Add", "Sub") and inner.inputs[0].inputs and \
            inner.inputs[0].inputs[0].op == "Abs":
        return ("HALF_UP" if inner.op == "Add" else "HALF_DOWN"), x
    return "ROUND", u


__all__ = ["convert_dq", "DequantizeLinear"]
