"""The detector job (sgg.engine.detector, ``sgg detector_train_net``) end to end on a tiny SynthVG
(CPU): training validates by AP50, writes detection.json for the test split, and --eval-only
reloads the final checkpoint and reproduces the box AP."""
import json
import math
import os
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import DATASET, make_synthvg, write_config_yaml  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")
TEST_SPLIT = f"{DATASET}_test"


def run(argv):
    from sgg.cli import detector_train_net
    from sgg.engine import shutdown_distributed

    try:
        return detector_train_net.main(list(argv))
    finally:
        shutdown_distributed()


def test_detector_job_trains_and_eval_only_reproduces_box_ap(tmp_path):
    root = make_synthvg(tmp_path / "data", num_images=12)
    out = str(tmp_path / "out")
    cfg_file = write_config_yaml(str(tmp_path / "detector.yaml"), root, out, "sgdet", "MODEL.RELATION_ON", "False")
    cmd = ["--config-file", cfg_file, "SOLVER.MAX_ITER", "2", "SOLVER.VAL_PERIOD", "2",
           "SOLVER.CHECKPOINT_PERIOD", "100", "SOLVER.LOG_PERIOD", "1"]

    trained = run(cmd)
    assert trained["state"] == "completed"
    ap = trained[TEST_SPLIT]
    assert set(ap) >= {"AP50", "AP"} and all(0.0 <= ap[k] <= 1.0 for k in ("AP50", "AP"))
    with open(os.path.join(out, "inference", TEST_SPLIT, "detection.json")) as f:
        assert json.load(f) == ap
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    # validation reports the detector's metric (AP50), not the relation default R@100
    assert [r["iteration"] for r in rows if "val/AP50" in r] == [2]
    assert all(math.isfinite(r["total_loss"]) for r in rows if "total_loss" in r)

    # --eval-only: OUTPUT_DIR's last checkpoint (model_final), the number of classes from the test split
    os.remove(os.path.join(out, "inference", TEST_SPLIT, "detection.json"))
    tested = run(["--eval-only", *cmd])
    assert set(tested) == {TEST_SPLIT}
    assert tested[TEST_SPLIT] == ap
    assert os.path.isfile(os.path.join(out, "inference", TEST_SPLIT, "detection.json"))


def test_evaluate_detector_lives_in_the_engine():
    import sgg.modeling.detector as detector
    from sgg.engine.detector import evaluate_detector

    assert callable(evaluate_detector)
    assert not hasattr(detector, "evaluate_detector")  # modeling builds models; engine runs them
