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
from .memo import kept
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


def _kept_plan(ex, node, tag: str, scale, zero_point, make):
    """(``make()``, whether it was kept): a node's plan derived from its scale and zero point, kept on the executor
    for as long as the same parameter arrays come back (constants: worked out once, not per call, as in a Loop
    body's steps)."""
    scratch = getattr(ex, "scratch", None)  # none yet while the executor plans its fusions
    if scratch is None:
        return make(), False
    return kept(scratch, (tag, node.name), (scale, zero_point), make)


def _q_plan(node, scale, zero_point):
    """(code dtype, zero point, float32 scale, qmin - zp, qmax - zp) of a QuantizeLinear with one scale and zero
    point to codes of up to 16 bits (``int8_jit.quantize_q``'s arguments); None for any other form."""
    dt = QuantizeLinear.code_dtype(node, zero_point)
    if dt not in SHORT_INT_DTYPES or np.size(scale) != 1 or (zero_point is not None and np.size(zero_point) != 1):
        return None
    lo, hi = int_range(dt)
    z = 0 if zero_point is None else int(np.asarray(zero_point).reshape(-1)[0])
    return dt, z, F32(np.asarray(scale).reshape(-1)[0]), F32(lo - z), F32(hi - z)


@register("QuantizeLinear", check=_check_q, with_executor=True)
def quantize(ex, node, x, scale, zero_point=None):
    plan, again = _kept_plan(ex, node, "q", scale, zero_point, lambda: _q_plan(node, scale, zero_point))
    if plan is not None and (again or x.size >= JIT_MIN_SIZE):  # a node's later calls: compiled at any size
        k = compiled.jit()
        if k is not None:  # the same codes, one compiled pass
            dt, z, s, bl, bh = plan
            out = np.empty(x.shape, dt)
            k.quantize_q(np.ascontiguousarray(x, F32).reshape(-1), s, z, bl, bh, out.reshape(-1))
            return out
    dt = QuantizeLinear.code_dtype(node, zero_point)
    if dt not in CODE_DTYPES:
        raise ValueError(f"QuantizeLinear to {dt} is not supported")
    if zero_point is None and dt not in FLOAT_CODE_DTYPES:
        zero_point = np.zeros(np.shape(scale), dt)
    return quantize_linear(x.astype(F32), scale, zero_point, dt, QuantizeLinear.axis(node, x.ndim),
                           QuantizeLinear.attr(node, "block_size"), bool(QuantizeLinear.attr(node, "saturate")))


@register("DequantizeLinear", check=_check_dq, with_executor=True)
def dequantize(ex, node, x, scale, zero_point=None):
    plan, again = _kept_plan(ex, node, "dq", scale, zero_point, lambda: _dq_plan(node, scale, zero_point))
    if plan is not None and x.dtype in SHORT_INT_DTYPES and (again or x.size >= JIT_MIN_SIZE):
        k = compiled.jit()
        if k is not None:  # the same numbers, one compiled pass
            out = np.empty(x.shape, F32)
            k.dequantize_q(np.ascontiguousarray(x).reshape(-1), plan[0], plan[1], out.reshape(-1))
            return out
    y = dequantize_linear(x, scale, zero_point, DequantizeLinear.axis(node, x.ndim),
                          DequantizeLinear.attr(node, "block_size"))
    dt = DequantizeLinear.attr(node, "output_dtype")
    sdt = onnx.helper.tensor_dtype_to_np_dtype(dt) if dt else np.asarray(scale).dtype
    return y.astype(sdt) if sdt.kind == "f" and sdt != F32 else y


def _dq_plan(node, scale, zero_point):
    """(zero point, float32 scale) of a DequantizeLinear with one float32 scale and zero point, float32 output
    (``int8_jit.dequantize_q``'s arguments, for 8/16-bit codes); None for any other form."""
    if np.size(scale) != 1 or np.asarray(scale).dtype != F32 or \
            (zero_point is not None and np.size(zero_point) != 1) or \
            DequantizeLinear.attr(node, "output_dtype") or DequantizeLinear.attr(node, "block_size"):
        return None
    z = 0 if zero_point is None else int(np.asarray(zero_point).reshape(-1)[0])
    return z, F32(np.asarray(scale).reshape(-1)[0])
