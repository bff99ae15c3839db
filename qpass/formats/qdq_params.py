"""Affine integer quantisation parameters (Jacob et al. 2018): real = scale * (q - zero_point).

Scales are float32 (what QuantizeLinear stores); every integer value is derived from the stored float32 scale so
that QuantizeLinear, DequantizeLinear and the golden simulator agree exactly.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .affine import range_params

INT_RANGES = {
    "int8": (-128, 127, np.int8),
    "uint8": (0, 255, np.uint8),
    "int16": (-32768, 32767, np.int16),
    "uint16": (0, 65535, np.uint16),
    "int32": (-(2**31), 2**31 - 1, np.int32),
}


@dataclass(frozen=True)
class AffineParams:
    scale: np.ndarray  # float32, scalar or 1-D
    zero_point: np.ndarray  # integer dtype, same shape as scale
    dtype: str
    axis: int | None = None

    @property
    def qmin(self) -> int:
        return INT_RANGES[self.dtype][0]

    @property
    def qmax(self) -> int:
        return INT_RANGES[self.dtype][1]

    def as_dict(self) -> dict:
        return {"scale": np.asarray(self.scale).tolist(), "zero_point": np.asarray(self.zero_point).tolist(),
                "dtype": self.dtype, "axis": self.axis}


def activation_params(lo: float, hi: float, dtype: str = "int8", symmetric: bool = False) -> AffineParams:
    """Asymmetric (or symmetric) per-tensor parameters for a range; the range always includes 0 (the affine
    formats' rule, ``affine.range_params``; symmetric zero point 0 or the middle of an unsigned range)."""
    qmin, qmax, npdt = INT_RANGES[dtype]
    scale, zp = range_params(float(lo), float(hi), qmin, qmax, symmetric, 0 if qmin < 0 else (qmax + 1) // 2)
    return AffineParams(np.asarray(scale, np.float32), np.asarray(zp, npdt), dtype)


def unit_grid_params(dtype: str = "uint8") -> AffineParams:
    """[0, 1) in 256 steps of 1/256, the zero point at the bottom of an 8-bit range (QLinearSoftmax's output grid)."""
    qmin, _, npdt = INT_RANGES[dtype]
    return AffineParams(np.asarray(1 / 256, np.float32), np.asarray(qmin, npdt), dtype)


def symmetric_weight_params(w: np.ndarray, axis: int | None, qmax: int = 127, dtype: str = "int8") -> AffineParams:
    """max-abs scale per channel (axis) or per tensor (axis None), narrow range [-qmax, qmax], zero point 0."""
    w = np.asarray(w, dtype=np.float64)
    if axis is None:
        m = np.abs(w).max() if w.size else 0.0
        scale = np.asarray(m / qmax if m > 0 else 1.0, np.float32)
    else:
        red = tuple(i for i in range(w.ndim) if i != axis)
        m = np.abs(w).max(axis=red) if w.size else np.zeros(w.shape[axis])
        scale = np.where(m > 0, m / qmax, 1.0).astype(np.float32)
    zp = np.zeros(scale.shape, INT_RANGES[dtype][2])
    return AffineParams(scale, zp, dtype, axis)


def _bshape(p: AffineParams, ndim: int):
    if p.axis is None or np.ndim(p.scale) == 0:
        return np.float64(p.scale), np.int64(p.zero_point)
    shape = [1] * ndim
    shape[p.axis] = -1
    return p.scale.astype(np.float64).reshape(shape), p.zero_point.astype(np.int64).reshape(shape)


def quantize(x: np.ndarray, p: AffineParams, qmin: int | None = None, qmax: int | None = None) -> np.ndarray:
    """QuantizeLinear semantics: round half to even, saturate."""
    s, z = _bshape(p, np.ndim(x))
    q = np.round(np.asarray(x, np.float64) / s) + z
    lo = p.qmin if qmin is None else qmin
    hi = p.qmax if qmax is None else qmax
    return np.clip(q, lo, hi).astype(INT_RANGES[p.dtype][2])


def dequantize(q: np.ndarray, p: AffineParams) -> np.ndarray:
    s, z = _bshape(p, np.ndim(q))
    return ((q.astype(np.int64) - z) * s).astype(np.float32)
