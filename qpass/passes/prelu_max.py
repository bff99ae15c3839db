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

A channel with a slope above 1 is concave, min(y, a y) (mtcnn-rnet's first PRelu: two channels of 28, which set
its output grid's negative end). Then the codes are Max(Min(h1, h2), Min(Max(h1, h2), k)), k = 0 on those channels
and 255 elsewhere: on uint8 codes (>= 0) that is the Min of the halves there and their Max elsewhere, four
elementwise uint8 ops (a Where on a per-channel mask measured 4x slower than all four together); only where one
sample's tensor has a known size below ``concave_max_elements`` (beyond it prelu_lut's table is faster). mtcnn-rnet:
the first PRelu integer, one requantization less; eval SQNR on 208 held-out crops 33.62 -> 34.42 dB (three
calibration / eval splits: +0.8, +1.5, +3.4 dB), int8 latency 0.98 -> 0.97x of quantize_static's.

Rule (read from the graph): per-tensor uint8 activation grids, per-channel or per-tensor int8 weights with zero
point 0, int32 biases, an ungrouped Conv or a Gemm (alpha = beta = 1, no transA), a constant per-channel slope with
no zero, every tensor on the way read once and not a graph output, no code -128.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper

from qpass.ir.graph import consumers, producers, shapes
from qpass.pipeline.pass_base import Pass, PassResult
from .prelu_lut import worth_a_table
from .prelu_split import _Builder, replace_graph, _attr, _init, _only, _plain_conv, _u8_grid, _vec, _weight, const_value


@dataclass
class PreluMaxOptions:
    #: at most this many output channels of the layer (its cost doubles)
    max_channels: int = 4096
    #: also where some slopes are above 1 (those channels min(y, a y): two Min and a Max more, elementwise on uint8)
    concave: bool = True
    #: ... only where one sample's tensor has fewer elements than this (a known size): on larger ones prelu_lut's
    #: table lookup is faster (mtcnn-pnet's first PRelu, slope 1.01 on one channel of 10, symbolic size: int8
    #: latency 0.77 -> 0.80x of quantize_static's with the Min / Max form; rnet's 22 x 22 x 28: 0.98 -> 0.97x)
    concave_max_elements: int = 16384


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


def _match(g, inits: dict, prods: dict, cons: dict, outs: set, layer, max_channels: int,
           concave: bool = True) -> Match | None:
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
    if (slope == 0).any() or not concave and (slope > 1).any():
        return None
    return Match(layer, q_y, dq_y, prelu, q_p, slope, axis)


def find_matches(model: onnx.ModelProto, max_channels: int = 4096, concave: bool = True,
                 concave_max: int = 16384) -> list[Match]:
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    prods, cons = producers(g), consumers(g)
    outs = {o.name for o in g.output}
    found = [m for m in (_match(g, inits, prods, cons, outs, n, max_channels, concave) for n in g.node) if m]
    if any((m.slope > 1).any() for m in found):  # the Min / Max form only on small tensors (see the Options)
        dims = shapes(onnx.shape_inference.infer_shapes(model))
        found = [m for m in found if not (m.slope > 1).any() or _small(dims.get(m.layer.output[0]), concave_max)]
    return found


def _small(shape, max_elements: int) -> bool:
    """One sample's tensor (dim 0 the batch) has a known size below ``max_elements``."""
    if shape is None or any(not isinstance(d, int) for d in shape[1:]):
        return False
    return not worth_a_table(list(shape), max_elements)


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
    ends = [helper.make_node("Max", halves, [m.q_p.output[0]], name=b.names(f"{b.base}_prelu_max"))]
    concave = m.slope > 1
    if concave.any():  # those channels are min(y, a y): Max(Min(h1, h2), Min(Max(h1, h2), k)) with k = 0 there,
        # 255 elsewhere (uint8 codes: min >= 0), elementwise ops onnxruntime runs fast on uint8 (Where is 4x slower)
        rank = 4 if m.layer.op_type == "Conv" else 2
        k = b.const(np.where(concave, 0, 255).astype(np.uint8).reshape((1, c) + (1,) * (rank - 2)), "concave")
        hi, lo, cut = (b.names(f"{b.base}_{t}") for t in ("convex", "concave", "cut"))
        ends = [helper.make_node("Max", halves, [hi], name=hi), helper.make_node("Min", halves, [lo], name=lo),
                helper.make_node("Min", [hi, k], [cut], name=cut),
                helper.make_node("Max", [lo, cut], [m.q_p.output[0]], name=b.names(f"{b.base}_prelu_minmax"))]
    gone = {id(n) for n in (m.dq_y, m.prelu, m.q_p)}
    stale = {t for n in (m.layer, m.q_y, m.dq_y, m.prelu) for t in n.output} | \
        {t for t in m.layer.input[1:3]}
    kept = [x for n in g.node if id(n) not in gone for x in ([n, split] + ends if n is m.q_y else [n])]
    replace_graph(g, b.nodes + kept, replaced, b.inits, stale)


def max_prelus(model: onnx.ModelProto, max_channels: int = 4096, concave: bool = True,
               concave_max: int = 16384) -> list[str]:
    """Rewrite every match in place (found again after each rewrite); the layers' names."""
    done = []
    while True:
        todo = [m for m in find_matches(model, max_channels, concave, concave_max) if (m.layer.name or m.layer.output[0]) not in done]
        if not todo:
            return done
        rewrite(model, todo[0])
        done.append(todo[0].layer.name or todo[0].layer.output[0])


class PreluMax(Pass):
    name = "prelu_max"
    Options = PreluMaxOptions

    def run(self, model, ctx):
        done = max_prelus(model, self.opts.max_channels, self.opts.concave, self.opts.concave_max_elements)
        if not done:
            return PassResult(model, False, ["no layer -> PRelu (nonzero slopes; above 1 only on small tensors) on "
                                             "uint8 grids to rewrite"])
        return PassResult(model, True, [f"{len(done)} PRelu(s) as Max of doubled layer outputs on the PRelu "
                                        f"output's grid (one requantization less each): {', '.join(done)}"])
