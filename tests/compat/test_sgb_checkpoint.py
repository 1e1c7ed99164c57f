"""Files Scene-Graph-Benchmark users already have: the maskrcnn_benchmark detector checkpoint (key
mapping both ways, loading through load_detector_checkpoint / the relation model / the converter
script) and the zero-shot triplet file. Tiny R-18-FPN and ResNeXt-50 (2 groups x 8) detectors with
16 FPN channels on 64x96 images, CPU, one thread. (GloVe .txt == SGB .pt cache is pinned in
tests/modeling/test_motifs.py::test_glove_txt_and_pt_cache_identical.)"""
import importlib.util
import logging
import os
import subprocess
import sys
from collections import OrderedDict

import numpy as np
import pytest
import torch
from torchvision.ops import FrozenBatchNorm2d

from sgg.checkpoint import CheckpointError, load_checkpoint_file
from sgg.config import get_default_config, load_config
from sgg.data.datasets import load_zeroshot_triplets
from sgg.evaluation import evaluate_relations
from sgg.modeling.detector import build_detector
from sgg.modeling.pretrained import load_detector_checkpoint, load_pretrained
from sgg.checkpoint.sgb import (
    UnplacedTensorsError,
    convert_checkpoint_file,
    is_sgb_checkpoint,
    sgb_convention_mismatches,
    sgb_to_sgg_state_dict,
    sgg_to_sgb_state_dict,
)

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NUM_CLASSES = 6
SGB_NUMERICS = ("MODEL.DETECTOR.FROZEN_BN_EPS", 0.0, "MODEL.DETECTOR.LEGACY_BOX_CODING", True,
                "MODEL.DETECTOR.ALIGNED_ROI", False)
TINY = ("MODEL.BACKBONE.CONV_BODY", "R-18-FPN", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 16,
        "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32, "MODEL.ROI_BOX_HEAD.NUM_CLASSES", NUM_CLASSES,
        "MODEL.RPN.PRE_NMS_TOP_N_TEST", 300, "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", 100)
# ResNeXt bottlenecks as SGB's X-101-32x8d (grouped 3x3, stride in the 3x3), with tiny widths.
TINY_X = TINY + ("MODEL.BACKBONE.CONV_BODY", "R-50-FPN", "MODEL.RESNETS.NUM_GROUPS", 2,
                 "MODEL.RESNETS.WIDTH_PER_GROUP", 8, "MODEL.RESNETS.STRIDE_IN_1X1", False)
ATTRIBUTE_KEY = "roi_heads.attribute.feature_extractor.fc6.weight"
ANCHOR_KEY = "rpn.anchor_generator.cell_anchors.0"


pytestmark = pytest.mark.usefixtures("one_thread")


def cfg_of(*opts):
    cfg = get_default_config()
    cfg.merge_from_list(list(opts))
    return cfg


def detector(opts=TINY + SGB_NUMERICS, seed=0, randomize_bn=True):
    """A random detector; with ``randomize_bn`` its frozen-BN buffers are random too (they start
    as the identity whatever the seed, which would hide a wrong BN mapping)."""
    torch.manual_seed(seed)
    model = build_detector(cfg_of(*opts)).eval()
    if randomize_bn:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, FrozenBatchNorm2d):
                    for buf, (scale, offset) in ((m.weight, (1, 0.5)), (m.running_var, (1, 0.5))):
                        buf.copy_(torch.rand(buf.shape, generator=g) * scale + offset)
                    for buf in (m.bias, m.running_mean):
                        buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
    return model


def write_sgb_file(model, path):
    """``model`` saved as maskrcnn_benchmark would: ``module.`` names, an attribute head and an
    anchor buffer, optimizer/scheduler/iteration, torch's legacy (pre-1.6) file format."""
    state = OrderedDict(("module." + k, v) for k, v in sgg_to_sgb_state_dict(model.state_dict()).items())
    state["module." + ATTRIBUTE_KEY] = torch.randn(8, 16 * 49)
    state["module." + ANCHOR_KEY] = torch.randn(4, 4)
    torch.save({"model": state, "optimizer": {}, "scheduler": {}, "iteration": 0}, path,
               _use_new_zipfile_serialization=False)
    return path


def image(seed=0):
    g = torch.Generator().manual_seed(seed)
    return [{"image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8)}]


def maskrcnn_benchmark_keys(blocks=(3, 4, 6, 3)):
    """The key set of a maskrcnn_benchmark ResNet-FPN Faster R-CNN, written from specs/compat.md."""
    bn = ("weight", "bias", "running_mean", "running_var")
    keys = {"backbone.body.stem.conv1.weight"} | {f"backbone.body.stem.bn1.{p}" for p in bn}
    for stage, n in enumerate(blocks, 1):
        for i in range(n):
            pre = f"backbone.body.layer{stage}.{i}."
            keys |= {pre + f"conv{c}.weight" for c in (1, 2, 3)}
            keys |= {pre + f"bn{c}.{p}" for c in (1, 2, 3) for p in bn}
            if i == 0:
                keys |= {pre + "downsample.0.weight"} | {pre + f"downsample.1.{p}" for p in bn}
    for lvl in range(1, 5):
        keys |= {f"backbone.fpn.fpn_inner{lvl}.{p}" for p in ("weight", "bias")}
        keys |= {f"backbone.fpn.fpn_layer{lvl}.{p}" for p in ("weight", "bias")}
    for m in ("rpn.head.conv", "rpn.head.cls_logits", "rpn.head.bbox_pred", "roi_heads.box.feature_extractor.fc6",
              "roi_heads.box.feature_extractor.fc7", "roi_heads.box.predictor.cls_score",
              "roi_heads.box.predictor.bbox_pred"):
        keys |= {f"{m}.weight", f"{m}.bias"}
    return keys


# ---------------------------------------------------------------------------------------- key mapping
def test_key_names_are_maskrcnn_benchmark_and_map_back_exactly():
    model = detector(TINY_X + SGB_NUMERICS, randomize_bn=False)
    sd = model.state_dict()
    sgb = sgg_to_sgb_state_dict(sd)
    assert set(sgb) == maskrcnn_benchmark_keys()
    # same tensors, no re-layout; FPN level i is fed by stage i (C2..C5)
    assert sgb["backbone.fpn.fpn_inner1.weight"].shape[1] == 256
    assert sgb["backbone.fpn.fpn_inner4.weight"].shape[1] == 2048
    # torchvision >= 0.13 names RPNHead's conv 'conv.0.0', older versions 'conv'
    assert sgb["rpn.head.conv.weight"] is sd.get("rpn.head.conv.0.0.weight", sd.get("rpn.head.conv.weight"))
    assert sgb["roi_heads.box.predictor.bbox_pred.weight"].shape == (NUM_CLASSES * 4, 32)
    assert sgb["backbone.body.layer2.0.conv2.weight"].shape == (32, 16, 3, 3)  # grouped 3x3: 32 / 2 groups
    assert is_sgb_checkpoint(sgb) and is_sgb_checkpoint({"model": {"module." + k: v for k, v in sgb.items()}})
    assert not is_sgb_checkpoint(sd) and not is_sgb_checkpoint({"model": sd})

    back, report = sgb_to_sgg_state_dict(sgb, sd)
    assert list(back) == list(sd) and all(back[k] is sd[k] for k in sd)
    assert len(report["mapped"]) == len(sd) and report["skipped"] == [] and report["missing"] == []
    assert ("backbone.body.stem.bn1.running_var", "backbone.body.bn1.running_var") in report["mapped"]
    # without a model: the names of this torchvision, nothing checked
    assert set(sgb_to_sgg_state_dict(sgb)[0]) == set(sd)


def test_unknown_and_missing_keys_are_reported():
    sd = detector(randomize_bn=False).state_dict()
    sgb = sgg_to_sgb_state_dict(sd)
    del sgb["roi_heads.box.feature_extractor.fc7.bias"]
    sgb.update({ATTRIBUTE_KEY: torch.zeros(1), ANCHOR_KEY: torch.zeros(4, 4),
                "roi_heads.relation.predictor.rel_compress.weight": torch.zeros(1)})
    out, report = sgb_to_sgg_state_dict({"model": sgb}, sd)
    assert report["skipped"] == [ATTRIBUTE_KEY, "roi_heads.relation.predictor.rel_compress.weight"]  # anchors ignored
    assert report["missing"] == ["roi_heads.box_head.fc7.bias"]
    assert ANCHOR_KEY not in out and len(out) == len(sd) - 1
    # sgg -> SGB refuses keys SGB has no name for, naming them
    with pytest.raises(CheckpointError, match=r"detector\.backbone\.body\.conv1\.weight.*|prefix 'detector\.'"):
        sgg_to_sgb_state_dict({"detector." + k: v for k, v in sd.items()})
    assert set(sgg_to_sgb_state_dict({"detector." + k: v for k, v in sd.items()}, prefix="detector.")) == set(
        sgg_to_sgb_state_dict(sd))


# ---------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("opts", [TINY + SGB_NUMERICS, TINY_X + SGB_NUMERICS], ids=["R-18", "X-50-2x8d"])
def test_sgb_file_loads_with_identical_detections(tmp_path, opts):
    source = detector(opts, seed=0)
    path = str(write_sgb_file(source, tmp_path / "model_final.pth"))
    target = detector(opts, seed=1)
    assert not torch.equal(target.state_dict()["roi_heads.box_head.fc6.weight"],
                           source.state_dict()["roi_heads.box_head.fc6.weight"])
    report = load_detector_checkpoint(target, path)
    assert report["format"] == "sgb"
    assert report["skipped"] == [ATTRIBUTE_KEY] and report["missing"] == []
    assert len(report["loaded"]) == len(source.state_dict())
    for k, v in source.state_dict().items():
        assert torch.equal(target.state_dict()[k], v), k
    with torch.no_grad():
        a, b = source(image())[0], target(image())[0]
    assert len(a) > 0
    assert torch.equal(a.boxes.tensor, b.boxes.tensor) and torch.equal(a.labels, b.labels)
    assert torch.equal(a.scores, b.scores)


def test_shape_mismatch_names_both_keys_shapes_and_fix(tmp_path):
    source = detector(randomize_bn=False)
    path = write_sgb_file(source, tmp_path / "model_final.pth")
    target = detector(TINY + SGB_NUMERICS + ("MODEL.ROI_BOX_HEAD.NUM_CLASSES", NUM_CLASSES + 1), randomize_bn=False)
    with pytest.raises(CheckpointError) as info:
        load_detector_checkpoint(target, str(path))
    msg = str(info.value)
    for part in ("'roi_heads.box.predictor.cls_score.weight' -> 'roi_heads.box_predictor.cls_score.weight'",
                 "checkpoint (6, 32), sgg model (7, 32)", "roi_heads.box.predictor.bbox_pred.weight",
                 "(24, 32)", "(28, 32)", f"MODEL.ROI_BOX_HEAD.NUM_CLASSES {NUM_CLASSES}"):
        assert part in msg, (part, msg)


def test_directory_whole_model_checkpoint_and_convention_warning(tmp_path, caplog):
    source = detector()
    run = tmp_path / "run"
    run.mkdir()
    write_sgb_file(source, run / "model_0002000.pth")
    (run / "last_checkpoint").write_text(str(run / "model_0002000.pth"))
    # SGB's test command passes the training OUTPUT_DIR as MODEL.PRETRAINED_DETECTOR_CKPT
    target = detector(seed=1)
    assert load_detector_checkpoint(target, str(run))["format"] == "sgb"
    assert torch.equal(target.state_dict()["backbone.body.bn1.running_var"],
                       source.state_dict()["backbone.body.bn1.running_var"])
    with pytest.raises(FileNotFoundError, match=r"missing\.pth.*MODEL\.PRETRAINED_DETECTOR_CKPT"):
        load_detector_checkpoint(target, str(tmp_path / "missing.pth"))
    # a whole sgg relation-model checkpoint: its detector.* tensors
    whole = tmp_path / "relation.pth"
    torch.save({"model": {**{"detector." + k: v for k, v in source.state_dict().items()},
                          "relation_head.predictor.w": torch.zeros(2)}}, whole)
    target = detector(seed=2)
    report = load_detector_checkpoint(target, str(whole))
    assert report["format"] == "sgg" and not report["missing"] and not report["unexpected"]
    assert torch.equal(target.state_dict()["roi_heads.box_head.fc7.weight"],
                       source.state_dict()["roi_heads.box_head.fc7.weight"])
    # an SGB file into a detector without SGB's numeric conventions: one warning per config key
    plain = detector(TINY, seed=3, randomize_bn=False)
    assert sgb_convention_mismatches(detector(randomize_bn=False)) == []
    with caplog.at_level(logging.WARNING, logger="sgg"):
        load_detector_checkpoint(plain, str(run / "model_0002000.pth"))
    text = "\n".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    for key in ("MODEL.DETECTOR.FROZEN_BN_EPS 0.0", "MODEL.DETECTOR.LEGACY_BOX_CODING True",
                "MODEL.DETECTOR.ALIGNED_ROI False"):
        assert key in text


def test_relation_model_from_sgb_checkpoint_copies_fc6_fc7(tmp_path):
    from sgg.modeling.meta_arch import build_sgg_model

    ckpt = tmp_path / "model_final.pth"
    opts = [str(x) for x in TINY + SGB_NUMERICS] + [
        "MODEL.DEVICE", "cpu", "GLOVE_DIR", str(tmp_path / "no_glove"), "OUTPUT_DIR", str(tmp_path / "out"),
        "MODEL.PRETRAINED_DETECTOR_CKPT", str(ckpt),
        "MODEL.ROI_RELATION_HEAD.PREDICTOR", "MotifPredictor",
        "MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM", "16", "MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM", "24",
        "MODEL.ROI_RELATION_HEAD.EMBED_DIM", "8",
    ]
    cfg = load_config(opts=opts)
    torch.manual_seed(5)
    write_sgb_file(build_detector(cfg, num_classes=NUM_CLASSES), ckpt)
    sgb = torch.load(ckpt, weights_only=True)["model"]
    torch.manual_seed(6)
    model = build_sgg_model(cfg, None, NUM_CLASSES, 4)
    assert load_pretrained(model, cfg)["detector"] == str(ckpt)  # the load step reads the SGB file
    head = model.relation_head
    for ext in (head.box_feature_extractor, head.union_feature_extractor):
        for fc in ("fc6", "fc7"):
            for p in ("weight", "bias"):
                expected = sgb[f"module.roi_heads.box.feature_extractor.{fc}.{p}"]
                assert torch.equal(getattr(getattr(ext.head, fc), p).detach(), expected), (fc, p)
        assert ext.head is not model.detector.box_head  # own copies, trained with the relation head
    assert torch.equal(model.detector.box_predictor.cls_score.weight.detach(),
                       sgb["module.roi_heads.box.predictor.cls_score.weight"])


# ---------------------------------------------------------------------------------------- converter
def _script_main():
    spec = importlib.util.spec_from_file_location("convert_sgb_checkpoint",
                                                  os.path.join(REPO, "tools", "convert_sgb_checkpoint.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


def test_converter_script_round_trips(tmp_path, capsys):
    source = detector()
    sgb_path = write_sgb_file(source, tmp_path / "model_final.pth")
    config = tmp_path / "detector.yaml"
    config.write_text(cfg_of(*TINY, *SGB_NUMERICS).dump())
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    script = os.path.join(REPO, "tools", "convert_sgb_checkpoint.py")

    sgg_path = tmp_path / "converted.pth"
    fwd = subprocess.run([sys.executable, script, "--input", str(sgb_path), "--output", str(sgg_path),
                          "--config-file", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert fwd.returncode == 0, fwd.stderr
    n = len(source.state_dict())
    assert f"{n} tensors mapped, 1 skipped, 0 missing" in fwd.stdout and ATTRIBUTE_KEY in fwd.stdout
    converted = torch.load(sgg_path, weights_only=True)
    assert set(converted) == {"model"} and set(converted["model"]) == set(source.state_dict())

    # the way back in-process (one interpreter start is ~6 s on a busy 2-core machine)
    back_path = tmp_path / "back_sgb.pth"
    assert _script_main()(["--reverse", "--input", str(sgg_path), "--output", str(back_path)]) == 0
    assert f"{n} tensors mapped, 0 skipped" in capsys.readouterr().out
    original = torch.load(sgb_path, weights_only=True)["model"]
    back = torch.load(back_path, weights_only=True)["model"]
    expected = {k[len("module."):]: v for k, v in original.items()
                if k not in ("module." + ATTRIBUTE_KEY, "module." + ANCHOR_KEY)}
    assert set(back) == set(expected)
    assert all(torch.equal(back[k], v) for k, v in expected.items())


def test_converter_errors_name_the_file_key_and_fix(tmp_path, capsys):
    main = _script_main()
    sgb_path = write_sgb_file(detector(randomize_bn=False), tmp_path / "model_final.pth")
    out = str(tmp_path / "out.pth")

    assert main(["--input", str(tmp_path / "nope.pth"), "--output", out]) == 1
    assert "checkpoint file not found" in capsys.readouterr().err and not os.path.exists(out)

    (tmp_path / "notes.pth").write_text("not a checkpoint")
    assert main(["--input", str(tmp_path / "notes.pth"), "--output", out]) == 1
    assert "notes.pth" in capsys.readouterr().err

    opts = [str(x) for x in TINY] + ["MODEL.ROI_BOX_HEAD.NUM_CLASSES", "151"]
    assert main(["--input", str(sgb_path), "--output", out, *opts]) == 1
    err = capsys.readouterr().err
    assert "roi_heads.box.predictor.cls_score.weight" in err and "(151, 32)" in err
    assert f"MODEL.ROI_BOX_HEAD.NUM_CLASSES {NUM_CLASSES}" in err and not os.path.exists(out)

    assert main(["--reverse", "--input", str(sgb_path), "--output", out]) == 1
    assert "drop --reverse" in capsys.readouterr().err


def test_converter_refuses_a_backbone_of_another_depth(tmp_path, capsys):
    """SGB's X-101 file with a config for a shallower ResNeXt: every shape of the common blocks
    matches, but layer3's blocks 6..22 (17 x 15 = 255 tensors) have no place. The converter exits 1
    and writes nothing, naming the count, keys and the config keys; --allow-unplaced writes the
    partial file. (Tiny ResNeXts, 2 groups x 8.)"""
    source = detector(TINY_X + SGB_NUMERICS + ("MODEL.BACKBONE.CONV_BODY", "R-101-FPN"), randomize_bn=False)
    sgb_path = write_sgb_file(source, tmp_path / "model_final.pth")
    config = tmp_path / "x50.yaml"
    config.write_text(cfg_of(*TINY_X, *SGB_NUMERICS).dump())
    out = tmp_path / "converted.pth"
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    script = os.path.join(REPO, "tools", "convert_sgb_checkpoint.py")
    run = subprocess.run([sys.executable, script, "--input", str(sgb_path), "--output", str(out),
                          "--config-file", str(config)], capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode != 0, run.stdout
    assert not out.exists() and not os.path.exists(str(out) + ".sha256")
    err = run.stderr
    for part in ("255 tensors", "backbone.body.layer3.6.conv1.weight", "ResNeXt-101 2x8d",
                 "MODEL.BACKBONE.CONV_BODY R-101-FPN MODEL.RESNETS.NUM_GROUPS 2 MODEL.RESNETS.WIDTH_PER_GROUP 8",
                 "MODEL.RESNETS.STRIDE_IN_1X1", "SGB_COMPAT_OPTS", "--allow-unplaced", "Nothing was written"):
        assert part in err, (part, err[-3000:])

    # explicitly asked for: the partial file (in-process; an interpreter start costs ~6 s here)
    main = _script_main()
    assert main(["--input", str(sgb_path), "--output", str(out), "--config-file", str(config),
                 "--allow-unplaced"]) == 0
    captured = capsys.readouterr()
    assert "warning: --allow-unplaced: 255 tensors" in captured.err and f"wrote {out}" in captured.out
    converted = load_checkpoint_file(str(out))["model"]  # verified against its .sha256
    assert os.path.isfile(str(out) + ".sha256")
    x50 = detector(TINY_X + SGB_NUMERICS, randomize_bn=False).state_dict()
    assert set(converted) == set(x50)
    assert not any(k.startswith("backbone.body.layer3.6.") for k in converted)

    # without a config, keys no rule knows (here a mask head) are unplaced too; known heads are not
    state = torch.load(sgb_path, weights_only=True)
    state["model"]["module.roi_heads.mask.feature_extractor.mask_fcn1.weight"] = torch.zeros(2)
    torch.save(state, tmp_path / "with_mask.pth")
    with pytest.raises(UnplacedTensorsError, match=r"1 tensors .*roi_heads\.mask\.feature_extractor"):
        convert_checkpoint_file(str(tmp_path / "with_mask.pth"), str(tmp_path / "m.pth"))
    assert not (tmp_path / "m.pth").exists()
    report = convert_checkpoint_file(str(sgb_path), str(tmp_path / "m.pth"))  # attribute head, anchors: fine
    assert report["unplaced"] == [] and report["skipped"] == [ATTRIBUTE_KEY]


# ---------------------------------------------------------------------------------------- zero-shot
def test_sgb_zeroshot_file_gives_the_same_zR(tmp_path):
    triplets = [[1, 2, 1], [2, 3, 2], [3, 3, 3]]  # (subject class, object class, predicate), 1-based
    path = tmp_path / "zeroshot_triplet.pytorch"
    torch.save(torch.tensor(triplets, dtype=torch.long), path, _use_new_zipfile_serialization=False)
    loaded = load_zeroshot_triplets(str(path))
    assert loaded.dtype == np.int64 and loaded.tolist() == triplets

    boxes = np.array([[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], np.float32)
    gt = {"boxes": boxes, "labels": np.array([1, 2, 3]), "relations": np.array([[0, 1, 1], [1, 2, 2]])}
    other = dict(gt, relations=np.array([[2, 0, 1]]))  # triplet (3, 1, 1): not zero-shot
    pred = {"boxes": boxes, "labels": gt["labels"], "scores": np.ones(3, np.float32),
            "rel_pairs": np.array([[0, 1], [1, 2]]),
            # pair 0 -> predicate 1 (right); pair 1 -> predicate 3 first, predicate 2 second
            "rel_scores": np.array([[0, .9, .05, .05], [0, .1, .3, .6]], np.float32)}
    from_file = evaluate_relations([gt, other], [pred, pred], "predcls", 3, zeroshot_triplets=loaded)
    from_list = evaluate_relations([gt, other], [pred, pred], "predcls", 3, zeroshot_triplets=triplets)
    zkeys = [k for k in from_list if "zR@" in k]
    assert len(zkeys) == 6 and all(from_file[k] == from_list[k] for k in zkeys)
    # graph constraint: 1 of the 2 zero-shot rows of image 0 is hit; no constraint: both
    assert from_file["zR@20"] == 0.5 and from_file["ngzR@20"] == 1.0
