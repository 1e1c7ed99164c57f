"""Open Images metrics (PySGG's oi_evaluation / ap_eval_rel): hand-computed cases for each rule,
then an exact (==) comparison with a slow per-candidate / per-detection Python loop written from
specs/datasets.md ("OI evaluation") on seeded random images."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from sgg.evaluation import evaluate_relations
from sgg.evaluation import oi_eval as oi_module
from sgg.evaluation.oi_eval import (OIEvaluator, evaluate_oi_relations, format_oi_report,
                                    make_oi_record)

EPS = 1e-12  # PySGG's denominators: hits / (npos + 1e-12)


def rec(hits, rows):
    """PySGG's recall value: float(hits) / (float(rows) + 1e-12)."""
    return float(hits) / (float(rows) + EPS)


def B(*rows):
    return np.array(rows, dtype=np.float32)


def pred(boxes, labels, scores, pairs, rel_scores):
    return {"boxes": B(*boxes), "labels": np.array(labels), "scores": np.array(scores, np.float32),
            "rel_pairs": np.array(pairs, dtype=np.int64).reshape(-1, 2),
            "rel_scores": np.array(rel_scores, dtype=np.float32)}


# --------------------------------------------------------------------------------------------
# (1) one image, by hand
# --------------------------------------------------------------------------------------------
def image_one():
    """GT: objects 0 [0,0,9,9] l1, 1 [20,20,29,29] l2, 2 [60,0,69,9] l2; rows (0,1,p1) and
    (0,2,p1). P = 2.

    Predicted objects: 0, 1 as GT; 2 = GT box 1 labelled 3 (wrong label); 3 = GT box 2.
    Pairs (scores of the objects all 1):
      A (0,1) [bg, .9, .1] -> A.p1 .9 hits row 0;   A.p2 .1 (no p2 row)
      B (0,2) [bg, .8, .2] -> B.p1 .8: object label 3 != 2: no row (labels differ)
      C (0,1) [bg, .7, .3] -> C.p1 .7: a duplicate of A.p1 (hits row 0 again)
    Candidates by score: A.p1 .9, B.p1 .8, C.p1 .7, C.p2 .3, B.p2 .2, A.p2 .1.
    Row 1 (0,2) is never predicted.
    """
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29], [60, 0, 69, 9]), "labels": np.array([1, 2, 2]),
          "relations": np.array([[0, 1, 1], [0, 2, 1]])}
    p = pred([[0, 0, 9, 9], [20, 20, 29, 29], [20, 20, 29, 29], [60, 0, 69, 9]], [1, 2, 3, 2],
             [1, 1, 1, 1], [[0, 1], [0, 2], [0, 1]],
             [[0, .9, .1], [0, .8, .2], [0, .7, .3]])
    return gt, p


def test_one_image_by_hand():
    gt, p = image_one()
    m = evaluate_oi_relations([gt], [p], "sgdet", num_predicates=2)
    # R@50: rows hit by the first 50 candidates = {row 0} (hit by A.p1 and C.p1) -> 1 of 2 rows
    assert m["R@50"] == rec(1, 2)
    assert m["num_gt_rels"] == 2 and m["npos"] == [2, 0] and m["num_images"] == 1
    # AP p1 (rel and phr alike): A.p1 TP (row 0), B.p1 FP (labels), C.p1 FP (row 0 taken)
    #   cum tp 1,1,1  fp 0,1,2 -> rec r,r,r (r = 1/(2+1e-12)), prec 1, 1/2, 1/3
    #   envelope over [0, r, r, r, 1]: 1 at r, 0 at 1 -> AP = r * 1
    assert m["AP_rel"] == [rec(1, 2), 0.0]
    assert m["AP_phr"] == [rec(1, 2), 0.0]  # the union boxes of A.p1 equal the GT's
    # p2: three FPs (no p2 row anywhere) -> 0
    assert m["mAP_rel"] == (rec(1, 2) + 0.0) / 2 and m["mAP_phr"] == m["mAP_rel"]
    assert m["wmAP_rel"] == rec(1, 2) * 2.0 / 2.0 and m["wmAP_phr"] == m["wmAP_rel"]
    # (7) the weighted final score and the plain one
    assert m["score_wtd"] == 0.4 * m["wmAP_rel"] + 0.2 * m["R@50"] + 0.4 * m["wmAP_phr"]
    assert m["score_wtd"] == pytest.approx(0.5)
    assert m["final_score"] == 0.4 * m["mAP_rel"] + 0.2 * m["R@50"] + 0.4 * m["mAP_phr"]
    assert m["final_score"] == pytest.approx(0.3)


def test_candidates_of_the_hand_case():
    gt, p = image_one()
    r = make_oi_record(gt, p, "sgdet", 2)
    assert r.predicates.tolist() == [1, 1, 1, 2, 2, 2]
    assert r.pairs.tolist() == [[0, 1], [0, 2], [0, 1], [0, 1], [0, 2], [0, 1]]
    assert r.scores.tolist() == np.array([.9, .8, .7, .3, .2, .1], np.float32).tolist()


def test_relationship_vs_phrase_overlap():
    # GT subject [0,0,9,9] inside the object [0,0,99,99]. The predicted subject [5,5,14,14] has
    # IoU 25 / 175 with it: the relationship (min IoU) fails, but its union box is the GT's.
    gt = {"boxes": B([0, 0, 9, 9], [0, 0, 99, 99]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    p = pred([[5, 5, 14, 14], [0, 0, 99, 99]], [1, 2], [1, 1], [[0, 1]], [[0, 1.0]])
    m = evaluate_oi_relations([gt], [p], "sgdet", 1)
    assert m["R@50"] == 0.0 and m["AP_rel"] == [0.0]
    assert m["AP_phr"] == [rec(1, 1)]


# --------------------------------------------------------------------------------------------
# (2) IoU exactly 0.5: a hit for R@K (>=), an FP for AP (> strict)
# --------------------------------------------------------------------------------------------
def test_iou_exactly_half_hits_recall_but_not_ap():
    # object: GT [0,0,9,9] (100 px, +1 convention) vs predicted [0,0,9,19] (200 px): IoU 100/200
    # union boxes: GT [0,0,29,9] (300 px) vs predicted [0,0,29,19] (600 px): IoU 0.5 too
    gt = {"boxes": B([20, 0, 29, 9], [0, 0, 9, 9]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    p = pred([[20, 0, 29, 9], [0, 0, 9, 19]], [1, 2], [1, 1], [[0, 1]], [[0, 1.0]])
    from sgg.evaluation import box_iou_plus1
    assert box_iou_plus1(B([0, 0, 9, 9]), B([0, 0, 9, 19]))[0, 0] == np.float32(0.5)
    assert box_iou_plus1(B([0, 0, 29, 9]), B([0, 0, 29, 19]))[0, 0] == np.float32(0.5)
    m = evaluate_oi_relations([gt], [p], "sgdet", 1)
    assert m["R@50"] == rec(1, 1)
    assert m["AP_rel"] == [0.0] and m["AP_phr"] == [0.0]
    assert m["mR@50"] == 1.0  # the classic recall uses >= as well


# --------------------------------------------------------------------------------------------
# (3) duplicate GT rows
# --------------------------------------------------------------------------------------------
def test_duplicate_gt_rows_recall_both_ap_one():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1], [0, 1, 1]])}
    one = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1]], [[0, .9]])
    m = evaluate_oi_relations([gt], [one], "sgdet", 1)
    # R: the one candidate hits both rows; AP: it takes row 0 only -> rec 1/2, prec 1
    assert m["R@50"] == rec(2, 2)
    assert m["AP_rel"] == [rec(1, 2)] and m["AP_phr"] == [rec(1, 2)]
    # a second, identical candidate (the pair listed twice): its arg-max is row 0 again, taken
    # -> FP, no fallback to the free duplicate row 1: tp 1,0 fp 0,1 -> AP still r
    two = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1], [0, 1]], [[0, .9], [0, .8]])
    m2 = evaluate_oi_relations([gt], [two], "sgdet", 1)
    assert m2["R@50"] == rec(2, 2)
    assert m2["AP_rel"] == [rec(1, 2)] and m2["AP_phr"] == [rec(1, 2)]


# --------------------------------------------------------------------------------------------
# (4) the second-best predicate of a pair is a candidate too
# --------------------------------------------------------------------------------------------
def test_second_best_predicate_hits():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 2], [0, 1, 3]])}
    p = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1]], [[0, .5, .4, .1]])
    m = evaluate_oi_relations([gt], [p], "predcls", 3)
    # candidates: p1 .5 (no p1 row), p2 .4 (row 0); p3 (third best) is not a candidate
    assert m["R@50"] == rec(1, 2)
    assert m["AP_rel"] == [0.0, rec(1, 1), 0.0] and m["AP_phr"] == m["AP_rel"]
    # the classic mean recall only sees the arg-max p1: nothing hit
    assert m["mR@50"] == 0.0


# --------------------------------------------------------------------------------------------
# (5) the top-100 cut and the <= 1e-5 drop
# --------------------------------------------------------------------------------------------
def _decoy_image(num_decoys):
    """GT row (0,1,p1). Pair (2,3) listed ``num_decoys`` times with [bg, .6, .4] (2 candidates
    each, above everything else), then the true pair (0,1) with [bg, .3, .2]."""
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    boxes = [[0, 0, 9, 9], [20, 20, 29, 29], [100, 100, 109, 109], [200, 200, 209, 209]]
    pairs = [[2, 3]] * num_decoys + [[0, 1]]
    scores = [[0, .6, .4]] * num_decoys + [[0, .3, .2]]
    return gt, pred(boxes, [1, 2, 1, 2], [1, 1, 1, 1], pairs, scores)


def test_top100_cut():
    # 50 decoys = 100 candidates above the true p1 (.3), which is the 101st: cut
    gt, p = _decoy_image(50)
    m = evaluate_oi_relations([gt], [p], "sgdet", 2)
    assert m["R@50"] == 0.0 and m["R@100_oi"] == 0.0 and m["AP_rel"] == [0.0, 0.0]
    assert make_oi_record(gt, p, "sgdet", 2).scores.size == 100
    # 49 decoys: the true p1 is 99th: out of R@50, in R@100, and its AP counts (after 49 FPs of
    # p1: rec r at precision 1/50)
    gt, p = _decoy_image(49)
    m = evaluate_oi_relations([gt], [p], "sgdet", 2)
    assert m["R@50"] == 0.0 and m["R@100_oi"] == rec(1, 1)
    assert m["AP_rel"] == [pytest.approx(1 / 50), 0.0]
    assert m["AP_rel"][0] == rec(1, 1) * (1.0 / max(50.0, np.finfo(np.float64).eps))


def test_scores_at_most_1e5_are_dropped():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}

    def run(rel_score, obj_score=1.0):
        p = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [obj_score, 1], [[0, 1]], [[0, rel_score, 0]])
        return evaluate_oi_relations([gt], [p], "sgdet", 2)

    # float32(1e-5) * 1 * 1 == float32(1e-5): not > 1e-5 -> dropped (p2, scored 0, too)
    m = run(1e-5)
    assert m["R@50"] == 0.0 and m["AP_rel"] == [0.0, 0.0]
    assert m["per_predicate_R@50"] == [1.0, 0.0]  # the classic recall keeps every pair
    assert run(2e-5)["R@50"] == rec(1, 1)
    # the product counts: .5 * 2e-5 = 1e-5 -> dropped
    assert run(2e-5, obj_score=0.5)["R@50"] == 0.0


# --------------------------------------------------------------------------------------------
# (6) predicates absent from the GT
# --------------------------------------------------------------------------------------------
def test_absent_predicates_zero_in_map_not_in_wmap():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    # p1 perfect; p2 a candidate (FP, no p2 row); p3 no candidate at all
    p = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1]], [[0, .9, .5, 0]])
    m = evaluate_oi_relations([gt], [p], "sgdet", 3)
    assert m["npos"] == [1, 0, 0]
    assert m["AP_rel"] == [rec(1, 1), 0.0, 0.0]
    assert m["mAP_rel"] == rec(1, 1) / 3          # summed over all 3 predicates, / 3
    assert m["wmAP_rel"] == rec(1, 1) * 1.0 / 1.0  # weights npos / sum npos: only p1


def test_no_gt_row_anywhere_gives_nan_weighted_map():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.zeros((0, 3), np.int64)}
    p = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1]], [[0, .9]])
    m = evaluate_oi_relations([gt], [p], "sgdet", 1)
    assert m["R@50"] == 0.0 and m["mAP_rel"] == 0.0
    assert math.isnan(m["wmAP_rel"]) and math.isnan(m["score_wtd"])  # PySGG: 0 / 0


# --------------------------------------------------------------------------------------------
# (7) score_wtd / final_score on random data
# --------------------------------------------------------------------------------------------
def test_score_formulas(sg):
    gts, preds = random_dataset(sg, np.random.default_rng(5), "sgdet", 12, 4)
    m = evaluate_oi_relations(gts, preds, "sgdet", 4)
    assert m["score_wtd"] == 0.4 * m["wmAP_rel"] + 0.2 * m["R@50"] + 0.4 * m["wmAP_phr"]
    assert m["final_score"] == 0.4 * m["mAP_rel"] + 0.2 * m["R@50"] + 0.4 * m["mAP_phr"]


# --------------------------------------------------------------------------------------------
# (8) mR@50 is the VG evaluator's
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_mean_recall_is_the_vg_evaluators(sg, mode):
    gts, preds = random_dataset(sg, np.random.default_rng(11), mode, 25, 5)
    zs = np.array([[1, 2, 3], [2, 1, 1]])
    m = evaluate_oi_relations(gts, preds, mode, 5, zeroshot_triplets=zs)
    vg = evaluate_relations(gts, preds, mode, 5, zeroshot_triplets=zs)
    assert m["mR@50"] == vg["mR@50"]
    assert m["per_predicate_R@50"] == vg["per_predicate_R@50"]
    sg.assert_same_metrics(m["classic"], vg)


# --------------------------------------------------------------------------------------------
# (9) images without predictions / without GT rows
# --------------------------------------------------------------------------------------------
def test_image_without_predictions_counts_its_rows_as_missed():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    good = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1]], [[0, .9]])
    empties = [
        {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64),
         "scores": np.zeros(0, np.float32), "rel_pairs": np.zeros((0, 2), np.int64),
         "rel_scores": np.zeros((0, 2), np.float32)},
        dict(good, rel_pairs=None, rel_scores=None),
        dict(good, rel_pairs=np.zeros((0, 2), np.int64), rel_scores=np.zeros((0, 2), np.float32)),
    ]
    for empty in empties:
        m = evaluate_oi_relations([gt, gt], [good, empty], "sgdet", 1)
        assert m["R@50"] == rec(1, 2) and m["npos"] == [2]
        assert m["AP_rel"] == [rec(1, 2)]
        assert m["per_image_R@50"] == np.mean([rec(1, 1), 0.0])
        # the classic evaluator skips an image without predicted pairs
        assert m["mR@50"] == 1.0 and m["classic"]["num_images"] == 1 and m["num_images"] == 2
    only = evaluate_oi_relations([gt], [empties[0]], "sgdet", 1)
    assert only["R@50"] == 0.0 and only["AP_rel"] == [0.0] and only["score_wtd"] == 0.0


def test_candidates_of_an_image_without_gt_rows_are_false_positives():
    gt = {"boxes": B([0, 0, 9, 9], [20, 20, 29, 29]), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    no_rows = dict(gt, relations=np.zeros((0, 3), np.int64))
    p = pred([[0, 0, 9, 9], [20, 20, 29, 29]], [1, 2], [1, 1], [[0, 1]], [[0, .9]])
    p_high = dict(p, rel_scores=np.array([[0, .95]], np.float32))
    m = evaluate_oi_relations([gt, no_rows], [p, p_high], "sgdet", 1)
    # pooled p1: .95 FP (image 1), .9 TP: prec 0, 1/2 at rec 0, r -> AP = r * 1/2
    assert m["AP_rel"] == [rec(1, 1) * 0.5]
    assert m["R@50"] == rec(1, 1)


# --------------------------------------------------------------------------------------------
# (10) errors
# --------------------------------------------------------------------------------------------
def test_errors_name_the_problem():
    gt, p = image_one()
    with pytest.raises(ValueError, match="1 ground truths but 2 predictions"):
        evaluate_oi_relations([gt], [p, p], "sgdet", 2)
    with pytest.raises(ValueError, match="no image"):
        evaluate_oi_relations([], [], "sgdet", 2)
    with pytest.raises(ValueError, match=r"rel_scores must have shape \[M, P\+1\] = \[3, 4\].*got \(3, 3\)"):
        evaluate_oi_relations([gt], [p], "sgdet", 3)
    with pytest.raises(ValueError, match="predicted boxes must have shape"):
        evaluate_oi_relations([gt], [dict(p, boxes=p["boxes"][:, :3])], "sgdet", 2)
    with pytest.raises(ValueError, match="4 predicted boxes but 3 labels"):
        evaluate_oi_relations([gt], [dict(p, labels=p["labels"][:3])], "sgdet", 2)
    with pytest.raises(ValueError, match="and 2 object scores"):
        evaluate_oi_relations([gt], [dict(p, scores=p["scores"][:2])], "sgdet", 2)
    with pytest.raises(ValueError, match="rel_pairs must have shape"):
        evaluate_oi_relations([gt], [dict(p, rel_pairs=np.zeros((3, 3), np.int64))], "sgdet", 2)
    with pytest.raises(ValueError, match="rel_pairs index a predicted object outside 0..3"):
        evaluate_oi_relations([gt], [dict(p, rel_pairs=np.array([[0, 1], [0, 4], [0, 1]]))], "sgdet", 2)
    with pytest.raises(ValueError, match="GT relation predicate outside 1..2"):
        evaluate_oi_relations([dict(gt, relations=np.array([[0, 1, 3]]))], [p], "sgdet", 2)
    with pytest.raises(ValueError, match="GT relations index an object outside"):
        evaluate_oi_relations([dict(gt, relations=np.array([[0, 5, 1]]))], [p], "sgdet", 2)
    with pytest.raises(ValueError, match="GT relations must have shape"):
        evaluate_oi_relations([dict(gt, relations=np.array([[0, 1]]))], [p], "sgdet", 2)
    with pytest.raises(ValueError, match="3 GT boxes but 2 GT labels"):
        evaluate_oi_relations([dict(gt, labels=np.array([1, 2]))], [p], "sgdet", 2)
    with pytest.raises(ValueError, match="num_predicates must be a positive integer"):
        evaluate_oi_relations([gt], [p], "sgdet", 0)
    with pytest.raises(ValueError, match="mode must be one of"):
        evaluate_oi_relations([gt], [p], "detection", 2)
    with pytest.raises(ValueError, match="ks must contain 50"):
        evaluate_oi_relations([gt], [p], "sgdet", 2, ks=(20, 100))
    with pytest.raises(ValueError, match="iou_threshold must be in"):
        evaluate_oi_relations([gt], [p], "sgdet", 2, iou_threshold=1.5)
    with pytest.raises(ValueError, match="rel_scores has entries but rel_pairs is empty"):
        evaluate_oi_relations([gt], [dict(p, rel_pairs=None)], "sgdet", 2)


# --------------------------------------------------------------------------------------------
# equivalence with a slow loop written from the spec
# --------------------------------------------------------------------------------------------
def random_dataset(sg, rng, mode, n, num_predicates):
    images = [sg.random_image(rng, mode, num_predicates=num_predicates, quantise=bool(rng.random() < 0.7))
              for _ in range(n)]
    images += [sg.large_image(rng, mode, num_objects=int(rng.integers(8, 14)), num_predicates=num_predicates)
               for _ in range(2)]
    gts, preds = [], []
    for gt, p in images:
        perm = rng.permutation(len(p["rel_pairs"]))  # the OI candidates do not depend on it but ties
        p = dict(p, rel_pairs=p["rel_pairs"][perm], rel_scores=p["rel_scores"][perm])
        gts.append(gt)
        preds.append(p)
    return gts, preds


def _iou(a, b):
    """IoU of two xyxy boxes, +1 pixel convention, float32 scalar arithmetic."""
    one, zero = np.float32(1), np.float32(0)
    a = [np.float32(v) for v in a]
    b = [np.float32(v) for v in b]
    w = max(min(a[2], b[2]) - max(a[0], b[0]) + one, zero)
    h = max(min(a[3], b[3]) - max(a[1], b[1]) + one, zero)
    inter = w * h
    area_a = (a[2] - a[0] + one) * (a[3] - a[1] + one)
    area_b = (b[2] - b[0] + one) * (b[3] - b[1] + one)
    with np.errstate(all="ignore"):
        return inter / (area_a + area_b - inter)


def _union(a, b):
    return [min(a[0], b[0]), min(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3])]


def slow_oi(gts, preds, P, thr=0.5):
    """The spec, one candidate / GT row / detection at a time. Orderings use the same numpy sort
    calls as PySGG (np.argsort default kind), the documented tie rule."""
    thr = np.float32(thr)
    hits = {50: 0, 100: 0}
    total = 0
    dets = {c: [] for c in range(1, P + 1)}  # (score, image, [(s box, s lbl, o box, o lbl)])
    gt_rows = []
    for im, (gt, p) in enumerate(zip(gts, preds)):
        gboxes = np.asarray(gt["boxes"], np.float32)
        glab = [int(x) for x in gt["labels"]]
        rows = [(int(s), int(o), int(c)) for s, o, c in np.asarray(gt["relations"]).reshape(-1, 3)]
        gt_rows.append(rows)
        total += len(rows)
        pboxes = np.asarray(p["boxes"], np.float32)
        plab = [int(x) for x in p["labels"]]
        psc = np.asarray(p["scores"], np.float32)
        pairs = np.asarray(p["rel_pairs"]).reshape(-1, 2)
        cands = []
        if len(pairs):
            prd = np.asarray(p["rel_scores"], np.float32)[:, 1:]
            k = min(2, P)
            top = np.argsort(-prd, axis=1)[:, :k]
            spo = np.zeros((len(pairs), k), np.float32)
            for i, (s, o) in enumerate(pairs):
                for j in range(k):
                    spo[i, j] = (psc[s] * psc[o]) * prd[i, top[i, j]]
            for f in np.argsort(-spo.ravel())[:100]:
                i, j = divmod(int(f), k)
                if spo[i, j] > np.float32(1e-5):
                    cands.append((spo[i, j], int(pairs[i, 0]), int(pairs[i, 1]), int(top[i, j]) + 1))
        # R@K
        for kk in hits:
            hit_rows = set()
            for score, s, o, c in cands[:kk]:
                for r, (gs, go, gc) in enumerate(rows):
                    if (plab[s], c, plab[o]) == (glab[gs], gc, glab[go]) and \
                            _iou(pboxes[s], gboxes[gs]) >= thr and _iou(pboxes[o], gboxes[go]) >= thr:
                        hit_rows.add(r)
            hits[kk] += len(hit_rows)
        for score, s, o, c in cands:
            dets[c].append((score, im, s, o))
    npos = [sum(1 for rows in gt_rows for r in rows if r[2] == c) for c in range(1, P + 1)]
    out = {"R@50": float(hits[50]) / (float(total) + 1e-12),
           "R@100_oi": float(hits[100]) / (float(total) + 1e-12), "npos": npos}
    for kind in ("rel", "phr"):
        aps = []
        for c in range(1, P + 1):
            conf = np.array([d[0] for d in dets[c]], dtype=np.float64)
            taken = set()
            tp, fp = [], []
            for idx in np.argsort(-conf):
                _, im, s, o = dets[c][idx]
                p, gt = preds[im], gts[im]
                pb, pl = np.asarray(p["boxes"], np.float32), [int(x) for x in p["labels"]]
                gb, gl = np.asarray(gt["boxes"], np.float32), [int(x) for x in gt["labels"]]
                best, best_row = None, None
                any_valid = False
                for r, (gs, go, gc) in enumerate(gt_rows[im]):
                    if gc != c:
                        continue
                    valid = pl[s] == gl[gs] and pl[o] == gl[go]
                    any_valid |= valid
                    if kind == "rel":
                        ov = min(_iou(pb[s], gb[gs]), _iou(pb[o], gb[go]))
                    else:
                        ov = _iou(_union(pb[s], pb[o]), _union(gb[gs], gb[go]))
                    ov = ov * np.float32(valid)
                    if best is None or ov > best:  # first arg-max
                        best, best_row = ov, r
                if any_valid and best > thr and (im, best_row) not in taken:
                    taken.add((im, best_row))
                    tp.append(1.0)
                    fp.append(0.0)
                else:
                    tp.append(0.0)
                    fp.append(1.0)
            # VOC all-point AP, step by step
            ctp = np.cumsum(np.array(tp, dtype=np.float64))
            cfp = np.cumsum(np.array(fp, dtype=np.float64))
            recall = ctp / (float(npos[c - 1]) + 1e-12)
            prec = ctp / np.maximum(ctp + cfp, np.finfo(np.float64).eps)
            mrec = [0.0] + list(recall) + [1.0]
            mpre = [0.0] + list(prec) + [0.0]
            for i in range(len(mpre) - 1, 0, -1):
                mpre[i - 1] = max(mpre[i - 1], mpre[i])
            steps = [(mrec[i + 1] - mrec[i]) * mpre[i + 1] for i in range(len(mrec) - 1)
                     if mrec[i + 1] != mrec[i]]
            aps.append(float(np.sum(np.array(steps, dtype=np.float64))))
        out[f"AP_{kind}"] = aps
        out[f"mAP_{kind}"] = sum(aps, 0.0) / P
        out[f"wmAP_{kind}"] = sum((a * float(n) / float(sum(npos)) for a, n in zip(aps, npos)), 0.0) \
            if sum(npos) else float("nan")
    out["score_wtd"] = 0.4 * out["wmAP_rel"] + 0.2 * out["R@50"] + 0.4 * out["wmAP_phr"]
    out["final_score"] = 0.4 * out["mAP_rel"] + 0.2 * out["R@50"] + 0.4 * out["mAP_phr"]
    return out


def _same(a, b):
    if isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(b, float) and math.isnan(b):
        return isinstance(a, float) and math.isnan(a)
    return a == b


@pytest.mark.parametrize("seed", range(6))
def test_equals_slow_loop_on_random_images(sg, seed):
    rng = np.random.default_rng(100 + seed)
    mode = ("predcls", "sgcls", "sgdet")[seed % 3]
    P = (1, 3, 6, 4, 2, 20)[seed]
    gts, preds = random_dataset(sg, rng, mode, 14, P)
    ours = evaluate_oi_relations(gts, preds, mode, P)
    expected = slow_oi(gts, preds, P)
    for key, value in expected.items():
        assert _same(ours[key], value), (key, ours[key], value)
    if seed == 0:  # another IoU threshold goes through both tests
        ours = evaluate_oi_relations(gts, preds, mode, P, iou_threshold=0.3)
        expected = slow_oi(gts, preds, P, thr=0.3)
        assert all(_same(ours[k], v) for k, v in expected.items())


# --------------------------------------------------------------------------------------------
# streaming evaluator, torch inputs, report
# --------------------------------------------------------------------------------------------
def _without_classic(metrics):
    return {k: v for k, v in metrics.items() if k != "classic"}


def test_evaluator_streaming_order_and_duplicates(sg):
    gts, preds = random_dataset(sg, np.random.default_rng(3), "sgdet", 16, 4)
    gts = [dict(g, image_id=i) for i, g in enumerate(gts)]
    expected = evaluate_oi_relations(gts, preds, "sgdet", 4)
    ev = OIEvaluator("sgdet", 4)
    order = list(np.random.default_rng(0).permutation(len(gts)))
    order.append(order[0])  # a duplicated image (padded distributed sampler) is dropped
    for start in range(0, len(order), 5):
        idx = order[start:start + 5]
        ev.process([gts[i] for i in idx], [preds[i] for i in idx])
    got = ev.evaluate()
    assert all(_same(got[k], v) for k, v in _without_classic(expected).items())
    sg.assert_same_metrics(got["classic"], expected["classic"])


def test_evaluator_gathers_to_rank0(sg, monkeypatch):
    gts, preds = random_dataset(sg, np.random.default_rng(4), "predcls", 10, 3)
    gts = [dict(g, image_id=i) for i, g in enumerate(gts)]
    expected = evaluate_oi_relations(gts, preds, "predcls", 3)
    ranks = [OIEvaluator("predcls", 3) for _ in range(2)]
    for i in range(len(gts)):
        ranks[i % 2].process(gts[i], preds[i])  # one image at a time (mapping, not list)
    sent = []
    monkeypatch.setattr(oi_module.comm, "gather",
                        lambda obj, dst=0: sent.append(obj) or [ranks[0].records, ranks[1].records])
    got = ranks[0].evaluate()
    assert all(_same(got[k], v) for k, v in _without_classic(expected).items())
    assert sent == [ranks[0].records]
    monkeypatch.setattr(oi_module.comm, "gather", lambda obj, dst=0: [])
    monkeypatch.setattr(oi_module.comm, "is_main_process", lambda: False)
    assert ranks[1].evaluate() == {}


def test_torch_inputs_and_report(sg):
    gts, preds = random_dataset(sg, np.random.default_rng(8), "sgdet", 6, 3)
    expected = evaluate_oi_relations(gts, preds, "sgdet", 3, predicate_names=["bg", "on", "has", "near"])
    tgts = [{k: torch.as_tensor(v) for k, v in g.items()} for g in gts]
    tpreds = [{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in p.items()} for p in preds]
    got = evaluate_oi_relations(tgts, tpreds, "sgdet", 3, predicate_names=["bg", "on", "has", "near"])
    assert all(_same(got[k], v) for k, v in _without_classic(expected).items())
    assert got["predicate_names"] == ["on", "has", "near"]
    text = format_oi_report(got)
    assert "rel mAP: {:.2f}, weighted rel mAP: {:.2f}".format(
        100 * got["mAP_rel"], 100 * got["wmAP_rel"]) in text
    assert "phr mAP: {:.2f}".format(100 * got["mAP_phr"]) in text
    assert "weighted final_score: {:.2f}".format(100 * got["score_wtd"]) in text
    assert "recall@50: {:.2f}".format(100 * got["R@50"]) in text
    assert "mR@50" in text and "on: " in text and "near: " in text
