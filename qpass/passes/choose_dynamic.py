"""The choose_dynamic pass: per MatMul / Gemm of a QDQ model, static (calibrated) or dynamic (run-time) input range,
whichever measures closer to the float model.

After ``quantize_qdq``, every MatMul / Gemm that reads an activation quantizer (QuantizeLinear -> DequantizeLinear)
and a constant 8-bit weight is a candidate for onnxruntime's dynamic form: ``DynamicQuantizeLinear`` on the float
value the quantizer read (its Relu / Clip put back where quantize_qdq had fused it: ``qdq_moves.float_sources``),
``MatMulInteger`` with the same int8 weight codes, ``Cast -> Mul(x_scale * w_scale) [-> Add(bias)]`` (what
``quantize_dynamic`` writes; onnxruntime fuses it to ``DynamicQuantizeMatMul``). A per-call range wins where the
activation's range moves from sample to sample (token embeddings, attention outputs, spectrogram frames) and the
calibrated range wastes steps on every sample but the widest.

The choice is measured, one sample per call as a deployed model runs: each candidate alone on the first half of the
calibration samples (at most ``samples``), output SQNR against the float model; candidates gaining at least
``min_gain_db`` are added greedily (largest gain first, each kept only if the output still improves), and the set
is kept only if it also beats the static model on the held-out half (by half ``min_gain_db``) and (``max_slowdown``)
onnxruntime does not measure it slower than that factor. Convolution nets (no candidate) pass through without a run.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper, numpy_helper

from qpass.analysis.layer_errors import call_ms, joined_outputs, tensor_values
from qpass.analysis.metrics import sqnr_db
from qpass.ir.graph import consumers, drop_unread, producers, shapes, topo_sort_nodes
from qpass.ir.ort_session import OrtError, make_session
from qpass.pipeline.analyses import float_outputs, graph_outputs
from qpass.pipeline.pass_base import Pass, PassResult
from .ptq_layers import split_samples
from .qdq_moves import float_sources
from .weight_only import float_copy


@dataclass
class ChooseDynamicOptions:
    op_types: list = field(default_factory=lambda: ["MatMul", "Gemm"])
    #: a candidate is tried further only if alone it gains this much output SQNR (dB) on the first half
    min_gain_db: float = 0.5
    #: calibration samples used (half to choose on, half held out)
    samples: int = 64
    max_candidates: int = 48
    #: a candidate is measured only if its input's own per-sample range would cut the quantization noise power of
    #: that input by this much (dB) against the calibrated range (one run of the static model decides)
    predicted_db: float = 1.0
    #: the chosen model may be measured at most this much slower than the static one (None: no timing, the
    #: default: a timing gate makes the output depend on the machine's load, and a rerun must give the same file)
    max_slowdown: float | None = None
    #: the deterministic speed rule instead: run-time ranges only for weights of at least this many elements
    #: (DynamicQuantizeLinear adds a pass over the input and a node call: on small layers it costs more than the
    #: product, e.g. 36% slower on the digits MLP's 64x64 Gemm)
    min_weight_elements: int = 65536
    #: and only where the input has at least this many rows per call (all dimensions but the last; an unknown one
    #: counts as many): one row is a matrix-vector product of a few microseconds, and the dynamic form's fixed
    #: costs (a DynamicQuantizeLinear node, a float output requantized by its own QuantizeLinear for the next
    #: layer) are not spread over rows: oww-alexa's 1 x 1536 Gemm ran 0.94 of float dynamic, 0.82 static (static
    #: 37.9 dB, quantize_static 10.3 dB; 1 thread, avx2 avx512f avx512_vnni)
    min_rows: int = 2
    #: a static MatMul whose output no QuantizeLinear reads becomes MatMulInteger on its calibrated codes (any
    #: size; ``float_out_matmuls``): onnxruntime runs it in float otherwise
    static_float_outputs: bool = True


def candidates(model: onnx.ModelProto, op_types, min_weight_elements: int = 0,
               min_rows: int = 1) -> list[onnx.NodeProto]:
    """MatMul / Gemm nodes reading an activation quantizer and a constant 2-D 8-bit weight (per-tensor or per
    output column scales) of at least ``min_weight_elements`` elements, on an input of at least ``min_rows`` rows
    (or of unknown rows)."""
    sizes = {i.name: int(np.prod(i.dims, dtype=np.int64)) for i in model.graph.initializer}
    rows = input_rows(model) if min_rows > 1 else {}
    inits = set(sizes)
    prod = producers(model.graph)
    out = []
    for n in model.graph.node:
        if n.op_type not in op_types or len(n.input) < 2:
            continue
        if n.op_type == "Gemm" and any(a.name == "transA" and a.i for a in n.attribute):
            continue
        if n.op_type == "Gemm" and any(a.name in ("alpha", "beta") and a.f not in (0.0, 1.0) for a in n.attribute):
            continue
        a, w = prod.get(n.input[0]), prod.get(n.input[1])
        q = prod.get(a.input[0]) if a is not None and a.op_type == "DequantizeLinear" else None
        if q is None or q.op_type != "QuantizeLinear" or q.input[0] in inits or len(q.input) < 3 \
                or q.input[1] not in inits or q.input[2] not in inits:
            continue
        if w is None or w.op_type != "DequantizeLinear" or w.input[0] not in inits or len(w.input) < 2:
            continue
        if sizes[w.input[0]] < min_weight_elements or rows.get(q.input[0], min_rows) < min_rows:
            continue
        out.append(n)
    return out


def input_rows(model: onnx.ModelProto) -> dict[str, int]:
    """{tensor: rows} for every tensor of the main graph whose shape is known in full: the product of all its
    dimensions but the last (the rows a matrix product reads per call)."""
    if not len(model.graph.value_info):
        model = onnx.shape_inference.infer_shapes(model)
    return {name: int(np.prod(dims[:-1], dtype=np.int64)) for name, dims in shapes(model).items()
            if len(dims) >= 2 and all(isinstance(d, int) for d in dims)}


def _weight(model, node) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(codes [K, N], zero points [N], scales [N]) of a candidate's weight, or None if not that shape."""
    inits = {i.name: i for i in model.graph.initializer}
    w = producers(model.graph)[node.input[1]]
    codes = numpy_helper.to_array(inits[w.input[0]])
    scale = numpy_helper.to_array(inits[w.input[1]]).astype(np.float32)
    zp = numpy_helper.to_array(inits[w.input[2]]) if len(w.input) > 2 and w.input[2] else np.zeros((), codes.dtype)
    if codes.ndim != 2 or codes.dtype not in (np.int8, np.uint8):
        return None
    axis = next((a.i for a in w.attribute if a.name == "axis"), 1) % 2
    trans = node.op_type == "Gemm" and any(a.name == "transB" and a.i for a in node.attribute)
    if scale.size > 1 and axis != (0 if trans else 1):
        return None  # scales along the reduction axis: no per-column form
    codes = codes.T if trans else codes
    n = codes.shape[1]
    return (np.ascontiguousarray(codes), np.broadcast_to(zp, (n,)).astype(codes.dtype),
            np.broadcast_to(scale, (n,)).astype(np.float32))


def to_dynamic(model: onnx.ModelProto, names: set[str], float_model: onnx.ModelProto | None,
               static: set[str] = frozenset()) -> onnx.ModelProto:
    """A copy of the QDQ ``model`` with the candidate nodes ``names`` in dynamic form (module docstring), and the
    nodes ``static`` in the same integer form on their calibrated input codes (``MatMulInteger`` on the
    QuantizeLinear's codes and zero point, the product scaled by the calibrated scale times the weight's)."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    chosen = [n for n in candidates(m, ("MatMul", "Gemm")) if n.name in names or n.name in static]
    srcs = float_sources(m, {n.input[0] for n in chosen if n.name in names}, float_model)
    prod = producers(m.graph)
    done = set()
    for node in chosen:
        w = _weight(m, node)
        if w is None or (node.name in names and node.input[0] not in srcs):
            continue
        tag = node.name or node.output[0]
        new = []
        if node.name in names:
            src = srcs[node.input[0]]
            xq, xs, xz = src + "_dyn_codes", src + "_dyn_scale", src + "_dyn_zero_point"
            if src not in done:
                new.append(helper.make_node("DynamicQuantizeLinear", [src], [xq, xs, xz], name=src + "_DynQuant"))
                done.add(src)
        else:
            xq, xs, xz = prod[node.input[0]].input[:3]
        m.graph.initializer.extend([numpy_helper.from_array(w[0], tag + "_dyn_w"),
                                    numpy_helper.from_array(w[1], tag + "_dyn_w_zero_point"),
                                    numpy_helper.from_array(w[2], tag + "_dyn_w_scale")])
        y, bias = node.output[0], node.input[2] if node.op_type == "Gemm" and len(node.input) > 2 else ""
        new += [helper.make_node("MatMulInteger", [xq, tag + "_dyn_w", xz, tag + "_dyn_w_zero_point"],
                                 [tag + "_dyn_acc"], name=tag + "_MatMulInteger"),
                helper.make_node("Cast", [tag + "_dyn_acc"], [tag + "_dyn_accf"], to=onnx.TensorProto.FLOAT,
                                 name=tag + "_dyn_cast"),
                helper.make_node("Mul", [xs, tag + "_dyn_w_scale"], [tag + "_dyn_s"], name=tag + "_dyn_scale"),
                helper.make_node("Mul", [tag + "_dyn_accf", tag + "_dyn_s"], [tag + "_dyn_y" if bias else y],
                                 name=tag + "_dyn_mul")]
        if bias:
            new.append(helper.make_node("Add", [tag + "_dyn_y", _float_bias(m, bias)], [y], name=tag + "_dyn_bias"))
        m.graph.node.remove(node)
        m.graph.node.extend(new)
    drop_unread(m)  # the quantizers whose readers went dynamic, and the static weights' codes and scales
    topo_sort_nodes(m.graph)
    return m


def float_out_matmuls(model: onnx.ModelProto) -> set[str]:
    """Static MatMul candidates (any size, any rows) whose output no QuantizeLinear reads: onnxruntime fuses a
    QDQ MatMul into an integer kernel only with an output quantizer, and runs these as DequantizeLinear of input
    and weight before a float MatMul (oww-melspectrogram's filter bank, whose output a Log reads)."""
    readers = consumers(model.graph)
    prod = producers(model.graph)
    inits = {i.name: i for i in model.graph.initializer}
    out = set()
    for n in candidates(model, ("MatMul",)):
        dq = prod[n.input[0]]
        scalar = all(t in inits and int(np.prod(inits[t].dims)) == 1 for t in dq.input[1:3])
        if scalar and all(r.op_type != "QuantizeLinear" for r in readers.get(n.output[0], [])) and _weight(model, n) is not None:
            out.add(n.name)
    return out


def _float_bias(m: onnx.ModelProto, bias: str) -> str:
    """A bias stored as DequantizeLinear of int32 codes, as a float initializer of the same float32 values
    (onnxruntime fuses a constant bias Add into DynamicQuantizeMatMul; a DequantizeLinear would run every call)."""
    inits = {i.name: i for i in m.graph.initializer}
    dq = producers(m.graph).get(bias)
    if dq is None or dq.op_type != "DequantizeLinear" or not all(t in inits for t in dq.input if t):
        return bias
    if len(inits[dq.input[0]].dims) > 1 or len(inits[dq.input[1]].dims) > 1:
        return bias
    return float_copy(m, dq, inits)


class ChooseDynamic(Pass):
    name = "choose_dynamic"
    inputs = ("calibration_data",)
    Options = ChooseDynamicOptions

    def run(self, model, ctx):
        self._built = {}  # {frozenset of names: to_dynamic(model, names, float model)} built while choosing
        chosen, notes = self._dynamic(model, ctx)
        static = float_out_matmuls(model) - set(chosen) if self.opts.static_float_outputs else set()
        if static:
            notes.append(f"{len(static)} static MatMul with a float output as MatMulInteger on its calibrated codes "
                         "(onnxruntime would run DequantizeLinear + a float MatMul)")
        if not chosen and not static:
            return PassResult(model, False, notes)
        built = None if static else self._built.get(frozenset(chosen))  # the same call's result: no second build
        self._built = {}
        return PassResult(built or to_dynamic(model, set(chosen), ctx.report.snapshots.get("quantize_qdq"), static),
                          True, notes)

    def _dynamic(self, model, ctx) -> tuple[list[str], list[str]]:
        """(the candidates chosen for run-time ranges, notes)."""
        cands = [n.name for n in candidates(model, self.opts.op_types, self.opts.min_weight_elements,
                                            self.opts.min_rows)]
        cands = cands[:self.opts.max_candidates]
        float_m = ctx.report.snapshots.get("quantize_qdq")
        data = ctx.inputs.calibration_data
        if not cands or float_m is None or data is None or len(data) < 4:
            why = (f"no MatMul/Gemm on a quantized activation of >= {self.opts.min_rows} rows and an 8-bit weight "
                   f"of >= {self.opts.min_weight_elements} elements" if not cands else
                   "no float model or samples to measure on")
            ctx.report.results[self.name] = {"candidates": cands, "dynamic": [], "skipped": why}
            return [], [why]
        fit, held = split_samples(data, self.opts.samples, 0.5)
        try:
            chosen, result = self._choose(model, float_m, cands, fit, held,
                                          lambda s: float_outputs(ctx.analyses, float_m, s),
                                          lambda s: graph_outputs(ctx.analyses, model, s))
        except (OrtError, ValueError, ArithmeticError, IndexError) as exc:  # an optional improvement: never fatal
            why = f"{type(exc).__name__}: {str(exc)[:120]}"
            ctx.report.results[self.name] = {"candidates": cands, "dynamic": [], "skipped": why}
            return [], [f"skipped: {why}"]
        ctx.report.results[self.name] = result
        if not chosen:
            return [], [f"static ranges kept on all {len(cands)} MatMul/Gemm ({result['why']})"]
        return chosen, [f"{len(chosen)} of {len(cands)} MatMul/Gemm on run-time ranges (DynamicQuantizeLinear + "
                        f"MatMulInteger): output SQNR {result['static_db']:.2f} -> {result['dynamic_db']:.2f} dB on "
                        f"{len(held)} held-out samples"]

    def _choose(self, model, float_m, cands, fit, held, reference=None, static=None) -> tuple[list[str], dict]:
        """``reference(samples)``: the float model's joined outputs, ``static(samples)``: ``model``'s (both shared
        with later passes; else computed)."""
        reference = reference or (lambda s: joined_outputs(float_m, s))
        refs = {}  # the float outputs, on ``held`` only once a choice is to be checked there
        sessions = {}  # one onnxruntime session per model scored (on ``fit`` and then on ``held``)
        built = getattr(self, "_built", {})

        def score(m, s=fit):
            if id(s) not in refs:
                refs[id(s)] = reference(s)
            if m is model and static is not None:
                return sqnr_db(refs[id(s)], static(s))
            if id(m) not in sessions:
                sessions[id(m)] = (m, make_session(m))  # the model is kept: its id stays its own
            return sqnr_db(refs[id(s)], joined_outputs(m, s, sessions[id(m)][1]))

        def dynamic(names):
            key = frozenset(names)
            if key not in built:
                built[key] = to_dynamic(model, set(names), float_m)
            return built[key]

        predicted = predicted_gains(model, cands, fit)
        cands = [c for c in cands if predicted[c] >= self.opts.predicted_db]
        base = score(model) if cands else None
        gains = {c: score(dynamic([c])) - base for c in cands}
        order = sorted((c for c in cands if gains[c] >= self.opts.min_gain_db), key=lambda c: -gains[c])
        chosen, best = [], base
        for c in order:
            s = score(dynamic(chosen + [c])) if chosen else base + gains[c]
            if s > best:
                chosen.append(c)
                best = s
        result = {"candidates": list(predicted), "predicted_db": {c: round(v, 2) for c, v in predicted.items()},
                  "gain_db": {c: round(float(g), 3) for c, g in gains.items()},
                  "dynamic": chosen, "static_db": None, "dynamic_db": None}
        if not chosen:
            result["why"] = (f"no layer gains {self.opts.min_gain_db:g} dB alone" if cands else
                             f"no input's per-sample range is {self.opts.predicted_db:g} dB narrower than its calibrated one")
            return [], result
        out = dynamic(chosen)
        h_static, h_dyn = score(model, held), score(out, held)
        result.update(static_db=float(h_static), dynamic_db=float(h_dyn))
        if not h_dyn >= h_static + self.opts.min_gain_db / 2:
            result.update(dynamic=[], why=f"held out: dynamic {h_dyn:.2f} dB against static {h_static:.2f} dB")
            return [], result
        if self.opts.max_slowdown is not None:
            # interleaved rounds, fastest of each: a slowdown must show in every round to count
            rounds = [(call_ms(model, held, 20, np.min), call_ms(out, held, 20, np.min)) for _ in range(3)]
            t_static, t_dyn = min(r[0] for r in rounds), min(r[1] for r in rounds)
            # the times stay out of the report: it must be the same file on every run of the same inputs
            if t_dyn > self.opts.max_slowdown * t_static:
                result.update(dynamic=[], why=f"dynamic measured more than {self.opts.max_slowdown:g}x static's "
                                              "onnxruntime time in every round")
                return [], result
        return chosen, result


def predicted_gains(model: onnx.ModelProto, names: list[str], samples) -> dict[str, float]:
    """{candidate: dB by which per-sample ranges would cut its input's quantization noise power}: the values the
    input quantizer reads, clipped to its calibrated range [lo, hi] (a fused Relu's zero included), give each
    sample's own range r_i (0 included, as DynamicQuantizeLinear does); the step shrinks by r_i / (hi - lo), the
    noise power by its square: -10 log10 mean((r_i / (hi - lo))^2)."""
    inits = {i.name: i for i in model.graph.initializer}
    prod = producers(model.graph)
    nodes = {n.name: n for n in model.graph.node}
    quant = {c: prod[prod[nodes[c].input[0]].input[0]] for c in names}
    # optimized: the int8 kernels run (magika: 0.05 s instead of 0.16 s with every weight dequantized per call)
    values = tensor_values(model, [q.input[0] for q in quant.values()], samples, optimize=True)
    out = {}
    for c, q in quant.items():
        s = float(numpy_helper.to_array(inits[q.input[1]]))
        zp = numpy_helper.to_array(inits[q.input[2]])
        info = np.iinfo(zp.dtype)
        lo, hi = (info.min - float(zp)) * s, (info.max - float(zp)) * s
        x = np.clip(values[q.input[0]].reshape(len(samples), -1), lo, hi)
        r = (np.maximum(x.max(axis=1), 0) - np.minimum(x.min(axis=1), 0)) / max(hi - lo, 1e-30)
        out[c] = float(-10 * np.log10(max(np.mean(r * r), 1e-12)))
    return out
