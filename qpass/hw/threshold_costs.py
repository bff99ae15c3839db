"""Features of the threshold activations in the yosys-calibrated resource formulas (``qpass.hw.calibration``): the
threshold ROM's columns, constant comparisons, and the binary search the RTL backend emits for large threshold
sets (``qp_activate`` with BS = 1 in ``qpass/backends/rtl/hdl/qpass_eltwise.sv``)."""
from __future__ import annotations

import math

#: threshold sets of at least this many steps are emitted as a binary search (clog2(NT + 1) comparators one after
#: the other, as FINN's thresholding unit) instead of NT comparators and their count, when every channel's
#: thresholds are non-decreasing (the RTL backend checks; the folding search assumes they are)
BS_MIN_STEPS = 16


def _clog2(n: float) -> int:
    return max(1, math.ceil(math.log2(max(2, n))))


def varying_bits(width: float, words: int) -> float:
    """Expected bit columns of a words x width ROM of random bits that are not constant: width * (1 - 2^(1-words))."""
    return width * (1.0 - 2.0 ** (1 - words)) if words > 1 else 0.0


def threshold_columns(p: dict, words: int) -> float:
    """Distinct varying bit columns of a threshold ROM of ``words`` words of PE*NT*TB bits: TCOLS, counted from the
    emitted image (``qpass.backends.rtl.synth.instance_params``), else the random-bits expectation capped at the
    2^words - 2 distinct non-constant columns. Yosys keeps one flip-flop and one LUT-ROM column per distinct
    varying column (a constant column is a constant, equal columns are merged)."""
    if "TCOLS" in p:
        return float(p["TCOLS"])
    cap = 2.0 ** min(words, 60) - 2
    return min(varying_bits(p["PE"] * p.get("NT", 0) * p.get("TB", 1), words) * p.get("TSHARE", 1.0), cap)


#: distinct varying threshold-ROM columns per threshold bit in the digits and CNV designs (TCOLS / (PE*NT*AB) of
#: the matrix units with row folds, bench/results/yosys_layers.json): 0.5-0.6 with several steps, 0.1-0.25 for
#: one (sign activations: small thresholds, equal high bits); the folding search's estimate uses them
TSHARE_STEPS, TSHARE_SIGN = 0.6, 0.2


def search_stages(nt: int) -> int:
    """Comparisons of the binary search over NT thresholds: clog2(NT + 1)."""
    return max(1, math.ceil(math.log2(nt + 1)))


def search_compare(pe: int, nt: int, tb: int, width: int, nf: int) -> dict[str, float]:
    """Features of the binary search (BS = 1) over NT thresholds of TB bits per PE, comparing a ``width``-bit value:
    N = clog2(NT + 1) comparators in a row (a carry chain each: ``bs_cmp``); stage i reads its threshold from a ROM
    of NF * 2^i words (the row fold and the i result bits so far; one constant when NF == 1 and i == 0), a LUT-ROM
    of one LUT6 per bit and 64 words (``bs_rom``)."""
    n = search_stages(nt)
    words = sum(math.ceil(nf * 2 ** i / 64) for i in range(0 if nf > 1 else 1, n))
    return {"bs_cmp": pe * n * width, "bs_rom": pe * tb * words}


def const_compare(pe: int, nt: int, width: int, live: int, live_cmp: int | None = None) -> dict[str, float]:
    """Features of PE x NT comparisons of a ``width``-bit signed value with constant thresholds (a one-word
    threshold ROM) and the count of those passed. Yosys (synth_xilinx) meets the comparisons at ``alumacc``, while
    the ROM is still a memory: a comparison wider than 6 bits becomes a CARRY4 chain (with its LUTs) for every
    threshold, trivial or not; up to 6 bits it stays logic that ABC maps, once the ROM is constant, to one LUT6 per
    output count bit of each PE with a non-trivial threshold (``live``). Measured on a 16-PE qp_threshold with
    thresholds 4, 10, 16: 6-bit signed input 32 LUT, 6-bit unsigned (7-bit comparison) 176 LUT + 48 CARRY4.
    ``live_cmp``: the non-trivial thresholds counted from the image (a threshold outside the input's range is a
    constant comparison, no chain; random thresholds one bit wider than the input: about half), else PE * NT."""
    if width <= 6:
        return {"cmp_lut": live * math.ceil(math.log2(nt + 1))}
    n = pe * nt if live_cmp is None else live_cmp
    return {"cmp_const": n * width, "cmp_const_n": n}  # a chain's bits, and its ends per comparison


def activation_features(p: dict, width: int, nf: int) -> dict[str, float]:
    """LUT features of the threshold activation of a module with parameters ``p`` (PE, NT, TB, BS; TLIVE when
    counted from the image) comparing a ``width``-bit value, its thresholds constant (NF == 1) or read per row fold
    from a ROM (NF > 1, whose LUT-ROM columns are ``trom``)."""
    pe, nt, tb = p["PE"], p["NT"], p["TB"]
    f: dict[str, float] = {}
    if p.get("BS", 0):
        f.update(search_compare(pe, nt, tb, max(width, tb), nf))
    elif nf == 1:
        f.update(const_compare(pe, nt, max(width, tb), p.get("TLIVE", pe), p.get("CLIVE")))
    else:
        f["cmp"] = pe * nt * tb
    if nf > 1 and not p.get("BS", 0):  # the threshold ROM in LUTs: one LUT6 per varying column and 64 words
        f["trom"] = threshold_columns(p, nf) * math.ceil(nf / 64)
    return f


def column_lut(support: int) -> int:
    """LUT6 of one stage-ROM bit column whose value depends on ``support`` address bits, merged with the compared
    value's bit into the comparison (one more input): none for a constant column, else ceil(2^(support+1) / 64)."""
    return 0 if support <= 0 else -(-(2 ** (support + 1)) // 64)


def column_support(col: list[int], abits: int) -> int:
    """Address bits a ROM bit column (one bit per word, 2^abits words) depends on."""
    n = len(col)
    return sum(1 for m in range(abits) if any(col[j] != col[j ^ (1 << m)] for j in range(n) if j ^ (1 << m) < n))


def search_table_luts(words: list[int], abits: int, tb: int) -> int:
    """Priced columns (``column_lut``) of one lane's stage ROM, its TB-bit words (addresses of abits bits) as read
    from the image."""
    words = [w & ((1 << tb) - 1) for w in words]
    return sum(column_lut(column_support([(w >> b) & 1 for w in words], abits)) for b in range(tb))


def expected_table_luts(m: int, nt: int) -> int:
    """``search_table_luts`` summed over the stages of one lane whose thresholds are non-decreasing over a range of
    2^m, the same in every row fold (a standalone MultiThreshold after a per-tensor scaled sum): stage i's
    candidates step by 2^(m-i), so bit b follows only the top min(i, m - b) result bits of the search so far (the
    low prefix bits move the candidate by less than 2^b): the residual CNN's 8-bit add thresholds (m = 16, 18)
    price 154 / 176 LUT per lane this way, 150 / 180 counted from their images."""
    return sum(column_lut(min(i, m - b)) for i in range(search_stages(nt)) for b in range(m))


def threshold_lut(p: dict) -> dict[str, float]:
    """qp_threshold: counter plus the activation; constant thresholds compare as wide as the input (one more bit
    when unsigned). A binary search (BS = 1) is priced by its stage ROMs' columns merged with the comparisons
    (``bs_tab``: SCOST counted from the emitted images, else ``expected_table_luts`` with thresholds spanning the
    TB - 1 magnitude bits): Yosys maps each comparison to a 6-bit carry chain plus LUT6 / MUXF7 / MUXF8 trees of
    the candidate bits, so the cost follows the tables' content, not the input width (the add thresholds of the
    residual CNN at 17 bits, scaled by 4 to 19 bits: 315 -> 323 LUT; the other add's, 19 bits: 442)."""
    nf = p["C"] // p["PE"]
    f = {"const": 1.0, "ctr": float(_clog2(nf))}
    if p.get("BS", 0):
        f["bs_tab"] = float(p["SCOST"]) if "SCOST" in p else p["PE"] * expected_table_luts(p["TB"] - 1, p["NT"])
        return f
    f.update(activation_features(p, p["IB"] + (0 if p.get("I_SIGNED", 0) else 1), nf))
    return f


def threshold_ff(p: dict) -> dict[str, float]:
    nf = p["C"] // p["PE"]
    registered = nf > 1 and not p.get("BS", 0)  # (the search reads its stage ROMs unregistered)
    return {"const": 1.0, "ctr": float(_clog2(nf)), "thr": threshold_columns(p, nf) if registered else 0.0}
