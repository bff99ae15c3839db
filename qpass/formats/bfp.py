"""Block floating point: blocks of ``block`` consecutive elements along ``axis`` share one exponent; each element
keeps an M-bit two's-complement mantissa (M counts the sign bit).

The shared exponent e of a block is the smallest one at which every element fits the mantissa range before
rounding, -2^e <= x < 2^e: e = floor(log2(max positive)) + 1, or ceil(log2 |min negative|) when that is larger.
This is the usual "exponent of the block's max |x|" except that a negative power of two uses the code -2^(M-1)
(which keeps quantize idempotent). Elements are then codes * 2^(e - (M-1)), codes in [-2^(M-1), 2^(M-1) - 1];
a positive value that rounds up to 2^(M-1) saturates (or wraps). All-zero blocks get e = 0.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .base import Format, QuantResult, as_float64, ceil_log2, empty_result, floor_log2
from .granularity import Granularity
from .grid import IntGrid
from .rounding import int_bounds, quantize_int


@dataclass(frozen=True)
class BlockFloat(Format):
    M: int = 8
    block: int = 16
    axis: int = -1

    def __post_init__(self):
        if not isinstance(self.M, (int, np.integer)) or not 2 <= self.M <= 32:
            raise QpassError(f"block floating point: mantissa bits must be in [2, 32], got {self.M!r}")
        if not isinstance(self.block, (int, np.integer)) or self.block < 1:
            raise QpassError(f"block floating point: block size must be >= 1, got {self.block!r}")

    @property
    def name(self) -> str:
        return f"bfp<m={self.M},block={self.block}" + (f",axis={self.axis}" if self.axis != -1 else "") + ">"

    @property
    def bits(self) -> int:
        return self.M

    @property
    def granularity(self) -> Granularity:
        return Granularity("group", axis=self.axis, size=self.block)

    def weight_grid(self, res, shape) -> IntGrid:
        """M-bit signed codes at one power-of-two scale per element (the block's 2^(e - (M-1)), repeated)."""
        return IntGrid(np.broadcast_to(np.asarray(res.scale, np.float64), tuple(shape)).copy(), 0, self.M, True)

    def exponents(self, x) -> np.ndarray:
        """The shared exponent of every block (compact shape, int64)."""
        x = np.asarray(x, np.float64)
        g = self.granularity
        pmax = g.reduce(np.maximum(x, 0.0), "max")
        nmax = g.reduce(np.maximum(-x, 0.0), "max")
        e = np.maximum(floor_log2(pmax) + 1, ceil_log2(nmax))
        return np.where(np.isfinite(e), e, 0).astype(np.int64)

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        x = as_float64(x, self.name, finite=True)
        if x.size == 0:
            return empty_result(x)
        shift = self.granularity.expand(self.exponents(x) - (self.M - 1), x.shape)
        qmin, qmax = int_bounds(self.M, True)
        codes, sat = quantize_int(np.ldexp(x, -shift), qmin, qmax, rounding, overflow, rng)
        return QuantResult(self.dequantize(codes, np.ldexp(1.0, shift)), codes, np.ldexp(1.0, shift), sat)

    def dequantize(self, codes, scale) -> np.ndarray:
        v = np.asarray(codes, np.float64) * np.asarray(scale, np.float64)
        return v.astype(np.float32) if self.M <= 24 else v
