"""`qpass zoo`: the whole local zoo converts; a broken model is reported and does not stop the rest."""
import csv
import shutil
import subprocess
import sys

from conftest import MODELS, STRUCTURAL


def test_local_zoo_converts_with_summary(tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "zoo", str(MODELS), "-o", str(out), "--jobs", "2", "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = list(csv.DictReader((out / "summary.csv").open()))
    # models/brevitas/: already-quantized Brevitas exports, tested in tests/test_brevitas_models.py
    rows = [row for row in rows if not row["model"].startswith("brevitas/")]
    assert len(rows) == 3 + len(STRUCTURAL)
    assert all(row["status"] == "ok" for row in rows), rows
    by = {row["model"]: row for row in rows}
    assert float(by["digits_cnn.onnx"]["metric"]) > 0.98 and by["digits_cnn.onnx"]["metric_name"] == "accuracy"
    assert all(float(row["sqnr_db"]) > 25 for row in rows)
    assert all(float(row["latency_ratio"]) > 0 for row in rows)
    assert int(by["digits_cnn.onnx"]["size_after"]) < int(by["digits_cnn.onnx"]["size_before"])
    assert (out / "digits_cnn.onnx").is_file() and (out / "structural" / "resize.onnx").is_file()
    assert "models converted" in (out / "summary.md").read_text()


def test_broken_model_fails_alone(tmp_path):
    src = tmp_path / "zoo"
    src.mkdir()
    for suffix in (".onnx", ".calib.npz", ".eval.npz"):
        shutil.copy(MODELS / f"digits_mlp{suffix}", src / f"digits_mlp{suffix}")
    (src / "broken.onnx").write_bytes((MODELS / "digits_cnn.onnx").read_bytes()[:3000])
    shutil.copy(MODELS / "digits_cnn.calib.npz", src / "broken.calib.npz")
    (src / "nocalib.onnx").write_bytes((MODELS / "digits_mlp.onnx").read_bytes())
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "zoo", str(src), "-o", str(out), "-q"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    rows = {row["model"]: row for row in csv.DictReader((out / "summary.csv").open())}
    assert rows["digits_mlp.onnx"]["status"] == "ok"
    assert rows["broken.onnx"]["status"] == "failed" and "not a valid ONNX protobuf" in rows["broken.onnx"]["reason"]
    assert rows["nocalib.onnx"]["status"] == "skipped"
    assert not (out / "broken.onnx").exists()
