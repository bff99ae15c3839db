"""What ``qpass optimize --report`` records: per quantiser its format, bits, scale, range, saturation count and
SQNR, the whole model's SQNR and metric, value histograms with the chosen clipping range, and the pass timeline.

Quantisers are read from the final model itself (QuantizeLinear in QDQ models, Quant / BipolarQuant in QONNX
graphs), and their inputs and outputs are measured by running the model with those tensors as extra outputs.
SQNR figures:
- ``own_sqnr_db``: the quantiser's own error, its output against its actual (already quantised upstream) input;
- ``sqnr_vs_float_db``: the quantised tensor against the same tensor of the float model (error accumulated so far).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.samples import SampleSet
from qpass.analysis.metrics import sqnr_db
from qpass.ops.common import QONNX_DOMAINS, int_bounds

MAX_SAMPLES = 64
HIST_BINS = 64


def _inits(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def find_quantisers(model: onnx.ModelProto) -> list[dict]:
    """One entry per quantiser: input tensor, output tensor, kind, bits, scale, zero point, representable range."""
    inits = _inits(model)
    consumers = {}
    for n in model.graph.node:
        for x in n.input:
            consumers.setdefault(x, []).append(n)
    out = []
    for n in model.graph.node:
        q = None
        if n.op_type == "QuantizeLinear" and n.domain in ("", "ai.onnx"):
            s = inits.get(n.input[1])
            zp = inits.get(n.input[2]) if len(n.input) > 2 else np.zeros((), np.uint8)
            dq = next((c for c in consumers.get(n.output[0], []) if c.op_type == "DequantizeLinear"), None)
            if s is None or zp is None or dq is None:
                continue
            info = np.iinfo(zp.dtype)
            zpf = zp.astype(np.float64)
            lo, hi = (s.astype(np.float64) * (info.min - zpf)), (s.astype(np.float64) * (info.max - zpf))
            q = {"kind": f"QuantizeLinear {zp.dtype}", "bits": info.bits, "input": n.input[0], "output": dq.output[0],
                 "scale": s, "zero_point": zp, "lo": lo, "hi": hi, "step": s.astype(np.float64)}
        elif n.op_type == "DequantizeLinear" and n.domain in ("", "ai.onnx") and n.input[0] in inits:
            codes, sc = inits[n.input[0]], inits.get(n.input[1])
            zp = inits.get(n.input[2]) if len(n.input) > 2 else np.zeros((), codes.dtype)
            if sc is None or zp is None or codes.dtype.kind not in "iu" or codes.dtype.itemsize > 1:
                continue  # int32 biases are not weights worth a histogram
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            shape = [1] * codes.ndim
            if sc.size > 1:
                shape[axis] = sc.size
            s64, z64 = sc.astype(np.float64).reshape(shape), zp.astype(np.float64).reshape(shape)
            info = np.iinfo(codes.dtype)
            lo_c = -127 if codes.dtype == np.uint8 and np.all(zp == 128) else info.min
            q = {"kind": "int8 symmetric" if lo_c == -127 else f"DequantizeLinear {codes.dtype}", "bits": 8,
                 "input": n.input[0], "output": n.output[0], "scale": sc, "zero_point": zp,
                 "lo": s64 * (max(lo_c, info.min - 128) if lo_c == -127 else info.min - z64),
                 "hi": s64 * (info.max - z64), "step": s64, "dequantized": ((codes - z64) * s64)}
        elif n.domain in QONNX_DOMAINS and n.op_type == "Quant":
            s, z, b = (inits.get(x) for x in n.input[1:4])
            if s is None or z is None or b is None:
                continue
            signed = next((a.i for a in n.attribute if a.name == "signed"), 1)
            narrow = next((a.i for a in n.attribute if a.name == "narrow"), 1)
            lo_i, hi_i = int_bounds(int(b), bool(signed), bool(narrow))
            s64, z64 = s.astype(np.float64), z.astype(np.float64)
            q = {"kind": f"Quant {'' if signed else 'u'}int{int(b)}", "bits": int(b), "input": n.input[0],
                 "output": n.output[0], "scale": s, "zero_point": z, "lo": s64 * (lo_i - z64), "hi": s64 * (hi_i - z64),
                 "step": s64}
        elif n.domain in QONNX_DOMAINS and n.op_type == "BipolarQuant":
            s = inits.get(n.input[1])
            if s is None:
                continue
            q = {"kind": "BipolarQuant", "bits": 1, "input": n.input[0], "output": n.output[0], "scale": s,
                 "zero_point": np.zeros(()), "lo": -s.astype(np.float64), "hi": s.astype(np.float64),
                 "step": np.full(np.shape(s), np.inf)}
        if q is not None:
            q["node"] = n.name
            q["weight"] = q["input"] in inits or n.op_type == "DequantizeLinear"
            readers = consumers.get(q["output"], [])
            q["layer"] = readers[0].name if readers else ""
            out.append(q)
    return out


def _run_with(model: onnx.ModelProto, samples: SampleSet, names: list[str]) -> dict[str, np.ndarray]:
    from qpass.ir.ort_session import make_session, run_samples

    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    for t in names:
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, 0, None))
    # elem_type 0 is not allowed: take types from shape inference
    inferred = onnx.shape_inference.infer_shapes(m)
    types = {vi.name: vi.type.tensor_type.elem_type for vi in list(inferred.graph.value_info) + list(inferred.graph.input)
             + list(inferred.graph.output)}
    for o in m.graph.output:
        if o.type.tensor_type.elem_type == 0:
            o.type.tensor_type.elem_type = types.get(o.name) or onnx.TensorProto.FLOAT
    sess = make_session(m, optimize=False)
    return run_samples(m, samples, outputs=names, sess=sess)


def _hist(values: np.ndarray, lo: float, hi: float) -> dict:
    v = np.asarray(values, np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"counts": [], "edges": [], "lo": lo, "hi": hi}
    a, b = float(min(v.min(), lo)), float(max(v.max(), hi))
    if a == b:
        a, b = a - 1, b + 1
    counts, edges = np.histogram(v, bins=HIST_BINS, range=(a, b))
    return {"counts": counts.tolist(), "edges": edges.tolist(), "lo": lo, "hi": hi}


def collect(src: onnx.ModelProto, result, samples: SampleSet | None, metrics: dict | None = None) -> dict:
    """The report as a JSON-serialisable dict."""
    from qpass.pipeline.run import float_model, qonnx_model

    model = qonnx_model(result)
    ref = float_model(result) or src
    results = result.report.results
    data = {
        "model": src.graph.name, "pipeline": result.pipeline.name if result.pipeline else "",
        "timeline": [{"pass": r.name, "seconds": r.seconds, "nodes_before": r.nodes_before,
                      "nodes_after": r.nodes_after, "changed": r.changed, "iteration": r.iteration, "notes": r.notes}
                     for r in result.records],
        "metrics": metrics or {}, "quantisers": [], "integer_report": results.get("integer_report"),
    }
    bw = results.get("bitwidth")
    if bw:
        keep = ("source", "cost", "avg_weight_bits", "relative_accuracy", "accuracy", "agreement", "sqnr_db",
                "widths", "chosen", "pareto", "held_out_pareto", "held_out_relative_accuracy", "held_out_accuracy",
                "held_out_agreement", "held_out_sqnr_db")
        data["bitwidth"] = {"cost_kind": bw.get("cost_kind"), "cost_unit": bw.get("cost_unit"),
                            "compression": bw.get("compression"), "metric": bw.get("metric"), "table": bw.get("table"),
                            "artifact": bw.get("artifact"), "samples": bw.get("samples"),
                            "points": [{k: p.get(k) for k in keep} for p in bw.get("points", [])]}
    qs = find_quantisers(model)
    if not qs:
        return data
    if samples is not None and len(samples) > MAX_SAMPLES:
        samples = samples.subset(np.arange(MAX_SAMPLES))
    inits = _inits(model)
    ref_inits = _inits(ref)
    acts = [q for q in qs if not q["weight"]]
    values, ref_values = {}, {}
    if samples is not None and acts:
        names = sorted({n for q in acts for n in (q["input"], q["output"])})
        values = _run_with(_lowered(model), samples, names)
        ref_names = [q["output"] for q in acts if _has_tensor(ref, q["output"])]
        if ref_names:
            ref_values = _run_with(ref, samples, ref_names)
    for q in qs:
        lo = float(np.min(q["lo"]))
        hi = float(np.max(q["hi"]))
        entry = {"quantiser": q["node"], "layer": q["layer"], "kind": q["kind"], "bits": q["bits"],
                 "role": "weight" if q["weight"] else "activation",
                 "scale": np.asarray(q["scale"], np.float64).reshape(-1)[:16].tolist(),
                 "scale_count": int(np.size(q["scale"])),
                 "zero_point": float(np.asarray(q["zero_point"], np.float64).reshape(-1)[0]),
                 "range": [lo, hi]}
        if q["weight"]:
            w_q = q["dequantized"] if "dequantized" in q else inits[q["input"]].astype(np.float64)
            base = q["input"]
            for suffix in ("_quantized", "_q"):
                if base.endswith(suffix):
                    base = base[: -len(suffix)]
            w_f = ref_inits.get(base, w_q).astype(np.float64)
            entry["saturated"] = _saturated(w_f, q)
            entry["own_sqnr_db"] = _finite(sqnr_db(w_f, w_q)) if w_f.shape == w_q.shape else None
            entry["histogram"] = _hist(w_f, lo, hi)
        elif q["input"] in values:
            x, y = values[q["input"]], values[q["output"]]
            if lo == 0.0:
                x = np.maximum(x, 0)  # a zero lower bound is a fused Relu / Clip: its clipping is not saturation
            entry["saturated"] = _saturated(x, q)
            entry["elements"] = int(x.size)
            entry["own_sqnr_db"] = _finite(sqnr_db(x, y))
            if q["output"] in ref_values and ref_values[q["output"]].shape == y.shape:
                entry["sqnr_vs_float_db"] = _finite(sqnr_db(ref_values[q["output"]], y))
            entry["histogram"] = _hist(ref_values.get(q["output"], x), lo, hi)
        data["quantisers"].append(entry)
    return data


def _saturated(x: np.ndarray, q: dict) -> int:
    """Elements the quantiser clamps: beyond the representable range by more than half a step."""
    half = np.asarray(q["step"], np.float64) / 2
    try:
        return int(np.count_nonzero((x < q["lo"] - half) | (x > q["hi"] + half)))
    except ValueError:  # a scale that does not broadcast against this tensor: per-tensor bounds
        return int(np.count_nonzero((x < np.min(q["lo"] - half)) | (x > np.max(q["hi"] + half))))


def _finite(v: float) -> float | None:
    return round(float(v), 3) if np.isfinite(v) else None


def _has_tensor(model: onnx.ModelProto, name: str) -> bool:
    return any(name in n.output for n in model.graph.node) or any(i.name == name for i in model.graph.input)


def _lowered(model: onnx.ModelProto) -> onnx.ModelProto:
    if not any(n.domain in QONNX_DOMAINS for n in model.graph.node):
        return model
    from qpass.pipeline.run import run_passes

    return run_passes(model, ["lower_ort"], snapshots=False).model
