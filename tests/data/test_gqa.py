"""The gqa200 format (SHA-GCL's GQA200 files): reader (exact dicts, image ids, clipping, dropped
records, the removed test record 5579, val = head of test), every trap's error, catalog, statistics,
the VG evaluator, a tiny train + evaluation run."""
import copy
import json
import logging
import os
import sys

import numpy as np
import pytest

from sgg.data.catalog import get_dataset_files
from sgg.data.datasets import DATASET_FORMAT_REGISTRY, VG150Dataset
from sgg.data.datasets.gqa import (DEFAULT_NUM_VAL_IM, INFO_FILE, REMOVED_TEST_INDEX, TEST_FILE, TRAIN_FILE,
                                   GQADataset, GQAError, info_file, parse_split, split_file)

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import make_synthvg, tiny_config  # noqa: E402

CLASSES = ["__background__", "person", "horse", "hat"]
PREDICATES = ["__background__", "on", "riding", "wears"]
INFO = {"ind_to_classes": CLASSES, "ind_to_predicates": PREDICATES}


def rec(fn, info, boxes, classes, rels):
    return {"filename": fn, "info": info, "boxes": boxes, "classes": classes, "rels": rels}


TEST = [
    # kept: integer image_id 11; two predicates on one pair; box 1 sticks out by 1 px (x2 -> w - 1 = 39)
    rec("aa01.jpg", {"width": 40, "height": 30, "image_id": 11, "coco_id": 5}, [[1.5, 2, 11.5, 10], [5, 5, 40, 29]],
        [1, 2], [[0, 1, 2], [0, 1, 1]]),
    # dropped: no relation
    rec("bb02.jpg", {"width": 20, "height": 50}, [[0, 0, 5, 5], [10, 20, 19, 49]], [3, 1], []),
    # dropped: no box
    rec("cc03.jpg", {"width": 10, "height": 10}, [], [], []),
    # kept: a string image_id -> the record's index 3; x1 = -1 -> 0, y2 = 50 -> h - 1 = 49
    rec("sub/dd04.jpg", {"width": 20, "height": 50, "image_id": "n161313"},
        [[-1, 0, 5, 5], [2, 3, 6, 8], [10, 20, 19, 50]], [2, 3, 1], [[2, 1, 3]]),
    # kept: no image_id -> 4
    rec("ee05.jpg", {"width": 40, "height": 30}, [[0, 0, 10, 10], [2, 2, 8, 8]], [1, 3], [[1, 0, 3]]),
]
TRAIN = [
    rec("tr01.jpg", {"width": 40, "height": 30}, [[0, 0, 10, 10], [5, 5, 20, 20]], [1, 3],
        [[0, 1, 3], [0, 1, 1], [1, 0, 2]]),
    rec("tr02.jpg", {"width": 40, "height": 30}, [[0, 0, 10, 10]], [1], []),
    rec("tr03.jpg", {"width": 40, "height": 30, "image_id": 7}, [[0, 0, 10, 10], [5, 5, 20, 20]], [2, 1],
        [[1, 0, 1]]),
]


def split_json(recs):
    return {"filenames_all": [r["filename"] for r in recs], "img_info_all": [r["info"] for r in recs],
            "gt_boxes_all": [r["boxes"] for r in recs], "gt_classes_all": [r["classes"] for r in recs],
            "relationships_all": [r["rels"] for r in recs]}


def write_gqa(root, train=TRAIN, test=TEST, info=INFO, images=True):
    """``root/GQA_200_{ID_Info,Train,Test}.json`` (+ empty image files)."""
    root = str(root)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    with open(os.path.join(root, INFO_FILE), "w") as f:
        json.dump(info, f)
    for name, recs in ((TRAIN_FILE, train), (TEST_FILE, test)):
        if recs is None:
            continue
        with open(os.path.join(root, name), "w") as f:
            json.dump(split_json(recs) if isinstance(recs, list) else recs, f)
        if images and isinstance(recs, list):
            for r in recs:
                path = os.path.join(root, "images", r["filename"])
                os.makedirs(os.path.dirname(path), exist_ok=True)
                open(path, "wb").close()
    return root


def test_hand_written_files_exact_dicts(tmp_path):
    root = write_gqa(tmp_path / "mygqa")
    ds = GQADataset(root, "test")
    assert ds.ind_to_classes == CLASSES and ds.ind_to_predicates == PREDICATES
    assert (ds.num_classes, ds.num_predicates, len(ds)) == (4, 4, 3)
    assert [ds.get_img_info(i)["image_id"] for i in range(3)] == [11, 3, 4]
    assert ds.get_img_info(0) == {"width": 40, "height": 30, "image_id": 11, "coco_id": 5, "file_name": "aa01.jpg"}
    assert ds.get_img_info(1) == {"width": 20, "height": 50, "image_id": 3, "file_image_id": "n161313",
                                  "file_name": "sub/dd04.jpg"}
    d = ds[0]
    assert (d["image_id"], d["width"], d["height"]) == (11, 40, 30)
    assert d["file_name"] == os.path.join(root, "images", "aa01.jpg")
    assert d["boxes"].dtype == np.float32
    np.testing.assert_array_equal(d["boxes"], np.array([[1.5, 2, 11.5, 10], [5, 5, 39, 29]], np.float32))
    np.testing.assert_array_equal(d["labels"], [1, 2])
    np.testing.assert_array_equal(d["relations"], [[0, 1, 2], [0, 1, 1]])  # test: duplicate pair kept
    g = ds.get_groundtruth(1)
    assert (g["image_id"], g["width"], g["height"]) == (3, 20, 50)
    assert ds[1]["file_name"] == os.path.join(root, "images", "sub", "dd04.jpg")
    np.testing.assert_array_equal(g["boxes"], np.array([[0, 0, 5, 5], [2, 3, 6, 8], [10, 20, 19, 49]], np.float32))
    np.testing.assert_array_equal(g["labels"], [2, 3, 1])
    np.testing.assert_array_equal(g["relations"], [[2, 1, 3]])
    np.testing.assert_array_equal(ds.get_triplets(), [[1, 2, 2], [1, 2, 1], [1, 3, 3], [3, 1, 3]])
    np.testing.assert_allclose(ds.gt_boxes_1024[0][1], [128, 128, 1024, 742.4])  # unclipped, longer side 1024
    assert ds.selection_counts == {"rows": 5, "removed": 0, "usable": 3, "after_num_im": 3, "selected": 3, "kept": 3}
    assert ds.empty_reason() is None and not ds.has_val_file
    assert repr(ds).startswith("GQADataset(split='test', images=3, classes=4, predicates=4")
    # filter_empty_rels=False keeps bb02 (boxes, no relation), never cc03 (no box)
    assert [i["file_name"] for i in GQADataset(root, "test", filter_empty_rels=False).img_info] == [
        "aa01.jpg", "bb02.jpg", "sub/dd04.jpg", "ee05.jpg"]
    assert len(GQADataset(root, "test", num_im=1)) == 1


def test_val_is_head_of_test_and_train_file(tmp_path):
    root = write_gqa(tmp_path / "mygqa")
    assert DEFAULT_NUM_VAL_IM == 5000 and REMOVED_TEST_INDEX == 5579
    assert [i["image_id"] for i in GQADataset(root, "val").img_info] == [11, 3, 4]  # default 5000: all
    va = GQADataset(root, "val", num_val_im=2)
    assert [i["image_id"] for i in va.img_info] == [11, 3] and va.annotation_file == split_file(root, "test")
    np.testing.assert_array_equal(va.get_groundtruth(0)["relations"], [[0, 1, 2], [0, 1, 1]])
    assert len(GQADataset(root, "test", num_val_im=2)) == 3  # test keeps the val images
    empty = GQADataset(root, "val", num_val_im=0)
    assert len(empty) == 0
    reason, fix = empty.empty_reason()
    assert "DATASETS.NUM_VAL_IMAGES = 0" in reason and "set DATASETS.NUM_VAL_IMAGES > 0" in fix
    tr = GQADataset(root, "train", num_val_im=2)  # num_val_im does not touch train
    assert tr.annotation_file == split_file(root, "train") == os.path.join(root, TRAIN_FILE)
    assert [i["image_id"] for i in tr.img_info] == [0, 7]
    assert tr.selection_counts["rows"] == 3 and tr.selection_counts["removed"] == 0


def test_train_dedup_and_eval_gt_keeps_rows(tmp_path):
    root = write_gqa(tmp_path / "mygqa")
    tr = GQADataset(root, "train", filter_duplicate_rels=True, rng=np.random.default_rng(0))
    assert len(tr) == 2 and tr.filter_duplicate_rels
    seen = set()
    for _ in range(30):
        rels = tr[0]["relations"]
        assert len(rels) == 2 and sorted(map(tuple, rels[:, :2].tolist())) == [(0, 1), (1, 0)]
        seen.add(int(rels[rels[:, 0] == 0][0, 2]))
    assert seen == {1, 3}  # one predicate drawn per pair and call
    np.testing.assert_array_equal(tr.get_groundtruth(0)["relations"], [[0, 1, 3], [0, 1, 1], [1, 0, 2]])
    np.testing.assert_array_equal(tr[1]["relations"], [[1, 0, 1]])
    assert not GQADataset(root, "test", filter_duplicate_rels=True).filter_duplicate_rels


def _many(n, no_rel=()):
    """``n`` one-box records ``00000.jpg``.. (image ids = positions); those of ``no_rel`` without relation."""
    return [rec(f"{k:05d}.jpg", {"width": 10, "height": 10}, [[1, 1, 5, 5]], [1],
                [] if k in no_rel else [[0, 0, 1]]) for k in range(n)]


def test_record_5579_of_the_test_file_is_removed(tmp_path):
    n = REMOVED_TEST_INDEX + 2  # 5581 records: 0 .. 5580
    test = _many(n, no_rel=(3,))
    test[REMOVED_TEST_INDEX]["classes"] = [999]  # broken, but skipped unread (as SHA-GCL does)
    root = write_gqa(tmp_path / "big", train=_many(n), test=test, images=False)
    te = GQADataset(root, "test", check_images=False)
    ids = [i["image_id"] for i in te.img_info]
    assert len(te) == n - 2 and 5578 in ids and 5580 in ids and REMOVED_TEST_INDEX not in ids and 3 not in ids
    assert te.get_img_info(len(te) - 1)["file_name"] == "05580.jpg"
    assert te.selection_counts == {"rows": n, "removed": 1, "usable": n - 2, "after_num_im": n - 2,
                                   "selected": n - 2, "kept": n - 2}
    va = GQADataset(root, "val", check_images=False)  # the first 5000 of the filtered test list
    assert [i["image_id"] for i in va.img_info] == ids[:5000] and ids[:5] == [0, 1, 2, 4, 5]
    va = GQADataset(root, "val", num_val_im=n - 3, check_images=False)
    vids = [i["image_id"] for i in va.img_info]
    assert vids == ids[:n - 3] and 5578 in vids and REMOVED_TEST_INDEX not in vids and 5580 not in vids
    assert [r.index for r in parse_split(split_file(root, "test"), 3, 3, skip=(REMOVED_TEST_INDEX,))][-2:] == [
        5578, 5580]
    tr = GQADataset(root, "train", check_images=False)  # the Train file keeps its record 5579
    assert len(tr) == n and tr.get_img_info(REMOVED_TEST_INDEX)["image_id"] == REMOVED_TEST_INDEX
    # a Test file shorter than 5580 records loses nothing
    root2 = write_gqa(tmp_path / "short", test=_many(REMOVED_TEST_INDEX), images=False)
    assert len(GQADataset(root2, "test", check_images=False)) == REMOVED_TEST_INDEX
    bad = write_gqa(tmp_path / "bad", test=None, train=test, images=False)  # in the Train file it is read
    with pytest.raises(GQAError, match=r"record 5579\): class id \[0\] = 999"):
        GQADataset(bad, "train", check_images=False)


def _with(recs, k, **edit):
    recs = copy.deepcopy(recs)
    recs[k].update(edit)
    return recs


@pytest.mark.parametrize("k, edit, pattern, fix", [
    (0, dict(classes=[1, 4]), r"image 'aa01.jpg' \(record 0\): class id \[1\] = 4 is out of range 1..3",
     "use ids of GQA_200_ID_Info.json ind_to_classes"),
    (0, dict(classes=[0, 1]), r"image 'aa01.jpg' \(record 0\): class id \[0\] = 0 is out of range",
     "0 is the background"),
    (0, dict(rels=[[0, 1, 4]]), r"\(record 0\): relation \[0\] has predicate 4, out of range 1..3",
     "ind_to_predicates"),
    (3, dict(rels=[[0, 1, 0]]), r"image 'sub/dd04.jpg' \(record 3\): relation \[0\] has predicate 0",
     "ind_to_predicates"),
    (0, dict(rels=[[0, 5, 1]]), r"\(record 0\): relation \[0\] = \[0, 5, 1\] names a box index outside 0..1",
     "point subject / object at boxes"),
    (0, dict(boxes=[[1, 2, 3, 4], [50, 40, 60, 45]]), r"\(record 0\): box \[1\] = .* entirely outside its 40x30 image",
     "correct the box"),
    (0, dict(boxes=[[39, 2, 45, 4], [5, 5, 6, 6]]), r"\(record 0\): box \[0\] .* entirely outside", "correct the box"),
    (0, dict(boxes=[[1, 2, 3, 4]]), r"\(record 0\): has 1 boxes but 2 class ids", "one gt_classes_all id per"),
    (0, dict(boxes=[[5, 2, 3, 4], [1, 1, 2, 2]]), r"\(record 0\): box \[0\] = .* has x2 < x1", "correct the box"),
    (0, dict(boxes=[[1, 2, 3], [1, 1, 2, 2]]), r"\(record 0\): gt_boxes_all entry is not a list of \[x1, y1, x2, y2\]",
     "correct the box"),
    (4, dict(info={"width": 40}), r"image 'ee05.jpg' \(record 4\): img_info_all\[4\] = .* has no width and height",
     "size in pixels as img_info"),
    (0, dict(rels=[[0, 1]]), r"\(record 0\): relationships_all entry is not a list of \[subject, object, predicate\]",
     "write each relation"),
    (0, dict(classes=["person", "horse"]), r"\(record 0\): gt_classes_all entry is not a list of integers",
     "one class id per box"),
    (1, dict(filename=5), r": record 1: filenames_all\[1\] = 5 is not a file name", "relative to images/"),
    (4, dict(info={"width": 40, "height": 30, "image_id": 3}),
     r"image 'ee05.jpg' \(record 4\): image_id 3 is also the id of record 3", "distinct integer img_info image_id"),
])
def test_record_traps_raise_named_errors(tmp_path, k, edit, pattern, fix):
    root = write_gqa(tmp_path / "mygqa", test=_with(TEST, k, **edit), images=False)
    with pytest.raises(GQAError, match=pattern) as e:
        GQADataset(root, "test", check_images=False)
    path = split_file(root, "test")
    assert str(e.value).startswith(path + ": ") and e.value.file == path and f"record {k}" in e.value.where
    assert fix in str(e.value).rsplit(": ", 1)[1]


def _drop_key(d):
    del d["relationships_all"]


def _short_list(d):
    d["gt_classes_all"].pop()


@pytest.mark.parametrize("edit, pattern", [
    (_drop_key, r"GQA_200_Test.json: top level: has no list relationships_all: write one JSON object"),
    (_short_list, r"top level: the parallel lists differ in length \(filenames_all: 5, img_info_all: 5, "
                  r"gt_boxes_all: 5, gt_classes_all: 4, relationships_all: 5\): give every list one entry"),
])
def test_file_traps_raise_named_errors(tmp_path, edit, pattern):
    d = split_json(TEST)
    edit(d)
    root = write_gqa(tmp_path / "mygqa", test=d, images=False)
    with pytest.raises(GQAError, match=pattern):
        GQADataset(root, "test", check_images=False)


def test_truncated_list_and_missing_files(tmp_path):
    root = write_gqa(tmp_path / "mygqa")
    path = split_file(root, "test")
    text = open(path).read()
    with open(path, "w") as f:
        f.write(text[: len(text) // 2])
    with pytest.raises(GQAError, match=r"GQA_200_Test.json: whole file: not valid JSON .*truncated or corrupt"):
        GQADataset(root, "test")
    with open(path, "w") as f:
        json.dump([1, 2], f)
    with pytest.raises(GQAError, match=r"GQA_200_Test.json: top level: must be a JSON object"):
        GQADataset(root, "val")
    os.remove(path)
    with pytest.raises(FileNotFoundError, match=r"GQA_200_Test.json: split file not found.*Fix: set DATASETS.DATA_DIR "
                                                r"\(or \$SGG_DATA_DIR\)"):
        GQADataset(root, "val")
    os.remove(os.path.join(root, "images", "tr03.jpg"))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images .*tr03.jpg"):
        GQADataset(root, "train")
    assert len(GQADataset(root, "train", check_images=False)) == 2
    os.remove(info_file(root))
    with pytest.raises(FileNotFoundError, match=r"GQA_200_ID_Info.json: info file not found.*DATASETS.DATA_DIR"):
        GQADataset(root, "train")


@pytest.mark.parametrize("info, pattern", [
    ({"ind_to_classes": CLASSES}, r"'ind_to_predicates': is missing"),
    ({"ind_to_classes": ["__background__"], "ind_to_predicates": PREDICATES}, r"'ind_to_classes': is missing, .* "
                                                                               r"no name after the background"),
    ({"ind_to_classes": CLASSES[1:], "ind_to_predicates": PREDICATES},
     r"'ind_to_classes': starts with 'person', not the background '__background__': put '__background__' first"),
    ({"ind_to_classes": CLASSES + ["horse"], "ind_to_predicates": PREDICATES},
     r"'ind_to_classes': holds the name 'horse' twice: give every entry a distinct name"),
    ([CLASSES, PREDICATES], r"top level: must be a JSON object"),
])
def test_bad_info_file(tmp_path, info, pattern):
    root = write_gqa(tmp_path / "mygqa", info=info, images=False)
    with pytest.raises(GQAError, match=pattern) as e:
        GQADataset(root, "train", check_images=False)
    assert e.value.file == info_file(root) and str(e.value).startswith(info_file(root) + ": ")


def test_box_slightly_beyond_is_clipped_with_one_warning(tmp_path, caplog):
    test = _with(TEST, 0, boxes=[[1, 2, 3, 4], [5, 5, 45, 29]])
    test = _with(test, 4, boxes=[[0, 0, 10, 10], [2, 2, 8, 38]])
    root = write_gqa(tmp_path / "mygqa", test=test)
    with caplog.at_level(logging.WARNING, logger="sgg.data.datasets.gqa"):
        ds = GQADataset(root, "test")
    assert ds[0]["boxes"][1].tolist() == [5, 5, 39, 29] and ds[2]["boxes"][1].tolist() == [2, 2, 8, 29]
    warnings = [r.getMessage() for r in caplog.records if "stick out of their image" in r.getMessage()]
    assert len(warnings) == 1 and "2 box(es)" in warnings[0] and "image 'aa01.jpg' (record 0): box [1]" in warnings[0]


def test_catalog_build_and_evaluator(tmp_path):
    from sgg.config import get_default_config
    from sgg.data.build import build_dataset
    from sgg.engine.inference import build_relation_evaluator
    from sgg.evaluation import SceneGraphEvaluator

    root = write_gqa(tmp_path / "mygqa")
    f = get_dataset_files("mygqa_test", str(tmp_path))
    assert f.format == "gqa200" and f.split == "test" and f.root == root
    assert f.annotation_file == os.path.join(root, TEST_FILE) and f.img_dir == os.path.join(root, "images")
    assert get_dataset_files("mygqa_val", str(tmp_path)).annotation_file == os.path.join(root, TEST_FILE)
    assert get_dataset_files("mygqa_train", str(tmp_path)).annotation_file == os.path.join(root, TRAIN_FILE)
    assert f.source_files() == (os.path.join(root, INFO_FILE), os.path.join(root, TRAIN_FILE))
    assert DATASET_FORMAT_REGISTRY.get(f.format) is GQADataset
    # SHA-GCL's names: GQA_200_{split} -> DATA_DIR/gqa
    sha = write_gqa(tmp_path / "gqa")
    g = get_dataset_files("GQA_200_val", str(tmp_path))
    assert g.format == "gqa200" and g.root == sha and g.split == "val" and g.annotation_file == split_file(sha, "val")

    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path), "DATASETS.NUM_VAL_IMAGES", "2"])
    tr = build_dataset(cfg, "mygqa_train", is_train=True, mode="predcls")
    assert isinstance(tr, GQADataset) and tr.name == "mygqa_train" and tr.filter_duplicate_rels and len(tr) == 2
    va = build_dataset(cfg, "GQA_200_val", is_train=False, mode="predcls")
    assert isinstance(va, GQADataset) and len(va) == 2 and not va.filter_duplicate_rels
    ev = build_relation_evaluator(cfg, va, "predcls")
    assert type(ev) is SceneGraphEvaluator
    cfg.merge_from_list(["DATASETS.NUM_VAL_IMAGES", "0"])
    with pytest.raises(ValueError, match=r"dataset 'mygqa_val' has no image: .*DATASETS.NUM_VAL_IMAGES = 0.*Fix: set "
                                         r"DATASETS.NUM_VAL_IMAGES > 0"):
        build_dataset(cfg, "mygqa_val", is_train=False, mode="predcls")


def test_statistics_and_class_names(tmp_path):
    from sgg.data.datasets import dataset_class_names
    from sgg.data.statistics import get_dataset_statistics

    write_gqa(tmp_path / "mygqa")
    files = get_dataset_files("mygqa_train", str(tmp_path))
    assert dataset_class_names(files) == (CLASSES, PREDICATES)
    assert GQADataset.class_names(get_dataset_files("mygqa_test", str(tmp_path))) == (CLASSES, PREDICATES)
    s = get_dataset_statistics(files, cache_dir=str(tmp_path), num_val_im=0)
    assert s["obj_classes"] == CLASSES and s["rel_classes"] == PREDICATES and s["num_images"] == 2
    assert s["predicate_counts"].tolist() == [0, 2, 1, 1]
    fg = s["fg_matrix"]
    assert fg[1, 3, 3] == 1 and fg[1, 3, 1] == 1 and fg[3, 1, 2] == 1 and fg[1, 2, 1] == 1 and fg[:, :, 1:].sum() == 4


def _synthvg_to_gqa(src_root, out_root, num_val=2):
    """A SynthVG (VG150) folder as GQA200 files: its train split as the Train file, its test split as
    the Test file; images linked as images/{image_id}.jpg."""
    os.makedirs(os.path.join(out_root, "images"), exist_ok=True)
    for split, name in (("train", TRAIN_FILE), ("test", TEST_FILE)):
        f = get_dataset_files(f"synthvg_tiny_{split}", src_root)
        ds = VG150Dataset.from_files(f, num_val_im=num_val)
        recs = []
        for i, info in enumerate(ds.img_info):
            fn = f"{info['image_id']}.jpg"
            dst = os.path.join(out_root, "images", fn)
            if not os.path.exists(dst):
                os.link(ds.filenames[i], dst)
            g = ds.get_groundtruth(i)
            recs.append(rec(fn, {"width": int(info["width"]), "height": int(info["height"]),
                                 "image_id": int(info["image_id"])}, g["boxes"].tolist(), g["labels"].tolist(),
                            g["relations"].tolist()))
        with open(os.path.join(out_root, name), "w") as fh:
            json.dump(split_json(recs), fh)
    with open(os.path.join(out_root, INFO_FILE), "w") as fh:
        json.dump({"ind_to_classes": list(ds.ind_to_classes), "ind_to_predicates": list(ds.ind_to_predicates)}, fh)


def test_tiny_train_and_evaluation(tmp_path, one_thread):
    from sgg.engine.relation import train_relation

    src = make_synthvg(tmp_path / "vg", num_images=24)
    data = tmp_path / "data"
    _synthvg_to_gqa(src, str(data / "synthvg_tiny"))
    assert get_dataset_files("synthvg_tiny_test", str(data)).format == "gqa200"
    out = tmp_path / "run"
    cfg = tiny_config(data, out, "predcls", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
                      "SOLVER.TO_VAL", "False", "SOLVER.WARMUP_ITERS", "1")
    res = train_relation(cfg)
    assert res["state"] == "completed"
    metrics = json.load(open(out / "inference" / "synthvg_tiny_test" / "relation_metrics.json"))
    for key in ("R@50", "mR@50"):
        assert key in metrics
    assert "wmAP_rel" not in metrics  # the VG evaluator, not the Open Images one
