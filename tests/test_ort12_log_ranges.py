"""Issue 12, a log-mel front end on integer kernels (quantize_qdq's ``log_ranges``, choose_dynamic's static
MatMulInteger for a MatMul with a float output): raw audio at int16 scale -> a DFT as a matrix product -> power ->
a filter bank -> log. On min/max ranges the power's 8-bit grid keeps only the loudest bins; the ranges chosen on
the output keep the quiet ones, and every matrix product runs on onnxruntime's integer kernels."""
from collections import Counter

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import make_session, run_samples
from qpass.ir.samples import bind_samples

N, BINS, MELS = 128, 33, 8
RNG = np.random.default_rng(12)


def _front_end():
    t = np.arange(N)[:, None]
    k = np.arange(BINS)[None, :]
    dft = np.concatenate([np.cos(2 * np.pi * t * k / N), np.sin(2 * np.pi * t * k / N)], axis=1) / N
    bank = np.abs(RNG.standard_normal((BINS, MELS))) / BINS
    inits = [numpy_helper.from_array(dft.astype(np.float32), "dft"), numpy_helper.from_array(bank.astype(np.float32), "bank"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1e-10, np.float32), "eps"),
             numpy_helper.from_array(np.array([1, 2 * BINS], np.int64), "split_shape")]
    nodes = [helper.make_node("MatMul", ["x", "dft"], ["spec"], name="stft"),
             helper.make_node("Pow", ["spec", "two"], ["sq"]),
             helper.make_node("Split", ["sq"], ["re2", "im2"], axis=1, num_outputs=2),
             helper.make_node("Add", ["re2", "im2"], ["power"]),
             helper.make_node("MatMul", ["power", "bank"], ["mel"], name="filter_bank"),
             helper.make_node("Clip", ["mel", "eps"], ["clipped"]),
             helper.make_node("Log", ["clipped"], ["y"])]
    g = helper.make_graph(nodes, "logmel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, MELS])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _audio(n):
    """Tones a few decades apart in level over quiet noise, at int16 scale."""
    t = np.arange(N)
    out = []
    for _ in range(n):
        x = sum(20000 * 10 ** (-RNG.uniform(0, 3)) * np.sin(2 * np.pi * RNG.uniform(1, BINS - 1) * t / N + RNG.uniform(0, 6))
                for _ in range(4))
        out.append((x + 3 * RNG.standard_normal(N))[None].astype(np.float32))
    return np.stack(out)


def test_log_mel_front_end_is_integer_and_closer_to_float_than_min_max_ranges(tmp_path):
    m = _front_end()
    calib, ev = bind_samples({"x": _audio(12)}, m), bind_samples({"x": _audio(24)}, m)
    res = qpass.optimize(m, calib=calib)
    minmax = qpass.optimize(m, calib=calib, overrides={"quantize_qdq": {"log_ranges": False, "max_range": 1e30}})
    notes = " ".join(n for r in res.records for n in r.notes)
    assert "read by a Log narrowed on the output" in notes
    ref = run_samples(m, ev, batch_size=1)["y"]
    got = sqnr_db(ref, run_samples(res.model, ev, batch_size=1)["y"])
    base = sqnr_db(ref, run_samples(minmax.model, ev, batch_size=1)["y"])
    assert got > base + 3, (got, base)
    # both matrix products run on integer kernels; their outputs are read as float (Pow, Clip), through
    # MatMulInteger on the calibrated input codes
    ops = Counter(n.op_type for n in res.model.graph.node)
    assert ops["MatMulInteger"] == 2 and "MatMul" not in ops
    path = tmp_path / "opt.onnx"
    make_session(res.model, optimize=True, optimized_path=str(path))
    fused = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert fused["MatMulInteger"] + fused["MatMulIntegerToFloat"] == 2
    assert not fused["MatMul"] and not fused["FusedMatMul"]


def test_without_a_log_the_max_range_rule_still_keeps_huge_ranges_float():
    m = _front_end()
    g = m.graph
    log = next(n for n in g.node if n.op_type == "Log")
    log.op_type = "Sqrt"  # no logarithm reads the power: a huge range is a sentinel again
    res = qpass.optimize(m, calib=bind_samples({"x": _audio(8)}, m))
    floats = res.report.results["quantization"]["float_nodes"]
    assert any("reaches |x|" in why for why in floats.values())
    assert "read by a Log" not in " ".join(n for r in res.records for n in r.notes)
