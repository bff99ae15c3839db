"""The command line's flags and messages (issue 20): flags that would do nothing are errors naming them, values
out of range are usage errors, every usage error is one line, `--help` is grouped, hostile inputs get one-line
answers, and progress bars show on a terminal only."""
import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import time

import numpy as np
import onnx
import pytest

from conftest import MODELS
from hostile_inputs import (billion_laughs_yaml, deep_repeat_yaml, nested_if_model, with_non_utf8_string,
                            without_outputs)
from test_cli_outputs import one_line_error, qpass_cli

MLP = MODELS / "digits_mlp.onnx"
MLP_EVAL = MODELS / "digits_mlp.eval.npz"


# ------------------------------------------------------------------------------------------ flags

@pytest.mark.parametrize("flag", [["--csim"], ["--target-fps", "100"], ["--device", "xczu7ev"],
                                  ["--clock-ns", "5"]])
def test_hardware_flags_without_the_hls_backend_are_errors(tmp_path, flag):
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", *flag)
    one_line_error(r, flag[0], "--backend hls")
    assert not (tmp_path / "o.onnx").exists()


def test_report_with_the_hls_backend_is_an_error(tmp_path):
    one_line_error(qpass_cli("optimize", MLP, "--backend", "hls", "-o", tmp_path / "h", "--report", tmp_path / "r.html"),
                   "--report")


def test_an_exclude_pattern_matching_no_node_is_an_error(tmp_path):
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", "--exclude", "/fc1/*", "--exclude", "/nosuch*")
    one_line_error(r, "--exclude '/nosuch*' matches no node")
    assert not (tmp_path / "o.onnx").exists()
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", "--exclude", "/fc1/*")
    assert r.returncode == 0, r.stderr
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "f.onnx", "--exclude", "/fc1/*", "--weights", "sym:4")
    one_line_error(r, "--exclude applies only to the 'quantize_qdq' pass")


def test_float_labels_are_refused(tmp_path):
    with np.load(MLP_EVAL) as z:
        np.savez(tmp_path / "ev.npz", input=z["input"], labels=z["labels"].astype(np.float32))
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", "--eval", tmp_path / "ev.npz")
    one_line_error(r, "'labels' must be integer class indices, not float32")


@pytest.mark.parametrize("args,flag", [
    (["--threads", "0"], "--threads"), (["--threads", "-1"], "--threads"), (["--threads", "999999999"], "--threads"),
    (["--backend", "hls", "--clock-ns", "nan"], "--clock-ns"), (["--backend", "hls", "--clock-ns", "-5"], "--clock-ns"),
    (["--backend", "hls", "--target-fps", "inf"], "--target-fps"), (["--bits", "auto", "--avg-bits", "0"], "--avg-bits"),
])
def test_values_out_of_range_are_usage_errors(tmp_path, args, flag):
    one_line_error(qpass_cli("optimize", MLP, "-o", tmp_path / "o", *args), f"Invalid value for '{flag}'")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("jobs", ["0", "-1", "100000"])
def test_zoo_jobs_are_bounded(tmp_path, jobs):
    one_line_error(qpass_cli("zoo", MODELS / "structural", "-o", tmp_path / "z", "--jobs", jobs),
                   "Invalid value for '--jobs'")
    assert not (tmp_path / "z").exists()


def test_a_model_without_outputs_is_refused(tmp_path):
    onnx.save(without_outputs(onnx.load(MLP)), tmp_path / "m.onnx")
    r = qpass_cli("optimize", tmp_path / "m.onnx", "--calib", MODELS / "digits_mlp.calib.npz")
    one_line_error(r, "the graph has no outputs")


@pytest.mark.parametrize("flags,line", [
    (["--pipeline", "streamline"], "formats: weights sym:4 (default), activations dfp:4 (default); defaults of "
                                   "pipeline 'streamline'"),
    (["--pipeline", "streamline", "--weights", "sym:3"], "formats: weights sym:3, activations dfp:4 (default);"),
    ([], "formats: weights int8 per-channel (default), activations uint8 (default);"),
    (["--bits", "4"], "formats: weights sym:4, activations uint4"),
])
def test_the_formats_a_pipeline_picks_are_printed(tmp_path, flags, line):
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", *flags)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[1].startswith(line), r.stdout.splitlines()[:2]


# ------------------------------------------------------------------------------------------ usage and help

@pytest.mark.parametrize("args", [
    ["optimize"], ["optimize", MLP, "--no-such-flag"], ["optimize", MLP, "--backend", "fpga"],
    ["optimize", MLP, "--threads", "many"], ["optimize", MLP, "extra_argument"], ["frobnicate"],
    ["run", MLP], ["zoo", "/nonexistent_models_dir", "-o", "x"], ["inspect"], ["optimize", MODELS],
    ["optimize", MLP, "--report", MODELS], ["optimize", MLP, "-o"],
])
def test_usage_errors_are_one_line(args):
    r = qpass_cli(*args)
    line = one_line_error(r)
    assert "Usage:" not in r.stderr and "Try " not in r.stderr
    assert line.endswith("--help')"), line


def test_help_is_grouped_and_names_the_builtin_pipelines():
    r = qpass_cli("optimize", "--help")
    assert r.returncode == 0, r.stderr
    sections = [line[:-1] for line in r.stdout.splitlines() if line and not line[0].isspace() and line.endswith(":")]
    assert [s.split(" ")[0] for s in sections] == ["Input", "Formats", "Default", "Search", "Hardware", "Output",
                                                    "Other"]
    from qpass.pipeline.files import builtin_pipelines

    text = " ".join(r.stdout.split())
    assert len(builtin_pipelines()) == 7  # + dynamic (--mode dynamic)
    assert f"Built-in pipeline ({', '.join(builtin_pipelines())})" in text
    assert qpass_cli().returncode == 0 and qpass_cli("-h").returncode == 0


# ------------------------------------------------------------------------------------------ hostile inputs

@pytest.mark.parametrize("kind,words", [("laughs", "expands to more than"), ("deep", "nests deeper than")])
def test_hostile_pipeline_files_fail_fast_with_a_short_message(tmp_path, kind, words):
    p = tmp_path / "p.yaml"
    p.write_text(billion_laughs_yaml() if kind == "laughs" else deep_repeat_yaml(2000))
    t0 = time.monotonic()
    line = one_line_error(qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", "--pipeline", p), words)
    assert time.monotonic() - t0 < 20 and len(line) < 300


def test_subgraphs_nested_too_deep_are_named_as_such(tmp_path):
    (tmp_path / "deep.onnx").write_bytes(nested_if_model(200))
    one_line_error(qpass_cli("inspect", tmp_path / "deep.onnx"), "nested deeper than protobuf reads")


def test_non_utf8_string_initializers_are_refused(tmp_path):
    onnx.save(with_non_utf8_string(onnx.load(MLP)), tmp_path / "s.onnx")
    one_line_error(qpass_cli("run", tmp_path / "s.onnx", "--inputs", MLP_EVAL, "--backend", "golden"), "not UTF-8")


@pytest.mark.parametrize("kind", ["fifo", "dev_zero", "directory"])
def test_special_files_as_calibration_data(tmp_path, kind):
    path = {"fifo": tmp_path / "c.npz", "dev_zero": "/dev/zero", "directory": tmp_path}[kind]
    if kind == "fifo":
        os.mkfifo(path)
    r = qpass_cli("optimize", MLP, "-o", tmp_path / "o.onnx", "--calib", path)
    one_line_error(r, "directory" if kind == "directory" else "not a regular file")


# ------------------------------------------------------------------------------------------ progress

def run_in_pty(args, timeout=240) -> tuple[int, str]:
    """Run the CLI with stdout and stderr on a pseudo-terminal; (exit code, everything it wrote)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, on a 120-column terminal (a new pty has 0 columns: bars would be empty)
        fcntl.ioctl(1, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
        os.execv(sys.executable, [sys.executable, "-m", "qpass.cli", *map(str, args)])
    out, deadline = b"", time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if select.select([fd], [], [], 1.0)[0]:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the child closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(fd)
        _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode("utf-8", "replace")


def test_progress_bars_show_on_a_terminal_only(tmp_path):
    args = ["optimize", MLP, "-o", tmp_path / "a.onnx", "--bits", "auto", "--eval", MLP_EVAL]
    code, text = run_in_pty(args)
    assert code == 0, text[-2000:]
    assert "calibrate:" in text and "bitwidth sensitivity:" in text and "%|" in text
    code, text = run_in_pty(args + ["-q"])
    assert code == 0 and "%|" not in text and "calibrate:" not in text
    r = qpass_cli(*args)
    assert r.returncode == 0 and "%|" not in r.stderr and "calibrate:" not in r.stderr


def test_zoo_and_hls_export_show_progress_on_a_terminal(tmp_path):
    from qpass.backends.hls import find_ap_types

    code, text = run_in_pty(["zoo", MODELS / "structural", "-o", tmp_path / "z", "--jobs", "1"])
    assert "zoo:" in text and "model/s" in text or "s/model" in text, text[-2000:]
    if find_ap_types() is None:
        pytest.skip("ap_int.h not available (tests/test_hls.py fetches it)")
    code, text = run_in_pty(["optimize", MLP, "--backend", "hls", "-o", tmp_path / "h", "--csim", "--eval", MLP_EVAL])
    assert code == 0, text[-2000:]
    assert "HLS export:" in text and "C simulation:" in text
