"""Streamlining: the integer-only graph equals the fake-quant graph bit for bit in the golden simulator."""
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.api import qonnx_model
from qpass.reference import GoldenExecutor
from qpass.ir.ort_session import make_session
from qpass.ir.samples import load_samples
from qpass.ir.graph import op_histogram
from qpass.pipeline.files import pipeline_from_dict

from conftest import DIGITS, MODELS

STREAMLINE = ["to_int_codes", {"repeat": {"passes": ["move_dequant", "integer_linear", "integer_add", "integer_pool",
                                                      "absorb_thresholds"]}}, "integer_report"]


def pipelines(fq: dict, fold_bn: bool = True, tail=None):
    head = ["normalize"] + (["fold_batchnorm"] if fold_bn else []) + [{"calibrate": {"method": "minmax"}},
                                                                      {"fakequant": fq}]
    return (pipeline_from_dict({"passes": head}),
            pipeline_from_dict({"passes": head + (tail or STREAMLINE)}))


def run_both(model, calib, x, fq, fold_bn=True, tail=None):
    p_fq, p_sl = pipelines(fq, fold_bn, tail)
    a = qpass.optimize(model, calib=calib, pipeline=p_fq)
    b = qpass.optimize(model, calib=calib, pipeline=p_sl)
    name = model.graph.output[0].name
    ya = GoldenExecutor(a.model).run({model.graph.input[0].name: x})[name]
    yb = GoldenExecutor(b.model).run({model.graph.input[0].name: x})[name]
    return a, b, ya, yb


def assert_same(ya, yb):
    """Integer parts identical: a different code anywhere moves the logits by a whole step, far above 1e-6."""
    np.testing.assert_array_equal(ya.argmax(-1), yb.argmax(-1))
    assert np.abs(ya - yb).max() <= 1e-6 * max(1.0, np.abs(ya).max())


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("name", DIGITS)
def test_streamlined_equals_fakequant_on_zoo(name, bits):
    m = qpass.load(MODELS / f"{name}.onnx")
    ev = load_samples(MODELS / f"{name}.eval.npz", m)
    x = np.concatenate(list(ev.arrays["input"]))
    fq = {"weights": f"sym:{bits}", "activations": f"dfp:{bits}"}
    a, b, ya, yb = run_both(m, MODELS / f"{name}.calib.npz", x, fq)
    assert_same(ya, yb)
    ops = op_histogram(b.model.graph)
    assert ops.get("qonnx.custom_op.general::MultiThreshold", 0) >= 2
    rep = b.facts["integer_report"]
    assert rep["integer_only"], [f for f in rep["float_ops"] if not f["allowed"]]
    lowered = qpass.optimize(b.model, pipeline=pipeline_from_dict({"passes": ["lower_ort"]})).model
    yo = make_session(lowered).run(None, {"input": x})[0]
    np.testing.assert_array_equal(yo.argmax(-1), yb.argmax(-1))
    assert np.abs(yo - yb).max() <= 1e-5 * np.abs(yb).max()


def _conv_graph(bn_gamma_sign=-1.0, act="Relu", residual=False, bn=True):
    rng = np.random.default_rng(7)
    c = 8
    inits = [numpy_helper.from_array(rng.standard_normal((c, 3, 3, 3)).astype(np.float32) * 0.4, "w1"),
             numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32) * 0.2, "w2"),
             numpy_helper.from_array(rng.standard_normal((10, c)).astype(np.float32), "wf")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1")]
    t = "c1"
    if bn:
        gamma = rng.uniform(0.5, 2, c) * np.where(np.arange(c) % 2, bn_gamma_sign, 1.0)
        for nm, v in (("g", gamma), ("b", rng.standard_normal(c)), ("mu", rng.standard_normal(c) * 0.1),
                      ("var", rng.uniform(0.5, 2, c))):
            inits.append(numpy_helper.from_array(v.astype(np.float32), nm))
        nodes.append(helper.make_node("BatchNormalization", ["c1", "g", "b", "mu", "var"], ["bn1"], name="bn1"))
        t = "bn1"
    if act == "Relu":
        nodes.append(helper.make_node("Relu", [t], ["a1"], name="act1"))
    else:  # ReLU6
        inits += [numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
        nodes.append(helper.make_node("Clip", [t, "lo", "hi"], ["a1"], name="act1"))
    nodes.append(helper.make_node("Conv", ["a1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"))
    t = "c2"
    if residual:
        nodes.append(helper.make_node("Add", ["a1", "c2"], ["sum"], name="add"))
        t = "sum"
    nodes += [helper.make_node("Relu", [t], ["a2"], name="act2"),
              helper.make_node("GlobalAveragePool", ["a2"], ["gap"], name="gap"),
              helper.make_node("Flatten", ["gap"], ["flat"], name="flat"),
              helper.make_node("MatMul", ["flat", "wf"], ["y"], name="fc")]
    inits[2] = numpy_helper.from_array(rng.standard_normal((c, 10)).astype(np.float32), "wf")
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _data(n=64, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, (n, 3, 8, 8)).astype(np.float32)


def _calib(n=32):
    return {"x": _data(n, 1)[:, None]}


def test_negative_scale_batchnorm_kept_after_the_quantised_conv():
    m = _conv_graph(bn_gamma_sign=-1.0)
    a, b, ya, yb = run_both(m, _calib(), _data(), {"weights": "sym:4", "activations": "dfp:4"}, fold_bn=False)
    assert "BatchNormalization" in op_histogram(qonnx_model(a).graph)  # BN sits in the chain, not in the weights
    assert_same(ya, yb)
    assert b.facts["integer_report"]["integer_only"]
    assert "BatchNormalization" not in op_histogram(b.model.graph)


def test_relu6_chain():
    m = _conv_graph(act="Clip")
    a, b, ya, yb = run_both(m, _calib(), _data(), {"weights": "sym:8", "activations": "dfp:8"}, fold_bn=False)
    assert_same(ya, yb)
    assert "Clip" not in op_histogram(b.model.graph)


def test_residual_add_of_differently_scaled_branches():
    m = _conv_graph(residual=True)
    fq = {"weights": "sym:8", "activations": "dfp:8",
          "rules": [{"role": "activation", "match": "a1", "format": "fixed:8,5"},
                    {"role": "activation", "match": "c2", "format": "fixed:8,3"}]}
    a, b, ya, yb = run_both(m, _calib(), _data(), fq)
    acts = a.facts["fakequant"]["activations"]
    assert acts["a1"]["scale"] == [2.0**-5] and acts["c2"]["scale"] == [2.0**-3]
    assert_same(ya, yb)
    assert b.facts["integer_report"]["integer_only"]
    # incommensurate (affine) scales: the Add becomes p*a + q*b and one MultiThreshold, checked on every input pair
    a, b, ya, yb = run_both(m, _calib(), _data(), {"weights": "sym:8", "activations": "uint8"})
    assert_same(ya, yb)
    floats = [f for f in b.facts["integer_report"]["float_ops"] if not f["allowed"]]
    # here 4 of the 16321 possible sums of the 8x8 average lie within float rounding of a step: it stays float
    assert {f["node"] for f in floats} == {"a2_Mul", "gap", "gap_float_div_Div"}, floats
    assert any("lie within float32 rounding of a quantiser step" in f["reason"] for f in floats)
    add = next(n for n in b.model.graph.node if n.name == "add")
    assert any(n.op_type == "MultiThreshold" and add.output[0] in n.input for n in b.model.graph.node)
    # too many input pairs to check (16-bit codes): the Add stays float, and the report says why
    a, b, ya, yb = run_both(m, _calib(), _data(), {"weights": "sym:8", "activations": "uint16"})
    inside = [f for f in b.facts["integer_report"]["float_ops"] if not f["allowed"]]
    assert any("not both powers of two" in f["reason"] and "too many" in f["reason"] for f in inside), inside


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_residual_cnn_with_affine_uint_activations_is_integer_only(bits):
    """digits_rescnn at uintB: residual Adds (p*a + q*b) and the global average pool become integer, bit-exact."""
    m = qpass.load(MODELS / "digits_rescnn.onnx")
    ev = load_samples(MODELS / "digits_rescnn.eval.npz", m)
    x = np.concatenate(list(ev.arrays["input"]))
    a, b, ya, yb = run_both(m, MODELS / "digits_rescnn.calib.npz", x,
                            {"weights": f"sym:{bits}", "activations": f"uint{bits}"})
    np.testing.assert_array_equal(ya, yb)
    ops = [n.op_type for n in b.model.graph.node]
    assert "GlobalAveragePool" not in ops and ops.count("ReduceSum") == 1
    assert b.facts["integer_report"]["integer_only"], b.facts["integer_report"]["float_ops"]


def test_network_without_batchnorm():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    assert "BatchNormalization" not in op_histogram(m.graph)
    ev = load_samples(MODELS / "digits_mlp.eval.npz", m)
    a, b, ya, yb = run_both(m, MODELS / "digits_mlp.calib.npz", np.concatenate(list(ev.arrays["input"])),
                            {"weights": "sym:4", "activations": "uint4"})
    assert_same(ya, yb)


ROUNDING_MODES = ("ROUND", "HALF_UP")


@pytest.fixture(scope="module")
def rounding_runs():
    """The fake-quant and streamlined models of one conv graph per activation rounding mode, built once per module
    so every test below runs alone or in any order."""
    m = _conv_graph(bn=False)
    return {mode: run_both(m, _calib(), _data(), {"weights": "fixed:6,4", "activations": "fixed:6,3",
                                                  "activation_rounding": mode})
            for mode in ROUNDING_MODES}


def _thresholds(model) -> np.ndarray:
    thr = [onnx.numpy_helper.to_array(i) for i in model.graph.initializer if i.name.endswith("_thresholds")]
    assert thr, "the streamlined graph has no MultiThreshold thresholds"
    return np.concatenate([t.ravel() for t in thr])


@pytest.mark.parametrize("mode", ROUNDING_MODES)
def test_thresholds_follow_the_quantisers_rounding_mode(mode, rounding_runs):
    a, b, ya, yb = rounding_runs[mode]
    assert_same(ya, yb)


def test_half_even_and_half_up_give_different_thresholds(rounding_runs):
    half_even, half_up = (_thresholds(rounding_runs[mode][1].model) for mode in ROUNDING_MODES)
    assert half_even.shape == half_up.shape and not np.array_equal(half_even, half_up)


def test_accumulator_widths_are_exact_worst_case():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    _, p_sl = pipelines({"weights": "sym:4", "activations": "uint4"})
    b = qpass.optimize(m, calib=MODELS / "digits_mlp.calib.npz", pipeline=p_sl)
    layers = b.facts["integer_report"]["layers"]
    assert len(layers) == 3
    graph = b.model.graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    checked = 0
    for L in layers:
        node = next(n for n in graph.node if n.name == L["layer"])
        w = inits[node.input[1]].astype(np.int64)  # Gemm weight codes (transB=1: (N, K))
        w = w.T if any(a.name == "transB" and a.i for a in node.attribute) else w
        lo_in, hi_in = L["input_range"]
        checked += 1
        best = (np.where(w > 0, w * hi_in, w * lo_in)).sum(axis=0)
        worst = (np.where(w > 0, w * lo_in, w * hi_in)).sum(axis=0)
        assert L["accumulator_range"] == [float(worst.min()), float(best.max())]
        lo, hi = worst.min(), best.max()
        m_ = max(-lo, hi + 1)
        assert L["accumulator_bits"] == int(np.ceil(np.log2(m_))) + 1
        assert 2 ** (L["accumulator_bits"] - 1) > max(-lo - 1, hi)  # never too small
    assert checked == 3


def test_cli_streamline_prints_the_layer_table(tmp_path):
    from click.testing import CliRunner

    from qpass.cli import main

    r = CliRunner().invoke(main, ["optimize", str(MODELS / "digits_rescnn.onnx"), "-o", str(tmp_path / "s.onnx"),
                                  "--pipeline", "streamline"])
    assert r.exit_code == 0, r.output
    assert "acc bits" in r.output and "thresholds" in r.output
    assert "integer-only between the input quantisers and the float head: yes" in r.output
    row = next(line for line in r.output.splitlines() if line.startswith("/block1/conv1/Conv"))
    assert "INT4" in row and row.split()[-2] == "15"


@pytest.mark.parametrize("name", ["digits_cnn", "digits_rescnn"])
def test_jacob_requantisation_pipeline(name):
    """Integer multiplier + shift: onnxruntime and golden agree bit for bit; within one step of fake-quant."""
    m = qpass.load(MODELS / f"{name}.onnx")
    ev = load_samples(MODELS / f"{name}.eval.npz", m)
    x = np.concatenate(list(ev.arrays["input"]))
    res = qpass.optimize(m, calib=MODELS / f"{name}.calib.npz", pipeline="requant")
    q = qonnx_model(res)
    assert "MultiThreshold" not in str(op_histogram(q.graph)) and "Mod" in op_histogram(q.graph)
    assert res.facts["integer_report"]["integer_only"]
    yg = GoldenExecutor(q).run({"input": x})["logits"]
    yo = make_session(res.model).run(None, {"input": x})[0]
    np.testing.assert_array_equal(yg, yo)
    p_fq, _ = pipelines({"weights": "sym:8", "activations": "dfp:8"})
    yf = GoldenExecutor(qpass.optimize(m, calib=MODELS / f"{name}.calib.npz", pipeline=p_fq).model).run(
        {"input": x})["logits"]
    assert np.mean(yf.argmax(-1) == yg.argmax(-1)) >= 0.99


def test_matmul_with_broadcast_batch_axes_streamlines():
    """A MatMul over rank-4 activations has its channels last: the MultiThreshold's data_layout says so, and the
    streamlined model lowers and runs (it failed in lower_ort with NCHW thresholds on the wrong axis)."""
    from qpass.passes.thresholds import channel_layout
    from qpass.ops.common import mt_channel_axis

    for rank in range(2, 7):
        for axis in range(1, rank):
            assert mt_channel_axis(channel_layout(rank, axis), rank) == axis
    src = MODELS / "structural" / "matmul_broadcast.onnx"
    res = qpass.optimize(src, calib=MODELS / "structural" / "matmul_broadcast.calib.npz", pipeline="streamline")
    mts = [n for n in qpass.pipeline.run.qonnx_model(res).graph.node if n.op_type == "MultiThreshold"]
    assert mts and all(onnx.helper.get_attribute_value(a) == b"NHWC" for n in mts for a in n.attribute
                       if a.name == "data_layout")
    onnx.checker.check_model(res.model)


def test_exact_add_weights_are_the_best_rational_approximations():
    from qpass.passes.exact_add import monotone_in, ratio_candidates

    c = ratio_candidates(0.312084 / 1.11501)
    assert c[:2] == [(1, 2), (1, 3)] and all(p <= 4096 and q <= 4096 for p, q in c)
    assert (5, 18) in c and [q for _, q in c] == sorted(q for _, q in c)
    assert ratio_candidates(2.0) == [(1, 1), (2, 1)]
    z, f = np.array([0, 1, 1, 2]), np.array([0, 1, 1, 2])
    assert monotone_in(z, f) and not monotone_in(z, np.array([0, 1, 2, 2])) and not monotone_in(z, f[::-1])
