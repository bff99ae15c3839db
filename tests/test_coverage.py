"""Coverage of what users bring: recurrent layers, attention, transposed / grouped convs, Resize, several inputs,
wrong declared output shapes. Unsupported ops stay float with a reason; the model always converts."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.samples import bind_samples
from qpass.analysis.evaluate import compare

RNG = np.random.default_rng(11)


def W(name, *shape, s=0.3):
    return numpy_helper.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)


def model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def vi(name, shape, t=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, t, shape)


def quantize_and_compare(m, calib: dict, min_sqnr=25.0):
    samples = bind_samples(calib, m)
    res = qpass.optimize(m, calib=samples)
    cmp = compare(m, res.model, samples)
    assert cmp.sqnr_db > min_sqnr, cmp.lines()
    return res


@pytest.mark.parametrize("op", ["LSTM", "GRU"])
def test_recurrent_weights_are_quantised(op):
    gates = 4 if op == "LSTM" else 3
    h, d = 16, 8
    m = model([helper.make_node(op, ["x", "w", "r", "b"], ["y", "yh"], hidden_size=h),
               helper.make_node("Squeeze", ["yh", "ax"], ["hs"]),
               helper.make_node("MatMul", ["hs", "fc"], ["out"])],
              [vi("x", [6, "n", d])], [vi("out", ["n", 5])],
              [W("w", 1, gates * h, d), W("r", 1, gates * h, h), W("b", 1, 2 * gates * h, s=0.1),
               numpy_helper.from_array(np.array([0], np.int64), "ax"), W("fc", h, 5)])
    res = quantize_and_compare(m, {"x": RNG.standard_normal((16, 6, 1, d)).astype(np.float32)})
    q = res.facts["quantization"]
    assert any(n.startswith(op) or n == f"{op}_0" for n in q["quantized_nodes"]), q
    ints = [i for i in res.model.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 3]
    # W and R stored as int8: [D, gates * H, size] (GRU: weights behind DequantizeLinear), or transposed to
    # [D, size, gates * H] for com.microsoft DynamicQuantizeLSTM (LSTM)
    assert {i.dims[1 if op == "GRU" else 2] for i in ints} >= {gates * h}


def test_attention_block_softmax_runs_on_integers():
    d = 16
    nodes = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
             helper.make_node("MatMul", ["x", "wv"], ["v"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Mul", ["s", "scale"], ["ss"]),
             helper.make_node("Softmax", ["ss"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["o"])]
    m = model(nodes, [vi("x", [1, 10, d])], [vi("o", [1, 10, d])],
              [W("wq", d, d), W("wk", d, d), W("wv", d, d),
               numpy_helper.from_array(np.float32(1 / np.sqrt(d)), "scale")])
    res = quantize_and_compare(m, {"x": RNG.standard_normal((16, 1, 10, d)).astype(np.float32)}, min_sqnr=20)
    q = res.facts["quantization"]
    assert not any("Softmax" in reason for reason in q["float_nodes"].values())
    assert q["tensor_params"]["p"]["scale"] == 1 / 256  # QLinearSoftmax's grid, exact against float Softmax + Q


def test_conv_transpose_depthwise_grouped_and_resize():
    c = 8
    nodes = [helper.make_node("Conv", ["x", "w0"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("Conv", ["ar", "dw"], ["b"], group=c, pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["b", "gw"], ["g"], group=2),
             helper.make_node("Resize", ["g", "", "scales"], ["r"], mode="nearest"),
             helper.make_node("ConvTranspose", ["r", "tw"], ["t"], strides=[2, 2])]
    m = model(nodes, [vi("x", ["n", 3, 8, 8])], [vi("t", ["n", 4, 34, 34])],
              [W("w0", c, 3, 3, 3), W("dw", c, 1, 3, 3), W("gw", c, c // 2, 1, 1), W("tw", c, 4, 2, 2),
               numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales")])
    res = quantize_and_compare(m, {"x": RNG.uniform(0, 1, (16, 1, 3, 8, 8)).astype(np.float32)})
    q = set(res.facts["quantization"]["quantized_nodes"])
    assert {"Conv_0", "Conv_2", "Conv_3", "ConvTranspose_5"} <= q, q


def test_int64_and_scalar_inputs_are_never_quantised():
    nodes = [helper.make_node("Gather", ["emb", "ids"], ["e"]),
             helper.make_node("ReduceMean", ["e"], ["m"], axes=[1], keepdims=0),
             helper.make_node("Gemm", ["m", "w"], ["y"], transB=1),
             helper.make_node("Cast", ["k"], ["kf"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["y", "kf"], ["out"])]
    m = model(nodes, [vi("ids", ["n", 5], TensorProto.INT64), vi("k", [], TensorProto.INT64)], [vi("out", ["n", 4])],
              [W("emb", 50, 8), W("w", 4, 8)], opset=17)
    m.opset_import[0].version = 17
    del m.graph.node[1].attribute[:]  # opset 17 ReduceMean takes axes as an attribute: keep it
    m.graph.node[1].attribute.extend([helper.make_attribute("axes", [1]), helper.make_attribute("keepdims", 0)])
    res = quantize_and_compare(m, {"ids": RNG.integers(0, 50, (16, 1, 5)).astype(np.int64),
                                   "k": np.array(3, np.int64)})
    q_inputs = {n.input[0] for n in res.model.graph.node if n.op_type == "QuantizeLinear"}
    assert not q_inputs & {"ids", "k"}


def test_wrong_declared_output_shape_is_corrected():
    m = model([helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Relu", ["y"], ["z"])],
              [vi("x", ["n", 8])], [vi("z", [3, 7, 7])], [W("w", 8, 4)])
    res = quantize_and_compare(m, {"x": RNG.standard_normal((16, 2, 8)).astype(np.float32)})
    assert any("was wrong" in note for r in res.records for note in r.notes)
    dims = [d.dim_value for d in res.model.graph.output[0].type.tensor_type.shape.dim]
    assert len(dims) == 2 and dims[1] == 4
