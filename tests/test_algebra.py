"""Float streamlining moves: the rewritten graph computes the same function (to float rounding) with fewer ops."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session
from qpass.ir.graph import op_histogram
from qpass.pipeline.files import pipeline_from_dict

RNG = np.random.default_rng(3)


def c(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def build():
    cin, cout = 3, 8
    nodes = [
        helper.make_node("Mul", ["x", "in_scale"], ["a"]),
        helper.make_node("Conv", ["a", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["c1", "out_scale"], ["m1"]),
        helper.make_node("Add", ["m1", "out_shift"], ["s1"]),
        helper.make_node("Relu", ["s1"], ["r1"]),
        helper.make_node("Mul", ["r1", "pos_scalar"], ["m2"]),
        helper.make_node("MaxPool", ["m2"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Flatten", ["p1"], ["f1"]),
        helper.make_node("Sub", ["f1", "sub_c"], ["d1"]),
        helper.make_node("Gemm", ["d1", "w2", "b2"], ["g1"], transB=1),
        helper.make_node("BatchNormalization", ["g1", "gamma", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Div", ["bn", "div_c"], ["y"]),
    ]
    inits = [
        c("in_scale", RNG.uniform(0.5, 2, (1, cin, 1, 1))),
        c("w1", RNG.standard_normal((cout, cin, 3, 3)) * 0.3), c("b1", RNG.standard_normal(cout)),
        c("out_scale", RNG.uniform(-2, 2, (1, cout, 1, 1))), c("out_shift", RNG.standard_normal((1, cout, 1, 1))),
        c("pos_scalar", 1.7), c("sub_c", RNG.standard_normal(cout * 16) * 0.1),
        c("w2", RNG.standard_normal((10, cout * 16)) * 0.1), c("b2", RNG.standard_normal(10)),
        c("gamma", RNG.uniform(-2, 2, 10)), c("beta", RNG.standard_normal(10)), c("mean", RNG.standard_normal(10)),
        c("var", RNG.uniform(0.5, 2, 10)), c("div_c", 3.0),
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", cin, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


STREAMLINE_FLOAT = pipeline_from_dict({"passes": ["normalize", {"repeat": {"passes": [
    "fold_batchnorm", "batchnorm_to_affine", "fold_const_arith", "collapse_repeated", "move_mul_past",
    "move_add_past"]}}]})


def test_float_streamline_is_equivalent_and_smaller():
    m = build()
    out = qpass.optimize(m, pipeline=STREAMLINE_FLOAT).model
    x = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
    ref = make_session(m).run(None, {"x": x})[0]
    got = make_session(out).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    ops = op_histogram(out.graph)
    assert "BatchNormalization" not in ops and "Sub" not in ops and "Div" not in ops
    # every constant Mul/Add was absorbed into the linear layers; only the structural ops remain
    assert set(ops) == {"Conv", "Relu", "MaxPool", "Flatten", "Gemm"}, ops


@pytest.mark.parametrize("negative", [False, True])
def test_mul_moves_through_relu_only_when_positive(negative):
    s = -1.5 if negative else 1.5
    g = helper.make_graph([helper.make_node("Mul", ["x", "s"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
                           helper.make_node("Sigmoid", ["r"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])], [c("s", s)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out = qpass.optimize(m, pipeline=pipeline_from_dict({"passes": ["move_mul_past"]})).model
    order = [n.op_type for n in out.graph.node]
    assert order == (["Mul", "Relu", "Sigmoid"] if negative else ["Relu", "Mul", "Sigmoid"])
    x = RNG.standard_normal((2, 4)).astype(np.float32)
    np.testing.assert_allclose(make_session(out).run(None, {"x": x})[0], make_session(m).run(None, {"x": x})[0],
                               rtol=1e-6)


def test_batchnorm_before_a_conv_folds_into_the_following_layer():
    """A BN with no linear layer before it (e.g. on the input) ends up in the weights and bias of the next one."""
    ch = 3
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "mu", "var"], ["bn"]),
             helper.make_node("Conv", ["bn", "w", "cb"], ["y0"]),  # unpadded: the shift folds into the bias
             helper.make_node("Relu", ["y0"], ["y"])]
    inits = [c("g", RNG.uniform(-2, 2, ch)), c("b", RNG.standard_normal(ch)), c("mu", RNG.standard_normal(ch)),
             c("var", RNG.uniform(0.5, 2, ch)), c("w", RNG.standard_normal((4, ch, 3, 3))), c("cb", RNG.standard_normal(4))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, ch, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4, 4, 4])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out = qpass.optimize(m, pipeline=STREAMLINE_FLOAT).model
    assert [n.op_type for n in out.graph.node] == ["Conv", "Relu"]
    x = RNG.standard_normal((2, ch, 6, 6)).astype(np.float32)
    np.testing.assert_allclose(make_session(out).run(None, {"x": x})[0], make_session(m).run(None, {"x": x})[0],
                               rtol=1e-4, atol=1e-4)


def test_equal_scalar_muls_move_past_concat():
    nodes = [helper.make_node("Mul", ["a", "s"], ["as"]), helper.make_node("Mul", ["b", "s2"], ["bs"]),
             helper.make_node("Concat", ["as", "bs"], ["cat"], axis=1), helper.make_node("Sigmoid", ["cat"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 3]),
                                       helper.make_tensor_value_info("b", TensorProto.FLOAT, [2, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 7])], [c("s", 0.5), c("s2", 0.5)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    out = qpass.optimize(m, pipeline=pipeline_from_dict({"passes": ["move_mul_past"]})).model
    assert [n.op_type for n in out.graph.node] == ["Concat", "Mul", "Sigmoid"]
    feed = {"a": RNG.standard_normal((2, 3)).astype(np.float32), "b": RNG.standard_normal((2, 4)).astype(np.float32)}
    np.testing.assert_array_equal(make_session(out).run(None, feed)[0], make_session(m).run(None, feed)[0])
    different = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    different.graph.initializer[1].CopyFrom(c("s2", 0.25))
    out = qpass.optimize(different, pipeline=pipeline_from_dict({"passes": ["move_mul_past"]})).model
    assert [n.op_type for n in out.graph.node][-2:] == ["Concat", "Sigmoid"]  # scales differ: nothing moves
