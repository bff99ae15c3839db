"""Issue 13: auto_precision (default pipeline): cheap activation moves to float where one alone buys >= 0.5 dB."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples

RNG = np.random.default_rng(5)
D, H = 32, 24
OTHERS = {"equalize", "smoothquant", "choose_dynamic"}


def _model(outlier: bool):
    """x -> MatMul(w1) -> h -> MatMul(w2) -> y; with ``outlier`` one column of w1 is 60x the rest, so h's one
    per-tensor range leaves the other 23 channels a few steps; without it, one MatMul whose weights' int8 error
    (one large weight per column) swamps any activation rounding."""
    if outlier:
        w1 = RNG.standard_normal((D, H)).astype(np.float32) / 5
        w1[:, 0] *= 60
        w2 = (RNG.standard_normal((H, 8)) / 5).astype(np.float32)
        w2[0] /= 60  # the outlier channel carries no more of the output than the others
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
                 helper.make_node("MatMul", ["h", "w2"], ["y"], name="mm2")]
        inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")]
    else:
        w1 = (RNG.standard_normal((D, 8)) / 5).astype(np.float32)
        w1[RNG.integers(0, D, 8), np.arange(8)] = 40.0
        nodes = [helper.make_node("MatMul", ["x", "w1"], ["y"], name="mm1")]
        inits = [numpy_helper.from_array(w1, "w1")]
    g = helper.make_graph(nodes, "m", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, D])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _run(outlier):
    m = _model(outlier)
    s = bind_samples({"x": RNG.uniform(0, 1, (64, 1, D)).astype(np.float32)}, m)
    # a budget no measurement can exceed: the choice below is decided by the measured SQNR alone; the passes that
    # would fix the outlier before it (equalization, SmoothQuant, run-time ranges) are off: auto_precision's case
    res = qpass.optimize(m, calib=s, overrides={"auto_precision": {"latency_budget": 100.0}}, disabled=OTHERS)
    return m, s, res


def test_moves_the_outlier_activation_to_float():
    m, s, res = _run(True)
    r = res.report.results["auto_precision"]
    assert [x["tensor"] for x in r["moved"]] == ["h"] and r["moved"][0]["gain"] > 1
    assert r["held_out_db"] > r["held_out_int8_db"] + 3
    assert r["moved"][0]["latency_cost_ms"] >= 0 and "ms measured" in r["moved"][0]["reason"]
    ev = bind_samples({"x": RNG.uniform(0, 1, (40, 1, D)).astype(np.float32)}, m)
    int8 = qpass.optimize(m, calib=s, disabled=OTHERS | {"auto_precision"}).model
    ref = run_samples(m, ev)["y"]
    assert sqnr_db(ref, run_samples(res.model, ev)["y"]) > sqnr_db(ref, run_samples(int8, ev)["y"]) + 3


def test_moves_nothing_where_weights_dominate_the_error():
    m, s, res = _run(False)
    r = res.report.results["auto_precision"]
    assert r["moved"] == [] and r["probed"] == ["x_dequantized"]  # probed, gained < 0.5 dB
    assert any(n.op_type == "QuantizeLinear" and n.input[0] == "x" for n in res.model.graph.node)
