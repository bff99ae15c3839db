"""Matrix-vector-threshold unit (FINN MVAU): an integer Conv (group 1), Gemm or MatMul, with the MultiThreshold
reading only its accumulator fused in (else it streams its exact accumulator, e.g. into the float head). A
convolution other than 1x1 / stride 1 / unpadded is fed by a sliding-window generator."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from qpass.analysis.intinfo import const, signed_bits
from qpass.errors import QpassError
from qpass.hw import cost_models as cm
from qpass.hw import memory_costs as mc
from qpass.hw import weight_memory as wm
from qpass.hw.inttype import IntType
from qpass.hw.kinds.base import HwKind
from qpass.hw.kinds.swg import add_sliding_window
from qpass.hw.kinds.threshold import int_thresholds, threshold_params
from qpass.hw.layers import (RAM_STYLES, RES_TYPES, Layer, Resources, StreamProgram, check_choice, check_fold,
                             check_positive)
from qpass.hw.nodes import attr, data_inputs, is_bipolar, is_integral, mt_axis, sample_shape, window_geometry
from qpass.hw.orders import image_out_order, nhwc_order, row_major, vector_perm


@dataclass(frozen=True)
class MVTU(Layer):
    """Matrix-vector-threshold unit (FINN MVAU): an MW-input, MH-output matrix applied to
    ``num_vectors`` input vectors per frame (1 for FC, OH*OW for a conv after a SlidingWindow).
    ``thresholds`` per output channel: 2^out_bits - 1, or 0 for no activation (raw accumulators
    or plain requantisation). ``acc_bits`` None means unknown (FINN's INT32 default)."""

    mw: int = 1
    mh: int = 1
    num_vectors: int = 1
    w_bits: int = 8
    a_bits: int = 8
    w_signed: bool = True
    a_signed: bool = True
    thresholds: int = 0
    acc_bits: int | None = None
    pe: int = 1
    simd: int = 1
    ram_style: str = "auto"
    res_type: str = "lut"
    ram_style_thresholds: str = "auto"
    #: weights in {-1, +1} (stored as 1 bit) / inputs in {-1, +1}: both make the unit XNOR-popcount
    w_bipolar: bool = False
    a_bipolar: bool = False
    #: "const": weights and thresholds are constant ROMs; "runtime": RAMs the host writes (``qpass.hw.weight_memory``)
    mem_mode: str = "const"
    #: fraction of ones in each stored weight bit (LSB first; 1 bit, w > 0, when bipolar); () unknown. Prices the
    #: weight ROM's varying bit columns for any folding (``qpass.hw.calibration.weight_columns``)
    w_bit_density: tuple = ()
    #: signed width of the thresholds clipped to the accumulator's range, as the RTL backend stores them (TB);
    #: None unknown (then the accumulator's width plus one)
    t_bits: int | None = None
    kind: ClassVar[str] = "MVTU"

    def __post_init__(self):
        check_positive(self.name, mw=self.mw, mh=self.mh, num_vectors=self.num_vectors, w_bits=self.w_bits,
                       a_bits=self.a_bits)
        check_fold(self.name, "PE", self.pe, self.mh, "MH")
        check_fold(self.name, "SIMD", self.simd, self.mw, "MW")
        check_choice(self.name, "ram_style", self.ram_style, RAM_STYLES)
        check_choice(self.name, "ram_style_thresholds", self.ram_style_thresholds, ("auto", "block", "distributed"))
        check_choice(self.name, "res_type", self.res_type, RES_TYPES)
        check_choice(self.name, "mem_mode", self.mem_mode, wm.MEM_MODES)
        if self.thresholds < 0:
            raise QpassError(f"{self.name}: thresholds must be >= 0, got {self.thresholds}")

    @property
    def out_bits(self) -> int:
        if self.thresholds:
            return max(1, math.ceil(math.log2(self.thresholds + 1)))
        return self.acc_bits or 32

    def cycles(self) -> int:
        return cm.mvtu_cycles(self.mw, self.mh, self.pe, self.simd, self.num_vectors)

    def wmem(self) -> int:
        return cm.mvtu_wmem(self.mw, self.mh, self.pe, self.simd)

    def tmem(self) -> int:
        return cm.mvtu_tmem(self.mh, self.pe, self.thresholds)

    @property
    def binary(self) -> bool:
        return self.w_bipolar and self.a_bipolar

    def resources(self) -> Resources:
        """The emitted unit (``qpass.hw.memory_costs.matrix_unit``: per-PE weight ROMs, or writable RAMs in runtime
        mode, comparators, XNOR-popcount when binary); ``finn_resources`` is FINN's formula for the same folding."""
        w = 1 if self.w_bipolar else self.w_bits
        a = 1 if self.a_bipolar else self.a_bits
        return Resources(*mc.matrix_unit(
            self.mw, self.mh, self.pe, self.simd, w, a, a_signed=self.a_signed, binary=self.binary,
            w_store_bits=w, thresholds=self.thresholds, acc_bits=self.acc_bits,
            ram_style=wm.weight_style(self.mem_mode, self.ram_style), ram_style_thresholds=self.ram_style_thresholds,
            res_type=self.res_type, mem=wm.pricing(self.mem_mode)))

    def finn_resources(self) -> Resources:
        """FINN's MVAU estimate (decoupled weights, thresholds only in LUTRAM) [cost_models]."""
        a = (self.mw, self.mh, self.pe, self.simd, self.w_bits)
        return Resources(
            lut=cm.mvtu_lut(*a, self.a_bits, a_signed=self.a_signed, thresholds=self.thresholds,
                            acc_bits=self.acc_bits, ram_style=self.ram_style,
                            ram_style_thresholds=self.ram_style_thresholds, res_type=self.res_type),
            bram18=cm.mvtu_bram18(*a, self.ram_style),
            uram=cm.mvtu_uram(*a, self.ram_style),
            dsp=cm.mvtu_dsp(self.pe, self.simd, self.w_bits, self.a_bits, self.res_type),
        )

    def resolved_styles(self) -> dict:
        """``ram_style`` / ``ram_style_thresholds`` with "auto" replaced by what the cost model assumes."""
        return {"ram_style": mc.resolve_ram_style(self.wmem(), wm.weight_style(self.mem_mode, self.ram_style)),
                "ram_style_thresholds": mc.resolve_ram_style(max(self.tmem(), 1), self.ram_style_thresholds)}

    def legal_pe(self) -> list[int]:
        return cm.divisors(self.mh)

    def legal_simd(self) -> list[int]:
        return cm.divisors(self.mw)

    def pipeline_depth(self) -> int:
        return cm.mvtu_pipeline_depth(self.simd)

    def program(self) -> StreamProgram:
        """V x NF x SF iterations; reads at nf == 0 (the input vector is buffered and reused for the other NF row
        folds), writes at sf == SF-1 (one PE-wide word per row fold)."""
        sf, nf = self.mw // self.simd, self.mh // self.pe
        i = np.arange(self.num_vectors * nf * sf)
        r = i % (nf * sf)
        return StreamProgram(len(i), (i[r < sf],), i[r % sf == sf - 1], self.pipeline_depth())

    def in_elems(self):
        return [self.num_vectors * self.mw]

    def out_elems(self):
        return self.num_vectors * self.mh

    def in_words(self):
        return [self.num_vectors * self.mw // self.simd]

    def out_words(self):
        return self.num_vectors * self.mh // self.pe


# ------------------------------------------------------------------------- matching (shared with the VVAU)

def linear_host_reason(node, data) -> str | None:
    """Why an integer Conv / Gemm / MatMul / ConvTranspose cannot be a matrix layer at all, or None."""
    op = node.op
    if len(node.inputs) > 2 and node.inputs[2] is not None and node.inputs[2].name:
        return f"{op} with a bias input (streamlining leaves integer layers without bias)"
    if not is_integral(const(node.inputs[1])):
        return f"{op} weights are not constant integers"
    if len(data) != 1:
        return f"{op} with a non-constant weight"
    return None


def conv_host_reason(node, data) -> str | None:
    """Why an integer Conv cannot be streamed whatever its grouping, or None."""
    why = linear_host_reason(node, data)
    if why is not None:
        return why
    if node.op == "ConvTranspose":
        return "ConvTranspose has no streaming hardware implementation"
    if len(sample_shape(data[0])) != 3 or const(node.inputs[1]).ndim != 4:
        return "only 2-D convolutions (NCHW) are streamed"
    if any(int(d) != 1 for d in (attr(node, "dilations") or [1, 1])):
        return "dilated convolution has no streaming hardware implementation"
    if attr(node, "auto_pad", "NOTSET") not in ("NOTSET", "VALID"):
        return "auto_pad SAME_* convolution: give explicit pads"
    pads = [int(p) for p in (attr(node, "pads") or [0, 0, 0, 0])]
    if len(set(pads)) != 1:
        return f"asymmetric padding {pads} has no streaming implementation"
    return None


# --------------------------------------------------------------------- building (shared with the VVAU)

def bit_density(w: np.ndarray, bits: int, bipolar_w: bool) -> tuple:
    """Fraction of ones of each stored bit of the weights (two's complement codes of ``bits`` bits, LSB first; one
    bit, w > 0, for -1/+1 weights), rounded to 4 digits."""
    codes = (w > 0).astype(np.int64) if bipolar_w else np.asarray(w, np.int64) & ((1 << bits) - 1)
    n = 1 if bipolar_w else bits
    return tuple(round(float(((codes >> b) & 1).mean()), 4) for b in range(n)) if w.size else ()


def bipolar(w: np.ndarray) -> bool:
    """Every weight is -1 or +1 (1-bit storage, XNOR with bipolar inputs)."""
    return bool(w.size) and bool(np.all(np.abs(w) == 1))

def acc_type(w: np.ndarray, a_lo: float, a_hi: float) -> tuple[IntType, tuple[int, int]]:
    """Accumulator type holding every partial sum (terms of either sign counted separately) and the exact
    range of the final sums; w: (MH, MW)."""
    p, q = w * a_lo, w * a_hi
    tlo, thi = np.minimum(p, q), np.maximum(p, q)
    lo_full, hi_full = tlo.sum(axis=1), thi.sum(axis=1)
    lo_part = np.minimum(tlo, 0).sum(axis=1)
    hi_part = np.maximum(thi, 0).sum(axis=1)
    return IntType.of_range(min(0.0, lo_part.min()), max(0.0, hi_part.max())), \
        (int(lo_full.min()), int(hi_full.max()))


def fused_threshold(b, acc, channel_axis: int):
    """The MultiThreshold reading only the accumulator ``acc`` along ``channel_axis``, or None."""
    mt = b.sole_reader(acc)
    if mt is None or b.kind_of(mt) != "threshold":
        return None
    if mt_axis(mt, len(acc.shape)) != channel_axis:
        return None
    return mt


def output_stage(b, mt, channels, acc, f_lo, f_hi, params: dict, nodes: list):
    """A matrix layer's output: the fused MultiThreshold ``mt`` when there is one, else the raw accumulator.
    Fills ``params`` (thresholds, out_scale/out_bias, out_type) and ``nodes``; returns (type, tensor, count)."""
    if mt is None:
        out_t, out_tensor, nthr = IntType.of_range(f_lo, f_hi), acc, 0
    else:
        tp = threshold_params(mt, channels)
        thr = int_thresholds(tp["thresholds"])
        params.update(thresholds=thr, out_scale=tp["out_scale"], out_bias=tp["out_bias"])
        b.fused.add(mt.name)
        nodes.append(mt.name)
        out_t, out_tensor, nthr = b.dtype(mt.outputs[0]), mt.outputs[0], thr.shape[1]
    params["out_type"] = out_t
    return out_t, out_tensor, nthr


class MvtuKind(HwKind):
    name = "mvtu"
    ops = ("Conv", "ConvTranspose", "Gemm", "MatMul")
    model = MVTU

    def match(self, node, data, outs):
        op = node.op
        if op == "Conv" or op == "ConvTranspose":
            why = conv_host_reason(node, data)
            if why is not None:
                return None, why
            g = int(attr(node, "group", 1))
            if g == 1:
                return "mvtu", "convolution: sliding-window generator + matrix-vector-threshold unit"
            return None, f"grouped convolution (group={g}) has no streaming hardware implementation"
        why = linear_host_reason(node, data)
        if why is not None:
            return None, why
        if op == "Gemm":
            if int(attr(node, "transA", 0)) or float(attr(node, "alpha", 1.0)) != 1.0:
                return None, "Gemm with transA or alpha != 1"
            if len(sample_shape(data[0])) != 1:
                return None, "Gemm input is not 2-D"
        elif const(node.inputs[1]).ndim != 2:
            return None, "MatMul with a weight that is not 2-D"
        return "mvtu", "matrix-vector-threshold unit (fully connected)"

    def out_order(self, node, in_orders):
        x, y = sample_shape(data_inputs(node)[0]), sample_shape(node.outputs[0])
        if node.op == "Conv":
            return image_out_order(x, y, in_orders[0])
        nvec = int(np.prod(x[:-1], dtype=np.int64)) if len(x) > 1 else 1
        if vector_perm(in_orders[0], nvec) is None:
            return None, "its input stream does not hold whole input vectors one after another"
        return row_major(y), None

    def build(self, node, b):
        x = data_inputs(node)[0]
        xs, src, acc = sample_shape(x), b.in_stream(x), node.outputs[0]
        ys = sample_shape(acc)
        w = np.asarray(const(node.inputs[1]), np.float64)
        padded = False  # a zero-padded window feeds 0s: the products are not all +-1 (no XNOR-popcount)
        if node.op == "Conv":
            m, c, kh, kw = w.shape
            wm = w.transpose(0, 2, 3, 1).reshape(m, kh * kw * c)  # columns in (ky, kx, c) window order
            k, (s, pad) = (kh, kw), window_geometry(node)
            padded = bool(pad)
            ch_axis, nvec, stream_in, out_order = 0, ys[1] * ys[2], src.name, nhwc_order(ys)
            if k != (1, 1) or s != (1, 1) or pad:
                stream_in = add_sliding_window(b, node, src, xs, k, s, pad, False, 0).output
        else:
            wt = w.T if node.op == "Gemm" and int(attr(node, "transB", 0)) else w
            nvec = int(np.prod(xs[:-1], dtype=np.int64)) if len(xs) > 1 else 1
            perm = vector_perm(b.tensor_order(x), nvec)
            if perm is None:
                raise QpassError(f"{node.name}: input stream does not hold whole vectors")
            wm = wt.T[:, perm]  # (MH, MW)
            ch_axis, stream_in, out_order = len(ys) - 1, src.name, row_major(ys)
        mh, mw = wm.shape
        in_t, w_t = src.dtype, IntType.of_range(wm.min(), wm.max())
        acc_t, (f_lo, f_hi) = acc_type(wm, *b.rng(x))
        nodes = [node.name]
        params = dict(weights=wm.astype(np.int64), w_type=w_t, acc_type=acc_t, in_type=in_t, num_vectors=nvec)
        mt = fused_threshold(b, acc, ch_axis)
        out_t, out_tensor, nthr = output_stage(b, mt, mh, acc, f_lo, f_hi, params, nodes)
        acc_bits = signed_bits(f_lo, f_hi)[0]
        wb, ab = bipolar(wm), is_bipolar(x) and not padded
        res_type = mc.choose_res_type(w_t.bits, in_t.bits, wb or ab)
        layer = lambda nm: MVTU(nm, mw=mw, mh=mh, num_vectors=nvec, w_bits=w_t.bits, a_bits=in_t.bits,  # noqa: E731
                                w_signed=w_t.signed, a_signed=in_t.signed, thresholds=nthr, acc_bits=acc_bits,
                                w_bipolar=wb, a_bipolar=ab, res_type=res_type,
                                w_bit_density=bit_density(wm, w_t.bits, wb), t_bits=threshold_bits(params, acc_t))
        b.add_layer(self.name, node.name, layer, [stream_in], out_tensor.name, out_t, ys, out_order, nodes, params)


def threshold_bits(params: dict, acc: IntType) -> int | None:
    """The signed width of a matrix layer's thresholds clipped to its accumulator's range (the TB the RTL backend
    emits a constant table with: the CNN 8-bit layers' 18-20 bits against 22-25-bit accumulators), or None."""
    if "thresholds" not in params:
        return None
    t = np.clip(np.asarray(params["thresholds"], np.int64), acc.lo(), acc.hi() + 1)
    it = IntType.of_range(min(int(t.min()), 0), max(int(t.max()), 0))  # as memfiles.signed_width
    return it.bits + (0 if it.signed else 1)
