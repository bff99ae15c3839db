"""Dynamic quantisation: DynamicQuantizeLinear (uint8 codes with a scale and zero point chosen from the tensor
itself, as onnxruntime computes them in ``GetQuantizationParameter``: the range widened to include 0,
``scale = (max - min) / 255`` in float32 (1 when the range is empty), ``zero_point = rne(clamp(-min / scale, 0,
255))``, then QuantizeLinear) and com.microsoft's DynamicQuantizeLSTM, whose matrix products quantise their
float input that way."""
from __future__ import annotations

import numpy as np

from ..numerics import quantize_linear
from ..registry import register
from .recurrent import _jit, _prepared, check_recurrent, run_recurrent

F32 = np.float32


def dynamic_quant_params(x: np.ndarray) -> tuple[np.float32, np.uint8]:
    x = np.asarray(x, F32)
    if not x.size:
        return F32(1), np.uint8(0)
    scale, zp = params_per_slice(x.reshape(1, -1))
    return F32(scale[0, 0]), np.uint8(zp[0, 0])


def params_per_slice(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`dynamic_quant_params` of every ``x[i]`` (non-empty) at once: float32 scales and zero points (as
    float32 integers) shaped (len(x), 1, ...) to broadcast against ``x``."""
    axes = tuple(range(1, x.ndim))
    lo = np.minimum(x.min(axis=axes, keepdims=True), F32(0))
    hi = np.maximum(x.max(axis=axes, keepdims=True), F32(0))
    scale = np.where(hi == lo, F32(1), (hi - lo) / F32(255)).astype(F32)
    zp = np.rint(np.clip(F32(0) - lo / scale, F32(0), F32(255)))
    return scale, zp


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(node, x):
    scale, zp = dynamic_quant_params(x)
    return quantize_linear(x, scale, zp, np.uint8, None), np.asarray(scale, F32), np.asarray(zp, np.uint8)


def quantized_gemm(a: np.ndarray, w64: np.ndarray, w_scale) -> np.ndarray:
    """a (M, K) float32 @ 8-bit weights as onnxruntime's recurrent kernels compute it: ``a`` quantised dynamically
    to uint8, an exact integer product with ``w64`` (K, N: the weight codes minus their zero points, ``_centred``),
    scaled by a_scale * w_scale (per tensor or per column) in float32. With a leading axis on ``a`` (D, M, K),
    ``w64`` (D, K, N) and ``w_scale`` (D, 1 or N): every ``a[d]`` quantised with its own parameters, as D calls."""
    stacked = a.ndim == 3
    jit = _jit() if stacked else None
    fast = jit.dq_centred(a) if jit is not None else None  # compiled: the same codes and scales
    if fast is not None:
        codes, a_scale = fast
        w_scale = np.asarray(w_scale, F32)[:, None, :]
        acc = codes.astype(w64.dtype, copy=False) @ w64  # exact integers (see _centred)
        return acc.astype(F32) * (a_scale * w_scale).astype(F32)
    if stacked:
        a_scale, a_zp = params_per_slice(np.asarray(a, F32))
        w_scale = np.asarray(w_scale, F32)[:, None, :]
    else:
        a_scale, a_zp = dynamic_quant_params(a)
    aq = quantize_linear(a, a_scale, a_zp.astype(np.uint8), np.uint8, None)
    acc = (aq.astype(w64.dtype) - np.asarray(a_zp).astype(w64.dtype)) @ w64  # exact integers (see _centred)
    return acc.astype(F32) * (a_scale * np.asarray(w_scale, F32)).astype(F32)


def _centred(codes: np.ndarray, zero_point: np.ndarray) -> np.ndarray:
    """Weight codes (K, N) minus their zero points (per tensor or per column), once per node call: float32 when
    every partial sum of K products of 8-bit codes (|.| <= 255) stays below 2^24 (exact in any order), else
    float64 (exact below 2^53)."""
    dt = F32 if codes.shape[0] * 255 * 255 < 2 ** 24 else np.float64
    return (codes.astype(np.float64) - np.asarray(zero_point, np.float64)).astype(dt)


def _check_dq_lstm(ex, node):
    return check_recurrent(node)


@register("DynamicQuantizeLSTM", domain="com.microsoft", check=_check_dq_lstm, with_executor=True)
def dynamic_quantize_lstm(ex, node, x, w, r, b=None, lens=None, h0=None, c0=None, p=None, w_scale=None,
                          w_zero_point=None, r_scale=None, r_zero_point=None):
    """com.microsoft's LSTM with 8-bit weights W (D, I, 4H) and R (D, H, 4H), scales and zero points per
    direction (D,) or per direction and column (D, 4H): every matrix product through :func:`quantized_gemm`, the
    gates as ONNX LSTM. The centred weights are prepared once per executor (while the same arrays come back)."""
    d = w.shape[0]
    ws, wz, rs, rz = (np.asarray(v).reshape(d, -1) for v in (w_scale, w_zero_point, r_scale, r_zero_point))
    # keyed on the weight array and the zero points' values (small: one per direction or per column)
    w_c = _prepared(ex, node, "dq_w" + wz.tobytes().hex(), w, lambda v: [_centred(v[k], wz[k]) for k in range(d)])
    r_c = _prepared(ex, node, "dq_r" + rz.tobytes().hex(), r, lambda v: [_centred(v[k], rz[k]) for k in range(d)])

    def products(k):
        w64, r64, rsk = w_c[k], r_c[k], rs[k]

        def recurrent(h, lo, hi):  # only the gate columns asked for (the scales and zero points are per column)
            return quantized_gemm(h, r64[:, lo:hi], rsk if rsk.size == 1 else rsk[lo:hi])

        return (lambda a: quantized_gemm(a, w64, ws[k]), recurrent)

    r_all = _prepared(ex, node, "dq_r_all" + rz.tobytes().hex(), r, lambda v: np.stack(r_c))  # every direction's step at once

    def recur(h, xp_t):
        return xp_t + quantized_gemm(h, r_all, rs)

    return run_recurrent(node, np.asarray(x, F32), r.shape[1], b, lens, h0, c0, p, products, recur)
