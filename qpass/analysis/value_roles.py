"""Which float values are not activations: values every reader takes as a shape, a scale or an index.

The rule comes from the ONNX op schemas, not from a list of op types: an input is an *index input* when the schema
marks it non-differentiable and its type (constraint) appears in no output while another input's does, i.e. the
op has a data path that does not go through it (Resize's ``roi`` and ``scales``, OneHot's ``depth``, GridSample's
``grid``, STFT's frame sizes). Predicates such as Less, whose inputs all stay out of the outputs, read data; so
do inputs typed apart only for precision (BatchNormalization's scale, Pow's exponent: differentiable). Ops
without a schema (custom domains) read data everywhere.
"""
from __future__ import annotations

import onnx
from onnx import defs

from qpass.ir.graph import iter_graphs, outer_inputs, subgraphs


def _opsets(model: onnx.ModelProto) -> dict[str, int]:
    return {("" if o.domain in ("", "ai.onnx") else o.domain): o.version for o in model.opset_import}


def _index_formals(schema) -> tuple[list[bool], bool]:
    """Per formal input: is it an index input; and whether the last formal input is variadic."""
    outs = {o.type_str for o in schema.outputs}
    ins = [i.type_str for i in schema.inputs]
    if not any(t in outs for t in ins):
        return [False] * len(ins), False
    variadic = bool(ins) and schema.inputs[-1].option == defs.OpSchema.FormalParameterOption.Variadic
    nondiff = defs.OpSchema.DifferentiationCategory.NonDifferentiable
    return [t not in outs and p.differentiation_category == nondiff for t, p in zip(ins, schema.inputs)], variadic


def index_inputs(node: onnx.NodeProto, opsets: dict[str, int], cache: dict) -> set[int]:
    """Positions of ``node``'s inputs that are shapes, scales or indices by its op schema."""
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    key = (domain, node.op_type)
    if key not in cache:
        try:
            cache[key] = _index_formals(defs.get_schema(node.op_type, opsets.get(domain, 1), domain))
        except defs.SchemaError:
            cache[key] = ([], False)
    formals, variadic = cache[key]
    last = len(formals) - 1
    return {i for i in range(len(node.input))
            if (i <= last and formals[i]) or (i > last >= 0 and variadic and formals[last])}


def index_only_values(model: onnx.ModelProto) -> set[str]:
    """Names (at any depth) that every reader takes as an index input and that no graph outputs."""
    opsets = _opsets(model)
    cache: dict = {}
    data_reads: set[str] = set()
    index_reads: set[str] = set()
    for g in iter_graphs(model.graph):
        data_reads.update(o.name for o in g.output)
        for n in g.node:
            idx = index_inputs(n, opsets, cache)
            for i, x in enumerate(n.input):
                if x:
                    (index_reads if i in idx else data_reads).add(x)
            for _, sub in subgraphs(n):
                data_reads.update(outer_inputs(sub))  # a capture is read as data somewhere inside
    return index_reads - data_reads
