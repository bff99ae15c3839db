"""Compiled versions of the MLAS kernels the recurrent ops run per time step (optional: needs ``numba``, the
``fast`` extra; importing this module without it raises ImportError and the callers keep the numpy emulation).

Bit for bit the same numbers as ``qpass.reference.mlas``: every multiply-add is LLVM's ``fma`` on float32 (one
IEEE rounding, the very operation MLAS's ``vfmadd`` kernels perform and ``numerics.fma32`` emulates), every other
operation a plain float32 one in the same order. Only the speed differs: one compiled loop instead of three numpy
calls per chain step. tests/test_rec15_jit.py compares both paths on random and edge-case inputs. Compiled code
is cached by numba next to this module (``__pycache__``, as Python caches bytecode): ~8 s of compilation once, not
in every process.
"""
from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

from .mlas import _LOGISTIC, _TANH, _strides  # noqa: F401 (read by the compiled functions)

F32 = np.float32


@intrinsic
def _fma(typingctx, a, b, c):
    """float32 fused multiply-add (llvm.fma.f32: one rounding; vfmadd on FMA3 hardware)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        return builder.fma(*args)

    return sig, codegen


@njit(nogil=True, error_model="numpy", cache=True)
def _gemm(a, b, out, has_c, stride):
    """out[d, m, :] (= c, or unset when not has_c) plus, per K block of ``stride``, one FMA chain per output
    from 0 over a[d, m, k0:k1] * b[d, k0:k1, :]; the blocks added to out in order (the first one is out when
    there is no c). Rows go 4 at a time (each row of b read once for the four)."""
    dd, mm, kk = a.shape
    nn = b.shape[2]
    rows = 4
    acc = np.empty((rows, nn), np.float32)
    for d in range(dd):
        for m0 in range(0, mm, rows):
            r1 = min(rows, mm - m0)
            for k0 in range(0, kk, stride):
                acc[:] = 0
                for k in range(k0, min(kk, k0 + stride)):
                    for r in range(r1):
                        av = a[d, m0 + r, k]
                        for n in range(nn):
                            acc[r, n] = _fma(av, b[d, k, n], acc[r, n])
                for r in range(r1):
                    if k0 == 0 and not has_c:
                        out[d, m0 + r, :] = acc[r]
                    else:
                        for n in range(nn):
                            out[d, m0 + r, n] = out[d, m0 + r, n] + acc[r, n]


@njit(nogil=True, error_model="numpy", cache=True)
def _gemm_narrow(a, b, out, has_c, stride):
    """:func:`_gemm` of a (M, K), b (K, N), out (M, N) for a narrow B (few columns): the same FMA chains, blocks
    and order per output (so the same numbers), vectorised along the rows of a instead of the columns of b: per
    block of 128 rows and K block, the tile of a copied transposed, then per column of b one multiply-add of the
    tile's row k into the block's accumulators (loop indices only, so that the inner loop vectorises)."""
    mm, kk = a.shape
    nn = b.shape[1]
    rows = 128
    tile = np.empty((stride, rows), np.float32)
    acc = np.empty((nn, rows), np.float32)
    for m0 in range(0, mm, rows):
        rb = min(rows, mm - m0)
        for k0 in range(0, kk, stride):
            kb = min(stride, kk - k0)
            for r in range(rb):
                for q in range(kb):
                    tile[q, r] = a[m0 + r, k0 + q]
            acc[:] = 0
            for q in range(kb):
                for n in range(nn):
                    bv = b[k0 + q, n]
                    for r in range(rb):
                        acc[n, r] = _fma(tile[q, r], bv, acc[n, r])
            for r in range(rb):
                for n in range(nn):
                    out[m0 + r, n] = acc[n, r] if k0 == 0 and not has_c else out[m0 + r, n] + acc[n, r]


NARROW_MAX_COLUMNS = 8  # B at most this wide: the row-vectorised kernel (5 columns: ~8x faster, 16: slower)


def gemm_into(a: np.ndarray, bk: np.ndarray, out: np.ndarray, has_c: bool, stride: int = 256) -> None:
    """:func:`packed_gemm` of C-contiguous float32 a (M, K) and bk (K, N) into ``out`` (M, N; holding c when
    ``has_c``), without the checks and copies (the float MatMul / Gemm kernels call it once per node)."""
    if bk.shape[1] <= NARROW_MAX_COLUMNS and a.shape[0] > 1:
        _gemm_narrow(a, bk, out, has_c, stride)
    else:
        _gemm(a[None], bk[None], out[None], has_c, stride)


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


# MLAS's coefficients as float32 constants (numba freezes module globals): fixed-length Horner chains written out,
# so that the loops over elements have no inner loop and vectorise
(_LOG_LO, _LOG_HI, _LP0, _LP1, _LP2, _LP3, _LP4, _LQ0, _LQ1, _LQ2, _LQ3, _LQ4, _LQ5) = _LOGISTIC
(_TANH_LO, _TANH_HI, _TP0, _TP1, _TP2, _TP3, _TP4, _TP5, _TP6, _TQ0, _TQ1, _TQ2, _TQ3) = _TANH


@njit(nogil=True, inline="always", error_model="numpy", cache=True)
def _clamp(v, lo, hi):
    """min(max(v, lo), hi) with NaN kept (as numpy's maximum / minimum)."""
    v = lo if v < lo else v
    return hi if v > hi else v


@njit(nogil=True, inline="always", error_model="numpy", cache=True)
def _sigmoid1(x):
    """mlas.logistic of one float32: p(x^2) * x / q(x^2) + 0.5 on x clamped to [-18, 18], clamped to [0, 1]."""
    v = _clamp(x, _LOG_LO, _LOG_HI)
    v2 = v * v
    p = _fma(_fma(_fma(_fma(v2, _LP0, _LP1), v2, _LP2), v2, _LP3), v2, _LP4)
    q = _fma(_fma(_fma(_fma(_fma(v2, _LQ0, _LQ1), v2, _LQ2), v2, _LQ3), v2, _LQ4), v2, _LQ5)
    return _clamp((p * v) / q + np.float32(0.5), np.float32(0.0), np.float32(1.0))


@njit(nogil=True, inline="always", error_model="numpy", cache=True)
def _tanh1(x):
    """mlas.tanh of one float32: p(x^2) * x / q(x^2) on x clamped to [-9, 9]."""
    v = _clamp(x, _TANH_LO, _TANH_HI)
    v2 = v * v
    p = _fma(_fma(_fma(_fma(_fma(_fma(v2, _TP0, _TP1), v2, _TP2), v2, _TP3), v2, _TP4), v2, _TP5), v2, _TP6)
    q = _fma(_fma(_fma(v2, _TQ0, _TQ1), v2, _TQ2), v2, _TQ3)
    return (p * v) / q


@njit(nogil=True, error_model="numpy", cache=True)
def _map(x, logistic, out):
    if logistic:
        for i in range(x.size):
            out[i] = _sigmoid1(x[i])
    else:
        for i in range(x.size):
            out[i] = _tanh1(x[i])


def _apply(x, logistic: bool) -> np.ndarray:
    x = np.asarray(x, F32)
    flat = np.ascontiguousarray(x).reshape(-1)
    out = np.empty(flat.shape, F32)
    _map(flat, logistic, out)
    return out.reshape(x.shape)


def logistic(x) -> np.ndarray:
    """``mlas.logistic`` (``MlasComputeLogistic``), compiled."""
    return _apply(x, True)


def tanh(x) -> np.ndarray:
    """``mlas.tanh`` (``MlasComputeTanh``), compiled."""
    return _apply(x, False)


@njit(nogil=True, inline="always", error_model="numpy", cache=True)
def _gate(v, clip):
    return _clamp(v, -clip, clip) if clip > 0 else v


@njit(nogil=True, error_model="numpy", cache=True)
def _cell(g, bias, c, clip, couple, h_out, c_out):
    """recurrent._lstm_gates without peepholes, activations MLAS's sigmoid / tanh / tanh: g (D, B, 4H: gates
    i, o, f, c), bias (D, 4H), c (D, B, H); each gate sum clipped to [-clip, clip] when clip > 0."""
    dd, bb, hh = c.shape
    for d in range(dd):
        for b in range(bb):
            for j in range(hh):
                i = _sigmoid1(_gate(g[d, b, j] + bias[d, j], clip))
                o = _sigmoid1(_gate(g[d, b, hh + j] + bias[d, hh + j], clip))
                if couple:
                    f = np.float32(1.0) - i
                else:
                    f = _sigmoid1(_gate(g[d, b, 2 * hh + j] + bias[d, 2 * hh + j], clip))
                cell = _tanh1(_gate(g[d, b, 3 * hh + j] + bias[d, 3 * hh + j], clip))
                cn = f * c[d, b, j] + i * cell
                c_out[d, b, j] = cn
                h_out[d, b, j] = o * _tanh1(cn)


def lstm_cell(g: np.ndarray, bias: np.ndarray, c: np.ndarray, clip, couple: bool) -> tuple[np.ndarray, np.ndarray]:
    """(h, c) of one LSTM step from the gate sums (see :func:`_cell`); ``clip``: the node's clip or None."""
    g = np.ascontiguousarray(g, F32)
    c = np.ascontiguousarray(c, F32)
    h_out, c_out = np.empty(c.shape, F32), np.empty(c.shape, F32)
    _cell(g, np.ascontiguousarray(bias, F32), c, F32(0 if clip is None else clip), bool(couple), h_out, c_out)
    return h_out, c_out


@njit(nogil=True, error_model="numpy", cache=True)
def _sequence(xp, r, bias, clip, couple, h, c, ys):
    """Every step of an LSTM whose sequences all run the full length: g = xp[t] + h @ R by the FMA chains of
    :func:`_gemm` (K blocks of 256: R packed at load time), then :func:`_cell`; h and c updated in place."""
    g = np.empty(xp.shape[1:], np.float32)
    h2, c2 = np.empty_like(h), np.empty_like(c)
    for t in range(xp.shape[0]):
        g[...] = xp[t]
        _gemm(h, r, g, True, 256)
        _cell(g, bias, c, clip, couple, h2, c2)
        h[...] = h2
        c[...] = c2
        ys[t] = h2


def lstm_sequence(xp: np.ndarray, r: np.ndarray, bias: np.ndarray, clip, couple: bool, h0: np.ndarray,
                  c0: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(Y (T, D, B, H), last h, last c) of :func:`_sequence` from the input projections xp (T, D, B, 4H), R
    (D, H, 4H) float32, bias (D, 4H) and the initial states (D, B, H)."""
    h, c = np.array(h0, F32, order="C"), np.array(c0, F32, order="C")
    ys = np.empty((xp.shape[0],) + h.shape, F32)
    _sequence(np.ascontiguousarray(xp, F32), r, np.ascontiguousarray(bias, F32),
              F32(0 if clip is None else clip), bool(couple), h, c, ys)
    return ys, h, c


@njit(nogil=True, error_model="numpy", cache=True)
def _dq_centred(a, codes, scales):
    """Per slice a[d] (M, K): onnxruntime's dynamic uint8 parameters (dynamic_quant.params_per_slice: the range
    widened to 0, scale = (max - min) / 255, zero point rne(clamp(-min / scale, 0, 255))) and the codes
    clamp(rne(a / scale) + zp, 0, 255) minus the zero point, in float32. False when a slice holds a NaN."""
    dd, mm, kk = a.shape
    for d in range(dd):
        lo = np.float32(0.0)
        hi = np.float32(0.0)
        for m in range(mm):
            for k in range(kk):
                v = a[d, m, k]
                if v != v:
                    return False
                lo = v if v < lo else lo
                hi = v if v > hi else hi
        scale = np.float32(1.0) if hi == lo else (hi - lo) / np.float32(255.0)
        z = np.rint(_clamp(np.float32(0.0) - lo / scale, np.float32(0.0), np.float32(255.0)))
        scales[d] = scale
        for m in range(mm):
            for k in range(kk):
                q = _clamp(np.rint(a[d, m, k] / scale) + z, np.float32(0.0), np.float32(255.0))
                codes[d, m, k] = q - z
    return True


def dq_centred(a: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(codes minus zero point (D, M, K) float32, scales (D, 1, 1)) of :func:`_dq_centred`; None when ``a`` holds
    a NaN (the numpy path decides what that gives)."""
    a = np.ascontiguousarray(a, F32)
    codes, scales = np.empty(a.shape, F32), np.empty(a.shape[0], F32)
    return (codes, scales.reshape(-1, 1, 1)) if _dq_centred(a, codes, scales) else None


@njit(nogil=True, error_model="numpy", cache=True)
def _matmul_wide(a, b, out):
    """out[d, m, :] = float32(sum over k of float64(a[d, m, k]) * float64(b[d, k, :])) for float32 a (D, M, K),
    b (D, K, N): each product exact in float64, summed in k order, rounded once (not an MLAS kernel: the float64
    MatMul of ``ops_float.linear`` without widening B, vectorised along N)."""
    dd, mm, kk = a.shape
    nn = b.shape[2]
    acc = np.empty(nn, np.float64)
    for d in range(dd):
        for m in range(mm):
            acc[:] = 0.0
            for k in range(kk):
                av = np.float64(a[d, m, k])
                for n in range(nn):
                    acc[n] += av * np.float64(b[d, k, n])
            for n in range(nn):
                out[d, m, n] = np.float32(acc[n])


def matmul_wide(a: np.ndarray, b: np.ndarray) -> np.ndarray | None:
    """``float32(float64(a) @ float64(b))`` of float32 ``a`` (..., M, K) and ``b`` (K, N) or with the same leading
    axes as ``a`` (:func:`_matmul_wide`); None for other shapes (the caller's numpy path)."""
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        return None
    k, n = b.shape[-2:]
    if b.ndim == 2:
        a3, b3 = np.ascontiguousarray(a, F32).reshape(1, -1, k), np.ascontiguousarray(b, F32)[None]
    elif a.shape[:-2] == b.shape[:-2]:
        a3 = np.ascontiguousarray(a, F32).reshape(-1, a.shape[-2], k)
        b3 = np.ascontiguousarray(b, F32).reshape(-1, k, n)
    else:
        return None
    out = np.empty((a3.shape[0], a3.shape[1], n), F32)
    _matmul_wide(a3, b3, out)
    return out.reshape(a.shape[:-1] + (n,))
