"""bias_correction: empirical bias correction (Nagel et al. 2019, "Data-Free Quantization Through Weight
Equalization and Bias Correction", section 4.2, the empirical variant).

Rounding weights shifts a layer's output mean: E[W~ x~] - E[W x] = W~ E[x~] - W E[x] per output channel, where W~
is the weight on the quantizer's grid (``weights``, ``granularity``; see ``ptq_layers.WeightGrid``), x the layer's
float input and x~ its input in the model whose earlier layers are already quantized and corrected. The pass adds
the negated shift to the layer's bias (a Conv or Gemm without one gets one), layer by layer in graph order, with
the means taken over calibration samples (every output position of a Conv).

With ``auto`` a channel keeps its correction only where it lowers that channel's output error on held-out
calibration samples by at least ``min_gain`` of it: for a correction d and the held-out mean error e, the squared
error changes by d^2 + 2 d e.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from qpass.pipeline.pass_base import Pass, PassResult
from .ptq_layers import Layer, Probe, Stats, WeightGrid, blas_threads, find_layers, sample_rows, split_samples, \
    store_layer


@dataclass
class BiasCorrectionOptions:
    #: the quantizer's weight format (auto: quantize_qdq's int8) and granularity (channel or tensor)
    weights: str = "auto"
    granularity: str = "channel"
    samples: int = 256
    holdout: float = 0.25
    rows: int = 32768
    #: keep a channel's correction only where it lowers its held-out output error by this fraction
    auto: bool = True
    min_gain: float = 0.01
    op_types: tuple = ("Conv", "Gemm")
    threads: int = 1


@dataclass
class Moments:
    """Mean patches of the quantized-model and float inputs ([G, K]) and, for the error check, Stats."""

    mq: np.ndarray
    mf: np.ndarray
    st: Stats | None = None


def moments(lay: Layer, xq: np.ndarray, xf: np.ndarray, rows: int, second: bool) -> Moments:
    total = lay.patches(xq[:1]).shape[1] * len(xq)
    idx = sample_rows(total, rows)
    pq, pf = lay.patches(xq, idx), lay.patches(xf, idx)
    return Moments(pq.mean(axis=1, dtype=np.float64), pf.mean(axis=1, dtype=np.float64),
                   Stats.of(pq, pf) if second else None)


def shift(wq: np.ndarray, w: np.ndarray, m: Moments) -> np.ndarray:
    """E[wq x~] - E[w x] per output channel ([G, M])."""
    return np.einsum("gmk,gk->gm", wq, m.mq) - np.einsum("gmk,gk->gm", w, m.mf)


class BiasCorrection(Pass):
    name = "bias_correction"
    inputs = ("calibration_data",)
    Options = BiasCorrectionOptions

    def run(self, model, ctx):
        with blas_threads(self.opts.threads):
            return self._run(model, ctx)

    def _run(self, model, ctx):
        o = self.opts
        grid = WeightGrid(o.weights, o.granularity)
        layers = find_layers(model, tuple(o.op_types))
        if not layers:
            return PassResult(model, False, ["no Conv or Gemm with a constant weight"])
        fit, check = split_samples(ctx.inputs.calibration_data, o.samples, o.holdout if o.auto else 0.0)
        n_fit = len(fit)
        both = fit if check is None else ctx.inputs.calibration_data.subset(slice(0, n_fit + len(check)))
        probe = Probe(model, both, layers, [lay.x for lay in layers], o.threads)
        current: dict[str, np.ndarray] = {}
        report, n_layers, n_channels = {}, 0, 0
        for lay in tqdm(layers, desc="bias correction", unit="layer", disable=not ctx.progress or None, leave=False):
            wq = grid.fake(lay, lay.w)
            xf = probe.run([lay.x])[lay.x]
            xq = probe.run([lay.x], current)[lay.x] if current else xf
            w3, wq3 = lay.matrices().astype(np.float64), lay.matrices(wq).astype(np.float64)
            d = -shift(wq3, w3, moments(lay, xq[:n_fit], xf[:n_fit], o.rows, False))
            keep = np.ones(d.shape, bool)
            if check is not None:
                m = moments(lay, xq[n_fit:], xf[n_fit:], o.rows, True)
                e = shift(wq3, w3, m)
                keep = d * d + 2 * d * e < -o.min_gain * m.st.channel_loss(wq3, w3)
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
        return PassResult(model, n_layers > 0, [f"corrected the bias of {n_channels} channels in {n_layers} of "
                                                f"{len(layers)} layers ({grid.spec} weights)"])
