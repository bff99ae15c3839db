"""The compiled float32 depthwise convolution (qpass.reference.float_jit) gives the numpy path's numbers bit for
bit (products rounded, summed in kernel order) on every form the numpy path picks (flat rows, strided phases,
channels-last, by taps, channel multipliers), and the float32 Conv of one sample does not depend on the batch it
runs in."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from qpass.reference import im2col as ic

pytest.importorskip("numba")

CASES = [  # (C, mult, H, W, kernel, strides, dilations, pads)
    (8, 1, 40, 56, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),      # flat rows
    (6, 1, 30, 100, (5, 5), (2, 2), (1, 1), (2, 2, 2, 2)),     # strided flat (phases)
    (72, 1, 12, 14, (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),     # channels-last
    (4, 3, 11, 9, (3, 2), (2, 1), (1, 2), (0, 1, 2, 0)),       # multiplier, by taps
    (5, 1, 7, 20, (1, 4), (1, 3), (1, 1), (0, 0, 0, 0)),       # wide kernel row, stride 3
]


@pytest.mark.parametrize("case", CASES)
def test_depthwise_jit_equals_numpy(case, monkeypatch):
    c, mult, h, w, kernel, strides, dil, pads = case
    rng = np.random.default_rng(sum(case[:4]))
    x = rng.standard_normal((3, c, h, w)).astype(np.float32)
    wt = rng.standard_normal((c * mult, 1) + kernel).astype(np.float32)
    begin, end, out = ic.geometry((h, w), kernel, strides, dil, pads)
    got = ic.depthwise(x, wt, kernel, strides, dil, begin, end, out)
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    want = ic.depthwise(x, wt, kernel, strides, dil, begin, end, out)
    assert got.shape == want.shape == (3, c * mult) + tuple(out)
    assert np.array_equal(got, want)
    # and the sum really is float32 products in order: float64 differs somewhere
    assert not np.array_equal(got, ic.depthwise(x.astype(np.float64), wt.astype(np.float64), kernel, strides, dil,
                                                 begin, end, out).astype(np.float32))


@pytest.mark.parametrize("shape", [(2, 3, 40, 50), (3, 5, 4096), (2, 4, 9, 8, 9)])
def test_batch_norm_jit_equals_numpy(shape, monkeypatch):
    from onnx import helper

    from qpass.reference.ops_float.reductions import batch_norm
    from qpass.reference.registry import NodeInfo

    rng = np.random.default_rng(len(shape))
    c = shape[1]
    x = rng.standard_normal(shape).astype(np.float32)
    x[0, 0].flat[:3] = [np.nan, np.inf, -0.0]
    params = [rng.standard_normal(c).astype(np.float32) for _ in range(3)] + [rng.random(c).astype(np.float32)]
    node = NodeInfo.from_proto(helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3),
                               {"": 15})
    ex = SimpleNamespace(scratch={})
    got = batch_norm(ex, node, x, *params)
    assert batch_norm(ex, node, x, *params) is not got  # the cached factors give the same numbers
    assert np.array_equal(batch_norm(ex, node, x, *params), got, equal_nan=True)
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    want = batch_norm(SimpleNamespace(scratch={}), node, x, *params)
    assert got.dtype == want.dtype == np.float32
    assert np.array_equal(got, want, equal_nan=True)


@pytest.mark.parametrize("attrs", [dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
                                   dict(kernel_shape=[3, 2], strides=[2, 1], dilations=[1, 2], pads=[0, 1, 2, 0],
                                        group=2)])
def test_float_conv_per_sample_and_gathered(attrs):
    """A small float32 Conv (patch matrices gathered by the executor's index) gives the strided-copy path's
    numbers, a sample's outputs do not depend on its batch, and they stay within float32 rounding of
    onnxruntime's."""
    from onnx import TensorProto, helper, numpy_helper

    from qpass.ir.ort_session import make_session
    from qpass.reference import GoldenExecutor
    from qpass.reference.ops_float.linear import conv
    from qpass.reference.registry import NodeInfo

    rng = np.random.default_rng(7)
    x = rng.standard_normal((5, 4, 9, 8)).astype(np.float32)
    w = rng.standard_normal((6, 4 // attrs.get("group", 1)) + tuple(attrs["kernel_shape"])).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    proto = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    g = helper.make_graph([proto], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 9, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    ex = GoldenExecutor(model)
    got = ex.run({"x": x})["y"]
    assert got.dtype == np.float32
    assert np.array_equal(got, conv(NodeInfo.from_proto(proto, {"": 17}), x, w, b))  # no executor: strided copy
    for s in (0, 3):
        assert np.array_equal(ex.run({"x": x[s:s + 1]})["y"][0], got[s])
    want = make_session(model, threads=1).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)

