"""QONNX ``Trunc``: drop least significant bits of a quantised tensor (Brevitas' TruncIntQuant).

v1, 5 inputs ``(x, scale, zeropt, in_bw, out_bw)``:
    y = round(x / scale + zeropt) / 2^(in_bw - out_bw); y = round_mode(y); out = (y - zeropt) * scale
v2, 6 inputs ``(..., in_bw, out_scale, out_bw)`` or 7 with an unused ``out_zeropt`` before ``out_bw``:
    trunc_scale = 2^round(log2(out_scale / scale)); y = round(x / scale + zeropt) / trunc_scale;
    y = round_mode(clip(y, min_int, max_int));  out = (y - zeropt / trunc_scale) * out_scale
Attributes ``rounding_mode`` (default FLOOR) and, for v2's output grid, ``signed`` (1) and ``narrow`` (0).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.errors import UnsupportedOpError
from qpass.ops.base import Attr, F32, OpDef, const_value, f32, scalar
from qpass.ops.common import QONNX_DOMAIN, QPASS_DOMAIN, ROUNDING_MODES, int_bounds
from qpass.ops.rounding import lower_rounding, round_array


class Trunc(OpDef):
    op_type = "Trunc"
    quantizer = True
    domains = (QONNX_DOMAIN, QPASS_DOMAIN)
    attrs = {"rounding_mode": Attr(str, "FLOOR", ROUNDING_MODES), "signed": Attr(int, 1), "narrow": Attr(int, 0)}

    @classmethod
    def grid(cls, node, out_bits: int) -> tuple[int, int]:
        """v2's output grid."""
        return int_bounds(int(out_bits), bool(cls.attr(node, "signed")), bool(cls.attr(node, "narrow")))

    @staticmethod
    def trunc_scale(scale, out_scale) -> np.ndarray:
        """v2: the power of two nearest to out_scale / scale (in log2)."""
        return (F32(2.0) ** np.round(np.log2(f32(out_scale) / f32(scale)))).astype(F32)

    @classmethod
    def execute(cls, node, x, scale, zeropt, in_bitwidth, *rest):
        mode = cls.attr(node, "rounding_mode")
        x, scale, zeropt = f32(x), f32(scale), f32(zeropt)
        y = np.round(x / scale + zeropt)
        if len(rest) == 1:
            tscale = (F32(2.0) ** (f32(in_bitwidth) - f32(rest[0]))).astype(F32)
            y = round_array((y / tscale).astype(F32), mode)
            return ((y - zeropt) * scale).astype(F32)
        out_scale = f32(rest[0])
        tscale = cls.trunc_scale(scale, out_scale)
        y = (y / tscale).astype(F32)
        lo, hi = cls.grid(node, int(scalar(rest[-1])))
        y = round_array(np.clip(y, F32(lo), F32(hi)), mode)
        return ((y - zeropt / tscale) * out_scale).astype(F32)

    @classmethod
    def lower(cls, b, node: gs.Node, opset: int) -> None:
        """v1 with constant bit widths; v2 with constant scales and output bit width."""
        n = len(node.inputs)
        if n not in (5, 6, 7):
            raise UnsupportedOpError(f"Trunc node {node.name!r} has {n} inputs (5, 6 or 7 expected)")
        x, s, z, in_bw = node.inputs[:4]
        consts = [const_value(t) for t in ((in_bw, node.inputs[4]) if n == 5 else (s, node.inputs[4], node.inputs[-1]))]
        if any(c is None for c in consts):
            raise UnsupportedOpError(f"Trunc node {node.name!r} has run-time bit widths" if n == 5 else
                                     f"Trunc node {node.name!r}: Trunc v2 needs constant scales and output width")
        mode = cls.attr(node, "rounding_mode")
        y = b.op("Round", [b.op("Add", [b.op("Div", [x, s]), z])])
        if n == 5:
            ib, ob = consts
            y = b.op("Div", [y, b.const(np.float32(2.0 ** (float(ib) - float(ob))))])
            y = lower_rounding(b, y, mode)
            b.op("Mul", [b.op("Sub", [y, z]), s], out=node.outputs[0])
            return
        scale, out_scale, ob = consts
        t_c = b.const(cls.trunc_scale(scale, out_scale))
        lo, hi = cls.grid(node, int(scalar(ob)))
        y = lower_rounding(b, b.op("Clip", [b.op("Div", [y, t_c]), b.const(lo), b.const(hi)]), mode)
        b.op("Mul", [b.op("Sub", [y, b.op("Div", [z, t_c])]), node.inputs[4]], out=node.outputs[0])
