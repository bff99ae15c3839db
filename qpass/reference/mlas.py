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

from .numerics import fma32, horner32, suspect

F32 = np.float32
F64 = np.float64

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


def _pair_table(p, q) -> np.ndarray:
    """Coefficients of two Horner polynomials as one (L, 2) float64 table: the shorter one padded with leading
    zeros (fma(x, 0, 0) = 0, then fma(0, x, c) = c: the same chain as without them)."""
    n = max(len(p), len(q))
    pad = [[0.0] * (n - len(c)) + [float(v) for v in c] for c in (p, q)]
    return np.array(pad, F64).T.copy()


def _horner_pair(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """(2, ...) float32: two polynomials in ``x`` by Horner's rule with one rounding per multiply-add (FMA3), as
    ``numerics.horner32`` (``fma(x, c0, c1)``, then ``fma(acc, x, c)``), both at once with three numpy calls per
    step: each step's float64 sum is kept, and after the chain only sums that are float32 midpoints *and*
    inexact in float64 send their element through ``fma32`` step by step (rare). No sum can be nonzero and
    float32-subnormal: with a coefficient c != 0, |c| >= 2^-52, either |acc * x| < |c| / 2 (then |s| > 2^-53) or
    the product's exponent is at least that of c minus one, so s is a multiple of 2^-100; with c = 0 (padding)
    acc is 0 and so is s."""
    x64 = x.astype(F64)
    tail = (1,) * x.ndim
    c = table.reshape(table.shape + tail)  # (L, 2, 1...)
    s = np.empty((len(table) - 1, 2) + x.shape, F64)
    acc = np.empty((2,) + x.shape, F32)
    np.multiply(x64, c[0], out=s[0])
    s[0] += c[1]
    np.copyto(acc, s[0], casting="same_kind")
    for j in range(1, len(table) - 1):
        np.multiply(acc, x64, out=s[j])
        s[j] += c[j + 1]
        np.copyto(acc, s[j], casting="same_kind")
    if _any_midpoint(s, np.empty(s.shape, np.int64)):
        cand = np.nonzero((s.view(np.int64) & _LOW29) == _HALF29)
        j, rest = cand[0], cand[1:]
        xs = x64[rest[1:]]
        prev = np.where(j == 0, table[0][rest[0]], s[(np.maximum(j - 1, 0),) + rest].astype(F32))
        prod = prev.astype(F64) * xs
        bad = inexact_sum(prod, table[j + 1, rest[0]], s[cand])
        if np.any(bad):
            _redo_horner(acc, x, table, tuple(r[bad] for r in rest))
    return acc


def _redo_horner(acc, x, table, at) -> None:
    """Recompute the elements ``at`` of :func:`_horner_pair` with ``fma32`` step by step."""
    xs = x[at[1:]]
    r = fma32(xs, table[0][at[0]], table[1][at[0]])
    for j in range(2, len(table)):
        r = fma32(r, xs, table[j][at[0]])
    acc[at] = r


def inexact_sum(p: np.ndarray, c, s: np.ndarray) -> np.ndarray:
    """Whether the float64 sum ``s = p + c`` was rounded (TwoSum: its error is nonzero). An exact sum rounds to
    float32 once, like the fused operation, even on a float32 midpoint."""
    bb = s - p
    return (p - (s - bb)) + (c - bb) != 0


def _odd_over_even(x, table, split: int, pair: np.ndarray) -> np.ndarray:
    """x clamped to table[0:2], then p(x^2) * x / q(x^2) with p = table[2:split], q = table[split:] (Horner;
    ``pair``: both as one table). A small input runs both polynomials at once (:func:`_horner_pair`: fewer numpy
    calls), a large one each by :func:`_horner_large` (blocks that stay in cache)."""
    v = np.minimum(np.maximum(np.asarray(x, F32), table[0]), table[1])  # NaN stays NaN
    v2 = v * v
    if v.size <= _SMALL:
        p, q = _horner_pair(v2, pair)
    else:
        p, q = _horner_large(v2, table[2:split]), _horner_large(v2, table[split:])
    return (p * v) / q


_SMALL = 1 << 12


def _horner_large(x: np.ndarray, coeffs, block: int = 1 << 15) -> np.ndarray:
    """``numerics.horner32`` of a large ``x`` in blocks that stay in cache (1 MiB L2: 2^15 elements 1.25x faster
    than 2^13 on a (512, 508) tanh), with the cheaper midpoint-only check of :func:`_horner_pair` (no sum can be
    float32-subnormal) made as each step runs: only the elements with a float32 midpoint at some step go through
    ``horner32`` (exact; clamped inputs make exact midpoints common, so never a whole block)."""
    flat = x.reshape(-1)
    out = np.empty(flat.shape, F32)
    n = min(block, flat.size)
    s, low, acc64 = np.empty(n, F64), np.empty(n, np.int64), np.empty(n, F64)
    c = [F64(v) for v in coeffs]
    for i in range(0, flat.size, block):
        xb = flat[i:i + block]
        m = xb.size
        x64, sb, lb, ab, acc = xb.astype(F64), s[:m], low[:m], acc64[:m], out[i:i + m]
        np.multiply(x64, c[0], out=sb)
        sb += c[1]
        redo = []
        for j in range(2, len(c) + 1):
            acc[...] = sb
            np.left_shift(sb.view(np.int64), 35, out=lb)
            if lb.min() == _MID_SHIFTED:
                redo.append(np.flatnonzero(lb == _MID_SHIFTED))
            if j == len(c):
                break
            ab[...] = acc
            np.multiply(ab, x64, out=sb)
            sb += c[j]
        if redo:
            at = np.unique(np.concatenate(redo))
            acc[at] = horner32(xb[at], coeffs)
    return out.reshape(x.shape)
_LOGISTIC_PQ = _pair_table(_LOGISTIC[2:7], _LOGISTIC[7:])
_TANH_PQ = _pair_table(_TANH[2:9], _TANH[9:])


def logistic(x) -> np.ndarray:
    """``MlasComputeLogistic``: p(x) / q(x) + 0.5 on x clamped to [-18, 18], clamped to [0, 1]."""
    return np.minimum(np.maximum(_odd_over_even(x, _LOGISTIC, 7, _LOGISTIC_PQ) + F32(0.5), F32(0.0)), F32(1.0))


def tanh(x) -> np.ndarray:
    """``MlasComputeTanh``: p(x) / q(x) on x clamped to [-9, 9]."""
    return _odd_over_even(x, _TANH, 9, _TANH_PQ)


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


def _min_exponent(v: np.ndarray) -> int:
    """The binary exponent of the smallest nonzero |v| (0 when v has no nonzero element)."""
    nz = np.abs(v[v != 0])
    return int(np.frexp(nz.min())[1]) - 1 if nz.size else 0


class Operand:
    """The B operand (..., K, N) of :func:`fma_chains`, prepared once (a constant weight: once per node call, not
    once per time step): float64, K first, and the binary exponent of its smallest nonzero magnitude."""

    def __init__(self, bk: np.ndarray):
        bk = np.asarray(bk, F32)
        self.k, self.n = bk.shape[-2:]
        self.k_major = np.moveaxis(bk, -2, 0).astype(F64)[..., None, :]  # (K, ..., 1, N)
        self.min_exp = _min_exponent(bk)


def fma_chains(a: np.ndarray, b, k0: int = 0, k1: int | None = None, block: int = 1 << 15) -> np.ndarray:
    """Per output, ``acc = fma(a[..., m, k], b[..., k, n], acc)`` for k in [k0, k1) from acc = 0: (..., M, N)
    float32 (``b``: an array or an :class:`Operand`), over blocks of rows of ``a`` whose working arrays
    (``block`` outputs) stay in cache.

    Each step is the float64 sum of the exact product and acc rounded to float32, which is the single rounding
    of the FMA unless that sum was itself rounded (inexact in float64) and sits exactly half way between two
    float32 (low 29 significand bits 1000...0) or in their subnormal range. The steps cost three numpy calls
    each (products of a block of steps at once); their sums are checked afterwards, all at once, and the few
    outputs with such a step are recomputed with ``numerics.fma32``. Every value of the chain is a multiple of
    2^(ea + eb - 46) (ea, eb: exponents of the smallest nonzero |a|, |b|), so when that is at least 2^-125 no
    sum can be float32-subnormal and only the midpoints are checked."""
    ob = b if isinstance(b, Operand) else Operand(b)
    a = np.asarray(a, F32)
    k1 = ob.k if k1 is None else k1
    rows = max(1, block // max(1, ob.n))
    if a.ndim == 2 and a.shape[0] > rows:
        return np.concatenate([_chains(a[i:i + rows], ob, k0, k1) for i in range(0, a.shape[0], rows)])
    return _chains(a, ob, k0, k1)


_CHUNK = 1 << 14  # float64 elements of a block of steps' sums


def _chains(a: np.ndarray, ob: Operand, k0: int, k1: int) -> np.ndarray:
    a = a[..., k0:k1]
    ak = np.moveaxis(a, -1, 0)[..., None].astype(F64)  # (K, ..., M, 1)
    bk = ob.k_major[k0:k1]
    shape = np.broadcast_shapes(ak.shape[1:], bk.shape[1:])
    steps = max(1, min(k1 - k0, _CHUNK // max(1, int(np.prod(shape)))))
    tiny = _min_exponent(a) + ob.min_exp - 46 < -125
    acc32, acc64 = np.zeros(shape, F32), np.zeros(shape, F64)
    p_buf, s_buf = np.empty((steps,) + shape, F64), np.empty((steps,) + shape, F64)
    low = np.empty((steps,) + shape, np.int64)
    bad = np.zeros(shape, bool)
    add = np.add
    for c0 in range(0, k1 - k0, steps):
        c1 = min(k1 - k0, c0 + steps)
        p, s = p_buf[:c1 - c0], s_buf[:c1 - c0]
        np.multiply(ak[c0:c1], bk[c0:c1], out=p)
        start = acc64.copy()
        for pk, sk in zip(p, s):  # the chain: three cheap numpy calls per step
            add(pk, acc64, out=sk)
            acc32[...] = sk
            acc64[...] = acc32
        if tiny or _any_midpoint(s, low[:c1 - c0]):
            _flag_rounded(p, s, start, tiny, bad)
    if np.any(bad):
        at = np.nonzero(bad)
        av = np.broadcast_to(ak, (k1 - k0,) + shape)[(slice(None),) + at]
        bv = np.broadcast_to(bk, (k1 - k0,) + shape)[(slice(None),) + at]
        r = np.zeros(len(at[0]), F32)
        for k in range(k1 - k0):
            r = fma32(av[k], bv[k], r)
        acc32[at] = r
    return acc32


def _any_midpoint(s: np.ndarray, low: np.ndarray) -> bool:
    """Whether a float64 in ``s`` sits exactly half way between two float32 (low 29 significand bits
    1000...0): shifted 35 bits up, exactly those become the smallest int64 (two passes over ``s``)."""
    np.left_shift(s.view(np.int64), 35, out=low)
    return bool(low.min() == _MID_SHIFTED)


_MID_SHIFTED = np.iinfo(np.int64).min


def _flag_rounded(p: np.ndarray, s: np.ndarray, start: np.ndarray, tiny: bool, bad: np.ndarray) -> None:
    """Mark in ``bad`` the outputs of a block of chain steps (sums ``s`` of the products ``p`` and the previous
    accumulators, the first being ``start``) with a sum that was rounded in float64 and is a float32 midpoint
    (or, when ``tiny``, float32-subnormal)."""
    cand = suspect(s) if tiny else (s.view(np.int64) & _LOW29) == _HALF29
    if cand.any():  # np.nonzero alone is slow on a large all-False array
        idx = np.nonzero(cand)
        k, at = idx[0], idx[1:]
        prev = np.where(k == 0, start[at], s[(np.maximum(k - 1, 0),) + at].astype(F32))
        rounded = inexact_sum(p[idx], prev, s[idx])
        bad[tuple(x[rounded] for x in at)] = True


def _fma_chain(a: np.ndarray, bk: np.ndarray, k0: int, k1: int) -> np.ndarray:
    """:func:`fma_chains` of a (M, K) and bk (K, N) (the name ops_nbits imports)."""
    return fma_chains(a, bk, k0, k1)


_LOW29, _HALF29 = np.int64((1 << 29) - 1), np.int64(1 << 28)


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
    return packed_gemm(a, Operand(b.T if trans_b else b), c, 256 if packed else None)


def packed_gemm(a: np.ndarray, ob: Operand, c: np.ndarray | None = None, stride: int | None = 256) -> np.ndarray:
    """The FMA kernel of :func:`sgemm` on a prepared B (``ob``, (..., K, N); leading axes broadcast with those of
    ``a``): per K block of ``stride`` (256: a weight packed at load time; None: MLAS's block for the shape) one
    FMA chain per output, the blocks added to ``c`` in order."""
    k = ob.k
    stride = _strides(ob.n, k) if stride is None else stride
    out = None if c is None else np.asarray(c, F32)
    for k0 in range(0, k, stride):
        acc = fma_chains(a, ob, k0, min(k, k0 + stride))
        out = acc if out is None else out + acc
    return out if out is not None else np.zeros(np.broadcast_shapes(a.shape[:-1], (ob.n,)), F32)


# ------------------------------------------------------------------ Softmax

_EXP = tuple(F32(v) for v in (
    -103.9720840454, 12582912.0, 1.44269504088896341, -6.93145752e-1, -1.42860677e-6,
    float.fromhex("0x1.694000p-10"), float.fromhex("0x1.125edcp-7"), float.fromhex("0x1.555b5ap-5"),
    float.fromhex("0x1.555450p-3"), float.fromhex("0x1.fffff6p-2"), 1.0))


def _sum_exp_terms(v: np.ndarray) -> np.ndarray:
    """exp(v), flat, as ``MlasComputeSumExpF32KernelAvx512F`` computes each term (v = x - max, shifted): the
    three range-reduction FMAs as float64 sums of exact products rounded once to float32, an element whose sum
    was rounded in float64 and is a float32 midpoint or subnormal (so may round twice) redone by
    :func:`_sum_exp_terms_fma` (rare); the polynomial by :func:`_horner_large` (exact)."""
    v = np.maximum(v, _EXP[0]).reshape(-1)
    out = np.empty(v.shape, F32)
    for i in range(0, v.size, _EXP_BLOCK):  # blocks whose float64 work arrays stay in cache
        out[i:i + _EXP_BLOCK] = _exp_block(v[i:i + _EXP_BLOCK])
    return out


_EXP_BLOCK = 1 << 15


def _exp_block(v: np.ndarray) -> np.ndarray:
    """:func:`_sum_exp_terms` of one block of clamped inputs."""
    lo, bias, log2r, log2hi, log2lo, *poly = _EXP
    v64 = v.astype(F64)
    bad: list = []
    s = v64 * F64(log2r)
    s += F64(bias)
    m = _rounded32(s, v64, log2r, F64(bias), bad)
    m -= bias  # exact: m and bias are within a factor of 2
    m64 = m.astype(F64)
    np.multiply(m64, F64(log2hi), out=s)
    s += v64
    r = _rounded32(s, m64, log2hi, v64, bad)
    np.multiply(m64, F64(log2lo), out=s)
    r64 = r.astype(F64)
    s += r64
    r = _rounded32(s, m64, log2lo, r64, bad)
    p = _horner_large(r, tuple(poly) + (poly[-1],))
    out = np.ldexp(p, m.astype(np.int32)).astype(F32)  # VSCALEFPS: exact scaling by 2^m
    if bad:
        at = np.unique(np.concatenate(bad))
        out[at] = _sum_exp_terms_fma(v[at])
    return out


def _rounded32(s: np.ndarray, a: np.ndarray, b, c, bad: list) -> np.ndarray:
    """float32 rounding of the float64 sums ``s = a * b + c`` (flat; a * b exact); appends to ``bad`` the indices
    whose sum was rounded in float64 and is a float32 midpoint or in the float32 subnormal range (their fused
    rounding may differ). A pass each finds whether there is any midpoint / subnormal candidate at all."""
    cand = []
    if s.size:
        low = np.left_shift(s.view(np.int64), 35)
        if low.min() == _MID_SHIFTED:
            cand.append(np.flatnonzero(low == _MID_SHIFTED))
        mag = np.abs(s)
        if mag.min() < _TINY_F64:
            cand.append(np.flatnonzero((mag > 0) & (mag < _TINY_F64)))
    if cand:
        at = np.unique(np.concatenate(cand))
        cc = c[at] if np.ndim(c) else c
        rounded = inexact_sum(a[at] * F64(b), cc, s[at])
        if rounded.any():
            bad.append(at[rounded])
    return s.astype(F32)


_TINY_F64 = 2.0 ** -125


def _sum_exp_terms_fma(v: np.ndarray) -> np.ndarray:
    """:func:`_sum_exp_terms` step by step with ``fma32`` and ``horner32`` (for the few elements it redoes)."""
    lo, bias, log2r, log2hi, log2lo, *poly = _EXP
    v = np.maximum(v, lo)
    m = fma32(log2r, v, bias) - bias
    v = fma32(m, log2hi, v)
    v = fma32(m, log2lo, v)
    p = horner32(v, poly[1:] + poly[-1:], first=np.full(v.shape, poly[0], F32))
    return np.ldexp(p, m.astype(np.int32)).astype(F32)


def softmax(x, axis: int = -1) -> np.ndarray:
    """``MlasComputeSoftmax`` over ``axis``: max, exp terms summed in 16 lanes (element i in lane i mod 16) then
    reduced ((s0+s1)+(s2+s3)) + ((s4+s5)+(s6+s7)) with s_j = lane j + lane j+8, output = term * (1 / sum)."""
    x = np.moveaxis(np.asarray(x, F32), axis, -1)
    d = x.shape[-1]
    neg = -np.max(x, axis=-1, keepdims=True)
    e = _sum_exp_terms(x + neg).reshape(x.shape)
    pad = (-d) % 16
    lanes_in = np.concatenate([e, np.zeros(e.shape[:-1] + (pad,), F32)], axis=-1)
    lanes_in = lanes_in.reshape(e.shape[:-1] + (-1, 16))
    lanes = lanes_in[..., 0, :].copy()
    for g in range(1, lanes_in.shape[-2]):
        lanes = lanes + lanes_in[..., g, :]
    s = [lanes[..., j] + lanes[..., j + 8] for j in range(8)]
    total = ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]))
    scale = (F32(1.0) / total)[..., None]
    return np.moveaxis(e * scale, -1, axis)


# ------------------------------------------------------------------ onnxruntime's plain C++ kernels

def _rational_plain(x, bound: float) -> np.ndarray:
    """``deepcpu``'s tanh rational approximation (rnn_helpers.cc) on x clamped to [-bound, bound]: the same
    coefficients as MLAS's tanh, evaluated with separate multiplies and adds (no FMA)."""
    v = np.minimum(np.maximum(np.asarray(x, F32), F32(-bound)), F32(bound))
    v2 = v * v
    p = v2 * _TANH[2] + _TANH[3]
    for c in _TANH[4:9]:
        p = v2 * p + c
    p = v * p
    q = v2 * _TANH[9] + _TANH[10]
    for c in _TANH[11:]:
        q = v2 * q + c
    return p / q


def gru_sigmoid(x) -> np.ndarray:
    """onnxruntime's GRU reset / output gate sigmoid: 0.5 * (1 + tanh_approx(x / 2)), x clamped to [-20, 20]."""
    x = np.minimum(np.maximum(np.asarray(x, F32), F32(-20.0)), F32(20.0))
    return F32(0.5) * (F32(1.0) + _rational_plain(F32(0.5) * x, 20.0))


def gru_tanh(x) -> np.ndarray:
    """onnxruntime's GRU reset / output gate tanh: the rational approximation on x clamped to [-10, 10]."""
    return _rational_plain(x, 10.0)
