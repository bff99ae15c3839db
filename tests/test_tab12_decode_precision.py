"""decode_precision: an autoregressive Loop/ArgMax decoder whose decisions int8 flips at the first layer's input
quantizer gets 16-bit activations there (the default pipeline), and a model without such a decoder is untouched.

The built model: x (4 values in [0, 1]) -> MatMul(d = x0 - x1, -d, 1e-3 (x3 - x2)) -> 8 MatMuls (the first x100,
then identities; every weight exact on the int8 grid) -> f = (100 d, -100 d); a Loop of 6 steps takes ArgMax(f * sign[prev token])
and feeds the token back; the output stacks the per-step scores. |x0 - x1| is 0.5e-3 .. 2e-3, below the input's
8-bit step (1/255), so int8 decodes leave float's on many samples; at 16 bits (step 1/65535) none does.
"""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.ir.ort_session import make_session
from qpass.search.decode_precision import agreement, decision_outputs

STEPS = 6


def _decoder_model() -> onnx.ModelProto:
    # a third column 1e-3 (x3 - x2) keeps x's calibrated range from being clipped (its error would show there)
    w0 = np.array([[1, -1, 0], [-1, 1, 0], [0, 0, -1e-3], [0, 0, 1e-3]], np.float32)
    inits = [numpy_helper.from_array(w0, "w0"),
             numpy_helper.from_array(np.array([[100, 0], [0, 100], [0, 0]], np.float32), "w1")]
    nodes = [helper.make_node("MatMul", ["x", "w0"], ["h0"]), helper.make_node("MatMul", ["h0", "w1"], ["h1"])]
    for i in range(2, 9):
        inits.append(numpy_helper.from_array(np.eye(2, dtype=np.float32), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [f"h{i - 1}", f"w{i}"], [f"h{i}"]))
    body = helper.make_graph(
        [helper.make_node("Gather", ["signs", "prev"], ["sign"]),
         helper.make_node("Mul", ["h8", "sign"], ["scores"]),
         helper.make_node("ArgMax", ["scores"], ["tok"], axis=1, keepdims=0),
         helper.make_node("Identity", ["cond"], ["cond_out"])],
        "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond", TensorProto.BOOL, []),
         helper.make_tensor_value_info("prev", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("tok", TensorProto.INT64, [1]),
         helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 2])],
        [numpy_helper.from_array(np.array([1.0, -1.0], np.float32), "signs")])
    inits += [numpy_helper.from_array(np.array(STEPS, np.int64), "trip"),
              numpy_helper.from_array(np.array(True), "go"),
              numpy_helper.from_array(np.array([0], np.int64), "start")]
    nodes.append(helper.make_node("Loop", ["trip", "go", "start"], ["last", "steps"], body=body))
    g = helper.make_graph(nodes, "decoder", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("steps", TensorProto.FLOAT, [STEPS, 1, 2])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _inputs(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.05, 0.95, (n, 1, 4)).astype(np.float32)
    x[:, 0, 2], x[:, 0, 3] = 0.0, 1.0
    x[:, 0, 1] = x[:, 0, 0] + rng.choice([-1, 1], n) * rng.uniform(0.5e-3, 2e-3, n)
    return x.astype(np.float32)


def _decodes(model: onnx.ModelProto, xs: np.ndarray) -> list:
    sess = make_session(model)
    return [[np.asarray(sess.run(["steps"], {"x": x})[0], np.float64).reshape(-1, 2)] for x in xs]


@pytest.fixture(scope="module")
def runs():
    model = _decoder_model()
    calib, held = _inputs(24, 0), _inputs(24, 1)
    ref = _decodes(model, held)
    out = {}
    # choose_ranges off: on this toy it clips x at 0.6 (d = 0 above it), which no activation precision can undo
    for name, disabled in (("with", {"choose_ranges"}), ("without", {"choose_ranges", "decode_precision"})):
        res = qpass.optimize(model, calib={"x": calib}, disabled=disabled)
        out[name] = (res, agreement(ref, _decodes(res.model, held))[0])
    return model, out, len(held)


def test_decision_outputs_found():
    assert decision_outputs(_decoder_model()) == ["steps"]


def test_int8_flips_decodes_and_the_pass_protects_them(runs):
    model, out, n = runs
    res, agree = out["with"]
    rec = res.report.results["decode_precision"]
    assert out["without"][1] < n - 2, "int8 alone must flip held-out decodes (the case the pass is for)"
    assert rec["kept"] and rec["int8"]["agree"] < rec["final"]["agree"] == rec["samples"]
    assert agree == n, f"held-out decodes agreeing with float: {agree}/{n}"
    # within the layer budget: at most 12% of the 9 matrix layers (1) taken off integer kernels
    assert rec["layers"] <= 1


def test_model_without_decoder_unchanged():
    """The same encoder with its output as the graph output (no decoder): the default pipeline writes the same
    bytes with and without the pass, and the pass records nothing."""
    m = _decoder_model()
    del m.graph.node[-1]
    del m.graph.output[:]
    m.graph.output.append(helper.make_tensor_value_info("h8", TensorProto.FLOAT, [1, 2]))
    calib = {"x": _inputs(24, 0)}
    a = qpass.optimize(m, calib=calib)
    b = qpass.optimize(m, calib=calib, disabled={"decode_precision"})
    assert decision_outputs(m) == [] and "decode_precision" not in a.report.results
    assert a.model.SerializeToString() == b.model.SerializeToString()
