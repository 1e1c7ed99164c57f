"""Iteration-based learning-rate schedules with SGB's warm-up.

Convention (as Scene-Graph-Benchmark.pytorch): a schedule is stepped once per iteration, after the
optimizer step. Before iteration ``i`` (1-based) runs, ``last_iter == i - 1`` and every param group
has ``lr = base_lr * warmup_factor(i - 1) * decay(i - 1)``, where ``base_lr`` is the group's
``initial_lr`` (its LR when the schedule was built, so per-group factors such as the bias LR factor
are kept).

Warm-up (``warmup_iters`` W, ``warmup_factor`` f): for ``t < W``

* ``"linear"``:   factor = f * (1 - t / W) + t / W   (f at t = 0, rising to 1 at t = W)
* ``"constant"``: factor = f

and 1 from ``t >= W`` on.

The schedules are plain objects (not ``torch.optim.lr_scheduler.LRScheduler`` subclasses) with the
same small interface: ``step()``, ``get_last_lr()``, ``last_iter`` (alias ``last_epoch``),
``state_dict()`` / ``load_state_dict()``. The state dict holds only the *progress* (iteration,
plateau bookkeeping); the hyper-parameters (milestones, gamma, ...) come from the constructor, so a
resumed run follows the schedule of its current config.
"""
from __future__ import annotations

import logging
import math
from bisect import bisect_right
from typing import Any, Dict, List, Optional, Sequence

import torch

logger = logging.getLogger(__name__)

_WARMUP_METHODS = ("constant", "linear")


def warmup_factor_at(t: int, warmup_iters: int, warmup_factor: float, method: str) -> float:
    """SGB's warm-up multiplier at iteration ``t`` (0-based count of completed iterations)."""
    if t >= warmup_iters:
        return 1.0
    if method == "constant":
        return float(warmup_factor)
    if method == "linear":
        alpha = float(t) / warmup_iters
        return float(warmup_factor) * (1.0 - alpha) + alpha
    raise ValueError(f"unknown warm-up method {method!r}; expected one of {_WARMUP_METHODS}")


class _WarmupScheduler:
    """Shared machinery: base LRs, the iteration counter, applying the LR to the param groups."""

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_factor: float = 1.0 / 3,
                 warmup_iters: int = 500, warmup_method: str = "linear") -> None:
        if warmup_method not in _WARMUP_METHODS:
            raise ValueError(f"warmup_method must be one of {_WARMUP_METHODS}, got {warmup_method!r}")
        if warmup_iters < 0:
            raise ValueError(f"warmup_iters must be >= 0, got {warmup_iters}")
        self.optimizer = optimizer
        self.warmup_factor = float(warmup_factor)
        self.warmup_iters = int(warmup_iters)
        self.warmup_method = warmup_method
        for group in optimizer.param_groups:
            group.setdefault("initial_lr", group["lr"])
        self.base_lrs: List[float] = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_iter = 0
        self._apply()

    # -- the schedule ---------------------------------------------------------------------------
    def _decay(self, t: int) -> float:
        """Multiplier after warm-up at iteration ``t``; overridden by each schedule."""
        return 1.0

    def factor_at(self, t: int) -> float:
        """Total LR multiplier (warm-up x decay) at iteration ``t``."""
        return warmup_factor_at(t, self.warmup_iters, self.warmup_factor, self.warmup_method) * self._decay(t)

    def get_lr(self) -> List[float]:
        f = self.factor_at(self.last_iter)
        return [base * f for base in self.base_lrs]

    def _apply(self) -> None:
        lrs = self.get_lr()
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self._last_lr = lrs

    # -- the interface --------------------------------------------------------------------------
    def step(self) -> None:
        """Advance one iteration and set the LR of every param group for the next one."""
        self.last_iter += 1
        self._apply()

    def get_last_lr(self) -> List[float]:
        return list(self._last_lr)

    @property
    def last_epoch(self) -> int:  # torch / SGB name
        return self.last_iter

    @property
    def stop(self) -> bool:
        """True when the schedule asks the trainer to end training early (plateau only)."""
        return False

    def state_dict(self) -> Dict[str, Any]:
        return {"last_iter": self.last_iter}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        # SGB's maskrcnn-benchmark checkpoints call the counter last_epoch.
        self.last_iter = int(state.get("last_iter", state.get("last_epoch", 0)))
        self._apply()

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(warmup_iters={self.warmup_iters}, warmup_factor={self.warmup_factor}, "
                f"warmup_method={self.warmup_method!r}, last_iter={self.last_iter})")


class WarmupMultiStepLR(_WarmupScheduler):
    """``lr = base * warmup(t) * gamma ** (number of milestones <= t)`` (SGB's WarmupMultiStepLR)."""

    def __init__(self, optimizer: torch.optim.Optimizer, milestones: Sequence[int], gamma: float = 0.1,
                 warmup_factor: float = 1.0 / 3, warmup_iters: int = 500, warmup_method: str = "linear") -> None:
        milestones = list(milestones)
        if milestones != sorted(milestones):
            raise ValueError(f"milestones must be increasing integers, got {milestones}")
        self.milestones = milestones
        self.gamma = float(gamma)
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method)

    def _decay(self, t: int) -> float:
        return self.gamma ** bisect_right(self.milestones, t)


class WarmupCosineLR(_WarmupScheduler):
    """Cosine decay over ``max_iter`` iterations times the warm-up factor.

    ``lr = base * warmup(t) * (m + (1 - m) * 0.5 * (1 + cos(pi * t / max_iter)))`` with
    ``m = min_lr_factor``; ``t`` is clamped to ``max_iter``.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, max_iter: int, min_lr_factor: float = 0.0,
                 warmup_factor: float = 1.0 / 3, warmup_iters: int = 500, warmup_method: str = "linear") -> None:
        if max_iter < 1:
            raise ValueError(f"max_iter must be >= 1, got {max_iter}")
        self.max_iter = int(max_iter)
        self.min_lr_factor = float(min_lr_factor)
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method)

    def _decay(self, t: int) -> float:
        t = min(t, self.max_iter)
        m = self.min_lr_factor
        return m + (1.0 - m) * 0.5 * (1.0 + math.cos(math.pi * t / self.max_iter))


class WarmupReduceLROnPlateau(_WarmupScheduler):
    """SGB's WarmupReduceLROnPlateau: decay by ``gamma`` when a validation metric stops improving.

    ``lr = base * warmup(t) * gamma ** stage_count``. :meth:`step` advances the iteration every
    iteration; :meth:`report` (or ``step(metric)``) feeds a validation result (higher is better,
    e.g. val R@100). The bookkeeping is SGB's, line for line:

    * ``metric > best + threshold`` -> new best, bad count 0; otherwise bad count + 1;
    * while in cool-down (``cooldown`` reports after a decay) the bad count is reset to 0;
    * bad count >= ``patience`` -> ``stage_count += 1`` (LR x ``gamma``), cool-down restarts.

    :attr:`stop` turns True once ``stage_count >= max_decay_step`` (when ``max_decay_step > 0``);
    SGB's training loop then ends training (SOLVER.SCHEDULE.MAX_DECAY_STEP).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, gamma: float = 0.5, warmup_factor: float = 1.0 / 3,
                 warmup_iters: int = 500, warmup_method: str = "linear", patience: int = 2,
                 threshold: float = 1e-4, cooldown: int = 1, max_decay_step: int = 0) -> None:
        self.gamma = float(gamma)
        self.patience = int(patience)
        self.threshold = float(threshold)
        self.cooldown = int(cooldown)
        self.max_decay_step = int(max_decay_step)
        self.stage_count = 0
        self.best = -1e12
        self.num_bad_epochs = 0
        self.under_cooldown = self.cooldown
        super().__init__(optimizer, warmup_factor, warmup_iters, warmup_method)

    def _decay(self, t: int) -> float:
        return self.gamma ** self.stage_count

    def report(self, metric: float) -> bool:
        """Feed one validation result; returns True when it triggered a decay. The new LR is
        applied to the param groups at once."""
        metric = float(metric)
        decayed = False
        if metric > self.best + self.threshold:
            self.best = metric
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.under_cooldown > 0:
            self.under_cooldown -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs >= self.patience:
            self.stage_count += 1
            self.under_cooldown = self.cooldown
            self.num_bad_epochs = 0
            decayed = True
            logger.info("ReduceLROnPlateau: no improvement over %.4f for %d validations; LR x %g "
                        "(decay %d%s)", self.best, self.patience, self.gamma, self.stage_count,
                        f" of {self.max_decay_step}" if self.max_decay_step > 0 else "")
        self._apply()
        return decayed

    def step(self, metric: Optional[float] = None) -> None:  # type: ignore[override]
        """Advance one iteration; with ``metric`` also report it first (SGB's ``step(val, epoch)``)."""
        if metric is not None:
            self.report(metric)
        super().step()

    @property
    def stop(self) -> bool:
        return self.max_decay_step > 0 and self.stage_count >= self.max_decay_step

    def state_dict(self) -> Dict[str, Any]:
        return {"last_iter": self.last_iter, "stage_count": self.stage_count, "best": self.best,
                "num_bad_epochs": self.num_bad_epochs, "under_cooldown": self.under_cooldown}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.stage_count = int(state.get("stage_count", 0))
        self.best = float(state.get("best", -1e12))
        self.num_bad_epochs = int(state.get("num_bad_epochs", state.get("num_bad_epoch", 0)))
        self.under_cooldown = int(state.get("under_cooldown", self.cooldown))
        super().load_state_dict(state)
