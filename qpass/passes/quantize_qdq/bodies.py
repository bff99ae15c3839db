"""If / Loop / Scan bodies, quantized like the main graph: innermost first, each with the calibrated ranges of its
own values (calibration observes bodies on every iteration), reading outer-scope values as they are.

A body that reads a value of an enclosing graph gets its own QuantizeLinear -> DequantizeLinear inside (the outer
tensor and its other readers are left as they are); the main graph is rewritten last, so its Q/DQ pairs may then
feed a body's QuantizeLinear on the same grid (exact: quantizing codes on their own grid gives them back). onnxruntime
fuses DequantizeLinear -> MatMul -> QuantizeLinear inside bodies as in the main graph.
"""
from __future__ import annotations

import onnx_graphsurgeon as gs

from qpass.ir.graph import NameAllocator


def nested_graphs(node: gs.Node) -> list[gs.Graph]:
    out = []
    for v in node.attrs.values():
        if isinstance(v, gs.Graph):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            out.extend(g for g in v if isinstance(g, gs.Graph))
    return out


def bodies_innermost_first(graph: gs.Graph) -> list[gs.Graph]:
    """Every graph nested in ``graph``, each after the graphs nested in it."""
    out = []
    for node in graph.nodes:
        for g in nested_graphs(node):
            out.extend(bodies_innermost_first(g))
            out.append(g)
    return out


def node_ids(graph: gs.Graph) -> set[int]:
    """ids of the nodes of ``graph`` and of every graph nested in it (the readers a body may rewire)."""
    ids = {id(n) for n in graph.nodes}
    for g in bodies_innermost_first(graph):
        ids.update(id(n) for n in g.nodes)
    return ids


def all_names(graph: gs.Graph) -> NameAllocator:
    """Every tensor and node name of ``graph`` and its bodies: new names stay unique across the whole model."""
    names: set[str] = set()
    for g in [graph] + bodies_innermost_first(graph):
        names.update(g.tensors().keys())
        names.update(n.name for n in g.nodes)
    return NameAllocator(names)
