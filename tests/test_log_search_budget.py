"""``log_ranges`` searches on the first calibration samples that hold at most ``SEARCH_VALUES`` input values (each
of its models runs on every search sample, one per call where a sample-coupling op forbids stacking): long clips
search on a few, short ones on up to 16; the budgeted choice still beats min/max ranges on held-out clips."""
import numpy as np

import qpass
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import SampleSet, bind_samples
from qpass.passes.quantize_qdq import log_ranges
import test_ort12_log_ranges as t12
from test_ort12_log_ranges import N, _audio, _front_end


def _notes(res) -> str:
    return " ".join(n for r in res.records for n in r.notes)


def test_search_sample_count_follows_the_input_size(monkeypatch):
    monkeypatch.setattr(t12, "RNG", np.random.default_rng(12))  # the data do not depend on which tests ran first
    m = _front_end()
    assert log_ranges.search_samples(bind_samples({"x": _audio(20)}, m)) == 16
    assert log_ranges.search_samples(bind_samples({"x": _audio(5)}, m)) == 5
    big = SampleSet({"x": np.zeros((8, 1, 40000), np.float32)}, {}, None, "clips")  # an oww-melspectrogram clip: 3 of them
    assert log_ranges.search_samples(big) == 3
    huge = SampleSet({"x": np.zeros((8, 1, 1 << 20), np.float32)}, {}, None, "clips")
    assert log_ranges.search_samples(huge) == log_ranges.MIN_SEARCH_SAMPLES


def test_budgeted_search_runs_on_fewer_clips_and_still_beats_min_max(monkeypatch):
    monkeypatch.setattr(t12, "RNG", np.random.default_rng(12))
    m = _front_end()
    calib, ev = bind_samples({"x": _audio(12)}, m), bind_samples({"x": _audio(24)}, m)
    monkeypatch.setattr(log_ranges, "SEARCH_VALUES", 4 * N)
    res = qpass.optimize(m, calib=calib)
    assert "dB on 4 calibration samples" in _notes(res)
    minmax = qpass.optimize(m, calib=calib, overrides={"quantize_qdq": {"log_ranges": False, "max_range": 1e30}})
    ref = run_samples(m, ev, batch_size=1)["y"]
    got = sqnr_db(ref, run_samples(res.model, ev, batch_size=1)["y"])
    base = sqnr_db(ref, run_samples(minmax.model, ev, batch_size=1)["y"])
    assert got > base + 3, (got, base)
