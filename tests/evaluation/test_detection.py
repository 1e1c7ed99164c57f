"""Box AP through pycocotools with SGB's "+1" xywh conversion."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from sgg.evaluation import evaluate_detection

CLASSES = ["__background__", "person", "horse"]


def _gt(boxes, labels):
    return {"boxes": np.asarray(boxes, float), "labels": np.asarray(labels),
            "relations": np.zeros((0, 3), int)}


def _pred(boxes, labels, scores):
    return {"boxes": np.asarray(boxes, np.float32), "labels": np.asarray(labels),
            "scores": np.asarray(scores, np.float32)}


def test_perfect_predictions_give_ap_one():
    gts = [_gt([[0, 0, 9, 9], [20, 20, 49, 39]], [1, 2]), _gt([[5, 5, 30, 30]], [1])]
    preds = [_pred(g["boxes"], g["labels"], [0.9, 0.8][: len(g["labels"])]) for g in gts]
    ap = evaluate_detection(gts, preds, CLASSES, "sgdet", reference_ids=False)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP"] == pytest.approx(1.0)


def test_one_of_two_boxes_missed():
    # one class, 2 GT boxes, one exact detection: precision 1 up to recall 0.5, then nothing.
    # COCO interpolates at 101 recall points 0, .01, ..., 1: the 51 points <= .5 have precision 1
    # -> AP = 51 / 101 at every IoU threshold
    gts = [_gt([[0, 0, 9, 9], [50, 50, 79, 79]], [1, 1])]
    preds = [_pred([[0, 0, 9, 9]], [1], [0.7])]
    ap = evaluate_detection(gts, preds, CLASSES, "sgdet", reference_ids=False)
    assert ap["AP50"] == pytest.approx(51 / 101) and ap["AP"] == pytest.approx(51 / 101)


def test_plus_one_width_convention():
    # GT [0,0,9,9] is 10x10, detection [0,0,4,9] is 5x10 inside it -> IoU exactly 0.5 with the +1
    # widths (36/81 without): a match at IoU 0.5 only -> AP50 = 1, AP (.5:.95) = 1/10
    ap = evaluate_detection([_gt([[0, 0, 9, 9]], [1])], [_pred([[0, 0, 4, 9]], [1], [1.0])],
                            CLASSES, "sgcls", reference_ids=False)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP"] == pytest.approx(0.1)


def test_predcls_uses_gt_labels_and_unit_scores():
    gts = [_gt([[0, 0, 9, 9], [20, 20, 49, 39]], [1, 2])]
    preds = [{"boxes": torch.tensor([[0, 0, 9, 9], [20, 20, 49, 39]], dtype=torch.float32),
              "labels": torch.tensor([2, 1]), "scores": torch.tensor([0.1, 0.2])}]
    ap = evaluate_detection(gts, preds, CLASSES, "predcls", reference_ids=False)
    assert ap["AP50"] == pytest.approx(1.0) and ap["AP"] == pytest.approx(1.0)
    assert evaluate_detection(gts, preds, CLASSES, "sgcls", reference_ids=False)["AP50"] == 0.0


def test_empty_predictions_and_quiet_stdout(capsys, caplog):
    gts = [_gt([[0, 0, 9, 9]], [1])]
    preds = [_pred(np.zeros((0, 4)), np.zeros(0, int), np.zeros(0))]
    assert evaluate_detection(gts, preds, CLASSES, "sgdet", reference_ids=False) == {"AP50": 0.0, "AP": 0.0}
    with caplog.at_level(logging.DEBUG, logger="sgg.evaluation.detection"):
        evaluate_detection(gts, [_pred([[0, 0, 9, 9]], [1], [1])], 3, "sgdet")  # int class count
    assert capsys.readouterr().out == ""  # pycocotools' prints are captured...
    assert "Average Precision" in caplog.text  # ...and logged at debug level


def test_reference_first_annotation_quirk():
    # SGB numbers GT annotations from 0; pycocotools stores a match as the GT id, so the match to
    # annotation 0 (person in image 0) reads as a false positive and that GT is never found.
    # person: 2 GT, detections (both 0.9, image order) FP then TP -> precision 1/2 up to recall
    # 1/2 -> AP = 0.5 * 51/101; horse: perfect -> 1. Mean over the 2 classes:
    gts = [_gt([[0, 0, 9, 9], [20, 20, 49, 39]], [1, 2]), _gt([[5, 5, 30, 30]], [1])]
    preds = [_pred(g["boxes"], g["labels"], [0.9, 0.8][: len(g["labels"])]) for g in gts]
    expected = (0.5 * 51 / 101 + 1.0) / 2
    ap = evaluate_detection(gts, preds, CLASSES, "sgdet")
    assert ap["AP50"] == pytest.approx(expected) and ap["AP"] == pytest.approx(expected)
    assert evaluate_detection(gts, preds, CLASSES, "sgdet", reference_ids=False)["AP50"] == pytest.approx(1.0)
