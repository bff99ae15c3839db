"""Fake-quant insertion in many formats: onnxruntime (lowered graph) and the golden simulator (QONNX graph) agree."""
import numpy as np
import onnx
import pytest

import qpass
from qpass.api import qonnx_model
from qpass.ir.samples import load_samples
from qpass.errors import PipelineError
from qpass.analysis.evaluate import check_backends, compare
from qpass.pipeline.files import load_pipeline

from conftest import MODELS

FORMATS = {  # (weights, activations) -> minimum accuracy measured on the digits CNN eval set, minus margin
    "fixed8": ({"weights": "fixed:8,6", "activations": "fixed:8,4"}, 0.97),
    "dfp8": ({"weights": "dfp:8", "activations": "dfp:8"}, 0.98),
    "ternary_w_a8": ({"weights": "ternary", "activations": "uint8"}, 0.90),
    "affine4": ({"weights": "sym:4", "activations": "uint4"}, 0.97),
}


@pytest.fixture(scope="module")
def cnn():
    m = qpass.load(MODELS / "digits_cnn.onnx")
    return m, load_samples(MODELS / "digits_cnn.calib.npz", m), load_samples(MODELS / "digits_cnn.eval.npz", m)


def fakequant(model, calib, **opts):
    return qpass.optimize(model, calib=calib, pipeline=load_pipeline("fakequant", {"fakequant": opts}))


@pytest.mark.parametrize("name", list(FORMATS))
def test_formats_run_in_ort_and_golden_with_identical_predictions(cnn, name):
    m, calib, ev = cnn
    opts, min_acc = FORMATS[name]
    res = fakequant(m, calib, **opts)
    assert not [n for n in res.model.graph.node if n.domain], "lowered model must be standard ONNX"
    q = qonnx_model(res)
    assert any(n.op_type in ("Quant", "BipolarQuant") for n in q.graph.node)
    chk = check_backends(q, res.model, ev)
    assert chk.identical_predictions == len(ev)
    assert chk.golden_accuracy >= min_acc
    assert compare(m, res.model, ev).quant_accuracy == chk.golden_accuracy


def test_weights_lie_on_the_format_grid(cnn):
    m, calib, _ = cnn
    q = qonnx_model(fakequant(m, calib, weights="fixed:8,6", activations="fixed:8,4"))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    quants = [n for n in q.graph.node if n.op_type == "Quant" and n.input[0] in inits and "weight" in n.input[0]]
    assert len(quants) == 4
    for n in quants:
        w = inits[n.input[0]].astype(np.float64)
        assert float(inits[n.input[1]]) == 2.0**-6
        codes = w * 64
        assert np.array_equal(codes, np.round(codes)) and codes.min() >= -128 and codes.max() <= 127


def test_rules_override_per_op_and_name(cnn):
    m, calib, _ = cnn
    res = fakequant(m, calib, weights="sym:8", activations="uint8",
                    rules=[{"role": "weight", "op": "Gemm", "format": "ternary", "granularity": "row"},
                           {"role": "weight", "match": "/conv1/*", "format": "sym:4"}])
    w = res.facts["fakequant"]["weights"]
    fmts = {v["node"]: v["format"] for v in w.values()}
    assert fmts["/fc1/Gemm"].startswith("ternary") and fmts["/fc2/Gemm"].startswith("ternary")
    assert fmts["/conv1/Conv"].startswith("int4_sym") and fmts["/conv2/Conv"].startswith("int8_sym")


def test_stochastic_weight_rounding_is_seeded(cnn):
    m, calib, _ = cnn
    a = fakequant(m, calib, weights="sym:4", activations="uint8", rounding="STOCHASTIC", seed=1).model
    b = fakequant(m, calib, weights="sym:4", activations="uint8", rounding="STOCHASTIC", seed=1).model
    c = fakequant(m, calib, weights="sym:4", activations="uint8", rounding="STOCHASTIC", seed=2).model
    ser = lambda x: x.SerializeToString(deterministic=True)  # noqa: E731
    assert ser(a) == ser(b) and ser(a) != ser(c)
    with pytest.raises(PipelineError, match="stochastic"):
        fakequant(m, calib, activation_rounding="STOCHASTIC")


def _intrinsic(m, calib, ev, acc):
    res = fakequant(m, calib, weights="sym:8", activations="uint8", placement="intrinsic", accumulator=acc)
    return res, check_backends(qonnx_model(res), res.model, ev)


def test_intrinsic_accumulator_width(cnn):
    m, calib, ev = cnn
    ext = fakequant(m, calib, weights="sym:8", activations="uint8")
    ext_chk = check_backends(qonnx_model(ext), ext.model, ev)
    narrow, narrow_chk = _intrinsic(m, calib, ev, "int12")
    wide, wide_chk = _intrinsic(m, calib, ev, "int32")
    acc_quants = narrow.facts["fakequant"]["accumulators"]
    assert set(acc_quants) == {"/conv1/Conv", "/conv2/Conv", "/fc1/Gemm"}  # fc2 feeds the graph output
    narrow_sat = sum(v["saturated"] for v in narrow_chk.saturation.values())
    wide_sat = sum(v["saturated"] for v in wide_chk.saturation.values())
    ext_sat = sum(v["saturated"] for v in ext_chk.saturation.values())
    assert narrow_sat > 100_000 and narrow_chk.golden_accuracy < 0.5  # too narrow: visibly broken, and counted
    assert wide_sat == ext_sat and wide_chk.golden_accuracy == ext_chk.golden_accuracy
    assert narrow_chk.identical_predictions == len(ev) == wide_chk.identical_predictions


def test_weight_only_formats_are_refused_for_activations(cnn):
    m, calib, _ = cnn
    with pytest.raises(PipelineError, match="weights only"):
        fakequant(m, calib, weights="sym:8", activations="pow2:-8,0")
    res = fakequant(m, calib, weights="pow2:-8,0", activations="uint8")  # fine for weights
    assert res.facts["fakequant"]["weights"]
