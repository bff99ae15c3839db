"""The RTL resource formulas calibrated against Yosys (``qpass.hw.calibration``): the shipped coefficients and their
provenance, the structural block-RAM / DSP rules against cell counts Yosys 0.23 gave for the RTL modules, the fit,
the folding search on the calibrated model, and the FIFO depths against the occupancy Verilator observes."""
import json

import numpy as np
import pytest

from qpass.hw import calibration as cal
from qpass.hw.folding import fold_for_target
from qpass.hw.kinds.mvtu import MVTU
from qpass.hw.kinds.swg import SlidingWindow
from qpass.hw.layers import Resources


def test_shipped_calibration_names_its_yosys_and_regeneration_command():
    data = json.loads(cal.DATA.read_text())
    assert data["yosys"].startswith("Yosys ") and data["family"] == "xc7"
    assert data["command"].startswith("python bench/calibrate_yosys.py")
    for module in ("qp_mvtu", "qp_swg", "qp_threshold", "qp_maxpool", "qp_add", "qp_global_sum"):
        e = data["modules"][module]
        assert e["points"] >= 3 and set(e["lut"]) and all(v >= 0 for v in e["lut"].values()), module
        # every fitted term is a feature the formula computes
        assert set(e["lut"]) <= _all_terms(module, "lut") and set(e["ff"]) <= _all_terms(module, "ff"), module
        assert all(cal.module_estimate(module, p).lut >= 0 for p in EXAMPLES[module])


def _all_terms(module, metric):
    return {k for p in EXAMPLES[module] for k in cal.features(module, metric, p)} | {"const"}


EXAMPLES = {
    "qp_mvtu": [dict(MW=64, MH=16, PE=p, SIMD=s, IB=b, WB=b, AB=12, NT=nt, TB=12, XNOR=x, USE_DSP=d)
                for p, s in ((1, 8), (16, 64), (4, 32)) for b, x, d in ((2, 0, 0), (1, 1, 0), (8, 0, 1))
                for nt in (0, 3)] + [dict(MW=64, MH=16, PE=4, SIMD=8, IB=8, WB=2, WV=1, AB=16, NT=1, TB=16),
                                 dict(MW=64, MH=32, PE=4, SIMD=64, IB=2, WB=2, AB=9, NT=1, TB=9),
                                 dict(MW=16, MH=16, PE=16, SIMD=16, IB=1, WB=1, AB=6, NT=3, TB=6),
                                 dict(MW=2304, MH=64, PE=4, SIMD=32, IB=1, WB=1, AB=13, NT=1, TB=3, XNOR=1),
                                 dict(MW=64, MH=16, PE=16, SIMD=1, IB=8, WB=8, AB=20, NT=255, TB=18, BS=1),
                                 # a binary search with row folds (its stage-0 ROM's output register, FF 'bs0')
                                 dict(MW=64, MH=32, PE=16, SIMD=1, IB=8, WB=8, AB=20, NT=255, TB=18, BS=1),
                                 # XNOR with one lane per PE (pop1); 4 x 4-bit lanes with row folds (xmux)
                                 dict(MW=512, MH=10, PE=5, SIMD=1, IB=2, WB=1, AB=12, NT=0, TB=12, XNOR=1),
                                 dict(MW=16, MH=10, PE=1, SIMD=1, IB=4, WB=4, AB=12, NT=0, TB=12)],
    "qp_swg": [dict(C=16, SIMD=4, IW=8, KH=3, EB=4, PAD=1)],
    "qp_threshold": [dict(C=16, PE=p, NT=3, TB=5, IB=ib) for p in (1, 16) for ib in (4, 8)]
                    + [dict(C=16, PE=p, NT=255, TB=18, IB=17, BS=1) for p in (2, 16)],
    "qp_maxpool": [dict(C=16, PE=4, IW=8, KW=2, EB=4)],
    "qp_add": [dict(PE=2, OB=5, KA=1, KB=4), dict(PE=2, OB=3, KA=1, KB=1, AB_=2, BB=2)],
    "qp_global_sum": [dict(C=16, PE=p, NPIX=16, OB=8) for p in (1, 16)],
}


def test_weight_rom_block_ram_rule_matches_yosys():
    """A rom_style=block ROM of D words keeps only its varying bit columns, 36 per RAMB18 unit. Yosys 0.23 on ROMs of
    random bits: 2 x 576 -> 9 RAMB18 (the rule: 8), 8 x 576 -> 16 (16), 4 x 576 -> 14 (14); on the digits MLP's
    1-bit fc2 (2 tiles of 16 x 64 XNOR weights) -> 15 and its fc3 (2 x 160) -> 3."""
    rom = lambda d, w: cal.bram18_for(d, int(np.ceil(cal.varying_bits(w, d))))  # noqa: E731
    assert (rom(2, 576), rom(8, 576), rom(4, 576)) == (8, 16, 14)
    fc2 = dict(MW=64, MH=32, PE=16, SIMD=64, IB=2, WB=1, AB=9, NT=1, TB=7, XNOR=1, USE_DSP=0)
    fc3 = dict(fc2, MW=32, MH=10, PE=5, SIMD=32, AB=8)
    assert cal.module_estimate("qp_mvtu", fc2).bram18 == 15 and cal.module_estimate("qp_mvtu", fc3).bram18 == 3
    one_tile = dict(fc2, MH=16)  # a single weight word is a constant: no memory at all
    assert cal.module_estimate("qp_mvtu", one_tile).bram18 == 0
    # +-1 weights stored in two bits vary in one (the digits CNN's conv2 at 1 bit: 8 tiles of 4 x 144 -> 16)
    conv2 = dict(MW=144, MH=32, PE=4, SIMD=144, IB=2, WB=2, WV=1, AB=10, NT=1, TB=10, XNOR=0, USE_DSP=0)
    assert cal.module_estimate("qp_mvtu", conv2).bram18 == 16


def test_rom_columns_yosys_keeps_are_the_distinct_varying_ones():
    # 4 words x 4 columns: column 0 constant 1, columns 1 and 3 equal (0,1,0,1), column 2 (1,1,0,0)
    img = "".join(f"{w:x}\n" for w in (0b0101, 0b1111, 0b0001, 0b1011))
    assert cal.varying_columns(img) == 3 and cal.distinct_columns(img) == 2
    assert cal.distinct_columns("3\n") == 0  # one word: a constant
    # Yosys 0.23 on qp_threshold with random sorted thresholds (bench/results/yosys_grid.json): the registered
    # threshold word keeps one flip-flop per distinct varying column; 4 words of 255 x 9-bit thresholds have at most
    # 2^4 - 2 = 14 of them (16 FF), 32 words of 2 x 15 x 9 bits 251 (254 FF), 8 words of 2 x 15 x 9 bits 149 (152 FF)
    base = dict(IB=8, I_SIGNED=1, NPIX=64, OUT_BIAS=0, OUT_SCALE=1, TB=9)
    for p, ff in ((dict(C=4, PE=1, NT=255, TCOLS=14), 16), (dict(C=64, PE=2, NT=15, TCOLS=251), 254),
                  (dict(C=16, PE=2, NT=15, TCOLS=149), 152)):
        est = cal.module_estimate("qp_threshold", {**base, **p}).ff
        assert abs(est - ff) <= max(0.15 * ff, 10), (p, est, ff)
    # without the image the expectation is capped at the distinct patterns the words allow
    assert cal.threshold_columns(dict(PE=1, NT=255, TB=9), 4) == 14


def test_mvtu_registers_follow_the_module_structure():
    """qp_mvtu keeps the result register (PE x AB), the accumulator only when a row takes several column folds,
    the input vector in flip-flops only when it is one word: Yosys 0.23 on the CNV's conv1 (PE 32, AB 12, SF 18):
    788 FF; on the digits CNN's 1-bit conv2 (PE 4, SIMD 144, SF 1, NF 8): 335 FF."""
    conv1 = dict(MW=576, MH=64, PE=32, SIMD=32, IB=2, WB=1, AB=12, NT=1, TB=3, XNOR=1, TCOLS=16)
    conv2 = dict(MW=144, MH=32, PE=4, SIMD=144, IB=2, WB=2, WV=1, AB=10, NT=1, TB=9, XNOR=0)
    for p, ff in ((conv1, 788), (conv2, 335)):
        est = cal.module_estimate("qp_mvtu", p).ff
        assert abs(est - ff) <= 0.15 * ff, (p, est, ff)
    f1, f2 = cal.features("qp_mvtu", "ff", conv1), cal.features("qp_mvtu", "ff", conv2)
    assert f1["acc"] == f1["res"] == 32 * 12 and "ibuf" not in f1
    assert "acc" not in f2 and f2["ibuf"] == 144 * 2


def test_dsp_rule_one_per_product_constant_weights_included():
    p = dict(MW=64, MH=16, PE=4, SIMD=8, IB=8, WB=8, AB=22, NT=0, TB=1, XNOR=0, USE_DSP=1)
    assert cal.module_estimate("qp_mvtu", p).dsp == 32
    # one-word (constant) weights still multiply on DSPs: the folding search must not see full unrolling as free
    assert cal.module_estimate("qp_mvtu", dict(p, MH=4, MW=8)).dsp == 32
    # every DSP-mapped matrix unit yosys synthesized (committed cache): the rule gives its DSP count exactly
    import json
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "bench" / "results"
    seen = 0
    for f in ("yosys_grid.json", "yosys_layers.json"):
        for v in json.loads((root / f).read_text()).values():
            if v["params"]["module"] == "qp_mvtu" and v["params"].get("USE_DSP") and v["dsp"]:
                assert cal.module_estimate("qp_mvtu", v["params"]).dsp == v["dsp"], v["params"]
                seen += 1
    assert seen >= 4
    assert cal.module_estimate("qp_mvtu", dict(p, USE_DSP=0)).dsp == 0


def test_fit_recovers_a_known_linear_formula_on_relative_error():
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(30):
        f = {"const": 1.0, "mult": float(rng.integers(1, 500)), "acc": float(rng.integers(1, 50))}
        rows.append((f, 40 + 2.5 * f["mult"] + 1.5 * f["acc"]))
    coef, err = cal.fit(rows)
    assert coef == pytest.approx({"const": 40, "mult": 2.5, "acc": 1.5}, rel=1e-3) and err < 1e-6
    # non-negative: a formula with a useless feature gives it 0, not a cancelling negative weight
    coef, _ = cal.fit([({"const": 1.0, "x": float(i)}, 10.0) for i in range(1, 6)])
    assert coef["x"] == 0 and coef["const"] == pytest.approx(10)


def test_layer_estimates_follow_the_formulas_of_the_module_they_become():
    m = MVTU("fc", mw=64, mh=32, pe=4, simd=16, w_bits=4, a_bits=4, thresholds=15, acc_bits=13)
    module, params = cal.layer_params(m)
    assert module == "qp_mvtu" and (params["PE"], params["SIMD"], params["NT"], params["AB"]) == (4, 16, 15, 14)
    assert cal.layer_estimate(m) == cal.module_estimate(module, params)
    wider = cal.layer_estimate(m.folded(8, 16))
    assert wider.lut > cal.layer_estimate(m).lut  # twice the lanes
    s = SlidingWindow("w", ifm_ch=16, ifm_dim=8, kernel=3, pad=1, a_bits=4, simd=4)
    assert cal.layer_params(s)[0] == "qp_swg" and cal.layer_estimate(s).lut > 0
    r = cal.layer_resources(m)
    assert isinstance(r, Resources) and (r.lut, r.bram18, r.dsp) == (cal.layer_estimate(m).lut,
                                                                     cal.layer_estimate(m).bram18, 0)


def test_folding_search_minimises_the_calibrated_estimate():
    layers = [MVTU("a", mw=64, mh=64, w_bits=4, a_bits=4, thresholds=15, acc_bits=14),
              MVTU("b", mw=64, mh=32, w_bits=2, a_bits=2, thresholds=3, acc_bits=9)]
    r = fold_for_target(layers, target_fps=200_000, clock_ns=10.0, estimate=cal.layer_resources)
    budget = r.target_cycles
    for l, f in zip(r.layers, r.folds):
        options = [l.folded(p, s) for p, s in l.fold_options()]
        best = min(cal.layer_resources(o).lut for o in options if o.cycles() <= budget)
        assert f.res == cal.layer_resources(l) and f.res.lut == best, l.name
    assert r.meets_target
