"""bias_correction: empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2, the empirical variant).

Rounding weights shifts a layer's output mean: E[W~ x~] - E[W x] per output channel, where W~ is the weight on the
quantizer's grid (``weights``, ``granularity``; see ``ptq_layers.WeightGrid``) and x the layer's float input. The
pass adds the negated shift, measured on calibration samples (every output position of a Conv), to the layer's bias
(a Conv or Gemm without one gets one). By default x~ = x: each layer corrects the shift its own rounding causes,
from one float run of the model: every layer's input comes from ONE pass over the samples, sample group by sample
group (``Probe.groups``), each layer keeping only its sampled patch rows (``PatchRows``). With ``sequential`` x~ is
the layer's input in the model whose earlier layers are already quantized and corrected, layer by layer in graph
order (one run per layer).

With ``auto`` a channel keeps its correction only where it lowers that channel's mean squared output error on
held-out calibration samples by at least ``min_gain`` of it: for a correction d and the held-out mean error e, the
squared error changes by d^2 + 2 d e. Nothing is corrected where the weights rounded to nearest already leave the
held-out output ``margin_db`` above what the activation grid reaches (the float pass starts at the held-out samples,
so this is known before the others run).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from tqdm import tqdm

from qpass.errors import QpassError
from qpass.formats import parse_format
from qpass.pipeline.pass_base import PassResult
from .ptq_layers import CACHE_BYTES, Layer, find_layers, sample_rows, store_layer
from .ptq_pass import WeightSideOptions, WeightSidePass, joined


@dataclass
class BiasCorrectionOptions(WeightSideOptions):
    #: keep a channel's correction only where it lowers its held-out output error by this fraction
    auto: bool = True
    min_gain: float = 0.01
    #: inputs from the model with earlier layers already quantized and corrected (one run per layer: slower;
    #: without it each layer corrects the shift its own rounding causes, from one float run)
    sequential: bool = False
    op_types: tuple = ("Conv", "Gemm")
    threads: int = 1
    #: with ``auto``, nothing is corrected where the held-out output SQNR with every weight rounded to nearest
    #: (activations float) is this far above the best an activation grid of b bits gives (6.02 b + 1.76 dB): the
    #: weights' share of the quantized model's error is then too small to matter (magika: 120.9 dB, where the
    #: corrections it measured lowered it to 119.2 dB; 0.6 s of its 2.1 s)
    margin_db: float = 30.0


def error_moments(lay: Layer, x: np.ndarray, xq: np.ndarray, wq: np.ndarray, w: np.ndarray, rows: int,
                  second: bool = True):
    """(mean, mean square) per output channel ([G, M]) of the output error wq x~ - w x over at most ``rows``
    patch rows (``second`` False: the mean square is None, not computed)."""
    idx = sample_rows(lay.rows(x), rows)
    p = lay.patches(x, idx)
    return patch_moments(p, None if xq is x else lay.patches(xq, idx), wq, w, second)


def patch_moments(p: np.ndarray, pq: np.ndarray | None, wq: np.ndarray, w: np.ndarray, second: bool = True):
    """``error_moments`` on the patches ``p`` of x and ``pq`` of x~ ([G, P, K]; None: x~ is x, one product)."""
    if pq is None:  # the layer's own rounding only: one product
        e = np.matmul(p, (wq - w).transpose(0, 2, 1))
    else:
        e = np.matmul(pq, wq.transpose(0, 2, 1)) - np.matmul(p, w.transpose(0, 2, 1))
    e = e.astype(np.float64)
    return e.mean(axis=1), ((e * e).mean(axis=1) if second else None)


class PatchRows:
    """A layer's patch rows over samples ``lo``..``hi`` (at most ``count``: ``sample_rows`` over them, the rows of
    ``error_moments``), gathered group by group as a probe hands the float values over (``Probe.groups``): each
    group gives the chosen rows that fall in its samples (rows are ordered sample by sample), or its input itself
    where that is smaller than the rows. ``patches()`` is then bit for bit ``lay.patches(x[lo:hi], rows)``."""

    def __init__(self, lay: Layer, lo: int, hi: int, count: int):
        self.lay, self.lo, self.hi, self.count = lay, lo, hi, count
        #: gather the rows as the groups come (else keep the inputs, gathered by ``patches``)
        self.eager = True
        self.per: int | None = None  # patch rows per sample
        self.idx: np.ndarray | None = None
        self.raw = True  # keep the input itself (else the gathered rows)
        self.parts: list[np.ndarray] = []

    def add(self, start: int, stop: int, x: np.ndarray) -> None:
        s, e = max(start, self.lo), min(stop, self.hi)
        if s >= e:
            return
        xs = x[s - start:e - start]
        if self.per is None:
            self.per = self.lay.rows(xs[:1])
            self.idx = sample_rows(self.per * (self.hi - self.lo), self.count)
            k = int(np.prod(self.lay.w.shape[1:])) * self.lay.groups if self.lay.op == "Conv" else x.shape[-1]
            smaller = self.idx is not None and xs[:1].nbytes * (self.hi - self.lo) <= len(self.idx) * k * 4
            self.raw = self.idx is None or not self.eager or smaller
        if self.raw:
            # (a view keeps the whole group: copied where the groups are not all kept anyway)
            self.parts.append(xs.copy() if self.eager and xs.shape[0] < x.shape[0] else xs)
            return
        base, top = (s - self.lo) * self.per, (e - self.lo) * self.per
        local = self.idx[(self.idx >= base) & (self.idx < top)] - base
        if len(local):
            self.parts.append(self.lay.patches(xs, local))

    def patches(self) -> np.ndarray:
        parts, self.parts = self.parts, []
        if self.raw:
            return self.lay.patches(parts[0] if len(parts) == 1 else np.concatenate(parts), self.idx)
        return parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)


class BiasCorrection(WeightSidePass):
    name = "bias_correction"
    Options = BiasCorrectionOptions

    def transform(self, model, ctx, fm, grid):
        o = self.opts
        layers = find_layers(model, tuple(o.op_types))
        if not layers:
            return self.nothing(model, ctx, "no Conv or Gemm with a constant weight")
        probe, n_fit = self.layer_probe(model, ctx, layers)
        outs = [x.name for x in model.graph.output]
        bits, plain = activation_bits(fm.activations), []

        def exact_enough(ref=None) -> bool:  # the weights' share of the error too small to matter: nothing to do
            plain.append(self.rounded_sqnr(model, layers, grid, probe, n_fit, ref))
            return bool(bits) and plain[0] > 6.02 * bits + 1.76 + o.margin_db

        rows = None if o.sequential else \
            gather_rows(probe, layers, n_fit, o.rows, outs, exact_enough if o.auto else None)
        if o.auto and n_fit < len(probe.samples) and (rows is None if not o.sequential else exact_enough()):
            return self.nothing(model, ctx, f"held-out output SQNR with the weights on the grid is {plain[0]:.2f} "
                                            f"dB, over {o.margin_db:g} dB above what {bits}-bit activations reach: "
                                            f"nothing to correct")
        plain = plain[0] if plain else None
        before = onnx.ModelProto()
        before.CopyFrom(model)
        current: dict[str, np.ndarray] = {}
        report, n_layers, n_channels = {}, 0, 0
        for i, lay in enumerate(tqdm(layers, desc="bias correction", unit="layer", disable=not ctx.progress or None,
                                     leave=False)):
            wq = grid.fake(lay, lay.w)
            d, keep = self.shift(lay, wq, probe, n_fit, rows[i] if rows else None, current)
            d = np.where(keep, d, 0.0).reshape(-1)
            b = (np.zeros(lay.out_channels) if lay.b is None else lay.b.astype(np.float64)) + d
            current[lay.node.input[1]] = wq
            report[lay.name] = {"channels": int(keep.sum()), "of": int(keep.size),
                                "max_shift": float(np.abs(d).max(initial=0.0))}
            if keep.any():
                n_layers, n_channels = n_layers + 1, n_channels + int(keep.sum())
                store_layer(model, lay, lay.w, b.astype(np.float32))
                current[lay.node.input[2]] = lay.b
        ctx.report.results["bias_correction"] = report
        notes = [f"corrected the bias of {n_channels} channels in {n_layers} of {len(layers)} layers ({grid.spec} "
                 f"weights)"]
        # the whole model must gain too: output SQNR on the held-out samples, weights on the grid both ways
        check = self.held_out_check(before, model, layers, grid, probe, n_fit, plain=plain) \
            if n_layers and o.auto else None
        if check is not None:
            plain, fixed = check
            if not fixed > plain:
                ctx.report.results["bias_correction"] = {}
                return PassResult(before, False, notes + [f"held-out output SQNR {fixed:.2f} dB is not above "
                                                          f"{plain:.2f} dB without it: biases kept"])
            notes.append(f"held-out output SQNR (weights on the grid) {plain:.2f} -> {fixed:.2f} dB")
        return PassResult(model, n_layers > 0, notes)

    def shift(self, lay: Layer, wq: np.ndarray, probe, n_fit: int, rows, current: dict):
        """(the bias shift that cancels the fit samples' mean output error, which channels keep it) of one layer
        ([G, M] each), from its gathered patch rows (``rows``: fit, held out) or, ``sequential``, from the probe."""
        o = self.opts
        w3, wq3 = lay.matrices(), lay.matrices(wq)
        e = None
        if rows is not None:  # (two products, as error_moments on slices of the float input: the same bits)
            fit, held = rows
            p = fit.patches()
            d = -patch_moments(p, p, wq3, w3, second=False)[0]
            if held is not None:
                p = held.patches()
                e, e2 = patch_moments(p, p, wq3, w3)
        else:
            xf = probe.float_value(lay.x)
            xq = probe.run([lay.x], current)[lay.x] if current and o.sequential else xf
            d = -error_moments(lay, xf[:n_fit], xq[:n_fit], wq3, w3, o.rows, second=False)[0]
            if n_fit < len(probe.samples):
                e, e2 = error_moments(lay, xf[n_fit:], xq[n_fit:], wq3, w3, o.rows)
        return d, (np.ones(d.shape, bool) if e is None else d * d + 2 * d * e < -o.min_gain * e2)


def activation_bits(spec: str) -> int | None:
    """The word width of activation format ``spec`` (None for a format without one, or none at all)."""
    try:
        return parse_format(spec).word_width
    except (QpassError, ValueError):
        return None


def gather_rows(probe, layers: list[Layer], n_fit: int, count: int, keep: list[str], check=None) -> list | None:
    """Per layer, its (fit, held-out or None) ``PatchRows`` over the probe's samples, from one float pass over
    them (``Probe.groups``; the tensors ``keep`` then cached, for ``held_out_check``). The rows are gathered as the
    groups come only where the inputs over every sample would not fit ``CACHE_BYTES``. ``check(reference)``, where
    samples are held out: called with the float outputs ``keep`` on them, joined, once they are through (the pass
    starts at them where the samples run one per call); True stops there: None."""
    n = len(probe.samples)
    rows = [(PatchRows(lay, 0, n_fit, count), PatchRows(lay, n_fit, n, count) if n_fit < n else None)
            for lay in layers]
    check = check if n_fit < n else None
    held: dict[str, list] = {t: [] for t in keep}
    for i, (start, stop, values) in enumerate(probe.groups(keep, first=n_fit if check else 0)):
        if i == 0:  # where every input fits the probe's cache, they are kept and gathered when asked for
            for r in (r for pair in rows for r in pair if r is not None):
                r.eager = probe.float_bytes() > CACHE_BYTES
        for lay, (fit, part) in zip(layers, rows):
            fit.add(start, stop, values[lay.x])
            if part is not None:
                part.add(start, stop, values[lay.x])
        if check is not None and stop > n_fit:
            for t in keep:
                held[t].append(values[t][max(n_fit - start, 0):])
            if stop == n and check(joined({t: np.concatenate(v) for t, v in held.items()})):
                return None
    return rows
