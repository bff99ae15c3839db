"""Session 13 (syn17h): the small multi-bit LUT-multiplier units of issue 17 (the residual CNN 4-bit fc_Gemm, 0.84
of yosys before), checked against the committed yosys numbers: the product Yosys' alumacc merges into each PE's
accumulator adder and the input multiplexer ABC merges into wide products."""
import json
from pathlib import Path

from qpass.backends.rtl.synth import key_is_current, within
from qpass.hw import calibration as cal
from test_rtl17_costs import _cached

GRID = Path(__file__).resolve().parents[1] / "bench" / "results" / "yosys_grid.json"


def _grid(**want):
    for key, v in json.loads(GRID.read_text()).items():
        p = v["params"]
        if key_is_current(key) and p["module"] == "qp_mvtu" and all(p.get(k) == x for k, x in want.items()):
            return p, v
    raise AssertionError(f"no current grid point {want}")


def test_merged_product_is_one_per_pe_extended_to_the_accumulator():
    # sum = acc + x0 * w0 is one AB-bit $macc: that product's min(IB, WB) rows run to AB bits, the others stay
    # IB + WB bits wide, so the term follows PE and AB, not SIMD
    p = dict(MW=16, MH=10, PE=1, SIMD=1, IB=4, WB=4, AB=12)
    assert cal.merged_product(p) == 4 * (12 - 8)
    assert cal.merged_product(dict(p, SIMD=8, MW=64)) == cal.merged_product(p)
    assert cal.merged_product(dict(p, PE=5, MH=10)) == 5 * cal.merged_product(p)
    assert cal.merged_product(dict(p, IB=2, WB=2, AB=7)) == 2 * 3


def test_input_multiplexer_counts_only_products_wider_than_a_lut6():
    p = dict(MW=64, MH=16, PE=1, SIMD=8, IB=4, WB=4)
    assert cal.xmux_luts(p) == 8 * 2
    assert cal.xmux_luts(dict(p, MH=1)) == 0  # no row folds: no input buffer, no multiplexer
    assert cal.xmux_luts(dict(p, IB=2, WB=2)) == 0 and cal.xmux_luts(dict(p, IB=4, WB=2)) == 0
    assert cal.xmux_luts(dict(p, PE=4, MH=16)) == 32 * 2


def test_residual_cnn_4bit_fc_gemm_within_yosys():
    # PE 1 x SIMD 1, 16 columns, 10 rows, 4 x 4 bits, AB 12: 118 LUT in Yosys 0.23; 99 (0.84) before the terms
    p, y = _cached("qp_mvtu", MW=16, MH=10, PE=1, SIMD=1, IB=4, WB=4)
    assert y["lut"] == 118
    e = cal.module_estimate("qp_mvtu", p).lut
    assert abs(e - y["lut"]) <= 0.15 * y["lut"], (e, y["lut"])
    f = cal.features("qp_mvtu", "lut", p)
    assert f["mprod"] == 16 and f["xmux"] == 2
    # with its output as wide as the accumulator (OB = AB) no product is merged: Yosys gives 100 LUT
    assert cal.merged_product(dict(p, OB=p["AB"])) == 0 and cal.merged_product(dict(p, NT=15)) == 0


def test_one_lane_units_within_yosys_with_and_without_row_folds():
    # random 4 x 4-bit weights, one lane: 106 LUT without row folds (the formula without the merged product said
    # 74), 131 with 10 (the same plus the multiplexer merged into the product)
    for mh in (1, 10):
        p, y = _grid(MW=16, MH=mh, PE=1, SIMD=1, IB=4, WB=4, NT=0)
        e = cal.module_estimate("qp_mvtu", p).lut
        assert within(e, y["lut"]), (mh, e, y["lut"])


def test_xnor_with_one_lane_per_pe_pays_the_agreement_in_every_sum_bit():
    # the addend 2 * pop - 1 is +-1: each accumulator bit's LUT reads the lane's agreement (PE 5, 512 columns:
    # SIMD 1 253 LUT, SIMD 2 200 in Yosys 0.23); CNV-W1A1 fc2 is such a unit (263 LUT)
    one, _ = _grid(MW=512, MH=10, PE=5, SIMD=1, XNOR=1)
    two, _ = _grid(MW=512, MH=10, PE=5, SIMD=2, XNOR=1)
    assert cal.features("qp_mvtu", "lut", one)["pop1"] == 5 * one["AB"]
    assert "pop1" not in cal.features("qp_mvtu", "lut", two)
    p, y = _cached("qp_mvtu", MW=512, MH=10, PE=5, SIMD=1, XNOR=1)
    assert within(cal.module_estimate("qp_mvtu", p).lut, y["lut"])
