"""equalize: cross-layer equalization (Nagel et al. 2019, "Data-Free Quantization Through Weight Equalization and
Bias Correction", section 4.1).

For two layers in a row, y = W2 f(W1 x + b1) with f a ReLU, a ReLU6 or nothing, and any positive per-channel s,
f(W1 x + b1) = S f(S^-1 (W1 x + b1)) for the positively homogeneous f, so W1 <- S^-1 W1, b1 <- S^-1 b1,
W2 <- W2 S leaves the float network unchanged. The paper's choice s_i = sqrt(r1_i r2_i) / r2_i, with r1_i the range
of output channel i of W1 and r2_i the range of input channel i of W2, gives both the same range sqrt(r1_i r2_i):
a channel that one layer writes huge and the next reads tiny no longer wastes the grid of either. Pairs are
Conv / Gemm -> Conv (including depthwise and grouped) / Gemm / MatMul; sweeps over the pairs of a chain repeat
``sweeps`` times. ReLU6 (Clip(0, 6)) becomes ReLU where a pair is equalized, as in the paper.

With ``auto`` (default) a pair is equalized only where it lowers the error of the second layer's output on
calibration samples by at least ``min_gain``: both layers are simulated in numpy with weights on the quantizer's
grid (``weights``, ``granularity``) and the activation between them quantized per tensor (``activations``), with
and without the change, against the float output.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qpass.pipeline.pass_base import PassResult
from .ptq_layers import Layer, Probe, WeightGrid, fake_activation, find_layers, store_layer
from .ptq_pass import WeightSidePass


@dataclass
class EqualizeOptions:
    #: formats to simulate; auto: those of the quantizing pass the pipeline runs (ptq_pass.quantizer_formats)
    weights: str = "auto"
    granularity: str = "auto"
    activations: str = "auto"
    sweeps: int = 2
    #: calibration samples used to measure the second layer's output error
    samples: int = 32
    auto: bool = True
    min_gain: float = 0.02
    threads: int = 1


@dataclass
class Pair:
    first: Layer
    act: onnx.NodeProto | None  # Relu, Clip(0, 6) or None
    second: Layer

    @property
    def name(self) -> str:
        return f"{self.first.name} -> {self.second.name}"


def _clip_bounds(node: onnx.NodeProto, inits: dict) -> tuple | None:
    lo = hi = None
    for a in node.attribute:
        if a.name == "min":
            lo = a.f
        if a.name == "max":
            hi = a.f
    for i, key in ((1, "lo"), (2, "hi")):
        if len(node.input) > i and node.input[i]:
            if node.input[i] not in inits:
                return None
            v = float(onnx.numpy_helper.to_array(inits[node.input[i]]))
            lo, hi = (v, hi) if key == "lo" else (lo, v)
    return lo, hi


def find_pairs(model: onnx.ModelProto) -> list[Pair]:
    """Conv / Gemm -> [Relu | Clip(0, m)] -> Conv / Gemm / MatMul, each tensor in between read by one node."""
    g = model.graph
    layers = find_layers(model)
    by_node = {id(lay.node): lay for lay in layers}
    readers: dict[str, list] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    outputs = {o.name for o in g.output}
    inits = {i.name: i for i in g.initializer}
    pairs = []
    for lay in layers:
        if lay.op == "MatMul":
            continue
        t, act = lay.y, None
        nxt = readers.get(t, [])
        if len(nxt) != 1 or t in outputs:
            continue
        if nxt[0].op_type in ("Relu", "Clip"):
            act = nxt[0]
            if act.op_type == "Clip" and (_clip_bounds(act, inits) or (None,))[0] != 0.0:
                continue
            t = act.output[0]
            nxt = readers.get(t, [])
            if len(nxt) != 1 or t in outputs:
                continue
        second = by_node.get(id(nxt[0]))
        if second is None or second.x != t or second.w.shape[second.in_channel_axis()] * second.groups != \
                lay.out_channels or (lay.op == "Conv") != (second.op == "Conv"):
            continue
        pairs.append(Pair(lay, act, second))
    return pairs


def in_channel_view(lay: Layer, vec: np.ndarray) -> np.ndarray:
    """Per-input-channel factors ``vec`` as an array broadcastable to the layer's weight."""
    w = lay.w
    ax = lay.in_channel_axis()
    if lay.op == "Conv" and lay.groups > 1:
        m, cg = w.shape[0], w.shape[1]
        per_out = vec.reshape(lay.groups, cg)[np.arange(m) // (m // lay.groups)]  # [M, C/g]
        return per_out.reshape((m, cg) + (1,) * (w.ndim - 2))
    shape = [1] * w.ndim
    shape[ax] = -1
    return vec.reshape(shape)


def out_channel_view(lay: Layer, vec: np.ndarray) -> np.ndarray:
    shape = [1] * lay.w.ndim
    shape[lay.out_channel_axis()] = -1
    return vec.reshape(shape)


def channel_ranges(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(r1, r2): max |w| per output channel of the first layer and per input channel of the second."""
    a, b = pair.first, pair.second
    r1 = np.abs(a.w).max(axis=tuple(i for i in range(a.w.ndim) if i != a.out_channel_axis()))
    w2 = np.abs(b.w)
    if b.op == "Conv" and b.groups > 1:
        m, cg = w2.shape[0], w2.shape[1]
        per = w2.reshape(m, cg, -1).max(axis=2).reshape(b.groups, m // b.groups, cg).max(axis=1)  # [g, C/g]
        r2 = per.reshape(-1)
    else:
        r2 = w2.max(axis=tuple(i for i in range(w2.ndim) if i != b.in_channel_axis()))
    return r1.astype(np.float64), r2.astype(np.float64)


def equalizing_scales(pair: Pair) -> np.ndarray:
    r1, r2 = channel_ranges(pair)
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
    return s


def scaled(pair: Pair, s: np.ndarray):
    """(w1, b1, w2) with the first layer's output channels divided by ``s`` and the second's inputs multiplied."""
    a, b = pair.first, pair.second
    w1 = (a.w / out_channel_view(a, s)).astype(np.float32)
    b1 = None if a.b is None else (a.b / s).astype(np.float32)
    w2 = (b.w * in_channel_view(b, s)).astype(np.float32)
    return w1, b1, w2


class PairError:
    """The second layer's output error on samples, both layers on the weight grid and the activation between them
    quantized per tensor, against the float output."""

    def __init__(self, pair: Pair, x: np.ndarray, grid: WeightGrid, act_spec: str, clip: float | None):
        self.pair, self.x, self.grid, self.act_spec = pair, x, grid, act_spec
        self.clip = clip
        self.ref = self._forward(pair.first.w, pair.first.b, pair.second.w, quantize=False, clip=clip)

    def _forward(self, w1, b1, w2, quantize: bool, clip: float | None) -> np.ndarray:
        a, b = self.pair.first, self.pair.second
        y = a.forward(self.x, self.grid.fake(a, w1) if quantize else w1, b1)
        if self.pair.act is not None:
            y = np.maximum(y, 0) if clip is None else np.clip(y, 0, clip)
        if quantize:
            y = fake_activation(y, self.act_spec)
        return b.forward(y, self.grid.fake(b, w2) if quantize else w2, b.b)

    def __call__(self, w1, b1, w2, clip: float | None) -> float:
        d = self._forward(w1, b1, w2, True, clip) - self.ref
        return float(np.sum(d.astype(np.float64) ** 2))


class Equalize(WeightSidePass):
    name = "equalize"
    Options = EqualizeOptions

    def transform(self, model, ctx, fm, grid):
        o = self.opts
        pairs = find_pairs(model)
        if not pairs:
            return self.nothing(model, ctx, "no layer pair to equalize")
        probe = Probe(model, self.first_samples(ctx), [], [p.first.x for p in pairs], o.threads)
        report: dict = {}
        moved: dict[str, np.ndarray] = {}  # tensor -> the per-channel factor equalization divided it by
        inits = {i.name: i for i in model.graph.initializer}
        for _ in range(max(o.sweeps, 1)):
            for p in pairs:
                clip = _clip_bounds(p.act, inits)[1] if p.act is not None and p.act.op_type == "Clip" else None
                s = equalizing_scales(p)
                if np.allclose(s, 1.0, rtol=1e-3):
                    report.setdefault(p.name, {"equalized": False, "why": "balanced"})
                    continue
                w1, b1, w2 = scaled(p, s)
                if o.auto:  # the float input, as earlier equalized pairs rescaled it
                    x = probe.float_value(p.first.x)
                    if p.first.x in moved:
                        x = x / _channels_along(moved[p.first.x], p.first, x.ndim)
                    err = PairError(p, x, grid, fm.activations, clip)
                    before, after = err(p.first.w, p.first.b, p.second.w, clip), err(w1, b1, w2, None)
                    if not after < (1 - o.min_gain) * before:
                        report[p.name] = {"equalized": report.get(p.name, {}).get("equalized", False),
                                          "error_before": before, "error_after": after}
                        continue
                    report[p.name] = {"equalized": True, "error_before": before, "error_after": after}
                else:
                    report[p.name] = {"equalized": True}
                store_layer(model, p.first, w1, b1)
                store_layer(model, p.second, w2, None)
                moved[p.second.x] = moved.get(p.second.x, 1.0) * s
                if clip is not None:
                    _to_relu(p.act)
        done = sum(1 for r in report.values() if r["equalized"])
        ctx.report.results["equalize"] = report
        return PassResult(model, done > 0, [f"equalized {done} of {len(pairs)} layer pairs"])


def _channels_along(vec: np.ndarray, lay: Layer, ndim: int) -> np.ndarray:
    """Per-channel factors shaped to broadcast against a layer's stacked input (channels on axis -3 / -2 of a
    Conv input [N, 1, C, *spatial], last for Gemm / MatMul)."""
    shape = [1] * ndim
    shape[-(lay.w.ndim - 1) if lay.op == "Conv" else -1] = -1
    return vec.reshape(shape).astype(np.float32)


def _to_relu(node: onnx.NodeProto) -> None:
    """Clip(0, m) -> Relu in place (an equalized pair's channels clip at m / s_i, which no single Clip says)."""
    x = node.input[0]
    node.op_type = "Relu"
    del node.input[:]
    node.input.append(x)
    del node.attribute[:]
