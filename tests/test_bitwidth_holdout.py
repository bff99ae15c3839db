"""Held-out verification of the bitwidth search, and the artifact it produces from calibration data alone (issue 14):
the held-out check catches assignments fitted to the search samples; too few samples is a clear error; the
onnxruntime file stores the chosen widths and runs every layer the int8 output runs on integer kernels."""
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import qpass
from qpass import search as bitwidth
from qpass.errors import QpassError
from qpass.ir.samples import load_samples
from qpass.search.artifact import artifact_summary
from qpass.search.core import verified
from qpass.search.targets import parse_target

from conftest import MODELS

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
TARGET = "relative_accuracy>=0.99"


def _calib_only(name):
    m = qpass.load(MODELS / f"{name}.onnx")
    return m, load_samples(MODELS / f"{name}.calib.npz", m)


@pytest.fixture(scope="module")
def calib_only_search():
    """name -> the calibration-only target search of that digits model (each run once per module)."""
    done = {}

    def get(name):
        if name not in done:
            m, calib = _calib_only(name)
            done[name] = bitwidth.search(m, calib, target=TARGET)
        return done[name]
    return get


def _top1(path_or_model, name):
    ev = np.load(MODELS / f"{name}.eval.npz")
    x = ev["input"].reshape(-1, *ev["input"].shape[2:]) if ev["input"].ndim == 5 else ev["input"]
    src = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    s = ort.InferenceSession(src, providers=["CPUExecutionProvider"])
    return float(np.mean(s.run(None, {s.get_inputs()[0].name: x})[0].argmax(1) == ev["labels"]))


def test_held_out_check_catches_an_assignment_fit_to_the_search_samples(calib_only_search):
    a = calib_only_search("digits_rescnn")
    assert a.samples == {"source": "calibration", "search": 100, "verify": 100, "held_out": True, "holdout": 0.5}
    first = a.searched  # the search's choice, before the held-out check
    t = parse_target(TARGET)
    widths = set(first["widths"].values())  # narrow (INT2 / INT4-stored) weights, 8-bit activations
    assert 8 in widths and widths - {8} and widths <= {2, 4, 8}
    assert first["search_metric"]["agreement"] == 1.0 and t.met(first["search_metric"], conservative=True,
                                                                 margin=1.0)  # meets it on its 100 search samples
    assert first["held_out_metric"]["agreement"] <= 0.99 and not verified(t, first["held_out_metric"])  # not held out
    assert any(n.startswith("verification missed the target") for n in a.notes)
    assert first["widths"] != {s["layer"] if s["kind"] == "weight" else s["tensor"]: s["bits"] for s in a.table}
    assert a.met and verified(parse_target(TARGET), a.metric)
    assert a.metric["samples"] == 100 and a.search_metric["agreement"] >= 0.99


def test_too_few_samples_for_a_held_out_check_is_a_clear_error():
    m, calib = _calib_only("digits_cnn")
    with pytest.raises(QpassError, match=r"needs at least 112 calibration samples \(10-fold.*got 48"):
        bitwidth.search(m, calib.subset(np.arange(48)), target=TARGET)
    with pytest.raises(QpassError, match=r"at least 20 held-out samples"):
        bitwidth.search(m, calib.subset(np.arange(48)), target="sqnr>=20", holdout=0.25)
    a = bitwidth.search(m, calib.subset(np.arange(48)), target="sqnr>=20")  # 24 + 24 resolve an SQNR target
    assert a.samples["held_out"] and a.samples["verify"] == 24


def test_k_fold_when_a_held_out_half_would_be_too_small():
    """150 samples: a held-out half (75) cannot resolve relative_accuracy >= 0.99 (100 needed), 3 folds can: each
    search on 100 samples, every sample held out once, the pooled figure over all 150."""
    m, calib = _calib_only("digits_cnn")
    a = bitwidth.search(m, calib.subset(np.arange(150)), target=TARGET)
    assert a.samples["folds"] == 3 and a.samples["search"] == 100 and a.samples["verify"] == 150
    assert a.metric["samples"] == 150 and verified(parse_target(TARGET), a.metric) and a.met
    assert len(a.searched["folds"]) == 3 and any(n.startswith("k-fold (3 folds") for n in a.notes)
    fold_widths = [f["widths"] for f in a.searched["folds"]]
    final = {r["layer"] if r["kind"] == "weight" else r["tensor"]: r["bits"] for r in a.table}
    assert all(final[k] >= max(w[k] for w in fold_widths) for k in final)  # each site at least its widest fold's
    assert verified(parse_target(TARGET), a.search_metric)  # and the result itself on all 150


@pytest.mark.parametrize("name", ["digits_cnn", "digits_rescnn"])
def test_calibration_only_search_holds_on_the_eval_set_and_in_the_file(name, tmp_path, calib_only_search):
    from ort_compare import census

    m, calib = _calib_only(name)
    a = calib_only_search(name)
    auto = tmp_path / "auto.onnx"
    onnx.save(a.model, auto)
    int8 = tmp_path / "int8.onnx"
    onnx.save(qpass.optimize(m, calib=calib).model, int8)
    assert _top1(auto, name) >= 0.99 * _top1(MODELS / f"{name}.onnx", name)
    stored = artifact_summary(onnx.load(auto))
    assert stored["avg_stored_weight_bits"] <= 5.33 and stored["weight_bits_stored"] < artifact_summary(
        onnx.load(int8))["weight_bits_stored"]
    ours = census(auto, tmp_path / "auto.opt.onnx", 0)
    theirs = census(int8, tmp_path / "int8.opt.onnx", 0)
    assert ours["integer_kernels"] == theirs["integer_kernels"] and ours["float_matrix_left"] == 0


def test_int8_weights_keeps_every_value_and_refuses_saturating_layers_without_vnni(tmp_path):
    """int8_weights re-encodes lower_ort's uint8 + 128 weights as int8 codes (zero point 0): the same outputs,
    bit for bit; for an x86 CPU without VNNI it leaves a layer whose int16 pair sums could saturate as it is."""
    from qpass.pipeline.files import load_pipeline
    from qpass.pipeline.run import run_passes
    from qpass.passes.quantize_qdq.u8s8 import saturating_channels

    m, calib = _calib_only("digits_cnn")
    lowered = qpass.optimize(m, calib=calib, pipeline=load_pipeline(
        "fakequant", {"fakequant": {"weights": "sym:8", "activations": "uint8"}})).model
    u8 = [i.name for i in lowered.graph.initializer if i.data_type == onnx.TensorProto.UINT8 and len(i.dims) > 1]
    assert len(u8) == 4
    out = {}
    for cpu in ("vnni", "avx2"):
        res = run_passes(lowered, [{"int8_weights": {"target_cpu": cpu}}])
        inits = {i.name: i for i in res.model.graph.initializer}
        out[cpu] = {n: inits[n].data_type for n in u8}
        x = calib.arrays["input"].reshape(-1, 1, 8, 8)
        runs = [ort.InferenceSession(mm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
                for mm in (lowered, res.model)]
        assert np.array_equal(runs[0], runs[1])
    assert set(out["vnni"].values()) == {onnx.TensorProto.INT8}
    # 8-bit weight codes reach +-127: a pair of same-sign codes summing to >= 129 saturates on avx2 (u8s8.py)
    from onnx import numpy_helper
    codes = {i.name: numpy_helper.to_array(i).astype(np.int16) - 128 for i in lowered.graph.initializer}
    dq_of = {n.output[0]: n.input[0] for n in lowered.graph.node if n.op_type == "DequantizeLinear"}
    for n in (n for n in lowered.graph.node if n.op_type in ("Conv", "Gemm")):
        w = dq_of[n.input[1]]
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
        saturates = saturating_channels(n.op_type, attrs, codes[w], 0, 255).any()
        assert out["avx2"][w] == (onnx.TensorProto.UINT8 if saturates else onnx.TensorProto.INT8)
    assert onnx.TensorProto.UINT8 in out["avx2"].values()
