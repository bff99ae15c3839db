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
from qpass.reference import ops_float  # noqa: F401  (registers the kernels run_mids looks up)
from qpass.reference.registry import NodeInfo, lookup
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
    #: with ``auto``, activation-aware factors (``migration_scales``) tried besides the weight-range ones, where each
    #: channel's range between the layers comes from at least ``alpha_rows`` values (samples x positions: the factors
    #: follow calibration maxima, which few values estimate badly: oww-alexa's Gemm pairs, 32 values a channel, fell
    #: from 37.9 to 10.6 dB on its eval set; on mtcnn's 12-24 samples -2..+1.6 dB where the simulation saw gains)
    alphas: tuple = (0.25, 0.5, 0.75)
    alpha_rows: int = 1024
    #: pass through PRelu / LeakyRelu / MaxPool and Transpose / Flatten / Reshape, and rescale several readers
    #: together (off by default: on mtcnn-onet the pairs through PRelu that the simulation kept cost 1.9 dB on
    #: its eval set, both with weight-range and with activation-aware factors)
    extended: bool = False
    threads: int = 1


#: channel-wise ops f with f(s z) = s f(z) for every s > 0 (per channel): equalization passes through them.
#: Clip only with a lower bound 0 (it becomes Relu where a pair is equalized); PRelu only with a constant slope that
#: varies along the channel axis alone
HOMOGENEOUS = ("Relu", "Clip", "PRelu", "LeakyRelu", "MaxPool")
#: layout ops between the two layers: input channel k of the second layer reads one channel of the first
LAYOUT = ("Transpose", "Flatten", "Reshape")


@dataclass
class Pair:
    first: Layer
    #: the nodes between the layers, in order (HOMOGENEOUS, LAYOUT)
    mids: list
    #: the layers that read the last tensor (several: all are rescaled together)
    seconds: list
    #: per second layer: the first layer's output channel that each of its input channels reads
    chan_of: list
    #: the model's default-domain opset (for the reference kernels of ``mids``)
    opset: int = 13

    @property
    def act(self) -> onnx.NodeProto | None:
        return next((n for n in self.mids if n.op_type in HOMOGENEOUS[:2]), None)

    @property
    def second(self) -> Layer:
        return self.seconds[0]

    @property
    def name(self) -> str:
        return f"{self.first.name} -> {', '.join(s.name for s in self.seconds)}"


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


def _passes(node: onnx.NodeProto, inits: dict, rank: int) -> bool:
    """Whether equalization may pass through ``node`` (a HOMOGENEOUS or LAYOUT op with the conditions above) on a
    tensor of the given rank (channels on axis 1)."""
    op = node.op_type
    if op == "Clip":
        return (_clip_bounds(node, inits) or (None,))[0] == 0.0
    if op == "PRelu":
        if len(node.input) < 2 or node.input[1] not in inits:
            return False
        shape = list(inits[node.input[1]].dims)
        shape = [1] * (rank - len(shape)) + shape
        return len(shape) == rank and all(d == 1 for i, d in enumerate(shape) if i != 1)
    if op == "MaxPool":
        return len(node.output) == 1 or not node.output[1]
    if op == "Reshape":
        return len(node.input) > 1 and node.input[1] in inits
    return op in HOMOGENEOUS + LAYOUT


def run_nodes(nodes: list, env: dict, inits: dict, opset: int) -> dict:
    """Evaluate ``nodes`` in order by the reference kernels, inputs from ``env`` (updated with every output) or
    ``inits`` (TensorProtos); absent optional inputs as None."""
    for n in nodes:
        args = [env[i] if i in env else onnx.numpy_helper.to_array(inits[i]) if i in inits else None
                for i in n.input]
        out = lookup("", n.op_type).fn(NodeInfo.from_proto(n, {"": opset}), *args)
        env.update(zip(n.output, out if isinstance(out, tuple) else (out,)))
    return env


def run_mids(mids: list, y: np.ndarray, inits: dict, opset: int, relu_clips: bool = False) -> np.ndarray:
    """The nodes ``mids`` applied to ``y`` (the reference kernels; Clip as Relu with ``relu_clips``)."""
    for n in mids:
        y = np.maximum(y, 0) if n.op_type == "Clip" and relu_clips else \
            run_nodes([n], {n.input[0]: y}, inits, opset)[n.output[0]]
    return y


def _channel_maps(first: Layer, mids: list, seconds: list, inits: dict, opset: int,
                  x_shape: tuple) -> list | None:
    """Per second layer, the first layer's output channel each of its input channels reads (pushing a tensor of
    channel numbers through ``mids``); None where an input channel mixes channels."""
    c = first.out_channels
    n_sp = first.w.ndim - 2 if first.op == "Conv" else 0
    probe_x = np.zeros((1,) + tuple(x_shape[-(n_sp + 1):]), np.float32)
    shape = first.forward(probe_x, np.zeros_like(first.w), None).shape
    idx = np.broadcast_to(np.arange(c, dtype=np.float32).reshape((1, c) + (1,) * (len(shape) - 2)), shape)
    idx = run_mids(mids, np.ascontiguousarray(idx), inits, opset)
    maps = []
    for sec in seconds:
        axis = 1 if sec.op == "Conv" else idx.ndim - 1
        v = np.moveaxis(idx, axis, 0).reshape(idx.shape[axis], -1)
        if v.shape[0] != sec.w.shape[sec.in_channel_axis()] * sec.groups or not (v == v[:, :1]).all():
            return None
        maps.append(v[:, 0].astype(np.int64))
    return maps


def find_pairs(model: onnx.ModelProto, x_shape=None, extended: bool = True) -> list[Pair]:
    """Conv / Gemm -> [channel-wise homogeneous and layout ops] -> Conv / Gemm / MatMul (one or several, all
    layers reading the same tensor), each tensor in between read by one node. Without ``x_shape`` (a function from
    a layer's input name to its shape) only pairs whose mids keep the channel axis are found. Without ``extended``
    only one reader and Relu / Clip between."""
    g = model.graph
    layers = find_layers(model)
    by_node = {id(lay.node): lay for lay in layers}
    readers: dict[str, list] = {}
    for n in g.node:
        for t in n.input:
            readers.setdefault(t, []).append(n)
    outputs = {o.name for o in g.output}
    inits = {i.name: i for i in g.initializer}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 13)
    pairs = []
    for lay in layers:
        if lay.op == "MatMul":
            continue
        t, mids = lay.y, []
        nxt = readers.get(t, [])
        rank = lay.w.ndim if lay.op == "Conv" else 2
        while len(nxt) == 1 and t not in outputs and id(nxt[0]) not in by_node and _passes(nxt[0], inits, rank) \
                and (extended or not mids and nxt[0].op_type in HOMOGENEOUS[:2]):
            mids.append(nxt[0])
            t = nxt[0].output[0]
            nxt = readers.get(t, [])
            if any(n.op_type in LAYOUT for n in mids):
                rank = 0  # PRelu after a layout op: channels no longer known to be on axis 1
        seconds = [by_node.get(id(n)) for n in nxt]
        if not seconds or t in outputs or len(seconds) > 1 and not extended or \
                any(s is None or s.x != t for s in seconds):
            continue
        if any(n.op_type in LAYOUT for n in mids) or any(s.op != lay.op for s in seconds):
            if x_shape is None:
                continue
            maps = _channel_maps(lay, mids, seconds, inits, opset, x_shape(lay.x))
        else:
            maps = [np.arange(lay.out_channels)] * len(seconds)
            if any(s.w.shape[s.in_channel_axis()] * s.groups != lay.out_channels for s in seconds):
                maps = None
        if maps is not None:
            pairs.append(Pair(lay, mids, seconds, maps, opset))
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


def in_ranges(b: Layer) -> np.ndarray:
    """max |w| per input channel of a layer (over all groups' channels)."""
    w2 = np.abs(b.w)
    if b.op == "Conv" and b.groups > 1:
        m, cg = w2.shape[0], w2.shape[1]
        per = w2.reshape(m, cg, -1).max(axis=2).reshape(b.groups, m // b.groups, cg).max(axis=1)  # [g, C/g]
        return per.reshape(-1)
    return w2.max(axis=tuple(i for i in range(w2.ndim) if i != b.in_channel_axis()))


def channel_ranges(pair: Pair) -> tuple[np.ndarray, np.ndarray]:
    """(r1, r2): max |w| per output channel of the first layer and, per such channel, over the input channels of
    the second layers that read it."""
    a = pair.first
    r1 = np.abs(a.w).max(axis=tuple(i for i in range(a.w.ndim) if i != a.out_channel_axis()))
    r2 = np.zeros(a.out_channels)
    for b, m in zip(pair.seconds, pair.chan_of):
        np.maximum.at(r2, m, in_ranges(b).astype(np.float64))
    return r1.astype(np.float64), r2


def equalizing_scales(pair: Pair) -> np.ndarray:
    r1, r2 = channel_ranges(pair)
    ok = (r1 > 0) & (r2 > 0)
    s = np.ones_like(r1)
    s[ok] = np.sqrt(r1[ok] * r2[ok]) / r2[ok]
    return s


def migration_scales(pair: Pair, act_range: np.ndarray, alpha: float) -> np.ndarray:
    """Activation-aware factors s_i = a_i^alpha / r2_i^(1 - alpha) (a_i the calibrated range of channel i between
    the layers, r2_i the second layers' weight range on it; SmoothQuant's rule), normalised to geometric mean 1.
    Per-channel weight grids make the first layer's own rounding blind to s; what s trades is the per-tensor
    activation grid against the second layer's weight grid."""
    r2 = channel_ranges(pair)[1]
    ok = (act_range > 0) & (r2 > 0)
    s = np.ones_like(r2)
    if not ok.any():
        return s
    s[ok] = act_range[ok] ** alpha / r2[ok] ** (1 - alpha)
    s[ok] /= np.exp(np.mean(np.log(s[ok])))
    return s


def scaled(pair: Pair, s: np.ndarray):
    """(w1, b1, [w2 per second layer]) with the first layer's output channels divided by ``s`` and the seconds'
    inputs multiplied."""
    a = pair.first
    w1 = (a.w / out_channel_view(a, s)).astype(np.float32)
    b1 = None if a.b is None else (a.b / s).astype(np.float32)
    w2 = [(b.w * in_channel_view(b, s[m])).astype(np.float32) for b, m in zip(pair.seconds, pair.chan_of)]
    return w1, b1, w2


class PairError:
    """The second layers' output error on samples (each relative to its output energy), both layers on the weight
    grid and the activation between them quantized per tensor (and the first layer's output too where an op between
    them is neither Relu nor Clip), against the float output."""

    def __init__(self, pair: Pair, x: np.ndarray, grid: WeightGrid, act_spec: str, inits: dict):
        self.pair, self.x, self.grid, self.act_spec, self.inits = pair, x, grid, act_spec, inits
        self.both = any(n.op_type not in HOMOGENEOUS[:2] + LAYOUT for n in pair.mids)
        self.ref = self._forward(pair.first.w, pair.first.b, [b.w for b in pair.seconds], quantize=False)
        self.energy = [max(float(np.sum(r.astype(np.float64) ** 2)), 1e-30) for r in self.ref]

    def _forward(self, w1, b1, w2s, quantize: bool, relu_clips: bool = False) -> list:
        a = self.pair.first
        y = a.forward(self.x, self.grid.fake(a, w1) if quantize else w1, b1)
        if not quantize:  # the range of each channel the activation quantizers see, from ``rows`` values each
            v = np.moveaxis(y if self.both else np.maximum(y, 0), 1 if a.op == "Conv" else -1, 0)
            self.act_range = np.abs(v.reshape(v.shape[0], -1)).max(axis=1).astype(np.float64)
            self.rows = v[0].size
        if quantize and self.both:
            y = fake_activation(y, self.act_spec)
        y = run_mids(self.pair.mids, y, self.inits, self.pair.opset, relu_clips)
        if quantize:
            y = fake_activation(y, self.act_spec)
        return [b.forward(y, self.grid.fake(b, w2) if quantize else w2, b.b) for b, w2 in zip(self.pair.seconds, w2s)]

    def __call__(self, w1, b1, w2s, relu_clips: bool = False) -> float:
        got = self._forward(w1, b1, w2s, True, relu_clips)
        return float(sum(np.sum((g - r).astype(np.float64) ** 2) / e for g, r, e in zip(got, self.ref, self.energy)))


class Equalize(WeightSidePass):
    name = "equalize"
    Options = EqualizeOptions

    def transform(self, model, ctx, fm, grid):
        o = self.opts
        xs = [lay.x for lay in find_layers(model) if lay.op != "MatMul"]
        shapes: dict[str, tuple] = {}  # one sample's layer inputs' shapes, from one run when a pair first needs them

        def x_shape(t: str) -> tuple:
            if not shapes:
                one = self.first_samples(ctx).subset(slice(0, 1))
                shapes.update((x, v.shape) for x, v in Probe(model, one, [], xs, o.threads).run(xs).items())
            return shapes[t]

        pairs = find_pairs(model, x_shape, o.extended)
        made: list[Probe] = []  # one probe of the pairs' inputs alone, made when a pair first needs it

        def probe() -> Probe:
            if not made:
                made.append(Probe(model, self.first_samples(ctx), [], [p.first.x for p in pairs], o.threads))
            return made[0]

        if not pairs:
            return self.nothing(model, ctx, "no layer pair to equalize")
        report: dict = {}
        moved: dict[str, np.ndarray] = {}  # tensor -> the per-channel factor equalization divided it by
        inits = {i.name: i for i in model.graph.initializer}
        for _ in range(max(o.sweeps, 1)):
            for p in pairs:
                s = equalizing_scales(p)
                if o.auto:  # the float input, as earlier equalized pairs rescaled it
                    x = probe().float_value(p.first.x)
                    if p.first.x in moved:
                        x = x / _channels_along(moved[p.first.x], p.first, x.ndim)
                    err = PairError(p, x, grid, fm.activations, inits)
                    before = err(p.first.w, p.first.b, [b.w for b in p.seconds])
                    cands = [("weights", s)] + [(f"alpha {a:g}", migration_scales(p, err.act_range, a))
                                                for a in (o.alphas if err.rows >= o.alpha_rows else ())]
                    tried = [(err(*scaled(p, f), True), rule, f) for rule, f in cands
                             if not np.allclose(f, 1.0, rtol=1e-3)]
                    if not tried:
                        report.setdefault(p.name, {"equalized": False, "why": "balanced"})
                        continue
                    after, rule, s = min(tried, key=lambda t: t[0])
                    was = report.get(p.name, {})  # errors from the first sweep on, rules of each sweep
                    first = was.get("error_before", before)
                    if not after < (1 - o.min_gain) * before:
                        report[p.name] = {**was, "equalized": was.get("equalized", False), "error_before": first,
                                          "error_after": was.get("error_after", before)}
                        continue
                    report[p.name] = {"equalized": True, "rule": was.get("rule", ()) + (rule,),
                                      "error_before": first, "error_after": after}
                elif np.allclose(s, 1.0, rtol=1e-3):
                    report.setdefault(p.name, {"equalized": False, "why": "balanced"})
                    continue
                else:
                    report[p.name] = {"equalized": True}
                w1, b1, w2s = scaled(p, s)
                store_layer(model, p.first, w1, b1)
                for b, w2, m in zip(p.seconds, w2s, p.chan_of):
                    store_layer(model, b, w2, None)
                    moved[b.x] = moved.get(b.x, 1.0) * s[m]
                for n in p.mids:
                    if n.op_type == "Clip":
                        _to_relu(n)
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
