"""Binary and ternary weights with a scale alpha per tensor, row (channel) or group (BWN / TWN / SYQ).

* Binary: q = alpha * (+1 if x >= 0 else -1), alpha = mean |x| over the block (XNOR-Net / BWN).
* Ternary: q = alpha * sign(x) where |x| > threshold, else 0; threshold = ``factor`` * mean |x| (TWN's
  0.7 E|W|) or the given absolute ``threshold``; alpha = mean |x| over the elements above the threshold.

Rounding: every deterministic mode uses these sign / threshold rules. STOCHASTIC rounds x / alpha (clipped to
[-1, 1]) stochastically onto the code set ({-1, +1} or {-1, 0, +1}), so E[q] = x wherever |x| <= alpha.
``saturated`` counts elements with |x| > alpha (mapped to +-alpha). Only ``saturate`` overflow exists here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .base import Format, QuantResult, as_float64, empty_result
from .granularity import TENSOR, Granularity, as_granularity
from .grid import IntGrid, compact
from .rounding import overflow_mode, round_values, rounding_mode


def _mean(g: Granularity, a: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Per-block mean of ``a`` (over ``mask``), compact shape; 0 for blocks with no element."""
    num = g.reduce(a if mask is None else a * mask, "sum")
    den = g.counts(a.shape) if mask is None else g.reduce(mask.astype(np.int64), "sum")
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 0)


def _checked(fmt: Format, x, rounding: str, overflow: str) -> tuple[str, np.ndarray]:
    """The rounding mode and ``x`` as finite float64 (these formats know only the saturate overflow mode)."""
    mode = rounding_mode(rounding)
    overflow_mode(overflow, ("saturate",), fmt.name)
    return mode, as_float64(x, fmt.name, finite=True)


def _finish(fmt: Format, x: np.ndarray, codes: np.ndarray, alpha_c: np.ndarray) -> QuantResult:
    a = fmt.granularity.expand(alpha_c, x.shape)
    sat = int(np.count_nonzero((np.abs(x) > a) & (a > 0)))
    return QuantResult((codes * a.astype(np.float64)).astype(np.float32), codes, a, sat)


@dataclass(frozen=True)
class Binary(Format):
    granularity: Granularity = TENSOR
    bits = 1
    granular = True

    def __post_init__(self):
        object.__setattr__(self, "granularity", as_granularity(self.granularity))

    @property
    def name(self) -> str:
        return "binary" + self.granularity.suffix

    def quant_params(self, lo, hi) -> IntGrid:
        """The sign of the activation: {-1, +1} at scale 1, whatever the range."""
        return IntGrid(np.float32(1.0), 0, 1, True, False, bipolar=True)

    def weight_grid(self, res, shape) -> IntGrid:
        return IntGrid(compact(self.granularity, res.scale, shape), 0, 1, True, False, bipolar=True)

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        mode, x = _checked(self, x, rounding, overflow)
        if x.size == 0:
            return empty_result(x)
        alpha = _mean(self.granularity, np.abs(x)).astype(np.float32)
        if mode == "STOCHASTIC":
            a = self.granularity.expand(alpha, x.shape).astype(np.float64)
            p = np.clip(np.divide(x, a, out=np.ones(x.shape), where=a > 0) * 0.5 + 0.5, 0.0, 1.0)
            codes = 2 * round_values(p, mode, rng).astype(np.int64) - 1
        else:
            codes = np.where(x >= 0, 1, -1).astype(np.int64)
        return _finish(self, x, codes, alpha)

    def dequantize(self, codes, scale) -> np.ndarray:
        return (np.asarray(codes, np.int64) * np.asarray(scale, np.float32)).astype(np.float32)


@dataclass(frozen=True)
class Ternary(Format):
    factor: float = 0.7
    threshold: float | None = None
    granularity: Granularity = TENSOR
    bits = 2
    granular = True

    def __post_init__(self):
        object.__setattr__(self, "granularity", as_granularity(self.granularity))
        if not float(self.factor) >= 0 or (self.threshold is not None and not float(self.threshold) >= 0):
            raise QpassError(f"ternary: threshold factor and threshold must be >= 0, got {self.factor}, "
                             f"{self.threshold}")
        object.__setattr__(self, "factor", float(self.factor))
        if self.threshold is not None:
            object.__setattr__(self, "threshold", float(self.threshold))

    @property
    def name(self) -> str:
        arg = f"<threshold={self.threshold:g}>" if self.threshold is not None else \
            "" if self.factor == 0.7 else f"<{self.factor:g}>"
        return "ternary" + arg + self.granularity.suffix

    def quant_params(self, lo, hi) -> IntGrid:
        """Codes {-1, 0, +1} (2-bit narrow) at scale max(|lo|, |hi|) (1 for an all-zero range)."""
        return IntGrid(np.float32(max(abs(lo), abs(hi)) or 1.0), 0, 2, True, True)

    def weight_grid(self, res, shape) -> IntGrid:
        scale = compact(self.granularity, res.scale, shape)
        return IntGrid(np.where(scale > 0, scale, 1.0), 0, 2, True, True)

    def thresholds(self, x) -> np.ndarray:
        """The per-block threshold (compact shape)."""
        x = np.asarray(x, np.float64)
        if self.threshold is not None:
            return np.full(self.granularity.param_shape(x.shape), self.threshold)
        return self.factor * _mean(self.granularity, np.abs(x))

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        mode, x = _checked(self, x, rounding, overflow)
        if x.size == 0:
            return empty_result(x)
        g = self.granularity
        ax = np.abs(x)
        above = ax > g.expand(self.thresholds(x), x.shape)
        alpha = _mean(g, ax, above).astype(np.float32)
        if mode == "STOCHASTIC":
            a = g.expand(alpha, x.shape).astype(np.float64)
            y = np.clip(np.divide(x, a, out=np.zeros(x.shape), where=a > 0), -1.0, 1.0)
            codes = round_values(y, mode, rng).astype(np.int64)
        else:
            codes = (np.sign(x) * above).astype(np.int64)
        return _finish(self, x, codes, alpha)

    def dequantize(self, codes, scale) -> np.ndarray:
        return (np.asarray(codes, np.int64) * np.asarray(scale, np.float32)).astype(np.float32)
