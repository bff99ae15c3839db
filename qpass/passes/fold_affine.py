"""fold_affine: per-channel affine nodes (Sub / Mul / Add / Div by a constant: decomposed batch norms, input
normalisation, rescaling) folded into the adjacent Conv, Gemm or MatMul before calibration, so that quantization
sees one layer instead of a layer and float arithmetic with a Q/DQ boundary between them.

Two directions, exact in real arithmetic (the float32 results differ by rounding only):

- after a layer whose output only the affine node reads: a (W x + b) + c = (a W) x + (a b + c) per output channel,
  always exact (a 2-D MatMul taking an offset becomes a Gemm; other MatMuls have no bias and take scales only);
- before a layer that alone reads the affine node's output: W (a x + c) + b = (W a) x + (b + W c) per input
  channel. A scale always folds (a zero-padded Conv pads a x with zeros, and a * 0 = 0); an offset only where the
  layer does not pad (Gemm; Conv without pads): the padding zeros of Conv(x + c) are not shifted by c, so near the
  borders it differs from Conv(x) + W c. MatMul takes scales only here too.

Runs to a fixed point, so chains (Conv -> Mul -> Add, x -> Div -> Mul -> Gemm) fold one node at a time.
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import from_gs, to_gs
from qpass.pipeline.pass_base import Pass, PassResult

LAYERS = ("Conv", "Gemm", "MatMul")


def _const(t) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def affine_form(node: gs.Node):
    """(data input, scale, offset) of y = scale * x + offset for Add / Sub / Mul / Div with one constant float
    operand (the other arrays of the pair are None), or None."""
    if node.op not in ("Add", "Sub", "Mul", "Div") or len(node.inputs) != 2 or len(node.outputs) != 1:
        return None
    x, k = node.inputs
    if _const(x) is not None and node.op in ("Add", "Mul"):
        x, k = k, x
    v = _const(k)
    if v is None or _const(x) is not None or v.dtype.kind != "f":
        return None
    v = v.astype(np.float64)
    if node.op == "Div":
        return (x, 1.0 / v, None) if np.all(v != 0) else None
    return {"Add": (x, None, v), "Sub": (x, None, -v), "Mul": (x, v, None)}[node.op]


def channel_vector(v: np.ndarray, rank: int | None, axis: int, channels: int) -> np.ndarray | None:
    """``v`` as one value per channel of ``axis`` of a rank-``rank`` tensor it broadcasts against without growing
    it, or None."""
    if v.size == 1:
        return np.full(channels, float(v.reshape(-1)[0]))
    if rank is None or v.ndim > rank:
        return None
    shape = (1,) * (rank - v.ndim) + v.shape
    ax = axis % rank
    if shape[ax] != channels or any(d != 1 for i, d in enumerate(shape) if i != ax):
        return None
    return v.reshape(-1)


def _sole_reader(graph, t: gs.Tensor):
    """The one node reading ``t`` when nothing else does and it is not a graph output, else None."""
    return t.outputs[0] if len(t.outputs) == 1 and t not in graph.outputs else None


def _rank(t: gs.Tensor) -> int | None:
    return len(t.shape) if getattr(t, "shape", None) is not None else None


def _geometry(layer: gs.Node, w: np.ndarray, t: gs.Tensor, side: str):
    """(rank of ``t``, channel axis of ``t``, channels, axis of ``w`` holding them) for the layer's output
    (side "out") or data input (side "in"); None where unsupported."""
    if layer.op == "Conv":
        group = int(layer.attrs.get("group", 1))
        if side == "out":
            return w.ndim, 1, w.shape[0], 0
        return w.ndim, 1, w.shape[1] * group, 1
    if layer.op == "Gemm":
        if int(layer.attrs.get("transA", 0)) or w.ndim != 2 or float(layer.attrs.get("alpha", 1.0)) != 1.0 \
                or float(layer.attrs.get("beta", 1.0)) != 1.0:
            return None
        tb = int(layer.attrs.get("transB", 0))
        return (2, 1, w.shape[0 if tb else 1], 0 if tb else 1) if side == "out" else \
            (2, 1, w.shape[1 if tb else 0], 1 if tb else 0)
    if w.ndim < 2:
        return None
    return (_rank(t), -1, w.shape[-1], w.ndim - 1) if side == "out" else (_rank(t), -1, w.shape[-2], w.ndim - 2)


def _along(vec: np.ndarray, axis: int, ndim: int) -> np.ndarray:
    shape = [1] * ndim
    shape[axis] = -1
    return vec.reshape(shape)


def _conv_input_scale(w: np.ndarray, vec: np.ndarray, group: int) -> np.ndarray:
    """Per-input-channel factors of a (grouped) Conv as an array broadcastable to its weight [M, C/g, *k]."""
    m, cg = w.shape[0], w.shape[1]
    per_out = vec.reshape(group, cg)[np.arange(m) // (m // group)]  # [M, C/g]
    return per_out.reshape((m, cg) + (1,) * (w.ndim - 2))


class FoldAffine(Pass):
    name = "fold_affine"

    def run(self, model, ctx):
        graph = to_gs(model)
        folded = sum(self._fold(g) for g in [graph, *graph.subgraphs(recursive=True)])  # If / Loop / Scan bodies too
        if not folded:
            return PassResult(model, False)
        graph.cleanup(remove_unused_graph_inputs=False).toposort()
        return PassResult(from_gs(graph, model), True, [f"folded {folded} affine nodes into their layers"])

    def _fold(self, graph) -> int:
        """Fold in one graph (a body's own nodes only) to a fixed point; the number of nodes folded."""
        self.b = GraphBuilder(graph)
        folded = 0
        changed = True
        while changed:
            changed = False
            for node in list(graph.nodes):
                form = affine_form(node) if node.outputs else None
                if form is not None and (self._into_producer(graph, node, *form)
                                         or self._into_consumer(graph, node, *form)
                                         or self._behind_relu(graph, node, *form)):
                    folded += 1
                    changed = True
        return folded

    # ---------------------------------------------------------------------------------------------- after a layer
    def _into_producer(self, graph, node, x, scale, offset) -> bool:
        layer = x.inputs[0] if len(x.inputs) == 1 else None
        if layer is None or layer.op not in LAYERS or len(x.outputs) != 1 or x in graph.outputs:
            return False
        w = _const(layer.inputs[1]) if len(layer.inputs) > 1 else None
        geo = None if w is None or w.dtype.kind != "f" else _geometry(layer, w, x, "out")
        if geo is None:
            return False
        rank, axis, channels, w_axis = geo
        vec = channel_vector(scale if offset is None else offset, rank, axis, channels)
        if vec is not None and layer.op == "MatMul" and offset is not None:
            if w.ndim != 2 or _rank(layer.inputs[0]) != 2:
                return False
            layer.op, layer.attrs = "Gemm", {}  # 2-D MatMul + bias = Gemm
        bias = self._bias(layer, channels)
        if vec is None or bias is None:
            return False
        if scale is not None:
            self._set_weight(layer, w * _along(vec, w_axis, w.ndim))
            bias = bias * vec
        else:
            bias = bias + vec
        if layer.op != "MatMul":
            self._set_bias(layer, bias, w.dtype)
        layer.outputs[0] = node.outputs[0]
        node.inputs.clear()
        node.outputs.clear()
        return True

    # --------------------------------------------------------------------------------------------- before a layer
    def _into_consumer(self, graph, node, x, scale, offset) -> bool:
        y = node.outputs[0]
        layer = y.outputs[0] if len(y.outputs) == 1 and y not in graph.outputs else None
        if layer is None or layer.op not in LAYERS or len(layer.inputs) < 2 or layer.inputs[0] is not y:
            return False
        w = _const(layer.inputs[1])
        geo = None if w is None or w.dtype.kind != "f" else _geometry(layer, w, y, "in")
        if geo is None:
            return False
        rank, axis, channels, w_axis = geo
        vec = channel_vector(scale if offset is None else offset, rank, axis, channels)
        if vec is None:
            return False
        w64 = w.astype(np.float64)
        if layer.op == "Conv":
            factor = _conv_input_scale(w64, vec, int(layer.attrs.get("group", 1)))
        else:
            factor = _along(vec, w_axis, w.ndim)
        if scale is not None:
            self._set_weight(layer, w64 * factor)
        elif not self._absorb_offset(layer, w64, factor, w.dtype):
            return False
        layer.inputs[0] = x
        node.inputs.clear()
        node.outputs.clear()
        return True

    # ------------------------------------------------------------------------------------------- through a Relu
    def _behind_relu(self, graph, node, x, scale, offset) -> bool:
        """x * g [+ c] -> Relu -> layer with every g > 0 becomes (x + c / g) -> Relu -> * g -> layer, since
        Relu(g z) = g Relu(z) for g > 0; the moved Mul then folds into the layer's input channels (a LayerNorm's
        gamma before Relu -> Gemm). Only where that fold is certain to follow."""
        if scale is None or not np.all(np.isfinite(scale)) or not np.all(scale > 0):
            return False
        y = node.outputs[0]
        step = _sole_reader(graph, y)
        add = affine_form(step) if step is not None and step.op != "Relu" else None
        if step is None or (step.op != "Relu" and (add is None or add[0] is not y or add[1] is not None)):
            return False
        relu = step if add is None else _sole_reader(graph, step.outputs[0])
        if relu is None or relu.op != "Relu":
            return False
        layer = _sole_reader(graph, relu.outputs[0])
        if layer is None or layer.op not in LAYERS or len(layer.inputs) < 2 or layer.inputs[0] is not relu.outputs[0]:
            return False
        w = _const(layer.inputs[1])
        geo = None if w is None or w.dtype.kind != "f" else _geometry(layer, w, y, "in")
        if geo is None or channel_vector(scale, geo[0], geo[1], geo[2]) is None:
            return False
        g = [t for t in node.inputs if t is not x][0]
        if add is None:
            relu.inputs[0] = x
        else:
            c = (add[2] / scale).astype(np.asarray(g.values).dtype)
            step.op = "Add"
            step.inputs.clear()
            step.inputs.extend([x, self.b.const(c, name=step.name + "_offset_behind_relu")])
        node.inputs.clear()
        node.inputs.extend([relu.outputs[0], g])
        layer.inputs[0] = y
        return True

    def _absorb_offset(self, layer, w: np.ndarray, factor: np.ndarray, dtype) -> bool:
        """bias += W c (``factor`` is c laid along the weight's input axis), where the layer does not pad."""
        if layer.op == "MatMul":
            return False
        if layer.op == "Conv":
            pads = [int(p) for p in layer.attrs.get("pads", [])]
            auto = layer.attrs.get("auto_pad", "NOTSET")
            if any(pads) or (auto.decode() if isinstance(auto, bytes) else auto) not in ("NOTSET", "VALID"):
                return False
            contrib = (w * factor).reshape(w.shape[0], -1).sum(axis=1)
        else:
            tb = int(layer.attrs.get("transB", 0))
            contrib = (w * factor).sum(axis=1 if tb else 0)
        bias = self._bias(layer, contrib.size)
        if bias is None:
            return False
        self._set_bias(layer, bias + contrib, dtype)
        return True

    # ------------------------------------------------------------------------------------------------- helpers
    def _bias(self, layer, channels: int) -> np.ndarray | None:
        """The layer's bias as one float64 per output channel (zeros when absent), or None when it is not a
        constant of that form."""
        if layer.op == "MatMul" or len(layer.inputs) < 3 or not layer.inputs[2].name:
            return np.zeros(channels)
        b = _const(layer.inputs[2])
        if b is None or b.size not in (1, channels) or (b.ndim > 1 and b.shape[-1] != b.size):
            return None
        return np.broadcast_to(b.astype(np.float64).reshape(-1), (channels,)).copy()

    def _set_weight(self, layer, w: np.ndarray) -> None:
        old = layer.inputs[1]
        layer.inputs[1] = self.b.const(w.astype(np.asarray(old.values).dtype), name=old.name + "_folded")

    def _set_bias(self, layer, bias: np.ndarray, dtype) -> None:
        while len(layer.inputs) < 3:
            layer.inputs.append(gs.Variable.empty())
        layer.inputs[2] = self.b.const(bias.astype(dtype), name=layer.name + "_bias_folded")
