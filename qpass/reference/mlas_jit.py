"""Compiled versions of the MLAS kernels the recurrent ops run per time step (optional: needs ``numba``, the
``fast`` extra; importing this module without it raises ImportError and the callers keep the numpy emulation).

Bit for bit the same numbers as ``qpass.reference.mlas``: every multiply-add is LLVM's ``fma`` on float32 (one
IEEE rounding, the very operation MLAS's ``vfmadd`` kernels perform and ``numerics.fma32`` emulates), every other
operation a plain float32 one in the same order. Only the speed differs: one compiled loop instead of three numpy
calls per chain step. tests/test_rec15_jit.py compares both paths on random and edge-case inputs.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .mlas import _LOGISTIC, _TANH, _strides

F32 = np.float32


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 fused multiply-add (llvm.fma.f32: one rounding; vfmadd on FMA3 hardware)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@njit(nogil=True)
def _gemm(a, b, out, has_c, stride):
    """out[d, m, :] (= c, or unset when not has_c) plus, per K block of ``stride``, one FMA chain per output
    from 0 over a[d, m, k0:k1] * b[d, k0:k1, :]; the blocks added to out in order (the first one is out when
    there is no c)."""
    dd, mm, kk = a.shape
    nn = b.shape[2]
    acc = np.empty(nn, np.float32)
    for d in range(dd):
        for m in range(mm):
            for k0 in range(0, kk, stride):
                acc[:] = 0
                for k in range(k0, min(kk, k0 + stride)):
                    av = a[d, m, k]
                    for n in range(nn):
                        acc[n] = _fma(av, b[d, k, n], acc[n])
                if k0 == 0 and not has_c:
                    out[d, m, :] = acc
                else:
                    for n in range(nn):
                        out[d, m, n] = out[d, m, n] + acc[n]


def packed_gemm(a: np.ndarray, bk: np.ndarray, c: np.ndarray | None = None, stride: int | None = 256) -> np.ndarray:
    """``mlas.packed_gemm`` of a (M, K) or (D, M, K) and a float32 B ``bk`` (K, N) or (D, K, N) (not an Operand),
    plus ``c`` (broadcast to the output) when given."""
    a = np.asarray(a, F32)
    flat = a.ndim == 2 and bk.ndim == 2
    a3 = a[None] if a.ndim == 2 else a
    b3 = bk[None] if bk.ndim == 2 else bk
    d = max(a3.shape[0], b3.shape[0])
    a3, b3 = (v if v.shape[0] == d and v.flags.c_contiguous and v.dtype == F32
              else np.ascontiguousarray(np.broadcast_to(v, (d,) + v.shape[1:]), F32) for v in (a3, b3))
    k, n = b3.shape[1:]
    shape = (d, a3.shape[1], n)
    out = np.zeros(shape, F32) if c is None else np.array(np.broadcast_to(np.asarray(c, F32), shape))
    if k:
        _gemm(a3, b3, out, c is not None, _strides(n, k) if stride is None else stride)
    return out[0] if flat else out


def _coeffs(table, split):
    return np.array(table[2:split], F32), np.array(table[split:], F32)


_LOG_P, _LOG_Q = _coeffs(_LOGISTIC, 7)
_TANH_P, _TANH_Q = _coeffs(_TANH, 9)


@njit(nogil=True)
def _odd_over_even(x, lo, hi, p, q, logistic, out):
    """mlas._odd_over_even (and, with ``logistic``, + 0.5 clamped to [0, 1]) of every element; NaN stays NaN."""
    for i in range(x.size):
        v = x[i]
        if v < lo:
            v = lo
        if v > hi:
            v = hi
        v2 = v * v
        ps = _fma(v2, p[0], p[1])
        for j in range(2, p.size):
            ps = _fma(ps, v2, p[j])
        qs = _fma(v2, q[0], q[1])
        for j in range(2, q.size):
            qs = _fma(qs, v2, q[j])
        r = (ps * v) / qs
        if logistic:
            r = r + np.float32(0.5)
            if r < np.float32(0.0):
                r = np.float32(0.0)
            if r > np.float32(1.0):
                r = np.float32(1.0)
        out[i] = r


def _apply(x, table, p, q, logistic: bool) -> np.ndarray:
    x = np.asarray(x, F32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, F32)
    _odd_over_even(flat, table[0], table[1], p, q, logistic, out)
    return out.reshape(x.shape)


def logistic(x) -> np.ndarray:
    """``mlas.logistic`` (``MlasComputeLogistic``), compiled."""
    return _apply(x, _LOGISTIC, _LOG_P, _LOG_Q, True)


def tanh(x) -> np.ndarray:
    """``mlas.tanh`` (``MlasComputeTanh``), compiled."""
    return _apply(x, _TANH, _TANH_P, _TANH_Q, False)
