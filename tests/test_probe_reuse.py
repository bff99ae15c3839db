"""The weight-side passes' held-out check takes its float reference from the probe's float run over every sample
(the graph outputs are fetched with the layer inputs), not from a run of its own; the numbers are the same."""
import qpass
from qpass.passes import ptq_layers

from conftest import MODELS


def _run(monkeypatch, reuse: bool):
    calls = []
    orig_run, orig_cached = ptq_layers.Probe.run, ptq_layers.Probe.cached

    def run(self, tensors, weights=None, samples=None):
        calls.append((weights is None, 0 if samples is None else len(samples)))
        return orig_run(self, tensors, weights, samples)

    monkeypatch.setattr(ptq_layers.Probe, "run", run)
    monkeypatch.setattr(ptq_layers.Probe, "cached", orig_cached if reuse else lambda self, t: None)
    res = qpass.optimize(MODELS / "digits_cnn.onnx", calib=MODELS / "digits_cnn.calib.npz",
                         disabled={"choose_ranges", "auto_precision"})
    note = next(n for r in res.records if r.name == "bias_correction" for n in r.notes if "held-out" in n)
    return calls, note, res.model


def test_held_out_check_reads_the_float_run(monkeypatch):
    calls, note, model = _run(monkeypatch, True)
    held = {n for w, n in calls if not w}  # the sizes of the held-out runs (weights on the grid)
    assert held and not any(w and n in held for w, n in calls)  # no float run of the held-out samples alone
    old_calls, old_note, old_model = _run(monkeypatch, False)
    assert any(w and n in held for w, n in old_calls)
    assert note == old_note
    assert model.SerializeToString(deterministic=True) == old_model.SerializeToString(deterministic=True)
