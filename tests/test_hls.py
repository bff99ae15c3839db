"""HLS C++ export: the g++ C simulation of every exported project equals the golden simulator bit for bit.

Each model is streamlined, exported and compiled once (module fixtures, two at a time on the two cores); needs
g++ and ap_int.h (hls4ml's Apache-2.0 ap_types, see qpass.backends.hls.aptypes) and skips cleanly without them.
"""
import subprocess
import time
import zipfile
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import qpass
from qpass.api import qonnx_model
from qpass.backends import hls
from qpass.backends.hls import aptypes, project_files
from qpass.backends.hls.emit import EMITTERS
from qpass.hw import cost_models as cm
from qpass.hw.builder import build
from qpass.hw.kinds import KINDS
from qpass.hw.partition import partition
from qpass.errors import QpassError

from conftest import MODELS

pytestmark = pytest.mark.usefixtures("ap_types")  # needs g++ and ap_int.h (the conftest fixture skips without them)

BITS = {"binary": ("binary", "binary"), "2": ("sym:2", "dfp:2"), "4": ("sym:4", "dfp:4"), "8": ("sym:8", "dfp:8")}
DIGITS = [(m, b) for m in ("digits_mlp", "digits_cnn") for b in BITS] + [("digits_rescnn", "4")]
Q = "qonnx.custom_op.general"


def streamline(name, bits):
    w, a = BITS[bits]
    p = qpass.load_pipeline("streamline", {"fakequant": {"weights": w, "activations": a}})
    return qonnx_model(qpass.optimize(MODELS / f"{name}.onnx", calib=MODELS / f"{name}.calib.npz", pipeline=p))


SELF_CHECKED = ("digits_mlp", "2")  # exported with samples: its `make csim` compares with the golden outputs


def _run(job):
    name, bits, out = job
    t0 = time.perf_counter()
    samples = MODELS / f"{name}.eval.npz" if (name, bits) == SELF_CHECKED else None
    res = hls.export(streamline(name, bits), out / f"{name}_{bits}", samples=samples)
    t1 = time.perf_counter()
    cmp = hls.compare_with_golden(res, MODELS / f"{name}.eval.npz")
    return (name, bits), (res, cmp, t1 - t0, time.perf_counter() - t1)


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    out = tmp_path_factory.mktemp("hls_digits")
    with ThreadPoolExecutor(2) as pool:
        return dict(pool.map(_run, [(n, b, out) for n, b in DIGITS]))


@pytest.mark.parametrize("name,bits", DIGITS)
def test_digits_csim_equals_golden(digits, name, bits):
    res, cmp, _, _ = digits[(name, bits)]
    assert len(res.partitions) == 1
    assert cmp.frames == 360
    assert [o.mismatches for o in cmp.outputs] == [0], cmp.summary()  # the partition's integer output
    assert cmp.end_to_end == {"logits": 0}, cmp.summary()  # after the host float head
    assert cmp.mismatches == 0


def test_exported_project_layout(digits, ap_types):
    res, _, _, _ = digits[("digits_cnn", "4")]
    d = res.partitions[0].project_dir
    top = res.partitions[0].top
    names = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert {f"{top}.cpp", f"{top}.h", "params.h", "qpass_dataflow.h", "csim/hls_stream.h", "tb.cpp", "Makefile",
            "run_hls.tcl", "README.md", "partition.json", "orders.npz", "report.txt"} <= names
    assert not {"hls_stream.h", "ap_int.h", "ap_shift_reg.h"} & names  # no vendor headers copied in
    stream_h = (d / "csim" / "hls_stream.h").read_text()
    assert "std::deque" in stream_h and "qpass" in stream_h and "Xilinx" not in stream_h
    cpp = (d / f"{top}.cpp").read_text()
    assert "#pragma HLS DATAFLOW" in cpp and "#pragma HLS STREAM variable=" in cpp and "depth=" in cpp
    assert "#pragma HLS INTERFACE axis port=in0" in cpp and "qpass::mvtu<" in cpp and "qpass::sliding_window<" in cpp
    lib = (d / "qpass_dataflow.h").read_text()
    assert "#pragma HLS PIPELINE II=1" in lib and "NUMV * NF * SF" in lib and "(a >= m[pe][nf][t])" in lib
    mk = (d / "Makefile").read_text()
    assert "-std=c++14 -O2" in mk and "-I$(AP_TYPES)" in mk and f"AP_TYPES ?= {ap_types}" in mk and "csim:" in mk
    tcl = (d / "run_hls.tcl").read_text()
    for s in ("open_project", f"set_top {top}", "add_files", "csim_design", "csynth_design",
              "set_part {xc7z020clg400-1}", "create_clock -period 10"):
        assert s in tcl
    assert (res.out_dir / "model.onnx").is_file() and (res.out_dir / "model.dataflow_partition_0.onnx").is_file()
    assert "host nodes (4)" in (res.out_dir / "report.txt").read_text()


def test_weights_and_thresholds_in_folded_layout(digits):
    res, _, _, _ = digits[("digits_mlp", "4")]
    e = res.partitions[0]
    l = e.graph.layers[0]
    pe, simd = l.layer.pe, l.layer.simd
    params = (e.project_dir / "params.h").read_text()
    assert f"PackedRom<{pe}, {64 * 64 // (pe * simd)}, {simd}, 4, " in params
    assert f"ThresholdActivation<{64 // pe}, {pe}, 15, int16_t, ap_uint<4>, 1, 0>" in params
    # the row of PE lane p, fold nf holds output channel nf * PE + p
    w = l.params["weights"]
    arr = w.reshape(64 // pe, pe, 64 // simd, simd).transpose(1, 0, 2, 3)
    assert arr[1, 0, 0, 0] == w[1, 0] and arr[0, 1, 0, 0] == w[pe, 0]


def test_make_csim_checks_itself(digits):
    res = digits[SELF_CHECKED][0]
    d = res.partitions[0].project_dir
    assert (d / "data" / "in0.txt").is_file() and (d / "data" / "out0.expected.txt").is_file()
    r = subprocess.run(["make", "csim"], cwd=d, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "out0: matches the golden simulator" in r.stdout
    y = hls.csim(d, {res.partitions[0].project.inputs[0].tensor: np.zeros((3, 64))})
    assert y["logits_acc"].shape == (3, 10) and y["logits_acc"].dtype == np.int64


# ------------------------------------------------------------------------------------- folding for a target

def test_target_fps_folding_meets_the_target_with_fewest_luts(tmp_path):
    m = streamline("digits_cnn", "4")
    target = 50_000.0
    res = hls.export(m, tmp_path / "cnn", target_fps=target, clock_ns=10.0)
    e = res.partitions[0]
    f = e.folding
    assert f.meets_target and f.max_cycles <= cm.target_cycles(target, 10.0)
    assert f.total.lut <= f.baseline_lut  # FINN's divisor walk for the same target
    budget = cm.target_cycles(target, 10.0)
    for l in e.graph.layers:  # per layer: no legal folding meeting the budget has fewer LUTs
        L = l.layer
        best = min(L.folded(p, s).resources().lut for p, s in L.fold_options() if L.folded(p, s).cycles() <= budget)
        assert L.resources().lut == best, l.name
    assert "target 50,000.0 FPS" in e.table and ": met;" in e.table
    for col in ("layer", "kind", "PE", "SIMD", "cycles", "LUT", "BRAM18", "acc", "FIFO in", "ONNX nodes"):
        assert col in e.table.splitlines()[0]
    cmp = hls.compare_with_golden(res, MODELS / "digits_cnn.eval.npz", end_to_end=False)
    assert cmp.mismatches == 0


def test_folding_config_is_applied_and_checked(tmp_path):
    m = streamline("digits_mlp", "4")
    res = hls.export(m, tmp_path / "a", folding={"fc1_Gemm": {"PE": 2, "SIMD": 16}})
    assert res.partitions[0].graph.layer("fc1_Gemm").layer.fold == (2, 16)
    with pytest.raises(QpassError, match="not a legal folding"):
        hls.export(m, tmp_path / "b", folding={"fc1_Gemm": {"PE": 3, "SIMD": 16}})


# ------------------------------------------------------------------- synthetic integer graphs (all layer kinds)

RNG = np.random.default_rng(0)


def _c(name, v):
    return numpy_helper.from_array(np.asarray(v, np.float32), name)


def _input(bits=4, signed=0):
    return ([helper.make_node("Quant", ["x", "one", "zero", "bits"], ["q"], domain=Q, signed=signed, narrow=0,
                              rounding_mode="ROUND", name="inq")],
            [_c("one", 1.0), _c("zero", 0.0), _c("bits", float(bits))])


def _mt(name, x, c, nt, lo, hi, bias=0.0, layout="NCHW"):
    t = np.sort(RNG.integers(lo, hi, (c, nt)), axis=1)
    return (helper.make_node("MultiThreshold", [x, name + "_T"], [name], domain=Q, out_dtype="UINT4", out_scale=1.0,
                             out_bias=float(bias), data_layout=layout, name=name), _c(name + "_T", t))


def _model(nodes, inits, shape, outs):
    g = helper.make_graph(nodes, "syn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", *shape])],
                          [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outs], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(Q, 1)])


def depthwise_and_pools():
    """strided padded depthwise conv + thresholds, all-ones window sum (average pool), overlapping padded MaxPool"""
    nodes, inits = _input()
    inits += [_c("wd", RNG.integers(-3, 4, (8, 1, 3, 3))), _c("ones", np.ones((8, 1, 2, 2)))]
    nodes.append(helper.make_node("Conv", ["q", "wd"], ["dw"], group=8, kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                                  strides=[2, 2], name="dw"))
    n, t = _mt("dw_mt", "dw", 8, 15, -60, 60)
    nodes.append(n)
    inits.append(t)
    nodes += [helper.make_node("Conv", ["dw_mt", "ones"], ["avg"], group=8, kernel_shape=[2, 2], name="avgsum"),
              helper.make_node("MaxPool", ["avg"], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="mp")]
    return _model(nodes, inits, (8, 6, 6), ["mp"]), (8, 6, 6)


def concat_channelwise_transpose():
    """1x1 conv (no window generator) and 3x3 conv concatenated, channel-wise Mul/Add, MaxPool, Transpose +
    Flatten (the next thresholds and FC absorb the order), a second output read inside too"""
    nodes, inits = _input()
    inits += [_c("w1", RNG.integers(-7, 8, (6, 4, 1, 1))), _c("w2", RNG.integers(-7, 8, (5, 4, 3, 3))),
              _c("k", np.array([1, 2, 3, 1, 2, 3, 1, 2, 3, 1, 2]).reshape(1, 11, 1, 1)),
              _c("b", np.arange(11).reshape(1, 11, 1, 1) - 5), _c("wf", RNG.integers(-7, 8, (44, 10)))]
    nodes.append(helper.make_node("Conv", ["q", "w1"], ["c1"], kernel_shape=[1, 1], name="pw"))
    for n, t in (_mt("m1", "c1", 6, 15, -100, 100),):
        nodes.append(n)
        inits.append(t)
    nodes.append(helper.make_node("Conv", ["q", "w2"], ["c2"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="c3"))
    n, t = _mt("m2", "c2", 5, 3, -100, 100)
    nodes.append(n)
    inits.append(t)
    nodes += [helper.make_node("Concat", ["m1", "m2"], ["cat"], axis=1, name="cat"),
              helper.make_node("Mul", ["cat", "k"], ["cm"], name="cmul"),
              helper.make_node("Add", ["cm", "b"], ["ca"], name="cadd"),
              helper.make_node("MaxPool", ["ca"], ["mp"], kernel_shape=[2, 2], strides=[2, 2], name="mp"),
              helper.make_node("Transpose", ["mp"], ["tr"], perm=[0, 2, 3, 1], name="tr"),
              helper.make_node("Flatten", ["tr"], ["fl"], axis=1, name="fl")]
    n, t = _mt("m3", "fl", 44, 7, -10, 60, bias=-3, layout="NC")
    nodes.append(n)
    inits.append(t)
    nodes.append(helper.make_node("MatMul", ["m3", "wf"], ["y"], name="fc"))
    return _model(nodes, inits, (4, 4, 4), ["y", "cat"]), (4, 4, 4)


def sequence_residual():
    """MatMul over (N, T, K) vectors, thresholds that are also an output, a residual Sub whose power-of-two
    aligned input (Mul by 2) reads the partition input a second time"""
    nodes, inits = _input(bits=3, signed=1)
    inits += [_c("w", RNG.integers(-3, 4, (12, 16))), _c("w2", RNG.integers(-3, 4, (16, 12))), _c("two", 2.0)]
    nodes.append(helper.make_node("MatMul", ["q", "w"], ["h"], name="mm1"))
    n, t = _mt("m1", "h", 16, 7, -40, 40, bias=-3, layout="NWC")
    nodes.append(n)
    inits.append(t)
    nodes += [helper.make_node("MatMul", ["m1", "w2"], ["h2"], name="mm2"),
              helper.make_node("Mul", ["q", "two"], ["q2"], name="align"),
              helper.make_node("Sub", ["h2", "q2"], ["res"], name="sub")]
    return _model(nodes, inits, (6, 12), ["res", "m1"]), (6, 12)


SYNTH = [depthwise_and_pools, concat_channelwise_transpose, sequence_residual]


def _synth_job(job):
    fn, seed, out = job
    m, shape = fn()
    x = np.random.default_rng(seed).uniform(-20, 20, (24, 1, *shape)).astype(np.float32)
    folding = None
    if seed:  # random legal foldings: width converters between any PE/SIMD pairs
        dg = build(next(iter(partition(m).partitions.values())), "p")
        r = np.random.default_rng(seed)
        folding = {}
        for l in dg.layers:
            opts = l.layer.fold_options()
            pe, simd = opts[r.integers(len(opts))]
            folding[l.name] = {"PE": int(pe), "SIMD": int(simd)}
    res = hls.export(m, out / f"{fn.__name__}_{seed}", folding=folding)
    return fn.__name__, seed, res, hls.compare_with_golden(res, {"x": x})


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    out = tmp_path_factory.mktemp("hls_synth")
    jobs = [(fn, seed, out) for fn in SYNTH for seed in (0, 1)]
    with ThreadPoolExecutor(2) as pool:
        return list(pool.map(_synth_job, jobs))


def test_every_layer_kind_is_bit_exact_under_any_folding(synthetic):
    kinds = set()
    for name, seed, res, cmp in synthetic:
        assert len(res.partitions) == 1, name
        assert cmp.mismatches == 0, (name, seed, cmp.summary())
        kinds |= {l.kind for l in res.partitions[0].graph.layers}
    assert kinds == {"swg", "mvtu", "vvau", "window_max", "maxpool", "threshold", "channelwise", "add", "concat"}


def test_every_hardware_kind_has_an_hls_emitter():
    assert set(EMITTERS) == {k.name for k in KINDS if k.compute}  # every kind that builds layers, nothing else


# --------------------------------------------------------------------------------------- host ops, end to end

def test_host_ops_between_partitions_end_to_end(tmp_path):
    from test_partition import float_data, golden_equals_ort, streamline_float

    for kind, parts in (("softmax", 1), ("resize", 2)):
        q = streamline_float(kind)
        res = hls.export(q, tmp_path / kind)
        assert len(res.partitions) == parts
        assert any(op == ("Softmax" if kind == "softmax" else "Resize") for _, op, _ in res.host_nodes)
        golden_equals_ort(res.partitioned, q, float_data())
        cmp = hls.compare_with_golden(res, {"x": float_data()})
        assert cmp.mismatches == 0, cmp.summary()
        assert len(cmp.outputs) == parts


# ---------------------------------------------------------------------------------------------- ap_types

def test_ap_types_are_taken_only_from_the_apache_headers(tmp_path, ap_types):
    assert (ap_types / "ap_int.h").is_file()
    wheel = tmp_path / "hls4ml-0.0-py3-none-any.whl"
    apache = b"/* Copyright 2011-2019 Xilinx, Inc.\n Licensed under the Apache License, Version 2.0 */\n"
    with zipfile.ZipFile(wheel, "w") as z:
        for h in aptypes.HEADERS:
            z.writestr(aptypes.WHEEL_DIR + h, apache + b"// " + h.encode())
        for h in aptypes.NEVER:
            z.writestr(aptypes.WHEEL_DIR + h, b"/* confidential and proprietary */")
        z.writestr("hls4ml-0.0.dist-info/licenses/LICENSE", b"Apache License 2.0")
    d = aptypes.extract_from_wheel(wheel, tmp_path / "ap")
    got = {p.relative_to(d).as_posix() for p in d.rglob("*") if p.is_file()}
    assert got == set(aptypes.HEADERS) | {"LICENSE", "SOURCE"}
    bad = tmp_path / "bad.whl"  # a header without the Apache notice is refused
    with zipfile.ZipFile(wheel) as z, zipfile.ZipFile(bad, "w") as b:
        for n in z.namelist():
            b.writestr(n, b"proprietary" if n.endswith("/ap_int.h") else z.read(n))
    with pytest.raises(QpassError, match="Apache"):
        aptypes.extract_from_wheel(bad, tmp_path / "ap2")
    assert project_files.part_of("xc7z020") == "xc7z020clg400-1"
    assert project_files.part_of("pynq-z2") == "xc7z020clg400-1"
    assert project_files.part_of("xc7z020clg484-1") == "xc7z020clg484-1"
