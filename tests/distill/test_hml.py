"""HML: hierarchy, stage-1 targets, class-balanced weights, Fisher, anchoring, distillation, stage
files, config, and the pieces on a real (tiny) RelationHead with MotifPredictor."""
import copy
import json
import math
import logging
import os
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from sgg.config import ConfigError, load_config
from sgg.data.synthvg import predicate_hierarchy
from sgg.distill import (
    HIERARCHY_FILE,
    IGNORE_INDEX,
    STAGE1_FILE,
    HMLLoss,
    HMLRelationLoss,
    ParameterAnchoring,
    PredicateHierarchy,
    PredictionDistillation,
    RelationHeadTap,
    build_hierarchy,
    build_parent_head,
    class_balanced_weights,
    configure_stage1,
    confidence_from_metrics,
    estimate_fisher,
    fisher_weights,
    hml_anchor_params,
    load_stage1,
    parent_logits_on_pairs,
    relation_head_state,
    save_stage1,
    snapshot,
    stage_config,
    stage_iterations,
    stage_steps,
    validate_hml_config,
)
from sgg.modeling.relation import MotifPredictor, RelationHead
from sgg.solver import build_lr_scheduler
from sgg.structures import Boxes, Instances

SEED_HML_OPTS = [
    "MODEL.USE_CONFIDENCE", "False",
    "MODEL.DISTILL_TEMPERATURE", "2",
    "SOLVER.LAMBDA_FOR_PARAM", "1.0",
    "SOLVER.ALPHA_FOR_FISHER", "0.5",
    "SOLVER.DISTILL_TYPE", "l2",
    "MODEL.HML.ENABLED", "True",
]


# ----------------------------------------------------------------------------- config
def test_seed_command_overrides_load():
    cfg = load_config(opts=["MODEL.ROI_RELATION_HEAD.USE_GT_BOX", "True",
                            "MODEL.ROI_RELATION_HEAD.USE_GT_OBJECT_LABEL", "True",
                            "SOLVER.BASE_LR", "0.001"] + SEED_HML_OPTS)
    assert cfg.MODEL.USE_CONFIDENCE is False
    assert cfg.MODEL.DISTILL_TEMPERATURE == 2.0 and isinstance(cfg.MODEL.DISTILL_TEMPERATURE, float)
    assert cfg.SOLVER.LAMBDA_FOR_PARAM == 1.0 and cfg.SOLVER.ALPHA_FOR_FISHER == 0.5
    assert cfg.SOLVER.DISTILL_TYPE == "l2"
    assert cfg.MODEL.HML.ENABLED is True
    validate_hml_config(cfg)


def test_hml_defaults_and_validation():
    cfg = load_config()
    h = cfg.MODEL.HML
    assert h.ENABLED is False and h.STAGE == 0 and h.HIERARCHY == "frequency" and h.NUM_COARSE == 10
    assert h.CLASS_BALANCE_BETA == 0.999 and h.STAGE1_ITER_FRACTION == 0.5 and h.FRESH_INIT_STAGE2 is False
    assert h.DISTILL_WEIGHT == 1.0 and h.STAGE1_DIR == "" and h.FISHER_BATCHES >= 1
    assert cfg.MODEL.USE_CONFIDENCE is False and cfg.MODEL.DISTILL_TEMPERATURE == 2.0
    with pytest.raises(ConfigError, match="DISTILL_TYPE"):
        validate_hml_config(load_config(opts=["SOLVER.DISTILL_TYPE", "l3"]))
    with pytest.raises(ConfigError, match="STAGE"):
        validate_hml_config(load_config(opts=["MODEL.HML.STAGE", "3"]))
    with pytest.raises(ConfigError):  # unknown key under the new subtree
        load_config(opts=["MODEL.HML.ENABLE", "True"])


def test_stage_iterations_and_configs(tmp_path):
    out = str(tmp_path / "run")
    cfg = load_config(opts=["SOLVER.MAX_ITER", "101", "OUTPUT_DIR", out, "MODEL.HML.ENABLED", "True"])
    assert stage_iterations(cfg) == (50, 51)  # round(50.5) = 50 (banker's), the rest to stage 2
    c1, c2 = stage_config(cfg, 1), stage_config(cfg, 2)
    assert (c1.SOLVER.MAX_ITER, c1.OUTPUT_DIR) == (50, os.path.join(out, "stage1"))
    assert (c2.SOLVER.MAX_ITER, c2.OUTPUT_DIR) == (51, out)
    assert cfg.SOLVER.MAX_ITER == 101  # the original is untouched
    cfg = load_config(opts=["SOLVER.MAX_ITER", "40", "MODEL.HML.STAGE", "2", "MODEL.HML.STAGE1_DIR", "elsewhere"])
    assert stage_iterations(cfg) == (0, 40)
    assert stage_config(cfg, 1).OUTPUT_DIR == "elsewhere"


def test_stage_configs_scale_the_lr_steps_into_each_stage():
    # one command, 400 iterations split 200 / 200: the plain schedule's steps (300, 380) become
    # (150, 190) in each stage, so both stages end decayed as the plain run does
    cfg = load_config(opts=["SOLVER.MAX_ITER", "400", "SOLVER.STEPS", "(300, 380)", "MODEL.HML.ENABLED", "True"])
    assert stage_steps(cfg, 200) == (150, 190)
    c1, c2 = stage_config(cfg, 1), stage_config(cfg, 2)
    assert tuple(c1.SOLVER.STEPS) == tuple(c2.SOLVER.STEPS) == (150, 190)
    assert tuple(cfg.SOLVER.STEPS) == (300, 380)
    # an uneven split: 0.3 of 1000 -> 300 / 700; steps (600, 900) -> (180, 270) and (420, 630)
    cfg = load_config(opts=["SOLVER.MAX_ITER", "1000", "SOLVER.STEPS", "(600, 900)", "MODEL.HML.ENABLED", "True",
                            "MODEL.HML.STAGE1_ITER_FRACTION", "0.3", "SOLVER.SCHEDULE.TYPE", "WarmupMultiStepLR",
                            "SOLVER.WARMUP_ITERS", "10"])
    assert tuple(stage_config(cfg, 1).SOLVER.STEPS) == (180, 270)
    assert tuple(stage_config(cfg, 2).SOLVER.STEPS) == (420, 630)
    # the decayed rate at the end of each stage equals the plain run's at its end
    model = torch.nn.Linear(2, 2)
    for c in (cfg, stage_config(cfg, 1), stage_config(cfg, 2)):
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        sched = build_lr_scheduler(c, opt)
        for _ in range(c.SOLVER.MAX_ITER - 1):
            opt.step()
            sched.step()
        assert opt.param_groups[0]["lr"] == pytest.approx(0.01)  # GAMMA 0.1, both steps passed
    # a stage-only command owns its MAX_ITER: its steps are taken as given
    cfg = load_config(opts=["SOLVER.MAX_ITER", "400", "SOLVER.STEPS", "(300, 380)", "MODEL.HML.STAGE", "2"])
    assert tuple(stage_config(cfg, 2).SOLVER.STEPS) == (300, 380)


# ----------------------------------------------------------------------------- hierarchy
def test_hierarchy_from_frequency_top_k_ties_by_id():
    counts = torch.tensor([0, 5, 50, 20, 20, 1])
    h = PredicateHierarchy.from_frequency(counts, 3)
    assert h.coarse_ids == [2, 3, 4] and h.fine_ids == [1, 5]
    h = PredicateHierarchy.from_frequency(counts, 2)
    assert h.coarse_ids == [2, 3]  # 3 and 4 tie at 20: the lower id wins
    assert h.parent == [0, 0, 2, 3, 0, 0]  # counts declare no parents
    assert h.stage_classes(1).tolist() == [0, 2, 3]
    assert h.stage_classes(2).tolist() == [0, 1, 2, 3, 4, 5]
    with pytest.raises(ValueError):
        PredicateHierarchy.from_frequency(counts, 0)


def test_hierarchy_from_synthvg_file(tmp_path):
    hier_json = predicate_hierarchy("tiny")
    with open(tmp_path / "predicate_hierarchy.json", "w") as f:
        json.dump(hier_json, f)
    idx = hier_json["predicate_to_idx"]
    names = ["__background__"] + sorted(idx, key=idx.get)
    h = PredicateHierarchy.from_dataset_dir(str(tmp_path), names)
    assert h.num_predicates == 10
    assert h.coarse_ids == sorted(idx[c] for c in hier_json["coarse"])
    assert h.fine_ids == sorted(idx[c] for c in hier_json["fine"])
    assert h.parent[idx["parked on"]] == idx["on"] and h.parent[idx["wearing"]] == idx["has"]
    assert h.children()[idx["on"]] == sorted([idx["parked on"], idx["sitting on"]])
    # the file's own predicate_to_idx suffices; names that disagree are an error
    assert PredicateHierarchy.from_dataset_dir(str(tmp_path)) == h
    with pytest.raises(ValueError, match="disagrees"):
        PredicateHierarchy.from_dataset_dir(str(tmp_path), list(reversed(names[1:])))
    with pytest.raises(FileNotFoundError, match="frequency"):
        PredicateHierarchy.from_dataset_dir(str(tmp_path / "nowhere"), names)


def test_hierarchy_from_json_file(tmp_path):
    names = ["__background__", "on", "has", "sitting on", "wearing", "near"]
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"coarse": ["on", "has"], "parent": {"sitting on": "on", "wearing": "has",
                                                                     "on": "on"}}))
    h = PredicateHierarchy.from_file(str(path), names[1:])  # background optional in the names
    assert h.coarse_ids == [1, 2] and h.fine_ids == [3, 4, 5]
    assert h.parent == [0, 1, 2, 1, 2, 0]  # "near": neither coarse nor given a parent -> fine, parent 0
    assert h.coarse_names == ["on", "has"]
    path.write_text(json.dumps({"coarse": ["on"], "children": {"on": ["sitting on"]}}))
    assert PredicateHierarchy.from_file(str(path), names).parent == [0, 1, 0, 1, 0, 0]
    path.write_text(json.dumps({"coarse": ["on"], "parent": {"wearing": "has"}}))  # parent not coarse
    with pytest.raises(ValueError, match="not coarse"):
        PredicateHierarchy.from_file(str(path), names)
    path.write_text(json.dumps({"coarse": ["onn"]}))
    with pytest.raises(ValueError, match="unknown predicate"):
        PredicateHierarchy.from_file(str(path), names)


def test_build_hierarchy_from_config(tmp_path):
    stats = {"predicate_counts": torch.tensor([0, 3, 9, 1, 7]), "rel_classes": ["__background__", "a", "b", "c", "d"]}
    cfg = load_config(opts=["MODEL.HML.NUM_COARSE", "2"])
    assert build_hierarchy(cfg, stats).coarse_names == ["b", "d"]
    path = tmp_path / "h.json"
    path.write_text(json.dumps({"coarse": ["a"], "parent": {"c": "a"}}))
    cfg = load_config(opts=["MODEL.HML.HIERARCHY", str(path)])
    assert build_hierarchy(cfg, stats).parent == [0, 1, 0, 1, 0]


def test_frequency_split_warns_when_the_dataset_declares_a_hierarchy(tmp_path, caplog):
    stats = {"predicate_counts": torch.tensor([0, 3, 9, 1, 7]), "rel_classes": ["__background__", "a", "b", "c", "d"]}
    cfg = load_config(opts=["MODEL.HML.NUM_COARSE", "2"])
    with caplog.at_level(logging.WARNING, logger="sgg.distill.hml.hierarchy"):
        build_hierarchy(cfg, stats, dataset_dir=str(tmp_path))
    assert "HIERARCHY dataset" not in caplog.text  # nothing declared: no hint
    (tmp_path / HIERARCHY_FILE).write_text(json.dumps({"coarse": ["a", "c"], "parent": {"b": "a"}}))
    with caplog.at_level(logging.WARNING, logger="sgg.distill.hml.hierarchy"):
        hier = build_hierarchy(cfg, stats, dataset_dir=str(tmp_path))
    assert hier.coarse_names == ["b", "d"]  # the key still decides
    assert "set MODEL.HML.HIERARCHY dataset" in caplog.text and HIERARCHY_FILE in caplog.text
    cfg = load_config(opts=["MODEL.HML.HIERARCHY", "dataset"])
    assert build_hierarchy(cfg, stats, dataset_dir=str(tmp_path)).coarse_names == ["a", "c"]


# ----------------------------------------------------------------------------- stage-1 targets
def test_stage1_targets_ignore_fine_pairs_not_background():
    h = PredicateHierarchy(4, [1, 3], parent=[0, 1, 1, 3, 0])
    labels = torch.tensor([0, 1, 2, 3, 4, 0, 2, 1])
    t = h.stage1_targets(labels)
    assert t.tolist() == [0, 1, IGNORE_INDEX, 3, IGNORE_INDEX, 0, IGNORE_INDEX, 1]
    assert h.stage1_targets(t).tolist() == t.tolist()  # idempotent on already ignored rows

    logits = torch.randn(8, 5, generator=torch.Generator().manual_seed(0))
    ce = F.cross_entropy(logits, t, ignore_index=IGNORE_INDEX)
    keep = t != IGNORE_INDEX
    assert torch.allclose(ce, F.cross_entropy(logits[keep], labels[keep]))
    as_bg = F.cross_entropy(logits, torch.where(keep, labels, torch.zeros_like(labels)))
    assert not torch.allclose(ce, as_bg)  # fine pairs are NOT background
    # the head's loss module does the same
    loss = HMLRelationLoss(target_map=h.stage1_target_map(), refine_obj=False)
    out = loss([logits[:3], logits[3:]], [labels[:3], labels[3:]])
    assert torch.allclose(out["loss_rel"], ce) and out["loss_refine_obj"] == 0
    # only fine pairs: a zero that keeps the graph, not NaN
    lg = logits[[2, 4]].clone().requires_grad_(True)
    z = loss.rel_loss(lg, labels[[2, 4]])
    assert z.item() == 0.0 and z.requires_grad


# ----------------------------------------------------------------------------- class-balanced weights
def test_class_balanced_weights_hand_case():
    beta = 0.9
    counts = [0, 1, 10, 100]
    w = class_balanced_weights(counts, beta)
    eff = [1 / (1 - beta), 1.0, (1 - beta ** 10) / (1 - beta), (1 - beta ** 100) / (1 - beta)]
    inv = [1 / e for e in eff]
    expected = [4 * v / sum(inv) for v in inv]
    assert w.dtype == torch.float32 and w.shape == (4,)
    assert torch.allclose(w, torch.tensor(expected), rtol=1e-6)
    assert math.isclose(float(w.sum()), 4.0, rel_tol=1e-6)
    assert w[1] > w[2] > w[3]  # rare predicates weigh more
    # an explicit background count is used as any class's
    wb = class_balanced_weights(counts, beta, background_count=1)
    assert math.isclose(float(wb[0]), float(wb[1]), rel_tol=1e-6)
    # beta 0: uniform
    assert torch.allclose(class_balanced_weights([0, 3, 50, 7], 0.0), torch.ones(4))
    # weighted head CE = PyTorch's weighted mean
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 3, 3, 0])
    got = HMLRelationLoss(class_weights=w, refine_obj=False).rel_loss(logits, labels)
    per = F.cross_entropy(logits, labels, reduction="none")
    assert torch.allclose(got, (w[labels] * per).sum() / w[labels].sum())


# ----------------------------------------------------------------------------- Fisher
LO = torch.tensor(1e-20).item()  # the lower clamp as float32 holds it


def _linear():
    m = nn.Linear(2, 1)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.3, -0.7]]))
        m.bias.fill_(0.2)
    return m


def _out_loss(model, batch):
    return model(batch).sum()  # d/dw = sum of the batch's x, d/db = number of rows


def test_fisher_one_batch_is_squared_gradient():
    m = _linear()
    params = dict(m.named_parameters())
    x = torch.tensor([[0.1, 0.2]])
    f = estimate_fisher(m, params, [x], _out_loss, alpha=0.5)
    assert torch.allclose(f["weight"], torch.tensor([[0.01, 0.04]]))
    assert torch.allclose(f["bias"], torch.tensor([1.0]))
    assert m.weight.grad is None  # .grad untouched


def test_fisher_two_batches_ema_and_clamp():
    m = _linear()
    params = dict(m.named_parameters())
    x1 = torch.tensor([[0.1, 0.2]])
    x2 = torch.tensor([[0.3, 0.0]])  # squared grad of weight[1] is 0 -> clamped to 1e-20
    alpha = 0.25
    f = estimate_fisher(m, params, [x1, x2], _out_loss, alpha=alpha)
    g1 = torch.tensor([[0.01, 0.04]])
    g2 = torch.tensor([[0.09, 1e-20]])
    assert torch.allclose(f["weight"], alpha * g2 + (1 - alpha) * g1)
    # upper clamp: a squared gradient of 4 counts as 1; num_batches stops early
    f = estimate_fisher(m, params, [torch.tensor([[2.0, 0.0]]), x1, x2], _out_loss, alpha=0.5, num_batches=1)
    assert f["weight"].tolist() == [[1.0, pytest.approx(1e-20)]]
    assert f["bias"].item() == 1.0
    for t in f.values():
        assert float(t.min()) >= LO and float(t.max()) <= 1.0


def test_fisher_weights_formula():
    fisher = {"a": torch.tensor([1e-2, 1e-4]), "b": torch.tensor([[1.0]])}
    w = fisher_weights(fisher)  # log10: -2, -4, 0; mean over all entries -2
    assert torch.allclose(w["a"], torch.sigmoid(torch.tensor([0.0, -2.0])))
    assert torch.allclose(w["b"], torch.sigmoid(torch.tensor([[2.0]])))
    assert w["b"].shape == (1, 1)


# ----------------------------------------------------------------------------- anchoring
@pytest.mark.parametrize("kind", ["l2", "l1"])
def test_parameter_anchoring_value_and_gradient(kind):
    g = torch.Generator().manual_seed(0)
    star = {"a": torch.randn(3, 2, generator=g), "b": torch.randn(4, generator=g)}
    w = {"a": torch.rand(3, 2, generator=g), "b": torch.rand(4, generator=g)}
    lam, n = 0.7, 10
    anchor = ParameterAnchoring(star, w, lam=lam, kind=kind)
    at_star = {k: nn.Parameter(v.clone()) for k, v in star.items()}
    z = anchor(at_star)
    z.backward()
    assert z.item() == 0.0
    assert all(float(p.grad.abs().max()) == 0.0 for p in at_star.values())

    theta = {k: nn.Parameter(v + torch.randn(v.shape, generator=g)) for k, v in star.items()}
    loss = anchor(theta)
    loss.backward()
    d = {k: theta[k].detach() - star[k] for k in star}
    if kind == "l2":
        expected = lam * sum((w[k] * d[k] ** 2).sum() for k in star) / n
        grads = {k: lam * 2 * w[k] * d[k] / n for k in star}
    else:
        expected = lam * sum((w[k] * d[k].abs()).sum() for k in star) / n
        grads = {k: lam * w[k] * torch.sign(d[k]) / n for k in star}
    assert torch.allclose(loss, expected)
    for k in star:
        assert torch.allclose(theta[k].grad, grads[k], atol=1e-7)


def test_parameter_anchoring_by_model_names():
    m = _linear()
    star = snapshot(dict(m.named_parameters()))
    anchor = ParameterAnchoring(star, None, lam=2.0)
    assert anchor(m).item() == 0.0
    with torch.no_grad():
        m.bias.add_(1.0)
    assert torch.allclose(anchor(m), torch.tensor(2.0 * 1.0 / 3))
    with pytest.raises(KeyError, match="no parameters"):
        ParameterAnchoring({"missing.weight": torch.zeros(1)})(m)
    with pytest.raises(ValueError):
        ParameterAnchoring(star, kind="l3")


# ----------------------------------------------------------------------------- distillation
def _kl(p_logits, q_logits, T, w=None):
    p = F.softmax(p_logits / T, dim=1)
    term = p * (F.log_softmax(p_logits / T, dim=1) - F.log_softmax(q_logits / T, dim=1))
    if w is not None:
        term = term * w
    return term.sum(1).mean()


def test_distillation_zero_positive_and_t2_scaling():
    g = torch.Generator().manual_seed(0)
    parent = torch.randn(7, 5, generator=g)
    d = PredictionDistillation(temperature=2.0)
    assert abs(d(parent.clone(), parent).item()) < 1e-6
    child = torch.randn(7, 5, generator=g, requires_grad=True)
    loss = d(child, parent)
    assert loss.item() > 0
    assert torch.allclose(loss, 4.0 * _kl(parent, child, 2.0))
    for T in (1.0, 3.0):
        assert torch.allclose(PredictionDistillation(T)(child, parent), T * T * _kl(parent, child, T))
    loss.backward()
    assert child.grad is not None and float(child.grad.abs().sum()) > 0
    # per-image lists are concatenated; no rows -> 0 attached to the graph
    assert torch.allclose(d([child[:3], child[3:]], [parent[:3], parent[3:]]), loss)
    empty = torch.zeros(0, 5, requires_grad=True)
    assert d(empty, torch.zeros(0, 5)).item() == 0.0


def test_distillation_uses_only_parent_classes_and_confidence():
    g = torch.Generator().manual_seed(1)
    parent = torch.randn(6, 6, generator=g)
    child = torch.randn(6, 6, generator=g)
    cls = [0, 2, 5]
    d = PredictionDistillation(2.0, parent_classes=cls)
    loss = d(child, parent)
    assert torch.allclose(loss, 4.0 * _kl(parent[:, cls], child[:, cls], 2.0))
    other = child.clone()
    other[:, [1, 3, 4]] += torch.randn(6, 3, generator=g) * 5  # non-parent columns play no part
    assert torch.allclose(d(other, parent), loss)
    # the child matching the parent on the parent's classes only: zero
    same = parent.clone()
    same[:, [1, 3, 4]] = 9.0
    assert abs(d(same, parent).item()) < 1e-6

    conf = torch.tensor([1.0, 0.3, 0.2, 0.9, 0.4, 0.6])
    dc = PredictionDistillation(2.0, use_confidence=True, confidence=conf, parent_classes=cls)
    got = dc(child, parent)
    assert not torch.allclose(got, loss)
    assert torch.allclose(got, 4.0 * _kl(parent[:, cls], child[:, cls], 2.0, conf[cls]))
    with pytest.raises(ValueError, match="confidence"):
        PredictionDistillation(2.0, use_confidence=True)


def test_confidence_from_metrics():
    conf = confidence_from_metrics({"per_predicate_R@100": [0.5, 0.25, float("nan")]}, 4, k=100)
    assert conf.tolist() == [1.0, 0.5, 0.25, 0.0]
    with pytest.raises(KeyError):
        confidence_from_metrics({}, 4)


# ----------------------------------------------------------------------------- stage files
def test_stage_files_round_trip(tmp_path):
    m = _linear()
    params = dict(m.named_parameters())
    theta = snapshot(params)
    fisher = estimate_fisher(m, params, [torch.tensor([[0.1, 0.2]])], _out_loss)
    hier = PredicateHierarchy(3, [2], parent=[0, 2, 2, 0], names=["a", "b", "c"])
    parent_sd = {"w": torch.arange(6.0).view(2, 3), "steps": torch.tensor(4)}
    conf = torch.tensor([1.0, 0.1, 0.2, 0.3])
    d = str(tmp_path / "stage1")
    path = save_stage1(d, theta, fisher, hier, parent_sd, confidence=conf, meta={"iters": 5})
    assert path == os.path.join(d, STAGE1_FILE)
    assert os.listdir(d) == [STAGE1_FILE]  # atomic write left no temp file
    st = load_stage1(d)
    assert st.hierarchy == hier and st.hierarchy.names == ["__background__", "a", "b", "c"]
    for k in theta:
        assert torch.equal(st.theta_star[k], theta[k]) and torch.equal(st.fisher[k], fisher[k])
    assert torch.equal(st.parent_state_dict["w"], parent_sd["w"]) and st.parent_state_dict["steps"].item() == 4
    assert torch.equal(st.confidence, conf) and st.meta == {"iters": 5}
    assert load_stage1(path).hierarchy == hier  # the file path works too
    with pytest.raises(FileNotFoundError, match="stage 1"):
        load_stage1(str(tmp_path / "none"))
    with pytest.raises(ValueError):
        save_stage1(d, theta, {"weight": fisher["weight"]}, hier, parent_sd)


# ----------------------------------------------------------------------------- on a real RelationHead
C1, P1 = 5, 5  # 4 object classes + bg, 4 predicates + bg
FPN_CH, FEAT = 8, 32
HIER = PredicateHierarchy(4, [1, 2], parent=[0, 1, 2, 1, 2])


def _features(batch=2, h=64, w=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    f = OrderedDict((str(i), torch.randn(batch, FPN_CH, h // 2 ** (i + 2), w // 2 ** (i + 2), generator=g))
                    for i in range(4))
    f["pool"] = torch.randn(batch, FPN_CH, 1, 1, generator=g)
    return f


def _head(mode="predcls", seed=123):
    torch.manual_seed(seed)
    pool, bh = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), TwoMLPHead(FPN_CH * 49, FEAT)
    pred = MotifPredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=FEAT, hidden_dim=16,
                          pooling_dim=24, embed_dim=10, mode=mode)
    return RelationHead(pool, bh, pred, mode)


class _Model(nn.Module):
    """A stand-in for TwoStageSGG: a frozen 'detector' plus the relation head."""

    def __init__(self, head):
        super().__init__()
        self.detector = nn.Linear(3, 3).requires_grad_(False)
        self.relation_head = head


BOXES = [torch.tensor([[1.0, 1, 20, 20], [10, 10, 40, 50], [30, 5, 60, 30], [2, 40, 25, 62]]),
         torch.tensor([[5.0, 5, 30, 30], [20, 20, 50, 60], [0, 30, 30, 63]])]
LABELS = [torch.tensor([1, 2, 3, 4]), torch.tensor([4, 1, 2])]
RELS = [torch.tensor([[0, 1, 2], [1, 2, 1], [0, 2, 3], [3, 0, 4]]), torch.tensor([[0, 1, 3], [2, 1, 1]])]


def _batch():
    props, targets = [], []
    for b, lab in zip(BOXES, LABELS):
        props.append(Instances((64, 64), boxes=Boxes(b.clone()), labels=lab.clone(), scores=torch.ones(len(lab))))
        targets.append(Instances((64, 64), gt_boxes=Boxes(b.clone()), gt_classes=lab.clone()))
    return props, targets, [r.clone() for r in RELS]


def test_anchor_params_exclude_freq_bias_and_feature_extractors():
    model = _Model(_head())
    params = hml_anchor_params(model)
    names = set(params)
    assert names, "nothing anchored"
    assert all(n.startswith("relation_head.predictor.") for n in names)
    assert not any("freq_bias" in n for n in names)
    assert not any("feature_extractor" in n or n.startswith("detector") for n in names)
    for part in ("context_layer.", "post_emb.", "post_cat.", "rel_compress."):
        assert any(n.startswith("relation_head.predictor." + part) for n in names), part
    pred = {"relation_head.predictor." + n for n, _ in model.relation_head.predictor.named_parameters()
            if "freq_bias" not in n}
    assert names == pred
    all_params = dict(model.named_parameters())
    assert all(params[n] is all_params[n] for n in names)
    # the head alone works too (names relative to it)
    assert set(hml_anchor_params(model.relation_head)) == {n[len("relation_head."):] for n in names}


def test_parent_on_child_pairs_reproduces_the_head():
    head = _head()
    head.eval()
    tap = RelationHeadTap(head, training_only=False)
    props, _, _ = _batch()
    feats = _features()
    with torch.no_grad():
        head(feats, props)
    rec = tap.pop()
    assert rec.rel_pairs is not None and tap.pop() is None
    parent = build_parent_head(_Model(head))
    got = parent_logits_on_pairs(parent, feats, rec.proposals, rec.rel_pairs)
    for a, b in zip(got, rec.rel_logits):
        assert torch.allclose(a, b, atol=1e-6)
    # rows follow the given pairs (a permutation of the pairs permutes the rows)
    perm = [torch.flip(r, dims=[0]) for r in rec.rel_pairs]
    flipped = parent_logits_on_pairs(parent, feats, rec.proposals, perm)
    for a, b in zip(flipped, got):
        assert torch.allclose(a, torch.flip(b, dims=[0]), atol=1e-6)
    assert not any(p.requires_grad for p in parent.parameters()) and not parent.training


def test_stage1_head_loss_ignores_fine_pairs():
    model = _Model(_head())
    configure_stage1(model, HIER)
    head = model.relation_head
    tap = RelationHeadTap(head)
    head.train()
    props, targets, rels = _batch()
    torch.manual_seed(0)
    losses = head(_features(), props, targets, rels)
    rec = tap.pop()
    labels = torch.cat(rec.rel_labels)
    assert bool((labels > 2).any()), "the batch should hold fine-labelled pairs"
    logits = torch.cat(rec.rel_logits)
    expected = F.cross_entropy(logits, HIER.stage1_targets(labels), ignore_index=IGNORE_INDEX)
    assert torch.allclose(losses["loss_rel"], expected)
    # the configured loss is not part of the state dict (checkpoints stay plain)
    assert not any("loss_evaluator" in k for k in model.state_dict())


def test_stage1_predictor_own_losses_get_the_stage1_targets():
    """A predictor with label-dependent losses of its own (``uses_rel_labels``, PE-Net's loss_dis)
    gets the loss's targets: in stage 1 the fine-labelled pairs arrive as IGNORE_INDEX."""
    model = _Model(_head())
    head = model.relation_head
    seen = {}
    forward = head.predictor.forward

    def recording_forward(*args, rel_labels=None, **kwargs):
        seen["rel_labels"] = rel_labels
        return forward(*args, **kwargs)

    head.predictor.uses_rel_labels = True
    head.predictor.forward = recording_forward
    tap = RelationHeadTap(head)
    head.train()
    props, targets, rels = _batch()
    torch.manual_seed(0)
    head(_features(), props, targets, rels)
    plain = torch.cat(seen["rel_labels"])
    assert torch.equal(plain, torch.cat(tap.pop().rel_labels))  # without HML: the sampled labels
    tap.remove()
    configure_stage1(model, HIER)
    tap = RelationHeadTap(head)  # the tap records through the head's (now replaced) loss
    torch.manual_seed(0)
    head(_features(), props, targets, rels)
    labels = torch.cat(tap.pop().rel_labels)
    assert bool((labels > 2).any()), "the batch should hold fine-labelled pairs"
    assert torch.equal(torch.cat(seen["rel_labels"]), HIER.stage1_targets(labels))


def test_hml_stage2_loss_end_to_end(tmp_path):
    model = _Model(_head())
    # "stage 1": memory of the current weights
    params = hml_anchor_params(model)
    st_dir = str(tmp_path / "s1")
    save_stage1(st_dir, snapshot(params), {n: torch.full_like(p, 1e-3) for n, p in params.items()}, HIER,
                relation_head_state(model), confidence=torch.tensor([1.0, 0.5, 0.5, 0.0, 0.0]))
    st = load_stage1(st_dir)
    counts = torch.tensor([0, 100, 50, 5, 2])
    # the confidence saved with stage 1 reaches the distillation when MODEL.USE_CONFIDENCE is on
    conf_loss = HMLLoss.from_config(load_config(opts=SEED_HML_OPTS + ["MODEL.USE_CONFIDENCE", "True"]),
                                    model, st, counts, attach=False)
    assert conf_loss.distillation.use_confidence
    assert torch.equal(conf_loss.distillation.confidence, st.confidence)
    assert conf_loss.distillation.parent_classes.tolist() == [0, 1, 2]
    st_noconf = load_stage1(st_dir)
    st_noconf.confidence = None
    with pytest.raises(ValueError, match="confidence"):
        HMLLoss.from_config(load_config(opts=SEED_HML_OPTS + ["MODEL.USE_CONFIDENCE", "True"]), model, st_noconf,
                            counts, attach=False)

    cfg = load_config(opts=SEED_HML_OPTS)
    hml_loss = HMLLoss.from_config(cfg, model, st, counts)
    head = model.relation_head
    assert isinstance(head.loss_evaluator, HMLRelationLoss)
    assert torch.allclose(head.loss_evaluator.class_weights, class_balanced_weights(counts, 0.999))

    model.train()
    props, targets, rels = _batch()
    torch.manual_seed(0)
    out = head(_features(), props, targets, rels)
    extra = hml_loss(model, None, out)
    assert set(extra) == {"loss_distill", "loss_anchor"}
    assert extra["loss_anchor"].item() == 0.0  # θ = θ* at the start
    assert torch.isfinite(extra["loss_distill"]) and extra["loss_distill"].item() >= 0
    assert hml_loss.tap.record is None  # features are not held after the call

    parent_before = copy.deepcopy(hml_loss.parent_head.state_dict())
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    total = out["loss_rel"] + extra["loss_distill"] + extra["loss_anchor"]
    total.backward()
    assert model.relation_head.predictor.rel_compress.weight.grad is not None
    opt.step()
    opt.zero_grad()
    torch.manual_seed(0)
    out = head(_features(), props, targets, rels)
    extra = hml_loss(model, None, out)
    assert extra["loss_anchor"].item() > 0  # moved away from θ*
    assert extra["loss_distill"].item() > 0
    for k, v in hml_loss.parent_head.state_dict().items():
        assert torch.equal(v, parent_before[k]), k  # the parent stays frozen
    # validation forwards are not recorded
    model.eval()
    with torch.no_grad():
        head(_features(), props)
    assert hml_loss.tap.record is None
    with pytest.raises(RuntimeError, match="no training forward"):
        hml_loss(model, None, {})


def test_fisher_on_relation_head_params():
    model = _Model(_head())
    configure_stage1(model, HIER)
    params = hml_anchor_params(model)
    props, targets, rels = _batch()

    def loss_fn(m, batch):
        torch.manual_seed(0)
        return m.relation_head(_features(), props, targets, rels)["loss_rel"]

    buffers = {n: b.clone() for n, b in model.named_buffers()}
    model.eval()
    fisher = estimate_fisher(model, params, range(2), loss_fn, alpha=0.5)
    assert set(fisher) == set(params)
    assert not model.training  # mode restored
    assert all(torch.equal(b, buffers[n]) for n, b in model.named_buffers())  # BN statistics untouched
    for n, f in fisher.items():
        assert f.shape == params[n].shape and float(f.min()) >= LO and float(f.max()) <= 1.0
    assert float(fisher["relation_head.predictor.rel_compress.weight"].max()) > LO
    assert all(p.grad is None for p in params.values())


class _TrainModel(_Model):
    """Training forward like TwoStageSGG's: the batch is ignored, the head sees the fixed scene."""

    def forward(self, batch):
        props, targets, rels = _batch()
        return self.relation_head(_features(), props, targets, rels)


def test_trainer_logs_the_three_stage2_terms(tmp_path):
    from sgg.engine.trainer import Trainer

    model = _TrainModel(_head())
    params = hml_anchor_params(model)
    save_stage1(str(tmp_path), snapshot(params), {n: torch.rand_like(p) for n, p in params.items()}, HIER,
                relation_head_state(model))
    cfg = load_config(opts=SEED_HML_OPTS)
    hml_loss = HMLLoss.from_config(cfg, model, load_stage1(str(tmp_path)), torch.tensor([0, 100, 50, 5, 2]))
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    trainer = Trainer(model, [0, 1, 2], opt, max_iter=3, device="cpu", ema_decay=0.9, extra_losses=[hml_loss],
                      output_dir=str(tmp_path / "out"), handle_sigterm=False)
    assert trainer.train() == "completed"
    window = trainer.storage.pop_window()
    for k in ("loss_rel", "loss_refine_obj", "loss_distill", "loss_anchor"):
        assert len(window[k]) == 3 and all(math.isfinite(v) for v in window[k]), k
    assert window["loss_anchor"][0] == 0.0 and window["loss_anchor"][-1] > 0.0
    assert hml_loss.tap.record is None


FISHER_DDP_SCRIPT = r'''
import os, sys, torch
from sgg.utils import comm
from sgg.distill.hml import estimate_fisher
comm.init_from_env(backend="gloo")
rank = comm.get_rank()
torch.manual_seed(0)
m = torch.nn.Linear(2, 1)
xs = [torch.tensor([[0.1, 0.2]]), torch.tensor([[0.3, -0.5]])] if rank == 0 else \
     [torch.tensor([[0.7, 0.1]]), torch.tensor([[-0.2, 0.4]])]
f = estimate_fisher(m, dict(m.named_parameters()), xs, lambda mod, x: mod(x).sum(), alpha=0.5)
if rank == 0:
    torch.save(f, os.path.join(sys.argv[1], "fisher.pt"))
comm.shutdown()
'''


def test_fisher_is_averaged_over_ranks(tmp_path):
    """Two gloo ranks with different batches: F is the EMA of the per-batch squared gradients
    averaged over the ranks (hand-computed: d/dw = x, d/db = 1)."""
    import socket
    import subprocess
    import sys

    script = tmp_path / "fisher_ddp.py"
    script.write_text(FISHER_DDP_SCRIPT)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                          f"--master_port={port}", str(script), str(tmp_path)],
                         env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    f = torch.load(tmp_path / "fisher.pt", weights_only=True)
    s1 = (torch.tensor([0.1, 0.2]) ** 2 + torch.tensor([0.7, 0.1]) ** 2) / 2  # batch 1, mean over ranks
    s2 = (torch.tensor([0.3, -0.5]) ** 2 + torch.tensor([-0.2, 0.4]) ** 2) / 2
    assert torch.allclose(f["weight"].flatten(), 0.5 * s2 + 0.5 * s1)
    assert torch.allclose(f["bias"], torch.tensor([1.0]))
