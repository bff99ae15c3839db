"""The reference's compiled plan runs each value's producer once: a fused integer layer with a float output
(QGemm / MatMulIntegerToFloat, no QuantizeLinear after it) replaces its float node's step instead of running
after it (the float product used to be computed and then overwritten), with the same numbers."""
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from qpass.reference import GoldenExecutor


def _qgemm_float_out(op: str) -> onnx.ModelProto:
    rng = np.random.default_rng(7)
    w = rng.integers(-127, 128, (24, 5)).astype(np.int8)
    inits = [numpy_helper.from_array(w, "w_q"), numpy_helper.from_array(np.float32(0.02), "w_s"),
             numpy_helper.from_array(np.int8(0), "w_z"), numpy_helper.from_array(np.float32(0.05), "x_s"),
             numpy_helper.from_array(np.uint8(128), "x_z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "x_s", "x_z"], ["x_q"]),
             helper.make_node("DequantizeLinear", ["x_q", "x_s", "x_z"], ["x_d"]),
             helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_z"], ["w_d"]),
             helper.make_node(op, ["x_d", "w_d"], ["y"], name="prod")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 24])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


def test_float_output_fusion_runs_once():
    x = np.random.default_rng(3).standard_normal((3, 24)).astype(np.float32) * 3
    for op, kind in (("Gemm", "QGemm"), ("MatMul", "MatMulIntegerToFloat")):
        m = _qgemm_float_out(op)
        ex = GoldenExecutor(m)
        assert ex.fused == {"prod": kind}
        producers = [s.label for s in ex._plan(("y",)).steps if "y" in s.outputs]
        assert producers == [f"{kind} 'prod'"], producers
        y = ex.run({"x": x})["y"]
        xq = np.clip(np.rint(x / np.float32(0.05)) + 128, 0, 255).astype(np.int64) - 128
        acc = xq @ numpy_helper.to_array(m.graph.initializer[0]).astype(np.int64)
        want = (acc.astype(np.float32) * np.float32(np.float32(0.05) * np.float32(0.02))).astype(np.float32)
        assert y.dtype == np.float32 and np.array_equal(y, want)
