"""Issue 16, hardware side: cost models of the emitted code, one folding and one device budget for the whole design,
FINN folding files (--folding, written back), the Brevitas-style CNV front end (BN1d + sign into one threshold), and
attention / LSTM models exporting with those layers on the host and --csim passing."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.hw import memory_costs as mc
from qpass.hw.kinds import MVTU

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("cnv_w1a1", ROOT / "bench" / "cnv_w1a1.py")
cnv = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cnv)


def qpass_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


# ------------------------------------------------------------------------------------------ cost models

def test_memory_model_embedded_roms_and_fifos():
    # a 12-deep weight memory is LUTROM (FINN's embedded rule), not 43 BRAM18 of a decoupled streamer
    m = MVTU("m", mw=288, mh=64, pe=16, simd=96, w_bits=4, a_bits=4, thresholds=15)
    assert m.wmem() == 12 and m.resources().bram18 == 0 and m.finn_resources().bram18 > 0
    assert m.resolved_styles() == {"ram_style": "distributed", "ram_style_thresholds": "distributed"}
    # cheapest RAMB18 aspect: 18432 x 32 -> 36; 32768 x 4 -> 8; 2304 x 32 -> 5 (512x36)
    assert (mc.bram18_for(18432, 32), mc.bram18_for(32768, 4), mc.bram18_for(2304, 32)) == (36, 8, 5)
    assert mc.memory(129, 8)[1] == 1 and mc.memory(128, 8) == (8 * 2, 0, 0)
    assert mc.memory(4096, 72, ram_style="ultra") == (0, 0, 1)
    assert mc.fifo(256, 8) == (8 + 8 * 8, 0) and mc.fifo(257, 8) == (30, 1)
    assert mc.width_converter(8, 8) == 0 and mc.width_converter(8, 32) == 64


def test_xnor_popcount_and_multiplier_binding():
    assert mc.xnor_popcount_lut(32) == 87  # the yosys anchor
    kw = dict(mw=512, mh=64, pe=1, simd=32, w_bits=2, a_bits=2, thresholds=1)
    xnor = MVTU("x", w_bipolar=True, a_bipolar=True, **kw).resources()
    mult = MVTU("y", **kw).resources()
    assert xnor.lut < mult.lut and xnor.dsp == 0
    assert mc.choose_res_type(4, 4) == "lut" and mc.choose_res_type(8, 8) == "dsp"
    assert mc.choose_res_type(2, 8, bipolar=True) == "lut"
    d = MVTU("d", mw=64, mh=64, pe=4, simd=8, w_bits=8, a_bits=8, res_type="dsp").resources()
    assert d.dsp == 32
    # comparators are counted whatever the threshold storage (FINN counts them only in LUTRAM)
    t0 = MVTU("t", mw=64, mh=64, pe=4, simd=8, w_bits=4, a_bits=4, thresholds=0).resources().lut
    t15 = MVTU("t", mw=64, mh=64, pe=4, simd=8, w_bits=4, a_bits=4, thresholds=15).resources().lut
    assert t15 - t0 >= 4 * 15 * 8


# ------------------------------------------------------------------------------ CNV front end and export

@pytest.fixture(scope="module")
def tiny_cnv(tmp_path_factory):
    d = tmp_path_factory.mktemp("cnv")
    onnx.save(cnv.build_cnv("tiny"), d / "cnv.onnx")
    np.savez(d / "calib.npz", **cnv.samples("tiny", 16))
    np.savez(d / "eval.npz", **cnv.samples("tiny", 3, seed=2))
    (d / "pipe.yaml").write_text(cnv.PIPELINE)
    return d


def test_cnv_fc_batchnorm_sign_is_one_threshold(tiny_cnv):
    import qpass
    from qpass.api import qonnx_model

    r = qpass.optimize(qpass.load(tiny_cnv / "cnv.onnx"), calib=tiny_cnv / "calib.npz",
                       pipeline=qpass.load_pipeline(str(tiny_cnv / "pipe.yaml")))
    g = qonnx_model(r).graph
    ops = [n.op_type for n in g.node]
    # 4 convs + fc0 with BN + sign: one MultiThreshold each, nothing between a Gemm and its threshold
    assert ops.count("MultiThreshold") == 5 and "BipolarQuant" not in ops and "BatchNormalization" not in ops
    fc0 = next(n for n in g.node if n.name == "fc0")
    reader = next(n for n in g.node if fc0.output[0] in n.input)
    assert fc0.op_type == "Gemm" and reader.op_type == "MultiThreshold"


def test_cnv_folding_file_csim_and_written_back(tiny_cnv, ap_types, tmp_path):
    fold = {"conv1": {"PE": 4, "SIMD": 8, "ram_style": "block"}, "MVAU_hls_2": {"PE": 2, "SIMD": 8},
            "ConvolutionInputGenerator_hls_1": {"SIMD": 8}, "Defaults": {"resType": ["lut", ["MVAU_hls"]]},
            "fc0": {"PE": 1, "SIMD": 4, "mem_mode": "internal_decoupled"}}
    (tmp_path / "f.json").write_text(json.dumps(fold))
    out = tmp_path / "hls"
    r = qpass_cli(tiny_cnv / "cnv.onnx", "--backend", "hls", "-o", f"{out}/", "--pipeline", tiny_cnv / "pipe.yaml",
                  "--calib", tiny_cnv / "calib.npz", "--eval", tiny_cnv / "eval.npz", "--folding", tmp_path / "f.json",
                  "--csim", "-q")
    assert r.returncode == 0, r.stderr
    assert "C simulation vs golden: 0 mismatches" in r.stdout
    eff = json.loads((out / "folding_config.json").read_text())
    assert eff["conv1"] == {"PE": 4, "SIMD": 8, "ram_style": "block", "ram_style_thresholds": "distributed",
                            "resType": "lut", "mem_mode": "internal_embedded", "runtime_writeable_weights": 0}
    assert eff["fc0"]["mem_mode"] == "internal_decoupled" and eff["fc0"]["runtime_writeable_weights"] == 1
    mems = json.loads(next(out.glob("*/memories.json")).read_text())  # fc0's weights and thresholds: written
    assert {(m["layer"], m["what"]) for m in mems} == {("fc0", "weights"), ("fc0", "thresholds")}
    assert eff["conv2"]["PE"] == 2 and eff["swg_conv1"]["SIMD"] == 8
    assert all(v.get("ram_style", "block") != "auto" for v in eff.values())  # the cost model chose
    rep = (out / "report.txt").read_text()
    assert "folding: MVAU_hls_2 is layer conv2" in rep and "not used by qpass" not in rep
    assert "whole design on xc7z020" in rep and "estimate assumptions" in rep
    # the written-back file reproduces the design
    out2 = tmp_path / "hls2"
    r2 = qpass_cli(tiny_cnv / "cnv.onnx", "--backend", "hls", "-o", f"{out2}/", "--pipeline", tiny_cnv / "pipe.yaml",
                   "--calib", tiny_cnv / "calib.npz", "--folding", out / "folding_config.json", "-q")
    assert r2.returncode == 0, r2.stderr
    assert json.loads((out2 / "folding_config.json").read_text()) == eff


def test_cnv_layers_are_binary_except_the_first(tiny_cnv):
    import qpass
    from qpass.api import qonnx_model
    from qpass.backends.hls.exporter import export

    r = qpass.optimize(qpass.load(tiny_cnv / "cnv.onnx"), calib=tiny_cnv / "calib.npz",
                       pipeline=qpass.load_pipeline(str(tiny_cnv / "pipe.yaml")))
    res = export(qonnx_model(r), tiny_cnv / "api_out")
    mv = {l.name: l.layer for p in res.partitions for l in p.graph.layers if l.layer.kind == "MVTU"}
    assert not mv["conv0"].binary and mv["conv0"].w_bipolar and mv["conv0"].a_bits == 8
    assert all(mv[n].binary for n in ("conv1", "conv2", "conv3", "fc0"))
    assert len(res.partitions) == 1


def test_bad_folding_files_are_one_line_errors(tiny_cnv, tmp_path):
    cases = {"names no layer": {"conv9": {"PE": 2}}, "not a legal folding": {"conv1": {"PE": 3}},
             "positive integer": {"conv1": {"SIMD": 0}}, "is not one of": {"conv1": {"ram_style": "flash"}}}
    for want, cfg in cases.items():
        (tmp_path / "f.json").write_text(json.dumps(cfg))
        r = qpass_cli(tiny_cnv / "cnv.onnx", "--backend", "hls", "-o", f"{tmp_path}/o_{len(want)}/", "--pipeline",
                      tiny_cnv / "pipe.yaml", "--calib", tiny_cnv / "calib.npz", "--folding", tmp_path / "f.json",
                      "-q")
        assert r.returncode == 2 and want in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / f"o_{len(want)}").exists()


def test_one_budget_for_all_partitions(models_dir, tmp_path):
    """digits_rescnn at dfp:4 has several partitions; forcing every layer fully parallel exceeds an xc7z020 only
    in total: refused with the numbers, exported with --allow-over-budget."""
    import qpass
    from qpass.api import qonnx_model
    from qpass.backends.hls.exporter import export
    from qpass.errors import QpassError

    r = qpass.optimize(qpass.load(models_dir / "digits_cnn.onnx"), calib=models_dir / "digits_cnn.calib.npz",
                       pipeline="dataflow")
    q = qonnx_model(r)
    base = export(q, tmp_path / "a")
    layers = [l.layer for p in base.partitions for l in p.graph.layers]
    fast = {L.name: {"PE": max(L.legal_pe()), "SIMD": max(L.legal_simd())} for L in layers}
    with pytest.raises(QpassError, match=r"does not fit xc7z020 .*LUT \d+/53200 .*over in LUT"):
        export(q, tmp_path / "b", folding=fast)
    res = export(q, tmp_path / "c", folding=fast, allow_over_budget=True)
    assert "OVER BUDGET" in res.report


# ------------------------------------------------------------------------------------- host layers + csim

def _vi(name, shape):
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def _attention_and_lstm(d: Path) -> list[str]:
    rng = np.random.default_rng(11)
    W = lambda n, *s: numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)  # noqa: E731
    k = 16
    att = [helper.make_node("MatMul", ["x", "wq"], ["q"]), helper.make_node("MatMul", ["x", "wk"], ["k"]),
           helper.make_node("MatMul", ["x", "wv"], ["v"]), helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 2, 1]),
           helper.make_node("MatMul", ["q", "kt"], ["s"]), helper.make_node("Softmax", ["s"], ["p"], axis=-1),
           helper.make_node("MatMul", ["p", "v"], ["o"])]
    g = helper.make_graph(att, "att", [_vi("x", [1, 10, k])], [_vi("o", [1, 10, k])], [W(n, k, k) for n in
                                                                                         ("wq", "wk", "wv")])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), d / "attention.onnx")
    np.savez(d / "attention.calib.npz", x=rng.standard_normal((8, 1, 10, k)).astype(np.float32))
    h = 16
    lstm = [helper.make_node("LSTM", ["x", "w", "r", "b"], ["y", "yh"], hidden_size=h),
            helper.make_node("Squeeze", ["yh", "ax"], ["hs"]), helper.make_node("MatMul", ["hs", "fc"], ["out"])]
    g = helper.make_graph(lstm, "lstm", [_vi("x", [6, 1, 8])], [_vi("out", [1, 5])],
                          [W("w", 1, 4 * h, 8), W("r", 1, 4 * h, h), W("b", 1, 8 * h),
                           numpy_helper.from_array(np.array([0], np.int64), "ax"), W("fc", h, 5)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), d / "lstm.onnx")
    np.savez(d / "lstm.calib.npz", x=rng.standard_normal((8, 6, 1, 8)).astype(np.float32))
    return ["attention", "lstm"]


def test_attention_and_lstm_export_with_host_layers_and_csim(tmp_path, ap_types):
    for name in _attention_and_lstm(tmp_path):
        out = tmp_path / f"{name}_hls"
        r = qpass_cli(tmp_path / f"{name}.onnx", "--backend", "hls", "-o", f"{out}/", "--csim", "-q")
        assert r.returncode == 0, (name, r.stderr)
        assert "C simulation vs golden: 0 mismatches" in r.stdout
        host = (out / "report.txt").read_text().split("host nodes", 1)[1]
        assert ("Softmax" if name == "attention" else "LSTM") in host


def test_full_cnv_w1a1_with_fold_cnv_large(tmp_path):
    """The issue's headline: FINN's fold_cnv_large through a folding file gives the 32,768-cycle bottleneck; the
    estimate of the exported design (embedded ROM weights) and BNN-PYNQ's build stay in the ratios the bench prints."""
    import qpass
    from qpass.api import qonnx_model
    from qpass.backends.hls.exporter import export
    from qpass.hw.folding_config import load

    m = cnv.build_cnv("full")
    (tmp_path / "pipe.yaml").write_text(cnv.PIPELINE)
    from qpass.ir.samples import bind_samples

    r = qpass.optimize(m, calib=bind_samples(cnv.samples("full", 8), m),
                       pipeline=qpass.load_pipeline(str(tmp_path / "pipe.yaml")))
    res = export(qonnx_model(r), tmp_path / "hls", folding=load(cnv.folding_file(tmp_path / "f.json")))
    (p,) = res.partitions
    assert p.folding.max_cycles == 32768 and {f.name for f in p.folding.folds if f.cycles == 32768} == {"fc0", "fc1"}
    folds = {l.name: l.layer.fold for l in p.graph.layers}
    assert [folds[f"conv{i}"] for i in range(6)] + [folds[f"fc{i}"] for i in range(3)] == cnv.FOLD_CNV_LARGE
    assert all(folds[f"swg_conv{i}"][1] == cnv.FOLD_CNV_LARGE[i][1] for i in range(6))
    lut, bram18 = (int(x) for x in
                   __import__("re").search(r"\(LUT (\d+), BRAM18 (\d+),", res.report).groups())
    assert 0.85 <= lut / cnv.BNN_PYNQ["LUT"] <= 1.15
    assert 100 <= bram18 <= 140  # about half of BNN-PYNQ's 248 BRAM18: embedded ROMs, not its writable RAMs
    # BNN-PYNQ's design: weights and thresholds in RAMs the host writes (block RAM, a read/write port each)
    res = export(qonnx_model(r), tmp_path / "rt", folding=load(cnv.folding_file(tmp_path / "f.json")),
                 weights_mode="runtime")
    lut, bram18 = (int(x) for x in
                   __import__("re").search(r"\(LUT (\d+), BRAM18 (\d+),", res.report).groups())
    assert res.partitions[0].folding.max_cycles == 32768
    assert 0.85 <= lut / cnv.BNN_PYNQ["LUT"] <= 1.15 and 0.85 <= bram18 / 2 / cnv.BNN_PYNQ["BRAM36"] <= 1.15
