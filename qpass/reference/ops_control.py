"""Reference kernels of If, Loop and Scan (rules in ``control``): each subgraph runs in a nested executor that
the parent builds at construction (``GoldenExecutor.bodies``), so an unsupported op inside a body is refused
before any computation. A body reads outer-scope values from ``scope``: the values of the names it captures,
handed over by the parent's step."""
from __future__ import annotations

import numpy as np
import onnx

from . import ops_sequence  # noqa: F401  (sequence and optional values flow through bodies)
from .control import ScanSpec, run_if, run_loop, run_scan, run_scan_batched
from .registry import register


def _value_kind(vi: onnx.ValueInfoProto) -> str | None:
    kind = vi.type.WhichOneof("value")
    return None if kind in (None, "tensor_type") else kind.replace("_type", "")


def _typed_values_problem(graph: onnx.GraphProto) -> str | None:
    for vi in list(graph.input) + list(graph.output):
        kind = _value_kind(vi)
        if kind not in (None, "sequence", "optional"):
            return f"{kind} value {vi.name!r} in a subgraph: only tensors, sequences and optionals have kernels"
    return None


def _bodies_problem(ex, node) -> str | None:
    bodies = ex.bodies.get(node.name)
    if not bodies:
        return "its subgraphs were not built"
    for b in bodies.values():
        why = _typed_values_problem(b.graph)
        if why:
            return why
    return None


def _check_if(ex, node) -> str | None:
    why = _bodies_problem(ex, node)
    if why:
        return why
    for attr in ("then_branch", "else_branch"):
        b = ex.bodies[node.name].get(attr)
        if b is None:
            return f"no {attr}"
        if b.inputs or len(b.outputs) != len(node.outputs):
            return f"{attr} takes {len(b.inputs)} inputs and gives {len(b.outputs)} outputs for {len(node.outputs)}"
    return None


def _check_loop(ex, node) -> str | None:
    why = _bodies_problem(ex, node)
    if why:
        return why
    b = ex.bodies[node.name].get("body")
    n_carried = len(node.inputs) - 2
    if b is None or n_carried < 0:
        return "Loop needs a body and the inputs M and cond (either may be empty)"
    if len(b.inputs) != 2 + n_carried or len(b.outputs) != 1 + len(node.outputs) or len(node.outputs) < n_carried:
        return (f"the body takes {len(b.inputs)} inputs and gives {len(b.outputs)} outputs for {n_carried} "
                f"carried values and {len(node.outputs)} outputs")
    return None


def _scan_spec(node) -> ScanSpec:
    n_state = len(node.inputs) - (1 if node.opset < 9 else 0) - int(node.attr("num_scan_inputs", 0))
    return ScanSpec.from_attrs(node.attr, node.opset, len(node.outputs) - n_state)


def _check_scan(ex, node) -> str | None:
    why = _bodies_problem(ex, node)
    if why:
        return why
    b = ex.bodies[node.name].get("body")
    if b is None:
        return "Scan needs a body"
    return _scan_spec(node).problem(len(node.inputs), len(b.inputs), len(node.outputs), len(b.outputs))


@register("If", check=_check_if, with_executor=True)
def if_(ex, node, cond, scope=None):
    bodies = ex.bodies[node.name]
    return tuple(run_if(cond, bodies["then_branch"].runner(scope), bodies["else_branch"].runner(scope)))


@register("Loop", check=_check_loop, with_executor=True)
def loop(ex, node, m=None, cond=None, *carried, scope=None):
    body = ex.bodies[node.name]["body"]
    n_carried = len(node.inputs) - 2
    carried = list(carried) + [None] * (n_carried - len(carried))  # trailing absent inputs are not passed
    n_scan = len(node.outputs) - n_carried
    return tuple(run_loop(body.runner(scope), m, cond, carried, n_scan,
                          lambda k: body.empty_output(1 + n_carried + k)))


@register("Scan", check=_check_scan, with_executor=True)
def scan(ex, node, *inputs, scope=None):
    body = ex.bodies[node.name]["body"]
    spec = _scan_spec(node)
    inputs = list(inputs) + [None] * (len(node.inputs) - len(inputs))
    if spec.batched:
        seq_lens, rest = inputs[0], inputs[1:]
        n_state = len(rest) - spec.num_scan_inputs
        return tuple(run_scan_batched(body.runner(scope), seq_lens, rest[:n_state], rest[n_state:], spec))
    n_state = len(inputs) - spec.num_scan_inputs
    return tuple(run_scan(body.runner(scope), inputs[:n_state], inputs[n_state:], spec))


def empty_like_declared(vi: onnx.ValueInfoProto) -> np.ndarray:
    """A zero-iteration scan output: shape (0, *declared shape) when the body declares a static one, else (0,)."""
    t = vi.type.tensor_type
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type) if t.elem_type else np.float32
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim] if t.HasField("shape") else None
    shape = (0,) + tuple(dims) if dims is not None and None not in dims else (0,)
    return np.zeros(shape, dtype)
