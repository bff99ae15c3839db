"""Golden simulator: float ops vs onnxruntime, integer QDQ layers bit-exact vs onnxruntime's integer kernels,
QONNX ops vs their documented formulas, accumulator models and error reporting.

Float tolerance (stated): |golden - ort| <= 1e-5 * |ort| + 1e-6 * max|ort| per output tensor. The second term is
onnxruntime's own float32 rounding on near-zero outputs of long dot products; golden accumulates in float64 and
sits 5-10x closer to a float64 reference than onnxruntime does.
"""
from __future__ import annotations

import glob
import itertools
import os

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.reference import GoldenExecutor, UnsupportedOpError, run_samples
from qpass.ir.ort_session import make_session
from qpass.ir.ort_session import run_samples as ort_run_samples
from qpass.ir.samples import load_samples

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ZOO = sorted(glob.glob(os.path.join(ROOT, "models", "*.onnx"))
             + glob.glob(os.path.join(ROOT, "models", "structural", "*.onnx")))
F32 = np.float32


def _id(p):
    return os.path.basename(p)[:-5]


def _calib(p):
    return p[:-5] + ".calib.npz"


def float_close(g, r):
    g, r = np.asarray(g, np.float64), np.asarray(r, np.float64)
    scale = float(np.abs(r).max(initial=0.0))
    return np.abs(g - r) <= 1e-5 * np.abs(r) + 1e-6 * max(scale, 1.0)


# ---------------------------------------------------------------------------------------------- zoo models


def _float_model(path):
    m = qpass.load(path)
    inits = {i.name for i in m.graph.initializer}
    if any(i.name in inits for i in m.graph.input):  # old style: initializers are also inputs
        m = qpass.optimize(m, pipeline=qpass.pipeline.files.pipeline_from_dict({"passes": ["normalize"]})).model
    return m


@pytest.mark.parametrize("path", ZOO, ids=_id)
def test_float_zoo_matches_onnxruntime(path):
    m = _float_model(path)
    s = load_samples(_calib(path), m)
    g = run_samples(m, s)
    r = ort_run_samples(m, s)
    assert set(g) == set(r)
    for k in r:
        assert g[k].shape == r[k].shape and g[k].dtype == r[k].dtype
        ok = float_close(g[k], r[k])
        assert ok.all(), f"{k}: {np.count_nonzero(~ok)} elements off, max diff {np.abs(g[k] - r[k]).max()}"


def with_code_outputs(model):
    """Copy of a QDQ model whose final QuantizeLinear outputs are graph outputs too: [(float out, code out)]."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    prod = {o: n for n in m.graph.node for o in n.output}
    inits = {i.name: i for i in m.graph.initializer}
    pairs = []
    for o in list(m.graph.output):
        dq = prod.get(o.name)
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            m.graph.output.append(helper.make_tensor_value_info(q.output[0], inits[q.input[2]].data_type, None))
            pairs.append((o.name, q.output[0], numpy_helper.to_array(inits[q.input[1]])))
    return m, pairs


@pytest.mark.parametrize("path", ZOO, ids=_id)
def test_int8_qdq_zoo_matches_onnxruntime_integer_kernels(path):
    # 8-bit outputs (float_outputs off, and no auto_precision / choose_dynamic moving them to float or run-time
    # ranges), so that the codes can be compared; float outputs: the test below
    pipe = qpass.load_pipeline("default", {"quantize_qdq": {"float_outputs": False}})
    q = qpass.optimize(qpass.load(path), calib=_calib(path), pipeline=pipe,
                       disabled={"auto_precision", "choose_dynamic"}).model
    m, pairs = with_code_outputs(q)
    assert pairs, "the default pipeline should end every output with QuantizeLinear -> DequantizeLinear"
    s = load_samples(_calib(path), m)
    names = [o.name for o in m.graph.output]
    ex = GoldenExecutor(m)
    assert ex.fused, "no QDQ layer was executed as an integer kernel"
    g = run_samples(m, s, outputs=names, executor=ex)
    r = ort_run_samples(m, s, outputs=names)
    for fout, cout, scale in pairs:
        d = np.abs(g[cout].astype(np.int64) - r[cout].astype(np.int64))
        assert np.mean(d == 0) >= 0.999, f"{cout}: only {100 * np.mean(d == 0):.3f}% exact"
        assert d.max() <= 1
        assert np.all(np.abs(g[fout] - r[fout]) <= F32(scale) * 1.0001)
    assert any(st["outputs"] for st in ex.stats.values())


@pytest.mark.parametrize("path", ZOO, ids=_id)
def test_float_outputs_match_onnxruntime(path):
    """The default pipeline's float graph outputs (QGemm with float output, MatMulIntegerToFloat, float ops after
    dequantized codes): golden == onnxruntime to float32 rounding."""
    q = qpass.optimize(qpass.load(path), calib=_calib(path)).model
    s = load_samples(_calib(path), q)
    g, r = run_samples(q, s), ort_run_samples(q, s)
    for k in r:
        np.testing.assert_allclose(g[k], r[k], rtol=2e-6, atol=1e-6 * float(np.abs(r[k]).max() or 1), err_msg=k)


def _counting_calls(ex: GoldenExecutor, calls: list) -> GoldenExecutor:
    """``ex`` with ``run`` wrapped to append the batch size of every call to ``calls``."""
    run = ex.run

    def counted(feeds, outputs=None):
        calls.append(len(next(iter(feeds.values()))))
        return run(feeds, outputs)

    ex.run = counted
    return ex


def test_run_samples_batches_like_onnxruntime():
    """Samples of a model with a symbolic batch dimension run batch_size at a time, with the numbers of one sample
    per call and of onnxruntime."""
    path = os.path.join(ROOT, "models", "structural", "dynamic_batch.onnx")
    m = qpass.load(path)
    s = load_samples(_calib(path), m)
    n = len(s)
    calls8, calls1 = [], []
    batched = run_samples(m, s, batch_size=8, executor=_counting_calls(GoldenExecutor(m), calls8))
    single = run_samples(m, s, batch_size=1, executor=_counting_calls(GoldenExecutor(m), calls1))
    assert n > 8 and calls8 == [8] * (n // 8) + ([n % 8] if n % 8 else []) and calls1 == [1] * n
    r = ort_run_samples(m, s)
    assert r and set(batched) == set(single) == set(r)
    for k in r:
        assert batched[k].shape == single[k].shape == r[k].shape
        np.testing.assert_array_equal(batched[k], single[k])
        ok = float_close(batched[k], r[k])
        assert ok.all(), f"{k}: {np.count_nonzero(~ok)} elements off"


def test_zoo_models_are_found():
    """The zoo parametrisations run on the models (an empty glob would skip them without failing)."""
    names = {os.path.relpath(p, os.path.join(ROOT, "models")) for p in ZOO}
    assert {"digits_cnn.onnx", "digits_mlp.onnx", "structural/dynamic_batch.onnx"} <= names, sorted(names)


# ---------------------------------------------------------------------------------------------- single nodes

RNG = np.random.default_rng(0)


def f(*shape):
    return RNG.standard_normal(shape).astype(F32)


def single_node(op, inputs, attrs=None, opset=17, consts=(), n_out=1, domain=""):
    names = [f"i{k}" if v is not None else "" for k, v in enumerate(inputs)]
    const_names = {f"i{k}" for k in consts}
    feeds = {n: v for n, v in zip(names, inputs) if n and n not in const_names}
    inits = [numpy_helper.from_array(np.asarray(v), n) for n, v in zip(names, inputs) if n in const_names]
    node = helper.make_node(op, names, [f"o{k}" for k in range(n_out)], domain=domain, **(attrs or {}))
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape)
           for n, v in feeds.items()]
    g = helper.make_graph([node], "g", vis, [onnx.ValueInfoProto(name=f"o{k}") for k in range(n_out)], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    if not domain:
        m = onnx.shape_inference.infer_shapes(m)
    return m, feeds


def ort_run(m, feeds, outputs=None):
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run(outputs, feeds)


def assert_matches_ort(op, inputs, attrs=None, opset=17, consts=()):
    m, feeds = single_node(op, inputs, attrs, opset, consts)
    r = ort_run(m, feeds)[0]
    g = GoldenExecutor(m).run(feeds)["o0"]
    assert g.shape == r.shape and g.dtype == r.dtype
    if r.dtype.kind == "f":
        ok = float_close(g, r)
        assert ok.all(), f"max diff {np.abs(g - r).max()}"
    else:
        np.testing.assert_array_equal(g, r)


X4 = f(2, 6, 11, 10)
CONV_CASES = [
    ({}, (4, 6, 3, 3)),
    ({"pads": [1, 2, 0, 1], "strides": [2, 1]}, (4, 6, 3, 3)),
    ({"dilations": [2, 3], "pads": [2, 2, 2, 2]}, (4, 6, 3, 2)),
    ({"group": 2, "strides": [2, 2]}, (4, 3, 3, 3)),
    ({"group": 6, "pads": [1, 1, 1, 1]}, (12, 1, 3, 3)),  # depthwise, multiplier 2
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (4, 6, 4, 4)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 3]}, (4, 6, 4, 3)),
    ({"auto_pad": "VALID", "strides": [3, 2], "dilations": [1, 2]}, (4, 6, 2, 5)),
]


@pytest.mark.parametrize("attrs,wshape", CONV_CASES, ids=[str(c[0]) for c in CONV_CASES])
def test_conv(attrs, wshape):
    assert_matches_ort("Conv", [X4, f(*wshape), f(wshape[0])], attrs, consts=(1, 2))


def test_conv_1d_and_3d():
    assert_matches_ort("Conv", [f(2, 3, 17), f(5, 3, 4)], {"strides": [3], "pads": [2, 1]}, consts=(1,))
    assert_matches_ort("Conv", [f(1, 2, 5, 6, 7), f(3, 2, 2, 3, 2)], {"pads": [1, 0, 1, 0, 1, 1]}, consts=(1,))


CONVT_CASES = [
    ({}, (6, 4, 3, 3)),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1], "output_padding": [1, 0]}, (6, 4, 3, 3)),
    ({"group": 2, "strides": [2, 1], "dilations": [1, 2]}, (6, 2, 3, 3)),
    ({"strides": [2, 2], "output_shape": [21, 19]}, (6, 4, 3, 3)),
    ({"strides": [2, 2], "auto_pad": "SAME_UPPER"}, (6, 4, 3, 3)),
]


@pytest.mark.parametrize("attrs,wshape", CONVT_CASES, ids=[str(c[0]) for c in CONVT_CASES])
def test_conv_transpose(attrs, wshape):
    assert_matches_ort("ConvTranspose", [X4, f(*wshape), f(wshape[1] * attrs.get("group", 1))], attrs, consts=(1, 2))


POOL_CASES = [
    dict(kernel_shape=[3, 3]),
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], count_include_pad=1),
    dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1, ceil_mode=1),
    dict(kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(kernel_shape=[4, 4], strides=[3, 3], auto_pad="SAME_LOWER", count_include_pad=1),
    dict(kernel_shape=[2, 2], strides=[2, 2], dilations=[2, 2]),
]


@pytest.mark.parametrize("attrs", POOL_CASES, ids=[str(c) for c in POOL_CASES])
def test_pools(attrs):
    assert_matches_ort("AveragePool", [X4], attrs, opset=19)
    assert_matches_ort("MaxPool", [X4], {k: v for k, v in attrs.items() if k != "count_include_pad"}, opset=12)


def test_pools_misc():
    assert_matches_ort("AveragePool", [f(2, 3, 13)], dict(kernel_shape=[4], strides=[3], ceil_mode=1), opset=19)
    xq = RNG.integers(0, 255, (2, 3, 9, 9)).astype(np.uint8)
    assert_matches_ort("MaxPool", [xq], dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), opset=12)
    assert_matches_ort("GlobalAveragePool", [X4])
    assert_matches_ort("GlobalMaxPool", [X4])


@pytest.mark.parametrize("ta,tb", list(itertools.product([0, 1], [0, 1])))
def test_gemm_trans_flags(ta, tb):
    a = f(7, 5) if ta else f(5, 7)
    b = f(3, 7) if tb else f(7, 3)
    assert_matches_ort("Gemm", [a, b, f(3)], dict(transA=ta, transB=tb, alpha=0.7, beta=1.3))
    assert_matches_ort("Gemm", [a, b, f(5, 1)], dict(transA=ta, transB=tb))
    assert_matches_ort("Gemm", [a, b], dict(transA=ta, transB=tb))


def test_matmul_broadcasting():
    assert_matches_ort("MatMul", [f(2, 1, 4, 5), f(3, 5, 6)])
    assert_matches_ort("MatMul", [f(5), f(5, 3)])
    assert_matches_ort("MatMul", [f(2, 4, 5), f(5)])


def _resize_inputs(x, scales=None, sizes=None, roi=None):
    roi = np.zeros(0, F32) if roi is None else np.asarray(roi, F32)
    if sizes is not None:
        return [x, roi, None, np.asarray(sizes, np.int64)]
    return [x, roi, np.asarray(scales, F32)]


RESIZE_CASES = [
    ({"mode": "nearest", "coordinate_transformation_mode": "asymmetric", "nearest_mode": "floor"}, [1, 1, 2, 2], None),
    ({"mode": "nearest"}, [1, 1, 2, 3], None),
    ({"mode": "nearest"}, [1, 1, 0.6, 0.5], None),
    ({"mode": "nearest", "nearest_mode": "round_prefer_ceil"}, [1, 1, 1.7, 2.5], None),
    ({"mode": "nearest", "coordinate_transformation_mode": "align_corners", "nearest_mode": "ceil"}, None,
     [1, 2, 9, 4]),
    ({"mode": "linear"}, [1, 1, 2, 2], None),
    ({"mode": "linear"}, [1, 1, 0.5, 0.7], None),
    ({"mode": "linear", "coordinate_transformation_mode": "align_corners"}, None, [1, 2, 8, 11]),
    ({"mode": "linear", "coordinate_transformation_mode": "asymmetric"}, [1, 1, 3, 1.5], None),
    ({"mode": "linear", "coordinate_transformation_mode": "pytorch_half_pixel"}, None, [1, 2, 1, 13]),
]


@pytest.mark.parametrize("attrs,scales,sizes", RESIZE_CASES, ids=[f"{c[0]}-{c[1] or c[2]}" for c in RESIZE_CASES])
def test_resize(attrs, scales, sizes):
    ins = _resize_inputs(f(1, 2, 5, 7), scales, sizes)
    assert_matches_ort("Resize", ins, attrs, opset=13, consts=(1, 2, 3))


def test_resize_crop_and_opset10():
    x = f(1, 2, 5, 7)
    ins = _resize_inputs(x, sizes=[1, 2, 6, 6], roi=[0, 0, 0.1, 0.2, 1, 1, 0.9, 0.7])
    attrs = {"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize", "extrapolation_value": 3.0}
    assert_matches_ort("Resize", ins, attrs, opset=13, consts=(1, 3))
    assert_matches_ort("Resize", [x, np.asarray([1, 1, 2, 2], F32)], {"mode": "nearest"}, opset=10, consts=(1,))


ELEMENTWISE = ["Relu", "Sigmoid", "Tanh", "Erf", "Sqrt", "Exp", "Log", "Sign", "Abs", "Neg", "Floor", "Ceil", "Round",
               "HardSwish"]


@pytest.mark.parametrize("op", ELEMENTWISE)
def test_unary(op):
    v = f(3, 4, 5) * 3
    if op in ("Sqrt", "Log"):
        v = np.abs(v) + F32(0.1)
    if op == "Round":
        v = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 2.4, 2.6], F32)
    assert_matches_ort(op, [v])


def test_binary_and_activation_attrs():
    a, b = f(3, 4, 5), f(4, 5)
    for op in ("Add", "Sub", "Mul", "Div", "Max", "Min"):
        assert_matches_ort(op, [a, b])
    assert_matches_ort("Equal", [np.round(a), np.round(b)])
    assert_matches_ort("Pow", [np.abs(a), b])
    assert_matches_ort("Where", [a > 0, a, b])
    assert_matches_ort("LeakyRelu", [a], {"alpha": 0.1})
    assert_matches_ort("LeakyRelu", [a])
    assert_matches_ort("HardSigmoid", [a], {"alpha": 0.3, "beta": 0.4})
    assert_matches_ort("PRelu", [f(2, 3, 4, 4), f(3, 1, 1)], consts=(1,))
    assert_matches_ort("Clip", [a, F32(-0.5), F32(0.7)], consts=(1, 2))
    assert_matches_ort("Clip", [a, None, F32(0.7)], consts=(2,))
    assert_matches_ort("Clip", [a], {"min": -0.2, "max": 0.3}, opset=6)
    assert_matches_ort("Div", [np.array([7, -7, 7, -7], np.int32), np.array([2, 2, -2, -2], np.int32)])


@pytest.mark.parametrize("opset", [11, 13])
def test_softmax_axis_semantics(opset):
    a = f(3, 4, 5)
    for axis in (-1, 0, 1, 2):
        assert_matches_ort("Softmax", [a], {"axis": axis}, opset=opset)
    assert_matches_ort("Softmax", [a], opset=opset)


def test_shape_ops():
    a = f(3, 4, 5)
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    assert_matches_ort("Reshape", [a, i64(0, -1)], consts=(1,))
    assert_matches_ort("Flatten", [a], {"axis": -1})
    assert_matches_ort("Flatten", [a], {"axis": 0})
    assert_matches_ort("Transpose", [a], {"perm": [2, 0, 1]})
    assert_matches_ort("Squeeze", [f(3, 1, 4, 1), i64(1)], consts=(1,))
    assert_matches_ort("Squeeze", [f(3, 1, 4, 1)])
    assert_matches_ort("Unsqueeze", [a, i64(0, -1)], consts=(1,))
    assert_matches_ort("Unsqueeze", [a], {"axes": [1, 4]}, opset=11)
    assert_matches_ort("Concat", [a, f(3, 2, 5), f(3, 1, 5)], {"axis": 1})
    for st, en, ax, sp in [([1], [3], [1], [1]), ([-1], [-100], [2], [-1]), ([0, 1], [100, -1], [0, 2], [2, 1]),
                           ([4], [0], [2], [-2])]:
        assert_matches_ort("Slice", [a, i64(*st), i64(*en), i64(*ax), i64(*sp)], consts=(1, 2, 3, 4))
    assert_matches_ort("Gather", [a, np.array([[0, -1], [1, 2]], np.int64)], {"axis": 1}, consts=(1,))
    assert_matches_ort("Shape", [a], {"start": -2}, opset=15)
    assert_matches_ort("Cast", [a * 10], {"to": TensorProto.INT32})
    assert_matches_ort("Pad", [a, i64(0, 1, 2, 0, 2, 1), F32(1.5)], consts=(1, 2))
    assert_matches_ort("Pad", [a, i64(0, 1, -1, 0, 2, 1)], consts=(1,))
    assert_matches_ort("Pad", [a, i64(0, 1, 2, 0, 2, 1)], {"mode": "reflect"}, consts=(1,))
    assert_matches_ort("ReduceMean", [a], {"axes": [0, 2], "keepdims": 0}, opset=13)
    assert_matches_ort("ReduceMean", [a, i64(1)], opset=18, consts=(1,))
    bn = [f(2, 3, 4, 4), f(3), f(3), f(3), np.abs(f(3)) + F32(0.1)]
    assert_matches_ort("BatchNormalization", bn, {"epsilon": 1e-3}, consts=(1, 2, 3, 4))
    m, feeds = single_node("Split", [f(3, 10, 2), i64(3, 7)], {"axis": 1}, consts=(1,), n_out=2)
    g, r = GoldenExecutor(m).run(feeds, ["o0", "o1"]), ort_run(m, feeds)
    np.testing.assert_array_equal(g["o0"], r[0])
    np.testing.assert_array_equal(g["o1"], r[1])


# ---------------------------------------------------------------------------------------------- QDQ / integer


@pytest.mark.parametrize("dt,opset", [(np.int8, 13), (np.uint8, 13), (np.int16, 21), (np.uint16, 21)])
@pytest.mark.parametrize("per_axis", [False, True])
def test_quantize_dequantize_linear(dt, opset, per_axis):
    c = 5
    scale = RNG.uniform(0.01, 1.0, c if per_axis else ()).astype(F32)
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    zp = RNG.integers(max(lo, -100), min(hi, 100), c if per_axis else ()).astype(dt)
    x = (RNG.standard_normal((16, c, 9)) * 60).astype(F32)
    s = scale[:, None] if per_axis else scale
    x[0] = ((np.arange(c * 9).reshape(c, 9) - 20 + 0.5) * s).astype(F32)  # exact ties
    m, feeds = single_node("QuantizeLinear", [x, scale, zp], {"axis": 1}, opset, consts=(1, 2))
    np.testing.assert_array_equal(GoldenExecutor(m).run(feeds)["o0"], ort_run(m, feeds)[0])
    q = RNG.integers(lo, hi, x.shape).astype(dt)
    m, feeds = single_node("DequantizeLinear", [q, scale, zp], {"axis": 1}, opset, consts=(1, 2))
    np.testing.assert_array_equal(GoldenExecutor(m).run(feeds)["o0"], ort_run(m, feeds)[0])


def qdq_layer(op, attrs, x_shape, adt=np.uint8, b_shape=None, weight=None, w_axis=0, bias=False, same_q=False):
    """DQ(x) [, DQ(b) | DQ(uint8 weight, zp 128, per channel)] [, DQ(int32 bias)] -> op -> Q, random scales."""
    lo, hi = np.iinfo(adt).min, np.iinfo(adt).max
    tdt = helper.np_dtype_to_tensor_dtype(np.dtype(adt))
    inits, nodes, feeds, ins = [], [], {}, []

    def const(v, n):
        inits.append(numpy_helper.from_array(np.asarray(v), n))

    sx, zx = F32(np.exp(RNG.uniform(-5, -1))), np.asarray(RNG.integers(lo, hi + 1), adt)
    const(sx, "sx")
    const(zx, "zx")
    feeds["xq"] = RNG.integers(lo, hi + 1, x_shape).astype(adt)
    nodes.append(helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["x"]))
    ins.append("x")
    if b_shape is not None:
        const(F32(np.exp(RNG.uniform(-5, -1))), "sb")
        const(np.asarray(RNG.integers(lo, hi + 1), adt), "zb")
        feeds["bq"] = RNG.integers(lo, hi + 1, b_shape).astype(adt)
        nodes.append(helper.make_node("DequantizeLinear", ["bq", "sb", "zb"], ["b"]))
        ins.append("b")
    if weight is not None:
        c = weight[w_axis]
        sw = RNG.uniform(0.001, 0.05, c).astype(F32)
        const(RNG.integers(1, 256, weight).astype(np.uint8), "wq")
        const(sw, "sw")
        const(np.full(c, 128, np.uint8), "zw")
        nodes.append(helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["w"], axis=w_axis))
        ins.append("w")
        if bias:
            const(RNG.integers(-20000, 20000, c).astype(np.int32), "cq")
            const((sx * sw).astype(F32), "sc")
            const(np.zeros(c, np.int32), "zc")
            nodes.append(helper.make_node("DequantizeLinear", ["cq", "sc", "zc"], ["c"], axis=0))
            ins.append("c")
    nodes.append(helper.make_node(op, ins, ["y"], **attrs))
    if same_q:
        nodes.append(helper.make_node("QuantizeLinear", ["y", "sx", "zx"], ["yq"]))
    else:
        const(F32(np.exp(RNG.uniform(-4, 0))), "sy")
        const(np.asarray(RNG.integers(lo, hi + 1), adt), "zy")
        nodes.append(helper.make_node("QuantizeLinear", ["y", "sy", "zy"], ["yq"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(k, tdt, v.shape) for k, v in feeds.items()],
                          [helper.make_tensor_value_info("yq", tdt, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), feeds


INT_CASES = {
    "conv3x3_bias": ("Conv", dict(pads=[1, 1, 1, 1]), (2, 8, 9, 7), dict(weight=(6, 8, 3, 3), bias=True),
                     "QLinearConv"),
    "conv_s2_d2_g2": ("Conv", dict(pads=[2, 1, 0, 2], strides=[2, 2], dilations=[2, 1], group=2), (2, 8, 11, 9),
                      dict(weight=(6, 4, 3, 3), bias=True), "QLinearConv"),
    "conv_depthwise": ("Conv", dict(pads=[1, 1, 1, 1], group=8), (2, 8, 9, 7), dict(weight=(8, 1, 3, 3), bias=True),
                       "QLinearConv"),
    "gemm_transB_bias": ("Gemm", dict(transB=1), (5, 40), dict(weight=(7, 40), bias=True, w_axis=0), "QGemm"),
    "gemm_bias": ("Gemm", {}, (5, 40), dict(weight=(40, 7), bias=True, w_axis=1), "QGemm"),
    "matmul_4d_weight": ("MatMul", {}, (2, 3, 5, 40), dict(weight=(40, 7), w_axis=1), "QLinearMatMul"),
    "matmul_act_act": ("MatMul", {}, (2, 3, 5, 20), dict(b_shape=(2, 3, 20, 6)), "QLinearMatMul"),
    "add_same": ("Add", {}, (2, 8, 6, 7), dict(b_shape=(2, 8, 6, 7)), "QLinearAdd"),
    "add_bcast_b": ("Add", {}, (2, 8, 6, 7), dict(b_shape=(1, 8, 1, 1)), "QLinearAdd"),
    "add_bcast_a": ("Add", {}, (1, 8, 1, 1), dict(b_shape=(2, 8, 6, 7)), "QLinearAdd"),
    "add_scalar_a": ("Add", {}, (), dict(b_shape=(2, 8, 6, 7)), "QLinearAdd"),
    "mul_bcast": ("Mul", {}, (2, 8, 6, 7), dict(b_shape=(1, 8, 1, 1)), "QLinearMul"),
    "global_avg_pool": ("GlobalAveragePool", {}, (2, 8, 6, 7), {}, "QLinearGlobalAveragePool"),
    "avg_pool_pad": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), (2, 8, 9, 7), {},
                     "QLinearAveragePool"),
    "avg_pool_ceil_incl": ("AveragePool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                                               count_include_pad=1, ceil_mode=1), (2, 8, 10, 7), {},
                           "QLinearAveragePool"),
    "max_pool": ("MaxPool", dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), (2, 8, 9, 7),
                 dict(same_q=True), None),
}


@pytest.mark.parametrize("case", sorted(INT_CASES))
def test_integer_kernels_bit_exact(case, tmp_path):
    op, attrs, shape, kw, ort_kernel = INT_CASES[case]
    for adt in (np.uint8, np.int8):
        if ort_kernel in ("QLinearConv", "QGemm", "QLinearMatMul") and adt == np.int8:
            continue  # x86 without VNNI: onnxruntime runs int8 activations x uint8 weights in float (see report)
        for _ in range(3):
            m, feeds = qdq_layer(op, attrs, shape, adt, **kw)
            so = ort.SessionOptions()
            so.log_severity_level = 3
            so.optimized_model_filepath = str(tmp_path / "opt.onnx")
            r = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
            if ort_kernel:  # the comparison is only meaningful if onnxruntime used its integer kernel
                assert ort_kernel in {n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node}
            ex = GoldenExecutor(m)
            assert ex.fused, ex.describe()
            np.testing.assert_array_equal(ex.run(feeds)["yq"], r)


def test_requantization_ties_round_half_even():
    # multiplier exactly 0.5: every odd accumulator is a tie; MLAS rounds half to even, then adds the zero point
    from qpass.reference.numerics import requantize_mlas
    acc = np.arange(-9, 10)
    got = requantize_mlas(acc, F32(0.5), 3, np.uint8)
    np.testing.assert_array_equal(got, np.clip(np.rint(acc / 2) + 3, 0, 255))
    assert requantize_mlas(np.array([10_000]), F32(1.0), 250, np.uint8)[0] == 255


def accumulator_model():
    """x (uint8, zp 0) [100, 100, 100, 50] @ w [1, 1, 1, -1]: partial sums 100, 200, 300, 250; scales 1."""
    inits = [numpy_helper.from_array(np.asarray(v), n) for v, n in [
        (F32(1), "s"), (np.uint8(0), "zx"), (np.array([[1], [1], [1], [-1]], np.int8), "wq"), (np.int8(0), "zw"),
        (np.int16(0), "zy")]]
    nodes = [helper.make_node("DequantizeLinear", ["xq", "s", "zx"], ["x"]),
             helper.make_node("DequantizeLinear", ["wq", "s", "zw"], ["w"]),
             helper.make_node("MatMul", ["x", "w"], ["y"], name="mm"),
             helper.make_node("QuantizeLinear", ["y", "s", "zy"], ["yq"])]
    g = helper.make_graph(nodes, "acc", [helper.make_tensor_value_info("xq", TensorProto.UINT8, [1, 4])],
                          [helper.make_tensor_value_info("yq", TensorProto.INT16, [1, 1])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])


def test_accumulator_saturate_and_wrap():
    m = accumulator_model()
    feeds = {"xq": np.array([[100, 100, 100, 50]], np.uint8)}
    assert GoldenExecutor(m).run(feeds)["yq"].item() == 250 == ort_run(m, feeds)[0].item()
    wrap = GoldenExecutor(m, acc_bits=8, overflow="wrap")
    assert wrap.run(feeds)["yq"].item() == 250 - 256
    assert wrap.stats["mm"]["overflowed"] == 1
    sat = GoldenExecutor(m, acc_bits=8, overflow="saturate")
    assert sat.run(feeds)["yq"].item() == 77  # 100, 127 (sat), 127 (sat), 77
    st = sat.stats["mm"]
    assert (st["saturation_events"], st["overflowed"], st["acc_min"], st["acc_max"]) == (2, 1, 250, 250)
    wide = GoldenExecutor(m, acc_bits=10, overflow="saturate")
    assert wide.run(feeds)["yq"].item() == 250 and wide.stats["mm"]["saturation_events"] == 0


# ---------------------------------------------------------------------------------------------- QONNX


def qonnx_node(op, inputs, attrs=None, consts=()):
    return single_node(op, inputs, attrs, consts=consts, domain="qonnx.custom_op.general")


def run_q(op, inputs, attrs=None):
    m, feeds = qonnx_node(op, inputs, attrs)
    m.opset_import.append(helper.make_opsetid("qonnx.custom_op.general", 1))
    return GoldenExecutor(m).run(feeds)["o0"]


def test_quant_vs_multithreshold_tie_example():
    """anchors.md: Quant (half-even) and FINN's half-step MultiThreshold (>=, half-up) differ on ties."""
    x = np.array([0.5, 1.5, 2.5, 3.49, 14.5, 20], F32)
    one, zero, four = F32(1), F32(0), F32(4)
    q = run_q("Quant", [x, one, zero, four], {"signed": 0, "narrow": 0, "rounding_mode": "ROUND"})
    np.testing.assert_array_equal(q, [0, 2, 2, 3, 14, 15])
    thresholds = (F32(0.5) + np.arange(15, dtype=F32)).reshape(1, 15)
    mt = run_q("MultiThreshold", [x.reshape(1, 6), thresholds], {"out_dtype": "UINT4"})
    np.testing.assert_array_equal(mt.reshape(-1), [1, 2, 3, 3, 15, 15])


@pytest.mark.parametrize("mode,expected", [
    ("ROUND", [2, -2, 4, -4, 2, -3]), ("HALF_EVEN", [2, -2, 4, -4, 2, -3]), ("CEIL", [3, -2, 4, -3, 3, -2]),
    ("FLOOR", [2, -3, 3, -4, 2, -3]), ("UP", [3, -3, 4, -4, 3, -3]), ("DOWN", [2, -2, 3, -3, 2, -2]),
    ("HALF_UP", [3, -3, 4, -4, 2, -3]), ("HALF_DOWN", [2, -2, 3, -3, 2, -3])])
def test_quant_rounding_modes(mode, expected):
    x = np.array([2.5, -2.5, 3.5, -3.5, 2.4, -2.6], F32)
    y = run_q("Quant", [x, F32(1), F32(0), F32(8)], {"signed": 1, "narrow": 0, "rounding_mode": mode})
    np.testing.assert_array_equal(y, expected)


def test_quant_bounds_scale_zeropoint():
    x = np.array([-300, -128.4, -127.6, 0.26, 126.6, 300], F32)
    s = F32(0.5)
    signed = run_q("Quant", [x * s, s, F32(0), F32(8)], {"signed": 1, "narrow": 0})
    np.testing.assert_array_equal(signed / s, [-128, -128, -128, 0, 127, 127])
    narrow = run_q("Quant", [x * s, s, F32(0), F32(8)], {"signed": 1, "narrow": 1})
    np.testing.assert_array_equal(narrow / s, [-127, -127, -127, 0, 127, 127])
    unsigned_narrow = run_q("Quant", [np.array([-3, 253.6, 999], F32), F32(1), F32(0), F32(8)],
                            {"signed": 0, "narrow": 1})
    np.testing.assert_array_equal(unsigned_narrow, [0, 254, 254])  # narrow also applies to unsigned: 2^b - 2
    zp = run_q("Quant", [np.array([0.0, 1.0, -10.0], F32), F32(0.25), F32(3), F32(4)], {"signed": 1, "narrow": 0})
    np.testing.assert_array_equal(zp, (np.clip(np.round(np.array([0, 4, -40]) + 3), -8, 7) - 3) * 0.25)
    bip1 = run_q("Quant", [np.array([-0.1, 0.0, 0.3], F32), F32(2), F32(0), F32(1)], {"signed": 1, "narrow": 0})
    np.testing.assert_array_equal(bip1, [-2, 2, 2])  # qonnx's 1-bit signed special case


def test_bipolar_quant_and_trunc_v1():
    np.testing.assert_array_equal(run_q("BipolarQuant", [np.array([-1.5, 0, 2], F32), F32(0.5)]), [-0.5, 0.5, 0.5])
    x = np.array([37.0, -37.0, 40.0, 7.9], F32)
    y = run_q("Trunc", [x, F32(1), F32(0), F32(8), F32(4)], {"rounding_mode": "FLOOR"})
    np.testing.assert_array_equal(y, np.floor(np.round(x) / 16))  # v1 rescales with the input scale
    y = run_q("Trunc", [x, F32(1), F32(0), F32(8), F32(4)], {"rounding_mode": "ROUND"})
    np.testing.assert_array_equal(y, np.round(np.round(x) / 16))


def test_multithreshold_layouts_and_output_affine():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 3, 4, 5)).astype(F32)
    t = np.sort(rng.normal(size=(3, 7)).astype(F32), axis=1)[:, ::-1].copy()  # unsorted is allowed
    want = (x[..., None] >= t[None, :, None, None, :]).sum(-1) * 0.5 - 1.0
    got = run_q("MultiThreshold", [x, t], {"out_dtype": "UINT3", "out_scale": 0.5, "out_bias": -1.0})
    np.testing.assert_array_equal(got, want)
    nhwc = run_q("MultiThreshold", [x.transpose(0, 2, 3, 1).copy(), t], {"out_dtype": "UINT3", "data_layout": "NHWC",
                                                                         "out_scale": 0.5, "out_bias": -1.0})
    np.testing.assert_array_equal(nhwc, want.transpose(0, 2, 3, 1))
    x2 = x[:, :, 0, 0]
    nc = run_q("MultiThreshold", [x2, t], {"out_dtype": "UINT3"})
    np.testing.assert_array_equal(nc, (x2[..., None] >= t[None]).sum(-1))


# ---------------------------------------------------------------------------------------------- errors / API


def test_unsupported_op_fails_at_construction():
    m, _ = single_node("FancyOp", [f(2, 3)], domain="com.example")
    m.opset_import.append(helper.make_opsetid("com.example", 1))
    m.graph.node[0].name = "my_fancy_node"
    with pytest.raises(UnsupportedOpError) as err:
        GoldenExecutor(m)
    msg = str(err.value)
    assert "FancyOp" in msg and "my_fancy_node" in msg and "\n" not in msg
    m, _ = single_node("Resize", _resize_inputs(f(1, 1, 4, 4), [1, 1, 2, 2]), {"mode": "nearest", "antialias": 1},
                       opset=18, consts=(1, 2))
    with pytest.raises(UnsupportedOpError, match="antialias"):
        GoldenExecutor(m)


def test_intermediate_outputs_and_describe():
    path = os.path.join(ROOT, "models", "digits_cnn.onnx")
    q = qpass.optimize(qpass.load(path), calib=_calib(path)).model
    ex = GoldenExecutor(q)
    assert {"QLinearConv", "QGemm"} <= set(ex.fused.values())
    conv_out = next(n.output[0] for n in q.graph.node if n.op_type == "Conv")
    x = np.load(_calib(path))["input"][0]
    out = ex.run({"input": x}, [conv_out, "logits"])
    assert out[conv_out].shape == (1, 16, 8, 8) and out["logits"].shape == (1, 10)
    np.testing.assert_array_equal(out["logits"], ex.run({"input": x})["logits"])
    assert "QLinearConv" in ex.describe()
    sess = make_session(q)
    np.testing.assert_array_equal(out["logits"], sess.run(["logits"], {"input": x})[0])


def test_linear_weights_from_constant_nodes_run():
    """A Conv / MatMul whose weight is produced by a Constant node (as many exporters write it) runs, and equals
    onnxruntime (the integer-plan search used to index the Constant node's missing input)."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    m2 = rng.standard_normal((4 * 6 * 6, 5)).astype(np.float32)
    nodes = [helper.make_node("Constant", [], ["w"], value=numpy_helper.from_array(w, "w")),
             helper.make_node("Constant", [], ["m2"], value=numpy_helper.from_array(m2, "m2")),
             helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Flatten", ["c"], ["f"]),
             helper.make_node("MatMul", ["f", "m2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.standard_normal((1, 3, 6, 6)).astype(np.float32)
    got = GoldenExecutor(m).run({"x": x})["y"]
    import onnxruntime as ort

    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
