"""Structural terms of the matrix-vector unit (``qp_mvtu``) in the yosys-calibrated resource formulas
(``qpass.hw.calibration``): what Yosys (synth_xilinx, 0.23) builds around the datapath for a given folding - the
input buffer's placement and bypass, the weight ROM's bank multiplexer, the stage-0 register of a binary search,
the row-fold select ABC merges into XNOR lanes, the product alumacc merges into each PE's accumulator adder and the
input multiplexer ABC merges into wide LUT multipliers."""
from __future__ import annotations

import math

from qpass.hw.memory_costs import BRAM18_ASPECTS
from qpass.hw.threshold_costs import varying_bits


def _clog2(n: float) -> int:
    return max(1, math.ceil(math.log2(max(2, n))))


def xnor_wide_luts(nf: int) -> int:
    """LUT6 beyond one per lane that ABC spends on an XNOR lane's agreement bit when the unit has row folds: it
    merges the input-buffer multiplexer and its select (rd = row fold counter == 0, clog2(NF) bits) into the XNOR
    with the lane's weight bit, a function of clog2(NF) + 3 inputs: a LUT7 (two LUT6 and a MUXF7) at 7, a LUT8 (four
    LUT6, MUXF7s, a MUXF8) at 8; wider than 8 it has no cell and decodes rd once. XNOR PE 1 x SIMD 32 (Yosys 0.23):
    NF 8 208 LUT, NF 16 235, NF 32 280, NF 64 237; CNN 1-bit fc1 (PE 2, NF 32): 123 MUXF7 + 49 MUXF8."""
    if nf < 2:
        return 0
    return {7: 1, 8: 3}.get(_clog2(nf) + 3, 0)


def stage0_columns(p: dict, nf: int) -> float:
    """Flip-flops of a binary search's stage-0 ROM with NF > 1 row folds: read at the registered row fold alone,
    Yosys moves that register to the ROM's output (memory_dff), one flip-flop per distinct varying column of the
    NF words of PE first candidates (S0COLS, counted from the images; else TB random bits per PE over NF words).
    CNN 8-bit fc1 (NF 64, TB 22): 20 of its 104 FF, none in the formula before (0.74 of yosys)."""
    if "S0COLS" in p:
        return float(p["S0COLS"])
    return varying_bits(p["PE"] * p.get("TB", 1), nf)


def ibuf_bypass(p: dict) -> int:
    """Bits of the word Yosys forwards around a block-RAM input buffer (``ibuf_in_bram``): the buffer is read
    asynchronously at the registered column-fold counter, so Yosys moves that register into the RAM's read port and
    keeps the HDL's read-after-write order with a soft bypass (the written word in flip-flops, a multiplexer LUT per
    bit) for the bits the unit reads: SIMD * IB, the sign bits alone for XNOR (CNV conv5: 30 FF and ~90 LUT that
    the LUT-RAM-less formula missed)."""
    return p["SIMD"] * (1 if p.get("XNOR", 0) else p["IB"])


def depth_banks(depth: int, width: int) -> int:
    """Banks in depth of a ROM of ``depth`` x ``width`` bits in the cheapest RAMB18 aspect (``bram18_for``'s)."""
    if depth < 2 or width < 1:
        return 1
    best = min((math.ceil(depth / d) * math.ceil(width / w), math.ceil(depth / d)) for d, w in BRAM18_ASPECTS)
    return best[1]


def bank_mux_luts(banks: int) -> int:
    """LUTs per output bit of the multiplexer Yosys puts behind a block-RAM ROM split into ``banks`` in depth,
    measured on lone registered ROMs of random words (synth_xilinx, Yosys 0.23): 2304 x 16 (3 banks) 1, 2304 x 36 /
    x 72 / x 128 and 2560 x 128 (5 banks) 4 (LUT1 + LUT3 pairs, MUXF7, MUXF8), 4608 x 32 and 9216 x 32 about 3,
    one bank (2048 x 128 in 2K x 9) none."""
    return 0 if banks <= 1 else 1 if banks <= 3 else 4 if banks <= 7 else 3


def ibuf_in_bram(p: dict) -> bool:
    """Whether Yosys puts qp_mvtu's input buffer (SF words of SIMD*IB bits, written at row fold 0, read at the
    registered column-fold counter) in block RAM: never when it fits one LUT-RAM bank in depth (SF <= 64: RAM32M /
    RAM64M), else when it would take more than 16 RAM64M (measured: 65 x 32 bits in one RAMB18 instead of 22
    RAM64M; 512 x 2 bits stays in 8 RAM64M)."""
    sf, nf = p["MW"] // p["SIMD"], p["MH"] // p["PE"]
    return nf > 1 and sf > 64 and math.ceil(sf / 64) * math.ceil(p["SIMD"] * p["IB"] / 3) > 16


def merged_product(p: dict) -> int:
    """Partial-product bits beyond a plain product of the one product per PE that Yosys' alumacc merges into the
    accumulator's adder when the accumulator's top bit is unused (no thresholds and an output narrower than AB, as
    every NT == 0 layer emits OB = AB - 1): wreduce narrows the adder and the first product to AB - 1 bits alike,
    so ``sum = acc + x0 * w0`` becomes one $macc (the other SIMD - 1 products stay IB + WB-bit $macc cells), and
    maccmap extends that product's min(IB, WB) rows to the accumulator's width: AB - IB - WB bits more per row,
    whatever SIMD. Measured (Yosys 0.23, one lane, 10 row folds): 4 x 4 bits 131 LUT with OB = AB - 1 against
    111 with OB = AB, 2 x 2 bits 74 against 67; with thresholds no product is merged. The residual CNN 4-bit
    fc_Gemm (PE 1, SIMD 1, AB 12, OB 11): 118 LUT, 99 from the formula without the term."""
    if p.get("NT", 0) or p.get("OB", p["AB"] - 1) >= p["AB"]:
        return 0
    ib, wb = p["IB"], p.get("WV", p["WB"])
    return p["PE"] * min(ib, wb) * max(0, p["AB"] - ib - wb)


def xmux_luts(p: dict) -> int:
    """Inputs beyond a LUT6's of a lane's product when the unit has row folds: ABC merges the input buffer's
    multiplexer (x = rd ? in : buf) into the LUTs of the product, whose IB + WB inputs already fill a LUT6 at
    2 x 4 bits; at 4 x 4 bits (8 inputs, LUT8s) the merged multiplexer costs ~20 LUT per lane with PE 1 and
    ~9-14 with PE 4 (Yosys 0.23: MW 64, SIMD 8 - 32, NF 1 -> 16: 359 -> 542, 1035 -> 1783 LUT), at 2 x 2, 2 x 4
    and 4 x 2 bits nothing beyond the buffer itself. Per lane: IB + WB - 6 when positive (0 without row folds)."""
    if p["MH"] // p["PE"] < 2:
        return 0
    return p["PE"] * p["SIMD"] * max(0, p["IB"] + p.get("WV", p["WB"]) - 6)
