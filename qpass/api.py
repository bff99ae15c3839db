"""Python API for pipeline scripts: load -> run a pipeline -> save, with per-pass access.

    import qpass
    model = qpass.load("model.onnx")
    result = qpass.optimize(model, calib="model.calib.npz", pipeline="default")
    qpass.save(result.model, "model.int8.onnx")
    for rec in result.records: print(rec.name, rec.seconds)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from qpass.ir.samples import SampleSet, bind_samples, load_samples
from qpass.pipeline.manager import PassContext, PassManager, PassRecord, Pipeline
from qpass.ir.model_io import parse_model, save_model
from qpass.pipeline.files import load_pipeline


def load(path: str | Path) -> onnx.ModelProto:
    """Read, check and topologically sort a model (normalisation is the pipeline's first pass)."""
    return parse_model(path)


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    return save_model(model, path)


@dataclass
class OptimizeResult:
    model: onnx.ModelProto
    records: list[PassRecord]
    facts: dict[str, Any] = field(default_factory=dict)
    pipeline: Pipeline | None = None


SNAPSHOT_BEFORE = ("quantize_qdq", "fakequant", "lower_ort")


def _snapshots(ctx: PassContext):
    """An instrument keeping the model as it was before quantisation and before lowering (for reports, golden
    runs and the HLS backend): ``facts["snapshots"][pass name]``."""

    def inst(when: str, p, model: onnx.ModelProto, rec) -> None:
        if when == "before" and p.name in SNAPSHOT_BEFORE:
            snap = onnx.ModelProto()
            snap.CopyFrom(model)
            ctx.facts.setdefault("snapshots", {})[p.name] = snap

    return inst


def qonnx_model(result: "OptimizeResult") -> onnx.ModelProto:
    """The model before lowering to standard ONNX (the final model when the pipeline has no lowering)."""
    return result.facts.get("snapshots", {}).get("lower_ort", result.model)


def float_model(result: "OptimizeResult") -> onnx.ModelProto | None:
    """The normalised float model right before quantisation, if the pipeline quantised."""
    snaps = result.facts.get("snapshots", {})
    return snaps.get("quantize_qdq") or snaps.get("fakequant")


def as_samples(data, model: onnx.ModelProto) -> SampleSet:
    if isinstance(data, SampleSet):
        return data
    if isinstance(data, dict):
        return bind_samples({k: np.asarray(v) for k, v in data.items()}, model, "calibration data")
    return load_samples(data, model)


def optimize(model: onnx.ModelProto | str | Path, calib=None, pipeline: str | Pipeline = "default",
             dump_dir: str | Path | None = None, config: dict | None = None, progress: bool = False,
             overrides: dict[str, dict] | None = None, verify: bool = True,
             disabled: set[str] | None = None, eval=None) -> OptimizeResult:
    """Run a pipeline over a model. ``calib`` is an npz path, a dict of arrays, or a SampleSet."""
    if not isinstance(model, onnx.ModelProto):
        model = load(model)
    if not isinstance(pipeline, Pipeline):
        pipeline = load_pipeline(pipeline, overrides)
    ctx = PassContext(config=dict(config or {}), dump_dir=Path(dump_dir) if dump_dir else None,
                      progress=progress, verify=verify, disabled=set(disabled or ()))
    if calib is not None:
        ctx.facts["calibration_data"] = as_samples(calib, model)
    if eval is not None:  # held-out samples (with labels) for passes that measure accuracy, e.g. bitwidth
        ctx.facts["eval_data"] = as_samples(eval, model)
    ctx.instruments.append(_snapshots(ctx))
    out = PassManager(pipeline, ctx).run(model)
    return OptimizeResult(out, ctx.records, ctx.facts, pipeline)
