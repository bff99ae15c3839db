"""Integer grids, code types and scale layouts shared by the dialect conversions.

A QONNX quantiser's grid is ``int_bounds(bits, signed, narrow)``; an ONNX QuantizeLinear -> (Clip) ->
DequantizeLinear chain's grid is the centred code range ``[max(type min, clip lo) - z, min(type max, clip hi) - z]``.
These helpers translate between the two and between QONNX's broadcast-shaped scales and ONNX's 1-D per-axis ones.
"""
from __future__ import annotations

import numpy as np

from qpass.errors import UnsupportedOpError
from qpass.ops.common import int_bounds
from qpass.ops.qdq import STORAGE_DTYPES

MAX_BITS = 16


def grid_of(lo: int, hi: int) -> tuple[int, bool, bool] | None:
    """(bits, signed, narrow) of the QONNX grid that is exactly [lo, hi], or None."""
    for bits in range(1, MAX_BITS + 1):
        for signed in (False, True):
            for narrow in (False, True):
                if (signed and bits == 1) or (narrow and bits == 1):
                    continue
                if int_bounds(bits, signed, narrow) == (lo, hi):
                    return bits, signed, narrow
    return None


def containing_grid(lo: int, hi: int) -> tuple[int, bool]:
    """(bits, signed) of the narrowest full QONNX grid holding [lo, hi]."""
    signed = lo < 0
    for bits in range(1 + signed, 33):
        a, b = int_bounds(bits, signed)
        if a <= lo and hi <= b:
            return bits, signed
    raise UnsupportedOpError(f"no integer grid of at most 32 bits holds [{lo}, {hi}]")


def storage_dtype(lo: int, hi: int) -> np.dtype | None:
    """The narrowest ONNX Q/DQ code type holding [lo, hi] (int8, uint8, int16, uint16), or None."""
    for dt in STORAGE_DTYPES:
        info = np.iinfo(dt)
        if info.min <= lo and hi <= info.max:
            return np.dtype(dt)
    return None


def full_range(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def scale_axis(scale: np.ndarray, rank: int | None) -> int | None | str:
    """None for a per-tensor scale, the axis along which a broadcast-shaped scale varies, or "no" (several axes, or
    an unknown rank)."""
    scale = np.asarray(scale)
    if scale.size == 1:
        return None
    nontrivial = [i for i, d in enumerate(scale.shape) if d != 1]
    if len(nontrivial) != 1 or rank is None or scale.ndim > rank:
        return "no"
    return rank - scale.ndim + nontrivial[0]


def per_axis_shape(n: int, axis: int | None, rank: int | None) -> tuple[int, ...]:
    """The broadcast shape of a QONNX parameter holding ``n`` values along ``axis`` of a rank-``rank`` tensor."""
    if axis is None or n == 1:
        return ()
    shape = [1] * int(rank)
    shape[axis] = n
    return tuple(shape)


def flat(v, axis) -> np.ndarray:
    """An ONNX Q/DQ parameter: a scalar for a per-tensor one, else 1-D."""
    v = np.asarray(v)
    return v.reshape(-1) if axis is not None else v.reshape(-1)[0]


def rank_of(t) -> int | None:
    shape = getattr(t, "shape", None)
    return None if shape is None else len(shape)
