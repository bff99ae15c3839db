"""Which hardware kind implements each node of a streamlined (integer-only) QONNX graph, or why it stays on the
host.

A node goes through a host gate first (input quantisers, foreign domains, ops no kind implements, float or
shapeless data); then every kind of ``qpass.hw.kinds.KINDS`` implementing its op type gives its verdict: the first
kind that accepts takes the node, else the first reason given stands. Everything else stays on the host: the input
quantiser (``Div`` + ``Quant`` / ``BipolarQuant`` turning float data into integer codes), the float head
(``Mul``/``Add`` by float scales after the last integer layer), Softmax, Resize, and any op whose data is not
integer.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from qpass.analysis.intinfo import int_range, is_bipolar_codes, is_int_quant
from qpass.hw.kinds import COMPUTE_KINDS, KINDS, SUPPORTED_OPS
from qpass.hw.nodes import data_inputs, sample_shape
from qpass.hw.shapes import ensure_names, with_shapes
from qpass.ir.datatypes import get_annotations, int_type_from_name
from qpass.ops import op_of
from qpass.ops.common import QONNX_DOMAINS
from qpass.ops.partition import PartitionStore

#: metadata key of a partition model's exact input ranges (written by ``qpass.hw.partition.partition``)
RANGES_KEY = "qpass_stream_ranges"
#: QONNX quantisers: on the host unless their input already holds integer codes
#: element-wise arithmetic that turns integer codes into float values (the float head)
FLOAT_ARITHMETIC = ("Mul", "Add", "Sub", "Div")


@dataclass
class Decision:
    node: str
    op: str
    kind: str | None  # hardware kind, None: host
    reason: str


@dataclass
class Analysis:
    """Per-node hardware decisions on a streamlined graph, with per-sample shapes and integer ranges."""

    model: onnx.ModelProto
    graph: gs.Graph
    decisions: dict[str, Decision]
    shapes: dict[str, tuple | None]
    ranges: dict[str, tuple[float, float] | None]
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    #: where the reference interpreter and ``inline_partitions`` find the partition models
    store: PartitionStore = field(default_factory=PartitionStore)
    memo: dict = field(default_factory=dict)  # int_range memo (seeded with the graph inputs' ranges)

    def node(self, name: str) -> gs.Node:
        return self._by_name[name]

    def __post_init__(self):
        self._by_name = {n.name: n for n in self.graph.nodes}


def seed_ranges(model: onnx.ModelProto, graph: gs.Graph) -> dict:
    """Integer ranges of graph inputs: exact ones recorded by ``partition`` (metadata ``qpass_stream_ranges``), else
    the range of their datatype annotation (e.g. UINT4), so a partition model alone knows its inputs are integer."""
    memo: dict = {}
    anns = get_annotations(model)
    for t in graph.inputs:
        dt = int_type_from_name(anns.get(t.name, ""))
        if dt is not None:
            memo[t.name] = (float(dt.lo), float(dt.hi))
    for p in model.metadata_props:
        if p.key == RANGES_KEY:
            for k, v in json.loads(p.value).items():
                memo[k] = (float(v[0]), float(v[1]))
    return memo


def _host_gate(node: gs.Node, data, outs, memo: dict) -> str | None:
    """Why ``node`` stays on the host whatever the kinds say, or None."""
    op, dom = node.op, node.domain or ""
    if dom in QONNX_DOMAINS and getattr(op_of(node), "quantizer", False):
        if is_int_quant(node) or is_bipolar_codes(node):
            if data and int_range(data[0], memo) is None:
                return "input quantiser: rounds float data to integer codes (host)"
        return f"{op} on float data: a quantiser with a float scale runs on the host"
    if op == "Div" and outs and any(is_int_quant(r) or is_bipolar_codes(r) for r in outs[0].outputs):
        return "input quantiser: scales float data before rounding to integer codes (host)"
    if dom in QONNX_DOMAINS and op != "MultiThreshold":
        return f"{op} has no streaming hardware implementation"
    if dom not in ("", "ai.onnx") and dom not in QONNX_DOMAINS:
        return f"{dom}::{op} has no streaming hardware implementation"
    if op not in SUPPORTED_OPS:
        return f"{op} has no streaming hardware implementation"
    if not data:
        return "no streamed input (constant computation)"
    for t in data:
        if int_range(t, memo) is None:
            return f"input {t.name!r} is not an integer tensor (float data stays on the host)"
        if sample_shape(t) is None:
            return f"input {t.name!r} has no static per-sample shape"
    for o in outs:
        if int_range(o, memo) is None:
            if op in FLOAT_ARITHMETIC:
                return "dequantises integer codes to float (float head / float op)"
            return f"output {o.name!r} is not an integer tensor"
        if sample_shape(o) is None:
            return f"output {o.name!r} has no static per-sample shape"
    return None


def classify(node: gs.Node, memo: dict) -> tuple[str | None, str]:
    """(hardware kind or None, reason) of one node; ``memo``: the integer-range memo (filled in)."""
    data = data_inputs(node)
    outs = [o for o in node.outputs if o is not None and o.name]
    why = _host_gate(node, data, outs, memo)
    if why is not None:
        return None, why
    first = None
    for kind in KINDS:
        if node.op in kind.ops:
            verdict = kind.match(node, data, outs)
            if verdict is not None and verdict[0] is not None:
                return verdict
            first = first or verdict
    return first or (None, f"{node.op} has no streaming hardware implementation")


def analyse(model: onnx.ModelProto) -> Analysis:
    """Hardware decisions for every node of a streamlined QONNX model (no partitioning yet)."""
    model = with_shapes(ensure_names(model))
    graph = gs.import_onnx(model)
    memo = dict(seed_ranges(model, graph))
    decisions = {}
    for n in graph.nodes:
        kind, why = classify(n, memo)
        decisions[n.name] = Decision(n.name, n.op, kind, why)
    shapes, ranges = {}, {}
    for name, t in graph.tensors().items():
        if isinstance(t, gs.Constant):
            continue
        shapes[name] = sample_shape(t)
        ranges[name] = int_range(t, memo)
    an = Analysis(model, graph, decisions, shapes, ranges, memo=memo)
    _refine_host_reasons(an)
    return an


def _refine_host_reasons(an: Analysis) -> None:
    """Name the float head as such: an element-wise host node downstream of integer hardware with no integer
    computation after it."""
    hw_up: dict[str, bool] = {}
    for n in an.graph.nodes:  # gs keeps the (topological) order of the model
        hw_up[n.name] = any(t.inputs and (an.decisions[t.inputs[0].name].kind is not None or
                                          hw_up.get(t.inputs[0].name, False)) for t in data_inputs(n))
    int_downstream: dict[str, bool] = {}
    for n in reversed(an.graph.nodes):
        below = any(an.decisions[r.name].kind in COMPUTE_KINDS or int_downstream.get(r.name, False)
                    for o in n.outputs for r in o.outputs)
        int_downstream[n.name] = below
        d = an.decisions[n.name]
        if d.kind is None and not below and hw_up[n.name] and n.op in FLOAT_ARITHMETIC:
            d.reason = "float head: dequantises the integer result after the last integer layer (host)"
