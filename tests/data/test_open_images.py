"""The oiv6 format (PySGG's Open Images V6 files): reader (exact dicts, +1 ids, clipping, dropped
records, every trap's error), catalog, statistics, OIEvaluator selection, a tiny train + OI eval run."""
import copy
import json
import os
import sys

import numpy as np
import pytest

from sgg.data.catalog import get_dataset_files
from sgg.data.datasets import DATASET_FORMAT_REGISTRY, OpenImagesDataset, VG150Dataset
from sgg.data.datasets.open_images import OpenImagesError, categories_file, split_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import make_synthvg, tiny_config  # noqa: E402

CATEGORIES = {"obj": ["person", "horse", "hat"], "rel": ["on", "riding", "wears"]}
CLASSES = ["__background__", "person", "horse", "hat"]
PREDICATES = ["__background__", "on", "riding", "wears"]

TEST = [
    # kept: two predicates on one pair; the second box sticks out by 1 px (clipped to w - 1 = 39)
    {"img_fn": "aa01", "img_size": [40, 30], "bbox": [[1.5, 2, 11.5, 10], [5, 5, 40, 29]], "det_labels": [0, 1],
     "rel": [[0, 1, 1], [0, 1, 0]]},
    # dropped: no relation
    {"img_fn": "bb02", "img_size": [20, 50], "bbox": [[0, 0, 5, 5], [10, 20, 19, 49]], "det_labels": [2, 0],
     "rel": []},
    # dropped: no box
    {"img_fn": "cc03", "img_size": [10, 10], "bbox": [], "det_labels": [], "rel": []},
    # kept: x1 = -1 clipped to 0
    {"img_fn": "dd04", "img_size": [20, 50], "bbox": [[-1, 0, 5, 5], [2, 3, 6, 8], [10, 20, 19, 49]],
     "det_labels": [1, 2, 0], "rel": [[2, 1, 2]]},
]
TRAIN = [
    {"img_fn": "tr01", "img_size": [40, 30], "bbox": [[0, 0, 10, 10], [5, 5, 20, 20]], "det_labels": [0, 2],
     "rel": [[0, 1, 2], [0, 1, 0], [1, 0, 1]]},
    {"img_fn": "tr02", "img_size": [40, 30], "bbox": [[0, 0, 10, 10]], "det_labels": [0], "rel": []},
]
VAL = [{"img_fn": "va01", "img_size": [40, 30], "bbox": [[0, 0, 10, 10], [5, 5, 20, 20]], "det_labels": [1, 0],
        "rel": [[1, 0, 0]]}]


def write_oi(root, splits=None, categories=CATEGORIES, images=True):
    """``root/annotations/{categories_dict,vrd-<split>-anno}.json`` (+ empty image files)."""
    splits = {"train": TRAIN, "val": VAL, "test": TEST} if splits is None else splits
    os.makedirs(os.path.join(str(root), "annotations"), exist_ok=True)
    os.makedirs(os.path.join(str(root), "images"), exist_ok=True)
    with open(categories_file(str(root)), "w") as f:
        json.dump(categories, f)
    for split, recs in splits.items():
        with open(split_file(str(root), split), "w") as f:
            json.dump(recs, f)
        if images:
            for r in recs:
                open(os.path.join(str(root), "images", r["img_fn"] + ".jpg"), "wb").close()
    return str(root)


def test_hand_written_files_exact_dicts(tmp_path):
    root = write_oi(tmp_path / "myoi")
    ds = OpenImagesDataset(root, "test")
    assert ds.ind_to_classes == CLASSES and ds.ind_to_predicates == PREDICATES
    assert (ds.num_classes, ds.num_predicates, len(ds)) == (4, 4, 2)
    assert [ds.get_img_info(i)["img_fn"] for i in range(2)] == ["aa01", "dd04"]
    d = ds[0]
    assert (d["image_id"], d["width"], d["height"]) == (0, 40, 30)
    assert d["file_name"] == os.path.join(root, "images", "aa01.jpg")
    np.testing.assert_array_equal(d["boxes"], np.array([[1.5, 2, 11.5, 10], [5, 5, 39, 29]], np.float32))
    assert d["boxes"].dtype == np.float32
    np.testing.assert_array_equal(d["labels"], [1, 2])
    np.testing.assert_array_equal(d["relations"], [[0, 1, 2], [0, 1, 1]])
    g = ds.get_groundtruth(1)
    assert (g["image_id"], g["width"], g["height"]) == (3, 20, 50)
    np.testing.assert_array_equal(g["boxes"], np.array([[0, 0, 5, 5], [2, 3, 6, 8], [10, 20, 19, 49]], np.float32))
    np.testing.assert_array_equal(g["labels"], [2, 3, 1])
    np.testing.assert_array_equal(g["relations"], [[2, 1, 3]])
    np.testing.assert_array_equal(ds.get_triplets(), [[1, 2, 2], [1, 2, 1], [1, 3, 3]])
    np.testing.assert_allclose(ds.gt_boxes_1024[0][1], [128, 128, 1024, 742.4])  # unclipped, longer side 1024
    assert ds.selection_counts == {"rows": 4, "usable": 2, "after_num_im": 2, "selected": 2, "kept": 2}
    assert len(OpenImagesDataset(root, "test", filter_empty_rels=False)) == 3  # the record without boxes goes
    assert len(OpenImagesDataset(root, "test", num_im=1)) == 1


def test_train_dedup_val_file_and_eval_gt_keeps_rows(tmp_path):
    root = write_oi(tmp_path / "myoi")
    tr = OpenImagesDataset(root, "train", filter_duplicate_rels=True, rng=np.random.default_rng(0))
    assert len(tr) == 1 and tr.filter_duplicate_rels
    seen = set()
    for _ in range(30):
        rels = tr[0]["relations"]
        assert len(rels) == 2 and sorted(map(tuple, rels[:, :2].tolist())) == [(0, 1), (1, 0)]
        seen.add(int(rels[rels[:, 0] == 0][0, 2]))
    assert seen == {1, 3}  # one predicate drawn per pair and call
    np.testing.assert_array_equal(tr.get_groundtruth(0)["relations"], [[0, 1, 3], [0, 1, 1], [1, 0, 2]])
    assert not OpenImagesDataset(root, "test", filter_duplicate_rels=True).filter_duplicate_rels
    va = OpenImagesDataset(root, "val", num_val_im=5000)  # its own file, num_val_im unused
    assert len(va) == 1 and va.get_img_info(0)["img_fn"] == "va01"
    np.testing.assert_array_equal(va[0]["relations"], [[1, 0, 1]])


def _with(recs, k, **edit):
    recs = copy.deepcopy(recs)
    recs[k].update(edit)
    return recs


@pytest.mark.parametrize("edit, pattern", [
    (dict(det_labels=[0, 3]), r"vrd-test-anno.json: image 'aa01' \(record 0\): det_labels\[1\] = 3 is out of range"),
    (dict(det_labels=[-1, 0]), r"image 'aa01' \(record 0\): det_labels\[0\] = -1 is out of range"),
    (dict(rel=[[0, 1, 3]]), r"image 'aa01' \(record 0\): rel\[0\] has predicate 3, out of range 0..2"),
    (dict(rel=[[0, 5, 0]]), r"image 'aa01' \(record 0\): rel\[0\] = \[0, 5, 0\] names a box index outside 0..1"),
    (dict(bbox=[[1, 2, 3, 4], [50, 40, 60, 45]]), r"image 'aa01' \(record 0\): bbox\[1\] = .* entirely outside its "
                                                  r"40x30 image"),
    (dict(bbox=[[39, 2, 45, 4], [5, 5, 6, 6]]), r"bbox\[0\] .* entirely outside"),  # x1 = w - 1: empty after clip
    (dict(bbox=[[1, 2, 3, 4]]), r"has 1 boxes but 2 det_labels"),
    (dict(bbox=[[5, 2, 3, 4], [1, 1, 2, 2]]), r"bbox\[0\] = .* has x2 < x1"),
    (dict(img_size=[40]), r"img_size \[40\] is not \[width, height\]"),
    (dict(rel=[[0, 1]]), r"rel is not a list of \[subject, object, predicate\] integers"),
])
def test_traps_raise_named_errors(tmp_path, edit, pattern):
    root = write_oi(tmp_path / "myoi", {"test": _with(TEST, 0, **edit)})
    with pytest.raises(OpenImagesError, match=pattern) as e:
        OpenImagesDataset(root, "test")
    assert str(e.value).startswith(split_file(root, "test") + ": ")


def test_missing_files_and_bad_categories(tmp_path):
    root = write_oi(tmp_path / "myoi", {"test": TEST})
    with pytest.raises(FileNotFoundError, match=r"vrd-train-anno.json: split file not found"):
        OpenImagesDataset(root, "train")
    os.remove(os.path.join(root, "images", "dd04.jpg"))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images .*dd04.jpg"):
        OpenImagesDataset(root, "test")
    assert len(OpenImagesDataset(root, "test", check_images=False)) == 2
    root2 = write_oi(tmp_path / "bad", {"test": TEST}, categories={"obj": ["a"]})
    with pytest.raises(OpenImagesError, match=r"categories_dict.json: 'rel': is missing or empty"):
        OpenImagesDataset(root2, "test")
    os.remove(categories_file(root2))
    with pytest.raises(FileNotFoundError, match=r"categories_dict.json: categories file not found"):
        OpenImagesDataset(root2, "test")


def test_box_slightly_beyond_is_clipped_with_a_warning(tmp_path, caplog):
    root = write_oi(tmp_path / "myoi", {"test": _with(TEST, 0, bbox=[[1, 2, 3, 4], [5, 5, 45, 29]])})
    ds = OpenImagesDataset(root, "test")
    assert ds[0]["boxes"][1].tolist() == [5, 5, 39, 29]
    assert any("stick out of their image" in r.getMessage() for r in caplog.records)


def test_catalog_resolves_oiv6_folders(tmp_path):
    from sgg.config import get_default_config
    from sgg.data.build import build_dataset
    from sgg.data.catalog import is_oiv6_folder

    root = write_oi(tmp_path / "myoi")
    f = get_dataset_files("myoi_test", str(tmp_path))
    assert f.format == "oiv6" and f.split == "test" and f.root == root and is_oiv6_folder(root)
    assert f.annotation_file == split_file(root, "test") and f.img_dir == os.path.join(root, "images")
    assert f.source_files() == (categories_file(root), split_file(root, "train"))
    assert DATASET_FORMAT_REGISTRY.get(f.format) is OpenImagesDataset
    # PySGG's names: oiv6_{split} -> DATA_DIR/openimages/open_image_v6
    pysgg = write_oi(tmp_path / "openimages" / "open_image_v6")
    g = get_dataset_files("oiv6_val", str(tmp_path))
    assert g.format == "oiv6" and g.root == pysgg and g.annotation_file == split_file(pysgg, "val")

    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path)])
    ds = build_dataset(cfg, "myoi_train", is_train=True, mode="predcls")
    assert isinstance(ds, OpenImagesDataset) and ds.name == "myoi_train" and ds.filter_duplicate_rels
    assert len(ds) == 1


def test_statistics_and_class_names(tmp_path):
    from sgg.data.datasets import dataset_class_names
    from sgg.data.statistics import get_dataset_statistics

    write_oi(tmp_path / "myoi")
    files = get_dataset_files("myoi_train", str(tmp_path))
    assert dataset_class_names(files) == (CLASSES, PREDICATES)
    s = get_dataset_statistics(files, cache_dir=str(tmp_path), num_val_im=0)
    assert s["obj_classes"] == CLASSES and s["rel_classes"] == PREDICATES and s["num_images"] == 1
    assert s["predicate_counts"].tolist() == [0, 1, 1, 1]
    assert s["fg_matrix"][1, 3, 3] == 1 and s["fg_matrix"][1, 3, 1] == 1 and s["fg_matrix"][3, 1, 2] == 1


def test_build_relation_evaluator_selects_oi_for_oiv6(tmp_path):
    from sgg.config import get_default_config
    from sgg.data.build import build_dataset
    from sgg.engine.inference import build_relation_evaluator
    from sgg.evaluation import OIEvaluator, SceneGraphEvaluator

    write_oi(tmp_path / "myoi")
    make_synthvg(tmp_path, num_images=6)
    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path), "DATASETS.NUM_VAL_IMAGES", "1"])
    cfg.merge_from_list(["OUTPUT_DIR", str(tmp_path / "out")])
    ev = build_relation_evaluator(cfg, build_dataset(cfg, "myoi_test", is_train=False, mode="predcls"), "predcls")
    assert isinstance(ev, OIEvaluator) and ev.num_predicates == 3
    # no zero-shot file: the test triplets never seen in train (train: (person, hat, wears),
    # (person, hat, on), (hat, person, riding); test: (person, horse, riding), (person, horse, on),
    # (person, hat, wears))
    assert sorted(map(tuple, np.asarray(ev.zeroshot_triplets).tolist())) == [(1, 2, 1), (1, 2, 2)]
    vg = build_relation_evaluator(cfg, build_dataset(cfg, "synthvg_tiny_test", is_train=False, mode="predcls"),
                                  "predcls")
    assert type(vg) is SceneGraphEvaluator


def test_write_report_with_oi_metrics(tmp_path):
    from sgg.evaluation import evaluate_oi_relations, format_oi_report, is_oi_metrics, write_report

    ds = OpenImagesDataset(write_oi(tmp_path / "myoi"), "test")
    gts, preds = [], []
    for i in range(len(ds)):
        g = ds.get_groundtruth(i)
        n, m = len(g["labels"]), len(g["relations"])
        scores = np.full((m, 4), 0.01, np.float32)
        scores[np.arange(m), g["relations"][:, 2]] = 0.9
        gts.append(g)
        preds.append({"boxes": g["boxes"], "labels": g["labels"], "scores": np.ones(n, np.float32),
                      "rel_pairs": g["relations"][:, :2], "rel_scores": scores})
    metrics = evaluate_oi_relations(gts, preds, "predcls", 3, predicate_names=PREDICATES)
    assert is_oi_metrics(metrics) and metrics["R@50"] == pytest.approx(1.0)
    paths = write_report(metrics, str(tmp_path / "out"))
    txt = open(paths["text"]).read()
    assert txt == format_oi_report(metrics) and "weighted final_score" in txt
    js = json.load(open(paths["json"]))
    for key in ("R@50", "wmAP_rel", "wmAP_phr", "score_wtd"):
        assert key in js


def _synthvg_to_oiv6(src_root, out_root, num_val=2):
    """The splits of a SynthVG (VG150) folder as oiv6 files; images linked as images/{image_id}.jpg."""
    os.makedirs(os.path.join(out_root, "annotations"), exist_ok=True)
    os.makedirs(os.path.join(out_root, "images"), exist_ok=True)
    for split in ("train", "val", "test"):
        f = get_dataset_files(f"synthvg_tiny_{split}", src_root)
        ds = VG150Dataset.from_files(f, num_val_im=num_val)
        recs = []
        for i, info in enumerate(ds.img_info):
            fn = str(info["image_id"])
            dst = os.path.join(out_root, "images", fn + ".jpg")
            if not os.path.exists(dst):
                os.link(ds.filenames[i], dst)
            g = ds.get_groundtruth(i)
            recs.append({"img_fn": fn, "img_size": [int(info["width"]), int(info["height"])],
                         "bbox": g["boxes"].tolist(), "det_labels": (g["labels"] - 1).tolist(),
                         "rel": (g["relations"] - [0, 0, 1]).tolist()})
        with open(split_file(out_root, split), "w") as fh:
            json.dump(recs, fh)
    with open(categories_file(out_root), "w") as fh:
        json.dump({"obj": ds.ind_to_classes[1:], "rel": ds.ind_to_predicates[1:]}, fh)


def test_tiny_train_and_oi_evaluation(tmp_path, one_thread):
    from sgg.engine.relation import train_relation

    src = make_synthvg(tmp_path / "vg", num_images=24)
    data = tmp_path / "data"
    _synthvg_to_oiv6(src, str(data / "synthvg_tiny"))
    assert get_dataset_files("synthvg_tiny_test", str(data)).format == "oiv6"
    out = tmp_path / "run"
    cfg = tiny_config(data, out, "predcls", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
                      "SOLVER.TO_VAL", "False", "SOLVER.WARMUP_ITERS", "1")
    res = train_relation(cfg)
    assert res["state"] == "completed"
    folder = out / "inference" / "synthvg_tiny_test"
    metrics = json.load(open(folder / "relation_metrics.json"))
    for key in ("R@50", "wmAP_rel", "wmAP_phr", "score_wtd", "mR@50"):
        assert key in metrics
    assert "openimage evaluation" in open(folder / "relation_metrics.txt").read()


def _write_images(root, recs):
    import cv2

    for r in recs:
        w, h = r["img_size"]
        cv2.imwrite(os.path.join(root, "images", r["img_fn"] + ".jpg"), np.full((h, w, 3), 128, np.uint8))


def test_validate_dataset_oiv6(tmp_path, capsys):
    from sgg.cli.validate_dataset import main
    from sgg.data.validate import validate_dataset

    root = write_oi(tmp_path / "myoi")
    for recs in (TRAIN, VAL, TEST):
        _write_images(root, recs)
    report = validate_dataset(get_dataset_files("myoi_train", str(tmp_path)))
    assert report.errors == [] and report.summary["images_checked"] == 4
    assert report.summary["splits"]["test"] == {"images": 2, "boxes": 5, "relations": 3}
    assert (report.summary["num_classes"], report.summary["num_predicates"]) == (3, 3)
    assert main(["--data-dir", root, "--no-progress"]) == 0

    # a dangling relation index in test, a wrong image size in val, no usable train record
    bad = write_oi(tmp_path / "badoi", splits={"train": [TRAIN[1]], "val": VAL, "test": _with(TEST, 3, rel=[[0, 5, 0]])})
    _write_images(bad, [dict(VAL[0], img_size=[41, 30])])
    report = validate_dataset(get_dataset_files("badoi_train", str(tmp_path)))
    lines = [p.kind + " | " + p.line() for p in report.errors]
    test_file, train_file = split_file(bad, "test"), split_file(bad, "train")
    assert any(test_file in s and "image 'dd04' (record 3)" in s and "rel[0] = [0, 5, 0]" in s for s in lines), lines
    assert any(s.startswith("empty split") and train_file in s and "has no image" in s for s in lines), lines
    assert any("va01.jpg" in s and "is 41x30" in s for s in lines), lines
    assert main(["--data-dir", bad, "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "rel[0] = [0, 5, 0]" in out and "has no image" in out


def test_convert_oiv6_to_coco_json_and_vg150(tmp_path, capsys, caplog):
    from sgg.cli.convert_dataset import main
    from sgg.data.datasets import CocoJsonDataset

    root = write_oi(tmp_path / "myoi")
    for recs in (TRAIN, VAL, TEST):
        _write_images(root, recs)
    out = str(tmp_path / "oi_json")
    assert main(["--to", "coco_json", "--src", root, "--out", out]) == 0
    assert "train 1 images, val 1 images, test 2 images" in capsys.readouterr().out
    # the record positions repeat across the split files: renumbered 1..4 in split order
    assert any("renumbered 1..4" in r.getMessage() for r in caplog.records)
    for split in ("train", "val", "test"):
        src, dst = OpenImagesDataset(root, split), CocoJsonDataset(out, split, num_val_im=0)
        assert len(src) == len(dst) and dst.ind_to_classes == CLASSES and dst.ind_to_predicates == PREDICATES
        for i in range(len(src)):
            a, b = src.get_groundtruth(i), dst.get_groundtruth(i)
            np.testing.assert_allclose(b["boxes"], a["boxes"], atol=1e-4)
            assert b["labels"].tolist() == a["labels"].tolist()
            assert b["relations"].tolist() == a["relations"].tolist()
    assert [info["image_id"] for info in CocoJsonDataset(out, "test").img_info] == [3, 4]
    # straight to VG150 (through a temporary coco_json): same test ground truth on the 1024 grid
    vg = str(tmp_path / "oi_vg")
    assert main(["--to", "vg150", "--src", root, "--out", vg]) == 0
    vt = VG150Dataset.from_files(get_dataset_files("oi_vg_test", str(tmp_path)), num_val_im=1)
    assert [g["relations"].tolist() for g in map(vt.get_groundtruth, range(len(vt)))] == \
        [OpenImagesDataset(root, "test").get_groundtruth(i)["relations"].tolist() for i in range(2)]
    assert not [n for n in os.listdir(str(tmp_path)) if n.startswith(".convert-")]  # temporary folder removed
    with pytest.raises(SystemExit):
        main(["--to", "coco_json", "--src", out, "--out", str(tmp_path / "again")])
