"""Optimizers and LR schedules (SGB's, with the LR scaling made explicit)."""
from .build import (
    build_lr_scheduler,
    build_optimizer,
    effective_base_lr,
    get_param_groups,
)
from .lr_scheduler import (
    WarmupCosineLR,
    WarmupMultiStepLR,
    WarmupReduceLROnPlateau,
    warmup_factor_at,
)

__all__ = [
    "WarmupCosineLR",
    "WarmupMultiStepLR",
    "WarmupReduceLROnPlateau",
    "build_lr_scheduler",
    "build_optimizer",
    "effective_base_lr",
    "get_param_groups",
    "warmup_factor_at",
]
