"""vg150_files: write_vg150 -> VG150Dataset round trip on a hand-made dataset, box codec, writer errors."""
import os

import cv2
import h5py
import numpy as np
import pytest

from sgg.data.datasets import VG150Dataset, load_info
from sgg.data.datasets import vg150_files as vgf

CLASSES = ["cat", "dog", "tree"]
PREDICATES = ["on", "near", "has"]
ATTRIBUTES = ["red", "big"]

# One dict per h5 row. Image 1 (512 x 256, 1024-frame scale 2) and image 7 (64 x 64, scale 16) have
# boxes that survive the int grid exactly; image 2 (100 x 80) does not (scale 10.24).
IMAGES = [
    {"image_id": 1, "width": 512, "height": 256, "split": 0, "labels": [1, 2],
     "boxes": [[10, 20, 50, 60], [11, 21, 52, 63]], "rels": [[0, 1, 1]]},
    {"image_id": 2, "width": 100, "height": 80, "split": 0, "labels": [3, 1, 2],
     "boxes": [[10, 20, 50, 60], [0, 0, 99, 79], [33.3, 7.7, 41.2, 70.1]], "rels": [[0, 1, 2], [2, 0, 1], [0, 1, 1]]},
    {"image_id": 5, "width": 40, "height": 40, "split": 0, "labels": [2], "boxes": [[0, 0, 10, 10]], "rels": []},
    {"image_id": 7, "width": 64, "height": 64, "split": 2, "labels": [2, 2],
     "boxes": [[4, 8, 16, 32], [20, 0, 64, 64]], "rels": [[1, 0, 3]]},
]


def _write(root, images=IMAGES, attributes=True, **kw):
    attrs = [np.array([[1 + (k % 2), 2] + [0] * 8 for k in range(len(im["labels"]))], np.int64) for im in images]
    out = vgf.write_vg150(
        str(root), image_ids=[im["image_id"] for im in images], widths=[im["width"] for im in images],
        heights=[im["height"] for im in images], splits=[im["split"] for im in images],
        boxes=[im["boxes"] for im in images], labels=[im["labels"] for im in images],
        relations=[im["rels"] for im in images], class_names=CLASSES, predicate_names=PREDICATES,
        attributes=attrs if attributes else None, attribute_names=ATTRIBUTES if attributes else None, **kw)
    img_dir = os.path.join(str(root), vgf.IMAGE_DIR)
    os.makedirs(img_dir, exist_ok=True)
    for im in images:
        cv2.imwrite(os.path.join(img_dir, vgf.image_filename(im["image_id"])),
                    np.zeros((im["height"], im["width"], 3), np.uint8))
    return out, attrs


def _dataset(root, split, h5=vgf.H5_FILE, dicts=vgf.DICTS_FILE):
    root = str(root)
    return VG150Dataset(os.path.join(root, h5), os.path.join(root, dicts), os.path.join(root, vgf.IMAGE_DATA_FILE),
                        os.path.join(root, vgf.IMAGE_DIR), split, num_val_im=1)


def test_round_trip_through_the_loader(tmp_path):
    out, attrs = _write(tmp_path)
    assert out["roidb_file"] == os.path.join(str(tmp_path), vgf.H5_FILE)
    splits = {s: _dataset(tmp_path, s) for s in ("train", "val", "test")}
    # val = the first train image with relations, train = the rest; image 5 has none: dropped
    assert {s: [ds[i]["image_id"] for i in range(len(ds))] for s, ds in splits.items()} == \
        {"train": [2], "val": [1], "test": [7]}
    by_id = {ds[i]["image_id"]: (ds[i], ds.get_groundtruth(i)) for ds in splits.values() for i in range(len(ds))}
    src = {im["image_id"]: (im, a) for im, a in zip(IMAGES, attrs)}
    for image_id, (d, gt) in by_id.items():
        im, a = src[image_id]
        assert (d["width"], d["height"]) == (im["width"], im["height"])
        assert d["file_name"].endswith(os.path.join(vgf.IMAGE_DIR, f"{image_id}.jpg"))
        assert d["labels"].dtype == np.int64 and d["labels"].tolist() == im["labels"]
        assert d["relations"].dtype == np.int64 and d["relations"].tolist() == im["rels"]
        assert gt["relations"].tolist() == im["rels"]  # duplicate pairs kept (image 2)
        assert d["attributes"].tolist() == a.tolist()
        assert d["boxes"].dtype == np.float32
        want = vgf.loader_boxes(vgf.encode_boxes(im["boxes"], im["width"], im["height"]),
                                im["width"], im["height"]).astype(np.float32)
        np.testing.assert_array_equal(d["boxes"], want)
        np.testing.assert_array_equal(gt["boxes"], want)
        scale = vgf.BOX_SCALE / max(im["width"], im["height"])
        clipped = np.clip(np.asarray(im["boxes"], np.float64), 0, [im["width"] - 1, im["height"] - 1] * 2)
        np.testing.assert_allclose(d["boxes"], clipped, atol=0.5 / scale + 1e-5)
    # boxes on the integer grid come back exactly (x2, y2 clipped to W - 1, H - 1)
    assert by_id[1][0]["boxes"].tolist() == [[10, 20, 50, 60], [11, 21, 52, 63]]
    assert by_id[7][0]["boxes"].tolist() == [[4, 8, 16, 32], [20, 0, 63, 63]]
    assert load_info(out["dict_file"]) == (["__background__"] + CLASSES, ["__background__"] + PREDICATES,
                                           ["__background__"] + ATTRIBUTES)


def test_h5_layout_and_dicts(tmp_path):
    out, _ = _write(tmp_path, extra_info={"note": "x"})
    with h5py.File(out["roidb_file"], "r") as f:
        assert f[vgf.SPLIT][()].tolist() == [0, 0, 0, 2]
        assert f[vgf.IMG_TO_FIRST_BOX][()].tolist() == [0, 2, 5, 6]
        assert f[vgf.IMG_TO_LAST_BOX][()].tolist() == [1, 4, 5, 7]
        assert f[vgf.IMG_TO_FIRST_REL][()].tolist() == [0, 1, -1, 4]
        assert f[vgf.IMG_TO_LAST_REL][()].tolist() == [0, 3, -1, 4]
        assert f[vgf.RELATIONSHIPS][()].tolist() == [[0, 1], [2, 3], [4, 2], [2, 3], [7, 6]]  # global indices
        assert f[vgf.PREDICATES][()].tolist() == [[1], [2], [1], [1], [3]]
        assert f[vgf.BOXES].dtype == np.int32 and f[vgf.BOXES][0].tolist() == [60, 80, 80, 80]  # [cx, cy, w, h]
        assert f[vgf.boxes_key(512)][0].tolist() == [30, 40, 40, 40]
        assert f[vgf.LABELS].shape == (8, 1) and f[vgf.ATTRIBUTES].shape == (8, 10)
    info = vgf.read_dicts(out["dict_file"])
    assert info == out["dicts"]
    assert list(info)[:6] == [vgf.LABEL_TO_IDX, vgf.IDX_TO_LABEL, vgf.PREDICATE_TO_IDX, vgf.IDX_TO_PREDICATE,
                              vgf.ATTRIBUTE_TO_IDX, vgf.IDX_TO_ATTRIBUTE]
    assert info["object_count"] == {"cat": 2, "dog": 5, "tree": 1}
    assert info["predicate_count"] == {"on": 3, "near": 1, "has": 1}
    assert info["attribute_count"] == {"red": 5, "big": 11}
    assert info["note"] == "x"
    assert [e["image_id"] for e in vgf.read_image_data(out["image_file"])] == [1, 2, 5, 7]


def test_without_attributes_uses_the_older_release_names(tmp_path):
    out, _ = _write(tmp_path, attributes=False)
    assert os.path.basename(out["roidb_file"]) == vgf.H5_FILE_NO_ATTRIBUTES
    assert os.path.basename(out["dict_file"]) == vgf.DICTS_FILE_NO_ATTRIBUTES
    ds = _dataset(tmp_path, "test", vgf.H5_FILE_NO_ATTRIBUTES, vgf.DICTS_FILE_NO_ATTRIBUTES)
    assert ds.gt_attributes is None and ds.ind_to_attributes == [] and "attributes" not in ds[0]
    assert ds[0]["relations"].tolist() == [[1, 0, 3]]


def test_box_codec_matches_the_reference_decode():
    rng = np.random.default_rng(0)
    for W, H in ((640, 480), (333, 500), (1024, 768), (17, 1500)):
        x1, y1 = rng.uniform(0, W - 2, 50), rng.uniform(0, H - 2, 50)
        b = np.stack([x1, y1, rng.uniform(x1 + 1, W), rng.uniform(y1 + 1, H)], 1)
        enc = vgf.encode_boxes(b, W, H)
        assert enc.dtype == np.int32 and (enc[:, 2:] >= 1).all()
        ref = vgf.decode_boxes_inplace(enc.copy(), "x.h5") / vgf.BOX_SCALE * max(W, H)
        np.testing.assert_array_equal(vgf.decode_boxes(enc, W, H), ref)
        np.testing.assert_allclose(ref, b, atol=0.5 * max(W, H) / vgf.BOX_SCALE + 1e-9)


def test_readers_reject_corrupt_files(tmp_path):
    with pytest.raises(ValueError, match="row 1 has a non-positive size"):
        vgf.decode_boxes_inplace(np.array([[5, 5, 2, 2], [5, 5, 0, 2]], np.int32), "bad.h5")
    path = str(tmp_path / "bad.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset(vgf.SPLIT, data=np.zeros(2, np.int32))
    assert vgf.h5_shapes(path) == {vgf.SPLIT: (2,)}
    with pytest.raises(ValueError, match=r"lacks dataset\(s\) \['img_to_first_box'"):
        vgf.read_h5(path)
    assert list(vgf.read_h5(path, keys=[vgf.SPLIT])) == [vgf.SPLIT]


@pytest.mark.parametrize("change, match", [
    ({"image_ids": [1, 1592, 5, 7]}, "corrupt"),
    ({"labels": [[1, 2], [3, 1, 4], [2], [2, 2]]}, "labels must be in 1..3"),
    ({"relations": [[[0, 2, 1]], [], [], []]}, "relations must be"),
    ({"splits": [0, 0, 2]}, "one entry per image"),
])
def test_writer_rejects_bad_input(tmp_path, change, match):
    kw = dict(image_ids=[im["image_id"] for im in IMAGES], widths=[im["width"] for im in IMAGES],
              heights=[im["height"] for im in IMAGES], splits=[im["split"] for im in IMAGES],
              boxes=[im["boxes"] for im in IMAGES], labels=[im["labels"] for im in IMAGES],
              relations=[im["rels"] for im in IMAGES], class_names=CLASSES, predicate_names=PREDICATES)
    kw.update(change)
    with pytest.raises(ValueError, match=match):
        vgf.write_vg150(str(tmp_path), **kw)
    assert not os.path.exists(os.path.join(str(tmp_path), vgf.H5_FILE_NO_ATTRIBUTES))
