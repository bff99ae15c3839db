"""The reference's QLinearAdd / QLinearMul on 8-bit codes read a table of every code pair; operands of different
shapes (neither of one element: a per-channel vector against a feature map) take the compiled lookup after the
smaller operand is copied out to the output's shape. Same codes as the numpy gather and as onnxruntime."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h

from qpass.reference import GoldenExecutor


def _model(op, a_shape, b_shape, dtype):
    """DequantizeLinear on both code inputs -> Add / Mul -> QuantizeLinear: onnxruntime fuses it into QLinearAdd /
    QLinearMul, as the reference does."""
    ins = [h.make_tensor_value_info("a", dtype, a_shape), h.make_tensor_value_info("b", dtype, b_shape)]
    inits = [h.make_tensor("sa", T.FLOAT, [], [0.031]), h.make_tensor("za", dtype, [], [3]),
             h.make_tensor("sb", T.FLOAT, [], [0.017]), h.make_tensor("zb", dtype, [], [-5 if dtype == T.INT8 else 120]),
             h.make_tensor("sc", T.FLOAT, [], [0.043]), h.make_tensor("zc", dtype, [], [7])]
    nodes = [h.make_node("DequantizeLinear", ["a", "sa", "za"], ["fa"]),
             h.make_node("DequantizeLinear", ["b", "sb", "zb"], ["fb"]),
             h.make_node(op, ["fa", "fb"], ["fc"]), h.make_node("QuantizeLinear", ["fc", "sc", "zc"], ["c"])]
    g = h.make_graph(nodes, "g", ins, [h.make_tensor_value_info("c", dtype, None)], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 17)])


@pytest.mark.parametrize("op", ["Add", "Mul"])
@pytest.mark.parametrize("dtype", [T.UINT8, T.INT8])
@pytest.mark.parametrize("shapes", [([2, 16, 40], [16, 1]), ([16, 1], [2, 16, 40]), ([2, 1, 40], [1, 16, 1])])
def test_broadcast_lookup_codes(op, dtype, shapes, monkeypatch):
    np_dtype = np.uint8 if dtype == T.UINT8 else np.int8
    info = np.iinfo(np_dtype)
    rng = np.random.default_rng(0)
    a = rng.integers(info.min, info.max + 1, shapes[0]).astype(np_dtype)
    b = rng.integers(info.min, info.max + 1, shapes[1]).astype(np_dtype)
    m = _model(op, *shapes, dtype)
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"a": a, "b": b})[0]
    got = GoldenExecutor(m).run({"a": a, "b": b})["c"]
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    plain = GoldenExecutor(m).run({"a": a, "b": b})["c"]
    np.testing.assert_array_equal(got, plain)
    np.testing.assert_array_equal(got, ref)
