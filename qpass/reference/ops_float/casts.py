"""Cast and CastLike to every numeric ONNX type, the narrow ones (bfloat16, float8, float4, 4- and 2-bit
integers) through ``ml_dtypes`` exactly as onnx's reference does: round to nearest even; with ``saturate`` (the
default) the float8 types clip out-of-range values and infinities to their largest finite value; float8e8m0
rounds by ``round_mode``; integers truncate toward zero and 2-/4-bit integers wrap."""
from __future__ import annotations

from types import MappingProxyType

import ml_dtypes
import numpy as np
import onnx
from onnx import TensorProto as T

from ..registry import register
from .common import F32

_SATURATING = frozenset({T.FLOAT8E4M3FN, T.FLOAT8E4M3FNUZ, T.FLOAT8E5M2, T.FLOAT8E5M2FNUZ})
_E8M0 = getattr(T, "FLOAT8E8M0", -1)
_ROUND_MODES = ("up", "down", "nearest")


def _lookup_dtype(to: int) -> np.dtype | None:
    try:
        dt = onnx.helper.tensor_dtype_to_np_dtype(int(to))
    except Exception:  # noqa: BLE001 - an unknown type number
        return None
    return None if dt.kind in "OcU" else dt


#: ONNX type number -> numpy dtype of the numeric types (a fixed table: onnx's lookup is slow per call)
_DTYPES = MappingProxyType({int(v): _lookup_dtype(v) for v in T.DataType.values()})


def _numpy_dtype(to: int) -> np.dtype | None:
    return _DTYPES.get(int(to))


def _user_dtype(dt: np.dtype) -> bool:
    """A dtype numpy itself does not define (ml_dtypes: bfloat16, float8/6/4, int4/int2, ...)."""
    return dt.num >= 256


def check_cast_to(to, round_mode="up") -> str | None:
    """Why a cast to ONNX type ``to`` cannot run, or None."""
    dt = _numpy_dtype(to) if to is not None else None
    if dt is None:
        name = T.DataType.Name(int(to)) if to is not None and int(to) in T.DataType.values() else str(to)
        return f"cast to {name} is not supported (numeric types only)"
    if int(to) == _E8M0 and not hasattr(onnx.numpy_helper, "to_float8e8m0"):
        return "cast to FLOAT8E8M0 needs onnx >= 1.18"
    if round_mode not in _ROUND_MODES:
        return f"round_mode {round_mode!r} is not supported"
    return None


def cast_to(x: np.ndarray, to: int, saturate: bool = True, round_mode: str = "up") -> np.ndarray:
    """``x`` cast to ONNX type ``to`` with ONNX Cast semantics."""
    dt = _numpy_dtype(to)
    x = np.asarray(x)
    if x.dtype == dt:
        return x.copy()
    if dt == np.bool_:
        return x.astype(F32) != 0 if _user_dtype(x.dtype) else x != 0
    if _user_dtype(x.dtype) and not _user_dtype(dt):
        x = x.astype(F32)  # every ml_dtypes value is exact in float32
    if int(to) == _E8M0:
        return onnx.numpy_helper.to_float8e8m0(x, saturate, round_mode).astype(dt)
    if int(to) in _SATURATING and saturate and x.dtype.kind == "f":
        info = ml_dtypes.finfo(dt)
        return np.clip(x, x.dtype.type(float(info.min)), x.dtype.type(float(info.max))).astype(dt)
    if (dt.kind in "iu" or dt in (ml_dtypes.int4, ml_dtypes.uint4, ml_dtypes.int2, ml_dtypes.uint2)) \
            and x.dtype.kind == "f":
        return np.trunc(x).astype(dt)
    return x.astype(dt)


def _check_cast(node):
    return check_cast_to(node.attr("to"), node.attr("round_mode", "up"))


@register("Cast", check=_check_cast)
def cast(node, x):
    return cast_to(x, int(node.attr("to")), bool(node.attr("saturate", 1)), node.attr("round_mode", "up"))


def _check_cast_like(node):
    return check_cast_to(T.FLOAT, node.attr("round_mode", "up"))  # the target type is known only at run time


@register("CastLike", check=_check_cast_like)
def cast_like(node, x, like):
    to = onnx.helper.np_dtype_to_tensor_dtype(like.dtype)
    return cast_to(x, to, bool(node.attr("saturate", 1)), node.attr("round_mode", "up"))
