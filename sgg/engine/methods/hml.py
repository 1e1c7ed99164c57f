"""HML training (``MODEL.HML.ENABLED``): Hierarchical Memory Learning (specs/hml.md).

Stage 1 trains on the coarse predicates (fine-labelled pairs ignored); then the Fisher estimate
and the stage-1 files (anchor parameters, Fisher, parent head, hierarchy[, confidence]) are written
to MODEL.HML.STAGE1_DIR; stage 2 trains on all predicates with class-balanced CE + prediction
distillation + parameter anchoring (:class:`sgg.distill.hml.HMLLoss`). MODEL.HML.STAGE 0 runs both
(re-running resumes where it stopped), 1 only stage 1, 2 only stage 2 from the stage-1 files (any
number of ranks).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict

from sgg.checkpoint import Checkpointer
from sgg.utils import comm

from ..common import (build_relation_model, evaluate_split, test_after_training, train_loader_fn, unwrap,
                      validation_fn)
from . import TRAINING_METHOD_REGISTRY, TrainingMethod

logger = logging.getLogger(__name__)


@TRAINING_METHOD_REGISTRY.register(name="hml")
class HMLTraining(TrainingMethod):
    name = "hml"
    switch = "MODEL.HML.ENABLED"
    switch_off = "False"
    own_keys = ("MODEL.USE_CONFIDENCE", "MODEL.DISTILL_TEMPERATURE", "SOLVER.LAMBDA_FOR_PARAM",
                "SOLVER.ALPHA_FOR_FISHER", "SOLVER.DISTILL_TYPE", "MODEL.HML.")
    turn_on = "add MODEL.HML.ENABLED True (or use tools/relation_train_distill_fisher_only.py)"

    @classmethod
    def enabled(cls, cfg) -> bool:
        return bool(cfg.MODEL.HML.ENABLED)

    @classmethod
    def validate(cls, cfg) -> None:
        from sgg.distill import hml

        hml.validate_hml_config(cfg)

    @classmethod
    def train(cls, cfg, resume: bool = True) -> Dict[str, Any]:
        from sgg.data.build import build_train_loader
        from sgg.distill import hml
        from sgg.protocol import protocol_from_config

        from ..trainer import Trainer

        mode = protocol_from_config(cfg)
        stage = cfg.MODEL.HML.STAGE
        s1_dir = hml.stage1_dir(cfg)

        if stage in (0, 1) and not os.path.isfile(hml.stage1_file(s1_dir)):
            model, train_dataset, stats = build_relation_model(cfg)
            hier = hml.build_hierarchy(cfg, stats)
            logger.info("HML stage 1: coarse predicates %s", [stats["rel_classes"][i] for i in hier.coarse_ids])
            hml.configure_stage1(model, hier)
            cfg1 = hml.stage_config(cfg, 1)
            trainer = Trainer.from_config(cfg1, model, train_loader_fn(cfg1, train_dataset),
                                          evaluate_fn=validation_fn(cfg1))
            trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
            state = trainer.train()
            if state not in ("completed", "stopped_early"):
                return {"state": state, "stage": 1}
            params = hml.hml_anchor_params(trainer.model)
            fisher = hml.estimate_fisher(trainer.model, params,
                                         build_train_loader(cfg1, mode=mode, start_iter=0, dataset=train_dataset),
                                         alpha=cfg.SOLVER.ALPHA_FOR_FISHER, num_batches=cfg.MODEL.HML.FISHER_BATCHES,
                                         progress=comm.is_main_process())
            confidence = None
            if cfg.MODEL.USE_CONFIDENCE:
                metrics = evaluate_split(cfg1, unwrap(trainer.model), cfg.DATASETS.VAL[0], save=False)
                if comm.is_main_process():
                    confidence = hml.confidence_from_metrics(metrics, train_dataset.num_predicates,
                                                             cfg.MODEL.HML.CONFIDENCE_K)
            if comm.is_main_process():
                hml.save_stage1(s1_dir, hml.snapshot(params), fisher, hier, hml.relation_head_state(trainer.model),
                                confidence, meta={"iterations": cfg1.SOLVER.MAX_ITER, "mode": mode})
            comm.synchronize()
            del trainer, model
        if stage == 1:
            return {"state": "completed", "stage": 1}

        st = hml.load_stage1(s1_dir)
        model, train_dataset, stats = build_relation_model(cfg)
        if cfg.MODEL.WEIGHT and not (resume and Checkpointer(model, cfg.OUTPUT_DIR).has_checkpoint()):
            # stage 2 starts as stage 1 did (MODEL.WEIGHT: sgg's or SGB's), then takes stage 1's head
            Checkpointer(model).load(cfg.MODEL.WEIGHT, model_only=True)
        if not cfg.MODEL.HML.FRESH_INIT_STAGE2:
            hml.init_from_stage1(model, st)
        hml_loss = hml.HMLLoss.from_config(cfg, model, st, stats["predicate_counts"])
        cfg2 = hml.stage_config(cfg, 2)
        trainer = Trainer.from_config(cfg2, model, train_loader_fn(cfg2, train_dataset),
                                      evaluate_fn=validation_fn(cfg2), extra_losses=[hml_loss])
        trainer.resume_or_load("", resume=resume)  # "" keeps the stage-1 initialisation
        state = trainer.train()
        return test_after_training(cfg2, trainer, state, stats["predicate_counts"])
