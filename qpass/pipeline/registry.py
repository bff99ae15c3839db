"""Every pass a pipeline file can name, in one table: name -> "module:Class" (onnxruntime's quantizer keeps such
an explicit table in ``quantization/registry.py``). A pass is imported only when a pipeline names it, so this layer
never imports the layers above it; adding a pass is one class in ``qpass/passes/`` (or ``qpass/search/``) and one
line here.
"""
from __future__ import annotations

import importlib

from qpass.errors import PipelineError

PASSES: dict[str, str] = {
    # normalisation and float rewrites
    "normalize": "qpass.passes.normalize:Normalize",
    "fold_batchnorm": "qpass.passes.fold_batchnorm:FoldBatchNorm",
    "fold_affine": "qpass.passes.fold_affine:FoldAffine",
    "batchnorm_to_affine": "qpass.passes.algebra:BatchNormToAffine",
    "fold_const_arith": "qpass.passes.algebra:FoldConstArith",
    "collapse_repeated": "qpass.passes.algebra:CollapseRepeated",
    "move_mul_past": "qpass.passes.algebra:MoveMulPast",
    "move_add_past": "qpass.passes.algebra:MoveAddPast",
    # calibration and quantiser insertion
    "calibrate": "qpass.passes.calibrate:Calibrate",
    "quantize_qdq": "qpass.passes.quantize_qdq:QuantizeQDQ",
    "fakequant": "qpass.passes.fakequant:FakeQuant",
    "bitwidth": "qpass.search.bitwidth_pass:Bitwidth",
    "choose_ranges": "qpass.passes.range_choice:ChooseRanges",
    "mixed_precision": "qpass.search.mixed_int8:MixedPrecision",
    "quantize_dynamic": "qpass.passes.quantize_dynamic:QuantizeDynamic",
    # streamlining to integers
    "to_int_codes": "qpass.passes.integerize:ToIntCodes",
    "move_dequant": "qpass.passes.integerize:MoveDequant",
    "integer_linear": "qpass.passes.integerize:IntegerLinear",
    "integer_add": "qpass.passes.integerize:IntegerAdd",
    "integer_pool": "qpass.passes.integerize:IntegerPool",
    "absorb_thresholds": "qpass.passes.thresholds:AbsorbThresholds",
    "requantize": "qpass.passes.requantize:Requantize",
    "integer_report": "qpass.passes.integer_report:IntegerReport",
    # weight-side post-training methods (before calibration)
    "equalize": "qpass.passes.equalize:Equalize",
    "smoothquant": "qpass.passes.smoothquant:SmoothQuant",
    "adaround": "qpass.passes.adaround:AdaRound",
    "bias_correction": "qpass.passes.bias_correction:BiasCorrection",
    # lowering
    "lower_ort": "qpass.passes.lower_ort:LowerOrt",
    # quantised dialects (import and output formats)
    "import_quantized": "qpass.passes.dialects.passes:ImportQuantized",
    "qoperator_to_qdq": "qpass.passes.dialects.passes:QOperatorToQdq",
    "qdq_to_qonnx": "qpass.passes.dialects.passes:QdqToQonnx",
    "qonnx_to_qcdq": "qpass.passes.dialects.passes:QonnxToQcdq",
    "qonnx_to_qdq": "qpass.passes.dialects.passes:QonnxToQdq",
    "dequantize": "qpass.passes.dialects.passes:Dequantize",
    "int8_weights": "qpass.passes.int8_weights:Int8Weights",
    "choose_dynamic": "qpass.passes.choose_dynamic:ChooseDynamic",
    "auto_precision": "qpass.search.mixed_int8:AutoPrecision",
    "gate_equalize": "qpass.passes.gate_equalize:GateEqualize",
    "prelu_equalize": "qpass.passes.prelu_equalize:PreluEqualize",
    "prelu_lut": "qpass.passes.prelu_lut:PreluLut",
    "prelu_split": "qpass.passes.prelu_split:PreluSplit",
    "prelu_max": "qpass.passes.prelu_max:PreluMax",
    "decode_reference": "qpass.search.decode_precision:DecodeReference",
    "decode_precision": "qpass.search.decode_precision:DecodePrecision",
}


def pass_names() -> list[str]:
    return sorted(PASSES)


def get_pass_class(name: str):
    """The class of the pass called ``name``, or of a user's pass named as ``"package.module:Class"``
    (a PipelineError naming the known passes otherwise)."""
    from qpass.pipeline.pass_base import Pass

    target = PASSES.get(name) if isinstance(name, str) else None
    if target is None and isinstance(name, str) and ":" in name:
        target = name
    if target is None:
        raise PipelineError(f"unknown pass {name!r} (known: {', '.join(pass_names())}, or 'package.module:Class')")
    module, _, attr = target.partition(":")
    try:
        cls = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError, ValueError) as exc:
        raise PipelineError(f"pass {name!r} cannot be imported: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Pass)):
        raise PipelineError(f"pass {name!r} is not a qpass Pass class")
    return cls


def providers_of(analyses) -> list[str]:
    """Names of the built-in passes that establish any of ``analyses`` (for error hints)."""
    return sorted(n for n in PASSES if set(get_pass_class(n).provides) & set(analyses))
