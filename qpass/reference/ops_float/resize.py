"""Resize / Upsample: nearest, linear and cubic modes, antialiasing, keep_aspect_ratio_policy and every ONNX
coordinate transformation, in float32 coordinates like onnxruntime (interpolation in float64, rounded once)."""
from __future__ import annotations

import numpy as np

from ..registry import register
from .common import F32, F64



_COORD_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_crop_and_resize",
                "half_pixel_symmetric", "tf_half_pixel_for_nn")


def _check_resize(node):
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic"):
        return f"Resize mode {mode!r} is not supported (nearest, linear and cubic are)"
    ctm = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    if ctm not in _COORD_MODES:
        return f"coordinate_transformation_mode {ctm!r} is not supported"
    if int(node.attr("antialias", 0)) and mode == "nearest":
        return "antialias=1 with mode 'nearest' is not defined"
    if int(node.attr("exclude_outside", 0)) and not (mode == "cubic" or int(node.attr("antialias", 0))):
        return "exclude_outside=1 needs mode 'cubic' or antialias=1 (as onnxruntime requires)"
    if node.attr("keep_aspect_ratio_policy", "stretch") not in ("stretch", "not_larger", "not_smaller"):
        return f"keep_aspect_ratio_policy {node.attr('keep_aspect_ratio_policy')!r} is not supported"
    if node.attr("nearest_mode", "round_prefer_floor") not in ("round_prefer_floor", "round_prefer_ceil", "floor",
                                                                "ceil"):
        return f"nearest_mode {node.attr('nearest_mode')!r} is not supported"
    return None


def _nearest(x, mode):
    if mode == "floor":
        return np.floor(x)
    if mode == "ceil":
        return np.ceil(x)
    frac = x - np.floor(x)
    if mode == "round_prefer_ceil":
        return np.where(frac == 0.5, np.ceil(x), np.round(x))
    return np.where(frac == 0.5, np.floor(x), np.round(x))


def _source_coords(ctm, n_in, n_out, s, crop):
    """float32 input coordinate of every output index along one axis (``crop``: the roi start and end)."""
    o = np.arange(n_out, dtype=F32)
    if ctm == "asymmetric":
        c = o / s
    elif ctm == "align_corners":
        c = o * F32(n_in - 1) / F32(n_out - 1) if n_out > 1 else np.zeros_like(o)
    elif ctm == "pytorch_half_pixel":
        c = (o + F32(0.5)) / s - F32(0.5) if n_out > 1 else np.zeros_like(o)
    elif ctm == "tf_half_pixel_for_nn":
        c = (o + F32(0.5)) / s
    elif ctm == "half_pixel_symmetric":
        adj = F32(n_out) / (s * F32(n_in))
        center = F32(n_in) / F32(2)
        off = center * (F32(1) - adj)
        c = off + (o + F32(0.5)) / s - F32(0.5)
    elif ctm == "tf_crop_and_resize":
        start, end = crop
        if n_out > 1:
            c = start * F32(n_in - 1) + o * (end - start) * F32(n_in - 1) / F32(n_out - 1)
        else:
            c = np.full_like(o, F32(0.5) * (start + end) * F32(n_in - 1))
    else:  # half_pixel
        c = (o + F32(0.5)) / s - F32(0.5)
    return np.asarray(c, F32)


def _output_size(node, in_shape, scales, sizes):
    """(out_shape, float32 scales) from ``sizes`` (with keep_aspect_ratio_policy) or ``scales``."""
    if sizes is not None and np.size(sizes):
        out_shape = [int(s) for s in np.asarray(sizes).reshape(-1)]
        policy = node.attr("keep_aspect_ratio_policy", "stretch")
        if policy == "stretch":
            return out_shape, [F32(o) / F32(i) for o, i in zip(out_shape, in_shape)]
        ratios = [F32(o) / F32(i) for o, i in zip(out_shape, in_shape)]
        s = min(ratios) if policy == "not_larger" else max(ratios)
        return [int(np.floor(s * F32(i) + F32(0.5))) for i in in_shape], [s] * len(in_shape)
    sc = [F32(s) for s in np.asarray(scales, F32).reshape(-1)]
    return [int(np.floor(F32(i) * s)) for i, s in zip(in_shape, sc)], sc


def _axis_mask(mask, nd, a):
    shape = [1] * nd
    shape[a] = -1
    return mask.reshape(shape)


@register("Resize", check=_check_resize)
@register("Upsample", check=_check_resize)
def resize(node, x, roi=None, scales=None, sizes=None):
    nd = x.ndim
    if node.op_type == "Upsample" or node.opset < 11:  # (X, scales)
        scales, roi, sizes = (node.attr("scales") if roi is None else roi), None, None
    axes = node.attr("axes")
    axes = list(range(nd)) if axes is None else [int(a) % nd for a in axes]
    in_shape = [x.shape[a] for a in axes]
    out_shape, sc = _output_size(node, in_shape, scales, sizes)
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    nmode = node.attr("nearest_mode", "round_prefer_floor") if node.opset >= 11 else "floor"
    extrap = F32(node.attr("extrapolation_value", 0.0))
    roi = None if roi is None or np.size(roi) == 0 else np.asarray(roi, F32).reshape(-1)
    filtered = mode == "cubic" or int(node.attr("antialias", 0))
    y = x.astype(F64) if mode != "nearest" else x
    oob_masks = []
    for j, a in enumerate(axes):
        n_in, n_out, s = in_shape[j], out_shape[j], sc[j]
        if n_in == n_out and s == 1 and ctm != "tf_crop_and_resize":
            continue
        crop = (roi[j], roi[len(axes) + j]) if ctm == "tf_crop_and_resize" else None
        c = _source_coords(ctm, n_in, n_out, s, crop)
        if ctm == "tf_crop_and_resize":
            oob_masks.append(_axis_mask((c < 0) | (c > n_in - 1), nd, a))
        if filtered:
            y = _filter_axis(node, y, a, c, n_in, s)
        elif mode == "nearest":
            idx = _nearest(c.astype(F64), nmode).astype(np.int64)
            y = np.take(y, np.clip(idx, 0, n_in - 1), axis=a)
        else:
            y = _linear_axis(y, a, c, n_in)
    if mode != "nearest":
        y = _round_to(y, x.dtype) if filtered else y.astype(x.dtype)
    for m in oob_masks:
        y = np.where(m, extrap.astype(y.dtype), y)
    return y


def _linear_axis(y, a, c, n_in):
    cc = np.clip(c, 0, n_in - 1).astype(F64)
    i0 = np.minimum(np.floor(cc).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = _axis_mask(np.where(i0 == i1, 0.5, cc - i0), y.ndim, a)
    return np.take(y, i0, axis=a) * (1 - w1) + np.take(y, i1, axis=a) * w1


def _round_to(y, dtype):
    if np.dtype(dtype).kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(dtype)
    return y.astype(dtype)


def _cubic(t, a):
    """Keys' cubic convolution kernel with coefficient ``a`` at distances ``t``."""
    t = np.abs(t)
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


def _linear_kernel(t, a=None):
    return np.clip(1 - np.abs(t), 0, 1)


def _filter_axis(node, y, a, c, n_in, s):
    """Cubic, or antialiased linear / cubic, resampling along axis ``a`` at float coordinates ``c`` as onnx's
    reference defines it: taps around each coordinate (a window widened by 1/scale when antialiasing a
    downsample), edge-clamped, weights normalised when antialiasing or excluding outside taps."""
    cubic = node.attr("mode", "nearest") == "cubic"
    antialias = bool(int(node.attr("antialias", 0)))
    radius = 2 if cubic else 1
    ks = min(float(s), 1.0) if antialias else 1.0
    n = 2 - 2 * (int(np.floor(-radius / ks)) + 1)
    x = c.astype(F64)
    base = np.floor(x).astype(np.int64)
    start = np.where(x == base, base - n // 2, base - n // 2 + 1)
    idx = start[:, None] + np.arange(n)[None, :]
    kernel = _cubic if cubic else _linear_kernel
    w = kernel((idx - x[:, None]) * ks, float(node.attr("cubic_coeff_a", -0.75)))
    if int(node.attr("exclude_outside", 0)):
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
    if antialias or int(node.attr("exclude_outside", 0)):
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    taps = np.take(y, np.clip(idx, 0, n_in - 1), axis=a)  # (..., n_out, n, ...)
    shape = [1] * taps.ndim
    shape[a], shape[a + 1] = w.shape
    return (taps * w.reshape(shape)).sum(axis=a + 1)
