"""QONNX ``MultiThreshold``: ``out = out_scale * #{t : x >= T[c, t]} + out_bias``, c the channel of x.

Thresholds ``T`` are (C, steps) or (1, steps) (one set for every channel; a 1-D T is read as one row) and need not
be sorted. The channel axis comes from ``data_layout`` when it names every axis, else from the rank
(``qpass.ops.common.mt_channel_axis``). ``out_dtype`` names the output's integer type (informative).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.errors import UnsupportedOpError
from qpass.ops.base import Attr, F32, OpDef, const_value
from qpass.ops.common import QONNX_DOMAIN, QPASS_DOMAIN, mt_channel_axis


class MultiThreshold(OpDef):
    op_type = "MultiThreshold"
    domains = (QONNX_DOMAIN, QPASS_DOMAIN)
    attrs = {"out_dtype": Attr(str, ""), "out_scale": Attr(float, 1.0), "out_bias": Attr(float, 0.0),
             "data_layout": Attr(str, "")}

    @classmethod
    def channel_axis(cls, node, ndim: int) -> int:
        return mt_channel_axis(cls.attr(node, "data_layout"), ndim)

    @classmethod
    def affine(cls, node) -> tuple[float, float]:
        """(out_scale, out_bias)."""
        return cls.attr(node, "out_scale"), cls.attr(node, "out_bias")

    @staticmethod
    def rows(thresholds) -> np.ndarray:
        """The thresholds as a (C or 1, steps) matrix."""
        t = np.asarray(thresholds)
        return t.reshape(1, -1) if t.ndim == 1 else t

    @classmethod
    def execute(cls, node, x, thresholds):
        """Counts in int64, then out_scale * count + out_bias in float32."""
        x, t = np.asarray(x), cls.rows(thresholds)
        axis = cls.channel_axis(node, x.ndim)
        xm = np.moveaxis(x, axis, -1)  # (..., C)
        count = np.zeros(xm.shape, dtype=np.int64)
        for j in range(t.shape[1]):
            count += xm >= t[:, j]
        count = np.moveaxis(count, -1, axis)
        out_scale, out_bias = (F32(v) for v in cls.affine(node))
        return (out_scale * count.astype(F32) + out_bias).astype(F32)

    @classmethod
    def int_range(cls, node, consts: list) -> tuple[float, float] | None:
        """[out_bias, out_bias + out_scale * steps] (ordered) when out_scale and out_bias are integers."""
        thr = consts[1] if len(consts) > 1 else None
        s, b = cls.affine(node)
        if thr is None or s != round(s) or b != round(b):
            return None
        ends = (b, b + s * thr.shape[-1])
        return min(ends), max(ends)

    @classmethod
    def lower(cls, b, node: gs.Node, opset: int) -> None:
        """Unsqueeze x, compare with T broadcast along the channel axis, count (ReduceSum), scale and shift."""
        x, t = node.inputs[:2]
        thr = const_value(t)
        if thr is None or x.shape is None:
            raise UnsupportedOpError(f"MultiThreshold {node.name!r} needs constant thresholds and a known input rank")
        thr = cls.rows(thr)
        rank = len(x.shape)
        axis = cls.channel_axis(node, rank)
        c, steps = thr.shape
        shape = [1] * (rank + 1)
        shape[axis] = c
        shape[-1] = steps
        t_c = b.const(thr.astype(np.float32).reshape(shape))
        xe = b.op("Unsqueeze", [x, b.const([rank], np.int64)])
        ge = b.op("GreaterOrEqual", [xe, t_c], dtype=np.bool_)
        cnt = b.op("ReduceSum", [b.op("Cast", [ge], {"to": 1}), b.const([rank], np.int64)], {"keepdims": 0})
        out_scale, out_bias = cls.affine(node)
        y = b.op("Mul", [cnt, b.const(out_scale)])
        b.op("Add", [y, b.const(out_bias)], out=node.outputs[0])
