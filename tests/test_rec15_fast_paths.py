"""The fast paths of the MLAS emulation and of subgraph execution give the exact results:

- ``mlas.fma_chains`` (one FMA chain per output, three numpy calls per step, the rounding check after a block of
  steps) on stacked operands, across block boundaries, with a crafted double rounding at a block's first step
  and in its middle, exact midpoints, and float32-subnormal sums, against chains computed from exact rationals;
- the Horner evaluations of MLAS's sigmoid / tanh (both polynomials at once on small inputs, blocked on large
  ones) on a crafted double rounding;
- the LSTM that runs every direction at once, with per-direction activations, sequence_lens and input_forget,
  against onnxruntime bit for bit;
- a Loop body whose later iterations run on a prepared environment (constants, outer-scope values, values
  computed from them), against onnxruntime.
"""
from fractions import Fraction

import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor, mlas

ort = pytest.importorskip("onnxruntime")
F32 = np.float32
RNG = np.random.default_rng(15)
A1, B1 = F32(1 + 2.0 ** -12), F32(2.0 ** -24 * (1 - 2.0 ** -12 + 2.0 ** -24))  # 1 + A1 * B1: float64 rounds to
# the midpoint 1 + 2^-24, whose even neighbour is 1; the fused result is 1 + 2^-23


def _round32(v: Fraction) -> F32:
    r = F32(float(v))
    cands = [r, np.nextafter(r, F32(np.inf)), np.nextafter(r, F32(-np.inf))]
    return min(cands, key=lambda t: (abs(Fraction(float(t)) - v), int(np.asarray(t).view(np.int32)) & 1))


def _exact_chain(a, b) -> F32:
    acc = F32(0)
    for x, y in zip(a.tolist(), b.tolist()):
        acc = _round32(Fraction(x) * Fraction(y) + Fraction(float(acc)))
    return acc


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def test_fma_chains_round_once_per_step(monkeypatch):
    monkeypatch.setattr(mlas, "_CHUNK", 40)  # blocks of 5 steps for these (2, 2, 4) outputs
    k = 23
    a = RNG.standard_normal((2, 2, k)).astype(F32)
    b = RNG.standard_normal((2, k, 4)).astype(F32)
    a[0, 0, :6], b[0, :6, 0] = [1, 0, 0, 0, 0, A1], [1, 0, 0, 0, 0, B1]  # the crafted case at step 5 (a block start)
    a[0, 1, 7:9], b[0, 7:9, 1] = [1, A1], [1, B1]  # and in a block's middle
    a[0, 0, 6:], a[0, 1, :7], a[0, 1, 9:] = 0, 0, 0  # (fma(0, b, acc) = acc: the crafted steps decide the result)
    a[1, 0, :3], b[1, :3, 2] = [1, 1, 0], [1, 2.0 ** -24, 0]  # an exact midpoint: 1 + 2^-24 rounds to 1 either way
    a[1, 1, :], b[1, :, 3] = 1e-30, RNG.standard_normal(k).astype(F32) * 1e-15  # float32-subnormal sums
    got = mlas.fma_chains(a, b)
    want = np.array([[[_exact_chain(a[d, m], b[d, :, n]) for n in range(4)] for m in range(2)] for d in range(2)])
    assert np.array_equal(got, want)
    plain = np.zeros((2, 2, 4), F32)  # float64 sums rounded to float32, with no correction
    for j in range(k):
        plain = (plain + a[..., j:j + 1].astype(np.float64) * b[:, None, j].astype(np.float64)).astype(F32)
    assert plain[0, 0, 0] != want[0, 0, 0] and plain[0, 1, 1] != want[0, 1, 1]  # the crafted cases matter
    ob = mlas.Operand(b)
    assert np.array_equal(mlas.fma_chains(a, ob, 5, 17), mlas.fma_chains(a[..., 5:17], b[:, 5:17]))


@pytest.mark.parametrize("n", [7, 5000])  # both polynomials at once / one at a time in blocks
def test_horner_fast_paths_round_once_per_step(n):
    x = np.concatenate([[A1], RNG.standard_normal(n - 1)]).astype(F32)
    coeffs = (B1, F32(1), F32(0.375))  # fma(x, B1, 1): the crafted case at x = A1, then fma(acc, x, 0.375)
    want = []
    for v in x[:7].tolist():
        acc = _round32(Fraction(v) * Fraction(float(B1)) + 1)
        want.append(_round32(Fraction(float(acc)) * Fraction(v) + Fraction(0.375)))
    if n <= mlas._SMALL:
        got = mlas._horner_pair(x, mlas._pair_table(coeffs, (F32(1), F32(2))))[0]
    else:
        got = mlas._horner_large(x, coeffs)
    assert np.array_equal(got[:7], np.array(want, F32))
    plain = F32(F32(np.float64(A1) * np.float64(B1) + 1) * np.float64(A1) + 0.375)  # no correction
    assert plain != want[0]


@pytest.mark.parametrize("direction, acts, lens, forget", [
    ("bidirectional", ["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Tanh", "Tanh"], [3, 1, 4], 0),
    ("bidirectional", None, [4, 2, 4], 1),
    ("reverse", None, [2, 4, 1], 0)])
def test_lstm_every_direction_at_once_equals_onnxruntime(direction, acts, lens, forget):
    seq, batch, inp, hid = 4, 3, 5, 6
    nd = 2 if direction == "bidirectional" else 1
    v = {"x": RNG.standard_normal((seq, batch, inp)).astype(F32),
         "w": (RNG.standard_normal((nd, 4 * hid, inp)) * 0.4).astype(F32),
         "r": (RNG.standard_normal((nd, 4 * hid, hid)) * 0.4).astype(F32),
         "b": (RNG.standard_normal((nd, 8 * hid)) * 0.1).astype(F32),
         "lens": np.array(lens, np.int32),
         "h0": RNG.standard_normal((nd, batch, hid)).astype(F32),
         "c0": RNG.standard_normal((nd, batch, hid)).astype(F32)}
    attrs = {"direction": direction, "hidden_size": hid, "input_forget": forget}
    if acts:
        attrs["activations"] = acts
    ins = [h.make_tensor_value_info(k, T.INT32 if k == "lens" else T.FLOAT, list(a.shape))
           for k, a in v.items() if k not in ("w", "r")]
    inits = [onnx.numpy_helper.from_array(v[k], k) for k in ("w", "r")]  # packed by onnxruntime
    m = h.make_model(h.make_graph([h.make_node("LSTM", ["x", "w", "r", "b", "lens", "h0", "c0"], ["y", "yh", "yc"],
                                               **attrs)], "g", ins,
                                  [h.make_tensor_value_info(k, T.FLOAT, None) for k in ("y", "yh", "yc")], inits),
                     opset_imports=[h.make_opsetid("", 14)])
    feeds = {k: a for k, a in v.items() if k not in ("w", "r")}
    want = _session(m).run(None, feeds)
    got = GoldenExecutor(m).run(feeds)
    for name, wv in zip(("y", "yh", "yc"), want):
        assert np.array_equal(got[name], wv), (name, int(np.count_nonzero(got[name] != wv)))


def test_loop_iterations_on_a_prepared_environment_equal_onnxruntime():
    """Carried and scan values, an outer-scope value and one computed from it (invariant), a Constant node and
    an If inside the body: every iteration after the first runs only the steps that read the loop's inputs."""
    body = h.make_graph(
        [h.make_node("Constant", [], ["two"], value=onnx.numpy_helper.from_array(np.array(2.0, F32))),
         h.make_node("Mul", ["outer", "two"], ["inv"]),  # invariant: outer-scope value times a constant
         h.make_node("Cast", ["i"], ["fi"], to=T.FLOAT),
         h.make_node("Mul", ["acc", "inv"], ["t"]),
         h.make_node("Add", ["t", "fi"], ["acc_next"]),
         h.make_node("Less", ["fi", "half"], ["early"]),
         h.make_node("If", ["early"], ["picked"],
                     then_branch=h.make_graph([h.make_node("Neg", ["acc_next"], ["p"])], "then", [],
                                              [h.make_tensor_value_info("p", T.FLOAT, [3])]),
                     else_branch=h.make_graph([h.make_node("Sigmoid", ["acc_next"], ["q"])], "else", [],
                                              [h.make_tensor_value_info("q", T.FLOAT, [3])])),
         h.make_node("Identity", ["c"], ["c_out"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("c", T.BOOL, []),
         h.make_tensor_value_info("acc", T.FLOAT, [3])],
        [h.make_tensor_value_info("c_out", T.BOOL, []), h.make_tensor_value_info("acc_next", T.FLOAT, [3]),
         h.make_tensor_value_info("picked", T.FLOAT, [3])])
    g = h.make_graph(
        [h.make_node("Loop", ["m", "", "acc0"], ["acc_last", "scan"], body=body)], "g",
        [h.make_tensor_value_info("m", T.INT64, []), h.make_tensor_value_info("acc0", T.FLOAT, [3]),
         h.make_tensor_value_info("outer", T.FLOAT, [3])],
        [h.make_tensor_value_info("acc_last", T.FLOAT, [3]), h.make_tensor_value_info("scan", T.FLOAT, [None, 3])],
        initializer=[onnx.numpy_helper.from_array(np.array(3.0, F32), "half")])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    ex = GoldenExecutor(m)
    for trips in (0, 1, 2, 7):
        feeds = {"m": np.array(trips, np.int64), "acc0": np.array([0.5, -1, 2], F32),
                 "outer": RNG.uniform(0.5, 1.0, 3).astype(F32)}
        want = _session(m).run(None, feeds)
        got = ex.run(feeds)
        assert np.array_equal(got["acc_last"], want[0])
        assert got["scan"].shape == want[1].shape and np.array_equal(got["scan"], want[1]), trips
