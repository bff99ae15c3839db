"""Fixed point: W-bit two's-complement (or unsigned) integers scaled by 2^-F.

``FixedPoint(W, F)`` has a fixed fraction width: step 2^-F, codes in [-2^(W-1), 2^(W-1) - 1] (unsigned
[0, 2^W - 1]). Note that the second number is the *fraction* width (hls4ml's ap_fixed<W, I> and qonnx's
FIXED<w, i> give the integer width I = W - F; see ``ap_type``).

``DynamicFixedPoint(W)`` (Courbariaux et al.; Su et al. 2020, Algorithm 1) picks F from the data: the largest F at
which the fraction of elements outside the range (the overflow rate) is at most ``max_overflow_rate`` (0: no
overflow). An element overflows at F when x * 2^F lies outside [qmin, qmax] *before* rounding, so with rate 0 no
rounding mode can saturate. ``update_fraction`` is the paper's streaming step: F - 1 on overflow, F + 1 when the
finer format would not overflow either, else unchanged. F is chosen per tensor, channel or group.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .base import Format, QuantResult, as_float64, empty_result, value_dtype
from .granularity import TENSOR, Granularity, as_granularity
from .grid import IntGrid, compact
from .rounding import int_bounds, quantize_int


def _check_width(W, lo: int, hi: int, what: str) -> int:
    if isinstance(W, bool) or not isinstance(W, (int, np.integer)) or not lo <= W <= hi:
        raise QpassError(f"{what}: word width must be an integer in [{lo}, {hi}], got {W!r}")
    return int(W)


class _WordRange:
    """qmin / qmax of a W-bit (signed or unsigned) integer word, and the grid of a quantised weight (scale 2^-F,
    zero point 0); shared by the fixed-point formats."""

    @property
    def qmin(self) -> int:
        return int_bounds(self.W, self.signed)[0]

    @property
    def qmax(self) -> int:
        return int_bounds(self.W, self.signed)[1]

    @property
    def word_width(self) -> int:
        return self.W

    def _grid(self, scale, F: int | None) -> IntGrid:
        return IntGrid(scale, 0, self.W, self.signed, False, fraction=F)


@dataclass(frozen=True)
class FixedPoint(_WordRange, Format):
    W: int
    F: int
    signed: bool = True

    def __post_init__(self):
        _check_width(self.W, 1, 32, "fixed point")
        if isinstance(self.F, bool) or not isinstance(self.F, (int, np.integer)) or not -100 <= self.F <= 100:
            raise QpassError(f"fixed point: fraction width must be an integer in [-100, 100], got {self.F!r}")

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}fixed<{self.W},{self.F}>"

    @property
    def bits(self) -> int:
        return self.W

    @property
    def ap_type(self) -> str:
        """The HLS type: ap_fixed<W, I> with I = W - F integer bits."""
        return f"ap_{'' if self.signed else 'u'}fixed<{self.W},{self.W - self.F}>"

    @property
    def grid_step(self) -> float:
        return 2.0 ** -self.F

    @property
    def min_value(self) -> float:
        return self.qmin * 2.0 ** -self.F

    @property
    def max_value(self) -> float:
        return self.qmax * 2.0 ** -self.F

    @property
    def value_dtype(self):
        return value_dtype(self.W, -self.F, self.W - self.F)

    def quant_params(self, lo, hi) -> IntGrid:
        """Step 2^-F whatever the range."""
        return self._grid(np.float32(2.0 ** -self.F), self.F)

    def weight_grid(self, res, shape) -> IntGrid:
        return self._grid(np.asarray(res.scale, np.float64), self.F)

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        x = as_float64(x, self.name)
        codes, sat = quantize_int(np.ldexp(x, self.F), self.qmin, self.qmax, rounding, overflow, rng)
        return QuantResult(self.dequantize(codes), codes, np.asarray(self.grid_step), sat)

    def dequantize(self, codes, scale=None) -> np.ndarray:
        return np.ldexp(np.asarray(codes, np.float64), -self.F).astype(self.value_dtype)


def fraction_limits(x, W: int, signed: bool = True) -> np.ndarray:
    """Per element, the largest integer F with x * 2^F inside [qmin, qmax] (float64; +inf for 0, -inf if none)."""
    x = np.asarray(x, dtype=np.float64)
    m, k = np.frexp(np.abs(x))
    p = W - 1 if signed else W  # qmax = 2^p - 1, -qmin = 2^(W-1)
    # positive: m * 2^(k+F) <= 2^p - 1  <=>  F = p - k if m <= 1 - 2^-p, else p - k - 1
    pos = np.where(m <= 1.0 - 2.0**-p, p - k, p - k - 1).astype(np.float64)
    # negative: m * 2^(k+F) <= 2^(W-1)  <=>  F = W - k if m == 1/2, else W - 1 - k
    neg = np.where(m == 0.5, W - k, W - 1 - k).astype(np.float64) if signed else np.full(x.shape, -np.inf)
    return np.where(x > 0, pos, np.where(x < 0, neg, np.inf))


@dataclass(frozen=True)
class DynamicFixedPoint(_WordRange, Format):
    W: int
    signed: bool = True
    max_overflow_rate: float = 0.0
    granularity: Granularity = TENSOR
    min_fraction: int = -100
    max_fraction: int = 100
    granular = True

    def __post_init__(self):
        _check_width(self.W, 2, 32, "dynamic fixed point")
        object.__setattr__(self, "granularity", as_granularity(self.granularity))
        if not 0.0 <= float(self.max_overflow_rate) < 1.0:
            raise QpassError(f"dynamic fixed point: max_overflow_rate must be in [0, 1), got {self.max_overflow_rate}")
        if not -149 <= self.min_fraction <= self.max_fraction <= 149:
            raise QpassError(f"dynamic fixed point: bad fraction bounds [{self.min_fraction}, {self.max_fraction}]")

    @property
    def name(self) -> str:
        extra = f",rate={self.max_overflow_rate:g}" if self.max_overflow_rate else ""
        if (self.min_fraction, self.max_fraction) != (-100, 100):
            extra += f",fmin={self.min_fraction},fmax={self.max_fraction}"
        return f"{'' if self.signed else 'u'}dfp<{self.W}{extra}>{self.granularity.suffix}"

    @property
    def bits(self) -> int:
        return self.W

    @property
    def default_fraction(self) -> int:
        """F for blocks with no nonzero element: the F at which +-1 just fits."""
        return self.W - 2 if self.signed else self.W - 1

    def quant_params(self, lo, hi) -> IntGrid:
        """F chosen from the range's ends; unsigned when the range has no negative part (the signedness comes
        from the data too)."""
        fmt = dataclasses.replace(self, signed=False) if self.signed and lo >= 0 else self
        F = int(np.asarray(fmt.choose_fraction(np.array([lo, hi], np.float64))).reshape(-1)[0])
        return fmt._grid(np.float32(2.0 ** -F), F)

    def weight_grid(self, res, shape) -> IntGrid:
        return self._grid(compact(self.granularity, res.scale, shape), None)

    def fixed(self, F: int) -> FixedPoint:
        return FixedPoint(self.W, int(F), self.signed)

    def fraction_limits(self, x) -> np.ndarray:
        return fraction_limits(x, self.W, self.signed)

    def _out(self, F: np.ndarray):
        F = F.astype(np.int64)
        return int(F.reshape(-1)[0]) if self.granularity.kind == "tensor" else F

    def _clamp(self, F: np.ndarray, nonzero: np.ndarray) -> np.ndarray:
        F = np.where(nonzero, F, self.default_fraction)
        return np.clip(np.nan_to_num(F, posinf=self.max_fraction, neginf=self.min_fraction),
                       self.min_fraction, self.max_fraction)

    def choose_fraction(self, x):
        """The largest F whose overflow rate is <= max_overflow_rate (an int per tensor, else a compact array)."""
        x = as_float64(x, self.name, finite=True)
        g = self.granularity
        lim = g.to_blocks(self.fraction_limits(x), np.inf)
        n = g.to_blocks(np.ones(x.shape), 0.0).sum(axis=1)
        k = np.minimum(np.floor(float(self.max_overflow_rate) * n + 1e-9), np.maximum(n - 1, 0)).astype(np.int64)
        F = np.take_along_axis(np.sort(lim, axis=1), k[:, None], axis=1)[:, 0] if lim.shape[1] else \
            np.full(lim.shape[0], np.inf)
        nonzero = g.to_blocks(x != 0, False).any(axis=1)
        return self._out(g.from_blocks(self._clamp(F, nonzero), x.shape))

    def overflow_rate(self, x, F) -> np.ndarray:
        """Per block, the fraction of elements of ``x`` that overflow at fraction width ``F`` (compact shape)."""
        x = as_float64(x, self.name, finite=True)
        g = self.granularity
        Fb = g.expand(np.asarray(F, np.float64), x.shape)
        over = g.reduce((self.fraction_limits(x) < Fb).astype(np.float64), "sum")
        return over / np.maximum(g.counts(x.shape), 1)

    def update_fraction(self, prev_F, x):
        """One step of Su et al.'s Algorithm 1 (in fraction-width terms: F = -e)."""
        x = as_float64(x, self.name, finite=True)
        g = self.granularity
        F = np.broadcast_to(np.asarray(prev_F, np.float64), g.param_shape(x.shape))
        r = float(self.max_overflow_rate)
        new = np.where(self.overflow_rate(x, F) > r, F - 1, np.where(self.overflow_rate(x, F + 1) <= r, F + 1, F))
        return self._out(np.clip(new, self.min_fraction, self.max_fraction))

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None, fraction=None) -> QuantResult:
        """Quantise with the chosen F (or a given ``fraction``, e.g. one tracked by ``update_fraction``)."""
        x = as_float64(x, self.name, finite=True)
        if x.size == 0:
            return empty_result(x)
        g = self.granularity
        F = self.choose_fraction(x) if fraction is None else fraction
        Fb = g.expand(np.asarray(F, np.float64), x.shape)
        codes, sat = quantize_int(np.ldexp(x, Fb.astype(np.int64)), self.qmin, self.qmax, rounding, overflow, rng)
        vals = np.ldexp(codes.astype(np.float64), -Fb.astype(np.int64))
        vd = value_dtype(self.W, -self.max_fraction, self.W - self.min_fraction)
        return QuantResult(vals.astype(vd), codes, np.ldexp(1.0, -Fb.astype(np.int64)), sat)
