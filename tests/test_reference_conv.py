"""The reference Conv's two paths (patch matrix + one GEMM per group; depthwise as per-tap multiply-adds) against
onnxruntime on float data, and exact on integer-valued float tensors whose sums pass 2^24 (streamlined models)."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from qpass.reference import GoldenExecutor

CASES = [  # (C, M, group, kernel, stride, dilation, pad)
    (8, 8, 8, (3, 3), 1, 1, 1),  # depthwise
    (6, 12, 6, (3, 3), 2, 1, 1),  # depthwise, channel multiplier 2
    (4, 4, 4, (5, 5), 1, 2, 2),  # depthwise, dilated
    (5, 15, 5, (3, 1), 1, 1, 0),  # depthwise, non-square kernel, multiplier 3
    (6, 4, 2, (3, 3), 1, 1, 1),  # grouped
    (3, 7, 1, (3, 3), 2, 1, 0),  # plain, strided
    (16, 8, 1, (1, 1), 1, 1, 0),  # pointwise
]


def _conv_model(x_shape, w, b, group, stride, dil, pad):
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], group=group, strides=[stride] * 2,
                            dilations=[dil] * 2, pads=[pad] * 4)
    g = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [onnx.numpy_helper.from_array(w, "w"), onnx.numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("case", CASES, ids=[f"c{c[0]}m{c[1]}g{c[2]}k{c[3][0]}{c[3][1]}" for c in CASES])
def test_conv_matches_onnxruntime(case):
    c, m, g, k, s, d, p = case
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, c, 11, 9)).astype(np.float32)
    w = rng.standard_normal((m, c // g) + k).astype(np.float32)
    b = rng.standard_normal(m).astype(np.float32)
    model = _conv_model(x.shape, w, b, g, s, d, p)
    got = GoldenExecutor(model).run({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert got.shape == want.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group", [1, 8])
def test_conv_is_exact_on_integer_valued_floats_past_2_24(group):
    """Accumulators as a streamlined model holds them: integers in float32 tensors, sums beyond 2^24."""
    rng = np.random.default_rng(5)
    c, m = 8, 8
    x = rng.integers(-5000, 5000, size=(2, c, 7, 7)).astype(np.float32)
    w = rng.integers(-5000, 5000, size=(m, c // group, 3, 3)).astype(np.float32)
    b = np.zeros(m, np.float32)
    got = GoldenExecutor(_conv_model(x.shape, w, b, group, 1, 1, 1)).run({"x": x})["y"]
    xi = np.pad(x.astype(np.int64), ((0, 0), (0, 0), (1, 1), (1, 1)))
    exact = np.zeros((2, m, 7, 7), np.int64)
    for o in range(m):
        gi = o // (m // group)
        cs = range(gi * (c // group), (gi + 1) * (c // group))
        for j, ci in enumerate(cs):
            for kh in range(3):
                for kw in range(3):
                    exact[:, o] += xi[:, ci, kh:kh + 7, kw:kw + 7] * int(w[o, j, kh, kw])
    assert np.abs(exact).max() > 2 ** 24
    assert np.array_equal(got, exact.astype(np.float32))  # the exact sum, rounded once
