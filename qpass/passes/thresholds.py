"""Streamlining, part 2: an integer accumulator followed by any monotonic per-channel chain (scale, bias,
batch norm, Relu, Clip/ReLU6, HardTanh, Sign, Sigmoid, Tanh, LeakyRelu, ...) and an activation quantiser becomes
one ``MultiThreshold`` node with 2^W - 1 integer thresholds per channel.

Thresholds are not derived algebraically (FINN's half-step thresholds round ties up, while the quantiser may round
half to even). Each threshold is *searched*: T[c, k] is the smallest integer accumulator value whose quantised
output reaches level k, found by bisection over the exact accumulator range, evaluating the original chain with
the golden simulator's own kernels. The result is therefore bit-exact with the fake-quant graph by construction;
it is verified on the thresholds' neighbours and random points, and a chain that is not monotonic is left alone
with the reason recorded. A decreasing channel (negative scale) gets its weights negated, so every channel counts
upwards.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper

from qpass.analysis.intinfo import (LINEAR_OPS, const, int_range, is_bipolar_codes, is_int_quant, linear_bounds,
                       quant_params, signed_bits)
from qpass.ops.common import QONNX_DOMAIN, QONNX_DOMAINS, int_bounds
from .integerize import _IntPass

CHAIN_OPS = ("Mul", "Add", "Sub", "Div", "Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "Tanh", "HardSigmoid",
             "Sign", "Identity", "BatchNormalization", "Softplus", "Elu", "Selu", "Neg", "Exp", "Erf", "HardSwish",
             "Abs", "Round")
MAX_EXACT = 2**24


@dataclass
class ThresholdOptions:
    max_bits: int = 8  # quantisers wider than this keep their float chain (see the requant pass)
    verify_samples: int = 256
    seed: int = 0


def channel_axis_of(acc: gs.Tensor) -> int:
    rank = len(acc.shape) if acc.shape is not None else 2
    prod = acc.inputs[0] if acc.inputs else None
    if rank <= 2 or (prod is not None and prod.op in ("MatMul", "Gemm")):
        return rank - 1
    return 1


def channel_layout(rank: int, axis: int) -> str:
    """A data_layout string naming every axis, with C at ``axis`` (NC, NCW / NWC, NCHW / NHWC, NCDHW / NDHWC...)."""
    n_sp = max(rank - 2, 0)
    spatial = "DHW"[3 - n_sp:] if n_sp <= 3 else "ABDEFGHIJKLMOPQRSTUVWXYZ"[:n_sp]
    rest = "N" + spatial
    return rest[:axis] + "C" + rest[axis:]


def find_chain(graph: gs.Graph, acc: gs.Tensor):
    """The nodes from ``acc`` to an integer-output quantiser, or (None, reason)."""
    chain, t = [], acc
    outputs = {o.name for o in graph.outputs}
    for _ in range(64):
        if len(t.outputs) != 1 or t.name in outputs:
            return None, "the accumulator (or a value after it) has several readers or is a graph output"
        n = t.outputs[0]
        if n.inputs[0] is not t and n.op not in ("Add", "Mul"):
            return None, f"{n.op} {n.name!r} reads the value as a parameter"
        if is_int_quant(n) or is_bipolar_codes(n):
            chain.append(n)
            return chain, None
        if n.op not in CHAIN_OPS:
            return None, f"{n.op} {n.name!r} is not an elementwise op a threshold can absorb"
        if any(const(i) is None for i in n.inputs if i is not t and i is not None and i.name):
            return None, f"{n.op} {n.name!r} has a non-constant second operand"
        chain.append(n)
        t = n.outputs[0]
    return None, "chain too long"


def _chain_model(chain: list[gs.Node], acc: gs.Tensor, rank: int) -> onnx.ModelProto:
    nodes, inits, seen = [], [], set()
    for n in chain:
        for i in n.inputs:
            if isinstance(i, gs.Constant) and i.name not in seen:
                seen.add(i.name)
                inits.append(numpy_helper.from_array(np.asarray(i.values), i.name))
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in n.attrs.items()}
        nodes.append(helper.make_node(n.op, [i.name if i is not None else "" for i in n.inputs],
                                      [o.name for o in n.outputs], name=n.name, domain=n.domain or "", **attrs))
    g = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info(acc.name, onnx.TensorProto.FLOAT,
                                                                         [None] * rank)],
                          [helper.make_tensor_value_info(chain[-1].outputs[0].name, onnx.TensorProto.FLOAT, None)],
                          inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(QONNX_DOMAIN, 1)])


class _Chain:
    """Evaluates the chain on a (levels, channels) grid of accumulator values."""

    def __init__(self, chain, acc, rank, axis):
        from qpass.reference import GoldenExecutor

        self.ex = GoldenExecutor(_chain_model(chain, acc, rank))
        self.inp, self.out, self.rank, self.axis = acc.name, chain[-1].outputs[0].name, rank, axis

    def __call__(self, a: np.ndarray) -> np.ndarray:
        """a: (K, C) integers -> codes (K, C)."""
        k, c = a.shape
        shape = [1] * self.rank
        shape[self.axis] = c
        x = a.astype(np.float32).reshape((k,) + tuple(shape[1:])) if self.axis != 0 else None
        if self.axis == 0:
            raise ValueError("channel axis 0 is the batch axis")
        y = self.ex.run({self.inp: x}, [self.out])[self.out]
        return np.asarray(y, np.float64).reshape(k, c)


def search_thresholds(f: _Chain, lo: np.ndarray, hi: np.ndarray, levels: np.ndarray) -> np.ndarray:
    """T[k, c] = min a in [lo_c, hi_c + 1] with f(a)[c] >= levels[k] (hi_c + 1 when never reached)."""
    K, C = len(levels), len(lo)
    a = np.broadcast_to(lo, (K, C)).astype(np.int64).copy()
    b = np.broadcast_to(hi + 1, (K, C)).astype(np.int64).copy()
    lv = levels[:, None]
    while np.any(a < b):
        mid = (a + b) // 2
        ge = f(mid) >= lv
        active = a < b
        b = np.where(active & ge, mid, b)
        a = np.where(active & ~ge, mid + 1, a)
    return a


class ChainRewrite(_IntPass):
    """Finds every integer accumulator (linear op, integer Add, window sum) and the elementwise chain from it to
    the next activation quantiser, and hands both to ``convert``; a chain it cannot convert keeps its reason."""

    PRODUCERS = LINEAR_OPS + ("Add", "ReduceSum")

    def rewrite(self, graph, ctx):
        reasons = ctx.report.streamline_notes
        count = 0
        for node in list(graph.nodes):
            if not node.outputs or node.domain in QONNX_DOMAINS or node.op not in self.PRODUCERS:
                continue
            acc = node.outputs[0]
            if int_range(acc) is None:
                continue
            chain, why = find_chain(graph, acc)
            if chain is None:
                if node.op in LINEAR_OPS and not any(r.op == "MultiThreshold" for r in acc.outputs):
                    reasons[node.name] = why
                continue
            ok, why = self.convert(graph, node, acc, chain)
            if ok:
                count += 1
                reasons.pop(node.name, None)
            else:
                reasons[node.name] = why
        return count

    def convert(self, graph, node, acc, chain) -> tuple[bool, str | None]:
        raise NotImplementedError


class AbsorbThresholds(ChainRewrite):
    name = "absorb_thresholds"
    Options = ThresholdOptions

    def convert(self, graph, node, acc, chain):
        return self.absorb(graph, node, acc, chain)

    def absorb(self, graph, node, acc, chain):
        if is_bipolar_codes(chain[-1]):  # sign activation: codes -1, +1 -> one threshold, out = 2 * count - 1
            code_min, code_max, step = -1.0, 1.0, 2.0
        else:
            qp = quant_params(chain[-1])
            qlo, qhi = int_bounds(qp[2], qp[3], qp[4])
            z = float(np.asarray(qp[1]).reshape(-1)[0])
            code_min, code_max, step = qlo - z, qhi - z, 1.0
            if qp[2] == 1 and qp[3]:  # QONNX's 1-bit signed Quant is a sign function too
                code_min, code_max, step = -1.0, 1.0, 2.0
            if qp[2] > self.opts.max_bits:
                return False, f"{qp[2]}-bit output quantiser: more than max_bits={self.opts.max_bits} thresholds"
        rank = len(acc.shape) if acc.shape is not None else None
        if rank is None or rank < 2:
            return False, "accumulator rank unknown"
        axis = channel_axis_of(acc)
        channels = acc.shape[axis]
        if not isinstance(channels, int):
            return False, "channel count unknown"
        bounds = linear_bounds(node) if node.op in LINEAR_OPS else None
        if bounds is None:
            r = int_range(acc)
            lo, hi = np.full(channels, r[0]), np.full(channels, r[1])
        else:
            lo, hi = bounds
            if lo.shape != (channels,):
                return False, "per-channel accumulator bounds do not match the channel count"
        if max(np.abs(lo).max(), np.abs(hi).max()) >= MAX_EXACT:
            return False, "accumulator exceeds float32's exact integer range (2^24)"
        f = _Chain(chain, acc, rank, axis)
        lo_i, hi_i = lo.astype(np.int64), hi.astype(np.int64)
        ends = f(np.stack([lo_i, hi_i]))
        decreasing = ends[0] > ends[1]
        if decreasing.any():
            if node.op not in LINEAR_OPS or node.op == "ConvTranspose":
                return False, "decreasing chain on an accumulator whose sign cannot be flipped"
            g = lambda a, f=f, dec=decreasing: f(np.where(dec, -a, a))  # noqa: E731
            lo_s, hi_s = np.where(decreasing, -hi_i, lo_i), np.where(decreasing, -lo_i, hi_i)
        else:
            g, lo_s, hi_s = f, lo_i, hi_i
        levels = np.arange(code_min + step, code_max + 1, step, dtype=np.float64)
        thr = search_thresholds(g, lo_s, hi_s, levels)  # (K, C)
        if not self.verify(g, thr, lo_s, hi_s, code_min, step):
            return False, "the chain is not monotonic in the accumulator"
        if decreasing.any():
            self.flip_channels(node, decreasing)
        out = chain[-1].outputs[0]
        layout = channel_layout(rank, axis)
        bits, signed = signed_bits(code_min, code_max)
        dtype = "BIPOLAR" if step == 2.0 else f"{'INT' if signed else 'UINT'}{bits}"
        mt = gs.Node("MultiThreshold", self.b.names(f"{node.name}_MultiThreshold"), domain=QONNX_DOMAIN,
                     attrs={"out_dtype": dtype, "out_scale": step,
                            "out_bias": float(code_min), "data_layout": layout},
                     inputs=[acc, self.b.const(thr.T.astype(np.float32), name=f"{node.name}_thresholds")], outputs=[out])
        for n in chain:
            n.inputs.clear()
            n.outputs.clear()
        graph.nodes.append(mt)
        return True, None

    def verify(self, g, thr, lo, hi, code_min, step=1.0) -> bool:
        K, C = thr.shape
        rng = np.random.default_rng(self.opts.seed)
        pts = [rng.integers(lo, hi + 1, size=(self.opts.verify_samples, C)), thr, thr - 1]
        a = np.clip(np.concatenate(pts), lo, hi)
        want = g(a)
        got = code_min + step * (a[:, None, :] >= thr[None, :, :]).sum(axis=1)
        return bool(np.array_equal(want, got))

    def flip_channels(self, node, mask):
        w = np.asarray(node.inputs[1].values, np.float64)
        axis = {"Conv": 0}.get(node.op, None)
        if node.op == "Gemm":
            axis = 0 if int(node.attrs.get("transB", 0)) else 1
        elif node.op == "MatMul":
            axis = 1
        shape = [1] * w.ndim
        shape[axis] = mask.size
        sign = np.where(mask, -1.0, 1.0).reshape(shape)
        node.inputs[1] = self.b.const(w * sign, name=f"{node.name}_wcodes_signed")
