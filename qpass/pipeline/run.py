"""Running passes from library code: ``run_passes(model, passes, ctx)`` and what a run leaves behind.

Front ends (``qpass.optimize``, the CLI) and library code (the bitwidth search, the hardware partitioner, the
report) all run pipelines through here; nothing below the front ends calls ``qpass.api``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import onnx

from qpass.pipeline.analyses import AnalysisManager
from qpass.pipeline.context import PassContext, PassRecord, PassReport
from qpass.pipeline.manager import PassManager, Pipeline
from qpass.pipeline.pass_base import Pass

SNAPSHOT_BEFORE = ("quantize_qdq", "fakequant", "lower_ort")


@dataclass
class OptimizeResult:
    """The optimised model, the run's report (records, log, per-pass results, snapshots) and the analyses still
    valid for ``model`` (e.g. ``result.analyses.cached(Calibration)``)."""

    model: onnx.ModelProto
    report: PassReport = field(default_factory=PassReport)
    analyses: AnalysisManager = field(default_factory=AnalysisManager)
    pipeline: Pipeline | None = None

    @property
    def records(self) -> list[PassRecord]:
        return self.report.records

    @property
    def facts(self) -> Mapping[str, Any]:
        """The report output by key, read-only: ``facts["quantization"]``, ``["fakequant"]``, ``["bitwidth"]``,
        ``["integer_report"]``, ``["log"]``, ``["snapshots"]``."""
        return self.report.facts()


def snapshot_instrument(ctx: PassContext):
    """An instrument keeping the model as it was before quantisation and before lowering (for reports, golden
    runs and the HLS backend): ``ctx.report.snapshots[pass name]``."""

    def inst(when: str, p, model: onnx.ModelProto, rec) -> None:
        if when == "before" and p.name in SNAPSHOT_BEFORE:
            snap = onnx.ModelProto()
            snap.CopyFrom(model)
            ctx.report.snapshots[p.name] = snap

    return inst


def as_pipeline(passes: Pipeline | Sequence[Pass | str | dict], name: str = "passes") -> Pipeline:
    """A Pipeline from a Pipeline, or a list of Pass objects / pipeline-file entries (names or {name: options})."""
    if isinstance(passes, Pipeline):
        return passes
    from qpass.pipeline.files import pipeline_from_dict

    objs = [p for p in passes if isinstance(p, Pass)]
    if len(objs) == len(passes):
        return Pipeline(name, list(passes))
    return pipeline_from_dict({"name": name, "passes": list(passes)}, name)


def run_passes(model: onnx.ModelProto, passes: Pipeline | Sequence[Pass | str | dict],
               ctx: PassContext | None = None, snapshots: bool = True) -> OptimizeResult:
    """Run ``passes`` over a private copy of ``model`` (never modified) with ``ctx`` (a fresh one by default);
    ``snapshots`` keeps the model before quantisation and lowering (``qonnx_model``, ``float_model``)."""
    ctx = ctx if ctx is not None else PassContext(progress=False)
    pipeline = as_pipeline(passes)
    if snapshots:
        ctx.instruments.append(snapshot_instrument(ctx))
    out = PassManager(pipeline, ctx).run(model)
    return OptimizeResult(out, ctx.report, ctx.analyses, pipeline)


def qonnx_model(result: OptimizeResult) -> onnx.ModelProto:
    """The model before lowering to standard ONNX (the final model when the pipeline has no lowering)."""
    return result.report.snapshots.get("lower_ort", result.model)


def float_model(result: OptimizeResult) -> onnx.ModelProto | None:
    """The normalised float model right before quantisation, if the pipeline quantised."""
    snaps = result.report.snapshots
    return snaps.get("quantize_qdq") or snaps.get("fakequant")
