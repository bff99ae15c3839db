"""Detection kernels: NonMaxSuppression, as onnxruntime computes it: per batch and class, the boxes scoring above
score_threshold (when given) in descending score order (equal scores: lower index first), each kept unless its
IoU with an already kept box exceeds iou_threshold, at most max_output_boxes_per_class of them."""
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
