"""Exact requantization units: where every channel's NT non-decreasing thresholds are those of an affine map followed
by rounding and clipping, the RTL computes the count of thresholds passed as clamp((acc*M + B) >> S, 0, NT) with
integers M >= 0, B per channel and one shift S per layer (``qp_activate`` RQ = 1) instead of a binary search over
the thresholds. The thresholds stay the definition of the numbers: the integers are chosen here and verified over
each channel's whole reachable accumulator range, else the layer keeps its threshold unit."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .memfiles import hex_words, signed_width

#: largest shift tried (M*acc + B must stay well inside int64 for the verification: |acc| < 2^30, M < 2^31)
MAX_SHIFT = 30
#: reachable accumulator values checked one by one (beyond: the equivalent check at every step of either function)
EXHAUSTIVE_LIMIT = 1 << 25


@dataclass
class Requant:
    """Per channel M (unsigned) and B (signed), one shift S; MB / BB their bit widths."""

    m: np.ndarray
    b: np.ndarray
    s: int

    @property
    def mb(self) -> int:
        return max(1, int(self.m.max()).bit_length())

    @property
    def bb(self) -> int:
        return signed_width(int(self.b.min()), int(self.b.max()))

    def count(self, acc: np.ndarray, nt: int, ch: np.ndarray | int) -> np.ndarray:
        """clamp((acc*M + B) >> S, 0, NT) of accumulators ``acc`` of channels ``ch``."""
        v = (np.asarray(acc, np.int64) * self.m[ch] + self.b[ch]) >> self.s
        return np.clip(v, 0, nt)

    def image(self, pe: int) -> str:
        """$readmemh image: word nf holds, per lane pe, M at bits [pe*(MB+BB) +: MB] and B above it."""
        mb, bb = self.mb, self.bb
        word = (self.m.astype(np.int64) & ((1 << mb) - 1)) | ((self.b.astype(np.int64) & ((1 << bb) - 1)) << mb)
        return hex_words(word.reshape(-1, pe), mb + bb)


def reachable_range(w: np.ndarray, x_lo: int, x_hi: int) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (rows of ``w``), the least and greatest sum of w * x over inputs x in [x_lo, x_hi]."""
    w = np.asarray(w, np.int64)
    a, b = w * x_lo, w * x_hi
    return np.minimum(a, b).sum(axis=1), np.maximum(a, b).sum(axis=1)


def _fit_channel(t: np.ndarray, lo: int, hi: int, s: int) -> tuple[int, int] | None:
    """(M, B) with #{k : a >= t[k]} == clamp((a*M + B) >> s, 0, NT) for every a in [lo, hi], or None.
    Count >= k iff a*M + B >= k*2^s, so for a step inside the range t[k]-1 < (k*2^s - B)/M <= t[k]: B in
    [k*2^s - M*t[k], k*2^s - M*(t[k]-1)); a step at or below lo keeps only the lower bound (at t = lo), one above hi
    only the upper one (at t = hi + 1). Every (lower k, upper j) pair bounds M linearly; M is the least it allows."""
    nt, p = t.size, 1 << s
    tc = np.clip(t, lo, hi + 1)
    k = np.arange(1, nt + 1, dtype=np.int64)
    low, up = t <= hi, t > lo
    ka, a_ = k[low], tc[low]
    kb, b_ = k[up], tc[up] - 1
    c = b_[None, :] - a_[:, None]            # M * c <= r for every pair
    r = (kb[None, :] - ka[:, None]) * p - 1
    if np.any((c == 0) & (r < 0)):
        return None
    m_lo = 0
    if np.any(c < 0):
        m_lo = max(0, int(np.max(-(r[c < 0] // -c[c < 0]))))  # ceil(r / c) for c < 0
    m_hi = int(np.min(r[c > 0] // c[c > 0])) if np.any(c > 0) else m_lo
    if m_lo > m_hi:
        return None
    m = m_lo
    b_lo = int(np.max(ka * p - m * a_)) if ka.size else None
    b_hi = int(np.min(kb * p - m * b_)) - 1 if kb.size else None
    b_lo = b_hi if b_lo is None else b_lo
    b_hi = b_lo if b_hi is None else b_hi
    return (m, min(max(0, b_lo), b_hi)) if b_lo <= b_hi else None


def fit(thr: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> Requant | None:
    """The requantization of a (channels, NT) threshold table over per-channel accumulator ranges [lo, hi], one
    shift for the layer (a channel fitted at a smaller shift s scales M and B by 2^(S - s): the same values), or
    None when a channel has none up to MAX_SHIFT or it fails the verification."""
    thr = np.asarray(thr, np.int64)
    fits = []
    for c in range(thr.shape[0]):
        for s in range(MAX_SHIFT + 1):
            mb = _fit_channel(thr[c], int(lo[c]), int(hi[c]), s)
            if mb is not None:
                fits.append((mb[0], mb[1], s))
                break
        else:
            return None
    s = max(f[2] for f in fits)
    rq = Requant(np.array([m << (s - sc) for m, _, sc in fits], np.int64),
                 np.array([b << (s - sc) for _, b, sc in fits], np.int64), s)
    if int(rq.m.max()) >= 1 << 31 or max(abs(int(lo.min())), abs(int(hi.max()))) >= 1 << 30:
        return None
    return rq if verify(thr, rq, lo, hi) else None


def threshold_count(thr_row: np.ndarray, acc: np.ndarray) -> np.ndarray:
    """The reference definition: #{k : acc >= T[k]} (non-decreasing T)."""
    return np.searchsorted(thr_row, acc, side="right")


def verify(thr: np.ndarray, rq: Requant, lo: np.ndarray, hi: np.ndarray) -> bool:
    """Whether the requantization equals the threshold count on every reachable accumulator of every channel: value
    by value while the ranges hold at most EXHAUSTIVE_LIMIT values in all, else at lo and at every point where
    either non-decreasing step function can change (its thresholds, the affine map's steps), which is equivalent."""
    nt = thr.shape[1]
    exhaustive = int((hi - lo + 1).sum()) <= EXHAUSTIVE_LIMIT
    for c in range(thr.shape[0]):
        if exhaustive:
            acc = np.arange(int(lo[c]), int(hi[c]) + 1, dtype=np.int64)
        else:
            m, b, p = int(rq.m[c]), int(rq.b[c]), 1 << rq.s
            steps = np.arange(0, nt + 2, dtype=np.int64) * p - b
            aff = -(-steps // m) if m else np.empty(0, np.int64)
            acc = np.unique(np.clip(np.concatenate([thr[c], aff, [lo[c]]]), lo[c], hi[c]))
        if not np.array_equal(threshold_count(thr[c], acc), rq.count(acc, nt, c)):
            return False
    return True
