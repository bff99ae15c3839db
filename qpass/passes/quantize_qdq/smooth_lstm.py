"""Equal input-channel ranges for the LSTMs that ``quantize_qdq`` puts on DynamicQuantizeLSTM (its option
``smooth_lstm``, on by default; applied to the float model before the rewrite).

onnxruntime's DynamicQuantizeLSTM quantizes its float input X per call to uint8 with one scale for the whole
tensor (``recurrent``): the widest input channel sets the step for all of them. With s_c = max|x_c| over the
calibration samples (``alpha`` 1; s_c = max|x_c|^alpha / max|W[:, c]|^(1 - alpha) in general, normalised to a
geometric mean of 1), X W^T = (X / s) (W s)^T: a Mul by 1/s before the LSTM (float, one multiply per input value)
and W's input columns times s (exact in float: the float model's output is unchanged to rounding). Each channel
then spans the same range, so the narrow ones keep more of the 8-bit grid; the per-row int8 weight scales absorb
the column scaling. The rewrite is kept only where it lowers the simulated error of the input projection (X and
W on their 8-bit grids, the first ``CHECK_SAMPLES`` calibration samples, one call each) by ``MIN_GAIN`` against no
scaling. Only LSTMs of the main graph with a constant W read by nothing else.

oww-hey-mycroft (features spanning 23-69 per channel): 28.1 -> 34.0 dB output SQNR with both LSTMs on integer
kernels (int8 weights with a float recurrence: 32.5 dB). The loss was the per-call 8-bit rounding of the first
LSTM's X (alone 29.0 dB; the hidden state's rounding alone 48.5 dB). A GPTQ-style rounding of W and R on the
Hessian of [x_t; h_(t-1)] halves the gate pre-activation error yet lowers the output SQNR (36.2 -> 30.2 dB after
this scaling): the gate error is not what the output is sensitive to, so it is not used.

With ``copies_budget`` > 0 (off by default: on oww-hey-mycroft it costs issue 12's latency bound, see
``lstm_dither``) each candidate LSTM gets ``lstm_dither``'s K shifted input copies on one static grid and W split into
K parts instead: 37.3 dB there at budget 1.5 (K = 4 and 2), at 1.13x quantize_static's latency (this scaling: 34.0
dB at 0.78x).

Not worth trying again (session 13, bench/results/lstm13b_2026-11-28_ceiling.txt): taking the input projection out
of the kernel (G = X W^T + Wb as one product, the kernel fed G scaled per gate column with W' = diag exact on its
int8 rows) stays below quantize_static + 3 dB on oww-hey-mycroft even with G in float (44.4 dB eval, 41-44 pooled
over rounding draws: the kernel's per-call u8 rounding of the gate inputs and its own hidden-state rounding are
the floor) and costs 1.11x quantize_static's latency (1.34x with G on MatMulInteger): issue 12's integer LSTMs
and issue 13's +3 dB cannot both hold there on DynamicQuantizeLSTM.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

from qpass.formats.qdq_params import quantize, symmetric_weight_params
from qpass.ir.graph import consumers
from qpass.ir.ort_session import run_samples
from qpass.reference.numerics import dequantize_linear, quantize_linear
from qpass.reference.ops_float.dynamic_quant import dynamic_quant_params
from . import lstm_dither


#: s_c = max|x_c|^ALPHA / max|W[:, c]|^(1 - ALPHA)
ALPHA = 1.0
#: calibration samples whose X ranges set s (the first ones), and those the kept-or-not error is measured on
SAMPLES, CHECK_SAMPLES = 256, 32
#: kept only where the simulated input-projection error falls by at least this fraction (oww-hey-mycroft's second
#: LSTM: 5% lower there, 2.3 dB lower output SQNR; its first: 26% lower, +5.8 dB)
MIN_GAIN = 0.1


def _candidates(model: onnx.ModelProto) -> list[tuple[onnx.NodeProto, np.ndarray]]:
    """(LSTM, W) of each main-graph LSTM with a constant float W, sequence-first layout, a float X that is not an
    initializer, W read by that LSTM only."""
    inits = {i.name: i for i in model.graph.initializer}
    readers = consumers(model.graph)
    out = []
    for n in model.graph.node:
        layout = next((a.i for a in n.attribute if a.name == "layout"), 0)
        if n.op_type != "LSTM" or n.domain not in ("", "ai.onnx") or layout != 0 or len(n.input) < 3:
            continue
        w = inits.get(n.input[1])
        if w is None or n.input[0] in inits or len(readers.get(n.input[1], [])) != 1:
            continue
        w = numpy_helper.to_array(w)
        if w.dtype == np.float32 and w.ndim == 3:
            out.append((n, w))
    return out


def _dynamic_u8(x: np.ndarray) -> np.ndarray:
    """x through onnxruntime's dynamic uint8 quantization (one scale for the tensor), dequantized."""
    x = np.asarray(x, np.float32)
    scale, zp = dynamic_quant_params(x)
    return dequantize_linear(quantize_linear(x, scale, zp, np.uint8, None), scale, zp, None).astype(np.float64)


def _int8_rows(w: np.ndarray) -> np.ndarray:
    p = symmetric_weight_params(w, 0, 127)
    return quantize(w, p, -127, 127).astype(np.float64) * np.asarray(p.scale, np.float64).reshape(-1, 1)


def projection_error(xs: list[np.ndarray], w: np.ndarray, s: np.ndarray) -> float:
    """Summed squared error of X W^T (every direction) with X / s quantized per call and W s per row on int8."""
    err = 0.0
    for wd in w.astype(np.float64):
        wq = _int8_rows(wd * s)
        for x in xs:
            err += float(np.sum((_dynamic_u8(x / s) @ wq.T - x @ wd.T) ** 2))
    return err


def scales(xmax: np.ndarray, w: np.ndarray, alpha: float) -> np.ndarray:
    wmax = np.abs(w).max(axis=(0, 1)).astype(np.float64)
    ok = (xmax > 0) & (wmax > 0)
    s = np.where(ok, np.maximum(xmax, 1e-30) ** alpha / np.maximum(wmax, 1e-30) ** (1 - alpha), 1.0)
    return s / np.exp(np.mean(np.log(s[ok]))) if ok.any() else s


def _apply(model: onnx.ModelProto, node: onnx.NodeProto, w: np.ndarray, s: np.ndarray) -> None:
    name = f"{node.name or node.output[0]}_smooth"
    inv = numpy_helper.from_array((1 / s).astype(np.float32), name + "_scale")
    model.graph.initializer.append(inv)
    mul = onnx.helper.make_node("Mul", [node.input[0], inv.name], [name + "_x"], name=name)
    at = list(model.graph.node).index(node)
    model.graph.node.insert(at, mul)
    node.input[0] = mul.output[0]
    for i in model.graph.initializer:
        if i.name == node.input[1]:
            i.CopyFrom(numpy_helper.from_array((w * s.astype(np.float32)).astype(np.float32), i.name))


def _float_inputs(model: onnx.ModelProto, samples, names: list[str]) -> dict[str, np.ndarray]:
    """The float tensors ``names`` over ``samples`` (a copy of the model with them as outputs)."""
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    have = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in names if t not in have)
    return run_samples(probe, samples, outputs=names)


def _dither(model: onnx.ModelProto, cands, xs: dict, budget: float) -> tuple[onnx.ModelProto, dict]:
    """A copy of ``model`` with every candidate LSTM whose B is read by it alone rewritten by ``lstm_dither``, and
    per LSTM its K."""
    readers = consumers(model.graph)
    cands = [(n, w) for n, w in cands if len(n.input) < 4 or not n.input[3] or len(readers.get(n.input[3], [])) == 1]
    shapes = [(w.shape[0], w.shape[2], w.shape[1] // 4) for _, w in cands]
    out = onnx.ModelProto()
    out.CopyFrom(model)
    report = {}
    for (node, w), k in zip(cands, lstm_dither.copies(shapes, budget)):
        rows = np.concatenate([np.asarray(x, np.float64).reshape(-1, w.shape[-1]) for x in xs[node.input[0]]])
        target = next(n for n in out.graph.node if n.name == node.name and n.output == node.output)
        lstm_dither.rewrite(out, target, rows, k)
        report[node.name] = {"smoothed": True, "copies": k}
    return out, report


def smooth(model: onnx.ModelProto, samples, copies_budget: float = 0.0) -> tuple[onnx.ModelProto, dict]:
    """``model`` with the LSTM inputs worth it scaled (a copy when anything is rewritten: the pass's input model
    stays as it was), and per LSTM what was measured; ``copies_budget`` > 0: ``lstm_dither`` instead."""
    cands = _candidates(model)
    if not cands or samples is None or not len(samples):
        return model, {}
    samples = samples.subset(slice(0, min(len(samples), SAMPLES)))
    xs = _float_inputs(model, samples, list(dict.fromkeys(n.input[0] for n, _ in cands)))
    if copies_budget > 0:
        return _dither(model, cands, xs, copies_budget)
    report, out = {}, None
    for node, w in cands:
        calls = [np.asarray(x, np.float64).reshape(-1, w.shape[-1]) for x in xs[node.input[0]]]
        s = scales(np.max([np.abs(c).max(axis=0) for c in calls], axis=0), w, ALPHA)
        few = calls[:CHECK_SAMPLES]
        before, after = projection_error(few, w, np.ones_like(s)), projection_error(few, w, s)
        keep = after < (1 - MIN_GAIN) * before
        report[node.name] = {"smoothed": bool(keep), "error_before": before, "error_after": after}
        if keep:
            if out is None:
                out = onnx.ModelProto()
                out.CopyFrom(model)
            _apply(out, next(n for n in out.graph.node if n.name == node.name and n.output == node.output), w, s)
    return out or model, report
