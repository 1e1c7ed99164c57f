"""The contract of a distillation method: a trainer ``extra_losses`` term built from the config.

A :class:`Distillation` holds what the method needs besides the model being trained (a frozen
parent / teacher, stored parameters) and reads the model's intermediate results through a
:class:`Tap` (forward hooks that only record), so the model needs no second forward and is never
changed by the method's bookkeeping. Its life cycle::

    distill = Method.from_config(cfg, model, ...)     # build (attaches unless attach=False)
    distill.attach(model)                             # install the tap (before or after the trainer)
    trainer = Trainer(..., extra_losses=[distill])    # trainer calls distill(model, batch, outputs)
    ...
    distill.detach()                                  # remove every hook; safe to call twice

or ``with distill.attached(model): trainer.train()``. The trainer
(:class:`sgg.engine.trainer.Trainer`) calls ``distill(model, batch, outputs)`` right after the
model's forward, in the same autocast region, with the unwrapped model; the entries of the
returned dict whose key starts with ``"loss"`` are scalar tensors summed into the loss, the other
scalar entries are only logged (e.g. a frozen teacher's own losses, for monitoring).
"""
from __future__ import annotations

import abc
import contextlib
from typing import Any, Dict, Iterator, List, Optional

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

__all__ = ["Distillation", "Tap"]


class Tap:
    """Forward hooks that record what a model part saw or produced in its latest (training)
    forward, until :meth:`pop`. A subclass registers its hooks and appends their handles to
    ``self._handles``; :meth:`remove` takes every one of them off again."""

    def __init__(self) -> None:
        self.record: Any = None
        self._handles: List[RemovableHandle] = []

    def pop(self) -> Any:
        """The latest record, then forget it (so the features it holds are not kept longer)."""
        rec, self.record = self.record, None
        return rec

    def is_complete(self, record: Any) -> bool:
        """Whether ``record`` holds all a forward leaves in it (default: there is one)."""
        return record is not None

    def remove(self) -> None:
        """Remove every hook (idempotent) and forget the record."""
        for h in self._handles:
            h.remove()
        self._handles = []
        self.record = None


class Distillation(abc.ABC):
    """Base of the trainer-side distillation / memory terms (module docstring).

    A subclass implements :meth:`from_config` and :meth:`__call__`, and :meth:`make_tap` when it
    reads the model's forward (the base keeps the tap: :meth:`attach` replaces it, :meth:`detach`
    removes it). Used as a context manager it detaches on exit.
    """

    #: the model part whose forward the tap records (error messages)
    tapped: str = "the model"

    def __init__(self) -> None:
        self.tap: Optional[Tap] = None

    @classmethod
    @abc.abstractmethod
    def from_config(cls, cfg: Any, model: nn.Module, *args: Any, **kwargs: Any) -> "Distillation":
        """Build from the config (and metadata such as class counts or stored stage files);
        attach to ``model`` unless ``attach=False``. Opens only the files the config names."""

    def make_tap(self, model: nn.Module) -> Optional[Tap]:
        """The :class:`Tap` to install on ``model`` (DDP unwrapped by the subclass); may also
        prepare the model (e.g. swap a head's loss). Raises when ``model`` does not fit. Default:
        no tap (a method that needs only the parameters)."""
        return None

    def attach(self, model: nn.Module) -> "Distillation":
        """Install the tap on ``model`` (replacing a previous one) and return ``self``."""
        tap = self.make_tap(model)
        self.detach()
        self.tap = tap
        return self

    def detach(self) -> None:
        """Remove the tap's hooks from the model (safe to call when not attached)."""
        if self.tap is not None:
            self.tap.remove()
            self.tap = None

    @contextlib.contextmanager
    def attached(self, model: nn.Module) -> Iterator["Distillation"]:
        """``with distill.attached(model): ...``: attached inside the block, detached after it."""
        self.attach(model)
        try:
            yield self
        finally:
            self.detach()

    def __enter__(self) -> "Distillation":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.detach()

    def require_tap(self) -> Tap:
        """The installed tap; RuntimeError when :meth:`attach` was not called."""
        if self.tap is None:
            raise RuntimeError(f"{type(self).__name__} is not attached to a model (call attach(model) before "
                               f"training)")
        return self.tap

    def pop_record(self) -> Any:
        """The tap's record of the latest training forward (then forgotten); RuntimeError when
        there is none (not attached, or no training forward since the last call)."""
        tap = self.require_tap()
        rec = tap.pop()
        if not tap.is_complete(rec):
            raise RuntimeError(f"{self.tapped} ran no training forward before {type(self).__name__} was called")
        return rec

    @abc.abstractmethod
    def __call__(self, model: nn.Module, batch: Any, outputs: Any = None) -> Dict[str, torch.Tensor]:
        """``{"loss_*": scalar tensor, ...}`` (summed into the loss), plus optional non-``loss``
        scalar tensors (logged only). ``model`` is the unwrapped model the trainer trains."""
