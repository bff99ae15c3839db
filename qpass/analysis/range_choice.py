"""Per-tensor clipping ranges chosen by the error they cause in the output of the layers that read the tensor.

A range that is best for a tensor alone (least squared rounding + clipping error) is not always best for what
the model computes from it: a Conv or MatMul sums many inputs, so a clipped outlier costs its weight times its
excess in every output it feeds, while rounding errors partly average out. So each candidate range (min/max,
percentiles, entropy, MSE: all read off the bounded-memory histograms the calibrate pass streamed over the whole
calibration set, plus a few shrunken min/max ranges) is scored by running each *consumer* node alone in
onnxruntime on a few calibration samples, once with the tensor's float values and once with them quantized on that
candidate's grid (the exact affine uint8/int8 grid ``quantize_qdq`` will use), and the candidate with the least
relative output error wins. Min/max keeps its place unless another candidate is better by ``min_gain``.

Memory stays bounded: the float values are captured for at most ``max_samples`` samples and at most ``max_bytes``
bytes in all (fewer samples on big models), and histograms are fixed-size whatever the calibration set.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import helper

from qpass.analysis.calibrators import HistogramObserver, MSEObserver, hist_quantile, kl_threshold
from qpass.formats.qdq_params import activation_params, dequantize, quantize
from qpass.ir.graph import consumers, subgraphs
from qpass.ir.ort_session import make_session

#: the percentiles tried (two-sided for signed data, of the upper tail for one-signed data)
PERCENTILES = (99.9, 99.99, 99.999)
#: fractions of the min/max range tried (the outlier-clipping grid search of many PTQ tools)
SHRINK = (0.9, 0.8, 0.7, 0.6, 0.5)


def histogram_candidates(lo: float, hi: float, hist: HistogramObserver | None, bits: int = 8,
                         methods: tuple[str, ...] = ("percentile", "entropy", "mse", "shrink")) -> dict[str, tuple]:
    """Candidate (lo, hi) ranges by name, min/max first; every range lies inside [lo, hi] and contains 0."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    out: dict[str, tuple] = {"minmax": (lo, hi)}
    if "shrink" in methods:
        for f in SHRINK:
            out[f"minmax*{f:g}"] = (lo * f, hi * f)
    if hist is None or not hist.seen or hist.radius == 0.0:
        return out
    one_signed = lo >= 0.0 or hi <= 0.0
    if "percentile" in methods:
        for p in PERCENTILES:
            q = p / 100.0
            if one_signed:
                t = hist_quantile(hist.folded(), hist.width, 0.0, q, 0, hist.zeros)
                out[f"percentile {p:g}"] = (0.0, t) if hi > 0 else (-t, 0.0)
            else:
                z = hist.bins // 2
                out[f"percentile {p:g}"] = (hist_quantile(hist.hist, hist.width, -hist.radius, 1 - q, z, hist.zeros),
                                            hist_quantile(hist.hist, hist.width, -hist.radius, q, z, hist.zeros))
    if "entropy" in methods:
        t = kl_threshold(hist.folded()) * hist.width
        out["entropy"] = (max(lo, -t), min(hi, t))
    if "mse" in methods:
        m = MSEObserver(bits=bits, bins=hist.bins)
        m.hist, m.radius, m.zeros, m.lo, m.hi, m.count = hist.hist, hist.radius, hist.zeros, hist.lo, hist.hi, hist.count
        t = float(m.range()[1] if hi > 0 else -m.range()[0])
        out["mse"] = (max(lo, -t), min(hi, t))
    return {k: (min(max(float(a), lo), 0.0), max(min(float(b), hi), 0.0)) for k, (a, b) in out.items()
            if np.isfinite(a) and np.isfinite(b) and b > a}


def fake_quant(x: np.ndarray, lo: float, hi: float, dtype: str) -> np.ndarray:
    """``x`` on the affine grid ``quantize_qdq`` gives range (lo, hi) (QuantizeLinear then DequantizeLinear)."""
    p = activation_params(lo, hi, dtype)
    if np.ndim(p.scale) == 0 and np.ndim(p.zero_point) == 0:  # per tensor (always, for activations): in float32
        s, z = np.float32(p.scale), np.float32(p.zero_point)
        q = np.divide(np.asarray(x, np.float32), s)  # then in place: the same float32 steps, fewer temporaries
        np.rint(q, out=q)  # half to even, as QuantizeLinear does
        # clip(q + z, qmin, qmax) - z as one clip of q to [qmin - z, qmax - z]: every step exact on these whole
        # numbers (a |q| near 2^24, where q + z would round, is clipped either way); only a zero's sign may differ
        np.clip(q, np.float32(p.qmin) - z, np.float32(p.qmax) - z, out=q)
        q *= s
        return q.astype(x.dtype, copy=False)
    return dequantize(quantize(x, p), p).astype(x.dtype, copy=False)


@dataclass
class Choice:
    tensor: str
    method: str
    range: tuple
    error: float  # relative consumer-output error (noise energy / signal energy), summed over consumers
    minmax_error: float
    consumers: list = field(default_factory=list)

    @property
    def gain_db(self) -> float:
        if self.error <= 0 or self.minmax_error <= 0:
            return 0.0
        return float(10 * np.log10(self.minmax_error / self.error))


class ConsumerRunner:
    """Runs single nodes of ``model`` in onnxruntime on captured values (one session per node, cached)."""

    def __init__(self, model: onnx.ModelProto, types: dict[str, int], threads: int = 1):
        self.model = model
        self.types = types
        self.threads = threads
        self.inits = {i.name: i for i in model.graph.initializer}
        self.readers = consumers(model.graph)
        self.sessions: dict[str, object] = {}

    @staticmethod
    def runnable(node: onnx.NodeProto) -> bool:
        return not subgraphs(node) and node.domain in ("", "ai.onnx")

    def session(self, node: onnx.NodeProto, values: dict):
        if node.name not in self.sessions:
            g_inputs, inits = [], []
            for x in dict.fromkeys(i for i in node.input if i):
                if x in self.inits:
                    inits.append(self.inits[x])
                else:
                    a = values[x]
                    g_inputs.append(helper.make_tensor_value_info(
                        x, helper.np_dtype_to_tensor_dtype(a.dtype), None))
            outs = [helper.make_tensor_value_info(o, self.types.get(o, onnx.TensorProto.FLOAT), None)
                    for o in node.output if o]
            g = helper.make_graph([node], "consumer", g_inputs, outs[:1], initializer=inits)
            m = helper.make_model(g, opset_imports=list(self.model.opset_import), ir_version=self.model.ir_version)
            try:
                self.sessions[node.name] = make_session(m, self.threads, optimize=False)
            except Exception:  # an op onnxruntime cannot run alone: score on the tensor itself
                self.sessions[node.name] = None
        return self.sessions[node.name]

    def output(self, node: onnx.NodeProto, values: dict, override: tuple[str, np.ndarray]) -> np.ndarray | None:
        sess = self.session(node, values)
        if sess is None:
            return None
        feed = {i.name: (override[1] if i.name == override[0] else values[i.name]) for i in sess.get_inputs()}
        try:
            return sess.run(None, feed)[0]
        except Exception:
            return None


def _energies(ref: np.ndarray, test: np.ndarray, signals: dict | None = None) -> tuple[float, float]:
    """(squared error, squared reference) summed: the error is noise / signal over all samples together.
    ``signals``: the float32 squared reference by ``id(ref)``, filled on first use (a reference is scored against
    every candidate; the caller keeps ``ref`` alive while it uses the dict)."""
    r = np.asarray(ref, np.float32).ravel()
    d = r - np.asarray(test, np.float32).ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        noise = float(np.dot(d, d))  # float32 BLAS: fast
        signal = None if signals is None else signals.get(id(ref))
        if signal is None:
            signal = float(np.dot(r, r))
            if signals is not None:
                signals[id(ref)] = signal
    if np.isfinite(noise) and np.isfinite(signal):
        return noise, signal
    r64 = r.astype(np.float64)  # beyond float32's range (masks of -1e4 and so on)
    d64 = r64 - np.asarray(test, np.float64).ravel()
    return float(np.dot(d64, d64)), float(np.dot(r64, r64))


#: samples on which a batch of all of them is checked to give each sample's outputs (``_stacked``)
STACK_CHECK_SAMPLES = 2


def _batch(runner: ConsumerRunner, nodes: list, tensor: str, samples: list[dict]) -> dict | None:
    """One dict of every consumer input, the samples concatenated on axis 0 (an input the same in every sample
    once); None where they do not stack."""
    names = {tensor} | {x for n in nodes for x in n.input if x and x not in runner.inits}
    batch = {}
    for x in names:
        arrs = [np.asarray(v[x]) for v in samples]
        if arrs[0].ndim >= 1 and arrs[0].shape[0] == 1 and all(a.shape == arrs[0].shape for a in arrs):
            batch[x] = np.concatenate(arrs, axis=0)
        elif all(a.shape == arrs[0].shape and np.array_equal(a, arrs[0]) for a in arrs):
            batch[x] = arrs[0]  # the same in every sample (a shape, a constant computed at run time)
        else:
            return None
    return batch


#: ops whose output for a sample depends on that sample's first input alone, whatever their attributes (the other
#: inputs constants): the samples stack on axis 0 without ``_stacked``'s per-sample check (Gemm: with transA 0)
PER_SAMPLE_OPS = frozenset({"Conv", "MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "Relu", "PRelu",
                            "LeakyRelu", "Sigmoid", "Tanh", "Clip", "HardSigmoid", "HardSwish", "Elu", "Softplus",
                            "Gemm", "MatMul"})


def _known_stacked(runner: ConsumerRunner, nodes: list, tensor: str, samples: list[dict]):
    """``_stacked``'s answer without its check, where every consumer is a ``PER_SAMPLE_OPS`` op reading ``tensor``
    first and constants otherwise, and gives finite outputs on the batch; else None (then the check decides).
    The per-sample runs and the batch of two the check needs were ~40% of the consumer runs of mtcnn-pnet."""
    def known(n):
        gemm_ok = n.op_type != "Gemm" or not any(a.name == "transA" and a.i for a in n.attribute)
        return (n.op_type in PER_SAMPLE_OPS and gemm_ok and n.input[0] == tensor
                and all(not x or x in runner.inits for x in n.input[1:]))

    if len(samples) < STACK_CHECK_SAMPLES or not nodes or not all(known(n) for n in nodes):
        return None
    batch = _batch(runner, nodes, tensor, samples)
    if batch is None:
        return None
    out = [runner.output(n, batch, (tensor, batch[tensor])) for n in nodes]
    if any(y is None or not np.isfinite(y).all() for y in out):
        return None
    return [batch], [out]


def _stacked(runner: ConsumerRunner, nodes: list, tensor: str, samples: list[dict], refs: list):
    """([the samples as one batch (``_batch``)], [the consumers' outputs on it]) when the consumers give on a batch
    of the first ``len(refs)`` samples the per-sample outputs ``refs`` stacked (a consumer that mixes samples does
    not); else None."""
    if len(refs) < 2 or not nodes or any(r is None for rs in refs for r in rs):
        return None
    batch = _batch(runner, nodes, tensor, samples[:len(refs)])
    if batch is None:
        return None
    out = []
    for n, *per in zip(nodes, *refs):
        y = runner.output(n, batch, (tensor, batch[tensor]))
        want = np.concatenate(per, axis=0) if all(p.ndim >= 1 for p in per) else None
        if y is None or want is None or y.shape != want.shape or not np.allclose(y, want, rtol=1e-4, atol=1e-5):
            return None
        out.append(y)
    if len(refs) < len(samples):  # checked on the first samples: the batch of all of them
        batch = _batch(runner, nodes, tensor, samples)
        out = [runner.output(n, batch, (tensor, batch[tensor])) for n in nodes] if batch is not None else [None]
        if any(y is None for y in out):
            return None
    return [batch], [out]


def choose_range(runner: ConsumerRunner, tensor: str, cands: dict[str, tuple], samples: list[dict], dtype: str,
                 min_gain: float = 0.02) -> Choice:
    """The candidate with the least consumer-output error over ``samples`` (per-sample value dicts holding every
    input of every consumer of ``tensor``); min/max unless another is better by the fraction ``min_gain``."""
    nodes = [n for n in runner.readers.get(tensor, []) if runner.runnable(n)]

    def per_sample(vals):
        return [runner.output(n, vals, (tensor, vals[tensor])) for n in nodes]

    stacked, refs = _known_stacked(runner, nodes, tensor, samples), []
    if stacked is None:
        refs = [per_sample(vals) for vals in samples[:STACK_CHECK_SAMPLES]]
        stacked = _stacked(runner, nodes, tensor, samples, refs)
    if stacked is not None:  # the samples as one batch: one consumer run per candidate (checked against the above)
        samples, refs = stacked
    else:
        refs += [per_sample(vals) for vals in samples[len(refs):]]
    errors, signals = {}, {}
    for name, (lo, hi) in cands.items():
        noise = signal = 0.0
        for vals, ref in zip(samples, refs):
            x = vals[tensor]
            xq = fake_quant(x, lo, hi, dtype)
            scored = False
            for n, r in zip(nodes, ref):
                y = None if r is None else runner.output(n, vals, (tensor, xq))
                if y is not None and y.shape == r.shape:
                    dn, ds = _energies(r, y, signals)
                    noise, signal, scored = noise + dn, signal + ds, True
            if not scored:  # no runnable consumer (a graph output, a control-flow body): the tensor itself
                dn, ds = _energies(x, xq, signals)
                noise, signal = noise + dn, signal + ds
        errors[name] = noise / signal if signal > 0 else noise
    base = errors.get("minmax", np.inf)
    best = min(errors, key=lambda k: (errors[k], k != "minmax"))
    if not errors[best] < base * (1.0 - min_gain):
        best = "minmax"
    return Choice(tensor, best, cands[best], errors[best], base, [n.name for n in nodes])
