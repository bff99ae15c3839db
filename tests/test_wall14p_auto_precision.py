"""Issue 13 (quantize time): auto_precision measures nothing when no activation quantizer can move to float
without an integer kernel going float (and no cost budget asks for such moves): same model, no float run."""
from __future__ import annotations

import qpass
import qpass.search.mixed_int8 as mi
from test_wall14p_float_values import _conv_net


def test_nothing_to_probe_runs_no_float_model_and_keeps_the_model(monkeypatch):
    m, samples = _conv_net(4, infer=False)
    ref = qpass.optimize(m, calib=samples, disabled={"auto_precision"}).model.SerializeToString()
    calls = []
    for name in ("float_outputs", "isolated_errors", "joined_outputs"):
        real = getattr(mi, name)
        monkeypatch.setattr(mi, name, lambda *a, _r=real, _n=name, **k: calls.append(_n) or _r(*a, **k))
    res = qpass.optimize(m, calib=samples)
    ap = res.report.results["auto_precision"]
    assert ap == {"probed": [], "probed_costly": [], "moved": []} and calls == []
    assert res.model.SerializeToString() == ref
    # with a cost budget the costly moves are weighed: the float reference runs
    qpass.optimize(m, calib=samples, pipeline=qpass.load_pipeline("default", {"auto_precision": {"cost_budget": 0.02}}))
    assert "float_outputs" in calls or "isolated_errors" in calls
