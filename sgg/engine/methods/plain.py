"""Plain relation training (Scene-Graph-Benchmark's relation_train_net)."""
from __future__ import annotations

import logging
from typing import Any, Dict

from sgg.protocol import protocol_from_config

from ..common import build_relation_model, build_relation_trainer, test_after_training
from . import TRAINING_METHOD_REGISTRY, TrainingMethod

logger = logging.getLogger(__name__)


@TRAINING_METHOD_REGISTRY.register(name="plain")
class PlainTraining(TrainingMethod):
    """The model of the config on its loss alone; ``MODEL.WEIGHT`` (a full sgg relation checkpoint)
    initialises it when there is nothing to resume."""

    name = "plain"

    @classmethod
    def enabled(cls, cfg) -> bool:
        return True

    @classmethod
    def train(cls, cfg, resume: bool = True) -> Dict[str, Any]:
        model, train_dataset, stats = build_relation_model(cfg)
        logger.info("protocol %s; %d train images; model:\n%s", protocol_from_config(cfg), len(train_dataset), model)
        trainer = build_relation_trainer(cfg, model, train_dataset)
        trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
        state = trainer.train()
        return test_after_training(cfg, trainer, state, stats["predicate_counts"])
