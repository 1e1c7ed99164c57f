"""Training methods of the relation job: plain, HML, STDG, and the ones to come.

Each method is a :class:`TrainingMethod` registered in :data:`TRAINING_METHOD_REGISTRY`. It says
from the config whether it is on (:meth:`TrainingMethod.enabled`: its own switch, e.g.
``MODEL.HML.ENABLED`` or ``MODEL.STDG.MODE``), trains (:meth:`TrainingMethod.train`), and gives
the config that runs its trained model (:meth:`TrainingMethod.inference_config`, used by test,
prediction and export). :func:`select_training_method` picks the one method that is on ("plain"
when none is). A method lists the keys only it reads (:attr:`TrainingMethod.own_keys`); set while
it is off, :func:`check_method_keys` stops the training job instead of ignoring them. Adding a
method is one new module here (a registered subclass) plus its import below; its losses, if any,
are a :class:`sgg.distill.Distillation`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Sequence, Tuple

from sgg.registry import Registry

__all__ = ["TRAINING_METHOD_REGISTRY", "TrainingMethod", "check_method_keys", "select_training_method",
           "unused_method_keys"]

logger = logging.getLogger(__name__)

#: name -> :class:`TrainingMethod` subclass
TRAINING_METHOD_REGISTRY = Registry("TRAINING_METHOD")


class TrainingMethod:
    """A way to train the relation model of a config (subclass and register)."""

    #: registered name
    name: str = ""
    #: the key that turns the method on (its :meth:`enabled`)
    switch: str = ""
    #: keys read only by this method (a name ending in "." = every key of that section except
    #: ``switch``): set while the method is off, the training job stops (:func:`check_method_keys`)
    own_keys: Tuple[str, ...] = ()
    #: ``switch``'s "off" value as typed on a command line
    switch_off: str = ""
    #: how to turn the method on, for that error ("add KEY VALUE")
    turn_on: str = ""

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


def _leaves(node, prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for k, v in node.items():
        if isinstance(v, dict):
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _given_keys(opts: Sequence[str]) -> List[str]:
    """The keys of ``KEY VALUE`` command-line overrides."""
    return [str(k) for k in list(opts or ())[0::2]]


def unused_method_keys(cfg, opts: Sequence[str] = ()) -> List[Tuple[type, str, Any, str]]:
    """``(method, key, value, why)`` for every key owned by a training method that ``cfg`` leaves
    off (:attr:`TrainingMethod.own_keys`) and that is either away from its default or named in
    ``opts`` (the command line's ``KEY VALUE`` overrides): keys the run would silently ignore."""
    from sgg.config import get_default_config

    defaults = _leaves(get_default_config())
    values = _leaves(cfg)
    given = set(_given_keys(opts))
    out = []
    for name in TRAINING_METHOD_REGISTRY.names():
        method = TRAINING_METHOD_REGISTRY.get(name)
        if not method.own_keys or method.enabled(cfg):
            continue
        for key, value in values.items():
            if key == method.switch or not any(key == k or (k.endswith(".") and key.startswith(k))
                                               for k in method.own_keys):
                continue
            default = defaults.get(key)
            if value != default:
                out.append((method, key, value, f"default {default!r}"))
            elif key in given:
                out.append((method, key, value, "given on the command line"))
    return out


def check_method_keys(cfg, opts: Sequence[str] = (), job: str = "train") -> None:
    """Stop a training run whose config sets keys of a method it leaves off (HML's
    ``SOLVER.LAMBDA_FOR_PARAM`` without ``MODEL.HML.ENABLED True``, ``MODEL.STDG.*`` with
    ``MODEL.STDG.MODE ""``): a :class:`~sgg.config.ConfigError` names each key with its value and
    says the fix. Called by the relation train and test jobs; ``opts`` are the command line's
    ``KEY VALUE`` overrides (a method key given there counts even at its default value).

    Only logged (a warning), not an error:

    * ``job="test"``: evaluation reads none of these keys (a model trained with
      ``tools/relation_train_distill_fisher_only.py`` is tested with the same overrides);
    * when ``opts`` turn the method off explicitly (``MODEL.HML.ENABLED False``, as the zoo's plain
      cells do): the run is plain on purpose.
    """
    from sgg.config import ConfigError

    unused = unused_method_keys(cfg, opts)
    given = set(_given_keys(opts))
    values = _leaves(cfg)
    for method in dict.fromkeys(m for m, _, _, _ in unused):
        keys = [(k, v, why) for m, k, v, why in unused if m is method]
        listed = ", ".join(f"{k} {v!r} ({why})" for k, v, why in keys)
        state = f"{method.switch} is {values[method.switch]!r}"
        label = method.name.upper()
        if job != "train":
            logger.warning("%s: the %s-only keys %s have no effect on the %s job", state, label, listed, job)
        elif method.switch in given:
            logger.warning("%s on the command line: this run trains without %s and ignores %s", state, label,
                           listed)
        else:
            s = "s" if len(keys) > 1 else ""
            raise ConfigError(
                f"{state}, so {label} is off and would silently ignore the {label}-only key{s} {listed}. "
                f"Fix: {method.turn_on}, or remove the key{s} (or pass {method.switch} {method.switch_off} "
                f"on the command line to train without {label} on purpose)")


# The built-in methods register themselves.
from . import hml, plain, stdg  # noqa: E402,F401
