"""Every analytical cycle / resource formula of the dataflow backend, in one place.

Sources (cited per function):
  [FINN-R]  M. Blott et al., "FINN-R: An End-to-End Deep-Learning Framework for Fast Exploration of
            Quantized Neural Networks", ACM TRETS 2018, arXiv:1809.04570.
  [MVAU]    Xilinx/finn src/finn/custom_op/fpgadataflow/matrixvectoractivation.py (cycles, WMEM/TMEM,
            BRAM18, URAM) and hls/matrixvectoractivation_hls.py (LUT, DSP).
  [SWG]     finn .../convolutioninputgenerator*.py (cycles from finn-hlslib slidingwindow.h, BRAM/LUT/URAM).
  [THR]     finn .../hls/thresholding_hls.py and hls/channelwise_op_hls.py (LUT, BRAM18).
  [POOL]    finn .../streamingmaxpool.py, globalaccpool.py (cycles).
  [FOLD]    finn src/finn/transformation/fpgadataflow/set_folding.py.
  [PERF]    finn src/finn/analysis/fpgadataflow/dataflow_performance.py.
  [ACC]     finn MVAU.minimize_accumulator_width; data-type bound of Colbert et al., arXiv:2301.13376.
  [qpass]   our own estimate, where FINN has none (FINN reports 0 for these). Rough by design.

All resource counts are per layer and exclude FIFOs, data-width converters and the DMA shell.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from qpass.errors import QpassError


def divisors(n: int) -> list[int]:
    """Ascending divisors of n: the legal PE/SIMD values of a folded dimension n [FOLD]."""
    n = int(n)
    if n < 1:
        raise QpassError(f"cannot fold a dimension of size {n}")
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return sorted(set(small + [n // d for d in small]))


def _ceil_div(a: int, b: int) -> int:
    return -(-int(a) // int(b))


# ----------------------------------------------------------------------------------------- MVTU

def mvtu_cycles(mw: int, mh: int, pe: int, simd: int, num_vectors: int = 1) -> int:
    """Cycles per frame = (MH/PE)*(MW/SIMD)*num_vectors: one II=1 iteration per (vector, NF, SF)
    [MVAU get_exp_cycles; FINN-R Sec. 4]."""
    return (mh // pe) * (mw // simd) * num_vectors


def mvtu_wmem(mw: int, mh: int, pe: int, simd: int) -> int:
    """Weight memory depth per PE, WMEM = MW*MH/(PE*SIMD) [MVAU calc_wmem]."""
    return mw * mh // (pe * simd)


def mvtu_tmem(mh: int, pe: int, thresholds: int) -> int:
    """Threshold memory depth, TMEM = MH/PE, 0 without activation (no thresholds) [MVAU calc_tmem]."""
    return 0 if thresholds == 0 else mh // pe


def mvtu_bram18(mw: int, mh: int, pe: int, simd: int, w_bits: int, ram_style: str = "auto") -> int:
    """BRAM18 count of the weight memory (mem_mode internal_decoupled), [FINN-R] as coded in [MVAU]
    bram_estimation: 0 for ram_style distributed/ultra; otherwise, with mem_width = PE*SIMD*W and
    omega = WMEM, the RAMB18 SDP aspect-ratio table (UG573 Table 1-10):
    1 -> ceil(omega/16384); 2 -> ceil(omega/8192); <=4 -> ceil(omega/4096)*ceil(mw/4);
    <=9 -> ceil(omega/2048)*ceil(mw/9); <=18 or omega>512 -> ceil(omega/1024)*ceil(mw/18);
    else ceil(omega/512)*ceil(mw/36).  (The embedded-mode 'WMEM <= 128 -> 0' rule is not used:
    qpass always streams weights from a decoupled memory.)"""
    if ram_style in ("distributed", "ultra"):
        return 0
    omega = mw * mh / (pe * simd)
    width = pe * simd * w_bits
    if width == 1:
        return math.ceil(omega / 16384)
    if width == 2:
        return math.ceil(omega / 8192)
    if width <= 4:
        return math.ceil(omega / 4096) * math.ceil(width / 4)
    if width <= 9:
        return math.ceil(omega / 2048) * math.ceil(width / 9)
    if width <= 18 or omega > 512:
        return math.ceil(omega / 1024) * math.ceil(width / 18)
    return math.ceil(omega / 512) * math.ceil(width / 36)


def mvtu_uram(mw: int, mh: int, pe: int, simd: int, w_bits: int, ram_style: str = "auto") -> int:
    """URAM count when ram_style == 'ultra': ceil(mem_width/72)*ceil(omega/4096) [MVAU uram_estimation]."""
    if ram_style != "ultra":
        return 0
    omega = mw * mh / (pe * simd)
    return math.ceil(pe * simd * w_bits / 72) * math.ceil(omega / 4096)


def acc_bits_bound(mw: int, w_bits: int, a_bits: int, a_signed: bool) -> int:
    """Accumulator width bound from the data types alone: ceil(alpha + log2(1 + 2^-alpha) + 1),
    alpha = log2(MW) + W + A - 1 - signed(A) [ACC; used by the MVAU LUT estimate]."""
    alpha = math.log2(mw) + w_bits + a_bits - 1 - int(bool(a_signed))
    return int(np.ceil(alpha + math.log2(1 + 2.0 ** (-alpha)) + 1))


def mvtu_lut(mw: int, mh: int, pe: int, simd: int, w_bits: int, a_bits: int, *, a_signed: bool = False,
             thresholds: int = 0, acc_bits: int | None = None, ram_style: str = "auto",
             ram_style_thresholds: str = "auto", res_type: str = "lut") -> int:
    """LUTs = 300 + 1.1*P*(mult + adder + acc + thr + cmp) + c2, truncated to int [FINN-R; MVAU_hls
    lut_estimation], with P=PE, Q=SIMD, W/A weight/input bits:
      mult  = Q*(2*ceil((W+A)/6) - 1)*(W+A)  if res_type == 'lut' else 0
      adder = (W+A)*(2Q - 1)
      acc   = min(acc_bits (FINN default INT32), acc_bits_bound(MW, W, A, signed A))
      thr   = thresholds*acc*ceil(TMEM/64), cmp = thresholds*acc   only with thresholds in LUTRAM
              (ram_style_thresholds == 'distributed'; thresholds = 2^B - 1 for a B-bit output)
      c2    = P*Q*W*ceil(WMEM/64)                                      only with ram_style 'distributed'."""
    wa = w_bits + a_bits
    mult = 0 if res_type == "dsp" else simd * (2 * math.ceil(wa / 6) - 1) * wa
    adder = wa * (2 * simd - 1)
    acc = min(32 if acc_bits is None else acc_bits, acc_bits_bound(mw, w_bits, a_bits, a_signed))
    thr = cmp = 0
    if thresholds and ram_style_thresholds == "distributed":
        thr = thresholds * acc * math.ceil(mvtu_tmem(mh, pe, thresholds) / 64)
        cmp = thresholds * acc
    c2 = 0
    if ram_style == "distributed":
        c2 = pe * simd * w_bits * math.ceil(mvtu_wmem(mw, mh, pe, simd) / 64)
    return int(300 + 1.1 * (pe * (mult + adder + acc + thr + cmp)) + c2)


def mvtu_dsp(pe: int, simd: int, w_bits: int, a_bits: int, res_type: str = "lut") -> int:
    """DSPs = P*Q*ceil((W+A)/48) when res_type == 'dsp', else 0 [MVAU_hls dsp_estimation; the source
    itself marks it 'TODO: more accurate modelling']."""
    return int(pe * simd * math.ceil((w_bits + a_bits) / 48)) if res_type == "dsp" else 0


# ------------------------------------------------------------------------------ sliding window

def swg_cycles(ifm_ch: int, ifm_dim: Sequence[int], ofm_dim: Sequence[int], kernel: Sequence[int],
               stride: Sequence[int], simd: int, dilation: int = 1) -> int:
    """finn-hlslib ConvolutionInputGenerator loop nest [SWG get_exp_cycles, 2-D, mmv=1]:
    IW*KH*dil*(C/SIMD) cycles to prefill KH rows, then per output row
    max(write = OW*KW*KH*C/SIMD, read = stride_w*IW*C/SIMD).  (The brief's 'IFM pixels*C/SIMD' is
    the read term only; for stride 1 the write term OW*K^2*C/SIMD dominates.)"""
    cf = ifm_ch // simd
    write_block = ofm_dim[1] * kernel[1] * kernel[0] * cf
    read_block = stride[1] * ifm_dim[1] * cf
    return int(ifm_dim[1] * kernel[0] * dilation * cf + ofm_dim[0] * max(write_block, read_block))


# (table depth, port width) pairs of a RAMB18 in SDP mode, UG573 Table 1-10, as used by [SWG]
_BRAM18_ASPECTS = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def swg_bram18(ifm_ch: int, ifm_w: int, kernel: int, stride: int, simd: int, a_bits: int,
               ram_style: str = "auto") -> int:
    """(K + stride) row buffers of depth IW*C/SIMD and width SIMD*A in BRAM18
    [SWG bram_estimation: width chosen from the depth by the RAMB18 aspect table]."""
    if ram_style not in ("auto", "block"):
        return 0
    depth = ifm_w * ifm_ch // simd
    max_depth, width = next(((d, w) for d, w in _BRAM18_ASPECTS if depth <= d), _BRAM18_ASPECTS[-1])
    return int((kernel + stride) * math.ceil(simd * a_bits / width) * math.ceil(depth / max_depth))


def swg_uram(ifm_ch: int, ifm_w: int, kernel: int, stride: int, simd: int, a_bits: int,
             ram_style: str = "auto") -> int:
    """(K + stride)*ceil(SIMD*A/64)*ceil(IW*C/SIMD/4096) when ram_style == 'ultra' [SWG uram_estimation]."""
    if ram_style != "ultra":
        return 0
    return int((kernel + stride) * math.ceil(simd * a_bits / 64) * math.ceil(ifm_w * ifm_ch / simd / 4096))


def swg_lut(ifm_ch: int, ifm_w: int, kernel: int, stride: int, simd: int, a_bits: int,
            ram_style: str = "auto") -> int:
    """300 + (K + stride)*SIMD*A*ceil(IW*C/SIMD/64) LUTRAM when ram_style == 'distributed' [SWG lut_estimation]."""
    ram = 0
    if ram_style == "distributed":
        ram = (kernel + stride) * simd * a_bits * math.ceil(ifm_w * ifm_ch / simd / 64)
    return int(300 + ram)


# ------------------------------------------------------------ thresholding / channelwise ops

def streaming_cycles(channels: int, pixels: int, pe: int) -> int:
    """Element-wise streaming layers (Thresholding, ChannelwiseOp, AddStreams, Concat): one folded
    word per cycle, cycles = pixels*channels/PE [THR/AddStreams get_exp_cycles = prod(folded oshape[:-1])]."""
    return pixels * (channels // pe)


def thresholding_lut(channels: int, pe: int, a_bits: int, ram_style: str = "distributed") -> int:
    """LUTs = A*P comparators + P*A*ceil(TMEM/64) LUTRAM when distributed and TMEM = C/PE > 1 [THR].
    Note: FINN's formula ignores the number of threshold steps; kept verbatim for comparability."""
    tmem = channels // pe
    lutram = pe * a_bits * math.ceil(tmem / 64) if ram_style == "distributed" and tmem > 1 else 0
    return int(a_bits * pe + lutram)


def thresholding_bram18(channels: int, pe: int, a_bits: int, ram_style: str = "distributed") -> int:
    """BRAM18 = ceil(A*P/16)*ceil(TMEM/1024) when ram_style == 'block' and TMEM > 1 [THR]."""
    tmem = channels // pe
    if ram_style == "block" and tmem > 1:
        return int(math.ceil(a_bits * pe / 16) * math.ceil(tmem / 1024))
    return 0


def addstreams_lut(pe: int, a_bits: int) -> int:
    """[qpass] PE adders of A+1 bits plus ~50 LUTs of stream control (FINN estimates 0)."""
    return int(50 + pe * (a_bits + 1))


def concat_lut(simd: int, a_bits: int, n_inputs: int) -> int:
    """[qpass] an n-way SIMD*A-bit output multiplexer, ~ceil(n/4) LUT6 levels per bit, + 50 control."""
    return int(50 + simd * a_bits * math.ceil(n_inputs / 4))


# ---------------------------------------------------------------------------------------- pools

def pool_cycles(kind: str, channels: int, ifm_dim: Sequence[int], ofm_dim: Sequence[int], pe: int) -> int:
    """Pools read every folded input word once:
    - 'global_avg': pixels*C/PE + C/PE (accumulate, then emit one pixel) [POOL GlobalAccPool].
    - 'max'/'avg' (non-overlapping, StreamingMaxPool loop nest): (IH*IW + OH*OW)*C/PE, one cycle per
      input word plus one per output word.  FINN's 2-D estimate IW*(IW + IW/k) (all channels in
      parallel) charges the output flush once per input row instead of per output row."""
    cf = channels // pe
    ipix = ifm_dim[0] * ifm_dim[1]
    if kind == "global_avg":
        return ipix * cf + cf
    return (ipix + ofm_dim[0] * ofm_dim[1]) * cf


def pool_lut(kind: str, channels: int, ifm_w: int, ofm_w: int, pe: int, a_bits: int) -> int:
    """[qpass] PE comparators/adders of A bits (+log2 window growth for avg) plus a LUTRAM row buffer
    of OW*C/PE words of PE*A bits (FINN estimates 0). GlobalAvgPool keeps C/PE accumulators."""
    acc = a_bits if kind == "max" else a_bits + 8
    depth = (channels // pe) * (1 if kind == "global_avg" else ofm_w)
    return int(100 + pe * acc * (1 + math.ceil(depth / 64)))


# ------------------------------------------------------------------------- accumulator width

def acc_bits_for_range(lo: int, hi: int, final_no_activation: bool = False) -> tuple[int, bool]:
    """Minimal accumulator (bits, signed) holding the exact range lo..hi [ACC]:
    UINT ceil(log2(hi+1)) if lo >= 0, else INT ceil(log2(max(-lo, 1+hi)) + 1).
    A last no-activation layer (its accumulator is the graph output) is rounded up to a multiple of 8."""
    lo, hi = int(lo), int(hi)
    if lo > hi:
        raise QpassError(f"empty accumulator range {lo}..{hi}")
    if lo >= 0:
        bits, signed = max(1, math.ceil(math.log2(hi + 1))), False
    else:
        bits, signed = math.ceil(math.log2(max(-lo, 1 + hi)) + 1), True
    if final_no_activation:
        bits = _ceil_div(bits, 8) * 8
    return int(bits), signed


def matvec_acc_range(weights: np.ndarray, a_min: int, a_max: int) -> tuple[int, int]:
    """Exact accumulator range of x @ W over inputs x in [a_min, a_max]^MW, weights (MW, MH): per
    output column the sum of min/max(w*a_min, w*a_max), then min/max over columns (as qonnx
    calculate_matvec_accumulator_range)."""
    w = np.asarray(weights, dtype=np.int64)
    if w.ndim != 2:
        raise QpassError(f"weights must be (MW, MH), got shape {w.shape}")
    p, q = w * int(a_min), w * int(a_max)
    return int(np.minimum(p, q).sum(axis=0).min()), int(np.maximum(p, q).sum(axis=0).max())


# ------------------------------------------------------------------------------ pipeline level

def fps(max_cycles: int, clock_ns: float) -> float:
    """Frames per second = f_clk / max_cycles: the slowest layer sets the pipeline rate [PERF]."""
    return 0.0 if max_cycles <= 0 else (1e9 / clock_ns) / max_cycles


def target_cycles(target_fps: float, clock_ns: float) -> float:
    """Cycle budget per frame for a target rate: (1e9/clk_ns)/target_fps [FOLD / FINN build cfg]."""
    if target_fps <= 0 or clock_ns <= 0:
        raise QpassError(f"target_fps and clock_ns must be positive, got {target_fps}, {clock_ns}")
    return (1e9 / clock_ns) / target_fps


def critical_path_cycles(cycles: Mapping[str, int], edges: Iterable[tuple[str, str]] | None = None) -> int:
    """Pessimistic latency: the largest sum of per-layer cycles along any input->output path, i.e. no
    overlap between layers [PERF dataflow_performance 'critical_path_cycles']. edges=None: a chain."""
    if edges is None:
        return int(sum(cycles.values()))
    edges = list(edges)
    at: dict[str, int] = {}
    for n in topo_order(list(cycles), edges):
        at[n] = cycles[n] + max((at[a] for a, b in edges if b == n), default=0)
    return int(max(at.values(), default=0))


def topo_order(nodes: Sequence[str], edges: Sequence[tuple[str, str]]) -> list[str]:
    """Kahn's topological order, ties broken by position in ``nodes``; QpassError on a cycle."""
    pos = {n: i for i, n in enumerate(nodes)}
    indeg = {n: 0 for n in nodes}
    succ: dict[str, list[str]] = {n: [] for n in nodes}
    for a, b in edges:
        if a not in pos or b not in pos:
            raise QpassError(f"edge ({a}, {b}) names an unknown layer")
        succ[a].append(b)
        indeg[b] += 1
    import heapq

    ready = [(pos[n], n) for n in nodes if indeg[n] == 0]
    heapq.heapify(ready)
    out = []
    while ready:
        _, n = heapq.heappop(ready)
        out.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                heapq.heappush(ready, (pos[m], m))
    if len(out) != len(nodes):
        raise QpassError("dataflow graph has a cycle")
    return out


#: [qpass] assumed HLS pipeline depth in cycles (input read -> output write of one iteration) of every layer
#: without an adder tree; a layout-only Reorder has 0. Used by the FIFO simulation only; FIFO depths are insensitive
#: to these few cycles.
PIPELINE_DEPTH = 2


def mvtu_pipeline_depth(simd: int = 1) -> int:
    """[qpass] assumed MVTU pipeline depth: 4 + ceil(log2 SIMD) (adder tree)."""
    return 4 + math.ceil(math.log2(max(1, simd)))
