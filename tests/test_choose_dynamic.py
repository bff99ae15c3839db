"""Issue 13: the automatic per-layer static / dynamic choice (choose_dynamic after quantize_qdq)."""
from collections import Counter

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import make_session, run_samples
from qpass.ir.samples import bind_samples
from qpass.passes.choose_dynamic import to_dynamic

RNG = np.random.default_rng(3)
D, H = 32, 24


def _mlp(layers=2, rows=1):
    """x -> MatMul -> Relu -> MatMul -> y (or x -> MatMul -> y): matrix products on activations."""
    w1 = numpy_helper.from_array((RNG.standard_normal((D, H if layers == 2 else 8)) / 5).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((RNG.standard_normal((H, 8)) / 5).astype(np.float32), "w2")
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"], name="mm2")]
    if layers == 1:
        nodes, w2 = [helper.make_node("MatMul", ["x", "w1"], ["y"], name="mm1")], None
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, 8])], [w for w in (w1, w2) if w])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _varying(n):
    """Samples whose scale moves 1..100x from one to the next: one static range fits only the widest."""
    x = RNG.standard_normal((n, 1, D)).astype(np.float32)
    return x * np.geomspace(1, 100, n).astype(np.float32)[RNG.permutation(n), None, None]


def _fixed(n):
    """Samples that all span exactly [-3, 3]: a run-time range is the calibrated one."""
    x = RNG.standard_normal((n, 1, D)).astype(np.float32)
    lo, hi = x.min(axis=2, keepdims=True), x.max(axis=2, keepdims=True)
    return (x - lo) / (hi - lo) * 6 - 3


def _run(x, layers=2):
    m = _mlp(layers)
    s = bind_samples({"x": x}, m)
    res = qpass.optimize(m, calib=s, overrides={"choose_dynamic": {"min_weight_elements": 0, "min_rows": 1}})
    return m, s, res


def test_dynamic_chosen_where_ranges_move_from_sample_to_sample(tmp_path):
    m, s, res = _run(_varying(64))
    r = res.report.results["choose_dynamic"]
    assert r["dynamic"] and r["dynamic_db"] > r["static_db"] + 3
    ops = Counter(n.op_type for n in res.model.graph.node)
    # the dynamic layers, and a static one with a float output (the graph's y) on its calibrated codes
    assert ops["DynamicQuantizeLinear"] >= 1 and ops["MatMulInteger"] == len(r["dynamic"]) + ("mm2" not in r["dynamic"])
    # onnxruntime fuses the dynamic form into its integer kernel; float MatMuls are gone
    path = tmp_path / "opt.onnx"
    make_session(res.model, optimize=True, optimized_path=str(path))
    import onnx
    fused = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert fused["DynamicQuantizeMatMul"] + fused["MatMulIntegerToFloat"] + fused["MatMulInteger"] >= 1
    assert not fused["MatMul"]
    # on fresh samples of the same kind, one per call: far closer to float than the static model
    ev = bind_samples({"x": _varying(40)}, m)
    static = qpass.optimize(m, calib=s, disabled={"choose_dynamic"}).model
    ref = run_samples(m, ev, batch_size=1)["y"]
    got = sqnr_db(ref, run_samples(res.model, ev, batch_size=1)["y"])
    assert got > sqnr_db(ref, run_samples(static, ev, batch_size=1)["y"]) + 3


def test_static_kept_where_a_run_time_range_is_the_calibrated_one():
    m, s, res = _run(_fixed(64), layers=1)
    r = res.report.results["choose_dynamic"]
    assert r["dynamic"] == [] and "per-sample range" in r["why"]
    assert r["predicted_db"]["mm1"] < 0.1 and r["gain_db"] == {}  # decided from one run: nothing measured
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in res.model.graph.node)


def test_to_dynamic_restores_a_fused_relu():
    m, s, res = _run(_fixed(64))
    fm = qpass.api.float_model(res)
    dyn = to_dynamic(res.model, {n.name for n in res.model.graph.node if n.op_type == "MatMul"}, fm)
    assert Counter(n.op_type for n in dyn.graph.node)["Relu"] == 1  # quantize_qdq had folded it into a quantizer
    ref = run_samples(m, s, batch_size=1)["y"]
    assert sqnr_db(ref, run_samples(dyn, s, batch_size=1)["y"]) > 30


def test_convolution_nets_pass_through_without_a_run(quantized_digits):
    res = quantized_digits("digits_cnn")
    rec = res.report.results.get("choose_dynamic")
    assert rec is None or rec.get("dynamic") == []
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in res.model.graph.node)


def test_small_layers_keep_static_ranges_by_default():
    """The deterministic speed rule: weights under min_weight_elements (here 32x24 and 24x8) stay on static ranges
    even where run-time ranges would be closer to float (DynamicQuantizeLinear's extra pass costs more there)."""
    m = _mlp()
    res = qpass.optimize(m, calib=bind_samples({"x": _varying(48)}, m))
    assert not any(n.op_type == "DynamicQuantizeLinear" for n in res.model.graph.node)
    assert res.report.results["choose_dynamic"]["dynamic"] == []
    # the same two layers do go dynamic when the size rule is lifted (so the rule, not the ranges, decided)
    lifted = qpass.optimize(m, calib=bind_samples({"x": _varying(48)}, m),
                            overrides={"choose_dynamic": {"min_weight_elements": 0, "min_rows": 1}})
    assert lifted.report.results["choose_dynamic"]["dynamic"]


def test_single_row_inputs_keep_static_ranges_by_default():
    """The row rule (oww-alexa's 1 x 1536 Gemm): a one-row input keeps its static range even where run-time ranges
    would be closer to float; the same layers on three rows per call go dynamic."""
    x = _varying(48)
    one = _mlp()
    res = qpass.optimize(one, calib=bind_samples({"x": x}, one), overrides={"choose_dynamic": {"min_weight_elements": 0}})
    assert res.report.results["choose_dynamic"]["dynamic"] == []
    assert "of >= 2 rows" in res.report.results["choose_dynamic"]["skipped"]
    three = _mlp(rows=3)
    x3 = np.repeat(x, 3, axis=1) * np.float32([[[1.0]], [[0.5]], [[-1.0]]]).reshape(1, 3, 1)
    res3 = qpass.optimize(three, calib=bind_samples({"x": x3}, three),
                          overrides={"choose_dynamic": {"min_weight_elements": 0}})
    assert res3.report.results["choose_dynamic"]["dynamic"]
    assert any(n.op_type == "DynamicQuantizeLinear" for n in res3.model.graph.node)
