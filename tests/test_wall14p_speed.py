"""Issue 13 (quantize time): the faster paths give what the plain ones give, bit for bit.

``uniform_histogram`` replaces ``np.histogram`` in the histogram observers; the built-in pipelines' YAML is parsed
once per text. Behaviour, not time: equal counts on data that sits on and next to every bin edge, on exact zeros
(ReLU outputs) and on a radius whose middle edge is not 0; pipelines loaded twice are equal and independent.
"""
from __future__ import annotations

import numpy as np
import pytest

from qpass.analysis.calibrators import HistogramObserver, uniform_histogram
from qpass.pipeline.files import load_pipeline


def _numpy(x, r, bins):
    return np.histogram(np.asarray(x, np.float64), bins=bins, range=(-r, r))[0]


@pytest.mark.parametrize("r", [0.1, 1 / 3, 7.7, 1e-5, 3.3e7, 0.30000000000000004])
@pytest.mark.parametrize("bins", [8, 12, 100, 2048])
def test_edges_and_zeros_binned_as_numpy(r, bins):
    e = np.linspace(-r, r, bins + 1)
    x = np.concatenate([np.zeros(5), -np.zeros(3), e, np.nextafter(e, 0), np.nextafter(e, np.inf).clip(-r, r),
                        np.nextafter(e, -np.inf).clip(-r, r)])
    assert np.array_equal(uniform_histogram(x, r, bins), _numpy(x, r, bins))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_random_blocks_and_relu_as_numpy(dtype):
    rng = np.random.default_rng(3)
    for relu in (False, True):
        x = (rng.standard_normal(150_001) * 3.7).astype(dtype)  # more than two blocks
        if relu:
            x = np.maximum(x, 0)
        for scale in (1.0, 1.37, 4.0):  # the observer's radius grows by doubling: data inside, not at the edge
            r = float(np.abs(x.astype(np.float64)).max()) * scale
            got = uniform_histogram(x, r, 2048)
            assert got.dtype == np.int64 and got.sum() == x.size
            assert np.array_equal(got, _numpy(x, r, 2048))


def test_observer_keeps_numpys_counts_across_growth():
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal(4000).astype(np.float32) * s for s in (1.0, 3.0, 0.5, 9.0)]
    ob = HistogramObserver(bins=64)
    hist, radius = np.zeros(64, np.int64), 0.0
    for b in batches:
        ob.update(b)
        a = float(np.abs(b).max())
        radius = radius or a
        while a > radius:  # the observer's exact pair merge
            merged = hist.reshape(-1, 2).sum(axis=1)
            hist = np.zeros_like(hist)
            hist[16:48] = merged
            radius *= 2.0
        hist += _numpy(b, radius, 64)
    assert ob.radius == radius and np.array_equal(ob.hist, hist)


def test_builtin_pipeline_parsed_once_loads_independent_copies():
    a, b = load_pipeline("default"), load_pipeline("default")
    assert [p.name for p in a.flat_passes()] == [p.name for p in b.flat_passes()]
    assert all(p is not q for p, q in zip(a.flat_passes(), b.flat_passes()))
    c = load_pipeline("default", {"choose_ranges": {"max_work": 1.0}})
    pick = lambda pl: next(p for p in pl.flat_passes() if p.name == "choose_ranges").opts.max_work  # noqa: E731
    assert pick(c) == 1.0 and pick(load_pipeline("default")) == 5.0e9


def _fake_quant_six_steps(x, lo, hi, dtype):
    """fake_quant as it was: x / s, rint, + z, clip to the codes, - z, * s (float32)."""
    from qpass.formats.qdq_params import activation_params

    p = activation_params(lo, hi, dtype)
    s, z = np.float32(p.scale), np.float32(p.zero_point)
    q = np.rint(np.asarray(x, np.float32) / s) + z
    return ((np.clip(q, p.qmin, p.qmax) - z) * s).astype(x.dtype)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_fake_quant_one_clip_equals_the_six_steps(dtype):
    from qpass.analysis.range_choice import fake_quant

    rng = np.random.default_rng(11)
    x = np.concatenate([rng.standard_normal(50_000) * 3, [0.0, -0.0, 1e9, -1e9, 3e7, np.inf, -np.inf],
                        np.arange(-300, 300) * 0.05]).astype(np.float32)
    for lo, hi in [(-1.0, 2.0), (0.0, 6.0), (-4.0, 0.0), (-0.37, 0.0051), (-2.5, 2.5)]:
        x[: 20] = rng.uniform(lo, hi, 20)
        want, got = _fake_quant_six_steps(x, lo, hi, dtype), fake_quant(x, lo, hi, dtype)
        assert got.dtype == want.dtype and np.array_equal(got, want)  # equal values (a zero's sign may differ)
        a, b = want.view(np.uint32), got.view(np.uint32)
        assert np.all((a == b) | ((want == 0) & (got == 0)))  # bit for bit but for the sign of a zero


def test_known_per_sample_consumers_skip_the_check_with_the_same_choice(monkeypatch):
    """Conv and PRelu consumers stack the samples without the per-sample check runs: the same errors bit for bit
    as through the check, in fewer consumer runs; a NaN output goes through the check as before."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from qpass.analysis import range_choice as rc
    from qpass.analysis.calibrators import PercentileObserver
    from qpass.ir.graph import elem_types

    rng = np.random.default_rng(2)
    w = rng.standard_normal((4, 3, 3, 3)).astype(np.float32)
    w[:, 0] = 1e-4
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("PRelu", ["x", "slope"], ["p"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [1, 4, 6, 6]),
                           helper.make_tensor_value_info("p", TensorProto.FLOAT, [1, 3, 6, 6])],
                          [numpy_helper.from_array(w, "w"),
                           numpy_helper.from_array(np.full((3, 1, 1), 0.25, np.float32), "slope")])
    m = onnx.shape_inference.infer_shapes(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    x = rng.standard_normal((8, 1, 3, 6, 6)).astype(np.float32)
    x[::3, 0, 0, 2, 2] = 60.0
    ob = PercentileObserver()
    ob.update(x)
    cands = rc.histogram_candidates(ob.lo, ob.hi, ob, 8)
    samples = [{"x": v} for v in x]
    calls = []
    real = rc.ConsumerRunner.output
    monkeypatch.setattr(rc.ConsumerRunner, "output", lambda self, *a: calls.append(1) or real(self, *a))

    def choose(known: bool):
        calls.clear()
        monkeypatch.setattr(rc, "PER_SAMPLE_OPS", rc.PER_SAMPLE_OPS if known else frozenset())
        return rc.choose_range(rc.ConsumerRunner(m, elem_types(m)), "x", cands, samples, "uint8"), len(calls)

    (fast, n_fast), (checked, n_checked) = choose(True), choose(False)
    assert (fast.method, fast.range, fast.error, fast.minmax_error) == \
        (checked.method, checked.range, checked.error, checked.minmax_error)
    assert n_fast == 2 * (1 + len(cands)) and n_checked == n_fast + 2 * 3  # 2 samples alone, then a batch of 2
    samples[5] = {"x": np.full_like(x[5], np.nan)}  # not finite: the checked path decides
    calls.clear()
    assert rc._known_stacked(rc.ConsumerRunner(m, elem_types(m)), list(m.graph.node), "x", samples) is None


@pytest.mark.parametrize("spatial", [(9,), (10, 11), (6, 7, 5)])
def test_window_rows_from_a_channels_last_copy_equal_the_strided_gather(spatial):
    from qpass.passes.ptq_layers import _window_rows
    from qpass.reference.im2col import geometry, windows

    rng = np.random.default_rng(len(spatial))
    n, cases = len(spatial), 0
    for k, stride, dil in [(1, 1, 1), (3, 1, 1), (2, 2, 1), (3, 2, 2), (3, 1, 2)]:
        for pads in ([0] * 2 * n, [1] * 2 * n, list(rng.integers(0, 3, 2 * n))):
            x = rng.standard_normal((3, 4) + spatial).astype(np.float32)
            begin, end, out = geometry(x.shape[2:], [k] * n, [stride] * n, [dil] * n, pads, "NOTSET")
            if min(out) < 1:
                continue
            total = 3 * int(np.prod(out))
            rows = np.sort(rng.choice(total, min(total, 40), replace=False))
            v = windows(x, [k] * n, [stride] * n, [dil] * n, begin, end, out)
            at = np.unravel_index(rows, (3,) + tuple(out))
            want = v[(at[0], slice(None)) + tuple(at[1:])].reshape(len(rows), -1)
            got = _window_rows(x, [k] * n, [stride] * n, [dil] * n, begin, end, out, rows)
            assert got.dtype == np.float32 and np.array_equal(got, want)
            cases += 1
    assert cases >= 10
