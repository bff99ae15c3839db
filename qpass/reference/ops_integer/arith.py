"""Integer arithmetic shared by the fused kernels: exact or width-limited accumulation, MLAS requantisation,
output saturation.

Accumulators (Conv, Gemm, MatMul): exact int64 unless ``acc_bits`` is set; then ``wrap`` is two's complement and
``saturate`` clamps after every addition in the order bias, then products along the reduction axis in weight
layout order (Conv: input channel, then kernel rows, then columns). ConvTranspose and the pools apply the width
to the final sum.
"""
from __future__ import annotations

import numpy as np

from qpass.ops.common import int_bounds
from ..numerics import F32, F64, I64, apply_acc_width, int_range, requantize_mlas
from ..numerics import fma32  # noqa: F401  (re-exported for the integer kernels)
from .planning import QOut


def exact_dtype(k: int, amax: int, bmax: int, bound: int | None = None):
    """The BLAS type in which a matmul of integers bounded by ``amax`` and ``bmax`` over ``k`` terms is exact:
    float32 when every partial sum (``bound``, when given, bounds them all) or every partial sum of chunks of at
    least 64 terms stays below 2^24 (``exact_matmul`` sums the chunks in float64), float64 while the whole sum
    stays below 2^53, else int64 (numpy's loop)."""
    if bound is not None and bound <= _F32_EXACT:
        return F32
    per = int(amax) * int(bmax)
    bound = per * max(int(k), 1)
    if bound < 2 ** 24 or (bound < 2 ** 53 and _F32_EXACT // per >= 64):
        return F32
    return F64 if bound < 2 ** 53 else I64


_F32_EXACT = 2 ** 24 - 1  # float32 holds every integer up to this


def l1_bound(xmax: int, w: np.ndarray, axis: int) -> int:
    """``xmax`` times the largest sum of |w| along the reduction ``axis``: a bound of every partial sum, in any
    order, of the products of ``w`` with integers |x| <= xmax (tighter than k * xmax * max|w|)."""
    return int(xmax) * int(np.abs(w.astype(I64)).sum(axis=axis).max()) if w.size else 0


def exact_matmul(a: np.ndarray, b: np.ndarray, amax: int | None = None, bmax: int | None = None,
                 bound: int | None = None) -> np.ndarray:
    """Exact integer matmul (exact integers of the returned float dtype, or int64); ``amax`` / ``bmax`` bound the
    operands' magnitudes when known (else measured), ``bound`` every partial sum (``l1_bound``). float32 BLAS
    runs in one product when every partial sum stays below 2^24, else over chunks of the reduction axis short
    enough that none reaches it; the chunks are summed in float64 (exact below 2^53)."""
    if amax is None:
        amax = int(np.abs(a).max()) if a.size else 0
    if bmax is None:
        bmax = int(np.abs(b).max()) if b.size else 0
    k = a.shape[-1]
    dt = exact_dtype(k, amax, bmax, bound)
    a, b = a.astype(dt, copy=False), b.astype(dt, copy=False)
    per = int(amax) * int(bmax)
    if dt != F32 or per * k <= _F32_EXACT or (bound is not None and bound <= _F32_EXACT):
        return np.matmul(a, b)
    kc = _F32_EXACT // per
    acc = np.matmul(a[..., :kc], b[..., :kc, :]).astype(F64)
    for s in range(kc, k, kc):
        acc += np.matmul(a[..., s:s + kc], b[..., s:s + kc, :])
    return acc


def acc_range(acc: np.ndarray) -> dict:
    """The exact accumulator range, as ``GoldenExecutor.record`` counts it."""
    return {"acc_min": int(acc.min()) if acc.size else None, "acc_max": int(acc.max()) if acc.size else None}


def accumulate(ex, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None, amax: int | None = None,
               bmax: int | None = None, bound: int | None = None) -> tuple[np.ndarray, dict]:
    """bias + a @ b for a (B, R, K), b (B or 1, K, M), bias broadcastable to (B, R, M), with the accumulator model
    of ``ex`` (``acc_bits``, ``overflow``); returns (accumulators, counts for ``ex.record``). The accumulators are
    exact integers, held in float64 when they provably stay below 2^53 (``amax``, ``bmax``: bounds of |a|, |b|;
    ``bound``: of every partial sum)."""
    top = None if amax is None or bmax is None else int(amax) * int(bmax) * a.shape[-1]
    if bound is not None:
        top = bound if top is None else min(top, bound)
    acc = add_bias(exact_matmul(a, b, amax, bmax, bound), bias, ex.acc_bits is not None, top)
    counts = acc_range(acc)
    bits = ex.acc_bits
    if bits is not None:
        if ex.overflow == "wrap":
            acc, changed = apply_acc_width(acc, bits, "wrap")
            counts["overflowed"] = changed
        else:
            acc, changed, events = _saturating(a, b, bias, acc, bits)
            counts["overflowed"] = changed
            counts["saturation_events"] = events
    return acc, counts


def add_bias(acc: np.ndarray, bias: np.ndarray | None, to_int: bool = False, bound: int | None = None) -> np.ndarray:
    """``acc + bias`` for exact integer accumulators, in a dtype that holds the sums exactly: float32 below 2^24,
    float64 below 2^53, else (or ``to_int``) int64. ``bound``: a proven bound of |acc| (else measured)."""
    if bias is None and not to_int:
        return acc
    if acc.dtype != I64:
        top = (float(np.abs(acc).max()) if acc.size else 0.0) if bound is None else float(bound)
        top += float(np.abs(bias).max()) if bias is not None and bias.size else 0.0
        if to_int or top >= 2.0 ** 53:
            acc = acc.astype(I64)
        elif acc.dtype == F32 and top >= 2.0 ** 24:
            acc = acc.astype(F64)
    if bias is None:
        return acc
    if acc.dtype != I64 and np.broadcast_shapes(acc.shape, bias.shape) == acc.shape:
        acc += bias.astype(acc.dtype, copy=False)  # the callers' accumulators are their own fresh arrays
        return acc
    return acc + bias.astype(acc.dtype, copy=False)


def _saturating(a, b, bias, exact, bits, chunk=1 << 15):
    """Per-addition saturating accumulation; only accumulators whose |partial sums| could leave the range are
    replayed step by step (the others provably equal the exact sum)."""
    a, b = a.astype(I64, copy=False), b.astype(I64, copy=False)
    lo, hi = int_bounds(bits, True)
    absb = np.abs(bias) if bias is not None else 0
    bound = exact_matmul(np.abs(a), np.abs(b)) + absb
    risky = np.argwhere(np.broadcast_to(bound > hi, exact.shape))
    out = exact.copy()
    events = 0
    if len(risky):
        bfull = None if bias is None else np.broadcast_to(bias, exact.shape)
        for s in range(0, len(risky), chunk):
            idx = risky[s:s + chunk]
            bi, r, m = idx[:, 0], idx[:, 1], idx[:, 2]
            prods = a[bi if a.shape[0] > 1 else 0, r, :] * b[bi if b.shape[0] > 1 else 0, :, m]
            acc = np.zeros(len(idx), I64) if bfull is None else bfull[bi, r, m].astype(I64)
            c = np.clip(acc, lo, hi)
            events += int(np.count_nonzero(c != acc))
            acc = c
            for k in range(prods.shape[1]):
                t = acc + prods[:, k]
                acc = np.clip(t, lo, hi)
                events += int(np.count_nonzero(acc != t))
            out[bi, r, m] = acc
    return out, int(np.count_nonzero(out != exact)), events


def merge_counts(a: dict, b: dict) -> dict:
    """Counts of two chunks of one call: ranges combine by min / max, event counts add."""
    out = dict(a)
    for k, v in b.items():
        if v is None:
            continue
        if k not in out or out[k] is None:
            out[k] = v
        elif k == "acc_min":
            out[k] = min(out[k], v)
        elif k == "acc_max":
            out[k] = max(out[k], v)
        else:
            out[k] += v
    return out


def requant(ex, node: str, kind: str, acc: np.ndarray, mult: np.ndarray, q: QOut, counts: dict) -> np.ndarray:
    """MLAS requantisation of ``acc`` (the caller's own array, overwritten when float32) to the output codes of
    ``q``; records the call's counts on ``ex``."""
    lo, hi = int_range(q.dtype)
    if acc.dtype == F32 and np.broadcast_shapes(acc.shape, np.shape(mult)) == acc.shape:
        v = np.multiply(acc, mult, out=acc)
    else:
        v = acc.astype(F32, copy=False) * mult
    if np.dtype(q.dtype).itemsize > 2:
        counts["output_clipped"] = int(np.count_nonzero((v < lo - q.zp) | (v > hi - q.zp)))
        ex.record(node, kind, outputs=acc.size, **counts)
        return requantize_mlas(acc, mult, q.zp, q.dtype, scaled=v)
    # numerics.requantize_mlas for codes of up to 16 bits: rne(clamp(v, lo - zp, hi - zp)) + zp (integer bounds:
    # clamping before or after rne is the same), the clamp only when the range shows a clipped value (then
    # counted), the zero point added as the float32 codes are cast (exact integers of the code range)
    bl, bh = F32(lo - q.zp), F32(hi - q.zp)
    clipped = 0
    if v.size and not (bl <= v.min() and v.max() <= bh):
        clipped = int(np.count_nonzero(v < bl)) + int(np.count_nonzero(v > bh))
        np.clip(v, bl, bh, out=v)
    counts["output_clipped"] = clipped
    ex.record(node, kind, outputs=acc.size, **counts)
    np.rint(v, out=v)
    out = np.empty(v.shape, q.dtype)
    np.add(v, F32(q.zp), out=out, casting="unsafe")
    return out


def saturate(v: np.ndarray, dtype, shift: int) -> np.ndarray:
    """Round half to even and clamp to ``dtype`` (to uint8 and back when ``shift`` is the int8 -> uint8 128)."""
    lo, hi = int_range(np.uint8 if shift else dtype)  # shift: computed in the uint8 domain
    return (np.clip(rne_i(v), lo, hi) - shift).astype(dtype)


def rne_i(v: np.ndarray) -> np.ndarray:
    """Round half to even to int64."""
    return np.rint(v).astype(I64)

