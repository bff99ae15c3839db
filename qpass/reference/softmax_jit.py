"""onnxruntime's float32 Softmax (``mlas.softmax``: ``MlasComputeSoftmax``), compiled (optional: needs ``numba``, the
``fast`` extra; importing this module without it raises ImportError and the caller keeps the numpy emulation).

Bit for bit the same numbers as ``qpass.reference.mlas.softmax``: per row the maximum, each term
exp(x - max) by ``MlasComputeSumExpF32KernelAvx512F``'s steps (the three range-reduction multiply-adds and the
polynomial as LLVM ``fma`` on float32, the one rounding the numpy path emulates in float64 and repairs at
midpoints; the scaling by 2^m exact, rounded once to float32), the terms summed in 16 lanes (element i in lane
i mod 16) reduced as ((s0+s1)+(s2+s3)) + ((s4+s5)+(s6+s7)) with s_j = lane j + lane j+8, then each term times
float32(1 / sum). One compiled loop per call instead of ~40 numpy calls (a Loop decoder's 256-element attention
Softmax: ~240 us -> a few us). tests/test_table15_softmax.py compares both paths.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from .mlas import _EXP
from .mlas_jit import _fma

F32 = np.float32
(_LO, _BIAS, _LOG2R, _LOG2HI, _LOG2LO, _P0, _P1, _P2, _P3, _P4, _P5) = _EXP


@njit(nogil=True, inline="always", error_model="numpy", cache=True)
def _exp1(v):
    """One term of ``mlas._sum_exp_terms`` (v = x - max, float32)."""
    if v != v:
        return v
    v = _LO if v < _LO else v
    m = _fma(_LOG2R, v, _BIAS) - _BIAS
    r = _fma(m, _LOG2HI, v)
    r = _fma(m, _LOG2LO, r)
    p = _fma(_fma(_fma(_fma(_fma(_fma(_P0, r, _P1), r, _P2), r, _P3), r, _P4), r, _P5), r, _P5)
    return np.float32(math.ldexp(np.float64(p), int(m)))  # exact in float64, rounded once (VSCALEFPS)


@njit(nogil=True, error_model="numpy", cache=True)
def _rows(x, out):
    """``mlas.softmax`` over the last axis of x (R, D) float32 into out (R, D)."""
    rr, dd = x.shape
    lanes = np.empty(16, np.float32)
    for r in range(rr):
        mx = x[r, 0]
        for i in range(1, dd):
            v = x[r, i]
            if v > mx or v != v:
                mx = v
                if v != v:
                    break
        neg = -mx
        lanes[:] = 0
        for i in range(dd):
            e = _exp1(x[r, i] + neg)
            out[r, i] = e
            lanes[i % 16] = lanes[i % 16] + e
        s0, s1, s2, s3 = lanes[0] + lanes[8], lanes[1] + lanes[9], lanes[2] + lanes[10], lanes[3] + lanes[11]
        s4, s5, s6, s7 = lanes[4] + lanes[12], lanes[5] + lanes[13], lanes[6] + lanes[14], lanes[7] + lanes[15]
        total = ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))
        scale = np.float32(1.0) / total
        for i in range(dd):
            out[r, i] = out[r, i] * scale


def softmax(x, axis: int = -1) -> np.ndarray:
    """``mlas.softmax`` of float32 ``x`` over ``axis``, compiled."""
    x = np.asarray(x, F32)
    if not x.size:
        return x.copy()
    moved = np.moveaxis(x, axis, -1)
    rows = np.ascontiguousarray(moved).reshape(-1, moved.shape[-1])
    out = np.empty(rows.shape, F32)
    _rows(rows, out)
    return np.moveaxis(out.reshape(moved.shape), -1, axis)
