"""VG150 loader: splits, box decoding, filters, layouts and errors on hand-made SGB files."""
import json
import os

import cv2
import h5py
import numpy as np
import pytest
import torch

from sgg.data.datasets import (
    VG150Dataset,
    compute_zeroshot_triplets,
    load_depth,
    load_image,
    load_info,
    load_zeroshot_triplets,
)

try:
    from .vg_fixtures import full_image, vg_arrays, write_vg, xyxy_to_cxcywh
except ImportError:  # tests/ is not a package
    from vg_fixtures import full_image, vg_arrays, write_vg, xyxy_to_cxcywh


def _ds(files, split, **kw):
    return VG150Dataset(split=split, **files, **kw)


def _ids(ds):
    return [ds[i]["image_id"] for i in range(len(ds))]


# ------------------------------------------------------------------------------------ splits
def _twelve():
    """12 h5 rows: split flags, some without boxes / relations; widths tell the rows apart."""
    no_rel = lambda i, s: full_image(i, s, rels=[], width=i)  # noqa: E731
    no_box = lambda i, s: {"image_id": i, "split": s, "width": i, "boxes": [], "labels": []}  # noqa: E731
    return [
        full_image(101, 0, width=101),  # row 0
        no_box(102, 0),                 # row 1
        no_rel(103, 0),                 # row 2
        full_image(104, 0, width=104),  # row 3
        full_image(105, 2, width=105),  # row 4
        full_image(106, 0, width=106),  # row 5
        no_rel(107, 2),                 # row 6
        full_image(108, 0, width=108),  # row 7
        full_image(109, 2, width=109),  # row 8
        full_image(110, 0, width=110),  # row 9
        no_box(111, 2),                 # row 10
        full_image(112, 0, width=112),  # row 11
    ]


@pytest.fixture
def twelve(tmp_path):
    # the corrupt VG ids sit in image_data.json and must be dropped before aligning with the h5
    return write_vg(tmp_path, _twelve(), image_data_insert=[
        (0, {"image_id": 1592, "width": 1, "height": 1}),
        (5, {"image_id": 4617, "width": 1, "height": 1}),
        (13, {"image_id": 1722, "width": 1, "height": 1}),
    ])


def test_splits_exact(twelve):
    assert _ids(_ds(twelve, "train", num_val_im=2)) == [106, 108, 110, 112]
    assert _ids(_ds(twelve, "val", num_val_im=2)) == [101, 104]
    assert _ids(_ds(twelve, "test", num_val_im=2)) == [105, 109]
    # without the relation filter: images with boxes but no relation come back
    assert _ids(_ds(twelve, "train", num_val_im=2, filter_empty_rels=False)) == [104, 106, 108, 110, 112]
    assert _ids(_ds(twelve, "val", num_val_im=2, filter_empty_rels=False)) == [101, 103]
    assert _ids(_ds(twelve, "test", num_val_im=2, filter_empty_rels=False)) == [105, 107, 109]
    # num_im cuts before the val slice; num_val_im=0 keeps every train image
    assert _ids(_ds(twelve, "train", num_val_im=2, num_im=5)) == [106, 108, 110]
    assert _ids(_ds(twelve, "train", num_val_im=0)) == [101, 104, 106, 108, 110, 112]
    assert _ids(_ds(twelve, "test", num_val_im=2, num_im=1)) == [105]


def test_alignment_and_img_info(twelve):
    ds = _ds(twelve, "train", num_val_im=2)
    for i in range(len(ds)):
        d = ds[i]
        assert ds.get_img_info(i)["image_id"] == d["image_id"]
        assert d["width"] == d["image_id"]  # the fixture's widths identify the h5 row
        assert d["file_name"] == os.path.join(twelve["img_dir"], f"{d['image_id']}.jpg")
    assert len(ds) == 4 and ds.num_classes == 4 and ds.num_predicates == 4
    assert ds.ind_to_classes == ["__background__", "cat", "dog", "tree"]
    assert ds.ind_to_predicates == ["__background__", "on", "near", "has"]
    assert ds.ind_to_attributes == ["__background__", "red", "big"]


def test_load_info_sorts_by_index(tmp_path):
    p = tmp_path / "d.json"
    p.write_text(json.dumps({"label_to_idx": {"b": 2, "a": 3, "c": 1}, "predicate_to_idx": {"y": 2, "x": 1}}))
    classes, preds, attrs = load_info(str(p))
    assert classes == ["__background__", "c", "b", "a"]
    assert preds == ["__background__", "x", "y"]
    assert attrs == []
    p.write_text(json.dumps({"label_to_idx": {"b": 2, "a": 4}, "predicate_to_idx": {"x": 1}}))
    with pytest.raises(ValueError, match="contiguous"):
        load_info(str(p))


# ------------------------------------------------------------------------------------ boxes
def test_box_decode_truncation_and_rescale(tmp_path):
    im = {"image_id": 5, "width": 200, "height": 100, "split": 2,
          "boxes": [[10, 20, 5, 7], [1000, 500, 100, 100], [1, 3, 5, 4]],
          "labels": [1, 2, 3], "rels": [[0, 1, 1]]}
    files = write_vg(tmp_path, [im])
    ds = _ds(files, "test")
    # x1 = int(10 - 2.5) = 7, y1 = int(20 - 3.5) = 16, x2 = 7 + 5, y2 = 16 + 7;
    # x1 = int(1 - 2.5) = int(-1.5) = -1 (toward zero, not floor), y1 = int(3 - 2) = 1
    np.testing.assert_array_equal(ds.gt_boxes_1024[0], [[7, 16, 12, 23], [950, 450, 1050, 550], [-1, 1, 4, 5]])
    s = 200 / 1024  # max(w, h) / 1024
    # box 1 sticks out of the 200x100 image (x2 205.1, y2 107.4 px): clipped, as SGB
    expect = np.array([[7 * s, 16 * s, 12 * s, 23 * s],
                       [950 * s, 450 * s, 199, 99],                # x to [0, w-1], y to [0, h-1]
                       [0, 1 * s, 4 * s, 5 * s]], dtype=np.float32)
    gt = ds.get_groundtruth(0)
    assert gt["boxes"].dtype == np.float32
    np.testing.assert_array_equal(gt["boxes"], expect)
    d = ds[0]
    np.testing.assert_array_equal(d["boxes"], expect)
    assert d["labels"].dtype == np.int64 and d["labels"].tolist() == [1, 2, 3]
    assert d["relations"].dtype == np.int64 and d["relations"].tolist() == [[0, 1, 1]]
    assert (d["height"], d["width"], d["image_id"]) == (100, 200, 5)


# ------------------------------------------------------------------------------------ filters
def _overlap_images():
    A, B, C, D = [0, 0, 10, 10], [20, 20, 30, 30], [5, 5, 15, 15], [10, 0, 20, 10]
    keep = {"image_id": 1, "split": 0,
            "boxes": [xyxy_to_cxcywh(b) for b in (A, B, C, D)], "labels": [1, 2, 3, 1],
            # A-B apart (dropped), A-C overlap, A-D touch: +1 IoU > 0 (kept)
            "rels": [[0, 1, 1], [0, 2, 2], [3, 0, 3]]}
    empty = {"image_id": 2, "split": 0,
             "boxes": [xyxy_to_cxcywh(A), xyxy_to_cxcywh(B)], "labels": [1, 2], "rels": [[0, 1, 1], [1, 0, 2]]}
    return [keep, empty, full_image(3, 0), full_image(4, 2, rels=[[0, 1, 1]],
                                                      boxes=[xyxy_to_cxcywh(A), xyxy_to_cxcywh(B)])]


def test_filter_non_overlap(tmp_path):
    files = write_vg(tmp_path, _overlap_images())
    ds = _ds(files, "train", num_val_im=0, filter_non_overlap=True)
    assert _ids(ds) == [1, 3]  # image 2 has no overlapping relation left
    assert ds[0]["relations"].tolist() == [[0, 2, 2], [3, 0, 3]]
    assert ds.get_groundtruth(0)["relations"].tolist() == [[0, 2, 2], [3, 0, 3]]
    assert ds.split_mask.tolist() == [True, False, True, False]
    # off: everything stays
    ds = _ds(files, "train", num_val_im=0)
    assert _ids(ds) == [1, 2, 3] and len(ds[0]["relations"]) == 3
    # train only (as SGB): the test split ignores it
    ds = _ds(files, "test", filter_non_overlap=True)
    assert _ids(ds) == [4] and ds[0]["relations"].tolist() == [[0, 1, 1]]


def test_filter_duplicate_rels(tmp_path):
    im = full_image(1, 0, boxes=[xyxy_to_cxcywh([0, 0, 10, 10])] * 3, labels=[1, 2, 3],
                    rels=[[0, 1, 3], [0, 1, 1], [1, 0, 2], [0, 1, 3], [2, 0, 1]])
    files = write_vg(tmp_path, [im, dict(im, image_id=2, split=2)])
    ds = _ds(files, "train", num_val_im=0, filter_duplicate_rels=True, rng=np.random.default_rng(0))
    picks = []
    for _ in range(600):
        r = ds[0]["relations"]
        assert r.dtype == np.int64 and r.shape == (3, 3)
        assert r[:, :2].tolist() == [[0, 1], [1, 0], [2, 0]]  # one row per pair, first-seen order
        assert r[1:, 2].tolist() == [2, 1]
        picks.append(r[0, 2])
    picks = np.array(picks)
    assert set(picks.tolist()) == {1, 3}
    assert 0.58 < (picks == 3).mean() < 0.75  # uniform over rows: 'has' twice, 'on' once
    # evaluation keeps every row
    assert ds.get_groundtruth(0)["relations"].tolist() == im["rels"]
    # global RNG when no generator is given
    ds = _ds(files, "train", num_val_im=0, filter_duplicate_rels=True)
    np.random.seed(0)
    assert ds[0]["relations"].shape == (3, 3)
    # not on test
    ds = _ds(files, "test", filter_duplicate_rels=True)
    assert ds[0]["relations"].tolist() == im["rels"]


# ------------------------------------------------------------------------------------ layouts
@pytest.mark.parametrize("attributes", [True, False])
def test_both_layouts(tmp_path, attributes):
    ims = [full_image(1, 0, attributes=[[1, 2] + [0] * 8, [2] + [0] * 9]), full_image(2, 2)]
    files = write_vg(tmp_path, ims, attributes=attributes)
    assert os.path.basename(files["roidb_file"]) == ("VG-SGG-with-attri.h5" if attributes else "VG-SGG.h5")
    ds = _ds(files, "train", num_val_im=0)
    d = ds[0]
    if attributes:
        assert d["attributes"].dtype == np.int64 and d["attributes"].shape == (2, 10)
        assert d["attributes"][:, :2].tolist() == [[1, 2], [2, 0]]
        assert ds.get_groundtruth(0)["attributes"].shape == (2, 10)
        assert ds.ind_to_attributes == ["__background__", "red", "big"]
    else:
        assert "attributes" not in d and ds.gt_attributes is None
        assert ds.ind_to_attributes == []
    assert "depth_file" not in d


def test_depth_files_and_loading(tmp_path):
    files = write_vg(tmp_path, [full_image(1, 0), full_image(2, 0)])
    depth_dir = tmp_path / "depth"
    depth_dir.mkdir()
    d16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 5000)
    cv2.imwrite(str(depth_dir / "1.png"), d16)
    np.save(depth_dir / "2.npy", np.full((1, 3, 4), 2.5, np.float32))
    ds = _ds(files, "train", num_val_im=0, depth_dir=str(depth_dir))
    assert ds[0]["depth_file"].endswith("1.png") and ds[1]["depth_file"].endswith("2.npy")
    a = load_depth(ds[0]["depth_file"])
    assert a.dtype == np.float32 and a.shape == (3, 4)
    np.testing.assert_array_equal(a, d16.astype(np.float32))
    np.testing.assert_array_equal(load_depth(ds[0]["depth_file"], scale=1e-3), d16 * np.float32(1e-3))
    b = load_depth(ds[1]["depth_file"])
    assert b.shape == (3, 4) and (b == 2.5).all()
    os.remove(depth_dir / "2.npy")
    with pytest.raises(FileNotFoundError, match="depth maps"):
        _ds(files, "train", num_val_im=0, depth_dir=str(depth_dir))


def test_load_image_rgb(tmp_path):
    bgr = np.zeros((6, 5, 3), np.uint8)
    bgr[..., 2] = 255  # red in BGR
    p = str(tmp_path / "x.png")
    cv2.imwrite(p, bgr)
    img = load_image(p)
    assert img.dtype == np.uint8 and img.shape == (6, 5, 3)
    assert (img[..., 0] == 255).all() and (img[..., 2] == 0).all()
    with pytest.raises(ValueError, match="x.png"):
        load_image(p, expected_hw=(5, 6))


# ------------------------------------------------------------------------------------ errors
@pytest.mark.parametrize("key", ["roidb_file", "dict_file", "image_file", "img_dir"])
def test_missing_file_names_it(tmp_path, key):
    files = write_vg(tmp_path, [full_image(1, 0)])
    files[key] = files[key] + "_nope"
    with pytest.raises(FileNotFoundError) as e:
        _ds(files, "train", num_val_im=0)
    assert files[key] in str(e.value) and "DATASETS.DATA_DIR" in str(e.value)


def test_row_count_mismatch(tmp_path):
    files = write_vg(tmp_path, [full_image(1, 0), full_image(2, 0), full_image(3, 2)])
    with open(files["image_file"]) as f:
        data = json.load(f)
    with open(files["image_file"], "w") as f:
        json.dump(data[:2] + [{"image_id": 4616, "width": 1, "height": 1}], f)  # corrupt id is not usable
    with pytest.raises(ValueError) as e:
        _ds(files, "train", num_val_im=0)
    msg = str(e.value)
    assert "has 2 usable images" in msg and "has 3 image rows" in msg
    assert files["image_file"] in msg and files["roidb_file"] in msg


def test_undecodable_image(tmp_path):
    files = write_vg(tmp_path, [full_image(1, 0)])
    ds = _ds(files, "train", num_val_im=0)
    assert load_image(ds[0]["file_name"]).shape == (16, 16, 3)
    with open(ds[0]["file_name"], "wb") as f:
        f.write(b"not a jpeg at all")
    with pytest.raises(ValueError, match="1.jpg") as e:
        load_image(ds[0]["file_name"])
    assert "cannot decode" in str(e.value)
    with pytest.raises(FileNotFoundError, match="nope.jpg"):
        load_image(str(tmp_path / "nope.jpg"))


def test_missing_image_on_disk(tmp_path):
    files = write_vg(tmp_path, [full_image(i, 0) for i in range(1, 8)] + [full_image(9, 2)])
    os.remove(os.path.join(files["img_dir"], "3.jpg"))
    os.remove(os.path.join(files["img_dir"], "6.jpg"))
    with pytest.raises(FileNotFoundError) as e:
        _ds(files, "train", num_val_im=0)
    msg = str(e.value)
    assert "2 of 7 images" in msg and "3.jpg" in msg and "6.jpg" in msg and "DATASETS.DATA_DIR" in msg
    # other splits whose images are all there load; check_images=False skips the check
    assert len(_ds(files, "test")) == 1
    assert len(_ds(files, "train", num_val_im=0, check_images=False)) == 7


def test_relationship_outside_image(tmp_path):
    ims = [full_image(1, 0), full_image(2, 0)]
    arr = vg_arrays(ims)
    rel = arr["relationships"].copy()
    rel[0] = [0, 2]  # object 2 belongs to image 2
    files = write_vg(tmp_path, ims, h5_overrides={"relationships": rel})
    with pytest.raises(ValueError, match="relationships row 0") as e:
        _ds(files, "train", num_val_im=0)
    assert files["roidb_file"] in str(e.value)


@pytest.mark.parametrize("bad,what", [([5, 5, 0, 4], "non-positive size"), ([-1, 5, 4, 4], "negative centre")])
def test_bad_box_rows(tmp_path, bad, what):
    ims = [full_image(1, 0), full_image(2, 0)]
    boxes = vg_arrays(ims)["boxes_1024"].copy()
    boxes[3] = bad
    files = write_vg(tmp_path, ims, h5_overrides={"boxes_1024": boxes})
    with pytest.raises(ValueError, match=f"row 3 has a {what}"):
        _ds(files, "train", num_val_im=0)


def test_labels_outside_dict(tmp_path):
    files = write_vg(tmp_path, [full_image(1, 0, labels=[1, 7])])
    with pytest.raises(ValueError, match="do not belong together"):
        _ds(files, "train", num_val_im=0)


def test_h5_dtype_and_file_closed(tmp_path):
    files = write_vg(tmp_path, [full_image(1, 0)])
    ds = _ds(files, "train", num_val_im=0)
    with h5py.File(files["roidb_file"], "a") as f:  # loader must not keep the file open
        f.attrs["touched"] = 1
    assert ds.gt_boxes_1024[0].dtype == np.int32


# ------------------------------------------------------------------------------------ zero-shot
def test_zeroshot_io_and_compute(tmp_path):
    trip = np.array([[1, 2, 3], [3, 1, 2]], np.int64)
    torch.save(torch.from_numpy(trip), tmp_path / "zeroshot_triplet.pytorch")
    np.save(tmp_path / "z.npy", trip.astype(np.int32))
    (tmp_path / "z.txt").write_text("# s o p\n1 2 3\n3,1,2\n")
    for name in ("zeroshot_triplet.pytorch", "z.npy", "z.txt"):
        got = load_zeroshot_triplets(str(tmp_path / name))
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, trip)
    with pytest.raises(FileNotFoundError, match="missing.pytorch"):
        load_zeroshot_triplets(str(tmp_path / "missing.pytorch"))

    b = [xyxy_to_cxcywh([0, 0, 10, 10])] * 3
    ims = [full_image(1, 0, boxes=b, labels=[1, 2, 3], rels=[[0, 1, 1], [1, 2, 2]]),
           full_image(2, 2, boxes=b, labels=[1, 2, 3], rels=[[0, 1, 1], [2, 0, 3], [2, 0, 3], [1, 0, 1]]),
           full_image(3, 2, boxes=b, labels=[3, 2, 1], rels=[[0, 1, 2], [1, 2, 2]])]
    files = write_vg(tmp_path / "vg", ims)
    zs = compute_zeroshot_triplets(_ds(files, "train", num_val_im=0), _ds(files, "test"))
    # test triplets: (1,2,1) seen; (3,1,3); (2,1,1); (3,2,2); (2,1,2)
    assert zs.dtype == np.int64
    assert zs.tolist() == [[2, 1, 1], [2, 1, 2], [3, 1, 3], [3, 2, 2]]
