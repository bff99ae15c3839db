"""The compiled integer kernels (qpass.reference.int8_jit, numba) give the codes and statistics of the numpy path
(QPASS_NO_JIT=1) and of onnxruntime on constructed worst cases: zero points, per-channel scales, saturated
outputs on both sides, rounding ties (multiplier 1/2 on odd sums), padding, strides, dilations, groups,
depthwise, 1-D convolutions, float64 accumulation (16-bit codes, sums past 2^24), float outputs."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

pytest.importorskip("numba")

from qpass.reference import GoldenExecutor, int8_jit  # noqa: E402

T = {np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
     np.dtype(np.uint16): TensorProto.UINT16, np.dtype(np.int16): TensorProto.INT16}


def _model(op, x_shape, xdt, w, wz, sw, bias, sx, zx, sy, zy, ydt, waxis, b_act=None, **attrs):
    """DQ(x) [, DQ(weight codes), DQ(int32 bias)] -> op -> Q (no Q when ``sy`` is None: a float output)."""
    xdt, ydt = np.dtype(xdt), np.dtype(ydt)
    inits = [numpy_helper.from_array(np.float32(sx), "sx"), numpy_helper.from_array(np.array(zx, xdt), "zx")]
    nodes = [helper.make_node("DequantizeLinear", ["x", "sx", "zx"], ["xf"])]
    inputs = [helper.make_tensor_value_info("x", T[xdt], x_shape)]
    if b_act is not None:  # a second activation (MatMul of two activations)
        inputs.append(helper.make_tensor_value_info("b", T[xdt], b_act))
        nodes.append(helper.make_node("DequantizeLinear", ["b", "sw", "zw"], ["wf"]))
        inits += [numpy_helper.from_array(np.float32(sw), "sw"), numpy_helper.from_array(np.array(wz, xdt), "zw")]
    else:
        inits += [numpy_helper.from_array(w, "wq"), numpy_helper.from_array(np.asarray(sw, np.float32), "sw"),
                  numpy_helper.from_array(np.asarray(wz, w.dtype), "zw")]
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wf"], axis=waxis))
    ins = ["xf", "wf"]
    if bias is not None:
        sb = (np.float32(sx) * np.asarray(sw, np.float32)).astype(np.float32)
        inits += [numpy_helper.from_array(bias, "bq"), numpy_helper.from_array(sb, "sb"),
                  numpy_helper.from_array(np.zeros(sb.shape, np.int32), "zb")]
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["bf"], axis=0))
        ins.append("bf")
    if sy is None:
        nodes.append(helper.make_node(op, ins, ["y"], **attrs))
        out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    else:
        nodes.append(helper.make_node(op, ins, ["yf"], **attrs))
        inits += [numpy_helper.from_array(np.float32(sy), "sy"), numpy_helper.from_array(np.array(zy, ydt), "zy")]
        nodes.append(helper.make_node("QuantizeLinear", ["yf", "sy", "zy"], ["y"]))
        out = helper.make_tensor_value_info("y", T[ydt], None)
    g = helper.make_graph(nodes, "q", inputs, [out], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)


def _both(model, feeds, monkeypatch, kernel: str):
    """(numpy path's output and stats, compiled path's), checking that the compiled ``kernel`` ran."""
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    ex0 = GoldenExecutor(model)
    assert ex0.fused, ex0.describe()
    y0 = ex0.run(feeds)["y"]
    monkeypatch.delenv("QPASS_NO_JIT")
    calls = []
    fn = getattr(int8_jit, kernel)
    monkeypatch.setattr(int8_jit, kernel, lambda *a: (calls.append(1), fn(*a))[1])
    ex1 = GoldenExecutor(model)
    y1 = ex1.run(feeds)["y"]
    assert calls, f"{kernel} did not run"
    assert y0.dtype == y1.dtype and y0.shape == y1.shape
    assert np.array_equal(y0, y1)
    assert ex0.stats == ex1.stats
    return y1, ex1.stats


def _ort(model, feeds):
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]


CONVS = [  # (x shape, weight shape, attrs, x dtype)
    ((2, 4, 9, 11), (6, 4, 3, 3), dict(pads=[1, 2, 0, 1], strides=[2, 1]), np.uint8),
    ((1, 4, 12, 10), (6, 2, 3, 2), dict(group=2, dilations=[2, 1], pads=[2, 0, 1, 1]), np.uint8),
    ((3, 5, 7, 8), (5, 1, 3, 3), dict(group=5, pads=[1, 1, 1, 1], strides=[1, 2]), np.uint8),  # depthwise
    ((2, 3, 17), (4, 3, 5), dict(pads=[2, 1], strides=[2]), np.uint8),  # 1-D
    ((1, 6, 5, 5), (8, 6, 1, 1), {}, np.int8),  # pointwise, int8 codes
]


@pytest.mark.parametrize("xs,ws,attrs,xdt", CONVS)
def test_conv_compiled_equals_numpy_and_onnxruntime(xs, ws, attrs, xdt, monkeypatch):
    rng = np.random.default_rng(sum(xs) + len(ws))
    lo, hi = np.iinfo(xdt).min, np.iinfo(xdt).max
    x = rng.integers(lo, hi + 1, xs).astype(xdt)
    x.reshape(-1)[::7] = hi  # saturating sums: extreme codes against extreme weights
    w = rng.integers(-127, 128, ws).astype(np.int8)
    w[0] = 127
    m = ws[0]
    sw = rng.uniform(0.002, 0.02, m).astype(np.float32)
    bias = rng.integers(-20000, 20000, m).astype(np.int32)
    zx = 3 if xdt == np.int8 else 121
    # a narrow output scale: many outputs clipped below and above
    sy = 0.25 * np.prod(ws[1:]) / 36
    model = _model("Conv", xs, xdt, w, np.zeros(m, np.int8), sw, bias, 0.05, zx, sy, 7 if xdt == np.int8 else 90,
                   xdt, 0, kernel_shape=list(ws[2:]), **attrs)
    kern = "depthwise_q" if attrs.get("group", 1) == xs[1] == ws[0] else "conv_q"
    y, stats = _both(model, {"x": x}, monkeypatch, kern)
    st = next(iter(stats.values()))
    assert st["output_clipped"] > 0 and len(np.unique(y)) > 20
    assert np.array_equal(y, _ort(model, {"x": x}))


def test_conv_rounding_ties(monkeypatch):
    """mult = sx * sw / sy = 1/2 exactly: every odd accumulator is a tie, rounded half to even."""
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)
    w = rng.integers(-5, 6, (4, 3, 3, 3)).astype(np.int8)
    model = _model("Conv", x.shape, np.uint8, w, np.zeros(4, np.int8), np.ones(4, np.float32), None, 0.5, 128,
                   1.0, 128, np.uint8, 0, kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    y, _ = _both(model, {"x": x}, monkeypatch, "conv_q")
    assert np.array_equal(y, _ort(model, {"x": x}))


def test_conv_16_bit_runs_in_float_unless_accumulators_are_modelled():
    """16-bit codes: onnxruntime runs the conv in float, so the default reference does too; an executor modelling
    accumulator widths (acc_bits, the hardware view) fuses it, and its partial sums past 2^24 stay exact integers
    (float64), within one code of the float path."""
    rng = np.random.default_rng(8)
    x = rng.integers(0, 65536, (1, 8, 6, 6)).astype(np.uint16)
    w = rng.integers(-127, 128, (3, 8, 3, 3)).astype(np.int8)
    w[:, :, :, :] = np.where(w >= 0, 127, -127)
    model = _model("Conv", x.shape, np.uint16, w, np.zeros(3, np.int8), np.full(3, 1e-3, np.float32), None, 1e-3,
                   0, 1.0, 30000, np.uint16, 0, kernel_shape=[3, 3])
    ex = GoldenExecutor(model)
    assert not ex.fused, ex.describe()
    hw = GoldenExecutor(model, acc_bits=64)
    assert hw.fused, hw.describe()
    y, y_hw = ex.run({"x": x})["y"], hw.run({"x": x})["y"]
    st = next(iter(hw.stats.values()))
    assert max(abs(st["acc_min"]), abs(st["acc_max"])) >= 2 ** 24
    assert np.abs(y.astype(np.int64) - y_hw.astype(np.int64)).max() <= 1 and len(np.unique(y_hw)) > 20


@pytest.mark.parametrize("rows,trans_b,per_channel", [(1, 1, True), (5, 0, False), (70, 1, True)])
def test_gemm_compiled(rows, trans_b, per_channel, monkeypatch):
    rng = np.random.default_rng(rows)
    k, n = 37, 19
    x = rng.integers(0, 256, (rows, k)).astype(np.uint8)
    w = rng.integers(-127, 128, (n, k) if trans_b else (k, n)).astype(np.int8)
    sw = rng.uniform(0.002, 0.02, n).astype(np.float32) if per_channel else np.float32(0.01)
    bias = rng.integers(-5000, 5000, n).astype(np.int32)
    model = _model("Gemm", x.shape, np.uint8, w, np.zeros(np.shape(sw), np.int8), sw, bias, 0.04, 133, 0.05, 128,
                   np.uint8, 0 if trans_b else 1, transB=trans_b)
    y, stats = _both(model, {"x": x}, monkeypatch, "gemm_q")
    assert np.array_equal(y, _ort(model, {"x": x}))
    assert next(iter(stats.values()))["output_clipped"] > 0


def test_gemm_float_output(monkeypatch):
    """No QuantizeLinear after the Gemm: f32(f32(acc) * f32(sx * sw)), as onnxruntime's QGemm with float output."""
    rng = np.random.default_rng(3)
    x = rng.integers(0, 256, (4, 16)).astype(np.uint8)
    w = rng.integers(-127, 128, (16, 8)).astype(np.int8)
    bias = rng.integers(-5000, 5000, 8).astype(np.int32)
    model = _model("Gemm", x.shape, np.uint8, w, np.int8(0), np.float32(0.013), bias, 0.07, 100, None, 0, np.uint8,
                   1)
    y, _ = _both(model, {"x": x}, monkeypatch, "gemm_q")
    assert y.dtype == np.float32
    assert np.allclose(y, _ort(model, {"x": x}), rtol=1e-6, atol=0)


def test_matmul_constant_and_activation_operands(monkeypatch):
    rng = np.random.default_rng(9)
    a = rng.integers(-128, 128, (2, 3, 5, 24)).astype(np.int8)
    w = rng.integers(-127, 128, (24, 7)).astype(np.int8)
    model = _model("MatMul", a.shape, np.int8, w, np.zeros(7, np.int8), rng.uniform(0.01, 0.02, 7).astype(np.float32),
                   None, 0.05, -3, 0.2, 5, np.int8, 1)
    y, _ = _both(model, {"x": a}, monkeypatch, "gemm_q")
    assert np.array_equal(y, _ort(model, {"x": a}))
    b = rng.integers(-128, 128, (3, 24, 6)).astype(np.int8)  # broadcast over the first batch axis
    model = _model("MatMul", a.shape, np.int8, None, np.int8(2), np.float32(0.03), None, 0.05, -3, 0.4, 5, np.int8,
                   1, b_act=list(b.shape))
    y, _ = _both(model, {"x": a, "b": b}, monkeypatch, "gemm_q")
    assert np.array_equal(y, _ort(model, {"x": a, "b": b}))


@pytest.mark.parametrize("dt,zp", [(np.uint8, 131), (np.int8, -7), (np.uint16, 30000), (np.int16, 0)])
def test_quantize_compiled(dt, zp, monkeypatch):
    """QuantizeLinear by int8_jit.quantize_q: ties (x / s = k + 1/2) to even, NaN to the lowest code, +-inf and
    huge values saturated, the zero point added after clamping; the codes of the numpy path and onnxruntime."""
    rng = np.random.default_rng(zp & 0xFF)
    s = np.float32(0.25)
    ties = (np.arange(-600, 600) + 0.5).astype(np.float32) * s
    x = np.concatenate([ties, rng.standard_normal(3000).astype(np.float32) * 400,
                        np.array([np.nan, np.inf, -np.inf, 3e38, -3e38, 0.0, -0.0], np.float32)])
    x = x.reshape(1, -1)
    g = helper.make_graph([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["y"])], "q",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", T[np.dtype(dt)], None)],
                          [numpy_helper.from_array(s, "s"), numpy_helper.from_array(np.array(zp, dt), "z")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    y0 = GoldenExecutor(model).run({"x": x})["y"]
    monkeypatch.delenv("QPASS_NO_JIT")
    calls = []
    fn = int8_jit.quantize_q
    monkeypatch.setattr(int8_jit, "quantize_q", lambda *a: (calls.append(1), fn(*a))[1])
    y1 = GoldenExecutor(model).run({"x": x})["y"]
    assert calls and y1.dtype == y0.dtype == np.dtype(dt)
    assert np.array_equal(y0, y1)
    lo = np.iinfo(dt).min
    assert y1[0, 1200 + 3000] == lo and y1[0, -5] == lo  # NaN, -inf
    finite = np.isfinite(x)
    assert np.array_equal(y1[finite], _ort(model, {"x": x})[finite])


@pytest.mark.parametrize("op,dt", [("Add", np.uint8), ("Add", np.int8), ("Mul", np.int8)])
def test_add_mul_table_compiled(op, dt, monkeypatch):
    """A fused Add / Mul of two operands of one shape reads its code-pair table in one compiled pass
    (int8_jit.lookup2): every pair of codes occurs, the codes equal the numpy gather's and onnxruntime's."""
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    a, b = np.meshgrid(np.arange(lo, hi + 1), np.arange(lo, hi + 1))
    a, b = a.astype(dt).reshape(1, 256, 256), b.astype(dt).reshape(1, 256, 256)
    q = [helper.make_node("QuantizeLinear", [v + "f", "s" + v, "z" + v], [v + "q"]) for v in "ab"]
    dq = [helper.make_node("DequantizeLinear", [v + "q", "s" + v, "z" + v], [v + "d"]) for v in "ab"]
    nodes = [helper.make_node("DequantizeLinear", [v, "s" + v, "z" + v], [v + "f"]) for v in "ab"] + q + dq + [
        helper.make_node(op, ["ad", "bd"], ["cf"]), helper.make_node("QuantizeLinear", ["cf", "sc", "zc"], ["y"])]
    inits = [numpy_helper.from_array(np.float32(s), n) for s, n in ((0.031, "sa"), (0.047, "sb"), (0.06, "sc"))]
    inits += [numpy_helper.from_array(np.array(z, dt), n) for z, n in ((3, "za"), (-5 if dt == np.int8 else 140, "zb"),
                                                                         (1, "zc"))]
    g = helper.make_graph(nodes, "e", [helper.make_tensor_value_info(v, T[np.dtype(dt)], None) for v in "ab"],
                          [helper.make_tensor_value_info("y", T[np.dtype(dt)], None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    y, _ = _both(model, {"a": a, "b": b}, monkeypatch, "lookup2")
    assert len(np.unique(y)) > 100
    if dt == np.uint8:  # (int8 codes between two QuantizeLinear-DequantizeLinear pairs: see the session notes)
        assert np.array_equal(y, _ort(model, {"a": a, "b": b}))
    one = b[:, :1, :1].copy()  # a one-element operand: broadcast by the compiled pass too
    y, _ = _both(model, {"a": a, "b": one}, monkeypatch, "lookup2")
    assert y.shape == a.shape and len(np.unique(y)) > 10


@pytest.mark.parametrize("dt,zp", [(np.uint8, 131), (np.int8, -7), (np.uint16, 65535), (np.int16, -32768)])
def test_dequantize_compiled(dt, zp, monkeypatch):
    """DequantizeLinear by int8_jit.dequantize_q: every code, extreme zero points, a scale whose products round:
    bit for bit the numpy path's float32 (and onnxruntime's)."""
    info = np.iinfo(dt)
    x = np.arange(info.min, info.max + 1, max(1, (info.max - info.min) // 5000)).astype(dt).reshape(1, -1)
    g = helper.make_graph([helper.make_node("DequantizeLinear", ["x", "s", "z"], ["y"])], "d",
                          [helper.make_tensor_value_info("x", T[np.dtype(dt)], x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(np.float32(0.1), "s"), numpy_helper.from_array(np.array(zp, dt), "z")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    y0 = GoldenExecutor(model).run({"x": x})["y"]
    monkeypatch.delenv("QPASS_NO_JIT")
    calls = []
    fn = int8_jit.dequantize_q
    monkeypatch.setattr(int8_jit, "dequantize_q", lambda *a: (calls.append(1), fn(*a))[1])
    y1 = GoldenExecutor(model).run({"x": x})["y"]
    assert calls and y1.dtype == y0.dtype == np.float32
    assert y0.tobytes() == y1.tobytes()
    assert y1.tobytes() == _ort(model, {"x": x}).tobytes()
