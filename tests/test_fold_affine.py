"""fold_affine: per-channel Sub/Mul/Add/Div by constants fold into the adjacent Conv/Gemm/MatMul, exactly (float32
rounding aside), except an offset before a zero-padded Conv, which must stay."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples
from qpass.pipeline.files import pipeline_from_dict

RNG = np.random.default_rng(3)


def const(name, *shape, lo=-1.0, hi=1.0):
    return numpy_helper.from_array(RNG.uniform(lo, hi, shape).astype(np.float32), name)


def build(nodes, x_shape, out, out_shape, inits):
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)],
                          [helper.make_tensor_value_info(out, TensorProto.FLOAT, out_shape)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def fold(model, x):
    """(folded model, ops left, max |float - folded| / max |float|)."""
    res = qpass.optimize(model, pipeline=pipeline_from_dict({"passes": ["normalize", "fold_affine"]}))
    s = bind_samples({"x": x}, model)
    a, b = run_samples(model, s), run_samples(res.model, s)
    k = model.graph.output[0].name
    err = float(np.abs(a[k].astype(np.float64) - b[k]).max() / np.abs(a[k]).max())
    return res.model, sorted(n.op_type for n in res.model.graph.node), err


def test_after_padded_conv_scale_and_offset_fold():
    """Conv(pad) -> Mul -> Add -> Relu (a decomposed batch norm): both fold into the Conv."""
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Mul", ["c", "a"], ["m"]), helper.make_node("Add", ["m", "d"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    m = build(nodes, ["n", 3, 8, 8], "y", ["n", 4, 8, 8],
              [const("w", 4, 3, 3, 3), const("b", 4), const("a", 4, 1, 1, lo=0.5, hi=2), const("d", 1, 4, 1, 1)])
    _, ops, err = fold(m, RNG.standard_normal((4, 1, 3, 8, 8)).astype(np.float32))
    assert ops == ["Conv", "Relu"] and err < 1e-5


def test_input_normalisation_before_padded_conv_keeps_the_offset():
    """(x - mean) / std -> Conv(pad): the Div folds into the weights; the Sub must stay (the padding zeros of
    Conv(x - mean) are not shifted by -mean)."""
    nodes = [helper.make_node("Sub", ["x", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["n"]),
             helper.make_node("Conv", ["n", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    inits = [const("mean", 3, 1, 1, lo=0.3, hi=0.6), const("std", 3, 1, 1, lo=0.2, hi=0.3), const("w", 4, 3, 3, 3),
             const("b", 4)]
    x = RNG.uniform(0, 1, (4, 1, 3, 8, 8)).astype(np.float32)
    _, ops, err = fold(build(nodes, ["n", 3, 8, 8], "y", ["n", 4, 8, 8], inits), x)
    assert ops == ["Conv", "Sub"] and err < 1e-5
    unpadded = [helper.make_node("Sub", ["x", "mean"], ["c"]), helper.make_node("Div", ["c", "std"], ["n"]),
                helper.make_node("Conv", ["n", "w", "b"], ["y"])]
    _, ops, err = fold(build(unpadded, ["n", 3, 8, 8], "y", ["n", 4, 6, 6], inits), x)
    assert ops == ["Conv"] and err < 1e-5


def test_gemm_and_matmul():
    """x -> Mul -> Add -> Gemm folds into the Gemm; MatMul -> Add(bias) becomes one Gemm; a 3-D MatMul keeps its Add."""
    nodes = [helper.make_node("Mul", ["x", "a"], ["m"]), helper.make_node("Add", ["m", "d"], ["s"]),
             helper.make_node("Gemm", ["s", "w", "b"], ["g"], transB=1),
             helper.make_node("MatMul", ["g", "w2"], ["h"]), helper.make_node("Add", ["h", "b2"], ["y"])]
    inits = [const("a", 6), const("d", 1, 6), const("w", 5, 6), const("b", 5), const("w2", 5, 3), const("b2", 3)]
    _, ops, err = fold(build(nodes, ["n", 6], "y", ["n", 3], inits), RNG.standard_normal((8, 1, 6)).astype(np.float32))
    assert ops == ["Gemm", "Gemm"] and err < 1e-5
    seq = [helper.make_node("MatMul", ["x", "w2"], ["h"]), helper.make_node("Add", ["h", "b2"], ["y"])]
    m = build(seq, ["n", 7, 5], "y", ["n", 7, 3], [const("w2", 5, 3), const("b2", 3)])
    _, ops, _ = fold(m, RNG.standard_normal((8, 1, 7, 5)).astype(np.float32))
    assert ops == ["Add", "MatMul"]


def test_grouped_conv_input_scale():
    nodes = [helper.make_node("Mul", ["x", "a"], ["m"]),
             helper.make_node("Conv", ["m", "w"], ["y"], group=2, pads=[1, 1, 1, 1])]
    m = build(nodes, ["n", 4, 5, 5], "y", ["n", 6, 5, 5], [const("a", 4, 1, 1), const("w", 6, 2, 3, 3)])
    _, ops, err = fold(m, RNG.standard_normal((4, 1, 4, 5, 5)).astype(np.float32))
    assert ops == ["Conv"] and err < 1e-5


@pytest.mark.parametrize("case", ["spatial constant", "two readers", "graph output"])
def test_what_must_not_fold(case):
    shape = (4, 5, 5) if case == "spatial constant" else (4, 1, 1)
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"]), helper.make_node("Mul", ["c", "a"], ["y"])]
    out = "y"
    if case == "two readers":
        nodes.append(helper.make_node("Add", ["c", "y"], ["z"]))
        out = "z"
    m = build(nodes, ["n", 3, 7, 7], out, ["n", 4, 5, 5], [const("w", 4, 3, 3, 3), const("a", *shape)])
    if case == "graph output":
        m.graph.output.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 4, 5, 5]))
    _, ops, _ = fold(m, RNG.standard_normal((2, 1, 3, 7, 7)).astype(np.float32))
    assert "Mul" in ops


def test_default_pipeline_folds_before_calibration():
    names = [s.name for s in qpass.load_pipeline("default").steps]
    assert names.index("fold_affine") < names.index("calibrate")


@pytest.mark.parametrize("case", ["positive", "positive, no offset", "one negative"])
def test_positive_scale_moves_behind_relu_into_the_next_gemm(case):
    """Tanh -> Mul(g) [-> Add(c)] -> Relu -> Gemm (a LayerNorm's gamma before Relu): Relu(g z) = g Relu(z) for g > 0,
    so the Mul goes behind the Relu into the Gemm and the offset becomes c / g; a negative g must stay."""
    lo = -1.0 if case == "one negative" else 0.2
    nodes = [helper.make_node("Tanh", ["x"], ["t"]), helper.make_node("Mul", ["t", "a"], ["m"])]
    if case == "positive, no offset":
        nodes.append(helper.make_node("Relu", ["m"], ["r"]))
    else:
        nodes += [helper.make_node("Sub", ["m", "d"], ["s"]), helper.make_node("Relu", ["s"], ["r"])]
    nodes.append(helper.make_node("Gemm", ["r", "w", "b"], ["y"], transB=1))
    a = const("a", 6, lo=lo, hi=2.0)
    if case == "one negative":
        a = numpy_helper.from_array(np.where(np.arange(6) == 2, -0.5, 1.0).astype(np.float32), "a")
    m = build(nodes, ["n", 6], "y", ["n", 5], [a, const("d", 6), const("w", 5, 6), const("b", 5)])
    folded, ops, err = fold(m, RNG.standard_normal((8, 1, 6)).astype(np.float32))
    assert err < 1e-5
    if case == "one negative":
        assert "Mul" in ops
    else:
        assert ops == sorted(["Tanh", "Relu", "Gemm"] + ([] if "no offset" in case else ["Add"]))
