"""A literal per-image re-statement of Scene-Graph-Benchmark.pytorch's relation evaluation.

Used as ground truth by ``tests/evaluation/test_sgg_eval.py`` (randomised exact comparison) and
as the baseline of ``benchmarks/bench_evaluator.py``. It deliberately keeps the reference's
structure and cost: ``intersect_2d`` triplet matching, a loop over GT rows with an IoU per row,
``reduce(np.union1d, pred_to_gt[:k])`` per K and per metric, per-predicate hit/count lists in
Python, a full sort of the M x P no-graph-constraint scores. Two documented deviations: the
IoU is computed with numpy in float32 (the reference used torch float32, same operations), and
the no-graph-constraint sort is ``kind='stable'`` (the reference's tie order was unspecified).
"""
from __future__ import annotations

from functools import reduce

import numpy as np


def _np(x):
    if hasattr(x, "detach"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def intersect_2d(x1, x2):
    """[m1, m2] bool: row i of x1 equals row j of x2."""
    return (x1[..., None] == x2.T[None, ...]).all(1)


def argsort_desc_stable(scores):
    flat_order = np.argsort(-scores.ravel(), kind="stable")
    return np.column_stack(np.unravel_index(flat_order, scores.shape))


def bbox_overlaps(boxes1, boxes2):
    b1 = np.asarray(boxes1, dtype=np.float32).reshape(-1, 4)
    b2 = np.asarray(boxes2, dtype=np.float32).reshape(-1, 4)
    area1 = (b1[:, 2] - b1[:, 0] + 1) * (b1[:, 3] - b1[:, 1] + 1)
    area2 = (b2[:, 2] - b2[:, 0] + 1) * (b2[:, 3] - b2[:, 1] + 1)
    lt = np.maximum(b1[:, None, :2], b2[:, :2])
    rb = np.minimum(b1[:, None, 2:], b2[:, 2:])
    wh = np.clip(rb - lt + 1, 0, None)
    inter = wh[:, :, 0] * wh[:, :, 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return inter / (area1[:, None] + area2 - inter)


def triplet(relations, classes, boxes):
    s, o, p = relations[:, 0], relations[:, 1], relations[:, 2]
    return (np.column_stack((classes[s], p, classes[o])),
            np.column_stack((boxes[s], boxes[o])))


def compute_pred_matches(gt_triplets, pred_triplets, gt_boxes, pred_boxes, iou_thres):
    keeps = intersect_2d(gt_triplets, pred_triplets)
    gt_has_match = keeps.any(1)
    pred_to_gt = [[] for _ in range(pred_boxes.shape[0])]
    for gt_ind, gt_box, keep_inds in zip(np.where(gt_has_match)[0], gt_boxes[gt_has_match],
                                         keeps[gt_has_match]):
        boxes = pred_boxes[keep_inds]
        sub_iou = bbox_overlaps(gt_box[None, :4], boxes[:, :4])[0]
        obj_iou = bbox_overlaps(gt_box[None, 4:], boxes[:, 4:])[0]
        inds = (sub_iou >= iou_thres) & (obj_iou >= iou_thres)
        for i in np.where(keep_inds)[0][inds]:
            pred_to_gt[i].append(int(gt_ind))
    return pred_to_gt


def _union_len(lists):
    return len(reduce(np.union1d, lists))


def _evaluate_one_image(gt, pred, mode, res, zeroshot, iou_thres, ks, num_rel):
    gt_rels = _np(gt["relations"]).astype(np.int64).reshape(-1, 3)
    if len(gt_rels) == 0:
        return
    gt_boxes = _np(gt["boxes"]).reshape(-1, 4)
    gt_classes = _np(gt["labels"]).astype(np.int64)
    pred_rel_inds = _np(pred["rel_pairs"]).astype(np.int64).reshape(-1, 2)
    rel_scores = _np(pred["rel_scores"])
    pred_boxes = _np(pred["boxes"]).reshape(-1, 4)
    pred_classes = _np(pred["labels"]).astype(np.int64)
    obj_scores = _np(pred["scores"])

    if mode != "sgdet":
        pred_pair_idx = pred_rel_inds[:, 0] * 1024 + pred_rel_inds[:, 1]
        gt_pair_idx = gt_rels[:, 0] * 1024 + gt_rels[:, 1]
        pred_pair_in_gt = (pred_pair_idx[:, None] == gt_pair_idx[None, :]).sum(-1) > 0
    zeroshot_idx = None
    if zeroshot is not None:
        zs_triplets = np.column_stack((gt_classes[gt_rels[:, 0]], gt_classes[gt_rels[:, 1]],
                                       gt_rels[:, 2]))
        zeroshot_idx = np.where(intersect_2d(zs_triplets, zeroshot).sum(-1) > 0)[0].tolist()
    if mode == "predcls":
        pred_boxes = gt_boxes
        pred_classes = gt_classes
        obj_scores = np.ones(gt_classes.shape[0])
    if pred_rel_inds.shape[0] == 0:
        return

    # graph constraint
    pred_rels = np.column_stack((pred_rel_inds, 1 + rel_scores[:, 1:].argmax(1)))
    gt_triplets, gt_triplet_boxes = triplet(gt_rels, gt_classes, gt_boxes)
    pred_triplets, pred_triplet_boxes = triplet(pred_rels, pred_classes, pred_boxes)
    pred_to_gt = compute_pred_matches(gt_triplets, pred_triplets, gt_triplet_boxes,
                                      pred_triplet_boxes, iou_thres)
    for k in ks:
        res["R"][k].append(float(_union_len(pred_to_gt[:k])) / float(gt_rels.shape[0]))

    # no graph constraint
    obj_scores_per_rel = obj_scores[pred_rel_inds].prod(1)
    nogc_overall_scores = obj_scores_per_rel[:, None] * rel_scores[:, 1:]
    nogc_score_inds = argsort_desc_stable(nogc_overall_scores)[:max(100, max(ks))]
    nogc_pred_rels = np.column_stack((pred_rel_inds[nogc_score_inds[:, 0]],
                                      nogc_score_inds[:, 1] + 1))
    nogc_triplets, nogc_triplet_boxes = triplet(nogc_pred_rels, pred_classes, pred_boxes)
    nogc_pred_to_gt = compute_pred_matches(gt_triplets, nogc_triplets, gt_triplet_boxes,
                                           nogc_triplet_boxes, iou_thres)
    for k in ks:
        res["ngR"][k].append(float(_union_len(nogc_pred_to_gt[:k])) / float(gt_rels.shape[0]))

    # pair accuracy
    if mode != "sgdet":
        for k in ks:
            gt_pair_pred_to_gt = [p for p, flag in zip(pred_to_gt, pred_pair_in_gt) if flag]
            if len(gt_pair_pred_to_gt) > 0:
                gt_pair_match = reduce(np.union1d, gt_pair_pred_to_gt[:k])
            else:
                gt_pair_match = []
            res["A_hit"][k].append(float(len(gt_pair_match)))
            res["A_count"][k].append(float(gt_rels.shape[0]))

    # mean recall (graph constraint and no graph constraint)
    for name, p2g in (("mR", pred_to_gt), ("ngmR", nogc_pred_to_gt)):
        for k in ks:
            match = reduce(np.union1d, p2g[:k])
            recall_hit = [0] * num_rel
            recall_count = [0] * num_rel
            for idx in range(gt_rels.shape[0]):
                local_label = gt_rels[idx, 2]
                recall_count[int(local_label)] += 1
                recall_count[0] += 1
            for idx in range(len(match)):
                local_label = gt_rels[int(match[idx]), 2]
                recall_hit[int(local_label)] += 1
                recall_hit[0] += 1
            for n in range(num_rel):
                if recall_count[n] > 0:
                    res[name + "_collect"][k][n].append(float(recall_hit[n] / recall_count[n]))

    # zero shot (graph constraint and no graph constraint)
    if zeroshot is not None:
        for name, p2g in (("zR", pred_to_gt), ("ngzR", nogc_pred_to_gt)):
            for k in ks:
                match = reduce(np.union1d, p2g[:k])
                if len(zeroshot_idx) > 0:
                    match_list = match.tolist() if not isinstance(match, (list, tuple)) else match
                    zeroshot_match = (len(zeroshot_idx) + len(match_list)
                                      - len(set(zeroshot_idx + match_list)))
                    res[name][k].append(float(zeroshot_match) / float(len(zeroshot_idx)))
    res["num_images"] += 1


def reference_evaluate(groundtruths, predictions, mode, num_predicates, zeroshot_triplets=None,
                       iou_threshold=0.5, ks=(20, 50, 100)):
    """Same keys as ``sgg.evaluation.evaluate_relations`` (minus ``predicate_names``)."""
    ks = tuple(ks)
    num_rel = num_predicates + 1
    zeroshot = None if zeroshot_triplets is None else _np(zeroshot_triplets).astype(np.int64).reshape(-1, 3)
    res = {name: {k: [] for k in ks} for name in ("R", "ngR", "zR", "ngzR", "A_hit", "A_count")}
    for name in ("mR", "ngmR"):
        res[name + "_collect"] = {k: [[] for _ in range(num_rel)] for k in ks}
    res["num_images"] = 0
    for gt, pred in zip(groundtruths, predictions):
        _evaluate_one_image(gt, pred, mode, res, zeroshot, iou_threshold, ks, num_rel)

    def mean(v):
        return float(np.mean(v)) if len(v) else float("nan")

    out = {"mode": mode, "num_images": res["num_images"]}
    for name in ("R", "ngR") + (("zR", "ngzR") if zeroshot is not None else ()):
        for k in ks:
            out[f"{name}@{k}"] = mean(res[name][k])
    for name, per_name in (("mR", "per_predicate_R"), ("ngmR", "ng_per_predicate_R")):
        for k in ks:
            sum_recall = 0
            per_pred = []
            for idx in range(num_rel - 1):
                collect = res[name + "_collect"][k][idx + 1]
                tmp_recall = 0.0 if len(collect) == 0 else np.mean(collect)
                per_pred.append(float(tmp_recall))
                sum_recall += tmp_recall
            out[f"{name}@{k}"] = float(sum_recall / float(num_rel - 1))
            out[f"{per_name}@{k}"] = per_pred
    if mode != "sgdet":
        for k in ks:
            if res["A_hit"][k]:
                out[f"A@{k}"] = float(np.mean(res["A_hit"][k]) / np.mean(res["A_count"][k]))
            else:
                out[f"A@{k}"] = float("nan")
    for k in ks:
        r, mr = out[f"R@{k}"], out[f"mR@{k}"]
        if np.isnan(r) or np.isnan(mr):
            out[f"F@{k}"] = float("nan")
        else:
            out[f"F@{k}"] = 0.0 if r + mr == 0 else 2.0 * r * mr / (r + mr)
    return out
