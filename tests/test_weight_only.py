"""A MatMul / Gemm whose activation is float or 16-bit must not keep a DequantizeLinear weight: onnxruntime 1.32
rewrites that pair into an int8-compute MatMulNBits and the file stops computing its own model
(qpass/passes/weight_only.py). Checked against onnxruntime's optimised graph and the reference interpreter."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto as T, helper as h, numpy_helper as nh

from qpass.ir.ort_session import make_session, optimized_graph
from qpass.passes.qdq_moves import bypass, widen
from qpass.passes.weight_only import float_weights_where_unfused
from qpass.reference import GoldenExecutor

K, N = 128, 64


def layer(op: str, act: str) -> onnx.ModelProto:
    """x -> [activation Q/DQ: none, 8-bit or 16-bit] -> op(., DequantizeLinear(int8 weight, per column)) -> y."""
    rng = np.random.default_rng(3)
    inits = [nh.from_array(rng.integers(-127, 128, (K, N)).astype(np.int8), "wq"),
             nh.from_array(rng.uniform(0.001, 0.02, N).astype(np.float32), "ws"),
             nh.from_array(np.zeros(N, np.int8), "wz")]
    nodes = [h.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=1)]
    x = "x"
    if act != "float":
        zp = np.uint16(32768) if act == "16" else np.uint8(128)
        inits += [nh.from_array(np.float32(0.02 if act == "8" else 0.02 / 257), "as"), nh.from_array(zp, "az")]
        nodes += [h.make_node("QuantizeLinear", ["x", "as", "az"], ["xq"]),
                  h.make_node("DequantizeLinear", ["xq", "as", "az"], ["xd"])]
        x = "xd"
    nodes.append(h.make_node(op, [x, "w"], ["y"]))
    g = h.make_graph(nodes, "g", [h.make_tensor_value_info("x", T.FLOAT, [8, K])],
                     [h.make_tensor_value_info("y", T.FLOAT, [8, N])], inits)
    return h.make_model(g, opset_imports=[h.make_opsetid("", 21)])


def ops(model):
    return [n.op_type for n in optimized_graph(model).node]


def max_gap(model, x):
    ref = GoldenExecutor(model).run({"x": x})["y"]
    got = make_session(model).run(None, {"x": x})[0]
    return float(np.max(np.abs(ref - got)) / np.max(np.abs(ref)))


@pytest.mark.parametrize("op", ["MatMul", "Gemm"])
@pytest.mark.parametrize("act", ["float", "16"])
def test_unfused_weight_becomes_float_and_onnxruntime_computes_the_model(op, act):
    x = np.random.default_rng(4).uniform(-2, 2, (8, K)).astype(np.float32)
    before = layer(op, act)
    assert "MatMulNBits" in ops(before)  # onnxruntime's own rewrite: int8 activations inside
    assert max_gap(before, x) > 1e-4
    after = onnx.ModelProto()
    after.CopyFrom(before)
    assert float_weights_where_unfused(after) == 1
    assert "MatMulNBits" not in ops(after)
    assert not any(n.op_type == "DequantizeLinear" and n.input[0] == "wq" for n in after.graph.node)
    assert max_gap(after, x) < 1e-6  # float32 rounding only
    # the float weights are exactly the values the DequantizeLinear gave
    w = {i.name: nh.to_array(i) for i in after.graph.initializer}["w_float"]
    np.testing.assert_array_equal(w, GoldenExecutor(before).run({"x": x}, outputs=["w"])["w"])


def test_eight_bit_activation_keeps_the_integer_kernel():
    m = layer("MatMul", "8")
    assert float_weights_where_unfused(m) == 0
    assert "QLinearMatMul" in ops(m) or "MatMulIntegerToFloat" in ops(m)


@pytest.mark.parametrize("move", ["widen", "bypass"])
def test_quantizer_moves_leave_no_weight_for_onnxruntime_to_requantize(move):
    m = layer("MatMul", "8")
    moved = widen(m, {"xd"}) if move == "widen" else bypass(m, {"xd"})
    assert "MatMulNBits" not in ops(moved)
    x = np.random.default_rng(5).uniform(-2, 2, (8, K)).astype(np.float32)
    assert max_gap(moved, x) < 1e-6
