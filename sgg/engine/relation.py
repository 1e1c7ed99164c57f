"""The relation train / test jobs (SGB's relation_train_net / relation_test_net), as library code.

The scripts in ``tools/`` only parse arguments and call :func:`train_relation` /
:func:`test_relation`.
"""
from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any, Dict

from sgg.checkpoint import Checkpointer
from sgg.config import protocol_from_config
from sgg.utils import comm

from .inference import build_relation_evaluator, relation_inference, save_metrics
from sgg.utils.device import resolve_device

logger = logging.getLogger(__name__)


def _statistics(cfg):
    """SGB's train statistics of DATASETS.TRAIN[0] (own filters, independent of the protocol), cached."""
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics

    files = get_dataset_files(cfg.DATASETS.TRAIN[0], cfg.DATASETS.DATA_DIR)
    return get_dataset_statistics(files, cache_dir=cfg.OUTPUT_DIR, num_val_im=cfg.DATASETS.NUM_VAL_IMAGES)


def build_relation_model(cfg):
    """(model on its device, train dataset, statistics) for ``cfg``."""
    from sgg.data.build import build_dataset
    from sgg.modeling.meta_arch import build_sgg_model

    mode = protocol_from_config(cfg)
    train_dataset = build_dataset(cfg, cfg.DATASETS.TRAIN[0], is_train=True, mode=mode)
    stats = _statistics(cfg)
    model = build_sgg_model(cfg, stats, train_dataset.num_classes, train_dataset.num_predicates)
    model.to(resolve_device(cfg.MODEL.DEVICE))
    return model, train_dataset, stats


def evaluate_split(cfg, model, name: str, max_images: int = -1, save: bool = True,
                   predicate_frequency=None) -> Dict[str, Any]:
    """Metrics of ``model`` on the split ``name`` (all ranks run; rank 0 gets the numbers)."""
    from sgg.data.build import build_test_loader
    from sgg.evaluation import format_report

    mode = protocol_from_config(cfg)
    loader = build_test_loader(cfg, name, mode=mode)
    evaluator = build_relation_evaluator(cfg, loader.dataset.dataset, mode)
    out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
    metrics = relation_inference(model, loader, evaluator, dtype=cfg.DTYPE, max_images=max_images,
                                 predictions_file=os.path.join(out_dir, "predictions.npz") if save else None)
    if comm.is_main_process() and metrics:
        metrics["mode"] = mode
        logger.info("%s (%s):%s", name, mode, format_report(metrics))
        if save:
            save_metrics(metrics, out_dir, "relation_metrics", predicate_frequency)
    return metrics


def train_relation(cfg, resume: bool = True) -> Dict[str, Any]:
    """Train the relation model of ``cfg``; validate on DATASETS.VAL[0] every SOLVER.VAL_PERIOD;
    test on every DATASETS.TEST split at the end. Returns the test metrics (rank 0)."""
    if cfg.MODEL.HML.ENABLED:
        return train_relation_hml(cfg, resume=resume)
    if cfg.MODEL.STDG.MODE:
        from .stdg import train_stdg

        return train_stdg(cfg, resume=resume)
    model, train_dataset, stats = build_relation_model(cfg)
    logger.info("protocol %s; %d train images; model:\n%s", protocol_from_config(cfg), len(train_dataset), model)
    trainer = build_relation_trainer(cfg, model, train_dataset)
    # MODEL.WEIGHT (a full sgg relation checkpoint) initialises when there is nothing to resume.
    trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    state = trainer.train()
    return _test_after_training(cfg, trainer, state, stats)


def build_relation_trainer(cfg, model, train_dataset, eval_cfg=None, extra_losses=()):
    """The :class:`~sgg.engine.trainer.Trainer` of a relation job: ``cfg``'s protocol loader over
    ``train_dataset``, validation on DATASETS.VAL[0] with ``eval_cfg`` (default ``cfg``) every
    SOLVER.VAL_PERIOD when SOLVER.TO_VAL, and ``extra_losses``."""
    from sgg.data.build import build_train_loader

    from .trainer import Trainer

    mode = protocol_from_config(cfg)
    evaluate_fn = None
    if cfg.DATASETS.VAL and cfg.SOLVER.TO_VAL:
        evaluate_fn = partial(_validate, eval_cfg if eval_cfg is not None else cfg, name=cfg.DATASETS.VAL[0])
    return Trainer.from_config(
        cfg, model, lambda start_iter: build_train_loader(cfg, mode=mode, start_iter=start_iter,
                                                          dataset=train_dataset),
        evaluate_fn=evaluate_fn, extra_losses=extra_losses)


def _test_after_training(cfg, trainer, state: str, stats) -> Dict[str, Any]:
    results: Dict[str, Any] = {"state": state}
    if state in ("completed", "stopped_early"):  # not after preemption (SIGTERM)
        eval_model = trainer.ema.model if getattr(trainer, "ema", None) is not None else trainer.model
        for name in cfg.DATASETS.TEST:
            results[name] = evaluate_split(cfg, _unwrap(eval_model), name,
                                           predicate_frequency=stats["predicate_counts"])
    return results


def train_relation_hml(cfg, resume: bool = True) -> Dict[str, Any]:
    """HML (MODEL.HML.ENABLED): stage 1 on the coarse predicates (fine-labelled pairs ignored),
    then the Fisher estimate and the stage-1 files (anchor parameters, Fisher, parent head,
    hierarchy[, confidence]) in MODEL.HML.STAGE1_DIR, then stage 2 on all predicates with
    class-balanced CE + prediction distillation + parameter anchoring. MODEL.HML.STAGE 0 runs both
    (re-running resumes where it stopped), 1 only stage 1, 2 only stage 2 from the stage-1 files
    (any number of ranks)."""
    import os

    from sgg.data.build import build_train_loader
    from sgg.distill import hml

    from .trainer import Trainer

    hml.validate_hml_config(cfg)
    mode = protocol_from_config(cfg)
    stage = cfg.MODEL.HML.STAGE
    s1_dir = hml.stage1_dir(cfg)

    def loader(c, dataset):
        return lambda start_iter: build_train_loader(c, mode=mode, start_iter=start_iter, dataset=dataset)

    def validator(c):
        return partial(_validate, c, name=c.DATASETS.VAL[0]) if c.DATASETS.VAL and c.SOLVER.TO_VAL else None

    if stage in (0, 1) and not os.path.isfile(hml.stage1_file(s1_dir)):
        model, train_dataset, stats = build_relation_model(cfg)
        hier = hml.build_hierarchy(cfg, stats)
        logger.info("HML stage 1: coarse predicates %s", [stats["rel_classes"][i] for i in hier.coarse_ids])
        hml.configure_stage1(model, hier)
        cfg1 = hml.stage_config(cfg, 1)
        trainer = Trainer.from_config(cfg1, model, loader(cfg1, train_dataset), evaluate_fn=validator(cfg1))
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
            metrics = evaluate_split(cfg1, _unwrap(trainer.model), cfg.DATASETS.VAL[0], save=False)
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
    if not cfg.MODEL.HML.FRESH_INIT_STAGE2:
        hml.init_from_stage1(model, st)
    hml_loss = hml.HMLLoss.from_config(cfg, model, st, stats["predicate_counts"])
    cfg2 = hml.stage_config(cfg, 2)
    trainer = Trainer.from_config(cfg2, model, loader(cfg2, train_dataset), evaluate_fn=validator(cfg2),
                                  extra_losses=[hml_loss])
    trainer.resume_or_load("", resume=resume)  # "" keeps the stage-1 initialisation
    state = trainer.train()
    return _test_after_training(cfg2, trainer, state, stats)


def _validate(cfg, model, name: str) -> Dict[str, Any]:
    return evaluate_split(cfg, _unwrap(model), name, save=False)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def test_relation(cfg, weights: str = "") -> Dict[str, Any]:
    """Load ``weights`` (a checkpoint file, or a directory whose ``last_checkpoint`` names one;
    default OUTPUT_DIR as SGB's test command) and evaluate every DATASETS.TEST split."""
    from .stdg import inference_config

    cfg = inference_config(cfg)  # STDG combine: the student is RGB-only, no depth maps are read
    model, _, stats = build_relation_model(cfg)
    Checkpointer(model, cfg.OUTPUT_DIR).load(weights or cfg.MODEL.WEIGHT or cfg.OUTPUT_DIR, model_only=True,
                                             prefer_ema=True)
    return {name: evaluate_split(cfg, model, name, predicate_frequency=stats["predicate_counts"])
            for name in cfg.DATASETS.TEST}
