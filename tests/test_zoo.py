"""`qpass zoo`: the local zoo converts; a broken model is reported and does not stop the rest; runs are incremental
(up to date skipped, changed redone, --force redoes all); a crash, a hang past --timeout and running out of memory
are recorded per model; the recorded command reproduces the output byte for byte."""
import csv
import json
import os
import shlex
import shutil
import subprocess
import sys
import textwrap

import onnx

from conftest import MODELS, STRUCTURAL


def zoo(src, out, *args, timeout=600):
    return subprocess.run([sys.executable, "-m", "qpass.cli", "zoo", str(src), "-o", str(out), "-q", *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)


def rows_of(out):
    return {row["model"]: row for row in csv.DictReader((out / "zoo.csv").open())}


def test_local_zoo_converts_with_report(tmp_path):
    out = tmp_path / "out"
    r = zoo(MODELS, out, "--jobs", "2")
    assert r.returncode == 0, r.stdout + r.stderr
    # models/brevitas/: already-quantized Brevitas exports, tested in tests/test_brevitas_models.py
    rows = {k: row for k, row in rows_of(out).items() if not k.startswith("brevitas/")}
    assert len(rows) == 3 + len(STRUCTURAL)
    assert all(row["status"] == "ok" for row in rows.values()), rows
    cnn = rows["digits_cnn.onnx"]
    assert float(cnn["metric"]) > 0.98 and cnn["metric_name"] == "accuracy"
    assert all(float(row["sqnr_db"]) > 25 for row in rows.values())
    assert all(float(row["latency_ratio"]) > 0 for row in rows.values())
    # every model runs integer kernels; the digits nets mostly (a float tail, e.g. two_inputs' Add and Mul after
    # its two QGemms, is the default pipeline's choice: as fast in float, and closer to the float model)
    assert all(float(row["integer_share"]) > 0.3 for row in rows.values())
    assert all(float(rows[f"digits_{n}.onnx"]["integer_share"]) > 0.5 for n in ("mlp", "cnn", "rescnn"))
    assert int(cnn["size_after"]) < int(cnn["size_before"])
    assert (out / "digits_cnn.onnx").is_file() and (out / "structural" / "resize.onnx").is_file()
    assert cnn["report"] == "digits_cnn.report.html" and (out / "digits_cnn.report.json").is_file()
    assert 'href="structural/resize.report.html"' in (out / "zoo.html").read_text()
    data = json.loads((out / "zoo.json").read_text())
    brevitas = [m for m in data["models"] if m["model"].startswith("brevitas/")]
    # already quantized, no calibration samples: imported (their quantization kept), not skipped
    assert data["counts"] == {"ok": 3 + len(STRUCTURAL) + len(brevitas)}
    assert brevitas and all(m["status"] == "ok" and m["size_after"] for m in brevitas)
    assert len(data["models"]) - len(brevitas) == 3 + len(STRUCTURAL)


def test_recorded_command_reproduces_the_output(tmp_path):
    src = tmp_path / "zoo"
    src.mkdir()
    for suffix in (".onnx", ".calib.npz"):
        shutil.copy(MODELS / "structural" / f"concat{suffix}", src / f"concat{suffix}")
    out = tmp_path / "out"
    assert zoo(src, out, "--no-latency").returncode == 0
    rec = json.loads((out / "zoo-records" / "concat.onnx.json").read_text())
    import qpass

    assert rec["status"] == "ok" and rec["qpass_version"] == qpass.__version__
    assert rec["inputs"]["model"]["sha256"] == __import__("hashlib").sha256((src / "concat.onnx").read_bytes()).hexdigest()
    assert rec["inputs"]["eval"] is None  # no eval file: the calibration samples measure the result
    argv = shlex.split(rec["command"])
    assert argv[:2] == ["qpass", "optimize"]
    again = tmp_path / "again"
    argv = [a.replace(str(out), str(again)) for a in argv[2:]]
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", *argv], capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stderr
    assert (again / "concat.onnx").read_bytes() == (out / "concat.onnx").read_bytes()
    assert rec["outputs"]["concat.onnx"]["sha256"] == __import__("hashlib").sha256(
        (out / "concat.onnx").read_bytes()).hexdigest()


def test_rerun_skips_what_is_up_to_date_and_redoes_what_changed(tmp_path):
    src = tmp_path / "zoo"
    src.mkdir()
    for name in ("concat", "resize", "two_inputs"):
        for suffix in (".onnx", ".calib.npz"):
            shutil.copy(MODELS / "structural" / f"{name}{suffix}", src / f"{name}{suffix}")
    out = tmp_path / "out"
    assert zoo(src, out, "--no-latency").returncode == 0
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.onnx")}
    # same inputs: nothing is converted again
    r = zoo(src, out, "--no-latency")
    assert r.returncode == 0 and r.stdout.count("(up to date)") == 3 and "(0 in this run)" in r.stdout
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in out.glob("*.onnx")} == before
    # a changed calibration file and a deleted output: those two are redone, the third is not
    shutil.copy(MODELS / "structural" / "concat.calib.npz", src / "resize.calib.npz")
    (out / "two_inputs.onnx").unlink()
    r = zoo(src, out, "--no-latency")
    assert "(2 in this run)" in r.stdout, r.stdout
    assert (out / "concat.onnx").stat().st_mtime_ns == before["concat.onnx"][1]
    assert (out / "two_inputs.onnx").read_bytes() == before["two_inputs.onnx"][0]
    assert rows_of(out)["resize.onnx"]["status"] == "failed"  # concat's data does not fit resize
    assert not (out / "resize.onnx").exists()  # a failed model leaves no stale output behind
    # --force: everything
    r = zoo(src, out, "--no-latency", "--force")
    assert "(3 in this run)" in r.stdout


def test_broken_model_fails_alone(tmp_path):
    src = tmp_path / "zoo"
    src.mkdir()
    for suffix in (".onnx", ".calib.npz", ".eval.npz"):
        shutil.copy(MODELS / f"digits_mlp{suffix}", src / f"digits_mlp{suffix}")
    (src / "broken.onnx").write_bytes((MODELS / "digits_cnn.onnx").read_bytes()[:3000])
    shutil.copy(MODELS / "digits_cnn.calib.npz", src / "broken.calib.npz")
    (src / "nocalib.onnx").write_bytes((MODELS / "digits_mlp.onnx").read_bytes())
    out = tmp_path / "out"
    r = zoo(src, out)
    assert r.returncode == 1
    rows = rows_of(out)
    assert rows["digits_mlp.onnx"]["status"] == "ok"
    assert rows["broken.onnx"]["status"] == "failed" and "not a valid ONNX protobuf" in rows["broken.onnx"]["reason"]
    assert rows["nocalib.onnx"]["status"] == "skipped"
    assert not (out / "broken.onnx").exists()
    page = (out / "zoo.html").read_text()
    assert page.count('fill="#c44e52"') == 1 and '<span class="bad">failed</span>' in page  # the SQNR plot's red mark


CHAOS = '''
import os, signal, time
from qpass.pipeline.pass_base import Pass, PassResult

class Chaos(Pass):
    """Misbehaves by the model's graph name: a real crash, a real hang, a real allocation too large."""
    name = "chaos"

    def run(self, model, ctx):
        if model.graph.name == "crash":
            os.kill(os.getpid(), signal.SIGSEGV)
        if model.graph.name == "hang":
            time.sleep(600)
        if model.graph.name == "hog":
            bytearray(8 << 30)
        return PassResult(model, False)
'''


def test_crash_hang_and_oom_are_recorded_and_do_not_stop_the_run(tmp_path):
    src = tmp_path / "zoo"
    src.mkdir()
    for name in ("crash", "hang", "hog", "fine"):
        m = onnx.load(MODELS / "digits_mlp.onnx")
        m.graph.name = name
        onnx.save(m, src / f"{name}.onnx")
        shutil.copy(MODELS / "digits_mlp.calib.npz", src / f"{name}.calib.npz")
    (tmp_path / "chaos.py").write_text(textwrap.dedent(CHAOS))
    pipe = tmp_path / "chaos.yaml"
    pipe.write_text("name: chaos\npasses:\n  - normalize\n  - chaos:Chaos\n  - fold_batchnorm\n  - calibrate\n"
                    "  - quantize_qdq\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "zoo", str(src), "-o", str(out), "-q", "--pipeline",
                        str(pipe), "--timeout", "15", "--max-memory", "3000", "--no-latency", "--jobs", "2"],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 1, r.stderr
    rows = rows_of(out)
    assert rows["fine.onnx"]["status"] == "ok" and (out / "fine.onnx").is_file()
    assert rows["crash.onnx"]["status"] == "crashed" and "SIGSEGV" in rows["crash.onnx"]["reason"]
    assert rows["hang.onnx"]["status"] == "timeout" and "15 s timeout" in rows["hang.onnx"]["reason"]
    assert rows["hog.onnx"]["status"] == "oom" and "MemoryError" in rows["hog.onnx"]["reason"]
    assert 15 <= float(rows["hang.onnx"]["seconds"]) < 50
    # failures are redone by the next run; the converted model is not
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "zoo", str(src), "-o", str(out), "-q", "--pipeline",
                        str(pipe), "--timeout", "5", "--no-latency"], capture_output=True, text=True, timeout=600,
                       env=env)
    assert "(3 in this run)" in r.stdout and "fine.onnx" in r.stdout.split("(up to date)")[0]


def test_zoo_usage_errors(tmp_path):
    for args, text in ((["--timeout", "0"], "--timeout"), (["--address", "x:1"], "--engine ray"),
                       (["--max-memory", "1"], "--max-memory")):
        r = zoo(MODELS / "structural", tmp_path / "z", *args)
        assert r.returncode == 2 and text in r.stderr and "Traceback" not in r.stderr, r.stderr
