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
from .planning import QOut


def _exact_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Exact int64 matmul; through float64 BLAS when every partial sum stays below 2^53."""
    k = a.shape[-1]
    amax = int(np.abs(a).max()) if a.size else 0
    bmax = int(np.abs(b).max()) if b.size else 0
    if amax * bmax * max(k, 1) < 2 ** 53:
        return np.rint(np.matmul(a.astype(F64), b.astype(F64))).astype(I64)
    return np.matmul(a.astype(I64), b.astype(I64))


def acc_range(acc: np.ndarray) -> dict:
    """The exact accumulator range, as ``GoldenExecutor.record`` counts it."""
    return {"acc_min": int(acc.min()) if acc.size else None, "acc_max": int(acc.max()) if acc.size else None}


def accumulate(ex, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None) -> tuple[np.ndarray, dict]:
    """bias + a @ b for a (B, R, K), b (B or 1, K, M), bias broadcastable to (B, R, M), with the accumulator model
    of ``ex`` (``acc_bits``, ``overflow``); returns (accumulators, counts for ``ex.record``)."""
    acc = _exact_matmul(a, b)
    if bias is not None:
        acc = acc + bias
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


def _saturating(a, b, bias, exact, bits, chunk=1 << 15):
    """Per-addition saturating accumulation; only accumulators whose |partial sums| could leave the range are
    replayed step by step (the others provably equal the exact sum)."""
    lo, hi = int_bounds(bits, True)
    absb = np.abs(bias) if bias is not None else 0
    bound = _exact_matmul(np.abs(a), np.abs(b)) + absb
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
    """MLAS requantisation of ``acc`` to the output codes of ``q``; records the call's counts on ``ex``."""
    lo, hi = int_range(q.dtype)
    v = acc.astype(F32) * mult
    counts["output_clipped"] = int(np.count_nonzero((v < lo - q.zp) | (v > hi - q.zp)))
    ex.record(node, kind, outputs=acc.size, **counts)
    return requantize_mlas(acc, mult, q.zp, q.dtype)


def saturate(v: np.ndarray, dtype, shift: int) -> np.ndarray:
    """Round half to even and clamp to ``dtype`` (to uint8 and back when ``shift`` is the int8 -> uint8 128)."""
    lo, hi = int_range(np.uint8 if shift else dtype)  # shift: computed in the uint8 domain
    return (np.clip(rne_i(v), lo, hi) - shift).astype(dtype)


def rne_i(v: np.ndarray) -> np.ndarray:
    """Round half to even to int64."""
    return np.rint(v).astype(I64)

