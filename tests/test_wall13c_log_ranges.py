"""Issue 13, quantize time: ``log_ranges`` searches the halvings of the ranges a Log reads coarse to fine (a grid of
step 6, then a hill climb on the step-2 grid) instead of the whole step-2 grid, and its trial models are copies of
one quantized model with the candidates' scales and zero points rewritten. Pinned on a built log-mel front end:
the choice is within 0.2 dB of the full grid's with fewer models tried, the copies give the same output file as
quantizing every trial in full, and the number of trials is bounded."""
import re

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples
from qpass.passes.quantize_qdq import log_ranges

N, BINS, MELS = 128, 33, 8


def _front_end():
    """x (int16-scale audio) -> DFT as a MatMul -> power -> filter bank -> Clip -> Log: three ranges read by the Log
    (the DFT output, the power, the filter-bank output)."""
    rng = np.random.default_rng(13)
    t, k = np.arange(N)[:, None], np.arange(BINS)[None, :]
    dft = np.concatenate([np.cos(2 * np.pi * t * k / N), np.sin(2 * np.pi * t * k / N)], axis=1) / N
    bank = np.abs(rng.standard_normal((BINS, MELS))) / BINS
    inits = [numpy_helper.from_array(dft.astype(np.float32), "dft"),
             numpy_helper.from_array(bank.astype(np.float32), "bank"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1e-10, np.float32), "eps")]
    nodes = [helper.make_node("MatMul", ["x", "dft"], ["spec"]),
             helper.make_node("Pow", ["spec", "two"], ["sq"]),
             helper.make_node("Split", ["sq"], ["re2", "im2"], axis=1, num_outputs=2),
             helper.make_node("Add", ["re2", "im2"], ["power"]),
             helper.make_node("MatMul", ["power", "bank"], ["mel"]),
             helper.make_node("Clip", ["mel", "eps"], ["clipped"]),
             helper.make_node("Log", ["clipped"], ["y"])]
    g = helper.make_graph(nodes, "logmel", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, N])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, MELS])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def _audio(n, seed):
    """Tones a few decades apart in level over quiet noise, at int16 scale."""
    rng, t = np.random.default_rng(seed), np.arange(N)
    out = [sum(20000 * 10 ** (-rng.uniform(0, 3)) * np.sin(2 * np.pi * rng.uniform(1, BINS - 1) * t / N
                                                          + rng.uniform(0, 6)) for _ in range(4))
           + 3 * rng.standard_normal(N) for _ in range(n)]
    return np.stack(out)[:, None].astype(np.float32)


def _search(res) -> tuple[float, float, int, int]:
    """(output SQNR before, after, models tried, the full grid's bound on them) from the log_ranges note."""
    note = next(n for r in res.records for n in r.notes if "read by a Log narrowed" in n)
    got = re.search(r"^(\d+) ranges read .* output SQNR (-?[\d.]+) -> (-?[\d.]+) dB on \d+ calibration samples, "
                    r"(\d+) models tried", note)
    assert got, note
    # the step-2 grid: 7 x 7 points and 7 re-measured models per candidate but the last (7 points), the first model
    # and the check of the copies
    bound = (int(got[1]) - 1) * (49 + 7) + 7 + 2
    return float(got[2]), float(got[3]), int(got[4]), bound


def _case():
    m = _front_end()
    return m, bind_samples({"x": _audio(12, 1)}, m), bind_samples({"x": _audio(24, 2)}, m)


def test_coarse_to_fine_choice_is_within_0p2_db_of_the_full_grid_with_fewer_models():
    m, calib, ev = _case()
    fine = qpass.optimize(m, calib=calib)
    full = qpass.optimize(m, calib=calib, overrides={"quantize_qdq": {"log_range_coarse": 2}})
    f0, f1, n_fine, bound = _search(fine)
    g0, g1, n_full, _ = _search(full)
    assert f0 == g0 and f1 > f0 + 3  # the search still finds ranges far better than min/max
    assert f1 >= g1 - 0.2, (f1, g1)
    assert n_fine <= 0.6 * n_full and n_full <= bound, (n_fine, n_full, bound)
    ref = run_samples(m, ev, batch_size=1)["y"]
    on_eval = [sqnr_db(ref, run_samples(r.model, ev, batch_size=1)["y"]) for r in (fine, full)]
    assert on_eval[0] >= on_eval[1] - 1.0, on_eval


def test_trial_copies_give_the_same_file_as_quantizing_every_trial(monkeypatch):
    m, calib, _ = _case()
    patched = qpass.optimize(m, calib=calib)
    monkeypatch.setattr(log_ranges, "_param_slots", lambda model, tensors: None)  # every trial quantized in full
    full = qpass.optimize(m, calib=calib)
    assert _search(patched)[1] == _search(full)[1]
    assert patched.model.SerializeToString(deterministic=True) == full.model.SerializeToString(deterministic=True)


def test_trials_are_bounded_by_the_grid_whatever_the_landscape(monkeypatch):
    """A score that rises towards the far corner of every candidate's grid makes the climb walk the whole way: it
    still stops, with at most every step-2 point tried once per candidate."""
    m, calib, _ = _case()
    calls = []

    def fake_sqnr(ref, got):
        calls.append(1)
        return float(len(calls))  # every new trial is better than all before it

    monkeypatch.setattr(log_ranges, "sqnr_db", fake_sqnr)
    res = qpass.optimize(m, calib=calib)
    _, _, n, bound = _search(res)
    assert n <= bound, (n, bound)


def test_choose_ranges_leaves_the_log_ranges_to_quantize_qdq():
    """The ranges quantize_qdq's log_ranges chooses on the output (a Log reads them, their calibrated range reaches
    its max_range) are not chosen a first time by choose_ranges; the rest are."""
    m, calib, _ = _case()
    res = qpass.optimize(m, calib=calib)
    off = qpass.optimize(m, calib=calib, overrides={"choose_ranges": {"skip_log_ranges": False}})
    chosen = set(res.report.results.get("range_choice", {}).get("tensors", {}))
    before = set(off.report.results["range_choice"]["tensors"])
    wide = {"x", "spec", "power"}  # int16-scale audio and what the DFT makes of it
    assert wide & before and not wide & chosen, (before, chosen)
