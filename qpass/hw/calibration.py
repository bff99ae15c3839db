"""Resource formulas of the RTL layer modules (``qpass/backends/rtl/hdl/qpass_*.sv``), calibrated against Yosys
``synth_xilinx`` (7-series cells: LUT1-6 plus LUT-RAM/SRL LUTs, FDxE flip-flops, RAMB18 units, DSP48E1).

Each module kind has a FINN-like linear formula: a constant (control, counters) plus per-PE / per-SIMD-lane terms
(multipliers, adder chain, accumulator, threshold comparators, line buffers) with coefficients fitted by
non-negative least squares on the relative error over a grid of module parameters (``bench/calibrate_yosys.py``,
which writes ``calibration_yosys.json`` beside this file with the Yosys version and the command that regenerates
it). Block RAM is structural, not fitted: Yosys maps a ``rom_style = "block"`` weight ROM of D >= 2 words to RAMB18/36
at 36 bits per RAMB18 unit for D <= 512 (the cheapest aspect of ``memory_costs.bram18_for``), after dropping the
bit columns that are constant over all D words (for random bits a fraction 2^(1 - D); +-1 weights vary in one bit
of their two). A one-word weight ROM is a constant: its products are constant multiplications (the ``*_const``
terms). DSPs: one DSP48 per product when the module multiplies on DSPs (``USE_DSP``), constant weights included.

The formulas (coefficients c_* from the data file; lanes = PE * SIMD, AB accumulator bits, NT threshold steps of TB
bits, NF = MH/PE row folds, SF = MW/SIMD column folds):
  qp_mvtu   LUT = c0 + c_ctr*log2(NF*SF) + c_acc*PE*AB + lanes*(c_mult*M(IB, W) + c_add*AB)   (LUT multipliers;
                  M = FINN-R's multiplier, (2*ceil((IB+W)/6) - 1)*(IB+W); W = 1 for +-1 weights)
                  + c_mprod*PE*min(IB, W)*(AB - IB - W) (``merged_product``) + c_xmux*lanes*(IB + W - 6) (NF > 1,
                  ``xmux_luts``)
                  | lanes*(c_pop + c_xnor_wide*``xnor_wide_luts``(NF)) + c_pop1*PE*AB (SIMD 1) (XNOR-popcount)
                  | lanes*c_dsp_add*AB (DSPs)
                  + c_cmp*PE*NT*TB (comparators) + c_trom*MH*NT*TB/8 (their ROM, NF > 1)
                  | NT >= BS_MIN_STEPS (binary search, ``qpass.hw.threshold_costs.search_compare``):
                  c_bs_cmp*PE*N*W + c_bs_rom*PE*TB*sum(ceil(NF*2^i/64)), N = clog2(NT+1) stages
                  + c_ibuf*SIMD*IB*ceil(SF/32) (input buffer, NF > 1) | c_ibuf_ff*SIMD*IB (SF == 1: a register)
            FF  = c0 + c_ctr*log2(NF*SF) + (c_acc | c_acc_thr)*PE*AB + c_thr*PE*NT*TB + c_ibuf*SIMD*IB*SF (SF <= 2)
                  | BS with NF > 1: c_bs0*S0COLS (stage 0's ROM output register, ``stage0_columns``)
  qp_swg    LUT = c0 + c_ctr*log2(D) + c_buf*SIMD*EB*ceil(D/64) + c_mux*SIMD*EB, D = (K + stride) * PW * C/SIMD
            (the row buffers are LUT-RAM: the window reads them asynchronously)
  qp_threshold  LUT = c0 + c_ctr*log2(NF) + c_cmp*PE*NT*TB + c_trom*C*NT*TB/8
                  | NF == 1 (constant thresholds, ``const_compare``; W = IB (+1 unsigned) bits compared, TLIVE the
                  PEs whose thresholds are not trivial for the input range, counted from the emitted image, else
                  PE): c_cmp_lut*TLIVE*ceil(log2(NT+1)) for W <= 6 (each count bit one LUT6 of the input bits),
                  else c_cmp_const*PE*NT*W (a carry chain per comparison; also qp_mvtu with NF == 1, W = AB)
  qp_maxpool    LUT = c0 + c_ctr*log2(IW*CF) + c_cmp*PE*EB + c_buf*PE*EB*ceil(OW*CF/32)
  qp_add        LUT = c0 + c_add*PE*sum(OB - shift of each set bit of KA, KB but the widest) | c_add_lut*PE*OB
  qp_global_sum LUT = c0 + c_ctr*log2(CF*NPIX) + c_add*PE*OB + c_buf*PE*OB*ceil(CF/64)
("_const" variants of a term: the same term where the operand is a constant, NF*SF == 1 or NF == 1.)

Features are functions of the module's own parameters (``features``), so the same formulas price an RTL instance
exactly (``module_estimate``) and a hardware layer of ``qpass.hw.kinds`` before it is emitted (``layer_params``
maps a cost-model ``Layer`` to the module parameters it would get; ``layer_estimate``).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from qpass.errors import QpassError
from qpass.hw.cost_models import acc_bits_bound
from qpass.hw.layers import Resources
from qpass.hw.memory_costs import bram18_for
from qpass.hw.mvtu_structure import bank_mux_luts, depth_banks, ibuf_bypass, ibuf_in_bram, merged_product, \
    stage0_columns, xmux_luts, xnor_wide_luts
from qpass.hw.threshold_costs import BS_MIN_STEPS, TSHARE_SIGN, TSHARE_STEPS, activation_features, \
    const_compare, threshold_columns, threshold_ff, threshold_lut, varying_bits  # noqa: F401 (const_compare)

DATA = Path(__file__).with_name("calibration_yosys.json")
METRICS = ("lut", "ff")
#: cells below which an error counts as if the module had this many (fit weights, reported errors)
FIT_FLOOR = 20.0


@dataclass
class Estimate:
    """LUT, FF, BRAM18 and DSP of one module (estimated, or counted by Yosys: ``qpass.backends.rtl.synth``)."""

    lut: int = 0
    ff: int = 0
    bram18: int = 0
    dsp: int = 0

    def row(self) -> tuple[int, int, int, int]:
        return (self.lut, self.ff, self.bram18, self.dsp)


def _clog2(n: float) -> int:
    return max(1, math.ceil(math.log2(max(2, n))))


def _bram18(depth: int, width: float) -> int:
    return bram18_for(int(depth), int(math.ceil(width)))


def finn_mult(a_bits: int, w_bits: int) -> int:
    """FINN-R's LUT count of one A x W multiplier: (2 * ceil((A + W) / 6) - 1) * (A + W)."""
    wa = a_bits + w_bits
    return (2 * math.ceil(wa / 6) - 1) * wa


def varying_columns(mem_text: str) -> int:
    """Bit columns of a $readmemh image that are not constant over its words."""
    words = [int(w, 16) for w in mem_text.split()]
    diff = 0
    for w in words[1:]:
        diff |= w ^ words[0]
    return bin(diff).count("1")


def distinct_columns(mem_text: str) -> int:
    """Distinct bit columns of a $readmemh image among those not constant over its words: Yosys merges flip-flops
    (and LUT-ROM outputs) that hold the same column, so a registered ROM of D words keeps at most 2^D - 2 of them."""
    words = [int(w, 16) for w in mem_text.split()]
    if len(words) < 2:
        return 0
    width = max(w.bit_length() for w in words)
    cols = {tuple((w >> b) & 1 for w in words) for b in range(width)}
    return sum(1 for c in cols if 0 < sum(c) < len(c))


# ------------------------------------------------------------------------------------------- features per module

def _pcw(simd: int) -> int:
    """Bits of one PE's popcount (the adder width of the XNOR chain)."""
    return max(1, math.ceil(math.log2(simd + 1)))


def _mvtu(p: dict) -> dict[str, float]:
    pe, simd, ib, wb, ab = p["PE"], p["SIMD"], p["IB"], p.get("WV", p["WB"]), p["AB"]
    nt, tb, nf, sf = p.get("NT", 0), p.get("TB", 1), p["MH"] // p["PE"], p["MW"] // p["SIMD"]
    const_w = nf * sf == 1
    xnor, dsp = bool(p.get("XNOR", 0)), bool(p.get("USE_DSP", 0))
    lanes = pe * simd
    f = {"const": 1.0, "ctr": float(_clog2(nf * sf)), "acc": pe * ab * (sf > 1)}
    if xnor:  # XNOR then a chain of PCW-bit adds per PE (yosys: a compressor tree of PCW-bit columns)
        f["pop"] = lanes
        f["xnor_wide"] = lanes * xnor_wide_luts(nf)
        f["pop_w"] = lanes * _pcw(simd)
        # sum = (sf == 0 ? 0 : acc) + 2 * pop - SIMD is one multi-operand add at the accumulator's width, with or
        # without column folds (held-out fit: 40 -> 42 of 50 design layers within +-15%)
        f["pop_acc"] = lanes * ab
        # per PE, whatever SIMD: sum = acc + 2 * pop - SIMD is two AB-bit carry chains after the popcount (the
        # constant is not merged into the tree)
        f["pop_pe"] = pe * ab
        # one lane per PE: the addend 2 * pop - 1 is +-1, so every sum bit reads the lane's agreement, which ABC
        # merges (with the input multiplexer) into each bit's LUT (CNV fc2, PE 5 x SIMD 1: 253 LUT where SIMD 2
        # takes 200 and SIMD 4 190; 0.81-0.84 of yosys without it)
        f["pop1"] = pe * ab * (simd == 1)
    elif dsp:
        f["dsp_add"] = lanes * ab
    elif p.get("WV") == 1 and not const_w:  # +-1 weights: the product is x or -x, an add/subtract per lane
        f["pm1"] = lanes * (ib + 1)
        f["add"] = lanes * ab
    else:
        f["mult_const" if const_w else "mult"] = lanes * finn_mult(ib, wb)
        f["add"] = lanes * ab
        if not const_w:  # one product per PE merged into the accumulator's adder; the input multiplexer merged
            f["mprod"] = merged_product(p)  # into wide products (``mvtu_structure``)
            f["xmux"] = xmux_luts(p)
    if nt:  # constant thresholds (NF == 1) compared with the AB-bit result register, or a ROM word per row fold
        f.update(activation_features(p, ab, nf))
    tiles = nf * sf
    if tiles >= 2:  # the weight ROM's output multiplexer over its block-RAM banks in depth
        cols = weight_columns(p, tiles)
        f["wmux"] = cols * bank_mux_luts(depth_banks(tiles, math.ceil(cols)))
    if nf > 1:  # LUT-RAM of all IB bits (not pruned to XNOR's sign bits); a read multiplexer per input lane
        # (in block RAM: the bypass of a word written and read in the same cycle, a LUT per bit read, see ibuf_bypass)
        if ibuf_in_bram(p):  # its own term: a bypass multiplexer per bit read, not LUT-RAM (CNV conv4 / conv5)
            f["ibuf_byp"] = ibuf_bypass(p)
        elif sf == 1:  # one word: flip-flops and the read multiplexer, no LUT-RAM; per stored bit like the LUT-RAM
            f["ibuf_ff"] = simd * ib  # term (XNOR's sign bits alone: 3-fold CV LUT 118 instead of 120/130)
        else:
            f["ibuf"] = simd * ib * math.ceil(sf / 32)
        f["xin"] = simd
    return f


def _mvtu_ff(p: dict) -> dict[str, float]:
    """The structure of qp_mvtu's registers: counters; the result register (PE*AB) and, when the row takes several
    column folds, the accumulator (PE*AB); the registered threshold word's varying columns (NF > 1); the input
    vector in flip-flops when it is one word (NF > 1, SF == 1; deeper buffers are LUT-RAM; XNOR keeps sign bits)."""
    nf, sf, nt = p["MH"] // p["PE"], p["MW"] // p["SIMD"], p.get("NT", 0)
    pab = p["PE"] * p["AB"]
    f = {"const": 1.0, "ctr": float(_clog2(nf * sf)), "res": pab, "acc": pab * (sf > 1)}
    if nt and nf > 1 and not p.get("BS", 0):  # (a binary search reads its stage ROMs unregistered)
        f["thr"] = threshold_columns(p, nf)
    elif nt and nf > 1:  # but stage 0's address is the registered row fold: Yosys registers that ROM's output
        f["bs0"] = stage0_columns(p, nf)
    if nf > 1 and sf == 1:
        f["ibuf"] = p["SIMD"] * (1 if p.get("XNOR", 0) else p["IB"])
    elif ibuf_in_bram(p):  # the block-RAM input buffer's bypass register (``ibuf_bypass``)
        f["ibuf"] = ibuf_bypass(p)
    return f


def weight_columns(p: dict, tiles: int) -> float:
    """Varying bit columns of the weight ROM: WCOLS from the emitted image; else from the weights' bit densities
    (WDENS, fraction of ones per stored bit: a column of D words varies unless all D bits agree, 1 - q^D -
    (1 - q)^D for independent words); else the random-bits expectation."""
    if "WCOLS" in p:
        return p["WCOLS"]
    if p.get("WDENS") and tiles > 1:
        return p["PE"] * p["SIMD"] * sum(1.0 - q ** tiles - (1.0 - q) ** tiles for q in p["WDENS"])
    return varying_bits(p["PE"] * p["SIMD"] * p.get("WV", p["WB"]), tiles)


def _mvtu_bram(p: dict) -> int:
    """WCOLS: the ROM image's varying bit columns when the weights are known (an emitted instance); plus the input
    buffer when it is block RAM (``ibuf_in_bram``)."""
    tiles = (p["MH"] // p["PE"]) * (p["MW"] // p["SIMD"])
    ibuf = _bram18(p["MW"] // p["SIMD"], p["SIMD"] * p["IB"]) if ibuf_in_bram(p) else 0
    if tiles < 2:
        return ibuf
    return _bram18(tiles, weight_columns(p, tiles)) + ibuf


def _mvtu_dsp(p: dict) -> int:
    """One DSP48 per product when the module multiplies on DSPs, constant weights included (Yosys maps a constant
    8 x 8-bit product to a DSP48 as well: 64 lanes of one-word weights gave 64 DSPs)."""
    return p["PE"] * p["SIMD"] if p.get("USE_DSP", 0) and not p.get("XNOR", 0) else 0


def _swg(p: dict) -> dict[str, float]:
    c, simd, eb = p["C"], p["SIMD"], p["EB"]
    pw = p["IW"] + 2 * p.get("PAD", 0)
    rows = p["KH"] + p.get("SH", 1)
    depth = rows * pw * c // simd
    return {"const": 1.0, "ctr": float(_clog2(depth)), "buf": simd * eb * math.ceil(depth / 64),
            "mux": simd * eb}


def _swg_ff(p: dict) -> dict[str, float]:
    depth = (p["KH"] + p.get("SH", 1)) * (p["IW"] + 2 * p.get("PAD", 0)) * p["C"] // p["SIMD"]
    return {"const": 1.0, "ctr": float(_clog2(depth))}


def _maxpool(p: dict) -> dict[str, float]:
    pe, eb, cf = p["PE"], p["EB"], p["C"] // p["PE"]
    depth = (p["IW"] // p["KW"]) * cf
    # the window buffer is LUT-RAM read at two addresses (the window's and the output's): per bit one LUT up to 32
    # words (RAM32M), then two per 64 words (RAM64X1D, RAM128X1D's pair and mux): ceil(depth / 32) LUTs per bit
    return {"const": 1.0, "ctr": float(_clog2(p["IW"] * cf)), "cmp": pe * eb, "buf": pe * eb * math.ceil(depth / 32)}


def _maxpool_ff(p: dict) -> dict[str, float]:
    return {"const": 1.0, "ctr": float(_clog2(p["IW"] * p["C"] // p["PE"]))}


def _add(p: dict) -> dict[str, float]:
    """y = KA*a + KB*b as shift-and-add: each set bit of KA and KB a term (a << s), all but the widest added at
    the OB - s bits from its shift up. Inputs of at most 6 bits together (AB_ + BB, when known): each output bit
    is one LUT6 of them."""
    pe, ob = p["PE"], p["OB"]
    if p.get("AB_", 8) + p.get("BB", 8) <= 6:
        return {"const": 1.0, "add_lut": pe * ob}
    widths = sorted(max(0, ob - s) for k in (p.get("KA", 1), p.get("KB", 1))
                    for s in range(abs(int(k)).bit_length()) if abs(int(k)) >> s & 1)
    return {"const": 1.0, "add": pe * sum(widths[:-1])}


def _global_sum(p: dict) -> dict[str, float]:
    pe, ob, cf = p["PE"], p["OB"], p["C"] // p["PE"]
    return {"const": 1.0, "ctr": float(_clog2(cf * p["NPIX"])), "add": pe * ob,
            "buf": pe * ob * math.ceil(cf / 64) if cf > 1 else 0.0}


def _global_sum_ff(p: dict) -> dict[str, float]:
    cf = p["C"] // p["PE"]
    return {"const": 1.0, "ctr": float(_clog2(cf * p["NPIX"])), "acc": p["PE"] * p["OB"] if cf == 1 else 0.0}


def _zero(p: dict) -> int:
    return 0


@dataclass(frozen=True)
class ModuleModel:
    """The formulas of one library module: LUT and FF features (fitted), BRAM18 and DSP (structural)."""

    lut: object
    ff: object
    bram18: object = _zero
    dsp: object = _zero


MODELS = MappingProxyType({
    "qp_mvtu": ModuleModel(_mvtu, _mvtu_ff, _mvtu_bram, _mvtu_dsp),
    "qp_swg": ModuleModel(_swg, _swg_ff),
    "qp_threshold": ModuleModel(threshold_lut, threshold_ff),
    "qp_maxpool": ModuleModel(_maxpool, _maxpool_ff),
    "qp_add": ModuleModel(_add, lambda p: {"const": 1.0}),
    "qp_global_sum": ModuleModel(_global_sum, _global_sum_ff),
})


def features(module: str, metric: str, params: dict) -> dict[str, float]:
    m = MODELS.get(module)
    if m is None:
        raise QpassError(f"no calibrated formula for module {module!r} (have: {', '.join(MODELS)})")
    return {k: float(v) for k, v in getattr(m, metric)(params).items() if v}


# ------------------------------------------------------------------------------------------ coefficients, fitting

def load(path: Path = DATA) -> dict:
    """The calibration data file (coefficients per module and metric, Yosys version, regeneration command)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise QpassError(f"cannot read the resource calibration {path}: {exc}") from None


def _frozen(d):
    if isinstance(d, dict):
        return MappingProxyType({k: _frozen(v) for k, v in d.items()})
    return d


#: the shipped calibration (read once at import; read-only)
CALIBRATION = _frozen(load()) if DATA.is_file() else MappingProxyType({"modules": MappingProxyType({})})


def predict(module: str, metric: str, params: dict, calib=None) -> int:
    """The fitted linear formula of ``module``'s ``metric`` at ``params`` (0 for an uncalibrated module)."""
    calib = CALIBRATION if calib is None else calib
    coef = calib["modules"].get(module, {}).get(metric)
    if coef is None:
        return 0
    f = features(module, metric, params)
    return int(round(sum(coef.get(k, 0.0) * v for k, v in f.items())))


def module_estimate(module: str, params: dict, calib=None) -> Estimate:
    """LUT, FF (fitted), BRAM18 and DSP (structural) of one library module instance."""
    m = MODELS[module]
    return Estimate(predict(module, "lut", params, calib), predict(module, "ff", params, calib),
                    int(m.bram18(params)), int(m.dsp(params)))


def fit(rows: list[tuple[dict[str, float], float]]) -> tuple[dict[str, float], float]:
    """Non-negative least squares of y ~ sum(c_k * f_k) minimising the relative error (rows weighted by
    1/max(y, FIT_FLOOR): a 2-LUT module does not outweigh a 2000-LUT one); returns the coefficients and the largest
    relative error over the rows (same floor)."""
    import numpy as np
    from scipy.optimize import nnls

    names = sorted({k for f, _ in rows for k in f})
    a = np.array([[f.get(k, 0.0) for k in names] for f, _ in rows])
    y = np.array([float(v) for _, v in rows])
    w = 1.0 / np.maximum(y, FIT_FLOOR)
    c, _ = nnls(a * w[:, None], y * w)
    pred = a @ c
    err = float(np.max(np.abs(pred - y) * w)) if len(y) else 0.0
    return {k: round(float(v), 4) for k, v in zip(names, c)}, err


def fit_all(samples: list[tuple[str, dict, dict]], *, version: str, command: str) -> dict:
    """Fit every module's LUT and FF formulas from (module, params, yosys numbers) samples."""
    out = {"yosys": version, "family": "xc7", "command": command,
           "note": "LUT = sum(coef * feature) per module (features: qpass.hw.calibration); BRAM18 and DSP structural",
           "modules": {}}
    for module in MODELS:
        mine = [(p, n) for m, p, n in samples if m == module]
        if not mine:
            continue
        entry = {"points": len(mine)}
        for metric in METRICS:
            coef, err = fit([(features(module, metric, p), n[metric]) for p, n in mine])
            entry[metric] = coef
            entry[f"{metric}_max_rel_err"] = round(err, 3)
        out["modules"][module] = entry
    return out


def calibration_note(calib=None) -> str:
    """One line for reports: which estimate is calibrated, against what, and how to regenerate it."""
    calib = CALIBRATION if calib is None else calib
    if not calib["modules"]:
        return "no resource calibration shipped: estimates are the analytical models only"
    pts = sum(e["points"] for e in calib["modules"].values())
    return (f"'cal' estimates: the RTL modules' LUT/FF formulas fitted to {calib['yosys']} synth_xilinx -family "
            f"{calib['family']} over {pts} synthesized instances ({', '.join(calib['modules'])}), BRAM18/DSP by "
            f"Yosys' mapping rules (qpass/hw/calibration_yosys.json; regenerate: {calib['command']}); "
            "'old': the analytical models (qpass.hw.memory_costs, FINN-R formulas)")


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, sort_keys=True) + "\n"


def fit_summary(data: dict) -> str:
    lines = [f"calibration against {data['yosys']} synth_xilinx -family {data['family']}"]
    for m, e in data["modules"].items():
        lines.append(f"  {m}: {e['points']} points, max |rel err| LUT {e['lut_max_rel_err']:.2f} "
                     f"FF {e['ff_max_rel_err']:.2f}")
        for metric in METRICS:
            lines.append(f"    {metric} = " + " + ".join(f"{v:g}*{k}" for k, v in e[metric].items() if v))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------- cost-model layers -> modules

def _mvtu_params(l) -> dict:
    xnor = bool(l.w_bipolar and l.a_bipolar)
    wb = 1 if xnor else l.w_bits
    acc = l.acc_bits if l.acc_bits is not None else min(32, _acc_bound(l))
    return {"MW": l.mw, "MH": l.mh, "PE": l.pe, "SIMD": l.simd, "IB": l.a_bits, "WB": wb,
            "WV": 1 if l.w_bipolar else wb, "AB": acc + 1, "NT": l.thresholds, "TB": _search_tb(l, acc), "XNOR": int(xnor),
            "USE_DSP": int(l.res_type == "dsp" and not xnor), "BS": int(l.thresholds >= BS_MIN_STEPS),
            "TSHARE": TSHARE_STEPS if l.thresholds > 1 else TSHARE_SIGN,
            "WDENS": tuple(getattr(l, "w_bit_density", ()))}


def _search_tb(l, acc: int) -> int:
    """TB of a matrix unit's thresholds: a binary search's stage tables are as wide as the emitted thresholds
    (``t_bits``: CNN 8-bit conv2 18-19 bits against a 22-bit accumulator; priced at AB its estimate was 1.21 of
    Yosys); a parallel comparison keeps AB, which the varying-column shares TSHARE_* are measured against."""
    bs = l.thresholds >= BS_MIN_STEPS
    return (getattr(l, "t_bits", None) or acc + 1) if bs else acc + 1


def _acc_bound(l) -> int:
    return acc_bits_bound(l.mw, l.w_bits, l.a_bits, l.a_signed)


def _swg_params(l) -> dict:
    return {"C": l.ifm_ch, "SIMD": l.simd, "IH": l.ifm_dim[0], "IW": l.ifm_dim[1], "KH": l.kernel[0],
            "KW": l.kernel[1], "SH": l.stride[0], "SW": l.stride[1], "PAD": l.pad, "EB": l.a_bits}


def _threshold_params(l) -> dict:
    signed = bool(getattr(l, "a_signed", False))
    return {"C": l.channels, "PE": l.pe, "NPIX": l.pixels, "IB": l.a_bits, "I_SIGNED": int(signed), "NT": l.steps,
            "TB": l.a_bits + (0 if signed else 1), "BS": int(l.steps >= BS_MIN_STEPS),
            # a standalone MultiThreshold requantizes a per-tensor scaled sum (residual add, global pool): the
            # same thresholds in every channel, no varying ROM column (TCOLS 0 in every design of the bench)
            "TSHARE": 0.0}


def _pool_params(l) -> tuple[str, dict]:
    if l.pool == "global_avg":
        npix = l.ifm_dim[0] * l.ifm_dim[1]
        return "qp_global_sum", {"C": l.channels, "PE": l.pe, "NPIX": npix, "IB": l.a_bits,
                                 "OB": l.a_bits + _clog2(npix)}
    return "qp_maxpool", {"C": l.channels, "PE": l.pe, "IH": l.ifm_dim[0], "IW": l.ifm_dim[1], "KH": l.kernel[0],
                          "KW": l.kernel[1], "EB": l.a_bits}


#: cost-model kind (``Layer.kind``) -> (module, parameters) of the RTL module that implements it
LAYER_MODULES = MappingProxyType({
    "MVTU": lambda l: ("qp_mvtu", _mvtu_params(l)),
    "SlidingWindow": lambda l: ("qp_swg", _swg_params(l)),
    "Thresholding": lambda l: ("qp_threshold", _threshold_params(l)),
    "Pool": _pool_params,
    "AddStreams": lambda l: ("qp_add", {"PE": l.pe, "OB": l.out_bits or l.a_bits + 1, "KA": l.ka, "KB": l.kb,
                                        "AB_": l.a_bits, "BB": l.a_bits}),
})


def layer_params(layer) -> tuple[str, dict] | None:
    """(module, parameters) of the RTL module a cost-model layer becomes, or None (no calibrated formula)."""
    fn = LAYER_MODULES.get(layer.kind)
    return None if fn is None else fn(layer)


def layer_estimate(layer, calib=None) -> Estimate | None:
    """The calibrated LUT/FF/BRAM18/DSP of a cost-model layer as the RTL backend emits it, or None."""
    mp = layer_params(layer)
    calib = CALIBRATION if calib is None else calib
    if mp is None or mp[0] not in calib["modules"]:
        return None
    return module_estimate(*mp, calib=calib)


def layer_resources(layer):
    """``Resources`` for the folding search (``qpass.hw.folding``, ``estimate=``): the calibrated estimate of the RTL
    module where there is one, else the layer's own analytical model (``layer.resources()``)."""
    e = layer_estimate(layer)
    if e is None:
        return layer.resources()
    return Resources(lut=e.lut, bram18=e.bram18, uram=0, dsp=e.dsp)
