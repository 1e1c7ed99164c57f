import os
import textwrap

import pytest

from sgg.config import ConfigError, get_default_config, load_config, protocol_from_config

# The reference command of Scene-Graph-Benchmark.pytorch / HML (its overrides, as a user types them).
SGB_OPTS = [
    "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True",
    "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True",
    "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor",
    "SOLVER.IMS_PER_BATCH", "12",
    "TEST.IMS_PER_BATCH", "2",
    "DTYPE", "float16",
    "SOLVER.MAX_ITER", "50000",
    "SOLVER.VAL_PERIOD", "2000",
    "SOLVER.CHECKPOINT_PERIOD", "2000",
    "GLOVE_DIR", "/data/glove",
    "MODEL.PRETRAINED_DETECTOR_CKPT", "/ckpt/model_final.pth",
    "OUTPUT_DIR", "/out/motif-precls",
]


def test_sgb_command_overrides_apply():
    cfg = load_config(opts=SGB_OPTS)
    assert cfg.MODEL.ROI_RELATION_HEAD.USE_GT_BOX is True
    assert cfg.MODEL.ROI_RELATION_HEAD.PREDICTOR == "MotifPredictor"
    assert cfg.SOLVER.IMS_PER_BATCH == 12 and cfg.TEST.IMS_PER_BATCH == 2
    assert cfg.DTYPE == "float16"
    assert cfg.SOLVER.MAX_ITER == 50000
    assert cfg.GLOVE_DIR == "/data/glove"
    assert cfg.OUTPUT_DIR == "/out/motif-precls"
    assert protocol_from_config(cfg) == "predcls"
    assert cfg.is_frozen()


@pytest.mark.parametrize("box,label,mode", [(True, True, "predcls"), (True, False, "sgcls"), (False, False, "sgdet")])
def test_protocol(box, label, mode):
    cfg = load_config(opts=["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", str(box),
                            "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", str(label)])
    assert protocol_from_config(cfg) == mode


def test_predcls_without_gt_box_is_rejected():
    with pytest.raises(ConfigError, match="USE_GT_OBJECT_LABEL True needs USE_GT_BOX True"):
        load_config(opts=["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False",
                          "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True"])


def test_unknown_key_names_it_and_suggests():
    with pytest.raises(ConfigError) as e:
        load_config(opts=["MODEL.ROI_RELATION_HEAD.USE_GT_BOXES", "True"])
    msg = str(e.value)
    assert "MODEL.ROI_RELATION_HEAD.USE_GT_BOXES" in msg
    assert "MODEL.ROI_RELATION_HEAD.USE_GT_BOX" in msg.split("closest known keys:")[1]


def test_unknown_section_key_suggests_same_leaf():
    with pytest.raises(ConfigError, match="closest known keys:.*SOLVER.BASE_LR"):
        load_config(opts=["SOLVR.BASE_LR", "0.1"])


def test_wrong_type_names_key_and_expected_type():
    with pytest.raises(ConfigError, match=r"SOLVER.MAX_ITER expects int .*got str 'many'"):
        load_config(opts=["SOLVER.MAX_ITER", "many"])
    with pytest.raises(ConfigError, match=r"USE_GT_BOX expects a bool"):
        load_config(opts=["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "1"])
    with pytest.raises(ConfigError, match="SOLVER.IMS_PER_BATCH expects int"):
        load_config(opts=["SOLVER.IMS_PER_BATCH", "1.5"])


def test_int_is_accepted_for_float_and_scalar_for_tuple():
    cfg = load_config(opts=["SOLVER.BASE_LR", "1", "INPUT.MIN_SIZE_TRAIN", "600",
                            "DATASETS.TRAIN", "synthvg_tiny_train"])
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (600,)
    assert cfg.DATASETS.TRAIN == ("synthvg_tiny_train",)


def test_odd_override_list():
    with pytest.raises(ConfigError, match="KEY VALUE pairs"):
        load_config(opts=["SOLVER.MAX_ITER"])


def test_bad_dtype():
    with pytest.raises(ConfigError, match="DTYPE must be one of"):
        load_config(opts=["DTYPE", "float64"])


@pytest.mark.parametrize("key,value,fix", [
    ("SOLVER.MAX_ITER", "-5", "give a positive count"),
    ("SOLVER.MAX_ITER", "0", "give a positive count"),
    ("SOLVER.BASE_LR", "0", "give a positive learning rate"),
    ("SOLVER.BASE_LR", "-0.01", "give a positive learning rate"),
    ("SOLVER.IMS_PER_BATCH", "0", "images per iteration"),
    ("TEST.IMS_PER_BATCH", "0", "images per inference batch"),
    ("SOLVER.CHECKPOINT_PERIOD", "-1", "0 turns periodic checkpoints off"),
    ("SOLVER.VAL_PERIOD", "-1000", "0 turns periodic validation off"),
    ("SOLVER.WARMUP_ITERS", "-1", "0 turns the warm-up off"),
])
def test_invalid_solver_values_name_the_key_value_and_fix(key, value, fix):
    with pytest.raises(ConfigError) as e:
        load_config(opts=[key, value])
    msg = str(e.value)
    assert msg.startswith(f"{key} must be") and f"got {float(value) if 'LR' in key else int(value)}" in msg
    assert fix in msg


def test_solver_values_sgb_allows():
    # 0 periods turn checkpoints / validation off; steps beyond MAX_ITER never fire (as in SGB)
    cfg = load_config(opts=["SOLVER.CHECKPOINT_PERIOD", "0", "SOLVER.VAL_PERIOD", "0", "SOLVER.MAX_ITER", "4",
                            "SOLVER.SCHEDULE.TYPE", "WarmupMultiStepLR", "SOLVER.STEPS", "(10000, 16000)"])
    assert cfg.SOLVER.STEPS == (10000, 16000)
    with pytest.raises(ConfigError, match=r"SOLVER.STEPS must be increasing.*got \(16000, 10000\)"):
        load_config(opts=["SOLVER.SCHEDULE.TYPE", "WarmupMultiStepLR", "SOLVER.STEPS", "(16000, 10000)"])
    # unused by the plateau schedule (the default): not checked
    load_config(opts=["SOLVER.STEPS", "(16000, 10000)"])


def test_base_inheritance_and_override_order(tmp_path):
    (tmp_path / "base.yaml").write_text(textwrap.dedent("""
        SOLVER:
          BASE_LR: 0.5
          MAX_ITER: 100
        MODEL:
          ROI_RELATION_HEAD:
            PREDICTOR: MotifPredictor
    """))
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text(textwrap.dedent("""
        _BASE_: ../base.yaml
        SOLVER:
          MAX_ITER: 200
    """))
    cfg = load_config(str(tmp_path / "sub" / "child.yaml"), ["SOLVER.MAX_ITER", "300"])
    assert cfg.SOLVER.BASE_LR == 0.5  # from the base
    assert cfg.SOLVER.MAX_ITER == 300  # command line wins over child wins over base
    cfg = load_config(str(tmp_path / "sub" / "child.yaml"))
    assert cfg.SOLVER.MAX_ITER == 200


def test_yaml_unknown_key_names_file(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("SOLVER:\n  BASE_LRR: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(str(p))
    assert str(p) in str(e.value) and "SOLVER.BASE_LRR" in str(e.value)


def test_base_loop_and_missing_file(tmp_path):
    (tmp_path / "a.yaml").write_text("_BASE_: b.yaml\n")
    (tmp_path / "b.yaml").write_text("_BASE_: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        load_config(str(tmp_path / "a.yaml"))
    with pytest.raises(FileNotFoundError, match="config file not found"):
        load_config(str(tmp_path / "nope.yaml"))


def test_section_given_a_value(tmp_path):
    with pytest.raises(ConfigError, match="SOLVER is a section"):
        load_config(opts=["SOLVER", "3"])


def test_defaults_not_mutated_between_loads():
    load_config(opts=["SOLVER.MAX_ITER", "7"])
    assert get_default_config().SOLVER.MAX_ITER == 40000


def test_every_shipped_config_loads():
    import glob
    import os
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    files = sorted(glob.glob(os.path.join(root, "**", "*.yaml"), recursive=True))
    assert files, "configs/ should ship at least one YAML"
    for f in files:
        load_config(f)


def test_loading_a_config_imports_no_torch(tmp_path):
    """``sgg.config`` is plain yacs: loading every shipped config (all component keys declared)
    loads no torch, torchvision, h5py or OpenCV (checked in a fresh interpreter)."""
    import glob
    import subprocess
    import sys

    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    files = sorted(glob.glob(os.path.join(repo, "configs", "**", "*.yaml"), recursive=True))
    code = (
        "import sys\n"
        "from sgg.config import load_config\n"
        f"for f in {files!r}:\n"
        "    cfg = load_config(f)\n"
        "assert cfg.MODEL.ONESTAGE.BACKBONE and cfg.MODEL.HML.STAGE == 0 and cfg.MODEL.STDG.MODE == ''\n"
        "heavy = [m for m in ('torch', 'torchvision', 'h5py', 'cv2', 'timm') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"loading a config imported {out.stdout.strip()}"


def test_every_component_key_is_declared_in_the_defaults():
    """The component keys exist in a fresh default config (no import of the component needed)."""
    cfg = get_default_config()
    for key in ("MODEL.DETECTOR.BACKBONE_NORM", "MODEL.ROI_RELATION_HEAD.UNION_CHUNK_SIZE", "INPUT.LOAD_DEPTH",
                "SOLVER.OPTIMIZER", "SOLVER.SCHEDULE.MIN_LR_FACTOR", "MODEL.ONESTAGE.HEAD_WIDTH",
                "MODEL.HML.ENABLED", "SOLVER.LAMBDA_FOR_PARAM", "MODEL.STDG.TEACHER_WEIGHTS"):
        node = cfg
        for part in key.split("."):
            assert part in node, f"{key} is not declared"
            node = node[part]


@pytest.mark.parametrize("mode,boxes,labels", [("predcls", True, True), ("sgcls", True, False),
                                               ("sgdet", False, False)])
def test_protocol_says_which_ground_truth_each_mode_sees(mode, boxes, labels):
    from sgg.protocol import check_mode, gives_gt_boxes, gives_gt_labels, protocol_from_flags

    assert (gives_gt_boxes(mode), gives_gt_labels(mode)) == (boxes, labels)
    assert protocol_from_flags(boxes, labels) == mode
    with pytest.raises(ValueError, match="mode must be one of"):
        check_mode("detection")
