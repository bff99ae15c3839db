"""onnxruntime's MLAS float32 kernels as they run on x86-64 with FMA3 (and AVX / AVX512F), bit for bit.

Where onnxruntime computes a float op with its own MLAS kernel, the result is not the correctly rounded one:
the logistic and tanh functions are rational approximations evaluated with fused multiply-adds, and the
single-precision GEMM sums its products in an order fixed by the kernel. A float op between a DequantizeLinear
and a QuantizeLinear computed any other way moves a code by one step now and then, so the reference reproduces
these kernels exactly (checked against onnxruntime in tests/test_reference_mlas.py):

- :func:`logistic` / :func:`tanh`: ``MlasComputeLogistic`` / ``MlasComputeTanh`` (the FMA3 kernels): clamp the
  input, odd / even polynomials in x^2 by Horner's rule with one rounding per multiply-add, one division.
- :func:`sgemm`: ``MlasGemm`` single-threaded: for M = 1 the AVX kernels (``MlasSgemmKernelM1Avx``: products summed
  4 rows of B at a time, no FMA; ``...M1TransposeBAvx``: 8 lane sums, no FMA, then a fixed reduction tree), else
  the packing FMA kernel: per output one FMA chain over each K block (K blocks of 128 adapted to the shape, 256
  for weights onnxruntime packed at load time), the blocks added to C in order.
"""
from __future__ import annotations

import numpy as np

from .numerics import fma32

F32 = np.float32

_LOGISTIC = tuple(F32(v) for v in (
    -18.0, 18.0,
    4.37031012579801e-11, 1.15627324459942e-07, 6.08574864600143e-05, 8.51377133304701e-03, 2.48287947061529e-01,
    6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03, 1.16817656904453e-01,
    9.93151921023180e-01))
_TANH = tuple(F32(v) for v in (
    -9.0, 9.0,
    -2.76076847742355e-16, 2.00018790482477e-13, -8.60467152213735e-11, 5.12229709037114e-08,
    1.48572235717979e-05, 6.37261928875436e-04, 4.89352455891786e-03,
    1.19825839466702e-06, 1.18534705686654e-04, 2.26843463243900e-03, 4.89352518554385e-03))


def _horner(v2: np.ndarray, coeffs) -> np.ndarray:
    acc = fma32(v2, coeffs[0], coeffs[1])
    for c in coeffs[2:]:
        acc = fma32(acc, v2, c)
    return acc


def _clamped(x, lo, hi) -> np.ndarray:
    x = np.asarray(x, F32)
    return np.minimum(np.maximum(x, lo), hi)  # NaN stays NaN (np.maximum propagates it)


def logistic(x) -> np.ndarray:
    """``MlasComputeLogistic``: p(x) / q(x) + 0.5 on x clamped to [-18, 18], clamped to [0, 1]."""
    lo, hi = _LOGISTIC[:2]
    v = _clamped(x, lo, hi)
    v2 = v * v
    p = _horner(v2, _LOGISTIC[2:7]) * v
    q = _horner(v2, _LOGISTIC[7:])
    return np.minimum(np.maximum(p / q + F32(0.5), F32(0.0)), F32(1.0))


def tanh(x) -> np.ndarray:
    """``MlasComputeTanh``: p(x) / q(x) on x clamped to [-9, 9]."""
    lo, hi = _TANH[:2]
    v = _clamped(x, lo, hi)
    v2 = v * v
    p = _horner(v2, _TANH[2:9]) * v
    q = _horner(v2, _TANH[9:])
    return p / q


# ------------------------------------------------------------------ SGEMM

def _strides(n: int, k: int) -> int:
    """The K block of ``MlasSgemmOperation`` (non-packed B): 128, halved (N doubled) while K fits in half of it,
    or doubled while N is small."""
    stride_n, stride_k = 128, 128
    if n >= k:
        while stride_k // 2 >= k:
            stride_n, stride_k = stride_n * 2, stride_k // 2
    else:
        while stride_n > 16 and stride_n // 2 >= n:
            stride_n, stride_k = stride_n // 2, stride_k * 2
    return stride_k


def _fma_chain(a: np.ndarray, bk: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """Per output, ``acc = fma(a[m, k], b[k, n], acc)`` for k in [k0, k1) from acc = 0."""
    acc = np.zeros((a.shape[0], bk.shape[1]), F32)
    for k in range(k0, k1):
        acc = fma32(a[:, k:k + 1], bk[k:k + 1, :], acc)
    return acc


def _m1(a: np.ndarray, b: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    """``MlasSgemmKernelM1Avx``: a (K,), b (K, N); products of 4 (then 2, then 1) rows summed, then added to C."""
    k = a.shape[0]
    out = np.zeros(b.shape[1], F32) if c is None else np.asarray(c, F32).copy()
    i = 0
    for size in [4] * (k // 4) + ([2] if k % 4 >= 2 else []) + ([1] if k % 2 else []):
        t = a[i] * b[i]
        for j in range(1, size):
            t = t + a[i + j] * b[i + j]
        out = t + out
        i += size
    return out


def _m1_transpose_b(a: np.ndarray, b: np.ndarray, c: np.ndarray | None) -> np.ndarray:
    """``MlasSgemmKernelM1TransposeBAvx``: a (K,), b (N, K); 8 lane sums per output, reduced as the kernel does
    for outputs in groups of 4, then 2, then 1, then added to C."""
    n, k = b.shape
    pad = (-k) % 8
    prods = np.concatenate([b * a, np.zeros((n, pad), F32)], axis=1).reshape(n, -1, 8)
    lanes = prods[:, 0, :].copy()
    for g in range(1, prods.shape[1]):
        lanes = lanes + prods[:, g, :]
    l_ = [lanes[:, j] for j in range(8)]
    four = (((l_[0] + l_[1]) + l_[2]) + l_[3]) + (((l_[4] + l_[5]) + l_[6]) + l_[7])
    two = ((l_[0] + l_[2]) + (l_[4] + l_[6])) + ((l_[1] + l_[3]) + (l_[5] + l_[7]))
    one = ((l_[0] + l_[1]) + (l_[2] + l_[3])) + ((l_[4] + l_[5]) + (l_[6] + l_[7]))
    n4 = n - n % 4
    red = np.concatenate([four[:n4], two[n4:n4 + (2 if n % 4 >= 2 else 0)], one[n - n % 2:] if n % 2 else one[:0]])
    return red + (F32(0.0) if c is None else np.asarray(c, F32))


def sgemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, trans_b: bool = False,
          packed: bool = False) -> np.ndarray:
    """``MlasGemm`` with alpha 1: ``a @ b`` (``a @ b.T`` when ``trans_b``), plus ``c`` when given (beta 1).
    ``packed``: B was packed when the session was created (a constant weight of an op that pre-packs)."""
    a = np.asarray(a, F32)
    b = np.asarray(b, F32)
    if a.shape[0] == 1 and not packed:
        cc = None if c is None else np.asarray(c, F32).reshape(-1)
        row = _m1_transpose_b(a[0], b, cc) if trans_b else _m1(a[0], b, cc)
        return row.reshape(1, -1)
    bk = b.T if trans_b else b
    k, n = bk.shape
    stride = 256 if packed else _strides(n, k)
    out = None if c is None else np.asarray(c, F32)
    for k0 in range(0, k, stride):
        acc = _fma_chain(a, bk, k0, min(k, k0 + stride))
        out = acc if out is None else out + acc
    return out if out is not None else np.zeros((a.shape[0], n), F32)
