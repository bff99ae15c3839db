"""If / Loop / Scan through qpass: the reference interpreter runs them as onnxruntime does (subgraphs reading
outer-scope values, carried values, scan outputs, trip counts and conditions, scan directions and axes, branches
of different shapes), refuses an unsupported body op when the parent executor is built, normalize keeps such
models valid (graphsurgeon's If flattening did not), and calibration observes the values inside the bodies on
every iteration while never calibrating integer, index or shape values."""
from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper as nh

from qpass.errors import ModelLoadError, UnsupportedOpError
from qpass.ir.graph import iter_graphs, to_gs, from_gs
from qpass.ir.samples import as_samples
from qpass.passes.normalize import Normalize
from qpass.pipeline.analyses import Calibration
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.run import run_passes
from qpass.reference import GoldenExecutor

OPSET = [h.make_opsetid("", 17)]


def vi(name, et=T.FLOAT, shape=None):
    return h.make_tensor_value_info(name, et, shape)


def init(name, value, dtype=np.float32):
    return nh.from_array(np.asarray(value, dtype), name)


def model_of(nodes, inputs, outputs, inits=()):
    m = h.make_model(h.make_graph(nodes, "g", inputs, outputs, initializer=list(inits)), opset_imports=OPSET)
    onnx.checker.check_model(m, full_check=True)
    return m


def if_model():
    """y = Tanh(If(sum(x) > 0, then Relu(x @ W) [N, 3], else x * 2 [N, 4])); both branches read x and W from
    the main graph."""
    then = h.make_graph([h.make_node("MatMul", ["x", "W"], ["t0"]), h.make_node("Relu", ["t0"], ["t1"])], "then",
                        [], [vi("t1", T.FLOAT, ["N", 3])])
    other = h.make_graph([h.make_node("Mul", ["x", "two"], ["e0"])], "else", [], [vi("e0", T.FLOAT, ["N", 4])],
                         initializer=[init("two", 2.0)])
    nodes = [h.make_node("ReduceSum", ["x"], ["s"], keepdims=0), h.make_node("Greater", ["s", "zero"], ["c"]),
             h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other), h.make_node("Tanh", ["y"], ["z"])]
    w = np.random.default_rng(0).standard_normal((4, 3))
    return model_of(nodes, [vi("x", T.FLOAT, ["N", 4])], [vi("z", T.FLOAT, ["N", "C"])],
                    [init("W", w), init("zero", 0.0)])


def loop_body(hidden=3):
    """h' = Tanh(h @ Wh + xs[i] @ Ux + bias); a float counter; condition: i + 1 < limit (both outer values)."""
    nodes = [h.make_node("Gather", ["xs", "i"], ["xt"], axis=0), h.make_node("MatMul", ["h_in", "Wh"], ["a"]),
             h.make_node("MatMul", ["xt", "Ux"], ["b"]), h.make_node("Add", ["a", "b"], ["ab"]),
             h.make_node("Add", ["ab", "bias"], ["pre"]), h.make_node("Tanh", ["pre"], ["h_out"]),
             h.make_node("Add", ["i", "one_i"], ["i1"]), h.make_node("Less", ["i1", "limit"], ["cond_out"]),
             h.make_node("Add", ["cnt_in", "one"], ["cnt_out"]), h.make_node("Identity", ["h_out"], ["scan_h"])]
    return h.make_graph(nodes, "body", [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []),
                                        vi("h_in", T.FLOAT, [1, hidden]), vi("cnt_in", T.FLOAT, [])],
                        [vi("cond_out", T.BOOL, []), vi("h_out", T.FLOAT, [1, hidden]), vi("cnt_out", T.FLOAT, []),
                         vi("scan_h", T.FLOAT, [1, hidden])],
                        initializer=[init("one", 1.0), init("one_i", 1, np.int64)])


def loop_model(use_trip_count=True):
    """A recurrence over the rows of xs [T, 1, 2], by trip count M = T or by the condition alone."""
    rng = np.random.default_rng(1)
    nodes = [h.make_node("Shape", ["xs"], ["shp"]), h.make_node("Gather", ["shp", "zero_i"], ["T_"], axis=0),
             h.make_node("Greater", ["T_", "zero_i"], ["go"]),
             h.make_node("Loop", ["T_" if use_trip_count else "", "go", "h0", "c0"], ["h_final", "cnt", "hs"],
                         body=loop_body()),
             h.make_node("Relu", ["hs"], ["hs_r"])]
    inits = [init("Wh", rng.standard_normal((3, 3))), init("Ux", rng.standard_normal((2, 3))),
             init("bias", rng.standard_normal(3)), init("zero_i", 0, np.int64), init("c0", 0.0),
             init("limit", 4 if not use_trip_count else 1000, np.int64)]
    return model_of(nodes, [vi("xs", T.FLOAT, ["T", 1, 2]), vi("h0", T.FLOAT, [1, 3])],
                    [vi("h_final", T.FLOAT, [1, 3]), vi("cnt", T.FLOAT, []), vi("hs_r", T.FLOAT, ["S", 1, 3])], inits)


def scan_model(in_dir=0, in_axis=0, out_dir=0, out_axis=0):
    """A running sum s += x_t * w (w from the main graph) with scan output 2 s, over x [6, 3] or [3, 6]."""
    body = h.make_graph([h.make_node("Mul", ["xt", "w"], ["xw"]), h.make_node("Add", ["s_in", "xw"], ["s_out"]),
                         h.make_node("Mul", ["s_out", "two"], ["ys_t"])], "body",
                        [vi("s_in", T.FLOAT, [3]), vi("xt", T.FLOAT, [3])],
                        [vi("s_out", T.FLOAT, [3]), vi("ys_t", T.FLOAT, [3])], initializer=[init("two", 2.0)])
    nodes = [h.make_node("Relu", ["x"], ["xr"]),
             h.make_node("Scan", ["s0", "xr"], ["s", "ys"], body=body, num_scan_inputs=1,
                         scan_input_directions=[in_dir], scan_input_axes=[in_axis],
                         scan_output_directions=[out_dir], scan_output_axes=[out_axis])]
    shape = [6, 3] if in_axis == 0 else [3, 6]
    return model_of(nodes, [vi("x", T.FLOAT, shape), vi("s0", T.FLOAT, [3])],
                    [vi("s", T.FLOAT, [3]), vi("ys", T.FLOAT, ["A", "B"])], [init("w", [0.5, -1.0, 2.0])])


def nested_model():
    """A Loop whose body holds an If that reads a main-graph value (scale), the loop-carried value and the
    iteration number: odd iterations add x * scale, even ones subtract it."""
    then = h.make_graph([h.make_node("Mul", ["x", "scale"], ["xs_"]), h.make_node("Add", ["acc_in", "xs_"], ["up"])],
                        "then", [], [vi("up", T.FLOAT, [2])])
    other = h.make_graph([h.make_node("Sub", ["acc_in", "x"], ["down"])], "else", [], [vi("down", T.FLOAT, [2])])
    body = h.make_graph([h.make_node("Mod", ["i", "two_i"], ["odd_i"]), h.make_node("Cast", ["odd_i"], ["odd"],
                                                                                      to=T.BOOL),
                         h.make_node("If", ["odd"], ["acc_out"], then_branch=then, else_branch=other),
                         h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [2])],
                        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [2])],
                        initializer=[init("two_i", 2, np.int64)])
    nodes = [h.make_node("Loop", ["M", "", "acc0"], ["acc"], body=body)]
    return model_of(nodes, [vi("x", T.FLOAT, [2]), vi("M", T.INT64, [])], [vi("acc", T.FLOAT, [2])],
                    [init("scale", 3.0), init("acc0", [0.0, 1.0])])


def run_both(model, feeds):
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)
    got = GoldenExecutor(model).run(feeds)
    assert list(got) == [o.name for o in model.graph.output]
    return want, list(got.values())


def assert_same(want, got, exact=True):
    for w, g in zip(want, got):
        assert g.shape == w.shape and g.dtype == w.dtype
        if exact:
            np.testing.assert_array_equal(g, w)
        else:  # MatMul / Tanh: the reference float kernels round once from float64
            np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


RNG = np.random.default_rng(7)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_if_takes_either_branch_with_outer_values_and_different_shapes(sign):
    x = (sign * np.abs(RNG.standard_normal((2, 4))) + sign * 0.1).astype(np.float32)
    want, got = run_both(if_model(), {"x": x})
    assert got[0].shape == ((2, 3) if sign > 0 else (2, 4))
    assert_same(want, got, exact=False)


@pytest.mark.parametrize("steps", [5, 1, 0])
def test_loop_carried_values_scan_outputs_and_trip_count(steps):
    feeds = {"xs": RNG.standard_normal((steps, 1, 2)).astype(np.float32),
             "h0": RNG.standard_normal((1, 3)).astype(np.float32)}
    want, got = run_both(loop_model(), feeds)
    assert got[2].shape == (steps, 1, 3) and float(got[1]) == steps
    assert_same(want, got, exact=False)


def test_loop_stops_on_its_condition_without_a_trip_count():
    feeds = {"xs": RNG.standard_normal((9, 1, 2)).astype(np.float32),
             "h0": RNG.standard_normal((1, 3)).astype(np.float32)}
    want, got = run_both(loop_model(use_trip_count=False), feeds)
    assert float(got[1]) == 4  # the body's condition i + 1 < 4 ends it
    assert_same(want, got, exact=False)


@pytest.mark.parametrize("in_dir, in_axis, out_dir, out_axis", [
    (0, 0, 0, 0), (1, 0, 0, 0), (0, 1, 1, 0), (1, -1, 0, 1), (0, 0, 1, -1)])
def test_scan_directions_and_axes(in_dir, in_axis, out_dir, out_axis):
    m = scan_model(in_dir, in_axis, out_dir, out_axis)
    shape = [d.dim_value for d in m.graph.input[0].type.tensor_type.shape.dim]
    feeds = {"x": RNG.standard_normal(shape).astype(np.float32), "s0": RNG.standard_normal(3).astype(np.float32)}
    assert_same(*run_both(m, feeds))


@pytest.mark.parametrize("trips", [0, 1, 4])
def test_nested_if_in_loop_reads_main_graph_and_carried_values(trips):
    feeds = {"x": np.array([1.5, -2.0], np.float32), "M": np.array(trips, np.int64)}
    assert_same(*run_both(nested_model(), feeds))


def test_an_unsupported_op_in_a_body_is_refused_when_the_parent_is_built():
    m = nested_model()
    then = next(a.g for a in m.graph.node[0].attribute[0].g.node[2].attribute if a.name == "then_branch")
    then.node[0].op_type = "NoSuchOp"
    with pytest.raises(UnsupportedOpError, match=r"Loop node .*subgraph.*If node .*subgraph.*NoSuchOp"):
        GoldenExecutor(m)


def test_a_malformed_loop_body_is_refused_when_the_parent_is_built():
    m = loop_model()
    body = m.graph.node[3].attribute[0].g
    del body.output[3]  # the scan output the node expects
    with pytest.raises(UnsupportedOpError, match="body takes 4 inputs and gives 3 outputs"):
        GoldenExecutor(m)


# ------------------------------------------------------------------ normalize


def flattened_if_model():
    """An If with a constant condition and two outputs, read inside the branches of a second If: the shape that
    graphsurgeon's own If flattening broke (a voice-activity detector failed with "Nodes in a graph must be
    topologically sorted")."""
    then1 = h.make_graph([h.make_node("Relu", ["x"], ["a1"]), h.make_node("Neg", ["x"], ["b1"])], "then1", [],
                         [vi("a1", T.FLOAT, [2, 3]), vi("b1", T.FLOAT, [2, 3])])
    else1 = h.make_graph([h.make_node("Abs", ["x"], ["a2"]), h.make_node("Identity", ["x"], ["b2"])], "else1", [],
                         [vi("a2", T.FLOAT, [2, 3]), vi("b2", T.FLOAT, [2, 3])])
    then2 = h.make_graph([h.make_node("Add", ["p", "q"], ["y1"])], "then2", [], [vi("y1", T.FLOAT, [2, 3])])
    else2 = h.make_graph([h.make_node("Mul", ["q", "x"], ["y2"])], "else2", [], [vi("y2", T.FLOAT, [2, 3])])
    nodes = [h.make_node("Equal", ["k1", "k2"], ["c"]),
             h.make_node("If", ["c"], ["p", "q"], name="inner", then_branch=then1, else_branch=else1),
             h.make_node("If", ["flag"], ["y"], name="outer", then_branch=then2, else_branch=else2)]
    return model_of(nodes, [vi("x", T.FLOAT, [2, 3]), vi("flag", T.BOOL, [])], [vi("y", T.FLOAT, [2, 3])],
                    [init("k1", 1, np.int64), init("k2", 1, np.int64)])


def ort_run(model, feeds):
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_graphsurgeon_if_flattening_breaks_this_model():
    """The reason normalize folds with flatten_subgraphs=False and inlines constant Ifs itself."""
    m = flattened_if_model()
    g = to_gs(m)
    g.fold_constants(error_ok=True)
    with pytest.raises(onnx.checker.ValidationError, match="topologically sorted"):
        onnx.checker.check_model(from_gs(g, m))


@pytest.mark.parametrize("flag", [True, False])
def test_normalize_inlines_a_constant_if_read_by_subgraphs(flag):
    m = flattened_if_model()
    out = Normalize().run(m, None)
    onnx.checker.check_model(out.model, full_check=True)
    assert [n.op_type for n in out.model.graph.node] == ["Relu", "Neg", "If"]
    assert any("If nodes with a constant condition replaced" in n for n in out.notes)
    feeds = {"x": RNG.standard_normal((2, 3)).astype(np.float32), "flag": np.array(flag)}
    np.testing.assert_array_equal(ort_run(out.model, feeds)[0], ort_run(m, feeds)[0])
    np.testing.assert_array_equal(GoldenExecutor(out.model).run(feeds)["y"], ort_run(m, feeds)[0])


def test_normalize_sorts_names_and_folds_inside_subgraphs():
    m = nested_model()
    body = m.graph.node[0].attribute[0].g
    nodes = list(body.node)[::-1]  # unsorted
    nodes.append(h.make_node("Constant", [], ["unused_k"], value=nh.from_array(np.array(1.0, np.float32))))
    for n in nodes:
        n.name = "dup"
    del body.node[:]
    body.node.extend(nodes)
    out = Normalize().run(m, None).model
    onnx.checker.check_model(out, full_check=True)
    names = [n.name for g in iter_graphs(out.graph) for n in g.node]
    assert len(names) == len(set(names)) and all(names)
    assert not any(n.op_type == "Constant" for g in iter_graphs(out.graph) for n in g.node)
    feeds = {"x": np.array([1.5, -2.0], np.float32), "M": np.array(5, np.int64)}
    np.testing.assert_array_equal(ort_run(out, feeds)[0], ort_run(nested_model(), feeds)[0])


def test_normalize_refuses_nan_in_a_body_initializer():
    m = nested_model()
    m.graph.node[0].attribute[0].g.initializer.append(init("bad", [np.nan, 1.0]))
    with pytest.raises(ModelLoadError, match="'bad' contains NaN"):
        Normalize().run(m, None)


# ------------------------------------------------------------------ calibration


def calibrate(model, data):
    ctx = PassContext(inputs=PassInputs(calibration_data=as_samples(data, model)), progress=False)
    res = run_passes(model, ["normalize", "calibrate"], ctx)
    return ctx.analyses.cached(Calibration), res.report


def test_calibration_observes_a_loop_body_on_every_iteration():
    m = loop_model()
    xs = RNG.standard_normal((4, 6, 1, 2)).astype(np.float32)
    h0 = RNG.standard_normal((4, 1, 3)).astype(np.float32)
    cal, _ = calibrate(m, {"xs": xs, "h0": h0})
    w = {i.name: nh.to_array(i) for i in m.graph.initializer}
    pre, hs = [], []
    for s in range(4):
        hh = h0[s]
        for t in range(6):
            p = (hh @ w["Wh"] + xs[s, t] @ w["Ux"]) + w["bias"]
            hh = np.tanh(p)
            pre.append(p)
            hs.append(hh)
    for name, values in (("pre", pre), ("h_out", hs), ("h_in", [h0[s] for s in range(4)] + hs)):
        lo, hi = cal.ranges[name]
        assert lo == pytest.approx(float(np.min(values)), abs=1e-6)
        assert hi == pytest.approx(float(np.max(values)), abs=1e-6)
    assert cal.ranges["cnt_out"] == (1.0, 6.0)  # a float value carried by the loop is data
    for never in ("i", "cond_in", "i1", "cond_out"):
        assert never not in cal.ranges


def test_calibration_observes_only_the_branch_an_if_takes():
    m = if_model()
    x = np.stack([np.full((1, 4), v, np.float32) for v in (0.5, 1.0, -0.25, -2.0)])
    cal, report = calibrate(m, {"x": x})
    w = nh.to_array(m.graph.initializer[0])
    taken = [np.maximum(x[i] @ w, 0) for i in (0, 1)]
    assert cal.ranges["t1"][1] == pytest.approx(float(np.max(taken)), rel=1e-6)
    assert cal.ranges["e0"] == (-4.0, -0.5)  # 2 x over the two negative samples only
    assert any("inside If/Loop/Scan bodies" in note for rec in report.records for note in rec.notes)


def test_calibration_observes_scan_states_and_slices():
    m = scan_model()
    x = RNG.standard_normal((3, 6, 3)).astype(np.float32)
    s0 = RNG.standard_normal((3, 3)).astype(np.float32)
    cal, _ = calibrate(m, {"x": x, "s0": s0})
    xr = np.maximum(x, 0)
    s = s0[:, None, :] + np.cumsum(xr * np.array([0.5, -1.0, 2.0], np.float32), axis=1)
    assert cal.ranges["xt"] == (float(xr.min()), float(xr.max()))
    assert cal.ranges["s_out"][0] == pytest.approx(float(s.min()), abs=1e-6)
    assert cal.ranges["ys_t"][1] == pytest.approx(2 * float(s.max()), abs=1e-5)


def test_index_and_shape_values_are_never_calibrated():
    """A scale computed at run time from the input's shape feeds only Resize's scales: not an activation."""
    nodes = [h.make_node("Shape", ["x"], ["shp"]), h.make_node("Cast", ["shp"], ["shp_f"], to=T.FLOAT),
             h.make_node("Div", ["shp_f", "shp_f"], ["ones"]), h.make_node("Mul", ["ones", "two"], ["scales"]),
             h.make_node("Resize", ["x", "", "scales"], ["y"], mode="nearest")]
    m = model_of(nodes, [vi("x", T.FLOAT, [1, 1, 2, 2])], [vi("y", T.FLOAT, [1, 1, 4, 4])], [init("two", 2.0)])
    cal, _ = calibrate(m, {"x": RNG.standard_normal((3, 1, 1, 2, 2)).astype(np.float32)})
    assert "scales" not in cal.ranges and "x" in cal.ranges and "y" in cal.ranges


def test_default_pipeline_converts_control_flow_models():
    """The whole default pipeline on each model: a valid model that onnxruntime runs, close to the float one."""
    from qpass.api import optimize

    for m, data in ((loop_model(), {"xs": RNG.standard_normal((4, 5, 1, 2)).astype(np.float32),
                                    "h0": RNG.standard_normal((4, 1, 3)).astype(np.float32)}),
                    (if_model(), {"x": RNG.standard_normal((6, 2, 4)).astype(np.float32)}),
                    (scan_model(), {"x": RNG.standard_normal((4, 6, 3)).astype(np.float32),
                                    "s0": RNG.standard_normal((4, 3)).astype(np.float32)})):
        res = optimize(m, calib=data)
        onnx.checker.check_model(res.model, full_check=True)
        feed = {k: v[0] for k, v in data.items()}
        for w, g in zip(ort_run(m, feed), ort_run(res.model, feed)):
            assert g.shape == w.shape
            np.testing.assert_allclose(g, w, atol=0.1 * max(1.0, float(np.abs(w).max())))


def test_loop_invariant_body_values_are_computed_once_per_loop_run():
    """Relu(x * scale) reads only outer values: one evaluation serves every iteration of one Loop run."""
    body = h.make_graph([h.make_node("Mul", ["x", "scale"], ["xs_"]), h.make_node("Relu", ["xs_"], ["r"]),
                         h.make_node("Add", ["acc_in", "r"], ["acc_out"]),
                         h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [2])],
                        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [2])])
    m = model_of([h.make_node("Loop", ["M", "", "acc0"], ["acc"], body=body)],
                 [vi("x", T.FLOAT, [2]), vi("M", T.INT64, [])], [vi("acc", T.FLOAT, [2])],
                 [init("scale", 3.0), init("acc0", [0.0, 1.0])])
    ex = GoldenExecutor(m)
    steps = next(iter(ex.bodies.values()))["body"].executor.steps
    assert [s.node.op_type for s in steps if s.invariant] == ["Mul", "Relu"]
    calls = []
    relu = next(s for s in steps if s.node.op_type == "Relu")
    inner = relu.call
    relu.call = lambda *values: calls.append(1) or inner(*values)
    feeds = {"x": np.array([1.5, -2.0], np.float32), "M": np.array(4, np.int64)}
    got = ex.run(feeds)["acc"]
    assert len(calls) == 1
    np.testing.assert_array_equal(got, ort_run(m, feeds)[0])


def test_inlined_branches_that_reuse_a_name_get_fresh_names():
    """Two constant Ifs whose branches both define "t" (legal: sibling scopes) end up in one graph."""
    def branch(op):
        return h.make_graph([h.make_node(op, ["x"], ["t"]), h.make_node("Relu", ["t"], ["u"])], op, [],
                            [vi("u", T.FLOAT, [2])])
    nodes = [h.make_node("If", ["yes"], ["a"], then_branch=branch("Neg"), else_branch=branch("Abs")),
             h.make_node("If", ["yes"], ["b"], then_branch=branch("Exp"), else_branch=branch("Sin")),
             h.make_node("Add", ["a", "b"], ["y"])]
    m = model_of(nodes, [vi("x", T.FLOAT, [2])], [vi("y", T.FLOAT, [2])], [init("yes", True, np.bool_)])
    out = Normalize().run(m, None).model
    onnx.checker.check_model(out, full_check=True)
    assert sorted(n.op_type for n in out.graph.node) == ["Add", "Exp", "Neg", "Relu", "Relu"]
    feeds = {"x": np.array([0.5, -1.0], np.float32)}
    np.testing.assert_array_equal(ort_run(out, feeds)[0], ort_run(m, feeds)[0])


def test_quantizer_statistics_inside_bodies_reach_the_parent_executor():
    """A QONNX Quant inside a Loop body inside an If: its saturation counts land in the top executor's stats."""
    quant = h.make_node("Quant", ["acc_in", "sc", "zp", "bw"], ["acc_out"], name="body_q",
                        domain="qonnx.custom_op.general", signed=1, narrow=0, rounding_mode="ROUND")
    body = h.make_graph([quant, h.make_node("Identity", ["cond_in"], ["cond_out"])], "body",
                        [vi("i", T.INT64, []), vi("cond_in", T.BOOL, []), vi("acc_in", T.FLOAT, [4])],
                        [vi("cond_out", T.BOOL, []), vi("acc_out", T.FLOAT, [4])])
    then = h.make_graph([h.make_node("Loop", ["three", "", "x"], ["looped"], body=body)], "then", [],
                        [vi("looped", T.FLOAT, [4])])
    other = h.make_graph([h.make_node("Identity", ["x"], ["same"])], "else", [], [vi("same", T.FLOAT, [4])])
    g = h.make_graph([h.make_node("If", ["c"], ["y"], then_branch=then, else_branch=other)], "g",
                     [vi("x", T.FLOAT, [4]), vi("c", T.BOOL, [])], [vi("y", T.FLOAT, [4])],
                     initializer=[init("sc", 0.1), init("zp", 0.0), init("bw", 8.0), init("three", 3, np.int64)])
    m = h.make_model(g, opset_imports=OPSET + [h.make_opsetid("qonnx.custom_op.general", 1)])
    ex = GoldenExecutor(m)
    y = ex.run({"x": np.array([0.0, 1.0, 50.0, -50.0], np.float32), "c": np.array(True)})["y"]
    np.testing.assert_allclose(y, [0.0, 1.0, 12.7, -12.8], rtol=1e-6)
    assert ex.stats["body_q"] == {"kind": "quant", "calls": 3, "outputs": 12, "saturated": 2}


def test_branches_that_give_sequences_are_calibrated():
    """Branches that build and give a sequence run with the reference's sequence values: their tensors are observed."""
    seq = h.make_tensor_sequence_value_info
    then = h.make_graph([h.make_node("Relu", ["x"], ["r"]), h.make_node("SequenceConstruct", ["r", "x"], ["s1"])],
                        "then", [], [seq("s1", T.FLOAT, [2])])
    other = h.make_graph([h.make_node("SequenceConstruct", ["x"], ["s2"])], "else", [], [seq("s2", T.FLOAT, [2])])
    nodes = [h.make_node("If", ["c"], ["s"], then_branch=then, else_branch=other),
             h.make_node("SequenceAt", ["s", "zero_i"], ["y"])]
    m = model_of(nodes, [vi("x", T.FLOAT, [2]), vi("c", T.BOOL, [1])], [vi("y", T.FLOAT, [2])],
                 [init("zero_i", 0, np.int64)])
    cal, report = calibrate(m, {"x": RNG.standard_normal((3, 2)).astype(np.float32),
                                "c": np.ones((3, 1), np.bool_)})
    assert "x" in cal.ranges and "y" in cal.ranges and "r" in cal.ranges
    assert cal.ranges["r"][0] >= 0.0 and cal.ranges["r"][1] > 0.0  # Relu of x
    notes = [n for rec in report.records for n in rec.notes]
    assert not any(n.startswith("not calibrated inside") for n in notes)
