"""The weight-side post-training passes' shared base (``equalize``, ``smoothquant``, ``adaround``,
``bias_correction``): which formats the pipeline's quantizer will use, and the run protocol around a pass's
``transform`` (BLAS threads, numpy warnings, stepping aside when the model cannot be probed)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import OrtError, run_samples
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.analysis.value_roles import index_only_values
from qpass.ir.graph import elem_types, from_gs, to_gs
from .calibrate import _with_outputs, activation_tensors
from .quantize_qdq import QuantizeQDQOptions, quantize_graph
from .quantize_qdq.target import resolve_target
from .quantize_qdq.weights import AVX2_TARGETS
from .ptq_layers import AUTO_ACTIVATIONS, AUTO_WEIGHTS, Layer, Probe, WeightGrid, blas_threads, split_samples

NEAREST = ("ROUND", "HALF_UP", "HALF_DOWN", "HALF_EVEN")


@dataclass
class WeightSideOptions:
    """Options the weight-side passes share."""

    #: formats to simulate; auto: those of the quantizing pass the pipeline runs (``quantizer_formats``)
    weights: str = "auto"
    granularity: str = "auto"
    #: calibration samples used, and the fraction of them held out for the keep-or-not decisions
    samples: int = 256
    holdout: float = 0.25
    #: patch rows (output positions x samples) per layer for the statistics
    rows: int = 4096


@dataclass
class Formats:
    """The formats the quantizing pass of the pipeline will use: weight spec, weight granularity, activation spec."""

    weights: str
    granularity: str
    activations: str
    #: quantize_qdq will coarsen the grid of layers whose int16 pair sums could saturate (x86 CPUs without VNNI)
    avx2_pairs: bool = False


def quantizer_formats(ctx, weights: str = "auto", granularity: str = "auto",
                      activations: str = "auto") -> Formats | None:
    """The given formats, with each ``auto`` taken from the quantizing pass that the running pipeline runs
    (``fakequant``: its ``weights`` / ``weight_granularity`` / ``activations``; ``quantize_qdq``: int8 symmetric
    narrow-range weights per channel or per tensor, its activation type), quantize_qdq's when there is none. None
    where weights stay float, where fakequant has per-layer rules or rounds weights other than to nearest, or where a
    bitwidth search picks a width per layer: no one grid to simulate."""
    found = Formats(AUTO_WEIGHTS, "channel", AUTO_ACTIVATIONS)
    pipeline = getattr(ctx, "pipeline", None)
    for p in (pipeline.flat_passes() if pipeline is not None else ()):
        if p.name in getattr(ctx, "disabled", ()):
            continue
        if p.name == "bitwidth" and weights == "auto":
            return None
        if p.name == "fakequant":
            o = p.opts
            if weights == "auto" and (o.rules or str(o.rounding).upper() not in NEAREST):
                return None  # per-layer formats, or weights rounded on purpose some other way
            found = Formats(o.weights, o.weight_granularity, o.activations)
            break
        if p.name == "quantize_qdq":
            o = p.opts
            pairs = o.weight_encoding == "int8" and resolve_target(o.target_cpu) in AVX2_TARGETS
            found = Formats(AUTO_WEIGHTS, "channel" if o.per_channel else "tensor", o.activation_dtype, pairs)
            break
    out = Formats(found.weights if weights == "auto" else weights,
                  found.granularity if granularity == "auto" else granularity,
                  found.activations if activations == "auto" else activations,
                  found.avx2_pairs and weights == "auto")
    return None if out.weights in (None, "float", "auto") else out


class WeightSidePass(Pass):
    """What the weight-side passes share: calibration data in, numpy's BLAS on ``threads`` threads, the formats of
    the quantizer the pipeline runs (options ``weights``, ``granularity`` and, where there is one, ``activations``;
    ``auto`` each). A subclass implements ``transform``; every run leaves ``ctx.report.results[name]``."""

    inputs = ("calibration_data",)

    def run(self, model, ctx):
        o = self.opts
        fm = quantizer_formats(ctx, o.weights, o.granularity, getattr(o, "activations", "auto"))
        if fm is None:
            return self.nothing(model, ctx, "no single weight format downstream to simulate")
        backup = onnx.ModelProto()
        backup.CopyFrom(model)
        try:
            with blas_threads(o.threads), np.errstate(all="ignore"):  # degenerate weights: decided on, not printed
                return self.transform(model, ctx, fm, WeightGrid(fm.weights, fm.granularity))
        except OrtError as exc:  # e.g. over 2 GB, or an op that needs a weight constant: the pass steps aside
            return self.nothing(backup, ctx, f"skipped: {exc}")
        except (ValueError, ArithmeticError, IndexError, MemoryError) as exc:  # an optional improvement: never fatal
            return self.nothing(backup, ctx, f"skipped: {type(exc).__name__}: {str(exc)[:120]}")

    def transform(self, model, ctx, fm: Formats, grid: WeightGrid) -> PassResult:
        """Rewrite ``model`` for the formats ``fm`` (weights on ``grid``)."""
        raise NotImplementedError

    def nothing(self, model, ctx, why: str) -> PassResult:
        ctx.report.results[self.name] = {}
        return PassResult(model, False, [why])

    def first_samples(self, ctx):
        """The first ``samples`` calibration samples."""
        samples = ctx.inputs.calibration_data
        return samples.subset(slice(0, min(len(samples), self.opts.samples)))

    @staticmethod
    def rounded_sqnr(model: onnx.ModelProto, layers: list[Layer], grid: WeightGrid, probe: Probe,
                     n_fit: int, ref: np.ndarray | None = None) -> float | None:
        """Output SQNR (dB) on the probe's held-out samples of the probe's model with every layer's weight rounded
        to nearest on ``grid``, activations float (``held_out_check``'s first figure); None without held-out
        samples. ``ref``: the float outputs on them, joined, where the caller has them."""
        if n_fit >= len(probe.samples):
            return None
        outs = [o.name for o in model.graph.output]
        ref = _reference(probe, outs, n_fit) if ref is None else ref
        return _held_sqnr(probe, outs, n_fit, ref, _rounded(layers, grid, probe))

    @staticmethod
    def held_out_check(before: onnx.ModelProto, after: onnx.ModelProto, layers: list[Layer], grid: WeightGrid,
                       probe: Probe, n_fit: int, values: dict | None = None,
                       plain: float | None = None) -> tuple[float, float] | None:
        """(output SQNR of ``before``, of ``after``; dB) on the probe's held-out samples, each with its weights on
        ``grid`` (``after``'s from ``values`` where given) and activations float: the model-level check of a
        weight-side rewrite. None without held-out samples. ``plain``: ``rounded_sqnr``'s answer where the
        caller has it (the run of ``before`` is then not repeated)."""
        if n_fit >= len(probe.samples):
            return None
        held = probe.samples.subset(slice(n_fit, None))
        biases = [lay.node.input[2] for lay in layers if len(lay.node.input) > 2 and lay.node.input[2]]
        if any(b not in probe.base for b in biases):  # a bias the probe's model lacks: run copies of the models
            a, b = output_sqnrs(before, [with_weights(before, layers, grid),
                                         with_weights(after, layers, grid, values)], held)
            return a, b
        # the probe's session with the weights fed: no model copies, no session builds
        outs = [o.name for o in before.graph.output]
        rtn = _rounded(layers, grid, probe)
        new = {}
        for lay in layers:
            w = lay.node.input[1]
            v = (values or {}).get(w)
            # the probe's own weight (lay.w unchanged, as bias_correction leaves it): its grid copy is rtn's
            new[w] = v if v is not None else rtn[w] if lay.w is probe.base[w] else grid.fake(lay, lay.w)
            if lay.b is not None and len(lay.node.input) > 2 and lay.node.input[2]:
                new[lay.node.input[2]] = lay.b
        ref = _reference(probe, outs, n_fit)
        plain = _held_sqnr(probe, outs, n_fit, ref, rtn) if plain is None else plain
        return plain, _held_sqnr(probe, outs, n_fit, ref, new)

    def layer_probe(self, model, ctx, layers: list[Layer]) -> tuple[Probe, int]:
        """A probe over the first ``samples`` calibration samples (the last ``holdout`` of them held out when
        ``auto``) fetching every layer's input, and the number of samples to fit on."""
        o = self.opts
        samples = ctx.inputs.calibration_data
        fit, check = split_samples(samples, o.samples, o.holdout if o.auto else 0.0)
        both = fit if check is None else samples.subset(slice(0, len(fit) + len(check)))
        outs = [x.name for x in model.graph.output]  # fetched with the inputs: held_out_check's float reference
        return Probe(model, both, layers, [lay.x for lay in layers] + outs, o.threads), len(fit)


def _rounded(layers: list[Layer], grid: WeightGrid, probe: Probe) -> dict[str, np.ndarray]:
    """{weight name: the probe's weight rounded to nearest on ``grid``} of every layer."""
    return {lay.node.input[1]: grid.fake(lay, probe.base[lay.node.input[1]]) for lay in layers}


def _held_sqnr(probe: Probe, outs: list[str], n_fit: int, ref: np.ndarray, weights: dict) -> float:
    """Output SQNR (dB) against ``ref`` of the probe's model on its held-out samples with ``weights`` fed."""
    return sqnr_db(ref, joined(probe.run(outs, weights, probe.samples.subset(slice(n_fit, None)))))


def _reference(probe: Probe, outs: list[str], n_fit: int) -> np.ndarray:
    """The float outputs ``outs`` on the probe's held-out samples, joined: from the float run over every sample
    where it kept them, else from a run of the held-out samples."""
    kept = [probe.cached(o) for o in outs]
    if all(v is not None for v in kept):
        return joined({o: v[n_fit:] for o, v in zip(outs, kept)})
    return joined(probe.run(outs, samples=probe.samples.subset(slice(n_fit, None))))


def with_weights(model: onnx.ModelProto, layers: list[Layer], grid: WeightGrid,
                 values: dict[str, np.ndarray] | None = None) -> onnx.ModelProto:
    """A copy of ``model`` whose layers' weights are on ``grid`` (``values[weight name]`` where given, else the
    layer's weight in ``model`` rounded to nearest): weights quantized, activations float."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    inits = {i.name: i for i in m.graph.initializer}
    for lay in layers:
        name = lay.node.input[1]
        w = (values or {}).get(name)
        if w is None:
            w = grid.fake(lay, onnx.numpy_helper.to_array(inits[name]).astype(np.float32))
        inits[name].CopyFrom(onnx.numpy_helper.from_array(np.asarray(w, np.float32), name))
    return m


def output_sqnrs(reference: onnx.ModelProto, models: list[onnx.ModelProto], samples) -> list[float]:
    """Output SQNR (dB, all float outputs joined) of each of ``models`` against ``reference`` on ``samples``:
    the model-level check a weight-side pass's result must pass on held-out calibration samples."""
    ref = joined(run_samples(reference, samples))
    return [sqnr_db(ref, joined(run_samples(m, samples))) for m in models]


def int8_sqnrs(reference: onnx.ModelProto, models: list[onnx.ModelProto], fit, held,
               activations: str) -> list[float]:
    """Output SQNR (dB) on ``held`` of each of ``models`` quantized as the default quantize_qdq does (min/max ranges
    over ``fit``, ``activations`` type), against ``reference`` in float: the check of a weight-side rewrite on the
    int8 model itself (a rounding that brings the weights-only output closer can still take the int8 model further:
    oww-embedding 28.4 -> 24.8 dB)."""
    ref = joined(run_samples(reference, held))
    out = []
    for m in models:
        types = elem_types(m)
        skip = index_only_values(m)
        names = [t for t in activation_tensors(m, types) if t not in skip]
        vals = run_samples(_with_outputs(m, names, [], types), fit, outputs=names)
        ranges = {t: (float(v.min()), float(v.max())) for t, v in vals.items() if v.size}
        g = to_gs(m)
        quantize_graph(g, ranges, QuantizeQDQOptions(activation_dtype=activations))
        out.append(sqnr_db(ref, joined(run_samples(from_gs(g, m), held))))
    return out


def joined(outputs: dict[str, np.ndarray]) -> np.ndarray:
    """The float outputs of a run, joined into one float64 vector (a zero when there is none)."""
    return np.concatenate([v.astype(np.float64).ravel() for v in outputs.values() if v.dtype.kind == "f"] or
                          [np.zeros(1)])
