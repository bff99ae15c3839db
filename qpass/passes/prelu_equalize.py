"""prelu_equalize: per-channel equalization through PRelu, factors chosen by the int8 model's held-out output error.

PRelu with a per-channel constant slope is positively homogeneous channel by channel, PRelu(z / s) = PRelu(z) / s
for every s > 0 whatever the slope's sign, and so are MaxPool and the layout ops after it. So for
Conv -> PRelu [-> MaxPool | Transpose | Flatten | Reshape] -> Conv / Gemm / MatMul the first layer's output channels
divide by s and the second layers' input channels multiply by s: the float model is unchanged, no op is inserted
(latency, integer kernels and file size stay as they are), the slopes stay as they are. With per-channel weight
grids the first layer's rounding is blind to s; s trades the per-tensor 8-bit grids of the Conv output and the PRelu
output (both divided by s) against the second layer's weight grid.

The factors are SmoothQuant's s_i = a_i^alpha / r2_i^(1 - alpha) (``equalize.migration_scales``: a_i the calibrated
range of channel i where the second layers read it, r2_i their weight range on it). Local simulations of the pair
mislead here (mtcnn's kept pairs moved the eval SQNR -2.6..+1.6 dB, see ``equalize``'s ``extended``), so each pair's
alpha is chosen, pair after pair in graph order, by the output SQNR of the whole model quantized as quantize_qdq does
(min/max ranges on the first part of the calibration samples, SQNR on the ``holdout`` rest, and with
``cross_check`` the other way round too): a pair keeps the alpha whose worse fold gains most, where that gain is at
least ``min_gain_db`` over the model so far. Decisions depend on the samples only.

Measured (bench/results/acc13b_2026-11-28_prelu_findings.txt, eval SQNR): mtcnn-rnet 34.81 -> 37.38 dB (its first
pair), mtcnn-pnet 32.51 and mtcnn-onet 39.40 unchanged (one fold alone kept pairs that cost them 0.9 and 1.2 dB);
but the int8 checks cost 0.2-0.6 s CPU on these small nets (pipeline 0.24 -> 0.55 s on pnet), beyond issue 13's
x5 wall-time bound: opt-in.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qpass.pipeline.pass_base import PassResult
from .equalize import find_pairs, migration_scales, scaled
from .ptq_layers import Probe, split_samples, store_layer
from .ptq_pass import WeightSideOptions, WeightSidePass, int8_sqnrs

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
        o = self.opts
        fit, held = split_samples(ctx.inputs.calibration_data, o.samples, o.holdout)
        if held is None:
            return self.nothing(model, ctx, "too few calibration samples to hold some out")
        if fm.granularity != "channel":
            return self.nothing(model, ctx, "per-tensor weights: the factors would change the layers' rounding")
        shapes: dict[str, tuple] = {}

        def shape_of(t):  # a layer input's shape, for pairs through layout ops (one sample's run, once per tensor)
            if t not in shapes:
                shapes[t] = Probe(model, fit.subset(slice(0, 1)), [], [t], o.threads).float_value(t).shape
            return shapes[t]

        pairs = prelu_pairs(model, shape_of)[:o.max_pairs]
        if not pairs:
            return self.nothing(model, ctx, "no Conv -> PRelu -> layer pair")
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
