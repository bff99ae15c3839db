"""Issue 13: --target on the default int8 pipeline (mixed_precision: activations to float until it holds)."""
import subprocess
import sys

import numpy as np

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import load_samples
from qpass.search.mixed_int8 import bypass

from conftest import MODELS


def _run(target, name="digits_mlp"):
    cfg = qpass.QuantConfig(target=target)
    return qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz", config=cfg)


def test_target_met_on_held_out_samples_with_few_layers_moved():
    res = _run("sqnr>=46")
    mp = res.report.results["mixed_precision"]
    assert mp["met"] and mp["final"]["sqnr"] >= 46 and mp["int8"]["sqnr"] < 46
    moved = [m["tensor"] for m in mp["moved"]]
    assert 1 <= len(moved) <= 2
    # the moved quantizers are gone from the model, the others stay; eval-set SQNR improves on int8
    q_in = {n.input[0] for n in res.model.graph.node if n.op_type == "QuantizeLinear"}
    assert not any(m + "_float" in q_in or m in q_in for m in moved)
    ev = load_samples(MODELS / "digits_mlp.eval.npz", res.model)
    int8 = _run(None).model
    ref = run_samples(qpass.load(MODELS / "digits_mlp.onnx"), ev)["logits"]
    assert sqnr_db(ref, run_samples(res.model, ev)["logits"]) > sqnr_db(ref, run_samples(int8, ev)["logits"]) + 1


def test_target_already_met_changes_nothing():
    res = _run("sqnr>=30")
    assert res.report.results["mixed_precision"]["moved"] == []
    assert res.report.results["mixed_precision"]["met"]


def test_unreachable_target_says_what_it_reached_in_one_line():
    p = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_rescnn.onnx"), "-o",
                        str(MODELS.parent / "tmp_never.onnx"), "--target",
                        "sqnr>=60"], capture_output=True, text=True)
    try:
        assert p.returncode == 0, p.stderr
        line = next(x for x in p.stdout.splitlines() if "target sqnr>=60 not reached" in x)
        assert "dB on 100 held-out samples" in line and "could not fix: the int8 weights of" in line
    finally:
        (MODELS.parent / "tmp_never.onnx").unlink(missing_ok=True)


def test_bypass_restores_a_fused_relu():
    res = _run(None)
    fm = qpass.api.float_model(res)
    ev = load_samples(MODELS / "digits_mlp.eval.npz", res.model)
    ref = run_samples(fm, ev)["logits"]
    every = {n.output[0] for n in res.model.graph.node if n.op_type == "DequantizeLinear"}  # weights: no Q, kept
    allf = bypass(res.model, every, fm)
    # every activation float (weights still int8): far closer to float than int8, relus intact
    assert sqnr_db(ref, run_samples(allf, ev)["logits"]) > sqnr_db(ref, run_samples(res.model, ev)["logits"]) + 2
    assert np.isfinite(sqnr_db(ref, run_samples(allf, ev)["logits"]))
