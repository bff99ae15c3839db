"""Issue 13: per-tensor range choice by the consuming layer's output error (choose_ranges)."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.calibrators import PercentileObserver
from qpass.analysis.range_choice import ConsumerRunner, choose_range, fake_quant, histogram_candidates
from qpass.ir.graph import elem_types
from qpass.ir.samples import bind_samples
from qpass.pipeline.run import as_pipeline

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


def test_consumer_output_error_picks_clipping_where_the_outlier_does_not_matter():
    """The outlier channel is multiplied by ~0: clipping it costs nothing at the output, and the finer grid wins."""
    w = RNG.standard_normal((64, 8)).astype(np.float32)
    w[0] = 1e-4
    m = _gemm_model(w)
    x = _heavy_tail(64)
    ob = PercentileObserver()
    ob.update(x)
    cands = histogram_candidates(ob.lo, ob.hi, ob, 8)
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
