"""Pass protocol and pass manager: registration, requirements, fixed points, verification, timing, dumps, and the
analysis manager (lazy, cached, dropped unless preserved; the up-front check simulates that)."""
from dataclasses import dataclass
from typing import ClassVar

import onnx
import pytest
from onnx import helper

import qpass
from qpass.errors import PipelineError
from qpass.ir.samples import as_samples
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.manager import PassManager, Pipeline, Repeat
from qpass.pipeline.analyses import PRESERVES_ALL, Analysis, AnalysisManager, Calibration
from qpass.pipeline.pass_base import Pass, PassResult
from qpass.pipeline.run import run_passes
from qpass.pipeline.registry import get_pass_class
from qpass.pipeline.files import pipeline_from_dict

from conftest import MODELS


@dataclass
class _CountOpts:
    limit: int = 3


class CountDown(Pass):
    """Test pass: changes the graph (adds an Identity) until ``limit`` Identities exist."""

    name = "test_count_down"
    Options = _CountOpts

    def run(self, model, ctx):
        n = sum(1 for x in model.graph.node if x.op_type == "Identity")
        if n >= self.opts.limit:
            return PassResult(model, False)
        out = model.graph.output[0]
        new = f"{out.name}_id{n}"
        for node in model.graph.node:
            for i, o in enumerate(node.output):
                if o == out.name:
                    node.output[i] = new
        model.graph.node.append(helper.make_node("Identity", [new], [out.name], name=f"id{n}"))
        return PassResult(model, True, [f"identity {n}"])


class BreaksGraph(Pass):
    name = "test_breaks_graph"

    def run(self, model, ctx):
        model.graph.node[0].input[0] = "does_not_exist"
        return PassResult(model, True)


def test_user_pass_is_named_by_its_import_path_without_touching_manager():
    assert get_pass_class(f"{__name__}:CountDown") is CountDown
    p = pipeline_from_dict({"passes": [{f"{__name__}:CountDown": {"limit": 2}}]})
    assert p.steps[0].opts.limit == 2
    with pytest.raises(PipelineError, match="not a qpass Pass"):
        get_pass_class(f"{__name__}:_CountOpts")


def test_repeat_runs_to_fixed_point_and_records():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    ctx = PassContext()
    out = PassManager(Pipeline("t", [Repeat([CountDown(limit=3)], max_iter=10)]), ctx).run(m)
    assert sum(1 for n in out.graph.node if n.op_type == "Identity") == 3
    assert [r.changed for r in ctx.report.records] == [True, True, True, False]
    assert [r.iteration for r in ctx.report.records] == [1, 2, 3, 4]
    assert all(r.seconds >= 0 for r in ctx.report.records)
    assert ctx.report.records[0].nodes_after == ctx.report.records[0].nodes_before + 1


def test_repeat_stops_at_max_iter_and_says_so():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    ctx = PassContext()
    PassManager(Pipeline("t", [Repeat([CountDown(limit=50)], max_iter=4)]), ctx).run(m)
    assert len(ctx.report.records) == 4
    assert "max_iter=4" in ctx.report.log[0]


def test_invalid_graph_after_a_pass_is_caught():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    with pytest.raises(PipelineError, match="invalid after pass 'test_breaks_graph'"):
        PassManager(Pipeline("t", [BreaksGraph()])).run(m)
    assert m.graph.node[0].input[0] != "does_not_exist"  # the caller's model is untouched


def test_requirements_checked_before_any_work():
    ran = []
    m = qpass.load(MODELS / "digits_mlp.onnx")
    ctx = PassContext(instruments=[lambda when, p, model, rec: ran.append(p.name)])
    pipe = pipeline_from_dict({"passes": ["normalize", "calibrate"]})
    with pytest.raises(PipelineError, match="needs calibration_data.*--calib"):
        PassManager(pipe, ctx).run(m)
    assert ran == []


def test_unknown_pass_and_bad_options():
    with pytest.raises(PipelineError, match="unknown pass 'nope'"):
        pipeline_from_dict({"passes": ["nope"]})
    with pytest.raises(PipelineError, match="activation_dtype"):
        pipeline_from_dict({"passes": [{"quantize_qdq": {"activation_dtype": "int3"}}]})
    with pytest.raises(PipelineError, match="non-empty 'passes'"):
        pipeline_from_dict({"passes": []})


def test_calibrate_then_fold_batchnorm_then_quantize_is_refused_before_any_work():
    ran = []
    m = qpass.load(MODELS / "digits_cnn.onnx")
    pipe = pipeline_from_dict({"passes": ["normalize", "calibrate", "fold_batchnorm", "quantize_qdq"]})
    ctx = PassContext(inputs=PassInputs(calibration_data=as_samples(MODELS / "digits_cnn.calib.npz", m)),
                      instruments=[lambda when, p, model, rec: ran.append(p.name)])
    with pytest.raises(PipelineError) as err:
        PassManager(pipe, ctx).run(m)
    assert ran == []  # not even normalize ran
    msg = str(err.value)
    assert "\n" not in msg
    assert msg == ("pass 'quantize_qdq' needs ranges, which 'fold_batchnorm' drops as it changes the graph "
                   "(run 'calibrate' after 'fold_batchnorm')")


def test_instruments_see_every_pass():
    seen = []
    m = qpass.load(MODELS / "digits_mlp.onnx")
    ctx = PassContext(instruments=[lambda when, p, model, rec: seen.append((when, p.name))])
    PassManager(pipeline_from_dict({"passes": ["normalize", "fold_batchnorm"]}), ctx).run(m)
    assert seen == [("before", "normalize"), ("after", "normalize"), ("before", "fold_batchnorm"),
                    ("after", "fold_batchnorm")]


def test_builtin_pipeline_listed():
    assert "default" in qpass.pipeline.files.builtin_pipelines()
    p = qpass.load_pipeline("default")
    assert [s.name for s in p.steps] == ["normalize", "fold_batchnorm", "fold_affine", "decode_reference",
                                         "equalize", "gate_equalize", "smoothquant", "bias_correction", "calibrate",
                                         "choose_ranges", "quantize_qdq", "choose_dynamic", "auto_precision",
                                         "decode_precision", "prelu_split", "prelu_max", "prelu_lut"]


# ---------------------------------------------------------------------------------------------- analyses
@dataclass
class Counted(Analysis):
    """Test analysis computed on request: the node count, and how many times it was computed."""

    name = "node count"
    computable = True
    nodes: int
    computed: ClassVar[list] = []

    @classmethod
    def compute(cls, model):
        cls.computed.append(len(model.graph.node))
        return cls(len(model.graph.node))


@dataclass
class Established(Analysis):
    """Test analysis only a pass establishes."""

    name = "test fact"
    value: int = 0


class ReadsCount(Pass):
    name = "test_reads_count"
    requires = (Counted,)
    preserves = PRESERVES_ALL

    def run(self, model, ctx):
        ctx.report.results.setdefault("seen", []).append(ctx.analyses.get(Counted, model).nodes)
        return PassResult(model, False)


class AddsIdentity(CountDown):
    """Changes the graph once (adds an Identity) and preserves nothing."""

    name = "test_adds_identity"


class AddsIdentityKeepsCount(CountDown):
    name = "test_adds_identity_keeps_count"
    preserves = (Counted,)


class Establishes(Pass):
    name = "test_establishes"
    provides = (Established,)
    preserves = PRESERVES_ALL

    def run(self, model, ctx):
        ctx.analyses.put(Established(7))
        return PassResult(model, False)


class ReadsEstablished(Pass):
    name = "test_reads_established"
    requires = (Established,)
    preserves = PRESERVES_ALL

    def run(self, model, ctx):
        ctx.report.results["established"] = ctx.analyses.get(Established, model).value
        return PassResult(model, False)


def _run(passes, **ctx_options):
    Counted.computed.clear()
    ctx = PassContext(**ctx_options)
    PassManager(Pipeline("t", passes), ctx).run(qpass.load(MODELS / "digits_mlp.onnx"))
    return ctx


def test_analysis_is_computed_on_request_and_cached():
    am = AnalysisManager()
    m = qpass.load(MODELS / "digits_mlp.onnx")
    Counted.computed.clear()
    assert am.cached(Counted) is None
    first = am.get(Counted, m)
    assert am.get(Counted, m) is first and am.cached(Counted) is first
    assert Counted.computed == [len(m.graph.node)]
    ctx = _run([ReadsCount(), ReadsCount()])
    assert len(Counted.computed) == 1 and ctx.report.results["seen"] == [Counted.computed[0]] * 2


def test_analysis_dropped_after_a_change_that_does_not_preserve_it():
    ctx = _run([ReadsCount(), AddsIdentity(limit=1), ReadsCount()])
    n = Counted.computed[0]
    assert Counted.computed == [n, n + 1]  # recomputed on the changed graph
    assert ctx.report.results["seen"] == [n, n + 1]


def test_analysis_kept_when_the_changing_pass_preserves_it():
    ctx = _run([ReadsCount(), AddsIdentityKeepsCount(limit=1), ReadsCount()])
    n = Counted.computed[0]
    assert Counted.computed == [n] and ctx.report.results["seen"] == [n, n]


def test_analysis_kept_when_the_pass_did_not_change_the_graph():
    _run([ReadsCount(), AddsIdentity(limit=0), ReadsCount()])  # limit 0: nothing to add
    assert len(Counted.computed) == 1


def test_a_pass_keeps_what_it_established_while_changing_the_graph():
    am = AnalysisManager()
    am.put(Established(1))
    am.begin_pass()
    am.put(Counted(3))
    am.after_change(())
    assert am.available() == {Counted}


def test_established_analysis_reaches_a_later_pass_and_the_result():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    res = run_passes(m, [Establishes(), ReadsEstablished()])
    assert res.report.results["established"] == 7
    assert res.analyses.cached(Established).value == 7


def test_missing_established_analysis_is_refused_before_any_work():
    with pytest.raises(PipelineError, match=r"^pass 'test_reads_established' needs test fact$"):
        _run([ReadsEstablished()])
    with pytest.raises(PipelineError, match="needs test fact, which 'test_adds_identity' drops"):
        _run([Establishes(), AddsIdentity(limit=1), ReadsEstablished()])
    _run([Establishes(), AddsIdentity(limit=1), ReadsEstablished()], disabled={"test_adds_identity"})
    _run([Establishes(), AddsIdentity(limit=1), Establishes(), ReadsEstablished()])


def test_repeat_groups_are_checked_for_their_second_iteration():
    with pytest.raises(PipelineError, match="needs test fact, which 'test_adds_identity' drops"):
        _run([Establishes(), Repeat([ReadsEstablished(), AddsIdentity(limit=2)])])
    _run([Repeat([Establishes(), ReadsEstablished(), AddsIdentity(limit=2)])])


def test_analyses_given_to_the_context_count_as_established():
    ctx = _run([ReadsEstablished()], analyses=AnalysisManager(Established(5)))
    assert ctx.report.results["established"] == 5
    with pytest.raises(PipelineError, match=r"^pass 'test_reads_established' needs test fact, which "
                                            r"'test_adds_identity' drops as it changes the graph$"):
        _run([AddsIdentity(limit=1), ReadsEstablished()], analyses=AnalysisManager(Established(5)))


def test_report_output_is_apart_from_inputs_and_analyses():
    m = qpass.load(MODELS / "digits_cnn.onnx")
    res = qpass.optimize(m, calib=MODELS / "digits_cnn.calib.npz")
    assert set(res.report.results) == {"quantization", "equalize", "gate_equalize", "smoothquant", "bias_correction",
                                       "range_choice", "choose_dynamic", "auto_precision"}
    assert set(res.report.snapshots) == {"quantize_qdq"}
    assert res.facts["quantization"] is res.report.results["quantization"]  # the read-only view
    assert "calibration_data" not in res.facts and "ranges" not in res.facts
    with pytest.raises(TypeError):
        res.facts["quantization"] = {}
    assert res.analyses.cached(Calibration) is None  # quantize_qdq changed the graph: the ranges went stale


def test_float_outputs_computed_once_and_kept_across_changes(monkeypatch):
    """choose_dynamic and auto_precision score against the same float snapshot on the same samples: one float run
    per sample set, kept while passes change the graph; another model object or other samples run again."""
    import numpy as np
    from qpass.pipeline import analyses as an

    model = onnx.load(MODELS / "digits_mlp.onnx")
    data = as_samples(dict(np.load(MODELS / "digits_mlp.calib.npz")), model)
    calls = []
    real = an.joined_outputs
    monkeypatch.setattr(an, "joined_outputs", lambda m, s: calls.append(len(s)) or real(m, s))
    am = AnalysisManager()
    fit, held = data.subset(slice(0, 8)), data.subset(slice(8, 16))
    a = an.float_outputs(am, model, fit)
    am.after_change(())  # a pass changed the graph: a fact about the fixed float model stays
    b = an.float_outputs(am, model, data.subset(slice(0, 8)))  # the same memory through another subset
    assert b is a and calls == [8]
    c = an.float_outputs(am, model, held)
    assert calls == [8, 8] and not np.array_equal(a, c)
    assert np.array_equal(a, real(model, fit))
    other = onnx.ModelProto()
    other.CopyFrom(model)
    an.float_outputs(am, other, fit)  # another model object: computed for it
    assert calls == [8, 8, 8]
