"""Training methods of the relation job: plain, HML, STDG, and the ones to come.

Each method is a :class:`TrainingMethod` registered in :data:`TRAINING_METHOD_REGISTRY`. It says
from the config whether it is on (:meth:`TrainingMethod.enabled`: its own switch, e.g.
``MODEL.HML.ENABLED`` or ``MODEL.STDG.MODE``), trains (:meth:`TrainingMethod.train`), and gives
the config that runs its trained model (:meth:`TrainingMethod.inference_config`, used by test,
prediction and export). :func:`select_training_method` picks the one method that is on ("plain"
when none is). Adding a method is one new module here (a registered subclass) plus its import
below; its losses, if any, are a :class:`sgg.distill.Distillation`.
"""
from __future__ import annotations

from typing import Any, Dict, List

from sgg.registry import Registry

__all__ = ["TRAINING_METHOD_REGISTRY", "TrainingMethod", "select_training_method"]

#: name -> :class:`TrainingMethod` subclass
TRAINING_METHOD_REGISTRY = Registry("TRAINING_METHOD")


class TrainingMethod:
    """A way to train the relation model of a config (subclass and register)."""

    #: registered name
    name: str = ""

    @classmethod
    def enabled(cls, cfg) -> bool:
        """Whether ``cfg`` asks for this method (its own switch)."""
        raise NotImplementedError

    @classmethod
    def validate(cls, cfg) -> None:
        """Raise :class:`sgg.config.ConfigError` for settings this method cannot run with."""

    @classmethod
    def train(cls, cfg, resume: bool = True) -> Dict[str, Any]:
        """Train; validate on DATASETS.VAL[0] every SOLVER.VAL_PERIOD; test on every DATASETS.TEST
        split at the end. Returns ``{"state": ..., <test split>: metrics}`` (metrics on rank 0)."""
        raise NotImplementedError

    @classmethod
    def inference_config(cls, cfg):
        """The config to evaluate / run the model trained with ``cfg`` (default: ``cfg`` itself)."""
        return cfg


def select_training_method(cfg, validate: bool = True) -> type:
    """The registered method whose switch ``cfg`` turns on; "plain" when none does. Two methods on
    at once is a :class:`~sgg.config.ConfigError` naming both. ``validate``: also run the method's
    config checks (training; inference only needs :meth:`TrainingMethod.inference_config`)."""
    from sgg.config import ConfigError

    on: List[str] = [name for name in TRAINING_METHOD_REGISTRY.names()
                     if name != "plain" and TRAINING_METHOD_REGISTRY.get(name).enabled(cfg)]
    if len(on) > 1:
        raise ConfigError(f"the config turns on more than one training method ({', '.join(on)}); choose one")
    method = TRAINING_METHOD_REGISTRY.get(on[0] if on else "plain")
    if validate:
        method.validate(cfg)
    return method


# The built-in methods register themselves.
from . import hml, plain, stdg  # noqa: E402,F401
