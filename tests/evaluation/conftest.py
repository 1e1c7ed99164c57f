"""Shared fixtures of the evaluation tests: the literal reference loop and random scene graphs."""
from __future__ import annotations

import importlib.util
import math
import pathlib
from types import SimpleNamespace

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def reference():
    """benchmarks/reference_sgg_eval.py: SGB's per-image loop restated literally."""
    spec = importlib.util.spec_from_file_location(
        "reference_sgg_eval", ROOT / "benchmarks" / "reference_sgg_eval.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sorted_by_triplet(pairs, rel_scores, obj_scores):
    if len(pairs) == 0:
        return pairs, rel_scores
    triplet = rel_scores[:, 1:].max(1) * obj_scores[pairs[:, 0]] * obj_scores[pairs[:, 1]]
    order = np.argsort(-triplet, kind="stable")
    return pairs[order], rel_scores[order]


def random_image(rng: np.random.Generator, mode: str, num_classes: int = 5,
                 num_predicates: int = 6, max_objects: int = 7, quantise: bool = True):
    """A small random (gt, prediction) pair with the awkward cases: duplicate GT pairs with two
    predicates, no relations, no predicted pairs, tied scores (quantised), noisy SGDet boxes,
    wrong SGCls labels, integer-valued boxes near the IoU 0.5 boundary."""
    g = int(rng.integers(0, max_objects + 1))
    xy = rng.integers(0, 60, (g, 2)).astype(np.float64)
    wh = rng.integers(1, 30, (g, 2))
    gt_boxes = np.concatenate([xy, xy + wh], 1)
    gt_labels = rng.integers(1, num_classes + 1, g)
    rels = []
    if g >= 2:
        for _ in range(int(rng.integers(0, 6))):
            s, o = rng.choice(g, 2, replace=False)
            rels.append([s, o, rng.integers(1, num_predicates + 1)])
        if rels and rng.random() < 0.5:  # same pair, another predicate (kept as a second row)
            rels.append([rels[0][0], rels[0][1], rng.integers(1, num_predicates + 1)])
        if rels and rng.random() < 0.2:  # an exact duplicate row
            rels.append(list(rels[-1]))
    relations = np.asarray(rels, dtype=np.int64).reshape(-1, 3)
    gt = {"boxes": gt_boxes, "labels": gt_labels, "relations": relations}

    if mode == "sgdet":
        n = int(rng.integers(0, max_objects + 3))
        src = rng.integers(0, max(g, 1), n)
        base = gt_boxes[src] if g else np.tile([10.0, 10.0, 30.0, 30.0], (n, 1))
        boxes = base + rng.integers(-3, 4, (n, 4))
        boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
        labels = np.where(rng.random(n) < 0.7, gt_labels[src] if g else 1,
                          rng.integers(1, num_classes + 1, n))
    else:
        n = g
        boxes = gt_boxes.copy()
        labels = gt_labels.copy() if mode == "predcls" else np.where(
            rng.random(n) < 0.7, gt_labels, rng.integers(1, num_classes + 1, n))
        if mode == "predcls" and n:  # PredCls must ignore what the prediction says
            boxes = boxes + rng.integers(-20, 20, (n, 4))
            labels = rng.integers(1, num_classes + 1, n)
    obj_scores = rng.random(n).astype(np.float32)
    if quantise:
        obj_scores = (np.round(obj_scores * 4) / 4).astype(np.float32)
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    pairs = np.column_stack([ii, jj]).astype(np.int64)
    if rng.random() < 0.15:
        pairs = pairs[:0]
    rel_scores = rng.random((len(pairs), num_predicates + 1)).astype(np.float32)
    if quantise:
        rel_scores = (np.round(rel_scores * 5) / 5).astype(np.float32)
    pairs, rel_scores = _sorted_by_triplet(pairs, rel_scores, obj_scores)
    pred = {"boxes": boxes.astype(np.float32), "labels": labels, "scores": obj_scores,
            "rel_pairs": pairs, "rel_scores": rel_scores}
    return gt, pred


def large_image(rng: np.random.Generator, mode: str, num_objects: int, num_predicates: int,
                num_classes: int = 4):
    """Many objects (M = n(n-1) > 100 pairs, so the ng row-bound path is used), coarse scores
    (many ties, some exact zeros)."""
    g = num_objects
    xy = rng.integers(0, 40, (g, 2)).astype(np.float32)
    gt_boxes = np.concatenate([xy, xy + rng.integers(5, 25, (g, 2))], 1)
    gt_labels = rng.integers(1, num_classes + 1, g)
    r = int(rng.integers(5, 30))
    subj = rng.integers(0, g, r)
    obj = (subj + rng.integers(1, g, r)) % g
    relations = np.column_stack([subj, obj, rng.integers(1, num_predicates + 1, r)])
    gt = {"boxes": gt_boxes, "labels": gt_labels, "relations": relations}
    if mode == "sgdet":
        n = num_objects + 5
        src = rng.integers(0, g, n)
        boxes = gt_boxes[src] + rng.integers(-2, 3, (n, 4))
        labels = np.where(rng.random(n) < 0.8, gt_labels[src], rng.integers(1, num_classes + 1, n))
    else:
        n = g
        boxes, labels = gt_boxes.copy(), gt_labels.copy()
    obj_scores = (np.round(rng.random(n) * 3) / 3).astype(np.float32)
    ii, jj = np.nonzero(~np.eye(n, dtype=bool))
    pairs = np.column_stack([ii, jj]).astype(np.int64)
    rel_scores = (np.round(rng.random((len(pairs), num_predicates + 1)) * 3) / 3).astype(np.float32)
    pairs, rel_scores = _sorted_by_triplet(pairs, rel_scores, obj_scores)
    return gt, {"boxes": boxes, "labels": labels, "scores": obj_scores, "rel_pairs": pairs,
                "rel_scores": rel_scores}


def assert_same_metrics(ours: dict, ref: dict) -> None:
    """Every key of the reference equal with ==, NaN == NaN, lists element-wise."""
    assert set(ours) - {"predicate_names"} == set(ref), set(ours) ^ set(ref)
    for key, expected in ref.items():
        got = ours[key]
        if isinstance(expected, list):
            assert len(got) == len(expected), key
            pairs = list(zip(got, expected))
        else:
            pairs = [(got, expected)]
        for a, b in pairs:
            if isinstance(b, float) and math.isnan(b):
                assert isinstance(a, float) and math.isnan(a), (key, a, b)
            else:
                assert a == b, (key, a, b)


@pytest.fixture(scope="session")
def sg():
    """The helpers above, as a fixture (test modules do not import conftest by name)."""
    return SimpleNamespace(random_image=random_image, large_image=large_image,
                           assert_same_metrics=assert_same_metrics)
