"""The exact requantization fit (qpass.backends.rtl.requant): clamp((acc*M + B) >> S, 0, NT) equals the threshold
count on every reachable accumulator, or the fit refuses."""
import numpy as np
import pytest

from qpass.backends.rtl import requant


def affine_thresholds(scale: float, zero: float, nt: int) -> np.ndarray:
    """Thresholds of y = clip(round_half_up(acc * scale + zero), 0, nt): acc >= T[k] iff acc*scale + zero >= k - 0.5."""
    k = np.arange(1, nt + 1)
    return np.ceil((k - 0.5 - zero) / scale).astype(np.int64)


def test_fit_equals_thresholds_on_whole_range_with_clipping_at_both_ends():
    # 255 steps over about -2000..2000 and -100..1200 accumulator units, the reachable ranges beyond both ends: the count clips at 0 below
    # and at 255 above, so both one-sided constraint kinds are used
    thr = np.stack([affine_thresholds(0.0637, 128.3, 255), affine_thresholds(0.1931, 20.2, 255)])
    lo, hi = np.array([-2600, -900]), np.array([2400, 1500])
    acc0, acc1 = np.arange(lo[0], hi[0] + 1), np.arange(lo[1], hi[1] + 1)
    # the case does clip: both ends of each channel's range are outside the thresholds' span
    assert requant.threshold_count(thr[0], acc0)[0] == 0 and requant.threshold_count(thr[0], acc0)[-1] == 255
    assert requant.threshold_count(thr[1], acc1)[0] == 0 and requant.threshold_count(thr[1], acc1)[-1] == 255
    rq = requant.fit(thr, lo, hi)
    assert rq is not None
    for c, acc in enumerate((acc0, acc1)):
        np.testing.assert_array_equal(rq.count(acc, 255, c), requant.threshold_count(thr[c], acc))
    # the emitted image packs M below B per lane
    word = int(rq.image(2).split()[0], 16)
    mb, bb = rq.mb, rq.bb
    assert word & ((1 << mb) - 1) == rq.m[0]
    b1 = (word >> (2 * mb + bb)) & ((1 << bb) - 1)
    assert b1 - (1 << bb) * (b1 >> (bb - 1)) == rq.b[1]


def test_non_affine_channel_falls_back():
    thr = np.stack([affine_thresholds(0.05, 3.0, 31), affine_thresholds(0.05, 3.0, 31)])
    thr[1, 10:] += 7  # a jump no affine map makes: steps 20 apart, then one 27 apart, then 20 again
    lo, hi = np.array([-500, -500]), np.array([900, 900])
    assert requant.fit(thr[:1], lo[:1], hi[:1]) is not None
    assert requant.fit(thr, lo, hi) is None


def test_verify_rejects_a_wrong_offset():
    thr = affine_thresholds(0.11, 4.0, 63)[None, :]
    lo, hi = np.array([-300]), np.array([800])
    rq = requant.fit(thr, lo, hi)
    assert rq is not None and requant.verify(thr, rq, lo, hi)
    bad = requant.Requant(rq.m, rq.b + (1 << rq.s), rq.s)  # one step off everywhere
    assert not requant.verify(thr, bad, lo, hi)


@pytest.mark.parametrize("exhaustive_limit", [1 << 25, 0])
def test_breakpoint_check_agrees_with_exhaustive(monkeypatch, exhaustive_limit):
    monkeypatch.setattr(requant, "EXHAUSTIVE_LIMIT", exhaustive_limit)
    thr = affine_thresholds(0.0213, -1.7, 255)[None, :]
    lo, hi = np.array([-4000]), np.array([15000])
    rq = requant.fit(thr, lo, hi)
    assert rq is not None
    acc = np.arange(lo[0], hi[0] + 1)
    np.testing.assert_array_equal(rq.count(acc, 255, 0), requant.threshold_count(thr[0], acc))
    off = requant.Requant(rq.m + 1, rq.b, rq.s)
    assert requant.verify(thr, off, lo, hi) == np.array_equal(off.count(acc, 255, 0),
                                                             requant.threshold_count(thr[0], acc))
