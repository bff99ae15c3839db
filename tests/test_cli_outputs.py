"""`qpass optimize` outputs (issue 20): the exit status tells the truth, an output exists only when the command
succeeded, output paths are named for what they hold and checked before the run, no two outputs are one file,
files and folders follow the umask, and two runs write the same bytes."""
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import MODELS, sha256
from hostile_inputs import model_samples, model_with_op, op_without_reference_kernel


def qpass_cli(*args, cwd=None, umask=None):
    preexec = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-m", "qpass.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=300, preexec_fn=preexec)


def one_line_error(r, *words):
    assert r.returncode == 2, (r.returncode, r.stderr)
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("qpass: error: "), r.stderr
    for w in words:
        assert w in err[0], err[0]
    return err[0]


@pytest.fixture
def mlp(tmp_path):
    """digits_mlp.onnx and its calibration data copied into a fresh folder (default outputs land beside it)."""
    for suffix in (".onnx", ".calib.npz", ".eval.npz"):
        shutil.copy(MODELS / f"digits_mlp{suffix}", tmp_path)
    return tmp_path / "digits_mlp.onnx"


def files_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# ------------------------------------------------------------------------------------------ exit status

def test_a_check_that_cannot_run_is_skipped_not_failed(tmp_path):
    """Issue 20 saw this with an LSTM, which the reference interpreter runs now: any op without a kernel will do."""
    found = op_without_reference_kernel()
    if found is None:
        pytest.skip("the reference interpreter runs every op of hostile_inputs.FOREIGN_OPS: add one it lacks")
    domain, op = found
    onnx.save(model_with_op(domain, op), tmp_path / "m.onnx")
    np.savez(tmp_path / "m.calib.npz", **model_samples())
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", tmp_path / "m.onnx", "-o", out, "--weights", "sym:8", "--eval",
                  tmp_path / "m.calib.npz", "--report", tmp_path / "r.html")
    assert r.returncode == 0, r.stderr
    assert f"golden vs onnxruntime: skipped: golden simulator: no kernel for {domain}::{op} node" in r.stdout
    assert out.is_file() and "output SQNR vs float" in r.stdout
    metrics = json.loads((tmp_path / "r.json").read_text())["metrics"]
    assert metrics["golden/onnxruntime identical predictions"].startswith("skipped: ")


def test_a_failing_evaluation_leaves_no_output(mlp, tmp_path):
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", mlp, "--pipeline", "dataflow", "-o", out, "--eval", mlp.with_name("digits_mlp.eval.npz"),
                  "--report", tmp_path / "r.html")
    one_line_error(r, "onnxruntime cannot load the model")
    assert not out.exists() and not (tmp_path / "r.html").exists() and not (tmp_path / "r.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "temporary file left behind"


def test_an_unwritable_report_costs_no_run_and_writes_no_model(mlp, tmp_path):
    (tmp_path / "file").write_text("keep")
    out = tmp_path / "out.onnx"
    r = qpass_cli("optimize", mlp, "-o", out, "--report", tmp_path / "file" / "r.html")
    one_line_error(r, "is a file, not a folder")
    assert r.stdout == "" and not out.exists()


# ------------------------------------------------------------------------------------------ output paths

@pytest.mark.parametrize("flags,name", [
    ([], "digits_mlp.int8.onnx"),
    (["--weights", "sym:4"], "digits_mlp.fakequant.onnx"),
    (["--weights", "sym:4", "--qonnx"], "digits_mlp.fakequant.qonnx.onnx"),
    (["--bits", "4"], "digits_mlp.bits-4.onnx"),
    (["--bits", "auto", "--eval", "digits_mlp.eval.npz"], "digits_mlp.bits-auto.onnx"),
    (["--bits", "auto", "--avg-bits", "4.5", "--eval", "digits_mlp.eval.npz"], "digits_mlp.bits-avg4.5.onnx"),
    (["--pipeline", "streamline"], "digits_mlp.streamline.onnx"),
])
def test_default_output_names_say_what_the_file_is(mlp, flags, name):
    r = qpass_cli("optimize", mlp.name, "-q", *flags, cwd=mlp.parent)
    assert r.returncode == 0, r.stderr
    assert (mlp.parent / name).is_file()
    assert sorted(p.name for p in mlp.parent.glob("digits_mlp.*.onnx")) == [name]


def test_a_folder_as_output_gets_the_default_name_inside(mlp, tmp_path):
    (tmp_path / "existing").mkdir()
    for arg, where in (("existing", "existing"), ("new/", "new"), ("deeper/new/", "deeper/new")):
        r = qpass_cli("optimize", mlp, "-o", tmp_path / arg if not arg.endswith("/") else f"{tmp_path / arg}/", "-q")
        assert r.returncode == 0, r.stderr
        assert files_in(tmp_path / where) == ["digits_mlp.int8.onnx"], where
    assert not (tmp_path / "new").is_file()


def test_hls_output_folder_is_named_and_follows_the_umask(mlp):
    from qpass.backends.hls import find_ap_types

    if find_ap_types() is None:
        pytest.skip("ap_int.h not available (tests/test_hls.py fetches it)")
    r = qpass_cli("optimize", mlp.name, "--backend", "hls", "-q", cwd=mlp.parent, umask=0o027)
    assert r.returncode == 0, r.stderr
    out = mlp.parent / "digits_mlp.hls"
    assert stat.S_IMODE(out.stat().st_mode) == 0o750
    assert all(stat.S_IMODE(p.stat().st_mode) & 0o007 == 0 for p in out.rglob("*"))
    assert (out / "report.txt").is_file()
    assert not [p for p in mlp.parent.iterdir() if p.name.startswith(".")], "temporary folder left behind"


@pytest.mark.parametrize("case", ["report_is_model", "report_is_output", "json_twin_is_output", "report_is_calib",
                                  "output_is_calib", "output_is_model_via_link"])
def test_no_two_outputs_and_no_output_and_input_are_one_file(mlp, tmp_path, case):
    calib = mlp.with_name("digits_mlp.calib.npz")
    (tmp_path / "link.onnx").symlink_to(mlp)
    args = {"report_is_model": ["--report", mlp],
            "report_is_output": ["-o", tmp_path / "o.onnx", "--report", tmp_path / "o.onnx"],
            "json_twin_is_output": ["-o", tmp_path / "o.json", "--report", tmp_path / "o.html"],
            "report_is_calib": ["--report", calib],
            "output_is_calib": ["-o", calib],
            "output_is_model_via_link": ["-o", tmp_path / "link.onnx"]}[case]
    before = {p: sha256(p) for p in tmp_path.iterdir() if p.is_file()}
    r = qpass_cli("optimize", mlp, *args)
    line = one_line_error(r)
    assert "would overwrite the input" in line or "are the same file" in line
    assert {p: sha256(p) for p in tmp_path.iterdir() if p.is_file()} == before
    assert r.stdout == ""  # refused before the pipeline ran


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder no new file can be made in, even as root (chmod, or the immutable attribute)."""
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    probe = d / "probe"
    try:
        probe.write_text("x")
    except OSError:
        yield d
        d.chmod(0o755)
        return
    probe.unlink()  # root ignores the mode: make the folder immutable instead
    if subprocess.run(["chattr", "+i", str(d)], capture_output=True).returncode != 0:
        d.chmod(0o755)
        pytest.skip("cannot make a read-only folder here (root, and no chattr)")
    yield d
    subprocess.run(["chattr", "-i", str(d)], capture_output=True)
    d.chmod(0o755)


@pytest.mark.parametrize("case,words", [("proc", "/proc"), ("long_name", "longer than"),
                                        ("through_file", "is a file, not a folder"), ("read_only", "cannot write"),
                                        ("directory_report", "directory")])
def test_unwritable_outputs_fail_before_the_run(mlp, tmp_path, request, case, words):
    (tmp_path / "file.onnx").write_text("keep")
    if case == "read_only":
        args = ["-o", request.getfixturevalue("read_only_dir") / "out.onnx"]
    else:
        args = {"proc": ["-o", "/proc/qpass_out.onnx"], "long_name": ["-o", tmp_path / ("x" * 300 + ".onnx")],
                "through_file": ["-o", tmp_path / "file.onnx" / "out.onnx"],
                "directory_report": ["-o", tmp_path / "o.onnx", "--report", tmp_path]}[case]
    r = qpass_cli("optimize", mlp, *args)
    one_line_error(r, words)
    assert r.stdout == ""
    assert (tmp_path / "file.onnx").read_text() == "keep"
    assert not [p for p in tmp_path.rglob(".*")], "temporary file left behind"


def test_outputs_follow_the_umask(mlp, tmp_path):
    r = qpass_cli("optimize", mlp, "-o", tmp_path / "out" / "m.onnx", "--report", tmp_path / "out" / "r.html", "-q",
                  umask=0o027)
    assert r.returncode == 0, r.stderr
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "out").iterdir()}
    assert modes == {"m.onnx": 0o640, "r.html": 0o640, "r.json": 0o640}
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) == 0o750


# ------------------------------------------------------------------------------------------ determinism

def _without_timing(html: str) -> str:
    html = re.sub(r'<div class="bar" data-timing[^>]*>.*?</div>', "", html)
    return re.sub(r"<td data-timing>.*?</td>", "", html)


@pytest.mark.parametrize("flags", [[], ["--weights", "fixed:8,6", "--activations", "fixed:8,4"],
                                   ["--rounding", "STOCHASTIC", "--seed", "3"]])
def test_two_runs_write_the_same_bytes_apart_from_timing(tmp_path, flags):
    runs = []
    for i in range(2):
        d = tmp_path / str(i)
        r = qpass_cli("optimize", MODELS / "digits_cnn.onnx", "-o", d / "m.onnx", "--report", d / "r.html", "-q",
                      "--eval", MODELS / "digits_cnn.eval.npz", *flags)
        assert r.returncode == 0, r.stderr
        data = json.loads((d / "r.json").read_text())
        assert all(isinstance(t.pop("seconds"), float) for t in data["timeline"])
        runs.append(((d / "m.onnx").read_bytes(), data, _without_timing((d / "r.html").read_text())))
    assert runs[0][0] == runs[1][0]
    assert runs[0][1] == runs[1][1]
    assert runs[0][2] == runs[1][2]
    assert "data-timing" not in runs[0][2] and "<svg" in runs[0][2]


def test_two_hls_exports_write_the_same_bytes(tmp_path):
    from qpass.backends.hls import find_ap_types

    if find_ap_types() is None:
        pytest.skip("ap_int.h not available (tests/test_hls.py fetches it)")
    trees = []
    for i in range(2):
        out = tmp_path / f"h{i}"
        r = qpass_cli("optimize", MODELS / "digits_mlp.onnx", "--backend", "hls", "-o", out, "-q", "--csim",
                      "--eval", MODELS / "digits_mlp.eval.npz")
        assert r.returncode == 0, r.stderr
        trees.append({str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()})
    assert trees[0].keys() == trees[1].keys()
    assert [k for k in trees[0] if trees[0][k] != trees[1][k]] == []
