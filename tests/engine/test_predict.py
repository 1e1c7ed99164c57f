"""Prediction on user images (sgg.engine.predict, tools/predict.py), the scene-graph drawing and the
training-curve plot, with tiny untrained models on a tiny SynthVG (CPU, one thread)."""
import importlib.util
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
from two_stage_fixtures import (  # noqa: E402
    DATASET,
    TINY_TRANSFORMER_OPTS,
    make_synthvg,
    subprocess_env,
    tiny_config,
    write_config_yaml,
)

from sgg.checkpoint import CheckpointError, Checkpointer  # noqa: E402
from sgg.engine.predict import IMAGE_EXTENSIONS, Predictor, graph_to_json, read_image  # noqa: E402
from sgg.structures import SceneGraph  # noqa: E402
from sgg.utils.visualize import (  # noqa: E402
    IMAGE_ORIGIN,
    PANEL_WIDTH,
    draw_scene_graph,
    image_display_scale,
    object_color,
    scene_graph_canvas_size,
)

TOP_K = 7
BATCH = 2
SWITCH_WARNING = "predicting with the SGDet protocol"


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("predict_data"), num_images=12, seed=4)


@pytest.fixture(scope="module")
def image_dir(data_root, tmp_path_factory):
    """Two SynthVG JPEGs and a lossless PNG copy of the first one under the same stem."""
    src = os.path.join(data_root, DATASET, "VG_100K")
    d = tmp_path_factory.mktemp("user_images")
    names = sorted(os.listdir(src), key=lambda n: int(os.path.splitext(n)[0]))[:2]
    for n in names:
        shutil.copy(os.path.join(src, n), d / n)
    stem = os.path.splitext(names[0])[0]
    assert cv2.imwrite(str(d / f"{stem}.png"), cv2.imread(os.path.join(src, names[0])))
    (d / "notes.txt").write_text("not an image")
    return str(d)


def _names(data_root):
    from sgg.data.datasets.vg150 import load_info

    classes, predicates, _ = load_info(os.path.join(data_root, DATASET, "VG-SGG-dicts-with-attri.json"))
    return classes, predicates


@pytest.fixture(scope="module")
def two_stage(data_root, tmp_path_factory):
    """(config file, checkpoint dir, cfg) of an untrained tiny two-stage Motifs PredCls model."""
    from sgg.engine.relation import build_relation_model

    d = tmp_path_factory.mktemp("two_stage")
    out = str(d / "train_out")
    cfg = tiny_config(data_root, out, "predcls")
    torch.manual_seed(7)
    model, _, _ = build_relation_model(cfg)
    Checkpointer(model, out).save("model_final")
    cfg_file = write_config_yaml(str(d / "tiny_predcls.yaml"), data_root, out, "predcls")
    return cfg_file, out, cfg


@pytest.fixture(scope="module")
def one_stage(data_root, tmp_path_factory):
    """(config file, checkpoint file, cfg, model) of an untrained tiny one-stage PredCls model."""
    from sgg.config import load_config
    from sgg.engine.relation import build_relation_model

    d = tmp_path_factory.mktemp("one_stage")
    out = str(d / "train_out")
    cfg = load_config(opts=onestage_opts(data_root, out, "predcls"))
    torch.manual_seed(8)
    model, _, _ = build_relation_model(cfg)
    path = Checkpointer(model, out).save("model_0000010")
    cfg_file = str(d / "onestage_predcls.yaml")
    with open(cfg_file, "w") as f:
        f.write(cfg.dump())
    return cfg_file, path, cfg, model


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_predict_subprocess(argv, cwd):
    return subprocess.run([sys.executable, os.path.join(REPO, "tools", "predict.py"), *argv], cwd=str(cwd),
                          env=subprocess_env(REPO), capture_output=True, text=True, timeout=240)


def image_files(image_dir):
    return sorted(os.path.join(image_dir, f) for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))


def expected_stems(image_dir):
    """1.jpg, 1.png share a stem -> 1_jpg, 1_png; 2.jpg -> 2."""
    files = image_files(image_dir)
    stems = [os.path.splitext(os.path.basename(p))[0] for p in files]
    return {p: (f"{s}_{os.path.splitext(p)[1][1:]}" if stems.count(s) > 1 else s) for p, s in zip(files, stems)}


def check_schema(doc, image_path, classes, predicates, top_k):
    """The JSON contract of graph_to_json, against the image on disk and the dataset's names."""
    h, w = cv2.imread(image_path).shape[:2]
    assert set(doc) == {"image", "width", "height", "objects", "relations"}
    assert doc["image"] == image_path
    assert (doc["width"], doc["height"]) == (w, h)
    assert isinstance(doc["width"], int) and isinstance(doc["height"], int)
    ids = [o["id"] for o in doc["objects"]]
    assert ids == sorted(set(ids)) and len(ids) > 0
    for o in doc["objects"]:
        assert set(o) == {"id", "box", "label", "label_id", "score"}
        assert isinstance(o["id"], int) and isinstance(o["label_id"], int)
        assert isinstance(o["label"], str) and isinstance(o["score"], float)
        x1, y1, x2, y2 = o["box"]
        assert all(isinstance(v, float) for v in o["box"])
        assert 0.0 <= x1 <= x2 <= w and 0.0 <= y1 <= y2 <= h, o["box"]
        assert 1 <= o["label_id"] < len(classes) and o["label"] == classes[o["label_id"]]
        assert 0.0 <= o["score"] <= 1.0
    rels = doc["relations"]
    assert 0 < len(rels) <= top_k
    for r in rels:
        assert set(r) == {"subject", "predicate", "predicate_id", "object", "score"}
        assert r["subject"] in ids and r["object"] in ids and r["subject"] != r["object"]
        assert isinstance(r["predicate_id"], int) and 1 <= r["predicate_id"] < len(predicates)
        assert r["predicate"] == predicates[r["predicate_id"]]
        assert isinstance(r["score"], float) and 0.0 <= r["score"] <= 1.0
    scores = [r["score"] for r in rels]
    assert scores == sorted(scores, reverse=True)


def assert_same_graph(a, b):
    assert (a["width"], a["height"]) == (b["width"], b["height"])
    assert [o["id"] for o in a["objects"]] == [o["id"] for o in b["objects"]]
    assert [o["label_id"] for o in a["objects"]] == [o["label_id"] for o in b["objects"]]
    np.testing.assert_allclose([o["box"] for o in a["objects"]], [o["box"] for o in b["objects"]], atol=0.011)
    np.testing.assert_allclose([o["score"] for o in a["objects"]], [o["score"] for o in b["objects"]], atol=2e-6)
    key = lambda r: (r["subject"], r["predicate_id"], r["object"])  # noqa: E731
    assert [key(r) for r in a["relations"]] == [key(r) for r in b["relations"]]
    np.testing.assert_allclose([r["score"] for r in a["relations"]], [r["score"] for r in b["relations"]],
                               atol=2e-6)


def check_tool_outputs(out_dir, image_dir, classes, predicates):
    stems = expected_stems(image_dir)
    assert sorted(os.listdir(out_dir)) == sorted(f"{s}.{e}" for s in stems.values() for e in ("json", "png"))
    docs = {}
    for path, stem in stems.items():
        with open(os.path.join(out_dir, stem + ".json")) as f:
            doc = json.load(f)
        check_schema(doc, path, classes, predicates, TOP_K)
        png = cv2.imread(os.path.join(out_dir, stem + ".png"))
        assert png is not None and png.dtype == np.uint8
        # the drawing: image (upscaled: SynthVG images are small), graph and relation list
        assert png.shape[:2] == scene_graph_canvas_size(doc["height"], doc["width"], len(doc["relations"]))
        assert png.shape[1] > doc["width"] + PANEL_WIDTH and png.shape[0] > doc["height"]
        docs[path] = doc
    return docs


# ------------------------------------------------------------------------------------------------
def test_tool_two_stage_predcls_config_predicts_sgdet(two_stage, image_dir, data_root, tmp_path, caplog):
    cfg_file, ckpt_dir, cfg = two_stage
    classes, predicates = _names(data_root)
    out = str(tmp_path / "pred")
    proc = run_predict_subprocess(["--config-file", cfg_file, "--weights", ckpt_dir, "--input", image_dir,
                                   "--output", out, "--batch-size", str(BATCH), "--top-k", str(TOP_K),
                                   "--device", "cpu"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    log = proc.stdout + proc.stderr
    assert log.count(SWITCH_WARNING) == 1 and "protocol is predcls" in log
    docs = check_tool_outputs(out, image_dir, classes, predicates)

    # the same graphs in process
    caplog.set_level(logging.WARNING, logger="sgg")
    predictor = Predictor(cfg, ckpt_dir)
    assert predictor.mode == "sgdet" and predictor.object_labels == "detector"
    assert predictor.class_names == classes and predictor.predicate_names == predicates
    assert predictor.weights == os.path.join(ckpt_dir, "model_final.pth")
    paths = image_files(image_dir)
    graphs = predictor.predict(paths, batch_size=BATCH)
    assert sum(SWITCH_WARNING in r.getMessage() for r in caplog.records) == 1
    for path, g in zip(paths, graphs):
        assert isinstance(g, SceneGraph) and g.boxes.device.type == "cpu" and g.scores.dtype == torch.float32
        assert g.image_size == cv2.imread(path).shape[:2]
        # detection scores rank the triplets, as in SGDet
        assert (g.scores < 1).all()
        s, o = g.rel_pairs[:, 0], g.rel_pairs[:, 1]
        torch.testing.assert_close(g.triplet_scores, g.rel_scores.gather(1, g.rel_labels[:, None])[:, 0]
                                   * g.scores[s] * g.scores[o])
        assert_same_graph(graph_to_json(g, classes, predicates, TOP_K, image=path), docs[path])
    # the PNG copy of a JPEG has the same pixels, hence the same graph
    jpg = next(p for p in paths if p.endswith(".jpg"))
    assert_same_graph(docs[jpg], docs[os.path.splitext(jpg)[0] + ".png"])
    # arrays give the same graphs as paths, whatever the batch size
    again = predictor.predict([read_image(p) for p in paths], batch_size=1)
    for a, b in zip(graphs, again):
        torch.testing.assert_close(a.boxes, b.boxes)
        assert torch.equal(a.rel_pairs, b.rel_pairs) and torch.equal(a.labels, b.labels)


def test_tool_one_stage_with_overrides(one_stage, image_dir, data_root, tmp_path, capsys):
    cfg_file, ckpt, cfg, _ = one_stage
    classes, predicates = _names(data_root)
    out = str(tmp_path / "pred")
    # in process (the subprocess path is covered above; this keeps the file fast on a busy machine)
    # KEY VALUE overrides reach the model: at most 12 objects per image instead of 100
    rc = _tool("predict").main(["--config-file", cfg_file, "--weights", ckpt, "--input", image_dir,
                                "--output", out, "--batch-size", str(BATCH), "--top-k", str(TOP_K),
                                "MODEL.ONESTAGE.TOPK_OBJECTS", "12"])
    cap = capsys.readouterr()
    assert rc == 0, cap.out[-3000:] + cap.err[-3000:]
    assert (cap.out + cap.err).count(SWITCH_WARNING) == 1
    docs = check_tool_outputs(out, image_dir, classes, predicates)
    assert all(0 < len(d["objects"]) <= 12 for d in docs.values())

    from sgg.config import load_config

    cfg12 = load_config(opts=onestage_opts(data_root, cfg.OUTPUT_DIR, "predcls", "MODEL.ONESTAGE.TOPK_OBJECTS", "12"))
    predictor = Predictor(cfg12, ckpt)
    assert predictor.object_labels == "model" and predictor.model.mode == "sgdet"
    paths = image_files(image_dir)
    for path, g in zip(paths, predictor.predict(paths, batch_size=BATCH)):
        assert_same_graph(graph_to_json(g, classes, predicates, TOP_K, image=path), docs[path])


def test_predictor_uses_ema_weights_and_equals_the_model(one_stage, image_dir, tmp_path):
    from sgg.data.mapper import SceneGraphMapper

    _, _, cfg, model = one_stage
    real = {k: v.clone() for k, v in model.state_dict().items()}
    noisy = {k: (v + 0.3 if v.is_floating_point() else v) for k, v in real.items()}
    path = str(tmp_path / "with_ema.pth")
    torch.save({"model": noisy, "ema": {"model": real, "updates": 5, "decay": 0.9}}, path)
    predictor = Predictor(cfg, path)
    for k, v in predictor.model.state_dict().items():
        assert torch.equal(v, real[k]), k

    img = image_files(image_dir)[0]
    h, w = cv2.imread(img).shape[:2]
    sgdet = SceneGraphMapper.from_config(cfg, is_train=False, mode="sgdet")({"file_name": img, "image_id": 0, "height": h,
                                                                   "width": w})
    reference = predictor.model.eval()([sgdet])[0]
    got = predictor.predict(img)[0]
    assert got.num_relations > 0
    torch.testing.assert_close(got.boxes, reference.boxes.clamp(min=0).minimum(torch.tensor([w, h, w, h])))
    assert torch.equal(got.labels, reference.labels) and torch.equal(got.rel_pairs, reference.rel_pairs)
    torch.testing.assert_close(got.triplet_scores, reference.triplet_scores)


def test_sgcls_config_runs_its_own_object_classifier_in_sgdet(data_root, image_dir, tmp_path):
    from sgg.engine.relation import build_relation_model

    cfg = tiny_config(data_root, str(tmp_path / "sgcls"), "sgcls")
    model, _, _ = build_relation_model(cfg)
    Checkpointer(model, cfg.OUTPUT_DIR).save("model_final")
    predictor = Predictor(cfg, cfg.OUTPUT_DIR)
    assert predictor.trained_mode == "sgcls" and predictor.object_labels == "model"
    assert predictor.model.mode == "sgdet" and predictor.model.relation_head.mode == "sgdet"
    graphs = predictor.predict(image_files(image_dir), batch_size=BATCH)
    assert len(graphs) == 3 and all(g.num_relations > 0 and (g.scores < 1).all() for g in graphs)


def test_tool_errors_name_the_file_and_flag(two_stage, image_dir, tmp_path, capsys):
    cfg_file, ckpt_dir, _ = two_stage
    main = _tool("predict").main
    out = str(tmp_path / "out")

    def run(*argv):
        rc = main(["--config-file", cfg_file, "--output", out, *argv])
        return rc, capsys.readouterr()

    missing = str(tmp_path / "no_such_folder")
    rc, cap = run("--weights", ckpt_dir, "--input", missing)
    assert rc == 2 and missing in cap.err and "neither an image file nor a folder" in cap.err

    empty = tmp_path / "no_images"
    empty.mkdir()
    (empty / "readme.txt").write_text("x")
    rc, cap = run("--weights", ckpt_dir, "--input", str(empty))
    assert rc == 2 and "no images in folder" in cap.err and str(empty) in cap.err
    assert all(ext in cap.err for ext in (".jpg", ".png"))

    rc, cap = run("--weights", str(tmp_path / "missing.pth"), "--input", image_dir)
    assert rc == 2 and "missing.pth" in cap.err and "--weights" in cap.err
    rc, cap = run("--input", image_dir)
    assert rc == 2 and "--weights" in cap.err and "MODEL.WEIGHT" in cap.err

    # an unreadable image is named and skipped; the others are written
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    good = image_files(image_dir)[0]
    shutil.copy(good, mixed / "good.jpg")
    (mixed / "broken.jpg").write_bytes(b"\xff\xd8 this is not a jpeg")
    rc, cap = run("--weights", ckpt_dir, "--input", str(mixed))
    assert rc == 1 and str(mixed / "broken.jpg") in cap.err and "cannot read image" in cap.err
    assert sorted(os.listdir(out)) == ["good.json", "good.png"]


def test_predictor_errors(two_stage, image_dir, tmp_path):
    _, ckpt_dir, cfg = two_stage
    state = torch.load(os.path.join(ckpt_dir, "model_final.pth"), weights_only=True)["model"]
    no_detector = str(tmp_path / "no_detector.pth")
    torch.save({"model": {k: v for k, v in state.items() if not k.startswith("detector.")}}, no_detector)
    with pytest.raises(CheckpointError, match="MODEL.PRETRAINED_DETECTOR_CKPT"):
        Predictor(cfg, no_detector)
    partial = str(tmp_path / "partial.pth")
    torch.save({"model": {k: v for k, v in state.items() if "rel_compress" not in k}}, partial)
    with pytest.raises(CheckpointError, match="lacks 2 tensors"):
        Predictor(cfg, partial)
    empty_dir = tmp_path / "empty_out"
    empty_dir.mkdir()
    with pytest.raises(FileNotFoundError, match="last_checkpoint"):
        Predictor(cfg, str(empty_dir))

    predictor = Predictor(cfg, ckpt_dir)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    with pytest.raises(ValueError, match="bad.png"):
        predictor.predict([image_files(image_dir)[0], str(bad)])
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        predictor.predict([np.zeros((8, 8), dtype=np.uint8)])


def test_prediction_needs_only_the_checkpoint_and_the_config(two_stage, one_stage, image_dir, data_root, tmp_path):
    """The checkpoint carries the class / predicate names (metadata): with DATASETS.DATA_DIR pointing
    nowhere both models predict, with the dataset's names; a checkpoint without metadata (older
    files) falls back to the dicts json and says where it looked when that is missing too."""
    from sgg.engine.loading import load_trained_model

    classes, predicates = _names(data_root)
    nowhere = str(tmp_path / "no_dataset_here")
    _, ckpt_dir, cfg = two_stage
    _, ckpt_file, cfg1, _ = one_stage
    for c, w, arch in ((cfg, ckpt_dir, "GeneralizedRCNN"), (cfg1, ckpt_file, "OneStageSGG")):
        c = c.clone()
        c.defrost()
        c.DATASETS.DATA_DIR = nowhere
        c.GLOVE_DIR = nowhere  # nothing else is read either
        c.MODEL.PRETRAINED_DETECTOR_CKPT = os.path.join(nowhere, "detector.pth")
        c.freeze()
        predictor = Predictor(c, w)
        assert predictor.class_names == classes and predictor.predicate_names == predicates
        assert len(predictor.predict([image_files(image_dir)[0]])) == 1
        trained = load_trained_model(c, w)
        assert trained.metadata["meta_architecture"] == arch and trained.metadata["class_names"] == classes
    assert not os.path.exists(nowhere)

    state = torch.load(os.path.join(ckpt_dir, "model_final.pth"), weights_only=True)
    old = str(tmp_path / "old.pth")
    torch.save({"model": state["model"]}, old)  # as written before checkpoints had metadata
    assert Predictor(cfg, old).class_names == classes  # from the dataset's dicts json
    c = cfg.clone()
    c.defrost()
    c.DATASETS.DATA_DIR = nowhere
    with pytest.raises(FileNotFoundError, match="has no metadata.*DATASETS.DATA_DIR"):
        Predictor(c, old)


# ------------------------------------------------------------------------------------------------
def _hand_graph():
    """4 objects, 3 relations on a 40 x 60 (H x W) image; object 3 is off the image's right edge."""
    boxes = torch.tensor([[2.0, 2.0, 20.0, 20.0], [10.0, 5.0, 30.0, 35.0], [30.0, 20.0, 50.0, 38.0],
                          [40.0, 0.0, 70.0, 10.0]])
    labels = torch.tensor([1, 2, 3, 1])
    scores = torch.tensor([0.9, 0.2, 0.8, 0.05])
    pairs = torch.tensor([[0, 1], [2, 0], [3, 1]])
    rel = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.0, 0.5, 0.5]])
    return SceneGraph.from_scores(boxes, labels, scores, pairs, rel, (40, 60))


def test_graph_to_json_threshold_topk_and_names():
    g = _hand_graph()
    classes, predicates = ["__background__", "man", "horse", "hat"], ["__background__", "on", "riding"]
    # triplets: (0,1): .8*.9*.2=.144  (2,0): .8*.8*.9=.576  (3,1): .5*.05*.2=.005
    doc = graph_to_json(g, classes, predicates, top_k_relations=2, score_threshold=0.5, image="x.jpg")
    assert (doc["image"], doc["width"], doc["height"]) == ("x.jpg", 60, 40)
    assert [(r["subject"], r["predicate"], r["object"]) for r in doc["relations"]] == [(2, "riding", 0),
                                                                                       (0, "on", 1)]
    assert [r["score"] for r in doc["relations"]] == pytest.approx([0.576, 0.144])
    # 0 and 2 pass the threshold; 1 (score .2) stays because a kept relation uses it; 3 is dropped
    assert [o["id"] for o in doc["objects"]] == [0, 1, 2]
    assert [o["label"] for o in doc["objects"]] == ["man", "horse", "hat"]
    every = graph_to_json(g, classes, predicates, top_k_relations=None)
    assert len(every["relations"]) == 3 and [o["id"] for o in every["objects"]] == [0, 1, 2, 3]
    assert every["objects"][3]["box"] == [40.0, 0.0, 60.0, 10.0]  # clipped to the image
    assert json.loads(json.dumps(every)) == every
    with pytest.raises(ValueError, match="out of range"):
        graph_to_json(g, classes[:3], predicates)


def test_draw_scene_graph_boxes_and_panel():
    g = _hand_graph()
    doc = graph_to_json(g, ["__background__", "man", "horse", "hat"], ["__background__", "on", "riding"])
    image = np.full((40, 60, 3), 255, dtype=np.uint8)
    out = draw_scene_graph(image, doc, top_k=2)
    s = image_display_scale(40, 60)  # a 60 px image is drawn upscaled
    assert out.dtype == np.uint8 and out.shape[:2] == scene_graph_canvas_size(40, 60, 2)
    assert out.shape[1] == round(60 * s) + 2 * IMAGE_ORIGIN[0] + PANEL_WIDTH
    assert np.array_equal(out, draw_scene_graph(image, doc, top_k=2))  # deterministic
    # the left edge of object 2 (a top-2 relation object, thick) carries its colour
    expected = np.array(object_color(2)) * 255
    x0, y0 = IMAGE_ORIGIN
    x = x0 + round(30 * s)
    strip = out[y0 + round(25 * s):y0 + round(33 * s), x - 3:x + 4].reshape(-1, 3).astype(float)
    assert np.abs(strip - expected).max(axis=1).min() < 40
    # the graph and list panels are not blank
    assert (out[:, x0 + round(60 * s) + x0 + 10:, :] < 128).any()
    with pytest.raises(ValueError, match="uint8"):
        draw_scene_graph(image.astype(np.float32), doc)


# ------------------------------------------------------------------------------------------------
def _write_metrics(path):
    rows = [
        {"iteration": 1, "total_loss": 2.0, "loss_rel": 1.5, "loss_refine_obj": 0.5, "lr": 0.001, "time": 0.1},
        {"iteration": 2, "total_loss": 1.8, "loss_rel": 1.4, "loss_refine_obj": 0.4, "lr": 0.002, "time": 0.1},
        {"iteration": 2, "val/R@20": 0.3, "val/R@50": 0.4, "val/R@100": 0.45, "val/mR@20": 0.1,
         "val/mR@50": 0.15, "val/mR@100": 0.2, "val/zR@100": None, "val/A@100": 0.5},
        {"iteration": 3, "total_loss": 1.7, "loss_rel": 1.3, "loss_refine_obj": 0.4, "lr": 0.002},
        # a resumed run rewrites iteration 3; then a line cut by a crash
        {"iteration": 3, "total_loss": 1.6, "loss_rel": 1.25, "loss_refine_obj": 0.35, "lr": 0.002},
        {"iteration": 4, "val/R@20": 0.35, "val/R@50": 0.45, "val/R@100": 0.5, "val/mR@20": 0.12,
         "val/mR@50": 0.16, "val/mR@100": 0.22},
    ]
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
        f.write('{"iteration": 5, "total_lo')


def test_plot_training_curves(tmp_path, caplog):
    from sgg.utils.curves import plot_training_curves, read_metrics_jsonl, training_curves_keys

    metrics = str(tmp_path / "metrics.json")
    _write_metrics(metrics)
    series = read_metrics_jsonl(metrics)
    assert series["total_loss"] == {1: 2.0, 2: 1.8, 3: 1.6}  # the later row wins
    assert "val/zR@100" not in series
    assert any("skipped 1 line" in r.getMessage() for r in caplog.records)
    keys = training_curves_keys(metrics)
    assert keys[:4] == ["total_loss", "loss_refine_obj", "loss_rel", "lr"]
    assert set(keys[4:]) == {f"val/{m}@{k}" for m in ("R", "mR") for k in (20, 50, 100)}

    out = plot_training_curves(metrics, str(tmp_path / "curves" / "training_curves.png"))
    img = cv2.imread(out)
    assert img is not None and img.shape[0] > 300 and img.shape[1] > 800 and img.std() > 10

    with pytest.raises(FileNotFoundError, match="nothing.json"):
        plot_training_curves(str(tmp_path / "nothing.json"), str(tmp_path / "x.png"))
    empty = tmp_path / "empty.json"
    empty.write_text('{"iteration": 1, "eta_seconds": 3.0}\n')
    with pytest.raises(ValueError, match="empty.json"):
        plot_training_curves(str(empty), str(tmp_path / "x.png"))


def test_metrics_writer_plot_failure_only_warns(tmp_path, caplog):
    from sgg.engine import MetricsWriter

    writer = MetricsWriter(str(tmp_path), tensorboard=False)
    caplog.set_level(logging.WARNING, logger="sgg")
    writer._plot_curves()  # no metrics.json: a warning, no exception
    assert any("could not plot the training curves" in r.getMessage() for r in caplog.records)
    assert not os.path.exists(tmp_path / "training_curves.png")


def test_training_run_writes_training_curves(two_stage, tmp_path):
    from sgg.engine import shutdown_distributed
    from sgg.utils.curves import training_curves_keys

    cfg_file = two_stage[0]
    out = str(tmp_path / "train")
    try:
        state = _tool("relation_train_net").main(
            ["--config-file", cfg_file, "SOLVER.MAX_ITER", "2", "SOLVER.VAL_PERIOD", "1",
             "SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.LOG_PERIOD", "1", "DATASETS.TEST", "()", "OUTPUT_DIR", out])
    finally:
        shutdown_distributed()
    assert state["state"] == "completed"
    png = os.path.join(out, "training_curves.png")
    img = cv2.imread(png)
    assert img is not None and img.std() > 10
    keys = training_curves_keys(os.path.join(out, "metrics.json"))
    assert {"total_loss", "loss_rel", "lr", "val/R@100", "val/mR@100"} <= set(keys)


_TINY_PREDICTOR_OPTS = {
    "IMPPredictor": [],
    "VCTreePredictor": [],
    "TransformerPredictor": TINY_TRANSFORMER_OPTS,
    "PENetPredictor": [],
    "CausalAnalysisPredictor": ["MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_ANALYSIS", "True",
                                "MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_TYPE", "TDE"],
}


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
@pytest.mark.parametrize("name", sorted(_TINY_PREDICTOR_OPTS))
def test_every_predictor_predicts_from_its_checkpoint(name, mode, data_root, image_dir, tmp_path, monkeypatch):
    """A checkpoint of each predictor (PredCls: fed the detections; SGDet: its own objects) loads
    through the one inference loader and predicts scene graphs of user images."""
    from sgg.engine.relation import build_relation_model
    from sgg.modeling.relation.predictors.penet import PENetPredictor

    monkeypatch.setattr(PENetPredictor, "REFERENCE_SIZES", {"mlp_dim": 16, "embed_dim": 8, "dropout_rate": 0.2})
    out = str(tmp_path / "out")
    cfg = tiny_config(data_root, out, mode, "MODEL.ROI_RELATION_HEAD.PREDICTOR", name, *_TINY_PREDICTOR_OPTS[name])
    torch.manual_seed(11)
    model, _, _ = build_relation_model(cfg)
    Checkpointer(model, out).save("model_final")
    predictor = Predictor(cfg, out)
    assert type(predictor.model.relation_head.predictor).__name__ == name
    assert predictor.object_labels == ("detector" if mode == "predcls" else "model")
    graphs = predictor.predict(image_files(image_dir)[:2])
    assert len(graphs) == 2
    for g in graphs:
        assert g.rel_pairs.shape[1] == 2 and g.rel_scores.shape[0] == g.rel_pairs.shape[0]
        assert bool((g.triplet_scores[:-1] >= g.triplet_scores[1:]).all())
