import numpy as np
import pytest

from sgg.config import load_config
from sgg.data.synthvg import generate_synthvg
from sgg.evaluation.baselines import (all_ordered_pairs, frequency_prior_prediction,
                                      order_by_triplet_score, run_baselines)


def test_all_ordered_pairs():
    assert all_ordered_pairs(3).tolist() == [[0, 1], [0, 2], [1, 0], [1, 2], [2, 0], [2, 1]]
    assert all_ordered_pairs(1).shape == (0, 2)


def test_order_by_triplet_score_is_stable_and_uses_object_scores():
    pairs = np.array([[0, 1], [1, 0], [0, 2]])
    rel = np.array([[0.5, 0.5, 0.0], [0.2, 0.0, 0.8], [0.5, 0.5, 0.0]], np.float32)
    obj = np.array([1.0, 0.5, 1.0], np.float32)
    p, r = order_by_triplet_score(pairs, rel, obj)
    # triplet scores: 0.25, 0.4, 0.5 -> order rows 2, 1, 0
    assert p.tolist() == [[0, 2], [1, 0], [0, 1]]
    assert np.array_equal(r[0], rel[2])


def test_frequency_prior_prediction_prefers_frequent_predicate():
    # 2 object classes + bg, 2 predicates + bg: (1,2) is mostly predicate 2, (2,1) mostly predicate 1
    fg = np.ones((3, 3, 3))
    fg[1, 2] = [1, 1, 20]
    fg[2, 1] = [1, 30, 1]
    pred_dist = np.log(fg / fg.sum(-1, keepdims=True) + 1e-3).astype(np.float32)
    gt = {"boxes": np.zeros((2, 4), np.float32), "labels": np.array([1, 2])}
    pred = frequency_prior_prediction(gt, pred_dist)
    assert pred["rel_pairs"].tolist() == [[1, 0], [0, 1]]  # (2,1) is the more confident pair
    assert pred["rel_scores"][:, 1:].argmax(1).tolist() == [0, 1]
    assert np.allclose(pred["rel_scores"].sum(1), 1.0, atol=1e-6)
    assert pred["scores"].tolist() == [1.0, 1.0]


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    generate_synthvg(str(root / "synthvg_tiny"), profile="tiny", seed=0)
    return root


def test_rule_beats_frequency_prior_on_synthvg(tiny_root, tmp_path):
    cfg = load_config(opts=["DATASETS.DATA_DIR", str(tiny_root), "DATASETS.TEST", "synthvg_tiny_test",
                            "DATASETS.NUM_VAL_IMAGES", "5", "OUTPUT_DIR", str(tmp_path)])
    res = run_baselines(cfg)
    freq, rule = res["frequency_prior"], res["geometric_rule"]
    assert freq["num_images"] == rule["num_images"] > 5
    # the images carry the relation signal: the generator's rule on GT boxes beats the prior
    assert rule["R@50"] > freq["R@50"] + 0.1
    assert rule["mR@50"] > freq["mR@50"]
    for name in ("frequency_prior", "geometric_rule"):
        for suffix in (".json", ".txt", "_per_predicate.png"):
            assert (tmp_path / f"{name}{suffix}").is_file()


def test_rule_baseline_needs_synthvg(tmp_path):
    from sgg.data.synthvg import generate_synthvg as gen
    gen(str(tmp_path / "d" / "plain"), profile="tiny", seed=1, num_images=20)
    (tmp_path / "d" / "plain" / "synthvg_config.json").unlink()
    cfg = load_config(opts=["DATASETS.DATA_DIR", str(tmp_path / "d"), "DATASETS.TEST", "plain_test",
                            "DATASETS.NUM_VAL_IMAGES", "2", "OUTPUT_DIR", str(tmp_path / "o")])
    with pytest.raises(FileNotFoundError, match="synthvg_config.json"):
        run_baselines(cfg, names=["geometric_rule"])


def _load_tool(name):
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "..", "..", "tools", f"{name}.py")
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_saved_predictions_rescored_against_split(tiny_root, tmp_path, capsys):
    import json

    from sgg.data.catalog import get_dataset_files
    from sgg.data.datasets import VG150Dataset
    from sgg.data.statistics import get_dataset_statistics
    from sgg.evaluation import SceneGraphEvaluator

    files = get_dataset_files("synthvg_tiny_test", str(tiny_root))
    ds = VG150Dataset(files.roidb_file, files.dict_file, files.image_file, files.img_dir, "test")
    stats = get_dataset_statistics(get_dataset_files("synthvg_tiny_train", str(tiny_root)), num_val_im=5)
    ev = SceneGraphEvaluator("predcls", ds.num_predicates - 1)
    for i in range(len(ds)):
        gt = ds.get_groundtruth(i)
        ev.process(gt, frequency_prior_prediction(gt, stats["pred_dist"]))
    direct = ev.evaluate()
    pred_file = tmp_path / "predictions.npz"
    ev.save(str(pred_file))

    tool = _load_tool("evaluate_predictions")
    out = tmp_path / "out"
    tool.main(["--predictions", str(pred_file), "DATASETS.DATA_DIR", str(tiny_root), "DATASETS.TEST",
               "synthvg_tiny_test", "DATASETS.NUM_VAL_IMAGES", "5", "OUTPUT_DIR", str(out)])
    printed = capsys.readouterr().out
    assert "R @ 50" in printed and "Detection evaluation mAp" in printed
    saved = json.loads((out / "relation_metrics.json").read_text())
    for key in ("R@20", "R@50", "mR@100", "ngR@50", "A@20"):
        assert saved[key] == direct[key]
    assert saved["AP50"] == 1.0 or saved["AP50"] > 0.9  # PredCls boxes are the GT boxes
    assert (out / "relation_metrics_per_predicate.png").is_file()


def test_rescore_rejects_predictions_of_another_split(tiny_root, tmp_path):
    from sgg.data.catalog import get_dataset_files
    from sgg.data.datasets import VG150Dataset
    from sgg.evaluation import SceneGraphEvaluator
    from sgg.evaluation.rescore import rescore_predictions

    tr = get_dataset_files("synthvg_tiny_train", str(tiny_root))
    te = get_dataset_files("synthvg_tiny_test", str(tiny_root))
    train = VG150Dataset(tr.roidb_file, tr.dict_file, tr.image_file, tr.img_dir, "train", num_val_im=0)
    test = VG150Dataset(te.roidb_file, te.dict_file, te.image_file, te.img_dir, "test")
    ev = SceneGraphEvaluator("predcls", test.num_predicates - 1)
    gt = train.get_groundtruth(0)
    ev.process(gt, {**gt, "scores": np.ones(len(gt["labels"])), "rel_pairs": np.array([[0, 1]]),
                    "rel_scores": np.full((1, test.num_predicates), 0.1)})
    path = tmp_path / "p.npz"
    ev.save(str(path))
    with pytest.raises(ValueError, match="not in the split"):
        rescore_predictions(str(path), test)
