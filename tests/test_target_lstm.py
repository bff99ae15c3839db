"""Issue 13, ``--target`` beyond what integer LSTMs can give: ``mixed_precision`` may move a DynamicQuantizeLSTM
back to the float LSTM it came from (``qpass.search.lstm_precision``), only where the target needs it; a second
round probes the moves left on top of the first round's (openWakeWord's hey-mycroft: the second LSTM gains only
once the first is float)."""
import sys
from pathlib import Path

import numpy as np
import pytest

import qpass
from ptq_cases import lstm_model
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples, load_samples

SEQ, I, H = 8, 12, 16


def _case():
    """A bidirectional LSTM whose input channels span +-0.5 .. +-40 (its integer form: ~30-40 dB)."""
    rng = np.random.default_rng(1313)
    widths = np.geomspace(0.5, 40, I)
    m = lstm_model(rng.standard_normal((2, 4 * H, I)) * 0.4 / widths, rng, SEQ, H)
    x = (rng.standard_normal((64, SEQ, 1, I)) * widths / 3).astype(np.float32)
    return m, bind_samples({"x": x[:48]}, m), bind_samples({"x": x[48:]}, m)


def _ops(model):
    return [n.op_type for n in model.graph.node]


def test_a_target_integer_lstms_cannot_reach_moves_the_lstm_to_float():
    m, calib, ev = _case()
    int8 = qpass.optimize(m, calib=calib)
    ref = run_samples(m, ev)["h"]
    base = sqnr_db(ref, run_samples(int8.model, ev)["h"])
    assert "DynamicQuantizeLSTM" in _ops(int8.model) and base < 50, base
    res = qpass.optimize(m, calib=calib, config={"target": "sqnr>=60"})
    mp = res.report.results["mixed_precision"]
    assert mp["met"] and [mv["tensor"] for mv in mp["moved"]] == ["lstm:y"]
    assert "DynamicQuantizeLSTM" not in _ops(res.model) and "LSTM" in _ops(res.model)
    assert sqnr_db(ref, run_samples(res.model, ev)["h"]) >= 60
    note = next(n for r in res.records for n in r.notes if n.startswith("target "))
    assert "1 LSTMs moved" in note and "LSTM y (float)" in note


def test_a_target_the_integer_lstm_meets_keeps_it_integer():
    m, calib, ev = _case()
    res = qpass.optimize(m, calib=calib, config={"target": "sqnr>=15"})
    mp = res.report.results["mixed_precision"]
    assert mp["met"] and mp["moved"] == []
    assert "DynamicQuantizeLSTM" in _ops(res.model) and "LSTM" not in _ops(res.model)


def test_hey_mycroft_reaches_45_db_with_both_lstms_float_the_second_in_a_second_round():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "models" / "packaged"))
    import fetch
    cache = fetch.default_cache()
    name = "oww-hey-mycroft"
    if not fetch.is_present(name, cache) or not fetch.model_path(name, cache).with_name(f"{name}.eval.npz").is_file():
        pytest.skip(f"{name} and its inputs are not in {cache}: models/packaged/fetch.py and inputs.py")
    src = fetch.model_path(name, cache)
    m = qpass.load(src)
    res = qpass.optimize(m, calib=src.with_name(f"{name}.calib.npz"), config={"target": "sqnr>=45"})
    moved = {mv["tensor"]: mv["reason"] for mv in res.report.results["mixed_precision"]["moved"]}
    lstms = [t for t in moved if t.startswith("lstm:")]
    assert len(lstms) == 2 and any(moved[t].startswith("after the first round") for t in lstms)
    assert "DynamicQuantizeLSTM" not in _ops(res.model)
    ev = load_samples(src.with_name(f"{name}.eval.npz"), m)
    out = m.graph.output[0].name
    assert sqnr_db(run_samples(m, ev)[out], run_samples(res.model, ev)[out]) >= 45
