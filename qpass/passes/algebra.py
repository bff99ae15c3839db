"""Algebraic streamlining of float graphs (FINN's streamline moves, as general passes).

Each pass rewrites one kind of local pattern wherever it is mathematically allowed and says whether it changed
anything, so a ``repeat`` group runs them to a fixed point:

- ``batchnorm_to_affine``: a BatchNormalization no linear layer can absorb becomes Mul + Add;
- ``fold_const_arith``: Sub/Div by a constant become Add/Mul; a per-output-channel Mul or Add after a linear layer
  (the layer's output read by it alone) folds into the layer's weights / bias;
- ``collapse_repeated``: Mul(Mul(x, a), b) -> Mul(x, a*b) and Add(Add(x, a), b) -> Add(x, a+b);
- ``move_mul_past``: a Mul by a constant moves forward through Relu and MaxPool (when positive), Reshape, Flatten,
  Transpose, Squeeze, Unsqueeze, Identity (when scalar), Concat (when every input carries the same scalar) and into
  the input channels of a following Conv / Gemm / MatMul's weights (any per-input-channel vector);
- ``move_add_past``: an Add of a constant moves into a following Gemm / MatMul (x + a) W = x W + a W, or an unpadded
  Conv (its bias absorbs the constant's contribution).

Results equal the original graph up to float rounding (tested against onnxruntime).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import from_gs, to_gs
from qpass.pipeline.pass_base import Pass, PassResult
from .fold_batchnorm import LINEAR_OPS, _out_channel_axis, bn_affine

LAYOUT_OPS = ("Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze", "Identity")


def _const(t) -> np.ndarray | None:
    return np.asarray(t.values) if isinstance(t, gs.Constant) else None


def _single_reader(t: gs.Tensor, graph: gs.Graph) -> bool:
    return len(t.outputs) == 1 and t not in graph.outputs


def _const_operand(node: gs.Node):
    """(variable input, constant value, constant index) of a binary op with one constant operand."""
    if len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if _const(b) is not None and _const(a) is None:
        return a, _const(b), 1
    if _const(a) is not None and _const(b) is None and node.op in ("Add", "Mul"):
        return b, _const(a), 0
    return None


def _per_channel(v: np.ndarray, rank: int | None, axis: int, channels: int) -> np.ndarray | None:
    """The constant as a length-``channels`` vector if it only varies along ``axis`` of a rank-``rank`` tensor."""
    if v.size == 1:
        return np.full(channels, float(v.reshape(-1)[0]))
    if rank is None or v.ndim > rank:
        return None
    shape = (1,) * (rank - v.ndim) + v.shape
    if any(d != 1 for i, d in enumerate(shape) if i != axis % rank) or shape[axis % rank] != channels:
        return None
    return v.reshape(-1).astype(np.float64)


def _bypass(graph: gs.Graph, node: gs.Node) -> None:
    """Remove a single-input node: its readers read its input instead (keeps graph output names)."""
    x, y = node.inputs[0], node.outputs[0]
    if y in graph.outputs and x.inputs:
        prod = x.inputs[0]
        prod.outputs[prod.outputs.index(x)] = y
    else:
        for r in list(y.outputs):
            for i, t in enumerate(r.inputs):
                if t is y:
                    r.inputs[i] = x
        if y in graph.outputs:
            graph.outputs[graph.outputs.index(y)] = x
    node.inputs.clear()
    node.outputs.clear()


class _GraphPass(Pass):
    def run(self, model, ctx):
        graph = to_gs(model)
        self.b = GraphBuilder(graph)
        n = self.rewrite(graph)
        if not n:
            return PassResult(model, False)
        return PassResult(from_gs(graph, model), True, [f"{n} rewrites"])

    def rewrite(self, graph: gs.Graph) -> int:
        raise NotImplementedError


class BatchNormToAffine(_GraphPass):
    name = "batchnorm_to_affine"

    def rewrite(self, graph):
        count = 0
        for bn in list(graph.nodes):
            if bn.op != "BatchNormalization" or len([o for o in bn.outputs if o.outputs or o in graph.outputs]) > 1:
                continue
            ab = bn_affine(bn)
            x = bn.inputs[0]
            if ab is None or x.shape is None or len(x.shape) < 2:
                continue
            a, b = ab
            shape = [1] * len(x.shape)
            shape[1] = a.size
            dt = np.float32
            mid = self.b.var(bn.name + "_scaled", dtype=dt)
            y = bn.outputs[0]
            self.b.node("Mul", [x, self.b.const(a.reshape(shape).astype(dt), name=bn.name + "_a")], [mid],
                        name=bn.name + "_mul")
            self.b.node("Add", [mid, self.b.const(b.reshape(shape).astype(dt), name=bn.name + "_b")], [y],
                        name=bn.name + "_add")
            bn.inputs.clear()
            bn.outputs.clear()
            count += 1
        return count


class FoldConstArith(_GraphPass):
    name = "fold_const_arith"

    def rewrite(self, graph):
        count = 0
        for node in list(graph.nodes):
            if node.op in ("Sub", "Div") and _const(node.inputs[1]) is not None and _const(node.inputs[0]) is None:
                v = _const(node.inputs[1]).astype(np.float64)
                if node.op == "Div" and np.any(v == 0):
                    continue
                new = -v if node.op == "Sub" else 1.0 / v
                node.op = "Add" if node.op == "Sub" else "Mul"
                node.inputs[1] = self.b.const(new.astype(np.float32), name=node.name + "_c")
                count += 1
            elif node.op in ("Mul", "Add") and self._fold_into_producer(graph, node):
                count += 1
        return count

    def _fold_into_producer(self, graph, node) -> bool:
        op = _const_operand(node)
        if op is None:
            return False
        x, v, _ = op
        if not x.inputs or not _single_reader(x, graph):
            return False
        prod = x.inputs[0]
        if prod.op not in LINEAR_OPS or len(prod.inputs) < 2 or _const(prod.inputs[1]) is None:
            return False
        w = _const(prod.inputs[1])
        axis = _out_channel_axis(prod, w)
        if axis is None:
            return False
        channels = w.shape[axis]
        rank = len(x.shape) if x.shape is not None else None
        out_axis = 1 if prod.op in ("Conv", "ConvTranspose") else -1
        vec = _per_channel(v, rank, out_axis, channels)
        if vec is None:
            return False
        has_bias = len(prod.inputs) > 2 and prod.inputs[2] is not None and prod.inputs[2].name
        if prod.op == "MatMul" and (node.op == "Add" or has_bias):
            if node.op == "Add":
                return False
        bias = _const(prod.inputs[2]).astype(np.float64) if has_bias else np.zeros(channels)
        if has_bias and bias.shape != (channels,):
            return False
        if node.op == "Mul":
            shape = [1] * w.ndim
            shape[axis] = channels
            prod.inputs[1] = self.b.const((w.astype(np.float64) * vec.reshape(shape)).astype(w.dtype),
                                          name=prod.inputs[1].name + "_m")
            bias = bias * vec
        else:
            bias = bias + vec
        if prod.op != "MatMul":
            while len(prod.inputs) < 3:
                prod.inputs.append(gs.Variable.empty())
            prod.inputs[2] = self.b.const(bias.astype(w.dtype), name=prod.name + "_bias")
        _bypass(graph, node)
        return True


class CollapseRepeated(_GraphPass):
    name = "collapse_repeated"

    def rewrite(self, graph):
        count = 0
        for node in list(graph.nodes):
            if node.op not in ("Mul", "Add") or not node.outputs:
                continue
            op = _const_operand(node)
            if op is None:
                continue
            x, v, _ = op
            if not x.inputs or x.inputs[0].op != node.op or not _single_reader(x, graph):
                continue
            prev = x.inputs[0]
            pop = _const_operand(prev)
            if pop is None:
                continue
            x0, v0, _ = pop
            try:
                combined = (v0 * v) if node.op == "Mul" else (v0 + v)
            except ValueError:
                continue
            y = node.outputs[0]
            prev.inputs[0] = x0
            prev.inputs[1] = self.b.const(combined, name=prev.name + "_c")
            prev.outputs[0] = y
            node.inputs.clear()
            node.outputs.clear()
            count += 1
        return count


class MovePast(_GraphPass):
    """Shared machinery of move_mul_past and move_add_past."""

    op = ""

    def rewrite(self, graph):
        count = 0
        for node in list(graph.nodes):
            if node.op != self.op or not node.outputs:
                continue
            op = _const_operand(node)
            if op is None:
                continue
            x, v, _ = op
            y = node.outputs[0]
            if len(y.outputs) != 1 or y in graph.outputs:
                continue
            nxt = y.outputs[0]
            if self.move(graph, node, x, v, y, nxt):
                count += 1
        return count

    def move(self, graph, node, x, v, y, nxt) -> bool:
        raise NotImplementedError

    def _into_linear_input(self, graph, node, x, v, y, nxt) -> bool:
        """Fold a per-input-channel Mul (or an Add) into the weights of the linear op reading ``y``."""
        if nxt.op not in LINEAR_OPS or nxt.inputs[0] is not y or _const(nxt.inputs[1]) is None:
            return False
        w = _const(nxt.inputs[1]).astype(np.float64)
        if nxt.op == "Conv":
            in_axis, rank = 1, len(y.shape) if y.shape is not None else None
            if int(nxt.attrs.get("group", 1)) != 1:
                return False
        elif nxt.op == "Gemm":
            if int(nxt.attrs.get("transA", 0)):
                return False
            in_axis, rank = 1, 2
        elif nxt.op == "MatMul" and w.ndim == 2:
            in_axis, rank = -1, len(y.shape) if y.shape is not None else None
        else:
            return False
        cin = w.shape[1] if nxt.op == "Conv" else (w.shape[1] if int(nxt.attrs.get("transB", 0)) else w.shape[0])
        vec = _per_channel(v, rank, in_axis, cin)
        if vec is None:
            return False
        w_in_axis = 1 if nxt.op == "Conv" or (nxt.op == "Gemm" and int(nxt.attrs.get("transB", 0))) else 0
        shape = [1] * w.ndim
        shape[w_in_axis] = cin
        if self.op == "Mul":
            nxt.inputs[1] = self.b.const((w * vec.reshape(shape)).astype(np.float32),
                                         name=nxt.inputs[1].name + "_m")
        else:
            if nxt.op == "Conv" and any(int(p) for p in nxt.attrs.get("pads", [])) or \
                    nxt.attrs.get("auto_pad", "NOTSET") not in ("NOTSET", "VALID", b"NOTSET", b"VALID"):
                return False  # padding zeros would not be shifted
            contrib = (w * vec.reshape(shape)).sum(axis=tuple(i for i in range(w.ndim) if i != (0 if nxt.op == "Conv" else (0 if nxt.op == "Gemm" and int(nxt.attrs.get("transB", 0)) else 1))))
            if nxt.op == "MatMul":
                return False  # MatMul has no bias input; keep the Add
            b = _const(nxt.inputs[2]).astype(np.float64) if len(nxt.inputs) > 2 and nxt.inputs[2].name else 0.0
            while len(nxt.inputs) < 3:
                nxt.inputs.append(gs.Variable.empty())
            nxt.inputs[2] = self.b.const((b + contrib).astype(np.float32), name=nxt.name + "_bias")
        _bypass(graph, node)
        return True


class MoveMulPast(MovePast):
    name = "move_mul_past"
    op = "Mul"

    def move(self, graph, node, x, v, y, nxt):
        if self._into_linear_input(graph, node, x, v, y, nxt):
            return True
        scalar = v.size == 1
        positive = bool(np.all(v > 0))
        if nxt.op in LAYOUT_OPS and scalar or nxt.op in ("Relu", "MaxPool") and positive and \
                (scalar or nxt.op == "Relu"):
            # swap: x -> nxt -> Mul -> out
            out = nxt.outputs[0]
            mid = self.b.var(out.name + "_unscaled", out, out.dtype)
            nxt.inputs[0] = x
            nxt.outputs[0] = mid
            k = node.inputs[1] if _const(node.inputs[1]) is not None else node.inputs[0]
            node.inputs[0] = mid
            node.inputs[1] = k
            node.outputs[0] = out
            return True
        if nxt.op == "Concat" and scalar:
            return self._past_concat(graph, nxt, float(v.reshape(-1)[0]))
        return False

    def _past_concat(self, graph, cat, s: float) -> bool:
        """Concat(Mul(a, s), Mul(b, s), ...) -> Mul(Concat(a, b, ...), s) when every input carries the same scalar."""
        muls = []
        for t in cat.inputs:
            prod = t.inputs[0] if not isinstance(t, gs.Constant) and t.inputs else None
            op = _const_operand(prod) if prod is not None and prod.op == "Mul" else None
            if op is None or op[1].size != 1 or float(op[1].reshape(-1)[0]) != s or not _single_reader(t, graph):
                return False
            muls.append((prod, op[0]))
        out = cat.outputs[0]
        mid = self.b.var(out.name + "_unscaled", out, out.dtype)
        for i, (m, x) in enumerate(muls):
            cat.inputs[i] = x
            m.inputs.clear()
            m.outputs.clear()
        cat.outputs[0] = mid
        self.b.node("Mul", [mid, self.b.const(s, name=cat.name + "_s")], [out], name=cat.name + "_scale")
        return True


class MoveAddPast(MovePast):
    name = "move_add_past"
    op = "Add"

    def move(self, graph, node, x, v, y, nxt):
        return self._into_linear_input(graph, node, x, v, y, nxt)
