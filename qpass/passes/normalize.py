"""Shape and opset normalisation: the first pass of every pipeline.

Turns whatever an exporter wrote into one canonical form the other passes can rely on:
initializers are not graph inputs, Constant nodes are initializers, the opset is at least ``target_opset``,
constants are folded, Gemm has alpha = beta = 1, unused opset imports are gone, node names are unique and
non-empty, nodes are sorted topologically, and shapes are inferred.

Subgraphs (If branches, Loop and Scan bodies) get the same treatment, recursively, with the values they read
from enclosing scopes left in place: their Constant nodes become their own initializers, constants are folded
inside them, node names are unique across all graphs, every graph is sorted, and NaN weights are refused at any
depth. An ``If`` whose condition folds to a constant is replaced by the branch it takes (``fold_if``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import onnx
import onnx_graphsurgeon as gs
from onnx import helper, numpy_helper, version_converter

from ..errors import ModelLoadError
from qpass.ir.graph import from_gs, iter_graphs, main_opset, to_gs, topo_sort_nodes
from qpass.ir.light_model import light_copy
from qpass.passes.fold_if import inline_constant_ifs
from qpass.passes.loop_invariants import constant_carried_values
from qpass.pipeline.pass_base import Pass, PassResult

gs.logger.G_LOGGER.severity = gs.logger.G_LOGGER.ERROR
logging.getLogger("onnx_graphsurgeon").setLevel(logging.ERROR)

DEFAULT_TARGET_OPSET = 17
MIN_OPSET = 13  # per-channel QuantizeLinear


@dataclass
class NormalizeOptions:
    target_opset: int = DEFAULT_TARGET_OPSET
    fold_constants: bool = True


class Normalize(Pass):
    name = "normalize"
    Options = NormalizeOptions

    def run(self, model, ctx):
        notes: list[str] = []
        refuse_nan_weights(model)
        strip_initializer_inputs(model, notes)
        constants_to_initializers(model, notes)
        drop_unused_opsets(model, notes)
        model = upgrade_opset(model, self.opts.target_opset, notes)
        canonicalize_gemm(model, notes)
        subgraph_constants_to_initializers(model, notes)
        carried = constant_carried_values(model)
        if carried:
            notes.append(f"{carried} reads of unchanged loop-carried initializers now read the initializers")
        if self.opts.fold_constants:
            model = fold_constants(model, notes)
        unique_node_names(model, notes)
        topo_sort_nodes(model.graph)
        model = fix_declared_shapes(model, notes)
        return PassResult(model, True, notes)


def refuse_nan_weights(model: onnx.ModelProto) -> None:
    """NaN in a weight (of any graph, subgraphs included) poisons every scale computed from it; +-inf is kept
    (attention masks use it)."""
    for g in iter_graphs(model.graph):
        for init in g.initializer:
            if init.data_type in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE):
                arr = numpy_helper.to_array(init)
                if np.isnan(arr).any():
                    raise ModelLoadError(f"initializer {init.name!r} contains NaN values")


def strip_initializer_inputs(model: onnx.ModelProto, notes: list[str]) -> None:
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    if len(keep) != len(model.graph.input):
        notes.append(f"{len(model.graph.input) - len(keep)} initializers were also graph inputs; now constants")
        del model.graph.input[:]
        model.graph.input.extend(keep)


def constants_to_initializers(model: onnx.ModelProto, notes: list[str]) -> None:
    moved = _constants_to_initializers(model.graph)
    if moved:
        notes.append(f"{moved} Constant nodes became initializers")


def subgraph_constants_to_initializers(model: onnx.ModelProto, notes: list[str]) -> None:
    """Constant nodes of subgraphs become initializers of their own subgraph (after the opset conversion, which
    expects an exporter's form inside bodies)."""
    moved = sum(_constants_to_initializers(g) for g in list(iter_graphs(model.graph))[1:])
    if moved:
        notes.append(f"{moved} Constant nodes in subgraphs became initializers")


def _constants_to_initializers(g: onnx.GraphProto) -> int:
    keep, moved = [], 0
    for n in g.node:
        if n.op_type == "Constant" and n.domain in ("", "ai.onnx") and len(n.attribute) == 1:
            arr = _constant_value(n.attribute[0])
            if arr is not None:
                g.initializer.append(numpy_helper.from_array(arr, n.output[0]))
                moved += 1
                continue
        keep.append(n)
    if moved:
        del g.node[:]
        g.node.extend(keep)
    return moved


def _constant_value(attr: onnx.AttributeProto):
    if attr.name == "value":
        return numpy_helper.to_array(attr.t)
    if attr.name == "value_float":
        return np.array(attr.f, dtype=np.float32)
    if attr.name == "value_floats":
        return np.array(attr.floats, dtype=np.float32)
    if attr.name == "value_int":
        return np.array(attr.i, dtype=np.int64)
    if attr.name == "value_ints":
        return np.array(attr.ints, dtype=np.int64)
    return None  # sparse or string constants stay nodes


def _used_domains(graph: onnx.GraphProto, acc: set[str]) -> set[str]:
    for n in graph.node:
        acc.add(n.domain or "")
        for a in n.attribute:
            if a.type == onnx.AttributeProto.GRAPH:
                _used_domains(a.g, acc)
            for sub in a.graphs:
                _used_domains(sub, acc)
    return acc


def drop_unused_opsets(model: onnx.ModelProto, notes: list[str]) -> None:
    used = _used_domains(model.graph, set())
    for f in model.functions:
        used.add(f.domain)
        for n in f.node:
            used.add(n.domain or "")
    keep = [o for o in model.opset_import if (o.domain or "") in used or o.domain in ("", "ai.onnx")]
    if len(keep) != len(model.opset_import):
        dropped = sorted(o.domain for o in model.opset_import if o not in keep)
        notes.append(f"dropped unused opset imports: {', '.join(dropped)}")
        del model.opset_import[:]
        model.opset_import.extend(keep)


def upgrade_opset(model: onnx.ModelProto, target: int, notes: list[str]) -> onnx.ModelProto:
    current = main_opset(model)
    if current >= target:
        return model
    # the converter only resolves initializers that are also graph inputs (IR < 4 style): list them for it
    staged = onnx.ModelProto()
    staged.CopyFrom(model)
    listed = {i.name for i in staged.graph.input}
    staged.graph.input.extend(onnx.helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
                              for i in staged.graph.initializer if i.name not in listed)
    try:
        converted = version_converter.convert_version(staged, target)
    except Exception as exc:  # the converter raises bare RuntimeErrors from C++
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        if current >= MIN_OPSET:
            notes.append(f"kept opset {current}: conversion to {target} failed ({first})")
            return model
        raise ModelLoadError(f"cannot convert opset {current} to {target}: {first}") from None
    min_ir = helper.find_min_ir_version_for(list(converted.opset_import), ignore_unknown=True)
    converted.ir_version = max(converted.ir_version, min_ir)
    notes.append(f"opset {current} -> {target}")
    strip_initializer_inputs(converted, [])
    return converted


def canonicalize_gemm(model: onnx.ModelProto, notes: list[str]) -> None:
    """Fold Gemm's alpha and beta into constant B and C so that quantisers see a plain linear layer."""
    inits = {i.name: i for i in model.graph.initializer}
    users: dict[str, int] = {}
    for n in model.graph.node:
        for x in n.input:
            users[x] = users.get(x, 0) + 1
    for n in model.graph.node:
        if n.op_type != "Gemm":
            continue
        attrs = {a.name: a for a in n.attribute}
        alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
        beta = attrs["beta"].f if "beta" in attrs else 1.0
        for idx, factor, key in ((1, alpha, "alpha"), (2, beta, "beta")):
            if factor == 1.0 or len(n.input) <= idx or n.input[idx] not in inits or users[n.input[idx]] != 1:
                continue
            t = inits[n.input[idx]]
            arr = numpy_helper.to_array(t)
            t.CopyFrom(numpy_helper.from_array((arr * factor).astype(arr.dtype), t.name))
            attrs[key].f = 1.0
            notes.append(f"folded {key}={factor} of Gemm {n.name!r} into its constant")


def fold_constants(model: onnx.ModelProto, notes: list[str], max_rounds: int = 8) -> onnx.ModelProto:
    """Fold constants at every depth; an If whose condition became constant is replaced by its branch, and the
    result folded again (up to ``max_rounds`` times)."""
    before = len(model.graph.node)
    inlined = 0
    for _ in range(max_rounds):
        graph = to_gs(model)
        try:
            # graphsurgeon's own If flattening renames the outputs of nested multi-output Ifs but not their readers
            # (the graph is then no longer sorted): fold_if does it instead
            graph.fold_constants(error_ok=True, flatten_subgraphs=False)
        except Exception as exc:  # folding is an optimisation: never fail a model on it
            notes.append(f"constant folding skipped: {type(exc).__name__}")
            return model
        model = from_gs(graph, model)
        count = inline_constant_ifs(model)
        inlined += count
        if not count:
            break
    if inlined:
        notes.append(f"{inlined} If nodes with a constant condition replaced by their branch")
    if len(model.graph.node) != before:
        notes.append(f"constant folding removed {before - len(model.graph.node)} nodes")
    return model


def unique_node_names(model: onnx.ModelProto, notes: list[str]) -> None:
    """Every node of every graph (subgraphs included) gets a non-empty name unique across the whole model."""
    seen: set[str] = set()
    renamed = 0
    for g in iter_graphs(model.graph):
        for i, n in enumerate(g.node):
            base = n.name or f"{n.op_type}_{i}"
            name, k = base, 1
            while name in seen:
                name = f"{base}_{k}"
                k += 1
            if name != n.name:
                renamed += 1
                n.name = name
            seen.add(name)
    if renamed:
        notes.append(f"named or renamed {renamed} nodes")


def _dims(vi: onnx.ValueInfoProto):
    t = vi.type.tensor_type
    if not t.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]


def fix_declared_shapes(model: onnx.ModelProto, notes: list[str]) -> onnx.ModelProto:
    """Re-infer every intermediate shape (exporters leave stale value_info) and correct graph outputs whose
    declared shape contradicts what the graph computes (onnxruntime only warns; strict inference would fail)."""
    del model.graph.value_info[:]
    declared = {o.name: _dims(o) for o in model.graph.output}
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for o in probe.graph.output:
        if o.type.HasField("tensor_type"):
            o.type.tensor_type.ClearField("shape")
    inferred = infer_shapes(probe)
    found = {vi.name: vi for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for o in model.graph.output:
        want, vi = declared.get(o.name), found.get(o.name)
        if want is None or vi is None or not o.type.HasField("tensor_type"):
            continue
        got = _dims(vi)
        if got is None:
            continue
        conflict = len(got) != len(want) or any(a is not None and b is not None and a != b
                                                for a, b in zip(got, want))
        if conflict:
            o.type.tensor_type.shape.CopyFrom(vi.type.tensor_type.shape)
            notes.append(f"declared shape {want} of output {o.name!r} was wrong; now {got}")
    return infer_shapes(model)


def infer_shapes(model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with its shapes inferred (as it is where onnx cannot), inferred on a copy whose big weights are
    stubs of the same name, type and dims (``light_copy``: shape inference serializes the model, 0.3 s for 69 MB of
    weights), then given the weights back."""
    light, values = light_copy(model)
    try:
        inferred = onnx.shape_inference.infer_shapes(light, data_prop=True)
    except Exception:
        return model
    if values:
        weights = {t.name: t for t in model.graph.initializer if t.name in values}
        for t in inferred.graph.initializer:
            if t.name in weights:
                t.CopyFrom(weights[t.name])
    return inferred
