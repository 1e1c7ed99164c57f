"""STDG training (``MODEL.STDG.MODE``, see :mod:`sgg.distill.depth_teacher`).

* ``"depth"`` (stage 1): the one-stage model trains, validates and tests on the depth encoding
  (the model's ``input_key`` is ``"depth"``; the loaders read the depth maps).
* ``"combine"`` (stage 2): the RGB student trains with the frozen depth teacher as an extra loss
  (the train loader reads depth for the teacher); validation, the final test and
  :meth:`STDGTraining.inference_config` users (test / predict / export) read RGB only: no depth map
  is needed.
"""
from __future__ import annotations

import logging
from typing import Any, Dict

from sgg.protocol import protocol_from_config

from ..common import build_relation_model, build_relation_trainer, test_after_training
from . import TRAINING_METHOD_REGISTRY, TrainingMethod

logger = logging.getLogger(__name__)

__all__ = ["STDGTraining", "inference_config"]


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


@TRAINING_METHOD_REGISTRY.register(name="stdg")
class STDGTraining(TrainingMethod):
    """Resuming reloads the teacher from MODEL.STDG.TEACHER_WEIGHTS (it is not in the student's
    checkpoint)."""

    name = "stdg"
    switch = "MODEL.STDG.MODE"
    switch_off = '""'
    own_keys = ("MODEL.STDG.",)
    turn_on = 'set MODEL.STDG.MODE "depth" (stage 1) or "combine" (stage 2)'

    @classmethod
    def enabled(cls, cfg) -> bool:
        return bool(cfg.MODEL.STDG.MODE)

    @classmethod
    def validate(cls, cfg) -> None:
        from sgg.distill.depth_teacher import validate_stdg_config

        validate_stdg_config(cfg)

    @classmethod
    def inference_config(cls, cfg):
        return inference_config(cfg)

    @classmethod
    def train(cls, cfg, resume: bool = True) -> Dict[str, Any]:
        from sgg.distill.depth_teacher import DepthTeacherDistillation

        stage = cfg.MODEL.STDG.MODE
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
        return test_after_training(eval_cfg, trainer, state, stats["predicate_counts"])
