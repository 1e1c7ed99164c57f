"""Relation metrics: hand-computed cases for each metric and quirk, then an exact (==)
comparison with SGB's per-image loop (benchmarks/reference_sgg_eval.py) on random images."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from sgg.evaluation import (box_iou_plus1, evaluate_relations, make_record, stable_topk_desc)
from sgg.evaluation.sgg_eval import ng_topk

approx = pytest.approx

KS = (1, 2, 3, 7)


def image_a(boxes=None, labels=None):
    """3 GT objects, 3 GT rows, one pair carrying two predicates (rows 0 and 1).

    Predicted rows, in the given order (the evaluator never re-sorts), P = 3:
      row 0  (1,0)  [bg, .5, .3, .2]  argmax p1  -> no GT pair (1,0): miss
      row 1  (0,1)  [bg, .6, .3, .1]  argmax p1  -> GT row 0
      row 2  (1,2)  [bg, .2, .3, .5]  argmax p3  -> GT row 2
      row 3  (2,0)  [bg, .4, .4, .2]  argmax p1 (first max) -> miss
    The prediction's own boxes/labels/scores are junk: PredCls must replace them by the GT boxes,
    GT labels and scores of 1.
    """
    gt = {"boxes": np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]], dtype=np.float64),
          "labels": np.array([1, 2, 3]),
          "relations": np.array([[0, 1, 1], [0, 1, 2], [1, 2, 3]])}
    pred = {"boxes": np.tile(np.array([100.0, 100, 110, 110], dtype=np.float32), (3, 1))
            if boxes is None else boxes,
            "labels": np.array([9, 9, 9]) if labels is None else labels,
            "scores": np.array([0.1, 1.0, 1.0], dtype=np.float32),
            "rel_pairs": np.array([[1, 0], [0, 1], [1, 2], [2, 0]]),
            "rel_scores": np.array([[0, .5, .3, .2], [0, .6, .3, .1], [0, .2, .3, .5],
                                    [0, .4, .4, .2]], dtype=np.float32)}
    return gt, pred


def test_predcls_hand_case_every_metric():
    gt, pred = image_a()
    m = evaluate_relations([gt], [pred], "predcls", num_predicates=3, ks=KS)
    assert m["num_images"] == 1
    # R@K = |union of matches of the first K rows| / 3
    #   K=1: row 0 misses -> 0;  K=2: +row 1 -> {0};  K=3, 7: +row 2 -> {0, 2}
    assert [m[f"R@{k}"] for k in KS] == approx([0, 1 / 3, 2 / 3, 2 / 3])
    # ng: every (row, predicate) scored 1*1*rel (obj scores overridden), descending, ties by
    # flat index: .6 r1p1 (GT0) | .5 r0p1 | .5 r2p3 (GT2) | .4 r3p1 | .4 r3p2 | .3 r0p2 |
    # .3 r1p2 (GT1) ...  -> K=1: {0}; K=2: {0} (the tie r0p1 < r2p3 by index); K=3: {0, 2};
    # K=7: {0, 2, 1}: the duplicate pair's second predicate is only reachable without constraint
    assert [m[f"ngR@{k}"] for k in KS] == approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    # A@K: only rows whose pair is a GT pair, in order: [row 1 -> {0}, row 2 -> {2}]
    #   K=1: {0} -> 1/3 (while R@1 = 0: the non-GT pair ranked first is filtered out)
    assert [m[f"A@{k}"] for k in KS] == approx([1 / 3, 2 / 3, 2 / 3, 2 / 3])
    # mR: each predicate once in GT; recall per predicate at K=3: p1 1, p2 0, p3 1
    assert [m[f"mR@{k}"] for k in KS] == approx([0, 1 / 3, 2 / 3, 2 / 3])
    assert m["per_predicate_R@7"] == approx([1, 0, 1])
    assert [m[f"ngmR@{k}"] for k in KS] == approx([1 / 3, 1 / 3, 2 / 3, 1.0])
    assert m["ng_per_predicate_R@7"] == approx([1, 1, 1])
    # F = 2 R mR / (R + mR); 0 when both are 0
    assert [m[f"F@{k}"] for k in KS] == approx([0, 1 / 3, 2 / 3, 2 / 3])
    assert not any(k.startswith(("zR", "ngzR")) for k in m)  # no zero-shot list given


def test_predcls_overrides_prediction_objects_but_sgcls_does_not():
    gt, pred = image_a()  # junk predicted boxes
    sgcls = evaluate_relations([gt], [pred], "sgcls", num_predicates=3, ks=KS)
    assert sgcls["R@7"] == 0 and sgcls["ngR@7"] == 0 and sgcls["A@7"] == 0
    # SGCls with the GT boxes but object 2 mislabelled: GT row 2 (label 3 object) is lost
    gt, pred = image_a(boxes=np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]],
                                      dtype=np.float32), labels=np.array([1, 2, 1]))
    sgcls = evaluate_relations([gt], [pred], "sgcls", num_predicates=3, ks=KS)
    assert sgcls["R@7"] == approx(1 / 3)
    # ng in SGCls uses the predicted object scores [.1, 1, 1]: row 2 (weight 1) comes first:
    # r2p3 .5 (needs object 2 labelled 3: miss), r2p2 .3, r2p1 .2, then r1p1 .06 (GT0), r0p1 .05,
    # r3p1 .04, r3p2 .04, r0p2 .03, r1p2 .03 (GT1, 9th)
    assert sgcls["ngR@3"] == 0.0
    assert sgcls["ngR@7"] == approx(1 / 3)


def test_images_without_relations_or_without_predicted_pairs_are_skipped():
    gt, pred = image_a()
    no_rel_gt = dict(gt, relations=np.zeros((0, 3), dtype=np.int64))
    no_pairs_pred = dict(pred, rel_pairs=np.zeros((0, 2), dtype=np.int64),
                         rel_scores=np.zeros((0, 4), dtype=np.float32))
    alone = evaluate_relations([gt], [pred], "predcls", 3, ks=KS)
    mixed = evaluate_relations([no_rel_gt, gt, gt], [pred, pred, no_pairs_pred], "predcls", 3, ks=KS)
    # the M == 0 image is NOT a recall of 0 (reference quirk): R@7 stays 2/3, not 1/3
    assert mixed["num_images"] == 1
    assert mixed == alone
    empty = evaluate_relations([no_rel_gt], [pred], "predcls", 3, ks=KS)
    assert empty["num_images"] == 0 and np.isnan(empty["R@1"]) and empty["mR@1"] == 0.0


def test_duplicate_gt_rows_each_count_once():
    # two identical GT rows: one prediction matches both; R = 2/2
    gt = {"boxes": np.array([[0, 0, 9, 9], [20, 20, 29, 29]], float), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1], [0, 1, 1]])}
    pred = {"boxes": gt["boxes"], "labels": gt["labels"], "scores": np.ones(2, np.float32),
            "rel_pairs": np.array([[0, 1], [1, 0]]),
            "rel_scores": np.array([[0, .9, .1], [0, .9, .1]], np.float32)}
    m = evaluate_relations([gt], [pred], "sgdet", num_predicates=2, ks=(1, 2))
    assert m["R@1"] == 1.0 and m["ngR@1"] == 1.0
    assert m["per_predicate_R@1"] == [1.0, 0.0]  # predicate 2 absent from GT -> 0.0


def test_zero_shot_recall():
    gt, pred = image_a()
    other = dict(gt, relations=np.array([[1, 2, 3]]))  # triplet (2, 3, p3): not zero-shot
    zeroshot = torch.tensor([[1, 2, 1], [5, 5, 5]])  # (subj class, obj class, predicate)
    m = evaluate_relations([gt, other], [pred, pred], "predcls", 3, zeroshot_triplets=zeroshot, ks=KS)
    # only image 0 counts, its zero-shot rows = {0} (labels 1 -> 2, predicate 1)
    # graph constraint: GT0 is matched from K=2 (row 1); ng: from K=1 (r1p1)
    assert [m[f"zR@{k}"] for k in KS] == [0.0, 1.0, 1.0, 1.0]
    assert [m[f"ngzR@{k}"] for k in KS] == [1.0, 1.0, 1.0, 1.0]
    none = evaluate_relations([other], [pred], "predcls", 3, zeroshot_triplets=zeroshot, ks=KS)
    assert np.isnan(none["zR@1"])  # no image with a zero-shot row: np.mean([]) as the reference


def test_iou_plus_one_boundary():
    # GT [0,0,9,9]: 10x10 = 100 px with the +1 convention
    # [0,0,4,9]: 5x10 = 50 px, all inside -> IoU = 50 / (100 + 50 - 50) = 0.5 exactly (match)
    # [0,0,3,9]: 4x10 = 40 px -> IoU = 0.4 (no match); without +1 the first would be 36/81
    iou = box_iou_plus1(np.array([[0, 0, 9, 9]]), np.array([[0, 0, 4, 9], [0, 0, 3, 9]]))
    assert iou.dtype == np.float32 and iou.tolist() == [[0.5, 0.4000000059604645]]
    gt = {"boxes": np.array([[0, 0, 9, 9], [20, 20, 29, 29]], float), "labels": np.array([1, 2]),
          "relations": np.array([[0, 1, 1]])}
    pred = {"boxes": np.array([[0, 0, 4, 9], [20, 20, 29, 29], [0, 0, 3, 9]], np.float32),
            "labels": np.array([1, 2, 1]), "scores": np.ones(3, np.float32),
            "rel_pairs": np.array([[2, 1], [0, 1]]),
            "rel_scores": np.array([[0, 1, 0], [0, 1, 0]], np.float32)}
    m = evaluate_relations([gt], [pred], "sgdet", num_predicates=2, ks=(1, 2))
    assert (m["R@1"], m["R@2"]) == (0.0, 1.0)
    strict = evaluate_relations([gt], [pred], "sgdet", 2, iou_threshold=0.51, ks=(1, 2))
    assert strict["R@2"] == 0.0
    assert "A@1" not in m  # no pair accuracy in SGDet


def test_iou_matches_maskrcnn_benchmark_torch_float32_bitwise():
    rng = np.random.default_rng(0)
    b1 = rng.uniform(0, 100, (50, 2))
    b1 = np.concatenate([b1, b1 + rng.uniform(0, 60, (50, 2))], 1)
    b2 = np.concatenate([b1[:25] + rng.normal(0, 5, (25, 4)), b1[25:]])
    t1, t2 = torch.as_tensor(b1, dtype=torch.float32), torch.as_tensor(b2, dtype=torch.float32)
    area1 = (t1[:, 2] - t1[:, 0] + 1) * (t1[:, 3] - t1[:, 1] + 1)
    area2 = (t2[:, 2] - t2[:, 0] + 1) * (t2[:, 3] - t2[:, 1] + 1)
    lt = torch.max(t1[:, None, :2], t2[:, :2])
    rb = torch.min(t1[:, None, 2:], t2[:, 2:])
    wh = (rb - lt + 1).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    expected = (inter / (area1[:, None] + area2 - inter)).numpy()
    ours = box_iou_plus1(b1, b2)
    assert np.array_equal(ours, expected)


def test_mean_recall_averages_per_predicate_over_images_and_counts_absent_as_zero():
    boxes = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49]], float)
    labels = np.array([1, 2, 3])

    def pred(pairs, scores):
        return {"boxes": boxes, "labels": labels, "scores": np.ones(3, np.float32),
                "rel_pairs": np.array(pairs), "rel_scores": np.array(scores, np.float32)}

    # image 1: GT (0,1,p1), (1,2,p2); rows: (0,1)->p1 hit, (1,2)->p3 miss
    gt1 = {"boxes": boxes, "labels": labels, "relations": np.array([[0, 1, 1], [1, 2, 2]])}
    p1 = pred([[0, 1], [1, 2]], [[0, .9, .05, .03, .02], [0, .1, .2, .6, .1]])
    # image 2: GT (0,1,p1), (0,2,p1), (1,2,p3); rows: (0,1)->p2 miss, (0,2)->p1 hit, (1,2)->p3 hit
    gt2 = {"boxes": boxes, "labels": labels, "relations": np.array([[0, 1, 1], [0, 2, 1], [1, 2, 3]])}
    p2 = pred([[0, 1], [0, 2], [1, 2]],
              [[0, .1, .7, .1, .1], [0, .8, .1, .05, .05], [0, .1, .1, .7, .1]])
    m = evaluate_relations([gt1, gt2], [p1, p2], "predcls", num_predicates=4, ks=(2, 3))
    # K=2: image1 p1 1/1, p2 0/1 | image2 p1 1/2, p3 0/1
    #      p1 = mean(1, .5) = .75, p2 = 0, p3 = 0, p4 absent = 0 -> mR = .75 / 4
    assert m["per_predicate_R@2"] == approx([0.75, 0, 0, 0])
    assert m["mR@2"] == approx(0.1875)
    # K=3: image2 also hits (1,2,p3): p3 = 1 -> mR = 1.75 / 4
    assert m["per_predicate_R@3"] == approx([0.75, 0, 1, 0])
    assert m["mR@3"] == approx(0.4375)
    # R: mean over images of hits / R
    assert m["R@2"] == approx((1 / 2 + 1 / 3) / 2) and m["R@3"] == approx((1 / 2 + 2 / 3) / 2)
    r3 = (1 / 2 + 2 / 3) / 2
    assert m["F@3"] == approx(2 * r3 * 0.4375 / (r3 + 0.4375))
    # A@K = sum hits / sum R: all rows are GT pairs here -> (1 + 1) / 5 at K=2, (1 + 2) / 5 at K=3
    assert (m["A@2"], m["A@3"]) == approx((2 / 5, 3 / 5))


def test_pair_accuracy_reaches_gt_pairs_ranked_after_max_k():
    boxes = np.array([[0, 0, 9, 9], [20, 20, 29, 29], [40, 40, 49, 49], [60, 60, 69, 69]], float)
    gt = {"boxes": boxes, "labels": np.array([1, 2, 3, 4]), "relations": np.array([[0, 1, 1]])}
    pairs = np.array([[1, 0], [2, 3], [3, 2], [0, 2], [0, 1]])  # the GT pair comes 5th
    pred = {"boxes": boxes, "labels": gt["labels"], "scores": np.ones(4, np.float32),
            "rel_pairs": pairs, "rel_scores": np.tile(np.array([0, .9, .1], np.float32), (5, 1))}
    m = evaluate_relations([gt], [pred], "predcls", num_predicates=2, ks=(1, 2))
    assert (m["R@1"], m["R@2"]) == (0.0, 0.0)
    assert (m["A@1"], m["A@2"]) == (1.0, 1.0)
    rec = make_record(gt, pred, "predcls", ks=(1, 2))
    assert rec.rel_rows.tolist() == [0, 1, 4]  # first max(ks) rows + first GT-pair rows


def test_pair_accuracy_keeps_the_reference_1024_hash():
    # pair (0, 1024) hashes to 0*1024 + 1024 = 1024 = hash of GT pair (1, 0): counted as a GT pair
    n = 1025
    boxes = np.column_stack([np.arange(n) * 20.0, np.zeros(n), np.arange(n) * 20.0 + 9, np.full(n, 9.0)])
    gt = {"boxes": boxes, "labels": np.ones(n, int), "relations": np.array([[1, 0, 1]])}
    pred = {"boxes": boxes, "labels": gt["labels"], "scores": np.ones(n, np.float32),
            "rel_pairs": np.array([[0, 1024], [1, 0]]),
            "rel_scores": np.array([[0, .9, .1], [0, .9, .1]], np.float32)}
    m = evaluate_relations([gt], [pred], "predcls", num_predicates=2, ks=(1, 2))
    assert m["R@1"] == 0.0 and m["R@2"] == 1.0
    assert m["A@1"] == 0.0  # the aliased pair takes the first filtered slot (1.0 without aliasing)


def test_stable_topk_equals_full_stable_argsort():
    rng = np.random.default_rng(0)
    for n, k in [(1, 1), (10, 3), (500, 100), (5000, 100), (300, 300), (300, 1000)]:
        values = np.round(rng.random(n) * 7) / 7  # heavy ties
        values[rng.random(n) < 0.1] = 0.0
        values[rng.random(n) < 0.05] = -0.0
        expected = np.argsort(-values, kind="stable")[:k]
        assert np.array_equal(stable_topk_desc(values, k), expected)


@pytest.mark.parametrize("predcls_weights", [False, True])
def test_ng_topk_row_bound_equals_full_matrix(predcls_weights):
    rng = np.random.default_rng(1)
    n, p = 30, 12
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    pairs = np.column_stack([ii, jj])
    rel = (np.round(rng.random((len(pairs), p + 1)) * 4) / 4).astype(np.float32)
    obj = np.ones(n) if predcls_weights else (np.round(rng.random(n) * 3) / 3).astype(np.float32)
    full = obj[pairs].prod(1)[:, None] * rel[:, 1:]
    order = np.argsort(-full.ravel(), kind="stable")[:100]
    rows, preds, scores = ng_topk(pairs, rel, obj, 100)
    assert np.array_equal(rows, order // p) and np.array_equal(preds, order % p + 1)
    assert np.array_equal(scores, full.ravel()[order])


def test_record_is_compact(sg):
    rng = np.random.default_rng(0)
    gt, pred = sg.large_image(rng, "sgdet", num_objects=60, num_predicates=50)
    assert pred["rel_scores"].size > 190_000  # 65*64 pairs x 51 predicates
    rec = make_record(gt, pred, "sgdet")
    assert len(rec.rel_rows) == 100 and len(rec.ng_labels) == 100
    assert rec.nbytes < 12_000


def _split(pairs):
    return [g for g, _ in pairs], [p for _, p in pairs]


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
@pytest.mark.parametrize("ks", [(20, 50, 100), (1, 3, 5), (7, 150)])
def test_exactly_equal_to_reference_loop(reference, sg, mode, ks):
    rng = np.random.default_rng({"predcls": 0, "sgcls": 1, "sgdet": 2}[mode] + 10 * ks[0])
    images = [sg.random_image(rng, mode) for _ in range(40)]
    images += [sg.large_image(rng, mode, num_objects=14, num_predicates=6) for _ in range(3)]
    images += [sg.random_image(rng, mode, quantise=False) for _ in range(5)]
    # a few inputs as torch tensors / float64 (dtype handling must match the reference)
    for gt, pred in images[:4]:
        pred["rel_scores"] = torch.from_numpy(pred["rel_scores"])
        pred["boxes"] = torch.from_numpy(np.asarray(pred["boxes"], np.float32))
    for gt, pred in images[4:6]:
        pred["scores"] = pred["scores"].astype(np.float64)
        pred["rel_scores"] = pred["rel_scores"].astype(np.float64)
    zs_rng = np.random.default_rng(5)
    zeroshot = np.array([[a, b, p] for a in range(1, 6) for b in range(1, 6) for p in range(1, 7)
                         if zs_rng.random() < 0.3])
    gts, preds = _split(images)
    ours = evaluate_relations(gts, preds, mode, 6, zeroshot_triplets=zeroshot, ks=ks)
    ref = reference.reference_evaluate(gts, preds, mode, 6, zeroshot_triplets=zeroshot, ks=ks)
    assert ours["num_images"] >= 15
    sg.assert_same_metrics(ours, ref)
    ours_nozs = evaluate_relations(gts, preds, mode, 6, ks=ks, iou_threshold=0.7)
    ref_nozs = reference.reference_evaluate(gts, preds, mode, 6, ks=ks, iou_threshold=0.7)
    sg.assert_same_metrics(ours_nozs, ref_nozs)


def test_bad_inputs_raise_clear_errors():
    gt, pred = image_a()
    with pytest.raises(ValueError, match="mode must be one of"):
        evaluate_relations([gt], [pred], "phrdet", 3)
    with pytest.raises(ValueError, match="predicate outside"):
        evaluate_relations([dict(gt, relations=np.array([[0, 1, 4]]))], [pred], "predcls", 3)
    with pytest.raises(ValueError, match="rel_pairs index"):
        evaluate_relations([gt], [dict(pred, rel_pairs=pred["rel_pairs"] + 5)], "sgdet", 3)
    with pytest.raises(ValueError, match=r"rel_scores must be \[M, 6\]"):
        evaluate_relations([gt], [pred], "predcls", 5)
    with pytest.raises(ValueError, match="ground truths but"):
        evaluate_relations([gt, gt], [pred], "predcls", 3)
