"""Datasets and data loaders from a config.

* :func:`build_dataset` -- one named split (``DATASETS.TRAIN/VAL/TEST`` names, see
  ``sgg.data.catalog``) as the dataset class its format is registered under in
  ``sgg.data.datasets.DATASET_FORMAT_REGISTRY`` (``vg150``: :class:`~sgg.data.datasets.vg150.VG150Dataset`),
  with SGB's rules:
  every split keeps images with >= 1 relation; the train split drops duplicate (subject, object)
  predicates (one drawn per epoch) and, for SGDet with ``MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP``
  (relation training only), relations between non-overlapping boxes; val/test keep every row.
  ``DATASETS.NUM_VAL_IMAGES`` train images form the val split.
* :func:`build_train_loader` -- infinite; per-rank batch ``SOLVER.IMS_PER_BATCH / world_size``;
  :class:`~sgg.data.samplers.TrainingSampler`; optional aspect-ratio grouping
  (``DATALOADER.ASPECT_RATIO_GROUPING``: batches of landscape-only or portrait-only images, as
  maskrcnn_benchmark). Resumable with ``start_iter``, grouped or not: the loader of a run resumed
  at iteration ``k`` yields exactly the batches ``k, k+1, ...`` of the uninterrupted run, and
  every sample is mapped with python's / numpy's RNG seeded from ``(SEED, its stream position)``,
  so its random draws (duplicate predicates, augmentations) depend neither on the data-loader
  worker that loads it nor on where the run was resumed.
* :func:`build_test_loader` -- per-rank batch ``TEST.IMS_PER_BATCH / world_size``, several images
  per batch, :class:`~sgg.data.samplers.InferenceSampler`: every image exactly once over all ranks.

Batches are lists of mapper outputs (``trivial_batch_collator``). Data-loader workers seed
``numpy.random`` / ``random`` from their torch seed, and outlive a SIGTERM that their main process
did not send (one sent to the whole process group by torchrun, a shell or a scheduler): the main
process finishes its iteration, saves and shuts them down (:func:`worker_init_fn`).
"""
from __future__ import annotations

import itertools
import logging
import os
import random
import signal
import threading
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, Dataset, Sampler

from sgg.config import protocol_from_config
from sgg.utils import comm

from .catalog import get_dataset_files
from .mapper import SceneGraphMapper
from .samplers import InferenceSampler, TrainingSampler

logger = logging.getLogger(__name__)


def build_dataset(cfg, name: str, is_train: bool, mode: Optional[str] = None):
    """The dataset ``name`` (e.g. ``VG_stanford_filtered_with_attribute_train``,
    ``synthvg_tiny_test``) with SGB's filters (module docstring), built by the class registered
    for its format (``DatasetFiles.format``; an unknown format lists the known ones).

    ``is_train`` turns on the train-only filters (they also need a ``*_train`` name); ``mode``
    defaults to the config's protocol. Depth files are attached when ``INPUT.LOAD_DEPTH`` is on.
    A split left without images (e.g. ``DATASETS.NUM_VAL_IMAGES`` >= the usable train images) is a
    ValueError naming the dataset, the cause and the fix (:func:`require_images`).
    """
    from .datasets import DATASET_FORMAT_REGISTRY

    files = get_dataset_files(name, cfg.DATASETS.DATA_DIR)
    dataset_cls = DATASET_FORMAT_REGISTRY.get(files.format)
    mode = mode or protocol_from_config(cfg)
    train_split = is_train and files.split == "train"
    rh = cfg.MODEL.ROI_RELATION_HEAD
    filter_non_overlap = bool(train_split and cfg.MODEL.RELATION_ON and mode == "sgdet" and rh.REQUIRE_BOX_OVERLAP)
    load_depth = bool(cfg.INPUT.LOAD_DEPTH)
    dataset = dataset_cls.from_files(
        files,
        num_val_im=cfg.DATASETS.NUM_VAL_IMAGES,
        filter_empty_rels=True,
        filter_non_overlap=filter_non_overlap,
        filter_duplicate_rels=train_split,
        depth_dir=files.depth_dir if load_depth else None,
    )
    dataset.name = name  # the catalog name (zero-shot file, reports)
    require_images(dataset)
    return dataset


def require_images(dataset) -> None:
    """A ValueError naming the dataset and why it is empty when ``dataset`` (or a part of a
    ``ConcatDataset``) has no image: no split is trained or evaluated empty (the sampler would fail
    without a word on the cause; an evaluation would report NaN)."""
    for ds in dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]:
        if len(ds) > 0:
            continue
        name = getattr(ds, "name", None) or type(ds).__name__
        split = getattr(ds, "split", None)
        where = f" ({split} split of '{ds.roidb_file}')" if split and hasattr(ds, "roidb_file") else ""
        reason = ds.empty_reason() if hasattr(ds, "empty_reason") else None
        reason, fix = reason or ("its files hold no image for this split after the loader's filters",
                                 "check the files with tools/validate_dataset.py")
        raise ValueError(f"dataset '{name}'{where} has no image: {reason}. Fix: {fix}.")


class MapDataset(Dataset):
    """``dataset[i]`` passed through ``mapper``; ``self.dataset`` is the underlying dataset."""

    def __init__(self, dataset, mapper) -> None:
        self.dataset = dataset
        self.mapper = mapper

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> dict:
        return self.mapper(self.dataset[i])


def trivial_batch_collator(batch: List[Any]) -> List[Any]:
    """Batches are plain lists of per-image dicts (images differ in size)."""
    return batch


def _exit_only_on_sigterm_from_parent() -> None:
    """In a data-loader worker: die of SIGTERM only when the main process sends it.

    torch's worker handler exits on its main process's SIGTERM (shutdown, interpreter exit) but
    dies of any other; a SIGTERM sent to the whole process group (torchrun's shutdown, ``kill --
    -PGID``, a scheduler) then kills the workers and the main process's loader raises "DataLoader
    worker ... killed by signal: Terminated" before the trainer can save. Here SIGTERM is blocked
    and a thread waits for it: from the main process (or once orphaned) the worker exits as
    torch's handler would; from anyone else it is ignored (the main process, which got it too,
    stops training and shuts its workers down). No-op where ``sigwaitinfo`` is missing."""
    if not hasattr(signal, "sigwaitinfo") or threading.current_thread() is not threading.main_thread():
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})  # threads started later inherit it

    def wait() -> None:
        while True:
            info = signal.sigwaitinfo({signal.SIGTERM})
            if info.si_pid == parent or os.getppid() != parent:
                os._exit(0)

    threading.Thread(target=wait, name="sgg-sigterm", daemon=True).start()


def worker_init_fn(worker_id: int) -> None:
    """Seed ``numpy.random`` / ``random`` from the worker's torch seed; ignore a SIGTERM that
    does not come from the main process (:func:`_exit_only_on_sigterm_from_parent`)."""
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    _exit_only_on_sigterm_from_parent()


def image_aspect_groups(dataset) -> np.ndarray:
    """int64 [N]: 0 where height / width < 1 (landscape), else 1 (maskrcnn_benchmark's groups),
    from the datasets' ``get_img_info`` (no image is read)."""
    parts = dataset.datasets if isinstance(dataset, ConcatDataset) else [dataset]
    groups = []
    for ds in parts:
        if not hasattr(ds, "get_img_info"):
            raise TypeError(f"{type(ds).__name__} has no get_img_info(i); turn DATALOADER.ASPECT_RATIO_GROUPING off")
        for i in range(len(ds)):
            info = ds.get_img_info(i)
            groups.append(int(float(info["height"]) / float(info["width"]) >= 1.0))
    return np.asarray(groups, dtype=np.int64)


_EMPTY = np.zeros(0, dtype=np.int64)
_CHUNK = 4096  # indices handled at once (several small epochs are merged)


def _index_chunks(sampler) -> Iterator[Tuple[np.ndarray, np.ndarray]]:
    """``sampler``'s stream as consecutive ``(indices, positions)`` int64 arrays: a
    :class:`~sgg.data.samplers.TrainingSampler`'s ``rank_chunks`` (global stream positions), any
    other iterable of indices numbered 0, 1, ..."""
    if hasattr(sampler, "rank_chunks"):
        parts: List[Tuple[np.ndarray, np.ndarray]] = []
        count = 0
        for part in sampler.rank_chunks():
            parts.append(part)
            count += len(part[0])
            if count >= _CHUNK:
                yield np.concatenate([i for i, _ in parts]), np.concatenate([p for _, p in parts])
                parts, count = [], 0
        return  # an infinite sampler never gets here
    it, first = iter(sampler), 0
    while True:
        indices = np.fromiter(itertools.islice(it, _CHUNK), dtype=np.int64)
        if not len(indices):
            return
        yield indices, np.arange(first, first + len(indices), dtype=np.int64)
        first += len(indices)


def _emit(indices: np.ndarray, positions: np.ndarray, with_positions: bool) -> Iterator[list]:
    """Rows of [B, b] arrays as batches: lists of indices, or of ``(index, position)`` keys."""
    if with_positions:
        for i, p in zip(indices.tolist(), positions.tolist()):
            yield list(zip(i, p))
    else:
        yield from indices.tolist()


class GroupedBatchSampler(Sampler):
    """Batches of ``batch_size`` indices with equal ``group_ids`` from an (infinite) ``sampler``
    (maskrcnn_benchmark's rule: each index joins its group's bucket; a bucket is a batch the
    moment it is full, leftovers wait for later indices of their group).

    The batch stream is a function of the sampler's index stream alone, so ``start`` batches are
    skipped by replaying the bucket arithmetic on index arrays (group ids only; no image is read):
    with ``sampler`` built from its beginning, ``start=k`` yields exactly batches ``k, k+1, ...``
    of ``start=0``. Under DDP each rank groups its own share of the stream (its
    :class:`~sgg.data.samplers.TrainingSampler` shard), one batch per iteration, so every rank
    skips the same ``k``.

    ``with_positions``: batches of ``(index, position)`` keys (position: the index's place in the
    sampler's stream, global over the ranks for a TrainingSampler) instead of indices.
    """

    def __init__(self, sampler, group_ids: Sequence[int], batch_size: int, start: int = 0,
                 with_positions: bool = False) -> None:
        if start < 0:
            raise ValueError(f"start must be >= 0, got {start}")
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids)
        self.batch_size = int(batch_size)
        self.start = int(start)
        self.with_positions = bool(with_positions)

    def __iter__(self) -> Iterator[list]:
        b, skip = self.batch_size, self.start
        buckets: Dict[int, Tuple[np.ndarray, np.ndarray]] = {}  # group -> (indices, positions) < b
        for indices, positions in _index_chunks(self.sampler):
            groups = self.group_ids[indices]
            done, rows, row_pos = [], [], []
            for g in np.unique(groups).tolist():
                at = np.flatnonzero(groups == g)  # chunk offsets of the group's indices, in order
                old_i, old_p = buckets.get(g, (_EMPTY, _EMPTY))
                gi, gp = np.concatenate([old_i, indices[at]]), np.concatenate([old_p, positions[at]])
                n = len(gi) // b
                if n:
                    # batch j is full when the group's ((j + 1) * b)-th index arrives (never one of
                    # the < b waiting in the bucket): that is the order a streaming loop emits them in
                    done.append(at[np.arange(1, n + 1) * b - 1 - len(old_i)])
                    rows.append(gi[:n * b].reshape(n, b))
                    row_pos.append(gp[:n * b].reshape(n, b))
                buckets[g] = (gi[n * b:], gp[n * b:])
            if not done:
                continue
            order = np.argsort(np.concatenate(done), kind="stable")
            batch_i, batch_p = np.concatenate(rows)[order], np.concatenate(row_pos)[order]
            if skip >= len(order):
                skip -= len(order)
                continue
            yield from _emit(batch_i[skip:], batch_p[skip:], self.with_positions)
            skip = 0


class _Batches(Sampler):
    """Consecutive ``batch_size`` indices of an infinite sampler (``with_positions``: of
    ``(index, position)`` keys, as :class:`GroupedBatchSampler`)."""

    def __init__(self, sampler, batch_size: int, with_positions: bool = False) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)
        self.with_positions = bool(with_positions)

    def __iter__(self) -> Iterator[list]:
        b = self.batch_size
        rest_i, rest_p = _EMPTY, _EMPTY
        for indices, positions in _index_chunks(self.sampler):
            gi, gp = np.concatenate([rest_i, indices]), np.concatenate([rest_p, positions])
            n = len(gi) // b
            yield from _emit(gi[:n * b].reshape(n, b), gp[:n * b].reshape(n, b), self.with_positions)
            rest_i, rest_p = gi[n * b:], gp[n * b:]


class _SeededSamples(MapDataset):
    """The training set through ``mapper``, keyed by ``(index, position)``: python's and numpy's
    global RNGs are seeded from ``(seed, position)`` for the sample (and restored after), so its
    random draws (duplicate-predicate choice, augmentations) are the same whichever worker loads
    it and wherever the run was resumed. A plain index is mapped without seeding."""

    def __init__(self, dataset, mapper, seed: int) -> None:
        super().__init__(dataset, mapper)
        self.seed = int(seed)

    def __getitem__(self, key) -> dict:
        if not isinstance(key, tuple):
            return super().__getitem__(key)
        i, position = key
        state = np.random.SeedSequence([self.seed & 0xFFFFFFFF, self.seed >> 32 & 0xFFFFFFFF,
                                        int(position)]).generate_state(4)
        py, npy = random.getstate(), np.random.get_state()
        np.random.seed(state)
        random.seed(int.from_bytes(state.tobytes(), "little"))
        try:
            return self.mapper(self.dataset[i])
        finally:
            random.setstate(py)
            np.random.set_state(npy)


def _per_rank(total: int, what: str) -> int:
    world = comm.get_world_size()
    if total % world:
        raise ValueError(f"{what} = {total} is not divisible by the number of processes ({world}); "
                         f"it is the global batch, split evenly over the ranks")
    return total // world


def build_train_loader(cfg, mode: Optional[str] = None, start_iter: int = 0, dataset=None,
                       mapper=None) -> torch.utils.data.DataLoader:
    """Infinite training loader of lists of mapper outputs (module docstring).

    ``dataset`` / ``mapper`` default to the config's ``DATASETS.TRAIN`` and
    ``SceneGraphMapper.from_config(cfg, True, mode)``. ``start_iter`` resumes the sample stream.
    """
    mode = mode or protocol_from_config(cfg)
    batch = _per_rank(cfg.SOLVER.IMS_PER_BATCH, "SOLVER.IMS_PER_BATCH")
    if dataset is None:
        sets = [build_dataset(cfg, n, is_train=True, mode=mode) for n in cfg.DATASETS.TRAIN]
        if not sets:
            raise ValueError("DATASETS.TRAIN is empty")
        dataset = sets[0] if len(sets) == 1 else ConcatDataset(sets)
    require_images(dataset)
    mapper = mapper or SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        # the grouped stream replayed from its start, its first start_iter batches skipped
        sampler = TrainingSampler(len(dataset), shuffle=True, seed=cfg.SEED)
        batch_sampler = GroupedBatchSampler(sampler, image_aspect_groups(dataset), batch, start=start_iter,
                                            with_positions=True)
    else:
        sampler = TrainingSampler(len(dataset), shuffle=True, seed=cfg.SEED,
                                  start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
        batch_sampler = _Batches(sampler, batch, with_positions=True)
    generator = torch.Generator()
    generator.manual_seed(int(cfg.SEED) * 1000 + comm.get_rank() + start_iter)
    workers = cfg.DATALOADER.NUM_WORKERS
    logger.info("train loader: %d images, %d per rank and step, %d workers", len(dataset), batch, workers)
    return torch.utils.data.DataLoader(
        _SeededSamples(dataset, mapper, cfg.SEED), batch_sampler=batch_sampler, num_workers=workers,
        collate_fn=trivial_batch_collator, worker_init_fn=worker_init_fn, generator=generator,
        persistent_workers=workers > 0)


def build_test_loader(cfg, name: str, mode: Optional[str] = None, dataset=None,
                      mapper=None) -> torch.utils.data.DataLoader:
    """Loader over the whole split ``name`` for this rank's shard (module docstring).

    ``loader.dataset.dataset`` is the dataset (for ``get_groundtruth``, class names, ...).
    """
    mode = mode or protocol_from_config(cfg)
    batch = _per_rank(cfg.TEST.IMS_PER_BATCH, "TEST.IMS_PER_BATCH")
    dataset = dataset if dataset is not None else build_dataset(cfg, name, is_train=False, mode=mode)
    require_images(dataset)
    mapper = mapper or SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)
    return torch.utils.data.DataLoader(
        MapDataset(dataset, mapper), batch_size=batch, sampler=InferenceSampler(len(dataset)), drop_last=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=trivial_batch_collator, worker_init_fn=worker_init_fn)
