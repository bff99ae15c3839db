"""prelu_split: on the QDQ graph, ``Conv -> Q -> DQ -> PRelu -> Q -> DQ -> Conv(s)`` loses one requantization (and
``Conv -> Q -> DQ -> PRelu -> [Transpose] -> Flatten -> Q -> DQ -> Gemm / MatMul``, mtcnn-rnet/onet's last Conv).

A PRelu with a per-channel slope a is linear on each sign: PRelu(y) = Relu(y) - a Relu(-y). With c = |a| the first
Conv computes its output channels twice, [W; -c W] (bias [b; -c b]), one Relu gives [Relu(y), c Relu(-y)], and the
second Convs read both halves with weights [W2, -sign(a) W2]: the float function is the same. In the int8 graph the
first Conv's output is then quantized once, on a uint8 grid with zero point 0 (onnxruntime fuses Relu -> Q into the
QLinearConv), instead of on its signed range, run through the float PRelu and quantized again; the positive half
gets the whole grid, the negative half the same step in the PRelu output's units. The grid's top is
max(top, -bottom) of the PRelu output's calibrated grid (= max(max y, max_c c_c max(-y_c))).

All on codes, nothing re-rounded but the second Convs' int32 biases (their input scale changes): the new weight
rows are the old codes (negated: exact, int8 codes are in [-127, 127]) with scales [s; c s], written as
``Concat(q, Neg(q))`` / ``Concat(q, Where(mask, q, Neg(q)))`` on the stored codes, which onnxruntime folds at load
(the file stores each code once; a flattened Gemm's rows [outer, C, inner] through Reshapes). onnxruntime runs
twice the first Conv's output channels and the second layers' input channels: mtcnn-pnet's int8 latency is
unchanged, rnet's / onet's last Conv + Gemm cost 0-3% (bench/results/*sqnr13m*).

Rule (read from the graph): per-tensor uint8 activation grids, per-channel int8 weights (axis 0), int32 biases, a
constant per-channel slope with no zero, every tensor on the way read once (the PRelu output's codes only by
DequantizeLinears read only by ungrouped Convs, or after a Flatten(axis 1) of NCHW or of its channels-last
Transpose by Gemm / MatMul with per-output-channel weights), no code -128. Not through MaxPool: max over a window
does not split into the halves (the negative one would need a min), so mtcnn's first PRelus stay (prelu_lut).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.ir.graph import NameAllocator, consumers, producers, topo_sort_nodes
from qpass.pipeline.pass_base import Pass, PassResult
from .quantize_qdq import u8s8


@dataclass
class PreluSplitOptions:
    #: at most this many output channels of the first Conv (the doubled Conv's cost grows with them)
    max_channels: int = 4096


@dataclass
class Match:
    conv: onnx.NodeProto      # the first Conv
    q_y: onnx.NodeProto       # its output's QuantizeLinear
    dq_y: onnx.NodeProto
    prelu: onnx.NodeProto
    q_p: onnx.NodeProto       # the PRelu output's QuantizeLinear
    dq_p: list                # its DequantizeLinears
    seconds: list             # the Convs (or Gemm / MatMul after ``layout``) reading them
    slope: np.ndarray         # [C]
    layout: list              # [Transpose to channels last] Flatten between the PRelu and q_p, or []
    fold: tuple = (1, 1)      # (outer, inner): a Gemm / MatMul input row is (outer, channel, inner)


def _init(inits: dict, name: str):
    return numpy_helper.to_array(inits[name]) if name in inits else None


def const_value(inits: dict, prods: dict, name: str) -> np.ndarray | None:
    """A constant tensor: an initializer, or what this pass computes from them (Concat / Neg / Where)."""
    if name in inits:
        return numpy_helper.to_array(inits[name])
    n = prods.get(name)
    if n is None or n.op_type not in ("Concat", "Neg", "Where", "Reshape"):
        return None
    args = [const_value(inits, prods, t) for t in n.input]
    if any(a is None for a in args):
        return None
    if n.op_type == "Neg":
        return -args[0]
    if n.op_type == "Where":
        return np.where(*args)
    if n.op_type == "Reshape":
        return args[0].reshape(args[1])
    return np.concatenate(args, axis=next(a.i for a in n.attribute if a.name == "axis"))


def _u8_grid(inits: dict, node) -> tuple | None:
    """(scale, zero point) of a per-tensor uint8 Q / DQ, or None."""
    if len(node.input) < 3:
        return None
    s, z = inits.get(node.input[1]), inits.get(node.input[2])
    if s is None or z is None or z.data_type != TensorProto.UINT8 or s.data_type != TensorProto.FLOAT:
        return None
    s, z = numpy_helper.to_array(s), numpy_helper.to_array(z)
    return (float(s.reshape(())), int(z.reshape(()))) if s.size == 1 and z.size == 1 else None


def _axis(node) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == "axis"), 1)


def _weight(inits: dict, prods: dict, conv, k: int, dtype: int, axis: int):
    """The DequantizeLinear feeding ``conv.input[k]`` when it reads constant codes of ``dtype``, per channel on
    ``axis`` (or per tensor), else None."""
    if len(conv.input) <= k or not conv.input[k]:
        return None
    dq = prods.get(conv.input[k])
    if dq is None or dq.op_type != "DequantizeLinear" or len(dq.input) < 2:
        return None
    q = const_value(inits, prods, dq.input[0])
    want = {TensorProto.INT8: np.int8, TensorProto.INT32: np.int32}[dtype]
    if q is None or q.dtype != want or dq.input[1] not in inits or \
            (len(dq.input) > 2 and dq.input[2] and dq.input[2] not in inits):
        return None
    if len(dq.input) > 2 and dq.input[2] and numpy_helper.to_array(inits[dq.input[2]]).any():
        return None  # negated codes mean negated values only about a zero point 0
    return dq if numpy_helper.to_array(inits[dq.input[1]]).size == 1 or _axis(dq) == axis else None


def _only(cons: dict, t: str, op: str):
    users = cons.get(t, [])
    return users[0] if len(users) == 1 and users[0].op_type == op else None


def _plain_conv(node) -> bool:
    return node.op_type == "Conv" and all(helper.get_attribute_value(a) == 1 for a in node.attribute
                                          if a.name == "group")


def _layout(cons: dict, t: str, outs: set) -> list:
    """[Transpose] Flatten read one after the other from ``t`` (each output read once), else []."""
    chain = []
    while len(cons.get(t, [])) == 1 and cons[t][0].op_type in ("Transpose", "Flatten") and t not in outs:
        chain.append(cons[t][0])
        t = chain[-1].output[0]
    return chain if chain and chain[-1].op_type == "Flatten" and len(chain) <= 2 else []


def _attr(node, name: str, default):
    return next((helper.get_attribute_value(a) for a in node.attribute if a.name == name), default)


def _plain_matmul(node) -> bool:
    return node.op_type == "MatMul" or node.op_type == "Gemm" and not _attr(node, "transA", 0) and \
        _attr(node, "alpha", 1.0) == 1.0 and _attr(node, "beta", 1.0) == 1.0


def _in_axis(node) -> int:
    return 1 if node.op_type == "Gemm" and _attr(node, "transB", 0) else 0


def _fold(layout: list, rank: int, c: int, w2: np.ndarray, second) -> tuple | None:
    """(outer, inner) of the flattened rows [outer, C, inner] the Gemm / MatMul reads, or None: Flatten(axis 1)
    of NCHW (outer 1) or of its Transpose to channels last (inner 1)."""
    if w2 is None or w2.ndim != 2 or _attr(layout[-1], "axis", 1) != 1 or w2.shape[_in_axis(second)] % c:
        return None
    s = w2.shape[_in_axis(second)] // c
    if len(layout) == 1:
        return 1, s
    return (s, 1) if list(_attr(layout[0], "perm", [])) == [0] + list(range(2, rank)) + [1] else None


def doubled_codes(q2: np.ndarray, slope: np.ndarray, layout: list, fold: tuple, second) -> np.ndarray:
    """The second layer's codes on the doubled input (numpy; ``_second_codes`` writes the same as nodes)."""
    c = len(slope)
    if not layout:
        keep = (slope < 0).reshape((1, c) + (1,) * (q2.ndim - 2))
        return np.concatenate([q2, np.where(keep, q2, -q2)], axis=1)
    outer, inner = fold
    n = q2.shape[1 - _in_axis(second)]
    four, at = ((outer, c, inner, n), 1) if _in_axis(second) == 0 else ((n, outer, c, inner), 2)
    r = q2.reshape(four)
    both = np.concatenate([r, np.where((slope < 0).reshape([c if i == at else 1 for i in range(4)]), r, -r)], at)
    return both.reshape((2 * q2.shape[0], n) if _in_axis(second) == 0 else (n, 2 * q2.shape[1]))


def _new_saturation(q2: np.ndarray, slope: np.ndarray, layout: list, fold: tuple, second) -> bool:
    """Would the doubled input make some int16 pair sum of ``second`` saturate on onnxruntime's u8s8 kernels
    without VNNI where none could before (a model made for ``--target-cpu avx2`` / ``any`` has no such layer)?
    The first Conv's rows [q; -q] pair like q's; the second layers' pairs change."""
    attrs = {a.name: helper.get_attribute_value(a) for a in second.attribute}
    axis = 0 if second.op_type == "Conv" else 1 - _in_axis(second)
    before = u8s8.saturating_channels(second.op_type, attrs, q2, axis, 255).any()
    after = u8s8.saturating_channels(second.op_type, attrs, doubled_codes(q2, slope, layout, fold, second), axis,
                                     255).any()
    return bool(after and not before)


def find_matches(model: onnx.ModelProto, max_channels: int = 4096) -> list[Match]:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prods, cons = producers(g), consumers(g)
    outs = {o.name for o in g.output}
    found = []
    for conv in g.node:
        if not _plain_conv(conv) or _weight(inits, prods, conv, 1, TensorProto.INT8, 0) is None or \
                len(cons.get(conv.input[1], [])) != 1:
            continue
        if len(conv.input) > 2 and conv.input[2] and _weight(inits, prods, conv, 2, TensorProto.INT32, 0) is None:
            continue
        q_y = _only(cons, conv.output[0], "QuantizeLinear")
        dq_y = q_y and _only(cons, q_y.output[0], "DequantizeLinear")
        prelu = dq_y and _only(cons, dq_y.output[0], "PRelu")
        layout = _layout(cons, prelu.output[0], outs) if prelu else []
        q_p = prelu and _only(cons, (layout[-1] if layout else prelu).output[0], "QuantizeLinear")
        if q_p is None or any(_u8_grid(inits, n) is None for n in (q_y, dq_y, q_p)) or \
                {conv.output[0], q_y.output[0], dq_y.output[0], prelu.output[0], q_p.output[0]} & outs:
            continue
        dq_p = cons.get(q_p.output[0], [])
        seconds = [u for d in dq_p for u in cons.get(d.output[0], [])]
        if not dq_p or any(d.op_type != "DequantizeLinear" or d.output[0] in outs or _u8_grid(inits, d) is None
                           for d in dq_p):
            continue
        if not seconds or any((not _plain_conv(s) if not layout else not _plain_matmul(s)) or
                              s.input[0] not in {d.output[0] for d in dq_p} or
                              s.input[1] in {d.output[0] for d in dq_p} or
                              _weight(inits, prods, s, 1, TensorProto.INT8, 1 - _in_axis(s) if layout else 0)
                              is None or
                              len(cons.get(s.input[1], [])) != 1 for s in seconds):
            continue
        if any(len(s.input) > 2 and s.input[2] and _weight(inits, prods, s, 2, TensorProto.INT32, 0) is None
               for s in seconds):
            continue
        w = const_value(inits, prods, prods[conv.input[1]].input[0])
        slope = _init(inits, prelu.input[1])
        c = w.shape[0]
        if slope is None or w.shape[0] > max_channels or int(w.min()) == -128:
            continue
        ax = 1 - w.ndim  # the channel axis of the Conv output, counted from the end
        if slope.size != 1 and (slope.size != c or slope.ndim < -ax or slope.shape[ax] != c):
            continue
        slope = np.broadcast_to(slope.astype(np.float64).reshape(-1), (c,)).copy()
        if (slope == 0).any() or any(int(const_value(inits, prods, prods[s.input[1]].input[0]).min()) == -128
                                        for s in seconds):
            continue
        fold = _fold(layout, w.ndim, c, const_value(inits, prods, prods[seconds[0].input[1]].input[0]),
                     seconds[0]) if layout else (1, 1)
        if fold is None:
            continue
        if any(_new_saturation(const_value(inits, prods, prods[x.input[1]].input[0]), slope, layout, fold, x)
               for x in seconds):
            continue
        found.append(Match(conv, q_y, dq_y, prelu, q_p, dq_p, seconds, slope, layout, fold))
    return found


def _vec(inits: dict, name: str, c: int) -> np.ndarray:
    v = _init(inits, name)
    return np.broadcast_to(v.reshape(-1), (c,)).copy()


class _Builder:
    """New initializers and constant nodes (on initializers only: they go first in the graph), named after a base."""

    def __init__(self, model: onnx.ModelProto, base: str):
        self.names, self.base = NameAllocator.for_model(model), base
        self.nodes, self.inits = [], []

    def const(self, value: np.ndarray, tag: str) -> str:
        name = self.names(f"{self.base}_{tag}")
        self.inits.append(numpy_helper.from_array(value, name))
        return name

    def node(self, op: str, ins: list, tag: str, **attrs) -> str:
        out = self.names(f"{self.base}_{tag}")
        self.nodes.append(helper.make_node(op, ins, [out], name=out, **attrs))
        return out


def _double_first(b: _Builder, inits: dict, prods: dict, m: Match) -> None:
    """The first Conv's rows [q; -q] on scales [s; c s], bias codes [b; -b] on [sb; c sb] (c = |a|)."""
    c, mag = len(m.slope), np.abs(m.slope)
    for k, tag in ((1, "w"), (2, "b")):
        if len(m.conv.input) <= k or not m.conv.input[k]:
            continue
        dq = prods[m.conv.input[k]]
        codes = dq.input[0]
        dq.input[0] = b.node("Concat", [codes, b.node("Neg", [codes], f"{tag}neg")], f"{tag}2", axis=0)
        sc = _vec(inits, dq.input[1], c)
        dq.input[1] = b.const(np.concatenate([sc, sc * mag]).astype(np.float32), f"{tag}s")
        if len(dq.input) > 2 and dq.input[2]:
            z = _vec(inits, dq.input[2], c)
            dq.input[2] = b.const(np.concatenate([z, z]), f"{tag}z")
        del dq.attribute[:]
        dq.attribute.append(helper.make_attribute("axis", 0))


def _second_codes(b: _Builder, m: Match, codes: str, shape: tuple, second) -> str:
    """The second layer's codes on the doubled input, [q2, -sign(a) q2] per input channel, as nodes."""
    c = len(m.slope)
    if not m.layout:  # Conv: input channels on axis 1
        keep = (m.slope < 0).reshape((1, c) + (1,) * (len(shape) - 2))
        half = b.node("Where", [b.const(keep, "keep"), codes, b.node("Neg", [codes], "w2neg")], "w2half")
        return b.node("Concat", [codes, half], "w2", axis=1)
    outer, inner = m.fold
    n = shape[1 - _in_axis(second)]
    four, at = ((outer, c, inner, n), 1) if _in_axis(second) == 0 else ((n, outer, c, inner), 2)
    r = b.node("Reshape", [codes, b.const(np.array(four, np.int64), "fold")], "w2fold")
    keep = (m.slope < 0).reshape([c if i == at else 1 for i in range(4)])
    half = b.node("Where", [b.const(keep, "keep"), r, b.node("Neg", [r], "w2neg")], "w2half")
    both = b.node("Concat", [r, half], "w2cat", axis=at)
    flat = (2 * shape[0], n) if _in_axis(second) == 0 else (n, 2 * shape[1])
    return b.node("Reshape", [both, b.const(np.array(flat, np.int64), "flat")], "w2")


def _requantized_bias(b: _Builder, inits: dict, prods: dict, second, s_new: float, w_scale: str) -> None:
    """The second layer's int32 bias codes for its new input scale (the only values rounded again)."""
    if len(second.input) < 3 or not second.input[2]:
        return
    bdq = prods[second.input[2]]
    bq, bs = const_value(inits, prods, bdq.input[0]), _init(inits, bdq.input[1])
    ws = _vec(inits, w_scale, bq.size)
    nb = np.clip(np.round(bq.astype(np.float64) * bs / (s_new * ws)), -2**31, 2**31 - 1)
    bdq.input[0] = b.const(nb.astype(np.int32).reshape(bq.shape), "b2")
    bdq.input[1] = b.const((np.float32(s_new) * ws).astype(np.float32).reshape(bq.shape), "b2s")


def split(model: onnx.ModelProto, m: Match) -> None:
    """Rewrite one match of ``model`` in place (see the module docstring)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prods = producers(g)
    b = _Builder(model, m.conv.name or m.conv.output[0])
    replaced = {t for n in (m.q_y, m.dq_y, m.prelu, m.q_p) for t in n.input} | \
        {t for x in [m.conv] + m.seconds for k in (1, 2) if len(x.input) > k and x.input[k] in prods
         for t in prods[x.input[k]].input}
    _double_first(b, inits, prods, m)
    # one uint8 grid, zero point 0, over both halves: the top of the PRelu output's grid, whichever side is longer
    sp, zp = _u8_grid(inits, m.q_p)
    s_new = np.float32(max(255 - zp, zp) * sp / 255.0)
    scale, zero = b.const(np.array(s_new, np.float32), "s"), b.const(np.array(0, np.uint8), "z")
    relu = b.names(f"{b.base}_relu")
    m.q_y.input[:] = [relu, scale, zero]
    if m.layout:  # Q -> DQ -> [Transpose] Flatten -> Q -> DQ on the one grid
        m.dq_y.input[:] = [m.q_y.output[0], scale, zero]
        m.layout[0].input[0] = m.dq_y.output[0]
        m.q_p.input[1:] = [scale, zero]
        for d in m.dq_p:
            d.input[1:] = [scale, zero]
        gone = {id(m.prelu)}
    else:
        for d in m.dq_p:
            d.input[:] = [m.q_y.output[0], scale, zero]
        gone = {id(n) for n in (m.dq_y, m.prelu, m.q_p)}
    for s in m.seconds:
        dq = prods[s.input[1]]
        dq.input[0] = _second_codes(b, m, dq.input[0], const_value(inits, prods, dq.input[0]).shape, s)
        _requantized_bias(b, inits, prods, s, float(s_new), dq.input[1])
    stale = {t for n in [m.conv, m.q_y, m.dq_y, m.prelu, m.q_p] + m.dq_p + m.layout for t in n.output} | \
        {t for x in [m.conv] + m.seconds for t in x.input[1:3]}  # the weights' and biases' new shapes
    relu_node = helper.make_node("Relu", [m.conv.output[0]], [relu], name=relu)
    kept = [x for n in g.node if id(n) not in gone for x in ([n, relu_node] if n is m.conv else [n])]
    replace_graph(g, b.nodes + kept, replaced, b.inits, stale)


def replace_graph(g: onnx.GraphProto, nodes: list, replaced: set, inits: list, stale: set) -> None:
    """``g`` takes ``nodes`` (sorted: new constant nodes may read earlier ones), drops the ``replaced`` initializers
    nothing reads any more, adds ``inits``, and forgets the ``stale`` value_info."""
    del g.node[:]
    g.node.extend(nodes)
    topo_sort_nodes(g)
    read = {t for n in g.node for t in n.input} | {o.name for o in g.output}
    left = [i for i in g.initializer if i.name in read or i.name not in replaced] + inits
    del g.initializer[:]
    g.initializer.extend(left)
    vi = [v for v in g.value_info if v.name not in stale]
    del g.value_info[:]
    g.value_info.extend(vi)


def split_prelus(model: onnx.ModelProto, max_channels: int = 4096) -> list[str]:
    """Rewrite every match in place (found again after each rewrite); the first Convs' names."""
    done = []
    while True:
        todo = [m for m in find_matches(model, max_channels) if m.conv.name not in done]
        if not todo:
            return done
        split(model, todo[0])
        done.append(todo[0].conv.name)


class PreluSplit(Pass):
    name = "prelu_split"
    Options = PreluSplitOptions

    def run(self, model, ctx):
        done = split_prelus(model, self.opts.max_channels)
        if not done:
            return PassResult(model, False, ["no Conv -> PRelu -> Conv on uint8 grids to split"])
        return PassResult(model, True, [f"{len(done)} PRelu(s) split into Relu halves of doubled Conv outputs "
                                        f"(one requantization less each): {', '.join(done)}"])
