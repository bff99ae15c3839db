"""The compiled float32 patch-matrix gather (float_jit.gather_columns) equals im2col.sample_columns entry for entry,
and the reference's Conv gives the same bits with and without the compiled kernels."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from qpass.reference import GoldenExecutor, im2col as ic

float_jit = pytest.importorskip("qpass.reference.float_jit")

GEOMETRIES = [  # (H, W), kernel, strides, dilations, pads (begin h, begin w, end h, end w)
    ((8, 8), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1)),
    ((7, 9), (3, 2), (2, 1), (1, 1), (0, 1, 1, 0)),
    ((11, 6), (2, 3), (1, 2), (2, 1), (2, 0, 0, 3)),
    ((5, 5), (5, 5), (1, 1), (1, 1), (0, 0, 0, 0)),
    ((4, 13), (1, 3), (3, 3), (1, 2), (0, 4, 2, 4)),
]


@pytest.mark.parametrize("hw,kernel,strides,dil,pads", GEOMETRIES)
def test_gather_columns_equal_sample_columns(hw, kernel, strides, dil, pads):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4) + hw).astype(np.float32)
    begin, end, out = ic.geometry(hw, list(kernel), list(strides), list(dil), list(pads))
    args = (list(kernel), list(strides), list(dil), begin, end, out)
    want = ic.sample_columns(x, *args, np.float32)
    got = float_jit.gather_columns(x, ic.gather_index(x.shape[1:], *args)).reshape(want.shape)
    assert np.array_equal(got, want)


def _conv_model(kernel, strides, dil, pads, group):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4, 9, 7])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    rng = np.random.default_rng(1)
    w = rng.standard_normal((6, 4 // group) + kernel).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(kernel), strides=list(strides),
                            dilations=list(dil), pads=list(pads), group=group)
    g = helper.make_graph([node], "c", [x], [y], [onnx.numpy_helper.from_array(w, "w"),
                                                    onnx.numpy_helper.from_array(b, "b")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])


@pytest.mark.parametrize("group", [1, 2])
def test_conv_same_bits_without_jit(monkeypatch, group):
    m = _conv_model((3, 2), (2, 1), (1, 2), (1, 0, 2, 1), group)
    x = np.random.default_rng(2).standard_normal((5, 4, 9, 7)).astype(np.float32)
    fast = GoldenExecutor(m).run({"x": x})["y"]
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    slow = GoldenExecutor(m).run({"x": x})["y"]
    assert fast.dtype == np.float32 and np.array_equal(fast, slow)
    one = GoldenExecutor(m).run({"x": x[2:3]})["y"]  # a sample's numbers do not depend on its batch
    assert np.array_equal(one[0], fast[2])


@pytest.mark.parametrize("hw,kernel,strides,dil,pads", GEOMETRIES)
@pytest.mark.parametrize("groups", [1, 2])
def test_patch8_gather_equals_patch8(hw, kernel, strides, dil, pads, groups):
    int8_jit = pytest.importorskip("qpass.reference.int8_jit")
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (3, 4) + hw).astype(np.uint8)
    begin, end, out = ic.geometry(hw, list(kernel), list(strides), list(dil), list(pads))
    kg, p = 4 // groups * kernel[0] * kernel[1], out[0] * out[1]
    index = ic.gather_index((4 // groups,) + hw, list(kernel), list(strides), list(dil), begin, [0, 0], out)
    for g in range(groups):
        want = np.empty((kg, 2 * p), np.int8)
        got = np.empty((kg, 2 * p), np.int8)
        args = (x, 128, 131, g)
        int8_jit.patch8(*args, *kernel, *strides, *dil, *begin, *out, 1, want)
        int8_jit.patch8_gather(*args, 4 // groups * hw[0] * hw[1], index, 1, got)
        assert np.array_equal(got, want)


@pytest.mark.parametrize("hw,kernel,strides,dil,pads", GEOMETRIES)
def test_row_columns_equal_sample_columns(hw, kernel, strides, dil, pads):
    x = np.random.default_rng(5).standard_normal((2, 3) + hw).astype(np.float32)
    begin, end, out = ic.geometry(hw, list(kernel), list(strides), list(dil), list(pads))
    want = ic.sample_columns(x, list(kernel), list(strides), list(dil), begin, end, out, np.float32)
    ow = out[1]
    for r0, r1 in ((0, out[0]), (1, min(out[0], 3)), (out[0] - 1, out[0])):
        got = float_jit.row_columns(x[1], list(kernel), list(strides), list(dil), begin, r0, r1, ow)
        assert np.array_equal(got, want[1][:, r0 * ow:r1 * ow])


def test_large_conv_row_blocks_near_onnxruntime_and_batch_independent(monkeypatch):
    from qpass.reference.ops_float import linear
    monkeypatch.setattr(linear, "GATHER_MAX_ENTRIES", 0)  # this conv's patches: row blocks
    monkeypatch.setattr(linear, "SAMPLE_CHUNK_BYTES", 1 << 10)
    monkeypatch.setattr(linear, "ROW_BLOCK_BYTES", 1 << 9)
    m = _conv_model((3, 2), (2, 1), (1, 2), (1, 0, 2, 1), 2)
    x = np.random.default_rng(6).standard_normal((3, 4, 9, 7)).astype(np.float32)
    calls = []
    monkeypatch.setattr(float_jit, "row_columns", lambda *a: (calls.append(1), _row_columns(*a))[1])
    y = GoldenExecutor(m).run({"x": x})["y"]
    assert calls
    import onnxruntime as ort
    ref = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.abs(y - ref).max() < 1e-5
    assert np.array_equal(GoldenExecutor(m).run({"x": x[1:2]})["y"][0], y[1])


_row_columns = float_jit.row_columns
