"""Issue 13: per-tensor range choice by the consuming layer's output error (choose_ranges)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.calibrators import PercentileObserver
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.analysis.range_choice import ConsumerRunner, choose_range, fake_quant, histogram_candidates
from qpass.ir.graph import elem_types
from qpass.ir.samples import bind_samples
from qpass.pipeline.run import as_pipeline

RNG = np.random.default_rng(13)


@pytest.fixture(autouse=True)
def _fresh_rng():
    """Each test draws from its own seeded stream: its data do not depend on which tests ran before it."""
    global RNG
    RNG = np.random.default_rng(13)


def _gemm_model(w):
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, w.shape[0]])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, w.shape[1]])],
                          [numpy_helper.from_array(w, "w")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _heavy_tail(n):
    """Mostly small values with a rare huge outlier in channel 0, which the consumer weights by almost zero."""
    x = RNG.standard_normal((n, 1, 64)).astype(np.float32)
    x[::50, 0, 0] = 200.0
    return x


def test_candidates_are_inside_the_observed_range_and_contain_zero():
    ob = PercentileObserver()
    x = _heavy_tail(100)
    ob.update(x)
    cands = histogram_candidates(ob.lo, ob.hi, ob, 8, ("percentile", "entropy", "mse", "shrink"))
    assert {"minmax", "percentile 99.9", "entropy", "mse", "minmax*0.5"} <= set(cands)
    for lo, hi in cands.values():
        assert ob.lo - 1e-6 <= lo <= 0.0 <= hi <= ob.hi + 1e-6
    assert cands["percentile 99.9"][1] < 10  # the outliers are 0.02% of the values


def _outlier_case():
    """A Gemm whose input channel 0 has heavy-tailed outliers and a ~0 weight row, its input and the range
    candidates of that input."""
    w = RNG.standard_normal((64, 8)).astype(np.float32)
    w[0] = 1e-4
    x = _heavy_tail(64)
    ob = PercentileObserver()
    ob.update(x)
    return w, _gemm_model(w), x, histogram_candidates(ob.lo, ob.hi, ob, 8)


def test_consumer_output_error_picks_clipping_where_the_outlier_does_not_matter():
    """The outlier channel is multiplied by ~0: clipping it costs nothing at the output, and the finer grid wins."""
    w, m, x, cands = _outlier_case()
    runner = ConsumerRunner(m, elem_types(m))
    c = choose_range(runner, "x", cands, [{"x": v} for v in x], "uint8")
    assert c.method != "minmax" and c.gain_db > 10
    # where the outlier channel carries the output, clipping it is worse than min/max: min/max stays
    w2 = np.zeros((64, 8), np.float32)
    w2[0] = 1.0
    runner2 = ConsumerRunner(_gemm_model(w2), elem_types(m))
    c2 = choose_range(runner2, "x", cands, [{"x": v} for v in x], "uint8")
    assert c2.method == "minmax"


def test_fake_quant_is_the_qdq_grid():
    x = np.linspace(-1, 3, 101, dtype=np.float32)
    y = fake_quant(x, -1.0, 3.0, "uint8")
    step = 4.0 / 255
    assert np.max(np.abs(x - y)) <= step / 2 + 1e-6
    assert len(np.unique(y)) <= 256


def test_pass_keeps_min_max_when_the_whole_model_gets_worse():
    """choose_ranges checks its choice on calibration samples it did not score on and keeps min/max otherwise; its
    report names every tensor with the method and the consumer-output error."""
    w = RNG.standard_normal((64, 8)).astype(np.float32)
    w[0] = 1e-4
    m = _gemm_model(w)
    feeds = {"x": _heavy_tail(96)}
    pipe = ["normalize", {"calibrate": {"method": ["minmax", "percentile"]}}, "choose_ranges", "quantize_qdq"]
    res = qpass.optimize(m, calib=bind_samples(feeds, m), pipeline=as_pipeline(pipe))
    rc = res.report.results["range_choice"]
    assert rc["tensors"]["x"]["method"] != "minmax"
    assert rc["kept"] == (rc["check_sqnr_db"]["chosen"] > rc["check_sqnr_db"]["minmax"])
    assert rc["kept"]  # here the clipped range is better for the whole model too
    scale = next(numpy_helper.to_array(i) for i in res.model.graph.initializer if i.name == "x_scale")
    assert float(scale) < 200 / 255 / 4  # far finer than min/max's grid


def _qdq(model, feeds, **opts):
    """quantize_qdq's own choices (auto_precision would make the same float-output move on its own)."""
    pipe = qpass.load_pipeline("default", {"quantize_qdq": opts} if opts else None)
    return qpass.optimize(model, calib=bind_samples(feeds, model), pipeline=pipe,
                          disabled={"choose_dynamic", "auto_precision"})


def test_a_probability_output_gets_no_8_bit_step():
    """Gemm -> Sigmoid as the graph output (a wake-word head): the Sigmoid runs float on QGemm's float output;
    with float_outputs off both are on 8-bit grids. oww-alexa: 10.3 dB -> 40.1 dB."""
    w = numpy_helper.from_array((RNG.standard_normal((4, 32)) * 2).astype(np.float32), "w")
    nodes = [helper.make_node("Gemm", ["x", "w"], ["g"], transB=1), helper.make_node("Sigmoid", ["g"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": RNG.standard_normal((64, 1, 32)).astype(np.float32)}
    s = bind_samples(feeds, m)
    ref = run_samples(m, s)["y"]
    new, old = _qdq(m, feeds), _qdq(m, feeds, float_outputs=False)
    assert list(new.report.results["quantization"]["float_nodes"].values()) == [
        "float_outputs: only float ops read its output, its float kernel is as fast"]
    assert [n.op_type for n in new.model.graph.node].count("QuantizeLinear") == 1  # the input only
    y_new, y_old = run_samples(new.model, s)["y"], run_samples(old.model, s)["y"]
    # +1.0..+3.3 dB over 16 seeded draws of this set-up (weights x0.5 and x2): the small probabilities below
    # are where the 8-bit output grid shows
    assert sqnr_db(ref, y_new) > sqnr_db(ref, y_old) + 0.5
    small = (ref < 0.01) & (ref > 1e-4)  # the 1/256 output grid rounds every small probability to 0 or 1/256
    rel = [np.mean(np.abs(y - ref)[small] / ref[small]) for y in (y_new, y_old)]
    assert rel[0] < 0.25 * rel[1]


def test_cancelling_add_keeps_its_inputs_float():
    """a*c + b*c with b = -0.99 a on data with a large mean (as x - mean, or E[x^2] - E[x]^2 in a decomposed
    LayerNorm: magika 35.8 -> 37.2 dB): 8-bit inputs leave nothing of the small sum; quantize_qdq weighs their
    rounding noise against the Add's output power and keeps both Mul and the Add float."""
    k = [numpy_helper.from_array(np.asarray(v, np.float32), n) for n, v in (("ka", 1.0), ("kb", -0.99))]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "ka"], ["a"]),
             helper.make_node("Mul", ["c", "kb"], ["b"]), helper.make_node("Add", ["a", "b"], ["d"]),
             helper.make_node("Conv", ["d", "w2"], ["y"])]
    w = numpy_helper.from_array((RNG.standard_normal((8, 4, 1, 1)) * 0.1 + 1).astype(np.float32), "w")
    w2 = numpy_helper.from_array(RNG.standard_normal((2, 8, 1, 1)).astype(np.float32), "w2")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, w2] + k)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": (RNG.standard_normal((32, 1, 4, 6, 6)) * 0.3 + 5).astype(np.float32)}
    s = bind_samples(feeds, m)
    ref = run_samples(m, s)["y"]
    new, old = _qdq(m, feeds), _qdq(m, feeds, min_cancel_sqnr_db=None)
    reasons = new.report.results["quantization"]["float_nodes"]
    assert sorted(n for n, r in reasons.items() if "cancelling Add" in r) == ["Add_3", "Mul_1", "Mul_2"], reasons
    assert not old.report.results["quantization"]["float_nodes"]
    # here the two Muls' grids are scaled copies of c's, so their rounding cancels too: no loss either way; the
    # magika gain is in bench/ort_baseline.py
    assert sqnr_db(ref, run_samples(new.model, s)["y"]) >= sqnr_db(ref, run_samples(old.model, s)["y"]) - 0.1
    assert all("leave" in reasons[n] and " dB there" in reasons[n] for n in ("Add_3", "Mul_1", "Mul_2"))


def test_matmul_before_a_float_add_keeps_its_integer_kernel(tmp_path):
    """3-D MatMul -> Add(bias) -> Tanh: the Add and Tanh run float (nothing quantized reads them), but the MatMul keeps
    its output quantizer, else onnxruntime fuses MatMul + Add into a float Gemm (unidic-lite-imitator: 10 layers)."""
    import onnx as _onnx
    from qpass.ir.ort_session import make_session
    w = numpy_helper.from_array(RNG.standard_normal((16, 8)).astype(np.float32), "w")
    bias = numpy_helper.from_array(RNG.standard_normal(8).astype(np.float32), "bias")
    nodes = [helper.make_node("MatMul", ["x", "w"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["a"]),
             helper.make_node("Tanh", ["a"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [w, bias])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    res = _qdq(m, {"x": RNG.standard_normal((16, 1, 5, 16)).astype(np.float32)})
    path = tmp_path / "opt.onnx"
    make_session(res.model, optimize=True, optimized_path=str(path))
    ops = [n.op_type for n in _onnx.load(path).graph.node]
    assert "QLinearMatMul" in ops and not {"Gemm", "FusedGemm", "MatMul"} & set(ops), ops


def test_min_max_calibration_gets_percentiles_from_the_captured_samples_and_a_graph_work_bound():
    """Without a calibrated histogram, the percentile candidates come from the captured samples (the clipped range
    still wins); over ``max_work`` (read from the graph, no clock) the pass runs nothing and keeps min/max."""
    w = RNG.standard_normal((64, 8)).astype(np.float32)
    w[0] = 1e-4
    m = _gemm_model(w)
    feeds = {"x": _heavy_tail(96)}
    pipe = ["normalize", {"calibrate": {"method": "minmax"}}, "choose_ranges", "quantize_qdq"]
    rc = qpass.optimize(m, calib=bind_samples(feeds, m), pipeline=as_pipeline(pipe)).report.results["range_choice"]
    assert rc["kept"] and rc["tensors"]["x"]["method"].startswith("percentile")
    pipe[2] = {"choose_ranges": {"max_work": 1e3}}
    res = qpass.optimize(m, calib=bind_samples(feeds, m), pipeline=as_pipeline(pipe))
    assert "skipped" in res.report.results["range_choice"]
    scale = next(numpy_helper.to_array(i) for i in res.model.graph.initializer if i.name == "x_scale")
    assert float(scale) > 200 / 255 / 2  # min/max's grid


def test_samples_scored_as_one_batch_give_the_per_sample_choice(monkeypatch):
    from qpass.analysis import range_choice

    w, m, x, cands = _outlier_case()
    samples = [{"x": v} for v in x]
    batched = choose_range(ConsumerRunner(m, elem_types(m)), "x", cands, samples, "uint8")
    assert range_choice._stacked(ConsumerRunner(m, elem_types(m)), [m.graph.node[0]], "x", samples,
                                 [[v @ w] for v in x]) is not None
    monkeypatch.setattr(range_choice, "_stacked", lambda *a: None)
    single = choose_range(ConsumerRunner(m, elem_types(m)), "x", cands, samples, "uint8")
    assert (batched.method, batched.range) == (single.method, single.range)
    assert abs(batched.error - single.error) <= 1e-6 * single.error
