"""The accuracy gate's per-kind metrics (converters/kinds.py says which kind an output is).

Ties and saturated values never count as disagreement: a top-1 differs only when the candidate's pick is
clearly below the reference's best *in the reference* (more than ``TIE_RTOL`` of the row's range), so two
classes equal in the reference (saturated at 1.0, a flat map row) agree whichever one is picked. A mask
pixel within ``MASK_MARGIN`` of the threshold and a box scored within ``BOX_MARGIN`` of the confidence
threshold count neither way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TIE_RTOL = 1e-3  # of the row's range (max - min): closer than this to the best is a tie, not a disagreement
MASK_MARGIN = 0.01  # of the map's range: pixels this close to the threshold are not counted in the IoU
MIN_MASK_IOU = 0.9  # default gate for a map's thresholded-mask IoU
BOX_CONF = 0.25  # a decoded box counts from this class score
BOX_MARGIN = 0.05  # boxes scored within this of BOX_CONF (in the reference) count neither way
BOX_IOU = 0.5  # a candidate box matches a reference box of the same class from this IoU
MIN_BOX_MATCH = 0.9  # default gate for boxes matched / (matched + missed + extra)
_NMS_IOU = 0.45
_MAX_BOXES = 300


def top1(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """Top-1 over the last axis, per row (per step for a sequence); near-ties agree."""
    classes = ref.shape[-1]
    r, g = ref.reshape(-1, classes), got.reshape(-1, classes)
    rows = np.arange(r.shape[0])
    ir, ig = r.argmax(1), g.argmax(1)
    best, picked = r[rows, ir], r[rows, ig]
    tol = TIE_RTOL * (r.max(1) - r.min(1)) + 1e-12
    agree = picked >= best - tol
    return {"top1_agreement": float(agree.mean()) if agree.size else 1.0,
            "top1_ties": int(np.sum(agree & (ir != ig))), "top1_rows": int(agree.size)}


def mask_iou(ref: np.ndarray, got: np.ndarray) -> dict[str, Any]:
    """IoU of the thresholded masks: 0.5 for a map of probabilities in [0, 1], else 0 (logits, signed maps)."""
    lo, hi = float(ref.min()) if ref.size else 0.0, float(ref.max()) if ref.size else 0.0
    threshold = 0.5 if lo >= 0.0 and hi <= 1.0 else 0.0
    margin = MASK_MARGIN * max(hi - lo, 1e-12)
    counted = np.abs(ref - threshold) > margin
    a, b = (ref > threshold) & counted, (got > threshold) & counted
    union = int(np.sum(a | b))
    iou = float(np.sum(a & b) / union) if union else 1.0
    return {"mask_iou": iou, "mask_threshold": threshold, "mask_pixels": int(np.sum(a)),
            "mask_uncounted": int(ref.size - np.sum(counted))}


def _decode(head: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[A, 4+C] -> (xyxy boxes, score, class) of the anchors scoring >= BOX_CONF - BOX_MARGIN, after NMS."""
    scores = head[:, 4:]
    cls = scores.argmax(1)
    conf = scores[np.arange(len(cls)), cls]
    keep = np.flatnonzero(conf >= BOX_CONF - BOX_MARGIN)
    keep = keep[np.argsort(-conf[keep], kind="stable")][:_MAX_BOXES * 10]
    xy, wh = head[keep, :2], head[keep, 2:4]
    boxes = np.concatenate([xy - wh / 2, xy + wh / 2], axis=1)
    chosen: list[int] = []
    for i in range(len(keep)):
        if len(chosen) >= _MAX_BOXES:
            break
        same = [j for j in chosen if cls[keep[j]] == cls[keep[i]]]
        if not same or _iou(boxes[i], boxes[same]).max() < _NMS_IOU:
            chosen.append(i)
    idx = keep[chosen]
    return boxes[chosen], conf[idx], cls[idx]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    x1, y1 = np.maximum(box[0], boxes[:, 0]), np.maximum(box[1], boxes[:, 1])
    x2, y2 = np.minimum(box[2], boxes[:, 2]), np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)


def boxes_match(ref: np.ndarray, got: np.ndarray, axis: int) -> dict[str, Any]:
    """Decode both heads ([N, 4+C, A] when ``axis`` is 1, [N, A, 4+C] when 2), match boxes per sample."""
    if axis == 1:
        ref, got = np.swapaxes(ref, 1, 2), np.swapaxes(got, 1, 2)
    matched = missed = extra = 0
    for r, g in zip(ref, got):
        rb, rs, rc = _decode(r)
        gb, gs, gc = _decode(g)
        used = np.zeros(len(gb), bool)
        for i in range(len(rb)):
            ok = np.flatnonzero((gc == rc[i]) & ~used)
            hit = ok[_iou(rb[i], gb[ok]) >= BOX_IOU] if len(ok) else ok
            if len(hit):
                used[hit[0]] = True
                matched += 1
            elif rs[i] >= BOX_CONF + BOX_MARGIN:
                missed += 1
        extra += int(np.sum(~used & (gs >= BOX_CONF + BOX_MARGIN)))
    total = matched + missed + extra
    return {"box_match": float(matched / total) if total else 1.0, "boxes_matched": matched, "boxes_missed": missed,
            "boxes_extra": extra, "boxes_layout": "[N, 4+C, anchors]" if axis == 1 else "[N, anchors, 4+C]"}


def sample_cosine(ref: np.ndarray, got: np.ndarray) -> float:
    """The lowest cosine over samples (axis 0)."""
    r, g = ref.reshape(ref.shape[0], -1), got.reshape(got.shape[0], -1)
    nr, ng = np.linalg.norm(r, axis=1), np.linalg.norm(g, axis=1)
    both_zero = (nr == 0) & (ng == 0)
    cos = np.where(both_zero, 1.0, np.sum(r * g, axis=1) / np.where(nr * ng > 0, nr * ng, np.inf))
    return float(cos.min()) if cos.size else 1.0
