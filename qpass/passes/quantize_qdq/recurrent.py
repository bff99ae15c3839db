"""LSTM on onnxruntime's integer kernel: com.microsoft ``DynamicQuantizeLSTM``.

An ONNX LSTM with constant W [D, 4H, I] and R [D, 4H, H] becomes DynamicQuantizeLSTM with int8 W [D, I, 4H] and
R [D, H, 4H] (the ONNX matrices transposed), one symmetric scale per direction and gate row ([D, 4H], zero points
0). At every step onnxruntime quantizes the float input and hidden state dynamically (uint8, their own min/max) and
runs the matrix products on its u8s8 GEMM; the gates stay float. The golden interpreter's kernel
(``qpass.reference.ops_float.dynamic_quant``) computes the same. On CPUs whose u8s8 kernels add pairs of products
in int16 (``avx2``, ``any``: see ``u8s8``) the weights use 7 bits (|code| <= 64: 255 * 128 < 32768), which cannot
saturate; elsewhere 8.

GRU and RNN have no integer kernel in onnxruntime: their weights stay int8 behind DequantizeLinear (``rewrite``).
"""
from __future__ import annotations

import numpy as np
import onnx_graphsurgeon as gs

from qpass.formats.qdq_params import quantize, symmetric_weight_params
from .store import ConstPool, short

MS_DOMAIN = "com.microsoft"
#: LSTM inputs after X, W, R that DynamicQuantizeLSTM takes in the same order, before its scales and zero points
LSTM_OPTIONAL_INPUTS = 5  # B, sequence_lens, initial_h, initial_c, P
LSTM_ATTRS = ("activation_alpha", "activation_beta", "activations", "clip", "direction", "hidden_size",
              "input_forget")


def dynamic_lstm_ok(node: gs.Node) -> bool:
    """An LSTM whose W and R are constants, in the default (sequence-first) layout."""
    return (len(node.inputs) >= 3 and all(isinstance(t, gs.Constant) for t in node.inputs[1:3])
            and int(node.attrs.get("layout", 0)) == 0)


def _int8_gates(pool: ConstPool, m: np.ndarray, base: str, qmax: int, offset: bool) -> list[gs.Constant]:
    """[D, rows, cols] float -> codes [D, cols, rows], scales [D, rows] and zero points, stored once: int8 with
    zero point 0, or (``offset``) the same grid as uint8 with zero point 128 (onnxruntime's exact u8u8 GEMM)."""
    p = symmetric_weight_params(m.reshape(-1, m.shape[-1]), 0, qmax)
    codes = quantize(m.reshape(-1, m.shape[-1]), p, -qmax, qmax).reshape(m.shape).transpose(0, 2, 1)
    scale = np.asarray(p.scale, np.float32).reshape(m.shape[0], m.shape[1])
    zero = np.zeros(scale.shape, np.int8)
    if offset:
        codes, zero = (codes.astype(np.int16) + 128).astype(np.uint8), (zero + 128).astype(np.uint8)
    return [pool.get(np.ascontiguousarray(codes), base + "_quantized"), pool.get(scale, base + "_scale"),
            pool.get(zero, base + "_zero_point")]


def to_dynamic_lstm(pool: ConstPool, node: gs.Node, qmax: int = 127, offset: bool = False) -> None:
    """Rewrite ``node`` (``dynamic_lstm_ok``) in place into DynamicQuantizeLSTM."""
    w, r = (np.asarray(t.values, np.float32) for t in node.inputs[1:3])
    base = short(node.name)
    wq, ws, wz = _int8_gates(pool, w, base + "_W", qmax, offset)
    rq, rs, rz = _int8_gates(pool, r, base + "_R", qmax, offset)
    rest = list(node.inputs[3:3 + LSTM_OPTIONAL_INPUTS])
    rest += [gs.Variable.empty() for _ in range(LSTM_OPTIONAL_INPUTS - len(rest))]
    inputs = [node.inputs[0], wq, rq] + rest + [ws, wz, rs, rz]
    node.inputs.clear()
    node.inputs.extend(inputs)
    node.op, node.domain = "DynamicQuantizeLSTM", MS_DOMAIN
    node.attrs = {k: v for k, v in node.attrs.items() if k in LSTM_ATTRS}
