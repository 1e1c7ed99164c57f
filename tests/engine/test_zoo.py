"""The predictor zoo runner: cells, overrides, resumability, the table; one real cell end to end."""
import json
import os
import sys

import pytest

from sgg.engine.zoo import ZooCell, format_zoo_table, run_zoo, zoo_cells

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import DATASET, make_synthvg, subprocess_env, write_config_yaml  # noqa: E402

TEST_SPLIT = f"{DATASET}_test"


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("zoo_data"), num_images=12, test_fraction=0.5)


def _fake_runner(calls, fail=()):
    """Writes the test metrics a run would (R@K = 0.1 * cell index, ...) instead of training."""
    def run(config_file, opts, log_file, nproc):
        o = dict(zip(opts[0::2], opts[1::2]))
        calls.append(o)
        name = os.path.basename(o["OUTPUT_DIR"])
        if name in fail:
            return 3
        d = os.path.join(o["OUTPUT_DIR"], "inference", TEST_SPLIT)
        os.makedirs(d, exist_ok=True)
        k = len(calls)
        with open(os.path.join(d, "relation_metrics.json"), "w") as f:
            json.dump({"R@20": 0.1 * k, "R@50": 0.2 * k, "R@100": 0.25 * k, "mR@50": 0.05 * k,
                       "F@50": 0.07, "zR@50": 0.0, "A@50": 0.9}, f)
        return 0
    return run


def test_cells_and_their_overrides(data_root, tmp_path):
    cfg = write_config_yaml(str(tmp_path / "base.yaml"), data_root, str(tmp_path / "unused"))
    calls = []
    cells = run_zoo(cfg, str(tmp_path / "zoo"), ["MotifPredictor", "IMPPredictor"], ["predcls", "sgdet"],
                    ["plain", "hml"], opts=["SOLVER.MAX_ITER", "2"], runner=_fake_runner(calls))
    assert [c.name for c in cells] == [f"{p}-{m}-{h}" for p in ("MotifPredictor", "IMPPredictor")
                                       for m in ("predcls", "sgdet") for h in ("plain", "hml")] + \
        ["FrequencyPrior-predcls-none"]
    assert all(c.status == "done" for c in cells) and len(calls) == 8
    first, sgdet_hml = calls[0], calls[3]
    assert first["SOLVER.MAX_ITER"] == "2" and first["MODEL.ROI_RELATION_HEAD.PREDICTOR"] == "MotifPredictor"
    assert (first["MODEL.ROI_RELATION_HEAD.USE_GT_BOX"], first["MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL"],
            first["MODEL.HML.ENABLED"]) == ("True", "True", "False")
    assert (sgdet_hml["MODEL.ROI_RELATION_HEAD.USE_GT_BOX"], sgdet_hml["MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL"],
            sgdet_hml["MODEL.HML.ENABLED"]) == ("False", "False", "True")
    assert sgdet_hml["OUTPUT_DIR"] == str(tmp_path / "zoo" / "MotifPredictor-sgdet-hml")
    assert cells[1].metrics["R@50"] == pytest.approx(0.4) and "A@50" not in cells[1].metrics
    table = (tmp_path / "zoo" / "zoo_table.md").read_text()
    assert "| MotifPredictor | predcls | hml | 20.00 / 40.00 / 50.00 | - / 10.00 / - |" in table
    assert (tmp_path / "zoo" / "zoo_plot.png").stat().st_size > 0
    # the last row: the frequency prior scored on the same test split, as run_baselines scores it
    from sgg.config import load_config
    from sgg.evaluation.baselines import run_baselines

    ref = run_baselines(load_config(cfg, ["OUTPUT_DIR", str(tmp_path / "ref")]), ["frequency_prior"],
                        split_name=TEST_SPLIT)["frequency_prior"]
    prior = cells[-1]
    assert prior.metrics["R@50"] == ref["R@50"] and prior.metrics["mR@50"] == ref["mR@50"] > 0
    assert f"| FrequencyPrior | predcls | none | {100 * ref['R@20']:.2f} / {100 * ref['R@50']:.2f}" in table

    # re-running: finished cells are not re-run, their numbers come back from zoo_cell.json
    again = []
    cells2 = run_zoo(cfg, str(tmp_path / "zoo"), ["MotifPredictor", "IMPPredictor"], ["predcls", "sgdet"],
                     ["plain", "hml"], runner=_fake_runner(again))
    assert again == [] and all(c.status == "skipped" for c in cells2)
    assert [c.metrics for c in cells2] == [c.metrics for c in cells]


def test_a_failed_cell_is_reported_and_rerun_next_time(data_root, tmp_path):
    cfg = write_config_yaml(str(tmp_path / "base.yaml"), data_root, str(tmp_path / "unused"))
    calls = []
    cells = run_zoo(cfg, str(tmp_path / "zoo"), ["MotifPredictor"], ["predcls", "sgcls"],
                    runner=_fake_runner(calls, fail={"MotifPredictor-predcls-plain"}), baseline=False)
    assert [c.status for c in cells] == ["failed", "done"]
    assert "| MotifPredictor | predcls | plain | failed |" in format_zoo_table(cells)
    with pytest.raises(RuntimeError, match="MotifPredictor-predcls-plain failed with exit code 3"):
        run_zoo(cfg, str(tmp_path / "zoo"), ["MotifPredictor"], ["predcls"],
                runner=_fake_runner([], fail={"MotifPredictor-predcls-plain"}), keep_going=False)
    later = []
    cells = run_zoo(cfg, str(tmp_path / "zoo"), ["MotifPredictor"], ["predcls", "sgcls"], runner=_fake_runner(later),
                    baseline=False)
    assert [os.path.basename(c["OUTPUT_DIR"]) for c in later] == ["MotifPredictor-predcls-plain"]
    assert [c.status for c in cells] == ["done", "skipped"]


def test_bad_arguments_name_the_choices():
    with pytest.raises(ValueError, match="predcls, sgcls, sgdet"):
        zoo_cells(["MotifPredictor"], ["detection"], ["plain"])
    with pytest.raises(ValueError, match="plain, hml"):
        zoo_cells(["MotifPredictor"], ["predcls"], ["distill"])
    assert ZooCell("A", "sgcls", "hml").name == "A-sgcls-hml"


def test_one_real_cell_through_the_command(data_root, tmp_path, monkeypatch):
    """``tools/zoo.py``: a real 2-iteration Motifs PredCls training in a subprocess, its test
    metrics in the table; run again, nothing is retrained."""
    import subprocess

    cfg = write_config_yaml(str(tmp_path / "base.yaml"), data_root, str(tmp_path / "unused"))
    cmd = [sys.executable, os.path.join(REPO, "tools", "zoo.py"), "--config-file", cfg, "--output",
           str(tmp_path / "zoo"), "--predictors", "MotifPredictor", "SOLVER.MAX_ITER", "2", "SOLVER.VAL_PERIOD", "0",
           "SOLVER.CHECKPOINT_PERIOD", "2", "MODEL.DEVICE", "cpu"]
    env = subprocess_env(REPO)
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    cell = json.loads((tmp_path / "zoo" / "MotifPredictor-predcls-plain" / "zoo_cell.json").read_text())
    metrics = json.loads((tmp_path / "zoo" / "MotifPredictor-predcls-plain" / "inference" / TEST_SPLIT /
                          "relation_metrics.json").read_text())
    assert cell["metrics"]["R@50"] == metrics["R@50"] and cell["train_seconds"] > 0
    assert f"{100 * metrics['R@50']:.2f}" in out.stdout
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "already done" in again.stdout + again.stderr
