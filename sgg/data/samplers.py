"""Samplers for iteration-based training and sharded inference.

:class:`TrainingSampler` is an infinite stream of dataset indices. The *global* stream (what one
process with the whole batch would see) is the concatenation of per-epoch permutations, epoch ``e``
shuffled by a generator seeded from ``(seed, e)`` only. Rank ``r`` of ``W`` takes global positions
``r, r + W, r + 2W, ...``; with a per-rank batch of ``IMS_PER_BATCH / W`` the ranks' batches of
iteration ``k`` together are exactly global positions ``[k * IMS_PER_BATCH, (k + 1) * IMS_PER_BATCH)``
whatever the number of ranks.

Resuming: the stream does not depend on any RNG state, so a run resumed after ``k`` iterations
builds its sampler with ``start = k * IMS_PER_BATCH`` and sees the very batches the uninterrupted
run saw (the epoch's permutation is recomputed, nothing is replayed). Aspect-ratio grouping
(:class:`sgg.data.build.GroupedBatchSampler`) buffers indices, so its batches are not positional:
it runs the sampler from ``start = 0`` and skips ``k`` batches by replaying the grouping on the
index arrays of :meth:`TrainingSampler.rank_chunks`. Random draws while loading a sample
(augmentation, SGB's duplicate-predicate choice) are seeded per sample from ``(seed, global
position)`` by :func:`sgg.data.build.build_train_loader`, not from a worker's RNG state.

:class:`InferenceSampler` splits ``N`` images into contiguous shards, one per rank, sizes
differing by at most one, every image exactly once (no padding, so no duplicate predictions).
"""
from __future__ import annotations

from typing import Iterator, Optional, Tuple

import numpy as np
import torch
from torch.utils.data import Sampler

from sgg.utils import comm


def _epoch_seed(seed: int, epoch: int) -> int:
    """A 63-bit seed derived from (seed, epoch) with numpy's SeedSequence (well mixed, stable)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32 & 0xFFFFFFFF, int(epoch)])
    return int(state.generate_state(1, dtype=np.uint64)[0] & np.uint64(0x7FFFFFFFFFFFFFFF))


class TrainingSampler(Sampler):
    """Infinite, distributed-aware, resumable index stream (see module docstring).

    Args:
        size: number of items in the dataset.
        shuffle: shuffle each epoch (``False``: 0..size-1 repeated).
        seed: the run's seed (``cfg.SEED``); must be equal on every rank.
        start: number of *global* samples already consumed (``start_iter * IMS_PER_BATCH``).
        rank, world_size: default to the current process group.
    """

    def __init__(self, size: int, shuffle: bool = True, seed: int = 0, start: int = 0,
                 rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        if size <= 0:
            raise ValueError(f"TrainingSampler needs a non-empty dataset, got size={size}")
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.size = int(size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.start = int(start)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} out of range for world size {self.world_size}")

    def epoch_indices(self, epoch: int) -> torch.Tensor:
        """The global order of epoch ``epoch`` (int64[size])."""
        if not self.shuffle:
            return torch.arange(self.size)
        g = torch.Generator()
        g.manual_seed(_epoch_seed(self.seed, epoch))
        return torch.randperm(self.size, generator=g)

    def rank_chunks(self) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
        """This rank's stream one epoch at a time, as ``(indices, positions)`` int64 arrays:
        ``positions`` are the *global* stream positions ``start + rank + j * world_size`` of the
        indices (the first chunk may be a partial epoch). ``__iter__`` is the concatenation of
        the ``indices``; cheap to run ahead without touching the dataset."""
        epoch = self.start // self.size
        first = self.start + self.rank  # the next global position of this rank
        while True:
            lo, hi = epoch * self.size, (epoch + 1) * self.size
            if first < hi:
                order = self.epoch_indices(epoch).numpy()
                positions = np.arange(first, hi, self.world_size, dtype=np.int64)
                yield order[positions - lo].astype(np.int64, copy=False), positions
                first = int(positions[-1]) + self.world_size
            epoch += 1

    def __iter__(self) -> Iterator[int]:
        # Global position p = start + rank + j * world_size for j = 0, 1, ...
        for indices, _ in self.rank_chunks():
            yield from indices.tolist()


class InferenceSampler(Sampler):
    """Contiguous shard of ``range(size)`` for this rank; every index exactly once over all ranks.

    Shard ``r`` is ``[begin_r, end_r)`` with the first ``size % W`` ranks holding one extra item.
    """

    def __init__(self, size: int, rank: Optional[int] = None, world_size: Optional[int] = None) -> None:
        self.size = int(size)
        self.rank = comm.get_rank() if rank is None else int(rank)
        self.world_size = comm.get_world_size() if world_size is None else int(world_size)
        if not 0 <= self.rank < self.world_size:
            raise ValueError(f"rank {self.rank} out of range for world size {self.world_size}")
        self.begin, self.end = self.shard_range(self.size, self.rank, self.world_size)

    @staticmethod
    def shard_range(size: int, rank: int, world_size: int):
        base, extra = divmod(size, world_size)
        begin = rank * base + min(rank, extra)
        return begin, begin + base + (1 if rank < extra else 0)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.begin, self.end))

    def __len__(self) -> int:
        return self.end - self.begin
