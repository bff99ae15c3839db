"""Fused 8-bit chains without arithmetic across elements, as lookups in a table of the 256 output codes.

* DequantizeLinear -> f1 -> f2 ... -> QuantizeLinear, every f elementwise with constant scalar parameters (a
  LeakyRelu followed by a Max with a constant, ...): one lookup (onnxruntime's QLinearLookupBase does the same for
  QLinearSigmoid / QLinearLeakyRelu).
* DequantizeLinear -> m -> QuantizeLinear, m moving values only (Reshape, Transpose, Squeeze, Slice, Gather, ...):
  m runs on the codes, then the lookup (none when the two quantisers are equal: Q(DQ(c)) == c).

The table is built once at construction by running the chain's own kernels (the DequantizeLinear's, the float ops',
the QuantizeLinear's) on the 256 input codes, so every code maps to exactly the value the unfused chain gives it.
"""
from __future__ import annotations

import numpy as np

from ..numerics import int_range
from ..registry import NodeInfo, lookup
from . import compiled
from .planning import FusedOp, FusionContext, NotFused, act_dq, fuser, need

ELEMENTWISE = ("Abs", "Celu", "Ceil", "Clip", "Cos", "Elu", "Erf", "Exp", "Floor", "Gelu", "HardSigmoid", "HardSwish",
               "LeakyRelu", "Log", "Mish", "Neg", "Reciprocal", "Relu", "Round", "Selu", "Sigmoid", "Sign", "Sin",
               "Softplus", "Softsign", "Sqrt", "Tanh", "ThresholdedRelu")


def _run(ex, n: NodeInfo, *args):
    """The registered kernel of node ``n`` on ``args`` (trailing absent inputs dropped, as a step does), run by
    the executor ``ex``."""
    args = list(args)
    while args and args[-1] is None:
        args.pop()
    k = lookup(n.domain, n.op_type)
    out = k.fn(ex, n, *args) if k.with_executor else k.fn(n, *args)
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


ELEMENTWISE_WITH_SCALARS = ("Max", "Min")  # elementwise when every other input is a constant scalar
MOVES = ("Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Identity", "Slice", "Gather", "Expand", "Tile",
         "DepthToSpace", "SpaceToDepth")


def _scalar_params(fc: FusionContext, n: NodeInfo) -> list:
    extra = _params(fc, n)
    if any(v is not None and np.size(v) != 1 for v in extra):
        raise NotFused(f"a parameter of {n.op_type} is not a scalar")
    return extra


def _chain(fc: FusionContext, node: NodeInfo) -> list[NodeInfo]:
    """``node`` and the elementwise nodes after it, each the only consumer of the one before, up to the node whose
    output goes only into a QuantizeLinear."""
    chain = [node]
    while isinstance(fc.q_out(chain[-1]), str):
        out = chain[-1].outputs[0] if len(chain[-1].outputs) == 1 else ""
        cons = fc.consumers.get(out, [])
        if not out or out in fc.graph_outputs or len(cons) != 1 or cons[0].domain != "" or \
                cons[0].op_type not in ELEMENTWISE + ELEMENTWISE_WITH_SCALARS or cons[0].inputs[0] != out or \
                out in cons[0].inputs[1:]:
            break
        chain.append(cons[0])
    return chain


def _table(fc: FusionContext, x, ops: list[NodeInfo], qn: NodeInfo) -> np.ndarray:
    """The output code of every 8-bit input code through DQ -> ops -> Q, by the nodes' own kernels."""
    lo = int_range(x.dtype)[0]
    codes = np.arange(lo, lo + 256).astype(x.dtype)
    v = _run(fc.ex, fc.producer[ops[0].inputs[0]], codes, *_params(fc, fc.producer[ops[0].inputs[0]]))
    for n in ops:
        v = _run(fc.ex, n, v, *_scalar_params(fc, n))
    table = _run(fc.ex, qn, v, *_params(fc, qn))
    if table.size != codes.size:  # scalar parameters of a higher rank only add leading axes of length 1
        raise NotFused("not elementwise")
    return table.reshape(-1)


def _rank(fc: FusionContext, ops: list[NodeInfo]) -> int:
    """The largest rank of the chain's scalar parameters (the output has at least this rank)."""
    return max([np.ndim(v) for n in ops for v in _params(fc, n) if v is not None], default=0)


def _lookup(table: np.ndarray | None, signed: bool):
    """codes -> table[code - lo], indexed by the codes' bits (int8: the table reordered once, no per-call XOR)."""
    if table is not None and signed:
        table = table[np.arange(256) ^ 0x80]

    def apply(c):
        if table is None:
            return c
        k = compiled.jit() if c.size >= compiled.LOOKUP_MIN_SIZE else None
        if k is None:
            return np.take(table, c.view(np.uint8))
        out = np.empty(c.shape, table.dtype)  # numpy's take widens the uint8 indices first: one compiled pass
        k.lookup1(np.ascontiguousarray(c).view(np.uint8).reshape(-1), table, out.reshape(-1))
        return out
    return apply


@fuser(*ELEMENTWISE, *ELEMENTWISE_WITH_SCALARS)
def fuse_unary(fc: FusionContext, node: NodeInfo) -> FusedOp:
    x = act_dq(fc, node.inputs[0], "input")
    if x.dtype.itemsize != 1:
        raise NotFused("input codes wider than 8 bits")
    chain = _chain(fc, node)
    q = need(fc.q_out(chain[-1]))
    lookup_codes = _lookup(_table(fc, x, chain, fc.consumers[chain[-1].outputs[0]][0]), bool(int_range(x.dtype)[0]))
    name, rank = node.name, _rank(fc, chain)

    def compute(vals, ex):
        y = lookup_codes(vals[0])
        if y.ndim < rank:
            y = y.reshape((1,) * (rank - y.ndim) + y.shape)
        ex.record(name, "QLinearLookup", outputs=y.size)
        return y

    return FusedOp("QLinearLookup", node.name, q.node, [x.codes], q.output, compute)


@fuser(*MOVES)
def fuse_move(fc: FusionContext, node: NodeInfo) -> FusedOp:
    q = need(fc.q_out(node))
    x = act_dq(fc, node.inputs[0], "input")
    if any(fc.producer.get(i) is not None and fc.producer[i].op_type == "DequantizeLinear"
           for i in node.inputs[1:] if i):
        raise NotFused("a second quantised input")
    qn = fc.consumers[node.outputs[0]][0]
    same = qn.has_input(2) and x.dtype == q.dtype and x.z() == q.zp and x.s() == q.scale
    if not same and x.dtype.itemsize != 1:
        raise NotFused("requantised codes wider than 8 bits")
    lookup_codes = _lookup(None if same else _table(fc, x, [], qn),
                           bool(int_range(x.dtype)[0]))
    name, nargs = node.name, len(node.inputs)

    def compute(vals, ex):
        y = lookup_codes(_run(ex, node, *vals[:nargs]))
        ex.record(name, "QLinearMove", outputs=y.size)
        return y

    return FusedOp("QLinearMove", node.name, q.node, [x.codes] + list(node.inputs[1:]), q.output, compute)
