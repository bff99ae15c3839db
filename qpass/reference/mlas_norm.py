"""onnxruntime's float32 LayerNormalization as its MLAS AVX2 kernel computes it (``MlasLayerNormKernelAvx2``,
``onnxruntime/core/mlas/lib/layernorm_kernel_avx2.cpp``, the path onnxruntime 1.32 takes on an AVX2 machine for
rows of at least 8 elements), bit for bit (checked against onnxruntime in tests/test_kern15_layer_norm.py):

- mean: a float64 sum of the row (4 lanes, reduced (l0 + l2) + (l1 + l3), the tail added in order) divided by n,
  rounded to float32;
- variance: the centred squares d * d (d = x - mean in float32) summed in float32 by 8 lanes of FMA chains
  ``acc = fma(d, d, acc)``, the lanes reduced (j + j+4, then (r0 + r2) + (r1 + r3)), the tail added by separate
  multiply and add;
- ``inv = 1 / sqrt(var / n + epsilon)`` in float32, ``y = fma((x - mean) * inv, scale, bias)`` (no bias:
  ``(x - mean) * inv * scale``).
"""
from __future__ import annotations

import numpy as np

from .numerics import fma32, suspect

F32, F64 = np.float32, np.float64
MIN_ROW = 8  # shorter rows: onnxruntime's scalar fallback (not reproduced bit for bit)


def layer_norm_avx2(x, scale, bias, axis: int, epsilon: float):
    """(y, mean, inv) of a float32 LayerNormalization over the axes from ``axis`` on (rows of >= ``MIN_ROW``),
    mean and inv of shape ``x.shape[:axis] + (1,) * (ndim - axis)``."""
    x = np.asarray(x, F32)
    axis %= max(x.ndim, 1)
    rows = int(np.prod(x.shape[:axis], dtype=np.int64))
    n = int(np.prod(x.shape[axis:], dtype=np.int64))
    v = x.reshape(rows, n)
    mean = (_lane_sum(v.astype(F64), 4) / F64(n)).astype(F32)
    d = v - mean[:, None]
    body = n - n % 8
    r = square_chains(d[:, :body].reshape(rows, -1, 8))
    r = r[:, :4] + r[:, 4:]
    var = (r[:, 0] + r[:, 2]) + (r[:, 1] + r[:, 3])
    for i in range(body, n):
        var = var + d[:, i] * d[:, i]
    inv = F32(1.0) / np.sqrt(var / F32(n) + F32(epsilon))
    t = d * inv[:, None]
    g = np.asarray(scale, F32).reshape(1, n)
    y = t * g if bias is None else fma32(t, g, np.asarray(bias, F32).reshape(1, n))
    stat_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
    return y.reshape(x.shape), mean.reshape(stat_shape), inv.reshape(stat_shape)


def _lane_sum(v: np.ndarray, lanes: int) -> np.ndarray:
    """Row sums of ``v`` (rows, n) as a ``lanes``-wide vector loop computes them: lane j sums elements j, j + lanes,
    ... in order, the lanes are reduced pairwise from the halves ((l0 + l2) + (l1 + l3) for 4), then the tail is
    added in order."""
    n = v.shape[1]
    body = n - n % lanes
    acc = v[:, :body].reshape(v.shape[0], -1, lanes)
    total = np.zeros((v.shape[0], lanes), v.dtype)
    for k in range(acc.shape[1]):
        total += acc[:, k]
    while total.shape[1] > 1:
        h = total.shape[1] // 2
        total = total[:, :h] + total[:, h:]
    out = total[:, 0]
    for i in range(body, n):
        out = out + v[:, i]
    return out


def square_chains(d: np.ndarray) -> np.ndarray:
    """(rows, lanes) float32: per row and lane, ``acc = fma(d[k], d[k], acc)`` over the steps k of ``d`` (rows,
    steps, lanes) from acc = 0. Each step is the float64 sum of acc and the exact square, rounded to float32: the
    single rounding of the FMA except at float32 midpoints or subnormals of an inexact sum (``numerics.suspect``);
    rows with such a step are redone with ``fma32``."""
    rows, steps, lanes = d.shape
    sq = d.astype(F64)
    sq *= sq  # exact: 48 significant bits
    acc = np.zeros((rows, lanes), F32)
    acc64 = np.zeros((rows, lanes), F64)
    bad = np.zeros(rows, bool)
    for k in range(steps):
        s = acc64 + sq[:, k]
        acc[...] = s
        bad |= suspect(s).any(axis=1)
        acc64[...] = acc
    if bad.any():
        sub = d[bad]
        a = np.zeros((sub.shape[0], lanes), F32)
        for k in range(steps):
            a = fma32(sub[:, k], sub[:, k], a)
        acc[bad] = a
    return acc
