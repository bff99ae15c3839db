"""Single layers side by side in onnxruntime: the float op vs its QDQ form (what quantize_qdq writes: u8
activations, s8 per-channel weights, int32 bias), 1 intra-op thread, interleaved runs, median time per call.

The shapes are the packaged zoo's layers whose int8 model was slower than quantize_static's or than float
(basic-pitch's 1x256 filter-bank convolutions, mtcnn-pnet's small convolutions, oww-alexa's batch-1 Gemms) plus
neighbours that vary one dimension, so that a rule on shapes can be read off: ``int/f`` < 1 means the integer
kernel is faster. The header gives the CPU flags and the load average.

With ``--zoo``, every distinct Conv of the packaged zoo's float models instead (shapes read by running the
first eval sample; ``--json OUT`` keeps each layer's figures and shape features, for the shape rule in
``qpass/passes/quantize_qdq/speed.py``).

    python bench/layer_speed.py [--budget S] [--only SUBSTR] [--zoo [--json OUT]]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from qpass.ir.ort_session import interleaved_times, make_session  # noqa: E402

# name, op, input shape (NCHW or [N, K]), weight shape (OIHW or [O, K] for Gemm), attrs
CASES = [
    ("pitch 1->1 k1x256 s2 w44098", "Conv", (1, 1, 1, 44098), (1, 1, 1, 256), {"strides": [1, 2]}),
    ("pitch 1->1 k1x256 s2 w2994", "Conv", (1, 1, 1, 2994), (1, 1, 1, 256), {"strides": [1, 2]}),
    ("pitch 1->2 k1x256 s2 w44098", "Conv", (1, 1, 1, 44098), (2, 1, 1, 256), {"strides": [1, 2]}),
    ("pitch 1->2 k1x256 s2 w2994", "Conv", (1, 1, 1, 2994), (2, 1, 1, 256), {"strides": [1, 2]}),
    ("pitch 1->4 k1x256 s2 w44098", "Conv", (1, 1, 1, 44098), (4, 1, 1, 256), {"strides": [1, 2]}),
    ("pitch 1->36 k1x256 s256 w44100", "Conv", (1, 1, 1, 44100), (36, 1, 1, 256), {"strides": [1, 256]}),
    ("pitch 1->36 k1x256 s16 w2996", "Conv", (1, 1, 1, 2996), (36, 1, 1, 256), {"strides": [1, 16]}),
    ("pitch 1->36 k1x256 s1 w427", "Conv", (1, 1, 1, 427), (36, 1, 1, 256), {"strides": [1, 1]}),
    ("pitch 8->32 k5x5 s1x3", "Conv", (1, 8, 172, 264), (32, 8, 5, 5), {"strides": [1, 3], "pads": [2, 1, 2, 1]}),
    ("pitch 8->8 k3x39", "Conv", (1, 8, 172, 88), (8, 8, 3, 39), {"pads": [1, 19, 1, 19]}),
    ("pitch 8->1 k5x5", "Conv", (1, 8, 172, 88), (1, 8, 5, 5), {"pads": [2, 2, 2, 2]}),
    ("pitch 1->32 k7x7 s1x3", "Conv", (1, 1, 172, 264), (32, 1, 7, 7), {"strides": [1, 3], "pads": [3, 2, 3, 2]}),
    ("pitch 32->1 k7x3", "Conv", (1, 32, 172, 88), (1, 32, 7, 3), {"pads": [3, 1, 3, 1]}),
    ("pitch 33->1 k3x3", "Conv", (1, 33, 172, 88), (1, 33, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("pnet 3->10 k3 64x64", "Conv", (1, 3, 64, 64), (10, 3, 3, 3), {}),
    ("pnet 10->16 k3 31x31", "Conv", (1, 10, 31, 31), (16, 10, 3, 3), {}),
    ("pnet 16->32 k3 29x29", "Conv", (1, 16, 29, 29), (32, 16, 3, 3), {}),
    ("pnet 32->4 k1 27x27", "Conv", (1, 32, 27, 27), (4, 32, 1, 1), {}),
    ("pnet 32->2 k1 27x27", "Conv", (1, 32, 27, 27), (2, 32, 1, 1), {}),
    ("64->64 k3 56x56 (reference)", "Conv", (1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
    ("alexa gemm 1536->128", "Gemm", (1, 1536), (128, 1536), {"transB": 1}),
    ("alexa gemm 128->128", "Gemm", (1, 128), (128, 128), {"transB": 1}),
    ("alexa gemm 128->1", "Gemm", (1, 128), (1, 128), {"transB": 1}),
]


def _float_model(op, xs, ws, attrs, rng):
    w = rng.standard_normal(ws).astype(np.float32) * 0.1
    b = rng.standard_normal(ws[0]).astype(np.float32) * 0.1
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, list(xs))
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node(op, ["x", "w", "b"], ["y"], **attrs)
    g = helper.make_graph([node], "layer", [x], [y], [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), w, b


def _qdq_model(op, xs, ws, attrs, w, b, x_scale, y_scale, codes_io=False):
    axis = 0
    w_scale = (np.abs(w).reshape(ws[0], -1).max(1) / 127).astype(np.float32)
    w_code = np.clip(np.round(w / w_scale.reshape([-1] + [1] * (w.ndim - 1))), -127, 127).astype(np.int8)
    b_code = np.round(b / (x_scale * w_scale)).astype(np.int32)
    inits = [numpy_helper.from_array(w_code, "w_q"), numpy_helper.from_array(w_scale, "w_s"),
             numpy_helper.from_array(np.zeros(ws[0], np.int8), "w_z"),
             numpy_helper.from_array(b_code, "b_q"),
             numpy_helper.from_array((x_scale * w_scale).astype(np.float32), "b_s"),
             numpy_helper.from_array(np.zeros(ws[0], np.int32), "b_z"),
             numpy_helper.from_array(np.float32(x_scale), "x_s"), numpy_helper.from_array(np.uint8(128), "x_z"),
             numpy_helper.from_array(np.float32(y_scale), "y_s"), numpy_helper.from_array(np.uint8(128), "y_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "x_s", "x_z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["wd"], axis=axis),
             helper.make_node("DequantizeLinear", ["b_q", "b_s", "b_z"], ["bd"], axis=0),
             helper.make_node(op, ["xd", "wd", "bd"], ["yf"], **attrs),
             helper.make_node("QuantizeLinear", ["yf", "y_s", "y_z"], ["yq"]),
             helper.make_node("DequantizeLinear", ["yq", "y_s", "y_z"], ["y"])]
    io = TensorProto.FLOAT
    if codes_io:  # uint8 codes in and out: the integer kernel alone, as between two integer layers
        nodes = nodes[1:-1]
        nodes[0].input[0] = "x"
        nodes[-1].output[0] = "y"
        io = TensorProto.UINT8
    x = helper.make_tensor_value_info("x", io, list(xs))
    y = helper.make_tensor_value_info("y", io, None)
    g = helper.make_graph(nodes, "layer_qdq", [x], [y], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def run_case(case, budget, rng):
    name, op, xs, ws, attrs = case
    fm, w, b = _float_model(op, xs, ws, attrs, rng)
    x = rng.standard_normal(xs).astype(np.float32)
    y = make_session(fm).run(None, {"x": x})[0]
    scales = float(np.abs(x).max() / 127), float(np.abs(y).max() / 127)
    sessions = {"float": make_session(fm), "qdq": make_session(_qdq_model(op, xs, ws, attrs, w, b, *scales)),
                "codes": make_session(_qdq_model(op, xs, ws, attrs, w, b, *scales, codes_io=True))}
    times = interleaved_times({k: sessions[k] for k in ("float", "qdq")}, {"x": x}, budget_s=budget / 2)
    codes = np.clip(np.round(x / scales[0]) + 128, 0, 255).astype(np.uint8)
    times.update(interleaved_times({"codes": sessions["codes"]}, {"x": codes}, budget_s=budget / 2))
    return tuple(statistics.median(times[k]) * 1e3 for k in ("float", "qdq", "codes"))


def zoo_convs(cache: Path) -> list:
    """(name, "Conv", x shape, w shape, attrs) of every distinct Conv in the zoo's float models, run shapes."""
    import onnxruntime as ort

    cases, seen = [], set()
    for path in sorted(p for p in cache.glob("*/*.onnx") if p.stem == p.parent.name and "int8" not in p.stem):
        m = onnx.load(str(path))
        inits = {i.name: i for i in m.graph.initializer}
        convs = [n for n in m.graph.node if n.op_type == "Conv" and n.input[1] in inits]
        if not convs:
            continue
        outs = {o.name for o in m.graph.output}
        m.graph.output.extend(helper.make_empty_tensor_value_info(t) for t in dict.fromkeys(n.input[0] for n in convs)
                              if t not in outs)
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        ev = np.load(path.with_suffix(".eval.npz"))
        res = dict(zip([o.name for o in sess.get_outputs()],
                       sess.run(None, {i.name: ev[i.name][0] for i in sess.get_inputs()})))
        for n in convs:
            attrs = {a.name: helper.get_attribute_value(a) for a in n.attribute}
            attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
            case = (tuple(res[n.input[0]].shape), tuple(inits[n.input[1]].dims), json.dumps(attrs, sort_keys=True))
            if case not in seen:
                seen.add(case)
                cases.append((f"{path.stem}:{n.name[-24:]}", "Conv", case[0], case[1], attrs))
    return cases


def features(case) -> dict:
    _, _, xs, ws, attrs = case
    g = int(attrs.get("group", 1))
    return {"cin_g": ws[1], "cout_g": ws[0] // g, "group": g, "kernel": int(np.prod(ws[2:])),
            "k": int(np.prod(ws[1:])), "x": list(xs), "w": list(ws), "attrs": attrs}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--only", default=None)
    ap.add_argument("--zoo", action="store_true")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    cases = zoo_convs(Path.home() / ".cache" / "qpass-zoo") if a.zoo else CASES
    rows = []
    flags = sorted(set(open("/proc/cpuinfo").read().split()) & {"avx2", "avx512f", "avx512_vnni", "avx_vnni"})
    print(f"cpu flags: {' '.join(flags)}; load avg {os.getloadavg()[0]:.2f}; 1 thread; median ms per call")
    print("qdq: float in/out with QuantizeLinear/DequantizeLinear at the boundary; codes: uint8 codes in and out "
          "(the integer kernel alone, as between integer layers)")
    print(f"{'layer':<34}{'op':<6}{'float ms':>10}{'qdq ms':>10}{'int/f':>7}{'codes ms':>10}{'int/f':>7}")
    rng = np.random.default_rng(0)
    for case in cases:
        if a.only and a.only not in case[0]:
            continue
        f, q, c = run_case(case, a.budget, rng)
        print(f"{case[0][:33]:<34}{case[1]:<6}{f:>10.4f}{q:>10.4f}{q / f:>7.2f}{c:>10.4f}{c / f:>7.2f}", flush=True)
        rows.append({"name": case[0], "float_ms": f, "qdq_ms": q, "codes_ms": c, **features(case)})
    print(f"load avg at end {os.getloadavg()[0]:.2f}")
    if a.json:
        with open(a.json, "w") as fh:
            fh.write("[\n" + ",\n".join(json.dumps(r) for r in rows) + "\n]\n")


if __name__ == "__main__":
    main()
