"""Box AP of the object detections, with pycocotools, as Scene-Graph-Benchmark.pytorch does it.

SGB builds a faux COCO dataset from the VG ground truth and runs ``COCOeval(..., 'bbox')``:

* GT annotations: ``bbox = [x1, y1, x2 - x1 + 1, y2 - y1 + 1]`` and ``area = (x2 - x1 + 1) *
  (y2 - y1 + 1)`` (Python floats of the float32 boxes), ``iscrowd = 0``, image ids ``0..n-1``,
  one category per non-background class;
* detections: the same "+1" xywh, computed in float32 (``BoxList.convert('xywh')``), with their
  scores and labels; PredCls uses the GT labels and scores of 1;
* the reported "mAp" is ``stats[1]`` (AP at IoU 0.5); we also return ``stats[0]`` (COCO AP).

A quirk kept by default for identical numbers: SGB numbers the GT annotations from 0, and
pycocotools records a match as the matched annotation's id, so a detection matched to annotation
0 counts as a false positive and that GT box can never be found: SGB's AP loses the first GT box
of the whole test set. ``reference_ids=True`` (default) reproduces that; ``False`` numbers from 1
(the correct value). On VG150 (~26k test images) the two differ by far less than the printed
1e-4; on tiny sets the difference is visible (perfect predictions score below 1.0).
"""
from __future__ import annotations

import contextlib
import io
import logging
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

from .sgg_eval import ImageRecord, check_mode, check_not_empty, get_field, to_numpy

logger = logging.getLogger(__name__)

BACKGROUND_NAMES = ("__background__", "background")


def _categories(class_names: Union[Sequence[str], int]) -> List[Dict[str, Any]]:
    """COCO categories: every non-background class. An int is the number of classes including
    background (SGB's ``NUM_CLASSES``, 151 on VG150): ids ``1..n-1``."""
    if isinstance(class_names, (int, np.integer)):
        return [{"supercategory": "object", "id": i, "name": str(i)} for i in range(1, int(class_names))]
    return [{"supercategory": "object", "id": i, "name": str(name)}
            for i, name in enumerate(class_names) if str(name) not in BACKGROUND_NAMES]


def coco_box_ap(gt_boxes: Sequence[np.ndarray], gt_labels: Sequence[np.ndarray],
                det_boxes: Sequence[np.ndarray], det_labels: Sequence[np.ndarray],
                det_scores: Sequence[Optional[np.ndarray]],
                class_names: Union[Sequence[str], int], reference_ids: bool = True) -> Dict[str, float]:
    """COCO bbox AP of per-image xyxy boxes; see the module docstring for the conventions.

    ``det_scores[i] = None`` means scores of 1 (PredCls). Returns ``{"AP50": stats[1],
    "AP": stats[0]}`` as fractions; 0.0 when there is no detection at all, NaN without GT boxes
    (in >= 1 image); no image at all is a ValueError.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    num_images = len(gt_boxes)
    check_not_empty(num_images, "box AP")
    first_id = 0 if reference_ids else 1
    anns = []
    for image_id in range(num_images):
        boxes = np.asarray(gt_boxes[image_id], dtype=np.float32).reshape(-1, 4).tolist()
        labels = np.asarray(gt_labels[image_id]).reshape(-1).tolist()
        for cls, box in zip(labels, boxes):
            anns.append({
                "area": (box[3] - box[1] + 1) * (box[2] - box[0] + 1),
                "bbox": [box[0], box[1], box[2] - box[0] + 1, box[3] - box[1] + 1],
                "category_id": int(cls),
                "id": len(anns) + first_id,  # see the module docstring
                "image_id": image_id,
                "iscrowd": 0,
            })
    if not anns:
        logger.warning("box AP: no ground-truth boxes; AP is undefined (NaN)")
        return {"AP50": float("nan"), "AP": float("nan")}

    rows = []
    for image_id in range(num_images):
        boxes = np.asarray(det_boxes[image_id], dtype=np.float32).reshape(-1, 4)
        if len(boxes) == 0:
            continue
        one = np.float32(1)
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2] + one], axis=1)
        labels = np.asarray(det_labels[image_id]).reshape(-1)
        scores = det_scores[image_id]
        scores = np.ones(len(boxes)) if scores is None else np.asarray(scores).reshape(-1)
        if len(labels) != len(boxes) or len(scores) != len(boxes):
            raise ValueError(f"box AP: image {image_id} has {len(boxes)} boxes, {len(labels)} labels "
                             f"and {len(scores)} scores")
        rows.append(np.column_stack((np.full(len(boxes), image_id), xywh, scores, labels)))
    if not rows:
        logger.warning("box AP: no detections; AP = 0")
        return {"AP50": 0.0, "AP": 0.0}

    log = io.StringIO()
    with contextlib.redirect_stdout(log):
        coco_gt = COCO()
        coco_gt.dataset = {
            "info": {"description": "use coco script for vg detection evaluation"},
            "images": [{"id": i} for i in range(num_images)],
            "categories": _categories(class_names),
            "annotations": anns,
        }
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(np.concatenate(rows, 0))
        coco_eval = COCOeval(coco_gt, coco_dt, "bbox")
        coco_eval.params.imgIds = list(range(num_images))
        coco_eval.evaluate()
        coco_eval.accumulate()
        coco_eval.summarize()
    logger.debug("pycocotools output:\n%s", log.getvalue())
    return {"AP50": float(coco_eval.stats[1]), "AP": float(coco_eval.stats[0])}


def evaluate_detection(groundtruths: Sequence[Any], predictions: Sequence[Any],
                       class_names: Union[Sequence[str], int], mode: str,
                       reference_ids: bool = True) -> Dict[str, float]:
    """Box AP of per-image predictions against GT (lists in the same order).

    GT: ``boxes [G,4]`` xyxy, ``labels [G]``. Prediction: ``boxes [N,4]``, ``labels [N]``,
    ``scores [N]`` (numpy or torch). ``class_names``: object class names with index 0 the
    background (or the number of classes including background). In PredCls the labels are the GT
    labels and the scores 1 (as SGB), so N must equal G there.
    ``reference_ids``: keep SGB's first-annotation quirk (module docstring).
    Returns ``{"AP50": ..., "AP": ...}`` (fractions).
    """
    check_mode(mode)
    if len(groundtruths) != len(predictions):
        raise ValueError(f"{len(groundtruths)} ground truths but {len(predictions)} predictions")
    gt_boxes = [to_numpy(get_field(g, "boxes")) for g in groundtruths]
    gt_labels = [to_numpy(get_field(g, "labels")) for g in groundtruths]
    det_boxes = [to_numpy(get_field(p, "boxes")) for p in predictions]
    if mode == "predcls":
        det_labels = gt_labels
        det_scores: List[Optional[np.ndarray]] = [None] * len(predictions)
    else:
        det_labels = [to_numpy(get_field(p, "labels")) for p in predictions]
        det_scores = [to_numpy(get_field(p, "scores")) for p in predictions]
    return coco_box_ap(gt_boxes, gt_labels, det_boxes, det_labels, det_scores, class_names,
                       reference_ids=reference_ids)


def records_box_ap(records: Sequence[ImageRecord], mode: str,
                   class_names: Union[Sequence[str], int]) -> Dict[str, float]:
    """Box AP (``AP50``, ``AP``) of the predicted objects kept in the evaluator's records
    (PredCls: the GT labels, unscored)."""
    predcls = mode == "predcls"
    return coco_box_ap(
        [r.gt_boxes for r in records], [r.gt_labels for r in records],
        [r.boxes for r in records],
        [r.gt_labels if predcls else r.labels for r in records],
        [None if predcls else r.scores for r in records],
        class_names)
