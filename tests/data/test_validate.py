"""Dataset validation (sgg.data.validate, tools/validate_dataset.py): a clean SynthVG passes with the
numbers the loader loads; each kind of corruption, made on a copy, fails naming the file, the row /
image id and the fix."""
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import DATASET, make_synthvg, subprocess_env  # noqa: E402

NUM_VAL = 2
H5 = "VG-SGG-with-attri.h5"
DICTS = "VG-SGG-dicts-with-attri.json"


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("validate_data"), num_images=24, seed=1)


def _tool():
    spec = importlib.util.spec_from_file_location("_tool_validate_dataset",
                                                  os.path.join(REPO, "tools", "validate_dataset.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_tool(root, *extra, capsys):
    code = _tool().main(["--data-dir", str(root), "--name", DATASET, "--num-val-images", str(NUM_VAL),
                         "--no-progress", "--workers", "1", *extra])
    return code, capsys.readouterr().out


def _copy(clean_root, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(os.path.join(clean_root, DATASET), root / DATASET)
    return root, root / DATASET


def _files(folder):
    return dict(roidb_file=str(folder / H5), dict_file=str(folder / DICTS),
                image_file=str(folder / "image_data.json"), img_dir=str(folder / "VG_100K"))


def _h5(folder):
    with h5py.File(folder / H5, "r") as f:
        return {k: f[k][()] for k in f}


def _set_h5(folder, **arrays):
    with h5py.File(folder / H5, "r+") as f:
        for k, v in arrays.items():
            f[k][...] = v


def _loaded_rows(folder, split):
    """h5 rows the loader reads for ``split``, and their image ids."""
    from sgg.data.datasets import VG150Dataset

    ds = VG150Dataset(split=split, num_val_im=NUM_VAL, **_files(folder))
    return np.flatnonzero(ds.split_mask), [int(i["image_id"]) for i in ds.img_info]


# ------------------------------------------------------------------------------------------------
def test_clean_dataset_passes_with_the_loaders_numbers(clean_root):
    from sgg.data.catalog import get_dataset_files
    from sgg.data.datasets import VG150Dataset
    from sgg.data.validate import validate_dataset

    files = get_dataset_files(f"{DATASET}_train", clean_root)
    report = validate_dataset(files, depth_dir=files.depth_dir, num_val_im=NUM_VAL, workers=1)
    assert report.ok and report.exit_code == 0, report.format()
    assert report.errors == []
    s = report.summary
    class_counts = {}
    pred_counts = {}
    for split in ("train", "val", "test"):
        ds = VG150Dataset(split=split, num_val_im=NUM_VAL, depth_dir=files.depth_dir, roidb_file=files.roidb_file,
                          dict_file=files.dict_file, image_file=files.image_file, img_dir=files.img_dir)
        assert s["splits"][split] == {
            "images": len(ds),
            "boxes": sum(len(c) for c in ds.gt_classes),
            "relations": sum(len(r) for r in ds.relationships),
        }, split
        assert len(ds) > 0
        for c in ds.gt_classes:
            for v in c:
                class_counts[ds.ind_to_classes[v]] = class_counts.get(ds.ind_to_classes[v], 0) + 1
        for r in ds.relationships:
            for p in r[:, 2]:
                pred_counts[ds.ind_to_predicates[p]] = pred_counts.get(ds.ind_to_predicates[p], 0) + 1
    assert {k: v for k, v in s["class_counts"].items() if v} == class_counts
    assert {k: v for k, v in s["predicate_counts"].items() if v} == pred_counts
    assert list(s["class_counts"].values()) == sorted(s["class_counts"].values(), reverse=True)
    assert s["num_classes"] == len(ds.ind_to_classes) - 1 and s["num_predicates"] == len(ds.ind_to_predicates) - 1
    n_loaded = sum(d["images"] for d in s["splits"].values())
    assert s["images_checked"] == n_loaded and s["depth_checked"] == n_loaded
    # images without relations are warnings (the loader skips them), listed by h5 row
    with h5py.File(files.roidb_file, "r") as f:
        no_rel = np.flatnonzero((f["img_to_first_rel"][()] < 0) & (f["img_to_first_box"][()] >= 0))
    assert s["images_without_relations"] == no_rel.size
    listed = [p.where for p in report.warnings if p.kind == "image without relations"]
    assert listed == [f"image row {r}" for r in no_rel]


def test_clean_dataset_tool_subprocess_exit_0(clean_root, tmp_path):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(f"DATASETS:\n  DATA_DIR: '{clean_root}'\n  TRAIN: ('{DATASET}_train',)\n"
                   f"  VAL: ('{DATASET}_val',)\n  TEST: ('{DATASET}_test',)\n  NUM_VAL_IMAGES: {NUM_VAL}\n")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "validate_dataset.py"), "--config-file",
                           str(cfg), "--no-progress", "INPUT.LOAD_DEPTH", "True"],
                          env=subprocess_env(REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "OK: 0 error(s)" in out and "train:" in out and "test :" in out
    assert "depth maps checked" in out  # INPUT.LOAD_DEPTH turned the depth check on
    assert out.count("dataset: ") == 1  # train / val / test live in one folder: checked once


# ------------------------------------------------------------------------------------------------
# Corruptions, one at a time, each on its own copy
def corrupt_label(folder):
    h = _h5(folder)
    n_classes = len(json.load(open(folder / DICTS))["label_to_idx"])
    k = int(h["img_to_first_box"][_loaded_rows(folder, "test")[0][0]]) + 1
    labels = h["labels"].copy()
    labels[k, 0] = n_classes + 1
    _set_h5(folder, labels=labels)
    return [H5, f"labels[{k}] = {n_classes + 1} > {n_classes} classes in {DICTS}",
            "regenerate the h5 or use the dicts file that matches it"]


def corrupt_relation_index(folder):
    h = _h5(folder)
    rows, _ = _loaded_rows(folder, "train")
    a, b = int(rows[0]), int(rows[1])
    r = int(h["img_to_first_rel"][a])
    rels = h["relationships"].copy()
    rels[r, 1] = h["img_to_first_box"][b]  # an object of another image
    _set_h5(folder, relationships=rels)
    return [H5, f"relationships[{r}]", f"h5 row {a}) has objects {h['img_to_first_box'][a]}..",
            "regenerate the h5"]


def corrupt_box_x2_lt_x1(folder):
    h = _h5(folder)
    k = int(h["img_to_last_box"][_loaded_rows(folder, "val")[0][0]])
    boxes = h["boxes_1024"].copy()
    boxes[k, 2] = -6  # [cx, cy, w, h]: w < 0 decodes to x2 < x1
    _set_h5(folder, boxes_1024=boxes)
    return [H5, f"boxes_1024[{k}]", "width -6 <= 0 (x2 < x1 after the decode)", "regenerate the h5"]


def corrupt_missing_image(folder):
    _, ids = _loaded_rows(folder, "train")
    os.remove(folder / "VG_100K" / f"{ids[3]}.jpg")
    return [f"VG_100K/{ids[3]}.jpg", f"(image {ids[3]},", "does not exist", "copy the image into the image folder"]


def corrupt_undecodable_image(folder):
    _, ids = _loaded_rows(folder, "test")
    (folder / "VG_100K" / f"{ids[0]}.jpg").write_bytes(b"\xff\xd8 this is not a jpeg" * 10)
    return [f"VG_100K/{ids[0]}.jpg", f"(image {ids[0]},", "cannot be decoded (210 bytes)", "re-download or replace"]


def corrupt_image_data_row(folder):
    data = json.load(open(folder / "image_data.json"))
    removed = data.pop(5)["image_id"]
    json.dump(data, open(folder / "image_data.json", "w"))
    return ["image_data.json", f"has {len(data)} usable images", f"'{folder / H5}' has {len(data) + 1} image rows",
            f"images on disk without an image_data.json row: {removed}", "use the image_data.json of the same release"]


def corrupt_image_size(folder):
    _, ids = _loaded_rows(folder, "train")
    path = str(folder / "VG_100K" / f"{ids[1]}.jpg")
    img = cv2.imread(path)
    cv2.imwrite(path, cv2.resize(img, (img.shape[1] // 2, img.shape[0] // 2)))
    return [f"VG_100K/{ids[1]}.jpg", f"is {img.shape[1] // 2}x{img.shape[0] // 2} (WxH) but image_data.json says "
            f"{img.shape[1]}x{img.shape[0]}", "use the original image (not a resized copy)"]


def corrupt_missing_depth(folder):
    _, ids = _loaded_rows(folder, "test")
    os.remove(folder / "depth" / f"{ids[1]}.png")
    return [f"depth/{ids[1]}.png", f"(image {ids[1]},", "does not exist", "generate the depth maps"]


def corrupt_depth_size(folder):
    _, ids = _loaded_rows(folder, "train")
    path = str(folder / "depth" / f"{ids[2]}.png")
    d = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    assert d.dtype == np.uint16
    cv2.imwrite(path, d[: d.shape[0] - 3])
    return [f"depth/{ids[2]}.png", f"is {d.shape[1]}x{d.shape[0] - 3} (WxH) but the image is {d.shape[1]}x{d.shape[0]}",
            "regenerate the depth map at the image's resolution"]


def corrupt_dicts(folder):
    info = json.load(open(folder / DICTS))
    info["idx_to_predicate"]["99"] = info["idx_to_predicate"].pop("3")
    json.dump(info, open(folder / DICTS, "w"))
    return [DICTS, "'idx_to_predicate' is not contiguous", "missing [3", "number the entries 1..N without gaps"]


def corrupt_missing_h5_dataset(folder):
    with h5py.File(folder / H5, "r+") as f:
        del f["predicates"]
    return [H5, "'predicates' is missing (not an SGB VG-SGG h5)", "regenerate the h5"]


def corrupt_box_index_range(folder):
    h = _h5(folder)
    n_obj = h["labels"].shape[0]
    row = int(h["img_to_last_box"].size - 1)
    last = h["img_to_last_box"].copy()
    last[row] = n_obj + 4
    _set_h5(folder, img_to_last_box=last)
    return [H5, f"image row {row} img_to_first_box..img_to_last_box = {h['img_to_first_box'][row]}..{n_obj + 4} "
            f"lies outside the {n_obj} boxes of the file", "regenerate the h5"]


CORRUPTIONS = {
    "h5_dataset_missing": (corrupt_missing_h5_dataset, "h5 dataset missing", ()),
    "box_index_range": (corrupt_box_index_range, "box index range", ()),
    "label_out_of_range": (corrupt_label, "label out of range", ()),
    "relation_outside_its_image": (corrupt_relation_index, "relation outside its image", ()),
    "box_x2_lt_x1": (corrupt_box_x2_lt_x1, "box value", ()),
    "missing_image": (corrupt_missing_image, "image missing", ()),
    "undecodable_image": (corrupt_undecodable_image, "image undecodable", ()),
    "image_data_row_removed": (corrupt_image_data_row, "image_data.json rows", ()),
    "image_size": (corrupt_image_size, "image size", ()),
    "depth_missing": (corrupt_missing_depth, "depth missing", ("--depth",)),
    "depth_wrong_size": (corrupt_depth_size, "depth size", ("--depth",)),
    "dicts_not_contiguous": (corrupt_dicts, "dicts json", ()),
}


@pytest.mark.parametrize("name", list(CORRUPTIONS))
def test_each_corruption_fails_naming_file_id_and_fix(name, clean_root, tmp_path, capsys):
    corrupt, kind, extra = CORRUPTIONS[name]
    root, folder = _copy(clean_root, tmp_path)
    expected = corrupt(folder)
    code, out = run_tool(root, *extra, capsys=capsys)
    assert code == 1, out
    assert f"ERROR: {kind} (1)" in out, out
    lines = [ln for ln in out.splitlines() if ln.startswith("  ") and all(e in ln for e in expected)]
    assert len(lines) == 1, (expected, out)
    assert "FAILED: 1 error(s)" in out, out  # exactly this problem, nothing collateral
    assert "train:" in out  # the summary is printed before the problems


def test_no_images_skips_the_file_checks_and_depth_is_off_by_default(clean_root, tmp_path, capsys):
    root, folder = _copy(clean_root, tmp_path)
    corrupt_missing_image(folder)
    corrupt_missing_depth(folder)
    code, out = run_tool(root, "--no-images", capsys=capsys)
    assert code == 0 and "image files not checked" in out, out
    code, out = run_tool(root, capsys=capsys)
    assert code == 1 and "ERROR: image missing (1)" in out and "depth missing" not in out, out


def test_split_selects_whose_files_are_checked(clean_root, tmp_path, capsys):
    root, folder = _copy(clean_root, tmp_path)
    corrupt_missing_image(folder)  # a train image
    code, out = run_tool(root, "--split", "test", capsys=capsys)
    assert code == 0, out
    code, out = run_tool(root, "--split", "train", capsys=capsys)
    assert code == 1 and "ERROR: image missing (1)" in out, out


def test_many_problems_are_capped_per_kind_with_the_true_count(clean_root, tmp_path, capsys):
    root, folder = _copy(clean_root, tmp_path)
    h = _h5(folder)
    labels = h["labels"].copy()
    labels[:, 0] = 0
    preds = h["predicates"].copy()
    preds[:3, 0] = 77
    _set_h5(folder, labels=labels, predicates=preds)
    code, out = run_tool(root, "--no-images", "--max-lines", "5", capsys=capsys)
    assert code == 1
    n = labels.shape[0]
    assert f"ERROR: label out of range ({n})" in out and f"... and {n - 5} more (label out of range)" in out
    assert sum("labels[" in ln for ln in out.splitlines()) == 5
    assert "< 1 (0 is background)" in out
    assert "ERROR: predicate out of range (3)" in out and "predicates[2] = 77 > " in out
    assert f"FAILED: {n + 3} error(s)" in out

    from sgg.data.validate import validate_dataset

    report = validate_dataset(_files(folder), check_images=False, num_val_im=NUM_VAL, max_per_kind=4)
    assert report.count("error", "label out of range") == n
    assert len([p for p in report.errors if p.kind == "label out of range"]) == 4


def test_missing_files_are_errors_not_exceptions(tmp_path):
    from sgg.data.validate import validate_dataset

    report = validate_dataset((str(tmp_path / "x.h5"), str(tmp_path / "d.json"), str(tmp_path / "i.json"),
                               str(tmp_path / "imgs")))
    assert report.exit_code == 1
    kinds = [(p.kind, os.path.basename(p.file)) for p in report.errors]
    for name in ("x.h5", "d.json", "imgs"):
        assert ("missing file", name) in kinds
    assert all("DATASETS.DATA_DIR" in p.fix for p in report.errors)
