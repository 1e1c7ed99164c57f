"""The jobs: process setup (torchrun), the trainer and its hooks, and every train / test / predict
job built on them.

* :mod:`.relation` -- the relation train / test jobs; :mod:`.methods` -- the training methods they
  choose from (plain, HML, STDG: :data:`~.methods.TRAINING_METHOD_REGISTRY`); :mod:`.common` --
  their shared building blocks.
* :mod:`.detector` -- the detector train / test jobs.
* :mod:`.loading` -- the one way to load a trained model for inference (test, predict, export).
* :mod:`.predict` -- scene graphs of user images; :mod:`.inference` -- evaluation loops.
"""
from sgg.utils.device import move_to_device, resolve_device

from .hooks import (
    EvalHook,
    HookBase,
    LRScheduler,
    MetricsWriter,
    PeriodicCheckpointer,
    default_hooks,
)
from .launch import (
    default_argument_parser,
    init_distributed,
    seed_all,
    setup,
    shutdown_distributed,
)
from .trainer import MetricStorage, ModelEMA, Trainer

__all__ = [
    "EvalHook",
    "HookBase",
    "LRScheduler",
    "MetricStorage",
    "MetricsWriter",
    "ModelEMA",
    "PeriodicCheckpointer",
    "Trainer",
    "default_argument_parser",
    "default_hooks",
    "init_distributed",
    "move_to_device",
    "resolve_device",
    "seed_all",
    "setup",
    "shutdown_distributed",
]
