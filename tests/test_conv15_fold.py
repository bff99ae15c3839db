"""Conv + BatchNormalization (+ Relu) folded in the reference's float plans as onnxruntime's ConvBNFusion folds
them: float32 folded parameters in its order of operations, the same bits with and without the compiled kernels,
closer to onnxruntime than the unfolded chain, and no fold where onnxruntime makes none."""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.reference import GoldenExecutor
from qpass.reference.conv_fold import folded_params


def _model(relu=True, bias=True, extra_output=False, eps=True, hw=(8, 8)):
    rng = np.random.default_rng(3)
    c, m = 6, 16
    w = rng.standard_normal((m, c, 3, 3)).astype(np.float32) * 0.3
    inits = [numpy_helper.from_array(w, "w")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(m).astype(np.float32), "b"))
        conv_in.append("b")
    for name, v in (("s", rng.uniform(0.5, 2, m)), ("B", rng.standard_normal(m)), ("mu", rng.standard_normal(m)),
                    ("var", rng.uniform(0.01, 3, m))):
        inits.append(numpy_helper.from_array(v.astype(np.float32), name))
    nodes = [helper.make_node("Conv", conv_in, ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "s", "B", "mu", "var"], ["bn"],
                              **({"epsilon": 1e-3} if eps else {}))]
    out = "bn"
    if relu:
        nodes.append(helper.make_node("Relu", ["bn"], ["y"]))
        out = "y"
    outs = [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)]
    if extra_output:
        outs.append(helper.make_tensor_value_info("c", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, c, *hw])],
                          outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])


def _ort(m, x):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})


def test_folded_params_float32_in_onnxruntime_order():
    rng = np.random.default_rng(0)
    w, b, s, B, mu, var = (rng.standard_normal(sh).astype(np.float32) for sh in
                           ((4, 2, 3, 3), 4, 4, 4, 4, 4))
    var = np.abs(var)
    wf, bf = folded_params(w, b, s, B, mu, var, 1e-5)
    k = s / np.sqrt(var + np.float32(1e-5))  # every step a float32 operation
    assert wf.dtype == bf.dtype == np.float32
    assert np.array_equal(wf, w * k[:, None, None, None])
    assert np.array_equal(bf, (b - mu) * k + B)
    _, bf0 = folded_params(w, None, s, B, mu, var, 1e-5)
    assert np.array_equal(bf0, B - mu * k)


@pytest.mark.parametrize("relu,bias", [(True, True), (False, True), (True, False)])
def test_fold_runs_one_step_same_bits_without_jit_near_onnxruntime(relu, bias, monkeypatch):
    m = _model(relu, bias)
    x = np.random.default_rng(1).standard_normal((5, 6, 8, 8)).astype(np.float32)
    ex = GoldenExecutor(m)
    steps = ex._plan(tuple(ex.output_names)).steps
    assert len(steps) == 1 and steps[0].label.startswith("Conv+BatchNormalization")
    y = ex.run({"x": x})[ex.output_names[0]]
    monkeypatch.setenv("QPASS_NO_JIT", "1")
    y0 = GoldenExecutor(m).run({"x": x})[ex.output_names[0]]
    assert y.dtype == np.float32 and np.array_equal(y, y0)
    ref = _ort(m, x)[0]
    assert np.abs(y - ref).max() <= 4e-6 * max(1.0, float(np.abs(ref).max()))
    if relu:
        assert (y >= 0).all() and (y == 0).any()
    # a sample's numbers do not depend on its batch
    assert np.array_equal(GoldenExecutor(m).run({"x": x[3:4]})[ex.output_names[0]][0], y[3])


def test_no_fold_when_an_intermediate_is_needed_or_no_epsilon():
    x = np.random.default_rng(2).standard_normal((2, 6, 8, 8)).astype(np.float32)
    m = _model(extra_output=True)  # the conv output is a graph output: onnxruntime does not fold
    ex = GoldenExecutor(m)
    assert not ex._folds
    ref = _ort(m, x)
    got = ex.run({"x": x})
    assert np.abs(got["y"] - ref[0]).max() < 1e-4 and np.abs(got["c"] - ref[1]).max() < 1e-4
    assert not GoldenExecutor(_model(eps=False))._folds  # onnxruntime's ConvBNFusion needs the attribute
    ex = GoldenExecutor(_model())  # asking for a folded-away intermediate runs the unfolded chain
    assert ex._folds
    res = ex.run({"x": x}, ["bn", "y"])
    assert np.array_equal(res["y"], np.maximum(res["bn"], 0))
