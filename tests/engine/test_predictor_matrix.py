"""Every relation predictor under the training engine as users run it: 2-process torchrun (gloo),
bfloat16 autocast, DDP without ``find_unused_parameters`` (so a built parameter that gets no
gradient is an error: the "modules that cannot learn are not built" convention), SGCls (object
and relation branches both learn), then the checkpoint resumes in a 1-process run.

One torchrun per predictor (~20 s each on one core)."""
import json
import math
import os
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))
sys.path.insert(0, HERE)

from two_stage_fixtures import (  # noqa: E402
    DATASET,
    TINY_TRANSFORMER_OPTS,
    make_synthvg,
    subprocess_env,
    write_config_yaml,
)
from test_relation_scripts import free_port, run_tool  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# tiny sizes where the reference sizes are config keys (the others use the tiny config's widths)
PREDICTORS = {
    "MotifPredictor": [],
    "IMPPredictor": [],
    "VCTreePredictor": [],
    "TransformerPredictor": TINY_TRANSFORMER_OPTS,
    "PENetPredictor": ["MODEL.ROI_RELATION_HEAD.PENET.MLP_DIM", "16"],
    "CausalAnalysisPredictor": [],
}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("matrix_data"), num_images=16, test_fraction=0.25)


def _rows(out):
    with open(os.path.join(out, "metrics.json")) as f:
        return [json.loads(line) for line in f if line.strip()]


@pytest.mark.parametrize("predictor", sorted(PREDICTORS))
def test_torchrun_bf16_ddp_then_resume(predictor, data_root, tmp_path):
    out = str(tmp_path / "run")
    cfg_file = write_config_yaml(
        str(tmp_path / "cfg.yaml"), data_root, out, "sgcls", "MODEL.ROI_RELATION_HEAD.PREDICTOR", predictor,
        *PREDICTORS[predictor], "DTYPE", "bfloat16", "SOLVER.FIND_UNUSED_PARAMETERS", "False",
        "SOLVER.MAX_ITER", "2", "SOLVER.CHECKPOINT_PERIOD", "1", "SOLVER.TO_VAL", "False",
        "SOLVER.WARMUP_ITERS", "1", "SOLVER.LOG_PERIOD", "1", "TEST.DRAW_IMAGES", "0")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         os.path.join(REPO, "tools", "relation_train_net.py"), "--config-file", cfg_file],
        cwd=str(tmp_path), env=subprocess_env(REPO), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    with open(os.path.join(out, "log_rank1.txt")) as f:
        assert "rank 1 of 2" in f.read()
    rows = [r for r in _rows(out) if "loss_rel" in r]
    assert [r["iteration"] for r in rows] == [1, 2]
    # SGCls: both the relation loss and the object-refinement loss are live and finite
    assert all(math.isfinite(r["loss_rel"]) and r["loss_rel"] > 0 for r in rows)
    assert all(math.isfinite(r["loss_refine_obj"]) and r["loss_refine_obj"] > 0 for r in rows)
    with open(os.path.join(out, "inference", f"{DATASET}_test", "relation_metrics.json")) as f:
        metrics = json.load(f)
    assert metrics["num_images"] >= 2 and 0.0 <= metrics["R@100"] <= 1.0

    # the 2-rank bf16 checkpoint resumes in one process and trains on to iteration 3
    res = run_tool("relation_train_net", ["--config-file", cfg_file, "SOLVER.MAX_ITER", "3"])
    assert res["state"] == "completed"
    with open(os.path.join(out, "log.txt")) as f:
        log = f.read()
    assert "resuming from" in log and "model_final.pth at iteration 2" in log, log[-3000:]
    rows = [r for r in _rows(out) if "loss_rel" in r]
    assert [r["iteration"] for r in rows] == [1, 2, 3]
