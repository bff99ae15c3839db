"""The weight-side probe's one-pass float run (``Probe.groups``): every probed tensor over every sample in one pass,
sample group by sample group within ``CACHE_BYTES``, the same values as ``float_value``'s runs; bias correction
gathers its patch rows group by group (``PatchRows``) and gives the model bit for bit what it gave from whole
tensors, in one float run however small the cache."""
import numpy as np
import onnx
import pytest

import qpass
from qpass.ir.samples import as_samples
from qpass.passes import bias_correction, ptq_layers, ptq_probe
from qpass.passes.bias_correction import PatchRows
from qpass.passes.ptq_layers import Probe, find_layers, sample_rows

from conftest import MODELS


def _digits(name="digits_cnn", n=12):
    model = qpass.load(MODELS / f"{name}.onnx")
    samples = as_samples(MODELS / f"{name}.calib.npz", model).subset(slice(0, n))
    return model, samples


@pytest.mark.parametrize("batched", [False, True])
def test_groups_hand_over_exactly_the_values_of_float_value(monkeypatch, batched):
    model, samples = _digits(n=150 if batched else 12)  # batched: groups of whole batches (64 samples)
    layers = find_layers(model)
    tensors = [lay.x for lay in layers] + [model.graph.output[0].name]
    monkeypatch.setattr(Probe, "batched", lambda self, tensors: batched)
    whole = Probe(model, samples, [], tensors)
    expect = {t: whole.float_value(t) for t in tensors}  # everything fits: one run over every sample
    per_sample = sum(v[:1].nbytes for v in expect.values())
    monkeypatch.setattr(ptq_probe, "CACHE_BYTES", (70 if batched else 3) * per_sample)
    probe = Probe(model, samples, [], tensors)
    got = {t: [] for t in tensors}
    spans = []
    for start, stop, values in probe.groups(keep=[tensors[-1]]):
        spans.append((start, stop))
        for t in tensors:
            got[t].append(values[t])
    assert spans[0][0] == 0 and spans[-1][1] == len(samples) and len(spans) >= (3 if batched else 4)
    assert not batched or all(a % 64 == 0 for a, _ in spans)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))
    for t in tensors:
        assert np.array_equal(np.concatenate(got[t]), expect[t]), t
    assert np.array_equal(probe.cached(tensors[-1]), expect[tensors[-1]])
    # one float run over the samples (a batched probe sizes them on sample 0 first)
    assert probe.float_runs <= 1 + 1 / len(samples) + 1e-9


@pytest.mark.parametrize("eager", [True, False])
def test_patch_rows_gathered_per_group_are_the_rows_of_the_whole_input(eager):
    model, samples = _digits("digits_rescnn", 10)
    probe = Probe(model, samples, [], [lay.x for lay in find_layers(model)])
    for lay in find_layers(model):
        x = probe.float_value(lay.x)
        for lo, hi, count in ((0, 7, 300), (7, 10, 300), (0, 10, 10 ** 9)):
            rows = PatchRows(lay, lo, hi, count)
            rows.eager = eager
            for start, stop in ((0, 1), (1, 4), (4, 5), (5, 10)):
                rows.add(start, stop, x[start:stop])
            expect = lay.patches(x[lo:hi], sample_rows(lay.rows(x[lo:hi]), count))
            got = rows.patches()
            assert got.dtype == expect.dtype and np.array_equal(got, expect), (lay.name, lo, hi, count)


def _bias_corrected(monkeypatch, cache_bytes=None):
    float_samples = []
    orig = Probe.run

    def run(self, tensors, weights=None, samples=None):
        if weights is None:
            float_samples.append(len(samples or self.samples))
        return orig(self, tensors, weights, samples)

    monkeypatch.setattr(Probe, "run", run)
    if cache_bytes is not None:
        monkeypatch.setattr(ptq_probe, "CACHE_BYTES", cache_bytes)
        monkeypatch.setattr(ptq_layers, "CACHE_BYTES", cache_bytes, raising=False)
        monkeypatch.setattr(bias_correction, "CACHE_BYTES", cache_bytes, raising=False)
    res = qpass.optimize(MODELS / "digits_cnn.onnx", calib=MODELS / "digits_cnn.calib.npz",
                         disabled={"equalize", "choose_ranges", "auto_precision", "choose_dynamic"})
    rec = next(r for r in res.records if r.name == "bias_correction")
    monkeypatch.undo()
    return res.model, rec.notes, float_samples


def test_bias_correction_reads_every_layer_in_one_float_run_with_the_same_result(monkeypatch):
    model, notes, _ = _bias_corrected(monkeypatch)
    assert any("corrected the bias of" in n and " 0 channels" not in n for n in notes), notes
    n = min(len(as_samples(MODELS / "digits_cnn.calib.npz", model)), 256)
    # a cache that holds a few samples' layer inputs: many groups, rows gathered as they come
    small, small_notes, runs = _bias_corrected(monkeypatch, 20_000)
    assert len(runs) >= 4, runs
    assert small_notes == notes
    assert small.SerializeToString(deterministic=True) == model.SerializeToString(deterministic=True)
    # float runs: the layer inputs of every sample once, and sample 0 once more to size the groups
    assert sum(runs) <= n + 1, runs


def test_held_out_check_reuses_the_rounded_run():
    """``held_out_check`` given ``rounded_sqnr``'s answer gives the same pair as computing both itself."""
    from qpass.passes.ptq_layers import WeightGrid
    from qpass.passes.ptq_pass import WeightSidePass

    model, samples = _digits()
    layers = find_layers(model, ("Conv", "Gemm"))
    outs = [o.name for o in model.graph.output]
    probe = Probe(model, samples, layers, [lay.x for lay in layers] + outs)
    for _ in probe.groups(outs):
        pass
    grid = WeightGrid()
    after = onnx.ModelProto()
    after.CopyFrom(model)
    plain = WeightSidePass.rounded_sqnr(model, layers, grid, probe, 9)
    both = WeightSidePass.held_out_check(model, after, layers, grid, probe, 9)
    assert both == (plain, plain) and np.isfinite(plain)
    assert WeightSidePass.held_out_check(model, after, layers, grid, probe, 9, plain=plain) == both


def _gemm_case(on_grid: bool):
    from onnx import helper

    from ptq_cases import build, init, quantize

    rng = np.random.default_rng(3)
    codes = rng.integers(-120, 120, (8, 32)).astype(np.float64)
    codes[:, 0] = 127
    w = codes * 2.0 ** -7 + (0 if on_grid else 0.35 * 2.0 ** -7)  # exactly on the int8 grid, or a third off it
    model = build([helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)], ["N", 32], "y", ["N", 8],
                  [init("w", w), init("b", np.zeros(8))])
    x = (2.0 + rng.uniform(0, 0.2, (64, 1, 32))).astype(np.float32)
    res = quantize(model, x, "bias_correction", weights="int8")
    return next(r for r in res.records if r.name == "bias_correction").notes


def test_nothing_to_correct_where_the_rounded_weights_leave_the_output_exact():
    """Weights on the grid: the weights-only output SQNR is far above what uint8 activations reach, so the pass
    stops before measuring any layer; a third of a step off the grid, it goes on and corrects."""
    (note,) = _gemm_case(True)
    assert "nothing to correct" in note and "8-bit activations" in note, note
    notes = _gemm_case(False)
    assert any("corrected the bias of 8 channels" in n for n in notes), notes


@pytest.mark.parametrize("fused", [True, False], ids=["hardswish", "decomposed"])
def test_block_error_from_sample_groups_is_the_block_error_of_the_whole(fused):
    """gate_equalize's error model built from parts along the sample axis (``Probe.groups``' groups) has the same
    extrema, subsampled positions and errors, bit for bit, as the one built from the joined tensor."""
    from test_gate_equalize import block

    from qpass.passes.gate_equalize import BlockError, find_blocks

    model = block(True, fused)
    (b,) = find_blocks(model)
    inits = {i.name: i for i in model.graph.initializer}
    z = np.random.default_rng(5).normal(0, 3, (11, 8, 10, 10)).astype(np.float32)
    whole = BlockError(b, z, "uint8", inits, 17, positions=2000)
    parts = BlockError(b, [z[:1]], "uint8", inits, 17, positions=2000, total=len(z))
    for lo, hi in ((1, 4), (4, 5), (5, 11)):
        parts.add(z[lo:hi])
    parts.finish()
    for name in ("z_lo", "z_hi", "h_lo", "h_hi", "z", "h"):
        assert np.array_equal(getattr(parts, name), getattr(whole, name)), name
    s = np.linspace(0.2, 1.0, 8)
    assert parts(s) == whole(s) and parts(np.ones(8)) == whole(np.ones(8))
