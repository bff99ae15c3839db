"""Issue 13: the per-layer error report (isolated: that quantizer alone; accumulated: everything up to it)."""
import json
import subprocess
import sys

import numpy as np
import pytest

import qpass
from qpass.analysis.layer_errors import layer_errors, worst
from qpass.analysis.metrics import sqnr_db
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import load_samples

from conftest import MODELS


@pytest.fixture(scope="module")
def rescnn():
    res = qpass.optimize(MODELS / "digits_rescnn.onnx", calib=MODELS / "digits_rescnn.calib.npz")
    samples = load_samples(MODELS / "digits_rescnn.calib.npz", res.model)
    return res, samples


def test_isolated_and_accumulated_errors(rescnn):
    res, samples = rescnn
    fm = qpass.api.float_model(res)
    errs = layer_errors(fm, res.model, samples)
    assert len(errs) >= 6
    for e in errs:
        assert e["isolated_sqnr_db"] is not None and 25 < e["isolated_sqnr_db"] < 80
    # error accumulates: past the first layer, everything before adds to a tensor's own error
    deep = [e for e in errs if e["layer"].startswith("/block2")]
    assert deep and all(e["accumulated_sqnr_db"] < e["isolated_sqnr_db"] for e in deep)
    # the last accumulated figure bounds the model output's SQNR from above (the head only adds error)
    ref = run_samples(fm, samples.subset(np.arange(32)))["logits"]
    out = run_samples(res.model, samples.subset(np.arange(32)))["logits"]
    assert sqnr_db(ref, out) < max(e["accumulated_sqnr_db"] for e in errs)
    w = worst(errs, 5)
    assert len(w) == 5 and w[0]["isolated_sqnr_db"] == min(e["isolated_sqnr_db"] for e in errs)


def test_report_json_html_and_terminal_name_them(tmp_path):
    out = tmp_path / "o.onnx"
    rep = tmp_path / "r.html"
    p = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_cnn.onnx"), "-o", str(out),
                        "--report", str(rep)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("worst 5 of"))
    named = [line.split()[0] for line in lines[i + 1:i + 6]]
    data = json.loads((tmp_path / "r.json").read_text())
    rows = data["layer_errors"]
    assert {r["tensor"] for r in rows} >= set(named)
    assert named == [r["tensor"] for r in worst(rows, 5)]
    html = rep.read_text()
    assert 'id="layer_errors"' in html and all(n in html for n in named)


def test_grid_powers_are_sqnr_dbs_sums_to_the_bit():
    """isolated_errors' fused sums are sqnr_db(x, _on_grid(x))'s (the same float64 operations), and leave the input
    alone."""
    import numpy as np
    from qpass.analysis.layer_errors import _grid_powers, _on_grid

    rng = np.random.default_rng(3)
    for dtype, zp in ((np.uint8, 128), (np.int8, 0), (np.int16, 0)):
        p = {"dtype": dtype, "scale": 0.0371, "zero_point": zp}
        for x in (rng.standard_normal((4, 3, 20, 20)).astype(np.float32) * 9, rng.standard_normal(999) * 1e3,
                  np.zeros(7, np.float32), np.full(5, 0.0371 * 3, np.float32)):
            keep = x.copy()
            ref = np.asarray(x, np.float64)
            err = ref - np.asarray(_on_grid(x, p), np.float64)
            assert _grid_powers(x, p) == (float(np.sum(err * err)), float(np.sum(ref * ref)))
            assert np.array_equal(x, keep)


def test_streamed_isolated_errors_equal_the_stacked_ones(rescnn):
    """isolated_errors sums its powers per onnxruntime call: the same figures (to the report's 3 decimals) as one
    SQNR over the stacked values of the same optimized float run."""
    from qpass.analysis.layer_errors import _on_grid, _shared_pairs, _with_outputs, isolated_errors
    from qpass.ir.ort_session import make_session

    res, samples = rescnn
    fm = qpass.api.float_model(res)
    part = samples.subset(np.arange(40))
    got = isolated_errors(fm, res.model, part)
    pairs = {p["tensor"]: p for p in _shared_pairs(fm, res.model)}
    m = _with_outputs(fm, list(pairs))
    ref = run_samples(m, part, outputs=list(pairs), batch_size=16, sess=make_session(m, optimize=True))
    assert len(got) == len(pairs) >= 6
    for t, p in pairs.items():
        assert abs(got[t] - sqnr_db(ref[t], _on_grid(ref[t], p))) < 1e-3
