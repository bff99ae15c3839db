"""Detection kernels, as onnxruntime computes them. NonMaxSuppression: per batch and class, the boxes scoring
above score_threshold (when given) in descending score order (equal scores: lower index first), each kept unless
its IoU with an already kept box exceeds iou_threshold, at most max_output_boxes_per_class of them. RoiAlign:
bilinear samples on a regular grid in each output bin, averaged, or (mode max) the largest weighted corner."""
from __future__ import annotations

import numpy as np

from ..registry import register


def _corners(boxes, center_point_box):
    """(y1, x1, y2, x2) with y1 <= y2 and x1 <= x2, from corner pairs or [x_center, y_center, width, height]."""
    b = boxes.astype(np.float32)
    if center_point_box:
        xc, yc, w, h = b[:, 0], b[:, 1], b[:, 2] / 2, b[:, 3] / 2
        return yc - h, xc - w, yc + h, xc + w
    return (np.minimum(b[:, 0], b[:, 2]), np.minimum(b[:, 1], b[:, 3]),
            np.maximum(b[:, 0], b[:, 2]), np.maximum(b[:, 1], b[:, 3]))


def _overlaps(c, i, kept, iou_threshold):
    """Whether box ``i`` overlaps any of ``kept`` by more than the threshold (zero-area boxes never do)."""
    y1, x1, y2, x2 = (v[kept] for v in c)
    iy = np.minimum(y2, c[2][i]) - np.maximum(y1, c[0][i])
    ix = np.minimum(x2, c[3][i]) - np.maximum(x1, c[1][i])
    inter = np.where((iy > 0) & (ix > 0), iy * ix, 0)
    area_i = (c[2][i] - c[0][i]) * (c[3][i] - c[1][i])
    areas = (y2 - y1) * (x2 - x1)
    union = areas + area_i - inter
    valid = (inter > 0) & (areas > 0) & (area_i > 0) & (union > 0)
    return bool(np.any(valid & (inter / np.where(union > 0, union, 1) > iou_threshold)))


def _scalar(v, default, kind=float):
    return default if v is None or np.size(v) == 0 else kind(np.asarray(v).reshape(-1)[0])


@register("NonMaxSuppression")
def non_max_suppression(node, boxes, scores, max_out=None, iou_threshold=None, score_threshold=None):
    """int64 (num_selected, 3): batch, class and box index of every kept box."""
    limit = max(_scalar(max_out, 0, int), 0)
    iou = _scalar(iou_threshold, 0.0)
    selected = []
    for b in range(boxes.shape[0]):
        c = _corners(boxes[b], int(node.attr("center_point_box", 0)))
        for k in range(scores.shape[1]):
            s = scores[b, k]
            cand = np.arange(s.size) if score_threshold is None else np.flatnonzero(s > _scalar(score_threshold, 0.0))
            order = cand[np.lexsort((cand, -s[cand].astype(np.float64)))]
            kept: list[int] = []
            for i in order:
                if len(kept) >= limit:
                    break
                if not kept or not _overlaps(c, i, np.asarray(kept), iou):
                    kept.append(int(i))
            selected += [(b, k, i) for i in kept]
    return np.asarray(selected, np.int64).reshape(-1, 3)


def _axis_samples(start, size, bins, grid, limit, dtype):
    """Per bin and sample along one axis: (low, high, fraction, inside) of the bilinear taps."""
    t = dtype.type
    step = t(size) / t(bins)
    pos = t(start) + np.arange(bins, dtype=dtype)[:, None] * step + \
        (np.arange(grid, dtype=dtype)[None, :] + t(0.5)) * step / t(grid)
    inside = (pos >= -1) & (pos <= limit)
    pos = np.maximum(pos, 0)
    low = pos.astype(np.int64)
    edge = low >= limit - 1
    low = np.where(edge, limit - 1, low)
    high = np.where(edge, limit - 1, low + 1)
    frac = np.where(edge, 0, pos - low).astype(dtype)
    return low, high, frac, inside


def _roi(node, x, roi, ph_pw):
    """One region (C, PH, PW) of ``x`` (C, H, W)."""
    half = node.attr("coordinate_transformation_mode", "half_pixel") == "half_pixel"
    scale = x.dtype.type(node.attr("spatial_scale", 1.0))
    x0, y0, x1, y1 = (v * scale - (x.dtype.type(0.5) if half else 0) for v in roi.astype(x.dtype))
    w, h = x1 - x0, y1 - y0
    if not half:
        w, h = max(w, x.dtype.type(1)), max(h, x.dtype.type(1))
    ph, pw = ph_pw
    ratio = int(node.attr("sampling_ratio", 0))
    gh, gw = (ratio, ratio) if ratio > 0 else (int(np.ceil(h / ph)), int(np.ceil(w / pw)))
    yl, yh, ly, yin = (v[:, :, None, None] for v in _axis_samples(y0, h, ph, gh, x.shape[1], x.dtype))
    xl, xh, lx, xin = (v[None, None] for v in _axis_samples(x0, w, pw, gw, x.shape[2], x.dtype))
    one = x.dtype.type(1)
    weights = [(one - ly) * (one - lx), (one - ly) * lx, ly * (one - lx), ly * lx]
    corners = [x[:, yl, xl], x[:, yl, xh], x[:, yh, xl], x[:, yh, xh]]  # (C, PH, GH, PW, GW)
    inside = yin & xin
    terms = [np.where(inside, wk * v, 0) for wk, v in zip(weights, corners)]
    if node.attr("mode", "avg") == "max":
        return np.max(np.maximum.reduce(terms), axis=(2, 4))
    return (terms[0] + terms[1] + terms[2] + terms[3]).sum(axis=(2, 4)) / x.dtype.type(max(gh * gw, 1))


@register("RoiAlign")
def roi_align(node, x, rois, batch_indices):
    out = (int(node.attr("output_height", 1)), int(node.attr("output_width", 1)))
    ys = [_roi(node, x[int(b)], r, out) for r, b in zip(rois, np.asarray(batch_indices).reshape(-1))]
    return np.stack(ys).astype(x.dtype) if ys else np.zeros((0, x.shape[1]) + out, x.dtype)
