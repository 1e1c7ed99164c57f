"""LR schedules at hand-computed iterations, SGB's LR scaling and parameter groups."""
import logging
import math

import pytest
import torch
from torch import nn

import sgg.engine  # noqa: F401  (registers the engine's config keys)
from sgg.config import load_config
from sgg.solver import (
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupReduceLROnPlateau,
    build_lr_scheduler,
    build_optimizer,
    effective_base_lr,
    get_param_groups,
    warmup_factor_at,
)


def _opt(lr=1.0):
    return torch.optim.SGD([nn.Parameter(torch.zeros(2))], lr=lr, momentum=0.9)


def _lrs(sched, n):
    """LR used by iterations 1..n (the schedule is stepped after each)."""
    out = []
    for _ in range(n):
        out.append(sched.optimizer.param_groups[0]["lr"])
        sched.step()
    return out


def test_linear_warmup_then_multistep():
    s = WarmupMultiStepLR(_opt(1.0), milestones=[10, 20], gamma=0.1, warmup_factor=0.1, warmup_iters=5,
                          warmup_method="linear")
    lrs = _lrs(s, 25)
    # t = completed iterations: f * (1 - t/5) + t/5 for t < 5
    assert lrs[0] == pytest.approx(0.1)
    assert lrs[1] == pytest.approx(0.1 * 0.8 + 0.2)  # 0.28
    assert lrs[4] == pytest.approx(0.1 * 0.2 + 0.8)  # 0.82
    assert lrs[5] == pytest.approx(1.0)
    assert lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(0.1)  # t = 10 reaches the first milestone
    assert lrs[19] == pytest.approx(0.1)
    assert lrs[20] == pytest.approx(0.01)
    assert s.last_iter == 25 and s.last_epoch == 25


def test_constant_warmup_and_factor_function():
    s = WarmupMultiStepLR(_opt(2.0), milestones=[3], gamma=0.5, warmup_factor=0.25, warmup_iters=2,
                          warmup_method="constant")
    assert _lrs(s, 5) == pytest.approx([0.5, 0.5, 2.0, 1.0, 1.0])
    assert warmup_factor_at(0, 0, 0.1, "linear") == 1.0
    with pytest.raises(ValueError, match="warm"):
        WarmupMultiStepLR(_opt(), [1], warmup_method="exp")


def test_schedule_keeps_per_group_factors():
    a, b = nn.Parameter(torch.zeros(1)), nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 2.0}], lr=1.0)
    s = WarmupMultiStepLR(opt, [1], gamma=0.1, warmup_iters=0)
    s.step()
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.1, 0.2])
    assert s.get_last_lr() == pytest.approx([0.1, 0.2])


def test_plateau_decays_after_patience_and_stops():
    s = WarmupReduceLROnPlateau(_opt(1.0), gamma=0.1, warmup_iters=0, patience=2, threshold=0.01, cooldown=0,
                                max_decay_step=2)
    assert not s.report(0.50)            # best = 0.50
    assert not s.report(0.505)           # not > best + 0.01: bad 1
    assert s.report(0.30)                # bad 2 = patience: decay 1
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and not s.stop
    s.step()
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)  # stepping keeps the stage
    assert not s.report(0.60)            # new best
    assert not s.report(0.60)            # bad 1
    assert s.report(0.60)                # bad 2: decay 2 = MAX_DECAY_STEP
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    assert s.stage_count == 2 and s.stop


def test_plateau_cooldown_is_sgb_s():
    # SGB starts in cool-down (under_cooldown = cooldown) and resets the bad count while in it.
    s = WarmupReduceLROnPlateau(_opt(1.0), gamma=0.5, warmup_iters=0, patience=1, threshold=0.0, cooldown=1)
    assert not s.report(0.5)  # best; cool-down 1 -> 0
    assert s.report(0.4)      # bad 1 >= patience: decay, cool-down = 1
    assert not s.report(0.4)  # in cool-down: bad count reset
    assert s.report(0.4)      # decay again
    assert s.optimizer.param_groups[0]["lr"] == pytest.approx(0.25)
    assert not s.stop  # max_decay_step 0: never stops


def test_plateau_warmup_and_state_dict_roundtrip():
    s = WarmupReduceLROnPlateau(_opt(1.0), gamma=0.1, warmup_factor=0.5, warmup_iters=4, patience=1,
                                threshold=0.0, cooldown=0, max_decay_step=3)
    assert _lrs(s, 2) == pytest.approx([0.5, 0.625])
    s.step(0.3)   # SGB call style: step(metric)
    s.report(0.2)  # decay 1
    state = s.state_dict()
    t = WarmupReduceLROnPlateau(_opt(1.0), gamma=0.1, warmup_factor=0.5, warmup_iters=4, patience=1,
                                threshold=0.0, cooldown=0, max_decay_step=3)
    t.load_state_dict(state)
    assert t.last_iter == 3 and t.stage_count == 1 and t.best == pytest.approx(0.3)
    # t = 3 < 4: warm-up 0.5 * 0.25 + 0.75 = 0.875, times gamma
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.0875)


def test_cosine():
    s = WarmupCosineLR(_opt(1.0), max_iter=100, warmup_iters=0)
    assert s.factor_at(0) == pytest.approx(1.0)
    assert s.factor_at(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)))
    assert s.factor_at(50) == pytest.approx(0.5)
    assert s.factor_at(100) == pytest.approx(0.0, abs=1e-12)
    assert s.factor_at(150) == pytest.approx(0.0, abs=1e-12)
    m = WarmupCosineLR(_opt(1.0), max_iter=100, min_lr_factor=0.1, warmup_factor=0.1, warmup_iters=10)
    assert m.factor_at(0) == pytest.approx(0.1 * (0.1 + 0.9))
    assert m.factor_at(50) == pytest.approx(0.1 + 0.9 * 0.5)
    assert m.factor_at(100) == pytest.approx(0.1)


def test_multistep_state_dict_roundtrip():
    s = WarmupMultiStepLR(_opt(1.0), [3, 6], gamma=0.1, warmup_iters=2)
    _lrs(s, 7)
    t = WarmupMultiStepLR(_opt(1.0), [3, 6], gamma=0.1, warmup_iters=2)
    t.load_state_dict(s.state_dict())
    assert t.last_iter == 7
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    t.load_state_dict({"last_epoch": 4})  # SGB / maskrcnn-benchmark key
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


# ---------------------------------------------------------------------------------------------
class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(3, 4)
        self.head = nn.Linear(4, 2)
        self.freq_bias = nn.Embedding(5, 2)
        self.frozen = nn.Linear(2, 2)
        self.frozen.requires_grad_(False)


def _group_of(opt, param):
    return next(g for g in opt.param_groups if any(p is param for p in g["params"]))


def test_effective_lr_scales_by_batch_like_sgb():
    cfg = load_config(opts=["SOLVER.BASE_LR", "0.01", "SOLVER.IMS_PER_BATCH", "12"])
    assert cfg.SOLVER.SCALE_LR_BY_BATCH is True
    assert effective_base_lr(cfg) == pytest.approx(0.12)
    cfg2 = load_config(opts=["SOLVER.BASE_LR", "0.01", "SOLVER.IMS_PER_BATCH", "12",
                             "SOLVER.SCALE_LR_BY_BATCH", "False"])
    assert effective_base_lr(cfg2) == pytest.approx(0.01)


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_sgd_groups_bias_rule_and_logged_lr():
    cfg = load_config(opts=["SOLVER.BASE_LR", "0.01", "SOLVER.IMS_PER_BATCH", "12", "SOLVER.BIAS_LR_FACTOR", "2.0",
                            "SOLVER.WEIGHT_DECAY", "0.0001", "SOLVER.WEIGHT_DECAY_BIAS", "0.0"])
    net = _Net()
    cap = _Capture()
    log = logging.getLogger("sgg.solver.build")
    log.addHandler(cap)
    old_level = log.level
    log.setLevel(logging.INFO)
    try:
        opt = build_optimizer(cfg, net)
    finally:
        log.removeHandler(cap)
        log.setLevel(old_level)
    assert any("0.12" in m and "IMS_PER_BATCH" in m for m in cap.messages)
    assert isinstance(opt, torch.optim.SGD) and opt.defaults["momentum"] == 0.9
    w = _group_of(opt, net.head.weight)
    assert w["lr"] == pytest.approx(0.12) and w["weight_decay"] == pytest.approx(1e-4)
    b = _group_of(opt, net.head.bias)
    assert b["lr"] == pytest.approx(0.24) and b["weight_decay"] == 0.0
    # SGB's substring rule: the frequency-bias embedding counts as "bias"
    assert _group_of(opt, net.freq_bias.weight)["weight_decay"] == 0.0
    all_params = [p for g in opt.param_groups for p in g["params"]]
    assert not any(p is net.frozen.weight for p in all_params)
    assert len(all_params) == 5  # backbone w/b, head w/b, freq_bias


def test_adamw_with_backbone_lr_factor():
    cfg = load_config(opts=["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.001", "SOLVER.SCALE_LR_BY_BATCH",
                            "False", "SOLVER.BACKBONE_LR_FACTOR", "0.1", "SOLVER.WEIGHT_DECAY", "0.05"])
    net = _Net()
    opt = build_optimizer(cfg, net)
    assert isinstance(opt, torch.optim.AdamW)
    assert _group_of(opt, net.backbone.weight)["lr"] == pytest.approx(1e-4)
    assert _group_of(opt, net.backbone.weight)["weight_decay"] == pytest.approx(0.05)
    assert _group_of(opt, net.backbone.bias)["lr"] == pytest.approx(1e-4)
    assert _group_of(opt, net.backbone.bias)["weight_decay"] == 0.0
    assert _group_of(opt, net.head.weight)["lr"] == pytest.approx(1e-3)
    bad = load_config(opts=["SOLVER.OPTIMIZER", "Adam"])
    with pytest.raises(ValueError, match="SOLVER.OPTIMIZER"):
        build_optimizer(bad, net)


@pytest.mark.parametrize("kind,cls", [("WarmupMultiStepLR", WarmupMultiStepLR),
                                      ("WarmupReduceLROnPlateau", WarmupReduceLROnPlateau),
                                      ("WarmupCosineLR", WarmupCosineLR)])
def test_build_lr_scheduler_from_config(kind, cls):
    cfg = load_config(opts=["SOLVER.SCHEDULE.TYPE", kind, "SOLVER.BASE_LR", "0.01", "SOLVER.IMS_PER_BATCH", "2",
                            "SOLVER.WARMUP_ITERS", "10", "SOLVER.WARMUP_FACTOR", "0.1"])
    opt = build_optimizer(cfg, _Net())
    s = build_lr_scheduler(cfg, opt)
    assert isinstance(s, cls)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.02 * 0.1)
    if kind == "WarmupReduceLROnPlateau":
        assert s.max_decay_step == cfg.SOLVER.SCHEDULE.MAX_DECAY_STEP and s.gamma == cfg.SOLVER.SCHEDULE.FACTOR
    with pytest.raises(ValueError, match="SCHEDULE.TYPE"):
        build_lr_scheduler(load_config(opts=["SOLVER.SCHEDULE.TYPE", "Poly"]), opt)


def test_param_lr_factors_first_matching_regex_wins_and_bad_entries_are_named():
    class Deform(nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = nn.Module()
            self.trunk.layers = nn.ModuleList([nn.Module()])
            self.trunk.layers[0].offset = nn.Conv2d(2, 18, 3)
            self.trunk.layers[0].conv = nn.Conv2d(2, 2, 3)
            self.offset = nn.Conv2d(2, 2, 1)  # a regression head also named "offset": not matched

    net = Deform()
    cfg = load_config(opts=["SOLVER.OPTIMIZER", "AdamW", "SOLVER.BASE_LR", "0.001", "SOLVER.SCALE_LR_BY_BATCH", "False",
                            "SOLVER.BIAS_LR_FACTOR", "2.0", "SOLVER.PARAM_LR_FACTORS",
                            "(('trunk.layers.[0-9]+.offset.', 0.1), ('offset', 5.0))"])
    opt = build_optimizer(cfg, net)
    assert _group_of(opt, net.trunk.layers[0].offset.weight)["lr"] == pytest.approx(1e-4)
    assert _group_of(opt, net.trunk.layers[0].offset.bias)["lr"] == pytest.approx(2e-4)  # bias rule, then x0.1
    assert _group_of(opt, net.trunk.layers[0].conv.weight)["lr"] == pytest.approx(1e-3)
    assert _group_of(opt, net.offset.weight)["lr"] == pytest.approx(5e-3)  # only the second rule matches
    assert _group_of(opt, net.trunk.layers[0].offset.weight)["name"] == "x0.1"
    for bad, match in ((("offset",), "regex, factor"), ((("(", 0.1),), "bad regex")):
        with pytest.raises(ValueError, match=match):
            get_param_groups(net, 1e-3, 0.0, param_lr_factors=bad)
