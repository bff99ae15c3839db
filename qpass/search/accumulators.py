"""Accumulator widths that follow from chosen weight and activation widths.

A linear layer with integer weight codes ``w`` (per-output-channel scale s_w) and integer input codes in
[lo, hi] (an activation quantiser's centred codes ``q - z``) accumulates, per output channel c, into
[sum_k min(w_ck lo, w_ck hi) + b_c, sum_k max(w_ck lo, w_ck hi) + b_c] with b_c the int32 bias code at
s_in * s_w (what fakequant's ``bias: auto`` stores). The minimal exact width is ``intinfo.signed_bits`` of that
range (FINN's rule, as ``intinfo.linear_bounds`` computes it on streamlined graphs), plus a sign bit when the
range is non-negative, because fakequant's accumulator quantiser is signed. A narrower accumulator saturates.
"""
from __future__ import annotations

import numpy as np

from qpass.analysis.intinfo import signed_bits
from ..formats import IntGrid
from .sites import Site


def weight_grid(site: Site, res) -> tuple[np.ndarray, np.ndarray] | None:
    """(integer codes, per-output-channel scale) of a quantised weight, or None without a per-channel grid."""
    if res.codes is None:
        return None
    w = site.value
    out_axis = site.axes[0]
    scale = np.broadcast_to(np.asarray(res.scale, np.float64), w.shape)
    moved = np.moveaxis(scale, out_axis, 0).reshape(w.shape[out_axis], -1)
    if not np.all(moved == moved[:, :1]):
        return None  # group-wise scales: no single grid per output channel
    zp = getattr(res, "zero_point", None)
    if zp is not None and np.any(np.asarray(zp) != 0):
        return None
    return np.asarray(res.codes, np.int64), moved[:, 0].astype(np.float32)


def exact_range(site: Site, codes: np.ndarray, s_w: np.ndarray, act: IntGrid | None) -> tuple[int, int] | None:
    """Exact accumulator range over all output channels, or None when the input is not quantised."""
    if act is None:
        return None
    s_in, z = float(act.scale), act.zero_point
    lo, hi = float(act.qmin - z), float(act.qmax - z)
    w = codes.astype(np.float64)
    out_axis = site.axes[0]
    wm = np.moveaxis(w, out_axis, 0).reshape(w.shape[out_axis], -1)
    c_lo = np.minimum(wm * lo, wm * hi).sum(axis=1)
    c_hi = np.maximum(wm * lo, wm * hi).sum(axis=1)
    if site.op == "ConvTranspose" and int(site.attrs.get("group", 1)) != 1:
        g = int(site.attrs.get("group", 1))
        c_lo, c_hi = np.repeat(c_lo, g), np.repeat(c_hi, g)
    if site.bias is not None and s_w.size in (1, c_lo.size) and s_w.size:
        s_b = (np.float32(s_in) * np.broadcast_to(s_w, c_lo.shape)).astype(np.float32).astype(np.float64)
        b = np.clip(np.round(np.broadcast_to(site.bias.reshape(-1), c_lo.shape) / s_b), -(2**31), 2**31 - 1)
        c_lo, c_hi = c_lo + b, c_hi + b
    return int(np.floor(c_lo.min())), int(np.ceil(c_hi.max()))


def signed_width(lo: int, hi: int) -> int:
    """Width of the signed accumulator holding every integer in [lo, hi]."""
    bits, signed = signed_bits(lo, hi)
    return max(2, bits if signed else bits + 1)


def accumulator_scale(s_in: float, s_w: np.ndarray, channels: int) -> np.ndarray:
    return (np.float32(s_in) * np.broadcast_to(np.asarray(s_w, np.float32), (channels,))).astype(np.float32)
