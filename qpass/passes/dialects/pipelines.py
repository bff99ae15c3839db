"""Pipelines for already-quantised models and for the output dialects (what ``qpass optimize`` runs).

- ``import_pipeline``: the passes that quantise a float model (calibrate, fakequant, quantize_qdq, bitwidth) give
  way to ``import_quantized`` right after ``normalize``, so the trained quantisation is kept and everything after
  (streamlining, the HLS export, ``lower_ort``) works on it; a pipeline that ended in quantize_qdq's QDQ gets
  ``lower_ort``. With ``requantize`` the model is imported, its quantisers dropped (``dequantize``) and the
  pipeline runs as on a float model (recalibrated: new scales, other bit widths).
- ``format_pipeline``: ``qonnx`` keeps QONNX (no lowering; a QDQ result converts to QONNX), ``qcdq`` / ``qdq``
  convert the QONNX quantisers and lower what is left (MultiThreshold) with ``lower_ort``.
"""
from __future__ import annotations

from qpass.pipeline.manager import Pipeline, Repeat
from qpass.pipeline.registry import get_pass_class

#: passes that quantize a float model, or change its float weights or ranges to quantize it better: they give way to
#: the trained quantization of an imported model
QUANTIZING = ("calibrate", "fakequant", "quantize_qdq", "bitwidth", "quantize_dynamic", "mixed_precision",
              "choose_ranges", "equalize", "smoothquant", "bias_correction", "adaround", "choose_dynamic",
              "auto_precision", "gate_equalize", "decode_reference", "decode_precision", "prelu_split",
              "prelu_max")
FORMATS = ("qonnx", "qcdq", "qdq")


def _names(steps) -> list[str]:
    return [s.name for s in steps]


def import_pipeline(pipeline: Pipeline, requantize: bool = False) -> Pipeline:
    steps = list(pipeline.steps)
    at = _names(steps).index("normalize") + 1 if "normalize" in _names(steps) else 0
    head = [get_pass_class("import_quantized")()]
    if requantize:
        head.append(get_pass_class("dequantize")())
        return Pipeline(pipeline.name, steps[:at] + head + steps[at:], pipeline.description)
    ended_qdq = "quantize_qdq" in _names(steps)
    rest = [s for s in steps[at:] if isinstance(s, Repeat) or s.name not in QUANTIZING + ("fold_affine",)]
    if ended_qdq and "lower_ort" not in _names(rest):
        rest.append(get_pass_class("lower_ort")())
    return Pipeline(pipeline.name, steps[:at] + head + rest, pipeline.description)


def format_pipeline(pipeline: Pipeline, fmt: str | None) -> Pipeline:
    if fmt is None:
        return pipeline
    steps = [s for s in pipeline.steps if isinstance(s, Repeat) or s.name != "lower_ort"]
    if fmt == "qonnx":
        steps.append(get_pass_class("qdq_to_qonnx")())
    else:
        steps += [get_pass_class(f"qonnx_to_{fmt}")(), get_pass_class("lower_ort")()]
    return Pipeline(pipeline.name, steps, pipeline.description)
