"""SynthVG generator: files in the exact VG150 layout, determinism, rule consistency."""
import hashlib
import json
import os

import cv2
import h5py
import numpy as np
import pytest
import torch

from sgg.data.synthvg import (
    CORRUPTED_VG_IDS,
    GEOMETRIES,
    PROFILES,
    SynthVGConfig,
    decode_boxes,
    encode_boxes,
    estimate_object_depths,
    generate_image,
    generate_synthvg,
    load_config,
    loader_boxes,
    make_config,
    make_image_ids,
    predicate_hierarchy,
    relation_rule,
    rule_predictions,
)

H5 = "VG-SGG-with-attri.h5"
DICTS = "VG-SGG-dicts-with-attri.json"
H5_KEYS = ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel",
           "labels", "boxes_1024", "boxes_512", "relationships", "predicates", "attributes")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth_tiny")
    summary = generate_synthvg(str(out), "tiny", seed=0)
    return str(out), summary


def _load(root):
    with h5py.File(os.path.join(root, H5), "r") as f:
        h5 = {k: f[k][()] for k in f.keys()}
    with open(os.path.join(root, DICTS)) as f:
        info = json.load(f)
    with open(os.path.join(root, "image_data.json")) as f:
        image_data = json.load(f)
    return h5, info, image_data


def _image_rows(h5, i):
    a, b = h5["img_to_first_box"][i], h5["img_to_last_box"][i]
    r0, r1 = h5["img_to_first_rel"][i], h5["img_to_last_rel"][i]
    boxes = h5["boxes_1024"][a:b + 1]
    labels = h5["labels"][a:b + 1, 0]
    rels = h5["relationships"][r0:r1 + 1] - a if r0 >= 0 else np.zeros((0, 2), np.int64)
    preds = h5["predicates"][r0:r1 + 1, 0] if r0 >= 0 else np.zeros(0, np.int64)
    return boxes, labels, rels, preds


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_files_written(tiny):
    root, s = tiny
    for name in (H5, DICTS, "image_data.json", "zeroshot_triplet.pytorch", "predicate_hierarchy.json",
                 "synthvg_config.json"):
        assert os.path.isfile(os.path.join(root, name)), name
    assert s["num_images"] == PROFILES["tiny"].num_images == 60
    assert s["num_classes"] == 12 and s["num_predicates"] == 10
    assert len(os.listdir(os.path.join(root, "VG_100K"))) == 60
    assert len(os.listdir(os.path.join(root, "depth"))) == 60


def test_h5_layout_and_dtypes(tiny):
    root, _ = tiny
    h5, info, image_data = _load(root)
    assert set(h5) == set(H5_KEYS)
    n = len(image_data)
    O, R = len(h5["labels"]), len(h5["predicates"])
    C, P = len(info["label_to_idx"]), len(info["predicate_to_idx"])
    for k in ("split", "img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel"):
        assert h5[k].shape == (n,) and np.issubdtype(h5[k].dtype, np.integer), k
    assert h5["labels"].shape == (O, 1) and h5["attributes"].shape == (O, 10)
    assert h5["boxes_1024"].shape == (O, 4) and h5["boxes_1024"].dtype == np.int32
    assert h5["boxes_512"].shape == (O, 4) and h5["boxes_512"].dtype == np.int32
    assert h5["relationships"].shape == (R, 2) and h5["predicates"].shape == (R, 1)
    assert set(np.unique(h5["split"]).tolist()) == {0, 2}
    assert 1 <= h5["labels"].min() and h5["labels"].max() <= C
    assert 1 <= h5["predicates"].min() and h5["predicates"].max() <= P
    # inclusive, contiguous ranges in file order; every image has >= 1 object
    fb, lb, fr, lr = (h5[k] for k in ("img_to_first_box", "img_to_last_box", "img_to_first_rel", "img_to_last_rel"))
    assert (fb >= 0).all() and (lb >= fb).all()
    assert fb[0] == 0 and lb[-1] == O - 1 and (fb[1:] == lb[:-1] + 1).all()
    has_rel = fr >= 0
    assert ((fr == -1) == (lr == -1)).all() and (lr[has_rel] >= fr[has_rel]).all()
    assert (~has_rel).any(), "a few images keep objects but no relations"
    assert has_rel.mean() > 0.8
    rr = np.concatenate([np.arange(a, b + 1) for a, b in zip(fr[has_rel], lr[has_rel])])
    np.testing.assert_array_equal(rr, np.arange(R))
    for i in np.nonzero(has_rel)[0]:
        rel = h5["relationships"][fr[i]:lr[i] + 1]
        assert ((rel >= fb[i]) & (rel <= lb[i])).all(), "relationships index inside the image's boxes"
        assert (rel[:, 0] != rel[:, 1]).all()
        assert len(np.unique(rel, axis=0)) == len(rel), "one predicate per ordered pair"
    # attributes: the class colour in column 0
    assert (h5["attributes"][:, 0] >= 1).all() and (h5["attributes"][:, 1:] == 0).all()


def test_dicts_and_image_data(tiny):
    root, _ = tiny
    h5, info, image_data = _load(root)
    for a, b in (("label_to_idx", "idx_to_label"), ("predicate_to_idx", "idx_to_predicate"),
                 ("attribute_to_idx", "idx_to_attribute")):
        assert sorted(info[a].values()) == list(range(1, len(info[a]) + 1))
        assert {info[b][str(i)]: i for i in info[a].values()} == info[a]
    assert set(info["object_count"]) == set(info["label_to_idx"])
    assert sum(info["predicate_count"].values()) == len(h5["predicates"])
    assert info["depth_scale"] == 1000.0 and info["depth_unit"] == "millimetre"
    ids = [d["image_id"] for d in image_data]
    assert ids == make_image_ids(len(ids)).tolist() and ids[0] == 1
    for d in image_data:
        assert set(d) == {"image_id", "width", "height", "url", "coco_id", "flickr_id"}


def test_image_ids_skip_corrupted():
    ids = make_image_ids(4700)
    assert len(ids) == 4700 and ids[0] == 1 and (np.diff(ids) > 0).all()
    assert not set(CORRUPTED_VG_IDS) & set(ids.tolist())
    assert ids[1590] == 1591 and ids[1591] == 1593  # 1592 skipped
    assert ids[-1] == 4704


def test_images_and_depth_maps(tiny):
    root, _ = tiny
    _, _, image_data = _load(root)
    for d in image_data[:20]:
        img = cv2.imread(os.path.join(root, "VG_100K", f"{d['image_id']}.jpg"))
        assert img is not None and img.shape == (d["height"], d["width"], 3)
        dep = cv2.imread(os.path.join(root, "depth", f"{d['image_id']}.png"), cv2.IMREAD_UNCHANGED)
        assert dep is not None and dep.dtype == np.uint16 and dep.shape == (d["height"], d["width"])
        assert 500 <= dep.min() and dep.max() <= 20000  # millimetres: objects >= 1 m, background <= 20 m


def test_box_encoding_roundtrip_and_drawn_boxes(tiny):
    root, _ = tiny
    h5, _, image_data = _load(root)
    cfg = load_config(root)
    for i in range(12):
        d = image_data[i]
        W, H = d["width"], d["height"]
        rec = generate_image(cfg, i)
        boxes, labels, _, _ = _image_rows(h5, i)
        np.testing.assert_array_equal(labels, rec["labels"])
        dec = decode_boxes(boxes, W, H)
        assert np.abs(dec - rec["boxes"]).max() <= 2.0  # in fact <= 0.5 / (1024 / max(W, H))
        dec512 = decode_boxes(h5["boxes_512"][h5["img_to_first_box"][i]:h5["img_to_last_box"][i] + 1], W, H, 512)
        assert np.abs(dec512 - rec["boxes"]).max() <= 2.0
        # the nearest object is drawn unoccluded: its shape touches the four sides of its box
        k = int(np.argmin(rec["depth_raw"]))
        x1, y1, x2, y2 = rec["boxes"][k]
        ys, xs = np.nonzero(rec["depth"][y1:y2, x1:x2] == rec["depth_raw"][k])
        assert (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1) == (0, 0, x2 - x1, y2 - y1)
    # encode/decode on arbitrary boxes, both frames
    rng = np.random.default_rng(0)
    for W, H in ((64, 100), (333, 512), (1500, 700)):
        x1, y1 = rng.uniform(0, W - 8, 50), rng.uniform(0, H - 8, 50)
        b = np.stack([x1, y1, x1 + rng.uniform(4, W - x1), y1 + rng.uniform(4, H - y1)], 1).round()
        for scale in (1024, 512):
            enc = encode_boxes(b, W, H, scale)
            assert enc.dtype == np.int32
            assert np.abs(decode_boxes(enc, W, H, scale) - b).max() <= 0.5 * max(W, H) / scale + 1e-9


def test_determinism(tmp_path, tiny):
    root, _ = tiny
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    generate_synthvg(str(a), "tiny", seed=0, workers=2)
    generate_synthvg(str(c), "tiny", seed=1)
    for name in (H5, DICTS, "image_data.json", "predicate_hierarchy.json"):
        assert _sha(os.path.join(root, name)) == _sha(a / name), name
    for i in (1, 2, 17):
        for sub, ext in (("VG_100K", "jpg"), ("depth", "png")):
            assert _sha(os.path.join(root, sub, f"{i}.{ext}")) == _sha(a / sub / f"{i}.{ext}")
    assert torch.equal(torch.load(os.path.join(root, "zeroshot_triplet.pytorch")),
                       torch.load(a / "zeroshot_triplet.pytorch"))
    h0, _, _ = _load(root)
    h1, _, _ = _load(str(c))
    assert any(h0[k].shape != h1[k].shape or (h0[k] != h1[k]).any() for k in ("labels", "boxes_1024"))
    assert _sha(os.path.join(root, "VG_100K", "1.jpg")) != _sha(c / "VG_100K" / "1.jpg")
    del b


def _triplets(h5, split):
    sel = np.nonzero(h5["split"] == split)[0]
    rows = []
    for i in sel:
        r0, r1 = h5["img_to_first_rel"][i], h5["img_to_last_rel"][i]
        if r0 < 0:
            continue
        rel = h5["relationships"][r0:r1 + 1]
        rows.append(np.stack([h5["labels"][rel[:, 0], 0], h5["labels"][rel[:, 1], 0],
                              h5["predicates"][r0:r1 + 1, 0]], 1))
    return {tuple(t) for t in np.concatenate(rows).tolist()}


def test_zeroshot_triplets(tiny):
    root, s = tiny
    h5, _, _ = _load(root)
    zs = torch.load(os.path.join(root, "zeroshot_triplet.pytorch"))
    assert zs.dtype == torch.long and zs.dim() == 2 and zs.shape[1] == 3 and len(zs) > 0
    train, test = _triplets(h5, 0), _triplets(h5, 2)
    zs_set = {tuple(t) for t in zs.tolist()}
    assert zs_set == test - train  # exactly the test triplets never seen in train
    assert s["num_withheld_triplets"] > 0 and s["num_withheld_relations"] > 0


def test_predicate_hierarchy(tiny):
    root, _ = tiny
    with open(os.path.join(root, "predicate_hierarchy.json")) as f:
        hier = json.load(f)
    _, info, _ = _load(root)
    preds = set(info["predicate_to_idx"])
    assert set(hier["coarse"]) | set(hier["fine"]) <= preds
    assert not set(hier["coarse"]) & set(hier["fine"])
    assert set(hier["parent"]) == preds
    for f in hier["fine"]:
        assert hier["parent"][f] in hier["coarse"] and f in hier["children"][hier["parent"][f]]
    for c in hier["coarse"]:
        assert hier["parent"][c] == c
    assert hier["parent"]["parked on"] == "on" and hier["parent"]["wearing"] == "has"
    assert hier == predicate_hierarchy(root)
    small = predicate_hierarchy("small")
    assert len(small["predicate_to_idx"]) == 16
    assert set(small["children"]["on"]) >= {"sitting on", "standing on", "parked on", "riding"}
    vg = predicate_hierarchy("vg150")
    assert len(vg["predicate_to_idx"]) == 50 and len(vg["coarse"]) + len(vg["fine"]) == 50
    # every fine predicate refines one coarse predicate, all 50 VG150 words are used
    assert all(vg["parent"][f] in vg["coarse"] for f in vg["fine"])


def test_coarse_predicates_dominate(tiny):
    root, s = tiny
    counts = s["predicate_count"]
    coarse, fine = set(s["coarse_predicates"]), set(s["fine_predicates"])
    assert sum(counts[p] for p in coarse) > 3 * sum(counts[p] for p in fine)
    top3 = sorted(counts, key=lambda p: -counts[p])[:3]
    assert set(top3) <= coarse


def test_rule_reproduces_annotations(tiny):
    """Every annotated relation is the rule's coarse or fine predicate for that pair, computed from
    the loader's data only (decoded boxes, depth map)."""
    root, _ = tiny
    h5, _, image_data = _load(root)
    cfg = load_config(root)
    n_checked = 0
    for i, d in enumerate(image_data):
        boxes, labels, rels, preds = _image_rows(h5, i)
        if len(rels) == 0:
            continue
        W, H = d["width"], d["height"]
        xyxy = loader_boxes(boxes, W, H)  # decoded and clipped to the image, as SGB's loader
        depth = cv2.imread(os.path.join(root, "depth", f"{d['image_id']}.png"), cv2.IMREAD_UNCHANGED)
        z = estimate_object_depths(depth, xyxy, cfg.background_min_mm) / cfg.depth_scale
        coarse, fine = relation_rule(xyxy, labels, z, cfg)
        s, o = rels[:, 0], rels[:, 1]
        ok = (preds == coarse[s, o]) | ((preds == fine[s, o]) & (fine[s, o] > 0))
        assert ok.all(), (i, rels[~ok], preds[~ok], coarse[s, o][~ok], fine[s, o][~ok])
        # the oracle ranks the annotated pairs first, with the coarse word on top
        pairs, scores = rule_predictions(xyxy, labels, depth, root)
        n = len(labels)
        assert pairs.shape == (n * (n - 1), 2) and scores.shape == (n * (n - 1), cfg.num_predicates + 1)
        best = scores[:, 1:].max(1)
        assert (np.diff(best) <= 1e-7).all()
        top = {tuple(p) for p, b in zip(pairs.tolist(), best) if b > 0.5}
        assert {tuple(p) for p in rels.tolist()} <= top
        lookup = {tuple(p): sc for p, sc in zip(pairs.tolist(), scores)}
        for (a, b), p in zip(rels.tolist(), preds):
            assert lookup[(a, b)].argmax() == coarse[a, b]
        n_checked += len(rels)
    assert n_checked > 100


def test_rule_on_hand_made_scene():
    cfg = make_config("small")
    idx = {n: i + 1 for i, n in enumerate(cfg.class_names)}
    pidx = {p: i + 1 for i, p in enumerate(cfg.predicate_names)}
    boxes = np.array([
        [40, 40, 60, 100],     # 0 person standing on the street, in front
        [0, 90, 200, 150],     # 1 street
        [44, 55, 56, 70],      # 2 shirt on the person
        [100, 60, 160, 100],   # 3 car on the street
        [50, 45, 110, 75],     # 4 person overlapping person 0, far behind
        [170, 70, 190, 100],   # 5 dog near the car, same depth
    ], np.float64)
    labels = np.array([idx[n] for n in ("person", "street", "shirt", "car", "person", "dog")])
    depths = np.array([2.0, 8.5, 1.95, 4.0, 6.0, 4.2])
    coarse, fine, geom = relation_rule(boxes, labels, depths, cfg, return_geometry=True)
    assert coarse[0, 1] == pidx["on"] and fine[0, 1] == pidx["standing on"]
    assert coarse[3, 1] == pidx["on"] and fine[3, 1] == pidx["parked on"]
    assert coarse[0, 2] == pidx["has"] and fine[0, 2] == pidx["wearing"]
    assert coarse[2, 0] == pidx["of"] and fine[2, 0] == 0
    assert coarse[4, 0] == pidx["behind"] and coarse[0, 4] == pidx["in front of"]
    assert coarse[5, 3] == pidx["near"] and GEOMETRIES[geom[5, 3]] == "near"
    assert coarse[1, 0] == 0 and (np.diag(coarse) == 0).all()
    # only depth separates behind from in front of
    coarse2, _ = relation_rule(boxes, labels, np.array([6.0, 8.5, 5.95, 4.0, 2.0, 4.2]), cfg)
    assert coarse2[4, 0] == pidx["in front of"] and coarse2[0, 4] == pidx["behind"]


def test_config_and_profiles():
    assert set(PROFILES) == {"tiny", "small", "vg150"}
    vg = make_config("vg150", num_images=3)
    assert len(vg.class_names) == 150 and len(vg.predicate_names) == 50
    assert list(vg.predicate_names) == sorted(vg.predicate_names)
    assert isinstance(vg, SynthVGConfig)
    c = make_config("tiny", num_classes=20, num_predicates=12, image_size=96)
    assert len(c.class_names) == 20 and len(c.predicate_names) == 12 and c.image_size == (96, 96)
    with pytest.raises(ValueError, match="profile"):
        make_config("huge")
    with pytest.raises(ValueError, match="num_predicates"):
        make_config("tiny", num_predicates=51)
    with pytest.raises(TypeError, match="unknown"):
        make_config("tiny", colour_count=3)


def test_vg150_profile_smoke(tmp_path):
    s = generate_synthvg(str(tmp_path), "vg150", seed=0, num_images=6)
    h5, info, image_data = _load(str(tmp_path))
    assert len(info["label_to_idx"]) == 150 and len(info["predicate_to_idx"]) == 50
    assert info["label_to_idx"]["airplane"] == 1 and info["predicate_to_idx"]["above"] == 1
    assert all(256 <= d["width"] <= 512 and 256 <= d["height"] <= 512 for d in image_data)
    assert s["num_images"] == 6 and len(h5["split"]) == 6
