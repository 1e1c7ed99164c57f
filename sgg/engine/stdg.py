"""The STDG jobs (``MODEL.STDG.MODE``), as library code called by :func:`sgg.engine.relation.train_relation`
/ :func:`~sgg.engine.relation.test_relation` (see :mod:`sgg.distill.depth_teacher`).

* ``"depth"`` (stage 1): the one-stage model trains, validates and tests on the depth encoding
  (the model's ``input_key`` is ``"depth"``; the loaders read the depth maps).
* ``"combine"`` (stage 2): the RGB student trains with the frozen depth teacher as an extra loss
  (the train loader reads depth for the teacher); validation, the final test and
  :func:`inference_config` users (test / predict) read RGB only: no depth map is needed.
"""
from __future__ import annotations

import logging
from typing import Any, Dict

from sgg.config import protocol_from_config

logger = logging.getLogger(__name__)

__all__ = ["inference_config", "train_stdg"]


def inference_config(cfg):
    """The config to evaluate / run the trained model of ``cfg`` with: in ``MODEL.STDG.MODE
    "combine"`` the student is a plain RGB model, so ``INPUT.LOAD_DEPTH`` is turned off (a frozen
    copy); any other config is returned as it is (the depth model still reads depth)."""
    if cfg.MODEL.STDG.MODE != "combine" or not cfg.INPUT.LOAD_DEPTH:
        return cfg
    out = cfg.clone()
    out.defrost()
    out.INPUT.LOAD_DEPTH = False
    out.freeze()
    return out


def train_stdg(cfg, resume: bool = True) -> Dict[str, Any]:
    """Train STDG stage ``MODEL.STDG.MODE`` of ``cfg`` ("depth" or "combine"; "" is a plain
    :func:`~sgg.engine.relation.train_relation`), validate on DATASETS.VAL[0] every SOLVER.VAL_PERIOD,
    test on every DATASETS.TEST split at the end (RGB only for "combine"). Returns the test metrics
    (rank 0) and ``state``. Resuming reloads the teacher from MODEL.STDG.TEACHER_WEIGHTS (it is
    not in the student's checkpoint)."""
    from sgg.distill.depth_teacher import DepthTeacherDistillation, validate_stdg_config

    from .relation import _test_after_training, build_relation_model, build_relation_trainer, train_relation

    validate_stdg_config(cfg)
    stage = cfg.MODEL.STDG.MODE
    if not stage:
        return train_relation(cfg, resume=resume)
    model, train_dataset, stats = build_relation_model(cfg)
    distill = None
    if stage == "combine":
        distill = DepthTeacherDistillation.from_config(cfg, model, train_dataset.num_classes,
                                                       train_dataset.num_predicates, attach=False)
    logger.info("STDG %s (protocol %s); %d train images; model:\n%s", stage, protocol_from_config(cfg),
                len(train_dataset), model)
    eval_cfg = inference_config(cfg)
    trainer = build_relation_trainer(cfg, model, train_dataset, eval_cfg=eval_cfg,
                                     extra_losses=[distill] if distill is not None else ())
    if distill is not None:
        distill.attach(trainer.model)  # after the trainer: its EMA copy carries no tap
    trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    try:
        state = trainer.train()
    finally:
        if distill is not None:
            distill.detach()
    return _test_after_training(eval_cfg, trainer, state, stats)
