"""Issue 13 (quantize time): choose_dynamic and auto_precision run no model twice on the same samples. The int8
model both score is run once per sample set (``GraphOutputs``), a set of moves is scored once, and the isolated
errors (a float run) are measured only where they choose which quantizers to probe."""
from __future__ import annotations

import hashlib
from collections import Counter

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import qpass
import qpass.analysis.layer_errors as le
import qpass.search.mixed_int8 as mi
from qpass.analysis.layer_errors import joined_outputs
from qpass.ir.samples import bind_samples
from qpass.pipeline import analyses as an

RNG = np.random.default_rng(15)
D, H, T = 32, 24, 4
OFF = {"equalize", "smoothquant", "choose_ranges"}


def _model(branches: int = 1):
    """x -> MatMul(w1) -> h -> Add(h, r) -> y, one column of w1 60x the rest: h's quantizer sets the output error
    (auto_precision moves it to float), while x's per-sample range varies (choose_dynamic measures mm1 but the
    gain stays under 0.5 dB: the graph is left as it is, and auto_precision scores the same int8 model).
    ``branches=2``: h + g instead of h, g = MatMul(x, w2) with no outlier: a second quantizer free to move."""
    w1 = RNG.standard_normal((D, H)).astype(np.float32) / 5
    w1[:, 0] *= 60
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm1"),
             helper.make_node("Add", ["h", "r"], ["y"], name="residual")]
    inits = [numpy_helper.from_array(w1, "w1")]
    if branches == 2:
        nodes[1:1] = [helper.make_node("MatMul", ["x", "w2"], ["g"], name="mm2"),
                      helper.make_node("Add", ["h", "g"], ["hg"], name="join")]
        nodes[-1].input[0] = "hg"
        inits.append(numpy_helper.from_array(RNG.standard_normal((D, H)).astype(np.float32) / 5, "w2"))
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, T, D]),
           helper.make_tensor_value_info("r", TensorProto.FLOAT, [1, T, H])]
    g = helper.make_graph(nodes, "m", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, T, H])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    n = 64
    scale = np.geomspace(1, 3, n).astype(np.float32)[RNG.permutation(n), None, None, None]
    x = RNG.uniform(0, 1, (n, 1, T, D)).astype(np.float32) * scale
    return m, bind_samples({"x": x, "r": RNG.standard_normal((n, 1, T, H)).astype(np.float32)}, m)


def _key(model, samples) -> tuple[str, str]:
    data = b"".join(np.ascontiguousarray(v).tobytes() for v in samples.arrays.values())
    return hashlib.sha1(model.SerializeToString()).hexdigest(), hashlib.sha1(data).hexdigest()


def _runs(monkeypatch) -> list:
    """Every (graph, samples) that the passes' scoring and value runs (``layer_errors.run_samples``) see."""
    runs, real = [], le.run_samples
    monkeypatch.setattr(le, "run_samples", lambda m, s, *a, **k: runs.append(_key(m, s)) or real(m, s, *a, **k))
    return runs


def test_no_graph_runs_twice_on_the_same_samples(monkeypatch):
    m, s = _model()
    runs = _runs(monkeypatch)
    res = qpass.optimize(m, calib=s, overrides={"choose_dynamic": {"min_weight_elements": 0, "min_rows": 1}},
                         disabled=OFF)
    cd, ap = res.report.results["choose_dynamic"], res.report.results["auto_precision"]
    # the case: choose_dynamic measured mm1 and kept the graph; auto_precision took h's move on held-out samples
    assert cd["gain_db"] and cd["dynamic"] == []
    assert [x["tensor"] for x in ap["moved"]] == ["h"] and ap["held_out_db"] > ap["held_out_int8_db"] + 3
    assert [k for k, c in Counter(runs).items() if c > 1] == []
    # float and int8 on the two halves, mm1 dynamic and the predicted gains' values on the first, h in float on
    # both (its probe on the first half is the score of the move taken: not run again)
    assert len(runs) == 8


def test_isolated_errors_only_where_they_choose_the_probes(monkeypatch):
    m, s = _model(branches=2)
    calls = []
    real = mi.isolated_errors
    monkeypatch.setattr(mi, "isolated_errors", lambda *a, **k: calls.append(1) or real(*a, **k))
    every = qpass.optimize(m, calib=s, disabled=OFF)
    assert calls == [] and sorted(every.report.results["auto_precision"]["probed"]) == ["g", "h"]
    # one probe for two quantizers free to move: the isolated errors pick h, the one with the outlier channel
    one = qpass.optimize(m, calib=s, disabled=OFF, overrides={"auto_precision": {"max_probes": 1}})
    assert calls == [1] and one.report.results["auto_precision"]["probed"] == ["h"]
    assert one.model.SerializeToString() == every.model.SerializeToString()


def test_shared_int8_outputs_equal_a_fresh_run_and_go_with_any_change():
    m, s = _model()
    int8 = qpass.optimize(m, calib=s, disabled=OFF | {"choose_dynamic", "auto_precision"}).model
    am = an.AnalysisManager()
    a = an.graph_outputs(am, int8, s)
    assert np.array_equal(a, joined_outputs(int8, s)) and an.graph_outputs(am, int8, s) is a
    fl = an.float_outputs(am, m, s)
    am.after_change(an.PRESERVES_ALL)  # even a pass that says it preserves everything: the graph is another one
    assert am.cached(an.GraphOutputs) is None and an.float_outputs(am, m, s) is fl
    b = an.graph_outputs(am, int8, s)
    assert b is not a and np.array_equal(a, b)
    copy = type(int8)()
    copy.CopyFrom(int8)
    assert an.graph_outputs(am, copy, s) is not b  # another model object: run for it
