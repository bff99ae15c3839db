"""QONNX ``BipolarQuant``: binary quantisation, ``out = where(x >= 0, +1, -1) * scale`` (no attributes)."""
from __future__ import annotations

import numpy as np

from qpass.ops.base import F32, OpDef, f32
from qpass.ops.common import QONNX_DOMAIN, QPASS_DOMAIN


class BipolarQuant(OpDef):
    op_type = "BipolarQuant"
    quantizer = True
    domains = (QONNX_DOMAIN, QPASS_DOMAIN)

    @staticmethod
    def codes(x) -> np.ndarray:
        """The +-1 codes of ``x`` (float32)."""
        return np.where(f32(x) >= 0, F32(1), F32(-1))

    @classmethod
    def execute(cls, node, x, scale):
        return (cls.codes(x) * f32(scale)).astype(F32)

    @classmethod
    def is_codes(cls, node, consts: list) -> bool:
        """The output is the codes themselves: scale 1."""
        return len(consts) > 1 and consts[1] is not None and bool(np.all(consts[1] == 1))

    @classmethod
    def int_range(cls, node, consts: list) -> tuple[float, float] | None:
        return (-1.0, 1.0) if cls.is_codes(node, consts) else None

    @classmethod
    def lower(cls, b, node, opset: int) -> None:
        x, s = node.inputs[:2]
        cond = b.op("GreaterOrEqual", [x, b.const(0.0)], dtype=np.bool_)
        pm = b.op("Where", [cond, b.const(1.0), b.const(-1.0)])
        b.op("Mul", [pm, s], out=node.outputs[0])
