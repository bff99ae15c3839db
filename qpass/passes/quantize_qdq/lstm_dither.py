"""K shifted copies of an LSTM's input on one static grid: K times finer input rounding and weights for
onnxruntime's DynamicQuantizeLSTM (``smooth_lstm``; applied to the float model before ``recurrent``'s rewrite).

The kernel rounds its float input X per call to uint8 (one scale: the tensor's min/max with 0) and W to int8 with
one scale per gate row. On oww-hey-mycroft each alone costs ~15 dB (X rounding alone 29.5 dB output SQNR, W's
alone 31.7 dB: the first LSTM's 96 input channels carry means up to 44 and the output is a sigmoid of the last
states, 16 steps later). The rewrite, exact up to W's split below:

- centre and shift: z = X - c (c per channel: calibrated mean + max, so z <= 0 on calibration data) and one appended
  anchor channel of constant value ``lo`` (a Pad): the kernel's range is then [lo, 0] on every call, a static grid
  of step d = -lo / 255 with zero point 255 (lo from the calibrated range plus a margin);
- K copies z_k = X - c - k d / K (a Concat and one Sub): the K roundings average to a grid K times finer (the sum of
  round(y + k / K) over k is round-to-K-levels, Hermite's identity);
- W split into K parts W_1 + ... + W_K on one per-row grid s / K (each part ~ W / K, codes up to 127 with one at 127,
  so ``recurrent``'s max-abs scale picks exactly that grid): the sum approximates W K times finer;
- the bias absorbs sum_k W_k c_k (B stays float in the kernel), the anchor column of W is 0.

Cost: K times the input projection. K per LSTM from shapes only (deterministic): in graph order, each LSTM gets the
most copies (<= ``MAX_COPIES``) whose extra input-projection MACs fit in what is left of ``BUDGET`` times all
LSTMs' MACs (input + recurrence), so the first LSTM, nearest the wide-ranged features, gets the most.
oww-hey-mycroft (K = 4 and 2; bench/results/lstm13_mycroft_sources.txt): output SQNR 33.97 -> 37.33 dB
(quantize_static, LSTMs float: 42.16), latency 0.78x -> 1.13x quantize_static's (issue 12 allows 1.05x), so
``smooth_lstm`` uses it only when asked (``copies_budget``).
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import numpy_helper

#: at most this many copies of one LSTM's input
MAX_COPIES = 4
#: ``smooth_lstm``'s ``copies_budget`` that gives oww-hey-mycroft K = 4 and 2 (extra input-projection MACs allowed,
#: times the MACs of all candidate LSTMs)
BUDGET = 1.5
#: the static grid spans the calibrated range of X - mean widened by this fraction on each side
MARGIN = 0.02
#: int8 codes of the split weights (onnxruntime's DynamicQuantizeLSTM range)
QMAX = 127


def copies(shapes: list[tuple[int, int, int]], budget: float = BUDGET) -> list[int]:
    """K per LSTM from its (directions, input size, hidden size), in graph order."""
    macs = [d * (i + h) * 4 * h for d, i, h in shapes]
    left = budget * sum(macs)
    out = []
    for d, i, h in shapes:
        one = d * i * 4 * h
        k = int(min(MAX_COPIES, 1 + left // one)) if one else 1
        left -= (k - 1) * one
        out.append(k)
    return out


def split_weights(w: np.ndarray, k: int) -> np.ndarray:
    """[D, rows, I] -> [D, rows, k * I] float32: k parts on one grid per row (the row's max-abs code exactly QMAX),
    summing to w within half a step of that grid."""
    w = np.asarray(w, np.float64)
    mx = np.abs(w).max(axis=-1, keepdims=True)
    step = np.where(mx > 0, mx / (k * QMAX), 1.0)
    rest, parts = w.copy(), []
    for j in range(k):
        codes = np.clip(np.round(rest / (k - j) / step), -QMAX, QMAX)
        rest -= codes * step
        parts.append(codes)
    return (np.concatenate(parts, axis=-1) * step).astype(np.float32)


def grid(rows: np.ndarray) -> tuple[np.ndarray, float, float]:
    """From calibration rows of X [n, I]: the per-channel centre c (z = X - c <= 0 there), the step d of the static
    grid and its lower end lo = -255 d (the range of z and K copies' shifts below the top)."""
    rows = np.asarray(rows, np.float64)
    mean = rows.mean(axis=0)
    v = rows - mean
    top, bottom = float(v.max(initial=0.0)), float(v.min(initial=0.0))
    span = max(top - bottom, 1e-12) * (1 + 2 * MARGIN)
    step = span / 254  # span plus one step of shifts below it fills the 255 steps of [lo, 0]
    return mean + top + MARGIN * (top - bottom), step, -255 * step


def rewrite(model: onnx.ModelProto, node: onnx.NodeProto, rows: np.ndarray, k: int) -> None:
    """Rewrite ``node`` (an LSTM of ``model``'s main graph, W and B initializers read by it alone) in place."""
    inits = {i.name: i for i in model.graph.initializer}
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
    d, gates, size = w.shape
    has_b = len(node.input) > 3 and node.input[3] in inits
    b = numpy_helper.to_array(inits[node.input[3]]).astype(np.float64) if has_b else np.zeros((d, 2 * gates))
    centre, step, lo = grid(rows)
    shifts = np.concatenate([centre + j * step / k for j in range(k)])
    w_aug = split_weights(w, k)
    b[:, :gates] += w_aug.astype(np.float64) @ shifts
    w_aug = np.concatenate([w_aug, np.zeros((d, gates, 1), np.float32)], axis=-1)
    name = f"{node.name or node.output[0]}_dither"
    rank = 3
    consts = [numpy_helper.from_array(shifts.astype(np.float32), name + "_shift"),
              numpy_helper.from_array(np.array([0] * (2 * rank - 1) + [1], np.int64), name + "_pads"),
              numpy_helper.from_array(np.array(lo, np.float32), name + "_lo")]
    model.graph.initializer.extend(consts)
    x = node.input[0]
    new = []
    if k > 1:
        new.append(onnx.helper.make_node("Concat", [x] * k, [name + "_copies"], name=name + "_copies", axis=-1))
        x = name + "_copies"
    new += [onnx.helper.make_node("Sub", [x, name + "_shift"], [name + "_z"], name=name + "_z"),
            onnx.helper.make_node("Pad", [name + "_z", name + "_pads", name + "_lo"], [name + "_x"],
                                  name=name + "_anchor", mode="constant")]
    at = list(model.graph.node).index(node)
    for n in reversed(new):
        model.graph.node.insert(at, n)
    node.input[0] = name + "_x"
    inits[node.input[1]].CopyFrom(numpy_helper.from_array(w_aug, node.input[1]))
    b_name = node.input[3] if has_b else name + "_B"
    if has_b:
        inits[b_name].CopyFrom(numpy_helper.from_array(b.astype(np.float32), b_name))
    else:
        model.graph.initializer.append(numpy_helper.from_array(b.astype(np.float32), b_name))
        while len(node.input) < 4:
            node.input.append("")
        node.input[3] = b_name
