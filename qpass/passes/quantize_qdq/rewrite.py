"""The QDQ rewrite of one graph: plan, choose the quantized tensors and their parameters, quantize constants,
insert QuantizeLinear -> DequantizeLinear pairs, put integer data movement on integers, store every array once."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx_graphsurgeon as gs

from qpass.formats.qdq_params import (INT_RANGES, AffineParams, activation_params, quantize, symmetric_weight_params,
                                      unit_grid_params)
from qpass.ir.builder import GraphBuilder
from .bodies import node_ids
from .op_table import CANCELLING, QUANTIZERS, FLOAT_DTYPES, Linear, Rewritten, clip_bounds, is_const, is_float
from .plan import QuantPlan, float_reason, plan_quantization
from .store import ConstPool, dedupe_constants, dequantize_input, insert_qdq, short
from .recurrent import to_dynamic_lstm
from .log_ranges import log_fed
from .speed import widen_single_channel
from .weights import AVX2_TARGETS, bias_codes, choose_weight, output_channels

EIGHT_BIT = ("uint8", "int8")


class RangeTable(dict):
    """Calibrated (lo, hi) by tensor, with each tensor's mean power (``powers``) where the calibration kept it."""

    def __init__(self, ranges: dict, powers: dict | None = None):
        super().__init__(ranges)
        self.powers = dict(powers or {})

    def copy_with(self, changes: dict) -> "RangeTable":
        return RangeTable({**self, **changes}, self.powers)


@dataclass
class QDQRewriter:
    """State of one rewrite; the op classes of ``op_table`` call its ``want``, ``share`` and ``quantize_*``."""

    b: GraphBuilder
    ranges: dict
    opts: object
    params: dict = field(default_factory=dict)  # tensor name -> AffineParams
    shared_from: dict = field(default_factory=dict)  # tensor name -> tensor name whose params it reuses
    targets: list = field(default_factory=list)  # tensors that get QuantizeLinear -> DequantizeLinear, graph order
    missing_range: list = field(default_factory=list)
    huge_range: dict = field(default_factory=dict)
    encodings: dict = field(default_factory=dict)  # linear node name -> weight encoding
    quantized: set = field(default_factory=set)  # names of the nodes planned for quantization
    log_fed: set = field(default_factory=set)  # tensors a Log reads, directly or through other ops (``log_ranges``)

    def __post_init__(self):
        self.pool = ConstPool(self.b)
        self._seen: set[str] = set()

    @property
    def graph(self) -> gs.Graph:
        return self.b.graph

    # ------------------------------------------------------------------ choosing tensors (op_table's ``mark``)
    def want(self, t) -> None:
        """Quantize activation ``t`` (a float tensor computed or fed at run time) with its own parameters."""
        if t is not None and t.name and t.name not in self._seen and is_float(t) and not is_const(t):
            self._seen.add(t.name)
            self.targets.append(t)

    def read_as_float(self, t) -> bool:
        """With ``float_outputs``: nothing quantized reads ``t`` (it is a graph output or only float ops read it)
        and its value is not clipped by a fused activation, so an output quantizer would only add error."""
        if not self.opts.float_outputs or t.name in self.params or not (t in self.graph.outputs or t.outputs):
            return False
        return not any(r.name in self.quantized and not QUANTIZERS[r.op].reads_float for r in t.outputs)

    def is_target(self, t) -> bool:
        return t is not None and t.name in self._seen

    def share(self, y, x) -> None:
        """Quantize ``y`` on the parameters of ``x`` (data movement: no requantization)."""
        self.shared_from[y.name] = x.name
        self.want(y)

    def want_table(self, t: gs.Constant) -> None:
        """A constant float table read by Gather: quantized per tensor (like an activation) from its values."""
        self._seen.add(t.name)
        self.act_params(t)

    def fix_unit_grid(self, t) -> None:
        """Quantize ``t`` (a probability in [0, 1]) on the grid 1/256 starting at 0 (8-bit activations only)."""
        if self.opts.activation_dtype in EIGHT_BIT:
            self.params[t.name] = unit_grid_params(self.opts.activation_dtype)

    # ------------------------------------------------------------------ parameters
    def act_params(self, t: gs.Tensor) -> AffineParams | None:
        if t.name in self.params:
            return self.params[t.name]
        o = self.opts
        if t.name in self.shared_from and self.shared_from[t.name] in self.params:
            p = self.params[self.shared_from[t.name]]
        elif is_const(t):
            v = np.asarray(t.values, dtype=np.float64)
            p = activation_params(v.min() if v.size else 0, v.max() if v.size else 0, o.activation_dtype,
                                  o.symmetric_activations)
        elif t.name in self.ranges:
            lo, hi = self.ranges[t.name]
            if max(abs(lo), abs(hi)) >= o.max_range and t.name not in self.log_fed:
                self.huge_range[t.name] = max(abs(lo), abs(hi))
                return None
            p = activation_params(lo, hi, o.activation_dtype, o.symmetric_activations)
        else:
            self.missing_range.append(t.name)
            return None
        self.params[t.name] = p
        return p

    # ------------------------------------------------------------------ constants (op_table's ``quantize_constants``)
    def quantize_operand(self, node: gs.Node, idx: int) -> None:
        """A constant float operand as an integer initializer on its own per-tensor parameters."""
        t = node.inputs[idx]
        p = self.act_params(t)
        if p is not None:
            dequantize_input(self.pool, node, idx, quantize(np.asarray(t.values), p), p)

    def quantize_weights(self, node: gs.Node) -> None:
        w_t = node.inputs[1]
        if not is_const(w_t) or np.asarray(w_t.values).dtype not in FLOAT_DTYPES:
            return
        w = np.asarray(w_t.values)
        in_params = self.params.get(node.inputs[0].name)
        dtype = in_params.dtype if in_params is not None else self.opts.activation_dtype
        choice = choose_weight(node, w, self.opts, 255 if dtype in EIGHT_BIT else None)
        out = dequantize_input(self.pool, node, 1, choice.codes, choice.params)
        self.params[out.name] = choice.params
        self.encodings[node.name] = choice.encoding
        bias = node.inputs[2] if len(node.inputs) > 2 else None
        if node.op == "MatMul" or not is_const(bias) or in_params is None or np.ndim(in_params.scale) != 0:
            return
        found = bias_codes(bias.values, in_params.scale, choice.params, output_channels(node, w))
        if found is not None:
            dequantize_input(self.pool, node, 2, *found)

    def quantize_lstm(self, node: gs.Node) -> None:
        """An LSTM on DynamicQuantizeLSTM (``recurrent``): 7-bit weights where u8s8 pair sums could saturate."""
        o = self.opts
        offset = o.weight_encoding == "uint8_offset" or (o.target_cpu in AVX2_TARGETS and o.avx2_remedy == "uint8_offset")
        seven = o.reduce_range or (o.target_cpu in AVX2_TARGETS and not offset)
        to_dynamic_lstm(self.pool, node, 64 if seven else 127, offset)
        self.encodings[node.name] = "uint8_offset" if offset else "seven_bit" if seven else "int8"

    def quantize_recurrent_weights(self, node: gs.Node) -> None:
        for idx in (1, 2):  # W and R: [directions, gates * hidden, size], one scale per gate row
            w = np.asarray(node.inputs[idx].values)
            p = symmetric_weight_params(w, 1 if self.opts.per_channel else None, 127)
            dequantize_input(self.pool, node, idx, quantize(w, p, -127, 127), p)


def _fuse_activations(qc: QDQRewriter, plan: QuantPlan, by_name: dict) -> None:
    """Drop each planned Relu / Clip: its producer writes its output, quantized from 0 (zero point at the bottom
    of the integer range, so quantization clips where the op would)."""
    for name in plan.fused_activations:
        act = by_name[name]
        x, y = act.inputs[0], act.outputs[0]
        lo, hi = qc.ranges.get(y.name, (None, None))
        if lo is None:
            continue
        if act.op == "Clip":
            cmax = clip_bounds(act)[1]
            hi = hi if cmax is None else min(hi, cmax)
        qc.params[y.name] = activation_params(0.0, max(hi, 0.0), qc.opts.activation_dtype, False)
        prod = x.inputs[0]
        prod.outputs[prod.outputs.index(x)] = y
        act.inputs.clear()
        act.outputs.clear()


def _same_value(a, b) -> bool:
    return is_const(a) and is_const(b) and np.asarray(a.values).dtype == np.asarray(b.values).dtype \
        and np.array_equal(np.asarray(a.values), np.asarray(b.values))


def _integer_pads(qc: QDQRewriter, nodes: list[gs.Node]) -> None:
    """DequantizeLinear -> Pad -> QuantizeLinear on one grid becomes Pad on the codes (padding value: its code);
    onnxruntime would run the Pad in float between them."""
    for pad in nodes:
        x, y = pad.inputs[0], pad.outputs[0]
        dq = x.inputs[0] if len(x.inputs) == 1 and len(x.outputs) == 1 and x not in qc.graph.outputs else None
        q = y.outputs[0] if len(y.outputs) == 1 and y not in qc.graph.outputs else None
        if dq is None or q is None or dq.op != "DequantizeLinear" or q.op != "QuantizeLinear" \
                or not all(_same_value(q.inputs[i], dq.inputs[i]) for i in (1, 2)):
            continue
        p = AffineParams(np.asarray(q.inputs[1].values), np.asarray(q.inputs[2].values),
                         np.asarray(q.inputs[2].values).dtype.name)
        value = float(np.asarray(pad.inputs[2].values)) if len(pad.inputs) > 2 and pad.inputs[2].name else 0.0
        while len(pad.inputs) < 3:
            pad.inputs.append(gs.Variable.empty())
        pad.inputs[0] = dq.inputs[0]
        pad.inputs[2] = qc.b.const(quantize(np.asarray(value), p), None, name=short(pad.name) + "_value_code")
        pad.outputs[0] = q.outputs[0]
        for n in (dq, q):
            n.inputs.clear()
            n.outputs.clear()


def _range_reasons(qc: QDQRewriter, plan: QuantPlan, nodes: list[gs.Node]) -> None:
    for node in nodes:
        tensors = [t for t in list(node.inputs) + list(node.outputs) if t is not None]
        huge = [t.name for t in tensors if t.name in qc.huge_range]
        if huge:
            plan.float_reasons[node.name] = (f"an input or output reaches |x| = {qc.huge_range[huge[0]]:.3g} "
                                             "(a mask or sentinel value int8 cannot share with real values)")
        elif any(t.name in qc.missing_range for t in tensors):
            plan.float_reasons[node.name] = "no calibrated range for an input or output (not reached by calibration)"


def _rewrite_ops(graph: gs.Graph, b: GraphBuilder, ranges: dict, opts) -> dict:
    """Apply the ``Rewritten`` entries of the op table (to nodes not excluded); the ranges with the new tensors'."""
    ranges = dict(ranges)
    op_types = set(opts.op_types)
    for node in list(graph.nodes):
        q = QUANTIZERS.get(node.op)
        if isinstance(q, Rewritten) and float_reason(node, op_types, opts) is None:
            ranges.update(q.rewrite(node, b, graph))
    if opts.widen_single_channel:
        ranges.update(widen_single_channel(graph, b, ranges, lambda n: float_reason(n, op_types, opts) is None))
    graph.cleanup(remove_unused_graph_inputs=False)
    return ranges


def _float_tail(qc: QDQRewriter, plan: QuantPlan, graph: gs.Graph) -> None:
    """With ``float_outputs``: an op whose float kernel is as fast as its integer one (Sigmoid, Softmax, ...) and
    whose outputs nothing quantized reads runs in float, on its dequantized input, so the model's answer gets no
    8-bit step (a probability on QLinearSoftmax's 1/256 grid); repeated up the graph's tail."""
    changed = qc.opts.float_outputs
    while changed:
        changed = False
        for node in graph.nodes:
            if node.name in qc.quantized and QUANTIZERS[node.op].float_output_for(node) \
                    and all(qc.read_as_float(t) for t in node.outputs):
                qc.quantized.discard(node.name)
                plan.float_reasons[node.name] = "float_outputs: only float ops read its output, its float kernel is as fast"
                changed = True


def _cancellations(qc: QDQRewriter, plan: QuantPlan, graph: gs.Graph, powers: dict) -> None:
    """An Add / Sub whose output is far weaker than its quantized inputs (a variance as E[x^2] - E[x]^2, x - mean
    in a decomposed LayerNorm) turns their rounding noise into its whole signal: where the noise the grids would
    put there leaves less than ``min_cancel_sqnr_db`` of SQNR, the inputs' cheap producers (not linear layers,
    whose integer kernels need their output quantizer) and the node itself run in float."""
    min_db = qc.opts.min_cancel_sqnr_db
    if min_db is None or not powers:
        return
    qmin, qmax = INT_RANGES[qc.opts.activation_dtype][:2]
    for node in graph.nodes:
        p_out = powers.get(node.outputs[0].name) if node.op in CANCELLING and node.outputs else None
        if not p_out:
            continue
        fed = [t for t in node.inputs if not is_const(t) and t.name in qc.ranges and is_float(t)
               and (node.name in qc.quantized or any(p.name in qc.quantized for p in t.inputs))]
        noise = sum(((max(qc.ranges[t.name][1], 0.0) - min(qc.ranges[t.name][0], 0.0)) / (qmax - qmin)) ** 2 / 12
                    for t in fed)
        if not noise or 10 * np.log10(p_out / noise) >= min_db:
            continue
        why = (f"feeds a cancelling {node.op} ({node.name}): its 8-bit rounding noise would leave "
               f"{10 * np.log10(p_out / noise):.1f} dB there")
        for t in fed:
            for p in t.inputs:
                if p.name in qc.quantized and not isinstance(QUANTIZERS.get(p.op), Linear):
                    qc.quantized.discard(p.name)
                    plan.float_reasons[p.name] = why
        if node.name in qc.quantized:
            qc.quantized.discard(node.name)
            plan.float_reasons[node.name] = why


def quantize_graph(graph: gs.Graph, ranges: dict, opts, names=None, top: gs.Graph | None = None) -> tuple[QuantPlan, QDQRewriter]:
    """Quantize ``graph`` (with ``top``, the main graph: an If / Loop / Scan body of it, see ``bodies``);
    ``names``: the allocator of the whole model's names."""
    powers = getattr(ranges, "powers", {})
    b = GraphBuilder(graph, names)
    ranges = _rewrite_ops(graph, b, ranges, opts)
    plan = plan_quantization(graph, opts)
    qc = QDQRewriter(b, ranges, opts)
    if opts.log_ranges:
        qc.log_fed = log_fed(graph)
    by_name = {n.name: n for n in graph.nodes}
    _fuse_activations(qc, plan, by_name)
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    qset = {n for n in plan.nodes if n not in plan.fused_activations}
    planned = set(qset)
    qc.quantized = qset
    _float_tail(qc, plan, graph)
    _cancellations(qc, plan, graph, powers)
    quantized = [n for n in graph.nodes if n.name in qset]
    for node in quantized:
        reason = QUANTIZERS[node.op].mark(node, qc)
        if reason:
            plan.float_reasons[node.name] = reason
    for t in qc.targets:
        qc.act_params(t)
    # before the constants: a layer left float by its ranges keeps float weights (DequantizeLinear of constant
    # weights would run at every call, before a float kernel: slower than the float model)
    _range_reasons(qc, plan, [n for n in quantized if n.name not in plan.float_reasons])
    for node in quantized:
        if node.name not in plan.float_reasons:
            QUANTIZERS[node.op].quantize_constants(node, qc)
    local = node_ids(graph) if top is not None else None
    outer = GraphBuilder(top, qc.b.names) if top is not None else None
    for t in qc.targets:
        p = qc.params.get(t.name)
        if p is not None:
            insert_qdq(qc.b, graph, t, p, local, outer)
    left_float = [n for n in graph.nodes if n.name in planned and n.name not in qset]
    for node in left_float:
        QUANTIZERS[node.op].quantize_float(node, qc)
    _integer_pads(qc, [n for n in quantized if n.op == "Pad" and n.name not in plan.float_reasons])
    dedupe_constants(graph)
    return plan, qc
