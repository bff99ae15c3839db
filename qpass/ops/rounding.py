"""QONNX's rounding modes as the quant ops compute them: in numpy on float32 (``round_array``, qonnx's
``resolve_rounding_mode``) and as standard ONNX ops on a graph (``lower_rounding``), the same operations in the
same order, so both give identical bits. (``qpass.formats.rounding`` rounds ties exactly in float64 for the
number formats; the ops keep qonnx's float32 formulas.)
"""
from __future__ import annotations

import numpy as np

from qpass.errors import UnsupportedOpError


def round_array(y: np.ndarray, mode: str) -> np.ndarray:
    """The seven QONNX rounding modes (ROUND = HALF_EVEN)."""
    m = (mode or "ROUND").upper()
    if m in ("ROUND", "HALF_EVEN"):
        return np.round(y)
    if m == "CEIL":
        return np.ceil(y)
    if m == "FLOOR":
        return np.floor(y)
    if m == "UP":  # away from zero
        return np.sign(y) * np.ceil(np.abs(y))
    if m == "DOWN":  # toward zero
        return np.fix(y)
    if m == "HALF_UP":  # half away from zero
        return np.sign(y) * np.floor(np.abs(y) + y.dtype.type(0.5))
    if m == "HALF_DOWN":  # half toward zero
        return np.sign(y) * np.ceil(np.abs(y) - y.dtype.type(0.5))
    raise ValueError(f"unknown rounding mode {mode!r}")


def lower_rounding(b, y, mode: str, out=None):
    """``round_array(y, mode)`` as ONNX ops appended to GraphBuilder ``b``; returns the rounded tensor."""
    mode = mode.upper()
    if mode in ("ROUND", "HALF_EVEN"):
        return b.op("Round", [y], out=out)
    if mode == "FLOOR":
        return b.op("Floor", [y], out=out)
    if mode == "CEIL":
        return b.op("Ceil", [y], out=out)
    sign = b.op("Sign", [y])
    mag = b.op("Abs", [y])
    if mode == "DOWN":
        r = b.op("Floor", [mag])
    elif mode == "UP":
        r = b.op("Ceil", [mag])
    elif mode == "HALF_UP":  # ties away from zero
        r = b.op("Floor", [b.op("Add", [mag, b.const(0.5)])])
    elif mode == "HALF_DOWN":  # ties toward zero
        r = b.op("Ceil", [b.op("Sub", [mag, b.const(0.5)])])
    else:
        raise UnsupportedOpError(f"rounding mode {mode!r} cannot be lowered to ONNX")
    return b.op("Mul", [sign, r], out=out)
