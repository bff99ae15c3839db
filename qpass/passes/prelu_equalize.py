"""prelu_equalize: per-channel equalization through PRelu, factors from a closed-form noise model, checked at the
model's outputs.

PRelu with a per-channel constant slope is positively homogeneous channel by channel, PRelu(z / s) = PRelu(z) / s
for every s > 0 whatever the slope's sign, and so are MaxPool and the layout ops after it. So for
Conv -> PRelu [-> MaxPool | Transpose | Flatten | Reshape] -> Conv / Gemm / MatMul the first layer's output channels
divide by s and the second layers' input channels multiply by s: the float model is unchanged, no op is inserted
(latency, integer kernels and file size stay as they are), the slopes stay as they are. With per-channel weight
grids the first layer's rounding is blind to s; s trades the per-tensor 8-bit grids of the Conv output and the PRelu
output (both divided by s) against the second layer's weight grid.

``choose: noise`` (default): ``pair_noise`` models the rounding noise at the second layers' outputs in closed form
(per-channel min / max, E[x^2], weights; one float run over the samples) and searches factors s_i >= 1
(``shrink_only``: a channel that sets the grid's range shrinks, none grows past what calibration saw: growing
channels clipped on held-out crops) for each of ``weight_terms`` weightings of the weight-grid noise. The model
weighs every second-layer output alike, which what follows does not (mtcnn-rnet's second pair: -41% modelled,
+18% at the outputs), so each candidate is checked in one session: the float model with the pairs' PRelu grids as
QuantizeLinear -> DequantizeLinear on fed scales and their layers' weights fed on the int8 grid; a pair is kept,
in graph order, where the output noise on ``check_samples`` calibration samples drops ``min_output_drop``.
Channels with fewer than ``min_rows`` values between the layers are left (their calibration maxima mislead).
Measured (eval SQNR on 208 held-out crops, three calibration / eval splits, after prelu_max's Min / Max form):
mtcnn-rnet 34.42 / 35.91 / 36.59 -> 36.08 / 36.74 / 37.30 dB (first pair kept), mtcnn-onet 40.17 / 40.51 / 40.05
-> 40.64 / 40.35 / 40.78, mtcnn-pnet nothing kept; +0.06-0.13 s CPU: still over issue 13's x5 time bound on pnet
and onet, so opt-in.

``choose: int8`` (the first form): SmoothQuant factors s_i = a_i^alpha / r2_i^(1 - alpha) per ``alphas``, each
pair kept by the output SQNR of the whole model quantized as quantize_qdq does (min/max on one part of the
calibration samples, SQNR on the ``holdout`` rest, with ``cross_check`` the other way round too; a gain of
``min_gain_db`` on the worse fold). bench/results/acc13b_2026-11-28_prelu_findings.txt: mtcnn-rnet 34.81 -> 37.38
dB on the bench's 24 eval crops, but on the 208 above it lowers rnet (-0.3 / 0 / -1.1 dB) and the int8 checks cost
0.2-0.6 s CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from onnx import TensorProto, numpy_helper

from qpass.pipeline.pass_base import PassResult
from qpass.formats import parse_format
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import SampleSet
from .equalize import find_pairs, in_channel_view, migration_scales, out_channel_view, scaled
from .pair_noise import fake_quant_copy, fq_feed, noise_tensors, pair_noise_stats
from .ptq_layers import Probe, split_samples, store_layer
from .ptq_pass import WeightSideOptions, WeightSidePass, int8_sqnrs, joined

#: ops a pair may have between its layers (at least one PRelu)
THROUGH = ("PRelu", "MaxPool", "Transpose", "Flatten", "Reshape")


@dataclass
class PreluEqualizeOptions(WeightSideOptions):
    activations: str = "auto"
    samples: int = 64
    #: the fraction of the samples the int8 check runs on (the rest calibrate its ranges)
    holdout: float = 0.5
    #: SmoothQuant strengths tried per pair (each one int8 model built and run)
    alphas: tuple = (0.25,)
    #: a pair is rewritten only where the held-out output SQNR gains this much (dB)
    min_gain_db: float = 0.2
    #: at most this many pairs are tried (graph order): a bound on the pass's work read from the graph
    max_pairs: int = 4
    #: also calibrate on the held-out part and check on the rest; a pair must gain on both folds
    cross_check: bool = True
    threads: int = 1
    #: how each pair's factors are chosen: "noise" (``pair_noise``'s closed form) or "int8" (alphas by int8 checks)
    choose: str = "noise"
    #: noise: a pair is rewritten where the modelled noise at its second layers' outputs drops this much
    min_noise_drop: float = 0.1
    #: noise: factors in [1 / span, span]
    span: float = 4.0
    #: noise: at least this many values (samples x positions) per channel between the layers
    min_rows: int = 1024
    #: noise: the output check runs on the first this many samples
    check_samples: int = 12
    #: noise: a pair passing the model is kept where the output noise (its grids and weights) drops this much
    min_output_drop: float = 0.1
    #: noise: the weightings of the weight grids' noise in the model, one candidate each
    weight_terms: tuple = (1.0, 0.3, 0.1)
    #: noise: only factors >= 1 (channels shrink where they set the grid's range; none grows)
    shrink_only: bool = True
    #: noise: count the first layer's output grid (off: prelu_max / prelu_split later quantize the PRelu output
    #: straight from the layer)
    output_grid: bool = False


def prelu_pairs(model, probe_shape) -> list:
    """equalize's pairs (extended) whose ops in between are THROUGH ops with a PRelu among them."""
    return [p for p in find_pairs(model, probe_shape, True)
            if any(n.op_type == "PRelu" for n in p.mids) and all(n.op_type in THROUGH for n in p.mids)]


def read_ranges(pair, value: np.ndarray) -> np.ndarray:
    """max |x| per channel of the first layer, over the tensor ``value`` the second layers read (stacked samples:
    [N, 1, C, ...] for a Conv reader, channels last for Gemm / MatMul)."""
    b = pair.seconds[0]
    v = np.abs(np.moveaxis(value, 2 if b.op == "Conv" else -1, 0))
    per = v.reshape(v.shape[0], -1).max(axis=1).astype(np.float64)
    out = np.zeros(pair.first.out_channels)
    np.maximum.at(out, pair.chan_of[0], per)
    return out


class PreluEqualize(WeightSidePass):
    name = "prelu_equalize"
    Options = PreluEqualizeOptions

    def transform(self, model, ctx, fm, grid):
        if fm.granularity != "channel":
            return self.nothing(model, ctx, "per-tensor weights: the factors would change the layers' rounding")
        shapes: dict[str, tuple] = {}
        samples = ctx.inputs.calibration_data

        def shape_of(t):  # a layer input's shape, for pairs through layout ops (one sample's run, once per tensor)
            if t not in shapes:
                shapes[t] = Probe(model, samples.subset(slice(0, 1)), [], [t], self.opts.threads).float_value(t).shape
            return shapes[t]

        pairs = prelu_pairs(model, shape_of)[:self.opts.max_pairs]
        if not pairs:
            return self.nothing(model, ctx, "no Conv -> PRelu -> layer pair")
        if self.opts.choose == "int8":
            return self.by_int8_checks(model, ctx, fm, pairs, shape_of)
        return self.by_noise_model(model, ctx, fm, grid, pairs, shape_of)

    def by_noise_model(self, model, ctx, fm, grid, pairs, shape_of):
        """Each pair's factors minimise ``pair_noise``'s closed-form noise at its second layers' outputs (one float
        run over the samples for all pairs); a pair whose modelled noise drops ``min_noise_drop`` is then checked at
        the model's outputs (one session: the pairs' grids as fake quantizers, their weights on the grid, fed) and
        kept, in graph order, where the output noise drops ``min_output_drop``. Pairs whose channels between the
        layers hold fewer than ``min_rows`` values are left (calibration maxima of few values mislead)."""
        o = self.opts
        act = parse_format(fm.activations) if fm.activations not in (None, "float") else None
        if act is None or getattr(act, "qmax", None) is None or getattr(grid.fmt, "qmax", None) is None:
            return self.nothing(model, ctx, "no integer activation and weight grids to model")
        samples = self.first_samples(ctx)
        outs = [x.name for x in model.graph.output]
        probe = Probe(model, samples, [], [t for p in pairs for t in noise_tensors(p)] + outs, o.threads)
        slopes = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        report, cands = {}, []
        for p in pairs:
            stats, rows = pair_noise_stats(p, {t: probe.float_value(t) for t in noise_tensors(p)}, slopes,
                                           float(act.qmax - act.qmin), grid.fmt.qmax, o.output_grid)
            if stats is None or rows < o.min_rows:
                report[p.name] = {"kept": False, "why": "grouped second layer" if stats is None else
                                  f"{rows} values a channel (< {o.min_rows})"}
                continue
            found, drops = [], []
            for lam in o.weight_terms:  # one candidate per weighting of the weight grids' noise
                stats.w_weight = lam
                s = stats.best(o.span, shrink_only=o.shrink_only)
                ref = stats.noise(np.ones_like(s))
                if ref > 0 and stats.noise(s) <= ref * (1 - o.min_noise_drop) and \
                        not any(np.array_equal(s, f) for f in found):
                    found.append(s)
                    drops.append(1 - stats.noise(s) / ref)
            stats.w_weight = 1.0
            report[p.name] = {"kept": False, "modelled_drops": drops}
            if found:
                cands.append((p, found, stats))
        kept = output_check(model, samples.subset(slice(0, min(len(samples), o.check_samples))), cands, probe, outs,
                            grid, act, o, report) if cands else []
        for p, s in kept:
            model = with_factors(model, p.first.name, s, shape_of)
        ctx.report.results[self.name] = {"pairs": report}
        drops = ", ".join(f"{report[p.name]['output_drop']:.0%}" for p, _ in kept)
        return PassResult(model, bool(kept), [f"equalized {len(kept)} of {len(pairs)} pairs through PRelu by the "
                                              f"modelled rounding noise, checked at the outputs"
                                              + (f" (noise -{drops})" if kept else "")])

    def by_int8_checks(self, model, ctx, fm, pairs, shape_of):
        o = self.opts
        fit, held = split_samples(ctx.inputs.calibration_data, o.samples, o.holdout)
        if held is None:
            return self.nothing(model, ctx, "too few calibration samples to hold some out")
        reference = onnx_copy(model)
        probe = Probe(model, ctx.inputs.calibration_data, [], [p.seconds[0].x for p in pairs], o.threads)
        ranges = {p.first.name: read_ranges(p, probe.float_value(p.seconds[0].x)) for p in pairs}
        folds = [(fit, held), (held, fit)][:2 if o.cross_check else 1]
        best = [int8_sqnrs(reference, [model], a, b, fm.activations)[0] for a, b in folds]
        report = {"held_out_sqnr_db": best, "pairs": {}}
        done = 0
        for name in [p.first.name for p in pairs]:
            p = next((q for q in prelu_pairs(model, shape_of) if q.first.name == name), None)
            if p is None:
                continue
            cands = [(a, with_factors(model, name, migration_scales(p, ranges[name], a), shape_of))
                     for a in o.alphas]
            got = np.array([int8_sqnrs(reference, [m for _, m in cands], a, b, fm.activations) for a, b in folds])
            gain = (got - np.array(best)[:, None]).min(axis=0)  # the worse fold's gain per alpha
            i = int(np.argmax(gain))
            keep = gain[i] >= o.min_gain_db
            report["pairs"][p.name] = {"sqnr_db": {str(a): got[:, k].tolist() for k, (a, _) in enumerate(cands)},
                                       "kept": bool(keep), "alpha": cands[i][0] if keep else None}
            if keep:
                model, best, done = cands[i][1], got[:, i].tolist(), done + 1
        report["final_sqnr_db"] = best
        ctx.report.results[self.name] = report
        return PassResult(model, done > 0, [f"equalized {done} of {len(pairs)} pairs through PRelu (held-out int8 "
                                            f"output SQNR {min(report['held_out_sqnr_db']):.2f} -> {min(best):.2f} dB, "
                                            f"worse fold)"])


def output_check(model, samples, cands: list, probe, outs: list, grid, act, o, report: dict) -> list:
    """The (pair, factors) of ``cands`` kept, in order, where the output noise energy on ``samples`` drops by
    ``o.min_output_drop`` (each pair's grids fake-quantized, its layers' weights on ``grid``; the pairs kept so far
    in place)."""
    grids = {p.name: ([p.first.y] if o.output_grid else []) + [n.output[0] for n in p.mids if n.op_type == "PRelu"]
             for p, _, _ in cands}
    layers = list({lay.node.input[1]: lay for p, _, _ in cands for lay in [p.first] + p.seconds}.values())
    signed = act.qmin < 0
    fq = fake_quant_copy(model, [t for ts in grids.values() for t in ts], TensorProto.INT8 if signed else
                         TensorProto.UINT8)
    check = Probe(fq, samples, layers, outs, o.threads)
    np_dtype = np.int8 if signed else np.uint8
    ref = joined({t: probe.float_value(t)[:len(samples)] for t in outs})
    base = {lay.node.input[1]: lay for lay in layers}

    def energy(state: dict) -> float:
        w = {k: lay.w.astype(np.float64) for k, lay in base.items()}
        feed = {}
        for p, _, stats in cands:
            s = state.get(p.name, np.ones(p.first.out_channels))
            w[p.first.node.input[1]] = w[p.first.node.input[1]] / out_channel_view(p.first, s)
            if p.first.b is not None:
                feed[p.first.node.input[2]] = np.asarray(p.first.b / s, np.float32)
            for b, chan in zip(p.seconds, p.chan_of):
                w[b.node.input[1]] = w[b.node.input[1]] * in_channel_view(b, s[chan])
            for t, (lo, hi, _) in zip(grids[p.name], stats.grids):
                feed.update(fq_feed(t, float((lo / s).min()), float((hi / s).max()), act.qmin, act.qmax, np_dtype))
        feed.update({k: grid.fake(base[k], v).astype(np.float32) for k, v in w.items()})
        shared = {**samples.shared, **check.base, **{k: v if v.dtype == np_dtype else v.astype(np.float32)
                                                      for k, v in feed.items()}}
        got = joined(run_samples(check.model, SampleSet(samples.arrays, shared, samples.labels, samples.source),
                                 outputs=outs, sess=check.sess))
        return float(np.sum((got - ref) ** 2))

    state, kept = {}, []
    current = energy(state)
    for p, found, _ in cands:
        trials = [energy({**state, p.name: s}) for s in found]
        k = int(np.argmin(trials))
        drop = 1 - trials[k] / current if current > 0 else 0.0
        report[p.name].update({"output_drop": drop, "factors": {int(i): float(found[k][i])
                                                                for i in np.flatnonzero(found[k] != 1)}})
        if drop >= o.min_output_drop:
            state[p.name], current = found[k], trials[k]
            report[p.name]["kept"] = True
            kept.append((p, found[k]))
    return kept


def onnx_copy(model):
    m = type(model)()
    m.CopyFrom(model)
    return m


def with_factors(model, first: str, s: np.ndarray, shape_of):
    """A copy of ``model`` with the output channels of the pair whose first layer is ``first`` divided by ``s``,
    its second layers' input channels multiplied (the pair found again in the copy: the model is not touched)."""
    m = onnx_copy(model)
    pair = next(p for p in prelu_pairs(m, shape_of) if p.first.name == first)
    w1, b1, w2s = scaled(pair, s)
    store_layer(m, pair.first, w1, b1)
    for b, w2 in zip(pair.seconds, w2s):
        store_layer(m, b, w2, None)
    return m
