"""Python API for pipeline scripts: load -> run a pipeline -> save, with per-pass access.

    import qpass
    model = qpass.load("model.onnx")
    result = qpass.optimize(model, calib="model.calib.npz", pipeline="default")
    cfg = qpass.QuantConfig(weights="sym:4", activations="uint4")     # every CLI setting, documented
    result = qpass.optimize(model, calib="model.calib.npz", config=cfg)
    qpass.save(result.model, "model.int8.onnx")
    for rec in result.records: print(rec.name, rec.seconds)
"""
from __future__ import annotations

from pathlib import Path

import onnx

from qpass.errors import QpassError
from qpass.ir.model_io import parse_model, save_model
from qpass.ir.samples import as_samples
from qpass.pipeline.config import QuantConfig
from qpass.pipeline.context import PassContext, PassInputs
from qpass.pipeline.files import load_pipeline
from qpass.pipeline.manager import Pipeline
from qpass.pipeline.run import OptimizeResult, float_model, qonnx_model, run_passes

__all__ = ["load", "save", "optimize", "OptimizeResult", "QuantConfig", "qonnx_model", "float_model", "as_samples",
           "run_passes"]


def load(path: str | Path) -> onnx.ModelProto:
    """Read, check and topologically sort a model (normalisation is the pipeline's first pass)."""
    return parse_model(path)


def save(model: onnx.ModelProto, path: str | Path) -> Path:
    """Write ``model`` atomically; a model onnxruntime can run is written without the inferred value_info of its
    intermediate tensors (``qpass.backends.ort.artifact``: onnxruntime infers them again at load)."""
    from qpass.backends.ort import artifact  # a backend: imported when saving, not with the lower layers

    return save_model(artifact(model), path)


def optimize(model: onnx.ModelProto | str | Path, calib=None, pipeline: str | Pipeline = "default",
             dump_dir: str | Path | None = None, config: QuantConfig | dict | None = None, progress: bool = False,
             overrides: dict[str, dict] | None = None, verify: bool = True,
             disabled: set[str] | None = None, eval=None, engine=None) -> OptimizeResult:
    """Run a pipeline over a model. ``calib`` is an npz path, a dict of arrays, or a SampleSet; ``eval`` held-out
    samples (with labels) for passes that measure accuracy, e.g. bitwidth. ``config`` (a QuantConfig, or a dict
    of its fields) chooses the pipeline and its options instead of ``pipeline`` / ``overrides`` / ``verify``.
    ``engine`` (``qpass.pipeline.engines.make_engine("process" | "ray")``) is where passes fan out independent work
    (the bitwidth search's per-layer sensitivity runs); results do not depend on it."""
    if not isinstance(model, onnx.ModelProto):
        model = load(model)
    disabled = set(disabled or ())
    if config is not None:
        if pipeline != "default" or overrides:
            raise QpassError("give the pipeline and its options in config or as pipeline=/overrides=, not both")
        plan = (config if isinstance(config, QuantConfig) else QuantConfig.from_dict(config)).resolve()
        pipeline, verify, disabled = plan.pipeline, plan.verify, disabled | plan.disabled
    elif not isinstance(pipeline, Pipeline):
        pipeline = load_pipeline(pipeline, overrides)
    pipeline = _for_input(model, pipeline)
    inputs = PassInputs(calibration_data=as_samples(calib, model) if calib is not None else None,
                        eval_data=as_samples(eval, model) if eval is not None else None)
    ctx = PassContext(inputs=inputs, dump_dir=Path(dump_dir) if dump_dir else None, progress=progress,
                      verify=verify, disabled=disabled, engine=engine)
    return run_passes(model, pipeline, ctx)


def _for_input(model: onnx.ModelProto, pipeline: Pipeline) -> Pipeline:
    """An already-quantized model keeps its trained quantization, as in ``qpass optimize``: the pipeline's
    quantizing passes give way to ``import_quantized`` (a pipeline that imports by itself is left as it is)."""
    from qpass.passes.dialects import detect_dialect
    from qpass.passes.dialects.pipelines import import_pipeline

    if any(p.name == "import_quantized" for p in pipeline.flat_passes()) or not detect_dialect(model).quantized:
        return pipeline
    return import_pipeline(pipeline)


def evaluate(src: onnx.ModelProto, result: OptimizeResult, samples, threads: int = 1) -> tuple[dict, list[str]]:
    """What ``qpass optimize --eval`` measures, as (metrics, printable lines): float vs quantized output SQNR, top-1
    agreement and, with labels, accuracy; after fakequant also whether the golden interpreter and onnxruntime
    predict the same."""
    from qpass.analysis.evaluate import check_backends, compare

    cmp = compare(src, result.model, samples, threads)
    metrics = {"samples": cmp.samples, "output SQNR vs float (dB)": cmp.sqnr_db,
               "top-1 agreement with float": cmp.agreement}
    if cmp.float_accuracy is not None:
        metrics.update({"float accuracy": cmp.float_accuracy, "quantized accuracy": cmp.quant_accuracy})
    lines = list(cmp.lines())
    if "fakequant" in result.report.results:
        chk = check_backends(qonnx_model(result), result.model, samples, threads)
        metrics["golden/onnxruntime identical predictions"] = chk.summary()
        lines += list(chk.lines())
    return metrics, lines
