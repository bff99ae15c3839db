"""The dialect passes (names as in ``qpass.pipeline.registry``):

- ``qonnx_to_qcdq`` / ``qonnx_to_qdq``: QONNX quantisers -> QuantizeLinear / Clip / DequantizeLinear (``to_qcdq``),
  FloatQuant -> float8 (``float8``), Trunc -> shift + clip (``trunc``);
  ``qdq`` stores constant codes the way onnxruntime's quantizer does, ``qcdq`` keeps float weights in the chain.
- ``qoperator_to_qdq``: integer operators and dynamic quantisation -> QDQ (``qoperator``).
- ``qdq_to_qonnx``: Q/C/DQ chains and stored codes -> QONNX quantisers (``to_qonnx``).
- ``import_quantized``: an already-quantised model of any dialect into qpass's QONNX form, keeping its trained
  quantisation: qoperator_to_qdq, then qdq_to_qonnx (what cannot be converted, e.g. run-time scales, stays).
- ``dequantize``: drop every QONNX quantiser (its input passes through): the float model, for ``--requantize``.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
import numpy as np
import onnx
import onnx_graphsurgeon as gs

from qpass.errors import PipelineError, UnsupportedOpError
from qpass.ir.builder import GraphBuilder
from qpass.ir.datatypes import get_annotations, set_annotation
from qpass.ir.graph import elem_types, from_gs, main_opset, to_gs
from qpass.ops import BipolarQuant, FloatQuant, Quant, Trunc, op_of
from qpass.ops.common import QONNX_DOMAIN, quantized_op_types
from qpass.passes.lower_ort import OPSET_RAISE_BLOCKERS
from qpass.passes.normalize import infer_shapes
from qpass.pipeline.pass_base import Pass, PassResult
from .detect import detect_dialect
from .float8 import FLOAT8_OPSET, float8_dq_to_float_quant, float_quant_to_float8
from .qoperator import converter
from .shapes import fill_shapes
from .to_qcdq import convert_bipolar, convert_quant, convert_round_form
from .to_qonnx import convert_dq
from .trunc import integer_to_trunc, trunc_to_integer

WIDE_OPSET = 21
DYNAMIC_OPS = ("DynamicQuantizeLinear", "ConvInteger", "MatMulInteger")
IR_FOR_OPSET = {19: 9, 21: 10}
FLOAT8_ELEMS = (onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2)


def _finish(graph: gs.Graph, model: onnx.ModelProto, annotations: dict[str, str], qonnx: bool = False):
    out = from_gs(graph, model)
    if qonnx and not any(o.domain == QONNX_DOMAIN for o in out.opset_import):
        out.opset_import.append(onnx.helper.make_opsetid(QONNX_DOMAIN, 1))
    for name, dt in annotations.items():
        set_annotation(out, name, dt)
    return out


def raise_opset(model: onnx.ModelProto, opset: int) -> None:
    """Raise the ONNX opset to ``opset`` (16-bit codes need 21, float8 19) when no op in the model changed meaning
    on the way; a one-line refusal otherwise."""
    cur = main_opset(model)
    if opset <= cur:
        return
    blockers = sorted({n.op_type for n in model.graph.node if n.op_type in OPSET_RAISE_BLOCKERS})
    if blockers:
        raise PipelineError(f"the converted model needs opset {opset} (16-bit or float8 codes), but "
                            f"{', '.join(blockers)} changed meaning since opset {cur}")
    for o in model.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = opset
    model.ir_version = max(model.ir_version, IR_FOR_OPSET[opset])


def _detach(node: gs.Node) -> list:
    outs = list(node.outputs)
    node.outputs.clear()
    return outs


class QonnxToQcdq(Pass):
    name = "qonnx_to_qcdq"
    style = "qcdq"


    def run(self, model, ctx):
        graph = to_gs(model)
        b0 = GraphBuilder(graph)
        annotations, counts, float8 = {}, Counter(), False
        for node in list(graph.nodes):
            op = op_of(node)
            if op not in (Quant, BipolarQuant, FloatQuant, Trunc):
                continue
            b = b0.at(node.name)
            if op is Quant and convert_round_form(b, node):
                counts[node.op] += 1
                continue
            out = _detach(node)[0]
            if op is FloatQuant:
                float_quant_to_float8(b, node, out)
                float8 = True
            elif op is Trunc:
                annotations.update(trunc_to_integer(b, node, out))
            else:
                dt = (convert_quant if op is Quant else convert_bipolar)(b, node, out, self.style)
                if dt is not None:
                    annotations[graph.nodes[-1].inputs[0].name] = dt
            counts[node.op] += 1
        if not counts:
            return PassResult(model, False)
        result = _finish(graph, model, annotations)
        wide = any(t.dtype in (np.int16, np.uint16) for t in graph.tensors().values() if t.dtype is not None
                   and not isinstance(t.dtype, int))
        raise_opset(result, WIDE_OPSET if wide else FLOAT8_OPSET if float8 else 0)
        kept = [k for k in quantized_op_types(result) if k.startswith("qonnx::")]
        notes = [", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f" -> {self.style.upper()}"]
        return PassResult(result, True, notes + ([f"kept in QONNX: {', '.join(kept)}"] if kept else []))


class QonnxToQdq(QonnxToQcdq):
    name = "qonnx_to_qdq"
    style = "qdq"



@dataclass
class QOperatorOptions:
    #: also convert dynamic quantisation: DynamicQuantizeLinear (as standard ops + QuantizeLinear), ConvInteger and
    #: MatMulInteger (import keeps them: both runtimes run them, onnxruntime with its integer kernels)
    dynamic: bool = True


class QOperatorToQdq(Pass):
    """Integer operators -> QDQ; one that has no exact QDQ form (e.g. integer sums beyond 2^24) stays as it is, with
    the reason in the notes (the reference interpreter and onnxruntime both run it)."""

    name = "qoperator_to_qdq"
    Options = QOperatorOptions

    def run(self, model, ctx):
        graph = to_gs(model)
        b0 = GraphBuilder(graph)
        counts, kept = Counter(), []
        for node in list(graph.nodes):
            conv = converter(node)
            if conv is None or (node.op in DYNAMIC_OPS and not self.opts.dynamic):
                continue
            outs = _detach(node)
            try:
                conv(b0.at(node.name), node, outs)
            except UnsupportedOpError as exc:
                node.outputs.extend(outs)
                kept.append(str(exc))
                continue
            counts[node.op] += 1
        notes = [f"kept: {k}" for k in kept]
        if not counts:
            return PassResult(model, False, notes)
        return PassResult(_finish(graph, model, {}), True,
                          [", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + " -> QDQ"] + notes)


class QdqToQonnx(Pass):
    name = "qdq_to_qonnx"

    def run(self, model, ctx):
        if not len(model.graph.value_info):  # a saved file carries no intermediate shapes (backends.ort.artifact)
            model = infer_shapes(model)  # and the per-axis parameters are placed by the tensors' ranks
        graph = to_gs(model)
        b0 = GraphBuilder(graph)
        annotations, elems = get_annotations(model), elem_types(model)
        done, left = 0, Counter()
        for dq in [n for n in graph.nodes if n.op == "DequantizeLinear" and n.domain in ("", "ai.onnx", None)]:
            b = b0.at(dq.name)
            zp = dq.inputs[2].name if len(dq.inputs) > 2 else ""
            if not isinstance(dq.inputs[0], gs.Constant) and integer_to_trunc(b, dq, annotations):
                done += 1
                continue
            if elems.get(zp) in FLOAT8_ELEMS:
                ok = float8_dq_to_float_quant(b, dq, elems[zp])
                done, why = done + ok, None if ok else "float8 codes not from a saturating QuantizeLinear"
            else:
                why = convert_dq(b, dq, annotations)
                done += why is None
            if why:
                left[why] += 1
        if not done:
            return PassResult(model, False, [f"{v} x DequantizeLinear kept: {k}" for k, v in left.items()])
        notes = [f"{done} DequantizeLinear -> QONNX"] + [f"{v} x DequantizeLinear kept: {k}" for k, v in left.items()]
        return PassResult(_finish(graph, model, {}, qonnx=True), True, notes)


class ImportQuantized(Pass):
    name = "import_quantized"

    def run(self, model, ctx):
        info = detect_dialect(model)
        if not info.quantized:
            return PassResult(model, False, ["a float model: nothing to import"])
        notes = [f"dialect {', '.join(info.dialects)}"]
        model = fill_shapes(model)
        changed = False
        for p in (QOperatorToQdq(dynamic=False), QdqToQonnx()):
            r = p.run(model, ctx)
            model, changed = r.model, changed or r.changed
            notes += r.notes
        model = fill_shapes(model)
        ctx.report.results["import_quantized"] = {"dialects": info.dialects, "formats": dict(info.formats)}
        return PassResult(model, changed, notes)


class Dequantize(Pass):
    name = "dequantize"

    def run(self, model, ctx):
        graph = to_gs(model)
        b0 = GraphBuilder(graph)
        n = 0
        for node in list(graph.nodes):
            op = op_of(node)
            if op is None or not (op.quantizer or op is FloatQuant):
                continue
            x, y = node.inputs[0], node.outputs[0]
            node.outputs.clear()
            b0.node("Identity", [x], [y], name=f"{node.name}_float")
            n += 1
        out = from_gs(graph, model) if n else model
        left = quantized_op_types(out)
        if left:
            raise PipelineError(f"cannot recover a float model to requantize: {', '.join(left[:4])} remain "
                                "(dynamic or integer-only graphs have no float form here)")
        return PassResult(out, bool(n), [f"{n} quantisers removed"])
