"""The fused kernels' compiled path (``qpass.reference.int8_jit``, numba) where it applies: exact accumulation in
float32 / float64 proven by a bound of every partial sum, no accumulator width model (``acc_bits`` None), 8- or
16-bit output codes, 1-D or 2-D convolutions. Else (or with ``QPASS_NO_JIT=1``, or without numba) the callers
run their numpy path; both give the same codes and the same statistics.
"""
from __future__ import annotations

import os

import numpy as np

from .. import im2col as ic
from ..jit import compiled as load_compiled
from ..numerics import F32, F64, int_range

_F32_EXACT = 2 ** 24 - 1
LOOKUP_MIN_SIZE = 256  # code-table lookups from this many elements run compiled (below: numpy's call is cheaper)


def jit():
    """``qpass.reference.int8_jit`` when numba and scipy are installed (the ``fast`` extra) and ``QPASS_NO_JIT``
    is not 1, else None (numba's np.dot calls BLAS through scipy; ``qpass.reference.jit``)."""
    return load_compiled("int8_jit", needs=("scipy.linalg.cython_blas",))


def int_mm():
    """``ops_integer.int_mm`` (exact int8 GEMM by torch) when torch is installed and neither QPASS_NO_JIT nor
    QPASS_NO_INT_MM is 1, else None."""
    if os.environ.get("QPASS_NO_INT_MM") == "1":
        return None
    return load_compiled("ops_integer.int_mm", needs=("torch",))


_NO_INDEX = np.empty(0, np.intp)
GATHER_MAX_ENTRIES = 1 << 16  # conv patch matrices up to this many entries: one block, by a flat gather index
INT_MM_MIN_MACS = 1 << 20  # smaller products stay on float BLAS (torch's call costs more than it saves)


def acc_type(top: int | None, bias: np.ndarray | None):
    """float32 when every partial sum (bounded by ``top``) is an exact float32 integer, float64 while the sums
    plus the bias stay below 2^53, else None (the numpy path's int64)."""
    if top is None:
        return None
    if top <= _F32_EXACT:
        return F32
    bmax = int(np.abs(bias).max()) if bias is not None and bias.size else 0
    return F64 if top + bmax < 2 ** 53 else None


def usable(ex, q) -> bool:
    """The compiled path applies to this call: exact accumulators, output codes of at most 16 bits (or float)."""
    return ex.acc_bits is None and (q is None or np.dtype(q.dtype).itemsize <= 2)


class Prepared:
    """A fused layer's constants as ``int8_jit`` takes them, made once when the layer is planned: int64 bias (zero
    when none), float32 multipliers, input zero point, output zero point and float32 clamp bounds."""

    def __init__(self, bias, mult, zx: int, q, channels: int):
        self.bias = np.zeros(channels, np.int64) if bias is None else \
            np.ascontiguousarray(np.broadcast_to(np.asarray(bias).reshape(-1), (channels,)), np.int64)
        self.mult = np.ascontiguousarray(np.broadcast_to(np.asarray(mult, F32).reshape(-1), (channels,)))
        self.zx, self.q = F64(zx), q
        self._wide: dict = {}  # n -> (bias, mult) repeated to n columns (one per-tensor parameter)
        self._int8: dict = {}  # (code dtype, n) -> (int_mm module, int8 weights, bias with the shift correction)
        if q is None:
            self.zy, self.bl, self.bh = 0, F32(0), F32(0)
        else:
            lo, hi = int_range(q.dtype)
            self.zy, self.bl, self.bh = int(q.zp), F32(lo - q.zp), F32(hi - q.zp)

    def columns(self, n: int):
        """(bias, mult) for ``n`` output columns: the layer's own, or its one parameter repeated (made once)."""
        if self.mult.size == n:
            return self.bias, self.mult
        if n not in self._wide:
            self._wide[n] = (np.resize(self.bias, n), np.resize(self.mult, n))
        return self._wide[n]

    def int8_weights(self, b3: np.ndarray, dtype, n: int):
        """For this layer's constant weights ``b3`` (1, K, N) and codes of ``dtype``: (int_mm module, torch int8
        weights, int64 bias including ``(c - zx) * colsum``), or None when int_mm does not apply (made once)."""
        key = (np.dtype(dtype), n)
        if key not in self._int8:
            m = int_mm()
            w = None if m is None else m.weights(b3[0])
            bias = self.columns(n)[0]
            self._int8[key] = None if w is None else (
                m, w[0], bias + (m.shift(dtype) - int(self.zx)) * w[1])
        return self._int8[key]

    def int8_conv(self, w: np.ndarray, dtype):
        """For this conv's weights ``w`` (G, Mg, Kg) and codes of ``dtype``: (int_mm module, torch int8 weights
        per group, shift c, int64 bias including ``(c - zx) * rowsum``), or None (made once)."""
        key = ("conv", np.dtype(dtype))
        if key not in self._int8:
            m = int_mm()
            t = None if m is None else m.conv_weights(w)
            c = 0 if m is None else m.shift(dtype)
            self._int8[key] = None if t is None else (m, t[0], c, self.bias + (c - int(self.zx)) * t[1])
        return self._int8[key]

    def counts(self, st: np.ndarray, size: int) -> dict:
        """The counts the numpy path records: accumulator range and clipped outputs (a float output: none)."""
        if self.q is None:
            return {}
        return {"acc_min": int(st[0]) if size else None, "acc_max": int(st[1]) if size else None,
                "output_clipped": int(st[2])}


def _stats():
    return np.array([2 ** 62, -2 ** 62, 0], np.int64)  # beyond every accumulator (< 2^53)


def _attr_ints(node, key: str, n: int) -> list[int]:
    v = node.attr(key)
    return [int(x) for x in v] if v is not None and len(v) else [1] * n


def conv(k, ex, name: str, codes: np.ndarray, p: Prepared, w, kernel, node, begin, out_sp,
         depthwise: bool) -> np.ndarray:
    """QLinearConv codes (N, M, *out_sp) of a 1-D / 2-D conv ``node`` by ``int8_jit`` (``k``); ``w``: (G, Mg, Kg)
    weights of the accumulation type, or (C, taps) when ``depthwise``; records the call's counts on ``ex``."""
    geo = _conv2d(ex, name, codes.shape, w, kernel, node, begin, out_sp)
    shape, (ks, st, dl, bg, osp), index = geo
    x = np.ascontiguousarray(codes).reshape((codes.shape[0],) + shape)
    m = p.mult.size
    out = np.empty((x.shape[0], m, osp[0] * osp[1]), p.q.dtype)
    stats = _stats()
    if depthwise:
        k.depthwise_q(x, p.zx, w, p.bias, p.mult, p.zy, p.bl, p.bh, ks[0], ks[1], st[0], st[1], dl[0], dl[1],
                      bg[0], bg[1], osp[0], osp[1], out, stats)
    elif not _conv_int_mm(k, p, x, w, geo[1], out, stats, index):
        k.conv_q(x, p.zx, w, p.bias, p.mult, p.zy, p.bl, p.bh, ks[0], ks[1], st[0], st[1], dl[0], dl[1], bg[0],
                 bg[1], osp[0], osp[1], out, stats, index)
    ex.record(name, "QLinearConv", outputs=out.size, **p.counts(stats, out.size))
    return out.reshape((x.shape[0], m) + tuple(out_sp))


def _conv2d(ex, name: str, x_shape, w, kernel, node, begin, out_sp):
    """A 1-D / 2-D conv as 2-D, resolved once per node and input shape (kept on the executor): (sample shape
    (C, H, W), (kernel, strides, dilations, begin pads, output shape) as 2-D lists, the patch gather index of a
    small conv (``_gather_index``; else empty))."""
    key = ("qconv", name, x_shape)
    hit = ex.scratch.get(key)
    if hit is not None:
        return hit
    nd = len(kernel)
    strides, dilations = _attr_ints(node, "strides", nd), _attr_ints(node, "dilations", nd)
    shape = tuple(x_shape[1:]) if nd == 2 else (x_shape[1], 1) + tuple(x_shape[2:])
    ks, st, dl, osp = ([1] * (2 - nd) + list(v) for v in (kernel, strides, dilations, out_sp))
    bg = [0] * (2 - nd) + list(begin)
    if shape[2] == 1 and ks[1] == 1 and osp[1] == 1:  # a column (e.g. a 5x1 kernel over (H, 1)): as a row
        shape = (shape[0], 1, shape[1])
        ks, st, dl, bg, osp = ([v[1], v[0]] for v in (ks, st, dl, bg, osp))
    geom = (ks, st, dl, bg, osp)
    hit = ex.scratch[key] = (shape, geom, _gather_index(shape, w, geom))
    return hit


def _gather_index(shape, w, geom) -> np.ndarray:
    """A small conv's flat patch gather index for ``int8_jit.conv_q`` (one group's channels); empty when the
    patch matrix of a sample and group has over ``GATHER_MAX_ENTRIES`` entries (or the weights are depthwise)."""
    ks, st, dl, bg, osp = geom
    if w.ndim != 3 or not 0 < w.shape[2] * osp[0] * osp[1] <= GATHER_MAX_ENTRIES:
        return _NO_INDEX
    return ic.gather_index((shape[0] // w.shape[0],) + tuple(shape[1:]), ks, st, dl, bg, [0, 0], osp)


def gemm(k, ex, name: str, kind: str, a3: np.ndarray, b3: np.ndarray, p: Prepared,
         constant: bool = False) -> np.ndarray:
    """(D, R, N) output of a QGemm / QLinearMatMul (codes of ``p.q``; float32 when it is None) of codes ``a3``
    (D, R, K) and exact integers ``b3`` (D or 1, K, N) of the accumulation type; records the counts on ``ex``.
    ``constant``: ``b3`` is the layer's constant weight (then large 8-bit products may run on ``int_mm``)."""
    n = b3.shape[2]
    d, r = a3.shape[:2]
    out = np.empty((d, r, n), F32 if p.q is None else p.q.dtype)
    stats = _stats()
    bias, mult = p.columns(n)
    t = None
    if constant and a3.dtype.itemsize == 1 and d * r * b3.shape[1] * n >= INT_MM_MIN_MACS:
        t = p.int8_weights(b3, a3.dtype, n)
    if t is not None:
        acc = t[0].matmul(a3.reshape(d * r, -1), t[1])
        k.requant_q(acc, t[2], mult, p.zy, p.bl, p.bh, out.reshape(d * r, n), stats, p.q is None)
        ex.record(name, kind, outputs=out.size, **p.counts(stats, out.size))
        return out
    k.gemm_q(a3 if a3.flags.c_contiguous else np.ascontiguousarray(a3), p.zx,
             b3 if b3.flags.c_contiguous else np.ascontiguousarray(b3), bias, mult, p.zy, p.bl, p.bh, out, stats,
             p.q is None)
    ex.record(name, kind, outputs=out.size, **p.counts(stats, out.size))
    return out


#: the int8 patch matrix costs a pass per output channel group that the float path fuses into its GEMM; it pays
#: only where many output channels share it (digits_rescnn, 16 channels: 0.23 ms of patches per call against 0.04
#: ms for the whole fused float-BLAS conv at batch 8)
CONV_INT_MM_MIN_CHANNELS = 32
CONV_PATCH_BYTES = 1 << 22  # int8 patch matrix per block of samples (one sample's larger: the float path)


def _conv_int_mm(k, p: Prepared, x, w, geom, out, stats, index=_NO_INDEX) -> bool:
    """A 2-D conv of 8-bit codes on ``int_mm``, blocks of samples side by side in one int8 patch matrix per group;
    False (nothing done) when it does not apply: other codes, too few multiply-adds, weights outside int8, one
    sample's patch matrix over ``CONV_PATCH_BYTES``."""
    (kh, kw), (sh, sw), (dh, dw), (ph, pw), (oh, ow) = geom
    gg, mg, kg = w.shape
    pos = oh * ow
    if (x.dtype.itemsize != 1 or x.shape[0] * pos * kg * mg * gg < INT_MM_MIN_MACS or kg * pos > CONV_PATCH_BYTES
            or mg < CONV_INT_MM_MIN_CHANNELS):
        return False
    t = p.int8_conv(w, x.dtype)
    if t is None:
        return False
    mod, tw, c, bias = t
    per = max(1, CONV_PATCH_BYTES // (kg * pos))
    x = np.ascontiguousarray(x)
    for s0 in range(0, x.shape[0], per):
        s1 = min(x.shape[0], s0 + per)
        patch = np.empty((kg, (s1 - s0) * pos), np.int8)
        for g in range(gg):
            if index.size:  # a small conv: by its flat gather index
                k.patch8_gather(x, c, int(p.zx), g, x[0].size // gg, index, s0, patch)
            else:
                k.patch8(x, c, int(p.zx), g, kh, kw, sh, sw, dh, dw, ph, pw, oh, ow, s0, patch)
            acc = mod.conv_mm(tw[g], patch)
            sl = slice(g * mg, (g + 1) * mg)
            k.requant_samples(acc, bias[sl], p.mult[sl], p.zy, p.bl, p.bh, out, s0, g * mg, stats)
    return True
