"""prelu_max: on the QDQ graph, ``layer -> Q -> DQ -> PRelu -> Q`` (layer a Conv or Gemm on int8 weights) loses its
float PRelu and one requantization, whatever reads the PRelu output (mtcnn's PRelu -> MaxPool and Gemm -> PRelu ->
Gemm blocks, which prelu_split cannot take).

A PRelu whose per-channel slopes a are all <= 1 is PRelu(y) = max(y, a y). So the layer computes its output channels
twice, [W; a W] (bias [b; a b]), quantizes them once on the PRelu output's grid, and an elementwise Max of the two
halves (on the uint8 codes: one grid, so max of codes = max of values) gives the PRelu output's codes. Clipping to the
grid is monotone, so max(clip(y), clip(a y)) = clip(max(y, a y)): the halves saturating below the grid does not
matter. Instead of rounding y on its signed grid, a float PRelu and a second rounding, the result is rounded once.

All on codes, nothing re-rounded: the new rows are the old codes (negated where a < 0: exact, int8 codes are in
[-127, 127]) with scales [s; |a| s], written as ``Concat(q, Where(a < 0, Neg(q), q))`` on the stored codes, which
onnxruntime folds at load (the file stores each code once). onnxruntime runs twice the layer's output channels
(QLinearConv / QGemm with the Q fused) and a uint8 Split + Max.

Rule (read from the graph): per-tensor uint8 activation grids, per-channel or per-tensor int8 weights with zero
point 0, int32 biases, an ungrouped Conv or a Gemm (alpha = beta = 1, no transA), a constant per-channel slope with
no zero and none above 1 (a concave channel is min(y, a y): mtcnn-rnet's first PRelu, two channels of 28), every
tensor on the way read once and not a graph output, no code -128.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from qpass.ir.graph import consumers, producers
from qpass.pipeline.pass_base import Pass, PassResult
from .prelu_split import _Builder, replace_graph, _attr, _init, _only, _plain_conv, _u8_grid, _vec, _weight, const_value


@dataclass
class PreluMaxOptions:
    #: at most this many output channels of the layer (its cost doubles)
    max_channels: int = 4096


@dataclass
class Match:
    layer: onnx.NodeProto     # Conv or Gemm
    q_y: onnx.NodeProto
    dq_y: onnx.NodeProto
    prelu: onnx.NodeProto
    q_p: onnx.NodeProto       # the PRelu output's QuantizeLinear: its grid and output name are kept
    slope: np.ndarray         # [C]
    out_axis: int             # the weight / bias axis of the layer's output channels


def _layer_axis(node) -> int | None:
    """The weight axis of the layer's output channels, or None if the layer is not one this pass doubles."""
    if _plain_conv(node):
        return 0
    if node.op_type == "Gemm" and not _attr(node, "transA", 0) and _attr(node, "alpha", 1.0) == 1.0 and \
            _attr(node, "beta", 1.0) == 1.0:
        return 0 if _attr(node, "transB", 0) else 1
    return None


def _match(g, inits: dict, prods: dict, cons: dict, outs: set, layer, max_channels: int) -> Match | None:
    axis = _layer_axis(layer)
    if axis is None or _weight(inits, prods, layer, 1, TensorProto.INT8, axis) is None or \
            len(cons.get(layer.input[1], [])) != 1:
        return None
    if len(layer.input) > 2 and layer.input[2] and (_weight(inits, prods, layer, 2, TensorProto.INT32, 0) is None
                                                    or len(cons.get(layer.input[2], [])) != 1):
        return None
    q_y = _only(cons, layer.output[0], "QuantizeLinear")
    dq_y = q_y and _only(cons, q_y.output[0], "DequantizeLinear")
    prelu = dq_y and _only(cons, dq_y.output[0], "PRelu")
    q_p = prelu and _only(cons, prelu.output[0], "QuantizeLinear")
    if q_p is None or any(_u8_grid(inits, n) is None for n in (q_y, dq_y, q_p)) or \
            {layer.output[0], q_y.output[0], dq_y.output[0], prelu.output[0]} & outs:
        return None
    w = const_value(inits, prods, prods[layer.input[1]].input[0])
    slope, c = _init(inits, prelu.input[1]), w.shape[axis]
    if slope is None or c > max_channels or int(w.min()) == -128:
        return None
    rank = 4 if layer.op_type == "Conv" else 2  # the PRelu input's rank (Conv: only 2-d kernels checked below)
    if layer.op_type == "Conv" and w.ndim != 4:
        return None
    if slope.size != 1 and (slope.size != c or slope.ndim > rank or slope.shape[slope.ndim - rank + 1] != c):
        return None
    slope = np.broadcast_to(slope.astype(np.float64).reshape(-1), (c,)).copy()
    if (slope == 0).any() or (slope > 1).any():
        return None
    return Match(layer, q_y, dq_y, prelu, q_p, slope, axis)


def find_matches(model: onnx.ModelProto, max_channels: int = 4096) -> list[Match]:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prods, cons = producers(g), consumers(g)
    outs = {o.name for o in g.output}
    found = [_match(g, inits, prods, cons, outs, n, max_channels) for n in g.node]
    return [m for m in found if m is not None]


def _double(b: _Builder, inits: dict, prods: dict, m: Match) -> None:
    """The layer's weight / bias rows [q; sign(a) q] on scales [s; |a| s] along its output axis."""
    c, mag = len(m.slope), np.abs(m.slope)
    for k, tag, axis in ((1, "w", m.out_axis), (2, "b", 0)):
        if len(m.layer.input) <= k or not m.layer.input[k]:
            continue
        dq = prods[m.layer.input[k]]
        codes = dq.input[0]
        rank = const_value(inits, prods, codes).ndim
        neg = (m.slope < 0).reshape([c if i == axis else 1 for i in range(rank)])
        half = b.node("Where", [b.const(neg, f"{tag}neg_mask"), b.node("Neg", [codes], f"{tag}neg"), codes],
                      f"{tag}half")
        dq.input[0] = b.node("Concat", [codes, half], f"{tag}2", axis=axis)
        sc = _vec(inits, dq.input[1], c)
        dq.input[1] = b.const(np.concatenate([sc, sc * mag]).astype(np.float32), f"{tag}s")
        zdt = np.int8 if k == 1 else np.int32
        if len(dq.input) > 2 and dq.input[2]:
            dq.input[2] = b.const(np.zeros(2 * c, zdt), f"{tag}z")
        del dq.attribute[:]
        dq.attribute.append(helper.make_attribute("axis", axis))


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)


def rewrite(model: onnx.ModelProto, m: Match) -> None:
    """Rewrite one match of ``model`` in place (see the module docstring)."""
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prods = producers(g)
    b = _Builder(model, m.layer.name or m.layer.output[0])
    replaced = {t for n in (m.q_y, m.dq_y, m.prelu) for t in n.input[1:]} | \
        {t for k in (1, 2) if len(m.layer.input) > k and m.layer.input[k] in prods
         for t in prods[m.layer.input[k]].input}
    _double(b, inits, prods, m)
    c = len(m.slope)
    m.q_y.input[1:] = list(m.q_p.input[1:3])
    halves = [b.names(f"{b.base}_pos"), b.names(f"{b.base}_slope")]
    if _opset(model) >= 13:
        split = helper.make_node("Split", [m.q_y.output[0], b.const(np.array([c, c], np.int64), "split")],
                                 halves, name=halves[0] + "_split", axis=1)
    else:
        split = helper.make_node("Split", [m.q_y.output[0]], halves, name=halves[0] + "_split", axis=1,
                                 split=[c, c])
    mx = helper.make_node("Max", halves, [m.q_p.output[0]], name=b.names(f"{b.base}_prelu_max"))
    gone = {id(n) for n in (m.dq_y, m.prelu, m.q_p)}
    stale = {t for n in (m.layer, m.q_y, m.dq_y, m.prelu) for t in n.output} | \
        {t for t in m.layer.input[1:3]}
    kept = [x for n in g.node if id(n) not in gone for x in ([n, split, mx] if n is m.q_y else [n])]
    replace_graph(g, b.nodes + kept, replaced, b.inits, stale)


def max_prelus(model: onnx.ModelProto, max_channels: int = 4096) -> list[str]:
    """Rewrite every match in place (found again after each rewrite); the layers' names."""
    done = []
    while True:
        todo = [m for m in find_matches(model, max_channels) if (m.layer.name or m.layer.output[0]) not in done]
        if not todo:
            return done
        rewrite(model, todo[0])
        done.append(todo[0].layer.name or todo[0].layer.output[0])


class PreluMax(Pass):
    name = "prelu_max"
    Options = PreluMaxOptions

    def run(self, model, ctx):
        done = max_prelus(model, self.opts.max_channels)
        if not done:
            return PassResult(model, False, ["no layer -> PRelu (slopes <= 1) on uint8 grids to rewrite"])
        return PassResult(model, True, [f"{len(done)} PRelu(s) as Max of doubled layer outputs on the PRelu "
                                        f"output's grid (one requantization less each): {', '.join(done)}"])
