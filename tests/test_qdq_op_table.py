"""Issue 12, integer coverage: every op onnxruntime runs on integers stays integer, data movement shares its input's
parameters (no requantization), each quantized array is stored once; small built graphs in, the structure
onnxruntime runs and the numbers (reference interpreter == onnxruntime, codes) out; the digits models against
quantize_static."""
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session, run_samples as ort_run
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq import QUANTIZERS
from qpass.reference import run_samples as golden_run

from conftest import DIGITS, MODELS

RNG = np.random.default_rng(5)


def const(name, *shape, s=0.3, dtype=np.float32):
    return numpy_helper.from_array((RNG.standard_normal(shape) * s).astype(dtype), name)


def ints(name, values):
    return numpy_helper.from_array(np.asarray(values, np.int64), name)


def build(nodes, inputs, out, inits):
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def image_input(c=4, hw=6):
    return [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", c, hw, hw])]


def quantize(model, feeds, **opts):
    """The default pipeline's static QDQ (quantize_qdq's op table), without the passes after it that may put a
    Gemm on run-time ranges or a quantizer on float (choose_dynamic, auto_precision)."""
    pipe = qpass.load_pipeline("default", {"quantize_qdq": opts} if opts else None)
    return qpass.optimize(model, calib=bind_samples(feeds, model), pipeline=pipe,
                          disabled={"choose_dynamic", "auto_precision"})


def ort_ops(model, tmp_path) -> Counter:
    """Op types of the graph onnxruntime runs (its optimizer applied)."""
    path = tmp_path / "opt.onnx"
    make_session(model, optimize=True, optimized_path=str(path))
    return Counter(n.op_type for n in onnx.load(path).graph.node)


def codes_match(model, feeds):
    """Every QuantizeLinear output of ``model``: reference interpreter == onnxruntime."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    codes = [n.output[0] for n in model.graph.node if n.op_type == "QuantizeLinear"]
    for name in codes:
        m.graph.output.append(helper.make_tensor_value_info(name, TensorProto.UINT8, None))
    s = bind_samples(feeds, m)
    g, r = golden_run(m, s, outputs=codes), ort_run(m, s, outputs=codes)
    for k in codes:
        np.testing.assert_array_equal(g[k], r[k], err_msg=k)


def test_table_has_every_integer_op_of_onnxruntime():
    wanted = {"Conv", "ConvTranspose", "Gemm", "MatMul", "Add", "Mul", "Concat", "AveragePool", "GlobalAveragePool",
              "Sigmoid", "LeakyRelu", "Softmax", "Resize", "MaxPool", "Transpose", "Reshape", "Flatten", "Squeeze",
              "Unsqueeze", "Slice", "Split", "Gather", "Pad"}
    assert wanted <= set(QUANTIZERS)


def test_data_movement_shares_its_input_grid(tmp_path):
    """Conv -> MaxPool -> Reshape -> Transpose -> Slice -> Unsqueeze -> Squeeze -> MatMul: one grid from the
    Conv to the MatMul, no Q/DQ between them in what onnxruntime runs."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("MaxPool", ["c"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["r"]), helper.make_node("Transpose", ["r"], ["t"], perm=[0, 2, 1]),
             helper.make_node("Slice", ["t", "st", "en", "ax"], ["s"]), helper.make_node("Unsqueeze", ["s", "ax"], ["u"]),
             helper.make_node("Squeeze", ["u", "ax"], ["q"]), helper.make_node("MatMul", ["q", "w2"], ["y"])]
    m = build(nodes, image_input(), "y", [const("w", 8, 4, 3, 3), ints("shape", [0, 8, 9]), ints("st", [1]),
                                          ints("en", [8]), ints("ax", [1]), const("w2", 8, 5)])
    feeds = {"x": RNG.standard_normal((16, 1, 4, 6, 6)).astype(np.float32)}
    res = quantize(m, feeds)
    params = res.report.results["quantization"]["tensor_params"]
    assert all(params[t] == params["c"] for t in ("p", "r", "t", "s", "u", "q"))
    ops = ort_ops(res.model, tmp_path)
    # the MatMul writes the graph output: float, on onnxruntime's MatMulIntegerToFloat (float_outputs)
    assert ops["QLinearConv"] == 1 and ops["MatMulIntegerToFloat"] == 1
    assert ops["QuantizeLinear"] == 1 and ops["DequantizeLinear"] == 0  # the model's input only
    codes_match(res.model, feeds)


def test_lookup_ops_concat_and_pools_run_on_integer_kernels(tmp_path):
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Sigmoid", ["c"], ["sg"]), helper.make_node("LeakyRelu", ["c"], ["lr"], alpha=0.1),
             helper.make_node("Concat", ["sg", "lr"], ["cat"], axis=1),
             helper.make_node("AveragePool", ["cat"], ["ap"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("GlobalAveragePool", ["ap"], ["gp"]), helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "wf"], ["g"], transB=1), helper.make_node("Softmax", ["g"], ["y"])]
    m = build(nodes, image_input(), "y", [const("w", 6, 4, 3, 3), const("wf", 5, 12)])
    feeds = {"x": RNG.standard_normal((16, 1, 4, 6, 6)).astype(np.float32)}
    # float_outputs off: the Softmax writes the graph output, which float_outputs would leave to float Softmax
    res = quantize(m, feeds, float_outputs=False)
    assert not res.report.results["quantization"]["float_nodes"]
    ops = ort_ops(res.model, tmp_path)
    for kernel in ("QLinearConv", "QLinearSigmoid", "QLinearLeakyRelu", "QLinearConcat", "QLinearAveragePool",
                   "QLinearGlobalAveragePool", "QGemm", "QLinearSoftmax"):
        assert ops[kernel] == 1, ops
    assert ops["QuantizeLinear"] == 1
    codes_match(res.model, feeds)


def test_pad_resize_and_hardswish(tmp_path):
    """Pad runs on the codes (onnxruntime would not drop its Q/DQ); nearest Resize shares the grid, linear stays
    float; HardSwish becomes x * HardSigmoid(x) with the Mul on QLinearMul."""
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Pad", ["c", "pads"], ["p"]),
             helper.make_node("Resize", ["p", "", "sc"], ["r"], mode="nearest"),
             helper.make_node("HardSwish", ["r"], ["h"]), helper.make_node("Conv", ["h", "w2"], ["k"]),
             helper.make_node("Resize", ["k", "", "sc"], ["y"], mode="linear")]
    m = build(nodes, image_input(), "y", [const("w", 6, 4, 3, 3), ints("pads", [0, 0, 1, 1, 0, 0, 1, 1]),
                                          numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"),
                                          const("w2", 3, 6, 1, 1)])
    feeds = {"x": RNG.standard_normal((16, 1, 4, 6, 6)).astype(np.float32)}
    res = quantize(m, feeds)
    q = res.report.results["quantization"]
    assert sorted(q["float_nodes"].values()) == [
        "HardSigmoid has no integer kernel in onnxruntime's QDQ path",
        "linear Resize: onnxruntime interpolates uint8 with its own rounding (kept float to stay exact)"]
    assert q["tensor_params"]["r"] == q["tensor_params"]["c"]
    pad = next(n for n in res.model.graph.node if n.op_type == "Pad")
    prod = {o: n for n in res.model.graph.node for o in n.output}
    assert prod[pad.input[0]].op_type == "QuantizeLinear"  # Pad reads codes
    ops = ort_ops(res.model, tmp_path)
    assert ops["QLinearConv"] == 2 and ops["QLinearMul"] == 1 and ops["HardSigmoid"] == 1
    codes_match(res.model, feeds)


def test_each_quantized_array_is_stored_once():
    """Gemm weights read by several nodes (and an identical copy under another name), a Gather table read twice, and
    a float table two excluded Gathers read: one stored array each."""
    w, table, floats = RNG.standard_normal((64, 64)) * 0.3, RNG.standard_normal((500, 64)), RNG.standard_normal((500, 64))
    nodes = [helper.make_node("Gather", ["t1", "ids"], ["g1"]), helper.make_node("Gather", ["t2", "ids"], ["g2"]),
             helper.make_node("Add", ["g1", "g2"], ["a"]), helper.make_node("MatMul", ["a", "w1"], ["m1"]),
             helper.make_node("MatMul", ["m1", "w1"], ["m2"]), helper.make_node("MatMul", ["m2", "w2"], ["m3"]),
             helper.make_node("Gather", ["f1", "ids"], ["h1"], name="keep_a"),
             helper.make_node("Gather", ["f2", "ids"], ["h2"], name="keep_b"),
             helper.make_node("Add", ["h1", "h2"], ["h"]), helper.make_node("Add", ["m3", "h"], ["y"])]
    inits = [numpy_helper.from_array(v.astype(np.float32), n) for v, n in
             ((table, "t1"), (table, "t2"), (w, "w1"), (w, "w2"), (floats, "f1"), (floats, "f2"))]
    m = build(nodes, [helper.make_tensor_value_info("ids", TensorProto.INT64, ["n", 5])], "y", inits)
    feeds = {"ids": RNG.integers(0, 500, (16, 1, 5))}
    res = quantize(m, feeds, exclude=["keep_*"])
    by_shape = Counter((tuple(i.dims), i.data_type) for i in res.model.graph.initializer if len(i.dims) == 2)
    assert by_shape == {((64, 64), TensorProto.INT8): 1, ((500, 64), TensorProto.UINT8): 1,
                        ((500, 64), TensorProto.FLOAT): 1}
    assert len(res.model.SerializeToString()) < 0.32 * len(m.SerializeToString())  # 2 + 2 + 2 arrays -> 1 + 1 + 1


def _census(path) -> tuple[int, int]:
    """(integer matrix kernels, Q + DQ nodes) of what onnxruntime runs for the model at ``path``."""
    opt = path.with_suffix(".opt.onnx")
    make_session(onnx.load(path), optimize=True, optimized_path=str(opt))
    ops = Counter(n.op_type for n in onnx.load(opt).graph.node)
    return (sum(v for k, v in ops.items() if k in ("QLinearConv", "QGemm", "QLinearMatMul")),
            ops["QuantizeLinear"] + ops["DequantizeLinear"])


@pytest.mark.parametrize("name", DIGITS)
def test_digits_at_least_as_integer_as_quantize_static(name, quantized_digits, tmp_path):
    ort_q = pytest.importorskip("onnxruntime.quantization")
    calib = np.load(MODELS / f"{name}.calib.npz")
    feeds = iter([{"input": calib["input"][i]} for i in range(16)])

    class Reader(ort_q.CalibrationDataReader):
        def get_next(self):
            return next(feeds, None)

    qs = tmp_path / "qs.onnx"
    ort_q.quantize_static(str(MODELS / f"{name}.onnx"), str(qs), Reader(), quant_format=ort_q.QuantFormat.QDQ,
                          per_channel=True, weight_type=ort_q.QuantType.QInt8)
    mine = tmp_path / "qpass.onnx"
    qpass.save(quantized_digits(name).model, mine)
    (k_q, qdq_q), (k_s, qdq_s) = _census(mine), _census(qs)
    assert k_q >= k_s and qdq_q <= qdq_s
    assert mine.stat().st_size <= 1.05 * qs.stat().st_size
