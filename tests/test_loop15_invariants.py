"""Loop bodies: carried values that stop changing are held as loop invariants (computed once, not per iteration),
checked bit for bit on every iteration, and dropped again the moment they change; the numbers stay
onnxruntime's. MLAS's tanh / logistic give the same bits compiled or emulated."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from qpass.reference import GoldenError, GoldenExecutor, mlas
from qpass.reference.registry import lookup
from qpass.reference.steps import same_value

RNG = np.random.default_rng(15)


def vi(name, et=T.FLOAT, shape=None):
    return h.make_tensor_value_info(name, et, shape)


def loop_model(switch_at: int):
    """A Loop carrying (w, z, acc): ``w`` passes through by name; ``z`` is ``z + 0`` (its -0.0 turn into 0.0 in
    the first iteration, then it holds still); ``acc += Tanh(w * z) * u`` where ``u`` is 1 until iteration
    ``switch_at``, then 2 (a carried value that changes late)."""
    body = h.make_graph(
        [h.make_node("Add", ["z_in", "zero"], ["z_out"]),
         h.make_node("Mul", ["w_in", "z_in"], ["wz"]), h.make_node("Tanh", ["wz"], ["t"]),
         h.make_node("Equal", ["i", "at"], ["now"]), h.make_node("Add", ["u_in", "one"], ["u1"]),
         h.make_node("Where", ["now", "u1", "u_in"], ["u_out"]),
         h.make_node("Mul", ["t", "u_in"], ["tu"]), h.make_node("Sigmoid", ["tu"], ["s"]),
         h.make_node("Add", ["acc_in", "s"], ["acc_out"]), h.make_node("Identity", ["c_in"], ["c_out"])], "body",
        [vi("i", T.INT64, []), vi("c_in", T.BOOL, []), vi("w_in", T.FLOAT, [64]), vi("z_in", T.FLOAT, [64]),
         vi("u_in", T.FLOAT, [1]), vi("acc_in", T.FLOAT, [64])],
        [vi("c_out", T.BOOL, []), vi("w_in", T.FLOAT, [64]), vi("z_out", T.FLOAT, [64]), vi("u_out", T.FLOAT, [1]),
         vi("acc_out", T.FLOAT, [64])],
        initializer=[nh.from_array(np.zeros(1, np.float32), "zero"), nh.from_array(np.ones(1, np.float32), "one"),
                     nh.from_array(np.array(switch_at, np.int64), "at")])
    g = h.make_graph([h.make_node("Loop", ["M", "", "w", "z", "u0", "acc0"], ["w_f", "z_f", "u_f", "acc"],
                                  body=body)], "g",
                     [vi("w", T.FLOAT, [64]), vi("z", T.FLOAT, [64]), vi("M", T.INT64, [])],
                     [vi("acc", T.FLOAT, [64]), vi("u_f", T.FLOAT, [1])],
                     initializer=[nh.from_array(np.ones(1, np.float32), "u0"),
                                  nh.from_array(np.zeros(64, np.float32), "acc0")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    onnx.checker.check_model(m, full_check=True)
    return m


def _feeds(trips):
    z = (RNG.standard_normal(64) * 3).astype(np.float32)
    z[::5] = -0.0  # x + 0 turns them into 0.0: z settles only after the first iteration
    return {"w": RNG.standard_normal(64).astype(np.float32), "z": z, "M": np.array(trips, np.int64)}


def _ort(m, feeds):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)


def _count_tanh(ex):
    body = next(iter(ex.bodies.values()))["body"].executor
    step = next(s for s in body.steps if s.node is not None and s.node.op_type == "Tanh")
    calls, inner = [], step.call
    step.call = lambda *v: calls.append(1) or inner(*v)
    return calls


def test_settled_carried_values_are_computed_once_and_match_onnxruntime():
    m = loop_model(switch_at=100)  # u never changes within 12 iterations
    ex = GoldenExecutor(m)
    calls = _count_tanh(ex)
    feeds = _feeds(12)
    got = ex.run(feeds)
    # iteration 1: every step; 2: z still changed (-0.0 -> 0.0); 3: z joins the invariants; then never again
    assert len(calls) == 3
    for g, w in zip((got["acc"], got["u_f"]), _ort(m, feeds)):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()


def test_a_value_that_changes_late_is_dropped_from_the_invariants():
    m = loop_model(switch_at=6)  # u: 1 for iterations 0..6, 2 from iteration 7 on
    ex = GoldenExecutor(m)
    calls = _count_tanh(ex)
    feeds = _feeds(12)
    got = ex.run(feeds)
    assert len(calls) == 4  # u changing starts over once (every step again), then Tanh holds still again
    for g, w in zip((got["acc"], got["u_f"]), _ort(m, feeds)):
        assert g.dtype == w.dtype and g.tobytes() == w.tobytes()
    assert got["u_f"][0] == 2.0
    # a second run with other values: nothing carried over from the first
    feeds2 = _feeds(5)
    for g, w in zip((ex.run(feeds2)["acc"], ex.run(feeds2)["u_f"]), _ort(m, feeds2)):
        assert g.tobytes() == w.tobytes()


def test_same_value_compares_bits():
    a = np.array([0.0, 1.0, np.nan], np.float32)
    assert same_value(a, a.copy())
    assert not same_value(a, np.array([-0.0, 1.0, np.nan], np.float32))  # -0.0 == 0.0 numerically, not in bits
    assert not same_value(a, a.astype(np.float64))
    assert not same_value(a, a.reshape(3, 1))
    assert not same_value(np.asarray(None), np.asarray(None))  # object values: never held


def test_tanh_and_sigmoid_kernels_give_mlas_bits_compiled_or_not(monkeypatch):
    x = np.concatenate([RNG.standard_normal(5000).astype(np.float32) * s for s in (0.1, 3, 20)] +
                       [np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 9.0, -9.0, 18.5], np.float32)])
    tanh, sigmoid = lookup("", "Tanh").fn, lookup("", "Sigmoid").fn
    with np.errstate(invalid="ignore", over="ignore"):
        want_t, want_s = mlas.tanh(x), mlas.logistic(x)
        for jit in ("0", "1"):
            monkeypatch.setenv("QPASS_NO_JIT", jit)
            for v, w in ((tanh(None, x), want_t), (sigmoid(None, x), want_s)):
                assert v.dtype == np.float32 and v.tobytes() == w.tobytes()
            assert tanh(None, x[:3].reshape(3, 1)).shape == (3, 1)


def test_a_failing_node_is_named_in_one_line_on_every_run():
    """The first run (cache probes) and the later ones (the lean step loop) report a kernel failure the same way."""
    g = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("Reshape", ["r", "shape"], ["y"], name="rs")],
                     "g", [vi("x", T.FLOAT, ["N"]), vi("shape", T.INT64, [1])], [vi("y", T.FLOAT, None)])
    ex = GoldenExecutor(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]))
    ok = {"x": np.arange(6, dtype=np.float32), "shape": np.array([6], np.int64)}
    bad = {"x": np.arange(6, dtype=np.float32), "shape": np.array([4], np.int64)}
    for feeds in (bad, ok, bad):  # the first before the plan settles, the last after
        if feeds is ok:
            assert ex.run(feeds)["y"].shape == (6,)
            continue
        with pytest.raises(GoldenError, match=r"^Reshape node 'rs' failed: ") as info:
            ex.run(feeds)
        assert "\n" not in str(info.value)
