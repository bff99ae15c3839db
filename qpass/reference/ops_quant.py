"""Reference kernels of the ops in ``qpass.ops.OPS`` (semantics in /work/shared/anchors.md, section 1).

Every op class with an ``execute`` (QONNX's Quant / IntQuant, BipolarQuant, Trunc, MultiThreshold, in each of
their domains) is registered from the table with its ``check``; the semantics live in the class. ONNX's
QuantizeLinear / DequantizeLinear run the ONNX kernels of ``numerics`` under their classes' checks.
"""
from __future__ import annotations

import ml_dtypes
import numpy as np
import onnx

from qpass.ops import OPS, DequantizeLinear, QuantizeLinear
from qpass.ops.qdq import STORAGE_DTYPES
from .numerics import FLOAT_CODE_DTYPES, NARROW_INT_DTYPES, dequantize_linear, int_range, quantize_linear
from .ops_integer import compiled
from .registry import register

F32 = np.float32
#: every code type QuantizeLinear / DequantizeLinear have a kernel for
CODE_DTYPES = tuple(map(np.dtype, STORAGE_DTYPES)) + NARROW_INT_DTYPES + FLOAT_CODE_DTYPES
SHORT_INT_DTYPES = tuple(np.dtype(d) for d in (np.int8, np.uint8, np.int16, np.uint16))
# the compiled QuantizeLinear from this many elements (smaller ones gain little, and a process's first call pays
# numba's compilation or cache load: seconds, against the per-case limit of tiny conformance cases)
JIT_MIN_SIZE = 256
OUT_DTYPES = tuple(np.dtype(d) for d in (np.float32, np.float16, ml_dtypes.bfloat16))


def _register_op_classes() -> None:
    for (domain, op_type), op in OPS.items():
        if op.execute is not None:
            register(op_type, domain, check=op.check)(op.execute)


_register_op_classes()


def _known_dtype(ex, name: str) -> np.dtype | None:
    """The type of a constant or of a declared graph input; None when only a run would tell."""
    if name in ex.initializers:
        return np.asarray(ex.initializers[name]).dtype
    return ex.input_dtypes.get(name)


def _check_q(ex, node) -> str | None:
    """What the reference cannot quantise to, found before any computation: the code type (``output_dtype``, else
    the zero point's when it is a constant or a declared input) must be an integer of 2 to 16 bits or a float8 /
    float6 / float4 type; the division runs in float32 (``precision``, when given, must say so)."""
    if QuantizeLinear.attr(node, "block_size") < 0:
        return "block_size must not be negative"
    dt = QuantizeLinear.attr(node, "output_dtype")
    if dt and onnx.helper.tensor_dtype_to_np_dtype(dt) not in CODE_DTYPES:
        return f"output_dtype {onnx.TensorProto.DataType.Name(dt)} is not a quantised type"
    if node.has_input(2):
        zdt = _known_dtype(ex, node.inputs[2])
        if zdt is not None and zdt not in CODE_DTYPES:
            return f"zero point of type {zdt} is not a quantised type"
    prec = node.attr("precision", 0)
    if prec and prec != onnx.TensorProto.FLOAT:
        return f"precision {onnx.TensorProto.DataType.Name(prec)}: only float32 division has a kernel"
    return None


def _check_dq(ex, node) -> str | None:
    """DequantizeLinear: codes of a quantised type (when known before running), a float ``output_dtype``."""
    if DequantizeLinear.attr(node, "block_size") < 0:
        return "block_size must not be negative"
    dt = DequantizeLinear.attr(node, "output_dtype")
    if dt and onnx.helper.tensor_dtype_to_np_dtype(dt) not in OUT_DTYPES:
        return f"output_dtype {onnx.TensorProto.DataType.Name(dt)} is not a float type"
    xdt = _known_dtype(ex, node.inputs[0])
    if xdt is not None and xdt not in CODE_DTYPES + (np.dtype(np.int32),):
        return f"codes of type {xdt} are not a quantised type"
    return None


@register("QuantizeLinear", check=_check_q, with_executor=True)
def quantize(ex, node, x, scale, zero_point=None):
    dt = QuantizeLinear.code_dtype(node, zero_point)
    if dt not in CODE_DTYPES:
        raise ValueError(f"QuantizeLinear to {dt} is not supported")
    if zero_point is None and dt not in FLOAT_CODE_DTYPES:
        zero_point = np.zeros(np.shape(scale), dt)
    if dt in SHORT_INT_DTYPES and np.size(scale) == 1 and np.size(zero_point) == 1 and x.size >= JIT_MIN_SIZE:
        k = compiled.jit()
        if k is not None:  # the same codes, one compiled pass
            lo, hi = int_range(dt)
            z = int(np.asarray(zero_point).reshape(-1)[0])
            out = np.empty(x.shape, dt)
            k.quantize_q(np.ascontiguousarray(x, F32).reshape(-1), F32(np.asarray(scale).reshape(-1)[0]), z,
                         F32(lo - z), F32(hi - z), out.reshape(-1))
            return out
    return quantize_linear(x.astype(F32), scale, zero_point, dt, QuantizeLinear.axis(node, x.ndim),
                           QuantizeLinear.attr(node, "block_size"), bool(QuantizeLinear.attr(node, "saturate")))


@register("DequantizeLinear", check=_check_dq, with_executor=True)
def dequantize(ex, node, x, scale, zero_point=None):
    y = _dequantize_jit(node, x, scale, zero_point)
    if y is not None:
        return y
    y = dequantize_linear(x, scale, zero_point, DequantizeLinear.axis(node, x.ndim),
                          DequantizeLinear.attr(node, "block_size"))
    dt = DequantizeLinear.attr(node, "output_dtype")
    sdt = onnx.helper.tensor_dtype_to_np_dtype(dt) if dt else np.asarray(scale).dtype
    return y.astype(sdt) if sdt.kind == "f" and sdt != F32 else y


def _dequantize_jit(node, x, scale, zero_point) -> np.ndarray | None:
    """DequantizeLinear of 8/16-bit codes with one float32 scale by ``int8_jit.dequantize_q`` (the same numbers,
    one compiled pass), or None when that does not apply."""
    if x.dtype not in SHORT_INT_DTYPES or np.size(scale) != 1 or np.asarray(scale).dtype != F32 or \
            x.size < JIT_MIN_SIZE or (zero_point is not None and np.size(zero_point) != 1) or \
            DequantizeLinear.attr(node, "output_dtype") or DequantizeLinear.attr(node, "block_size"):
        return None
    k = compiled.jit()
    if k is None:
        return None
    out = np.empty(x.shape, F32)
    z = 0 if zero_point is None else int(np.asarray(zero_point).reshape(-1)[0])
    k.dequantize_q(np.ascontiguousarray(x).reshape(-1), z, F32(np.asarray(scale).reshape(-1)[0]), out.reshape(-1))
    return out
