"""Reference failures on the ONNX node tests, each with its reason: ``KNOWN_FAILURES[case] = (outcome, reason)``.

``tests/test_conformance.py`` checks that every listed case still fails with exactly the listed outcome and that
every other runnable case passes, so this list can only shrink. ``refused`` entries are declined at construction
on purpose (UnsupportedOpError); ``error`` entries are bugs, each reason naming the fix; ``wrong`` entries are
bugs (the reason names the fix) or cases where the reference follows onnxruntime's numbers rather than onnx's
expected values (the reason says so).
"""
from __future__ import annotations

from types import MappingProxyType

# ------------------------------------------------------------------ refused at construction (not implemented)
R_DROPOUT_TRAINING = (
    "Dropout with training_mode and ratio fed at run time: a random mask nothing can reproduce (onnxruntime "
    "fails these too), refused at construction unless training_mode is a constant False or ratio a constant 0")

# ------------------------------------------------------------------ wrong values (bugs, or onnxruntime's numbers)
W_RESIZE_ALIGN_CORNERS_SCALES = (
    "Resize linear / cubic align_corners downsampling by scales 0.6: coordinates use the floored output length "
    "(x * (4-1)/(2-1)), as onnxruntime does (it fails these cases the same way); onnx's reference divides by "
    "in*scale - 1 = 1.4, giving 3.142857 for 4")
W_MAXUNPOOL_OUTPUT_SHAPE = (
    "MaxUnpool with output_shape 5x5 larger than the inferred 4x4: the indices address the output_shape tensor, "
    "as onnxruntime places them (it fails this case the same way); onnx's expected values place them in the "
    "4x4 tensor and pad it with zeros")
W_FLOAT16_ROUNDING = (
    "float16 Attention (expanded): the expected values come from onnx's reference computing in float16 step by "
    "step; the reference, like onnxruntime's kernels, computes each float16 op in wider precision and rounds "
    "once, and lands one float16 ulp (4.9e-4) away on 2 of 192 values, just outside rtol 1e-3 (onnxruntime "
    "differs from the expected values on 41, within tolerance)")


def _cases(outcome: str, reason: str, names: str) -> dict[str, tuple[str, str]]:
    return {name: (outcome, reason) for name in names.split()}


KNOWN_FAILURES = MappingProxyType({
    **_cases("refused", R_DROPOUT_TRAINING,
             "test_training_dropout test_training_dropout_default test_training_dropout_default_mask "
             "test_training_dropout_mask test_training_dropout_zero_ratio test_training_dropout_zero_ratio_mask"),
    **_cases("wrong", W_FLOAT16_ROUNDING,
             "test_attention_4d_causal_fp16_expanded"),
    **_cases("wrong", W_MAXUNPOOL_OUTPUT_SHAPE,
             "test_maxunpool_export_with_output_shape"),
    **_cases("wrong", W_RESIZE_ALIGN_CORNERS_SCALES,
             "test_resize_downsample_scales_cubic_align_corners test_resize_downsample_scales_linear_align_corners"),
})
