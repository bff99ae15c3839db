"""Weight and bias codes of the linear layers: int8 symmetric (max-abs, narrow range) per output channel, the
encoding chosen per layer for the target CPU, int32 biases at s_in * s_w.

Encodings (``WeightChoice.encoding``):

- ``int8``: plain int8 codes in [-127, 127]; onnxruntime runs them on its u8s8 kernels (fastest everywhere). On
  x86 without VNNI those add product pairs in int16 with saturation (``u8s8``): wherever some input can saturate a
  pair and the target includes such CPUs (``avx2``, ``any``), the layer gets the pass's ``avx2_remedy``:
- ``pair_scale`` (default remedy): still int8, but each channel whose pairs could saturate takes the smallest scale
  that keeps every same-sign pair within 128 codes (max(max|w| / 127, max pair / 128)); other channels keep
  max-abs / 127. Exact on every CPU at int8 speed; costs the affected channels a coarser grid (at most 7 bits);
- ``seven_bit``: the whole layer on [-64, 64] (onnxruntime's ``reduce_range``);
- ``uint8_offset``: the same int8 grid stored as uint8 with zero point 128; onnxruntime then runs the exact u8u8
  kernels (about 2x slower on VNNI CPUs, measured in the README).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx_graphsurgeon as gs

from qpass.formats.qdq_params import AffineParams, quantize, symmetric_weight_params
from . import u8s8

AVX2_TARGETS = ("avx2", "any")


@dataclass
class WeightChoice:
    codes: np.ndarray
    params: AffineParams
    encoding: str  # int8, pair_scale, seven_bit, uint8_offset, reduce_range

    @property
    def key(self) -> tuple:
        return (self.encoding, self.params.axis, np.asarray(self.params.scale).tobytes())


def weight_axis(node: gs.Node, w: np.ndarray, per_channel: bool) -> int | None:
    """The output-channel axis of a layer's weight (None: one scale for the tensor)."""
    if not per_channel:
        return None
    if node.op == "Conv":
        return 0
    if node.op == "ConvTranspose":
        return 1 if int(node.attrs.get("group", 1)) == 1 else None
    if node.op == "Gemm":
        return 0 if int(node.attrs.get("transB", 0)) else 1
    if node.op == "MatMul":
        return 1 if w.ndim == 2 else None
    return None


def _channel_view(v: np.ndarray, axis: int | None, ndim: int) -> np.ndarray:
    if axis is None:
        return np.asarray(v).reshape(())
    shape = [1] * ndim
    shape[axis] = -1
    return np.asarray(v).reshape(shape)


def pair_scaled_params(node: gs.Node, w: np.ndarray, axis: int | None, a_max: int) -> AffineParams:
    """int8 parameters whose codes keep every same-sign product pair of onnxruntime's u8s8 kernels within int16
    for activation codes up to ``a_max``; channels that cannot saturate keep the max-abs scale."""
    p = symmetric_weight_params(w, axis, 127)
    base = np.asarray(p.scale, np.float64).reshape(-1)
    pos, neg = u8s8.pair_sums(node.op, node.attrs, np.asarray(w, np.float64), axis)
    widest = np.maximum(pos, -neg)
    limit = u8s8.pair_limit(a_max)
    bad = u8s8.saturating_channels(node.op, node.attrs, quantize(w, p, -127, 127), axis, a_max).reshape(-1)
    scale = base
    for slack in (0, 1):  # |round(a) + round(b)| <= |a + b| + 1: one code of slack always suffices
        scale = np.where(bad, np.maximum(base, widest / (limit - slack) * (1 + 1e-6 * slack)), scale)
        q = AffineParams(scale.astype(np.float32).reshape(np.shape(p.scale)), p.zero_point, "int8", axis)
        bad = u8s8.saturating_channels(node.op, node.attrs, quantize(w, q, -127, 127), axis, a_max).reshape(-1)
        if not bad.any():
            return q
    raise AssertionError("pair scaling left a saturating int16 pair")  # unreachable: see the slack


def choose_weight(node: gs.Node, w: np.ndarray, opts, a_max: int | None) -> WeightChoice:
    """The codes, parameters and encoding of a layer's weight for the pass options (``a_max``: the layer's largest
    activation code on a u8s8 kernel, None when the layer never runs on one)."""
    axis = weight_axis(node, w, opts.per_channel)
    if opts.reduce_range:
        return _int8(w, symmetric_weight_params(w, axis, 64), 64, "reduce_range")
    p = symmetric_weight_params(w, axis, 127)
    if opts.weight_encoding == "uint8_offset":
        return _offset(w, p)
    codes = quantize(w, p, -127, 127)
    if a_max is None or opts.target_cpu not in AVX2_TARGETS:
        return WeightChoice(codes, p, "int8")
    if not u8s8.saturating_channels(node.op, node.attrs, codes, axis, a_max).any():
        return WeightChoice(codes, p, "int8")
    if opts.avx2_remedy == "uint8_offset":
        return _offset(w, p)
    if opts.avx2_remedy == "seven_bit":
        return _int8(w, symmetric_weight_params(w, axis, 64), 64, "seven_bit")
    return _int8(w, pair_scaled_params(node, w, axis, a_max), 127, "pair_scale")


def _int8(w, p: AffineParams, qmax: int, encoding: str) -> WeightChoice:
    return WeightChoice(quantize(w, p, -qmax, qmax), p, encoding)


def _offset(w, p: AffineParams) -> WeightChoice:
    """The int8 grid stored as uint8 with zero point 128 (onnxruntime's exact u8u8 kernels)."""
    q = (quantize(w, p, -127, 127).astype(np.int16) + 128).astype(np.uint8)
    return WeightChoice(q, AffineParams(p.scale, np.full(np.shape(p.scale), 128, np.uint8), "uint8", p.axis),
                        "uint8_offset")


def output_channels(node: gs.Node, w: np.ndarray) -> int:
    """Number of output channels of a Conv / ConvTranspose / Gemm weight (the length of its bias)."""
    if node.op == "ConvTranspose":
        return w.shape[1] * int(node.attrs.get("group", 1))
    if node.op == "Gemm":
        return w.shape[0] if int(node.attrs.get("transB", 0)) else w.shape[1]
    return w.shape[0]


def bias_codes(b: np.ndarray, s_in: np.ndarray, w_params: AffineParams, channels: int):
    """(int32 codes, parameters) of a bias at scale s_in * s_w per channel, or None when the bias does not fit."""
    b = np.asarray(b, np.float64)
    if b.ndim != 1 or b.shape[0] != channels:
        return None
    s_w = np.broadcast_to(w_params.scale, (channels,)).astype(np.float32)
    s_b = (np.float32(s_in) * s_w).astype(np.float32)
    if np.any(s_b == 0):
        return None
    qb = np.clip(np.round(b / s_b.astype(np.float64)), -(2**31), 2**31 - 1).astype(np.int32)
    return qb, AffineParams(s_b, np.zeros(channels, np.int32), "int32", 0)
