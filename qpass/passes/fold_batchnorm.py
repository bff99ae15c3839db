"""Batch-norm folding into the preceding linear layer (Conv, ConvTranspose, Gemm, MatMul; a 2-D MatMul followed by
a BatchNorm1d becomes a Gemm with the folded bias).

y = gamma * (x - mean) / sqrt(var + eps) + beta  =  a * x + b  with a = gamma / sqrt(var + eps), b = beta - a * mean.
Scaling the producer's output channel c by a[c] and adding b[c] to its bias folds the BN away exactly (in real
arithmetic; in float32 to rounding).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.ir.graph import from_gs, to_gs
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.ops.common import LINEAR_OPS



def bn_affine(bn: gs.Node) -> tuple[np.ndarray, np.ndarray] | None:
    """(a, b) of a BatchNormalization node in inference form, or None if its parameters are not constant."""
    params = bn.inputs[1:5]
    if len(params) != 4 or not all(isinstance(p, gs.Constant) for p in params):
        return None
    gamma, beta, mean, var = (np.asarray(p.values, dtype=np.float64) for p in params)
    eps = float(bn.attrs.get("epsilon", 1e-5))
    a = gamma / np.sqrt(var + eps)
    return a, beta - a * mean


def _out_channel_axis(node: gs.Node, w: np.ndarray) -> int | None:
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1 if int(node.attrs.get("group", 1)) == 1 else None
    if node.op == "Gemm":
        if int(node.attrs.get("transA", 0)) or w.ndim != 2:
            return None
        return 0 if int(node.attrs.get("transB", 0)) else 1
    if node.op == "MatMul":
        return w.ndim - 1 if w.ndim >= 2 else None
    return None


def _bias_ok(node: gs.Node) -> bool:
    idx = 2
    if len(node.inputs) <= idx or node.inputs[idx] is None or node.inputs[idx].name == "":
        return True
    return isinstance(node.inputs[idx], gs.Constant) and np.asarray(node.inputs[idx].values).ndim == 1


def fold_into_producer(graph: gs.Graph, bn: gs.Node) -> bool:
    x = bn.inputs[0]
    if len(x.inputs) != 1 or len(x.outputs) != 1 or x in graph.outputs:
        return False
    prod = x.inputs[0]
    if prod.op not in LINEAR_OPS or len(prod.inputs) < 2 or not isinstance(prod.inputs[1], gs.Constant):
        return False
    if len([o for o in bn.outputs if o.outputs or o in graph.outputs]) > 1:
        return False  # training-mode BN with used running statistics
    ab = bn_affine(bn)
    w = np.asarray(prod.inputs[1].values)
    axis = _out_channel_axis(prod, w)
    if ab is None or axis is None or (prod.op != "MatMul" and not _bias_ok(prod)):
        return False
    a, b = ab
    channels = w.shape[axis]
    if a.shape != (channels,):
        return False
    if prod.op == "MatMul":
        # a MatMul output's channel is its last axis; BN normalises axis 1, which is the last one only for 2-D data
        if x.shape is None or len(x.shape) != 2:
            return False
    shape = [1] * w.ndim
    shape[axis] = channels
    w_new = (w.astype(np.float64) * a.reshape(shape)).astype(w.dtype)
    prod.inputs[1] = gs.Constant(prod.inputs[1].name + "_bnfold", w_new)
    if prod.op == "MatMul":
        if w.ndim != 2:
            return False
        # a 2-D MatMul + BN1d becomes one Gemm with a bias (FINN's streamlining keeps the affine with the layer):
        # an Add after the MatMul would be a compute op of its own, whose input the activation quantiser would
        # round (Brevitas' CNV then computed sign(sign(Wx) + b))
        prod.op, prod.attrs = "Gemm", {}
    if len(prod.inputs) > 2 and prod.inputs[2] is not None and prod.inputs[2].name:
        old = np.asarray(prod.inputs[2].values, dtype=np.float64)
    else:
        old = np.zeros(channels)
    bias = (old * a + b).astype(w.dtype)
    while len(prod.inputs) < 3:
        prod.inputs.append(gs.Variable.empty())
    prod.inputs[2] = gs.Constant(prod.name + "_bias_bnfold", bias)
    y = bn.outputs[0]
    prod.outputs[0] = y
    bn.outputs.clear()
    bn.inputs.clear()
    return True


class FoldBatchNorm(Pass):
    name = "fold_batchnorm"

    def run(self, model, ctx):
        graph = to_gs(model)
        folded = [bn.name for bn in list(graph.nodes) if bn.op == "BatchNormalization" and fold_into_producer(graph, bn)]
        if not folded:
            return PassResult(model, False)
        return PassResult(from_gs(graph, model), True, [f"folded {len(folded)} BatchNormalization nodes"])
