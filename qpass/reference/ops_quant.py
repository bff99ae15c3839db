"""Quantisation ops: ONNX QuantizeLinear / DequantizeLinear and the QONNX ops Quant, BipolarQuant, Trunc and
MultiThreshold (semantics in /work/shared/anchors.md, section 1).

QONNX ops compute in float32 exactly like the qonnx reference (numpy on float32 arrays); they are registered in
the qonnx domain (also reachable as ``finn.custom_op.general`` / ``onnx.brevitas``) and in the ``qpass`` domain.
"""
from __future__ import annotations

import numpy as np
import onnx

from .numerics import dequantize_linear, quantize_linear
from qpass.ops.common import ROUNDING_MODES, int_bounds, mt_channel_axis
from .registry import QONNX_DOMAIN, QPASS_DOMAIN, register

F32 = np.float32
QDOMAINS = (QONNX_DOMAIN, QPASS_DOMAIN)
Q_DTYPES = (np.int8, np.uint8, np.int16, np.uint16)


def _axis(node, ndim):
    return int(node.attr("axis", 1)) % max(ndim, 1)


def _check_q(node):
    if node.attr("block_size", 0):
        return "blocked quantisation (block_size) is not supported"
    dt = node.attr("output_dtype", 0)
    if dt and onnx.helper.tensor_dtype_to_np_dtype(int(dt)) not in map(np.dtype, Q_DTYPES):
        return f"output_dtype {onnx.TensorProto.DataType.Name(int(dt))} is not supported"
    return None


def q_dtype(node, zero_point):
    if zero_point is not None:
        return np.asarray(zero_point).dtype
    dt = node.attr("output_dtype", 0)
    return onnx.helper.tensor_dtype_to_np_dtype(int(dt)) if dt else np.dtype(np.uint8)


@register("QuantizeLinear", check=_check_q)
def quantize(node, x, scale, zero_point=None):
    dt = q_dtype(node, zero_point)
    if dt not in map(np.dtype, Q_DTYPES):
        raise ValueError(f"QuantizeLinear to {dt} is not supported")
    zp = np.zeros(np.shape(scale), dt) if zero_point is None else zero_point
    return quantize_linear(x.astype(F32), scale, zp, dt, _axis(node, x.ndim))


@register("DequantizeLinear", check=_check_q)
def dequantize(node, x, scale, zero_point=None):
    y = dequantize_linear(x, scale, zero_point, _axis(node, x.ndim))
    sdt = np.asarray(scale).dtype
    return y.astype(sdt) if sdt.kind == "f" and sdt != F32 else y


# ---------------------------------------------------------------- QONNX


def round_mode(y: np.ndarray, mode: str) -> np.ndarray:
    """The seven QONNX rounding modes (``resolve_rounding_mode``)."""
    m = (mode or "ROUND").upper()
    if m in ("ROUND", "HALF_EVEN"):
        return np.round(y)
    if m == "CEIL":
        return np.ceil(y)
    if m == "FLOOR":
        return np.floor(y)
    if m == "UP":  # away from zero
        return np.sign(y) * np.ceil(np.abs(y))
    if m == "DOWN":  # toward zero
        return np.fix(y)
    if m == "HALF_UP":  # half away from zero
        return np.sign(y) * np.floor(np.abs(y) + y.dtype.type(0.5))
    if m == "HALF_DOWN":  # half toward zero
        return np.sign(y) * np.ceil(np.abs(y) - y.dtype.type(0.5))
    raise ValueError(f"unknown rounding mode {mode!r}")


def _check_rounding(node, default="ROUND"):
    m = str(node.attr("rounding_mode", default)).upper()
    if m not in ROUNDING_MODES:
        return f"rounding_mode {m!r} is not one of {', '.join(ROUNDING_MODES)}"
    return None


def _f32(v):
    return np.asarray(v, dtype=F32)


@register("Quant", domain=QDOMAINS, check=_check_rounding)
@register("IntQuant", domain=QDOMAINS, check=_check_rounding)
def quant(node, x, scale, zeropt, bitwidth):
    """y = clamp(x/scale + zeropt, min_int, max_int), rounded, then (y - zeropt) * scale."""
    signed = bool(node.attr("signed", 1))
    narrow = bool(node.attr("narrow", 1))
    x, scale, zeropt = _f32(x), _f32(scale), _f32(zeropt)
    bits = float(np.asarray(bitwidth).reshape(-1)[0])
    y = x / scale + zeropt
    if bits == 1 and signed:  # qonnx's special case for 1-bit signed Quant
        y = np.where(y >= 0, F32(1), F32(-1))
    else:
        lo, hi = int_bounds(int(bits), signed, narrow)
        y = np.clip(y, F32(lo), F32(hi))
        y = round_mode(y, node.attr("rounding_mode", "ROUND"))
    return ((y - zeropt) * scale).astype(F32)


@register("BipolarQuant", domain=QDOMAINS)
def bipolar_quant(node, x, scale):
    return (np.where(_f32(x) >= 0, F32(1), F32(-1)) * _f32(scale)).astype(F32)


@register("Trunc", domain=QDOMAINS, check=lambda n: _check_rounding(n, "FLOOR"))
def trunc(node, x, scale, zeropt, in_bitwidth, *rest):
    """v1 (5 inputs): y = rnd(round(x/s + zp) / 2^(in_bw - out_bw)), out = (y - zp) * s.

    v2 (6 inputs ``out_scale, out_bw``; 7 with an unused ``out_zeropt``): trunc_scale = 2^round(log2(out_scale/s)),
    clamp to the output range (signed / narrow attributes), round, out = (y - zp/trunc_scale) * out_scale.
    """
    mode = node.attr("rounding_mode", "FLOOR")
    x, scale, zeropt = _f32(x), _f32(scale), _f32(zeropt)
    y = np.round(x / scale + zeropt)
    if len(rest) == 1:
        out_bw = _f32(rest[0])
        tscale = (F32(2.0) ** (_f32(in_bitwidth) - out_bw)).astype(F32)
        y = round_mode((y / tscale).astype(F32), mode)
        return ((y - zeropt) * scale).astype(F32)
    out_scale = _f32(rest[0])
    out_bw = int(np.asarray(rest[-1]).reshape(-1)[0])
    tscale = (F32(2.0) ** np.round(np.log2(out_scale / scale))).astype(F32)
    y = (y / tscale).astype(F32)
    lo, hi = int_bounds(out_bw, bool(node.attr("signed", 1)), bool(node.attr("narrow", 0)))
    y = round_mode(np.clip(y, F32(lo), F32(hi)), mode)
    return ((y - zeropt / tscale) * out_scale).astype(F32)


@register("MultiThreshold", domain=QDOMAINS)
def multithreshold(node, x, thresholds):
    """y = out_scale * #{t : x >= T[c, t]} + out_bias (thresholds need not be sorted)."""
    x = np.asarray(x)
    t = np.asarray(thresholds)
    if t.ndim == 1:
        t = t.reshape(1, -1)
    axis = mt_channel_axis(node.attr("data_layout"), x.ndim)
    xm = np.moveaxis(x, axis, -1)  # (..., C)
    count = np.zeros(xm.shape, dtype=np.int64)
    for j in range(t.shape[1]):
        count += xm >= t[:, j]
    count = np.moveaxis(count, -1, axis)
    out_scale = F32(node.attr("out_scale", 1.0))
    out_bias = F32(node.attr("out_bias", 0.0))
    return (out_scale * count.astype(F32) + out_bias).astype(F32)
