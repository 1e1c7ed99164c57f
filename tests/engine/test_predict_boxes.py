"""Relations among given boxes (Predictor.predict_on_boxes, tools/predict.py --boxes) with tiny
untrained models on a tiny SynthVG (CPU, one thread)."""
import json
import logging
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from test_one_stage import onestage_opts  # noqa: E402
from two_stage_fixtures import DATASET, make_synthvg, subprocess_env, tiny_config, write_config_yaml  # noqa: E402

from sgg.checkpoint import Checkpointer  # noqa: E402
from sgg.engine.predict import Predictor, check_boxes, read_image  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("boxes_data"), num_images=12, seed=4)


@pytest.fixture(scope="module")
def image_dir(data_root, tmp_path_factory):
    """Two SynthVG JPEGs."""
    src = os.path.join(data_root, DATASET, "VG_100K")
    d = tmp_path_factory.mktemp("box_images")
    for n in sorted(os.listdir(src), key=lambda n: int(os.path.splitext(n)[0]))[:2]:
        shutil.copy(os.path.join(src, n), d / n)
    return str(d)


def _save_model(data_root, out, mode, seed, *extra):
    from sgg.engine.relation import build_relation_model

    cfg = tiny_config(data_root, out, mode, *extra)
    torch.manual_seed(seed)
    model, _, _ = build_relation_model(cfg)
    Checkpointer(model, out).save("model_final")
    return cfg


@pytest.fixture(scope="module")
def predcls(data_root, tmp_path_factory):
    """(config file, checkpoint dir, Predictor) of an untrained tiny Motifs PredCls model."""
    d = tmp_path_factory.mktemp("predcls")
    out = str(d / "train_out")
    cfg = _save_model(data_root, out, "predcls", 7)
    cfg_file = write_config_yaml(str(d / "tiny_predcls.yaml"), data_root, out, "predcls")
    return cfg_file, out, Predictor(cfg, out)


@pytest.fixture(scope="module")
def sgcls(data_root, tmp_path_factory):
    """(cfg, checkpoint dir, Predictor) of an untrained tiny Motifs SGCls model."""
    out = str(tmp_path_factory.mktemp("sgcls") / "train_out")
    cfg = _save_model(data_root, out, "sgcls", 9)
    return cfg, out, Predictor(cfg, out)


def _two_images(image_dir):
    """An image path and an array of another size (the first image squeezed)."""
    path = os.path.join(image_dir, sorted(os.listdir(image_dir))[0])
    img = read_image(path)
    h, w = img.shape[:2]
    other = cv2.resize(img, (w * 2 // 3, h + 17))
    assert other.shape[:2] != img.shape[:2]
    return path, img, other


def _boxes(h, w, n, seed):
    rng = np.random.default_rng(seed)
    x1 = rng.uniform(0, w * 0.6, n)
    y1 = rng.uniform(0, h * 0.6, n)
    return np.stack([x1, y1, x1 + rng.uniform(4, w * 0.4, n), y1 + rng.uniform(4, h * 0.4, n)], 1).round(2)


def _all_pairs(g, n):
    pairs = {tuple(p) for p in g.rel_pairs.tolist()}
    return len(pairs) == g.num_relations == n * (n - 1) and all(s != o for s, o in pairs)


def test_predcls_given_boxes_and_labels(predcls, image_dir):
    _, _, predictor = predcls
    path, img, other = _two_images(image_dir)
    b1, b2 = _boxes(*img.shape[:2], 4, 0), _boxes(*other.shape[:2], 3, 1)
    names = predictor.class_names
    l1, l2 = [names[1], names[3], names[2], names[1]], [2, 5, 1]
    graphs = predictor.predict_on_boxes([path, other], [b1, torch.tensor(b2)], [l1, l2])
    assert [g.image_size for g in graphs] == [img.shape[:2], other.shape[:2]]
    for g, b, lab in zip(graphs, (b1, b2), ([1, 3, 2, 1], l2)):
        assert g.boxes.dtype == torch.float32 and torch.allclose(g.boxes, torch.tensor(b, dtype=torch.float32))
        assert g.labels.tolist() == lab and torch.all(g.scores == 1)
        assert _all_pairs(g, len(b))
        assert torch.all(g.triplet_scores[:-1] >= g.triplet_scores[1:])
    # predict(boxes=...) is the same call; batch size 1 gives the same graphs
    again = predictor.predict([path, other], batch_size=1, boxes=[b1.tolist(), b2.tolist()], labels=[l1, l2])
    for g, h in zip(graphs, again):
        assert torch.equal(g.rel_pairs, h.rel_pairs) and torch.allclose(g.rel_scores, h.rel_scores, atol=1e-6)


def test_predcls_model_without_labels_classifies_with_the_detector(predcls, image_dir):
    _, _, predictor = predcls
    assert predictor.sgcls_labels == "detector"
    path, img, _ = _two_images(image_dir)
    b = _boxes(*img.shape[:2], 4, 2)
    (g,) = predictor.predict_on_boxes(path, b)  # a single image is accepted
    assert torch.allclose(g.boxes, torch.tensor(b, dtype=torch.float32))
    assert len(g.labels) == 4 and g.labels.min() >= 1 and g.labels.max() < len(predictor.class_names)
    assert torch.all((g.scores > 0) & (g.scores < 1)) and _all_pairs(g, 4)
    s, o = g.rel_pairs.unbind(1)
    expect = g.rel_scores[:, 1:].max(1).values * g.scores[s] * g.scores[o]
    assert torch.allclose(g.triplet_scores, expect, atol=1e-6)
    # a single box: no pair
    (g1,) = predictor.predict_on_boxes([path], [b[:1]], [[1]])
    assert len(g1) == 1 and g1.num_relations == 0
    (g0,) = predictor.predict_on_boxes([path], [np.zeros((0, 4))])
    assert len(g0) == 0 and g0.num_relations == 0 and g0.image_size == img.shape[:2]


def test_sgcls_model_classifies_given_boxes(sgcls, image_dir):
    cfg, out, predictor = sgcls
    assert predictor.sgcls_labels == "model"
    path, img, other = _two_images(image_dir)
    b1, b2 = _boxes(*img.shape[:2], 3, 3), _boxes(*other.shape[:2], 4, 4)
    g1, g2 = predictor.predict_on_boxes([path, other], [b1, b2], [None, [1, 2, 3, 4]])
    assert torch.allclose(g1.boxes, torch.tensor(b1, dtype=torch.float32)) and _all_pairs(g1, 3)
    assert g1.labels.min() >= 1 and torch.all((g1.scores > 0) & (g1.scores <= 1))
    assert g2.labels.tolist() == [1, 2, 3, 4] and torch.all(g2.scores == 1) and _all_pairs(g2, 4)
    # the protocol variants share the main model's tensors
    variant = predictor._model_for("sgcls")
    assert variant.detector.backbone is not predictor.model.detector.backbone
    p0 = next(predictor.model.detector.parameters())
    assert any(p is p0 for p in variant.detector.parameters())


def test_relation_top_k_caps_the_pairs(data_root, predcls, image_dir):
    _, out, _ = predcls
    cfg = tiny_config(data_root, out, "predcls", "MODEL.ROI_RELATION_HEAD.TEST_REL_TOP_K", "5")
    path, img, _ = _two_images(image_dir)
    (g,) = Predictor(cfg, out).predict_on_boxes([path], [_boxes(*img.shape[:2], 4, 5)], [[1, 2, 3, 4]])
    assert g.num_relations == 5


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_equals_the_test_time_evaluation(mode, predcls, sgcls, data_root):
    """The dataset's GT boxes (and labels) give what the evaluation forward gives on the mapped test batch."""
    from sgg.data.build import build_dataset
    from sgg.data.mapper import SceneGraphMapper
    from sgg.engine.loading import load_trained_model

    if mode == "predcls":
        cfg_file, out, predictor = predcls
        from sgg.config import load_config
        cfg = load_config(cfg_file)
    else:
        cfg, out, predictor = sgcls
    model = load_trained_model(cfg, out, protocol=mode).model  # what the test job evaluates
    dataset = build_dataset(cfg, f"{DATASET}_test", is_train=False, mode=mode)
    mapper = SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)
    dicts = [dataset[0], dataset[1]]
    with torch.no_grad():
        ref = model([mapper(d) for d in dicts])
    got = predictor.predict_on_boxes([d["file_name"] for d in dicts], [d["boxes"] for d in dicts],
                                     [d["labels"] for d in dicts] if mode == "predcls" else None)
    for d, r, g in zip(dicts, ref, got):
        n = len(d["boxes"])
        assert len(g) == n and g.num_relations == n * (n - 1)
        assert torch.allclose(g.boxes, torch.as_tensor(d["boxes"]), atol=1e-4)
        assert torch.allclose(r.boxes.float(), g.boxes, atol=1e-3)
        assert torch.equal(r.labels, g.labels) and torch.allclose(r.scores.float(), g.scores, atol=1e-5)
        if mode == "predcls":
            assert g.labels.tolist() == d["labels"].tolist()
        assert torch.equal(r.rel_pairs, g.rel_pairs)
        assert torch.allclose(r.rel_scores.float(), g.rel_scores, atol=1e-5)
        assert torch.allclose(r.triplet_scores.float(), g.triplet_scores, atol=1e-5)


def test_box_errors_name_the_image_and_box(predcls, image_dir, caplog):
    _, _, predictor = predcls
    path, img, _ = _two_images(image_dir)
    h, w = img.shape[:2]
    names = predictor.class_names
    traps = [
        ([[10, 10, 5, 20]], None, "box 0 [10.0, 10.0, 5.0, 20.0] has x2 <= x1"),
        ([[1, 1, 9, 9], [1, 2, 3]], None, "box 1 is [1, 2, 3]"),
        ([[1, 1, 9, 9], [2, 2, 8, 8]], ["no_such_thing", names[1]], "'no_such_thing' of box 0 is not a class"),
        ([[1, 1, 9, 9]], [len(names)], f"label id {len(names)} of box 0 is out of range"),
        ([[1, 1, 9, 9]], [0], "label id 0 of box 0 is out of range"),
        ([[1, 1, 9, 9]], [1, 2], "2 labels for 1 boxes"),
        ([[w + 5, 1, w + 9, 9]], None, "lies outside"),
        ([[1, float("nan"), 9, 9]], None, "box 0 [1.0, nan, 9.0, 9.0] is not finite"),
    ]
    for boxes, labels, msg in traps:
        with pytest.raises(ValueError, match="image 0 .*" + msg.replace("[", r"\[").replace("]", r"\]")) as e:
            predictor.predict_on_boxes([path], [boxes], None if labels is None else [labels])
        assert os.path.basename(path) in str(e.value)
    with pytest.raises(ValueError, match=repr(names[1])):  # lists valid names
        check_boxes([[1, 1, 9, 9]], ["nope"], names)
    with pytest.raises(ValueError, match="boxes are given for 1 images but there are 2"):
        predictor.predict_on_boxes([path, path], [[[1, 1, 9, 9]]])
    # a box reaching outside is clipped (warning), the others are unchanged
    with caplog.at_level(logging.WARNING, logger="sgg.engine.predict"):
        (g,) = predictor.predict_on_boxes([path], [[[-5, 2, 20, h + 30], [3, 4, 10, 12]]], [[1, 2]])
    assert g.boxes.tolist() == [[0, 2, 20, h], [3, 4, 10, 12]]
    assert "clipped" in caplog.text


def test_one_stage_model_refuses_given_boxes(data_root, image_dir, tmp_path):
    from sgg.config import load_config
    from sgg.engine.relation import build_relation_model

    cfg = load_config(opts=onestage_opts(data_root, str(tmp_path / "os"), "predcls"))
    torch.manual_seed(8)
    model, _, _ = build_relation_model(cfg)
    path = Checkpointer(model, str(tmp_path / "os")).save("model_final")
    predictor = Predictor(cfg, path)
    img = os.path.join(image_dir, sorted(os.listdir(image_dir))[0])
    with pytest.raises(NotImplementedError, match="two-stage model"):
        predictor.predict_on_boxes([img], [[[1, 1, 9, 9]]])


def test_tool_with_boxes_json(predcls, image_dir, tmp_path):
    cfg_file, out, predictor = predcls
    names = sorted(os.listdir(image_dir))
    b0 = [[1.5, 2, 30, 40], [10, 12, 50, 60.25], [5, 5, 25, 45]]
    b1 = [[0, 0, 20, 20], [8, 8, 40, 30]]
    boxes_file = tmp_path / "boxes.json"
    boxes_file.write_text(json.dumps({names[0]: {"boxes": b0, "labels": [predictor.class_names[2], 1, 3]},
                                      names[1]: {"boxes": b1}, "elsewhere.jpg": {"boxes": []}}))
    res = subprocess.run([sys.executable, os.path.join(REPO, "tools", "predict.py"), "--config-file", cfg_file,
                          "--weights", out, "--input", image_dir, "--output", str(tmp_path / "pred"), "--boxes",
                          str(boxes_file), "--top-k", "100", "MODEL.DEVICE", "cpu"], cwd=str(tmp_path),
                         env=subprocess_env(REPO), capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr
    assert "elsewhere.jpg" in res.stdout + res.stderr  # ignored entry: a warning
    for name, boxes, labels in ((names[0], b0, [2, 1, 3]), (names[1], b1, None)):
        doc = json.loads((tmp_path / "pred" / (os.path.splitext(name)[0] + ".json")).read_text())
        assert [o["id"] for o in doc["objects"]] == list(range(len(boxes)))
        assert [o["box"] for o in doc["objects"]] == boxes
        if labels:
            assert [o["label_id"] for o in doc["objects"]] == labels and all(o["score"] == 1 for o in doc["objects"])
        assert len(doc["relations"]) == len(boxes) * (len(boxes) - 1)
        assert (tmp_path / "pred" / (os.path.splitext(name)[0] + ".png")).is_file()


def test_tool_boxes_errors(predcls, image_dir, tmp_path, capsys):
    from sgg.cli.predict import main

    cfg_file, out, predictor = predcls
    names = sorted(os.listdir(image_dir))

    def run(doc):
        f = tmp_path / "b.json"
        f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
        rc = main(["--config-file", cfg_file, "--weights", out, "--input", image_dir, "--output",
                   str(tmp_path / "o"), "--boxes", str(f)])
        return rc, capsys.readouterr().err

    ok = {"boxes": [[1, 1, 9, 9]]}
    rc, err = run({names[0]: ok})
    assert rc == 2 and f"no boxes for 1 of the 2 input images ({names[1]})" in err and "b.json" in err
    rc, err = run([{"image": names[0], **ok}, {"image": names[1], "boxes": [[1, 1, 9, 9], [3, 3, 2, 8]]}])
    assert rc == 2 and f"b.json: image '{names[1]}': box 1 [3.0, 3.0, 2.0, 8.0] has x2 <= x1" in err
    rc, err = run({names[0]: ok, names[1]: {"boxes": [[1, 1, 9, 9]], "labels": ["zebra-unicorn"]}})
    assert rc == 2 and f"image '{names[1]}': label 'zebra-unicorn' of box 0 is not a class" in err
    assert repr(predictor.class_names[1]) in err
    rc, err = run({names[0]: ok, names[1]: {"boxes": [[1, 1, 9]]}})
    assert rc == 2 and "box 0 is [1, 1, 9]" in err
    rc, err = run("{not json")
    assert rc == 2 and "is not valid JSON" in err
    rc, err = run({names[0]: ok, names[1]: {"labels": [1]}})
    assert rc == 2 and f"image '{names[1]}' has no \"boxes\" list" in err
