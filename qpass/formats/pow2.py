"""Powers of two (logarithmic quantisation, Su et al. eq. 7): q = sign(x) * 2^round(log2 |x|), plus 0.

Representable magnitudes: 0 and 2^e for exp_min <= e <= exp_max. Rounding happens in the log domain on the
magnitude, so ties are at sqrt(2) * 2^k and the modes read on |x|: ROUND/HALF_EVEN (tie to the even exponent),
HALF_UP (tie to the larger magnitude), HALF_DOWN (smaller magnitude), UP / DOWN (larger / smaller magnitude),
CEIL / FLOOR (toward +inf / -inf, i.e. by the sign of x). STOCHASTIC instead picks between the two neighbouring
powers with linear probabilities, so it is unbiased: E[q] = x. Below 2^exp_min the neighbours are 0 and 2^exp_min
and the mode is applied linearly (nearest modes flush |x| < 2^(exp_min - 1) to 0); above 2^exp_max values
saturate. Unsigned formats send negative values to 0 (counted as saturated).

``codes`` are signed exponent indices: 0 for zero, sign * (e - exp_min + 1) otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .base import Format, QuantResult, as_float64, value_dtype
from .rounding import make_rng, overflow_mode, round_values, rounding_mode


@dataclass(frozen=True)
class PowerOfTwo(Format):
    exp_min: int = -8
    exp_max: int = 0
    signed: bool = True

    def __post_init__(self):
        if not isinstance(self.exp_min, (int, np.integer)) or not isinstance(self.exp_max, (int, np.integer)) \
                or not -1074 <= self.exp_min <= self.exp_max <= 1023:
            raise QpassError(f"power of two: need integer exp_min <= exp_max, got {self.exp_min!r}, {self.exp_max!r}")

    @property
    def name(self) -> str:
        return f"{'' if self.signed else 'u'}pow2<e={self.exp_min}..{self.exp_max}>"

    @property
    def levels(self) -> int:
        return self.exp_max - self.exp_min + 1

    @property
    def bits(self) -> int:
        return int(np.ceil(np.log2((2 if self.signed else 1) * self.levels + 1)))

    @property
    def grid_step(self) -> float:
        return 2.0**self.exp_min

    @property
    def max_value(self) -> float:
        return 2.0**self.exp_max

    @property
    def value_dtype(self):
        return value_dtype(1, self.exp_min, self.exp_max + 1)

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        mode = rounding_mode(rounding)
        overflow_mode(overflow, ("saturate",), self.name)
        x = as_float64(x, self.name)
        a = np.abs(x)
        neg = x < 0
        m, k = np.frexp(np.where(np.isfinite(a), a, 1.0))
        lo = k - 1  # 2^lo <= a < 2^(lo+1)
        small = a < 2.0**self.exp_min  # neighbours 0 and 2^exp_min: linear rounding
        lin = np.ldexp(a, -self.exp_min)  # |x| in units of the smallest power (< 1 where small)
        if mode == "STOCHASTIC":
            u = make_rng(rng).random(x.shape)
            up = u >= 1.0 - (2.0 * m - 1.0)  # linear position between 2^lo and 2^(lo+1)
            small_idx = (u >= 1.0 - lin).astype(np.int64)
        else:
            f = np.log2(np.where(m > 0, 2.0 * m, 1.0))  # position in the log domain, [0, 1)
            ties = {"ROUND": lo % 2 == 1, "HALF_EVEN": lo % 2 == 1, "HALF_UP": True, "HALF_DOWN": False}
            if mode in ties:
                up = (f > 0.5) | ((f == 0.5) & ties[mode])
            else:
                up = (f > 0) & {"UP": True, "DOWN": False, "CEIL": ~neg, "FLOOR": neg}[mode]
            small_idx = np.abs(round_values(np.copysign(lin, x), mode)).astype(np.int64)
        e = np.where(np.isfinite(a), lo + up, self.exp_max + 1)
        sat = ~small & (e > self.exp_max)
        idx = np.where(small, small_idx, np.minimum(e, self.exp_max) - self.exp_min + 1)
        if not self.signed:
            sat = np.where(neg, idx > 0, sat)
            idx = np.where(neg, 0, idx)
        codes = (np.where(neg, -1, 1) * idx).astype(np.int64)
        return QuantResult(self.dequantize(codes), codes, np.asarray(1.0), int(np.count_nonzero(sat)))

    def dequantize(self, codes, scale=None) -> np.ndarray:
        c = np.asarray(codes, np.int64)
        v = np.where(c == 0, 0.0, np.sign(c) * np.ldexp(1.0, np.abs(c) - 1 + self.exp_min))
        return v.astype(self.value_dtype)
