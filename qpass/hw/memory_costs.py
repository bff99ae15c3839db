"""Cost models of the code qpass emits (``qpass.backends.hls``), where FINN's formulas (``cost_models``) describe a
different implementation. Every constant is an assumption stated here and in the export report.

Memories (weights, thresholds, line buffers, FIFOs) are priced by what Vivado maps them to:
  - ``ram_style`` "auto" resolves to LUTRAM for a memory of at most ``AUTO_LUTRAM_DEPTH`` = 128 words (FINN's
    embedded-mode rule, MVAU ``bram_estimation``: "embedded with WMEM <= 128 -> 0 BRAM"), else block RAM.
  - block RAM: the cheapest RAMB18 aspect ratio (UG573 Table 1-10: 512x36, 1024x18, 2048x9, 4096x4, 8192x2,
    16384x1), ceil(depth/d) * ceil(width/w) per memory; UltraRAM: ceil(width/72) * ceil(depth/4096).
  - LUTRAM: a ROM is one LUT6 per bit per 64 words; a RAM (one write and one read port) a RAM64M, 4 LUTs per 3
    bits per 64 words (UG474).
Weights are embedded constant ROMs, one per PE (finn-hlslib ``m_weights[PE][WMEM]``, partitioned on PE), of SIMD*W
bits per word, W = 1 for bipolar weights (1-bit storage). Thresholds: one table per PE and step (partitioned on both)
of TMEM words of the accumulator width; a single word (TMEM = 1) is a constant folded into its comparator.
A binary layer (bipolar weights and inputs) computes XNOR-popcount: ``XNOR_POPCOUNT_LUT_PER_INPUT`` = 87/32 LUT per
SIMD input (yosys 0.23 synth_xilinx of one 32-input PE: 87 LUT as XNOR-popcount against 729 with 2-bit multiplies,
/work/shared/anchors.md section 8). Other products use FINN-R's LUT multiplier (``res_type`` lut) or a DSP48 each
(``res_type`` dsp, chosen for products wider than ``DSP_MIN_PRODUCT_BITS``).
FIFOs: up to ``QSRL_MAX_DEPTH`` = 256 words SRL shift registers (FINN ``max_qsrl_depth``), one LUT per bit per 32 words
+ 8 control LUTs; deeper ones block RAM (+ 30 control LUTs). Data-width converters: one register bit and one mux
LUT per bit of the wider side [qpass assumption].
"""
from __future__ import annotations

import math

from qpass.hw import cost_models as cm

AUTO_LUTRAM_DEPTH = 128
QSRL_MAX_DEPTH = 256
XNOR_POPCOUNT_LUT_PER_INPUT = 87 / 32
DSP_MIN_PRODUCT_BITS = 9  # W + A above 8 bits (e.g. 8x8): DSP48; 4x4 and below stay in LUTs
#: the estimate's assumptions in one paragraph, for reports
ASSUMPTIONS = ("estimate assumptions: weights are embedded ROMs, one per PE, SIMD*W bits wide (W = 1 for bipolar); "
               "ram_style auto = LUTRAM up to 128 words, else block RAM at the cheapest RAMB18 aspect; thresholds one "
               "table per PE and step (a single word is a constant in its comparator), one comparator of the "
               "accumulator width per step; binary layers XNOR-popcount at 87/32 LUT per input (yosys 0.23); "
               "multipliers FINN-R LUTs up to 8-bit products, else one DSP48 each; sliding windows K+stride row "
               "buffers; FIFOs SRL up to 256 words, else block RAM; width converters 2 LUT per bit of the wider "
               "side; 300 control LUTs per matrix unit / window (FINN-R). No DMA / AXI shell.")
BRAM18_ASPECTS = ((512, 36), (1024, 18), (2048, 9), (4096, 4), (8192, 2), (16384, 1))


def resolve_ram_style(depth: int, ram_style: str = "auto") -> str:
    """The concrete style of a memory of ``depth`` words: ``ram_style`` unless it is "auto"."""
    if ram_style != "auto":
        return ram_style
    return "distributed" if depth <= AUTO_LUTRAM_DEPTH else "block"


def choose_res_type(w_bits: int, a_bits: int, bipolar: bool = False) -> str:
    """LUT multipliers up to 8-bit products, DSP48 above; bipolar weights or inputs need no multiplier (a product
    by +-1 is a conditional negation)."""
    return "dsp" if not bipolar and w_bits + a_bits >= DSP_MIN_PRODUCT_BITS else "lut"


def bram18_for(depth: int, width: int, max_width: int = 36) -> int:
    """RAMB18s of one depth x width memory: the cheapest aspect ratio whose port is at most ``max_width`` bits (36:
    a read-only or simple-dual-port memory; 18: a true-dual-port RAM with a read/write port, UG573)."""
    if depth <= 0 or width <= 0:
        return 0
    return min(math.ceil(depth / d) * math.ceil(width / w) for d, w in BRAM18_ASPECTS if w <= max_width)


def lutram_for(depth: int, width: int, writable: bool) -> int:
    if depth <= 0 or width <= 0:
        return 0
    if writable:
        return 4 * math.ceil(width / 3) * math.ceil(depth / 64)
    return width * math.ceil(depth / 64)


def memory(depth: int, width: int, copies: int = 1, ram_style: str = "auto",
           writable: bool = False) -> tuple[int, int, int]:
    """(LUT, BRAM18, URAM) of ``copies`` memories of depth x width bits."""
    style = resolve_ram_style(depth, ram_style)
    if style == "distributed":
        return copies * lutram_for(depth, width, writable), 0, 0
    if style == "ultra":
        return 0, 0, copies * math.ceil(width / 72) * math.ceil(depth / 4096)
    return 0, copies * bram18_for(depth, width), 0


def xnor_popcount_lut(simd: int) -> int:
    return math.ceil(XNOR_POPCOUNT_LUT_PER_INPUT * simd)


def mac_lut(simd: int, w_bits: int, a_bits: int, res_type: str) -> int:
    """FINN-R per PE: SIMD LUT multipliers (none on DSPs) + the adder tree."""
    wa = w_bits + a_bits
    mult = 0 if res_type == "dsp" else simd * (2 * math.ceil(wa / 6) - 1) * wa
    return mult + wa * (2 * simd - 1)


def matrix_unit(mw: int, mh: int, pe: int, simd: int, w_bits: int, a_bits: int, *, a_signed: bool, binary: bool,
                w_store_bits: int, thresholds: int, acc_bits: int | None, ram_style: str, ram_style_thresholds: str,
                res_type: str, mem=memory) -> tuple[int, int, int, int]:
    """(LUT, BRAM18, URAM, DSP) of a matrix-vector(-threshold) unit as emitted: 300 control LUTs + 1.1 x PE x
    (products + adder tree or XNOR-popcount + accumulator + comparators) [FINN-R structure] + weight and threshold
    memories (module docstring; ``mem`` prices them: ``memory``, or ``qpass.hw.weight_memory.runtime_memory`` for
    runtime-writable ones)."""
    wmem, tmem = cm.mvtu_wmem(mw, mh, pe, simd), (mh // pe if thresholds else 0)
    acc = min(32 if acc_bits is None else acc_bits, cm.acc_bits_bound(mw, w_bits, a_bits, a_signed))
    compute = xnor_popcount_lut(simd) if binary else mac_lut(simd, w_bits, a_bits, res_type)
    cmp = thresholds * acc
    w_lut, w_bram, w_uram = mem(wmem, simd * w_store_bits, pe, ram_style)
    t_lut = t_bram = t_uram = 0
    if thresholds and tmem > 1:
        t_lut, t_bram, t_uram = mem(tmem, acc, pe * thresholds, ram_style_thresholds)
    lut = int(300 + 1.1 * pe * (compute + acc + cmp)) + w_lut + t_lut
    dsp = 0 if binary or res_type != "dsp" else pe * simd * math.ceil((w_bits + a_bits) / 48)
    return lut, w_bram + t_bram, w_uram + t_uram, dsp


def line_buffer(ifm_ch: int, ifm_w: int, kernel: int, stride: int, simd: int, a_bits: int,
                ram_style: str = "auto") -> tuple[int, int, int]:
    """(LUT, BRAM18, URAM) of a sliding window: 300 control LUTs + (K + stride) row buffers of IW*C/SIMD words of
    SIMD*A bits (FINN ConvolutionInputGenerator's buffers), RAMs written and read every cycle."""
    lut, bram, uram = memory(ifm_w * ifm_ch // simd, simd * a_bits, kernel + stride, ram_style, writable=True)
    return 300 + lut, bram, uram


def fifo(depth: int, width: int) -> tuple[int, int]:
    """(LUT, BRAM18) of one FIFO of ``depth`` words of ``width`` bits."""
    if depth <= QSRL_MAX_DEPTH:
        return 8 + width * math.ceil(depth / 32), 0
    return 30, bram18_for(depth, width)


def width_converter(in_bits: int, out_bits: int) -> int:
    return 0 if in_bits == out_bits else 2 * max(in_bits, out_bits)
