"""IoU of numpy xyxy boxes in maskrcnn_benchmark's "+1 pixel" convention, float32.

The data layer (SGB's overlap filter) and the evaluator (GT matching) both need SGB's exact
``boxlist_iou`` numbers on numpy arrays; this module is their one copy. Numpy only: it imports no
torch (the torch box ops are in :mod:`sgg.structures.boxes`).
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["box_iou_plus1", "pairwise_iou_plus1"]


def box_iou_plus1(boxes1: Any, boxes2: Any) -> np.ndarray:
    """IoU matrix ``[N1, N2]`` (float32) with maskrcnn_benchmark's "+1 pixel" convention.

    Same operations, order and dtype as ``boxlist_iou`` (which SGB's ``bbox_overlaps`` calls on
    float32 ``BoxList``s): ``wh = (min(x2,y2) - max(x1,y1) + 1).clip(0)``, ``inter = w * h``,
    ``area = (x2 - x1 + 1) * (y2 - y1 + 1)``, ``iou = inter / (area1 + area2 - inter)``.
    Degenerate boxes of area 0 give NaN (never >= a threshold), as in the reference.
    """
    b1 = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4)
    one, zero = np.float32(1), np.float32(0)
    area1 = (b1[:, 2] - b1[:, 0] + one) * (b1[:, 3] - b1[:, 1] + one)
    area2 = (b2[:, 2] - b2[:, 0] + one) * (b2[:, 3] - b2[:, 1] + one)
    lt = np.maximum(b1[:, None, :2], b2[None, :, :2])
    rb = np.minimum(b1[:, None, 2:], b2[None, :, 2:])
    wh = np.maximum(rb - lt + one, zero)
    inter = wh[..., 0] * wh[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area1[:, None] + area2[None, :] - inter)


def pairwise_iou_plus1(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of xyxy boxes ``a[N,4]`` vs ``b[N,4]`` row by row, in the ``+1`` pixel convention.

    float32 like SGB's ``boxlist_iou`` (inter ``(min x2 - max x1 + 1).clamp(0) * ...``, area
    ``(x2 - x1 + 1) * (y2 - y1 + 1)``). Returns ``float32[N]``.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    lt = np.maximum(a[:, :2], b[:, :2])
    rb = np.minimum(a[:, 2:], b[:, 2:])
    wh = np.clip(rb - lt + 1, 0, None)
    inter = wh[:, 0] * wh[:, 1]
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (inter / (area_a + area_b - inter)).astype(np.float32)
