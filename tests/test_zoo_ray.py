"""`--engine ray` on a local Ray instance (2 CPUs, started once for this module) gives byte-identical outputs to
`--engine process`: the zoo's converted models and the bitwidth search's result; the CLI reaches the same instance
with `--address`."""
import json
import shutil
import subprocess
import sys

import pytest

from conftest import MODELS

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'qpass[cluster]')")


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def small_zoo(tmp_path_factory):
    src = tmp_path_factory.mktemp("zoo")
    (src / "structural").mkdir()
    for name in ("concat", "resize", "two_inputs"):
        for suffix in (".onnx", ".calib.npz"):
            shutil.copy(MODELS / "structural" / f"{name}{suffix}", src / "structural" / f"{name}{suffix}")
    for suffix in (".onnx", ".calib.npz", ".eval.npz"):
        shutil.copy(MODELS / f"digits_mlp{suffix}", src / f"digits_mlp{suffix}")
    return src


def converted(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*.onnx")}


def test_zoo_on_ray_equals_process_engine(cluster, small_zoo, tmp_path):
    from qpass.pipeline.engines import ProcessEngine
    from qpass.pipeline.ray_engine import RayEngine
    from qpass.zoo import run_zoo

    with ProcessEngine(2) as eng:
        a = run_zoo(small_zoo, tmp_path / "process", progress=False, engine=eng, latency=False)
    with RayEngine() as eng:
        assert eng.jobs == 2
        b = run_zoo(small_zoo, tmp_path / "ray", progress=False, engine=eng, latency=False)
    assert [r.status for r in a] == ["ok"] * 4 == [r.status for r in b]
    fa, fb = converted(tmp_path / "process"), converted(tmp_path / "ray")
    assert len(fa) == 4 and fa == fb
    keep = ("model", "status", "size_before", "size_after", "sqnr_db", "metric", "integer_share")
    assert [{k: getattr(r, k) for k in keep} for r in a] == [{k: getattr(r, k) for k in keep} for r in b]
    rec = json.loads((tmp_path / "ray" / "zoo-records" / "digits_mlp.onnx.json").read_text())
    assert rec["engine"] == "ray"
    assert ray.is_initialized()  # an engine that joined a running instance leaves it running


def test_bitwidth_search_on_ray_equals_local(cluster):
    import qpass
    from qpass.pipeline.ray_engine import RayEngine

    args = dict(calib=MODELS / "digits_mlp.calib.npz", eval=MODELS / "digits_mlp.eval.npz",
                config={"bits": "auto"})
    local = qpass.optimize(MODELS / "digits_mlp.onnx", **args)
    with RayEngine() as eng:
        remote = qpass.optimize(MODELS / "digits_mlp.onnx", engine=eng, **args)
    assert remote.model.SerializeToString() == local.model.SerializeToString()
    bw_l, bw_r = local.report.results["bitwidth"], remote.report.results["bitwidth"]
    assert bw_l["table"] == bw_r["table"] and bw_l["points"] == bw_r["points"]


def test_cli_reaches_a_running_cluster_with_address(cluster, small_zoo, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "qpass.cli", "zoo", str(small_zoo / "structural"), "-o", str(out),
                        "-q", "--engine", "ray", "--address", cluster, "--no-latency"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 of 3 converted (3 in this run)" in r.stdout
    rec = json.loads((out / "zoo-records" / "resize.onnx.json").read_text())
    assert rec["engine"] == "ray" and rec["status"] == "ok"
