"""Optimizer and LR-schedule construction from the config, plus the engine's config keys.

SGB's optimizer (``maskrcnn_benchmark/solver/build.py`` as used by ``relation_train_net.py``):

* SGD with ``SOLVER.MOMENTUM``; every trainable parameter gets ``lr = BASE_LR`` and
  ``weight_decay = WEIGHT_DECAY``, except parameters whose *name contains* ``"bias"``:
  ``lr = BASE_LR * BIAS_LR_FACTOR`` and ``weight_decay = WEIGHT_DECAY_BIAS``. Note that SGB's
  substring rule also catches e.g. ``freq_bias.obj_baseline.weight`` (Motifs' frequency bias gets
  no weight decay); kept as is so SGB runs reproduce.
* **SGB multiplies every LR by ``IMS_PER_BATCH``** (``rl_factor=float(cfg.SOLVER.IMS_PER_BATCH)``)
  without saying so: ``BASE_LR 0.01`` with ``IMS_PER_BATCH 12`` trains at 0.12. Here that is the
  explicit ``SOLVER.SCALE_LR_BY_BATCH`` (default True, SGB's behaviour); :func:`effective_base_lr`
  computes the LR actually used and :func:`build_optimizer` logs it.

Additions: ``SOLVER.OPTIMIZER AdamW`` (betas ``SOLVER.BETAS``, same decay groups) and
``SOLVER.BACKBONE_LR_FACTOR`` for parameters whose name starts with ``SOLVER.BACKBONE_PREFIX``, and
``SOLVER.PARAM_LR_FACTORS``: ``(regex, factor)`` pairs, the first regex found (``re.search``) in a
parameter's name multiplies its LR (e.g. ``(("trunk.layers.[0-9]+.offset.", 0.1),)``: the offset
convs of the one-stage model's deformable layers, as DCN recipes do).
Parameters with equal (lr, weight decay) share one param group (SGB made one group per
parameter; the update is the same, the optimizer is faster).
"""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn
from yacs.config import CfgNode as CN


from .lr_scheduler import WarmupCosineLR, WarmupMultiStepLR, WarmupReduceLROnPlateau

logger = logging.getLogger(__name__)

OPTIMIZERS = ("SGD", "AdamW")
SCHEDULES = ("WarmupMultiStepLR", "WarmupReduceLROnPlateau", "WarmupCosineLR")




def effective_base_lr(cfg: CN) -> float:
    """The base LR the optimizer really uses: ``BASE_LR * IMS_PER_BATCH`` when
    ``SOLVER.SCALE_LR_BY_BATCH`` (SGB's silent behaviour), else ``BASE_LR``."""
    lr = float(cfg.SOLVER.BASE_LR)
    if cfg.SOLVER.SCALE_LR_BY_BATCH:
        lr *= float(cfg.SOLVER.IMS_PER_BATCH)
    return lr


def get_param_groups(model: nn.Module, base_lr: float, weight_decay: float, *, bias_lr_factor: float = 1.0,
                     weight_decay_bias: float = 0.0, backbone_prefix: str = "", backbone_lr_factor: float = 1.0,
                     param_lr_factors: Sequence[Tuple[str, float]] = ()) -> List[Dict[str, Any]]:
    """Param groups with SGB's bias rule, an optional backbone LR factor and ``param_lr_factors``
    (``(regex, factor)`` pairs: the first regex found in a parameter's name multiplies its LR).

    Frozen parameters (``requires_grad False``) are left out; a parameter shared by several
    modules is counted once. Each group has ``params``, ``lr``, ``weight_decay`` and ``name``.
    """
    rules = _compile_lr_factors(param_lr_factors)
    groups: "OrderedDict[Tuple[float, float, str], Dict[str, Any]]" = OrderedDict()
    seen = set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        lr, wd, tag = base_lr, weight_decay, []
        if "bias" in name:  # SGB's rule (substring, not suffix; see module docstring)
            lr, wd = base_lr * bias_lr_factor, weight_decay_bias
            tag.append("bias")
        if backbone_prefix and backbone_lr_factor != 1.0 and name.startswith(backbone_prefix):
            lr = lr * backbone_lr_factor
            tag.append("backbone")
        for pattern, factor in rules:
            if pattern.search(name):
                lr = lr * factor
                tag.append(f"x{factor:g}")
                break
        key = (lr, wd, "+".join(tag) or "default")
        if key not in groups:
            groups[key] = {"params": [], "lr": lr, "weight_decay": wd, "name": key[2]}
        groups[key]["params"].append(p)
    return list(groups.values())


def _compile_lr_factors(pairs: Sequence[Tuple[str, float]]) -> List[Tuple["re.Pattern", float]]:
    rules = []
    for entry in pairs:
        if not (isinstance(entry, (tuple, list)) and len(entry) == 2 and isinstance(entry[0], str)
                and isinstance(entry[1], (int, float)) and not isinstance(entry[1], bool)):
            raise ValueError(f"SOLVER.PARAM_LR_FACTORS entries must be (regex, factor) pairs, got {entry!r}; "
                             f"e.g. SOLVER.PARAM_LR_FACTORS \"(('offset', 0.1),)\"")
        try:
            rules.append((re.compile(entry[0]), float(entry[1])))
        except re.error as e:
            raise ValueError(f"SOLVER.PARAM_LR_FACTORS: bad regex {entry[0]!r}: {e}") from None
    return rules


def build_optimizer(cfg: CN, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (SGB) or AdamW over the trainable parameters of ``model`` (see module docstring)."""
    s = cfg.SOLVER
    name = s.OPTIMIZER
    if name not in OPTIMIZERS:
        raise ValueError(f"SOLVER.OPTIMIZER must be one of {OPTIMIZERS}, got {name!r}")
    base_lr = effective_base_lr(cfg)
    if s.SCALE_LR_BY_BATCH:
        logger.info("SOLVER.SCALE_LR_BY_BATCH True (SGB behaviour): effective base LR = BASE_LR %g x "
                    "IMS_PER_BATCH %d = %g. Set SOLVER.SCALE_LR_BY_BATCH False to use BASE_LR as given.",
                    s.BASE_LR, s.IMS_PER_BATCH, base_lr)
    else:
        logger.info("Effective base LR = SOLVER.BASE_LR = %g (SOLVER.SCALE_LR_BY_BATCH False)", base_lr)
    groups = get_param_groups(
        model, base_lr, s.WEIGHT_DECAY, bias_lr_factor=s.BIAS_LR_FACTOR, weight_decay_bias=s.WEIGHT_DECAY_BIAS,
        backbone_prefix=s.BACKBONE_PREFIX, backbone_lr_factor=s.BACKBONE_LR_FACTOR,
        param_lr_factors=s.PARAM_LR_FACTORS)
    if not groups:
        raise ValueError("build_optimizer: the model has no trainable parameters (all requires_grad=False)")
    for g in groups:
        logger.info("param group %-16s lr %.6g  weight_decay %g  (%d tensors, %d values)", g["name"], g["lr"],
                    g["weight_decay"], len(g["params"]), sum(p.numel() for p in g["params"]))
    if name == "SGD":
        return torch.optim.SGD(groups, lr=base_lr, momentum=s.MOMENTUM)
    betas = tuple(s.BETAS)
    return torch.optim.AdamW(groups, lr=base_lr, betas=betas)


def build_lr_scheduler(cfg: CN, optimizer: torch.optim.Optimizer):
    """The schedule named by ``SOLVER.SCHEDULE.TYPE`` with SGB's warm-up keys."""
    s = cfg.SOLVER
    kind = s.SCHEDULE.TYPE
    warm = dict(warmup_factor=s.WARMUP_FACTOR, warmup_iters=s.WARMUP_ITERS, warmup_method=s.WARMUP_METHOD)
    if kind == "WarmupMultiStepLR":
        if s.STEPS and min(s.STEPS) >= s.MAX_ITER:
            logger.warning("SOLVER.STEPS %s are all >= SOLVER.MAX_ITER %d: the learning rate never decays in "
                           "this run. Put the steps below MAX_ITER to decay it.", tuple(s.STEPS), s.MAX_ITER)
        return WarmupMultiStepLR(optimizer, s.STEPS, s.GAMMA, **warm)
    if kind == "WarmupReduceLROnPlateau":
        return WarmupReduceLROnPlateau(optimizer, s.SCHEDULE.FACTOR, patience=s.SCHEDULE.PATIENCE,
                                       threshold=s.SCHEDULE.THRESHOLD, cooldown=s.SCHEDULE.COOLDOWN,
                                       max_decay_step=s.SCHEDULE.MAX_DECAY_STEP, **warm)
    if kind == "WarmupCosineLR":
        return WarmupCosineLR(optimizer, s.MAX_ITER, s.SCHEDULE.MIN_LR_FACTOR, **warm)
    raise ValueError(f"SOLVER.SCHEDULE.TYPE must be one of {SCHEDULES}, got {kind!r}")
