"""The depthwise forms of qpass.reference.im2col.depthwise agree with a direct convolution: the exact (BLAS)
form on integer data gives the exact sums, the flat forms (wide rows; channels last) give bit for bit the
numbers of the per-tap form (the same float32 operations in the same order). The blocked integer Conv (large
patch matrices) gives the codes of the one-GEMM path and of onnxruntime."""
import numpy as np
import pytest

from qpass.reference import im2col as ic


def _direct(x, w, kernel, strides, dil, begin, end, out):
    """Exact int64 depthwise convolution, one kernel tap at a time over the padded windows."""
    v = ic.windows(x.astype(np.int64), kernel, strides, dil, begin, end, out)  # (N, C, *out, *k)
    c = x.shape[1]
    mult = w.shape[0] // c
    wr = w.reshape((c, mult) + tuple(kernel)).astype(np.int64)
    y = np.einsum(_subscripts(len(kernel)), v, wr)
    return y.reshape((x.shape[0], c * mult) + tuple(out))


CASES = [  # (input shape, kernel, strides, dilations, pads, channel multiplier)
    ((2, 3, 9, 70), (3, 3), (1, 1), (1, 1), (1, 1, 1, 1), 1),  # flat form (wide rows)
    ((1, 4, 11, 12), (5, 5), (2, 2), (1, 1), (2, 2, 2, 2), 1),
    ((2, 3, 10, 9), (3, 3), (1, 2), (2, 1), (0, 1, 2, 0), 2),
    ((1, 5, 80, 66), (3, 3), (1, 1), (2, 2), (2, 2, 2, 2), 1),  # flat form with dilations
    ((3, 2, 17), (4,), (1,), (1,), (1, 2), 3),
    ((2, 64, 6, 7), (3, 3), (1, 1), (1, 2), (1, 2, 1, 2), 1),  # channels-last form (narrow rows, many channels)
    ((2, 3, 13, 101), (3, 3), (2, 2), (1, 1), (1, 1, 1, 1), 1),  # strided flat form (phase images)
    ((1, 2, 9, 8, 150), (2, 3, 3), (1, 3, 2), (2, 1, 2), (0, 1, 2, 1, 0, 2), 1),  # 3-D, mixed strides, dilated
]
FORCED = ("FLAT_MIN_WIDTH", "STRIDED_FLAT_MIN_WIDTH", "CHANNELS_LAST_MIN_CHANNELS")


@pytest.mark.parametrize("shape,kernel,strides,dil,pads,mult", CASES)
def test_depthwise_forms(shape, kernel, strides, dil, pads, mult):
    rng = np.random.default_rng(len(shape) * 7 + shape[-1])
    c = shape[1]
    x = rng.integers(-255, 256, shape).astype(np.float32)
    w = rng.integers(-127, 128, (c * mult, 1) + kernel).astype(np.float32)
    begin, end, out = ic.geometry(shape[2:], kernel, strides, dil, pads)
    want = _direct(x, w, kernel, strides, dil, begin, end, out)
    exact = ic.depthwise(x, w, kernel, strides, dil, begin, end, out, block_bytes=4096, exact=True)
    assert exact.dtype == np.float32 and np.array_equal(exact.astype(np.int64), want)
    assert np.array_equal(ic.depthwise(x, w, kernel, strides, dil, begin, end, out), exact)
    # float data: the flat / per-tap forms round identically (per-tap form forced by a narrow width bound)
    xf, wf = rng.standard_normal(shape).astype(np.float32), rng.standard_normal(w.shape).astype(np.float32)
    got = ic.depthwise(xf, wf, kernel, strides, dil, begin, end, out, block_bytes=4096)
    taps = _forced(1 << 30, xf, wf, kernel, strides, dil, begin, end, out)  # every flat form off
    flat = _forced(1, xf, wf, kernel, strides, dil, begin, end, out)  # the flat form wherever it applies
    assert got.shape == taps.shape == flat.shape == want.shape
    assert np.array_equal(got, taps) and np.array_equal(flat, taps)
    assert np.allclose(got, _direct_float(xf, wf, kernel, strides, dil, begin, end, out), rtol=1e-4, atol=1e-4)


def _forced(bound, *args):
    """``ic.depthwise`` with every form-choosing width / channel bound set to ``bound``."""
    old = [getattr(ic, k) for k in FORCED]
    try:
        for k in FORCED:
            setattr(ic, k, bound)
        return ic.depthwise(*args, block_bytes=4096)
    finally:
        for k, v in zip(FORCED, old):
            setattr(ic, k, v)


def _direct_float(x, w, kernel, strides, dil, begin, end, out):
    v = ic.windows(x.astype(np.float64), kernel, strides, dil, begin, end, out)
    c = x.shape[1]
    wr = w.reshape((c, w.shape[0] // c) + tuple(kernel)).astype(np.float64)
    return np.einsum(_subscripts(len(kernel)), v, wr).reshape((x.shape[0], w.shape[0]) + tuple(out))


def _subscripts(n):
    o, k = "opq"[:n], "ijk"[:n]
    return f"nc{o}{k},cm{k}->ncm{o}"


def _qdq_conv(x_shape, w_codes, bias_codes, sx, sw, sy, zx, zy, **attrs):
    from onnx import TensorProto, helper, numpy_helper

    m = w_codes.shape[0]
    inits = [numpy_helper.from_array(w_codes, "wq"), numpy_helper.from_array(sw, "sw"),
             numpy_helper.from_array(np.zeros(m, np.int8), "zw"), numpy_helper.from_array(bias_codes, "bq"),
             numpy_helper.from_array((sx * sw).astype(np.float32), "sb"),
             numpy_helper.from_array(np.zeros(m, np.int32), "zb"),
             numpy_helper.from_array(np.float32(sx), "sx"), numpy_helper.from_array(np.uint8(zx), "zx"),
             numpy_helper.from_array(np.float32(sy), "sy"), numpy_helper.from_array(np.uint8(zy), "zy")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wf"], axis=0),
             helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bf"], axis=0),
             helper.make_node("Conv", ["xf", "wf", "bf"], ["yf"], **attrs),
             helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"])]
    g = helper.make_graph(nodes, "qconv", [helper.make_tensor_value_info("x", TensorProto.UINT8, x_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.UINT8, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_blocked_integer_conv_equals_one_gemm_and_onnxruntime(monkeypatch):
    """A fused QLinearConv built block by block of output rows (the path of large patch matrices) gives the codes
    of the one-GEMM path and of onnxruntime."""
    import onnxruntime as ort

    from qpass.reference import GoldenExecutor
    from qpass.reference.ops_integer import linear

    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (2, 4, 23, 9)).astype(np.uint8)
    w = rng.integers(-127, 128, (6, 4, 3, 5)).astype(np.int8)
    b = rng.integers(-3000, 3000, 6).astype(np.int32)
    sw = rng.uniform(0.002, 0.01, 6).astype(np.float32)
    model = _qdq_conv(x.shape, w, b, 0.05, sw, 2.0, 120, 100, pads=[1, 2, 1, 2], strides=[1, 1])
    assert "QLinearConv" in GoldenExecutor(model).describe()
    one = GoldenExecutor(model).run({"x": x})["y"]
    monkeypatch.setattr(linear, "BLOCKED_PATCH_BYTES", 0)
    monkeypatch.setattr(ic, "column_blocks", _small_blocks(ic.column_blocks))
    blocked = GoldenExecutor(model).run({"x": x})["y"]
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(one, blocked) and np.array_equal(blocked, want)
    assert len(np.unique(want)) > 50  # a real spread of codes, not a saturated output


def _small_blocks(fn):
    def blocks(*args, **kw):
        kw["budget"] = 1000  # a few output rows per block, and a short last block
        return fn(*args, **kw)
    return blocks


def test_exact_matmul_with_an_l1_bound():
    """One float32 GEMM when max|x| times the largest L1 norm of a weight column stays below 2^24 (though
    k * max|x| * max|w| does not); chunks summed in float64 when a column's partial sums can pass 2^24."""
    from qpass.reference.ops_integer.arith import exact_matmul, l1_bound

    rng = np.random.default_rng(4)
    k = 32768  # long enough that one float32 GEMM over the big column is not exact (OpenBLAS, this machine)
    x = (rng.integers(64, 128, (5, k)) * 2 + 1).astype(np.float32)  # odd, 129 to 255
    small = rng.integers(-1, 2, (k, 3))
    small[::500, 0] = 127
    big = np.concatenate([np.full((k // 2, 1), 127), np.full((k // 2, 1), -127)])  # partial sums past 2^24
    for w, one_gemm in ((small, True), (np.concatenate([small, big], axis=1), False)):
        bound = l1_bound(255, w, 0)
        assert (bound < 2 ** 24) == one_gemm and 255 * 127 * k >= 2 ** 24
        got = exact_matmul(x[None], w.astype(np.float32)[None], 255, 127, bound)[0]
        assert got.dtype == (np.float32 if one_gemm else np.float64)
        assert np.array_equal(got.astype(np.int64), x.astype(np.int64) @ w)
