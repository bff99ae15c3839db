"""Small floating-point formats: 1 sign bit, E exponent bits, M mantissa bits, exponent bias, with subnormals.

``specials`` says what the top exponent holds:

* "ieee": infinities and NaNs (fp16, bf16, fp8_e5m2); max = (2 - 2^-M) * 2^(2^E - 2 - bias)
* "fn":   no infinities, only S.1111.111 is NaN (fp8_e4m3 = E4M3FN, max 448); max = (2 - 2^(1-M)) * 2^(2^E-1-bias)
* "none": every code is a finite number (fp6_e2m3, fp6_e3m2, fp4_e2m1 of the OCP MX formats)

Rounding is applied to x / ulp(x) (the spacing of the binade of |x|, or the subnormal spacing), so ROUND is
IEEE round-to-nearest-even and the results equal ml_dtypes / numpy casts from float32 for the presets.
Overflow: "saturate" (finite values beyond max become +-max; +-inf stays inf if the format has it, else +-max)
or "inf" (a plain cast: overflow gives +-inf, or +-NaN in "fn" formats). ``codes`` are the bit patterns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .base import Format, QuantResult, as_float64, value_dtype
from .rounding import overflow_mode, round_values

SPECIALS = ("ieee", "fn", "none")


@dataclass(frozen=True)
class MiniFloat(Format):
    E: int
    M: int
    bias: int | None = None
    specials: str = "ieee"

    def __post_init__(self):
        if not isinstance(self.E, (int, np.integer)) or not isinstance(self.M, (int, np.integer)) \
                or not 1 <= self.E <= 11 or not 0 <= self.M <= 52:
            raise QpassError(f"minifloat: need 1 <= E <= 11 and 0 <= M <= 52, got E={self.E!r}, M={self.M!r}")
        if self.specials not in SPECIALS:
            raise QpassError(f"minifloat: specials must be one of {', '.join(SPECIALS)}, got {self.specials!r}")
        if self.specials == "fn" and self.M < 1 or self.specials == "ieee" and self.E < 2:
            raise QpassError(f"minifloat: E{self.E}M{self.M} has no room for {self.specials} special values")
        if self.bias is None:
            object.__setattr__(self, "bias", 2 ** (self.E - 1) - 1)
        if self.emax > 1023 or self.emin - self.M < -1074:
            raise QpassError(f"minifloat: E{self.E}M{self.M} with bias {self.bias} exceeds float64's range")

    @property
    def name(self) -> str:
        for n, f in PRESETS.items():
            if f == self:
                return n
        extra = (f",bias={self.bias}" if self.bias != 2 ** (self.E - 1) - 1 else "") + \
            (f",specials={self.specials}" if self.specials != "ieee" else "")
        return f"minifloat<e={self.E},m={self.M}{extra}>"

    @property
    def bits(self) -> int:
        return 1 + self.E + self.M

    @property
    def has_inf(self) -> bool:
        return self.specials == "ieee"

    @property
    def has_nan(self) -> bool:
        return self.specials != "none"

    @property
    def emin(self) -> int:
        """Exponent of the smallest normal number."""
        return 1 - self.bias

    @property
    def emax(self) -> int:
        """Exponent of the largest finite number."""
        return 2**self.E - (2 if self.specials == "ieee" else 1) - self.bias

    @property
    def max_value(self) -> float:
        top = 2 ** (self.M + 1) - (2 if self.specials == "fn" else 1)  # largest significand, in ulps
        return float(np.ldexp(float(top), self.emax - self.M))

    @property
    def min_normal(self) -> float:
        return float(np.ldexp(1.0, self.emin))

    @property
    def grid_step(self) -> float:
        """The subnormal spacing (smallest positive value)."""
        return float(np.ldexp(1.0, self.emin - self.M))

    @property
    def value_dtype(self):
        return value_dtype(self.M + 1, self.emin - self.M, self.emax + 1)

    def quantize(self, x, rounding="ROUND", overflow="saturate", rng=None) -> QuantResult:
        ov = overflow_mode(overflow, ("saturate", "inf") if self.has_nan else ("saturate",), self.name)
        x = as_float64(x, self.name, allow_nan=self.has_nan)
        a = np.abs(x)
        finite = np.isfinite(x)
        _, k = np.frexp(np.where(finite, a, 1.0))
        shift = np.maximum(k - 1, self.emin) - self.M  # log2 of the spacing at |x|
        r = np.ldexp(round_values(np.ldexp(np.where(finite, x, 0.0), -shift), rounding, rng), shift)
        r = np.where(finite, np.copysign(np.abs(r), x), x)
        big = np.abs(r) > self.max_value
        over = big & finite
        if ov == "saturate":
            sat = big if not self.has_inf else over
            r = np.where(sat, np.copysign(self.max_value, x), r)
        else:
            sat = over
            r = np.where(over, np.copysign(np.inf if self.has_inf else np.nan, x), r)
            if not self.has_inf:
                r = np.where(np.isinf(x), np.copysign(np.nan, x), r)
        return QuantResult(r.astype(self.value_dtype), self.encode(r), np.asarray(1.0), int(np.count_nonzero(sat)))

    def encode(self, v) -> np.ndarray:
        """Bit patterns (int64) of values that are already representable (NaN -> the canonical quiet NaN)."""
        v = np.asarray(v, np.float64)
        a = np.abs(v)
        fin = np.isfinite(v)
        _, k = np.frexp(np.where(fin, a, 1.0))
        sub = a < self.min_normal
        expf = np.where(sub, 0, k - 1 + self.bias)
        mant = np.where(sub, np.ldexp(a, self.M - self.emin), np.ldexp(a, self.M - (k - 1)) - 2.0**self.M)
        top = 2**self.E - 1
        nan_m = 2 ** (self.M - 1) if self.specials == "ieee" else 2**self.M - 1
        expf = np.where(fin, expf, top)
        mant = np.where(fin, mant, np.where(np.isnan(v), nan_m, 0))
        sign = np.signbit(v)
        return (sign.astype(np.int64) << (self.E + self.M)) | (expf.astype(np.int64) << self.M) | mant.astype(np.int64)

    def dequantize(self, codes, scale=None) -> np.ndarray:
        """Bit patterns -> values."""
        c = np.asarray(codes, np.int64)
        sign = np.where((c >> (self.E + self.M)) & 1, -1.0, 1.0)
        expf = (c >> self.M) & (2**self.E - 1)
        mant = (c & (2**self.M - 1)).astype(np.float64)
        mag = np.where(expf == 0, np.ldexp(mant, self.emin - self.M),
                       np.ldexp(mant + 2.0**self.M, expf - self.bias - self.M))
        top = expf == 2**self.E - 1
        if self.specials == "ieee":
            mag = np.where(top, np.where(mant == 0, np.inf, np.nan), mag)
        elif self.specials == "fn":
            mag = np.where(top & (mant == 2**self.M - 1), np.nan, mag)
        return (sign * mag).astype(self.value_dtype)


PRESETS: dict[str, MiniFloat] = {}
PRESETS.update({
    "fp8_e4m3": MiniFloat(4, 3, specials="fn"),
    "fp8_e5m2": MiniFloat(5, 2),
    "fp16": MiniFloat(5, 10),
    "bf16": MiniFloat(8, 7),
    "fp6_e2m3": MiniFloat(2, 3, specials="none"),
    "fp6_e3m2": MiniFloat(3, 2, specials="none"),
    "fp4_e2m1": MiniFloat(2, 1, specials="none"),
})
