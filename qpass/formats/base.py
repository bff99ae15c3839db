"""What every number format shares: the QuantResult it returns and the small Format protocol."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import QpassError


@dataclass(frozen=True, eq=False)
class QuantResult:
    """``values``: dequantised values on the format's grid (float32, float64 where float32 is not exact);
    ``codes``: int64 integer codes / mantissas / bit patterns (None where a format has none);
    ``scale``: the scale used, broadcastable against ``values``; ``saturated``: elements that were outside the
    representable range (clamped or wrapped); ``zero_point``: affine formats only."""

    values: np.ndarray
    codes: np.ndarray | None
    scale: np.ndarray
    saturated: int
    zero_point: np.ndarray | None = None


class Format:
    """A number format: ``quantize(x, rounding, overflow, rng) -> QuantResult`` and a stable ``name``."""

    #: bits per element (shared scales / exponents not counted)
    bits: int = 0

    @property
    def name(self) -> str:  # pragma: no cover - every format overrides it
        raise NotImplementedError

    @property
    def grid_step(self) -> float | None:
        """Smallest spacing between adjacent representable values, or None when it depends on the data."""
        return None

    def quantize(self, x, rounding: str = "ROUND", overflow: str = "saturate", rng=None) -> QuantResult:
        raise NotImplementedError  # pragma: no cover

    def __call__(self, x, rounding: str = "ROUND", overflow: str = "saturate", rng=None) -> np.ndarray:
        """Fake quantisation: the dequantised values only."""
        return self.quantize(x, rounding, overflow, rng).values

    def __str__(self) -> str:
        return self.name


def as_float64(x, fmt: str, allow_nan: bool = False, finite: bool = False) -> np.ndarray:
    """``x`` as float64; NaN is an error unless ``allow_nan``, +-inf too when ``finite`` (data-dependent scales)."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiub":
        raise QpassError(f"{fmt}: cannot quantise an array of dtype {x.dtype}")
    x = x.astype(np.float64)
    if not allow_nan and np.isnan(x).any():
        raise QpassError(f"{fmt}: cannot quantise NaN")
    if finite and np.isinf(x).any():
        raise QpassError(f"{fmt}: cannot quantise +-inf with a scale computed from the data")
    return x


def value_dtype(mant_bits: int, min_exp: float, max_exp: float) -> type:
    """float32 when every value m * 2^e (|m| < 2^mant_bits, min_exp <= e, value < 2^max_exp) is exact in it."""
    return np.float32 if mant_bits <= 24 and min_exp >= -149 and max_exp <= 128 else np.float64


def empty_result(x: np.ndarray, dtype=np.float32) -> QuantResult:
    return QuantResult(np.zeros(x.shape, dtype), np.zeros(x.shape, np.int64), np.asarray(1.0, np.float32), 0)


def floor_log2(a: np.ndarray) -> np.ndarray:
    """Exact floor(log2(a)) for a > 0 (float64 array); -inf for 0."""
    m, k = np.frexp(a)
    return np.where(a > 0, k - 1.0, -np.inf)


def ceil_log2(a: np.ndarray) -> np.ndarray:
    """Exact ceil(log2(a)) for a > 0; -inf for 0."""
    m, k = np.frexp(a)
    return np.where(a > 0, np.where(m == 0.5, k - 1.0, k * 1.0), -np.inf)
