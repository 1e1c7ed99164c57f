"""The HML fork's README command (tools/relation_train_distill_fisher_only.py, torchrun instead of
torch.distributed.launch) trains with HML; HML-only (and STDG-only) keys without their method stop
relation_train_net with an error that names them; the test job and the zoo's plain cells accept
them."""
import json
import logging
import os
import shlex
import socket
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tests", "modeling"))

from two_stage_fixtures import make_synthvg, subprocess_env, write_config_yaml  # noqa: E402

from sgg.config import ConfigError, load_config  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

# The HML fork's README command, as written.
SEED_COMMAND = (
    'CUDA_VISIBLE_DEVICES=0,1 python -m torch.distributed.launch --master_port 10030 --nproc_per_node=2 '
    'tools/relation_train_distill_fisher_only.py --config-file "configs/e2e_relation_X_101_32_8_FPN_1x.yaml" '
    'MODEL.ROI_RELATION_HEAD.USE_GT_BOX True MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL True '
    'MODEL.USE_CONFIDENCE False MODEL.DISTILL_TEMPERATURE 2 MODEL.ROI_RELATION_HEAD.PREDICTOR MotifPredictor '
    'SOLVER.IMS_PER_BATCH 12 TEST.IMS_PER_BATCH 2 DTYPE "float16" SOLVER.MAX_ITER 16000 SOLVER.VAL_PERIOD 1000 '
    'SOLVER.CHECKPOINT_PERIOD 1000 SOLVER.LAMBDA_FOR_PARAM 1.0 SOLVER.ALPHA_FOR_FISHER 0.5 '
    'SOLVER.DISTILL_TYPE l2 SOLVER.BASE_LR 0.001 GLOVE_DIR glove '
    'MODEL.PRETRAINED_DETECTOR_CKPT checkpoints/pretrained_faster_rcnn/model_final.pth OUTPUT_DIR out'
)
SCRIPT = "tools/relation_train_distill_fisher_only.py"


def seed_overrides():
    """The ``KEY VALUE`` overrides of the seed command (everything after ``--config-file FILE``)."""
    words = shlex.split(SEED_COMMAND)
    args = words[words.index(SCRIPT) + 1:]
    assert args[:2] == ["--config-file", "configs/e2e_relation_X_101_32_8_FPN_1x.yaml"]
    return args[2:]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("hml_seed_data"), num_images=12)


@pytest.fixture(scope="module")
def cfg_file(data_root, tmp_path_factory):
    d = tmp_path_factory.mktemp("hml_seed_cfg")
    return write_config_yaml(str(d / "tiny_predcls.yaml"), data_root, str(d / "unused_output"), "predcls")


# ------------------------------------------------------------------------------------------------
def test_seed_command_runs_hml_with_torchrun(cfg_file, tmp_path):
    """The seed command with torchrun: the tiny model's YAML instead of the X-101 one, and after the
    overrides as written only what makes it tiny (iterations, batch, no detector file)."""
    tiny = ["SOLVER.MAX_ITER", "2", "SOLVER.IMS_PER_BATCH", "2", "SOLVER.TO_VAL", "False",
            "MODEL.PRETRAINED_DETECTOR_CKPT", "",
            "MODEL.HML.FISHER_BATCHES", "1", "MODEL.HML.HIERARCHY", "dataset"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=1", f"--master_port={_free_port()}",
           os.path.join(REPO, SCRIPT), "--config-file", cfg_file, *seed_overrides(), *tiny]
    proc = subprocess.run(cmd, cwd=str(tmp_path), env=subprocess_env(REPO), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]

    out = tmp_path / "out"  # OUTPUT_DIR out, relative to the working directory
    cfg = load_config(str(out / "config.yaml"))
    assert cfg.MODEL.HML.ENABLED is True and cfg.DTYPE == "float16" and cfg.SOLVER.DISTILL_TYPE == "l2"
    assert (out / "stage1" / "hml_stage1.pth").is_file()  # stage 1 ran, the Fisher and anchors were saved
    with open(out / "log.txt") as f:
        log = f.read()
    assert "training method: hml" in log and "HML stage 1" in log
    with open(out / "metrics.json") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    assert {"loss_rel", "loss_distill", "loss_anchor"} <= set([r for r in rows if "loss_rel" in r][-1])  # stage 2
    report = out / "inference" / "synthvg_tiny_test" / "relation_metrics.json"
    assert report.is_file()

    # SGB users give the test command the training overrides: the HML keys pass (a warning only)
    from sgg.cli import run_command
    from sgg.cli.relation_test_net import main as test_main

    report.unlink()
    assert run_command(test_main, ["--config-file", cfg_file, *seed_overrides(), *tiny, "OUTPUT_DIR", str(out)]) == 0
    assert report.is_file()
    with open(out / "log.txt") as f:
        assert "have no effect on the test job" in f.read()


def test_fisher_only_command_refuses_hml_off(capsys):
    from sgg.cli.relation_train_distill_fisher_only import main

    with pytest.raises(SystemExit) as e:
        main(["MODEL.HML.ENABLED", "False", "SOLVER.LAMBDA_FOR_PARAM", "2.0"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "MODEL.HML.ENABLED False" in err and "relation_train_net" in err


# ------------------------------------------------------------------------------------------------
def test_hml_key_without_hml_is_an_error_naming_it():
    from sgg.engine.methods import check_method_keys

    opts = ["SOLVER.LAMBDA_FOR_PARAM", "2.0"]
    with pytest.raises(ConfigError) as e:
        check_method_keys(load_config(opts=opts), opts)
    msg = str(e.value)
    assert "SOLVER.LAMBDA_FOR_PARAM 2.0" in msg and "MODEL.HML.ENABLED True" in msg
    assert "relation_train_distill_fisher_only" in msg and "remove the key" in msg
    # the same config from a YAML file (no command line): the value differs from the default
    with pytest.raises(ConfigError, match="SOLVER.LAMBDA_FOR_PARAM 2.0"):
        check_method_keys(load_config(opts=opts))
    # every MODEL.HML.* key but the switch; each key is named with its value
    with pytest.raises(ConfigError) as e:
        check_method_keys(load_config(opts=["MODEL.HML.NUM_COARSE", "3", "SOLVER.DISTILL_TYPE", "l1"]))
    assert "MODEL.HML.NUM_COARSE 3" in str(e.value) and "SOLVER.DISTILL_TYPE 'l1'" in str(e.value)
    # with HML on, nothing to say
    check_method_keys(load_config(opts=["MODEL.HML.ENABLED", "True", *opts]), ["MODEL.HML.ENABLED", "True", *opts])
    check_method_keys(load_config())


def test_seed_overrides_to_relation_train_net_are_an_error():
    """The seed command's HML keys all equal the defaults: given on the command line they still count."""
    from sgg.engine.methods import check_method_keys

    opts = seed_overrides()
    cfg = load_config(opts=opts)
    with pytest.raises(ConfigError) as e:
        check_method_keys(cfg, opts)
    for key in ("MODEL.USE_CONFIDENCE", "MODEL.DISTILL_TEMPERATURE", "SOLVER.LAMBDA_FOR_PARAM",
                "SOLVER.ALPHA_FOR_FISHER", "SOLVER.DISTILL_TYPE"):
        assert key in str(e.value)
    assert "given on the command line" in str(e.value)


def test_test_job_and_explicit_plain_runs_only_warn(caplog):
    from sgg.engine.methods import check_method_keys
    from sgg.engine.zoo import ZooCell, cell_overrides

    opts = seed_overrides()
    cfg = load_config(opts=opts)
    with caplog.at_level(logging.WARNING, logger="sgg"):
        check_method_keys(cfg, opts, job="test")  # relation_test_net with the training overrides
    assert "no effect on the test job" in caplog.text and "SOLVER.LAMBDA_FOR_PARAM" in caplog.text
    caplog.clear()
    # the zoo's plain cell: the shared overrides carry HML keys, the cell says MODEL.HML.ENABLED False
    zoo = ["MODEL.HML.NUM_COARSE", "3", *cell_overrides(ZooCell("MotifPredictor", "predcls", "plain"), "zoo")]
    with caplog.at_level(logging.WARNING, logger="sgg"):
        check_method_keys(load_config(opts=zoo), zoo)
    assert "trains without HML and ignores MODEL.HML.NUM_COARSE 3" in caplog.text


def test_stdg_key_without_stdg_is_an_error():
    from sgg.engine.methods import check_method_keys

    with pytest.raises(ConfigError) as e:
        check_method_keys(load_config(opts=["MODEL.STDG.FEATURE_WEIGHT", "1.0"]))
    assert "MODEL.STDG.FEATURE_WEIGHT 1.0" in str(e.value) and "MODEL.STDG.MODE" in str(e.value)
    opts = ["MODEL.STDG.MODE", "", "MODEL.STDG.FEATURE_WEIGHT", "1.0"]  # the STDG configs' RGB baseline
    check_method_keys(load_config(opts=opts), opts)


def test_relation_train_net_exits_nonzero_naming_the_key(cfg_file, tmp_path):
    out = str(tmp_path / "plain")
    proc = subprocess.run([sys.executable, os.path.join(REPO, "tools", "relation_train_net.py"),
                           "--config-file", cfg_file, "SOLVER.LAMBDA_FOR_PARAM", "2.0", "OUTPUT_DIR", out],
                          cwd=str(tmp_path), env=subprocess_env(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert "SOLVER.LAMBDA_FOR_PARAM 2.0" in proc.stderr and "MODEL.HML.ENABLED True" in proc.stderr
    assert not os.path.exists(os.path.join(out, "model_final.pth"))
