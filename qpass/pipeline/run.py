"""Running passes from library code: ``run_passes(model, passes, ctx)`` and what a run leaves behind.

Front ends (``qpass.optimize``, the CLI) and library code (the bitwidth search, the hardware partitioner, the
report) all run pipelines through here; nothing below the front ends calls ``qpass.api``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

import onnx

from qpass.pipeline.manager import PassContext, PassManager, PassRecord, Pipeline
from qpass.pipeline.pass_base import Pass

SNAPSHOT_BEFORE = ("quantize_qdq", "fakequant", "lower_ort")


@dataclass
class OptimizeResult:
    model: onnx.ModelProto
    records: list[PassRecord]
    facts: dict[str, Any] = field(default_factory=dict)
    pipeline: Pipeline | None = None


def snapshot_instrument(ctx: PassContext):
    """An instrument keeping the model as it was before quantisation and before lowering (for reports, golden
    runs and the HLS backend): ``facts["snapshots"][pass name]``."""

    def inst(when: str, p, model: onnx.ModelProto, rec) -> None:
        if when == "before" and p.name in SNAPSHOT_BEFORE:
            snap = onnx.ModelProto()
            snap.CopyFrom(model)
            ctx.facts.setdefault("snapshots", {})[p.name] = snap

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
    return OptimizeResult(out, ctx.records, ctx.facts, pipeline)


def qonnx_model(result: OptimizeResult) -> onnx.ModelProto:
    """The model before lowering to standard ONNX (the final model when the pipeline has no lowering)."""
    return result.facts.get("snapshots", {}).get("lower_ort", result.model)


def float_model(result: OptimizeResult) -> onnx.ModelProto | None:
    """The normalised float model right before quantisation, if the pipeline quantised."""
    snaps = result.facts.get("snapshots", {})
    return snaps.get("quantize_qdq") or snaps.get("fakequant")
