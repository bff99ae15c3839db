"""Dataflow partitions as ONNX models, and back.

``partition`` splits a streamlined QONNX model into host nodes and the partitions ``qpass.hw.grouping.plan`` finds.
Each partition becomes its own ONNX model, referenced from a ``qpass::StreamingDataflowPartition`` node
(attributes ``model``: the relative path of the partition file, saved next to the parent; ``model_sha256``;
``partition_id``). The reference interpreter runs such a node by running the partition model found in the
``PartitionedModel.store`` (``qpass.ops.partition``); ``lower_partitions`` inlines the partitions back and lowers
the result for plain onnxruntime.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from onnx import helper

from qpass.hw.classify import RANGES_KEY, Decision
from qpass.hw.grouping import plan
from qpass.hw.shapes import ensure_names, with_shapes
from qpass.ir.graph import topo_order
from qpass.ops.partition import PARTITION_DOMAIN, PARTITION_OP, PartitionStore, is_partition, model_sha256, partition_ref


@dataclass
class PartitionedModel:
    """The parent model (host nodes + one partition node per dataflow partition) and the partition models,
    keyed by the relative file name the parent's partition nodes reference."""

    parent: onnx.ModelProto
    partitions: dict[str, onnx.ModelProto]
    decisions: list[Decision]
    groups: list[list[str]]
    orders: dict[str, np.ndarray] = field(default_factory=dict)
    #: where the reference interpreter and ``inline_partitions`` find the partition models
    store: PartitionStore = field(default_factory=PartitionStore)

    @property
    def partition_nodes(self) -> list[onnx.NodeProto]:
        return [n for n in self.parent.graph.node if is_partition(n)]

    def host_nodes(self) -> list[tuple[str, str, str]]:
        return [(d.node, d.op, d.reason) for d in self.decisions if d.kind is None]

    def host_report(self) -> list[str]:
        """The report lines listing the nodes left on the host, each with its reason."""
        host = self.host_nodes()
        return [f"\nhost nodes ({len(host)}):"] + [f"  {op:14s} {n}: {why}" for n, op, why in host]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the parent to ``path`` and each partition next to it as ``<stem>.<partition file>``; the parent's
        ``model`` attributes are rewritten to those file names (relative to the parent's folder)."""
        from qpass.ir.model_io import save_model

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        parent = onnx.ModelProto()
        parent.CopyFrom(self.parent)
        renamed = {}
        for n in parent.graph.node:
            if is_partition(n):
                a = next(a for a in n.attribute if a.name == "model")
                rel = a.s.decode()
                new = f"{path.stem}.{rel}"
                save_model(self.partitions[rel], path.parent / new)
                a.s = new.encode()
                renamed[new] = self.partitions[rel]
        save_model(parent, path)
        self.store.add(renamed, path.parent)
        return path


def _value_infos(model: onnx.ModelProto) -> dict[str, onnx.ValueInfoProto]:
    g = model.graph
    return {v.name: v for v in list(g.value_info) + list(g.input) + list(g.output)}


def _annotations_for(model: onnx.ModelProto, names: set[str]):
    return [a for a in model.graph.quantization_annotation if a.tensor_name in names]


def partition(model: onnx.ModelProto, prefix: str = "dataflow_partition") -> PartitionedModel:
    """Split a streamlined QONNX model into host nodes and dataflow partitions (see the module docstring).
    Models that the golden simulator and (after ``lower_partitions``) onnxruntime run end to end."""
    model = with_shapes(ensure_names(model))
    an, groups = plan(model)
    g = model.graph
    parts: dict[str, onnx.ModelProto] = {}
    part_nodes: dict[int, onnx.NodeProto] = {}
    io = _GraphIndex(model)
    for i, grp in enumerate(groups):
        rel = f"{prefix}_{i}.onnx"
        pm, ins, outs = _partition_model(model, io, grp, f"{g.name or 'graph'}_{prefix}_{i}", an.ranges)
        parts[rel] = pm
        part_nodes[i] = helper.make_node(PARTITION_OP, ins, outs, name=f"{prefix}_{i}", domain=PARTITION_DOMAIN,
                                         model=rel, model_sha256=model_sha256(pm), partition_id=i)
    parent = _parent_model(model, io, groups, part_nodes)
    return PartitionedModel(parent, parts, list(an.decisions.values()), groups, dict(an.orders),
                            PartitionStore(parts))


class _GraphIndex:
    """Nodes, initializers, value infos, producers and readers of a model's graph by name."""

    def __init__(self, model: onnx.ModelProto):
        g = model.graph
        self.protos = {n.name: n for n in g.node}
        self.inits = {i.name: i for i in g.initializer}
        self.vis = _value_infos(model)
        self.graph_outputs = [o.name for o in g.output]
        self.produced_by = {o: n.name for n in g.node for o in n.output if o}
        self.readers: dict[str, list[str]] = {}
        for n in g.node:
            for i in n.input:
                if i:
                    self.readers.setdefault(i, []).append(n.name)


def _partition_model(model: onnx.ModelProto, io: _GraphIndex, grp: list[str], graph_name: str, ranges: dict) \
        -> tuple[onnx.ModelProto, list[str], list[str]]:
    """(partition model, its inputs, its outputs) of the nodes ``grp``."""
    members = set(grp)
    nodes = [io.protos[n] for n in grp]
    ins, outs, used_inits, internal = [], [], [], set()
    for n in nodes:
        for t in n.input:
            if not t:
                continue
            if t in io.inits:
                if t not in used_inits:
                    used_inits.append(t)
            elif io.produced_by.get(t) not in members and t not in ins:
                ins.append(t)
        for t in n.output:
            if not t:
                continue
            internal.add(t)
            if t in io.graph_outputs or any(r not in members for r in io.readers.get(t, [])):
                outs.append(t)
    sub = helper.make_graph(
        [_copy_node(n) for n in nodes], graph_name,
        [_vi(io.vis, t) for t in ins], [_vi(io.vis, t) for t in outs],
        [io.inits[t] for t in used_inits],
        value_info=[io.vis[t] for t in sorted(internal - set(outs)) if t in io.vis])
    pm = helper.make_model(sub, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                           producer_name="qpass")
    pm.graph.quantization_annotation.extend(_annotations_for(model, internal | set(ins)))
    rng = {t: [int(ranges[t][0]), int(ranges[t][1])] for t in ins if ranges.get(t) is not None}
    pm.metadata_props.add(key=RANGES_KEY, value=json.dumps(rng, sort_keys=True))
    return pm, ins, outs


def _parent_model(model: onnx.ModelProto, io: _GraphIndex, groups: list[list[str]],
                  part_nodes: dict[int, onnx.NodeProto]) -> onnx.ModelProto:
    """The host nodes and one partition node per group, topologically sorted."""
    g = model.graph
    group_of = {n: i for i, grp in enumerate(groups) for n in grp}
    new_nodes, placed = [], set()
    for n in g.node:
        if n.name in group_of:
            k = group_of[n.name]
            if k not in placed:
                placed.add(k)
                new_nodes.append(part_nodes[k])
        else:
            new_nodes.append(_copy_node(n))
    new_nodes = topo_order(new_nodes)
    live = {t for n in new_nodes for t in list(n.input) + list(n.output) if t}
    parent_graph = helper.make_graph(
        new_nodes, g.name, list(g.input), list(g.output),
        [io.inits[t] for t in io.inits if t in live],
        value_info=[v for v in g.value_info if v.name in live])
    parent = helper.make_model(parent_graph, opset_imports=list(model.opset_import), ir_version=model.ir_version,
                               producer_name=model.producer_name or "qpass")
    if groups and not any(o.domain == PARTITION_DOMAIN for o in parent.opset_import):
        parent.opset_import.append(helper.make_opsetid(PARTITION_DOMAIN, 1))
    parent.graph.quantization_annotation.extend(_annotations_for(model, live))
    parent.metadata_props.extend(model.metadata_props)
    return parent


def _copy_node(n: onnx.NodeProto) -> onnx.NodeProto:
    c = onnx.NodeProto()
    c.CopyFrom(n)
    return c


def _vi(vis: dict, name: str) -> onnx.ValueInfoProto:
    if name in vis:
        return vis[name]
    return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)


def load_partitioned(path: str | os.PathLike) -> PartitionedModel:
    """Read a parent model saved by ``PartitionedModel.save`` together with its partition files."""
    from qpass.ir.model_io import parse_model

    path = Path(path)
    parent = onnx.load(str(path))
    parts = {}
    for n in parent.graph.node:
        if is_partition(n):
            rel, _ = partition_ref(n)
            parts[rel] = parse_model(path.parent / rel)
    return PartitionedModel(parent, parts, [], [], store=PartitionStore(parts, path.parent))


def inline_partitions(model: onnx.ModelProto | PartitionedModel, base_dir: str | os.PathLike | None = None) \
        -> onnx.ModelProto:
    """The parent with every partition node replaced by the partition's own nodes (the streamlined graph).
    Partition models come from the PartitionedModel's store, else from files relative to ``base_dir``."""
    store = PartitionStore(base_dir=base_dir)
    if isinstance(model, PartitionedModel):
        store = model.store
        model = model.parent
    g = model.graph
    nodes, inits, vis = [], {i.name: i for i in g.initializer}, {v.name: v for v in g.value_info}
    anns = {a.tensor_name: a for a in g.quantization_annotation}
    for n in g.node:
        if is_partition(n):
            sub = store.resolve(*partition_ref(n))
            nodes.extend(_copy_node(x) for x in sub.graph.node)
            for i in sub.graph.initializer:
                inits.setdefault(i.name, i)
            for v in sub.graph.value_info:
                vis.setdefault(v.name, v)
            for a in sub.graph.quantization_annotation:
                anns.setdefault(a.tensor_name, a)
        else:
            nodes.append(_copy_node(n))
    nodes = topo_order(nodes)
    out_graph = helper.make_graph(nodes, g.name, list(g.input), list(g.output), list(inits.values()),
                                  value_info=list(vis.values()))
    opsets = [o for o in model.opset_import if o.domain != PARTITION_DOMAIN]
    out = helper.make_model(out_graph, opset_imports=opsets, ir_version=model.ir_version,
                            producer_name=model.producer_name)
    out.graph.quantization_annotation.extend(anns.values())
    return out


def lower_partitions(model: onnx.ModelProto | PartitionedModel, base_dir: str | os.PathLike | None = None) \
        -> onnx.ModelProto:
    """Inline the partitions back and lower the QONNX ops with the ``lower_ort`` pass: a model plain
    onnxruntime runs end to end."""
    from qpass.pipeline.run import run_passes

    return run_passes(inline_partitions(model, base_dir), ["lower_ort"], snapshots=False).model
