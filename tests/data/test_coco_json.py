"""The coco_json format: reader (exact dicts, id rules, every trap's error), catalog, converters
(round trips), statistics equal to VG150's, a tiny train + eval run, the validator's lines."""
import copy
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from sgg.data.catalog import get_dataset_files
from sgg.data.datasets import DATASET_FORMAT_REGISTRY, CocoJsonDataset, VG150Dataset
from sgg.data.datasets.coco_json import (CocoJsonError, coco_json_to_vg150, split_file, vg150_to_coco_json)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import make_synthvg, tiny_config  # noqa: E402

# 3 images: 7 (2 objects, 2 relations on one pair), 9 (3 objects, 1 relation), 11 (1 object, no relation)
HAND = {
    "images": [{"id": 7, "file_name": "a.jpg", "width": 40, "height": 30},
               {"id": 9, "file_name": "b.jpg", "width": 20, "height": 50},
               {"id": 11, "file_name": "c.jpg", "width": 10, "height": 10}],
    "annotations": [
        {"id": 100, "image_id": 7, "category_id": 3, "bbox": [1.5, 2, 10, 8], "area": 80, "iscrowd": 0},
        {"id": 101, "image_id": 7, "category_id": 5, "bbox": [5, 5, 20, 10], "area": 200, "iscrowd": 0},
        {"id": 200, "image_id": 9, "category_id": 5, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
        {"id": 201, "image_id": 9, "category_id": 3, "bbox": [10, 20, 10, 31], "area": 310, "iscrowd": 0},
        {"id": 202, "image_id": 9, "category_id": 8, "bbox": [2, 3, 4, 5], "area": 20, "iscrowd": 0},
        {"id": 300, "image_id": 11, "category_id": 8, "bbox": [0, 0, 5, 5], "area": 25, "iscrowd": 0},
    ],
    "categories": [{"id": 5, "name": "horse", "supercategory": "animal"},
                   {"id": 3, "name": "person", "supercategory": "human"},
                   {"id": 8, "name": "hat", "supercategory": "thing"}],
    "rel_annotations": [
        {"id": 1, "image_id": 7, "subject_id": 100, "predicate_id": 2, "object_id": 101},
        {"id": 2, "image_id": 7, "subject_id": 100, "predicate_id": 4, "object_id": 101},
        {"id": 3, "image_id": 9, "subject_id": 201, "predicate_id": 2, "object_id": 202},
    ],
    "rel_categories": [{"id": 4, "name": "riding"}, {"id": 2, "name": "on"}],
}
CLASSES = ["__background__", "person", "horse", "hat"]      # sorted ids 3, 5, 8
PREDICATES = ["__background__", "on", "riding"]            # sorted ids 2, 4


def zero_based(js):
    """The same data with 0-based category / predicate ids (Maelic's example convention)."""
    js = copy.deepcopy(js)
    cat = {3: 0, 5: 1, 8: 2}
    pred = {2: 0, 4: 1}
    for c in js["categories"]:
        c["id"] = cat[c["id"]]
    for a in js["annotations"]:
        a["category_id"] = cat[a["category_id"]]
    for r in js["rel_categories"]:
        r["id"] = pred[r["id"]]
    for r in js["rel_annotations"]:
        r["predicate_id"] = pred[r["predicate_id"]]
    return js


def write_folder(root, splits, images=True):
    """``root/<split>/_annotations.coco.json`` for each ``{split: json}`` (+ empty image files)."""
    for split, js in splits.items():
        os.makedirs(os.path.join(root, split), exist_ok=True)
        with open(split_file(root, split), "w") as f:
            json.dump(js, f)
        if images:
            for im in js["images"]:
                open(os.path.join(root, split, im["file_name"]), "wb").close()
    return str(root)


def load(root, split="test", **kw):
    kw.setdefault("check_images", True)
    return CocoJsonDataset(str(root), split, **kw)


# ---------------------------------------------------------------------------------------------- reader
@pytest.mark.parametrize("variant", ["one_based", "zero_based"])
def test_hand_written_file_exact_dicts(tmp_path, variant):
    js = HAND if variant == "one_based" else zero_based(HAND)
    root = write_folder(tmp_path / "d", {"train": js, "test": js})
    ds = load(root, "test")
    assert ds.ind_to_classes == CLASSES and ds.ind_to_predicates == PREDICATES
    assert (ds.num_classes, ds.num_predicates) == (4, 3)
    assert len(ds) == 2  # image 11 has no relation
    d0 = ds[0]
    assert d0["file_name"] == os.path.join(root, "test", "a.jpg")
    assert (d0["image_id"], d0["width"], d0["height"]) == (7, 40, 30)
    np.testing.assert_array_equal(d0["boxes"], np.array([[1.5, 2, 11.5, 10], [5, 5, 25, 15]], np.float32))
    assert d0["boxes"].dtype == np.float32
    np.testing.assert_array_equal(d0["labels"], [1, 2])
    np.testing.assert_array_equal(d0["relations"], [[0, 1, 1], [0, 1, 2]])
    d1 = ds.get_groundtruth(1)
    # bbox [10, 20, 10, 31] -> y2 = 51 clamped to the 50 px image (within the tolerance: no error)
    np.testing.assert_array_equal(d1["boxes"], np.array([[0, 0, 5, 5], [10, 20, 20, 50], [2, 3, 6, 8]], np.float32))
    np.testing.assert_array_equal(d1["labels"], [2, 1, 3])
    np.testing.assert_array_equal(d1["relations"], [[1, 2, 1]])
    assert ds.get_img_info(1)["image_id"] == 9
    np.testing.assert_array_equal(ds.get_triplets(), [[1, 2, 1], [1, 2, 2], [1, 3, 1]])


def test_train_split_dedup_and_val_from_train(tmp_path):
    root = write_folder(tmp_path / "d", {"train": HAND, "test": HAND})
    # no val file: val = the first NUM_VAL train images, train the rest (as VG150)
    val = load(root, "val", num_val_im=1)
    assert [val.get_img_info(i)["image_id"] for i in range(len(val))] == [7]
    tr = load(root, "train", num_val_im=1, filter_duplicate_rels=True)
    assert [tr.get_img_info(i)["image_id"] for i in range(len(tr))] == [9]
    tr = load(root, "train", num_val_im=0, filter_duplicate_rels=True, rng=np.random.default_rng(0))
    seen = {int(tr[0]["relations"][0, 2]) for _ in range(30)}
    assert all(len(tr[0]["relations"]) == 1 for _ in range(5)) and seen == {1, 2}
    assert len(tr.get_groundtruth(0)["relations"]) == 2  # evaluation GT keeps every row
    # a val file makes each split its own file; NUM_VAL_IMAGES is then not used
    write_folder(root, {"val": HAND})
    assert len(load(root, "val", num_val_im=1)) == 2 and len(load(root, "train", num_val_im=1)) == 2


def test_overlap_filter_train_only(tmp_path):
    js = copy.deepcopy(HAND)
    root = write_folder(tmp_path / "d", {"train": js, "test": js})
    tr = load(root, "train", num_val_im=0, filter_non_overlap=True)
    # image 9: subject [10,20,20,51] and object [2,3,6,8] do not overlap -> image dropped
    assert [tr.get_img_info(i)["image_id"] for i in range(len(tr))] == [7]
    assert len(load(root, "test", filter_non_overlap=True)) == 2


def _trap(tmp_path, edit):
    js = copy.deepcopy(HAND)
    edit(js)
    root = write_folder(tmp_path / "d", {"train": HAND, "test": js})
    return root, split_file(root, "test")


@pytest.mark.parametrize("edit, pattern", [
    (lambda js: js["rel_annotations"][2].update(object_id=999),
     r"rel_annotation id 3: object_id 999 is not an annotation id \(image id 9\): point subject_id"),
    (lambda js: js["rel_annotations"][2].update(subject_id=100),
     r"rel_annotation id 3: subject_id 100 is an annotation of image id 7, not of this image"),
    (lambda js: js["rel_annotations"][0].update(predicate_id=3),
     r"rel_annotation id 1: has predicate_id 3, which is not declared in 'rel_categories': declare the id"),
    (lambda js: js["annotations"][0].update(category_id=4),
     r"annotation id 100: has category_id 4, which is not declared in 'categories'"),
    (lambda js: js["annotations"][1].update(id=100),
     r"annotation id 100: appears 2 times in 'annotations': give every annotation a unique id"),
    (lambda js: js["categories"].append({"id": 9, "name": "horse"}),
     r"categories id 9: name 'horse' is also the name of id 5"),
    (lambda js: js["rel_categories"].append({"id": 2, "name": "under"}),
     r"rel_categories id 2: is declared twice \('on' and 'under'\)"),
    (lambda js: js["annotations"][0].update(bbox=[45, 2, 10, 8]),
     r"annotation id 100: bbox \[45.0, 2.0, 10.0, 8.0\] .* lies entirely outside its image \(image id 7, 40x30\)"),
    (lambda js: js["annotations"][0].update(image_id=8),
     r"annotation id 100: refers to image id 8, which is not in 'images'"),
])
def test_traps_raise_named_errors(tmp_path, edit, pattern):
    root, path = _trap(tmp_path, edit)
    with pytest.raises(CocoJsonError, match=pattern) as e:
        load(root, "test")
    assert str(e.value).startswith(path + ": ")


def test_missing_split_file_and_images(tmp_path):
    root = write_folder(tmp_path / "d", {"train": HAND})
    with pytest.raises(FileNotFoundError, match=r"test/_annotations\.coco\.json: split file not found.*DATA_DIR"):
        load(root, "test")
    os.remove(os.path.join(root, "train", "b.jpg"))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images of this split are missing.*b\.jpg"):
        load(root, "train", num_val_im=0)
    assert len(load(root, "train", num_val_im=0, check_images=False)) == 2


def test_box_slightly_beyond_is_clamped_with_a_warning(tmp_path, caplog):
    root, _ = _trap(tmp_path, lambda js: js["annotations"][1].update(bbox=[5, 5, 40, 10]))
    ds = load(root, "test")
    np.testing.assert_array_equal(ds[0]["boxes"][1], [5, 5, 40, 15])
    assert "1 warning(s)" in caplog.text and "annotation id 101" in caplog.text


# ---------------------------------------------------------------------------------------------- catalog
def test_catalog_resolves_coco_json_folders(tmp_path):
    write_folder(tmp_path / "mydata", {"train": HAND, "test": HAND})
    (tmp_path / "vgdata").mkdir()
    f = get_dataset_files("mydata_train", str(tmp_path))
    assert f.format == "coco_json" and f.split == "train"
    assert f.annotation_file == split_file(str(tmp_path / "mydata"), "train")
    assert f.roidb_file == "" and f.source_files() == (f.annotation_file,)
    assert DATASET_FORMAT_REGISTRY.get(f.format) is CocoJsonDataset
    assert get_dataset_files("mydata_val", str(tmp_path)).format == "coco_json"
    assert get_dataset_files("vgdata_train", str(tmp_path)).format == "vg150"

    from sgg.config import get_default_config
    from sgg.data.build import build_dataset

    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path), "DATASETS.NUM_VAL_IMAGES", "1"])
    ds = build_dataset(cfg, "mydata_train", is_train=True, mode="predcls")
    assert isinstance(ds, CocoJsonDataset) and ds.name == "mydata_train" and ds.filter_duplicate_rels
    assert len(ds) == 1


# ---------------------------------------------------------------------------------------------- converters
def _gt(ds):
    return [(ds.get_img_info(i)["image_id"], ds.get_groundtruth(i)) for i in range(len(ds))]


def _assert_same_gt(a, b, boxes_exact=True):
    assert [i for i, _ in a] == [i for i, _ in b]
    for (_, x), (_, y) in zip(a, b):
        assert (x["width"], x["height"]) == (y["width"], y["height"])
        np.testing.assert_array_equal(x["labels"], y["labels"])
        np.testing.assert_array_equal(x["relations"], y["relations"])
        if boxes_exact:
            np.testing.assert_array_equal(x["boxes"], y["boxes"])


def _vg(root, split, num_val=2):
    from sgg.data.catalog import get_dataset_files as files_of
    f = files_of(f"{os.path.basename(root)}_{split}", os.path.dirname(root))
    assert f.format == "vg150"
    return VG150Dataset.from_files(f, num_val_im=num_val)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("cocosynth"), num_images=24)


@pytest.mark.parametrize("num_val", [0, 2])
def test_round_trip_h5_json_h5_on_synthvg(synth, tmp_path, num_val):
    src = os.path.join(synth, "synthvg_tiny")
    js, back = str(tmp_path / "js"), str(tmp_path / "back")
    sizes = vg150_to_coco_json(src, js, num_val_im=num_val)
    assert ("val" in sizes) == (num_val > 0)
    coco_json_to_vg150(js, back)
    for split in ("train", "val", "test"):
        a, b = _vg(src, split), _vg(back, split)
        _assert_same_gt(_gt(a), _gt(b))
        for x, y in zip(a.gt_boxes_1024, b.gt_boxes_1024):  # boxes_1024 integers come back exactly
            np.testing.assert_array_equal(x, y)
        c = CocoJsonDataset(js, split, num_val_im=2)
        _assert_same_gt(_gt(a), _gt(c), boxes_exact=False)
    assert os.path.isfile(os.path.join(back, "zeroshot_triplet.pytorch"))
    assert os.path.isfile(os.path.join(back, "predicate_hierarchy.json")) and os.path.isdir(os.path.join(back, "depth"))


def test_round_trip_json_h5_json_on_a_hand_made_file(tmp_path):
    src = write_folder(tmp_path / "src", {"train": HAND, "test": zero_based(HAND)})
    h5, back = str(tmp_path / "h5"), str(tmp_path / "back")
    with pytest.raises(ValueError, match="image id 7: also an image of"):
        coco_json_to_vg150(src, h5)
    test = copy.deepcopy(HAND)
    for im in test["images"]:
        im["id"] += 100
    for k in ("annotations", "rel_annotations"):
        for a in test[k]:
            a["image_id"] += 100
    write_folder(src, {"test": test})
    coco_json_to_vg150(src, h5)
    vg150_to_coco_json(h5, back, num_val_im=0)
    with open(split_file(back, "train")) as f:
        out = json.load(f)
    assert [c["id"] for c in out["categories"]] == [1, 2, 3] and [c["name"] for c in out["categories"]] == CLASSES[1:]
    assert [c["id"] for c in out["rel_categories"]] == [1, 2]
    for split in ("train", "test"):
        a, b = CocoJsonDataset(src, split, num_val_im=0), CocoJsonDataset(back, split, num_val_im=0)
        _assert_same_gt(_gt(a), _gt(b), boxes_exact=False)
        for i in range(len(a)):  # only sub-grid precision is lost: 1 px of the 1024 grid (+ the int cut)
            s = max(a.get_img_info(i)["width"], a.get_img_info(i)["height"]) / 1024
            np.testing.assert_allclose(a[i]["boxes"], b[i]["boxes"], atol=1.01 * s)


def test_statistics_equal_for_vg150_and_its_coco_json(synth, tmp_path):
    from sgg.data.statistics import get_dataset_statistics

    src = os.path.join(synth, "synthvg_tiny")
    vg150_to_coco_json(src, str(tmp_path / "cj"), num_val_im=0)
    a = get_dataset_statistics(get_dataset_files("synthvg_tiny_train", synth), cache_dir=str(tmp_path), num_val_im=2)
    b = get_dataset_statistics(get_dataset_files("cj_train", str(tmp_path)), cache_dir=str(tmp_path), num_val_im=2)
    assert os.path.isfile(tmp_path / "cj_statistics.npz")
    for k in ("fg_matrix", "bg_matrix", "pred_dist", "predicate_counts", "object_counts"):
        np.testing.assert_array_equal(a[k], b[k])
    assert a["obj_classes"] == b["obj_classes"] and a["rel_classes"] == b["rel_classes"]
    assert a["num_images"] == b["num_images"]
    b2 = get_dataset_statistics(get_dataset_files("cj_train", str(tmp_path)), cache_dir=str(tmp_path), num_val_im=2)
    np.testing.assert_array_equal(b["fg_matrix"], b2["fg_matrix"])  # from the cache


def test_synthvg_writes_coco_json_and_trains_and_evaluates(tmp_path, one_thread):
    from sgg.data.synthvg import generate_synthvg
    from sgg.engine.relation import train_relation

    data = tmp_path / "data"
    generate_synthvg(str(data / "synthvg_tiny"), profile="tiny", num_images=24, format="coco_json")
    assert not [n for n in os.listdir(data) if n.startswith(".synthvg")]  # the temporary VG150 files are gone
    assert get_dataset_files("synthvg_tiny_train", str(data)).format == "coco_json"
    out = tmp_path / "run"
    cfg = tiny_config(data, out, "predcls", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
                      "SOLVER.TO_VAL", "False", "SOLVER.WARMUP_ITERS", "1")
    res = train_relation(cfg)
    assert res["state"] == "completed"
    metrics = json.load(open(out / "inference" / "synthvg_tiny_test" / "relation_metrics.json"))
    assert metrics and any("R@" in k or "recall" in k.lower() for k in json.dumps(metrics).split('"'))


def test_old_checkpoint_names_come_from_the_coco_json(tmp_path):
    from sgg.config import get_default_config
    from sgg.engine.loading import load_class_names

    write_folder(tmp_path / "mydata", {"train": zero_based(HAND), "test": HAND})
    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path), "DATASETS.TRAIN", '("mydata_train",)'])
    assert load_class_names(cfg) == (CLASSES, PREDICATES)


# ---------------------------------------------------------------------------------------------- validator
def test_validator_lists_every_problem_as_lines(tmp_path):
    js = copy.deepcopy(HAND)
    js["rel_annotations"][2]["object_id"] = 999
    js["rel_annotations"][0]["predicate_id"] = 3
    root = write_folder(tmp_path / "mydata", {"train": HAND, "test": js})
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "validate_dataset.py"), "--data-dir", root,
                           "--no-progress", "--no-images", "--num-val-images", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    path = split_file(root, "test")
    assert f"{path}: rel_annotation id 3: object_id 999 is not an annotation id (image id 9): point" in proc.stdout
    assert f"{path}: rel_annotation id 1: has predicate_id 3, which is not declared in 'rel_categories': " in proc.stdout
    assert "FAILED: 2 error(s)" in proc.stdout
    ok = subprocess.run([sys.executable, os.path.join(REPO, "tools", "validate_dataset.py"), "--data-dir",
                         str(tmp_path), "--name", "mydata", "--split", "train", "--no-progress", "--no-images", "--num-val-images", "1"],
                        capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0, ok.stdout + ok.stderr
