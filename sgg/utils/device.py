"""Device helpers: choosing the device of a config, moving batches, the autocast of a ``DTYPE``."""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, ContextManager, Mapping, Union

import torch
from torch import nn

from . import comm

logger = logging.getLogger(__name__)

__all__ = ["AUTOCAST_DTYPES", "autocast", "move_to_device", "resolve_device"]

#: config ``DTYPE`` values that run under ``torch.autocast`` (float32 runs without)
AUTOCAST_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def resolve_device(name: Union[str, torch.device]) -> torch.device:
    """``cuda`` -> this process's GPU (LOCAL_RANK), falling back to the CPU with a warning when
    CUDA is unavailable; anything else as given."""
    if str(name).startswith("cuda"):
        if not torch.cuda.is_available():
            logger.warning("MODEL.DEVICE is %r but CUDA is not available: using the CPU", str(name))
            return torch.device("cpu")
        if str(name) == "cuda":
            if comm.is_dist():
                return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            return torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def autocast(device: torch.device, dtype: str) -> ContextManager:
    """``torch.autocast`` for ``dtype`` "float16" / "bfloat16" on ``device``; a null context for
    "float32"."""
    if dtype in AUTOCAST_DTYPES:
        return torch.autocast(torch.device(device).type, dtype=AUTOCAST_DTYPES[dtype])
    return contextlib.nullcontext()


def move_to_device(batch: Any, device: torch.device, non_blocking: bool = True) -> Any:
    """Recursively move tensors (and objects with a ``.to(device)`` method, e.g. Instances) in
    dicts / lists / tuples to ``device``; everything else is returned as is."""
    if torch.is_tensor(batch):
        return batch.to(device, non_blocking=non_blocking and device.type == "cuda")
    if isinstance(batch, Mapping):
        moved = {k: move_to_device(v, device, non_blocking) for k, v in batch.items()}
        try:
            return type(batch)(moved)
        except TypeError:  # e.g. defaultdict: a plain dict will do
            return moved
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # namedtuple
        return type(batch)(*(move_to_device(v, device, non_blocking) for v in batch))
    if isinstance(batch, (list, tuple)):
        return type(batch)(move_to_device(v, device, non_blocking) for v in batch)
    if not isinstance(batch, nn.Module) and callable(getattr(batch, "to", None)):
        try:
            return batch.to(device)
        except TypeError:
            return batch
    return batch
