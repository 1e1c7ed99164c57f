"""The test of a split ends with drawn scene graphs (TEST.DRAW_IMAGES): PNG + JSON of the first
images, predicted on exactly what the evaluation showed the model (PredCls: the GT boxes and
labels), and their paths in the log."""
import json
import logging
import os
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import DATASET, make_synthvg, tiny_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TEST_SPLIT = f"{DATASET}_test"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("examples_data"), num_images=12, test_fraction=0.5)


def _model(cfg):
    from sgg.engine.relation import build_relation_model

    torch.manual_seed(5)
    model, _, _ = build_relation_model(cfg)
    return model


def test_split_test_draws_first_images_on_the_gt_of_predcls(data_root, tmp_path, caplog):
    from sgg.data.build import build_dataset
    from sgg.engine.relation import evaluate_split

    out = str(tmp_path / "run")
    cfg = tiny_config(data_root, out, "predcls", "TEST.DRAW_IMAGES", "2")
    model = _model(cfg)
    with caplog.at_level(logging.INFO, logger="sgg.engine.common"):
        evaluate_split(cfg, model, TEST_SPLIT)
    split_dir = os.path.join(out, "inference", TEST_SPLIT)
    dataset = build_dataset(cfg, TEST_SPLIT, is_train=False, mode="predcls")
    for i in range(2):
        gt = dataset[i]
        stem = os.path.join(split_dir, f"scene_graph_{gt['image_id']}")
        png = stem + ".png"
        assert os.path.getsize(png) > 1000
        with open(stem + ".json") as f:
            graph = json.load(f)
        assert (graph["height"], graph["width"]) == (gt["height"], gt["width"])
        # PredCls: the objects are the GT objects, with their labels, boxes in image pixels
        ids = [o["id"] for o in graph["objects"]]
        assert ids == sorted(ids) and set(ids) <= set(range(len(gt["labels"])))
        for o in graph["objects"]:
            assert o["label_id"] == int(gt["labels"][o["id"]])
            assert np.allclose(o["box"], gt["boxes"][o["id"]], atol=0.01)
        n = len(gt["labels"])
        assert len(graph["relations"]) == min(50, n * (n - 1))
        scores = [r["score"] for r in graph["relations"]]
        assert scores == sorted(scores, reverse=True)
        assert png in caplog.text
    assert not os.path.exists(os.path.join(split_dir, f"scene_graph_{dataset[2]['image_id']}.png"))
    # the log names the table, the plot and the drawing
    for name in ("relation_metrics.txt", "relation_metrics_per_predicate.png", "predictions.npz"):
        assert os.path.join(split_dir, name) in caplog.text


def test_draw_images_zero_draws_nothing(data_root, tmp_path):
    from sgg.engine.relation import evaluate_split

    out = str(tmp_path / "run")
    cfg = tiny_config(data_root, out, "sgdet", "TEST.DRAW_IMAGES", "0")
    evaluate_split(cfg, _model(cfg), TEST_SPLIT)
    files = os.listdir(os.path.join(out, "inference", TEST_SPLIT))
    assert "relation_metrics.json" in files
    assert not [f for f in files if f.startswith("scene_graph_")]
