"""Issue 13, quantize time (session 15): ``log_ranges.choose`` builds fewer onnxruntime sessions. Its float reference
comes from the calibrate pass's kept float values of the model (``FloatValues``) instead of a float session and one
run per sample, and the outputs ``FedSession`` hands ``OutputMemo`` the optimized model its own build wrote instead
of ``OutputMemo`` building a second optimized session of the same model to get it. Pinned: the same output file as
the search with both made again (built log-mel front end; oww-melspectrogram where it is cached), the reference
equal to a fresh float run, the kept optimized model equal to ``optimized_model``'s, and on oww-melspectrogram the
sessions and runs of the search (10 and 178 here; 12 and 181 on main d514fb6)."""
import numpy as np
import onnxruntime as ort
import pytest

import qpass
from qpass.analysis import fed_outputs
from qpass.analysis.layer_errors import joined_outputs
from qpass.ir.fed_inputs import FedSession
from qpass.ir.ort_session import optimized_model
from qpass.passes.quantize_qdq import log_ranges, qdq_pass
from qpass.ir.samples import bind_samples
from test_wall13d_fed_trials import _audio, _front_end
from test_wall14m_log_grid import _mel


#: no bias correction: a Conv bias's scale follows its input's, so trials would be quantized in full (no fed sessions)
NO_BIAS = {"bias_correction"}


def _case():
    """test_wall13d's built log-mel front end and 12 calibration clips."""
    m = _front_end()
    return m, bind_samples({"audio": _audio(12, 1)}, m)


def _bytes(res) -> bytes:
    return res.model.SerializeToString(deterministic=True)


def _as_before(monkeypatch):
    """The search as on main d514fb6: its own float run, a second optimized session for OutputMemo."""
    monkeypatch.setattr(qdq_pass, "_float_outputs", lambda *a: None)

    def fed_session(model, names, optimize=True, outputs=(), types=None, keep_optimized=False):
        return FedSession(model, names, optimize, outputs, types)

    monkeypatch.setattr(log_ranges, "FedSession", fed_session)


def _search_counts(monkeypatch, m, calib, disabled=frozenset()) -> tuple[dict, list, bytes]:
    """(the search's stats, [sessions built, runs] inside it, the output file)."""
    stats, counts = {}, [0, 0]
    real_choose, real_init, real_run = log_ranges.choose, ort.InferenceSession.__init__, ort.InferenceSession.run

    def init(self, *a, **k):
        counts[0] += 1
        return real_init(self, *a, **k)

    def run(self, *a, **k):
        counts[1] += 1
        return real_run(self, *a, **k)

    def choose(*a, **k):
        monkeypatch.setattr(ort.InferenceSession, "__init__", init)
        monkeypatch.setattr(ort.InferenceSession, "run", run)
        try:
            return real_choose(*a, stats=stats, **k)
        finally:
            monkeypatch.setattr(ort.InferenceSession, "__init__", real_init)
            monkeypatch.setattr(ort.InferenceSession, "run", real_run)

    monkeypatch.setattr(log_ranges, "choose", choose)
    res = qpass.optimize(m, calib=calib, disabled=set(disabled))
    monkeypatch.setattr(log_ranges, "choose", real_choose)
    return stats, counts, _bytes(res)


def test_same_file_with_two_sessions_fewer_on_the_front_end(monkeypatch):
    m, calib = _case()
    stats, now, data = _search_counts(monkeypatch, m, calib, NO_BIAS)
    assert stats["fed"] and stats["output_runs"] is not None, stats  # the fed sessions and OutputMemo ran
    _as_before(monkeypatch)
    stats_before, before, data_before = _search_counts(monkeypatch, m, calib, NO_BIAS)
    assert data == data_before
    assert stats["trials"] == stats_before["trials"]
    assert now[0] == before[0] - 2 and now[1] < before[1], (now, before)


def test_the_reference_from_calibrate_is_the_float_run(monkeypatch):
    m, calib = _case()
    got = []
    real = log_ranges.choose

    def choose(model, ranges, candidates, shifts, samples, *a, **k):
        got.append((k["ref"], joined_outputs(model, samples)))
        return real(model, ranges, candidates, shifts, samples, *a, **k)

    monkeypatch.setattr(log_ranges, "choose", choose)
    qpass.optimize(m, calib=calib, disabled=NO_BIAS)
    ref, fresh = got[0]
    assert ref is not None and ref.shape == fresh.shape and np.array_equal(ref, fresh)


def test_kept_optimized_model_is_optimized_models_and_runs_the_same():
    m, calib = _case()
    q = qpass.optimize(m, calib=calib, disabled=NO_BIAS, overrides={"quantize_qdq": {"log_ranges": False}}).model
    names = [i.name for i in q.graph.initializer if i.name.endswith("_scale")][:2]
    assert names
    kept, plain = FedSession(q, names, keep_optimized=True), FedSession(q, names)
    assert plain.optimized is None
    again = optimized_model(plain.model)
    assert [n.op_type for n in kept.optimized.graph.node] == [n.op_type for n in again.graph.node]
    values = {n: np.asarray(kept.dtypes[n].type(0.5)) for n in names}
    a, b = kept.run(calib, values), plain.run(calib, values)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    memo = fed_outputs.OutputMemo(kept, calib)
    assert memo.model is kept.optimized


def test_oww_melspectrogram_search_sessions_and_runs(monkeypatch):
    m, calib = _mel()
    stats, now, data = _search_counts(monkeypatch, m, calib)
    assert stats["trials"] == 61, stats
    assert now[0] <= 10 and now[1] <= 178, now  # main d514fb6: 12 sessions, 181 runs
    _as_before(monkeypatch)
    _, before, data_before = _search_counts(monkeypatch, m, calib)
    assert data == data_before and now[0] == before[0] - 2, (now, before)
