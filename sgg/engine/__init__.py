"""Training engine: process setup (torchrun), the trainer and its hooks."""

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
from sgg.utils.device import move_to_device, resolve_device

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
