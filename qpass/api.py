"""Python API for pipeline scripts: load -> run a pipeline -> save, with per-pass access.

    import qpass
    model = qpass.load("model.onnx")
    result = qpass.optimize(model, calib="model.calib.npz", pipeline="default")
    qpass.save(result.model, "model.int8.onnx")
    for rec in result.records: print(rec.name, rec.seconds)
"""
from __future__ import annotations

from pathlib import Path

import onnx

from qpass.ir.model_io import parse_model, save_model
from qpass.ir.samples import as_samples
from qpass.pipeline.files import load_pipeline
from qpass.pipeline.manager import PassContext, Pipeline
from qpass.pipeline.run import OptimizeResult, float_model, qonnx_model, run_passes

__all__ = ["load", "save", "optimize", "OptimizeResult", "qonnx_model", "float_model", "as_samples", "run_passes"]


def load(path: str | Path) -> onnx.ModelProto:
    """Read, check and topologically sort a model (normalisation is the pipeline's first pass)."""
    return parse_model(path)


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    return save_model(model, path)


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
    return run_passes(model, pipeline, ctx)
