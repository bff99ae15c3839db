"""What every number format shares: the QuantResult it returns and the small Format protocol."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from ..errors import QpassError
from .granularity import Granularity, as_granularity
from .grid import IntGrid


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
    """A number format: ``quantize(x, rounding, overflow, rng) -> QuantResult`` and a stable ``name``, and the
    answers a quantisation pass needs: its parameters for a calibrated range (``quant_params``), the integer grid of
    a quantised weight (``weight_grid``) or else its float storage annotation (``datatype``), and its granularity."""

    #: bits per element (shared scales / exponents not counted)
    bits: int = 0
    #: parameters per tensor, channel or group (a ``granularity`` field; ``with_granularity`` replaces it)
    granular = False

    @property
    def name(self) -> str:  # pragma: no cover - every format overrides it
        raise NotImplementedError

    @property
    def grid_step(self) -> float | None:
        """Smallest spacing between adjacent representable values, or None when it depends on the data."""
        return None

    def quantize(self, x, rounding: str = "ROUND", overflow: str = "saturate", rng=None) -> QuantResult:
        raise NotImplementedError  # pragma: no cover

    @property
    def word_width(self) -> int | None:
        """W for formats made of one W-bit integer word per element (fixed, dfp, affine), else None."""
        return None

    @property
    def datatype(self) -> str:
        """The datatype annotation of a tensor stored in this format without an integer grid."""
        return self.name.upper()

    def quant_params(self, lo: float, hi: float) -> IntGrid | None:
        """The integer grid of an activation quantiser for the calibrated range [lo, hi], or None when the
        format has no activation quantiser (it is for weights only)."""
        return None

    def weight_grid(self, res: QuantResult, shape: tuple[int, ...]) -> IntGrid | None:
        """The integer grid the quantised weight ``res`` (of a tensor of ``shape``) lies on, or None when the
        values have none and are stored as float constants (annotated with ``datatype``)."""
        return None

    def with_granularity(self, g) -> "Format":
        if not self.granular:
            raise QpassError(f"{self.name} takes no granularity")
        return dataclasses.replace(self, granularity=as_granularity(g))

    def for_weight(self, spec: str | None, out_axis: int, red_axis: int) -> "Format":
        """This format with a weight granularity spec ('tensor', 'channel' / 'row': per output channel, 'group:G':
        groups of G along the reduction axis) placed on a weight's axes; unchanged for None or a format without
        a granularity."""
        if spec is None or not self.granular:
            return self
        return self.with_granularity(Granularity.for_weight(spec, out_axis, red_axis))

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
