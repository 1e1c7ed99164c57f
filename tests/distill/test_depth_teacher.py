"""STDG depth teacher on tiny SynthVG: stage 1 (the one-stage model on the depth encoding), the
offset distillation, stage 2 (RGB student + frozen teacher: teacher untouched, not in the student's
checkpoint), RGB-only inference without depth maps, and the config errors."""
import copy
import json
import os
import shutil
import sys

import pytest
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "modeling"))

from two_stage_fixtures import DATASET, make_synthvg  # noqa: E402

from sgg.checkpoint import CheckpointError, Checkpointer  # noqa: E402
from sgg.config import ConfigError, load_config  # noqa: E402
from sgg.distill.depth_teacher import (  # noqa: E402
    DepthTeacherDistillation,
    FrozenTeacher,
    build_depth_teacher,
    masked_offset_mse,
    valid_cell_mask,
    validate_stdg_config,
)


def stdg_opts(data_dir, output_dir, stage, *extra):
    """A tiny SGDet one-stage model (R-18, 16-wide deformable trunks with BN, 96 px) in STDG ``stage``."""
    return [
        "MODEL.META_ARCHITECTURE", "OneStageSGG", "MODEL.DEVICE", "cpu", "SEED", "5",
        "OUTPUT_DIR", str(output_dir), "DATASETS.DATA_DIR", str(data_dir),
        "DATASETS.TRAIN", f'("{DATASET}_train",)', "DATASETS.VAL", f'("{DATASET}_val",)',
        "DATASETS.TEST", "()", "DATASETS.NUM_VAL_IMAGES", "2",
        "DATALOADER.NUM_WORKERS", "0", "DATALOADER.ASPECT_RATIO_GROUPING", "False",
        "MODEL.ONESTAGE.BACKBONE", "R-18", "MODEL.ONESTAGE.HEAD_WIDTH", "16", "MODEL.ONESTAGE.HEAD_NORM", "BN",
        "MODEL.ONESTAGE.OBJ_TRUNK", "deform", "MODEL.ONESTAGE.REL_TRUNK", "deform",
        "MODEL.ONESTAGE.REL_THRESHOLD", "0.05",
        "INPUT.TO_BGR255", "False", "INPUT.PIXEL_MEAN", "[0.485, 0.456, 0.406]",
        "INPUT.PIXEL_STD", "[0.229, 0.224, 0.225]",
        "INPUT.MIN_SIZE_TRAIN", "(96,)", "INPUT.MAX_SIZE_TRAIN", "96",
        "INPUT.MIN_SIZE_TEST", "96", "INPUT.MAX_SIZE_TEST", "96",
        "INPUT.LOAD_DEPTH", "True", "INPUT.DEPTH_ENCODING", "hha", "INPUT.DEPTH_SCALE", "0.001",
        "SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.001", "SOLVER.SCALE_LR_BY_BATCH", "False",
        "SOLVER.BACKBONE_PREFIX", "net.backbone.", "SOLVER.EMA_DECAY", "0.9",
        "SOLVER.IMS_PER_BATCH", "2", "TEST.IMS_PER_BATCH", "2", "SOLVER.TENSORBOARD", "False",
        "SOLVER.MAX_ITER", "2", "SOLVER.WARMUP_ITERS", "1", "SOLVER.STEPS", "(1,)",
        "SOLVER.CHECKPOINT_PERIOD", "2", "SOLVER.TO_VAL", "False", "SOLVER.LOG_PERIOD", "1",
        "MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "False", "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "False",
        "MODEL.STDG.MODE", stage, *extra,
    ]


def _rows(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _batch(cfg, dataset, n=2, is_train=True):
    from sgg.data.mapper import SceneGraphMapper

    mapper = SceneGraphMapper.from_config(cfg, is_train=is_train, mode="sgdet")
    return [mapper(dataset[i]) for i in range(n)]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("stdg_data"), num_images=16, seed=2)


@pytest.fixture(scope="module")
def depth_run(data_root, tmp_path_factory):
    """Stage 1: two iterations of the depth model through the relation job (training method
    "stdg"); its OUTPUT_DIR."""
    from sgg.engine.relation import train_relation

    out = tmp_path_factory.mktemp("stdg_depth")
    cfg = load_config(opts=stdg_opts(data_root, out, "depth"))
    res = train_relation(cfg)
    assert res["state"] == "completed"
    return cfg, str(out)


# ------------------------------------------------------------------------------------------------
# Stage 1: the depth model
# ------------------------------------------------------------------------------------------------
def test_depth_mode_trains_on_the_depth_encoding(data_root, depth_run, tmp_path):
    from sgg.engine.relation import build_relation_model, evaluate_split

    cfg, out = depth_run
    ckpt = torch.load(os.path.join(out, "model_final.pth"), map_location="cpu", weights_only=False)
    assert "ema" in ckpt and 'MODE: depth' in ckpt["config"]
    rows = _rows(os.path.join(out, "metrics.json"))
    assert rows[-1]["iteration"] == 2 and rows[-1]["loss_rel_heatmap"] > 0

    model, ds, _ = build_relation_model(load_config(opts=stdg_opts(data_root, tmp_path, "depth")))
    assert model.input_key == "depth"
    seen = []
    model.net.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    batch = _batch(cfg, ds)
    model.train()
    losses = model(batch)
    assert all(torch.isfinite(v) for v in losses.values()) and losses["loss_obj_heatmap"] > 0
    (x,) = seen
    for b, d in enumerate(batch):
        dep, img = d["depth"], d["image"]
        assert dep.shape == (3,) + tuple(img.shape[1:]) and dep.min() >= 0 and dep.max() <= 1
        h, w = dep.shape[1:]
        # the network's input is the encoding itself (mean 0, std 1), zero-padded; not the image
        assert torch.equal(x[b, :, :h, :w], dep) and (x[b, :, h:] == 0).all() and (x[b, :, :, w:] == 0).all()
        mean, std = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)
        assert not torch.allclose(x[b, :, :h, :w], (img.float() / 255 - mean) / std, atol=0.1)
    with pytest.raises(KeyError, match="INPUT.LOAD_DEPTH"):
        model([{k: v for k, v in d.items() if k != "depth"} for d in batch])
    # evaluation of the depth model reads the depth encoding too
    metrics = evaluate_split(cfg, model, f"{DATASET}_val", save=False)
    assert "R@50" in metrics and metrics["mode"] == "sgdet"


# ------------------------------------------------------------------------------------------------
# The offset distillation loss
# ------------------------------------------------------------------------------------------------
def test_masked_offset_mse_hand_values():
    t = torch.tensor([[0.5, -2.0], [20.0, 1.0]]).view(1, 4, 1, 1).expand(1, 4, 2, 3).contiguous()
    s = t.clone().requires_grad_(True)
    zero = masked_offset_mse([s], [t], mask=10.0)
    assert zero.item() == 0.0
    s2 = t.clone()
    s2[0, 0] += 1.0  # kept entries: 3 channels x 6 cells = 18, one channel off by 1 on 6 cells
    s2[0, 2] += 100.0  # |teacher| = 20 >= 10: masked, whatever the student does
    assert masked_offset_mse([s2], [t], mask=10.0).item() == pytest.approx(6 / 18)
    # cells of the padding do not count: image 0 is 16 px wide (1 column), the grid has 3 columns
    valid = valid_cell_mask([(32, 16)], (2, 3), 16)
    assert valid.shape == (1, 1, 2, 3) and valid[0, 0].tolist() == [[True, False, False]] * 2
    s3 = t.clone()
    s3[0, 0, :, 1:] += 1.0  # differs only in the padding
    assert masked_offset_mse([s3], [t], mask=10.0, valid=valid).item() == 0.0
    s3[0, 1, 0, 0] += 2.0
    assert masked_offset_mse([s3], [t], mask=10.0, valid=valid).item() == pytest.approx(4 / 6)
    # gradient flows to the student only
    s.data[0, 0] += 1.0
    loss = masked_offset_mse([s], [t], mask=10.0)
    loss.backward()
    assert loss.item() > 0 and s.grad[0, 0].abs().sum() > 0 and s.grad[0, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="OBJ_TRUNK"):
        masked_offset_mse([s], [], mask=10.0)


def test_distillation_term_on_the_teacher_fields(data_root, depth_run, tmp_path):
    from sgg.engine.relation import build_relation_model

    _, depth_out = depth_run
    cfg = load_config(opts=stdg_opts(data_root, tmp_path, "combine", "MODEL.STDG.TEACHER_WEIGHTS", depth_out))
    student, ds, _ = build_relation_model(cfg)
    distill = DepthTeacherDistillation.from_config(cfg, student, ds.num_classes, ds.num_predicates)
    batch = _batch(cfg, ds)
    fields, _ = distill.teacher(batch)
    t_off = fields["offsets"]
    assert len(t_off) == 4 and all(o.shape[1] == 18 for o in t_off)  # 2 object + 2 relation deform layers
    assert max(o.abs().max() for o in t_off) > 0  # the trained teacher's offsets are not all 0

    def call(student_offsets, mask=None):
        if mask is not None:
            distill.offset_mask = mask
        distill.tap.record = {**fields, "offsets": student_offsets}  # as if the student produced these
        return distill(student, batch, {})

    out = call([o.clone() for o in t_off], mask=10.0)
    assert out["loss_offset_distill"].item() == 0.0  # the student's offsets equal the teacher's
    assert {"teacher_obj_heatmap", "teacher_rel_heatmap", "teacher_rel_vector"} <= set(out)
    assert out["teacher_obj_heatmap"].item() > 0 and not any(k.startswith("loss_") and k != "loss_offset_distill"
                                                              for k in out)
    moved = [o.clone() for o in t_off]
    moved[3][0, 5] += 0.5
    assert call(moved)["loss_offset_distill"].item() > 0
    # entries where |teacher offset| >= OFFSET_MASK are excluded
    cut = float(t_off[0].abs().flatten().median())
    big = t_off[0].abs() >= cut
    masked_only = [o.clone() for o in t_off]
    masked_only[0][big] += 3.0
    assert call(masked_only, mask=cut)["loss_offset_distill"].item() == 0.0
    masked_only[0][~big] += 3.0
    assert call(masked_only, mask=cut)["loss_offset_distill"].item() > 0
    with pytest.raises(RuntimeError, match="no training forward"):
        distill(student, batch, {})  # nothing recorded
    distill.detach()


def test_frozen_teacher_cannot_be_switched_to_training(data_root, depth_run):
    cfg, depth_out = depth_run
    from sgg.data.build import build_dataset

    ds = build_dataset(cfg, cfg.DATASETS.TRAIN[0], is_train=True)
    teacher = build_depth_teacher(cfg, ds.num_classes, ds.num_predicates, weights=depth_out)
    before = copy.deepcopy(teacher.state_dict())
    assert not any(p.requires_grad for p in teacher.parameters())
    teacher.train()
    assert not any(m.training for m in teacher.modules())
    teacher.model.train()  # even the inner model flipped directly: every forward re-asserts eval
    batch = _batch(cfg, ds)
    fields, sizes = teacher(batch)
    assert not fields["obj_logits"].requires_grad and len(sizes) == 2
    assert all(torch.equal(v, before[k]) for k, v in teacher.state_dict().items())
    # the EMA weights of the stage-1 checkpoint were loaded
    ckpt = torch.load(os.path.join(depth_out, "model_final.pth"), map_location="cpu", weights_only=False)
    ema, raw = ckpt["ema"]["model"], ckpt["model"]
    key = "net.rel_head.logits.weight"
    assert torch.equal(teacher.model.state_dict()[key], ema[key]) and not torch.equal(ema[key], raw[key])


# ------------------------------------------------------------------------------------------------
# Stage 2: combine
# ------------------------------------------------------------------------------------------------
def test_combine_trains_with_a_frozen_teacher_and_infers_rgb_only(data_root, depth_run, tmp_path, monkeypatch):
    from sgg.engine.methods.stdg import inference_config
    from sgg.engine.relation import build_relation_model, test_relation, train_relation

    _, depth_out = depth_run
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    out = tmp_path / "combine"
    cfg = load_config(opts=stdg_opts(data, out, "combine", "MODEL.STDG.TEACHER_WEIGHTS", depth_out,
                                     "SOLVER.MAX_ITER", "3", "DATASETS.TEST", f'("{DATASET}_test",)'))

    made = []
    original = DepthTeacherDistillation.from_config.__func__

    def spy(cls, *args, **kwargs):
        d = original(cls, *args, **kwargs)
        made.append((d, copy.deepcopy(d.teacher.state_dict())))
        return d

    monkeypatch.setattr(DepthTeacherDistillation, "from_config", classmethod(spy))
    res = train_relation(cfg)
    assert res["state"] == "completed" and "R@50" in res[f"{DATASET}_test"]

    (distill, before), = made
    teacher = distill.teacher
    after = teacher.state_dict()
    bn = [k for k in after if k.endswith(("running_mean", "running_var", "num_batches_tracked"))]
    assert len(bn) > 20 and set(after) == set(before)
    for k, v in after.items():  # parameters AND BN statistics bitwise unchanged by 3 training steps
        assert torch.equal(v, before[k]), k
    assert not any(m.training for m in teacher.modules()) and distill.tap is None  # detached after training

    rows = _rows(out / "metrics.json")
    assert [r["iteration"] for r in rows if "loss_offset_distill" in r] == [1, 2, 3]
    assert rows[0]["loss_offset_distill"] > 0  # the student starts with zero offsets, the teacher's are not
    assert all("teacher_obj_heatmap" in r and "teacher_rel_heatmap" in r for r in rows if "total_loss" in r)
    assert all(r["total_loss"] == pytest.approx(sum(v for k, v in r.items() if k.startswith("loss")), rel=1e-4)
               for r in rows if "total_loss" in r)  # the teacher's losses are logged, never summed

    # the student's checkpoint is a plain one-stage model: same keys, no teacher inside
    plain, _, _ = build_relation_model(load_config(opts=stdg_opts(data, tmp_path / "plain", "",
                                                                 "INPUT.LOAD_DEPTH", "False")))
    ckpt = torch.load(out / "model_final.pth", map_location="cpu", weights_only=False)
    assert set(ckpt["model"]) == set(plain.state_dict()) and len(ckpt["model"]) == len(plain.state_dict())
    assert set(ckpt["ema"]["model"]) == set(plain.state_dict())
    assert not any("teacher" in k for k in ckpt["model"])

    # RGB-only inference: no depth map is read
    shutil.rmtree(data / DATASET / "depth")
    again = test_relation(inference_config(cfg))[f"{DATASET}_test"]
    assert again["R@50"] == pytest.approx(res[f"{DATASET}_test"]["R@50"])


def test_config_errors_name_the_keys(data_root, depth_run, tmp_path):
    from sgg.engine.relation import build_relation_model, train_relation

    _, depth_out = depth_run
    conv = load_config(opts=stdg_opts(data_root, tmp_path, "combine", "MODEL.STDG.TEACHER_WEIGHTS", depth_out,
                                      "MODEL.ONESTAGE.OBJ_TRUNK", "conv", "MODEL.ONESTAGE.REL_TRUNK", "conv"))
    with pytest.raises(ConfigError, match="MODEL.ONESTAGE.OBJ_TRUNK.*MODEL.ONESTAGE.REL_TRUNK"):
        validate_stdg_config(conv)
    with pytest.raises(ConfigError, match="REL_TRUNK"):
        train_relation(conv)
    with pytest.raises(ConfigError, match="MODEL.STDG.TEACHER_WEIGHTS"):
        validate_stdg_config(load_config(opts=stdg_opts(data_root, tmp_path, "combine")))
    with pytest.raises(ConfigError, match="INPUT.LOAD_DEPTH"):
        validate_stdg_config(load_config(opts=stdg_opts(data_root, tmp_path, "depth", "INPUT.DEPTH_ENCODING", "")))
    with pytest.raises(ConfigError, match="MODEL.STDG.MODE"):
        validate_stdg_config(load_config(opts=stdg_opts(data_root, tmp_path, "teacher")))

    cfg = load_config(opts=stdg_opts(data_root, tmp_path, "combine", "MODEL.STDG.TEACHER_WEIGHTS",
                                     str(tmp_path / "nowhere")))
    student, ds, _ = build_relation_model(cfg)
    with pytest.raises(FileNotFoundError, match="MODEL.STDG.TEACHER_WEIGHTS"):
        DepthTeacherDistillation.from_config(cfg, student, ds.num_classes, ds.num_predicates)
    # an RGB checkpoint is not a depth teacher
    rgb_cfg = load_config(opts=stdg_opts(data_root, tmp_path / "rgb", "", "INPUT.LOAD_DEPTH", "False"))
    rgb, _, _ = build_relation_model(rgb_cfg)
    Checkpointer(rgb, str(tmp_path / "rgb"), cfg=rgb_cfg).save("model_final")
    with pytest.raises(CheckpointError, match="not \"depth\""):
        build_depth_teacher(cfg, ds.num_classes, ds.num_predicates, weights=str(tmp_path / "rgb"))
    # another architecture
    wide = load_config(opts=stdg_opts(data_root, tmp_path, "combine", "MODEL.STDG.TEACHER_WEIGHTS", depth_out,
                                      "MODEL.ONESTAGE.HEAD_WIDTH", "8"))
    with pytest.raises(CheckpointError, match="shape"):
        build_depth_teacher(wide, ds.num_classes, ds.num_predicates)
    assert isinstance(build_depth_teacher(cfg, ds.num_classes, ds.num_predicates, weights=depth_out), FrozenTeacher)
