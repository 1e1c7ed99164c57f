"""Transforms (image, boxes and depth stay aligned), the mapper, and the dataset / loader builders."""
import logging
import os

import cv2
import numpy as np
import pytest
import torch

from sgg.config import get_default_config
from sgg.data import build as data_build
from sgg.data.build import (
    GroupedBatchSampler,
    build_dataset,
    build_test_loader,
    build_train_loader,
    image_aspect_groups,
)
from sgg.data.mapper import GT_KEYS, SceneGraphMapper, visible_inputs
from sgg.data.transforms import ColorJitter, Compose, RandomFlip, ResizeShortestEdge, get_resize_size
from sgg.structures import Boxes, Instances

try:
    from .vg_fixtures import write_vg, xyxy_to_cxcywh
except ImportError:  # tests/ is not a package
    from vg_fixtures import write_vg, xyxy_to_cxcywh

RECT = (200, 40, 90)


def rect_image(h, w, box):
    img = np.full((h, w, 3), 10, np.uint8)
    x1, y1, x2, y2 = box
    img[y1:y2, x1:x2] = RECT
    return img


def covers_rect(img, box, margin=1.5):
    """Inside the box (shrunk by ``margin``) the rectangle colour, outside (grown) background."""
    x1, y1, x2, y2 = box
    red = img[..., 0].astype(int)
    inner = red[int(np.ceil(y1 + margin)):int(np.floor(y2 - margin)),
                int(np.ceil(x1 + margin)):int(np.floor(x2 - margin))]
    outside = np.ones(red.shape, bool)
    outside[max(int(np.floor(y1 - margin)), 0):int(np.ceil(y2 + margin)),
            max(int(np.floor(x1 - margin)), 0):int(np.ceil(x2 + margin))] = False
    return inner.size > 0 and (inner > 150).all() and (red[outside] < 60).all()


# ------------------------------------------------------------------------------------------------
# Transforms
# ------------------------------------------------------------------------------------------------
def test_resize_size_is_maskrcnn_benchmarks():
    assert get_resize_size(480, 640, 600, 1000) == (600, 800)
    assert get_resize_size(300, 1000, 600, 1000) == (300, 1000)   # the long side caps the size
    assert get_resize_size(500, 375, 600, 1000) == (800, 600)
    assert get_resize_size(600, 900, 600, 1000) == (600, 900)     # already there
    assert get_resize_size(333, 500, 600, 1000) == (600, 900)     # int(600 * 500 / 333) = 900


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("size", [90, 40])
def test_boxes_follow_the_image_through_resize_and_flip(flip, size):
    box = [20, 10, 50, 40]
    img = rect_image(60, 80, box)
    t = Compose([ResizeShortestEdge((size,), 1000)] + ([RandomFlip(1.0)] if flip else []))
    out, boxes, _ = t(img, np.array([box], np.float32))
    assert out.shape == (size, int(size * 80 / 60), 3)
    assert covers_rect(out, boxes[0])
    sx, sy = out.shape[1] / 80, out.shape[0] / 60  # the pixels' own scale factors
    exp = np.array(box, np.float32) * np.array([sx, sy, sx, sy])
    if flip:
        exp = np.array([out.shape[1] - exp[2], exp[1], out.shape[1] - exp[0], exp[3]])
    assert np.allclose(boxes[0], exp, atol=1e-4)


def test_vertical_flip_moves_boxes_too():
    box = [20, 10, 50, 30]
    out, boxes, _ = RandomFlip(1.0, horizontal=False)(rect_image(60, 80, box), np.array([box], np.float32))
    assert boxes[0].tolist() == [20, 30, 50, 50]
    assert covers_rect(out, boxes[0], margin=0.5)


@pytest.mark.parametrize("interp", ["nearest", "linear"])
def test_depth_stays_aligned_with_the_image(interp):
    h, w = 48, 64
    img = np.zeros((h, w, 3), np.uint8)
    depth = np.ones((h, w), np.float32)
    # asymmetric: an L-shaped block near the top-left corner
    img[4:20, 6:30] = 255
    img[20:40, 6:14] = 255
    depth[img[..., 0] > 0] = 5.0
    t = Compose([ResizeShortestEdge((72,), 1000, depth_interp=interp), RandomFlip(1.0)])
    out, _, d = t(img, None, depth)
    assert d.shape == out.shape[:2] == (72, 96) and d.dtype == np.float32
    near_img, near_depth = out[..., 0] > 127, d > 3.0
    assert (near_img == near_depth).mean() > 0.98
    assert near_img[:, 48:].sum() > near_img[:, :48].sum()  # the block is now on the right
    if interp == "nearest":
        assert set(np.unique(d).tolist()) <= {1.0, 5.0}


def test_color_jitter_changes_pixels_not_depth_or_boxes():
    np.random.seed(0)
    img = np.random.randint(0, 256, (20, 30, 3), dtype=np.uint8)
    depth = np.random.rand(20, 30).astype(np.float32)
    boxes = np.array([[1, 2, 10, 12]], np.float32)
    out, b, d = ColorJitter(0.4, 0.4, 0.4, 0.1)(img, boxes, depth)
    assert out.dtype == np.uint8 and out.shape == img.shape and not np.array_equal(out, img)
    assert b is boxes and d is depth


def test_depth_and_image_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="pixel-aligned"):
        Compose([])(np.zeros((10, 10, 3), np.uint8), None, np.zeros((5, 5), np.float32))


# ------------------------------------------------------------------------------------------------
# Mapper
# ------------------------------------------------------------------------------------------------
def _record(tmp_path, h=60, w=80, depth=True, image_hw=None):
    ih, iw = image_hw or (h, w)
    img = rect_image(ih, iw, [int(20 * iw / w), int(10 * ih / h), int(50 * iw / w), int(40 * ih / h)])
    path = str(tmp_path / "7.png")
    cv2.imwrite(path, cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    d = {"file_name": path, "image_id": 7, "height": h, "width": w,
         "boxes": np.array([[20, 10, 50, 40], [0, 0, 79, 59]], np.float32),
         "labels": np.array([3, 1], np.int64), "relations": np.array([[0, 1, 2]], np.int64)}
    if depth:
        dep = np.full((ih, iw), 1000, np.uint16)
        dep[:, : iw // 2] = 3000
        dpath = str(tmp_path / "7_depth.png")
        cv2.imwrite(dpath, dep)
        d["depth_file"] = dpath
    return d


def test_mapper_output_types_and_frames(tmp_path):
    mapper = SceneGraphMapper(is_train=False, mode="sgdet", min_size_test=90, max_size_test=1000,
                              load_depth=True, depth_scale=0.001)
    out = mapper(_record(tmp_path))
    img = out["image"]
    assert img.dtype == torch.uint8 and img.shape == (3, 90, 120)
    assert img[:, 40, 50].tolist() == list(RECT)  # RGB order, inside the rectangle
    assert (out["height"], out["width"], out["image_id"]) == (60, 80, 7)
    inst = out["instances"]
    assert isinstance(inst, Instances) and inst.image_size == (90, 120)
    assert isinstance(inst.gt_boxes, Boxes)
    assert torch.allclose(inst.gt_boxes.tensor[0], torch.tensor([30.0, 15.0, 75.0, 60.0]))
    assert inst.gt_classes.dtype == torch.int64 and inst.gt_classes.tolist() == [3, 1]
    assert out["relations"].dtype == torch.int64 and out["relations"].tolist() == [[0, 1, 2]]
    dep = out["depth"]
    assert dep.dtype == torch.float32 and dep.shape == (1, 90, 120)
    assert torch.allclose(dep[0, :, :60], torch.tensor(3.0)) and torch.allclose(dep[0, :, 60:], torch.tensor(1.0))
    assert covers_rect(img.permute(1, 2, 0).numpy(), inst.gt_boxes.tensor[0].numpy())


def test_mapper_output_pickles_for_loader_workers(tmp_path):
    import pickle

    out = SceneGraphMapper(is_train=False, mode="sgdet", min_size_test=60)(_record(tmp_path, depth=False))
    back = pickle.loads(pickle.dumps(out))  # what DataLoader workers do with every sample
    assert torch.equal(back["instances"].gt_boxes.tensor, out["instances"].gt_boxes.tensor)
    assert torch.equal(back["image"], out["image"])


def test_mapper_training_flip_from_config(tmp_path):
    cfg = get_default_config()
    cfg.merge_from_list(["MODEL.FLIP_AUG", True, "INPUT.MIN_SIZE_TRAIN", (60,), "INPUT.MAX_SIZE_TRAIN", 1000,
                         "INPUT.LOAD_DEPTH", True])
    mapper = SceneGraphMapper.from_config(cfg, True, "predcls")
    flips = [t for t in mapper.transforms.transforms if isinstance(t, RandomFlip)]
    assert len(flips) == 1 and flips[0].prob == 0.5 and flips[0].horizontal
    np.random.seed(0)
    seen = set()
    for _ in range(12):
        out = mapper(_record(tmp_path))
        box = out["instances"].gt_boxes.tensor[0]
        seen.add(tuple(box.tolist()))
        assert covers_rect(out["image"].permute(1, 2, 0).numpy(), box.numpy())
        left_deep = out["depth"][0, :, :40].mean() > out["depth"][0, :, 40:].mean()
        assert left_deep == bool((box[0] + box[2]) / 2 < 40)  # depth flips with the image
    assert seen == {(20.0, 10.0, 50.0, 40.0), (30.0, 10.0, 60.0, 40.0)}
    # keyword arguments override the config
    assert not any(isinstance(t, RandomFlip) for t in SceneGraphMapper.from_config(cfg, True, "predcls",
                                                                           hflip_prob=0.0).transforms.transforms)


def test_mapper_follows_image_pixels_when_image_data_size_differs(tmp_path, caplog):
    mapper = SceneGraphMapper(is_train=False, mode="sgdet", min_size_test=60, max_size_test=1000)
    with caplog.at_level(logging.WARNING):
        out = mapper(_record(tmp_path, depth=False, image_hw=(30, 40)))
    assert "rescaled" in caplog.text
    assert (out["height"], out["width"]) == (60, 80)
    assert torch.allclose(out["instances"].gt_boxes.tensor[0], torch.tensor([20.0, 10.0, 50.0, 40.0]))


def test_visible_inputs_per_protocol(tmp_path):
    out = SceneGraphMapper(is_train=False, mode="sgdet", min_size_test=60)(_record(tmp_path, depth=False))
    assert set(GT_KEYS) <= set(out)
    sgdet = visible_inputs(out, "sgdet")
    assert not set(GT_KEYS) & set(sgdet) and sgdet["image"] is out["image"]
    sgcls = visible_inputs(out, "sgcls")
    assert "relations" not in sgcls and set(sgcls["instances"].get_fields()) == {"gt_boxes"}
    predcls = visible_inputs(out, "predcls")
    assert set(predcls["instances"].get_fields()) == {"gt_boxes", "gt_classes"}
    assert out["instances"].has("gt_classes")  # the original is untouched
    with pytest.raises(ValueError, match="mode"):
        visible_inputs(out, "detection")


# ------------------------------------------------------------------------------------------------
# Datasets and loaders (hand-made VG150 files)
# ------------------------------------------------------------------------------------------------
def _fake_vg(root, n_train=10, n_test=5):
    images = []
    for i in range(n_train + n_test):
        w, h = (64, 48) if i % 3 else (40, 56)  # landscape and portrait images
        boxes = [xyxy_to_cxcywh([2, 2, 20, 20]), xyxy_to_cxcywh([10, 10, 30, 30]), xyxy_to_cxcywh([32, 32, 38, 44])]
        # inside both image shapes (a box outside its image is an error of the loader);
        # scale from the 1024 frame: stored boxes are in a frame whose long side is 1024
        s = 1024 / max(w, h)
        boxes = [[int(v * s) for v in b] for b in boxes]
        rels = [[0, 1, 1], [0, 1, 2], [0, 2, 3]]
        images.append({"image_id": 100 + i, "width": w, "height": h, "split": 0 if i < n_train else 2,
                       "boxes": boxes, "labels": [1, 2, 3], "rels": rels})
    files = write_vg(root, images, with_images=False)
    for im in images:
        cv2.imwrite(os.path.join(files["img_dir"], f"{im['image_id']}.jpg"),
                    np.full((im["height"], im["width"], 3), 128, np.uint8))
    return images


def _data_cfg(tmp_path, *opts):
    cfg = get_default_config()
    cfg.merge_from_list(["DATASETS.DATA_DIR", str(tmp_path), "DATASETS.TRAIN", ("fakevg_train",),
                         "DATASETS.VAL", ("fakevg_val",), "DATASETS.TEST", ("fakevg_test",),
                         "DATASETS.NUM_VAL_IMAGES", 2, "INPUT.MIN_SIZE_TRAIN", (32, 40), "INPUT.MAX_SIZE_TRAIN", 80,
                         "INPUT.MIN_SIZE_TEST", 32, "INPUT.MAX_SIZE_TEST", 80, "SOLVER.IMS_PER_BATCH", 4,
                         "TEST.IMS_PER_BATCH", 2, "DATALOADER.NUM_WORKERS", 0, *opts])
    return cfg


def test_build_dataset_applies_sgb_split_rules(tmp_path):
    _fake_vg(tmp_path / "fakevg")
    cfg = _data_cfg(tmp_path)
    train = build_dataset(cfg, "fakevg_train", is_train=True, mode="predcls")
    assert len(train) == 8 and train.filter_duplicate_rels and not train.filter_non_overlap
    assert len(build_dataset(cfg, "fakevg_val", is_train=False)) == 2
    test = build_dataset(cfg, "fakevg_test", is_train=False)
    assert len(test) == 5 and not test.filter_duplicate_rels
    assert len(test[0]["relations"]) == 3  # every annotation row at test time
    assert len(train[0]["relations"]) == 2  # one predicate per (subject, object) pair
    cfg.merge_from_list(["MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP", True])
    sgdet = build_dataset(cfg, "fakevg_train", is_train=True, mode="sgdet")
    # (0, 2) do not overlap; the two predicates of (0, 1) are drawn down to one
    assert sgdet.filter_non_overlap and all(sgdet[i]["relations"][:, :2].tolist() == [[0, 1]]
                                            for i in range(len(sgdet)))
    assert not build_dataset(cfg, "fakevg_train", is_train=True, mode="sgcls").filter_non_overlap


def test_train_loader_batches_are_per_rank_and_grouped(tmp_path, monkeypatch):
    _fake_vg(tmp_path / "fakevg")
    cfg = _data_cfg(tmp_path)
    loader = build_train_loader(cfg, mode="predcls")
    it = iter(loader)
    groups = image_aspect_groups(loader.dataset.dataset)
    ids = {d["image_id"]: i for i, d in enumerate(loader.dataset.dataset[j] for j in range(8))}
    seen = 0
    for _ in range(6):  # more images than the dataset: the loader is infinite
        batch = next(it)
        assert isinstance(batch, list) and len(batch) == 4
        assert len({int(groups[ids[d["image_id"]]]) for d in batch}) == 1
        assert all(isinstance(d["instances"], Instances) and d["image"].dtype == torch.uint8 for d in batch)
        seen += len(batch)
    assert seen > len(loader.dataset)
    monkeypatch.setattr(data_build.comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match="SOLVER.IMS_PER_BATCH = 4 is not divisible"):
        build_train_loader(cfg, mode="predcls")


def test_test_loader_sees_every_image_once(tmp_path):
    _fake_vg(tmp_path / "fakevg")
    cfg = _data_cfg(tmp_path)
    loader = build_test_loader(cfg, "fakevg_test", mode="sgdet")
    batches = list(loader)
    assert [len(b) for b in batches] == [2, 2, 1]
    assert sorted(d["image_id"] for b in batches for d in b) == list(range(110, 115))
    assert loader.dataset.dataset.split == "test"


def test_grouped_batch_sampler_keeps_groups_apart():
    sampler = GroupedBatchSampler(iter(range(10)), [0, 1, 0, 1, 1, 0, 0, 1, 0, 1], 2)
    assert list(sampler) == [[0, 2], [1, 3], [5, 6], [4, 7]]
