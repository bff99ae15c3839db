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


def constant_carried_values(model: onnx.ModelProto) -> int:
    """Rewrite every Loop of ``model`` as the module says; the number of body reads redirected."""
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
            for k, init in enumerate(node.input[2:]):
                if init not in inits or init in local or 2 + k >= len(body.input) or 1 + k >= len(body.output):
                    continue
                b_in = body.input[2 + k].name
                source, chain = _identity_source(body, body.output[1 + k].name)
                if source == b_in:
                    redirected += _rename_reads(body, b_in, init, chain)
    return redirected
