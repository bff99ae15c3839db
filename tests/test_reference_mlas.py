"""The reference reproduces onnxruntime's MLAS float32 kernels bit for bit where it follows them
(``qpass.reference.mlas``): sigmoid / tanh approximations, SGEMM summation orders, and the LSTM built on them.
Run on the machine's onnxruntime (x86-64 with FMA3: the kernels its MLAS dispatches there)."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor, mlas

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(20261127)
F32 = np.float32


def _session(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _model(nodes, inputs, outputs, inits=()):
    return h.make_model(h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)),
                        opset_imports=[h.make_opsetid("", 17)])


def test_logistic_and_tanh_equal_onnxruntimes_sigmoid_and_tanh():
    x = np.concatenate([(RNG.standard_normal(1 << 16) * 8).astype(F32),
                        np.array([0, -0.0, 9, -9, 18, -18, 30, -30, 1e-30], F32)])
    m = _model([h.make_node("Sigmoid", ["x"], ["s"]), h.make_node("Tanh", ["x"], ["t"])],
               [h.make_tensor_value_info("x", T.FLOAT, [None])],
               [h.make_tensor_value_info("s", T.FLOAT, [None]), h.make_tensor_value_info("t", T.FLOAT, [None])])
    s, t = _session(m).run(None, {"x": x})
    assert np.array_equal(mlas.logistic(x), s)
    assert np.array_equal(mlas.tanh(x), t)
    assert np.count_nonzero(np.tanh(x) != t) > 1000  # the approximation is not the correctly rounded tanh


@pytest.mark.parametrize("m, k, n", [(1, 64, 256), (1, 37, 13), (1, 3, 7), (3, 192, 768), (5, 300, 40),
                                     (2, 1000, 16), (4, 130, 300)])
@pytest.mark.parametrize("trans_b", [0, 1])
def test_sgemm_equals_onnxruntimes_gemm(m, k, n, trans_b):
    a = RNG.standard_normal((m, k)).astype(F32)
    b = RNG.standard_normal((n, k) if trans_b else (k, n)).astype(F32)
    c = RNG.standard_normal((m, n)).astype(F32)
    ins = [h.make_tensor_value_info(x, T.FLOAT, list(v.shape)) for x, v in (("a", a), ("b", b), ("c", c))]
    g = _model([h.make_node("Gemm", ["a", "b"], ["y"], transB=trans_b),
                h.make_node("Gemm", ["a", "b", "c"], ["z"], transB=trans_b)], ins,
               [h.make_tensor_value_info("y", T.FLOAT, None), h.make_tensor_value_info("z", T.FLOAT, None)])
    y, z = _session(g).run(None, {"a": a, "b": b, "c": c})
    assert np.array_equal(mlas.sgemm(a, b, trans_b=bool(trans_b)), y)
    assert np.array_equal(mlas.sgemm(a, b, c, trans_b=bool(trans_b)), z)


@pytest.mark.parametrize("direction, batch, peepholes, const_w", [
    ("forward", 1, False, False), ("bidirectional", 1, True, False), ("reverse", 3, False, False),
    ("forward", 2, False, True), ("bidirectional", 1, False, True)])
def test_lstm_equals_onnxruntime_bit_for_bit(direction, batch, peepholes, const_w):
    seq, inp, hid = 7, 20, 24
    nd = 2 if direction == "bidirectional" else 1
    x = RNG.standard_normal((seq, batch, inp)).astype(F32)
    w = (RNG.standard_normal((nd, 4 * hid, inp)) * 0.3).astype(F32)
    r = (RNG.standard_normal((nd, 4 * hid, hid)) * 0.3).astype(F32)
    b = (RNG.standard_normal((nd, 8 * hid)) * 0.1).astype(F32)
    p = (RNG.standard_normal((nd, 3 * hid)) * 0.1).astype(F32)
    names = ["x", "w", "r", "b", "", "", ""] + (["p"] if peepholes else [])
    values = {"x": x, "w": w, "r": r, "b": b, "p": p}
    consts = {"w", "r"} if const_w else set()
    ins = [h.make_tensor_value_info(k, T.FLOAT, list(values[k].shape)) for k in names if k and k not in consts]
    inits = [onnx.numpy_helper.from_array(values[k], k) for k in sorted(consts)]
    m = _model([h.make_node("LSTM", names, ["y", "yh", "yc"], direction=direction, hidden_size=hid)], ins,
               [h.make_tensor_value_info(k, T.FLOAT, None) for k in ("y", "yh", "yc")], inits)
    feeds = {k: values[k] for k in names if k and k not in consts}
    want = _session(m).run(None, feeds)
    got = GoldenExecutor(m).run(feeds)
    for name, wv in zip(("y", "yh", "yc"), want):
        assert np.array_equal(got[name], wv), (name, int(np.count_nonzero(got[name] != wv)))


@pytest.mark.parametrize("d", [1, 5, 16, 17, 48, 100, 256])
def test_softmax_equals_onnxruntime_bit_for_bit(d):
    x = (RNG.standard_normal((3, 4, d)) * 4).astype(F32)
    m = h.make_model(h.make_graph([h.make_node("Softmax", ["x"], ["y"], axis=-1)], "g",
                                  [h.make_tensor_value_info("x", T.FLOAT, list(x.shape))],
                                  [h.make_tensor_value_info("y", T.FLOAT, None)]),
                     opset_imports=[h.make_opsetid("", 13)])
    want = _session(m).run(None, {"x": x})[0]
    assert np.array_equal(GoldenExecutor(m).run({"x": x})["y"], want)
    assert np.array_equal(mlas.softmax(x), want)


@pytest.mark.parametrize("direction, batch, lbr, const_w", [
    ("forward", 1, 0, False), ("forward", 1, 1, False), ("bidirectional", 3, 1, False), ("reverse", 2, 0, True),
    ("forward", 1, 1, True)])
def test_gru_equals_onnxruntime_bit_for_bit(direction, batch, lbr, const_w):
    seq, inp, hid = 6, 10, 12
    nd = 2 if direction == "bidirectional" else 1
    values = {"x": RNG.standard_normal((seq, batch, inp)).astype(F32),
              "w": (RNG.standard_normal((nd, 3 * hid, inp)) * 0.4).astype(F32),
              "r": (RNG.standard_normal((nd, 3 * hid, hid)) * 0.4).astype(F32),
              "b": (RNG.standard_normal((nd, 6 * hid)) * 0.2).astype(F32)}
    consts = {"w", "r"} if const_w else set()
    ins = [h.make_tensor_value_info(k, T.FLOAT, list(v.shape)) for k, v in values.items() if k not in consts]
    inits = [onnx.numpy_helper.from_array(values[k], k) for k in sorted(consts)]
    m = _model([h.make_node("GRU", ["x", "w", "r", "b"], ["y", "yh"], direction=direction, hidden_size=hid,
                            linear_before_reset=lbr)], ins,
               [h.make_tensor_value_info(k, T.FLOAT, None) for k in ("y", "yh")], inits)
    feeds = {k: v for k, v in values.items() if k not in consts}
    want = _session(m).run(None, feeds)
    got = GoldenExecutor(m).run(feeds)
    for name, wv in zip(("y", "yh"), want):
        assert np.array_equal(got[name], wv), (name, int(np.count_nonzero(got[name] != wv)))


def _fma_exact(a, b, c) -> np.ndarray:
    """round32(a * b + c) with one rounding, from exact rationals: the float32 nearest the exact value, ties to
    even (independent of numerics.fma32's float64 shortcuts)."""
    from fractions import Fraction

    out = []
    for x, y, z in zip(a.tolist(), b.tolist(), c.tolist()):
        v = Fraction(x) * Fraction(y) + Fraction(z)
        r = F32(float(v))
        cands = [r, np.nextafter(r, F32(np.inf)), np.nextafter(r, F32(-np.inf))]
        best = min(cands, key=lambda t: (abs(Fraction(float(t)) - v), int(np.asarray(t).view(np.int32)) & 1))
        out.append(best)
    return np.array(out, F32)


def test_fused_multiply_add_fast_paths_round_once():
    """numerics.fma32, horner32 and the SGEMM chain take float64 shortcuts and redo only the sums that land half
    way between two float32 or below 2^-125: a crafted double-rounding case (1 + 2^-24 + 2^-60: float64 rounds it
    to the midpoint, whose even neighbour is 1; the fused result is 1 + 2^-23), near-cancelling and tiny operands,
    and exact zeros all give the exactly rounded result."""
    from qpass.reference.numerics import fma32, horner32

    a1, b1 = F32(1 + 2.0 ** -12), F32(2.0 ** -24 * (1 - 2.0 ** -12 + 2.0 ** -24))
    n = 3000
    a = np.concatenate([[a1, 0, 0], RNG.standard_normal(n), RNG.standard_normal(n) * 1e-20]).astype(F32)
    b = np.concatenate([[b1, 1, 0], RNG.standard_normal(n), RNG.standard_normal(n) * 1e-19]).astype(F32)
    c = np.concatenate([[1, 0, -0.0], -(a[3:3 + n].astype(np.float64) * b[3:3 + n]) * (1 + 2.0 ** -30),
                        RNG.standard_normal(n) * 1e-38]).astype(F32)
    want = _fma_exact(a, b, c)
    assert want[0] == F32(1 + 2.0 ** -23)
    assert np.array_equal(fma32(a, b, c), want)
    coeffs = (F32(0.75), F32(-1.5), F32(1e-30), F32(3.0))  # Horner: fma(x, c0, c1), then fma(acc, x, c)
    acc = _fma_exact(a, np.full_like(a, coeffs[0]), np.full_like(a, coeffs[1]))
    for k in coeffs[2:]:
        acc = _fma_exact(acc, a, np.full_like(a, k))
    assert np.array_equal(horner32(a, coeffs), acc)
    # the packed SGEMM's FMA chain: row 0 reaches the crafted case at its second product
    lhs = np.array([[1, a1, 0], [0, 0, 1e-30]], F32)
    rhs = np.array([[1], [b1], [1e-20]], F32)
    chain = np.zeros(2, F32)
    for k in range(3):
        chain = _fma_exact(lhs[:, k], np.repeat(rhs[k], 2), chain)
    assert np.array_equal(mlas.sgemm(lhs, rhs, packed=True).reshape(-1), chain)
