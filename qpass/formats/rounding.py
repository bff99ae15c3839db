"""Rounding to integers and integer overflow, shared by every format.

Rounding modes carry QONNX's names (``Quant``'s ``rounding_mode``) plus STOCHASTIC:

=========== ===================================== ==========================
mode        rule                                  0.5 1.5 2.5 -0.5 -2.5
=========== ===================================== ==========================
ROUND       nearest, ties to even (= HALF_EVEN)    0   2   2   -0   -2
HALF_EVEN   nearest, ties to even                  0   2   2   -0   -2
HALF_UP     nearest, ties away from zero           1   2   3   -1   -3
HALF_DOWN   nearest, ties toward zero              0   1   2   -0   -2
CEIL        toward +inf                            1   2   3   -0   -2
FLOOR       toward -inf                            0   1   2   -1   -3
UP          away from zero                         1   2   3   -1   -3
DOWN        toward zero (truncate)                 0   1   2   -0   -2
STOCHASTIC  floor(x + u), u ~ U[0, 1)              unbiased: E[r(x)] = x
=========== ===================================== ==========================

The tie modes are computed exactly from ``x - floor(x)`` (qonnx's ``floor(|x| + 0.5)`` rounds the sum first and so
sends 0.49999999999999994 to 1). STOCHASTIC is ``floor(x) + (u >= 1 - frac(x))``, i.e. floor(x + u) without the
rounding of the sum; ``rng`` is an int seed or a ``numpy.random.Generator`` (None: a fresh unseeded generator).

Overflow: ``saturate`` clamps to [qmin, qmax]; ``wrap`` wraps two's-complement style modulo qmax - qmin + 1.
Both report how many elements were outside the range.
"""
from __future__ import annotations

import numpy as np

from ..errors import QpassError

ROUNDING_MODES = ("ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN", "CEIL", "FLOOR", "UP", "DOWN", "STOCHASTIC")
OVERFLOW_MODES = ("saturate", "wrap")


def int_bounds(bits: int, signed: bool, narrow: bool = False) -> tuple[int, int]:
    """The integer grid of a ``bits``-wide word, as QONNX defines it: signed [-2^(b-1) (+1 if narrow), 2^(b-1) - 1],
    unsigned [0, 2^b - 1 (-1 if narrow)]. The one definition every format, op and pass uses."""
    if signed:
        return -(2 ** (bits - 1)) + int(narrow), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1 - int(narrow)


def rounding_mode(mode: str) -> str:
    """The canonical (upper-case) name of a rounding mode, or a QpassError naming the known ones."""
    m = str(mode).strip().upper()
    if m not in ROUNDING_MODES:
        raise QpassError(f"unknown rounding mode {mode!r} (known: {', '.join(ROUNDING_MODES)})")
    return m


def overflow_mode(mode: str, allowed: tuple[str, ...] = OVERFLOW_MODES, fmt: str = "") -> str:
    m = str(mode).strip().lower()
    if m not in allowed:
        what = f" for {fmt}" if fmt else ""
        raise QpassError(f"unknown overflow mode {mode!r}{what} (known: {', '.join(allowed)})")
    return m


def make_rng(rng=None) -> np.random.Generator:
    """A Generator from an int seed, a Generator (used as is) or None (fresh, unseeded)."""
    if isinstance(rng, np.random.Generator):
        return rng
    if rng is None or isinstance(rng, (int, np.integer)):
        return np.random.default_rng(rng)
    raise QpassError(f"rng must be an int seed or a numpy Generator, not {type(rng).__name__}")


def round_values(x, mode: str = "ROUND", rng=None) -> np.ndarray:
    """Round every element of ``x`` to an integer (float64 result; inf and NaN pass through)."""
    m = rounding_mode(mode)
    x = np.asarray(x, dtype=np.float64)
    if m in ("ROUND", "HALF_EVEN"):
        return np.rint(x)
    if m == "CEIL":
        return np.ceil(x)
    if m == "FLOOR":
        return np.floor(x)
    if m == "DOWN":
        return np.trunc(x)
    with np.errstate(invalid="ignore"):
        if m == "UP":
            return np.copysign(np.ceil(np.abs(x)), x)
        if m == "STOCHASTIC":
            u = make_rng(rng).random(x.shape)
            f = np.floor(x)
            return f + (u >= 1.0 - (x - f))
        a = np.abs(x)
        fa = np.floor(a)
        d = a - fa
        up = d >= 0.5 if m == "HALF_UP" else d > 0.5
        return np.copysign(fa + up, x)


def apply_overflow(q: np.ndarray, qmin: int, qmax: int, mode: str = "saturate") -> tuple[np.ndarray, int]:
    """Bring integer-valued floats ``q`` into [qmin, qmax]; returns (int64 codes, number of elements outside)."""
    m = overflow_mode(mode)
    q = np.asarray(q, dtype=np.float64)
    outside = (q < qmin) | (q > qmax)
    n = int(np.count_nonzero(outside))
    if np.isnan(q).any():
        raise QpassError("cannot quantise NaN to an integer code")
    if m == "saturate":
        q = np.clip(q, qmin, qmax)
    elif n:
        if not np.isfinite(q).all():
            raise QpassError("cannot wrap an infinite value into an integer range")
        q = np.mod(q - qmin, qmax - qmin + 1) + qmin
    return q.astype(np.int64), n


def quantize_int(y, qmin: int, qmax: int, rounding: str = "ROUND", overflow: str = "saturate",
                 rng=None) -> tuple[np.ndarray, int]:
    """Round ``y`` (already divided by the scale) and bring it into [qmin, qmax]: (int64 codes, overflow count)."""
    return apply_overflow(round_values(y, rounding, rng), qmin, qmax, overflow)
