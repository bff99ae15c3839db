"""The generated HLS code, read and run: counters instead of run-time division in the window generator and pools,
banked dual-port line buffers, storage and multipliers bound per layer, TLAST on output streams, the XNOR-popcount
path of binary networks (1-bit weights and activations, an 8-bit first layer) bit-exact in the g++ C simulation,
the block-level control options, run_hls.tcl's steps and the ap_int width limit.

The binary network is built here (a float model through the API with binary weights and activations, uint8 input
of the first layer) and exported once per control mode; needs g++ and ap_int.h (skips cleanly without them).
"""
import dataclasses
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.api import qonnx_model
from qpass.backends import hls
from qpass.backends.hls import codegen
from qpass.backends.hls.project_files import template_text
from qpass.backends.hls.binary import BIPOLAR, element_types, xnor_thresholds
from qpass.hw.builder import build
from qpass.hw.design import fifo_depths, fold
from qpass.hw.partition import partition
from qpass.errors import QpassError

pytestmark = pytest.mark.usefixtures("ap_types")
RNG = np.random.default_rng(1)
CONTROLS = ("ap_ctrl_hs", "ap_ctrl_none", "frame-loop")


def _c(name, v):
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


def _bn(name, x, ch):
    return (helper.make_node("BatchNormalization", [x, f"{name}_s", f"{name}_b", f"{name}_m", f"{name}_v"], [name],
                             name=name),
            [_c(f"{name}_s", RNG.uniform(0.5, 2, ch)), _c(f"{name}_b", RNG.normal(0, 1, ch)),
             _c(f"{name}_m", RNG.normal(0, 1, ch)), _c(f"{name}_v", RNG.uniform(0.5, 2, ch))])


def bnn_model(path):
    """conv3x3(3->16)+BN, conv3x3(16->16)+BN, 2x2 max pool, FC 64->32, FC 32->10 (a small CNV)."""
    inits = [_c("w1", RNG.normal(0, 1, (16, 3, 3, 3))), _c("w2", RNG.normal(0, 1, (16, 16, 3, 3))),
             _c("w3", RNG.normal(0, 1, (64, 32))), _c("w4", RNG.normal(0, 1, (32, 10)))]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], kernel_shape=[3, 3], name="conv1")]
    for bn, x, nxt in (("bn1", "c1", ("Conv", ["bn1", "w2"], ["c2"], "conv2")),
                       ("bn2", "c2", ("MaxPool", ["bn2"], ["mp"], "pool"))):
        n, i = _bn(bn, x, 16)
        nodes.append(n)
        inits += i
        op, ins, outs, name = nxt
        kw = {"kernel_shape": [3, 3]} if op == "Conv" else {"kernel_shape": [2, 2], "strides": [2, 2]}
        nodes.append(helper.make_node(op, ins, outs, name=name, **kw))
    nodes += [helper.make_node("Flatten", ["mp"], ["fl"], name="flat"),
              helper.make_node("MatMul", ["fl", "w3"], ["f1"], name="fc1"),
              helper.make_node("MatMul", ["f1", "w4"], ["y"], name="fc2")]
    g = helper.make_graph(nodes, "bnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    x = RNG.uniform(0, 1, (48, 1, 3, 8, 8)).astype(np.float32)
    np.savez(path.with_suffix(".calib.npz"), x=x)
    return path, path.with_suffix(".calib.npz")


def bnn_pipeline():
    return qpass.load_pipeline("streamline", {"fakequant": {
        "weights": "binary", "activations": "binary",
        "rules": [{"role": "activation", "match": "conv1", "format": "uint8"}]}})  # 8-bit first layer


def _export(job):
    model, calib, out, control = job
    res = hls.export(model, out / control, control=control)
    return control, (res, hls.compare_with_golden(res, calib))


@pytest.fixture(scope="module")
def bnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("bnn")
    path, calib = bnn_model(d / "bnn.onnx")
    model = qonnx_model(qpass.optimize(path, calib=calib, pipeline=bnn_pipeline()))
    with ThreadPoolExecutor(2) as pool:
        runs = dict(pool.map(_export, [(model, calib, d, c) for c in CONTROLS]))
    return {"model": model, "calib": calib, "path": path, "dir": d, **runs}


def _function(src: str, name: str) -> str:
    """The body of template function ``name`` in qpass_dataflow.h."""
    m = re.search(r"\nvoid " + name + r"\(", src)
    assert m, name
    depth, i = 0, src.index("{", m.end())
    for j in range(i, len(src)):
        depth += {"{": 1, "}": -1}.get(src[j], 0)
        if depth == 0:
            return src[i:j + 1]
    raise AssertionError(name)


def _runtime_lines(body: str) -> list[str]:
    """Statements evaluated per iteration: no comments, pragmas or compile-time constants."""
    out = []
    for line in body.splitlines():
        line = line.split("//")[0].strip()
        if line and not line.startswith("#pragma") and not line.startswith("const unsigned"):
            out.append(line)
    return out


# ------------------------------------------------------------------------------------------ reading the code

def test_window_generator_and_pools_use_counters_not_division(bnn):
    res = bnn["ap_ctrl_hs"][0]
    lib = (res.partitions[0].project_dir / "qpass_dataflow.h").read_text()
    for fn in ("sliding_window", "max_pool", "global_acc_pool"):
        body = _function(lib, fn)
        divmod_ = [s for s in _runtime_lines(body) if re.search(r"[^/]/[^/*]|%", s)]
        assert divmod_ == [], (fn, divmod_)
    swg = _function(lib, "sliding_window")
    assert "rbase = (rbase + SH >= R) ? rbase + SH - R : rbase + SH;" in swg  # the bank counter wraps
    # the previous generator's run-time address arithmetic is gone
    assert "j / ROWW" not in lib and "% R]" not in lib and "x % KW" not in lib


def test_line_buffer_is_banked_dual_port_without_false_dependence(bnn):
    res = bnn["ap_ctrl_hs"][0]
    lib = (res.partitions[0].project_dir / "qpass_dataflow.h").read_text()
    swg = _function(lib, "sliding_window")
    assert "ap_uint<SIMD * EB> buf[R][ROWW];" in swg
    assert "#pragma HLS ARRAY_PARTITION variable=buf complete dim=1" in swg  # one bank per buffered row
    assert "#pragma HLS DEPENDENCE variable=buf inter false" in swg
    assert "bind_ram_s2p(buf, storage<IMPL>());" in swg  # the layer's ram_style picks the overload
    for impl in ("bram", "lutram", "uram"):
        assert f"#pragma HLS BIND_STORAGE variable=buf type=ram_s2p impl={impl}" in lib
    assert "bind_ram_s2p(buf, storage<0>());" in _function(lib, "max_pool")
    mp = _function(lib, "max_pool")
    assert "#pragma HLS ARRAY_PARTITION variable=hreg complete dim=1" in mp and "hreg[CF - 1]" in mp
    gp = _function(lib, "global_acc_pool")
    assert "#pragma HLS ARRAY_PARTITION variable=sreg complete dim=1" in gp and "sreg[CF - 1]" in gp
    assert "acc[cf]" not in gp  # no indexed accumulator memory read and written in the loop


def _dg(model, overrides=None):
    pm = partition(model)
    node = pm.partition_nodes[0]
    rel = next(a.s.decode() for a in node.attribute if a.name == "model")
    dg = build(pm.partitions[rel], node.name)
    fold(dg, clock_ns=10.0, overrides=overrides)
    return dg


def _restyle(dg, **by_layer):
    for l in dg.layers:
        if l.name in by_layer:
            l.layer = dataclasses.replace(l.layer, **by_layer[l.name])
    return codegen.generate(dg, fifo_depths(dg), "top")


def test_storage_and_multipliers_bound_per_layer(bnn):
    dg = _dg(bnn["model"])
    proj = _restyle(dg, conv1={"ram_style": "block", "res_type": "dsp", "ram_style_thresholds": "distributed"},
                    conv2={"ram_style": "distributed"}, fc1={"ram_style": "ultra"}, swg_conv2={"ram_style": "block"})
    cpp = proj.files["top.cpp"]
    assert "#pragma HLS BIND_STORAGE variable=conv1_w.m type=rom_2p impl=bram" in cpp
    assert "#pragma HLS BIND_STORAGE variable=conv1_thr.m type=rom_2p impl=lutram" in cpp
    assert "#pragma HLS BIND_STORAGE variable=conv2_w.m type=rom_2p impl=lutram" in cpp
    assert "#pragma HLS BIND_STORAGE variable=fc1_w.m type=rom_2p impl=uram" in cpp
    # not restyled: the cost model's choice after folding (LUTRAM up to 128 words, else block RAM)
    assert re.search(r"#pragma HLS BIND_STORAGE variable=fc2_w\.m type=rom_2p impl=(lutram|bram)\n", cpp)
    assert re.search(r"qpass::mvtu<[^;]*, true>\(conv1_in0", cpp)  # res_type dsp
    assert re.search(r"qpass::mvtu<[^;]*, false>\(conv2_in0", cpp)
    assert re.search(r"qpass::sliding_window<16, [^;]*, 1>\(", cpp)  # swg_conv2: block RAM line buffer
    assert re.search(r"qpass::sliding_window<3, [^;]*, [0-3]>\(", cpp)  # swg_conv1: the cost model's choice
    src = template_text("qpass_dataflow.h")
    assert "#pragma HLS BIND_OP variable=p op=mul impl=dsp" in src
    assert "#pragma HLS BIND_OP variable=p op=mul impl=fabric" in src


def test_xnor_popcount_layers_with_one_bit_storage_are_bit_exact(bnn):
    res, cmp = bnn["ap_ctrl_hs"]
    assert len(res.partitions) == 1
    assert cmp.frames == 48 and cmp.mismatches == 0, cmp.summary()
    e = res.partitions[0]
    et = element_types(e.graph)
    kinds = {l.name: (l.kind, [et[s] for s in l.inputs], et[l.output]) for l in e.graph.layers}
    assert kinds["conv1"][1][0].bits == 8 and kinds["conv1"][2] is BIPOLAR  # the 8-bit first layer
    assert kinds["conv2"][1] == [BIPOLAR] and kinds["pool"][1] == [BIPOLAR] and kinds["fc2"][1] == [BIPOLAR]
    cpp = (e.project_dir / f"{e.top}.cpp").read_text()
    params = (e.project_dir / "params.h").read_text()
    assert re.search(r"qpass::mvtu<144, 16, \d+, \d+, 16, qpass::bipolar, qpass::bipolar, ap_int<9>, qpass::bipolar",
                     cpp)
    assert re.search(r"qpass::mvtu<27, 16, \d+, \d+, 36, ap_uint<8>, qpass::bipolar, ", cpp)
    assert "(XNOR-popcount)" in cpp and "qpass::XnorDotActivation<" in cpp  # fc2: raw dot = 2 * popcount - MW
    assert "ap_int<2>" not in cpp  # bipolar data is never widened to two bits
    for name in ("conv1_w", "conv2_w", "fc1_w", "fc2_w"):  # binary weights: EB = 1
        assert re.search(r"PackedRom<\d+, \d+, \d+, 1, \w+, \d+, \d+> " + name + " ", params), name
    # stream words of bipolar data are one bit per element
    assert re.search(r"hls::stream<ap_uint<\d+> > conv2_in0", cpp)
    l = e.graph.layer("conv2")
    width = int(re.search(r"hls::stream<ap_uint<(\d+)> > conv2_in0", cpp).group(1))
    assert width == l.layer.simd


def test_xnor_thresholds_count_agreements():
    mw = 9
    w = RNG.choice([-1, 1], (50, mw))
    x = RNG.choice([-1, 1], (50, mw))
    d = (w * x).sum(axis=1)
    pop = (w == x).sum(axis=1)
    for t in range(-12, 13):
        assert np.array_equal(d >= t, pop >= xnor_thresholds(np.array([t]), mw)[0])


def test_output_streams_carry_tlast(bnn, tmp_path):
    res, _ = bnn["ap_ctrl_hs"]
    e = res.partitions[0]
    d = e.project_dir
    cpp = (d / f"{e.top}.cpp").read_text()
    p = e.project.outputs[0]
    assert f"hls::stream<qpass::axis_t<{p.word_bits}> >& out0" in cpp
    assert f"qpass::axis_out<{p.word_bits}, {p.words}>(out0_data, out0, 1);" in cpp
    assert "#pragma HLS INTERFACE axis port=out0" in cpp
    assert "#include <ap_axi_sdata.h>" in (d / "qpass_dataflow.h").read_text()  # ap_axiu in Vitis
    assert "qpass::last_ok(beat, w + 1 ==" in (d / "tb.cpp").read_text()
    # the testbench checks TLAST: a generator that never sets it fails the C simulation
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(d, bad)
    lib = (bad / "qpass_dataflow.h").read_text()
    assert "b.last = (w == NWORDS - 1) ? 1 : 0;" in lib
    (bad / "qpass_dataflow.h").write_text(lib.replace("b.last = (w == NWORDS - 1) ? 1 : 0;", "b.last = 0;"))
    (bad / "csim_bin").unlink(missing_ok=True)
    x = np.load(bnn["calib"])["x"][:2]
    feeds = {e.project.inputs[0].tensor: _codes(res, x)}
    with pytest.raises(QpassError, match="TLAST wrong on word"):
        hls.csim(bad, feeds)


def _codes(res, x):
    from qpass.ir.samples import as_samples

    parent = res.partitioned.parent
    io = hls.partition_io(parent, as_samples({"x": x}, parent), partitions=res.partitioned.store)
    return io[res.partitions[0].project.inputs[0].tensor]


@pytest.mark.parametrize("control", CONTROLS)
def test_control_modes_are_bit_exact(bnn, control):
    res, cmp = bnn[control]
    assert cmp.mismatches == 0, cmp.summary()
    e = res.partitions[0]
    cpp = (e.project_dir / f"{e.top}.cpp").read_text()
    if control == "frame-loop":
        assert "const unsigned frames)" in cpp and "#pragma HLS INTERFACE s_axilite port=frames" in cpp
        assert "(conv1_in0, " in cpp and re.search(r"qpass::mvtu<[^;]*, frames\);", cpp)
        assert ", 1);" in (e.project_dir / "tb.cpp").read_text()
    else:
        assert f"#pragma HLS INTERFACE {control} port=return" in cpp and "frames)" not in cpp


def test_run_hls_tcl_has_every_step(bnn, tmp_path):
    res = hls.export(bnn["model"], tmp_path / "zu", device="xczu3eg", clock_ns=4.0, samples=bnn["calib"])
    tcl = (res.partitions[0].project_dir / "run_hls.tcl").read_text()
    for s in ("set_part {xczu3eg-sbva484-1-i}", "create_clock -period 4 -name default", "set_clock_uncertainty 0.5",
              "csim_design -argv {48 ", "csynth_design", "cosim_design -rtl verilog", "export_design -format ip_catalog",
              "config_export -format ip_catalog"):
        assert s in tcl, s
    assert tcl.index("csim_design") < tcl.index("csynth_design") < tcl.index("cosim_design") < tcl.index("export_design")


def test_words_wider_than_ap_int_limit_are_refused_naming_the_layer(tmp_path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 1024])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])
    q = "qonnx.custom_op.general"
    nodes = [helper.make_node("Quant", ["x", "one", "zero", "bits"], ["q"], domain=q, signed=0, narrow=0,
                              rounding_mode="ROUND", name="inq"),
             helper.make_node("MatMul", ["q", "w"], ["y"], name="wide")]
    inits = [_c("one", 1.0), _c("zero", 0.0), _c("bits", 8.0), _c("w", RNG.integers(-7, 8, (1024, 4)))]
    m = helper.make_model(helper.make_graph(nodes, "wide", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(q, 1)])
    with pytest.raises(QpassError, match=r"layer wide: its 8192-bit input stream word exceeds AP_INT_MAX_W 4096"):
        hls.export(m, tmp_path / "w", folding={"wide": {"PE": 1, "SIMD": 1024}}, allow_over_budget=True)
    assert not (tmp_path / "w" / "dataflow_partition_0").exists()
    res = hls.export(m, tmp_path / "ok", folding={"wide": {"PE": 1, "SIMD": 512}},  # 4096 bits: allowed
                     allow_over_budget=True)
    h = (res.partitions[0].project_dir / f"{res.partitions[0].top}.h").read_text()
    assert "#define AP_INT_MAX_W 4096" in h


def test_cli_hls_control_option(bnn, tmp_path):
    out = tmp_path / "cli.hls"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", bnn["path"], "--calib", bnn["calib"],
                        "--weights", "binary", "--activations", "binary", "--backend", "hls", "--hls-control",
                        "ap_ctrl_none", "-o", out, "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cpp = next(out.glob("*/dataflow_partition_0.cpp")).read_text()
    assert "#pragma HLS INTERFACE ap_ctrl_none port=return" in cpp
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", bnn["path"], "--calib", bnn["calib"],
                        "--hls-control", "frame-loop", "-o", tmp_path / "x.onnx"], capture_output=True, text=True)
    assert r.returncode == 2 and "--hls-control only apply to --backend hls" in r.stderr


def test_fifo_depths_are_the_sized_depths_without_rounding(bnn):
    res, _ = bnn["ap_ctrl_hs"]
    e = res.partitions[0]
    cpp = (e.project_dir / f"{e.top}.cpp").read_text()
    declared = dict(re.findall(r"#pragma HLS STREAM variable=(\w+) depth=(\d+)", cpp))
    checked = 0
    dg = e.graph
    for l in dg.layers:
        for port, sname in enumerate(l.inputs):
            s = dg.streams[sname]
            if s.producer is None or dg.layer(s.producer).out_fold != l.in_fold[port]:
                continue
            want = max(2, e.depths[(s.producer, l.name, port)])
            assert int(declared[f"{l.name}_in{port}"]) == want, l.name
            checked += 1
    assert checked >= 2
