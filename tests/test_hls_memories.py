"""Runtime-writable weight and threshold memories in the HLS export (``--weights-mode runtime`` / FINN's
``mem_mode`` per layer): the generated code keeps the tables in writable RAMs (``BIND_STORAGE type=ram_2p``) loaded
through the top function, the testbench loads ``memories.txt`` before streaming and is bit-exact, a wrong word in
that file makes it differ, and the cost model prices the RAMs as true-dual-port block RAM (BNN-PYNQ's build)."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import qpass
from qpass.api import qonnx_model
from qpass.backends import hls
from qpass.errors import QpassError
from qpass.hw import memory_costs as mc
from qpass.hw import weight_memory as wm
from qpass.hw.kinds import MVTU
from test_hls_templates import bnn_model, bnn_pipeline

pytestmark = pytest.mark.usefixtures("ap_types")


@pytest.fixture(scope="module")
def runtime(tmp_path_factory):
    d = tmp_path_factory.mktemp("rt")
    path, calib = bnn_model(d / "bnn.onnx")
    model = qonnx_model(qpass.optimize(path, calib=calib, pipeline=bnn_pipeline()))
    res = hls.export(model, d / "hls", weights_mode="runtime", samples=calib)
    return {"model": model, "calib": calib, "path": path, "dir": d, "res": res,
            "cmp": hls.compare_with_golden(res, calib)}


def test_runtime_memories_are_loaded_then_bit_exact(runtime):
    res, cmp = runtime["res"], runtime["cmp"]
    assert cmp.frames == 48 and cmp.mismatches == 0, cmp.summary()
    e = res.partitions[0]
    d = e.project_dir
    params, cpp = (d / "params.h").read_text(), (d / f"{e.top}.cpp").read_text()
    mvtus = [l.name for l in e.graph.layers if l.kind == "mvtu"]
    assert len(mvtus) == 4
    for name in mvtus:  # every matrix layer's weights: a writable table in block RAM with a read/write port
        assert re.search(rf"\nstatic qpass::PackedRom<[^>]*> {name}_w;", params), name
        assert f"#pragma HLS BIND_STORAGE variable={name}_w.m type=ram_2p impl=bram" in cpp
        assert f"{name}_w.m[mem_row][mem_col][mem_idx] = " in cpp
    assert "static const qpass::PackedRom" not in params and "static const qpass::ThresholdActivation" not in params
    assert re.search(r"#pragma HLS BIND_STORAGE variable=conv1_thr\.m type=ram_2p", cpp)
    # BNN-PYNQ's structure: the load path or the dataflow region, the load path on AXI-Lite
    assert "if (mem_load) {" in cpp and f"static void {e.top}_dataflow(" in cpp
    body = cpp.split(f"static void {e.top}_dataflow(")[1]
    assert "#pragma HLS DATAFLOW" in body and "#pragma HLS INTERFACE s_axilite port=mem_value" in cpp
    mems = json.loads((d / "memories.json").read_text())
    lines = (d / "memories.txt").read_text().splitlines()
    assert len(lines) == sum(int(np.prod(m["shape"])) for m in mems)
    # the weights the host writes are the model's: conv1's first word is its PE-0 row's first SIMD weights
    w = np.asarray(e.graph.layer("conv1").params["weights"])
    simd = e.graph.layer("conv1").layer.simd
    first = int(next(l for l in lines if l.startswith("0 0 0 0 ")).split()[4], 16)
    assert [(first >> i) & 1 for i in range(simd)] == [int(v > 0) for v in w[0, :simd]]


def test_a_wrong_memory_word_makes_the_csim_differ(runtime, tmp_path):
    e = runtime["res"].partitions[0]
    bad = tmp_path / "bad"
    shutil.copytree(e.project_dir, bad)
    (bad / "csim_bin").unlink(missing_ok=True)
    text = (bad / "memories.txt").read_text().splitlines()
    mems = json.loads((bad / "memories.json").read_text())
    fc = next(m["id"] for m in mems if m["layer"] == "fc2" and m["what"] == "weights")
    i = next(k for k, l in enumerate(text) if l.startswith(f"{fc} "))
    f = text[i].split()
    f[4] = format(int(f[4], 16) ^ 1, "x")  # one weight of the last layer flipped
    (bad / "memories.txt").write_text("\n".join(text[:i] + [" ".join(f)] + text[i + 1:]) + "\n")
    r = subprocess.run(["make", "-s", "csim"], cwd=bad, capture_output=True, text=True)
    assert r.returncode != 0 and "DIFFERS" in r.stdout
    r = subprocess.run(["make", "-s", "csim"], cwd=e.project_dir, capture_output=True, text=True)
    assert r.returncode == 0 and "matches the golden simulator" in r.stdout


def test_frame_loop_and_per_layer_mem_mode(runtime, tmp_path):
    # only fc1 runtime (FINN's spelling), in a frame-loop top: the other tables stay constant ROMs
    res = hls.export(runtime["model"], tmp_path / "fl", control="frame-loop",
                     folding={"fc1": {"mem_mode": "internal_decoupled"}, "MVAU_hls_0": {"runtime_writeable_weights": 1}})
    cmp = hls.compare_with_golden(res, runtime["calib"])
    assert cmp.mismatches == 0, cmp.summary()
    e = res.partitions[0]
    mems = json.loads((e.project_dir / "memories.json").read_text())
    assert sorted({m["layer"] for m in mems}) == ["conv1", "fc1"]
    params = (e.project_dir / "params.h").read_text()
    assert "static const qpass::PackedRom<" in params and re.search(r"\nstatic qpass::PackedRom<[^>]*> fc1_w;", params)
    eff = json.loads((res.out_dir / "folding_config.json").read_text())
    assert eff["fc1"]["mem_mode"] == "internal_decoupled" and eff["fc1"]["runtime_writeable_weights"] == 1
    assert eff["conv2"]["mem_mode"] == "internal_embedded"
    tb = (e.project_dir / "tb.cpp").read_text()
    assert ", 1, false, 0, 0, 0, 0, 0);" in tb  # one frame per call, load path idle


def test_runtime_memories_refused_where_nothing_calls_the_top(runtime, tmp_path):
    with pytest.raises(QpassError, match="runtime-writable memories need a top function that is called"):
        hls.export(runtime["model"], tmp_path / "none", control="ap_ctrl_none", weights_mode="runtime")
    with pytest.raises(QpassError, match="external weight streams are not supported"):
        hls.export(runtime["model"], tmp_path / "ext", folding={"fc1": {"mem_mode": "external"}})


def test_cli_weights_mode(runtime, tmp_path):
    out = tmp_path / "cli.hls"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", runtime["path"], "--calib", runtime["calib"],
                        "--weights", "binary", "--activations", "binary", "--backend", "hls", "--weights-mode",
                        "runtime", "-o", out, "-q"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (out / "dataflow_partition_0" / "memories.txt").is_file()
    assert "runtime-writable memories (mem_mode runtime)" in (out / "report.txt").read_text()
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", runtime["path"], "--calib", runtime["calib"],
                        "--weights-mode", "runtime", "-o", tmp_path / "x.onnx"], capture_output=True, text=True)
    assert r.returncode == 2 and "--weights-mode only apply to --backend hls or rtl" in r.stderr


def test_runtime_memory_pricing():
    # a port that writes: RAMB18 at most 18 bits wide (true dual port), so 36 x 32 takes two, a ROM one
    assert mc.memory(36, 32, ram_style="block") == (0, 1, 0)
    assert wm.runtime_memory(36, 32, 1, "block") == (2, 2, 0)
    assert wm.runtime_memory(18432, 32, 1, "block")[1] == 36 and wm.runtime_memory(32768, 4, 1, "block")[1] == 8
    assert wm.runtime_memory(64, 12, 4, "distributed") == (4 * 2 + 4 * 16, 0, 0)  # RAM64M: 4 LUT per 3 bits
    assert wm.runtime_memory(100, 130, 1, "block") == (6, 3 * 3, 0)  # three 44-bit limbs, 3 x 18 bits each
    const = MVTU("m", mw=576, mh=64, pe=32, simd=32, w_bits=1, a_bits=1, thresholds=1, w_bipolar=True,
                 a_bipolar=True)
    run = MVTU("m", mw=576, mh=64, pe=32, simd=32, w_bits=1, a_bits=1, thresholds=1, w_bipolar=True,
               a_bipolar=True, mem_mode="runtime")
    # 36-word weight memories: LUTROM when constant, block RAM (2 x RAMB18 each) when written at run time
    assert const.resources().bram18 == 0 and run.resources().bram18 == 32 * 2
    assert run.resolved_styles()["ram_style"] == "block" and const.resolved_styles()["ram_style"] == "distributed"
    with pytest.raises(QpassError, match="mem_mode='flash' is not one of const, runtime"):
        MVTU("m", mem_mode="flash")
