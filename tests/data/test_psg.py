"""The psg format (OpenPSG's psg.json used as boxes): reader (exact dicts per split, +1 ids with stuff
after thing, test by test_image_ids, val from the head of train, GT dedup rules, clipping, dropped
items, every trap's error), both image layouts, catalog, statistics, a tiny train + evaluation run."""
import copy
import json
import os
import sys

import numpy as np
import pytest

from sgg.data.catalog import get_dataset_files
from sgg.data.datasets import DATASET_FORMAT_REGISTRY, VG150Dataset
from sgg.data.datasets.psg import PSGDataset, PSGError, annotation_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import make_synthvg, tiny_config  # noqa: E402

CLASSES = ["__background__", "person", "horse", "grass", "sky"]
PREDICATES = ["__background__", "on", "riding", "beside"]


def _ann(bbox, cat):
    return {"bbox": bbox, "bbox_mode": 0, "category_id": cat}


def _item(iid, file_name, w, h, anns, rels):
    return {"file_name": file_name, "height": h, "width": w, "image_id": iid, "pan_seg_file_name": "x.png",
            "segments_info": [{"id": 1, "category_id": 0, "iscrowd": 0, "isthing": 1, "area": 5}],
            "annotations": [_ann(b, c) for b, c in anns], "relations": rels}


ITEMS = [
    # train pool #0 (val with num_val_im = 1): an exact duplicate row, two predicates on pair (0, 1); the
    # grass box sticks out by 1 px (clipped to w - 1 = 39, h - 1 = 29, no warning)
    _item(1, "train2017/000000000001.jpg", 40, 30,
          [([0, 0, 10, 10], 0), ([5, 5, 20, 20], 1), ([0, 20, 40, 30], 2)],
          [[0, 1, 1], [0, 1, 0], [0, 1, 0], [1, 2, 0]]),
    # dropped: no relation (a string image id)
    _item("2", "train2017/000000000002.jpg", 20, 50, [([0, 0, 5, 5], 1), ([10, 20, 19, 49], 0)], []),
    # test: a duplicate row removed from the GT, two predicates on one pair kept; sky = category 3 -> label 4
    _item(3, "val2017/000000000003.jpg", 40, 30, [([1.5, 2, 11.5, 10], 0), ([5, 5, 40, 29], 3)],
          [[0, 1, 1], [0, 1, 1], [0, 1, 0]]),
    # test, dropped: no box
    _item(4, "val2017/000000000004.jpg", 10, 10, [], []),
    # train pool #1: x1 = -1 clipped to 0
    _item("5", "train2017/000000000005.jpg", 20, 50, [([-1, 0, 5, 5], 1), ([2, 3, 6, 8], 2)], [[1, 0, 2]]),
    # train pool #2
    _item(6, "train2017/000000000006.jpg", 30, 30, [([0, 0, 10, 10], 3), ([10, 10, 20, 20], 0)], [[1, 0, 2]]),
]
PSG = {"data": ITEMS, "test_image_ids": [3, "4", 999], "thing_classes": ["person", "horse"],
       "stuff_classes": ["grass", "sky"], "predicate_classes": ["on", "riding", "beside"]}


def write_psg(root, psg=PSG, images=True, image_root=None):
    """``root/psg.json`` (+ empty images under ``image_root``, default ``root/coco``)."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    with open(annotation_file(root), "w") as f:
        json.dump(psg, f)
    if images:
        image_root = str(image_root) if image_root is not None else os.path.join(root, "coco")
        for item in psg["data"]:
            path = os.path.join(image_root, item["file_name"])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            open(path, "wb").close()
    return root


def _ids(ds):
    return [ds.get_img_info(i)["image_id"] for i in range(len(ds))]


def test_splits_exact_dicts(tmp_path):
    root = write_psg(tmp_path / "psg")
    te = PSGDataset(root, "test", num_val_im=1)
    assert te.ind_to_classes == CLASSES and te.ind_to_predicates == PREDICATES
    assert (te.num_classes, te.num_predicates, _ids(te)) == (5, 4, [3])
    d = te[0]
    assert (d["image_id"], d["width"], d["height"]) == (3, 40, 30)
    assert d["file_name"] == os.path.join(root, "coco", "val2017", "000000000003.jpg")
    assert d["boxes"].dtype == np.float32
    np.testing.assert_array_equal(d["boxes"], np.array([[1.5, 2, 11.5, 10], [5, 5, 39, 29]], np.float32))
    np.testing.assert_array_equal(d["labels"], [1, 4])
    np.testing.assert_array_equal(d["relations"], [[0, 1, 2], [0, 1, 1]])  # duplicate row gone, 2 predicates
    np.testing.assert_array_equal(te.get_groundtruth(0)["relations"], [[0, 1, 2], [0, 1, 1]])
    np.testing.assert_allclose(te.gt_boxes_1024[0][1], [128, 128, 1024, 742.4])  # unclipped, longer side 1024
    assert te.get_img_info(0) == {"image_id": 3, "width": 40, "height": 30, "file_name": "val2017/000000000003.jpg"}
    assert te.selection_counts == {"rows": 6, "pool": 2, "usable": 1, "after_num_im": 1, "selected": 1, "kept": 1}
    assert not te.has_val_file and "PSGDataset(split='test', images=1" in repr(te)

    va = PSGDataset(root, "val", num_val_im=1)
    assert _ids(va) == [1]
    g = va.get_groundtruth(0)
    np.testing.assert_array_equal(g["boxes"], np.array([[0, 0, 10, 10], [5, 5, 20, 20], [0, 20, 39, 29]], np.float32))
    np.testing.assert_array_equal(g["labels"], [1, 2, 3])
    np.testing.assert_array_equal(g["relations"], [[0, 1, 2], [0, 1, 1], [1, 2, 1]])
    np.testing.assert_array_equal(va[0]["relations"], [[0, 1, 2], [0, 1, 1], [1, 2, 1]])

    tr = PSGDataset(root, "train", num_val_im=1)  # the val item excluded
    assert _ids(tr) == [5, 6] and isinstance(tr.get_img_info(0)["image_id"], int)
    g = tr.get_groundtruth(0)
    np.testing.assert_array_equal(g["boxes"], np.array([[0, 0, 5, 5], [2, 3, 6, 8]], np.float32))
    np.testing.assert_array_equal(g["labels"], [2, 3])
    np.testing.assert_array_equal(g["relations"], [[1, 0, 3]])
    np.testing.assert_array_equal(tr.get_groundtruth(1)["labels"], [4, 1])
    np.testing.assert_array_equal(tr.get_triplets(), [[3, 2, 3], [1, 4, 3]])

    assert _ids(PSGDataset(root, "train", num_val_im=0)) == [1, 5, 6]
    assert _ids(PSGDataset(root, "train", num_val_im=2)) == [6]
    assert _ids(PSGDataset(root, "val", num_val_im=2)) == [1, 5]
    assert _ids(PSGDataset(root, "train", num_val_im=0, filter_empty_rels=False)) == [1, 2, 5, 6]
    assert _ids(PSGDataset(root, "test", filter_empty_rels=False)) == [3]  # the item without boxes goes
    assert _ids(PSGDataset(root, "train", num_val_im=1, num_im=2)) == [5]  # num_im before the val cut
    assert len(PSGDataset(root, "test", num_im=0)) == 0


def test_train_dedup_one_predicate_per_pair(tmp_path):
    root = write_psg(tmp_path / "psg")
    tr = PSGDataset(root, "train", num_val_im=0, filter_duplicate_rels=True, rng=np.random.default_rng(0))
    assert tr.filter_duplicate_rels
    np.testing.assert_array_equal(tr.get_groundtruth(0)["relations"], [[0, 1, 2], [0, 1, 1], [0, 1, 1], [1, 2, 1]])
    seen = set()
    for _ in range(30):
        rels = tr[0]["relations"]
        assert rels[:, :2].tolist() == [[0, 1], [1, 2]] and rels[1, 2] == 1
        seen.add(int(rels[0, 2]))
    assert seen == {1, 2}
    assert not PSGDataset(root, "test", filter_duplicate_rels=True).filter_duplicate_rels
    assert not PSGDataset(root, "val", num_val_im=1, filter_duplicate_rels=True).filter_duplicate_rels


def test_empty_splits_name_the_key(tmp_path):
    root = write_psg(tmp_path / "psg")
    va = PSGDataset(root, "val", num_val_im=0)
    assert len(va) == 0
    reason, fix = va.empty_reason()
    assert "DATASETS.NUM_VAL_IMAGES = 0" in reason and "DATASETS.NUM_VAL_IMAGES > 0" in fix
    tr = PSGDataset(root, "train", num_val_im=3)
    assert len(tr) == 0
    reason, fix = tr.empty_reason("NUM_VAL")
    assert "NUM_VAL = 3" in reason and "only 3 usable train items" in reason and fix == "set NUM_VAL below 3"
    assert PSGDataset(root, "train", num_val_im=1).empty_reason() is None
    no_test = write_psg(tmp_path / "nt", dict(PSG, test_image_ids=[999]))
    reason, fix = PSGDataset(no_test, "test").empty_reason()
    assert "no item whose image_id is in test_image_ids" in reason and "test_image_ids" in fix
    empty = write_psg(tmp_path / "empty", dict(PSG, data=[]))
    assert "lists no item" in PSGDataset(empty, "train").empty_reason()[0]


def test_sibling_coco_layout(tmp_path):
    data = tmp_path / "data"
    root = write_psg(data / "psg", image_root=data / "coco")
    assert not os.path.isdir(os.path.join(root, "coco"))
    ds = PSGDataset(root, "train", num_val_im=1)
    assert ds.img_dir == str(data / "coco")
    assert ds.filenames == [str(data / "coco" / "train2017" / f"00000000000{i}.jpg") for i in (5, 6)]
    f = get_dataset_files("psg_test", str(data))
    assert f.format == "psg" and f.root == root and f.img_dir == str(data / "coco")
    assert f.annotation_file == annotation_file(root)


def _edit_item(k, **edit):
    psg = copy.deepcopy(PSG)
    psg["data"][k].update(edit)
    return psg


def _edit_ann(k, a, **edit):
    psg = copy.deepcopy(PSG)
    psg["data"][k]["annotations"][a].update(edit)
    return psg


ITEM2 = r"item 2 \(image_id 3, 'val2017/000000000003.jpg'\): "


@pytest.mark.parametrize("psg, pattern, fix", [
    (_edit_ann(2, 1, category_id=4), ITEM2 + r"annotations\[1\] category_id 4 is out of range 0..3",
     "use 0-based ids of thing_classes + stuff_classes"),
    (_edit_ann(2, 0, category_id=-1), ITEM2 + r"annotations\[0\] category_id -1 is out of range", "0-based ids"),
    (_edit_item(2, relations=[[0, 1, 3]]), ITEM2 + r"relations\[0\] has predicate 3, out of range 0..2",
     "use 0-based ids of predicate_classes"),
    (_edit_item(2, relations=[[0, 5, 0]]), ITEM2 + r"relations\[0\] = \[0, 5, 0\] names an annotation outside 0..1",
     "point subject / object at annotations"),
    (_edit_item(2, relations=[[0, 1]]), ITEM2 + r"relations is not a list of \[subject, object, predicate\]",
     "write each relation as"),
    (_edit_ann(2, 0, bbox=[12, 2, 11, 10]), ITEM2 + r"annotations\[0\] bbox .* has x2 < x1", "correct the bbox"),
    (_edit_ann(2, 1, bbox=[50, 40, 60, 45]), ITEM2 + r"annotations\[1\] bbox .* lies entirely outside its 40x30 image",
     "correct the bbox"),
    (_edit_ann(2, 0, bbox=[39, 2, 45, 4]), ITEM2 + r"annotations\[0\] .* entirely outside", "correct the bbox"),
    (_edit_ann(2, 0, bbox=[1, 2, 3]), ITEM2 + r"a bbox is not \[x1, y1, x2, y2\]", "correct the bbox"),
    (_edit_ann(2, 0, bbox_mode=1), ITEM2 + r"annotations\[0\] has bbox_mode 1, not 0", "bbox_mode 0"),
    (_edit_ann(2, 1, bbox_mode="XYWH"), ITEM2 + r"annotations\[1\] has bbox_mode 'XYWH', not 0", "bbox_mode 0"),
    (_edit_item(2, image_id="1"), r"item 2 \(image_id 1, .*\): image_id 1 is also the id of item 0",
     "distinct image_id"),
    (_edit_item(2, image_id="3.5"), r"item 2: image_id '3.5' is not an integer", "integral numeric string"),
    (_edit_item(2, width=0), ITEM2 + r"width 0 / height 30 is not a size > 0", "size in pixels"),
    ({**PSG, "data": PSG["data"][:2] + [{k: v for k, v in ITEMS[2].items() if k != "relations"}]},
     r"item 2: has no relations", "give every item"),
    ({k: v for k, v in PSG.items() if k != "test_image_ids"}, r"top level: has no test_image_ids",
     "use OpenPSG's psg.json"),
    ({**PSG, "stuff_classes": ["grass", "person"]}, r"'thing_classes \+ stuff_classes': holds the name 'person' twice",
     "distinct name"),
    ({**PSG, "predicate_classes": []}, r"'predicate_classes': is missing or empty", "write 'predicate_classes'"),
    ({**PSG, "test_image_ids": [3, "x"]}, r"test_image_ids\[1\]: 'x' is not an integer image id", "list int"),
    (None, r"whole file: not valid JSON", "truncated or corrupt"),
])
def test_traps_raise_named_errors(tmp_path, psg, pattern, fix):
    root = write_psg(tmp_path / "psg")
    if psg is None:  # a truncated file
        text = open(annotation_file(root)).read()
        with open(annotation_file(root), "w") as f:
            f.write(text[: len(text) // 2])
    else:
        write_psg(root, psg, images=False)
    with pytest.raises(PSGError, match=pattern) as e:
        PSGDataset(root, "test")
    assert str(e.value).startswith(annotation_file(root) + ": ") and e.value.file == annotation_file(root)
    assert fix in str(e.value)


def test_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"psg.json: psg.json not found: .*Fix: set DATASETS.DATA_DIR"):
        PSGDataset(str(tmp_path / "nowhere"), "test")
    root = write_psg(tmp_path / "psg")
    os.remove(os.path.join(root, "coco", "train2017", "000000000006.jpg"))
    with pytest.raises(FileNotFoundError, match=r"1 of 2 images .*000000000006.jpg"):
        PSGDataset(root, "train", num_val_im=1)
    assert len(PSGDataset(root, "train", num_val_im=1, check_images=False)) == 2
    with pytest.raises(ValueError, match="split must be"):
        PSGDataset(root, "dev")


def test_box_beyond_tolerance_clipped_with_one_warning(tmp_path, caplog):
    psg = _edit_ann(2, 1, bbox=[5, 5, 45, 29])
    psg["data"][2]["annotations"][0]["bbox"] = [1, 2, 3, 40]
    root = write_psg(tmp_path / "psg", psg)
    with caplog.at_level("DEBUG", logger="sgg.data.datasets.psg"):
        ds = PSGDataset(root, "test")
    assert ds[0]["boxes"].tolist() == [[1, 2, 3, 29], [5, 5, 39, 29]]
    warnings = [r for r in caplog.records if "stick out of their image" in r.getMessage()]
    assert len(warnings) == 1 and "2 box(es)" in warnings[0].getMessage()
    assert any("1 of the 3 test_image_ids name no item" in r.getMessage() for r in caplog.records)


def test_catalog_and_build_dataset(tmp_path):
    from sgg.config import get_default_config
    from sgg.data.build import build_dataset
    from sgg.data.catalog import folder_format
    from sgg.data.datasets import psg as psg_module

    root = write_psg(tmp_path / "psg")
    f = get_dataset_files("psg_test", str(tmp_path))
    assert f.format == "psg" and f.split == "test" and f.root == root and folder_format(root) is psg_module
    assert f.img_dir == os.path.join(root, "coco") and f.source_files() == (annotation_file(root),)
    assert DATASET_FORMAT_REGISTRY.get(f.format) is PSGDataset
    other = write_psg(tmp_path / "mypsg")  # any folder holding psg.json: <folder>_<split>
    g = get_dataset_files("mypsg_val", str(tmp_path))
    assert g.format == "psg" and g.root == other and g.split == "val"

    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path), "DATASETS.NUM_VAL_IMAGES", "1"])
    ds = build_dataset(cfg, "psg_train", is_train=True, mode="predcls")
    assert isinstance(ds, PSGDataset) and ds.name == "psg_train" and ds.filter_duplicate_rels and _ids(ds) == [5, 6]
    assert _ids(build_dataset(cfg, "psg_test", is_train=False, mode="predcls")) == [3]
    cfg.merge_from_list(["DATASETS.NUM_VAL_IMAGES", "5000"])
    with pytest.raises(ValueError, match=r"dataset 'psg_train' has no image: DATASETS.NUM_VAL_IMAGES = 5000"):
        build_dataset(cfg, "psg_train", is_train=True, mode="predcls")


def test_statistics_and_class_names(tmp_path):
    from sgg.data.datasets import dataset_class_names
    from sgg.data.statistics import get_dataset_statistics

    write_psg(tmp_path / "psg")
    files = get_dataset_files("psg_train", str(tmp_path))
    assert dataset_class_names(files) == (CLASSES, PREDICATES)
    s = get_dataset_statistics(files, cache_dir=str(tmp_path), num_val_im=1)
    assert s["obj_classes"] == CLASSES and s["rel_classes"] == PREDICATES and s["num_images"] == 2
    assert s["predicate_counts"].tolist() == [0, 0, 0, 2]
    assert s["fg_matrix"][3, 2, 3] == 1 and s["fg_matrix"][1, 4, 3] == 1 and s["fg_matrix"][:, :, 1:].sum() == 2
    s0 = get_dataset_statistics(files, cache_dir=str(tmp_path), num_val_im=0)  # another cache key
    assert s0["num_images"] == 3 and s0["predicate_counts"].tolist() == [0, 3, 1, 2]


def test_validate_dataset_reports_psg_folders(tmp_path):
    from sgg.data.validate import validate_dataset

    root = write_psg(tmp_path / "psg")
    files = get_dataset_files("psg_train", str(tmp_path))
    rep = validate_dataset(files, check_images=False, num_val_im=1)
    assert rep.ok and rep.summary["splits"] == {"train": {"images": 2, "boxes": 4, "relations": 2},
                                                "val": {"images": 1, "boxes": 3, "relations": 3},
                                                "test": {"images": 1, "boxes": 2, "relations": 2}}
    write_psg(root, _edit_item(2, relations=[[0, 1, 3]]), images=False)
    (err,) = validate_dataset(files, check_images=False, num_val_im=1).errors
    assert (err.file, err.where) == (annotation_file(root), "item 2 (image_id 3, 'val2017/000000000003.jpg'):")
    assert err.message.startswith("relations[0] has predicate 3") and err.fix.startswith("use 0-based ids")


def _synthvg_to_psg(src_root, out_root):
    """The train and test splits of a SynthVG (VG150) folder as one psg.json (the last class as the one
    stuff class); images linked as coco/{train,val}2017/{image_id}.jpg."""
    data, test_ids = [], []
    for split, folder in (("train", "train2017"), ("test", "val2017")):
        ds = VG150Dataset.from_files(get_dataset_files(f"synthvg_tiny_{split}", src_root), num_val_im=0)
        os.makedirs(os.path.join(out_root, "coco", folder), exist_ok=True)
        for i, info in enumerate(ds.img_info):
            fn = f"{folder}/{int(info['image_id']):012d}.jpg"
            os.link(ds.filenames[i], os.path.join(out_root, "coco", fn))
            g = ds.get_groundtruth(i)
            data.append({"file_name": fn, "width": int(info["width"]), "height": int(info["height"]),
                         "image_id": str(info["image_id"]), "pan_seg_file_name": "", "segments_info": [],
                         "annotations": [{"bbox": b, "bbox_mode": 0, "category_id": c}
                                         for b, c in zip(g["boxes"].tolist(), (g["labels"] - 1).tolist())],
                         "relations": (g["relations"] - [0, 0, 1]).tolist()})
            if split == "test":
                test_ids.append(int(info["image_id"]))
    with open(annotation_file(out_root), "w") as fh:
        json.dump({"data": data, "test_image_ids": test_ids, "thing_classes": ds.ind_to_classes[1:-1],
                   "stuff_classes": ds.ind_to_classes[-1:], "predicate_classes": ds.ind_to_predicates[1:]}, fh)
    return len(test_ids)


def test_tiny_train_and_evaluation(tmp_path, one_thread):
    from sgg.engine.relation import train_relation

    src = make_synthvg(tmp_path / "vg", num_images=24)
    data = tmp_path / "data"
    n_test = _synthvg_to_psg(src, str(data / "synthvg_tiny"))
    assert get_dataset_files("synthvg_tiny_test", str(data)).format == "psg"
    assert len(PSGDataset(str(data / "synthvg_tiny"), "test")) == n_test > 0
    out = tmp_path / "run"
    cfg = tiny_config(data, out, "predcls", "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "2",
                      "SOLVER.TO_VAL", "False", "SOLVER.WARMUP_ITERS", "1")
    res = train_relation(cfg)
    assert res["state"] == "completed"
    metrics = json.load(open(out / "inference" / "synthvg_tiny_test" / "relation_metrics.json"))
    for key in ("R@50", "mR@50"):
        assert key in metrics
