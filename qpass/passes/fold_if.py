"""Replace an ``If`` whose condition is a constant by the nodes of the branch it takes (part of ``normalize``).

The branch's nodes and initializers move into the graph that held the If; the names the branch produced keep
their names unless another graph of the model defines them too (then they get fresh ones), and each If output
is produced under its own name (by renaming the branch output, or by an Identity where the branch output is an
outer value, an initializer or listed twice). Values the branch read from enclosing scopes stay as they are.
"""
from __future__ import annotations

from collections import Counter

import onnx
from onnx import numpy_helper

from qpass.ir.graph import NameAllocator, iter_graphs, subgraphs

ONNX_DOMAINS = ("", "ai.onnx")


def _definitions(model: onnx.ModelProto) -> Counter:
    """How many times each name is defined (input, initializer, node output) over every graph of the model."""
    defs: Counter = Counter()
    for g in iter_graphs(model.graph):
        defs.update(i.name for i in g.input)
        defs.update(i.name for i in g.initializer)
        defs.update(o for n in g.node for o in n.output if o)
    return defs


def inline_constant_ifs(model: onnx.ModelProto) -> int:
    """Inline every If of the model (at any depth) whose condition is an initializer; return how many."""
    defs = _definitions(model)
    names = NameAllocator(set(defs) | {n.name for g in iter_graphs(model.graph) for n in g.node})
    return _inline_in(model.graph, {}, defs, names)


def _inline_in(graph: onnx.GraphProto, outer: dict, defs: Counter, names: NameAllocator) -> int:
    consts = dict(outer)
    consts.update({i.name: i for i in graph.initializer})
    count = 0
    nodes: list[onnx.NodeProto] = []
    for n in graph.node:
        branch = _taken_branch(n, consts)
        if branch is None:
            for _, g in subgraphs(n):
                count += _inline_in(g, consts, defs, names)
            nodes.append(n)
            continue
        body, inits = _inlined_branch(n, branch, defs, names)
        graph.initializer.extend(inits)
        consts.update({i.name: i for i in inits})
        nodes.extend(body)
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def _taken_branch(node: onnx.NodeProto, consts: dict) -> onnx.GraphProto | None:
    if node.op_type != "If" or node.domain not in ONNX_DOMAINS or not node.input or node.input[0] not in consts:
        return None
    cond = numpy_helper.to_array(consts[node.input[0]])
    if cond.size != 1:
        return None
    want = "then_branch" if bool(cond.reshape(-1)[0]) else "else_branch"
    return next((g for name, g in subgraphs(node) if name == want), None)


def _inlined_branch(node: onnx.NodeProto, branch: onnx.GraphProto, defs: Counter,
                    names: NameAllocator) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """The branch's nodes and initializers, renamed for the enclosing graph, producing the If's outputs."""
    g = onnx.GraphProto()
    g.CopyFrom(branch)
    produced = {o for n in g.node for o in n.output if o}
    outs = [o.name for o in g.output]
    mapping: dict[str, str] = {}
    for bo, y in zip(outs, node.output):
        if y and bo in produced and outs.count(bo) == 1:
            mapping[bo] = y
    for name in produced | {i.name for i in g.initializer}:
        if name not in mapping and defs[name] > 1:
            mapping[name] = names(name)
    _rename(g, mapping)
    inits = list(g.initializer)
    body = list(g.node)
    for bo, y in zip(outs, node.output):
        if y and mapping.get(bo) != y:
            body.append(onnx.helper.make_node("Identity", [mapping.get(bo, bo)], [y], name=names(f"{node.name}_{y}")))
    return body, inits


def _rename(graph: onnx.GraphProto, mapping: dict[str, str]) -> None:
    """Rename ``mapping``'s names wherever ``graph`` and its nested graphs define or read them."""
    if not mapping:
        return
    for init in graph.initializer:
        init.name = mapping.get(init.name, init.name)
    for vi in list(graph.value_info) + list(graph.output):
        vi.name = mapping.get(vi.name, vi.name)
    for n in graph.node:
        for i, x in enumerate(n.input):
            n.input[i] = mapping.get(x, x)
        for i, x in enumerate(n.output):
            n.output[i] = mapping.get(x, x)
        for _, g in subgraphs(n):
            _rename(g, mapping)
