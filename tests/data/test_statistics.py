"""Frequency statistics (SGB get_VG_statistics) on a hand-counted dataset, and their cache."""
import os

import numpy as np
import pytest
import torch

import sgg.data.statistics as st
from sgg.data.datasets import VG150Dataset
from sgg.data.statistics import (
    box_filter,
    frequency_prior_predictions,
    get_dataset_statistics,
    get_VG_statistics,
)

try:
    from .vg_fixtures import write_vg, xyxy_to_cxcywh
except ImportError:  # tests/ is not a package
    from vg_fixtures import write_vg, xyxy_to_cxcywh

A, B, C = [0, 0, 10, 10], [5, 5, 15, 15], [40, 40, 50, 50]
TOUCH = [10, 0, 20, 10]  # touches A: +1 overlap yes, strict overlap no
FAR = [100, 100, 110, 110]


def _boxes(*bs):
    return [xyxy_to_cxcywh(b) for b in bs]


IMAGES = [
    # row 0: first train image -> the validation slice (num_val_im=1): must not count
    {"image_id": 10, "split": 0, "boxes": _boxes(A, B), "labels": [3, 3], "rels": [[0, 1, 1]]},
    # row 1: A(cat) B(dog) overlap, C(tree) apart; (0,2,3) is dropped by the overlap filter
    {"image_id": 11, "split": 0, "boxes": _boxes(A, B, C), "labels": [1, 2, 3],
     "rels": [[0, 1, 1], [0, 1, 2], [1, 0, 1], [0, 2, 3]]},
    # row 2: two cats touching: relation kept (+1 IoU), but no strict overlap -> bg uses all pairs
    {"image_id": 12, "split": 0, "boxes": _boxes(A, TOUCH), "labels": [1, 1], "rels": [[0, 1, 3]]},
    # row 3: only a non-overlapping relation -> the image is dropped
    {"image_id": 13, "split": 0, "boxes": _boxes(A, FAR), "labels": [3, 2], "rels": [[0, 1, 2]]},
    # row 4: test image: must not count
    {"image_id": 14, "split": 2, "boxes": _boxes(A, B), "labels": [2, 2], "rels": [[0, 1, 1]]},
]


def _expected():
    fg = np.zeros((4, 4, 4), np.int64)
    fg[1, 2, 1] += 1
    fg[1, 2, 2] += 1
    fg[2, 1, 1] += 1
    fg[1, 1, 3] += 1
    bg = np.ones((4, 4), np.int64)
    bg[1, 2] += 1  # image 11: (A, B)
    bg[2, 1] += 1  # image 11: (B, A)
    bg[1, 1] += 2  # image 12: (0, 1) and (1, 0), the all-pairs fallback
    fg[:, :, 0] = bg
    return fg, bg


@pytest.fixture
def files(tmp_path):
    return write_vg(tmp_path / "vg", IMAGES)


def test_box_filter():
    assert box_filter(np.array([A, B, C])).tolist() == [[0, 1], [1, 0]]
    assert box_filter(np.array([A, TOUCH])).tolist() == [[0, 1], [1, 0]]  # fallback: all pairs
    assert box_filter(np.array([A, B, C]), must_overlap=False).shape == (6, 2)
    assert box_filter(np.array([A])).shape == (0, 2)


def test_statistics_by_hand(files):
    s = get_VG_statistics(**files, num_val_im=1)
    fg, bg = _expected()
    assert s["fg_matrix"].dtype == np.int64 and s["fg_matrix"].shape == (4, 4, 4)
    np.testing.assert_array_equal(s["fg_matrix"], fg)
    np.testing.assert_array_equal(s["bg_matrix"], bg)
    assert s["pred_dist"].dtype == np.float32 and s["pred_dist"].shape == (4, 4, 4)
    eps = 1e-3
    np.testing.assert_allclose(s["pred_dist"][1, 2], np.log(np.array([2, 1, 1, 0]) / 4 + eps), rtol=1e-6)
    np.testing.assert_allclose(s["pred_dist"][1, 1], np.log(np.array([3, 0, 0, 1]) / 4 + eps), rtol=1e-6)
    np.testing.assert_allclose(s["pred_dist"][2, 1], np.log(np.array([2, 1, 0, 0]) / 3 + eps), rtol=1e-6)
    np.testing.assert_allclose(s["pred_dist"][0, 3], np.log(np.array([1, 0, 0, 0]) + eps), rtol=1e-6)
    assert s["predicate_counts"].tolist() == [0, 2, 1, 1]
    assert s["object_counts"].tolist() == [0, 3, 1, 1]
    assert s["num_images"] == 2
    assert s["obj_classes"] == ["__background__", "cat", "dog", "tree"]
    assert s["rel_classes"] == ["__background__", "on", "near", "has"]


def test_reuses_reference_train_set(files, monkeypatch):
    ds = VG150Dataset(**files, split="train", num_val_im=1, filter_non_overlap=True)
    monkeypatch.setattr(st, "_reference_train_set", lambda *a: pytest.fail("re-read the h5"))
    s = get_dataset_statistics(ds)
    np.testing.assert_array_equal(s["fg_matrix"], _expected()[0])


def test_other_filters_still_give_reference_statistics(files):
    # the experiment's dataset (no overlap filter, dedup on) does not change the statistics
    ds = VG150Dataset(**files, split="train", num_val_im=1, filter_duplicate_rels=True)
    s = get_dataset_statistics(ds)
    np.testing.assert_array_equal(s["fg_matrix"], _expected()[0])


def test_cache_hit_and_invalidation(files, tmp_path, monkeypatch):
    cache = tmp_path / "out"
    calls = []
    real = st.compute_statistics

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(st, "compute_statistics", counting)
    spec = dict(files, num_val_im=1)
    s1 = get_dataset_statistics(spec, cache_dir=str(cache), name="VG_train")
    assert len(calls) == 1 and os.path.isfile(cache / "VG_train_statistics.npz")
    s2 = get_dataset_statistics(spec, cache_dir=str(cache), name="VG_train")
    assert len(calls) == 1  # cache hit
    for k in ("fg_matrix", "bg_matrix", "pred_dist", "predicate_counts", "object_counts"):
        np.testing.assert_array_equal(s1[k], s2[k])
        assert s1[k].dtype == s2[k].dtype
    assert s2["obj_classes"] == s1["obj_classes"] and s2["num_images"] == 2
    assert isinstance(s2["rel_classes"][1], str)

    # a changed dataset (new h5: image 13's relation now overlaps) is recomputed
    ims = [dict(im) for im in IMAGES]
    ims[3]["boxes"] = _boxes(A, B)
    write_vg(tmp_path / "vg", ims)
    st_ = os.stat(files["roidb_file"])
    os.utime(files["roidb_file"], ns=(st_.st_atime_ns, st_.st_mtime_ns + 10**9))
    s3 = get_dataset_statistics(spec, cache_dir=str(cache), name="VG_train")
    assert len(calls) == 2 and s3["num_images"] == 3 and s3["fg_matrix"][3, 2, 2] == 1
    get_dataset_statistics(spec, cache_dir=str(cache), name="VG_train")
    assert len(calls) == 2
    # another num_val_im is another key
    get_dataset_statistics(dict(files, num_val_im=0), cache_dir=str(cache), name="VG_train")
    assert len(calls) == 3


def test_corrupt_cache_is_recomputed(files, tmp_path):
    cache = tmp_path / "out"
    cache.mkdir()
    (cache / "x_statistics.npz").write_bytes(b"garbage")
    s = get_dataset_statistics(dict(files, num_val_im=1), cache_dir=str(cache), name="x")
    np.testing.assert_array_equal(s["fg_matrix"], _expected()[0])


def test_frequency_prior_predictions():
    rng = np.random.default_rng(0)
    pred_dist = rng.normal(size=(4, 4, 5)).astype(np.float32)
    labels = np.array([1, 3, 2])
    pairs = np.array([[0, 1], [2, 0], [1, 2]])
    got = frequency_prior_predictions(pred_dist, labels, pairs)
    assert got.shape == (3, 5) and got.dtype == np.float32
    for k, (s, o) in enumerate(pairs):
        e = np.exp(pred_dist[labels[s], labels[o]].astype(np.float64))
        np.testing.assert_allclose(got[k], e / e.sum(), rtol=1e-6)
    t = frequency_prior_predictions(torch.from_numpy(pred_dist), torch.from_numpy(labels), torch.from_numpy(pairs))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), got, rtol=1e-5)
    assert frequency_prior_predictions(pred_dist, labels, np.zeros((0, 2), int)).shape == (0, 5)


# ------------------------------------------------------------------ against a line-by-line SGB port
def _sgb_reference(roidb_file, num_val_im):
    """SGB's load_graphs(split='train', filter_non_overlap=True) + get_VG_statistics, loops and all."""
    import h5py

    h5 = h5py.File(roidb_file, "r")
    data_split = h5["split"][:]
    split_mask = data_split == 0
    split_mask &= h5["img_to_first_box"][:] >= 0
    split_mask &= h5["img_to_first_rel"][:] >= 0
    image_index = np.where(split_mask)[0][num_val_im:]
    split_mask = np.zeros_like(data_split).astype(bool)
    split_mask[image_index] = True
    all_labels = h5["labels"][:, 0]
    all_boxes = h5["boxes_1024"][:]
    all_boxes[:, :2] = all_boxes[:, :2] - all_boxes[:, 2:] / 2
    all_boxes[:, 2:] = all_boxes[:, :2] + all_boxes[:, 2:]
    fb, lb = h5["img_to_first_box"][split_mask], h5["img_to_last_box"][split_mask]
    fr, lr = h5["img_to_first_rel"][split_mask], h5["img_to_last_rel"][split_mask]
    _rel, _pred = h5["relationships"][:], h5["predicates"][:, 0]
    boxes, classes, rels_out = [], [], []
    for i in range(len(image_index)):
        boxes_i = all_boxes[fb[i]: lb[i] + 1, :]
        rels = np.column_stack((_rel[fr[i]: lr[i] + 1] - fb[i], _pred[fr[i]: lr[i] + 1]))
        b = torch.as_tensor(boxes_i, dtype=torch.float32)
        area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
        lt = torch.max(b[:, None, :2], b[:, :2])
        rb = torch.min(b[:, None, 2:], b[:, 2:])
        wh = (rb - lt + 1).clamp(min=0)
        inter = wh[:, :, 0] * wh[:, :, 1]
        iou = (inter / (area[:, None] + area - inter)).numpy()
        inc = np.where(iou[rels[:, 0], rels[:, 1]] > 0.0)[0]
        if inc.size > 0:
            rels = rels[inc]
        else:
            split_mask[image_index[i]] = 0
            continue
        boxes.append(boxes_i)
        classes.append(all_labels[fb[i]: lb[i] + 1])
        rels_out.append(rels)
    h5.close()
    C, P = 4, 4
    fg = np.zeros((C, C, P), dtype=np.int64)
    bg = np.zeros((C, C), dtype=np.int64)
    for cls, rel, bx in zip(classes, rels_out, boxes):
        for (o1, o2), r in zip(cls[rel[:, :2]], rel[:, 2]):
            fg[o1, o2, r] += 1
        bx = bx.astype(float)
        n = bx.shape[0]
        lt = np.maximum(bx.reshape([n, 1, -1])[:, :, :2], bx.reshape([1, n, -1])[:, :, :2])
        rb = np.minimum(bx.reshape([n, 1, -1])[:, :, 2:], bx.reshape([1, n, -1])[:, :, 2:])
        wh = (rb - lt).clip(min=0)
        overlaps = wh[:, :, 0] * wh[:, :, 1] > 0
        np.fill_diagonal(overlaps, 0)
        allp = np.ones_like(overlaps, dtype=bool)
        np.fill_diagonal(allp, 0)
        pb = np.column_stack(np.where(overlaps))
        if pb.size == 0:
            pb = np.column_stack(np.where(allp))
        for o1, o2 in cls[np.array(pb, dtype=int)]:
            bg[o1, o2] += 1
    bg += 1
    fg[:, :, 0] = bg
    pred_dist = np.log(fg / fg.sum(2)[:, :, None] + 1e-3)
    return split_mask, boxes, rels_out, fg, bg, torch.from_numpy(pred_dist).float().numpy()


def test_matches_sgb_port_on_random_data(tmp_path):
    rng = np.random.default_rng(1)
    images = []
    for k in range(80):
        n = int(rng.integers(0, 7))
        cxcy = rng.integers(0, 990, size=(n, 2))  # x1, y1 < W - 1 = 39 px: no box entirely outside
        wh = rng.integers(1, 400, size=(n, 2))  # odd sizes too: truncation matters
        m = int(rng.integers(0, 6)) if n else 0
        rels = [[int(rng.integers(n)), int(rng.integers(n)), int(rng.integers(1, 4))] for _ in range(m)]
        images.append({"image_id": k + 1, "split": int(rng.choice([0, 0, 2])), "width": 40, "height": 40,
                       "boxes": np.column_stack([cxcy, wh]).tolist(),
                       "labels": rng.integers(1, 4, size=n).tolist(), "rels": rels})
    files = write_vg(tmp_path, images, with_images=False)
    mask, boxes, rels, fg, bg, pred_dist = _sgb_reference(files["roidb_file"], num_val_im=5)
    ds = VG150Dataset(**files, split="train", num_val_im=5, filter_non_overlap=True, check_images=False)
    assert len(ds) > 10
    np.testing.assert_array_equal(ds.split_mask, mask)
    for i in range(len(ds)):
        np.testing.assert_array_equal(ds.gt_boxes_1024[i], boxes[i])
        np.testing.assert_array_equal(ds.relationships[i], rels[i])
    s = get_VG_statistics(**files, num_val_im=5)
    np.testing.assert_array_equal(s["fg_matrix"], fg)
    np.testing.assert_array_equal(s["bg_matrix"], bg)
    np.testing.assert_array_equal(s["pred_dist"], pred_dist)


def test_accepts_catalog_like_object(files):
    from types import SimpleNamespace

    s = get_dataset_statistics(SimpleNamespace(**files, depth_dir=""), num_val_im=1)
    np.testing.assert_array_equal(s["fg_matrix"], _expected()[0])
    with pytest.raises(KeyError, match="img_dir"):
        get_dataset_statistics({k: v for k, v in files.items() if k != "img_dir"})


def _dist_worker(rank, world, init_file, files, cache, result_dir):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        real = st.compute_statistics

        def only_rank0(*a, **k):
            assert rank == 0, "a non-main rank recomputed the statistics"
            return real(*a, **k)

        st.compute_statistics = only_rank0
        s = get_dataset_statistics(dict(files, num_val_im=1), cache_dir=cache, name="VG_train")
        np.save(os.path.join(result_dir, f"fg{rank}.npy"), s["fg_matrix"])
    finally:
        dist.destroy_process_group()


def test_distributed_rank0_writes_others_read(files, tmp_path):
    import torch.multiprocessing as mp

    res = tmp_path / "res"
    res.mkdir()
    mp.spawn(_dist_worker, args=(2, str(tmp_path / "init"), files, str(tmp_path / "out"), str(res)), nprocs=2)
    for r in range(2):
        np.testing.assert_array_equal(np.load(res / f"fg{r}.npy"), _expected()[0])
    assert os.path.isfile(tmp_path / "out" / "VG_train_statistics.npz")


def test_unseen_triplets_are_the_test_triplets_with_zero_train_count():
    from sgg.data.statistics import unseen_triplets

    fg = np.zeros((4, 4, 3), np.int64)
    fg[1, 2, 1] = 5  # seen: (1, 2, 1)
    fg[3, 1, 2] = 1  # seen: (3, 1, 2)
    test = np.array([[1, 2, 1], [1, 2, 2], [3, 1, 2], [1, 2, 2], [2, 2, 1]])
    assert unseen_triplets(fg, test).tolist() == [[1, 2, 2], [2, 2, 1]]  # unique, sorted
    assert unseen_triplets(fg, np.zeros((0, 3), np.int64)).shape == (0, 3)
    # a class id beyond the train table (a class never in train) is unseen
    assert unseen_triplets(fg, np.array([[5, 1, 1]])).tolist() == [[5, 1, 1]]
