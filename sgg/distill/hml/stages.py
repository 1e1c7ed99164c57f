"""The config side of HML: cross-key checks of MODEL.HML / SOLVER (:func:`validate_hml_config`),
the split of SOLVER.MAX_ITER over the two stages and each stage's config
(:func:`stage_iterations`, :func:`stage_config`), and the parent's per-predicate confidence from
its validation metrics (:func:`confidence_from_metrics`).
"""
from __future__ import annotations

from typing import Any, Mapping, Tuple

import torch
from yacs.config import CfgNode as CN

from sgg.config import ConfigError

from .losses import DISTILL_TYPES
from .stage_files import stage1_dir

__all__ = [
    "confidence_from_metrics",
    "stage_config",
    "stage_iterations",
    "stage_steps",
    "validate_hml_config",
]


def validate_hml_config(cfg: CN) -> None:
    """Cross-key checks of the HML keys (raises :class:`~sgg.config.ConfigError`)."""
    h = cfg.MODEL.HML
    if cfg.SOLVER.DISTILL_TYPE not in DISTILL_TYPES:
        raise ConfigError(f"SOLVER.DISTILL_TYPE must be one of {DISTILL_TYPES}, got {cfg.SOLVER.DISTILL_TYPE!r}")
    if h.STAGE not in (0, 1, 2):
        raise ConfigError(f"MODEL.HML.STAGE must be 0 (both), 1 or 2, got {h.STAGE}")
    if not 0.0 < h.STAGE1_ITER_FRACTION < 1.0:
        raise ConfigError(f"MODEL.HML.STAGE1_ITER_FRACTION must be in (0, 1), got {h.STAGE1_ITER_FRACTION}")
    if not 0.0 <= cfg.SOLVER.ALPHA_FOR_FISHER <= 1.0:
        raise ConfigError(f"SOLVER.ALPHA_FOR_FISHER must be in [0, 1], got {cfg.SOLVER.ALPHA_FOR_FISHER}")
    if not 0.0 <= h.CLASS_BALANCE_BETA < 1.0:
        raise ConfigError(f"MODEL.HML.CLASS_BALANCE_BETA must be in [0, 1), got {h.CLASS_BALANCE_BETA}")
    if cfg.MODEL.DISTILL_TEMPERATURE <= 0:
        raise ConfigError(f"MODEL.DISTILL_TEMPERATURE must be > 0, got {cfg.MODEL.DISTILL_TEMPERATURE}")
    if h.FISHER_BATCHES < 1:
        raise ConfigError(f"MODEL.HML.FISHER_BATCHES must be >= 1, got {h.FISHER_BATCHES}")
    if h.NUM_COARSE < 1:
        raise ConfigError(f"MODEL.HML.NUM_COARSE must be >= 1, got {h.NUM_COARSE}")
    if cfg.SOLVER.LAMBDA_FOR_PARAM < 0 or h.DISTILL_WEIGHT < 0:
        raise ConfigError("SOLVER.LAMBDA_FOR_PARAM and MODEL.HML.DISTILL_WEIGHT must be >= 0")


def stage_iterations(cfg: CN) -> Tuple[int, int]:
    """(stage-1 iterations, stage-2 iterations) of this command: STAGE 0 splits SOLVER.MAX_ITER
    by STAGE1_ITER_FRACTION (each stage >= 1 iteration); STAGE 1 / 2 give it all to that stage."""
    n = int(cfg.SOLVER.MAX_ITER)
    stage = int(cfg.MODEL.HML.STAGE)
    if stage == 1:
        return n, 0
    if stage == 2:
        return 0, n
    if n < 2:
        raise ConfigError("MODEL.HML.STAGE 0 needs SOLVER.MAX_ITER >= 2 (one iteration per stage at least)")
    n1 = min(max(int(round(n * float(cfg.MODEL.HML.STAGE1_ITER_FRACTION))), 1), n - 1)
    return n1, n - n1


def stage_steps(cfg: CN, stage_iters: int) -> Tuple[int, ...]:
    """SOLVER.STEPS of one stage when MODEL.HML.STAGE 0 splits SOLVER.MAX_ITER: each step scaled
    by ``stage_iters / MAX_ITER``, so both stages follow the decay of the plain schedule they
    share a budget with (steps (300, 380) of 400 iterations -> (150, 190) for a 200-iteration
    stage). Unscaled steps would all lie beyond a stage's end: its learning rate would never
    decay and the stage would end at the full base LR."""
    n = int(cfg.SOLVER.MAX_ITER)
    return tuple(int(round(int(s) * stage_iters / n)) for s in cfg.SOLVER.STEPS)


def stage_config(cfg: CN, stage: int) -> CN:
    """A frozen copy of ``cfg`` for one stage's trainer: SOLVER.MAX_ITER = the stage's iterations
    (:func:`stage_iterations`) and OUTPUT_DIR = :func:`stage1_dir` for stage 1 (stage 2 keeps
    OUTPUT_DIR), so each stage checkpoints and resumes in its own folder. When STAGE 0 splits the
    budget, SOLVER.STEPS are scaled into the stage (:func:`stage_steps`); STAGE 1 / 2 commands
    own their whole MAX_ITER and keep STEPS as given."""
    n1, n2 = stage_iterations(cfg)
    out = cfg.clone()
    out.defrost()
    if stage == 1:
        out.SOLVER.MAX_ITER = n1
        out.OUTPUT_DIR = stage1_dir(cfg)
    elif stage == 2:
        out.SOLVER.MAX_ITER = n2
    else:
        raise ValueError(f"HML stages are 1 and 2, got {stage}")
    if int(cfg.MODEL.HML.STAGE) == 0:
        out.SOLVER.STEPS = stage_steps(cfg, out.SOLVER.MAX_ITER)
    out.freeze()
    return out


def confidence_from_metrics(metrics: Mapping[str, Any], num_rel_classes: int, k: int = 100,
                            no_graph_constraint: bool = False) -> torch.Tensor:
    """float32 ``[P+1]`` per-predicate recall ``per_predicate_R@k`` (the evaluator's list of P
    values for predicates 1..P), background 1.0: the parent's confidence for the distillation."""
    key = f"{'ng_' if no_graph_constraint else ''}per_predicate_R@{k}"
    if key not in metrics:
        raise KeyError(f"metrics have no {key!r} (keys: {sorted(k_ for k_ in metrics if 'per_predicate' in k_)})")
    vals = [float(v) for v in metrics[key]]
    if len(vals) != num_rel_classes - 1:
        raise ValueError(f"{key} has {len(vals)} values, expected P = {num_rel_classes - 1}")
    conf = torch.tensor([1.0] + vals, dtype=torch.float32)
    return torch.nan_to_num(conf, nan=0.0)
