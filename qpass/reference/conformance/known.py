"""Reference failures on the ONNX node tests, each with its reason: ``KNOWN_FAILURES[case] = (outcome, reason)``.

``tests/test_conformance.py`` checks that every listed case still fails with exactly the listed outcome and that
every other runnable case passes, so this list can only shrink. ``refused`` entries are declined at construction
on purpose (UnsupportedOpError); ``wrong`` and ``error`` entries are bugs, each reason naming the fix.
"""
from __future__ import annotations

from types import MappingProxyType

# ------------------------------------------------------------------ refused at construction (not implemented)
R_CAST = ("Cast to bfloat16, float8 (E4M3FN, E4M3FNUZ, E5M2FNUZ, E8M0), float4 or 2-/4-bit integers has no kernel "
          "(_check_cast refuses the ml_dtypes types numpy lists as kind 'V')")
R_BLOCKED = "blocked quantisation (block_size) has no kernel"
R_CUBIC = "Resize mode 'cubic' has no kernel"
R_ANTIALIAS = "Resize antialias=1 has no kernel"
R_ASPECT = "Resize keep_aspect_ratio_policy not_larger / not_smaller has no kernel"
R_MAXPOOL_INDICES = "MaxPool's Indices output has no kernel"
R_BN_TRAINING = "BatchNormalization training_mode=1 (batch statistics, running-mean outputs): inference only"
R_CONTROL_SEQUENCES = ("If / Loop bodies that build sequence or optional values (SequenceConstruct, SequenceInsert, "
                       "Optional*): only tensor values have kernels, refused when the parent executor is built")

# ------------------------------------------------------------------ wrong values (silent bugs)
W_CAST_E5M2_SATURATE = (
    "Cast to FLOAT8E5M2 ignores saturate=1 (the default): overflow and +-inf must become +-57344, not inf. "
    "It is not refused like the other float8 types because ml_dtypes' float8_e5m2 has numpy kind 'f'. Fix in "
    "ops_float.cast: clip finite and infinite values to +-57344 before astype when saturate=1")
W_CONVTRANSPOSE_OUTPUT_SHAPE = (
    "ConvTranspose with output_shape (10, 8) larger than the natural (9, 7) returns shape (1, 2, 1, 1): "
    "conv_transpose_geometry splits the negative total padding with floor division (begin = -1) and "
    "col2im_transpose mishandles negative pads. Expected: the natural output followed by zero rows/columns at "
    "the end (as output_padding gives)")
W_DEQUANTIZE_FLOAT_CODES = (
    "DequantizeLinear of float8 / float4 codes: numerics.dequantize_linear converts the codes (and the zero "
    "point) with astype(int64), truncating 0.5 to 0; float codes must be converted with astype(float32)")
W_MOD_FLOOR = (
    "float Mod with fmod=0 computes C fmod (sign of the dividend); ONNX wants floor-mod, np.mod (sign of the "
    "divisor, -3 mod inf = inf): ops_float.mod uses np.fmod for every float input")
W_SEQUENCE_VALUES = (
    "sequence / optional values: the executor stacks the sequence into one array (np.asarray) instead of "
    "refusing sequence- and optional-typed graph inputs and outputs at construction")
W_RESIZE_ALIGN_CORNERS_SCALES = (
    "Resize linear align_corners downsampling by scales 0.6: coordinates use the floored output length "
    "(x * (4-1)/(2-1)), as onnxruntime does (it fails this case the same way); onnx's reference divides by "
    "in*scale - 1 = 1.4, giving 3.142857 for 4")

# ------------------------------------------------------------------ errors after construction (broken promise)
E_LAYERNORM_STATS = (
    "LayerNormalization with its optional Mean and InvStdDev outputs: the kernel returns only Y, so the run "
    "fails with KeyError 'Mean'; return (Y, mean, 1/sqrt(var + eps)) in the stash type, or refuse at construction")
E_QUANTIZE_NARROW_TYPES = (
    "QuantizeLinear to float8 / float4 / int4 / uint4 / int2 / uint2: _check_q looks only at output_dtype, but "
    "the type comes from the zero point, so the kernel raises at run time; check the zero point's type at "
    "construction (or add the kernels: saturating float8 rounding, 2-/4-bit clipping)")
E_REDUCE_EMPTY = (
    "ReduceMax / ReduceMin over an empty axis: numpy's max/min have no identity and raise; ONNX wants the "
    "identity (ReduceMax -inf, or the lowest value, False for bool; ReduceMin +inf)")
E_RESIZE_ROI_AXES = (
    "Resize tf_crop_and_resize with axes: roi is indexed by the tensor axis (roi[a], roi[nd + a]) instead of the "
    "position in axes (roi[j], roi[len(axes) + j]), an IndexError at run time")
E_DROPOUT_TRAINING = (
    "Dropout with training_mode=True (a run-time input) raises at run time instead of being refused at "
    "construction; the random masks of onnx's seeded generator cannot be reproduced (onnxruntime fails them "
    "too), but the ratio-0 cases are the identity and could pass")


def _cases(outcome: str, reason: str, names: str) -> dict[str, tuple[str, str]]:
    return {name: (outcome, reason) for name in names.split()}


KNOWN_FAILURES = MappingProxyType({
    **_cases("refused", R_ANTIALIAS,
             "test_resize_downsample_scales_linear_antialias test_resize_downsample_sizes_linear_antialias"),
    **_cases("refused", R_ASPECT,
             "test_resize_downsample_sizes_nearest_not_larger test_resize_downsample_sizes_nearest_not_smaller "
             "test_resize_upsample_sizes_nearest_not_larger test_resize_upsample_sizes_nearest_not_smaller"),
    **_cases("refused", R_BLOCKED,
             "test_dequantizelinear_blocked test_quantizelinear_blocked_asymmetric "
             "test_quantizelinear_blocked_symmetric"),
    **_cases("refused", R_BN_TRAINING,
             "test_batchnorm_epsilon_training_mode test_batchnorm_example_training_mode"),
    **_cases("refused", R_CAST,
             "test_cast_FLOAT16_to_FLOAT4E2M1 test_cast_FLOAT16_to_FLOAT8E4M3FN test_cast_FLOAT16_to_FLOAT8E4M3FNUZ "
             "test_cast_FLOAT16_to_FLOAT8E5M2FNUZ test_cast_FLOAT16_to_INT2 test_cast_FLOAT16_to_INT4 "
             "test_cast_FLOAT16_to_UINT2 test_cast_FLOAT16_to_UINT4 test_cast_FLOAT_to_BFLOAT16 "
             "test_cast_FLOAT_to_FLOAT4E2M1 test_cast_FLOAT_to_FLOAT8E4M3FN test_cast_FLOAT_to_FLOAT8E4M3FNUZ "
             "test_cast_FLOAT_to_FLOAT8E5M2FNUZ test_cast_FLOAT_to_INT2 test_cast_FLOAT_to_INT4 "
             "test_cast_FLOAT_to_UINT2 test_cast_FLOAT_to_UINT4 test_cast_e8m0_FLOAT16_to_FLOAT8E8M0 "
             "test_cast_e8m0_FLOAT_to_FLOAT8E8M0 test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FN "
             "test_cast_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ test_cast_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ "
             "test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FN test_cast_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ "
             "test_cast_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ test_castlike_FLOAT16_to_FLOAT4E2M1_expanded "
             "test_castlike_FLOAT16_to_FLOAT8E4M3FNUZ_expanded test_castlike_FLOAT16_to_FLOAT8E4M3FN_expanded "
             "test_castlike_FLOAT16_to_FLOAT8E5M2FNUZ_expanded test_castlike_FLOAT16_to_INT2_expanded "
             "test_castlike_FLOAT16_to_INT4_expanded test_castlike_FLOAT16_to_UINT2_expanded "
             "test_castlike_FLOAT16_to_UINT4_expanded test_castlike_FLOAT_to_BFLOAT16_expanded "
             "test_castlike_FLOAT_to_FLOAT4E2M1_expanded test_castlike_FLOAT_to_FLOAT8E4M3FNUZ_expanded "
             "test_castlike_FLOAT_to_FLOAT8E4M3FN_expanded test_castlike_FLOAT_to_FLOAT8E5M2FNUZ_expanded "
             "test_castlike_FLOAT_to_INT2_expanded test_castlike_FLOAT_to_INT4_expanded "
             "test_castlike_FLOAT_to_UINT2_expanded test_castlike_FLOAT_to_UINT4_expanded "
             "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FNUZ_expanded "
             "test_castlike_no_saturate_FLOAT16_to_FLOAT8E4M3FN_expanded "
             "test_castlike_no_saturate_FLOAT16_to_FLOAT8E5M2FNUZ_expanded "
             "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FNUZ_expanded "
             "test_castlike_no_saturate_FLOAT_to_FLOAT8E4M3FN_expanded "
             "test_castlike_no_saturate_FLOAT_to_FLOAT8E5M2FNUZ_expanded test_range_bfloat16_type_positive_delta_expanded"),
    **_cases("refused", R_CONTROL_SEQUENCES,
             "test_if_opt test_if_seq test_loop13_seq test_loop16_seq_none"),
    **_cases("refused", R_CUBIC,
             "test_resize_downsample_scales_cubic test_resize_downsample_scales_cubic_A_n0p5_exclude_outside "
             "test_resize_downsample_scales_cubic_align_corners test_resize_downsample_scales_cubic_antialias "
             "test_resize_downsample_sizes_cubic test_resize_downsample_sizes_cubic_antialias "
             "test_resize_upsample_scales_cubic test_resize_upsample_scales_cubic_A_n0p5_exclude_outside "
             "test_resize_upsample_scales_cubic_align_corners test_resize_upsample_scales_cubic_asymmetric "
             "test_resize_upsample_sizes_cubic"),
    **_cases("refused", R_MAXPOOL_INDICES,
             "test_maxpool_with_argmax_2d_precomputed_pads test_maxpool_with_argmax_2d_precomputed_strides"),
    **_cases("wrong", W_CAST_E5M2_SATURATE,
             "test_cast_FLOAT16_to_FLOAT8E5M2 test_cast_FLOAT_to_FLOAT8E5M2 "
             "test_castlike_FLOAT16_to_FLOAT8E5M2_expanded test_castlike_FLOAT_to_FLOAT8E5M2_expanded"),
    **_cases("wrong", W_CONVTRANSPOSE_OUTPUT_SHAPE,
             "test_convtranspose_output_shape"),
    **_cases("wrong", W_DEQUANTIZE_FLOAT_CODES,
             "test_dequantizelinear_e4m3fn test_dequantizelinear_e4m3fn_float16 "
             "test_dequantizelinear_e4m3fn_zero_point test_dequantizelinear_e5m2 test_dequantizelinear_float4e2m1"),
    **_cases("wrong", W_MOD_FLOOR,
             "test_mod_float16_mixed_sign_fmod_0 test_mod_float32_mixed_sign_fmod_0 "
             "test_mod_float64_mixed_sign_fmod_0 test_mod_float_edge_cases_fmod_0_float16 "
             "test_mod_float_edge_cases_fmod_0_float32 test_mod_float_edge_cases_fmod_0_float64"),
    **_cases("wrong", W_RESIZE_ALIGN_CORNERS_SCALES,
             "test_resize_downsample_scales_linear_align_corners"),
    **_cases("wrong", W_SEQUENCE_VALUES,
             "test_identity_opt test_identity_sequence"),
    **_cases("error", E_DROPOUT_TRAINING,
             "test_training_dropout test_training_dropout_default test_training_dropout_default_mask "
             "test_training_dropout_mask test_training_dropout_zero_ratio test_training_dropout_zero_ratio_mask"),
    **_cases("error", E_LAYERNORM_STATS,
             "test_layer_normalization_2d_axis0 test_layer_normalization_2d_axis1 "
             "test_layer_normalization_2d_axis_negative_1 test_layer_normalization_2d_axis_negative_2 "
             "test_layer_normalization_3d_axis0_epsilon test_layer_normalization_3d_axis1_epsilon "
             "test_layer_normalization_3d_axis2_epsilon test_layer_normalization_3d_axis_negative_1_epsilon "
             "test_layer_normalization_3d_axis_negative_2_epsilon "
             "test_layer_normalization_3d_axis_negative_3_epsilon test_layer_normalization_4d_axis0 "
             "test_layer_normalization_4d_axis1 test_layer_normalization_4d_axis2 test_layer_normalization_4d_axis3 "
             "test_layer_normalization_4d_axis_negative_1 test_layer_normalization_4d_axis_negative_2 "
             "test_layer_normalization_4d_axis_negative_3 test_layer_normalization_4d_axis_negative_4 "
             "test_layer_normalization_default_axis"),
    **_cases("error", E_QUANTIZE_NARROW_TYPES,
             "test_quantizelinear_e4m3fn test_quantizelinear_e5m2 test_quantizelinear_float4e2m1 "
             "test_quantizelinear_int2 test_quantizelinear_int4 test_quantizelinear_uint2 test_quantizelinear_uint4"),
    **_cases("error", E_REDUCE_EMPTY,
             "test_reduce_max_empty_set test_reduce_max_empty_set_bool test_reduce_min_empty_set"),
    **_cases("error", E_RESIZE_ROI_AXES,
             "test_resize_tf_crop_and_resize_axes_2_3 test_resize_tf_crop_and_resize_axes_3_2"),
})
