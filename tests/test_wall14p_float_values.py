"""Issue 13 (quantize time): the calibrate pass keeps the float values it fetched (``FloatValues``) and
choose_ranges reads them instead of running the same graph on the same samples again.

Pinned: the kept values equal a fresh run bit for bit; choose_ranges with them gives the same report and model as
without them (``keep_values_bytes: 0``) while building no capture session; a pass that changes the graph, another
model object or a run over the byte bound leaves nothing stale to read.
"""
from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import qpass
import qpass.passes.range_choice as rc_pass
from qpass.ir.graph import elem_types
from qpass.ir.ort_session import run_samples
from qpass.ir.samples import bind_samples
from qpass.passes.calibrate import Calibrate, _with_outputs, activation_tensors
from qpass.pipeline.analyses import FloatValues, values_for
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.run import as_pipeline


def _conv_net(seed=0, infer=True):
    rng = np.random.default_rng(seed)
    w1 = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    w1[:, 0] = 1e-4
    w2 = rng.standard_normal((3, 4, 3, 3)).astype(np.float32) * 0.3
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2"], ["y"], pads=[1, 1, 1, 1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m = onnx.shape_inference.infer_shapes(m) if infer else m  # types of the inner tensors, as normalize leaves
    x = rng.standard_normal((24, 1, 2, 8, 8)).astype(np.float32)
    x[::7, 0, 0, 0, 0] = 200.0  # outliers in a channel the first Conv weighs by ~0: a clipped range wins
    return m, bind_samples({"x": x}, m)


def _calibrated(m, samples, **opts):
    ctx = PassContext(inputs=PassInputs(calibration_data=samples), progress=False)
    Calibrate(**opts).run(m, ctx)
    return ctx


def test_kept_values_equal_a_fresh_run_bit_for_bit():
    m, samples = _conv_net()
    fv = _calibrated(m, samples).analyses.cached(FloatValues)
    names = activation_tensors(m, elem_types(m))
    assert names == ["x", "c1", "r1", "y"]
    assert fv is not None and set(names) <= set(fv.values) and fv.model is m and fv.samples is samples
    fresh = run_samples(_with_outputs(m, names, [], elem_types(m)), samples, optimize=False, outputs=names)
    for t in names:
        assert len(fv.values[t]) == len(samples)
        got = fv.stacked([t], np.arange(len(samples)))[t]
        assert got.dtype == fresh[t].dtype and np.array_equal(got, fresh[t])
    idx = np.array([3, 5, 20])
    assert np.array_equal(fv.stacked(["r1"], idx)["r1"], fresh["r1"][idx])


def test_choose_ranges_reads_the_values_and_chooses_as_from_its_own_run(monkeypatch):
    m, samples = _conv_net(1, infer=False)
    made = []
    real = rc_pass.make_session
    monkeypatch.setattr(rc_pass, "make_session", lambda *a, **k: made.append(1) or real(*a, **k))
    out = {}
    for keep in (64 * 2**20, 0):
        made.clear()
        pipe = ["normalize", {"calibrate": {"method": "minmax", "keep_values_bytes": keep}}, "choose_ranges", "quantize_qdq"]
        res = qpass.optimize(m, calib=samples, pipeline=as_pipeline(pipe))
        out[keep] = (res.model.SerializeToString(), res.report.results["range_choice"], len(made))
    (kept_model, kept_rc, kept_made), (own_model, own_rc, own_made) = out[64 * 2**20], out[0]
    assert kept_made == 0 and own_made == 1  # the capture's session: only without the kept values
    assert kept_rc == own_rc and kept_model == own_model
    assert any(t["method"] != "minmax" for t in kept_rc["tensors"].values())  # a case where the values decide


def test_nothing_stale_after_a_graph_change_another_model_or_over_the_bound():
    m, samples = _conv_net(2)
    ctx = _calibrated(m, samples)
    assert values_for(ctx.analyses, m, samples, ["c1", "y"]) is not None
    other, _ = _conv_net(2)
    assert values_for(ctx.analyses, other, samples, ["c1"]) is None  # an equal graph, but not this object
    assert values_for(ctx.analyses, m, samples, ["c1", "not_fetched"]) is None
    ctx.analyses.begin_pass()  # as the pass manager does: the next pass
    ctx.analyses.after_change(())  # changed the graph and preserves nothing
    assert ctx.analyses.cached(FloatValues) is None
    assert _calibrated(m, samples, keep_values_bytes=1000).analyses.cached(FloatValues) is None
    assert _calibrated(m, samples, keep_values_bytes=0).analyses.cached(FloatValues) is None
