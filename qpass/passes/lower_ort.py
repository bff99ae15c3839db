"""Lowering of quantisation ops to standard ONNX, so that any qpass model runs in plain onnxruntime.

Every node in the QONNX or qpass domain is rewritten by its op class's ``lower`` (``qpass.ops``): Quant becomes
QuantizeLinear -> (Clip) -> DequantizeLinear where onnxruntime's integer kernels compute the same values, and
everything else is emulated exactly in float32 with standard ops, in the op's own operation order, so the
reference interpreter and onnxruntime compute the same bits. An op without a lowering is refused.

The artifact realises the widths: when a lowering stores weights packed (INT4, ``packed_storage``) the model moves
to opset 21 (when no op in it changed meaning since its opset), and weights whose codes fit 2 bits are stored as
INT2 at opset 25 where the installed onnxruntime runs every op of the model there (``int2_storage``); a
weight-only MatMul (float input) of a <= 4-bit weight becomes MatMulNBits (``matmul_nbits``: onnxruntime would
otherwise rewrite it into an int8-compute MatMulNBits that does not compute the model); an order-only op
(MaxPool, Flatten, ...) reading dequantised activations gets the same QuantizeLinear -> DequantizeLinear after it
(exact: its outputs are its inputs' values), so that onnxruntime runs it, and the layer it feeds, on integers.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from ..errors import UnsupportedOpError
from qpass.ir.builder import GraphBuilder
from qpass.ir.graph import all_nodes, from_gs, main_opset, to_gs
from qpass.ops import get_op
from qpass.ops.common import ONNX_DOMAIN, ORDER_ONLY_OPS, QONNX_DOMAINS, QPASS_DOMAIN
from qpass.ops.qdq import DequantizeLinear, QuantizeLinear
from qpass.ops.quant import PACKED_OPSET
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.pass_base import Pass, PassResult
from .int2_storage import INT2_OPSET, store_int2
from .matmul_nbits import lower_matmul_nbits

CUSTOM_DOMAINS = QONNX_DOMAINS + (QPASS_DOMAIN,)
#: ops whose definition changed incompatibly between opset 18 and PACKED_OPSET (axes became an input; group norm's
#: scale / bias became per channel): a model holding one keeps its opset and its weights in 8 bits
OPSET_RAISE_BLOCKERS = ("ReduceMax", "ReduceMin", "ReduceMean", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                        "ReduceLogSumExp", "ReduceSumSquare", "GroupNormalization")
#: the IR version that carries INT4 / UINT4 tensors
PACKED_IR_VERSION = 10


@dataclass
class LowerOptions:
    keep_native_qdq: bool = True


class LowerOrt(Pass):
    name = "lower_ort"
    preserves = (Calibration,)  # as before the analysis manager: lowering kept the calibrated ranges
    Options = LowerOptions

    def run(self, model, ctx):
        graph = to_gs(model)
        opset = main_opset(model)
        custom = [(n, get_op(n.domain, n.op)) for n in graph.nodes if n.domain in CUSTOM_DOMAINS]
        missing = sorted({f"{n.domain}::{n.op}" for n, op in custom if op is None or op.lower is None})
        if missing:
            raise UnsupportedOpError(f"no ONNX lowering for {', '.join(missing)}")
        for node, op in custom:
            reason = op.check(node)
            if reason:
                raise UnsupportedOpError(f"{node.domain}::{node.op} node {node.name!r}: {reason}")
        if not custom:
            return PassResult(model, False)
        raised = opset < PACKED_OPSET and _packs(custom) and _can_raise_opset(model)
        if raised:
            opset = PACKED_OPSET
        b = GraphBuilder(graph)
        for node, op in custom:
            op.lower(b.at(node.name or node.op), node, opset)
            node.outputs.clear()
            node.inputs.clear()
        shared = share_activation_quantisation(graph, b)
        out = from_gs(graph, model)
        keep = [o for o in out.opset_import if o.domain not in CUSTOM_DOMAINS]
        del out.opset_import[:]
        out.opset_import.extend(keep)
        notes = [f"lowered {len(custom)} quantisation ops to standard ONNX"]
        if raised:
            for o in out.opset_import:
                if o.domain in (ONNX_DOMAIN, "ai.onnx"):
                    o.version = PACKED_OPSET
            out.ir_version = max(out.ir_version, PACKED_IR_VERSION)
            notes.append(f"opset {PACKED_OPSET} for weights stored in 4 bits")
        if shared:
            notes.append(f"{shared} order-only ops requantised with their input's parameters")
        out, nbits = lower_matmul_nbits(out)
        if nbits:
            notes.append(f"{nbits} weight-only MatMuls of <= 4-bit weights as MatMulNBits (exact float32 level)")
        out, int2 = store_int2(out)
        if int2:
            notes.append(f"{int2} weights of <= 2 bits stored as INT2 (opset {INT2_OPSET})")
        return PassResult(out, True, notes)


def _packs(custom) -> bool:
    return any(getattr(op, "packed_storage", None) is not None and op.packed_storage(node) for node, op in custom)


def _can_raise_opset(model) -> bool:
    """No op in the model (subgraphs included) whose meaning changed between its opset and PACKED_OPSET."""
    return not any(n.op_type in OPSET_RAISE_BLOCKERS for n in all_nodes(model.graph))


def _per_tensor_dq(t) -> gs.Node | None:
    """The DequantizeLinear producing ``t`` from non-constant codes with one scale and zero point, else None."""
    if len(t.inputs) != 1:
        return None
    dq = t.inputs[0]
    if get_op(dq.domain, dq.op) is not DequantizeLinear or isinstance(dq.inputs[0], gs.Constant) \
            or len(dq.inputs) < 3 or not all(isinstance(p, gs.Constant) and np.size(p.values) == 1
                                             for p in dq.inputs[1:3]):
        return None
    return dq if np.all(np.asarray(dq.inputs[1].values) > 0) else None


def share_activation_quantisation(graph: gs.Graph, b: GraphBuilder) -> int:
    """QuantizeLinear -> DequantizeLinear with the input's parameters after every order-only op that reads a
    per-tensor dequantised activation and is not already requantised; returns how many were added."""
    added = 0
    todo = [n for n in graph.nodes if n.op in ORDER_ONLY_OPS and (n.domain or ONNX_DOMAIN) == ONNX_DOMAIN]
    while todo:
        n = todo.pop(0)
        if not n.inputs or len(n.outputs) != 1:
            continue
        dq = _per_tensor_dq(n.inputs[0])
        y = n.outputs[0]
        if dq is None or any(get_op(c.domain, c.op) is QuantizeLinear for c in y.outputs):
            continue
        s_c, z_c = dq.inputs[1], dq.inputs[2]
        mid = b.var(f"{y.name}_float", like=y)
        n.outputs.clear()
        n.outputs.append(mid)
        q = b.at(y.name).op("QuantizeLinear", [mid, s_c, z_c], dtype=np.asarray(z_c.values).dtype)
        b.at(y.name).op("DequantizeLinear", [q, s_c, z_c], out=y)
        added += 1
        todo.extend(c for c in y.outputs if c.op in ORDER_ONLY_OPS and (c.domain or ONNX_DOMAIN) == ONNX_DOMAIN)
    return added
