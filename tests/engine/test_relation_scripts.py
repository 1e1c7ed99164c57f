"""tools/relation_train_net.py and tools/relation_test_net.py end to end on a tiny SynthVG (CPU):
a 2-process torchrun evaluation equals the single-process one, training writes its files, resumes
and is reproduced by --eval-only / the test script, and SGB's command line is accepted."""
import importlib.util
import json
import math
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import (  # noqa: E402
    DATASET,
    make_synthvg,
    subprocess_env,
    tiny_config,
    write_config_yaml,
)

TEST_SPLIT = f"{DATASET}_test"
METRIC_PREFIXES = ("R@", "mR@", "ngR@", "ngmR@", "zR@", "ngzR@", "A@", "F@")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    # half the images in test, so that two ranks get several images each
    return make_synthvg(tmp_path_factory.mktemp("scripts_data"), num_images=20, test_fraction=0.5)


@pytest.fixture(scope="module")
def cfg_file(data_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("scripts_cfg")
    return write_config_yaml(str(d / "tiny_predcls.yaml"), data_root, str(d / "unused_output"), "predcls")


def _tool(name):
    spec = importlib.util.spec_from_file_location(f"_tool_{name}", os.path.join(REPO, "tools", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def run_tool(name, argv):
    """``python tools/<name>.py <argv>`` in this process (saves the interpreter start-up)."""
    from sgg.engine import shutdown_distributed

    try:
        return _tool(name).main(list(argv))
    finally:
        shutdown_distributed()


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def read_metrics(out_dir):
    with open(os.path.join(out_dir, "inference", TEST_SPLIT, "relation_metrics.json")) as f:
        return json.load(f)


def same_value(a, b):
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    return a == b


def assert_same_metrics(a, b):
    keys = [k for k in a if k.startswith(METRIC_PREFIXES)]
    assert {"R@20", "R@50", "R@100", "mR@100", "ngR@100", "A@100"} <= set(keys)
    assert set(a) == set(b)
    for k in a:
        assert same_value(a[k], b[k]), (k, a[k], b[k])


def assert_same_predictions(dir_a, dir_b):
    pa = np.load(os.path.join(dir_a, "inference", TEST_SPLIT, "predictions.npz"))
    pb = np.load(os.path.join(dir_b, "inference", TEST_SPLIT, "predictions.npz"))
    assert set(pa.files) == set(pb.files)
    for k in pa.files:
        if k == "__meta__":
            continue
        if pa[k].dtype.kind == "f":
            # scores carry float noise (~1e-6) of the batch composition: TEST.IMS_PER_BATCH 2 is
            # 2 images per forward in one process, 1 per rank in two (matmul blocking differs)
            assert np.allclose(pa[k], pb[k], rtol=1e-4, atol=1e-5), k
        else:
            assert np.array_equal(pa[k], pb[k]), k


def log_text(out_dir, name="log.txt"):
    with open(os.path.join(out_dir, name)) as f:
        return f.read()


# ------------------------------------------------------------------------------------------------
def test_two_process_torchrun_evaluation_equals_single_process(data_root, cfg_file, tmp_path):
    from sgg.checkpoint import Checkpointer
    from sgg.engine.relation import build_relation_model, evaluate_split

    # a checkpoint of a freshly built model (seeded unlike the scripts' SEED, so loading matters)
    ck_dir = str(tmp_path / "ckpt")
    cfg = tiny_config(data_root, ck_dir, "predcls")
    torch.manual_seed(11)
    model, _, _ = build_relation_model(cfg)
    weight = Checkpointer(model, ck_dir).save("model_final")
    in_process = evaluate_split(cfg, model, TEST_SPLIT)
    assert in_process["num_images"] >= 6

    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    cmd = ["--config-file", cfg_file, "MODEL.WEIGHT", weight]
    run_tool("relation_test_net", [*cmd, "OUTPUT_DIR", one])
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={free_port()}",
         os.path.join(REPO, "tools", "relation_test_net.py"), *cmd, "OUTPUT_DIR", two],
        cwd=str(tmp_path), env=subprocess_env(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    # both ranks ran a share of the test images
    assert "rank 1 of 2" in log_text(two, "log_rank1.txt")
    for rank, name in ((0, "log.txt"), (1, "log_rank1.txt")):
        assert f"on rank {rank} in" in log_text(two, name)
    single, double = read_metrics(one), read_metrics(two)
    assert single["num_images"] == double["num_images"] == in_process["num_images"]
    # the evaluator orders the gathered records by image id, and each image is run on the padded
    # canvas it would get alone, so the split over ranks changes nothing
    assert_same_metrics(single, double)
    assert_same_predictions(one, two)
    for k in ("R@20", "R@50", "R@100", "mR@100", "ngR@100", "A@100"):
        assert single[k] == in_process[k], k  # the scripts evaluated the saved weights


def test_train_script_writes_resumes_and_eval_reproduces(cfg_file, tmp_path):
    from sgg.checkpoint import load_checkpoint_file

    out = str(tmp_path / "train")
    cmd = ["--config-file", cfg_file, "SOLVER.MAX_ITER", "4", "SOLVER.VAL_PERIOD", "2",
           "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.LOG_PERIOD", "1", "OUTPUT_DIR", out]
    first = run_tool("relation_train_net", cmd)
    assert first["state"] == "completed"
    for name in ("config.yaml", "log.txt", "metrics.json", "last_checkpoint", "model_final.pth",
                 "model_0000002.pth"):
        assert os.path.isfile(os.path.join(out, name)), name
    with open(os.path.join(out, "last_checkpoint")) as f:
        assert f.read().strip() == "model_final.pth"
    final = load_checkpoint_file(os.path.join(out, "model_final.pth"))
    assert final["iteration"] == 4 and "optimizer" in final and "model" in final
    report = os.path.join(out, "inference", TEST_SPLIT)
    for name in ("relation_metrics.json", "relation_metrics.txt", "predictions.npz"):
        assert os.path.isfile(os.path.join(report, name)), name
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r["iteration"] for r in rows if "total_loss" in r]
    assert train_rows == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss_rel"]) for r in rows if "total_loss" in r)
    assert [r["iteration"] for r in rows if "val/R@100" in r] == [2, 4]
    metrics = read_metrics(out)
    assert metrics["mode"] == "predcls" and metrics["num_images"] > 0
    assert metrics["R@100"] == first[TEST_SPLIT]["R@100"]
    weights = {k: v.clone() for k, v in final["model"].items()}

    # the same command again resumes at iteration 4: nothing is retrained
    second = run_tool("relation_train_net", cmd)
    assert second["state"] == "completed"
    assert "at iteration 4" in log_text(out)
    with open(os.path.join(out, "metrics.json")) as f:
        rows = [json.loads(line) for line in f]
    assert [r["iteration"] for r in rows if "total_loss" in r] == [1, 2, 3, 4]
    again = load_checkpoint_file(os.path.join(out, "model_final.pth"))
    assert again["iteration"] == 4
    for k, v in again["model"].items():
        assert torch.equal(v, weights[k]), k
    assert_same_metrics(metrics, read_metrics(out))

    # --eval-only and the test script load OUTPUT_DIR's last checkpoint and reproduce the metrics
    run_tool("relation_train_net", ["--eval-only", *cmd])
    assert_same_metrics(metrics, read_metrics(out))
    run_tool("relation_test_net", ["--config-file", cfg_file, "OUTPUT_DIR", out])
    assert_same_metrics(metrics, read_metrics(out))
    assert f"loading checkpoint {os.path.join(out, 'model_final.pth')}" in log_text(out)

    # ... whichever checkpoint last_checkpoint names
    with open(os.path.join(out, "last_checkpoint"), "w") as f:
        f.write("model_0000002.pth\n")
    run_tool("relation_test_net", ["--config-file", cfg_file, "OUTPUT_DIR", out])
    assert f"loading checkpoint {os.path.join(out, 'model_0000002.pth')}" in log_text(out)


@pytest.mark.parametrize("local_rank", [["--local_rank", "0"], ["--local-rank=0"], ["--local_rank=0"]])
def test_sgb_reference_command_is_accepted(local_rank, tmp_path):
    from sgg.config import protocol_from_config
    from sgg.engine import default_argument_parser, setup

    out = str(tmp_path / "motif-precls-exmp")
    glove = str(tmp_path / "glove")
    detector = str(tmp_path / "pretrained_faster_rcnn" / "model_final.pth")
    argv = [*local_rank, "--config-file", os.path.join(REPO, "configs", "synthvg", "motifs_predcls.yaml"),
            "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True",
            "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor", "SOLVER.IMS_PER_BATCH", "12",
            "TEST.IMS_PER_BATCH", "2", "DTYPE", "float16", "SOLVER.MAX_ITER", "50000",
            "SOLVER.VAL_PERIOD", "2000", "SOLVER.CHECKPOINT_PERIOD", "2000", "GLOVE_DIR", glove,
            "MODEL.PRETRAINED_DETECTOR_CKPT", detector, "OUTPUT_DIR", out]
    for parser_name in ("relation training", None):
        args = default_argument_parser(parser_name).parse_args(argv)
        assert args.local_rank == 0 and not args.eval_only and args.resume
        assert "--local_rank" not in args.opts and not any(o.startswith("--") for o in args.opts)
    cfg = setup(args)
    assert cfg.is_frozen()
    assert protocol_from_config(cfg) == "predcls"
    assert cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR == "MotifPredictor"
    assert cfg.SOLVER.IMS_PER_BATCH == 12 and cfg.TEST.IMS_PER_BATCH == 2
    assert cfg.DTYPE == "float16"
    assert cfg.SOLVER.MAX_ITER == 50000 and cfg.SOLVER.VAL_PERIOD == 2000 and cfg.SOLVER.CHECKPOINT_PERIOD == 2000
    assert cfg.GLOVE_DIR == glove and cfg.MODEL.PRETRAINED_DETECTOR_CKPT == detector
    assert cfg.OUTPUT_DIR == out and os.path.isfile(os.path.join(out, "config.yaml"))
