"""Conv + BatchNormalization (+ Relu) folded into one float32 Conv, as onnxruntime folds them when it loads a model.

onnxruntime's ConvBNFusion rewrites a float Conv whose only consumer is an inference BatchNormalization (constant
1-D parameters of the weight's dtype and output-channel count, an ``epsilon`` attribute, the BN output not a graph
output) into one Conv with the weight and bias computed once in the weight's dtype:

    s = scale / sqrt(var + epsilon);  W' = W * s (per output channel);  b' = (b - mean) * s + B  (no b: B - mean * s)

every operation rounded in float32 (its ``Initializer`` arithmetic), and its ConvActivationFusion runs a following
Relu inside the Conv. The reference does the same in its float plans (``folds``: found at construction, applied by
``GoldenExecutor._plan`` when no folded-away intermediate is asked for), so a float model's Conv + BN outputs are
onnxruntime's rounding of the folded weights, not two roundings of the unfolded ones, and three steps run as one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .registry import NodeInfo

F32 = np.float32


@dataclass
class Fold:
    """One foldable chain: the Conv, its BatchNormalization and the Relu after it (or None)."""

    conv: NodeInfo
    bn: NodeInfo
    relu: NodeInfo | None
    weight: np.ndarray  # folded, float32
    bias: np.ndarray  # folded, float32 (M,)

    @property
    def members(self) -> tuple[NodeInfo, ...]:
        return (self.conv, self.bn) + ((self.relu,) if self.relu is not None else ())

    @property
    def output(self) -> str:
        return (self.relu or self.bn).outputs[0]

    @property
    def hidden(self) -> tuple[str, ...]:
        """The intermediate names the folded step never produces."""
        return (self.conv.outputs[0],) + ((self.bn.outputs[0],) if self.relu is not None else ())


def folded_params(w, b, scale, bias, mean, var, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(W', b') in float32 as onnxruntime's ConvBNFusion computes them (one rounding per operation, in its order)."""
    s = np.asarray(scale, F32) / np.sqrt(np.asarray(var, F32) + F32(eps))
    w2 = np.asarray(w, F32) * s.reshape((-1,) + (1,) * (np.ndim(w) - 1))
    mean = np.asarray(mean, F32)
    b2 = (np.asarray(b, F32) - mean) * s + np.asarray(bias, F32) if b is not None else np.asarray(bias, F32) - mean * s
    return np.ascontiguousarray(w2), b2.astype(F32, copy=False)


def _const(consts: dict, name: str, ndim: int | None = None):
    v = consts.get(name) if name else None
    if v is None or v.dtype != F32 or (ndim is not None and v.ndim != ndim):
        return None
    return v


def find_folds(nodes: list[NodeInfo], consts: dict[str, np.ndarray], graph_outputs, skip=frozenset()) -> list[Fold]:
    """Every Conv -> BatchNormalization (-> Relu) chain of float32 constant parameters that onnxruntime folds;
    ``consts``: the values fixed at construction; ``skip``: node names that run another way (integer fusion)."""
    consumers: dict[str, list[NodeInfo]] = {}
    for n in nodes:
        for x in set(n.inputs):
            if x:
                consumers.setdefault(x, []).append(n)
    outs = set(graph_outputs)

    def only_consumer(n: NodeInfo, op: str):
        o = [x for x in n.outputs if x]
        if len(o) != 1 or o[0] in outs:
            return None
        c = consumers.get(o[0], [])
        return c[0] if len(c) == 1 and c[0].op_type == op and not c[0].domain and c[0].inputs[0] == o[0] and \
            c[0].name not in skip else None

    folds = []
    for conv in nodes:
        if conv.op_type != "Conv" or conv.domain or conv.name in skip or len(conv.inputs) < 2:
            continue
        bn = only_consumer(conv, "BatchNormalization")
        w = _const(consts, conv.inputs[1])
        if bn is None or w is None or w.ndim <= 2 or "epsilon" not in bn.attrs or int(bn.attr("training_mode", 0)):
            continue
        params = [_const(consts, x, 1) for x in (bn.inputs + [""] * 5)[1:5]]
        b = _const(consts, conv.inputs[2], 1) if conv.has_input(2) else None
        if any(p is None or p.shape != (w.shape[0],) for p in params) or \
                (conv.has_input(2) and (b is None or b.shape != (w.shape[0],))):
            continue
        relu = only_consumer(bn, "Relu")
        wf, bf = folded_params(w, b, *params, float(bn.attr("epsilon")))
        folds.append(Fold(conv, bn, relu, wf, bf))
    return folds


def runner(fold: Fold, ex):
    """``call(x)`` of the folded step: the Conv on the folded weight and bias (then Relu, in place)."""
    from .ops_float.linear import conv

    relu = fold.relu is not None

    def call(x, node=fold.conv, w=fold.weight, b=fold.bias):
        return conv(node, x, w, b, ex, relu)
    return call
