"""--report: JSON content per quantiser, and the HTML renders in headless Chromium with its plots drawn (inline SVG,
no plotting package needed)."""
import json
import re
import shutil
import subprocess
import sys

import numpy as np
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
    assert len(weights) == 4 and len(acts) == 6  # the logits stay float (float_outputs)
    assert all(q["bits"] == 8 and q["scale_count"] > 1 for q in weights)  # per channel
    for q in qs:
        assert {"layer", "kind", "scale", "range", "saturated", "own_sqnr_db", "histogram"} <= set(q)
        assert q["range"][0] <= q["range"][1]
        assert sum(q["histogram"]["counts"]) > 0
    assert all(q["own_sqnr_db"] is None or q["own_sqnr_db"] > 35 for q in qs)
    assert data["metrics"]["quantized accuracy"] > 0.98 and data["metrics"]["output SQNR vs float (dB)"] > 30
    assert [t["pass"] for t in data["timeline"]] == ["normalize", "fold_batchnorm", "fold_affine", "decode_reference",
                                                      "equalize", "gate_equalize", "smoothquant", "bias_correction",
                                                      "calibrate", "choose_ranges(max_work=5000000000.0)",
                                                      "quantize_qdq", "choose_dynamic", "auto_precision",
                                                      "decode_precision", "prelu_split", "prelu_max", "prelu_lut"]


def test_fakequant_report_counts_saturation(tmp_path):
    _, data = make_report(tmp_path, "--weights", "fixed:8,6", "--activations", "fixed:8,4")
    acts = {q["quantiser"]: q for q in data["quantisers"] if q["role"] == "activation"}
    fc = acts["/Relu_2_output_0_Quant"]  # fixed<8,4> tops out at 7.94; this layer reaches ~28
    assert fc["saturated"] > 0.15 * fc["elements"]
    assert acts["input_Quant"]["saturated"] == 0
    assert data["metrics"]["golden/onnxruntime identical predictions"] == "360/360"


def chromium(tmp_path, *args):
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                        "--disable-background-networking", "--disable-component-update", "--disable-sync",
                        "--hide-scrollbars", f"--user-data-dir={tmp_path / 'profile'}", *args],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_html_renders_in_headless_chromium(tmp_path):
    out, data = make_report(tmp_path)
    r = chromium(tmp_path, "--dump-dom", out.as_uri())
    n = len(data["quantisers"])
    assert f"<title>qpass report: rendered {n} of {n} plots</title>" in r.stdout
    assert 'id="quantisers"' in r.stdout and "quantize_qdq" in r.stdout


RECTS = """<script>document.body.setAttribute("data-rects", JSON.stringify(Array.prototype.map.call(
  document.querySelectorAll("svg.plot"), function (p) { var r = p.getBoundingClientRect();
  return [r.left, r.top, r.width, r.height]; })));</script></body>"""


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (.ci/run installs it)")
def test_plots_are_drawn_in_a_screenshot(tmp_path):
    """Every histogram's area in a headless-Chromium screenshot holds its bars (blue) and range lines (red)."""
    from PIL import Image

    out, data = make_report(tmp_path)
    page = tmp_path / "measured.html"
    page.write_text(out.read_text().replace("</body>", RECTS))
    size = "--window-size=1280,4000"
    dom = chromium(tmp_path, size, "--dump-dom", page.as_uri()).stdout
    rects = json.loads(re.search(r'data-rects="([^"]*)"', dom).group(1).replace("&quot;", '"'))
    assert len(rects) == len(data["quantisers"]) and all(w > 100 and h > 100 for _, _, w, h in rects)
    chromium(tmp_path, size, f"--screenshot={tmp_path / 'shot.png'}", page.as_uri())
    shot = Image.open(tmp_path / "shot.png").convert("RGB")
    assert max(y + h for _, y, _, h in rects) < shot.height, "plots below the screenshot"
    for x, y, w, h in rects:
        px = np.asarray(shot.crop((int(x), int(y), int(x + w), int(y + h))), np.int32)
        r, g, b = px[..., 0], px[..., 1], px[..., 2]
        blue = int(np.count_nonzero((b > 150) & (r < 110) & (g < 140)))
        red = int(np.count_nonzero((r > 170) & (g < 110) & (b < 110)))
        assert blue > 0.01 * r.size and red > 20, (x, y, blue, red)


def test_plots_need_no_plotting_package(tmp_path):
    """With matplotlib unimportable the report still draws every histogram."""
    code = ("import sys; sys.modules['matplotlib'] = None; sys.argv = ['qpass'] + sys.argv[1:]; "
            "from qpass.cli import main; main()")
    r = subprocess.run([sys.executable, "-c", code, "optimize", str(MODELS / "digits_cnn.onnx"), "-o",
                        str(tmp_path / "m.onnx"), "--report", str(tmp_path / "r.html"), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "r.html").read_text()
    assert html.count('<svg class="plot"') == 10 and "<img" not in html


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
    pareto = out.read_text().split('<figure id="pareto">')[1].split("</figure>")[0]
    assert pareto.startswith('<svg class="plot"') and pareto.count("<circle") + 1 == len(pts)
