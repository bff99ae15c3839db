"""Pass protocol and pass manager: registration, requirements, fixed points, verification, timing, dumps."""
from dataclasses import dataclass

import onnx
import pytest
from onnx import helper

import qpass
from qpass.errors import PipelineError
from qpass.pipeline.manager import PassContext, PassManager, Pipeline, Repeat
from qpass.pipeline.pass_base import Pass, PassResult
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
    assert [r.changed for r in ctx.records] == [True, True, True, False]
    assert [r.iteration for r in ctx.records] == [1, 2, 3, 4]
    assert all(r.seconds >= 0 for r in ctx.records)
    assert ctx.records[0].nodes_after == ctx.records[0].nodes_before + 1


def test_repeat_stops_at_max_iter_and_says_so():
    m = qpass.load(MODELS / "digits_mlp.onnx")
    ctx = PassContext()
    PassManager(Pipeline("t", [Repeat([CountDown(limit=50)], max_iter=4)]), ctx).run(m)
    assert len(ctx.records) == 4
    assert "max_iter=4" in ctx.facts["log"][0]


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


def test_facts_invalidated_by_graph_changes():
    m = qpass.load(MODELS / "digits_cnn.onnx")
    pipe = pipeline_from_dict({"passes": ["normalize", "calibrate", "fold_batchnorm", "quantize_qdq"]})
    with pytest.raises(PipelineError, match="needs ranges"):
        qpass.optimize(m, calib=MODELS / "digits_cnn.calib.npz", pipeline=pipe)


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
    assert [s.name for s in p.steps] == ["normalize", "fold_batchnorm", "calibrate", "quantize_qdq"]
