"""PE-Net's rel_nms evaluation option: the vectorised rel_nms against the literal reference loop,
and the evaluator with TEST.RELATION.REL_NMS against an oracle path built on that loop."""
from __future__ import annotations

import math
from functools import reduce
from types import SimpleNamespace

import numpy as np
import pytest

from sgg.evaluation import SceneGraphEvaluator, box_iou_plus1, evaluate_relations, make_record, rel_nms
from sgg.evaluation.sgg_eval import ImageRecord

P = 4  # predicates of the evaluator-level cases


# --------------------------------------------------------------------------------------------
# the oracle: PE-Net's rel_nms restated literally (sequential, dense M x M x W l21)
# --------------------------------------------------------------------------------------------
def oracle_rel_nms(pred_boxes, pred_classes, pred_rel_inds, rel_scores, nms_thresh=0.5, l21_thr=0.7):
    ious = box_iou_plus1(pred_boxes, pred_boxes)
    sub_ious = ious[pred_rel_inds[:, 0]][:, pred_rel_inds[:, 0]]
    obj_ious = ious[pred_rel_inds[:, 1]][:, pred_rel_inds[:, 1]]
    rel_ious = np.minimum(sub_ious, obj_ious)
    sub_labels = pred_classes[pred_rel_inds[:, 0]]
    obj_labels = pred_classes[pred_rel_inds[:, 1]]
    l21 = np.sqrt(np.power(rel_scores[:, None, :], 2.0) + np.power(rel_scores[None, :, :], 2.0)).sum(axis=-1)
    is_overlap = ((rel_ious >= nms_thresh) & (sub_labels[:, None] == sub_labels[None, :])
                  & (obj_labels[:, None] == obj_labels[None, :]) & (l21 > l21_thr))
    cp = rel_scores.copy()
    cp[:, 0] = 0.0
    labels = np.zeros(cp.shape[0], dtype=np.int64)
    for _ in range(cp.shape[0]):
        i, c = np.unravel_index(cp.argmax(), cp.shape)
        if float(labels[int(i)]) > 0:
            pass
        else:
            labels[int(i)] = int(c)
        cp[is_overlap[i, :], c] = 0.0
        cp[i] = -1.0
    return labels, rel_scores[np.arange(labels.shape[0], dtype=np.int64), labels]


def random_case(rng: np.random.Generator):
    """Boxes in a few clusters of near-duplicates, few classes, M in 0..~200, softmax / quantised /
    sub-normalised scores (so that l21 crosses 0.7), float32 or float64."""
    num_groups = int(rng.integers(1, 5))
    n = int(rng.integers(1, 16))
    base_xy = rng.integers(0, 50, (num_groups, 2))
    base_wh = rng.integers(4, 30, (num_groups, 2))
    g = rng.integers(0, num_groups, n)
    xy = base_xy[g] + rng.integers(-2, 3, (n, 2))
    boxes = np.concatenate([xy, xy + base_wh[g] + rng.integers(-2, 3, (n, 2))], 1).astype(np.float32)
    if rng.random() < 0.1 and n:
        boxes[0, 2:] = boxes[0, :2] - 1  # a degenerate box (IoU NaN with itself)
    classes = rng.integers(1, int(rng.integers(1, 4)) + 1, n)
    width = int(rng.choice([3, 6, 51]))
    m_max = min(200, n * n)
    m = int(rng.choice([0, 1, 2, int(rng.integers(0, m_max + 1)), m_max]))
    m = min(m, m_max)
    if rng.random() < 0.8:
        flat = rng.choice(n * n, m, replace=False)
    else:  # repeated pairs too
        flat = rng.integers(0, n * n, m)
    pairs = np.column_stack([flat // n, flat % n]).astype(np.int64)
    logits = rng.normal(0, float(rng.choice([0.5, 2.0, 6.0])), (m, width))
    scores = np.exp(logits)
    scores /= scores.sum(1, keepdims=True)
    kind = rng.random()
    if kind < 0.3:  # ties and exact zeros
        q = float(rng.choice([2, 4, 8]))
        scores = np.floor(scores * q) / q
    elif kind < 0.45:  # not normalised: l21 near the 0.7 threshold
        scores = scores * float(rng.uniform(0.2, 0.6))
    dtype = np.float32 if rng.random() < 0.7 else np.float64
    thresh = float(rng.choice([0.3, 0.5, 0.6, 0.9]))
    return boxes, classes, pairs, scores.astype(dtype), thresh


NUM_RANDOM = 400


def test_vectorised_equals_reference_loop_on_random_cases():
    rng = np.random.default_rng(20240611)
    stats = {"suppressed": 0, "background": 0, "cases": 0}
    for _ in range(NUM_RANDOM):
        boxes, classes, pairs, scores, thresh = random_case(rng)
        want_labels, want_scores = oracle_rel_nms(boxes, classes, pairs, scores, thresh)
        got_labels, got_scores = rel_nms(boxes, classes, pairs, scores, thresh)
        assert got_labels.dtype == np.int64 and got_scores.dtype == scores.dtype
        np.testing.assert_array_equal(got_labels, want_labels)
        np.testing.assert_array_equal(got_scores, want_scores)
        stats["cases"] += 1
        if len(pairs):
            stats["suppressed"] += int((want_labels != scores[:, 1:].argmax(1) + 1).any())
            stats["background"] += int((want_labels == 0).any())
    # the cases exercise suppression and fully suppressed rows
    assert stats["suppressed"] > NUM_RANDOM // 4 and stats["background"] > 20, stats


def test_nan_scores_follow_the_reference_loop():
    rng = np.random.default_rng(3)
    for _ in range(20):
        boxes, classes, pairs, scores, thresh = random_case(rng)
        if len(pairs) == 0:
            continue
        scores = scores.copy()
        scores[rng.random(scores.shape) < 0.05] = np.nan
        want = oracle_rel_nms(boxes, classes, pairs, scores, thresh)
        got = rel_nms(boxes, classes, pairs, scores, thresh)
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_hand_case_second_row_takes_its_second_best_predicate():
    # objects 0 and 1: the same box and class (duplicates); object 2 another box
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    classes = np.array([1, 1, 2])
    pairs = np.array([[0, 2], [1, 2]])
    scores = np.array([[0.1, 0.6, 0.2, 0.1],
                       [0.1, 0.5, 0.3, 0.1]], np.float32)
    labels, kept = rel_nms(boxes, classes, pairs, scores, 0.6)
    np.testing.assert_array_equal(labels, [1, 2])  # row 1's predicate 1 is suppressed by row 0
    np.testing.assert_array_equal(kept, np.array([0.6, 0.3], np.float32))
    labels, kept = rel_nms(boxes, classes, pairs, scores, 0.6, l21_thr=1e9)
    np.testing.assert_array_equal(labels, [1, 1])  # nothing overlaps
    np.testing.assert_array_equal(kept, np.array([0.6, 0.5], np.float32))
    classes_differ = np.array([1, 3, 2])
    np.testing.assert_array_equal(rel_nms(boxes, classes_differ, pairs, scores, 0.6)[0], [1, 1])
    # one predicate only: the second row is fully suppressed -> background, its bg probability
    labels, kept = rel_nms(boxes, classes, pairs, np.array([[0.3, 0.7], [0.4, 0.6]], np.float32), 0.6)
    np.testing.assert_array_equal(labels, [1, 0])
    np.testing.assert_array_equal(kept, np.array([0.7, 0.4], np.float32))


def test_empty_and_bad_inputs():
    labels, kept = rel_nms(np.zeros((2, 4)), [1, 1], np.zeros((0, 2), np.int64), np.zeros((0, 5), np.float32))
    assert labels.shape == (0,) and kept.shape == (0,) and kept.dtype == np.float32
    with pytest.raises(ValueError, match="rel_scores"):
        rel_nms(np.zeros((2, 4)), [1, 1], [[0, 1]], np.zeros((2, 5)))
    with pytest.raises(ValueError, match="outside"):
        rel_nms(np.zeros((2, 4)), [1, 1], [[0, 2]], np.zeros((1, 5)))


# --------------------------------------------------------------------------------------------
# evaluator level
# --------------------------------------------------------------------------------------------
def dup_image(rng: np.random.Generator, mode: str):
    """A PredCls/SGCls/SGDet image whose GT has duplicated boxes (same class), so rel_nms bites."""
    g0 = int(rng.integers(2, 6))
    xy = rng.integers(0, 60, (g0, 2))
    base = np.concatenate([xy, xy + rng.integers(5, 30, (g0, 2))], 1)
    base_labels = rng.integers(1, 4, g0)
    dup = rng.integers(0, g0, int(rng.integers(1, 5)))
    gt_boxes = np.concatenate([base, base[dup] + rng.integers(-1, 2, (len(dup), 4))]).astype(np.float32)
    gt_labels = np.concatenate([base_labels, base_labels[dup]])
    g = len(gt_boxes)
    r = int(rng.integers(1, 8))
    subj = rng.integers(0, g, r)
    obj = (subj + rng.integers(1, g, r)) % g
    relations = np.column_stack([subj, obj, rng.integers(1, P + 1, r)])
    gt = {"boxes": gt_boxes, "labels": gt_labels, "relations": relations}
    if mode == "sgdet":
        boxes = gt_boxes + rng.integers(-2, 3, (g, 4))
    else:
        boxes = gt_boxes.copy()
    labels = np.where(rng.random(g) < 0.8, gt_labels, rng.integers(1, 4, g)) if mode != "predcls" else gt_labels
    obj_scores = (np.round(rng.random(g) * 4) / 4 + 0.25).astype(np.float32)
    ii, jj = np.nonzero(~np.eye(g, dtype=bool))
    pairs = np.column_stack([ii, jj]).astype(np.int64)
    logits = rng.normal(0, 2.0, (len(pairs), P + 1))
    rel_scores = np.exp(logits)
    rel_scores /= rel_scores.sum(1, keepdims=True)
    if rng.random() < 0.5:
        rel_scores = np.round(rel_scores * 8) / 8  # ties
    rel_scores = rel_scores.astype(np.float32)
    trip = rel_scores[:, 1:].max(1) * obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 1]]
    order = np.argsort(-trip, kind="stable")
    pred = {"boxes": boxes.astype(np.float32), "labels": labels, "scores": obj_scores,
            "rel_pairs": pairs[order], "rel_scores": rel_scores[order]}
    return gt, pred


def _union_len(lists):
    return len(reduce(np.union1d, lists)) if len(lists) else 0


def oracle_metrics(gts, preds, mode, ks, zeroshot, thresh, iou=0.5):
    """R@K, mR@K, zR@K, A@K of PE-Net's path: oracle rel_nms, re-sort by score * subj^2 (stable),
    plain triplet matching on the re-sorted list (A@K flags in the same re-sorted order)."""
    res = {name: {k: [] for k in ks} for name in ("R", "zR", "A_hit", "A_count")}
    collect = {k: [[] for _ in range(P + 1)] for k in ks}
    for gt, pred in zip(gts, preds):
        gt_rels = np.asarray(gt["relations"], np.int64)
        gt_boxes = np.asarray(gt["boxes"], np.float32)
        gt_classes = np.asarray(gt["labels"], np.int64)
        pairs = np.asarray(pred["rel_pairs"], np.int64)
        rel_scores = np.asarray(pred["rel_scores"])
        if len(gt_rels) == 0 or len(pairs) == 0:
            continue
        if mode == "predcls":
            boxes, classes, obj_scores = gt_boxes, gt_classes, np.ones(len(gt_classes))
        else:
            boxes = np.asarray(pred["boxes"], np.float32)
            classes = np.asarray(pred["labels"], np.int64)
            obj_scores = np.asarray(pred["scores"])
        labels, scores = oracle_rel_nms(boxes, classes, pairs, rel_scores, thresh)
        order = np.argsort(-(scores * obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 0]]), kind="stable")
        pred_rels = np.column_stack([pairs, labels])[order]
        pred_to_gt = []
        for s, o, p in pred_rels:
            hits = [j for j, (gs, go, gp) in enumerate(gt_rels)
                    if p == gp and classes[s] == gt_classes[gs] and classes[o] == gt_classes[go]
                    and box_iou_plus1(boxes[s], gt_boxes[gs])[0, 0] >= np.float32(iou)
                    and box_iou_plus1(boxes[o], gt_boxes[go])[0, 0] >= np.float32(iou)]
            pred_to_gt.append(hits)
        in_gt = [any(s * 1024 + o == gs * 1024 + go for gs, go, _ in gt_rels) for s, o, _ in pred_rels]
        zs_idx = [j for j, (gs, go, gp) in enumerate(gt_rels)
                  if any((gt_classes[gs], gt_classes[go], gp) == tuple(z) for z in zeroshot)]
        for k in ks:
            match = reduce(np.union1d, pred_to_gt[:k])
            res["R"][k].append(float(len(match)) / float(len(gt_rels)))
            if zs_idx:
                res["zR"][k].append(len(set(zs_idx) & set(int(x) for x in match)) / float(len(zs_idx)))
            hit, count = [0] * (P + 1), [0] * (P + 1)
            for gp in gt_rels[:, 2]:
                count[gp] += 1
            for j in match:
                hit[gt_rels[int(j), 2]] += 1
            for p in range(P + 1):
                if count[p] > 0:
                    collect[k][p].append(float(hit[p] / count[p]))
            res["A_hit"][k].append(float(_union_len([p for p, f in zip(pred_to_gt, in_gt) if f][:k])))
            res["A_count"][k].append(float(len(gt_rels)))
    out = {}
    for k in ks:
        out[f"R@{k}"] = float(np.mean(res["R"][k]))
        out[f"zR@{k}"] = float(np.mean(res["zR"][k])) if res["zR"][k] else float("nan")
        sum_recall = 0
        for p in range(1, P + 1):
            sum_recall += 0.0 if not collect[k][p] else np.mean(collect[k][p])
        out[f"mR@{k}"] = float(sum_recall / float(P))
        out[f"A@{k}"] = float(np.mean(res["A_hit"][k]) / np.mean(res["A_count"][k]))
    return out


ZEROSHOT = np.array([[a, b, p] for a in range(1, 4) for b in range(1, 4) for p in range(1, P + 1)
                     if (a + 2 * b + 3 * p) % 4 == 0])


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
@pytest.mark.parametrize("ks", [(1, 3, 5), (20, 50, 100)])
def test_evaluator_with_rel_nms_equals_the_oracle_path(mode, ks):
    rng = np.random.default_rng({"predcls": 11, "sgcls": 12}[mode] + ks[0])
    images = [dup_image(rng, mode) for _ in range(30)]
    gts, preds = [i[0] for i in images], [i[1] for i in images]
    on = evaluate_relations(gts, preds, mode, P, zeroshot_triplets=ZEROSHOT, ks=ks, rel_nms_thresh=0.6)
    off = evaluate_relations(gts, preds, mode, P, zeroshot_triplets=ZEROSHOT, ks=ks)
    want = oracle_metrics(gts, preds, mode, ks, ZEROSHOT, 0.6)
    for key, value in want.items():
        assert on[key] == value or (math.isnan(value) and math.isnan(on[key])), key
    for key in on:  # no-graph-constraint metrics use the raw scores: unchanged
        if key.startswith("ng"):
            assert on[key] == off[key], key
    assert any(on[f"R@{k}"] != off[f"R@{k}"] for k in ks) or any(
        on[f"mR@{k}"] != off[f"mR@{k}"] for k in ks)  # the option does change something here
    # the streaming evaluator gives the same numbers
    ev = SceneGraphEvaluator(mode, P, zeroshot_triplets=ZEROSHOT, ks=ks, rel_nms_thresh=0.6)
    ev.process(gts, preds)
    streamed = ev.evaluate()
    for key, value in on.items():
        if isinstance(value, float) and math.isnan(value):
            assert math.isnan(streamed[key]), key
        else:
            assert streamed[key] == value, key


def test_sgdet_ignores_rel_nms_and_off_is_the_default():
    rng = np.random.default_rng(7)
    images = [dup_image(rng, "sgdet") for _ in range(15)]
    gts, preds = [i[0] for i in images], [i[1] for i in images]
    a = evaluate_relations(gts, preds, "sgdet", P, zeroshot_triplets=ZEROSHOT)
    b = evaluate_relations(gts, preds, "sgdet", P, zeroshot_triplets=ZEROSHOT, rel_nms_thresh=0.6)
    assert a.keys() == b.keys()
    for key in a:
        assert a[key] == b[key] or (isinstance(a[key], float) and math.isnan(a[key]) and math.isnan(b[key])), key
    images = [dup_image(rng, "sgcls") for _ in range(5)]
    for gt, pred in images:
        default, explicit = make_record(gt, pred, "sgcls"), make_record(gt, pred, "sgcls", rel_nms_thresh=0.0)
        for f in ImageRecord.__dataclass_fields__:
            np.testing.assert_array_equal(getattr(default, f), getattr(explicit, f))


def test_record_with_rel_nms_ranks_are_positions_in_the_resorted_list():
    rng = np.random.default_rng(5)
    gt, pred = dup_image(rng, "sgcls")
    rec = make_record(gt, pred, "sgcls", ks=(3,), rel_nms_thresh=0.6)
    labels, scores = oracle_rel_nms(np.asarray(pred["boxes"]), np.asarray(pred["labels"]), pred["rel_pairs"],
                                    pred["rel_scores"], 0.6)
    subj = pred["scores"][pred["rel_pairs"][:, 0]]
    order = np.argsort(-(scores * subj * subj), kind="stable")
    np.testing.assert_array_equal(rec.rel_rows[:3], [0, 1, 2])
    np.testing.assert_array_equal(rec.rel_pairs, pred["rel_pairs"][order][rec.rel_rows])
    np.testing.assert_array_equal(rec.rel_labels, labels[order][rec.rel_rows])
    np.testing.assert_array_equal(rec.rel_label_scores, scores[order][rec.rel_rows])


def test_rel_nms_threshold_validation_and_open_images():
    from sgg.engine.inference import build_relation_evaluator
    from sgg.evaluation import OIEvaluator

    with pytest.raises(ValueError, match="rel_nms_thresh"):
        SceneGraphEvaluator("predcls", P, rel_nms_thresh=-0.1)
    with pytest.raises(ValueError, match="rel_nms_thresh"):
        evaluate_relations([{"boxes": np.zeros((0, 4)), "labels": [], "relations": None}],
                           [{}], "predcls", P, rel_nms_thresh=2.0)

    class Custom(SceneGraphEvaluator):
        def _make_record(self, gt, pred, image_id):
            return super()._make_record(gt, pred, image_id)

    with pytest.raises(ValueError, match="does not support rel_nms"):
        Custom("predcls", P, rel_nms_thresh=0.6)
    assert Custom("predcls", P).rel_nms_thresh == 0.0
    OIEvaluator("predcls", P)  # unaffected

    from sgg.config import get_default_config

    cfg = get_default_config()
    assert cfg.TEST.RELATION.REL_NMS == 0.0
    cfg = cfg.clone()
    cfg.DATASETS.ZEROSHOT_FILE = ""
    dataset = SimpleNamespace(name=None, num_predicates=P + 1, ind_to_predicates=["__bg__"] + list("abcd"),
                              ind_to_classes=["__bg__", "x", "y", "z"])
    ev = build_relation_evaluator(cfg, dataset, "predcls")
    assert type(ev) is SceneGraphEvaluator and ev.rel_nms_thresh == 0.0
    cfg.TEST.RELATION.REL_NMS = 0.6
    assert build_relation_evaluator(cfg, dataset, "sgcls").rel_nms_thresh == 0.6
    dataset.evaluator_kind = "oi"
    with pytest.raises(ValueError, match="REL_NMS"):
        build_relation_evaluator(cfg, dataset, "predcls")
    cfg.TEST.RELATION.REL_NMS = 0.0
    assert type(build_relation_evaluator(cfg, dataset, "predcls")) is OIEvaluator
