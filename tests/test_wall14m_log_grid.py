"""Issue 13, quantize time (session 14): ``log_ranges``' coarse grid stops below the top halving count (the hill
climb still reaches it), and the search starts from the quantize_qdq pass's own first quantization instead of
making it again. Pinned: the same output file as main's grid (top count included) with fewer models tried, on the
built log-mel front end of test_wall13c and on oww-melspectrogram where it is cached; a top count the climb has to
walk to is still found; the pass quantizes the min/max ranges once."""
import os
import re
from pathlib import Path

import numpy as np
import pytest

import qpass
from qpass.passes.quantize_qdq import log_ranges, qdq_pass
from test_wall13c_log_ranges import _case


def _with_top(top, coarse, fine):
    """main's coarse grid (0e37694): 0, coarse, .. and ``top`` itself."""
    grid = list(range(0, top + 1, coarse))
    if grid[-1] != top:
        grid.append(top)
    return grid, lambda k: [x for x in (k - fine, k + fine) if 0 <= x <= top]


def _tried(res) -> int:
    note = next(n for r in res.records for n in r.notes if "read by a Log narrowed" in n)
    return int(re.search(r"(\d+) models tried", note)[1])


def _same_with_fewer(monkeypatch, m, calib):
    now = qpass.optimize(m, calib=calib)
    monkeypatch.setattr(log_ranges, "_coarse_fine", _with_top)
    before = qpass.optimize(m, calib=calib)
    assert now.model.SerializeToString(deterministic=True) == before.model.SerializeToString(deterministic=True)
    return _tried(now), _tried(before)


def test_grid_without_the_top_count_gives_the_same_file_with_fewer_models(monkeypatch):
    m, calib, _ = _case()
    now, before = _same_with_fewer(monkeypatch, m, calib)
    assert now < before, (now, before)


def _mel():
    d = Path(os.environ.get("QPASS_ZOO_CACHE", Path.home() / ".cache" / "qpass-zoo")) / "oww-melspectrogram"
    if not (d / "oww-melspectrogram.onnx").exists():
        pytest.skip("oww-melspectrogram is not in the zoo cache (python models/packaged/fetch.py oww)")
    return qpass.load(d / "oww-melspectrogram.onnx"), dict(np.load(d / "oww-melspectrogram.calib.npz"))


def test_oww_melspectrogram_same_file_with_fewer_models(monkeypatch):
    m, calib = _mel()
    now, before = _same_with_fewer(monkeypatch, m, calib)
    assert (now, before) == (61, 80), (now, before)  # 16 grid points with a count of 12, 3 of their neighbours


def test_the_top_count_is_still_reached_by_the_climb():
    grid, near = log_ranges._coarse_fine(12, 6, 2)
    assert grid == [0, 6]
    k, seen = 6, set()
    while k < 12:  # a score rising to the top: the climb's steps from the coarse best reach it
        k = max(near(k))
        seen.add(k)
    assert 12 in seen
    assert log_ranges._coarse_fine(12, 2, 2)[0] == [0, 2, 4, 6, 8, 10, 12]  # the full grid keeps its top
    assert log_ranges._coarse_fine(10, 4, 2)[0] == [0, 4, 8]


def _quantizations(monkeypatch, m, calib) -> list:
    made = []
    real = qdq_pass._quantize

    def counted(model, ranges, opts):
        made.append(1)
        return real(model, ranges, opts)

    monkeypatch.setattr(qdq_pass, "_quantize", counted)
    qpass.optimize(m, calib=calib)
    return len(made)


def test_the_search_does_not_quantize_the_min_max_ranges_a_second_time(monkeypatch):
    """The pass hands its first quantization to the search: one full quantization fewer than main's search,
    which made it again."""
    m, calib, _ = _case()
    now = _quantizations(monkeypatch, m, calib)
    real = qdq_pass._log_ranges
    monkeypatch.setattr(qdq_pass, "_log_ranges", lambda *a, **k: real(*a[:5]))  # the search quantizes it itself
    assert now == _quantizations(monkeypatch, m, calib) - 1


def test_oww_melspectrogram_search_runs_are_bounded(monkeypatch):
    """The onnxruntime runs of the whole search (3 clips, one per call): 181 here, 242 on main 0e37694 (80 models,
    58 output parts, 16 read parts)."""
    import onnxruntime as ort

    m, calib = _mel()
    stats, calls = {}, []
    real_choose, real_run = log_ranges.choose, ort.InferenceSession.run

    def counted(self, *a, **k):
        calls.append(1)
        return real_run(self, *a, **k)

    def choose(*a, **k):
        monkeypatch.setattr(ort.InferenceSession, "run", counted)
        try:
            return real_choose(*a, stats=stats, **k)
        finally:
            monkeypatch.setattr(ort.InferenceSession, "run", real_run)

    monkeypatch.setattr(log_ranges, "choose", choose)
    qpass.optimize(m, calib=calib)
    assert stats["trials"] == 61 and stats["patched"] and stats["fed"], stats
    assert stats["read_runs"] == {"full": 3, "part": 11} and stats["output_runs"] == {"whole": 0, "part": 42}, stats
    assert len(calls) <= 181, len(calls)
