"""Grouping the hardware nodes of an analysed graph into dataflow partitions.

``plan`` splits the nodes some kind implements into maximal connected partitions whose contraction keeps the graph
acyclic (grouping by the number of host nodes on the longest path from the inputs, which is convex by
construction, then merging adjacent groups greedily while the quotient graph stays a DAG; networkx). It then
propagates stream orders through each partition: a node that would need a real reordering (a sliding window after
a Transpose, two differently ordered inputs of an Add) goes back to the host, and so does a group of layout-only
nodes; the grouping is repeated until nothing changes.
"""
from __future__ import annotations

import networkx as nx
import onnx

from qpass.errors import QpassError
from qpass.hw.classify import Analysis, analyse
from qpass.hw.kinds import COMPUTE_KINDS, KIND_BY_NAME
from qpass.hw.nodes import data_inputs
from qpass.hw.orders import natural_order


def _node_graph(an: Analysis) -> nx.DiGraph:
    g = nx.DiGraph()
    for n in an.graph.nodes:
        g.add_node(n.name)
    for n in an.graph.nodes:
        for o in n.outputs:
            for r in o.outputs:
                g.add_edge(n.name, r.name)
    return g


def _quotient_is_dag(g: nx.DiGraph, group_of: dict[str, int]) -> bool:
    q = nx.DiGraph()
    for n in g.nodes:
        q.add_node(group_of.get(n, n))
    for a, b in g.edges:
        ga, gb = group_of.get(a, a), group_of.get(b, b)
        if ga != gb:
            q.add_edge(ga, gb)
    return nx.is_directed_acyclic_graph(q)


def _groups(an: Analysis, hw: set[str]) -> list[list[str]]:
    g = _node_graph(an)
    order = list(nx.topological_sort(g))
    h = {}
    for n in order:
        h[n] = max((h[p] + (0 if p in hw else 1) for p in g.predecessors(n)), default=0)
    u = nx.Graph()
    u.add_nodes_from(n for n in order if n in hw)
    for a, b in g.edges:
        if a in hw and b in hw and h[a] == h[b]:
            u.add_edge(a, b)
    comps = [set(c) for c in nx.connected_components(u)]
    group_of = {n: ("grp", i) for i, c in enumerate(comps) for n in c}
    # greedy merge of adjacent groups while the contraction stays acyclic
    changed = True
    while changed:
        changed = False
        pairs = sorted({(group_of[a], group_of[b]) for a, b in g.edges
                        if a in hw and b in hw and group_of[a] != group_of[b]})
        for ga, gb in pairs:
            trial = {n: (ga if k == gb else k) for n, k in group_of.items()}
            if _quotient_is_dag(g, trial):
                group_of = trial
                changed = True
                break
    pos = {n: i for i, n in enumerate(order)}
    groups: dict = {}
    for n in order:
        if n in hw:
            groups.setdefault(group_of[n], []).append(n)
    return sorted(groups.values(), key=lambda ns: pos[ns[0]])


def _check_orders(an: Analysis, group: list[str]) -> dict[str, str]:
    """Propagate stream orders through one partition; returns {node: reason} for nodes that cannot stream."""
    members = set(group)
    bad = {}
    for name in group:
        node = an.node(name)
        ins = []
        for t in data_inputs(node):
            p = t.inputs[0].name if t.inputs else None
            if p in members and t.name in an.orders:
                ins.append(an.orders[t.name])
            else:
                ins.append(natural_order(an.shapes[t.name]))
        order, why = KIND_BY_NAME[an.decisions[name].kind].out_order(node, ins)
        if order is None:
            bad[name] = why
            continue
        for o in node.outputs:
            if o is not None and o.name:
                an.orders[o.name] = order
    return bad


def plan(model: onnx.ModelProto) -> tuple[Analysis, list[list[str]]]:
    """Analyse and group: (analysis, partitions as lists of node names in topological order)."""
    an = analyse(model)
    for _ in range(100):
        hw = {n for n, d in an.decisions.items() if d.kind is not None}
        groups = _groups(an, hw)
        an.orders.clear()
        changed = False
        for grp in groups:
            kinds = {an.decisions[n].kind for n in grp}
            if not kinds & COMPUTE_KINDS:
                for n in grp:
                    d = an.decisions[n]
                    d.kind, d.reason = None, "layout-only op between host ops (nothing to stream)"
                changed = True
                continue
            for n, why in _check_orders(an, grp).items():
                d = an.decisions[n]
                d.kind, d.reason = None, f"{d.op}: {why}"
                changed = True
        if not changed:
            return an, groups
    raise QpassError("dataflow partitioning did not converge")


def explain(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    """(node, op, reason) for every node that stays on the host, in graph order (for ``qpass inspect --dataflow``)."""
    an, _ = plan(model)
    return [(d.node, d.op, d.reason) for d in an.decisions.values() if d.kind is None]


def describe(model: onnx.ModelProto) -> list[tuple[str, str, str, str]]:
    """(node, op, 'partition <i>' or 'host', reason / implementation) for every node."""
    an, groups = plan(model)
    where = {n: f"partition {i}" for i, g in enumerate(groups) for n in g}
    return [(d.node, d.op, where.get(d.node, "host"), d.reason) for d in an.decisions.values()]
