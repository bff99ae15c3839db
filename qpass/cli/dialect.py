"""``qpass optimize`` on already-quantized models and the ``--format`` output dialects: the resolved pipeline
adapted to the input's dialect (``qpass.passes.dialects.pipelines``)."""
from __future__ import annotations

import dataclasses

import click

from qpass.errors import QpassError


def dialect_plan(src, plan, fmt: str | None, requantize: bool, quiet: bool):
    """``plan`` with the import passes for a quantized ``src`` and the conversions of ``--format``."""
    from qpass.passes.dialects import detect_dialect
    from qpass.passes.dialects.pipelines import format_pipeline, import_pipeline

    info = detect_dialect(src)
    pipeline = plan.pipeline
    if info.quantized:
        changes = sorted(set(plan.overrides) & {"fakequant", "bitwidth", "quantize_qdq"})
        if changes and not requantize:
            raise QpassError(f"the model is already quantized ({', '.join(info.dialects)}) and these options would "
                             f"quantize it again ({', '.join(changes)}); add --requantize to drop its quantization "
                             "first, or leave them out to keep it")
        pipeline = import_pipeline(pipeline, requantize)
        if not quiet:
            click.echo(f"input: already quantized ({', '.join(info.dialects)}); "
                       + ("requantizing from calibration data" if requantize else "keeping its quantization"))
    elif requantize:
        raise QpassError("--requantize is for an already-quantized model; this one is float (it is quantized anyway)")
    pipeline = format_pipeline(pipeline, fmt)
    disabled = set(plan.disabled) - ({"lower_ort"} if fmt in ("qcdq", "qdq") else set())
    return dataclasses.replace(plan, pipeline=pipeline, disabled=disabled)


def runnable_source(src):
    """The input model as onnxruntime can run it, for the float-vs-quantized comparison: a QONNX input lowered to
    standard ONNX with the same numbers (lower_ort), any other input as it is."""
    from qpass.passes.dialects import detect_dialect

    if "QONNX" not in detect_dialect(src).dialects:
        return src
    from qpass.pipeline.run import run_passes

    return run_passes(src, ["normalize", "lower_ort"], snapshots=False).model
