"""Issue 12 (mtcnn latency): prelu_lut turns DequantizeLinear -> PRelu -> QuantizeLinear on uint8 grids into a
per-channel table lookup on the codes (GatherElements) where the tensor is large or of symbolic size; the outputs
stay bit-identical in onnxruntime, the reference interpreter still reproduces them, small tensors keep the PRelu."""
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session, run_samples as ort_run
from qpass.ir.samples import bind_samples
from qpass.passes.prelu_lut import channel_axis, worth_a_table
from qpass.reference import run_samples as golden_run

RNG = np.random.default_rng(1213)


def conv_prelu_net(spatial) -> onnx.ModelProto:
    """x [n, 3, h, w] -> Conv(16) -> PRelu (per-channel slopes, some negative) -> MaxPool -> Conv(8) -> PRelu
    ([8, 1, 1]) -> Conv(2)."""
    def const(name, *shape, s=0.3):
        return numpy_helper.from_array((RNG.standard_normal(shape) * s).astype(np.float32), name)
    a1 = numpy_helper.from_array(RNG.uniform(-0.5, 1.2, (16, 1, 1)).astype(np.float32), "a1")
    a2 = numpy_helper.from_array(RNG.uniform(0.0, 0.5, (8, 1, 1)).astype(np.float32), "a2")
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"]), helper.make_node("PRelu", ["c1", "a1"], ["p1"]),
             helper.make_node("MaxPool", ["p1"], ["m1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["m1", "w2"], ["c2"]), helper.make_node("PRelu", ["c2", "a2"], ["p2"]),
             helper.make_node("Conv", ["p2", "w3"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, *spatial])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [const("w1", 16, 3, 3, 3), const("b1", 16), a1, const("w2", 8, 16, 3, 3, s=0.1), a2,
                           const("w3", 2, 8, 1, 1)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def quantize(model, feeds, lut=True):
    # prelu_split and prelu_max (before prelu_lut in the default pipeline) would take the PRelus away
    return qpass.optimize(model, calib=bind_samples(feeds, model),
                          disabled={"choose_dynamic", "auto_precision", "prelu_split", "prelu_max"} |
                          (set() if lut else {"prelu_lut"})).model


@pytest.fixture(scope="module")
def symbolic():
    m = conv_prelu_net(("h", "w"))
    feeds = {"x": RNG.standard_normal((8, 1, 3, 20, 20)).astype(np.float32)}
    return m, feeds, quantize(m, feeds), quantize(m, feeds, lut=False)


def test_symbolic_size_prelus_become_lookups_with_identical_outputs(symbolic, tmp_path):
    m, feeds, with_lut, without = symbolic
    ops = Counter(n.op_type for n in with_lut.graph.node)
    assert ops["GatherElements"] == 2, ops
    # the PRelus left compute the two tables: on the 256 codes (Expand), not on an activation
    prod = {o: n for n in with_lut.graph.node for o in n.output}
    for n in (n for n in with_lut.graph.node if n.op_type == "PRelu"):
        up = [prod[n.input[0]]]
        while up[-1].op_type != "Expand":
            assert up[-1].op_type in ("Cast", "Sub", "Mul"), up[-1].op_type
            up.append(prod[up[-1].input[0]])
    assert Counter(n.op_type for n in without.graph.node)["PRelu"] == 2
    x = {"x": RNG.standard_normal((1, 3, 26, 18)).astype(np.float32)}  # another image size than calibration's
    np.testing.assert_array_equal(make_session(with_lut).run(None, x)[0], make_session(without).run(None, x)[0])
    # what onnxruntime runs: no float PRelu, the lookups between integer convolutions
    path = tmp_path / "opt.onnx"
    make_session(with_lut, optimize=True, optimized_path=str(path))
    opt = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert opt["GatherElements"] == 2 and opt["QLinearConv"] == 3, opt


def test_reference_interpreter_reproduces_the_lookups(symbolic):
    _, feeds, with_lut, _ = symbolic
    s = bind_samples({"x": feeds["x"][:2]}, with_lut)
    names = [o.name for o in with_lut.graph.output]
    g, r = golden_run(with_lut, s, outputs=names), ort_run(with_lut, s, outputs=names)
    for k in names:
        np.testing.assert_allclose(g[k], r[k], rtol=1e-6, atol=1e-6)


def test_small_static_tensors_keep_the_prelu():
    m = conv_prelu_net((12, 12))  # 10 x 10 x 16 = 1600 elements per sample: below min_elements
    feeds = {"x": RNG.standard_normal((8, 1, 3, 12, 12)).astype(np.float32)}
    assert Counter(n.op_type for n in quantize(m, feeds).graph.node)["PRelu"] == 2
    assert worth_a_table([None, 16, 32, 32], 16384) and not worth_a_table([None, 16, 10, 10], 16384)
    assert worth_a_table([1, 16, None, None], 16384)
    assert channel_axis(np.zeros((8, 1, 1))) == -3 and channel_axis(np.zeros(8)) == -1
    assert channel_axis(np.zeros((1,))) is None and channel_axis(np.zeros((2, 3))) is None
