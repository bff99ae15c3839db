"""Resize / Upsample: nearest and linear modes with every ONNX coordinate transformation, in float32 coordinates
like onnxruntime."""
from __future__ import annotations

import numpy as np

from ..registry import register
from .common import F32, F64



_COORD_MODES = ("half_pixel", "asymmetric", "align_corners", "pytorch_half_pixel", "tf_crop_and_resize",
                "half_pixel_symmetric", "tf_half_pixel_for_nn")


def _check_resize(node):
    mode = node.attr("mode", "nearest")
    if mode not in ("nearest", "linear"):
        return f"Resize mode {mode!r} is not supported (nearest and linear are)"
    ctm = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    if ctm not in _COORD_MODES:
        return f"coordinate_transformation_mode {ctm!r} is not supported"
    if int(node.attr("antialias", 0)):
        return "antialias=1 is not supported"
    if node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        return "keep_aspect_ratio_policy other than 'stretch' is not supported"
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


@register("Resize", check=_check_resize)
@register("Upsample", check=_check_resize)
def resize(node, x, roi=None, scales=None, sizes=None):
    nd = x.ndim
    if node.op_type == "Upsample" or node.opset < 11:  # (X, scales)
        scales, roi, sizes = (node.attr("scales") if roi is None else roi), None, None
    axes = node.attr("axes")
    axes = list(range(nd)) if axes is None else [int(a) % nd for a in axes]
    in_shape = [x.shape[a] for a in axes]
    if sizes is not None and np.size(sizes):
        out_shape = [int(s) for s in np.asarray(sizes).reshape(-1)]
        sc = [F32(o) / F32(i) for o, i in zip(out_shape, in_shape)]
    else:
        sc = [F32(s) for s in np.asarray(scales, F32).reshape(-1)]
        out_shape = [int(np.floor(F32(i) * s)) for i, s in zip(in_shape, sc)]
    mode = node.attr("mode", "nearest")
    ctm = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    nmode = node.attr("nearest_mode", "round_prefer_floor") if node.opset >= 11 else "floor"
    extrap = F32(node.attr("extrapolation_value", 0.0))
    roi = None if roi is None or np.size(roi) == 0 else np.asarray(roi, F32).reshape(-1)
    y = x.astype(F64) if mode == "linear" else x
    oob_masks = []
    for j, a in enumerate(axes):
        n_in, n_out, s = in_shape[j], out_shape[j], sc[j]
        if n_in == n_out and s == 1 and ctm != "tf_crop_and_resize":
            continue
        crop = (roi[a], roi[nd + a]) if ctm == "tf_crop_and_resize" else None
        c = _source_coords(ctm, n_in, n_out, s, crop)
        if ctm == "tf_crop_and_resize":
            oob = (c < 0) | (c > n_in - 1)
            shape = [1] * nd
            shape[a] = -1
            oob_masks.append(oob.reshape(shape))
        if mode == "nearest":
            idx = _nearest(c.astype(F64), nmode).astype(np.int64)
            idx = np.clip(idx, 0, n_in - 1)
            y = np.take(y, idx, axis=a)
        else:
            cc = np.clip(c, 0, n_in - 1).astype(F64)
            i0 = np.minimum(np.floor(cc).astype(np.int64), n_in - 1)
            i1 = np.minimum(i0 + 1, n_in - 1)
            w1 = cc - i0
            shape = [1] * nd
            shape[a] = -1
            w1 = np.where(i0 == i1, 0.5, w1).reshape(shape)
            y = np.take(y, i0, axis=a) * (1 - w1) + np.take(y, i1, axis=a) * w1
    if mode == "linear":
        y = y.astype(x.dtype)
    for m in oob_masks:
        y = np.where(m, extrap.astype(y.dtype), y)
    return y
