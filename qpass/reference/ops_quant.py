"""Reference kernels of the ops in ``qpass.ops.OPS`` (semantics in /work/shared/anchors.md, section 1).

Every op class with an ``execute`` (QONNX's Quant / IntQuant, BipolarQuant, Trunc, MultiThreshold, in each of
their domains) is registered from the table with its ``check``; the semantics live in the class. ONNX's
QuantizeLinear / DequantizeLinear run the ONNX kernels of ``numerics`` under their classes' checks.
"""
from __future__ import annotations

import numpy as np

from qpass.ops import OPS, DequantizeLinear, QuantizeLinear
from qpass.ops.qdq import STORAGE_DTYPES
from .numerics import dequantize_linear, quantize_linear
from .registry import register

F32 = np.float32



def _register_op_classes() -> None:
    for (domain, op_type), op in OPS.items():
        if op.execute is not None:
            register(op_type, domain, check=op.check)(op.execute)


_register_op_classes()


@register("QuantizeLinear", check=QuantizeLinear.check)
def quantize(node, x, scale, zero_point=None):
    dt = QuantizeLinear.code_dtype(node, zero_point)
    if dt not in map(np.dtype, STORAGE_DTYPES):
        raise ValueError(f"QuantizeLinear to {dt} is not supported")
    zp = np.zeros(np.shape(scale), dt) if zero_point is None else zero_point
    return quantize_linear(x.astype(F32), scale, zp, dt, QuantizeLinear.axis(node, x.ndim))


@register("DequantizeLinear", check=DequantizeLinear.check)
def dequantize(node, x, scale, zero_point=None):
    y = dequantize_linear(x, scale, zero_point, DequantizeLinear.axis(node, x.ndim))
    sdt = np.asarray(scale).dtype
    return y.astype(sdt) if sdt.kind == "f" and sdt != F32 else y
