"""smoothquant: migrate quantization difficulty from activations to weights for MatMul / Gemm layers whose input
has outlier channels (Xiao et al. 2023, "SmoothQuant").

A per-tensor activation quantizer spends its whole grid on the widest channel: one input channel 50x wider than
the rest leaves the others a handful of codes. With s_j = max|x_j|^alpha / max|w_j|^(1 - alpha) per input channel
j, X W = (X diag(s)^-1) (diag(s) W): the activation's channels are divided by s (its outliers shrink) and the
weight's input rows multiplied by s (per-output-channel weight scales absorb that well). The division is folded
into what produces X, so no node is added: a LayerNormalization (scale and bias), a Mul or Div by a constant, or a
Gemm / MatMul whose output only feeds the smoothed layers (its output channels). Every reader of X must be a
MatMul / Gemm with a constant weight (e.g. the Q, K, V projections of one LayerNorm share one s).

With ``auto`` (default) an input is migrated only if it has outlier channels (its widest channel at least
``outlier_ratio`` times its median one), and then each input tensor tries ``alphas`` and keeps the best only where it lowers the summed output
error of its readers on calibration samples by at least ``min_gain`` (weights on the quantizer's grid, X quantized
per tensor on ``activations``), against no migration.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.pipeline.pass_base import PassResult
from .ptq_layers import (Layer, Probe, WeightGrid, fake_activation, find_layers, set_initializer,
                         store_layer)
from .ptq_pass import WeightSidePass


@dataclass
class SmoothQuantOptions:
    #: formats to simulate; auto: those of the quantizing pass the pipeline runs (ptq_pass.quantizer_formats)
    weights: str = "auto"
    granularity: str = "auto"
    activations: str = "auto"
    alphas: list = field(default_factory=lambda: [0.25, 0.5, 0.75])
    samples: int = 32
    #: an input has outlier channels where its widest channel is this many times its median channel's width
    outlier_ratio: float = 8.0
    auto: bool = True
    min_gain: float = 0.02
    threads: int = 1


@dataclass
class Site:
    """An activation tensor read only by MatMul / Gemm layers, and the node whose constants absorb 1/s."""

    x: str
    readers: list[Layer]
    producer: onnx.NodeProto
    #: input indices of the producer's constants that scale with the output channel (LayerNorm scale and bias,
    #: Mul / Div operand), or None for a producing layer (its output channels)
    consts: list[int] | None
    producer_layer: Layer | None = None


def _const_vector(model: onnx.ModelProto, name: str, k: int) -> np.ndarray | None:
    for i in model.graph.initializer:
        if i.name == name:
            v = numpy_helper.to_array(i)
            if v.dtype == np.float32 and (v.size == 1 or (v.shape[-1] == k and v.size == k)):
                return v
    return None


def find_sites(model: onnx.ModelProto) -> list[Site]:
    layers = find_layers(model, ("Gemm", "MatMul"))
    all_layers = {id(lay.node): lay for lay in find_layers(model)}
    by_x: dict[str, list[Layer]] = {}
    for lay in layers:
        by_x.setdefault(lay.x, []).append(lay)
    readers: dict[str, int] = {}
    for n in model.graph.node:
        for t in n.input:
            readers[t] = readers.get(t, 0) + 1
    prod = {o: n for n in model.graph.node for o in n.output}
    inits = {i.name for i in model.graph.initializer}
    sites = []
    for x, lays in by_x.items():
        k = lays[0].w.shape[lays[0].in_channel_axis()]
        if readers.get(x, 0) != len(lays) or x not in prod or any(lay.w.shape[lay.in_channel_axis()] != k
                                                                  for lay in lays):
            continue
        p = prod[x]
        if p.op_type == "LayerNormalization" and len(p.input) > 1 and all(t in inits for t in p.input[1:3] if t):
            if _const_vector(model, p.input[1], k) is not None:
                sites.append(Site(x, lays, p, [i for i in (1, 2) if len(p.input) > i and p.input[i]]))
        elif p.op_type in ("Mul", "Div") and p.input[1] in inits and p.input[0] not in inits \
                and _const_vector(model, p.input[1], k) is not None and readers.get(p.input[1], 0) == 1:
            sites.append(Site(x, lays, p, [1]))
        elif id(p) in all_layers and all_layers[id(p)].op in ("Gemm", "MatMul") and \
                all_layers[id(p)].out_channels == k:
            sites.append(Site(x, lays, p, None, all_layers[id(p)]))
    return sites


def migration_scales(xmax: np.ndarray, lays: list[Layer], alpha: float) -> np.ndarray:
    wmax = np.max([np.abs(lay.w).max(axis=1 - lay.in_channel_axis()) for lay in lays], axis=0).astype(np.float64)
    s = np.power(np.maximum(xmax, 1e-12), alpha) / np.power(np.maximum(wmax, 1e-12), 1 - alpha)
    return np.where((xmax > 0) & (wmax > 0) & np.isfinite(s), s, 1.0)


def _rows(lay: Layer, s: np.ndarray) -> np.ndarray:
    shape = [1, 1]
    shape[lay.in_channel_axis()] = -1
    return (lay.w * s.reshape(shape)).astype(np.float32)


def site_error(site: Site, x: np.ndarray, s: np.ndarray, grid: WeightGrid, act: str) -> float:
    """Summed squared output error of the site's readers with X / s quantized per tensor and s W on the grid."""
    xq = fake_activation(x / s.astype(np.float32), act)
    total = 0.0
    for lay in site.readers:
        ref = lay.forward(x, lay.w, lay.b)
        w = _rows(lay, s)
        d = lay.forward(xq, grid.fake(lay, w), lay.b) - ref
        total += float(np.sum(d.astype(np.float64) ** 2))
    return total


def apply(model: onnx.ModelProto, site: Site, s: np.ndarray) -> None:
    for lay in site.readers:
        store_layer(model, lay, _rows(lay, s), None)
    if site.producer_layer is not None:
        p = site.producer_layer
        shape = [1] * p.w.ndim
        shape[p.out_channel_axis()] = -1
        store_layer(model, p, (p.w / s.reshape(shape)).astype(np.float32),
                    None if p.b is None else (p.b / s).astype(np.float32))
        return
    k = s.size
    for i in site.consts:
        name = site.producer.input[i]
        v = np.broadcast_to(_const_vector(model, name, k).reshape(-1), (k,)).astype(np.float64)
        v = v * s if site.producer.op_type == "Div" else v / s
        set_initializer(model, name, v.astype(np.float32))


class SmoothQuant(WeightSidePass):
    name = "smoothquant"
    Options = SmoothQuantOptions

    def transform(self, model, ctx, fm, grid):
        o = self.opts
        sites = find_sites(model)
        if not sites:
            return self.nothing(model, ctx, "no MatMul / Gemm input whose producer can absorb a migration")
        probe = Probe(model, self.first_samples(ctx), [], [st.x for st in sites], o.threads)
        xs = probe.run([st.x for st in sites])
        report, done = {}, 0
        for st in sites:
            x = xs[st.x]
            x = x.reshape(-1, x.shape[-1])
            xmax = np.abs(x).max(axis=0).astype(np.float64)
            ratio = float(xmax.max() / max(np.median(xmax), 1e-30))
            if o.auto and ratio < o.outlier_ratio:
                report[st.x] = {"migrated": False, "why": f"no outlier channel (widest / median {ratio:.1f})"}
                continue
            best, best_err, base = None, np.inf, site_error(st, x, np.ones_like(xmax), grid, fm.activations)
            for alpha in o.alphas if o.auto else o.alphas[len(o.alphas) // 2:][:1]:
                s = migration_scales(xmax, st.readers, float(alpha))
                err = site_error(st, x, s, grid, fm.activations) if o.auto else 0.0
                if err < best_err:
                    best, best_err, best_alpha = s, err, float(alpha)
            keep = best is not None and (not o.auto or best_err < (1 - o.min_gain) * base)
            report[st.x] = {"migrated": bool(keep), "error_before": base, "error_after": best_err,
                            "alpha": best_alpha if keep else None}
            if keep:
                apply(model, st, best)
                done += 1
        ctx.report.results["smoothquant"] = report
        return PassResult(model, done > 0, [f"migrated {done} of {len(sites)} MatMul/Gemm inputs"])
