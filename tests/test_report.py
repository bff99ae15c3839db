"""--report: JSON content per quantiser, and the HTML renders (every histogram decodes) in headless Chromium."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import MODELS

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def make_report(tmp_path, *extra):
    out = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_cnn.onnx"), "-o",
                        str(tmp_path / "m.onnx"), "--eval", str(MODELS / "digits_cnn.eval.npz"), "--report", str(out),
                        "-q", *extra], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out, json.loads((tmp_path / "report.json").read_text())


def test_int8_report_json(tmp_path):
    _, data = make_report(tmp_path)
    qs = data["quantisers"]
    weights = [q for q in qs if q["role"] == "weight"]
    acts = [q for q in qs if q["role"] == "activation"]
    assert len(weights) == 4 and len(acts) == 7
    assert all(q["bits"] == 8 and q["scale_count"] > 1 for q in weights)  # per channel
    for q in qs:
        assert {"layer", "kind", "scale", "range", "saturated", "own_sqnr_db", "histogram"} <= set(q)
        assert q["range"][0] <= q["range"][1]
        assert sum(q["histogram"]["counts"]) > 0
    assert all(q["own_sqnr_db"] is None or q["own_sqnr_db"] > 35 for q in qs)
    assert data["metrics"]["quantized accuracy"] > 0.98 and data["metrics"]["output SQNR vs float (dB)"] > 30
    assert [t["pass"] for t in data["timeline"]] == ["normalize", "fold_batchnorm", "fold_affine", "calibrate",
                                                      "quantize_qdq"]


def test_fakequant_report_counts_saturation(tmp_path):
    _, data = make_report(tmp_path, "--weights", "fixed:8,6", "--activations", "fixed:8,4")
    acts = {q["quantiser"]: q for q in data["quantisers"] if q["role"] == "activation"}
    fc = acts["/Relu_2_output_0_Quant"]  # fixed<8,4> tops out at 7.94; this layer reaches ~28
    assert fc["saturated"] > 0.15 * fc["elements"]
    assert acts["input_Quant"]["saturated"] == 0
    assert data["metrics"]["golden/onnxruntime identical predictions"] == "360/360"


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_renders_in_headless_chromium(tmp_path):
    out, data = make_report(tmp_path)
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", out.as_uri()],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    n = len(data["quantisers"])
    assert f"<title>qpass report: rendered {n} of {n} images</title>" in r.stdout
    assert 'id="quantisers"' in r.stdout and "quantize_qdq" in r.stdout


def test_bitwidth_report_has_pareto_front(tmp_path):
    out = tmp_path / "report.html"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_mlp.onnx"), "-o",
                        str(tmp_path / "m.onnx"), "--bits", "auto", "--eval", str(MODELS / "digits_mlp.eval.npz"),
                        "--report", str(out)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "bitwidth assignment:" in r.stdout
    data = json.loads((tmp_path / "report.json").read_text())
    pts = data["bitwidth"]["points"]
    assert sum(p["chosen"] for p in pts) == 1 and any(p["pareto"] for p in pts)
    rows = (tmp_path / "report_pareto.csv").read_text().splitlines()
    assert rows[0].startswith("cost,avg_weight_bits,sqnr_db") and len(rows) == len(pts) + 1
    assert 'alt="pareto"' in out.read_text()
