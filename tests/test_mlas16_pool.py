"""The reference's float32 2-D AveragePool equals onnxruntime's (MLAS: the window summed in float32 row by row,
divided by the count in float32) bit for bit: pads with and without count_include_pad, strides, ceil_mode,
channel counts onnxruntime may run in NCHWc blocks (16, 32) and not (3, 8)."""
import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

CASES = [  # (channels, kernel, stride, pads, count_include_pad, ceil_mode)
    (8, 2, 2, 0, 0, 0), (8, 3, 1, 1, 0, 0), (8, 3, 1, 1, 1, 0), (3, 3, 2, 1, 1, 0), (16, 3, 2, 1, 0, 1),
    (32, 3, 1, 1, 1, 0), (16, 5, 3, 2, 0, 0), (32, 2, 2, 0, 0, 1)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "c%d_k%d_s%d_p%d_inc%d_ceil%d" % c)
def test_float_average_pool_bit_identical_to_onnxruntime(case):
    from qpass.reference import GoldenExecutor

    c, k, s, p, inc, ceil = case
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=[p] * 4,
                            count_include_pad=inc, ceil_mode=ceil)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, c, 23, 19])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    x = np.random.default_rng(sum(case)).standard_normal((2, c, 23, 19)).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    want = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = GoldenExecutor(m).run({"x": x})["y"]
    assert got.shape == want.shape
    assert np.array_equal(got, want), f"{int((got != want).sum())} of {got.size} differ"
