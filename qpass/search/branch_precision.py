"""If branches back to float, for ``auto_precision``: a conditional body that calibration takes on only some of the
samples, whose quantization costs the model's output much of its precision (openWakeWord's hey-jarvis: a verifier
MLP in the then-branch, run on 13 of 84 evaluation samples and carrying nearly all the output's energy: 43 dB with
it int8, 96 dB with it float), while its float cost, weighted by how often it runs, is a small part of the model's.

``quantize_qdq`` quantizes every body (issue 12); onnxruntime's ``quantize_static`` leaves them all float. A move
here restores one branch from the model ``quantize_qdq`` started from (the same names: outer-scope values are read
as the main graph quantizes them); the cost is read from the graph (``qdq_moves.graph_cost`` of the branch on its own,
times the share of calibration samples that take it), so the same inputs give the same file on any machine.
"""
from __future__ import annotations

import onnx

from qpass.ir.graph import all_nodes, iter_graphs, shapes
from qpass.passes.qdq_moves import graph_cost, with_input_dims


def quantized_branches(model: onnx.ModelProto) -> list[tuple[str, str]]:
    """(If node name, "then_branch" | "else_branch") of every branch of a main-graph If that holds a Q/DQ node."""
    out = []
    for n in model.graph.node:
        if n.op_type != "If":
            continue
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH and _has_qdq(a.g):
                out.append((n.name, a.name))
    return out


def _has_qdq(g: onnx.GraphProto) -> bool:
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in all_nodes(g))


def _if_node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.op_type == "If" and n.name == name)


def _branch(node: onnx.NodeProto, attr: str) -> onnx.GraphProto:
    return next(a.g for a in node.attribute if a.name == attr)


def restore_branches(model: onnx.ModelProto, float_model: onnx.ModelProto,
                     branches: list[tuple[str, str]]) -> onnx.ModelProto:
    """A copy of ``model`` with each of ``branches`` replaced by ``float_model``'s (None where it lacks one)."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    for name, attr in branches:
        _branch(_if_node(out, name), attr).CopyFrom(_branch(_if_node(float_model, name), attr))
    _drop_unread(out.graph)
    return out


def _drop_unread(g: onnx.GraphProto) -> None:
    """Remove the main-graph nodes nothing reads any more (the QuantizeLinear of an outer value a quantized body
    read) and the initializers only they read."""
    while True:
        read = {i for n in all_nodes(g) for i in n.input} | {o.name for o in g.output}
        dead = [n for n in g.node if not any(o in read for o in n.output if o)]
        if not dead:
            break
        keep = [n for n in g.node if not any(n is d for d in dead)]
        del g.node[:]
        g.node.extend(keep)
    read = {i for n in all_nodes(g) for i in n.input} | {o.name for o in g.output}
    inits = [i for i in g.initializer if i.name in read]
    del g.initializer[:]
    g.initializer.extend(inits)


def condition_tensors(model: onnx.ModelProto, branches: list[tuple[str, str]]) -> dict[str, str]:
    """{If node name: its condition tensor}."""
    return {name: _if_node(model, name).input[0] for name, _ in branches}


def taken_share(conds: dict[str, "object"], name: str, attr: str) -> float:
    """Share of the samples whose condition (an array of per-sample booleans) sends them into ``attr``."""
    import numpy as np

    c = np.asarray(conds[name]).reshape(-1).astype(bool)
    if not c.size:
        return 0.0
    share = float(np.mean(c))
    return share if attr == "then_branch" else 1.0 - share


def branch_cost(model: onnx.ModelProto, name: str, attr: str, dims: dict) -> float:
    """``graph_cost`` of one run of a branch on its own, the outer-scope initializers it reads included."""
    g = _branch(_if_node(model, name), attr)
    used = {i for n in all_nodes(g) for i in n.input}
    m = onnx.helper.make_model(onnx.helper.make_graph(
        list(g.node), "branch", [], list(g.output),
        initializer=[i for i in model.graph.initializer if i.name in used] + list(g.initializer)))
    return graph_cost(m, dims)


def all_dims(model: onnx.ModelProto, inputs: dict) -> dict[str, list[int]]:
    """Per-sample dims of the values of ``model`` and of its bodies (``qdq_moves.tensor_dims`` reads the main graph
    only): shape inference of the whole model, symbolic and unknown dims 1."""
    m = with_input_dims(model, inputs)
    try:
        m = onnx.shape_inference.infer_shapes(m)
    except Exception:  # noqa: BLE001 - an unshaped graph: what its value_info says
        pass
    out: dict[str, list[int]] = {}
    for g in iter_graphs(m.graph):
        gm = onnx.ModelProto()
        gm.graph.CopyFrom(g)
        for k, v in shapes(gm).items():
            out.setdefault(k, [d if isinstance(d, int) and d > 0 else 1 for d in v])
    return out


def branch_shares(model: onnx.ModelProto, branches: list[tuple[str, str]], samples) -> dict[tuple[str, str], float]:
    """{branch: share of ``samples`` that take it}, from the If conditions ``model`` computes."""
    from qpass.ir.ort_session import run_samples

    conds = condition_tensors(model, branches)
    m = onnx.ModelProto()
    m.CopyFrom(model)
    known = {o.name for o in m.graph.output}
    for t in dict.fromkeys(conds.values()):
        if t not in known:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.BOOL, None))
    vals = run_samples(m, samples, outputs=list(dict.fromkeys(conds.values())), batch_size=1)
    return {(n, a): taken_share({n: vals[conds[n]]}, n, a) for n, a in branches}


def expected_cost(model: onnx.ModelProto, shares: dict, inputs: dict) -> float:
    """``graph_cost`` of one run of ``model``: its main graph, plus each If branch of ``shares`` times the share of
    runs that take it."""
    dims = all_dims(model, inputs)
    return graph_cost(model, dims) + sum(s * branch_cost(model, *b, dims) for b, s in shares.items())


def float_branches(int8: onnx.ModelProto, float_m: onnx.ModelProto, fit, held, score, min_gain_db: float,
                   cost_budget: float, inputs: dict) -> tuple[onnx.ModelProto, list[dict]]:
    """``int8`` with the If branches restored to float that each gain ``min_gain_db`` of output SQNR alone on
    ``fit`` (``score(model, samples)``) and half of it on ``held``, while all of them together add at most
    ``cost_budget`` of the int8 model's expected ``graph_cost`` (a branch's extra cost times the share of ``fit``
    that takes it), largest gain first. Returns (model, one record per branch considered)."""
    branches = [b for b in quantized_branches(int8) if any(n.op_type == "If" and n.name == b[0]
                                                           for n in float_m.graph.node)]
    if not branches:
        return int8, []
    shares = branch_shares(int8, branches, fit)
    expected0 = max(expected_cost(int8, shares, inputs), 1.0)
    base, records = score(int8, fit), []
    for b in branches:
        one = restore_branches(int8, float_m, [b])
        extra = expected_cost(one, shares, inputs) / expected0 - 1.0
        records.append({"node": b[0], "branch": b[1], "taken": shares[b], "gain": score(one, fit) - base,
                        "cost": extra})
    chosen, spent, model = [], 0.0, int8
    for r in sorted(records, key=lambda r: (-r["gain"], r["node"], r["branch"])):
        if not r["gain"] >= min_gain_db or spent + max(r["cost"], 0.0) > cost_budget:
            continue
        trial = restore_branches(int8, float_m, [(c["node"], c["branch"]) for c in chosen] + [(r["node"], r["branch"])])
        r["held_out_gain"] = score(trial, held) - score(model, held)
        if r["held_out_gain"] >= min_gain_db / 2:
            chosen.append(r)
            spent, model = spent + max(r["cost"], 0.0), trial
            r["reason"] = (f"+{r['gain']:.2f} dB alone (held-out +{r['held_out_gain']:.2f}); taken on "
                           f"{100 * r['taken']:.0f}% of the calibration samples; expected cost {100 * r['cost']:+.2g}%")
    for r in records:
        r["float"] = r in chosen
    return model, records
