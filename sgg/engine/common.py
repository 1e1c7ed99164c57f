"""Building blocks of the relation jobs, shared by every training method (:mod:`.methods`) and the
test job: build the model for training, its trainer, evaluate a split, test after training."""
from __future__ import annotations

import logging
import os
from functools import partial
from typing import Any, Dict, Optional, Sequence

from sgg.protocol import protocol_from_config
from sgg.utils import comm
from sgg.utils.device import resolve_device

from .inference import build_relation_evaluator, relation_inference, save_metrics

logger = logging.getLogger(__name__)

__all__ = ["build_relation_model", "build_relation_trainer", "evaluate_split", "test_after_training",
           "train_statistics", "unwrap"]


def unwrap(model):
    """The module inside a DDP wrapper (the model itself otherwise)."""
    return model.module if hasattr(model, "module") else model


def train_statistics(cfg) -> Dict[str, Any]:
    """SGB's train statistics of DATASETS.TRAIN[0] (own filters, independent of the protocol), cached
    under OUTPUT_DIR."""
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics

    files = get_dataset_files(cfg.DATASETS.TRAIN[0], cfg.DATASETS.DATA_DIR)
    return get_dataset_statistics(files, cache_dir=cfg.OUTPUT_DIR, num_val_im=cfg.DATASETS.NUM_VAL_IMAGES)


def build_relation_model(cfg):
    """(model on its device, train dataset, statistics) for training ``cfg``: the model is built from
    the train statistics (names, frequency-bias table, counts), then the load step
    (:func:`sgg.modeling.pretrained.load_pretrained`) reads the detector checkpoint, backbone weights
    and word vectors the config names."""
    from sgg.data.build import build_dataset
    from sgg.modeling.meta_arch import build_sgg_model
    from sgg.modeling.pretrained import load_pretrained

    mode = protocol_from_config(cfg)
    train_dataset = build_dataset(cfg, cfg.DATASETS.TRAIN[0], is_train=True, mode=mode)
    stats = train_statistics(cfg)
    model = build_sgg_model(cfg, stats, train_dataset.num_classes, train_dataset.num_predicates)
    load_pretrained(model, cfg)
    model.to(resolve_device(cfg.MODEL.DEVICE))
    return model, train_dataset, stats


def evaluate_split(cfg, model, name: str, max_images: int = -1, save: bool = True,
                   predicate_frequency=None) -> Dict[str, Any]:
    """Metrics of ``model`` on the split ``name`` (all ranks run; rank 0 gets the numbers). A split
    without images is a ValueError naming it and the cause (raised while building its loader,
    before any inference), never metrics of NaN."""
    from sgg.data.build import build_test_loader
    from sgg.evaluation import format_metrics

    mode = protocol_from_config(cfg)
    loader = build_test_loader(cfg, name, mode=mode)
    evaluator = build_relation_evaluator(cfg, loader.dataset.dataset, mode)
    out_dir = os.path.join(cfg.OUTPUT_DIR, "inference", name)
    metrics = relation_inference(model, loader, evaluator, dtype=cfg.DTYPE, max_images=max_images,
                                 predictions_file=os.path.join(out_dir, "predictions.npz") if save else None)
    if comm.is_main_process() and metrics:
        metrics["mode"] = mode
        logger.info("%s (%s):%s", name, mode, format_metrics(metrics))
        if save:
            paths = save_metrics(metrics, out_dir, "relation_metrics", predicate_frequency)
            paths["predictions"] = os.path.join(out_dir, "predictions.npz")
            if cfg.TEST.DRAW_IMAGES > 0:
                from .examples import draw_examples

                paths["scene graphs"] = ", ".join(draw_examples(model, loader, out_dir, cfg.TEST.DRAW_IMAGES,
                                                                dtype=cfg.DTYPE))
            logger.info("%s results:\n%s", name, "\n".join(f"  {k}: {v}" for k, v in paths.items()))
    return metrics


def _validate(cfg, model, name: str) -> Dict[str, Any]:
    return evaluate_split(cfg, unwrap(model), name, save=False)


def validation_fn(cfg):
    """The trainer's validation callable for ``cfg`` (DATASETS.VAL[0] every SOLVER.VAL_PERIOD), or
    None when SOLVER.TO_VAL is off or there is no validation split."""
    if cfg.DATASETS.VAL and cfg.SOLVER.TO_VAL:
        from sgg.data.catalog import split_name

        name = cfg.DATASETS.VAL[0]
        if cfg.DATASETS.NUM_VAL_IMAGES <= 0 and split_name(name)[1] == "val":
            # found now, not at the first validation hours into the run
            raise ValueError(f"DATASETS.VAL names '{name}' but DATASETS.NUM_VAL_IMAGES = "
                             f"{cfg.DATASETS.NUM_VAL_IMAGES}: the val split (the first NUM_VAL_IMAGES train images) "
                             f"is empty. Fix: set DATASETS.NUM_VAL_IMAGES > 0, or SOLVER.TO_VAL False")
        return partial(_validate, cfg, name=name)
    return None


def train_loader_fn(cfg, dataset):
    """``start_iter -> loader`` over ``dataset`` with ``cfg``'s protocol (what the trainer rebuilds
    on resume)."""
    from sgg.data.build import build_train_loader

    mode = protocol_from_config(cfg)
    return lambda start_iter: build_train_loader(cfg, mode=mode, start_iter=start_iter, dataset=dataset)


def build_relation_trainer(cfg, model, train_dataset, eval_cfg=None, extra_losses: Sequence = ()):
    """The :class:`~sgg.engine.trainer.Trainer` of a relation job: ``cfg``'s protocol loader over
    ``train_dataset``, validation on DATASETS.VAL[0] with ``eval_cfg`` (default ``cfg``) every
    SOLVER.VAL_PERIOD when SOLVER.TO_VAL, and ``extra_losses``."""
    from .trainer import Trainer

    return Trainer.from_config(cfg, model, train_loader_fn(cfg, train_dataset),
                               evaluate_fn=validation_fn(eval_cfg if eval_cfg is not None else cfg),
                               extra_losses=extra_losses)


def test_after_training(cfg, trainer, state: str, predicate_frequency: Optional[Any] = None) -> Dict[str, Any]:
    """Evaluate the trained model (its EMA when there is one) on every DATASETS.TEST split, unless
    training was preempted (SIGTERM). Returns ``{"state": state, <split>: metrics, ...}``."""
    results: Dict[str, Any] = {"state": state}
    if state == "preempted":
        logger.warning("training stopped by SIGTERM: no test (the command exits with status 143; run it again "
                       "to resume and test)")
    if state in ("completed", "stopped_early"):
        eval_model = trainer.ema.model if getattr(trainer, "ema", None) is not None else trainer.model
        for name in cfg.DATASETS.TEST:
            results[name] = evaluate_split(cfg, unwrap(eval_model), name, predicate_frequency=predicate_frequency)
    return results
