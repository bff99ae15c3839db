"""The command line: outputs, determinism and clear errors on bad input."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import MODELS, sha256


def qpass_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "qpass.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300)


def test_optimize_prints_summary_and_accuracy(tmp_path):
    out = tmp_path / "cnn.int8.onnx"
    r = qpass_cli("optimize", MODELS / "digits_cnn.onnx", "-o", out, "--eval", MODELS / "digits_cnn.eval.npz")
    assert r.returncode == 0, r.stderr
    assert "nodes quantized:" in r.stdout and "quantize_qdq" in r.stdout
    line = next(x for x in r.stdout.splitlines() if x.startswith("accuracy:"))
    fl, q = (float(t.rstrip("%")) for t in line.split()[2:5:2])
    assert abs(fl - q) <= 1.0
    assert out.is_file()


def test_same_command_twice_gives_identical_bytes(tmp_path):
    a, b = tmp_path / "a.onnx", tmp_path / "b.onnx"
    for out in (a, b):
        r = qpass_cli("optimize", MODELS / "digits_rescnn.onnx", "-o", out, "-q")
        assert r.returncode == 0, r.stderr
    assert a.read_bytes() == b.read_bytes()


def _assert_clean_failure(r, out: Path, src: Path, digest: str, words: str):
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in r.stderr
    assert words in err, err
    assert not out.exists()
    assert not list(out.parent.glob(f".{out.name}*")), "temporary file left behind"
    assert sha256(src) == digest


def test_truncated_model(tmp_path):
    src = tmp_path / "trunc.onnx"
    data = (MODELS / "digits_cnn.onnx").read_bytes()
    src.write_bytes(data[: len(data) // 2])
    digest = sha256(src)
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", src, "-o", out, "--calib", MODELS / "digits_cnn.calib.npz")
    _assert_clean_failure(r, out, src, digest, str(src))


def test_non_onnx_file(tmp_path):
    src = tmp_path / "notes.onnx"
    src.write_text("this is not a model\n")
    digest = sha256(src)
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", src, "-o", out, "--calib", MODELS / "digits_cnn.calib.npz")
    _assert_clean_failure(r, out, src, digest, "cannot load model")


def test_missing_input_name_in_npz(tmp_path):
    src = tmp_path / "m.onnx"
    src.write_bytes((MODELS / "digits_cnn.onnx").read_bytes())
    digest = sha256(src)
    bad = tmp_path / "bad.npz"
    np.savez(bad, images=np.zeros((4, 1, 1, 8, 8), np.float32))
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", src, "-o", out, "--calib", bad)
    _assert_clean_failure(r, out, src, digest, "'input'")


@pytest.mark.parametrize("case,words", [
    ("shape", "samples have shape"),
    ("dtype", "expects float32"),
    ("nan", "NaN"),
])
def test_bad_calibration_arrays(tmp_path, case, words):
    src = MODELS / "digits_cnn.onnx"
    arr = np.random.default_rng(0).random((4, 1, 1, 8, 8)).astype(np.float32)
    if case == "shape":
        arr = arr.reshape(4, 1, 64)
    elif case == "dtype":
        arr = (arr * 10).astype(np.int64)
    else:
        arr[1, 0, 0, 0, 0] = np.nan
    bad = tmp_path / "bad.npz"
    np.savez(bad, input=arr)
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", src, "-o", out, "--calib", bad)
    _assert_clean_failure(r, out, src, sha256(src), words)


def test_calib_beside_model_is_used_or_error(tmp_path):
    src = tmp_path / "digits_mlp.onnx"
    src.write_bytes((MODELS / "digits_mlp.onnx").read_bytes())
    out = tmp_path / "o.onnx"
    r = qpass_cli("optimize", src, "-o", out)
    _assert_clean_failure(r, out, src, sha256(src), "digits_mlp.calib.npz")
    (tmp_path / "digits_mlp.calib.npz").write_bytes((MODELS / "digits_mlp.calib.npz").read_bytes())
    r = qpass_cli("optimize", src, "-o", out, "-q")
    assert r.returncode == 0, r.stderr
    assert out.is_file()


def test_dump_dir_has_model_after_every_pass(tmp_path):
    dump = tmp_path / "dump"
    r = qpass_cli("optimize", MODELS / "digits_cnn.onnx", "-o", tmp_path / "o.onnx", "--dump-dir", dump, "-q")
    assert r.returncode == 0, r.stderr
    names = sorted(p.name for p in dump.iterdir())
    assert names == ["01_normalize.onnx", "02_fold_batchnorm.onnx", "03_fold_affine.onnx",
                     "04_decode_reference.onnx", "05_equalize.onnx", "06_gate_equalize.onnx", "07_smoothquant.onnx",
                     "08_bias_correction.onnx", "09_calibrate.onnx", "10_choose_ranges.onnx", "11_quantize_qdq.onnx",
                     "12_choose_dynamic.onnx", "13_auto_precision.onnx", "14_decode_precision.onnx",
                     "15_prelu_split.onnx", "16_prelu_max.onnx", "17_prelu_lut.onnx"]


def test_pipeline_file_and_bad_pipeline(tmp_path):
    good = tmp_path / "p.yaml"
    good.write_text("name: mine\npasses:\n  - normalize\n  - calibrate: {method: minmax}\n"
                    "  - quantize_qdq: {per_channel: false}\n")
    r = qpass_cli("optimize", MODELS / "digits_mlp.onnx", "-o", tmp_path / "o.onnx", "--pipeline", good)
    assert r.returncode == 0, r.stderr
    assert "pipeline: mine" in r.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("passes:\n  - quantize_qdq: {colour: blue}\n")
    r = qpass_cli("optimize", MODELS / "digits_mlp.onnx", "-o", tmp_path / "o2.onnx", "--pipeline", bad)
    assert r.returncode == 2 and "no option colour" in r.stderr
    order = tmp_path / "order.yaml"
    order.write_text("passes: [normalize, quantize_qdq]\n")
    r = qpass_cli("optimize", MODELS / "digits_mlp.onnx", "-o", tmp_path / "o3.onnx", "--pipeline", order)
    assert r.returncode == 2 and "needs ranges" in r.stderr and "'calibrate'" in r.stderr


def test_inspect_and_run(tmp_path):
    r = qpass_cli("inspect", MODELS / "digits_rescnn.onnx")
    assert r.returncode == 0, r.stderr
    assert "opset: 17" in r.stdout and "BatchNormalization 5" in r.stdout
    assert "/fc/Gemm" in r.stdout and "activations fused" in r.stdout
    out = tmp_path / "outs.npz"
    r = qpass_cli("run", MODELS / "digits_mlp.onnx", "--inputs", MODELS / "digits_mlp.eval.npz", "-o", out)
    assert r.returncode == 0, r.stderr
    assert "top-1 accuracy" in r.stdout
    with np.load(out) as z:
        assert z["logits"].shape == (360, 1, 10)


@pytest.mark.parametrize("cmd", [["--help"], ["optimize", "--help"], ["inspect", "--help"], ["run", "--help"]])
def test_help(cmd):
    r = qpass_cli(*cmd)
    assert r.returncode == 0 and "Usage" in r.stdout


def test_run_with_golden_backend_matches_ort(tmp_path):
    outs = {}
    for backend in ("ort", "golden"):
        out = tmp_path / f"{backend}.npz"
        r = qpass_cli("run", MODELS / "digits_cnn.onnx", "--inputs", MODELS / "digits_cnn.eval.npz",
                      "--backend", backend, "-o", out)
        assert r.returncode == 0, r.stderr
        with np.load(out) as z:
            outs[backend] = z["logits"]
    np.testing.assert_allclose(outs["golden"], outs["ort"], rtol=1e-5, atol=1e-5)


def test_format_flags_report_accuracy_and_backend_agreement(tmp_path):
    r = qpass_cli("optimize", MODELS / "digits_cnn.onnx", "-o", tmp_path / "f.onnx", "--weights", "dfp:8",
                  "--activations", "dfp:8", "--eval", MODELS / "digits_cnn.eval.npz")
    assert r.returncode == 0, r.stderr
    assert "pipeline: fakequant" in r.stdout and "dfp<8>" in r.stdout
    assert "golden vs onnxruntime: identical predictions on 360/360" in r.stdout
    assert "golden accuracy:" in r.stdout and "saturated elements" in r.stdout
    r = qpass_cli("optimize", MODELS / "digits_cnn.onnx", "-o", tmp_path / "g.onnx", "--weights", "fixed:99,1")
    assert r.returncode == 2 and "word width" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "g.onnx").exists()


def test_hls_backend_exports_and_csim_matches_golden(tmp_path, ap_types, monkeypatch):
    monkeypatch.setenv("QPASS_AP_TYPES", str(ap_types))  # the CLI uses the headers the fixture found or fetched
    out = tmp_path / "hls"
    r = qpass_cli("optimize", MODELS / "digits_mlp.onnx", "--backend", "hls", "-o", out, "--target-fps", "1e6",
                  "--eval", MODELS / "digits_mlp.eval.npz", "--csim")
    assert r.returncode == 0, r.stderr
    assert "C simulation vs golden: 0 mismatches" in r.stdout and "target" in r.stdout
    proj = out / "dataflow_partition_0"
    assert {"Makefile", "run_hls.tcl", "tb.cpp", "params.h"} <= {p.name for p in proj.iterdir()}
    assert not list(tmp_path.glob(".hls.*")), "temporary export folder left behind"
    r = qpass_cli("optimize", MODELS / "digits_mlp.onnx", "--backend", "hls", "-o", out)
    assert r.returncode == 2 and "not empty" in r.stderr


def test_inspect_dataflow_explains_host_nodes():
    r = qpass_cli("inspect", MODELS / "digits_cnn.onnx", "--dataflow")
    assert r.returncode == 0, r.stderr
    assert "stay on the host" in r.stdout and "float head" in r.stdout and "input quantiser" in r.stdout
