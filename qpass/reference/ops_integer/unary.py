"""Fused elementwise unary ops on 8-bit codes: DequantizeLinear -> f -> QuantizeLinear as one lookup in the table of
the 256 output codes (onnxruntime's QLinearLookupBase does the same for QLinearSigmoid / QLinearLeakyRelu).

The table is built once at construction by running the three nodes' own kernels (the DequantizeLinear's, the float
op's, the QuantizeLinear's) on the 256 input codes, so every code maps to exactly the value the unfused chain gives
it: the ops below compute each element from that element alone (constant scalar parameters only).
"""
from __future__ import annotations

import numpy as np

from ..numerics import int_range
from ..registry import NodeInfo, lookup
from .planning import FusedOp, FusionContext, NotFused, act_dq, fuser, need

ELEMENTWISE = ("Abs", "Celu", "Ceil", "Clip", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
               "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin",
               "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu")


def _run(fc: FusionContext, n: NodeInfo, *args):
    """The registered kernel of node ``n`` on ``args`` (trailing absent inputs dropped, as a step does)."""
    args = list(args)
    while args and args[-1] is None:
        args.pop()
    k = lookup(n.domain, n.op_type)
    out = k.fn(fc.ex, n, *args) if k.with_executor else k.fn(n, *args)
    return np.asarray(out[0] if isinstance(out, (tuple, list)) else out)


def _params(fc: FusionContext, n: NodeInfo) -> list:
    """The constant values of the inputs after the first (None where absent); NotFused if one is not constant."""
    vals = []
    for name in n.inputs[1:]:
        v = fc.const(name) if name else None
        if name and v is None:
            raise NotFused(f"input {name!r} of {n.op_type} is not constant")
        vals.append(v)
    return vals


@fuser(*ELEMENTWISE)
def fuse_unary(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = need(fc.q_out(node))
    x = act_dq(fc, node.inputs[0], "input")
    if x.dtype.itemsize != 1:
        raise NotFused("input codes wider than 8 bits")
    extra = _params(fc, node)
    if any(v is not None and np.size(v) != 1 for v in extra):
        raise NotFused("a parameter is not a scalar")
    dqn, qn = fc.producer[node.inputs[0]], fc.consumers[node.outputs[0]][0]
    lo = int_range(x.dtype)[0]
    codes = np.arange(lo, lo + 256).astype(x.dtype)
    table = _run(fc, qn, _run(fc, node, _run(fc, dqn, codes, *_params(fc, dqn)), *extra), *_params(fc, qn))
    if table.shape != codes.shape:
        raise NotFused("not elementwise")
    signed = bool(lo)
    name = node.name

    def compute(vals, ex):
        c = vals[0]
        y = np.take(table, c.view(np.uint8) ^ np.uint8(0x80) if signed else c)
        ex.record(name, "QLinearLookup", outputs=y.size)
        return y

    return FusedOp("QLinearLookup", node.name, q.node, [x.codes], q.output, compute)
