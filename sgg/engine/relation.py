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
from .launch import resolve_device

logger = logging.getLogger(__name__)


def _statistics(cfg, train_dataset):
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
    stats = _statistics(cfg, train_dataset)
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
    from sgg.data.build import build_train_loader

    from .trainer import Trainer

    mode = protocol_from_config(cfg)
    model, train_dataset, stats = build_relation_model(cfg)
    logger.info("protocol %s; %d train images; model:\n%s", mode, len(train_dataset), model)
    evaluate_fn = None
    if cfg.DATASETS.VAL and cfg.SOLVER.TO_VAL:
        evaluate_fn = partial(_validate, cfg, name=cfg.DATASETS.VAL[0])
    trainer = Trainer.from_config(
        cfg, model, lambda start_iter: build_train_loader(cfg, mode=mode, start_iter=start_iter,
                                                          dataset=train_dataset),
        evaluate_fn=evaluate_fn)
    # MODEL.WEIGHT (a full sgg relation checkpoint) initialises when there is nothing to resume.
    trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    state = trainer.train()
    results: Dict[str, Any] = {"state": state}
    if state in ("completed", "stopped_early"):  # not after preemption (SIGTERM)
        eval_model = trainer.ema.model if getattr(trainer, "ema", None) is not None else trainer.model
        for name in cfg.DATASETS.TEST:
            results[name] = evaluate_split(cfg, _unwrap(eval_model), name,
                                           predicate_frequency=stats["predicate_counts"])
    return results


def _validate(cfg, model, name: str) -> Dict[str, Any]:
    return evaluate_split(cfg, _unwrap(model), name, save=False)


def _unwrap(model):
    return model.module if hasattr(model, "module") else model


def test_relation(cfg, weights: str = "") -> Dict[str, Any]:
    """Load ``weights`` (a checkpoint file, or a directory whose ``last_checkpoint`` names one;
    default OUTPUT_DIR as SGB's test command) and evaluate every DATASETS.TEST split."""
    model, _, stats = build_relation_model(cfg)
    Checkpointer(model, cfg.OUTPUT_DIR).load(weights or cfg.MODEL.WEIGHT or cfg.OUTPUT_DIR, model_only=True)
    return {name: evaluate_split(cfg, model, name, predicate_frequency=stats["predicate_counts"])
            for name in cfg.DATASETS.TEST}
