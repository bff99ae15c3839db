"""A Loop body's steps on their per-node kept plans give the same numbers as their first-call paths: small
QuantizeLinear / DequantizeLinear (fewer elements than ops_quant.JIT_MIN_SIZE: numpy on a node's first call,
compiled from its second) equal onnxruntime's codes and the QPASS_NO_JIT=1 run on every iteration; a carried
weight passed through invariant steps (compared bit for bit once, then by identity) still restarts the plan
when its bits change between runs."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from qpass.reference import GoldenExecutor, ops_quant

F32 = np.float32
RNG = np.random.default_rng(1515)
N = 40


def _loop_model(trips: int):
    assert N < ops_quant.JIT_MIN_SIZE
    body = h.make_graph(
        [h.make_node("Mul", ["x_in", "w_in"], ["xm"]),
         h.make_node("Add", ["xm", "bias"], ["xa"]),
         h.make_node("QuantizeLinear", ["xa", "s", "z"], ["q"]),
         h.make_node("DequantizeLinear", ["q", "s", "z"], ["x_out"]),
         h.make_node("Identity", ["w_in"], ["w_out"]),
         h.make_node("Identity", ["cond_in"], ["cond_out"]),
         h.make_node("Identity", ["q"], ["q_scan"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("x_in", T.FLOAT, [1, N]), h.make_tensor_value_info("w_in", T.FLOAT, [1, N])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("x_out", T.FLOAT, [1, N]),
         h.make_tensor_value_info("w_out", T.FLOAT, [1, N]), h.make_tensor_value_info("q_scan", T.UINT8, [1, N])],
        [nh.from_array(np.float32(0.037), "s"), nh.from_array(np.uint8(121), "z"),
         nh.from_array(RNG.standard_normal((1, N)).astype(F32), "bias")])
    g = h.make_graph(
        [h.make_node("Loop", ["m", "c", "x0", "w"], ["x_end", "w_end", "qs"], body=body)], "g",
        [h.make_tensor_value_info("x0", T.FLOAT, [1, N]), h.make_tensor_value_info("w", T.FLOAT, [1, N])],
        [h.make_tensor_value_info("x_end", T.FLOAT, [1, N]), h.make_tensor_value_info("qs", T.UINT8, None)],
        [nh.from_array(np.array(trips, np.int64), "m"), nh.from_array(np.array(True), "c")])
    return h.make_model(g, opset_imports=[h.make_opsetid("", 19)])


def test_small_qdq_in_a_loop_equal_onnxruntime_and_the_numpy_path(monkeypatch):
    m = _loop_model(12)
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    ex = GoldenExecutor(m)
    for run in range(3):
        feeds = {"x0": (RNG.standard_normal((1, N)) * 3).astype(F32),
                 "w": RNG.uniform(0.5, 1.1, (1, N)).astype(F32)}
        if run == 2:
            feeds["w"] = feeds["w"].copy()
            feeds["w"][0, 0] = -0.0  # a changed carried weight between runs
        got = ex.run(feeds)
        want = dict(zip(["x_end", "qs"], sess.run(None, feeds)))
        assert np.array_equal(got["qs"], want["qs"]) and got["qs"].shape == (12, 1, N)
        assert got["x_end"].tobytes() == want["x_end"].tobytes()
        monkeypatch.setenv("QPASS_NO_JIT", "1")
        slow = GoldenExecutor(m).run(feeds)
        monkeypatch.delenv("QPASS_NO_JIT")
        assert slow["qs"].tobytes() == got["qs"].tobytes()
    scratch = ex.bodies[m.graph.node[0].name or next(iter(ex.bodies))]["body"].executor.scratch
    assert {k[0] for k in scratch if isinstance(k, tuple)} >= {"q", "dq"}  # the kept plans really ran


@pytest.mark.parametrize("trips", [1, 5])
def test_loop_trip_counts(trips):
    m = _loop_model(trips)
    feeds = {"x0": np.ones((1, N), F32), "w": np.full((1, N), 0.75, F32)}
    got = GoldenExecutor(m).run(feeds)
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    assert np.array_equal(got["qs"], want[1]) and got["x_end"].tobytes() == want[0].tobytes()
