"""Small helpers over ONNX graphs: topological order, name maps, graphsurgeon round trips."""
from __future__ import annotations

from collections import defaultdict, deque

import numpy as np
import onnx
import onnx_graphsurgeon as gs


def subgraphs(node: onnx.NodeProto) -> list[tuple[str, onnx.GraphProto]]:
    """``(attribute name, graph)`` of every subgraph a node holds (If branches, Loop/Scan bodies)."""
    out = []
    for attr in node.attribute:
        if attr.type == onnx.AttributeProto.GRAPH:
            out.append((attr.name, attr.g))
        elif attr.type == onnx.AttributeProto.GRAPHS:
            out.extend((attr.name, g) for g in attr.graphs)
    return out


def iter_graphs(graph: onnx.GraphProto):
    """``graph`` and every graph nested in it, outermost first (depth first)."""
    yield graph
    for n in graph.node:
        for _, g in subgraphs(n):
            yield from iter_graphs(g)


def all_nodes(graph: onnx.GraphProto):
    """Every node of ``graph`` and of the graphs nested in it (If / Loop / Scan bodies)."""
    for g in iter_graphs(graph):
        yield from g.node


def outer_inputs(graph: onnx.GraphProto) -> set[str]:
    """Names ``graph`` (a subgraph) or any graph nested in it reads from its enclosing scopes."""
    local = {i.name for i in graph.input} | {i.name for i in graph.initializer}
    for n in graph.node:
        local.update(n.output)
    names = {o.name for o in graph.output if o.name not in local}
    for n in graph.node:
        names.update(x for x in n.input if x and x not in local)
        for _, g in subgraphs(n):
            names.update(x for x in outer_inputs(g) if x not in local)
    return names


def _subgraph_outer_inputs(node: onnx.NodeProto) -> set[str]:
    """Names a node's subgraphs (If/Loop/Scan bodies) read from the enclosing scope."""
    names: set[str] = set()
    for _, g in subgraphs(node):
        names |= outer_inputs(g)
    return names


def node_inputs(node: onnx.NodeProto) -> list[str]:
    """All tensor names a node reads, including those captured by its subgraphs."""
    ins = [x for x in node.input if x]
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        ins += sorted(_subgraph_outer_inputs(node) - set(ins))
    return ins


def topo_order(nodes: list[onnx.NodeProto]) -> list[onnx.NodeProto]:
    """Stable Kahn order of ``nodes`` (subgraph captures count as inputs); ValueError on a cycle."""
    producer = {}
    for i, n in enumerate(nodes):
        for o in n.output:
            if o:
                producer[o] = i
    deps = [set() for _ in nodes]
    users = defaultdict(list)
    for i, n in enumerate(nodes):
        for name in node_inputs(n):
            j = producer.get(name)
            if j is not None and j != i and j not in deps[i]:
                deps[i].add(j)
                users[j].append(i)
            elif j == i:
                raise ValueError(f"graph has a cycle: node {n.name or n.op_type!r} reads its own output {name!r}")
    ready = deque(i for i in range(len(nodes)) if not deps[i])
    order = []
    pending = [len(d) for d in deps]
    while ready:
        i = ready.popleft()
        order.append(i)
        for u in users[i]:
            pending[u] -= 1
            if pending[u] == 0:
                ready.append(u)
    if len(order) != len(nodes):
        stuck = next(nodes[i] for i in range(len(nodes)) if pending[i])
        raise ValueError(f"graph has a cycle through node {stuck.name or stuck.op_type!r}")
    return [nodes[i] for i in order]


def topo_sort_nodes(graph: onnx.GraphProto) -> None:
    """Sort ``graph.node`` and the nodes of every nested subgraph in place (stable Kahn order); raise ValueError
    on a cycle."""
    for g in iter_graphs(graph):
        nodes = list(g.node)
        ordered = topo_order(nodes)
        if any(a is not b for a, b in zip(ordered, nodes)):
            del g.node[:]
            g.node.extend(ordered)


def producers(graph: onnx.GraphProto) -> dict[str, onnx.NodeProto]:
    return {o: n for n in graph.node for o in n.output if o}


def upstream(graph: onnx.GraphProto, start: str) -> set[str]:
    """Every tensor ``start`` is computed from (its producer's inputs and theirs), ``start`` included."""
    made = producers(graph)
    seen, todo = set(), [start]
    while todo:
        t = todo.pop()
        if t and t not in seen:
            seen.add(t)
            if t in made:
                todo.extend(made[t].input)
    return seen


def consumers(graph: onnx.GraphProto) -> dict[str, list[onnx.NodeProto]]:
    out: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for n in graph.node:
        for name in node_inputs(n):
            out[name].append(n)
    return out


def drop_unread(m: onnx.ModelProto, op_types: tuple[str, ...] = ("QuantizeLinear", "DequantizeLinear")) -> None:
    """Remove (in place) nodes of ``op_types`` whose outputs nothing reads, until none is left, then the
    initializers nothing reads (subgraph captures and graph outputs count as reads)."""
    outs = {o.name for o in m.graph.output}
    while True:
        readers = consumers(m.graph)
        dead = [n for n in m.graph.node if n.op_type in op_types
                and not any(readers.get(o) or o in outs for o in n.output)]
        if not dead:
            break
        for n in dead:
            m.graph.node.remove(n)
    used = {x for n in m.graph.node for x in node_inputs(n)} | outs | {v.name for v in m.graph.input}
    keep = [i for i in m.graph.initializer if i.name in used]
    if len(keep) < len(m.graph.initializer):
        del m.graph.initializer[:]
        m.graph.initializer.extend(keep)


def op_histogram(graph: onnx.GraphProto) -> dict[str, int]:
    hist: dict[str, int] = defaultdict(int)
    for n in graph.node:
        key = n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}::{n.op_type}"
        hist[key] += 1
    return dict(sorted(hist.items(), key=lambda kv: (-kv[1], kv[0])))


def main_opset(model: onnx.ModelProto) -> int:
    for imp in model.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return imp.version
    return 0


def elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor whose type is known (inputs, outputs, value_info, initializers)."""
    types: dict[str, int] = {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        if vi.type.HasField("tensor_type"):
            types[vi.name] = vi.type.tensor_type.elem_type
    for init in g.initializer:
        types[init.name] = init.data_type
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx"):
            for a in n.attribute:
                if a.name == "value":
                    types[n.output[0]] = a.t.data_type
    return types


def shapes(model: onnx.ModelProto) -> dict[str, list[int | str | None]]:
    out = {}
    g = model.graph
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        t = vi.type.tensor_type
        if vi.type.HasField("tensor_type") and t.HasField("shape"):
            out[vi.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim]
    for init in g.initializer:
        out[init.name] = list(init.dims)
    return out


def initializer_arrays(graph: onnx.GraphProto) -> dict[str, np.ndarray]:
    return {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}


def to_gs(model: onnx.ModelProto) -> gs.Graph:
    return gs.import_onnx(model)


def from_gs(graph: gs.Graph, like: onnx.ModelProto) -> onnx.ModelProto:
    """Export a graphsurgeon graph, keeping the original model's metadata, IR version and functions."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph, do_type_check=False)
    out.ir_version = like.ir_version
    out.producer_name = like.producer_name
    out.producer_version = like.producer_version
    out.domain = like.domain
    out.model_version = like.model_version
    out.doc_string = like.doc_string
    del out.metadata_props[:]
    out.metadata_props.extend(like.metadata_props)
    del out.functions[:]
    out.functions.extend(like.functions)
    _merge_opsets(out, like)
    if like.graph.quantization_annotation and not out.graph.quantization_annotation:
        out.graph.quantization_annotation.extend(like.graph.quantization_annotation)
        from .datatypes import prune_annotations

        prune_annotations(out)
    return out


def _merge_opsets(out: onnx.ModelProto, like: onnx.ModelProto) -> None:
    have = {o.domain: o for o in out.opset_import}
    for imp in like.opset_import:
        if imp.domain not in have:
            out.opset_import.append(imp)
        elif imp.domain in ("", "ai.onnx"):
            have[imp.domain].version = imp.version


class NameAllocator:
    """Hands out tensor/node names that do not collide with any name already in a graph."""

    def __init__(self, taken):
        self.taken = set(taken)

    @classmethod
    def for_model(cls, model: onnx.ModelProto) -> "NameAllocator":
        g = model.graph
        names = {i.name for i in g.input} | {o.name for o in g.output} | {i.name for i in g.initializer}
        for n in g.node:
            names.add(n.name)
            names.update(n.input)
            names.update(n.output)
        return cls(names)

    @classmethod
    def for_gs(cls, graph: gs.Graph) -> "NameAllocator":
        names = set(graph.tensors().keys()) | {n.name for n in graph.nodes}
        return cls(names)

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            name = f"{base}_{k}"
            k += 1
        self.taken.add(name)
        return name
