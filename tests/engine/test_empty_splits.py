"""Evaluating an empty split is an error naming the dataset and the split, never a recall of NaN
(issue 17, item 4c): tools/relation_test_net.py exits non-zero, the test step after
relation_train_net fails, the detector's test path too, and the metric functions refuse empty input."""
import importlib.util
import os
import re
import subprocess
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import DATASET, make_synthvg, subprocess_env, tiny_config, write_config_yaml  # noqa: E402

H5 = "VG-SGG-with-attri.h5"
TEST_SPLIT = f"{DATASET}_test"
EMPTY_TEST = (f"dataset '{TEST_SPLIT}' (test split of '{{h5}}') has no image: the h5 has no image row with "
              f"split == 2 (test). Fix: ")
NAN = re.compile(r"\bnan\b", re.IGNORECASE)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def no_test_root(tmp_path_factory):
    """A tiny SynthVG whose h5 has no test row (every image is a train image)."""
    root = make_synthvg(tmp_path_factory.mktemp("empty_test_data"), num_images=16)
    with h5py.File(os.path.join(root, DATASET, H5), "r+") as f:
        f["split"][...] = np.zeros_like(f["split"][()])
    return root


def _expected(root):
    return EMPTY_TEST.format(h5=os.path.join(root, DATASET, H5))


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_relation_test_net_exits_non_zero_on_an_empty_test_split(no_test_root, tmp_path):
    from sgg.checkpoint import Checkpointer
    from sgg.engine.relation import build_relation_model

    ck_dir = str(tmp_path / "ckpt")
    model, _, _ = build_relation_model(tiny_config(no_test_root, ck_dir, "predcls"))
    weight = Checkpointer(model, ck_dir).save("model_final")
    cfg_file = write_config_yaml(str(tmp_path / "tiny.yaml"), no_test_root, str(tmp_path / "unused"), "predcls")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "relation_test_net.py"), "--config-file",
                           cfg_file, "MODEL.WEIGHT", weight, "OUTPUT_DIR", str(tmp_path / "out")],
                          cwd=str(tmp_path), env=subprocess_env(REPO), capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    assert "ValueError: " + _expected(no_test_root) in out, out[-3000:]
    assert not NAN.search(out), out[-3000:]
    assert not os.path.exists(os.path.join(tmp_path, "out", "inference", TEST_SPLIT, "relation_metrics.json"))


def test_test_step_after_relation_training_fails_on_an_empty_test_split(no_test_root, tmp_path, caplog):
    from sgg.engine import shutdown_distributed

    out = str(tmp_path / "train")
    cfg_file = write_config_yaml(str(tmp_path / "tiny.yaml"), no_test_root, str(tmp_path / "unused"), "predcls")
    try:
        with pytest.raises(ValueError) as e:
            _tool("relation_train_net").main(["--config-file", cfg_file, "SOLVER.MAX_ITER", "1", "SOLVER.TO_VAL",
                                              "False", "OUTPUT_DIR", out])
    finally:
        shutdown_distributed()
    assert str(e.value).startswith(_expected(no_test_root)), str(e.value)
    assert os.path.isfile(os.path.join(out, "model_final.pth"))  # training itself completed
    assert not NAN.search(caplog.text)


def test_detector_test_path_on_an_empty_test_split(no_test_root, tmp_path):
    from sgg.data.datasets import VG150Dataset
    from sgg.data.catalog import get_dataset_files
    from sgg.engine.detector import evaluate_detector, test_detector

    cfg = tiny_config(no_test_root, str(tmp_path / "out"), "sgdet")
    with pytest.raises(ValueError) as e:
        test_detector(cfg, weights=str(tmp_path / "never_read.pth"))
    assert str(e.value).startswith(_expected(no_test_root)), str(e.value)
    # a loader built by hand over the empty split: the AP is refused too
    empty = VG150Dataset.from_files(get_dataset_files(TEST_SPLIT, no_test_root))
    empty.name = TEST_SPLIT
    loader = SimpleNamespace(dataset=SimpleNamespace(dataset=empty))
    with pytest.raises(ValueError, match=re.escape(_expected(no_test_root))):
        evaluate_detector(torch.nn.Linear(1, 1), loader, empty.ind_to_classes)


def test_metric_functions_refuse_empty_input(tmp_path):
    from sgg.evaluation import (coco_box_ap, evaluate_detection, evaluate_predictions_file, evaluate_relations,
                                save_predictions)

    with pytest.raises(ValueError, match=r"^evaluate_relations: no image to evaluate \(empty input\)"):
        evaluate_relations([], [], "predcls", num_predicates=3)
    with pytest.raises(ValueError, match=r"^box AP: no image to evaluate"):
        evaluate_detection([], [], 4, "sgdet")
    with pytest.raises(ValueError, match=r"^box AP: no image to evaluate"):
        coco_box_ap([], [], [], [], [], 4)
    path = str(tmp_path / "empty.npz")
    save_predictions(path, [], "predcls", (20, 50, 100))
    with pytest.raises(ValueError, match=rf"^'{re.escape(path)}': no image to evaluate"):
        evaluate_predictions_file(path, 3)
