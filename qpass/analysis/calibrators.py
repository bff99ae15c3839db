"""Range observers ("calibrators"): each streams over activations and ends with a (lo, hi) clipping range.

Every observer keeps bounded state (running extrema, fixed-size histograms), never the activations, and accepts
and ignores options meant for other observers (the calibrate pass hands ``percentile=`` and ``bins=`` to all).

* minmax: the observed extremes.
* percentile: the ``percentile``-th percentile of x and the (100 - percentile)-th (two-sided, default) or of |x|
  (``symmetric=True``), interpolated inside the histogram bin.
* entropy: TensorRT's KL-divergence calibration (as onnxruntime / MXNet): over candidate thresholds (bin edges of
  the |x| histogram from ``quantized_bins`` bins up), compare the clipped distribution with its requantisation to
  ``quantized_bins`` levels; keep the threshold with the smallest KL divergence.
* mse: the clip value c minimising the expected squared error of a ``bits``-bit uniform quantiser on [-c, c]
  (or [0, c] for one-signed data), with values spread evenly inside their histogram bin: the rounding error
  integrated over each bin inside the clip, (|x| - c)^2 outside.
* dfp: the dynamic-fixed-point overflow-rate rule (Su et al.): the largest fraction width F of a ``bits``-bit
  fixed-point format whose overflow rate over everything seen is <= ``max_overflow_rate``; the range is that
  format's [qmin, qmax] * 2^-F (signed unless nothing negative was seen, or as ``signed=`` says).

Histogram observers keep ``bins`` counts over a symmetric range [-R, R]. R starts at the first batch's max |x|;
when data exceed it, R doubles and adjacent bin pairs merge exactly (no re-interpolation, unlike onnxruntime's
re-binning), so memory stays fixed. Clipping ranges never exceed the observed [min, max].
"""
from __future__ import annotations

import numpy as np

from qpass.errors import PipelineError
from qpass.formats.fixed import DynamicFixedPoint, fraction_limits
from qpass.formats.rounding import int_bounds


class Observer:
    method = ""

    def __init__(self, **opts):
        self.lo = np.inf
        self.hi = -np.inf
        self.count = 0
        self.sumsq = 0.0  # sum of x^2: the mean power, against which a grid's rounding noise is weighed

    def update(self, x: np.ndarray) -> None:
        x = np.asarray(x)
        if x.size == 0:
            return
        lo, hi = float(x.min()), float(x.max())  # a NaN or an infinity shows in one of them
        finite = x
        if not (np.isfinite(lo) and np.isfinite(hi)):
            finite = x[np.isfinite(x)]
            if finite.size == 0:
                return
            lo, hi = float(finite.min()), float(finite.max())
        self.lo = min(self.lo, lo)
        self.hi = max(self.hi, hi)
        self.count += finite.size
        flat = finite.reshape(-1)
        if flat.dtype != np.float64 and (flat.dtype != np.float32 or max(-self.lo, self.hi) ** 2 * flat.size > 1e37):
            flat = flat.astype(np.float64)  # float16 squares, or float32 sums of squares, would overflow
        self.sumsq += float(np.dot(flat, flat))  # BLAS dot, no float64 copy: a power estimate, not exact
        self._update(finite, max(-lo, hi))

    def _update(self, x: np.ndarray, extent: float) -> None:
        """Observe the finite values ``x``, whose largest magnitude is ``extent``."""

    @property
    def seen(self) -> bool:
        return self.count > 0

    def range(self) -> tuple[float, float]:
        return (self.lo, self.hi) if self.seen else (0.0, 0.0)

    def power(self) -> float:
        """Mean of x^2 over everything seen."""
        return self.sumsq / self.count if self.count else 0.0


class MinMaxObserver(Observer):
    method = "minmax"


class HistogramObserver(Observer):
    """A fixed-size histogram of x over [-radius, radius]; subclasses turn it into a range in ``_range``."""

    def __init__(self, bins: int = 2048, **opts):
        super().__init__(**opts)
        try:
            bins = int(bins)
        except (TypeError, ValueError):
            bins = -1
        if bins < 8 or bins % 4:
            raise PipelineError(f"{self.method} calibration: bins must be a multiple of 4 and >= 8, got {bins}")
        self.bins = bins
        self.hist = np.zeros(bins, np.int64)
        self.radius = 0.0
        self.zeros = 0  # exact zeros seen: a point mass at the left edge of bin bins // 2 (ReLU outputs)

    def _update(self, x: np.ndarray, extent: float) -> None:
        x = np.asarray(x).reshape(-1)
        if x.dtype.kind != "f":
            x = x.astype(np.float64)
        a = extent  # max |x| = max(-min, max), exact: no pass of its own
        nz = int(np.count_nonzero(x == 0))
        self.zeros += nz
        if a == 0.0 and self.radius == 0.0:
            return
        if self.radius == 0.0:  # the first nonzero batch fixes the radius; earlier zeros join their bin
            self.radius = a
            self.hist[self.bins // 2] += self.zeros - nz
        while a > self.radius:
            self._grow()
        self.hist += uniform_histogram(x, self.radius, self.bins)

    def _grow(self) -> None:
        """Double the radius: bin pairs merge into the middle half of the histogram."""
        merged = self.hist.reshape(-1, 2).sum(axis=1)
        self.hist = np.zeros_like(self.hist)
        self.hist[self.bins // 4: self.bins // 4 + self.bins // 2] = merged
        self.radius *= 2.0

    @property
    def width(self) -> float:
        return 2.0 * self.radius / self.bins

    def folded(self) -> np.ndarray:
        """Counts of |x| over bins/2 bins on [0, radius] (bins of width ``self.width``)."""
        half = self.bins // 2
        return self.hist[half:] + self.hist[:half][::-1]

    def _clip(self, lo: float, hi: float) -> tuple[float, float]:
        return max(self.lo, float(lo)), min(self.hi, float(hi))

    def range(self) -> tuple[float, float]:
        if not self.seen or self.radius == 0.0:
            return super().range()
        return self._range()

    def _range(self) -> tuple[float, float]:  # pragma: no cover - subclasses
        return self.lo, self.hi


#: a value whose bin position (x + r) / (2 r) * bins lies this close to a whole number is binned by numpy's
#: comparisons with the bin edges; every other one is in bin floor(position) (the position's rounding error is
#: under 1e-12 for any float64 x and bins < 2^20)
EDGE_SLACK = 1e-6
HIST_BLOCK = 65536


def uniform_histogram(x: np.ndarray, radius: float, bins: int) -> np.ndarray:
    """``np.histogram(x as float64, bins, range=(-radius, radius))[0]`` bit for bit, for finite ``x`` within the
    range (``radius`` > 0), in about half its time: per block, one float64 pass gives each value's bin position,
    and numpy's edge corrections (``x < edge[i]``, ``x >= edge[i + 1]``, the last bin closed) run only on the
    values within ``EDGE_SLACK`` of a bin edge; float32 input is widened inside the subtraction, not copied."""
    x = np.asarray(x).reshape(-1)
    first, last = -float(radius), float(radius)
    denom = np.subtract(last, first)
    edges = zero_bin = None
    out = np.zeros(bins, np.int64)
    for start in range(0, x.size, HIST_BLOCK):  # blocks that stay in cache, as np.histogram's own
        xb = x[start:start + HIST_BLOCK]
        f = np.subtract(xb, first, dtype=np.float64)
        f /= denom
        f *= bins
        idx = f.astype(np.intp)
        f -= idx
        near = np.flatnonzero((f < EDGE_SLACK) | (f > 1.0 - EDGE_SLACK))
        if near.size:  # numpy's own steps (np.histogram's uniform-bin path) on these values
            if edges is None:
                edges = np.linspace(first, last, bins + 1, endpoint=True, dtype=np.float64)
                zero_bin = _edge_bins(np.zeros(1), np.array([bins // 2], np.intp), edges, bins)[0]
            xs = xb[near].astype(np.float64)
            zero = xs == 0  # at position bins / 2 exactly, all in numpy's bin of 0.0 (ReLU outputs: half of them)
            if zero.any():
                idx[near[zero]] = zero_bin
                near, xs = near[~zero], xs[~zero]
            idx[near] = _edge_bins(xs, idx[near], edges, bins)
        out += np.bincount(idx, minlength=bins)
    return out


def _edge_bins(xs: np.ndarray, i: np.ndarray, edges: np.ndarray, bins: int) -> np.ndarray:
    """np.histogram's corrections of the bins ``i`` computed for ``xs`` from their position."""
    i = i.copy()
    i[i == bins] -= 1
    i[xs < edges[i]] -= 1
    i[(xs >= edges[i + 1]) & (i != bins - 1)] += 1
    return i


def hist_quantile(counts: np.ndarray, width: float, start: float, q: float, zero_bin: int | None = None,
                  zeros: int = 0) -> float:
    """The q-quantile (0..1) of a histogram whose bin j covers [start + j*width, start + (j+1)*width), values
    spread evenly inside a bin, except ``zeros`` of bin ``zero_bin`` that sit exactly at its left edge (0)."""
    cdf = np.cumsum(counts, dtype=np.float64)
    target = q * cdf[-1]
    if target <= 0:
        return start
    j = int(np.searchsorted(cdf, target, side="left"))
    prev = cdf[j - 1] if j else 0.0
    n = float(counts[j])
    if j == zero_bin and zeros:
        if target - prev <= zeros:
            return start + j * width
        prev, n = prev + zeros, n - zeros
    return start + (j + (target - prev) / n) * width


class PercentileObserver(HistogramObserver):
    method = "percentile"

    def __init__(self, percentile: float = 99.99, symmetric: bool = False, bins: int = 2048, **opts):
        super().__init__(bins=bins, **opts)
        if not 50.0 < float(percentile) <= 100.0:
            raise PipelineError(f"percentile calibration: percentile must be in (50, 100], got {percentile}")
        self.percentile = float(percentile)
        self.symmetric = bool(symmetric)

    def _range(self) -> tuple[float, float]:
        p = self.percentile / 100.0
        if self.symmetric:
            t = hist_quantile(self.folded(), self.width, 0.0, p, 0, self.zeros)
            return self._clip(-t, t)
        z = self.bins // 2
        lo = hist_quantile(self.hist, self.width, -self.radius, 1.0 - p, z, self.zeros)
        hi = hist_quantile(self.hist, self.width, -self.radius, p, z, self.zeros)
        return self._clip(lo, hi)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two unnormalised histograms; q is floored where p > 0 (MXNet's smoothing, in effect)."""
    p = p / p.sum()
    qs = q.sum()
    q = q / qs if qs > 0 else q
    m = p > 0
    return float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-4 / p.size))))


def kl_threshold(hist: np.ndarray, quantized_bins: int = 128) -> int:
    """TensorRT's entropy calibration on an |x| histogram: the number of bins to keep (the clip edge index)."""
    hist = np.asarray(hist, np.float64)
    n = hist.size
    if n <= quantized_bins or hist.sum() == 0:
        return n
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    best_i, best = n, np.inf
    for i in range(quantized_bins, n + 1):
        sliced = hist[:i]
        p = sliced.copy()
        p[-1] += tail[i]  # outliers are clipped into the last kept bin
        if p[-1] == 0:
            continue  # an empty edge bin is never the best clip
        nonzero = p != 0
        merged = i // quantized_bins
        starts = np.arange(quantized_bins) * merged  # the last quantised bin also takes the i % Q remainder
        sums = np.add.reduceat(sliced, starts)
        norm = np.add.reduceat(nonzero.astype(np.float64), starts)
        level = np.minimum(np.arange(i) // merged, quantized_bins - 1)
        q = np.where(nonzero, np.divide(sums, norm, out=np.zeros_like(sums), where=norm > 0)[level], 0.0)
        d = _kl(p, q)
        if d < best:
            best_i, best = i, d
    return best_i


class EntropyObserver(HistogramObserver):
    method = "entropy"

    def __init__(self, bins: int = 2048, quantized_bins: int = 128, **opts):
        super().__init__(bins=bins, **opts)
        self.quantized_bins = int(quantized_bins)
        if self.quantized_bins < 2:
            raise PipelineError(f"entropy calibration: quantized_bins must be >= 2, got {quantized_bins}")

    def _range(self) -> tuple[float, float]:
        t = kl_threshold(self.folded(), self.quantized_bins) * self.width
        return self._clip(-t, t)


def _sq_rounding_error(t: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The integral over [0, t] of (u - step * round(u / step))^2, t >= 0 (elementwise, broadcast)."""
    k = np.floor(t / step)
    r = t - k * step
    part = np.where(r <= step / 2, r**3 / 3, step**3 / 24 + ((r - step) ** 3 + step**3 / 8) / 3)
    return k * step**3 / 12 + part


class MSEObserver(HistogramObserver):
    method = "mse"

    def __init__(self, bits: int = 8, bins: int = 2048, **opts):
        super().__init__(bins=bins, **opts)
        self.bits = int(bits)
        if not 2 <= self.bits <= 32:
            raise PipelineError(f"mse calibration: bits must be in [2, 32], got {bits}")

    def mse_curve(self) -> tuple[np.ndarray, np.ndarray]:
        """(candidate clip values, expected squared error per element) over the |x| histogram's bin edges.

        Values are taken as spread evenly inside their bin (exact zeros excepted): inside the clip the error is
        the integral of the squared rounding sawtooth over the bin, outside it the squared distance to the clip.
        """
        h = self.folded().astype(np.float64)
        h[0] -= self.zeros  # exact zeros are exact
        n, w = h.size, self.width
        edges = np.arange(n + 1) * w
        clips = edges[1:]
        one_signed = self.lo >= 0 or self.hi <= 0
        levels = 2**self.bits - 1 if one_signed else 2 ** (self.bits - 1) - 1
        inside = np.empty(n)
        for s in range(0, n, 128):  # candidate rows in chunks: bounded temporary memory
            step = clips[s:s + 128, None] / levels
            per_bin = (_sq_rounding_error(edges[None, 1:], step) - _sq_rounding_error(edges[None, :-1], step)) / w
            keep = np.arange(n)[None, :] < np.arange(s + 1, s + 1 + step.shape[0])[:, None]
            inside[s:s + 128] = (per_bin * keep) @ h
        # outside: bin [a, b) beyond clip c adds h * ((b - c)^3 - (a - c)^3) / (3w) = h * (m^2 + w^2/12), m = center - c
        centers = edges[:-1] + w / 2

        def suffix(v):  # suffix(v)[i - 1] = sum(v[i:]) for clip i * w, i = 1..n
            return np.concatenate([np.cumsum(v[::-1])[::-1], [0.0]])[1:]

        s0, s1, s2 = suffix(h), suffix(h * centers), suffix(h * (centers**2 + w * w / 12))
        outside = s2 - 2.0 * clips * s1 + clips**2 * s0
        return clips, (inside + outside) / max(h.sum() + self.zeros, 1.0)

    def _range(self) -> tuple[float, float]:
        clips, err = self.mse_curve()
        t = clips[int(np.argmin(err))]
        return self._clip(-t, t)


class DFPObserver(Observer):
    """Counts, per possible fraction width, the elements that fit up to it: exact order statistics in O(range)."""

    method = "dfp"

    def __init__(self, bits: int = 8, max_overflow_rate: float = 0.0, signed: bool | None = None, **opts):
        super().__init__(**opts)
        self.formats = {s: DynamicFixedPoint(int(bits), s, float(max_overflow_rate)) for s in (True, False)}
        self.bits = int(bits)
        self.signed = signed
        f = self.formats[True]
        self._base = f.min_fraction - 1
        self._counts = {s: np.zeros(f.max_fraction - self._base + 1, np.int64) for s in (True, False)}

    def _update(self, x: np.ndarray, extent: float) -> None:
        f = self.formats[True]
        for s, c in self._counts.items():
            lim = np.clip(fraction_limits(x, self.bits, s), self._base, f.max_fraction)
            c += np.bincount((lim - self._base).astype(np.int64).reshape(-1), minlength=c.size)

    @property
    def is_signed(self) -> bool:
        return self.lo < 0 if self.signed is None else bool(self.signed)

    def fraction(self) -> int:
        """The chosen fraction width F over everything seen."""
        fmt = self.formats[self.is_signed]
        if not self.seen or (self.lo == 0.0 and self.hi == 0.0):
            return fmt.default_fraction
        c = self._counts[self.is_signed]
        k = int(np.floor(fmt.max_overflow_rate * c.sum() + 1e-9))
        j = int(np.searchsorted(np.cumsum(c), k + 1, side="left"))  # the k-th smallest limit (0-based)
        return int(np.clip(j + self._base, fmt.min_fraction, fmt.max_fraction))

    def range(self) -> tuple[float, float]:
        if not self.seen:
            return (0.0, 0.0)
        F = self.fraction()
        qmin, qmax = int_bounds(self.bits, self.is_signed)
        return float(np.ldexp(qmin, -F)), float(np.ldexp(qmax, -F))


CALIBRATORS: dict[str, type[Observer]] = {
    "minmax": MinMaxObserver,
    "percentile": PercentileObserver,
    "entropy": EntropyObserver,
    "mse": MSEObserver,
    "dfp": DFPObserver,
}


def make_observer(method: str, **opts) -> Observer:
    try:
        cls = CALIBRATORS[method]
    except KeyError:
        raise PipelineError(f"unknown calibration method {method!r} (known: {', '.join(sorted(CALIBRATORS))})") from None
    return cls(**opts)
