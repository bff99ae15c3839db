"""Issue 13 (mtcnn-rnet): prelu_max takes a PRelu with slopes above 1 too. Such a channel is concave, min(y, a y);
on the shared uint8 grid the codes are Max(Min(h1, h2), Min(Max(h1, h2), k)) with k = 0 there and 255 elsewhere.
Built case: Conv -> PRelu (a channel with slope 1.3 that sets the output grid's negative end, as in mtcnn-rnet)
-> MaxPool -> Conv, where the PRelu goes, the output error drops, onnxruntime and the reference agree bit for bit
and float the identity holds; on a tensor of symbolic size (where prelu_lut's table is faster) the file is
byte-identical to the pipeline without the pass."""
from collections import Counter

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session, run_samples as ort_run
from qpass.ir.samples import bind_samples
from qpass.passes.prelu_max import find_matches
from qpass.reference import run_samples as golden_run
from test_sqnr13n_prelu_max import FAST, make_case, prelu_gone_sqnr, quantize  # one pipeline, prelu_max on / off



def net(size=16, concave=(3,)) -> onnx.ModelProto:
    """x [n, 3, size, size] -> Conv(16) -> PRelu (slopes in [-0.6, 0.9], 1.3 on ``concave``) -> MaxPool 3x3/2 ->
    Conv(8); ``size`` None: symbolic spatial dims."""
    rng = np.random.default_rng(1317)
    a1 = rng.uniform(-0.6, 0.9, (16, 1, 1)).astype(np.float32)
    a1[list(concave)] = 1.3
    b1 = rng.uniform(-0.4, 0.6, 16).astype(np.float32)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["c1", "a1"], ["p1"]),
             helper.make_node("MaxPool", ["p1"], ["m1"], kernel_shape=[3, 3], strides=[2, 2]),
             helper.make_node("Conv", ["m1", "w2", "b2"], ["y"])]
    w1 = (rng.standard_normal((16, 3, 3, 3)) * 0.3).astype(np.float32)
    w1[list(concave)] *= 2.5  # the concave channels reach far below zero: they set the grid's negative end
    inits = [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(b1, "b1"), numpy_helper.from_array(a1, "a1"),
             numpy_helper.from_array((rng.standard_normal((8, 16, 3, 3)) * 0.1).astype(np.float32), "w2"),
             numpy_helper.from_array((rng.standard_normal(8) * 0.2).astype(np.float32), "b2")]
    dims = ["n", 3, size, size] if size else ["n", 3, "h", "w"]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, dims)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def case():
    return make_case(net(), 29)


def test_the_concave_prelu_goes_and_the_error_drops(case):
    after, before = prelu_gone_sqnr(case)
    assert after > before + 0.5, (after, before)  # 32.82 -> 33.70 dB


def test_the_min_max_form_is_prelu_on_codes():
    """Max(Min(h1, h2), Min(Max(h1, h2), k)) is min(h1, h2) where k = 0 and max(h1, h2) where k = 255, for every
    pair of uint8 codes; with h1 = q(y), h2 = q(a y) on one monotone grid that is q(PRelu(y)) for a > 1 and a <= 1."""
    h1, h2 = np.meshgrid(np.arange(256), np.arange(256))
    for k, want in ((0, np.minimum(h1, h2)), (255, np.maximum(h1, h2))):
        np.testing.assert_array_equal(np.maximum(np.minimum(h1, h2), np.minimum(np.maximum(h1, h2), k)), want)
    y = np.linspace(-3, 3, 601)
    np.testing.assert_array_equal(np.minimum(y, 1.3 * y), np.where(y >= 0, y, 1.3 * y))


def test_onnxruntime_runs_integer_kernels_and_the_reference_agrees(case, tmp_path):
    _, _, held, new, _ = case
    path = tmp_path / "opt.onnx"
    make_session(new, optimize=True, optimized_path=str(path))
    ops = Counter(n.op_type for n in onnx.load(path).graph.node)
    assert ops["QLinearConv"] == 2 and not {"Conv", "PRelu", "Where"} & set(ops), ops
    s = bind_samples({"x": held[:4, None]}, new)
    np.testing.assert_allclose(golden_run(new, s, outputs=["y"])["y"], ort_run(new, s, outputs=["y"])["y"],
                               rtol=1e-6, atol=1e-6)


def test_a_symbolic_size_keeps_the_block_for_the_table():
    """A concave channel on a tensor of unknown size (a fully convolutional net): prelu_lut's lookup is the faster
    form there, prelu_max leaves it, the file is byte-identical to the pipeline without the pass."""
    m = net(size=None)
    calib = {"x": np.random.default_rng(30).standard_normal((8, 1, 3, 16, 16)).astype(np.float32)}
    a, b = quantize(m, calib), quantize(m, calib, on=False)
    assert a.SerializeToString() == b.SerializeToString()
    plain = FAST | {"prelu_max", "prelu_lut"}
    sym = qpass.optimize(m, calib=bind_samples(calib, m), disabled=plain).model
    fixed = qpass.optimize(net(), calib=bind_samples(calib, net()), disabled=plain).model
    assert find_matches(sym) == [] and len(find_matches(fixed)) == 1  # the size rule, not the slopes
