"""QONNX ``FloatQuant``: minifloat quantisation (qonnx PR #182, Brevitas' FP8 export), output dequantised.

    FloatQuant(x, scale, exponent_bitwidth, mantissa_bitwidth, exponent_bias, max_val;
               rounding_mode="ROUND", has_inf=0, has_nan=0, has_subnormal=0, saturation=1)

qonnx's ``float_quant`` in the same float32 operations: ``X = x / scale``; ``e = max(floor(log2(|X| + tiny)) - M,
1 - bias - M)``; ``q = 2^e * round_mode(X / 2^e)``; clamp to ``[-m, m]`` with ``m = min(max_val, (2 - 2^-M) *
2^(2^E - 1 - bias))``; without saturation the values beyond ``m`` become inf (has_inf) or NaN (has_nan); out =
``q * scale``. Subnormals are always representable (qonnx computes them whatever ``has_subnormal`` says).
"""
from __future__ import annotations

import numpy as np
import onnx

from qpass.ops.base import Attr, F32, OpDef, f32, scalar
from qpass.ops.common import QONNX_DOMAIN, QPASS_DOMAIN, ROUNDING_MODES
from qpass.ops.rounding import round_array

#: ONNX float8 types a FloatQuant equals exactly (QuantizeLinear saturate=1 rounds half to even and saturates):
#: (exponent bits, mantissa bits, exponent bias, largest value) -> ONNX type
FLOAT8_TYPES = {(4, 3, 7, 448.0): onnx.TensorProto.FLOAT8E4M3FN, (5, 2, 15, 57344.0): onnx.TensorProto.FLOAT8E5M2}


class FloatQuant(OpDef):
    op_type = "FloatQuant"
    #: False: it rounds onto a minifloat grid, not an integer one (qpass.passes.dialects treats it as a quantiser)
    quantizer = False
    domains = (QONNX_DOMAIN, QPASS_DOMAIN)
    attrs = {"rounding_mode": Attr(str, "ROUND", ROUNDING_MODES), "has_inf": Attr(int, 0), "has_nan": Attr(int, 0),
             "has_subnormal": Attr(int, 0), "saturation": Attr(int, 1)}

    @staticmethod
    def max_value(e_bits: float, m_bits: float, bias: float, max_val=None) -> float:
        """The largest magnitude: qonnx's ``compute_max_val``, capped by ``max_val``."""
        top = (2.0 ** e_bits) - 1.0 - bias
        m = float(np.sum(2.0 ** np.arange(0, -1.0 * m_bits - 1.0, -1.0))) * 2.0 ** top
        return m if max_val is None else float(min(m, float(scalar(max_val))))

    @classmethod
    def check(cls, node) -> str | None:
        why = super().check(node)
        if why is None and not cls.attr(node, "saturation") and not (cls.attr(node, "has_inf")
                                                                     or cls.attr(node, "has_nan")):
            return "saturation 0 needs has_inf or has_nan (qonnx refuses it too)"
        return why

    @classmethod
    def execute(cls, node, x, scale, e_bits, m_bits, bias, max_val):
        X = (f32(x) / f32(scale)).astype(F32)
        m_b, bias_f = f32(m_bits), f32(bias)
        e = np.floor(np.log2(np.abs(X) + np.finfo(F32).tiny)) - m_b
        e = np.exp2(np.maximum(e, F32(1) - bias_f - m_b)).astype(F32)
        q = (e * round_array((X / e).astype(F32), cls.attr(node, "rounding_mode"))).astype(F32)
        top = F32(cls.max_value(scalar(e_bits), scalar(m_bits), scalar(bias), max_val))
        over, under, inf = q > top, q < -top, np.isinf(q)
        q = np.clip(q, -top, top)
        if not cls.attr(node, "saturation"):
            if cls.attr(node, "has_inf"):
                q = np.where(over, F32(np.inf), np.where(under, F32(-np.inf), q))
            else:
                q = np.where(over | under | inf, F32(np.nan), q)
        return (q * f32(scale)).astype(F32)

    @classmethod
    def float8_type(cls, node, consts: list) -> int | None:
        """The ONNX float8 type this node equals when quantised with QuantizeLinear(saturate=1), else None: constant
        widths and bias, saturation, ROUND, a float8 type's widths, bias and largest value."""
        if len(consts) < 6 or any(c is None for c in consts[2:6]) or not cls.attr(node, "saturation") \
                or cls.attr(node, "rounding_mode") not in ("ROUND", "HALF_EVEN"):
            return None
        e, m, bias = (scalar(c) for c in consts[2:5])
        key = (int(e), int(m), int(bias), cls.max_value(e, m, bias, consts[5]))
        return FLOAT8_TYPES.get(key) if (e, m, bias) == key[:3] else None
