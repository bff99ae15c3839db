"""Which nodes the QDQ pass quantizes, which Relu / Clip it drops into their producer, and why the rest stays float."""
from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

import onnx_graphsurgeon as gs

from .op_table import QUANTIZERS, SharedScale, clip_bounds
from .speed import slow_convs


@dataclass
class QuantPlan:
    """Which nodes get integer kernels, which tensors get QDQ pairs, and why other nodes stay float."""

    nodes: list[str] = field(default_factory=list)
    fused_activations: list[str] = field(default_factory=list)
    float_reasons: dict[str, str] = field(default_factory=dict)


def float_reason(node: gs.Node, op_types: set, opts) -> str | None:
    """Why ``node`` stays float under ``opts`` (None: it is quantized)."""
    if any(fnmatch.fnmatchcase(node.name, pat) for pat in opts.exclude):
        return "excluded by name pattern"
    if node.op not in op_types or node.op not in QUANTIZERS or node.domain not in ("", "ai.onnx", None):
        return f"{node.op} has no integer kernel in onnxruntime's QDQ path"
    return QUANTIZERS[node.op].check(node)


def _fusable(node: gs.Node, graph: gs.Graph, quantized: set) -> bool:
    """A Relu / Clip(0, m) read from a quantized layer's only output, which nothing else reads."""
    x = node.inputs[0]
    if len(x.inputs) != 1 or len(x.outputs) != 1 or x in graph.outputs:
        return False
    prod = x.inputs[0]
    if prod.name not in quantized or not QUANTIZERS[prod.op].fusable_producer:
        return False
    return node.op == "Relu" or clip_bounds(node)[0] == 0.0


def plan_quantization(graph: gs.Graph, opts) -> QuantPlan:
    plan = QuantPlan()
    op_types = set(opts.op_types)
    for node in graph.nodes:
        reason = float_reason(node, op_types, opts)
        if reason:
            plan.float_reasons[node.name] = reason
        else:
            plan.nodes.append(node.name)
    if opts.float_thin_convs:
        slow = slow_convs(graph, set(plan.nodes), lambda n: isinstance(QUANTIZERS.get(n.op), SharedScale),
                          lambda n: n.op in ("Relu", "Clip"))
        plan.float_reasons.update(slow)
        plan.nodes = [n for n in plan.nodes if n not in slow]
    if opts.fuse_relu:
        quantized = set(plan.nodes)
        plan.fused_activations = [n.name for n in graph.nodes if n.op in ("Relu", "Clip") and n.name in quantized
                                  and _fusable(n, graph, quantized)]
    return plan
