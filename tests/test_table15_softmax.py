"""The compiled float32 Softmax (``qpass.reference.softmax_jit``, numba: the ``fast`` extra) gives the numpy MLAS
emulation's numbers bit for bit (random rows of many widths and scales, -inf, NaN, all-equal rows, every axis, the
opset-11 2-D coercion through a node), and the compiled float32 MatMul in float64 (``mlas_jit.matmul_wide``)
gives numpy's float64 product rounded once on random shapes (also through a MatMul node, whose B is a
non-contiguous transpose, with the numpy path patched in for comparison). Skipped without numba."""
import numpy as np
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor, mlas
from qpass.reference.ops_float import linear

pytest.importorskip("numba")
from qpass.reference import mlas_jit, softmax_jit  # noqa: E402

F32 = np.float32
RNG = np.random.default_rng(1515)


def _same(x, y):
    x, y = np.asarray(x), np.asarray(y)
    assert x.shape == y.shape and x.dtype == y.dtype == F32
    assert np.array_equal(np.isnan(x), np.isnan(y))
    assert np.array_equal(x[~np.isnan(x)].view(np.int32), y[~np.isnan(y)].view(np.int32))


@pytest.mark.parametrize("shape, axis, scale", [((1, 256, 1), 1, 3.0), ((7, 33), -1, 10.0), ((3, 5, 17), 0, 50.0),
                                                ((2, 1000), -1, 100.0), ((4, 16), 1, 1e-3), ((5, 300), 1, 200.0),
                                                ((6, 1), -1, 1.0), ((2, 3, 40), 2, 30.0)])
def test_softmax_equals_numpy_emulation(shape, axis, scale):
    for t in range(6):
        x = (RNG.standard_normal(shape) * scale).astype(F32)
        if t == 1:
            x.flat[::7] = -np.inf
        elif t == 2:
            x.flat[3 % x.size] = np.nan
        elif t == 3:
            x[...] = 0
        elif t == 4:
            x = (x - 90).astype(F32)  # terms near exp's clamp and the float32 subnormal range
        _same(softmax_jit.softmax(x, axis), mlas.softmax(x, axis))


def test_softmax_tiny_terms_hit_subnormal_scaling():
    x = np.array([[0.0, -87.0, -88.5, -100.0, -103.5, -103.97, -104.5, -200.0] * 3], F32)
    y = softmax_jit.softmax(x, -1)
    _same(y, mlas.softmax(x, -1))
    assert (y[0, 1:4] > 0).all() and (y[0, 1:4] < np.finfo(F32).tiny).all()  # subnormal results really exercised


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_node_uses_same_bits(opset, monkeypatch):
    x = (RNG.standard_normal((2, 3, 20)) * 8).astype(F32)
    node = h.make_node("Softmax", ["x"], ["y"], axis=1)
    g = h.make_graph([node], "g", [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 20])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", opset)])
    y = GoldenExecutor(m).run({"x": x})["y"]
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    _same(y, GoldenExecutor(m).run({"x": x})["y"])
    want = mlas.softmax(x.reshape(2, -1), 1).reshape(x.shape) if opset < 13 else mlas.softmax(x, 1)
    _same(y, want)


@pytest.mark.parametrize("sa, sb", [((1, 256), (256, 768)), ((1, 1, 256), (1, 256, 96)), ((5, 7, 300), (300, 40)),
                                    ((3, 9, 20), (3, 20, 16)), ((4, 1), (1, 8))])
def test_matmul_wide_equals_float64_product(sa, sb):
    for _ in range(5):
        a, b = RNG.standard_normal(sa).astype(F32), RNG.standard_normal(sb).astype(F32)
        _same(mlas_jit.matmul_wide(a, b), np.matmul(a.astype(np.float64), b.astype(np.float64)).astype(F32))
    assert mlas_jit.matmul_wide(np.ones((2, 3, 4), F32), np.ones((3, 4, 8), F32)) is None  # broadcast: numpy's


def test_matmul_node_with_transposed_weight(monkeypatch):
    nodes = [h.make_node("Transpose", ["w"], ["wt"]), h.make_node("MatMul", ["x", "wt"], ["y"])]
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [3, 64]),
                                  h.make_tensor_value_info("w", T.FLOAT, [48, 64])],
                     [h.make_tensor_value_info("y", T.FLOAT, None)])
    m = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    x, w = RNG.standard_normal((3, 64)).astype(F32), RNG.standard_normal((48, 64)).astype(F32)
    ex = GoldenExecutor(m)
    y = ex.run({"x": x, "w": w})["y"]
    assert any(k[0] == "c32" for k in ex.scratch if isinstance(k, tuple))  # the compiled kernel ran
    monkeypatch.setattr(linear, "WIDE_JIT_MIN_COLUMNS", 10 ** 9)
    _same(y, GoldenExecutor(m).run({"x": x, "w": w})["y"])
    _same(y, (x.astype(np.float64) @ w.T.astype(np.float64)).astype(F32))
