"""Execution engines (qpass.pipeline.engines): isolated calls report crashes, hangs and out-of-memory as outcomes;
`map` keeps order and raises the worker's exception; the bitwidth search fans its per-site sensitivity runs out
through an engine with identical results (in process, and `optimize --engine process` from the CLI)."""
import math
import signal
import subprocess
import sys
import time

import pytest

from conftest import MODELS
from qpass.errors import QpassError
from qpass.pipeline.engines import Engine, ProcessEngine, make_engine
from qpass.pipeline.isolate import run_isolated


def test_isolated_outcomes():
    assert run_isolated(math.sqrt, 9.0).value == 3.0
    err = run_isolated(math.sqrt, -1.0)
    assert err.status == "error" and err.reason == "ValueError: math domain error"
    t0 = time.monotonic()
    hang = run_isolated(time.sleep, 60, timeout=1.5)
    assert hang.status == "timeout" and time.monotonic() - t0 < 30
    crash = run_isolated(signal.raise_signal, signal.SIGABRT)
    assert crash.status == "crashed" and "SIGABRT" in crash.reason
    oom = run_isolated(bytearray, 4 << 30, max_memory=1024)
    assert oom.status == "oom" and "MemoryError" in oom.reason


def test_process_engine_map_keeps_order_and_raises():
    with ProcessEngine(2) as eng:
        assert eng.map(math.sqrt, [1.0, 4.0, 9.0, 16.0, 25.0]) == [1.0, 2.0, 3.0, 4.0, 5.0]
        with pytest.raises(ValueError, match="math domain error"):
            eng.map(math.sqrt, [1.0, -1.0, 4.0])
        got = dict(eng.run_each(math.sqrt, [4.0, -1.0]))
        assert got[0].value == 2.0 and got[1].status == "error"


def test_make_engine_errors():
    with pytest.raises(QpassError, match="unknown engine"):
        make_engine("threads")
    with pytest.raises(QpassError, match="needs --engine ray"):
        make_engine("process", address="10.0.0.1:6379")


class Counting(Engine):
    """In-process engine that records each fan-out (so the fan-out path runs without process start-up)."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = []

    def map(self, fn, items):
        items = list(items)
        self.calls.append((fn.__name__, len(items)))
        return [fn(x) for x in items]


def test_bitwidth_sensitivity_fans_out_with_identical_results():
    import qpass

    args = dict(calib=MODELS / "digits_mlp.calib.npz", eval=MODELS / "digits_mlp.eval.npz", config={"bits": "auto"})
    local = qpass.optimize(MODELS / "digits_mlp.onnx", **args)
    eng = Counting()
    fanned = qpass.optimize(MODELS / "digits_mlp.onnx", engine=eng, **args)
    sites = {row["site"] for row in local.report.results["bitwidth"]["table"]}
    assert eng.calls and eng.calls[0][0] == "site_metrics" and 2 <= eng.calls[0][1] <= len(sites) + 8
    assert fanned.model.SerializeToString() == local.model.SerializeToString()
    assert fanned.report.results["bitwidth"]["points"] == local.report.results["bitwidth"]["points"]


def test_optimize_engine_process_equals_local(tmp_path):
    outs = {}
    for engine in ("local", "process"):
        out = tmp_path / f"{engine}.onnx"
        r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_mlp.onnx"), "--bits",
                            "auto", "--eval", str(MODELS / "digits_mlp.eval.npz"), "-o", str(out), "-q", "--engine",
                            engine], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr
        outs[engine] = out.read_bytes()
    assert outs["local"] == outs["process"]


@pytest.mark.parametrize("args, text", [(["--engine", "process"], "only applies to the bitwidth search"),
                                        (["--address", "10.0.0.1:6379"], "needs --engine ray")])
def test_optimize_engine_flags_that_would_do_nothing_are_errors(tmp_path, args, text):
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "optimize", str(MODELS / "digits_mlp.onnx"), "-o",
                        str(tmp_path / "m.onnx"), *args], capture_output=True, text=True, timeout=600)
    assert r.returncode == 2 and text in r.stderr and not (tmp_path / "m.onnx").exists(), r.stderr
