"""Range observers: minmax / percentile / entropy / mse / dfp on uniform and heavy-tailed data, bounded memory
(fixed histograms re-binned exactly when the range grows), and streaming equal to one update."""
import numpy as np
import pytest

from qpass.analysis.calibrators import (CALIBRATORS, DFPObserver, EntropyObserver, HistogramObserver, MinMaxObserver,
                               MSEObserver, PercentileObserver, kl_threshold, make_observer)
from qpass.errors import PipelineError
from qpass.formats import Affine, DynamicFixedPoint

HIST_METHODS = ["percentile", "entropy", "mse"]
OPTS = {"percentile": 99.99, "bins": 2048}  # what the calibrate pass hands to every observer


def observe(method, data, chunks=1, **opts):
    ob = make_observer(method, **{**OPTS, **opts})
    for c in np.array_split(np.asarray(data), chunks):
        ob.update(c)
    return ob


@pytest.fixture(scope="module")
def heavy():
    return np.random.default_rng(0).standard_t(2, 200_000).astype(np.float32)


@pytest.fixture(scope="module")
def uniform():
    return np.random.default_rng(1).uniform(-3.0, 3.0, 200_000).astype(np.float32)


def test_registry_and_option_passing():
    assert set(CALIBRATORS) == {"minmax", "percentile", "entropy", "mse", "dfp"}
    for m in CALIBRATORS:
        ob = make_observer(m, percentile=99.9, bins=1024, bits=8, unrelated="ignored")
        assert not ob.seen and ob.range() == (0.0, 0.0)
    assert make_observer("percentile", percentile=99.9).percentile == 99.9
    assert make_observer("entropy", bins=1024).hist.size == 1024
    with pytest.raises(PipelineError, match="known: dfp, entropy, minmax, mse, percentile"):
        make_observer("kl")
    with pytest.raises(PipelineError, match="multiple of 4"):
        make_observer("entropy", bins=1002)
    with pytest.raises(PipelineError, match="percentile"):
        make_observer("percentile", percentile=20)


@pytest.mark.parametrize("method", HIST_METHODS)
def test_heavy_tails_are_clipped_well_below_the_max(method, heavy):
    lo, hi = observe(method, heavy, chunks=7).range()
    mlo, mhi = float(heavy.min()), float(heavy.max())
    amax = max(-mlo, mhi)
    assert mlo < lo < 0 < hi < mhi
    assert hi < 0.75 * amax and -lo < 0.75 * amax
    assert hi > 20 * np.median(np.abs(heavy))  # but not absurdly tight


@pytest.mark.parametrize("method", ["minmax", *HIST_METHODS])
def test_uniform_data_keeps_about_the_full_range(method, uniform):
    lo, hi = observe(method, uniform, chunks=5).range()
    assert uniform.min() <= lo <= 0.98 * uniform.min()
    assert 0.98 * uniform.max() <= hi <= uniform.max()


def test_percentile_matches_numpy(heavy):
    ob = observe("percentile", heavy, chunks=3, percentile=99.0)
    lo, hi = ob.range()
    w = ob.width
    assert abs(hi - np.percentile(heavy, 99.0)) < w and abs(lo - np.percentile(heavy, 1.0)) < w
    sym = observe("percentile", heavy, percentile=99.0, symmetric=True)
    t = np.percentile(np.abs(heavy), 99.0)
    assert sym.range()[1] == -sym.range()[0] and abs(sym.range()[1] - t) < sym.width
    relu = np.maximum(heavy, 0)
    lo, hi = observe("percentile", relu, percentile=99.0).range()
    assert lo == 0.0 and abs(hi - np.percentile(relu, 99.0)) < 2 * w


def test_ranges_never_leave_the_observed_extremes():
    relu = np.maximum(np.random.default_rng(2).standard_normal(50_000), 0).astype(np.float32)
    for m in ["minmax", *HIST_METHODS]:
        lo, hi = observe(m, relu).range()
        assert lo == 0.0 and 0 < hi <= relu.max()


def test_mse_clip_minimises_the_actual_quantisation_error(heavy):
    x = heavy[:40_000].astype(np.float64)
    ob = observe("mse", x, bits=4)
    lo, hi = ob.range()

    def err(c):
        return np.mean((Affine(4, symmetric=True, scale=c / 7).quantize(x).values - x) ** 2)

    grid = np.linspace(0.5, float(np.abs(x).max()), 120)
    best = min(err(c) for c in grid)
    assert err(hi) <= 1.01 * best  # the histogram model is within 1% of a brute-force search
    assert err(hi) < 0.8 * err(float(np.abs(x).max()))  # clearly better than minmax at 4 bits
    clips, curve = ob.mse_curve()
    i = np.searchsorted(clips, hi)
    assert curve[i] == curve.min() and curve[i] == pytest.approx(err(hi), rel=0.1)
    hi8 = observe("mse", x, bits=8).range()[1]
    assert hi8 > hi  # more bits: finer steps pay for a wider range
    relu = np.maximum(x, 0)  # one-signed data: an unsigned grid [0, c] with 15 steps

    def err_u(c):
        return np.mean((Affine(4, signed=False, scale=c / 15, zero_point=0).quantize(relu).values - relu) ** 2)

    lo_u, hi_u = observe("mse", relu, bits=4).range()
    assert lo_u == 0.0 and err_u(hi_u) <= 1.002 * min(err_u(c) for c in grid)


def reference_kl_threshold(hist, nq):
    """TensorRT / MXNet's loop, written plainly (the remainder bins join the last quantised bin)."""
    best, best_i = np.inf, len(hist)
    for i in range(nq, len(hist) + 1):
        p = hist[:i].astype(float)
        p[-1] += hist[i:].sum()
        if p[-1] == 0:
            continue
        q = np.zeros(i)
        m = i // nq
        for j in range(nq):
            a, b = j * m, (i if j == nq - 1 else (j + 1) * m)
            nz = np.count_nonzero(p[a:b])
            if nz:
                q[a:b] = np.where(p[a:b] != 0, hist[a:b].sum() / nz, 0.0)
        pn, qn = p / p.sum(), q / q.sum()
        k = pn > 0
        d = np.sum(pn[k] * np.log(pn[k] / np.maximum(qn[k], 1e-4 / i)))
        if d < best:
            best, best_i = d, i
    return best_i


def test_entropy_threshold_against_the_plain_algorithm():
    j = np.arange(512)
    hist = np.round(1e6 * np.exp(-j / 20.0)) * (j < 200)  # a decaying body ...
    hist[511] = 3.0  # ... and a far outlier
    i = kl_threshold(hist, 32)
    assert i == reference_kl_threshold(hist, 32)
    assert 32 <= i <= 200  # the outlier is clipped away
    noisy = np.random.default_rng(4).poisson(1e4 * np.exp(-j / 50.0)).astype(float)
    assert kl_threshold(noisy, 24) == reference_kl_threshold(noisy, 24)
    flat = np.zeros(1024)
    flat[:200] = 1000.0
    flat[1023] = 1.0
    assert kl_threshold(flat, 128) == 1024  # a flat body loses nothing to 128 levels: nothing to gain by clipping
    assert kl_threshold(np.ones(100), 128) == 100  # fewer bins than levels


@pytest.mark.parametrize("method", HIST_METHODS + ["dfp"])
def test_scaling_data_by_a_power_of_two_scales_the_range(method, heavy):
    a = observe(method, heavy, chunks=4).range()
    b = observe(method, heavy * 8, chunks=4).range()
    assert b == (a[0] * 8, a[1] * 8)


def test_histogram_memory_is_bounded_and_rebinning_is_exact():
    rng = np.random.default_rng(3)
    ob = HistogramObserver(bins=512)
    batches = [rng.standard_normal(2000) * 1.7**k for k in range(40)]  # the range keeps growing
    for b in batches:
        ob.update(b)
        assert ob.hist.size == 512 and ob.hist.dtype == np.int64
    data = np.concatenate(batches)
    assert ob.hist.sum() == data.size and ob.radius >= np.abs(data).max()
    ref = np.histogram(data, bins=512, range=(-ob.radius, ob.radius))[0]
    assert np.abs(ob.hist - ref).sum() <= 2  # merged bins equal a histogram over the final range
    state = [v for v in vars(ob).values() if isinstance(v, np.ndarray)]
    assert sum(v.size for v in state) == 512


@pytest.mark.parametrize("method", ["minmax", *HIST_METHODS, "dfp"])
def test_streaming_equals_one_update_when_the_range_does_not_change(method, heavy):
    first = np.concatenate([[heavy.min(), heavy.max()], heavy[:1000]])  # the first chunk sets the range
    data = np.concatenate([first, heavy[1000:]])
    one = observe(method, data)
    many = make_observer(method, **OPTS)
    many.update(first)
    for c in np.array_split(heavy[1000:], 13):
        many.update(c)
    assert many.range() == one.range()
    if isinstance(one, HistogramObserver):
        np.testing.assert_array_equal(many.hist, one.hist)


@pytest.mark.parametrize("rate", [0.0, 0.001, 0.05])
def test_dfp_observer_is_the_overflow_rate_rule_over_the_whole_stream(rate, heavy):
    ob = observe("dfp", heavy, chunks=9, bits=8, max_overflow_rate=rate)
    F = DynamicFixedPoint(8, max_overflow_rate=rate).choose_fraction(heavy)
    assert ob.fraction() == F
    assert ob.range() == (-128 * 2.0**-F, 127 * 2.0**-F)
    relu = np.maximum(heavy, 0)
    ob = observe("dfp", relu, chunks=3, bits=6, max_overflow_rate=rate)
    Fu = DynamicFixedPoint(6, signed=False, max_overflow_rate=rate).choose_fraction(relu)
    assert not ob.is_signed and ob.fraction() == Fu and ob.range() == (0.0, 63 * 2.0**-Fu)
    if rate:
        assert F > DynamicFixedPoint(8).choose_fraction(heavy)  # outliers may overflow: a finer grid


def test_degenerate_streams():
    for m in CALIBRATORS:
        ob = make_observer(m, **OPTS)
        ob.update(np.array([]))
        ob.update(np.array([np.nan, np.inf, -np.inf]))
        assert not ob.seen and ob.range() == (0.0, 0.0)
        ob.update(np.zeros(100))
        assert ob.seen
        if m != "dfp":
            assert ob.range() == (0.0, 0.0)
        ob.update(np.array([np.nan, 2.0, -1.0, np.inf]))
        lo, hi = ob.range()
        if m == "dfp":
            assert (lo, hi) == (-4.0, 127 / 32)  # 2 * 2^6 = 128 > 127: F = 5
        else:
            assert -1.0 <= lo <= -0.99 and 1.99 <= hi <= 2.0
    ob = PercentileObserver(percentile=99.0, bins=64)
    ob.update(np.zeros(990))
    ob.update(np.full(10, 5.0))  # the zeros seen before any range land in the zero bin
    assert ob.hist.sum() == 1000 and ob.hist[32] == 990
    assert isinstance(make_observer("minmax"), MinMaxObserver) and isinstance(make_observer("mse"), MSEObserver)
    assert isinstance(make_observer("entropy"), EntropyObserver) and isinstance(make_observer("dfp"), DFPObserver)
