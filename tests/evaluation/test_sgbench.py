"""sgbench interop: export our predictions / GT as sgbench JSON, score sgbench predictions files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sgg.evaluation import evaluate_records, make_record, save_predictions
from sgg.evaluation.sgbench import (SgbenchFileError, evaluate_sgbench_predictions, export_sgbench,
                                    load_sgbench_predictions)

P = 3  # predicates 1..3 (0-based 0..2 in sgbench files)
C = 3  # object classes 1..3


def one_hot(preds, p=P):
    """rel_scores rows whose arg-max predicate is ``preds[i]`` (descending, so already sorted)."""
    scores = np.full((len(preds), p + 1), 0.01, np.float32)
    for i, q in enumerate(preds):
        scores[i, q] = 0.9 - 0.01 * i
    return scores


def hand_case():
    """Two images. Image 10: R = 3, predicted (0,1,1) hit, (1,2,2) hit, (0,2,1) miss (GT says 3).
    Image 11: R = 1, predicted (1,0,2) miss (reversed pair), then (0,1,2) hit.
    R@1 = (1/3 + 0) / 2 = 1/6; R@20 = (2/3 + 1) / 2 = 5/6;
    mR@20: p1 = 1, p2 = mean(1, 1) = 1, p3 = 0 -> 2/3."""
    box_a, box_b, box_c = [0., 0., 10., 10.], [20., 20., 30., 30.], [40., 0., 50., 10.]
    gts = [
        {"image_id": 10, "boxes": np.array([box_a, box_b, box_c], np.float32),
         "labels": np.array([1, 2, 3]), "relations": np.array([[0, 1, 1], [1, 2, 2], [0, 2, 3]])},
        {"image_id": 11, "boxes": np.array([box_a, [10., 10., 20., 20.]], np.float32),
         "labels": np.array([1, 1]), "relations": np.array([[0, 1, 2]])},
    ]
    preds = [
        {"boxes": gts[0]["boxes"] + 0.5, "labels": np.array([1, 2, 3]),
         "scores": np.array([0.9, 0.8, 0.7], np.float32),
         "rel_pairs": np.array([[0, 1], [1, 2], [0, 2]]), "rel_scores": one_hot([1, 2, 1])},
        {"boxes": gts[1]["boxes"].copy(), "labels": np.array([1, 1]),
         "scores": np.array([0.9, 0.8], np.float32),
         "rel_pairs": np.array([[1, 0], [0, 1]]), "rel_scores": one_hot([2, 2])},
    ]
    return gts, preds


KS = (1, 20, 50, 100)


def records_of(gts, preds, mode, ks=KS):
    return [make_record(g, p, mode, ks, num_predicates=P) for g, p in zip(gts, preds)]


def test_hand_case_round_trip(tmp_path, sg):
    gts, preds = hand_case()
    records = records_of(gts, preds, "sgdet")
    original = evaluate_records(records, "sgdet", P, ks=KS)
    assert original["R@1"] == pytest.approx(1 / 6)
    assert original["R@20"] == pytest.approx(5 / 6)
    assert original["mR@20"] == pytest.approx(2 / 3)
    npz = save_predictions(str(tmp_path / "p.npz"), records, "sgdet", ks=KS)
    paths = export_sgbench(npz, tmp_path / "pred.json", tmp_path / "gt.json", num_predicates=P)
    assert set(paths) == {"predictions", "groundtruth"}
    again = evaluate_sgbench_predictions(tmp_path / "pred.json", gts, "sgdet", P, ks=KS)
    sg.assert_same_metrics(again, original)


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_random_round_trip_scores_identically(tmp_path, sg, mode):
    rng = np.random.default_rng(3)
    images = [sg.random_image(rng, mode, num_predicates=P) for _ in range(30)]
    images += [sg.large_image(rng, mode, num_objects=13, num_predicates=P) for _ in range(2)]
    gts = [dict(g, image_id=100 + i) for i, (g, _) in enumerate(images)]
    records = records_of(gts, [p for _, p in images], mode, ks=(20, 50, 100))
    original = evaluate_records(records, mode, P)
    export_sgbench(records, tmp_path / "pred.json", mode=mode)
    loaded = load_sgbench_predictions(tmp_path / "pred.json", gts, mode, P)
    assert [r.image_id for r in loaded] == [r.image_id for r in records]
    sg.assert_same_metrics(evaluate_records(loaded, mode, P), original)


def test_exported_layout_field_by_field(tmp_path):
    gts, preds = hand_case()
    records = records_of(gts, preds, "sgdet", ks=(20,))
    export_sgbench(records, tmp_path / "pred.json", tmp_path / "gt.json", mode="sgdet",
                   predicate_names=["__background__", "on", "has", "near"],
                   class_names=["__background__", "cup", "table", "man"])
    pred = json.loads((tmp_path / "pred.json").read_text())
    assert pred["version"] == 1
    assert [img["id"] for img in pred["images"]] == [10, 11]
    img = pred["images"][0]
    assert set(img) == {"id", "annotation", "triplets", "ng_triplets"}
    assert img["annotation"] == [
        {"bbox": [0.5, 0.5, 10.5, 10.5], "category": 0},
        {"bbox": [20.5, 20.5, 30.5, 30.5], "category": 1},
        {"bbox": [40.5, 0.5, 50.5, 10.5], "category": 2}]
    assert img["triplets"] == [[0, 1, 0], [1, 2, 1], [0, 2, 0]]
    # ng: every (pair, predicate) by object-pair score x predicate score, best first:
    # 0.9*0.8*0.9 = 0.648 > 0.9*0.7*0.88 = 0.554 > 0.8*0.7*0.89 = 0.498
    assert img["ng_triplets"][:3] == [[0, 1, 0], [0, 2, 0], [1, 2, 1]]
    assert len(img["ng_triplets"]) == 9
    assert pred["images"][1]["triplets"] == [[1, 0, 1], [0, 1, 1]]
    gt = json.loads((tmp_path / "gt.json").read_text())
    assert gt["predicate_classes"] == ["on", "has", "near"]
    assert gt["thing_classes"] == ["cup", "table", "man"] and gt["stuff_classes"] == []
    assert gt["test_image_ids"] == [10, 11]
    assert gt["data"][0] == {
        "image_id": 10, "relations": [[0, 1, 0], [1, 2, 1], [0, 2, 2]],
        "annotations": [{"bbox": [0.0, 0.0, 10.0, 10.0], "category_id": 0},
                        {"bbox": [20.0, 20.0, 30.0, 30.0], "category_id": 1},
                        {"bbox": [40.0, 0.0, 50.0, 10.0], "category_id": 2}]}
    assert gt["data"][1]["relations"] == [[0, 1, 1]]


def test_export_refuses_background_box(tmp_path):
    gts, preds = hand_case()
    preds[1]["labels"] = np.array([1, 0])
    records = records_of(gts, preds, "sgdet")
    with pytest.raises(ValueError, match="image 11: box 1 has label 0"):
        export_sgbench(records, tmp_path / "pred.json", mode="sgdet")


def external_file(tmp_path, images, version=1, name="other.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": version, "images": images}))
    return path


def test_external_file_hand_computed(tmp_path):
    """As another framework writes it: string ids, own box order, IoU ~0.8 boxes, no scores,
    no ng_triplets, a duplicate triplet and a pair repeated with a second predicate."""
    gts, _ = hand_case()
    images = [
        {"id": "10", "annotation": [
            {"bbox": [40, 0, 50, 11], "category": 2},      # GT 2 (IoU 10*10/(11*11) ~ 0.83)
            {"bbox": [0, 0, 10, 10], "category": 0},       # GT 0
            {"bbox": [20, 20, 30, 30], "category": 1},     # GT 1
            {"bbox": [20, 20, 30, 30], "category": 0}],    # wrong class
         "triplets": [[3, 2, 0],    # miss (class)
                      [1, 0, 2],    # hit GT (0, 2, 3)
                      [1, 0, 2],    # exact duplicate: dropped
                      [1, 0, 0],    # same pair again: dropped from graph-constrained list
                      [2, 0, 1]]},  # hit GT (1, 2, 2) at rank 3
        {"id": 11, "annotation": [{"bbox": [0, 0, 10, 10], "category": 0},
                                  {"bbox": [10, 10, 20, 20], "category": 0}],
         "triplets": [[0, 1, 0]]},  # wrong predicate
    ]
    path = external_file(tmp_path, images)
    m = evaluate_sgbench_predictions(path, gts, "sgdet", P, ks=(1, 2, 3, 20))
    # image 10: rank 1 miss, rank 2 hit (0,2,3), rank 3 hit (1,2,2); image 11: 0
    assert m["R@1"] == 0.0
    assert m["R@2"] == pytest.approx((1 / 3 + 0) / 2)
    assert m["R@3"] == pytest.approx((2 / 3 + 0) / 2)
    assert m["R@20"] == pytest.approx(1 / 3)
    # mR@20: p1 (img10) 0, p2 mean(img10 1, img11 0) = 0.5, p3 1 -> 1.5 / 3
    assert m["mR@20"] == pytest.approx(0.5)
    # ng (no ng_triplets): all deduplicated rows, so the repeated pair's (0, 1, 1) counts too
    # (boxes 1 -> GT 0, 0 -> GT 2: (0, 2, predicate 1) is not a GT row) -> same as R
    assert m["ngR@20"] == pytest.approx(1 / 3)
    with pytest.raises(SgbenchFileError, match=r"other\.json: image 10: 1 triplet\(s\) repeat"):
        load_sgbench_predictions(path, gts, "sgdet", P, repeated_pairs="error")


def test_predcls_needs_gt_objects(tmp_path):
    gts, _ = hand_case()
    images = [{"id": 10, "annotation": [{"bbox": [0, 0, 10, 10], "category": 0},
                                        {"bbox": [20, 20, 30, 30], "category": 1},
                                        {"bbox": [40, 0, 50, 10], "category": 2}],
               "triplets": [[0, 2, 2], [0, 1, 0]]},
              {"id": 11, "annotation": [{"bbox": [0, 0, 10, 10], "category": 0},
                                        {"bbox": [10, 10, 20, 20], "category": 0}],
               "triplets": [[0, 1, 1]]}]
    m = evaluate_sgbench_predictions(external_file(tmp_path, images), gts, "predcls", P, ks=(1, 20))
    assert m["R@1"] == pytest.approx((1 / 3 + 1) / 2)
    assert m["R@20"] == pytest.approx((2 / 3 + 1) / 2)
    images[0]["annotation"] = images[0]["annotation"][::-1]
    with pytest.raises(SgbenchFileError, match="image 10: PredCls scores the GT objects"):
        evaluate_sgbench_predictions(external_file(tmp_path, images), gts, "predcls", P)


def _two_images():
    return [{"id": 10, "annotation": [{"bbox": [0, 0, 10, 10], "category": 0},
                                      {"bbox": [20, 20, 30, 30], "category": 1}],
             "triplets": [[0, 1, 0]]},
            {"id": 11, "annotation": [{"bbox": [0, 0, 10, 10], "category": 0},
                                      {"bbox": [10, 10, 20, 20], "category": 0}],
             "triplets": [[0, 1, 1]]}]


def test_errors_name_file_and_image(tmp_path):
    gts, _ = hand_case()
    images = _two_images()
    with pytest.raises(SgbenchFileError, match=r"bad\.json: .*1 ground-truth image id\(s\).*\[11\]"):
        load_sgbench_predictions(external_file(tmp_path, images[:1], name="bad.json"), gts, "sgdet", P)
    # missing="skip" scores the predicted image only
    m = evaluate_sgbench_predictions(external_file(tmp_path, images[:1]), gts, "sgdet", P, missing="skip")
    assert m["num_images"] == 1 and m["R@20"] == pytest.approx(1 / 3)
    extra = images + [dict(images[0], id=99)]
    with pytest.raises(SgbenchFileError, match=r"bad\.json: 1 image id\(s\) are not in the ground truth.*\[99\]"):
        load_sgbench_predictions(external_file(tmp_path, extra, name="bad.json"), gts, "sgdet", P)
    with pytest.raises(SgbenchFileError, match=r"bad\.json: unsupported sgbench predictions version 2"):
        load_sgbench_predictions(external_file(tmp_path, images, version=2, name="bad.json"), gts, "sgdet", P)
    with pytest.raises(SgbenchFileError, match="version None"):
        load_sgbench_predictions(external_file(tmp_path, images, version=None), gts, "sgdet", P)

    bad = json.loads(json.dumps(images))
    bad[1]["annotation"][1]["category"] = C  # 0-based: C is out of range
    with pytest.raises(SgbenchFileError, match=r"bad\.json: image 11: annotation\[1\] category 3 is outside 0\.\.2"):
        load_sgbench_predictions(external_file(tmp_path, bad, name="bad.json"), gts, "sgdet", P, num_classes=C)
    bad = json.loads(json.dumps(images))
    bad[0]["annotation"][0]["category"] = -1
    with pytest.raises(SgbenchFileError, match=r"image 10: annotation\[0\] category -1"):
        load_sgbench_predictions(external_file(tmp_path, bad), gts, "sgdet", P)
    bad = json.loads(json.dumps(images))
    bad[1]["triplets"] = [[0, 1, 1], [1, 0, P]]
    with pytest.raises(SgbenchFileError, match=r"bad\.json: image 11: triplets\[1\] predicate 3 is outside 0\.\.2"):
        load_sgbench_predictions(external_file(tmp_path, bad, name="bad.json"), gts, "sgdet", P)
    bad = json.loads(json.dumps(images))
    bad[0]["ng_triplets"] = [[0, 2, 0]]
    with pytest.raises(SgbenchFileError, match=r"image 10: ng_triplets\[0\] = \[0, 2, 0\] indexes a box"):
        load_sgbench_predictions(external_file(tmp_path, bad), gts, "sgdet", P)
    bad = json.loads(json.dumps(images))
    del bad[0]["annotation"]
    bad[0]["bboxes"] = [[0, 0, 10, 10]]
    with pytest.raises(SgbenchFileError, match="image 10: no 'annotation' list.*README"):
        load_sgbench_predictions(external_file(tmp_path, bad), gts, "sgdet", P)
    dup = images + [images[1]]
    with pytest.raises(SgbenchFileError, match="image 11: listed twice"):
        load_sgbench_predictions(external_file(tmp_path, dup), gts, "sgdet", P)
    with pytest.raises(SgbenchFileError, match=r"nope\.json: no such"):
        load_sgbench_predictions(tmp_path / "nope.json", gts, "sgdet", P)


def test_groundtruth_from_dataset_like_object(tmp_path):
    gts, _ = hand_case()

    class Split:
        def __len__(self):
            return len(gts)

        def get_img_info(self, i):
            return {"image_id": gts[i]["image_id"]}

        def get_groundtruth(self, i):
            return gts[i]

    m = evaluate_sgbench_predictions(external_file(tmp_path, _two_images()), Split(), "sgdet", P)
    assert m["R@20"] == pytest.approx((1 / 3 + 1) / 2)  # image 11: (0, 1, predicate 2) is its GT row


def test_scored_by_sgbench_itself(tmp_path):
    """Where the conventions agree (exact boxes, no duplicates) sgbench's R@K equals ours."""
    pytest.importorskip("sgbench")
    try:
        import sgbench.file as sgbench_file
    except (ImportError, RuntimeError) as e:  # sgbench.io needs the [io] extra (PIL, tifffile)
        pytest.skip(f"sgbench.file not importable: {e}")
    gts, preds = hand_case()
    for gt, pred in zip(gts, preds):
        pred["boxes"] = gt["boxes"].copy()
    records = records_of(gts, preds, "sgdet")
    ours = evaluate_records(records, "sgdet", P)
    export_sgbench(records, tmp_path / "pred.json", tmp_path / "gt.json", mode="sgdet", num_predicates=P)
    pred = json.loads((tmp_path / "pred.json").read_text())
    theirs = sgbench_file._evaluate(tmp_path / "gt.json", pred, None, None, workers=0)
    for k in (20, 50, 100):
        assert theirs[f"R@{k}"] == pytest.approx(ours[f"R@{k}"])
