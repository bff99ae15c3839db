"""Number formats: rounding modes, overflow, every format's grid / range / saturation / idempotence, stochastic
rounding (unbiased, reproducible), granularity, minifloat presets against ml_dtypes, and the spec grammar."""
import ml_dtypes
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qpass.errors import QpassError
from qpass.formats import (PRESETS, Affine, Binary, BlockFloat, DynamicFixedPoint, FixedPoint, Granularity, MiniFloat,
                           PowerOfTwo, Ternary, apply_overflow, parse_format, parse_granularity, round_values)

MODES = ["ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN", "CEIL", "FLOOR", "UP", "DOWN", "STOCHASTIC"]
DET_MODES = MODES[:-1]
NEAREST = ["ROUND", "HALF_EVEN", "HALF_UP", "HALF_DOWN"]
FAST = settings(max_examples=40, deadline=None, database=None)


def arrays(lo=-100.0, hi=100.0, max_side=24):
    return hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=2, min_side=1, max_side=max_side),
                      elements=st.floats(lo, hi, width=32, allow_subnormal=False))


def mean_bound(var, n, k=6.0):
    """k standard errors of a mean of n draws with per-draw variance var."""
    return k * np.sqrt(var / n) + 1e-12


# ---------------------------------------------------------------- rounding

TIES = np.array([0.5, 1.5, 2.5, -0.5, -2.5])
TIE_TABLE = {
    "ROUND": [0, 2, 2, -0.0, -2], "HALF_EVEN": [0, 2, 2, -0.0, -2], "HALF_UP": [1, 2, 3, -1, -3],
    "HALF_DOWN": [0, 1, 2, -0.0, -2], "CEIL": [1, 2, 3, -0.0, -2], "FLOOR": [0, 1, 2, -1, -3],
    "UP": [1, 2, 3, -1, -3], "DOWN": [0, 1, 2, -0.0, -2],
}


@pytest.mark.parametrize("mode", DET_MODES)
def test_ties_per_mode(mode):
    r = round_values(TIES, mode)
    np.testing.assert_array_equal(r, TIE_TABLE[mode])
    assert np.signbit(r[3]) == np.signbit(TIE_TABLE[mode][3])  # -0.5 -> -0.0 keeps its sign where the table says
    np.testing.assert_array_equal(round_values(TIES, mode.lower()), r)  # case-insensitive


def test_half_up_is_not_fooled_by_the_largest_double_below_one_half():
    x = np.nextafter(0.5, 0.0)
    assert round_values([x], "HALF_UP")[0] == 0.0  # floor(x + 0.5) would give 1
    assert round_values([-x], "HALF_UP")[0] == 0.0


@FAST
@given(hnp.arrays(np.float64, 50, elements=st.floats(-1e6, 1e6)))
def test_rounding_contracts(x):
    for mode in DET_MODES:
        r = round_values(x, mode)
        assert np.array_equal(r, np.floor(r)) and np.all(np.abs(r - x) <= 1)
    assert np.all(round_values(x, "CEIL") >= x) and np.all(round_values(x, "FLOOR") <= x)
    assert np.all(np.abs(round_values(x, "UP")) >= np.abs(x)) and np.all(np.abs(round_values(x, "DOWN")) <= np.abs(x))
    notie = np.abs(x - np.floor(x) - 0.5) > 1e-9
    for mode in NEAREST:
        r = round_values(x, mode)
        assert np.all(np.abs(r - x) <= 0.5)
        np.testing.assert_array_equal(r[notie], np.rint(x)[notie])
    # on exact eighths qonnx's formulas are exact too, and must agree
    e = np.round(x * 8) / 8
    np.testing.assert_array_equal(round_values(e, "HALF_UP"), np.sign(e) * np.floor(np.abs(e) + 0.5))
    np.testing.assert_array_equal(round_values(e, "HALF_DOWN"), np.sign(e) * np.ceil(np.abs(e) - 0.5))


def test_stochastic_rounding_is_unbiased_and_reproducible():
    x = np.full(200_000, 2.3)
    r = round_values(x, "STOCHASTIC", rng=7)
    assert set(np.unique(r)) == {2.0, 3.0}
    assert abs(r.mean() - 2.3) < mean_bound(0.21, x.size)
    np.testing.assert_array_equal(r, round_values(x, "STOCHASTIC", rng=7))
    assert not np.array_equal(r, round_values(x, "STOCHASTIC", rng=8))
    g1, g2 = np.random.default_rng(3), np.random.default_rng(3)
    np.testing.assert_array_equal(round_values(x, "STOCHASTIC", g1), round_values(x, "STOCHASTIC", g2))
    neg = round_values(np.full(200_000, -0.75), "STOCHASTIC", rng=1)
    assert set(np.unique(neg)) == {-1.0, 0.0} and abs(neg.mean() + 0.75) < mean_bound(0.1875, neg.size)
    np.testing.assert_array_equal(round_values([4.0, -3.0], "STOCHASTIC", rng=0), [4.0, -3.0])  # integers stay


def test_unknown_rounding_mode_names_the_known_ones():
    with pytest.raises(QpassError, match="HALF_EVEN.*STOCHASTIC"):
        round_values([1.0], "nearest")
    with pytest.raises(QpassError, match="rng"):
        round_values([1.0], "STOCHASTIC", rng="seed")


def test_overflow_saturate_and_wrap():
    q = np.array([128.0, 200.0, -129.0, 127.0, -128.0, 300.0])
    codes, n = apply_overflow(q, -128, 127, "saturate")
    assert codes.tolist() == [127, 127, -128, 127, -128, 127] and n == 4
    codes, n = apply_overflow(q, -128, 127, "wrap")
    assert codes.tolist() == [-128, -56, 127, 127, -128, 44] and n == 4
    assert codes.tolist() == q.astype(np.int64).astype(np.int8).tolist()  # two's complement
    codes, n = apply_overflow(np.array([256.0, -1.0]), 0, 255, "wrap")
    assert codes.tolist() == [0, 255] and n == 2
    with pytest.raises(QpassError, match="overflow mode"):
        apply_overflow(q, -128, 127, "clamp")
    with pytest.raises(QpassError, match="infinite"):
        apply_overflow(np.array([np.inf]), -128, 127, "wrap")


# ---------------------------------------------------------------- fixed point

def test_fixed_point_grid_range_and_saturation():
    f = FixedPoint(8, 6)
    assert f.name == "fixed<8,6>" and f.ap_type == "ap_fixed<8,2>" and f.grid_step == 1 / 64
    assert (f.min_value, f.max_value) == (-2.0, 127 / 64)
    r = f.quantize(np.array([10.0, -10.0, 0.5, 0.01, -2.0, 1.99]))
    np.testing.assert_array_equal(r.values, np.float32([127 / 64, -2.0, 0.5, 1 / 64, -2.0, 127 / 64]))
    assert r.codes.tolist() == [127, -128, 32, 1, -128, 127] and r.saturated == 2  # 1.99 and -2.0 fit
    assert r.values.dtype == np.float32 and r.codes.dtype == np.int64 and float(r.scale) == 1 / 64
    np.testing.assert_array_equal(f.dequantize(r.codes), r.values)
    u = FixedPoint(4, 0, signed=False)
    assert u.name == "ufixed<4,0>"
    r = u.quantize([-1.0, 3.4, 15.0, 16.0])
    assert r.codes.tolist() == [0, 3, 15, 15] and r.saturated == 2


def test_fixed_point_wrap_versus_saturate():
    f = FixedPoint(8, 0)
    x = np.array([128.0, 200.0, -129.0, 127.0, 1.0])
    w = f.quantize(x, overflow="wrap")
    s = f.quantize(x, overflow="saturate")
    assert w.values.tolist() == [-128, -56, 127, 127, 1] and w.saturated == 3
    assert s.values.tolist() == [127, 127, -128, 127, 1] and s.saturated == 3


@pytest.mark.parametrize("mode", DET_MODES)
def test_fixed_point_ties_follow_the_mode(mode):
    r = FixedPoint(8, 1).quantize(TIES / 2, rounding=mode)  # ties at half a step
    np.testing.assert_array_equal(r.codes, np.array(TIE_TABLE[mode], dtype=np.int64))


def test_fixed_point_32_bit_is_exact():
    f = FixedPoint(32, 16)
    x = np.array([12345.678901234, -32768.0, 32767.99998, 40000.0])
    r = f.quantize(x)
    assert r.values.dtype == np.float64
    assert r.codes.tolist() == [int(np.rint(12345.678901234 * 65536)), -(2**31), 2**31 - 1, 2**31 - 1]
    assert r.saturated == 1
    np.testing.assert_array_equal(r.values, r.codes / 65536.0)
    r = FixedPoint(32, 0, signed=False).quantize([2.0**32 - 1, 2.0**32])
    assert r.codes.tolist() == [2**32 - 1, 2**32 - 1] and r.saturated == 1


@FAST
@given(arrays(-300, 300), st.integers(2, 16), st.integers(-4, 12), st.sampled_from(DET_MODES),
       st.sampled_from(["saturate", "wrap"]))
def test_fixed_point_properties(x, W, F, mode, overflow):
    f = FixedPoint(W, F)
    r = f.quantize(x, mode, overflow)
    assert r.codes.min() >= f.qmin and r.codes.max() <= f.qmax
    np.testing.assert_array_equal(r.values, (r.codes * 2.0**-F).astype(np.float32))
    y = x.astype(np.float64) * 2.0**F
    assert r.saturated == np.count_nonzero((round_values(y, mode) < f.qmin) | (round_values(y, mode) > f.qmax))
    inside = (y >= f.qmin) & (y <= f.qmax)
    err = np.abs(r.values[inside].astype(np.float64) - x[inside])
    assert np.all(err <= 2.0**-F * (0.5 if mode in NEAREST else 1.0))
    again = f.quantize(r.values, mode, overflow)
    np.testing.assert_array_equal(again.values, r.values)
    assert again.saturated == 0


def test_fixed_point_stochastic_is_unbiased():
    f = FixedPoint(8, 4)
    x = np.tile(np.array([0.03, -0.51, 1.2345, 7.9]), (50_000, 1))
    r = f.quantize(x, "STOCHASTIC", rng=11)
    step = 1 / 16
    bias = r.values.astype(np.float64).mean(axis=0) - x[0]
    assert np.all(np.abs(bias) < mean_bound(step**2 / 4, 50_000))
    assert np.all(np.abs(r.values - x) < step)
    np.testing.assert_array_equal(r.values, f.quantize(x, "STOCHASTIC", rng=11).values)


def test_fixed_point_rejects_bad_parameters():
    for bad in [(0, 0), (33, 0), (8, 200), (8.0, 1)]:
        with pytest.raises(QpassError):
            FixedPoint(*bad)
    with pytest.raises(QpassError, match="NaN"):
        FixedPoint(8, 4).quantize([np.nan])


# ---------------------------------------------------------------- dynamic fixed point

def brute_force_fraction(x, W, signed, rate):
    qmin, qmax = (-(2 ** (W - 1)), 2 ** (W - 1) - 1) if signed else (0, 2**W - 1)
    best = -100  # nothing fits: the lower bound
    for F in range(-100, 101):
        y = x.astype(np.float64) * 2.0**F
        if np.count_nonzero((y < qmin) | (y > qmax)) <= np.floor(rate * x.size + 1e-9):
            best = F
    return best


@FAST
@given(arrays(-1000, 1000), st.integers(2, 12), st.booleans(), st.sampled_from([0.0, 0.01, 0.1, 0.3]))
def test_dfp_chooses_the_largest_fraction_within_the_overflow_rate(x, W, signed, rate):
    if not np.any(x > 0) and not signed or not np.any(x):
        return
    f = DynamicFixedPoint(W, signed, rate)
    assert f.choose_fraction(x) == brute_force_fraction(x, W, signed, rate)


def test_dfp_examples_and_su_et_al_update_rule():
    f = DynamicFixedPoint(8)
    assert f.choose_fraction([0.9, -0.3]) == 7  # 0.9 * 128 = 115.2 fits, * 256 does not
    assert f.choose_fraction([1.0]) == 6  # 127/128 < 1
    assert f.choose_fraction([-1.0]) == 7  # -128/128 fits exactly
    assert f.choose_fraction([0.0, 0.0]) == f.default_fraction == 6
    assert DynamicFixedPoint(8, signed=False).choose_fraction([1.0]) == 7
    x = np.random.default_rng(0).standard_normal(1000) * 3
    best = f.choose_fraction(x)
    assert f.overflow_rate(x, best) == 0 and f.overflow_rate(x, best + 1) > 0
    assert f.update_fraction(best, x) == best  # stable at the chosen F
    assert f.update_fraction(best + 3, x) == best + 2  # overflow: F - 1
    assert f.update_fraction(best - 3, x) == best - 2  # 2x would still fit: F + 1
    F = 40
    for _ in range(60):
        F = f.update_fraction(F, x)
    assert F == best
    r = f.quantize(x)
    assert r.saturated == 0 and float(r.scale) == 2.0**-best and r.values.dtype == np.float32


def test_dfp_with_overflow_rate_lets_outliers_saturate():
    x = np.concatenate([np.linspace(-1, 1, 99), [50.0]])
    assert DynamicFixedPoint(8).choose_fraction(x) == 1
    f = DynamicFixedPoint(8, max_overflow_rate=0.01)
    assert f.choose_fraction(x) == 6 and f.name == "dfp<8,rate=0.01>"
    r = f.quantize(x)
    assert r.saturated == 1 and r.values[-1] == np.float32(127 / 64)
    w = f.quantize(x, overflow="wrap")
    assert w.saturated == 1 and w.codes[-1] == ((3200 + 128) % 256) - 128


@pytest.mark.parametrize("mode", MODES)
def test_dfp_never_saturates_at_rate_zero(mode):
    x = np.random.default_rng(1).standard_normal((8, 33)) * np.logspace(-3, 3, 8)[:, None]
    r = DynamicFixedPoint(6, granularity=Granularity("channel", axis=0)).quantize(x, mode, rng=0)
    assert r.saturated == 0


def test_dfp_per_channel_and_per_group_match_separate_tensors():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 40)) * np.array([[0.01], [1.0], [30.0], [1000.0]])
    per_row = DynamicFixedPoint(8, granularity="channel:0")
    F = per_row.choose_fraction(x)
    assert F.shape == (4, 1)
    assert F[:, 0].tolist() == [DynamicFixedPoint(8).choose_fraction(row) for row in x]
    r = per_row.quantize(x)
    for i in range(4):
        np.testing.assert_array_equal(r.values[i], DynamicFixedPoint(8).quantize(x[i]).values)
    grp = DynamicFixedPoint(8, granularity=Granularity("group", axis=1, size=16))
    G = grp.choose_fraction(x)
    assert G.shape == (4, 3)
    assert G[2].tolist() == [DynamicFixedPoint(8).choose_fraction(x[2, s:s + 16]) for s in (0, 16, 32)]
    F2 = grp.update_fraction(G, x)
    np.testing.assert_array_equal(F2, G)


@FAST
@given(arrays(-50, 50), st.sampled_from(DET_MODES))
def test_dfp_idempotent(x, mode):
    f = DynamicFixedPoint(8)
    r = f.quantize(x, mode)
    np.testing.assert_array_equal(f.quantize(r.values, mode).values, r.values)


# ---------------------------------------------------------------- affine

def test_affine_params_follow_onnxruntime():
    s, z = Affine(8).params_from_range(-1.0, 3.0)
    assert s == np.float32(4 / 255) and z == np.rint(-128 + 1 / np.float64(np.float32(4 / 255)))
    assert int(z) == -64
    s, z = Affine(8, signed=False).params_from_range(0.0, 6.0)
    assert s == np.float32(6 / 255) and z == 0
    s, z = Affine(8, signed=False).params_from_range(2.0, 5.0)  # the range always includes 0
    assert s == np.float32(5 / 255) and z == 0
    s, z = Affine(8, symmetric=True).params_from_range(-2.0, 1.0)
    assert s == np.float32(2 / 127) and z == 0
    s, z = Affine(8, signed=False, symmetric=True).params_from_range(-2.0, 1.0)
    assert s == np.float32(2 / 127) and z == 128
    s, z = Affine(8).params_from_range(0.0, 0.0)
    assert s == 1.0 and z == -128


def test_affine_bounds_and_names():
    assert (Affine(8).qmin, Affine(8).qmax) == (-128, 127)
    assert (Affine(8, narrow=True).qmin, Affine(8, narrow=True).qmax) == (-127, 127)
    assert (Affine(8, signed=False, narrow=True).qmin, Affine(8, signed=False, narrow=True).qmax) == (0, 254)
    assert (Affine(4).qmin, Affine(4).qmax) == (-8, 7)
    names = [Affine(8).name, Affine(8, False).name, Affine(16).name, Affine(4).name]
    assert names == ["int8", "uint8", "int16", "int4"]
    assert Affine(8, symmetric=True, narrow=True, granularity="channel:1").name == "int8_sym_narrow@channel:1"
    for bad in (1, 17):
        with pytest.raises(QpassError, match="word width"):
            Affine(bad)


def test_affine_static_scale_saturates_and_wraps():
    f = Affine(8, scale=0.1, zero_point=0)
    r = f.quantize(np.array([20.0, -20.0, 5.0, 0.04, 0.05, 0.16]))  # 0.05 / 0.1f is just below the tie
    np.testing.assert_allclose(r.values, [12.7, -12.8, 5.0, 0.0, 0.0, 0.2], rtol=1e-6)
    assert r.codes.tolist() == [127, -128, 50, 0, 0, 2] and r.saturated == 2
    w = f.quantize(np.array([20.0]), overflow="wrap")
    assert w.codes.tolist() == [-56] and w.saturated == 1
    assert f.grid_step == pytest.approx(0.1)
    np.testing.assert_array_equal(f.dequantize(r.codes), r.values)
    u = Affine(8, signed=False, scale=0.5, zero_point=10)
    r = u.quantize(np.array([-5.0, -6.0, 0.0, 200.0]))
    assert r.codes.tolist() == [0, 0, 10, 255] and r.saturated == 2


def test_affine_matches_the_qonnx_quant_formula():
    rng = np.random.default_rng(4)
    x = rng.standard_normal(500).astype(np.float32) * 3
    for mode in DET_MODES:
        f = Affine(6, scale=0.0625, zero_point=3)
        y = np.clip(x.astype(np.float64) / 0.0625 + 3, -32, 31)  # qonnx clamps, then rounds
        ref = ((round_values(y, mode) - 3) * 0.0625).astype(np.float32)
        np.testing.assert_array_equal(f.quantize(x, mode).values, ref)


@FAST
@given(arrays(-10, 10), st.sampled_from(NEAREST), st.booleans(), st.booleans())
def test_affine_static_idempotent_and_dynamic_in_range(x, mode, signed, symmetric):
    f = Affine(8, signed, symmetric=symmetric)
    r = f.quantize(x, mode)
    assert r.saturated == 0  # a range from the data never saturates
    assert r.codes.min() >= f.qmin and r.codes.max() <= f.qmax
    scale = float(np.asarray(r.scale).reshape(-1)[0])
    assert np.all(np.abs(r.values - x) <= scale * 0.5 * (1 + 1e-5) + 1e-6)
    static = Affine(8, signed, scale=scale, zero_point=int(np.asarray(r.zero_point).reshape(-1)[0]))
    np.testing.assert_array_equal(static.quantize(x, mode).values, r.values)
    np.testing.assert_array_equal(static.quantize(r.values, mode).values, r.values)
    again = f.quantize(r.values, mode)  # new parameters from the quantised data
    if symmetric:
        np.testing.assert_allclose(again.values, r.values, rtol=1e-5, atol=1e-6)
    else:  # the rounded zero point may move the grid (uint8 on [-1, 1]: zp 127 -> 128), within half a step
        step = float(np.asarray(again.scale).reshape(-1)[0])
        assert np.all(np.abs(again.values.astype(np.float64) - r.values) <= step * 0.5 * (1 + 1e-5) + 1e-6)


def test_affine_per_channel_and_per_group_scales():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((4, 40)) * np.array([[0.01], [1.0], [10.0], [100.0]])
    f = Affine(8, symmetric=True, granularity=Granularity("channel", axis=0))
    r = f.quantize(w)
    assert r.scale.shape == (4, 1)
    np.testing.assert_array_equal(r.scale[:, 0], (np.abs(w).max(axis=1) / 127).astype(np.float32))
    for i in range(4):
        np.testing.assert_array_equal(r.values[i], Affine(8, symmetric=True).quantize(w[i]).values)
    assert np.all(np.abs(r.values - w) <= r.scale * 0.5 * (1 + 1e-6))
    g = Affine(4, granularity=Granularity("group", axis=1, size=16))
    rg = g.quantize(w)
    assert rg.scale.shape == (4, 40) and np.unique(rg.scale[1]).size == 3  # groups 16, 16 and a partial 8
    np.testing.assert_array_equal(rg.values[3, 32:], Affine(4).quantize(w[3, 32:]).values)
    np.testing.assert_array_equal(rg.values[0, 16:32], Affine(4).quantize(w[0, 16:32]).values)
    # given per-channel scales, as ONNX stores them (1-D)
    given_scale = Affine(8, symmetric=True, granularity="channel:0", scale=r.scale[:, 0], zero_point=np.zeros(4))
    np.testing.assert_array_equal(given_scale.quantize(w).values, r.values)
    with pytest.raises(QpassError, match="does not fit"):
        Affine(8, granularity="channel:0", scale=[0.1, 0.2, 0.3]).quantize(w)
    with pytest.raises(QpassError, match="needs a scale"):
        Affine(8).dequantize([1, 2])


# ---------------------------------------------------------------- binary / ternary

def test_binary_values_and_per_row_alpha():
    x = np.array([[0.5, -1.5, 0.0, 2.0], [-0.1, -0.1, 0.3, 0.1]])
    r = Binary().quantize(x)
    a = np.float32(np.abs(x).mean())
    np.testing.assert_array_equal(r.values, np.where(x >= 0, a, -a))
    assert r.codes.tolist() == [[1, -1, 1, 1], [-1, -1, 1, 1]] and r.saturated == 2
    rr = Binary(Granularity("row")).quantize(x)
    np.testing.assert_array_equal(rr.scale[:, 0], np.float32([1.0, 0.15]))
    np.testing.assert_array_equal(rr.values[1], np.float32([-0.15, -0.15, 0.15, 0.15]))
    assert Binary("row").name == "binary@channel:0"
    rg = Binary(Granularity("group", axis=1, size=3)).quantize(x)
    np.testing.assert_array_equal(rg.values[0], np.float32([2 / 3, -2 / 3, 2 / 3, 2.0]))
    with pytest.raises(QpassError, match="overflow"):
        Binary().quantize(x, overflow="wrap")


def test_ternary_twn_threshold_and_alpha():
    x = np.array([1.0, -2.0, 0.1, -0.1, 3.0])  # mean |x| 1.24 -> threshold 0.868; alpha = mean(1, 2, 3) = 2
    r = Ternary().quantize(x)
    np.testing.assert_array_equal(r.values, np.float32([2, -2, 0, 0, 2]))
    assert r.codes.tolist() == [1, -1, 0, 0, 1] and r.saturated == 1
    r = Ternary(threshold=1.5).quantize(x)
    np.testing.assert_array_equal(r.values, np.float32([0, -2.5, 0, 0, 2.5]))
    assert Ternary(threshold=1.5).name == "ternary<threshold=1.5>"
    w = np.array([[1.0, -1.0, 0.01, 0.0], [10.0, 0.0, -30.0, 1.0]])
    rr = Ternary(granularity="row").quantize(w)
    np.testing.assert_array_equal(rr.values, np.float32([[1, -1, 0, 0], [20, 0, -20, 0]]))


@FAST
@given(arrays(-5, 5), st.sampled_from(["tensor", "row", "group:-1,5"]))
def test_binary_and_ternary_idempotent_and_on_their_grid(x, gran):
    if gran == "row" and x.ndim < 2:
        gran = "tensor"
    for f in (Binary(gran), Ternary(granularity=gran)):
        r = f.quantize(x)
        a = np.broadcast_to(r.scale, x.shape)
        assert set(np.unique(r.codes)) <= ({-1, 1} if isinstance(f, Binary) else {-1, 0, 1})
        np.testing.assert_array_equal(r.values, (r.codes * a).astype(np.float32))
        np.testing.assert_array_equal(f.quantize(r.values).values, r.values)


def test_binary_and_ternary_stochastic_are_unbiased_inside_alpha():
    base = np.array([0.9, -0.4, 0.1, -1.0, 0.0, 2.0, -0.3, 0.5])
    x = np.tile(base, (40_000, 1))  # the per-tensor alpha is that of one row
    for f in (Binary(), Ternary()):
        r = f.quantize(x, "STOCHASTIC", rng=5)
        a = float(np.asarray(r.scale).reshape(-1)[0])
        inside = np.abs(base) <= a
        mean = r.values.astype(np.float64).mean(axis=0)
        assert np.all(np.abs(mean - base)[inside] < mean_bound(a * a, x.shape[0]))
        assert np.all(np.abs(mean[~inside]) == pytest.approx(a))
        np.testing.assert_array_equal(r.values, f.quantize(x, "STOCHASTIC", rng=5).values)


# ---------------------------------------------------------------- block floating point

def test_bfp_shared_exponent_and_mantissas():
    f = BlockFloat(4, 4)
    assert f.name == "bfp<m=4,block=4>" and f.bits == 4
    r = f.quantize(np.array([0.75, -0.1, 0.3, 0.2, -1.0, 0.2, 0.0, 0.0]))
    np.testing.assert_array_equal(r.codes, [6, -1, 2, 2, -8, 2, 0, 0])
    np.testing.assert_array_equal(r.values, np.float32([0.75, -0.125, 0.25, 0.25, -1.0, 0.25, 0, 0]))
    np.testing.assert_array_equal(np.ravel(r.scale), [1 / 8] * 8)
    r = f.quantize(np.array([0.99, 0.1, 0.0, 0.0]))
    assert r.codes.tolist() == [7, 1, 0, 0] and r.saturated == 1  # 7.92 rounds to 8 -> saturates
    w = f.quantize(np.array([0.99, 0.1, 0.0, 0.0]), overflow="wrap")
    assert w.codes.tolist() == [-8, 1, 0, 0] and w.saturated == 1
    np.testing.assert_array_equal(f.quantize(np.zeros(4)).values, 0)


def test_bfp_blocks_along_an_axis_with_a_partial_block():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((3, 20)) * np.array([[1e-3], [1.0], [1e3]])
    f = BlockFloat(6, 8, axis=1)
    r = f.quantize(x)
    s = np.broadcast_to(r.scale, x.shape)
    for row in range(3):
        for start in (0, 8, 16):
            blk = x[row, start:start + 8]
            e = np.floor(np.log2(np.abs(blk).max())) + 1
            assert np.all(s[row, start:start + 8] == 2.0 ** (e - 5))
    assert f.exponents(x).shape == (3, 3)
    np.testing.assert_array_equal(r.values[2, 16:], BlockFloat(6, 8).quantize(x[2, 16:]).values)


@FAST
@given(arrays(-1e4, 1e4, max_side=20), st.integers(2, 10), st.integers(1, 8), st.sampled_from(DET_MODES))
def test_bfp_properties(x, M, block, mode):
    f = BlockFloat(M, block)
    r = f.quantize(x, mode)
    s = np.broadcast_to(r.scale, x.shape)
    assert r.codes.min() >= -(2 ** (M - 1)) and r.codes.max() <= 2 ** (M - 1) - 1
    np.testing.assert_array_equal(r.values, (r.codes * s).astype(np.float32))
    y = x.astype(np.float64) / s
    assert np.all((y >= -(2 ** (M - 1))) & (y < 2 ** (M - 1)))  # the exponent makes every element fit
    assert r.saturated == np.count_nonzero(round_values(y, mode) > 2 ** (M - 1) - 1)
    ok = round_values(y, mode) <= 2 ** (M - 1) - 1
    assert np.all(np.abs(r.values - x)[ok] <= s[ok] * (0.5 if mode in NEAREST else 1.0))
    np.testing.assert_array_equal(f.quantize(r.values, mode).values, r.values)


def test_bfp_stochastic_is_unbiased():
    base = np.array([1.0, 0.3, -0.27, 0.013])  # one block: exponent from the 1.0
    x = np.tile(base, (50_000, 1))
    r = BlockFloat(4, 4).quantize(x, "STOCHASTIC", rng=3)
    step = float(np.ravel(r.scale)[0])
    assert step == 0.25
    mean = r.values.astype(np.float64).mean(axis=0)
    assert np.all(np.abs(mean - base) < mean_bound(step**2 / 4, x.shape[0]))


# ---------------------------------------------------------------- powers of two

def test_pow2_rounds_in_the_log_domain_flushes_and_saturates():
    f = PowerOfTwo(-3, 1)
    assert f.name == "pow2<e=-3..1>" and f.grid_step == 0.125 and f.max_value == 2.0
    x = np.array([0.0, 0.05, 0.07, 0.1, 0.3, 1.4, 1.5, 3.0, 100.0, -1.5, -0.05])
    r = f.quantize(x)
    np.testing.assert_array_equal(r.values, np.float32([0, 0, 0.125, 0.125, 0.25, 1, 2, 2, 2, -2, -0.0]))
    assert r.saturated == 2  # 3 and 100
    assert r.codes.tolist() == [0, 0, 1, 1, 2, 4, 5, 5, 5, -5, 0]
    np.testing.assert_array_equal(f.dequantize(r.codes), r.values)
    m = {mode: f.quantize(np.array([1.1, 1.9, -1.1, -1.9]), mode).values.tolist() for mode in DET_MODES}
    assert m["FLOOR"] == [1, 1, -2, -2] and m["CEIL"] == [2, 2, -1, -1]
    assert m["UP"] == [2, 2, -2, -2] and m["DOWN"] == [1, 1, -1, -1]
    assert m["ROUND"] == [1, 2, -1, -2]
    u = PowerOfTwo(-3, 1, signed=False).quantize(np.array([-1.0, -0.01, 0.5]))
    np.testing.assert_array_equal(u.values, np.float32([0, 0, 0.5]))
    assert u.saturated == 1
    with pytest.raises(QpassError, match="overflow"):
        f.quantize(x, overflow="wrap")


@FAST
@given(arrays(-1000, 1000), st.sampled_from(MODES))
def test_pow2_values_are_powers_of_two_and_idempotent(x, mode):
    f = PowerOfTwo(-6, 4)
    r = f.quantize(x, mode, rng=1)
    a = np.abs(r.values[r.values != 0]).astype(np.float64)
    e = np.log2(a)
    assert np.array_equal(e, np.round(e)) and np.all((e >= -6) & (e <= 4))
    if mode in NEAREST:  # log-domain ties at sqrt(2) * 2^k: above 2^4.5 rounds past exp_max
        assert r.saturated == np.count_nonzero(np.abs(x) > 2.0**4.5)
    np.testing.assert_array_equal(f.quantize(r.values, mode, rng=2).values, r.values)


def test_pow2_stochastic_is_unbiased():
    base = np.array([0.3, -0.7, 0.05, 1.0, 5.0])  # 0.05 lies between 0 and 2^-3
    x = np.tile(base, (60_000, 1))
    r = PowerOfTwo(-3, 3).quantize(x, "STOCHASTIC", rng=9)
    mean = r.values.astype(np.float64).mean(axis=0)
    assert np.all(np.abs(mean - base) < mean_bound(np.array([0.02, 0.07, 0.004, 0.0, 2.0]) + 1e-6, x.shape[0]))


# ---------------------------------------------------------------- minifloat

ORACLES = [("fp8_e4m3", ml_dtypes.float8_e4m3fn), ("fp8_e5m2", ml_dtypes.float8_e5m2), ("bf16", ml_dtypes.bfloat16),
           ("fp16", np.float16), ("fp6_e2m3", ml_dtypes.float6_e2m3fn), ("fp6_e3m2", ml_dtypes.float6_e3m2fn),
           ("fp4_e2m1", ml_dtypes.float4_e2m1fn), (MiniFloat(4, 3), ml_dtypes.float8_e4m3),
           (MiniFloat(3, 4), ml_dtypes.float8_e3m4)]


def oracle_inputs(dtype):
    rng = np.random.default_rng(0)
    fi = ml_dtypes.finfo(dtype)
    mx, tiny = float(fi.max), float(fi.smallest_subnormal)
    rand = rng.standard_normal(20_000) * np.exp2(rng.uniform(np.log2(tiny) - 2, np.log2(mx) + 2, 20_000))
    steps = np.arange(-300, 300) * tiny / 2  # every subnormal and the ties between them
    # values on and between representable numbers near the top, incl. the tie above max
    top = np.array([mx, np.nextafter(mx, 0), mx * (1 + 2.0 ** -(fi.nmant + 1)), mx * (1 + 2.0 ** -fi.nmant), 2 * mx])
    edge = np.array([0.0, -0.0, 1.0, -1.0, float(fi.smallest_normal), np.inf, -np.inf, np.nan])
    with np.errstate(over="ignore"):
        return np.concatenate([rand, steps, top, -top, edge]).astype(np.float32)


@pytest.mark.parametrize("fmt,dtype", ORACLES, ids=lambda v: str(v) if not isinstance(v, type) else v.__name__)
def test_minifloat_equals_ml_dtypes_casts(fmt, dtype):
    f = parse_format(fmt) if isinstance(fmt, str) else fmt
    x = oracle_inputs(dtype)
    if not f.has_nan:
        x = x[~np.isnan(x)]
    with np.errstate(over="ignore", invalid="ignore"):
        cast = x.astype(dtype)
    ref = cast.astype(np.float32)
    r = f.quantize(x, overflow="inf" if f.has_nan else "saturate")
    assert r.values.dtype == np.float32
    np.testing.assert_array_equal(r.values, ref)
    np.testing.assert_array_equal(np.signbit(r.values), np.signbit(ref))
    fi = ml_dtypes.finfo(dtype)
    assert f.max_value == float(fi.max) and f.grid_step == float(fi.smallest_subnormal)
    bits = cast.view(np.uint8 if f.bits <= 8 else np.uint16).astype(np.int64)
    fin = np.isfinite(ref)
    np.testing.assert_array_equal(r.codes[fin], bits[fin])
    np.testing.assert_array_equal(f.dequantize(bits), ref)
    a, half = np.abs(x.astype(np.float64)), 2.0 ** (f.emax - f.M - 1)  # half an ulp above max
    over = np.isfinite(x) & ((a > f.max_value + half) | (a == f.max_value + half) & (f.specials != "fn"))
    if not f.has_nan:
        over |= np.isinf(x)  # no inf to keep: saturated to max
    assert r.saturated == np.count_nonzero(over) > 0


def test_minifloat_presets_and_saturation():
    e4 = PRESETS["fp8_e4m3"]
    assert (e4.max_value, PRESETS["fp8_e5m2"].max_value, PRESETS["fp16"].max_value) == (448.0, 57344.0, 65504.0)
    assert e4.name == "fp8_e4m3" and not e4.has_inf and PRESETS["bf16"] == MiniFloat(8, 7)
    r = e4.quantize(np.array([464.0, 465.0, 1e6, -1e6, np.inf, np.nan]))
    np.testing.assert_array_equal(r.values, np.float32([448, 448, 448, -448, 448, np.nan]))
    assert r.saturated == 4  # 465 and 1e6 overflow; inf has no encoding; 464 rounds (to even) to 448
    r = e4.quantize(np.array([465.0, -1e6, np.inf]), overflow="inf")
    assert np.isnan(r.values).all() and r.saturated == 2
    r = PRESETS["fp8_e5m2"].quantize(np.array([1e6, np.inf, -np.inf]))
    np.testing.assert_array_equal(r.values, np.float32([57344, np.inf, -np.inf]))
    assert r.saturated == 1
    with pytest.raises(QpassError, match="overflow"):
        PRESETS["fp4_e2m1"].quantize([1.0], overflow="inf")
    with pytest.raises(QpassError, match="NaN"):
        PRESETS["fp4_e2m1"].quantize([np.nan])
    assert MiniFloat(4, 3, bias=4).name == "minifloat<e=4,m=3,bias=4>"


@FAST
@given(arrays(-500, 500), st.sampled_from(MODES), st.integers(2, 5), st.integers(1, 4))
def test_minifloat_idempotent_and_representable(x, mode, E, M):
    f = MiniFloat(E, M)
    r = f.quantize(x, mode, rng=4)
    fin = np.isfinite(r.values)
    np.testing.assert_array_equal(f.dequantize(r.codes)[fin], r.values[fin])
    np.testing.assert_array_equal(f.quantize(r.values, mode, rng=5).values, r.values)
    if mode == "CEIL":
        assert np.all(r.values[fin & (np.abs(x) <= f.max_value)] >= x[fin & (np.abs(x) <= f.max_value)])
    if mode == "FLOOR":
        assert np.all(r.values[np.abs(x) <= f.max_value] <= x[np.abs(x) <= f.max_value])


def test_minifloat_stochastic_is_unbiased():
    base = np.array([1.3, -0.7, 0.004, 300.0], np.float32)  # 0.004 is subnormal in E4M3
    x = np.tile(base, (50_000, 1))
    r = PRESETS["fp8_e4m3"].quantize(x, "STOCHASTIC", rng=2)
    mean = r.values.astype(np.float64).mean(axis=0)
    ulp = np.array([0.125, 0.0625, 2.0**-9, 32.0])
    assert np.all(np.abs(mean - base) < mean_bound(ulp**2 / 4, x.shape[0]))
    np.testing.assert_array_equal(r.values, PRESETS["fp8_e4m3"].quantize(x, "STOCHASTIC", rng=2).values)


# ---------------------------------------------------------------- granularity

def test_granularity_shapes_and_reductions():
    x = np.arange(2 * 3 * 10, dtype=np.float64).reshape(2, 3, 10)
    g = Granularity("group", axis=2, size=4)
    assert g.param_shape(x.shape) == (2, 3, 3)
    mx = g.reduce(x, "max")
    np.testing.assert_array_equal(mx[1, 2], [53, 57, 59])
    np.testing.assert_array_equal(g.counts(x.shape)[0, 0], [4, 4, 2])
    e = g.expand(mx, x.shape)
    assert e.shape == x.shape and np.all(e >= x)
    np.testing.assert_array_equal(g.compact(e, x.shape), mx)
    c = Granularity("channel", axis=1)
    assert c.param_shape(x.shape) == (1, 3, 1)
    np.testing.assert_array_equal(c.reduce(x, "min").ravel(), [0, 10, 20])
    np.testing.assert_array_equal(c.expand(np.array([1, 2, 3]), x.shape).shape, (1, 3, 1))
    t = Granularity()
    assert t.reduce(x, "sum").shape == (1, 1, 1) and t.reduce(x, "sum").item() == x.sum()
    assert Granularity("channel", axis=-1).reduce(x, "max").shape == (1, 1, 10)
    assert str(g) == "group:2,4" and str(Granularity("row")) == "channel:0"
    assert parse_granularity("group:16") == Granularity("group", axis=-1, size=16)


def test_granularity_errors_are_clear():
    with pytest.raises(QpassError, match="axis 3 is out of range"):
        Granularity("channel", axis=3).param_shape((2, 3))
    with pytest.raises(QpassError, match="group size"):
        Granularity("group", axis=0, size=0)
    with pytest.raises(QpassError, match="unknown granularity"):
        Granularity("block")
    with pytest.raises(QpassError, match="bad granularity"):
        parse_granularity("group:1,2,3")


# ---------------------------------------------------------------- spec grammar

SPECS = {
    "fixed:8,6": FixedPoint(8, 6), "ufixed<8,8>": FixedPoint(8, 8, False), "dfp:8": DynamicFixedPoint(8),
    "int8": Affine(8), "uint8": Affine(8, False), "int4": Affine(4), "int16": Affine(16), "affine:6": Affine(6),
    "sym:8": Affine(8, symmetric=True), "uint8_narrow": Affine(8, False, narrow=True), "binary": Binary(),
    "ternary": Ternary(), "ternary:0.5": Ternary(0.5), "bfp:4,16": BlockFloat(4, 16),
    "bfp:4,16,0": BlockFloat(4, 16, 0),
    "pow2:-8,0": PowerOfTwo(-8, 0), "upow2<e=-8..0>": PowerOfTwo(-8, 0, False), "fp8_e4m3": PRESETS["fp8_e4m3"],
    "E5M2": PRESETS["fp8_e5m2"], "minifloat:4,3": MiniFloat(4, 3), "bf16": MiniFloat(8, 7), "fp16": MiniFloat(5, 10),
    "minifloat:e=5,m=2,specials=fn": MiniFloat(5, 2, specials="fn"),
    "int8@channel:0": Affine(8, granularity=Granularity("channel", axis=0)),
    "binary@row": Binary(Granularity("channel", axis=0)), "ternary@group:1,16": Ternary(granularity="group:1,16"),
    "dfp:8, 0.01 @ channel:1": DynamicFixedPoint(8, max_overflow_rate=0.01, granularity="channel:1"),
}


@pytest.mark.parametrize("spec", list(SPECS))
def test_parse_format_and_name_round_trip(spec):
    f = parse_format(spec)
    assert f == SPECS[spec] and type(f) is type(SPECS[spec])
    assert parse_format(f.name) == f


def test_canonical_names():
    names = [parse_format(s).name for s in ("fixed:8,6", "int8", "ternary", "bfp:4,16", "pow2:-8,0", "fp8_e4m3",
                                            "dfp:8", "sym:8", "bf16", "minifloat:3,3")]
    assert names == ["fixed<8,6>", "int8", "ternary", "bfp<m=4,block=16>", "pow2<e=-8..0>", "fp8_e4m3", "dfp<8>",
                     "int8_sym", "bf16", "minifloat<e=3,m=3>"]


@pytest.mark.parametrize("spec,msg", [
    ("fixed:8", "needs w, f"), ("fixed:8,x", "not an integer"), ("int8:3", "takes no arguments"),
    ("float128", "unknown format"), ("int17", "word width"), ("fixed:8,6@channel:0", "takes no granularity"),
    ("bfp:4,16,axis=1,extra=2", "unknown argument"), ("bfp:m=4,16", "unexpected argument"),
    ("int8@group:1,0", "group size"), ("fixed<8,6", "bad format spec"), ("fp8_e4m3:1", "no arguments"),
    ("minifloat:4,3,specials=odd", "specials"), ("ternary:-1", ">= 0"), ("dfp:8,1.5", "overflow_rate"),
])
def test_bad_specs_raise_one_clear_error(spec, msg):
    with pytest.raises(QpassError, match=msg):
        parse_format(spec)


# ---------------------------------------------------------------- what a quantisation pass asks a format
@pytest.mark.parametrize("spec,lo,hi,expect", [
    # (scale, zero point, bits, signed, narrow, op, fraction)
    ("fixed:8,4", -3.0, 5.0, (2.0**-4, 0, 8, True, False, "Quant", 4)),
    ("dfp:8", 0.0, 3.0, (2.0**-6, 0, 8, False, False, "Quant", 6)),  # no negative part: unsigned, F from 3.0
    ("dfp:8", -1.0, 3.0, (2.0**-5, 0, 8, True, False, "Quant", 5)),
    ("uint8", -1.0, 3.0, (np.float32(4 / 255), 64, 8, False, False, "Quant", None)),
    ("int4_narrow", -2.0, 2.0, (np.float32(4 / 14), 0, 4, True, True, "Quant", None)),
    ("uint8", 0.0, 255 / 64, (2.0**-6, 0, 8, False, False, "Quant", 6)),  # a power-of-two scale has a fraction
    ("binary", -5.0, 5.0, (1.0, 0, 1, True, False, "BipolarQuant", None)),
    ("ternary", -0.5, 2.0, (2.0, 0, 2, True, True, "Quant", None)),
])
def test_quant_params_give_the_activation_grid(spec, lo, hi, expect):
    g = parse_format(spec).quant_params(lo, hi)
    assert (g.scale, g.zero_point, g.bits, g.signed, g.narrow, g.op, g.fraction) == expect
    assert g.scale.dtype == np.float32


@pytest.mark.parametrize("spec", ["bfp:4,16", "pow2:-8,0", "fp8_e4m3"])
def test_weight_only_formats_have_no_activation_grid(spec):
    assert parse_format(spec).quant_params(-1.0, 1.0) is None


def test_weight_grid_is_compact_per_channel_and_float_formats_have_none():
    w = np.random.default_rng(0).normal(size=(4, 6))
    f = parse_format("sym:8").for_weight("channel", 0, 1)
    g = f.weight_grid(f.quantize(w), w.shape)
    assert g.scale.shape == (4, 1) and g.zero_point.shape == (4, 1) and (g.qmin, g.qmax) == (-128, 127)
    np.testing.assert_array_equal(g.scale[:, 0], (np.abs(w).max(1) / 127).astype(np.float32))
    t = Ternary(granularity="row")
    assert t.weight_grid(t.quantize(np.zeros((2, 3))), (2, 3)).scale.tolist() == [[1.0], [1.0]]  # never 0
    b = BlockFloat(4, 3)
    gb = b.weight_grid(b.quantize(w), w.shape)
    assert gb.scale.shape == w.shape and (gb.bits, gb.signed) == (4, True)
    for spec in ("pow2:-8,0", "fp8_e4m3"):
        f = parse_format(spec)
        assert f.weight_grid(f.quantize(w), w.shape) is None and f.datatype == f.name.upper()


def test_grid_datatype_and_node_attributes():
    from qpass.formats import IntGrid
    assert IntGrid(np.float32(1.0), 0, 4, False).datatype == "UINT4"
    assert IntGrid(np.float32(0.5), 0, 4, True).datatype == "SCALEDINT<4>"
    assert IntGrid(np.float32(1.0), 3, 8, True).datatype == "SCALEDINT<8>"
    assert IntGrid(np.float32(1.0), bits=1, bipolar=True).datatype == "BIPOLAR"
    assert IntGrid(np.float32(1.0), bits=1, bipolar=True).attrs() == {}
    assert IntGrid(np.float32(1.0), 0, 2, True, True).attrs("FLOOR") == {"signed": 1, "narrow": 1,
                                                                       "rounding_mode": "FLOOR"}


def test_weight_granularity_is_placed_on_the_weight_axes():
    f = parse_format("int8")
    assert f.for_weight("channel", 1, 0).granularity == Granularity("channel", axis=1)
    assert f.for_weight("row", 0, 1).granularity == Granularity("channel", axis=0)
    assert f.for_weight("group:16", 0, 1).granularity == Granularity("group", axis=1, size=16)
    assert f.for_weight("tensor", 0, 1).granularity == Granularity()
    assert parse_format("int8@channel:1").for_weight(None, 0, 1).granularity == Granularity("channel", axis=1)
    assert parse_format("fixed:8,6").for_weight("channel", 0, 1) == FixedPoint(8, 6)  # no granularity: unchanged
    with pytest.raises(QpassError, match="takes no granularity"):
        parse_format("fixed:8,6").with_granularity("channel")
