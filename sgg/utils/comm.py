"""Distributed helpers. This is the only module that calls ``torch.distributed``.

Every function works (as a no-op or identity) in a single process without an initialised
process group, so library code can call them unconditionally.
"""
from __future__ import annotations

import datetime
import os
from typing import Any, List, Optional

import torch
import torch.distributed as dist


def init_from_env(backend: Optional[str] = None, timeout_minutes: int = 30) -> bool:
    """Join the process group described by torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT); a no-op in a single process. Backend: nccl with CUDA, else gloo.
    Returns whether the run is distributed."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or is_dist():
        return is_dist()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend=backend, init_method="env://",
                            timeout=datetime.timedelta(minutes=timeout_minutes))
    synchronize()
    return True


def shutdown() -> None:
    """Leave the process group (end of a script)."""
    if is_dist():
        dist.destroy_process_group()


def is_dist() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_world_size() -> int:
    return dist.get_world_size() if is_dist() else 1


def get_rank() -> int:
    return dist.get_rank() if is_dist() else 0


def get_local_rank() -> int:
    if not is_dist():
        return 0
    return int(os.environ.get("LOCAL_RANK", 0))


def is_main_process() -> bool:
    return get_rank() == 0


def synchronize() -> None:
    """Barrier across all ranks (no-op in a single process)."""
    if is_dist() and get_world_size() > 1:
        if dist.get_backend() == "nccl" and torch.cuda.is_available():
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_gather(obj: Any) -> List[Any]:
    """Gather a picklable object from every rank; returns the list ordered by rank."""
    if get_world_size() == 1:
        return [obj]
    out: List[Any] = [None] * get_world_size()
    dist.all_gather_object(out, obj)
    return out


def gather(obj: Any, dst: int = 0) -> List[Any]:
    """Gather a picklable object to rank ``dst``; other ranks get an empty list."""
    if get_world_size() == 1:
        return [obj]
    if get_rank() == dst:
        out: List[Any] = [None] * get_world_size()
        dist.gather_object(obj, out, dst=dst)
        return out
    dist.gather_object(obj, None, dst=dst)
    return []


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Send a picklable object from ``src`` to every rank and return it."""
    if get_world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def reduce_dict(values: dict, average: bool = True) -> dict:
    """All-reduce a dict of scalar tensors (same keys on every rank)."""
    world = get_world_size()
    if world == 1:
        return values
    with torch.no_grad():
        names = sorted(values)
        stacked = torch.stack([values[k].detach().float() for k in names])
        dist.all_reduce(stacked)
        if average:
            stacked /= world
        return dict(zip(names, stacked))
