"""Affine integer quantisation (Jacob et al. 2018; qonnx Quant): real = scale * (q - zero_point).

``Affine(W, signed, narrow, symmetric)`` with W in [2, 16]; bounds follow qonnx (narrow also trims the top of an
unsigned range). Scales are float32 (what ONNX stores) and all integer work uses that float32 value.

Parameters come from ``scale``/``zero_point`` (a scalar, a per-channel vector or a compact array, see
granularity.py) or, when ``scale`` is None, from the data per block:

* asymmetric: ``params_from_range(min, max)``; the range always includes 0; scale = (hi - lo) / (qmax - qmin),
  zero point = round_half_even(qmin - lo / scale) clipped to [qmin, qmax] (onnxruntime's compute_scale_zp)
* symmetric: scale = max|x| / (2^(W-1) - 1); zero point 0 (signed) or 2^(W-1) (unsigned)

``range_params`` is that rule on a plain integer range; the QDQ pass's parameters (``qdq_params``) use it too.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .base import Format, QuantResult, as_float64, empty_result
from .fixed import _check_width
from .granularity import TENSOR, Granularity, as_granularity
from .grid import IntGrid, compact, pow2_fraction
from .rounding import int_bounds, quantize_int


def _frozen_param(v):
    """Arrays -> nested tuples so that the frozen dataclass stays hashable and comparable."""
    if v is None:
        return None
    a = np.asarray(v)
    return float(a) if a.ndim == 0 and a.dtype.kind == "f" else int(a) if a.ndim == 0 else \
        tuple(_frozen_param(r) for r in a)


def range_params(lo, hi, qmin: int, qmax: int, symmetric: bool = False,
                 symmetric_zero_point: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(float32 scale, int64 zero point) mapping real ranges [lo, hi] (arrays broadcast elementwise; each range is
    widened to include 0) onto the integers [qmin, qmax]. Asymmetric: scale = (hi - lo) / (qmax - qmin), zero point
    round_half_even(qmin - lo / scale) clipped; symmetric: scale = max(|lo|, |hi|) / ((qmax - qmin) // 2) and the
    given zero point. A scale that is 0 or not finite becomes 1."""
    lo = np.minimum(np.asarray(lo, np.float64), 0.0)
    hi = np.maximum(np.asarray(hi, np.float64), 0.0)
    if symmetric:
        scale = (np.maximum(-lo, hi) / ((qmax - qmin) // 2)).astype(np.float32)
        zp = np.full(scale.shape, symmetric_zero_point, np.int64)
        return np.where((scale > 0) & np.isfinite(scale), scale, np.float32(1.0)), zp
    scale = ((hi - lo) / (qmax - qmin)).astype(np.float32)
    scale = np.where((scale > 0) & np.isfinite(scale), scale, np.float32(1.0))
    zp = np.clip(np.rint(qmin - lo / scale.astype(np.float64)), qmin, qmax).astype(np.int64)
    return scale, zp


@dataclass(frozen=True)
class Affine(Format):
    W: int = 8
    signed: bool = True
    narrow: bool = False
    symmetric: bool = False
    granularity: Granularity = TENSOR
    scale: object = None
    zero_point: object = None
    granular = True

    def __post_init__(self):
        _check_width(self.W, 2, 16, "affine")
        object.__setattr__(self, "granularity", as_granularity(self.granularity))
        object.__setattr__(self, "scale", _frozen_param(None if self.scale is None else
                                                        np.asarray(self.scale, np.float32)))
        object.__setattr__(self, "zero_point", _frozen_param(None if self.zero_point is None else
                                                             np.asarray(self.zero_point, np.int64)))
        if self.scale is None and self.zero_point is not None:
            raise QpassError(f"{self.name}: a zero point needs a scale")
        if self.scale is not None and not (np.asarray(self.scale) > 0).all():
            raise QpassError(f"{self.name}: scales must be positive")

    @property
    def name(self) -> str:
        base = f"{'' if self.signed else 'u'}int{self.W}"
        return base + ("_sym" if self.symmetric else "") + ("_narrow" if self.narrow else "") + \
            self.granularity.suffix

    @property
    def bits(self) -> int:
        return self.W

    @property
    def word_width(self) -> int:
        return self.W

    @property
    def qmin(self) -> int:
        return int_bounds(self.W, self.signed, self.narrow)[0]

    @property
    def qmax(self) -> int:
        return int_bounds(self.W, self.signed, self.narrow)[1]

    @property
    def grid_step(self) -> float | None:
        return float(self.scale) if isinstance(self.scale, float) else None

    def params_from_range(self, lo, hi) -> tuple[np.ndarray, np.ndarray]:
        """(float32 scale, int64 zero point) for ranges [lo, hi] (arrays broadcast elementwise)."""
        return range_params(lo, hi, self.qmin, self.qmax, self.symmetric, 0 if self.signed else 2 ** (self.W - 1))

    def quant_params(self, lo, hi) -> IntGrid:
        """The given scale and zero point (their first values), else ``params_from_range(lo, hi)``."""
        s, z = self.params(None) if self.scale is not None else self.params_from_range(lo, hi)
        scale = np.float32(np.asarray(s).reshape(-1)[0])
        return IntGrid(scale, int(np.asarray(z).reshape(-1)[0]), self.W, self.signed, self.narrow,
                       fraction=pow2_fraction(scale))

    def weight_grid(self, res, shape) -> IntGrid:
        zp = compact(self.granularity, res.zero_point if res.zero_point is not None else 0, shape)
        return IntGrid(compact(self.granularity, res.scale, shape), zp, self.W, self.signed, self.narrow)

    def params(self, x) -> tuple[np.ndarray, np.ndarray]:
        """The (compact) scale and zero point used for ``x``: the given ones or ones computed from the data."""
        if self.scale is not None:
            zp = 0 if self.zero_point is None else self.zero_point
            return np.asarray(self.scale, np.float32), np.asarray(zp, np.int64)
        x = np.asarray(x, np.float64)
        g = self.granularity
        if self.symmetric:
            m = g.reduce(np.abs(x), "max")
            return self.params_from_range(-m, m)
        return self.params_from_range(g.reduce(x, "min"), g.reduce(x, "max"))

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        x = as_float64(x, self.name, finite=self.scale is None)
        if x.size == 0:
            return empty_result(x)
        scale, zp = self.params(x)
        s = self.granularity.expand(scale, x.shape)
        z = self.granularity.expand(zp, x.shape)
        codes, sat = quantize_int(x / s.astype(np.float64) + z, self.qmin, self.qmax, rounding, overflow, rng)
        return QuantResult(self.dequantize(codes, s, z), codes, s, sat, z)

    def dequantize(self, codes, scale=None, zero_point=None) -> np.ndarray:
        """(codes - zero_point) * scale; without ``scale``, the format's own (given) parameters are used."""
        codes = np.asarray(codes, np.int64)
        if scale is None:
            if self.scale is None:
                raise QpassError(f"{self.name}: dequantize needs a scale (this format computes it from the data)")
            scale, zero_point = (self.granularity.expand(p, codes.shape) for p in self.params(None))
        z = 0 if zero_point is None else np.asarray(zero_point, np.int64)
        return ((codes - z) * np.asarray(scale, np.float32).astype(np.float64)).astype(np.float32)
