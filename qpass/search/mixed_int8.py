"""The ``mixed_precision`` pass: the default int8 pipeline under an accuracy target (``qpass optimize MODEL --target
"sqnr>=35"``, or ``relative_accuracy>=0.99`` with labels).

After ``quantize_qdq``, if the int8 model misses the target on the search half of the samples, activation
quantizers (QuantizeLinear -> DequantizeLinear pairs) are moved to float, fewest and cheapest first: each pair's
sensitivity is the output metric gained when it alone is removed (measured on the search samples), its cost the
float work it brings back (the elements of the tensor times the layers that then run in float: its producer and
readers, a proxy of measured latency); pairs are taken by gain per cost until the target holds on the search
samples, then the result is checked on the held-out half (the bitwidth search's split, ``qpass.search.core``). The
report says which tensors moved, what each gained and cost, and the int8 and final metrics; when even every pair
in float misses the target, one line says what was reached and which layers could not be fixed. Float, not
16-bit QDQ: onnxruntime runs 16-bit Q/DQ around float kernels on CPUs, so float is as fast and exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qpass.analysis.layer_errors import activation_pairs
from qpass.errors import QpassError
from qpass.ir.graph import consumers, producers, shapes, topo_sort_nodes
from qpass.ir.ort_session import make_session, run_samples
from qpass.pipeline.pass_base import Pass, PassResult
from .core import MIN_HELD_OUT, _split
from .targets import describe_metrics, output_metrics, parse_target


@dataclass
class MixedPrecisionOptions:
    #: accuracy target, e.g. "sqnr>=35" or "relative_accuracy>=0.99"; None: the pass does nothing
    target: str | None = None
    holdout: float = 0.5
    seed: int = 0
    #: the most pairs whose sensitivity is measured one by one (the rest are ranked by their own error)
    max_probes: int = 64


def bypass(model: onnx.ModelProto, tensors: set[str], float_model: onnx.ModelProto | None = None) -> onnx.ModelProto:
    """A copy of a QDQ model with the activation Q -> DQ pairs of ``tensors`` (DQ output names) removed: their
    readers read the float value. An activation quantize_qdq fused into its producer (Relu, Clip: the quantizer
    did its clipping) comes back as a copy of ``float_model``'s node."""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    prod, readers = producers(m.graph), consumers(m.graph)
    float_prod = producers(float_model.graph) if float_model is not None else {}
    float_inits = {i.name: i for i in float_model.graph.initializer} if float_model is not None else {}
    have_inits = {i.name for i in m.graph.initializer}
    drop, rename, added = [], {}, []
    for n in m.graph.node:
        if n.op_type != "DequantizeLinear" or n.output[0] not in tensors:
            continue
        q = prod.get(n.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        act = float_prod.get(n.output[0])
        before = prod.get(src)
        if act is not None and act.op_type in FUSED and (before is None or before.op_type != act.op_type):
            node = onnx.NodeProto()
            node.CopyFrom(act)
            node.input[0], node.output[0] = src, src + "_activation"
            node.name = act.name + "_float"
            added.append(node)
            for x in node.input[1:]:
                if x in float_inits and x not in have_inits:
                    m.graph.initializer.append(float_inits[x])
                    have_inits.add(x)
            src = node.output[0]
        rename[n.output[0]] = src
        drop.append(n)
        if len(readers.get(q.output[0], [])) == 1:
            drop.append(q)
    for n in m.graph.node:
        for i, x in enumerate(n.input):
            if x in rename:
                n.input[i] = rename[x]
    for n in drop:
        m.graph.node.remove(n)
    m.graph.node.extend(added)
    outs = {o.name for o in m.graph.output}
    for name, float_name in rename.items():  # a graph output keeps its name: the float producer writes it
        if name in outs:
            for n in m.graph.node:
                n.output[:] = [name if o == float_name else o for o in n.output]
                n.input[:] = [name if x == float_name else x for x in n.input]
    topo_sort_nodes(m.graph)
    return m


def _costs(model: onnx.ModelProto, pairs: list[dict]) -> dict[str, float]:
    """Float work a pair brings back: tensor elements x (1 + readers), a proxy for the latency it costs."""
    readers = consumers(model.graph)
    dims = shapes(model)
    out = {}
    for p in pairs:
        size = float(np.prod([d for d in dims.get(p["tensor"]) or [] if isinstance(d, int) and d > 0]))
        out[p["tensor"]] = size * (1 + len(readers.get(p["tensor"], [])))
    return out


#: activations quantize_qdq folds into their producer's output quantizer (``plan``: Relu, Clip(0, m))
FUSED = ("Relu", "Clip")


class MixedPrecision(Pass):
    name = "mixed_precision"
    inputs = ("calibration_data",)
    Options = MixedPrecisionOptions

    def run(self, model, ctx):
        if not self.opts.target:
            return PassResult(model, False, [])
        target = parse_target(self.opts.target)
        float_m = self.float_m = ctx.report.snapshots.get("quantize_qdq")
        if float_m is None:
            raise QpassError("mixed_precision needs quantize_qdq before it in the pipeline")
        data = ctx.inputs.eval_data if ctx.inputs.eval_data is not None else ctx.inputs.calibration_data
        if target.needs_labels() and data.labels is None:
            raise QpassError(f"--target {target} needs labels: give evaluation data with a 'labels' array (--eval)")
        if len(data) < 2 * MIN_HELD_OUT:
            raise QpassError(f"--target needs at least {2 * MIN_HELD_OUT} samples ({MIN_HELD_OUT} to search on and "
                             f"{MIN_HELD_OUT} held out); got {len(data)}")
        search, held = _split(data, self.opts.holdout, self.opts.seed)
        s_ref, h_ref = run_samples(float_m, search), run_samples(float_m, held)
        key = next(k for k, v in s_ref.items() if v.dtype.kind == "f")

        def metrics(m, which="search"):
            samples, ref = (search, s_ref) if which == "search" else (held, h_ref)
            return output_metrics(ref[key], run_samples(m, samples)[key], samples.labels)

        base = metrics(model)
        result = {"target": str(target), "int8": base, "moved": []}
        ctx.report.results["mixed_precision"] = result
        if target.met(base):
            held_m = metrics(model, "held")
            result.update(final=held_m, met=target.met(held_m))
            return PassResult(model, False, [f"target {target} met by int8 alone on the search samples; held out: "
                                             f"{describe_metrics(held_m)}"])
        chosen, final = self._greedy(model, target, base, metrics, result)
        out = bypass(model, set(chosen), self.float_m)
        held_m = metrics(out, "held")
        met = target.met(held_m)
        result.update(final=held_m, met=met, latency_ms={"int8": _latency_ms(model, held), "final":
                                                         _latency_ms(out, held)})
        lat = result["latency_ms"]
        note = (f"target {target} {'met' if met else 'MISSED'} on {len(held)} held-out samples with {len(chosen)} "
                f"activation quantizers moved to float ({', '.join(chosen[:6])}{' ...' if len(chosen) > 6 else ''}):"
                f" {describe_metrics(held_m)} (int8: {describe_metrics(base)} on the search samples); latency "
                f"{lat['final']:.3g} ms against int8's {lat['int8']:.3g} ms")
        if not met:
            note = (f"target {target} not reached: {describe_metrics(held_m)} on {len(held)} held-out samples; "
                    f"could not fix: {', '.join(result.get('unfixed', [])[:6]) or 'the weights (every activation in float)'}")
        ctx.report.log.append(note)
        return PassResult(out, bool(chosen), [note])

    def _greedy(self, model, target, base: dict, metrics, result: dict) -> tuple[list[str], dict]:
        pairs = activation_pairs(model)
        costs = _costs(model, pairs)
        gains = {}
        for p in pairs[:self.opts.max_probes]:
            m = metrics(bypass(model, {p["tensor"]}, self.float_m))
            gains[p["tensor"]] = _score(m, base, target)
        order = sorted(gains, key=lambda t: -gains[t] / max(costs.get(t, 1.0), 1.0))
        chosen, m = [], base
        for t in order:
            if gains[t] <= 0:
                continue
            chosen.append(t)
            m = metrics(bypass(model, set(chosen), self.float_m))
            result["moved"].append({"tensor": t, "gain": round(gains[t], 4), "cost": costs.get(t),
                                    "reason": f"alone in float: +{gains[t]:.3g} toward the target"})
            if target.met(m):
                break
        if not target.met(m):
            weights = sorted({n.name for n in model.graph.node for x in n.input if x.endswith("_dequantized")
                              and x not in {p["tensor"] for p in pairs}})
            result["unfixed"] = [f"the int8 weights of {len(weights)} layers ({', '.join(weights[:4])}"
                                 f"{' ...' if len(weights) > 4 else ''})"] + [t for t in order if gains[t] <= 0][:5]
        return chosen, m


def _latency_ms(model: onnx.ModelProto, samples, runs: int = 30) -> float:
    """Median milliseconds of one call on the first sample (onnxruntime, 1 thread, all optimizations)."""
    import time

    sess = make_session(model, 1, optimize=True)
    feed = samples.feed(0)
    times = []
    for _ in range(runs + 3):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times[3:])) * 1e3, 4)


def _score(m: dict, base: dict, target) -> float:
    """How much ``m`` improves on ``base`` in the target's first metric (dB for SQNR, points for rates)."""
    k = target.constraints[0].metric
    a, b = m.get(k), base.get(k)
    if a is None or b is None or not np.isfinite(a) or not np.isfinite(b):
        return float("inf") if a is not None and not np.isfinite(a) and a > 0 else 0.0
    return float(a - b)
