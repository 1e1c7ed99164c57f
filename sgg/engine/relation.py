"""The relation train / test jobs (SGB's relation_train_net / relation_test_net), as library code.

The commands (``sgg relation_train_net``, ``tools/relation_train_net.py``) only parse arguments and
call :func:`train_relation` / :func:`test_relation`. The training method (plain, HML, STDG, ...)
is chosen by :func:`sgg.engine.methods.select_training_method`; the test job loads the trained
model with :func:`sgg.engine.loading.load_trained_model` and never builds the training set.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Sequence

from .common import build_relation_model, build_relation_trainer, evaluate_split  # noqa: F401  (re-exported)
from .loading import load_trained_model
from .methods import check_method_keys, select_training_method

logger = logging.getLogger(__name__)

__all__ = ["build_relation_model", "build_relation_trainer", "evaluate_split", "test_relation", "train_relation"]


def train_relation(cfg, resume: bool = True, opts: Sequence[str] = ()) -> Dict[str, Any]:
    """Train the relation model of ``cfg`` with its training method; validate on DATASETS.VAL[0]
    every SOLVER.VAL_PERIOD; test on every DATASETS.TEST split at the end. Returns the test
    metrics (rank 0) and ``state``.

    Keys of a training method the config leaves off (``SOLVER.LAMBDA_FOR_PARAM 2.0`` without
    ``MODEL.HML.ENABLED True``) stop the run with a :class:`~sgg.config.ConfigError`
    (:func:`~sgg.engine.methods.check_method_keys`; ``opts``: the command line's ``KEY VALUE``
    overrides, where such a key counts even at its default value)."""
    check_method_keys(cfg, opts, job="train")
    method = select_training_method(cfg)
    logger.info("training method: %s", method.name)
    return method.train(cfg, resume=resume)


def test_relation(cfg, weights: str = "", opts: Sequence[str] = ()) -> Dict[str, Any]:
    """Load ``weights`` (a checkpoint file, or a directory whose ``last_checkpoint`` names one;
    default MODEL.WEIGHT, else OUTPUT_DIR as SGB's test command) and evaluate every DATASETS.TEST
    split. Training-method keys are accepted whatever the method switches say (evaluation reads
    none; a warning lists those of a method that is off)."""
    check_method_keys(cfg, opts, job="test")
    trained = load_trained_model(cfg, weights or cfg.MODEL.WEIGHT or cfg.OUTPUT_DIR)
    return {name: evaluate_split(trained.cfg, trained.model, name, predicate_frequency=trained.predicate_counts)
            for name in trained.cfg.DATASETS.TEST}
