"""Faults in the dataset files (issue 17, items 4 and 5), each made on a copy of a tiny SynthVG:
empty splits (the validator, the train / test loaders, NUM_VAL_IMAGES), truncated or corrupt files
(the error names the file) and GT boxes outside their image (the loader applies the validator's
rule)."""
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import DATASET, make_synthvg, subprocess_env, tiny_config  # noqa: E402

H5 = "VG-SGG-with-attri.h5"
DICTS = "VG-SGG-dicts-with-attri.json"
NUM_VAL = 2


@pytest.fixture(scope="module")
def clean_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("faults_data"), num_images=24, seed=1)


@pytest.fixture
def copy(clean_root, tmp_path):
    """(data root, dataset folder) of a fresh copy of the clean dataset."""
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


def _dataset(folder, split, **kw):
    from sgg.data.datasets import VG150Dataset

    return VG150Dataset(split=split, num_val_im=kw.pop("num_val_im", NUM_VAL), **_files(folder), **kw)


def _usable_train_images(folder):
    return len(_dataset(folder, "train", num_val_im=0))


def _validate_tool(root, *extra, capsys):
    spec = importlib.util.spec_from_file_location("_tool_validate_dataset",
                                                  os.path.join(REPO, "tools", "validate_dataset.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    code = mod.main(["--data-dir", str(root), "--name", DATASET, "--no-images", "--no-progress", "--workers", "1",
                     *extra])
    return code, capsys.readouterr().out


def _problem_lines(out, kind):
    """The report lines under ``ERROR: <kind>`` / ``WARNING: <kind>``."""
    lines, inside = [], False
    for ln in out.splitlines():
        if ln.startswith(("ERROR: ", "WARNING: ")):
            inside = ln.split(": ", 1)[1].startswith(kind + " (")
        elif inside and ln.startswith("  "):
            lines.append(ln.strip())
    return lines


# ------------------------------------------------------------------------------------------------
# 4a: the validator reports an empty train / test split (file: split: message: fix)
def test_validator_empty_train_split_subprocess_exit_1(copy):
    root, folder = copy
    split = _h5(folder)["split"]
    _set_h5(folder, split=np.full_like(split, 2))  # every row a test row: no train image at all
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "validate_dataset.py"), "--data-dir",
                           str(root), "--name", DATASET, "--num-val-images", str(NUM_VAL), "--no-images",
                           "--no-progress"], env=subprocess_env(REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out = proc.stdout
    assert "ERROR: empty split" in out and "FAILED" in out, out
    lines = _problem_lines(out, "empty split")
    train = [ln for ln in lines if ln.startswith(f"{folder / H5}: train split has no image: ")]
    assert len(train) == 1, out
    assert "the h5 has no image row with split == 0 (train): use the files of a dataset that has train images" \
        in train[0]
    assert "(here: --split test)" in train[0]
    # checking the test split only (a test-only folder) is fine
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "validate_dataset.py"), "--data-dir",
                           str(root), "--name", DATASET, "--split", "test", "--no-images", "--no-progress"],
                          env=subprocess_env(REPO), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_validator_train_split_emptied_by_num_val_images(copy, capsys):
    root, folder = copy
    n = _usable_train_images(folder)
    code, out = _validate_tool(root, "--num-val-images", str(n), capsys=capsys)
    assert code == 1, out
    (line,) = _problem_lines(out, "empty split")
    assert line.startswith(f"{folder / H5}: train split has no image: DATASETS.NUM_VAL_IMAGES = {n} sets the "
                           f"first {n} train images aside for the val split and the h5 has only {n} usable train "
                           f"images"), line
    assert f": set DATASETS.NUM_VAL_IMAGES below {n} " in line and "(here: --num-val-images)" in line
    code, out = _validate_tool(root, "--num-val-images", str(n - 1), capsys=capsys)
    assert code == 0 and "empty split" not in out, out


def test_validator_empty_test_split(copy, capsys):
    root, folder = copy
    h = _h5(folder)
    code, out = _validate_tool(root, "--num-val-images", str(NUM_VAL), capsys=capsys)
    assert code == 0, out
    # the test rows keep their boxes but lose every relation: SGB's loader keeps none of them
    test_rows = h["split"] == 2
    first, last = h["img_to_first_rel"].copy(), h["img_to_last_rel"].copy()
    first[test_rows] = -1
    last[test_rows] = -1
    _set_h5(folder, img_to_first_rel=first, img_to_last_rel=last)
    code, out = _validate_tool(root, "--num-val-images", str(NUM_VAL), capsys=capsys)
    assert code == 1, out
    (line,) = _problem_lines(out, "empty split")
    n = int(test_rows.sum())
    assert line.startswith(f"{folder / H5}: test split has no image: none of its {n} h5 rows with split == 2 "
                           f"(test) has >= 1 box and >= 1 relation"), line
    assert line.endswith("(tools/validate_dataset.py lists the rows)"), line


def test_validator_no_val_split_is_a_warning(copy):
    from sgg.data.validate import validate_dataset

    _, folder = copy
    report = validate_dataset(_files(folder), check_images=False, num_val_im=0)
    assert report.ok, report.format()
    (w,) = [p for p in report.warnings if p.kind == "empty split"]
    assert w.where == "val split" and "DATASETS.NUM_VAL_IMAGES = 0" in w.message


# ------------------------------------------------------------------------------------------------
# 4b / 4c: building a loader over an empty split names the dataset, the cause and the fix
def test_train_loader_over_train_split_emptied_by_num_val_images(copy, tmp_path):
    from sgg.data.build import build_train_loader

    root, folder = copy
    n = _usable_train_images(folder)
    cfg = tiny_config(str(root), str(tmp_path / "out"), "predcls", num_val_images=n + 3)
    with pytest.raises(ValueError) as e:
        build_train_loader(cfg, mode="predcls")
    msg = str(e.value)
    assert msg.startswith(f"dataset '{DATASET}_train' (train split of '{folder / H5}') has no image: "
                          f"DATASETS.NUM_VAL_IMAGES = {n + 3} sets the first {n + 3} train images aside"), msg
    assert f"only {n} usable train images" in msg
    assert f"Fix: set DATASETS.NUM_VAL_IMAGES below {n} " in msg


def test_train_loader_over_an_empty_dataset_passed_in(copy, tmp_path):
    from torch.utils.data import ConcatDataset

    from sgg.data.build import build_train_loader

    root, folder = copy
    cfg = tiny_config(str(root), str(tmp_path / "out"), "predcls")
    full = _dataset(folder, "train")
    empty = _dataset(folder, "train", num_val_im=10_000)
    empty.name = "my_train"
    with pytest.raises(ValueError, match=r"dataset 'my_train' \(train split of .*\) has no image: "
                                         r"DATASETS.NUM_VAL_IMAGES = 10000 "):
        build_train_loader(cfg, mode="predcls", dataset=ConcatDataset([full, empty]))


def test_build_dataset_empty_test_split(copy, tmp_path):
    from sgg.data.build import build_dataset, build_test_loader

    root, folder = copy
    split = _h5(folder)["split"]
    _set_h5(folder, split=np.zeros_like(split))  # no test row
    cfg = tiny_config(str(root), str(tmp_path / "out"), "predcls")
    assert len(build_dataset(cfg, f"{DATASET}_train", is_train=True)) > 0
    for build in (lambda: build_dataset(cfg, f"{DATASET}_test", is_train=False),
                  lambda: build_test_loader(cfg, f"{DATASET}_test")):
        with pytest.raises(ValueError) as e:
            build()
        assert str(e.value).startswith(
            f"dataset '{DATASET}_test' (test split of '{folder / H5}') has no image: the h5 has no image row "
            f"with split == 2 (test). Fix: "), str(e.value)


def test_val_split_without_num_val_images_fails_before_training(copy, tmp_path):
    from sgg.engine.common import validation_fn

    root, _ = copy
    cfg = tiny_config(str(root), str(tmp_path / "out"), "predcls", num_val_images=0)
    with pytest.raises(ValueError, match=rf"DATASETS.VAL names '{DATASET}_val' but DATASETS.NUM_VAL_IMAGES = 0"):
        validation_fn(cfg)
    cfg = tiny_config(str(root), str(tmp_path / "out"), "predcls", "SOLVER.TO_VAL", "False", num_val_images=0)
    assert validation_fn(cfg) is None


# ------------------------------------------------------------------------------------------------
# 5a: truncated / corrupt files: the error names the file and the fix
def _truncate(path, fraction=0.5):
    size = os.path.getsize(path)
    with open(path, "r+b") as f:
        f.truncate(int(size * fraction))


def test_truncated_h5_names_the_file(copy):
    from sgg.data.statistics import get_VG_statistics
    from sgg.data.validate import validate_dataset

    _, folder = copy
    _truncate(folder / H5)
    for load in (lambda: _dataset(folder, "train"), lambda: get_VG_statistics(**_files(folder), num_val_im=NUM_VAL)):
        with pytest.raises(OSError) as e:
            load()
        msg = str(e.value)
        assert f"'{folder / H5}'" in msg and "truncated, corrupt or unreadable" in msg, msg
        assert "truncated file" in msg  # h5py's own diagnosis is kept
        assert "Fix: re-download it, or regenerate it" in msg and "tools/make_synthetic_vg.py" in msg
        assert "check the disk" in msg
    report = validate_dataset(_files(folder), check_images=False, num_val_im=NUM_VAL)
    (p,) = report.errors
    assert p.kind == "h5 unreadable" and p.file == str(folder / H5)
    assert "is truncated, corrupt or unreadable" in p.message and "truncated file" in p.message


def test_garbage_h5_names_the_file(copy):
    _, folder = copy
    (folder / H5).write_bytes(b"not an hdf5 file" * 64)
    with pytest.raises(OSError, match=rf"cannot read the h5 '{re.escape(str(folder / H5))}' \(1024 bytes, h5py: "
                                      r".*signature"):
        _dataset(folder, "test")


@pytest.mark.parametrize("name,what", [(DICTS, "dicts json"), ("image_data.json", "image_data.json")])
def test_truncated_json_names_the_file(copy, name, what):
    _, folder = copy
    _truncate(folder / name)
    with pytest.raises(ValueError) as e:
        _dataset(folder, "train")
    msg = str(e.value)
    assert msg.startswith(f"cannot read the {what} '{folder / name}' ("), msg
    assert "it is not valid JSON" in msg and "truncated or corrupt" in msg and "Fix: re-download it" in msg
    from sgg.data.validate import validate_dataset

    report = validate_dataset(_files(folder), check_images=False, num_val_im=NUM_VAL)
    (p,) = [p for p in report.errors if p.file == str(folder / name)]
    assert p.line().startswith(f"{folder / name}: is not valid JSON (") and "truncated or corrupt" in p.line()
    assert p.fix.startswith("re-download or regenerate the file")


def test_no_lazy_h5_reads_in_loader_workers(copy):
    """The h5 and json are read whole when the dataset is built: a worker process never opens
    them, so a file that breaks later cannot fail there without its name."""
    import torch

    _, folder = copy
    ds = _dataset(folder, "train")
    _truncate(folder / H5)
    os.remove(folder / DICTS)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=1, collate_fn=lambda b: b)
    items = [d for batch in loader for d in batch]
    assert [d["image_id"] for d in items] == [int(i["image_id"]) for i in ds.img_info]


# ------------------------------------------------------------------------------------------------
# 5b: a GT box outside its image
def _move_box(folder, split, image, box, cxcywh):
    """Put one box of ``image`` (index in ``split``) somewhere else; returns (h5 box index, h5 row,
    image id)."""
    ds = _dataset(folder, split)
    row = int(np.flatnonzero(ds.split_mask)[image])
    h = _h5(folder)
    k = int(h["img_to_first_box"][row]) + box
    boxes = h["boxes_1024"].copy()
    boxes[k] = cxcywh
    _set_h5(folder, boxes_1024=boxes)
    return k, row, int(ds.img_info[image]["image_id"])


@pytest.mark.parametrize("split", ["train", "test"])
def test_box_outside_its_image_fails_the_load_naming_image_and_box(copy, split):
    from sgg.data.validate import validate_dataset

    _, folder = copy
    k, row, image_id = _move_box(folder, split, image=1, box=1, cxcywh=[2000, 300, 10, 10])
    with pytest.raises(ValueError) as e:
        _dataset(folder, split)
    msg = str(e.value)
    assert msg.startswith(f"'{folder / H5}': boxes_1024[{k}] = [1995, 295, 2005, 305] (xyxy in the 1024 frame)"), msg
    assert f"of image 1 of the {split} split (image id {image_id}, h5 row {row}, " in msg
    assert "lies entirely outside its image" in msg and "1 such box(es)" in msg
    assert "Fix: correct the box in the h5 or the image's width / height in image_data.json" in msg
    assert "tools/validate_dataset.py" in msg
    # the validator flags the same box with the same rule
    report = validate_dataset(_files(folder), check_images=False, num_val_im=NUM_VAL)
    (p,) = report.errors
    assert p.kind == "box outside its image" and p.where.startswith(f"boxes_1024[{k}] (image {image_id}, h5 row {row})")
    # the other splits do not hold the box and still load
    other = "test" if split == "train" else "train"
    assert len(_dataset(folder, other)) > 0


def test_box_outside_its_image_fails_training_setup(copy, tmp_path):
    from sgg.engine.common import build_relation_model

    root, folder = copy
    k, _, image_id = _move_box(folder, "train", image=0, box=0, cxcywh=[300, 3000, 10, 10])
    cfg = tiny_config(str(root), str(tmp_path / "out"), "predcls")
    with pytest.raises(ValueError, match=rf"boxes_1024\[{k}\] = .* \(image id {image_id}, h5 row .* lies "
                                         r"entirely outside its image"):
        build_relation_model(cfg)


def test_box_beyond_the_tolerance_is_clipped_with_one_warning(copy, caplog):
    from sgg.data.datasets.vg150_files import box_image_fit
    from sgg.data.validate import validate_dataset

    _, folder = copy
    ds = _dataset(folder, "train")
    info = ds.img_info[0]
    W, H = int(info["width"]), int(info["height"])
    # x2 reaches W + 0.2 x the longer side, x1 W - 0.19 x it: beyond the tolerance (max(2 px, 1 %)),
    # not entirely outside
    longer = max(W, H)
    x2 = int(1024 * (W + 0.2 * longer) / longer)
    k, row, image_id = _move_box(folder, "train", image=0, box=0, cxcywh=[x2 - 200, 100, 400, 100])
    with caplog.at_level(logging.WARNING, logger="sgg.data.datasets.vg150"):
        ds = _dataset(folder, "train")
    warns = [r.getMessage() for r in caplog.records if "stick out of their image" in r.getMessage()]
    assert len(warns) == 1 and warns[0].startswith("VG150 train: 1 box(es) stick out"), warns
    assert f"boxes_1024[{k}]" in warns[0] and f"image id {image_id}" in warns[0]
    assert ds[0]["boxes"][0, 2] == W - 1  # clipped as SGB
    report = validate_dataset(_files(folder), check_images=False, num_val_im=NUM_VAL)
    assert report.ok, report.format()
    (p,) = [p for p in report.warnings if p.kind == "box extends beyond its image"]
    assert p.where.startswith(f"boxes_1024[{k}] (image {image_id}, h5 row {row})")
    # the shared rule at its edges: touching the border (rounding) is fine
    px, outside, beyond = box_image_fit(np.array([[0, 0, 1024, 512], [1024 - 20, 0, 1024 + 20, 10],
                                                  [1014, 0, 1030, 10], [-30, 0, 5, 10]]), 100, 50)
    assert outside.tolist() == [False, False, True, False] and beyond.tolist() == [False, False, False, True]


def test_synthvg_profiles_load_without_box_problems(tmp_path, caplog):
    from sgg.data.catalog import get_dataset_files
    from sgg.data.datasets import VG150Dataset
    from sgg.data.validate import validate_dataset

    # generated in a child process: rendering the larger 'small' images starts OpenCV's thread pool,
    # which a later fork (generate_synthvg(workers=2) in test_synthetic.py) would inherit locked
    for profile, n in (("tiny", 60), ("small", 40)):
        proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "make_synthetic_vg.py"), "--profile",
                               profile, "--num-images", str(n), "--seed", "2", "--no-progress", "--out",
                               str(tmp_path / f"synthvg_{profile}")], env=subprocess_env(REPO),
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    for profile in ("tiny", "small"):
        files = get_dataset_files(f"synthvg_{profile}_train", str(tmp_path))
        report = validate_dataset(files, check_images=False, num_val_im=NUM_VAL)
        assert report.ok and report.count(kind="box extends beyond its image") == 0, report.format()
        with caplog.at_level(logging.WARNING, logger="sgg.data.datasets.vg150"):
            for split in ("train", "val", "test"):
                assert len(VG150Dataset.from_files(get_dataset_files(f"synthvg_{profile}_{split}", str(tmp_path)),
                                                   num_val_im=NUM_VAL)) > 0
        assert not [r for r in caplog.records if "stick out" in r.getMessage()]


def test_dicts_json_not_an_object(copy):
    _, folder = copy
    (folder / DICTS).write_text(json.dumps(["label_to_idx"]))
    with pytest.raises(ValueError, match=rf"'{re.escape(str(folder / DICTS))}' must hold a JSON object"):
        _dataset(folder, "train")
