"""Analytical dataflow backend: cycle / resource models, folding, FIFO sizing (qpass.hw)."""
import itertools
import math

import numpy as np
import pytest

from qpass.hw import (MVTU, AddStreams, Pool, Reorder, SlidingWindow, Thresholding, evaluate,
                            fold_for_budget, fold_for_target, get_device, simulate_with_depths, size_fifos)
from qpass.hw import cost_models as cm
from qpass.errors import QpassError

# ------------------------------------------------------------------------------------ networks


def tfc(fold=((16, 49), (8, 8), (8, 8), (10, 8))):
    """FINN TFC-w1a1: 784-64-64-64-10, bipolar weights and activations; fold_tfc ram styles."""
    shapes = [(784, 64, 1, "block"), (64, 64, 1, "auto"), (64, 64, 1, "auto"), (64, 10, 0, "distributed")]
    return [MVTU(f"fc{i}", mw=mw, mh=mh, w_bits=1, a_bits=1, thresholds=thr, pe=pe, simd=simd, ram_style=rs)
            for i, ((mw, mh, thr, rs), (pe, simd)) in enumerate(zip(shapes, fold))]


CNV_LARGE = [(16, 3), (32, 32), (16, 32), (16, 32), (4, 32), (1, 32), (1, 4), (1, 8), (5, 1)]


def cnv(fold=CNV_LARGE):
    """FINN CNV-w1a1 as assumed here: 3x32x32 UINT8 input; six valid 3x3 convs 64, 64, [2x2 max pool],
    128, 128, [pool], 256, 256 (32->30->28->14->12->10->5->3->1), each an SWG (SIMD = its MVTU's SIMD,
    as fold_cnv_large sets) + MVTU; FC 256-512-512-10, the last without activation. Weights bipolar;
    activations bipolar after the first layer. Pools take whole pixels (PE = channels)."""
    layers, dim, i = [], 32, 0
    for spec in [(3, 64), (64, 64), "pool", (64, 128), (128, 128), "pool", (128, 256), (256, 256)]:
        if spec == "pool":
            c = layers[-1].mh
            layers.append(Pool(f"pool{dim}", channels=c, ifm_dim=dim, kernel=2, a_bits=1, pe=c))
            dim //= 2
            continue
        ci, co = spec
        a = 8 if i == 0 else 1
        pe, simd = fold[i]
        layers.append(SlidingWindow(f"swg{i}", ifm_ch=ci, ifm_dim=dim, kernel=3, a_bits=a, simd=simd))
        dim -= 2
        layers.append(MVTU(f"conv{i}", mw=9 * ci, mh=co, num_vectors=dim * dim, w_bits=1, a_bits=a,
                           a_signed=i > 0, thresholds=1, pe=pe, simd=simd))
        i += 1
    for j, (mw, mh, thr) in enumerate([(256, 512, 1), (512, 512, 1), (512, 10, 0)]):
        pe, simd = fold[6 + j]
        layers.append(MVTU(f"fc{j}", mw=mw, mh=mh, w_bits=1, a_bits=1, thresholds=thr, pe=pe, simd=simd))
    return layers


# ----------------------------------------------------------------------------- cycle models


def test_tfc_w1a1_fold_tfc_is_64_cycles():
    r = evaluate(tfc(), clock_ns=10.0)
    assert [f.cycles for f in r.folds] == [64, 64, 64, 8]
    assert r.max_cycles == 64 and r.bottleneck == "fc0"
    assert r.fps == pytest.approx(1_562_500.0)
    assert r.latency_cycles == 64 * 3 + 8  # pessimistic critical path: no overlap
    assert r.table().splitlines()[0].split()[:4] == ["layer", "kind", "PE", "SIMD"]


def test_cnv_w1a1_fold_cnv_large_bottleneck_32768():
    r = evaluate(cnv(), clock_ns=10.0)
    cyc = {f.name: f.cycles for f in r.folds}
    assert cyc["conv0"] == 4 * 9 * 900 == 32400
    assert cyc["conv1"] == 2 * 18 * 784 and cyc["conv5"] == 256 * 72 == 18432
    assert cyc["fc0"] == cyc["fc1"] == 32768 and cyc["fc2"] == 1024
    assert cyc["swg0"] == 32 * 3 * 1 + 30 * max(30 * 9, 32) == 8196  # finn-hlslib SWG loop nest
    assert cyc["pool28"] == 28 * 28 + 14 * 14
    assert r.max_cycles == 32768 and r.bottleneck == "fc0"
    assert r.fps == pytest.approx(1e8 / 32768)  # ~3.05 kFPS at 100 MHz


def test_other_layer_cycles():
    assert Thresholding("t", channels=64, pixels=100, pe=8).cycles() == 800
    assert AddStreams("a", channels=64, pixels=100, pe=16).cycles() == 400
    assert Pool("g", channels=64, ifm_dim=7, pool="global_avg", pe=4).cycles() == 49 * 16 + 16
    assert Reorder("r", elems=10).cycles() == 0 and Reorder("r").resources().lut == 0


# ---------------------------------------------------------------------------- resource models


def test_mvtu_lut_bram_spot_checks_tfc():
    l0, l1, _, l3 = tfc()
    # fc0: P=16 Q=49 W=A=1 bipolar; acc = ceil(alpha + log2(1+2^-alpha) + 1) with alpha = log2(784)+1+1-1-1
    assert cm.acc_bits_bound(784, 1, 1, True) == 11
    # mult = 49*(2*ceil(2/6)-1)*2 = 98; adder = 2*(2*49-1) = 194; LUT = 300 + 1.1*16*(98+194+11)
    assert l0.finn_resources().lut == int(300 + 1.1 * 16 * 303) == 5632
    # WMEM = 784*64/(16*49) = 64, mem_width = 784 > 18 and omega <= 512 -> ceil(64/512)*ceil(784/36)
    assert l0.finn_resources().bram18 == 22
    # fc1: acc 8, mult 16, adder 30 -> 300 + 1.1*8*54; BRAM ceil(64/512)*ceil(64/36) = 2
    assert (l1.finn_resources().lut, l1.finn_resources().bram18) == (775, 2)
    # fc3 distributed: c2 = P*Q*W*ceil(WMEM/64) = 80 -> 300 + 1.1*10*54 + 80
    assert (l3.finn_resources().lut, l3.finn_resources().bram18) == (974, 0)


@pytest.mark.parametrize("mw,mh,pe,simd,w,expect", [
    (256, 256, 1, 1, 1, 4),  # width 1: ceil(65536/16384)
    (256, 256, 1, 1, 2, 8),  # width 2: ceil(65536/8192)
    (256, 256, 1, 1, 4, 16),  # width <=4: ceil(65536/4096)*ceil(4/4)
    (256, 256, 1, 1, 8, 32),  # width <=9: ceil(65536/2048)*1
    (256, 256, 2, 1, 8, 32),  # width 16 <= 18: ceil(32768/1024)*ceil(16/18)
    (1024, 64, 4, 16, 1, 4),  # width 64, omega 1024 > 512: ceil(1024/1024)*ceil(64/18)
    (64, 64, 8, 8, 1, 2),  # width 64, omega 64: ceil(64/512)*ceil(64/36)
])
def test_bram18_table(mw, mh, pe, simd, w, expect):
    assert cm.mvtu_bram18(mw, mh, pe, simd, w, "block") == expect
    assert cm.mvtu_bram18(mw, mh, pe, simd, w, "distributed") == 0


def test_uram_dsp_thresholds_and_acc():
    big = MVTU("u", mw=1024, mh=1024, w_bits=4, a_bits=4, pe=8, simd=16, ram_style="ultra")
    assert big.finn_resources().uram == math.ceil(512 / 72) * math.ceil(8192 / 4096) == 16
    assert big.finn_resources().bram18 == 0
    d = MVTU("d", mw=64, mh=64, w_bits=8, a_bits=8, pe=4, simd=8, res_type="dsp")
    assert d.finn_resources().dsp == 4 * 8 * 1
    assert d.finn_resources().lut < MVTU("l", mw=64, mh=64, w_bits=8, a_bits=8, pe=4, simd=8).finn_resources().lut
    t = MVTU("t", mw=64, mh=64, w_bits=2, a_bits=2, a_signed=False, thresholds=3, pe=4, simd=8,
             ram_style="block", ram_style_thresholds="distributed")
    # alpha = 6+2+2-1 = 9 -> acc 11; mult 8*1*4 = 32; adder 4*15 = 60; thr = cmp = 3*11*ceil(16/64) = 33
    assert t.finn_resources().lut == int(300 + 1.1 * 4 * (32 + 60 + 11 + 33 + 33)) == 1043
    assert cm.acc_bits_for_range(0, 255) == (8, False)
    assert cm.acc_bits_for_range(-128, 127) == (8, True)
    assert cm.acc_bits_for_range(-129, 127) == (9, True)
    assert cm.acc_bits_for_range(0, 256) == (9, False)
    assert cm.acc_bits_for_range(-3, 20, final_no_activation=True) == (8, True)
    assert cm.matvec_acc_range(np.array([[1, -1], [2, 3]]), 0, 3) == (-3, 9)
    assert cm.swg_bram18(64, 30, 3, 1, 32, 1) == 4  # depth 60 -> 36-bit ports; (3+1) row buffers


def test_fold_validation():
    with pytest.raises(QpassError, match="PE=3 must divide MH=64"):
        MVTU("x", mw=64, mh=64, pe=3)
    with pytest.raises(QpassError, match="ram_style"):
        MVTU("x", mw=64, mh=64, ram_style="flash")


# --------------------------------------------------------------------------------- folding


def _small_net():
    return [SlidingWindow("swg", ifm_ch=4, ifm_dim=6, kernel=3, a_bits=4, simd=1),
            MVTU("conv", mw=36, mh=8, num_vectors=16, w_bits=2, a_bits=4, thresholds=15, ram_style="distributed"),
            Thresholding("thr", channels=8, pixels=16, a_bits=8),
            MVTU("fc", mw=128, mh=10, w_bits=4, a_bits=4, a_signed=False, thresholds=0)]


def test_fold_for_target_meets_target_with_fewest_luts_brute_force():
    layers = _small_net()
    fps, clk = 1e6, 5.0  # 200 cycles per frame
    r = fold_for_target(layers, fps, clk)
    budget = (1e9 / clk) / fps
    assert r.meets_target and r.max_cycles <= budget and r.fps >= fps
    best = None
    opts = [[(f.cycles(), f.resources().lut) for f in (l.folded(p, s) for p, s in l.fold_options())]
            for l in layers]
    for combo in itertools.product(*opts):
        if all(c <= budget for c, _ in combo):
            lut = sum(x for _, x in combo)
            best = lut if best is None else min(best, lut)
    assert r.total.lut == best
    assert r.candidates_tried == sum(len(o) for o in opts)
    assert r.baseline_lut >= r.total.lut  # FINN's divisor walk is among the candidates
    finn = fold_for_target(layers, fps, clk, strategy="finn")
    assert finn.total.lut == r.baseline_lut and finn.max_cycles <= budget


def test_fold_for_target_two_pass_relaxation():
    layers = _small_net()
    r = fold_for_target(layers, 1e12, 5.0)  # unreachable
    floor = max(min(l.folded(p, s).cycles() for p, s in l.fold_options()) for l in layers)
    assert r.max_cycles == floor and not r.meets_target
    relaxed = fold_for_target(layers, (1e9 / 5.0) / floor, 5.0)
    assert [f.fold for f in relaxed.layers] == [f.fold for f in r.layers]  # balanced to the bottleneck


def test_cnv_auto_fold_beats_hand_fold():
    hand = evaluate(cnv())
    auto = fold_for_target(cnv(), 1e8 / 32768, 10.0)
    assert auto.max_cycles <= 32768
    assert auto.total.lut <= hand.total.lut and auto.total.lut <= auto.baseline_lut


def test_fold_for_budget_fits_device():
    hand = evaluate(cnv(), device="pynq-z1")
    assert hand.fits(utilisation=0.8)
    r = fold_for_budget(cnv(), "xc7z020clg400-1", utilisation=0.8)
    assert r.fits() and r.device.part == "xc7z020" and r.clock_ns == 10.0
    assert r.fps >= hand.fps  # the hand folding fits, so the fastest fitting one is at least as fast
    assert "xc7z020" in r.table()
    with pytest.raises(QpassError, match="does not fit"):
        fold_for_budget([MVTU("huge", mw=4096, mh=4096, w_bits=8, a_bits=8)], "pynq-z1")


def test_devices():
    z = get_device("Pynq-Z1")
    assert (z.lut, z.bram18, z.uram, z.dsp, z.clock_ns) == (53_200, 280, 0, 220, 10.0)
    assert get_device("zcu104").uram == 96 and get_device("xcu250-figd2104-2L-e").dsp == 12_288
    with pytest.raises(QpassError, match="unknown FPGA device 'xc9z999'.*xc7z020"):
        get_device("xc9z999")


# -------------------------------------------------------------------------------- FIFO sizing


def test_fifo_balanced_chain_is_small():
    chain = [Thresholding("in", channels=32, pixels=64, pe=32)] + [
        MVTU(f"m{i}", mw=32, mh=32, num_vectors=64, w_bits=2, a_bits=2, thresholds=3, pe=32, simd=32)
        for i in range(4)]
    r = size_fifos(chain, verify=True)
    assert r.verified and r.period_cycles == 64 and r.measured_period == 64
    assert all(e.depth == 2 for e in r.edges)


def test_fifo_tfc_matches_reference_simulator():
    r = size_fifos(tfc(), verify=True)
    assert r.verified
    assert r.depth("fc1", "fc2") == 8  # fc2 reads its whole 8-word vector in 8 cycles, fc1 writes 1 per 8
    ref = simulate_with_depths(tfc(), r.depths)
    assert not ref.deadlock and ref.period == 64


def _residual(long_branch):
    fork = Thresholding("fork", channels=16, pixels=64, pe=16, a_bits=8)
    add = AddStreams("add", channels=16, pixels=64, pe=16)
    names = ["fork"] + [l.name for l in long_branch] + ["add"]
    edges = list(zip(names, names[1:])) + [("fork", "add")]
    return [fork, *long_branch, add], edges


def test_fifo_residual_shortcut_holds_the_latency_difference():
    # long branch: three 1-word-per-cycle MVTUs; its latency is the sum of pipeline depth + 1 FIFO hop
    mv = [MVTU(f"m{i}", mw=16, mh=16, num_vectors=64, pe=16, simd=16, thresholds=1) for i in range(3)]
    layers, edges = _residual(mv)
    r = size_fifos(layers, edges, verify=True)
    lat_diff = sum(m.pipeline_depth() + 1 for m in mv)  # 27 cycles = 27 words at 1/cycle
    assert abs(r.edge("fork", "add").occupancy - lat_diff) <= 3
    assert r.depth("fork", "add") == 32
    assert all(e.depth == 2 for e in r.edges if (e.src, e.dst) != ("fork", "add"))
    assert r.verified


def test_fifo_residual_conv_branch_needs_deep_shortcut_and_shallow_one_deadlocks():
    # long branch: 'same' 3x3 conv on 8x8x16; the join sees pixel (y, x) only after the window generator
    # has read input row y+1, i.e. ~2 rows (16 words) plus pipeline latency after the fork emitted it
    swg = SlidingWindow("swg", ifm_ch=16, ifm_dim=8, kernel=3, pad=1, a_bits=8, simd=16)
    conv = MVTU("conv", mw=144, mh=16, num_vectors=64, w_bits=2, a_bits=8, thresholds=1, pe=16, simd=16)
    layers, edges = _residual([swg, conv])
    r = size_fifos(layers, edges, verify=True)
    occ = r.edge("fork", "add").occupancy
    assert 16 <= occ <= 32 and r.depth("fork", "add") == 32
    assert r.depth("fork", "swg") == 2 and r.edge("fork", "swg").occupancy_asap > 16
    ok = simulate_with_depths(layers, r.depths, edges)
    assert not ok.deadlock and ok.period == r.period_cycles == swg.cycles()
    shallow = dict(r.depths)
    shallow[("fork", "add", 1)] = 8
    assert simulate_with_depths(layers, shallow, edges).deadlock


def test_fifo_partition_input_read_by_two_layers_is_a_fork():
    # the residual above with the partition input as the fork: the top pushes each input word into both readers'
    # FIFOs at once, so the add's input FIFO must hold the conv branch's latency (modelled as two independent
    # input streams it got depth 2 and the RTL deadlocked)
    swg = SlidingWindow("swg", ifm_ch=16, ifm_dim=8, kernel=3, pad=1, a_bits=8, simd=16)
    conv = MVTU("conv", mw=144, mh=16, num_vectors=64, w_bits=2, a_bits=8, thresholds=1, pe=16, simd=16)
    add = AddStreams("add", channels=16, pixels=64, pe=16)
    layers = [swg, conv, add]
    edges = [("<input>x", "swg"), ("swg", "conv"), ("conv", "add"), ("<input>x", "add")]
    r = size_fifos(layers, edges, verify=True)
    assert {(e.src, e.dst, e.port) for e in r.edges} == {("<input>", "swg", 0), ("swg", "conv", 0),
                                                         ("conv", "add", 0), ("<input>", "add", 1)}
    assert 16 <= r.edge("<input>", "add").occupancy <= 32 and r.depth("<input>", "add") == 32
    assert r.verified and r.measured_period == swg.cycles()
    ok = simulate_with_depths(layers, r.depths, edges)
    assert not ok.deadlock and ok.period == swg.cycles()
    assert ok.max_occupancy[("<input>", "add", 1)] <= 32
    shallow = dict(r.depths)
    shallow[("<input>", "add", 1)] = 8
    assert simulate_with_depths(layers, shallow, edges).deadlock
    # an input read by one port stays a plain graph-input edge
    single = size_fifos([swg, conv], [("<input>x", "swg"), ("swg", "conv")])
    assert [(e.src, e.dst) for e in single.edges] == [("<input>", "swg"), ("swg", "conv")]


def test_fifo_sim_ten_layer_chain():
    # (its speed is not asserted here: a timed test fails under load, 1.4 s at load 8 on 2 cores)
    layers, dim, c = [], 16, 8
    for i in range(5):
        layers.append(SlidingWindow(f"swg{i}", ifm_ch=c, ifm_dim=dim, kernel=3, pad=1, a_bits=4, simd=c))
        layers.append(MVTU(f"conv{i}", mw=9 * c, mh=16, num_vectors=dim * dim, w_bits=4, a_bits=4,
                           thresholds=15, pe=4, simd=c))
        c = 16
    r = size_fifos(layers)
    assert len(r.edges) == 10 and r.measured_period == r.period_cycles


def test_fifo_sim_rejects_mismatched_edges():
    with pytest.raises(QpassError, match="elements per frame"):
        size_fifos([Thresholding("a", channels=8, pixels=4), Thresholding("b", channels=8, pixels=5)])
