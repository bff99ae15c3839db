"""Loop-carried values that never change: read as the constants they are.

Some exporters (Paddle2ONNX) pass a Loop's weights as loop-carried values: the body gets each weight as a body
input and hands it back unchanged as the matching body output. Inside the body the weight is then a run-time
value, so calibration would treat it as an activation and quantization would requantize it every iteration. When
the Loop's initial value is an initializer of the enclosing graph and the body returns its input unchanged (the
same name, or through Identity nodes), every body node that reads the input reads the initializer instead (an
outer-scope value, as ONNX allows); the carried value itself is left in place, so the Loop's outputs are unchanged.
"""
from __future__ import annotations

import onnx

from qpass.ir.graph import iter_graphs, subgraphs


def _identity_source(body: onnx.GraphProto, name: str) -> tuple[str, set[int]]:
    """The value ``name`` copies through Identity nodes of ``body`` (itself if none), and those nodes' indices."""
    made = {o: i for i, n in enumerate(body.node) for o in n.output}
    chain: set[int] = set()
    while name in made and body.node[made[name]].op_type == "Identity":
        chain.add(made[name])
        name = body.node[made[name]].input[0]
    return name, chain


def _local_names(body: onnx.GraphProto) -> set[str]:
    names = {i.name for i in body.input} | {i.name for i in body.initializer}
    for n in body.node:
        names.update(n.output)
    return names


def _rename_reads(graph: onnx.GraphProto, old: str, new: str, keep: set[int]) -> int:
    """Every read of ``old`` in ``graph`` and in the graphs nested in it becomes a read of ``new``, except by the
    nodes of ``graph`` at the indices ``keep`` (the Identity chain handing the carried value back: constant folding
    would otherwise copy the initializer into the body)."""
    count = 0
    for g in iter_graphs(graph):
        for j, n in enumerate(g.node):
            if g is graph and j in keep:
                continue
            for i, x in enumerate(n.input):
                if x == old:
                    n.input[i] = new
                    count += 1
    return count


def _all_reads(model: onnx.ModelProto) -> set[str]:
    names = {o.name for o in model.graph.output}
    for g in iter_graphs(model.graph):
        for n in g.node:
            names.update(n.input)
    return names


def _drop_carried(node: onnx.NodeProto, body: onnx.GraphProto, k: int, chain: set[int]) -> None:
    """Remove loop-carried value ``k`` (its Loop input and output, body input and output, Identity chain)."""
    del node.input[2 + k]
    if k < len(node.output):
        del node.output[k]
    del body.input[2 + k]
    del body.output[1 + k]
    for j in sorted(chain, reverse=True):
        del body.node[j]


def constant_carried_values(model: onnx.ModelProto) -> int:
    """Rewrite every Loop of ``model`` as the module says; the number of body reads redirected. A carried value
    whose final value nothing reads is then dropped from the Loop: the float initializer is not kept alive beside
    the weights quantization derives from it."""
    redirected = 0
    for g in list(iter_graphs(model.graph)):
        inits = {i.name for i in g.initializer}
        for node in g.node:
            if node.op_type != "Loop" or node.domain not in ("", "ai.onnx"):
                continue
            body = next((b for name, b in subgraphs(node) if name == "body"), None)
            if body is None:
                continue
            local = _local_names(body)
            for k in reversed(range(len(node.input) - 2)):
                init = node.input[2 + k]
                if init not in inits or init in local or 2 + k >= len(body.input) or 1 + k >= len(body.output):
                    continue
                b_in = body.input[2 + k].name
                source, chain = _identity_source(body, body.output[1 + k].name)
                if source != b_in:
                    continue
                redirected += _rename_reads(body, b_in, init, chain)
                final = node.output[k] if k < len(node.output) else ""
                if final not in _all_reads(model) - {""} and b_in not in _all_reads_of(body, chain, 1 + k):
                    _drop_carried(node, body, k, chain)
    return redirected


def _all_reads_of(body: onnx.GraphProto, skip: set[int], output: int) -> set[str]:
    """Names read in ``body`` (nested graphs included) by nodes other than those at indices ``skip``, or returned
    by body outputs other than ``output``."""
    names = {o.name for j, o in enumerate(body.output) if j != output}
    for g in iter_graphs(body):
        for j, n in enumerate(g.node):
            if not (g is body and j in skip):
                names.update(n.input)
    return names
