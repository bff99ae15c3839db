"""bench/ort_baseline.py's latency sampler (issue 12: ratios near 1.05 on 20-500 us models must be measured, not
guessed): every round times every session once, in an order rotated from round to round, each sample a run of
consecutive calls, the garbage collector back on afterwards. Mechanics only (no timing is asserted)."""
import gc
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import ort_baseline  # noqa: E402


class _Fake:
    def __init__(self, name, log):
        self.name, self.log = name, log

    def run(self, outputs, feed):
        self.log.append(self.name)


def test_rounds_are_interleaved_in_rotated_order_with_runs_of_calls(monkeypatch):
    monkeypatch.setattr(ort_baseline, "WARMUP_SECONDS", 0.0)
    log: list[str] = []
    sessions = {k: _Fake(k, log) for k in ("float", "qpass", "quantize_static")}
    times = ort_baseline.paired_times(sessions, {}, budget=0.0, max_rounds=30)
    assert gc.isenabled()
    assert {k: len(v) for k, v in times.items()} == {k: 15 for k in sessions}  # the budget spent: 15 rounds
    timed = log[3 * ort_baseline.WARMUP_CALLS:]
    runs = [timed[0]]  # collapse each run of consecutive calls of one session
    for k in timed[1:]:
        if k != runs[-1]:
            runs.append(k)
    assert len(timed) > len(runs)  # each sample is many calls of a fake (instant) session
    keys = list(sessions)
    rounds = [runs[3 * r:3 * r + 3] for r in range(15)]
    assert all(sorted(r) == sorted(keys) for r in rounds)
    assert [r[0] for r in rounds[:3]] == keys
