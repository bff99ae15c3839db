"""``run_samples`` runs per-sample calls that take a while on every CPU the process may use: one call per thread,
the samples in their order, each computing exactly what it computes alone (onnxruntime's session is reentrant and
releases the GIL)."""
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qpass.ir import batching
from qpass.ir.ort_session import make_session, run_samples
from qpass.ir.samples import SampleSet


def _matmuls(n: int = 6, size: int = 384, rows: int = 64) -> onnx.ModelProto:
    """x [rows, size] through n float MatMuls: a few ms per call."""
    rng = np.random.default_rng(7)
    nodes, inits, prev = [], [], "x"
    for i in range(n):
        inits.append(numpy_helper.from_array((rng.standard_normal((size, size)) / size ** 0.5).astype(np.float32),
                                             f"w{i}"))
        nodes.append(helper.make_node("MatMul", [prev, f"w{i}"], [f"h{i}"]))
        prev = f"h{i}"
    g = helper.make_graph(nodes, "mm", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, size])],
                          [helper.make_tensor_value_info(prev, TensorProto.FLOAT, [rows, size])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_slow_calls_spread_over_threads_in_sample_order(monkeypatch):
    if batching.cpus() < 2:
        pytest.skip("one CPU")
    seen = []

    def call(feed):
        seen.append(threading.get_ident())
        time.sleep(0.005)
        return [feed["x"] * 2]

    x = np.arange(12, dtype=np.float32).reshape(12, 1, 1)
    m = _matmuls(1, 1, 1)
    out = batching.run_stacked(call, m, SampleSet({"x": x}, {}, None, "t"), ["y"], batch_size=1, parallel=True)
    assert np.array_equal(out["y"], x * 2)
    assert len(set(seen)) > 1
    seen.clear()
    batching.run_stacked(call, m, SampleSet({"x": x}, {}, None, "t"), ["y"], batch_size=1)
    assert len(set(seen)) == 1


def test_parallel_onnxruntime_runs_equal_one_by_one_runs_bit_for_bit(monkeypatch):
    m = _matmuls()
    x = np.random.default_rng(1).standard_normal((16, 64, 384)).astype(np.float32)
    samples = SampleSet({"x": x}, {}, None, "t")
    sess = make_session(m)
    pools = []

    class Spy(batching.ThreadPoolExecutor):
        def __init__(self, *a, **k):
            pools.append(a)
            super().__init__(*a, **k)

    monkeypatch.setattr(batching, "ThreadPoolExecutor", Spy)
    monkeypatch.setattr(batching, "_pool", None)  # a pool of its own, made by the spy
    monkeypatch.setattr(batching, "PARALLEL_MIN_SECONDS", 0.0)  # whatever this machine's speed
    par = run_samples(m, samples, sess=sess, batch_size=1)
    assert pools or batching.cpus() < 2
    batching._pool.shutdown()
    monkeypatch.setattr(batching, "PARALLEL_MIN_SECONDS", float("inf"))
    one = run_samples(m, samples, sess=sess, batch_size=1)
    assert np.array_equal(par["h5"], one["h5"])


def test_streamed_batches_come_in_sample_order_and_equal_sequential_runs(monkeypatch):
    from qpass.ir.ort_session import iter_batches
    m = _matmuls()
    x = np.random.default_rng(2).standard_normal((10, 64, 384)).astype(np.float32)
    samples = SampleSet({"x": x}, {}, None, "t")
    sess = make_session(m)
    monkeypatch.setattr(batching, "PARALLEL_MIN_SECONDS", 0.0)
    par = [res[0] for _, res in iter_batches(sess, m, samples, ["h5"], batch_size=1)]
    monkeypatch.setattr(batching, "PARALLEL_MIN_SECONDS", float("inf"))
    one = [res[0] for _, res in iter_batches(sess, m, samples, ["h5"], batch_size=1)]
    assert len(par) == 10 and all(np.array_equal(a, b) for a, b in zip(par, one))
    assert all(np.allclose(a, b) for a, b in zip(one, run_samples(m, samples, sess=sess, batch_size=1)["h5"]))
