"""Structural terms of the yosys-calibrated cost model read from the emitted design: live constant thresholds and
the products a DSP-mapped matrix unit puts on DSP48s, checked against committed yosys numbers."""
import json
import subprocess
from pathlib import Path

import pytest

from qpass.backends.rtl.instances import Instance, binary_search
from qpass.backends.rtl.memfiles import hex_words, pack_word, search_images
from qpass.backends.rtl.sim import ToolMissing, verilator_env
from qpass.backends.rtl.synth import instance_params, key_is_current, live_threshold_pes
from qpass.hw import calibration as cal

import numpy as np

LAYERS = Path(__file__).resolve().parents[1] / "bench" / "results" / "yosys_layers.json"


def test_live_threshold_pes_drops_thresholds_yosys_needs_no_lut_for():
    # 3-bit signed input (-4..3), one threshold per PE: 0 reads the sign bit alone, -4 is always met, 5 never
    p = dict(PE=5, NT=1, TB=4, IB=3, I_SIGNED=1)
    img = hex_words(np.array([[0, 2, -4, 5, -1]]), 4)
    assert live_threshold_pes(img, p) == 2  # the PEs comparing against 2 and -1
    # unsigned 3-bit input (0..7): x >= 4 is the top bit alone, 0 is always met, 8 never
    img = hex_words(np.array([[4, 2, 0, 7, 8]]), 5)
    assert live_threshold_pes(img, dict(p, TB=5, I_SIGNED=0)) == 2  # 2 and 7


def test_instance_params_count_live_pes_of_a_constant_threshold_image():
    t = np.array([[0, 0, 0, 1]])
    inst = Instance("qp_threshold", [("C", 4), ("PE", 4), ("NPIX", 1), ("IB", 6), ("I_SIGNED", 1), ("OB", 2),
                                     ("NT", 1), ("TB", 2), ("OUT_SCALE", 2), ("OUT_BIAS", -1), ("TFILE", '"t.mem"')],
                    mems={"t.mem": hex_words(t, 2)})
    p = instance_params(inst)
    assert p["TLIVE"] == 1
    assert cal.module_estimate("qp_threshold", dict(p, TLIVE=0)).lut == 0


def _cached(module, **want):
    for key, v in json.loads(LAYERS.read_text()).items():  # numbers of today's library HDL only
        p = v["params"]
        if key_is_current(key) and p["module"] == module and all(p.get(k) == x for k, x in want.items()):
            return p, v
    raise AssertionError(f"no cached yosys numbers for {module} {want}")


def test_constant_thresholds_against_yosys():
    # residual CNN 1-bit: every global-pool threshold is 0 on a signed input (the sign bit): yosys keeps 0 LUTs
    p, y = _cached("qp_threshold", C=16, PE=16, IB=6, NT=1, I_SIGNED=1, NPIX=1)
    assert y["lut"] == 0 and cal.module_estimate("qp_threshold", p).lut == 0
    # 4-bit residual add's 15 thresholds on a 9-bit sum in comparator chains: 816 LUT in yosys
    p, y = _cached("qp_threshold", C=16, PE=16, IB=9, NT=15)
    assert abs(cal.module_estimate("qp_threshold", p).lut - y["lut"]) <= 0.15 * y["lut"]


def test_constant_comparisons_wider_than_six_bits_are_carry_chains():
    # yosys meets a constant threshold's comparison while the one-word ROM is still a memory: up to 6 bits it stays
    # LUT logic (6-bit signed input, 2 LUT per PE), wider a carry chain per threshold. A 6-bit unsigned input
    # compares in 7 bits: 176 LUT + 48 CARRY4 for the same 16 x 3 thresholds (the estimate was 32 before)
    assert cal.const_compare(16, 3, 6, 16) == {"cmp_lut": 32}
    assert cal.const_compare(16, 3, 7, 16) == {"cmp_const": 16 * 3 * 7, "cmp_const_n": 16 * 3}
    p, y = _cached("qp_threshold", C=16, PE=16, IB=6, NT=3, I_SIGNED=0, NPIX=1)
    # (the shared fit over the grid's 16 x 15 thresholds on 7 bits, 494 LUT, prices this one at ~0.7: a miss left)
    assert y["lut"] == 176 and abs(cal.module_estimate("qp_threshold", p).lut - 176) <= 0.35 * 176
    p, y = _cached("qp_threshold", C=16, PE=16, IB=6, NT=3, I_SIGNED=1)
    assert y["lut"] == 32 and abs(cal.module_estimate("qp_threshold", p).lut - 32) <= 0.15 * 32
    # the first conv of the 4-bit CNN: 16 PEs x 15 constant thresholds on an 11-bit sum (0.61 of yosys before)
    p, y = _cached("qp_mvtu", MW=9, MH=16, PE=16, NT=15, AB=11)
    assert abs(cal.module_estimate("qp_mvtu", p).lut - y["lut"]) <= 0.15 * y["lut"]


def test_block_ram_banks_and_input_buffer_placement_follow_yosys():
    # a ROM deeper than one block-RAM bank of its cheapest aspect gets a multiplexer per output bit: 2304 x 128 in
    # 512 x 36 is 5 banks deep (yosys: 512 LUTs, 4 per bit), 2048 x 128 fits one 2K x 9 bank (no LUT)
    assert cal.depth_banks(2304, 128) == 5 and cal.bank_mux_luts(5) == 4
    assert cal.depth_banks(2048, 128) == 1 and cal.bank_mux_luts(1) == 0
    # the input buffer: LUT-RAM up to 64 words, block RAM when deeper and wider than 16 RAM64M
    xnor = dict(SIMD=32, PE=1, IB=1, MH=2, XNOR=1)
    assert not cal.ibuf_in_bram(dict(xnor, MW=32 * 64)) and cal.ibuf_in_bram(dict(xnor, MW=32 * 65))
    assert not cal.ibuf_in_bram(dict(MW=512, MH=10, SIMD=1, PE=5, IB=2))  # 512 x 2 bits: 8 RAM64M
    # CNV conv4 (a 2304-word weight ROM) was 0.71 of yosys without the bank multiplexer, conv5 (72-word input
    # buffer in block RAM) 1.23 with a LUT-RAM one
    for want in (dict(MW=1152, MH=256, PE=4, SIMD=32), dict(MW=2304, MH=256, PE=1, SIMD=32)):
        p, y = _cached("qp_mvtu", XNOR=1, **want)
        assert abs(cal.module_estimate("qp_mvtu", p).lut - y["lut"]) <= 0.25 * y["lut"]
        assert abs(cal.module_estimate("qp_mvtu", p).bram18 - y["bram18"]) <= 0.15 * y["bram18"]


def verilator_env_or_skip() -> dict:
    try:
        return verilator_env()
    except ToolMissing as exc:
        pytest.skip(str(exc))


def _activate_tb(nt: int, thr: np.ndarray, vb: int, tb: int, nf: int) -> str:
    """A testbench with one qp_activate (BS = 1, NF row folds of PE lanes) per row fold and VB-bit value, printing
    the outputs at the end (no timing: combinational only). One row fold: thresholds from the word of thr; more:
    from the per-stage ROM files t.mem<i>."""
    pe = thr.shape[0] // nf
    word = pack_word(thr[:pe].reshape(-1), tb)
    n = 1 << vb
    return f"""module tb;
  localparam logic [{pe * nt * tb - 1}:0] THR = {pe * nt * tb}'h{word:x};
  logic [{pe * 8 - 1}:0] y [0:{nf * n - 1}];
  for (genvar i = 0; i < {nf * n}; i++) begin : g_v
    qp_activate #(.PE({pe}), .VB({vb}), .NT({nt}), .TB({tb}), .OB(8), .OUT_SCALE(1), .OUT_BIAS(0), .BS(1),
                  .NF({nf}), .TFILE("t.mem"))
      u (.v({{{pe}{{{vb}'(i % {n})}}}}), .thr(THR), .nfq(32'(i / {n})), .y(y[i]));
  end
  final for (int i = 0; i < {nf * n}; i++)
    $display("%0d {' '.join(['%0d'] * pe)}", i, {', '.join(f'y[i][{q * 8 + 7}:{q * 8}]' for q in range(pe))});
endmodule
"""


def _search_counts(tmp_path: Path, thr: np.ndarray, nt: int, vb: int, tb: int, nf: int) -> None:
    env = verilator_env_or_skip()
    (tmp_path / "tb.sv").write_text(_activate_tb(nt, thr, vb, tb, nf))
    for name, text in search_images(thr, thr.shape[0] // nf, tb, "t.mem").items():
        (tmp_path / name).write_text(text)
    lib = Path(__file__).resolve().parents[1] / "qpass" / "backends" / "rtl" / "hdl" / "qpass_eltwise.sv"
    run = subprocess.run(["verilator", "--binary", "--no-timing", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                          "--top-module", "tb", str(lib), "tb.sv", "-o", "tb"], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    out = subprocess.run([str(tmp_path / "obj_dir" / "tb")], cwd=tmp_path, capture_output=True, text=True).stdout
    rows = np.array([[int(x) for x in l.split()] for l in out.splitlines() if l[:1].isdigit()])
    n = 1 << vb
    assert len(rows) == nf * n
    u = rows[:, 0] % n
    v = np.where(u >= n // 2, u - n, u)  # the VB-bit value, signed
    pe = thr.shape[0] // nf
    t = thr.reshape(nf, pe, nt)[rows[:, 0] // n]  # the thresholds of each row's fold
    want = (v[:, None, None] >= t).sum(axis=2)
    assert np.array_equal(rows[:, 1:], want)


def test_binary_search_thresholds_count_like_the_comparators(tmp_path):
    # the binary search the RTL backend emits for large threshold sets (BS = 1) counts #{t : v >= T[t]} exactly,
    # also with repeated thresholds, thresholds outside the input range and NT + 1 not a power of two (padding)
    rng = np.random.default_rng(17)
    nt = 21
    thr = np.sort(rng.integers(-70, 70, size=(2, nt)), axis=1)
    thr[1, 5:9] = thr[1, 5]  # repeats
    assert binary_search(thr) and not binary_search(thr[:, ::-1])
    _search_counts(tmp_path, thr, nt, 7, 8, 1)


def test_binary_search_reads_per_stage_roms_with_row_folds(tmp_path):
    # NF = 2 row folds of 2 lanes: stage i's candidates from ROM file t.mem<i> at nf*2^i + (result bits so far)
    rng = np.random.default_rng(18)
    nt = 17
    thr = np.sort(rng.integers(-40, 40, size=(4, nt)), axis=1)
    _search_counts(tmp_path, thr, nt, 6, 7, 2)


def test_residual_add_priced_per_shift_and_add_term():
    # y = 6a + 11b is five shifted terms (a<<1, a<<2, b, b<<1, b<<3) added from their shifts up: 4-bit residual
    # CNN's second add, 61 LUT in yosys (0.72 of it when priced as PE * OB per set bit)
    p, y = _cached("qp_add", KA=6, KB=11)
    assert cal.features("qp_add", "lut", p)["add"] == 2 * (8 + 8 + 7 + 6)
    assert abs(cal.module_estimate("qp_add", p).lut - y["lut"]) <= 0.15 * y["lut"]
    # both inputs within 6 bits: every output bit is one LUT6 of them (2 PEs x 3 bits, 7 LUT in yosys)
    p, y = _cached("qp_add", AB_=2, BB=2, KA=1, KB=1)
    assert cal.features("qp_add", "lut", p) == {"const": 1.0, "add_lut": 6}
    assert abs(cal.module_estimate("qp_add", p).lut - y["lut"]) <= 3


def test_binary_search_features_and_the_folding_search_sees_them():
    # clog2(256) = 8 comparators per PE; constant thresholds: candidates of stage i in ceil(2^i / 64) LUT6 per bit
    f = cal.activation_features(dict(PE=2, NT=255, TB=10, BS=1), 12, 1)
    assert f == {"bs_cmp": 2 * 8 * 12, "bs_rom": 2 * 10 * (6 + 2)}
    # row folds: stage i's ROM holds NF * 2^i words (8 row folds: 1 + 1 + ... + 2 + 4 + 8 + 16 LUT6 per bit)
    f = cal.activation_features(dict(PE=1, NT=255, TB=10, BS=1, TCOLS=40), 12, 8)
    assert f == {"bs_cmp": 8 * 12, "bs_rom": 10 * (1 + 1 + 1 + 1 + 2 + 4 + 8 + 16)}
    # the cost-model layer of an 8-bit matrix unit is priced as the binary search the backend emits
    from qpass.hw.kinds.mvtu import MVTU
    l = MVTU("fc", mw=64, mh=32, pe=32, simd=1, w_bits=8, a_bits=8, thresholds=255)
    assert cal.layer_params(l)[1]["BS"] == 1
    assert cal.layer_estimate(l).lut < cal.module_estimate("qp_mvtu", dict(cal.layer_params(l)[1], BS=0)).lut
    # the 8-bit residual CNN's add thresholds (2 PEs x 255 steps, 8 row folds: stage ROMs) against yosys
    for ib in (12, 17):
        p, y = _cached("qp_threshold", PE=2, NT=255, IB=ib, BS=1)
        assert abs(cal.module_estimate("qp_threshold", p).lut - y["lut"]) <= 0.15 * y["lut"]


def test_max_pool_buffer_priced_per_32_words():
    # the window buffer is LUT-RAM read at two addresses: one LUT per bit up to 32 words, two per 64 (the CNN's
    # 8-bit pool, 64 words x 16 bits: 127 LUT in yosys, 0.79 when priced per 64 words)
    f16 = cal.features("qp_maxpool", "lut", dict(C=16, PE=4, IH=8, IW=8, KH=2, KW=2, EB=2))  # 16 words
    f64 = cal.features("qp_maxpool", "lut", dict(C=32, PE=2, IH=8, IW=8, KH=2, KW=2, EB=8))  # 64 words
    assert f16["buf"] == 4 * 2 and f64["buf"] == 2 * 8 * 2
    p, y = _cached("qp_maxpool", C=32, PE=2, EB=8, IW=8)
    assert y["lut"] == 127 and abs(cal.module_estimate("qp_maxpool", p).lut - 127) <= 0.15 * 127


def test_xnor_unit_pays_its_final_add_per_pe():
    # CNV fc2: 5 PEs of one XNOR lane each over 512 column folds: the AB-bit add of acc + 2*pop - SIMD is most of
    # each PE (yosys 271 LUT; 0.70 without the per-PE term)
    p, y = _cached("qp_mvtu", MW=512, MH=10, PE=5, SIMD=1, XNOR=1)
    assert cal.features("qp_mvtu", "lut", p)["pop_pe"] == 5 * p["AB"]
    assert abs(cal.module_estimate("qp_mvtu", p).lut - y["lut"]) <= 0.15 * y["lut"]


def test_weight_columns_from_the_weights_bit_densities():
    # a column of D words varies unless all D bits agree: 1 - q^D - (1 - q)^D per stored bit; uniform random bits
    # (q = 1/2) give the random-bits expectation, a bit that is always 0 or always 1 no column
    p = dict(PE=2, SIMD=4, WB=2)
    assert cal.weight_columns(dict(p, WDENS=(0.5, 0.5)), 4) == pytest.approx(cal.varying_bits(16, 4))
    assert cal.weight_columns(dict(p, WDENS=(1.0, 0.0)), 4) == 0
    assert cal.weight_columns(dict(p, WDENS=(0.1, 0.5), WCOLS=3), 4) == 3  # the emitted image's count wins
    from qpass.hw.kinds.mvtu import bit_density
    w = np.array([[-1, 0, 1, 1], [0, 0, 1, -2]])
    assert bit_density(w, 2, False) == (0.5, 0.25)  # codes 11 00 01 01 / 00 00 01 10
    assert bit_density(np.array([[1, -1, 1, 1]]), 1, True) == (0.75,)


def test_search_tables_priced_by_the_address_bits_each_column_follows():
    from qpass.hw.threshold_costs import expected_table_luts, search_table_luts
    # 4 words of 3 bits: bit 0 constant (no LUT), bit 1 follows address bit 0, bit 2 both: one LUT6 each
    assert search_table_luts([0b010, 0b000, 0b110, 0b100], 2, 3) == 2
    # 128 words: a column following all 7 address bits (and the compared bit) takes 4 LUT6, one following 1 bit 1
    words = [(bin(j).count("1") & 1) | ((j >> 6) << 1) for j in range(128)]
    assert search_table_luts(words, 7, 2) == 4 + 1
    # monotone thresholds over 2^16: stage 7's bit b follows the top min(7, 16 - b) result bits
    assert expected_table_luts(16, 255) == 154


def test_binary_search_thresholds_against_yosys_at_the_emitted_parameters():
    # the residual CNN's add / pool thresholds (2 PEs x 255 steps, 8 row folds) compared at 13, 17 and 19 bits take
    # 291 / 313 / 446 LUT: the stage tables' content, not the width, sets the cost (SCOST counted from the images:
    # 232 / 300 / 360; priced by width the 17-bit one was 1.16)
    for ib in (12, 17, 19):
        p, y = _cached("qp_threshold", PE=2, NT=255, IB=ib, BS=1)
        assert "SCOST" in p
        assert abs(cal.module_estimate("qp_threshold", p).lut - y["lut"]) <= 0.15 * y["lut"], ib


def test_search_estimate_prices_the_emitted_threshold_width():
    from dataclasses import replace
    from qpass.backends.rtl.memfiles import signed_width
    from qpass.hw.inttype import IntType
    from qpass.hw.kinds.mvtu import MVTU, threshold_bits
    acc = IntType(bits=18, signed=True)
    for t in ([[-5, 70000]], [[0, 10 ** 9]], [[3, 9]]):  # clipped to the accumulator's range as the exporter does
        c = np.clip(np.array(t), acc.lo(), acc.hi() + 1)
        assert threshold_bits({"thresholds": np.array(t)}, acc) == signed_width(int(c.min()), int(c.max()))
    assert threshold_bits({}, acc) is None
    # CNN 8-bit conv2 (32 PEs x 4 SIMD, binary search): its thresholds need 19 bits, the accumulator 22; Yosys
    # 7535 LUT, priced with 22-bit stage tables 9148 (1.21)
    p, y = _cached("qp_mvtu", MW=144, MH=32, PE=32, SIMD=4, BS=1)
    l = MVTU("conv2", mw=144, mh=32, pe=32, simd=4, w_bits=8, a_bits=8, thresholds=255, acc_bits=21,
             res_type="dsp", t_bits=p["TB"])
    assert cal.layer_params(l)[1]["TB"] == 19 and cal.layer_params(replace(l, t_bits=None))[1]["TB"] == 22
    assert abs(cal.layer_estimate(l).lut - y["lut"]) <= 0.15 * y["lut"]
    assert cal.layer_params(replace(l, thresholds=3))[1]["TB"] == 22  # parallel comparisons: TSHARE is per AB bit
