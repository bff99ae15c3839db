"""Bit-exact float32 / integer helpers shared by the golden kernels.

Everything here reproduces one specific rounding sequence, because the golden simulator is checked bit for bit:

- ``f32`` arithmetic is done with numpy float32 arrays (every operation rounds to nearest even, as SSE/AVX do);
- ``fma32(a, b, c)`` is a single-rounding fused multiply-add (AVX2 ``vfmadd``), emulated exactly in float64 with
  a TwoSum correction for the rare double-rounding midpoint;
- ``rne`` is round-half-to-even to an integer (``_mm_cvtps_epi32`` / ``nearbyintf`` under the default MXCSR);
- accumulators are int64 (exact) unless an explicit width is requested, see :func:`apply_acc_width`.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np

from qpass.ops.common import int_bounds

F32 = np.float32
F64 = np.float64
I64 = np.int64

INT_DTYPES = tuple(np.dtype(d) for d in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32, np.int64))
#: 4- and 2-bit integer codes (ml_dtypes; one byte each in memory)
NARROW_INT_DTYPES = tuple(np.dtype(d) for d in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2))
#: float8 codes: QuantizeLinear's ``saturate`` clips them to the largest finite value
FLOAT8_DTYPES = tuple(np.dtype(d) for d in (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e4m3fnuz,
                                            ml_dtypes.float8_e5m2, ml_dtypes.float8_e5m2fnuz))
#: float codes with no infinity or NaN: the cast itself saturates
FLOAT_SMALL_DTYPES = tuple(np.dtype(d) for d in (ml_dtypes.float4_e2m1fn, ml_dtypes.float6_e2m3fn,
                                                 ml_dtypes.float6_e3m2fn))
FLOAT_CODE_DTYPES = FLOAT8_DTYPES + FLOAT_SMALL_DTYPES


def int_range(dtype) -> tuple[int, int]:
    """(min, max) of an integer code dtype, 2 to 64 bits (KeyError for any other dtype)."""
    dt = np.dtype(dtype)
    if dt in NARROW_INT_DTYPES:
        info = ml_dtypes.iinfo(dt)
        return int(info.min), int(info.max)
    if dt not in INT_DTYPES:
        raise KeyError(dt)
    return int_bounds(8 * dt.itemsize, dt.kind == "i")


def f32(x) -> np.ndarray:
    return np.asarray(x, dtype=F32)


def rne(x: np.ndarray) -> np.ndarray:
    """Round half to even (numpy's ``rint`` is exactly that), keeping the float dtype."""
    return np.rint(x)


def fma32(a, b, c) -> np.ndarray:
    """float32 fused multiply-add ``round32(a*b + c)`` with one rounding (AVX2 ``vfmadd``): the float64 sum of the
    exact product rounds to float32 correctly except when it sits exactly half way between two float32 neighbours
    (low 29 significand bits 1000...0, or a float32-subnormal result); only those few elements are redone with
    the TwoSum correction (``_fma32_twosum``)."""
    a64 = np.asarray(a, F32).astype(F64)
    b64 = np.asarray(b, F32).astype(F64)
    c64 = np.asarray(c, F32).astype(F64)
    s = a64 * b64  # exact: 24 + 24 significant bits fit in 53
    s += c64
    r = s.astype(F32)
    maybe = (s.view(I64) & _LOW29) == _HALF29
    tiny = np.abs(s) < _TINY
    tiny &= s != 0  # an exact zero: p + c == 0 has no rounding
    maybe |= tiny
    if np.any(maybe):
        if r.ndim == 0:
            return _fma32_twosum(a64, b64, c64)
        idx = np.nonzero(maybe)
        sub = [np.broadcast_to(v, s.shape)[idx] for v in (a64, b64, c64)]
        r[idx] = _fma32_twosum(*sub)
    return r


_LOW29, _HALF29, _TINY = np.int64((1 << 29) - 1), np.int64(1 << 28), 2.0 ** -125


def horner32(x, coeffs, first=None) -> np.ndarray:
    """Horner's rule with one float32 rounding per multiply-add (FMA3), as MLAS evaluates its polynomials:
    ``acc = fma(x, coeffs[0], coeffs[1])`` then ``acc = fma(acc, x, c)`` for the rest (with ``first``, an array:
    ``acc = first`` then ``acc = fma(acc, x, c)`` for every c). Each step is the float64 sum of the exact product
    rounded once to float32; a step that lands half way between two float32 (or in their subnormal range) marks
    its elements, which are recomputed step by step with ``fma32`` at the end (rare). The steps run in place in
    buffers of the output's shape."""
    x = np.asarray(x, F32)
    if x.ndim == 0:
        return horner32(x.reshape(1), coeffs, None if first is None else np.reshape(first, 1)).reshape(())
    x64 = x.astype(F64)
    shape = x.shape if first is None else np.broadcast_shapes(x.shape, np.shape(first))
    s = np.empty(shape, F64)
    if first is None:
        np.multiply(x64, F64(coeffs[0]), out=s)
        s += F64(coeffs[1])
        rest = coeffs[2:]
    else:
        s[...] = np.asarray(first, F32)
        rest = coeffs
    acc = np.empty(shape, F32)
    bad = np.zeros(shape, bool)
    work = (np.empty(shape, I64), np.empty(shape, bool))
    _mark_suspect(s, bad, work)
    for c in rest:
        np.copyto(acc, s, casting="same_kind")  # the float32 rounding of this step
        np.multiply(acc, x64, out=s)  # exact: 24 + 24 significant bits
        s += F64(c)
        _mark_suspect(s, bad, work)
    np.copyto(acc, s, casting="same_kind")
    if np.any(bad):
        at = np.nonzero(bad)
        xs = np.broadcast_to(x, acc.shape)[at]
        if first is None:
            a = fma32(xs, coeffs[0], coeffs[1])
        else:
            a = np.broadcast_to(np.asarray(first, F32), acc.shape)[at]
        for c in rest:
            a = fma32(a, xs, c)
        acc[at] = a
    return acc


def _mark_suspect(s: np.ndarray, bad: np.ndarray, work) -> None:
    """``bad |= suspect(s)`` without temporaries (``work``: int64 and bool buffers of s's shape); the subnormal
    range test is skipped when s has one sign and its smallest magnitude (a reduction) is outside that range."""
    ib, tb = work
    np.bitwise_and(s.view(I64), _LOW29, out=ib)
    np.equal(ib, _HALF29, out=tb)
    bad |= tb
    if s.size:
        lo, hi = s.min(), s.max()
        if (lo > 0 and lo >= _TINY) or (hi < 0 and hi <= -_TINY):
            return
    bad |= tiny_nonzero(s.view(I64))


def suspect(s: np.ndarray) -> np.ndarray:
    """float64 sums whose rounding to float32 may differ from the fused one: exact float32 midpoints (low 29
    significand bits 1000...0) and nonzero values in the float32 subnormal range."""
    bits = s.view(I64)
    bad = (bits & _LOW29) == _HALF29
    bad |= tiny_nonzero(bits)
    return bad


def tiny_nonzero(bits: np.ndarray) -> np.ndarray:
    """0 < |s| < 2^-125 for the int64 view ``bits`` of float64 values (the magnitude bits minus one, unsigned,
    below those of 2^-125 minus one: zero wraps around to the top)."""
    mag = bits & _MAG
    mag -= 1
    return mag.view(np.uint64) < _TINY_BITS


_MAG = np.int64(0x7FFFFFFFFFFFFFFF)
_TINY_BITS = np.uint64(np.float64(2.0 ** -125).view(np.int64) - 1)


def _fma32_twosum(a, b, c) -> np.ndarray:
    """``fma32`` for every element: float64 sum plus a TwoSum correction of the double rounding at midpoints."""
    a64 = np.asarray(a, F32).astype(F64)
    b64 = np.asarray(b, F32).astype(F64)
    c64 = np.asarray(c, F32).astype(F64)
    p = a64 * b64  # exact: 24 + 24 significant bits fit in 53
    s = p + c64
    bb = s - p
    err = (p - (s - bb)) + (c64 - bb)  # TwoSum: p + c == s + err exactly
    r = s.astype(F32)
    d = s - r.astype(F64)
    # double rounding only matters when s sits exactly half way between two float32 neighbours
    toward = np.where(d > 0, F32(np.inf), F32(-np.inf)).astype(F32)
    n = np.nextafter(r, toward)
    mid = (d != 0) & ((r.astype(F64) + n.astype(F64)) * 0.5 == s)
    fix = mid & (err != 0) & (np.sign(err) == np.sign(d))
    if np.any(fix):
        r = np.where(fix, n, r)
    return r.astype(F32)


def saturate_cast(q: np.ndarray, dtype) -> np.ndarray:
    lo, hi = int_range(dtype)
    return np.clip(q, lo, hi).astype(dtype)


def broadcast_param(p: np.ndarray, axis: int | None, ndim: int, shape: tuple[int, ...] | None = None,
                    block_size: int = 0) -> np.ndarray:
    """Reshape a per-axis (1-D) scale / zero point so it broadcasts along ``axis`` of an ``ndim`` tensor; with
    ``block_size`` (blocked quantisation), repeat each of its entries along ``axis`` over a block of the
    tensor's ``shape`` (the last block may be shorter)."""
    p = np.asarray(p)
    if block_size and p.ndim == ndim and p.size > 1:
        ax = axis % ndim
        p = np.repeat(p, block_size, axis=ax)
        return p if p.shape[ax] == shape[ax] else np.take(p, np.arange(shape[ax]), axis=ax)
    if p.ndim == 0 or p.size == 1 and axis is None:
        return p.reshape(())
    if p.ndim != 1:
        return p  # blocked / full-shape parameters: already broadcastable
    shape = [1] * ndim
    shape[axis % ndim] = -1
    return p.reshape(shape)


def quantize_linear(x: np.ndarray, scale, zero_point, dtype, axis: int | None = 1, block_size: int = 0,
                    saturate: bool = True) -> np.ndarray:
    """ONNX QuantizeLinear as onnxruntime's MLAS kernel computes it (``MlasQuantizeLinear``).

    ``q = clamp(rne(f32(x / scale)), qmin - zp, qmax - zp) + zp``: the division is a float32 division (not a
    multiplication by the reciprocal), the clamp happens in float before rounding, the zero point is added as an
    integer. Because the bounds are integers, clamping before or after rounding gives the same result. For codes
    of up to 16 bits every value involved is an integer float32 holds exactly, so it all stays in float32.
    Float codes (float8 / float6 / float4): ``cast(f32(x / scale) + zp)``, rounded to nearest even; float8 clipped
    to its largest finite value first when ``saturate``.
    """
    x = np.asarray(x, F32)
    s = broadcast_param(f32(scale), axis, x.ndim, x.shape, block_size)
    if np.dtype(dtype) in FLOAT_CODE_DTYPES:
        return _quantize_float(np.true_divide(x, s, dtype=F32), zero_point, np.dtype(dtype), axis, block_size,
                               saturate)
    z = broadcast_param(np.asarray(zero_point).astype(np.int64), axis, x.ndim, x.shape, block_size)
    lo, hi = int_range(dtype)
    v = np.asarray(np.true_divide(x, s, dtype=F32))  # 0-d inputs give a scalar: as an array for the in-place ops
    np.rint(v, out=v)
    if np.dtype(dtype) in NARROW_INT_DTYPES:
        zf = z.astype(F32)
        v = np.minimum(np.fmax(v, F32(lo) - zf), F32(hi) - zf) + zf
        return v.astype(np.int8).astype(dtype)
    if np.dtype(dtype).itemsize <= 2:
        if np.ndim(z) == 0:  # one zero point: clamp(v, lo - z, hi - z) + z (v an integer; integer bounds)
            zi = int(z)
            np.fmax(v, F32(lo - zi), out=v)  # fmax: NaN goes to the lower bound, as MINPS/MAXPS send it
            np.minimum(v, F32(hi - zi), out=v)
            out = np.empty(v.shape, dtype)
            np.add(v, F32(zi), out=out, casting="unsafe")  # exact integers of the code range, cast as written
            return out
        zf = z.astype(F32)
        v = np.fmax(v, F32(lo) - zf)
        return (np.minimum(v, F32(hi) - zf) + zf).astype(dtype)
    v = np.where(np.isnan(v), F32(-np.inf), v)
    q = np.clip(v.astype(F64) + z, lo, hi)
    return q.astype(dtype)


def _quantize_float(v: np.ndarray, zero_point, dtype: np.dtype, axis, block_size: int, saturate: bool) -> np.ndarray:
    if zero_point is not None and np.any(np.asarray(zero_point).astype(F32) != 0):
        v = v + broadcast_param(np.asarray(zero_point).astype(F32), axis, v.ndim, v.shape, block_size)
    if saturate and dtype in FLOAT8_DTYPES:
        big = F32(ml_dtypes.finfo(dtype).max)
        v = np.clip(v, -big, big)  # NaN stays NaN
    return v.astype(dtype)


def dequantize_linear(q: np.ndarray, scale, zero_point, axis: int | None = 1, block_size: int = 0) -> np.ndarray:
    """ONNX DequantizeLinear: ``f32(q - zp) * scale`` (exact integer difference, one float32 multiply); 8-bit
    codes with one scale read a table of the 256 results. Float codes (float8 / float6 / float4) are converted
    exactly to float32 (their zero point is zero)."""
    q = np.asarray(q)
    s = broadcast_param(f32(scale), axis, q.ndim, q.shape, block_size)
    if q.dtype in FLOAT_CODE_DTYPES:
        v = q.astype(F32)
        if zero_point is not None and np.any(np.asarray(zero_point).astype(F32) != 0):
            v = v - broadcast_param(np.asarray(zero_point).astype(F32), axis, q.ndim, q.shape, block_size)
        return (v * s).astype(F32)
    if zero_point is None:
        z = np.int64(0)
    else:
        z = broadcast_param(np.asarray(zero_point).astype(np.int64), axis, q.ndim, q.shape, block_size)
    if q.dtype in _SHORT_CODES:  # codes and zero points of up to 16 bits: q - z is exact in float32
        v = q.astype(F32)
        zf = np.asarray(z).astype(F32)
        if np.broadcast_shapes(v.shape, zf.shape, s.shape) != v.shape:
            return ((v - zf) * s).astype(F32)
        if np.any(zf):
            v -= zf
        v *= s
        return v
    return ((q.astype(np.int64) - z).astype(F32) * s).astype(F32)


_SHORT_CODES = tuple(np.dtype(d) for d in (np.int8, np.uint8, np.int16, np.uint16))


def requantize_mlas(acc: np.ndarray, multiplier: np.ndarray, zero_point: int, dtype, scaled=None) -> np.ndarray:
    """MLAS ``MlasRequantizeOutput``: ``clamp(rne(f32(acc) * multiplier), qmin - zp, qmax - zp) + zp``.

    ``acc`` is the int32 accumulator (bias already added), converted to float32 with round-to-nearest-even,
    multiplied by the float32 multiplier (broadcast per output channel), clamped in float, rounded half to even.
    ``scaled``: ``f32(acc) * multiplier`` when the caller has it already.
    """
    lo, hi = int_range(dtype)
    zp = int(zero_point)
    v = np.asarray(acc).astype(F32, copy=False) * f32(multiplier) if scaled is None else scaled
    v = np.rint(np.clip(v, F32(lo - zp), F32(hi - zp)))
    if np.dtype(dtype).itemsize <= 2:  # every value an integer below 2^16: exact in float32
        return (v + F32(zp)).astype(dtype)
    return (v.astype(np.int64) + zp).astype(dtype)


def apply_acc_width(acc: np.ndarray, bits: int | None, mode: str) -> tuple[np.ndarray, int]:
    """Saturate or wrap an exact int64 result to a signed ``bits``-wide accumulator; return (value, #changed)."""
    if bits is None:
        return acc, 0
    lo, hi = int_bounds(bits, True)
    if mode == "wrap":
        out = ((acc - lo) & ((1 << bits) - 1)) + lo
    else:
        out = np.clip(acc, lo, hi)
    return out, int(np.count_nonzero(out != acc))
