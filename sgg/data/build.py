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
  :class:`~sgg.data.samplers.TrainingSampler` (resumable with ``start_iter``); optional
  aspect-ratio grouping (``DATALOADER.ASPECT_RATIO_GROUPING``: batches of landscape-only or
  portrait-only images, as maskrcnn_benchmark; exact resumption needs it off).
* :func:`build_test_loader` -- per-rank batch ``TEST.IMS_PER_BATCH / world_size``, several images
  per batch, :class:`~sgg.data.samplers.InferenceSampler`: every image exactly once over all ranks.

Batches are lists of mapper outputs (``trivial_batch_collator``). Data-loader workers seed
``numpy.random`` / ``random`` from their torch seed (augmentations and the duplicate-predicate
draw use ``numpy.random``).
"""
from __future__ import annotations

import logging
import random
from typing import Any, Iterator, List, Optional, Sequence

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
    return dataset


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


def worker_init_fn(worker_id: int) -> None:
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)


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


class GroupedBatchSampler(Sampler):
    """Batches of ``batch_size`` indices from an (infinite) ``sampler`` with equal ``group_ids``."""

    def __init__(self, sampler: Sampler, group_ids: Sequence[int], batch_size: int) -> None:
        self.sampler = sampler
        self.group_ids = np.asarray(group_ids)
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[List[int]]:
        buckets: dict = {}
        for idx in self.sampler:
            b = buckets.setdefault(int(self.group_ids[idx]), [])
            b.append(idx)
            if len(b) == self.batch_size:
                yield list(b)
                b.clear()


class _Batches(Sampler):
    """Consecutive ``batch_size`` indices of an infinite sampler."""

    def __init__(self, sampler: Sampler, batch_size: int) -> None:
        self.sampler = sampler
        self.batch_size = int(batch_size)

    def __iter__(self) -> Iterator[List[int]]:
        batch: List[int] = []
        for idx in self.sampler:
            batch.append(idx)
            if len(batch) == self.batch_size:
                yield batch
                batch = []


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
    mapper = mapper or SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    sampler = TrainingSampler(len(dataset), shuffle=True, seed=cfg.SEED,
                              start=start_iter * cfg.SOLVER.IMS_PER_BATCH)
    if cfg.DATALOADER.ASPECT_RATIO_GROUPING:
        batch_sampler = GroupedBatchSampler(sampler, image_aspect_groups(dataset), batch)
    else:
        batch_sampler = _Batches(sampler, batch)
    generator = torch.Generator()
    generator.manual_seed(int(cfg.SEED) * 1000 + comm.get_rank() + start_iter)
    workers = cfg.DATALOADER.NUM_WORKERS
    logger.info("train loader: %d images, %d per rank and step, %d workers", len(dataset), batch, workers)
    return torch.utils.data.DataLoader(
        MapDataset(dataset, mapper), batch_sampler=batch_sampler, num_workers=workers,
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
    mapper = mapper or SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)
    return torch.utils.data.DataLoader(
        MapDataset(dataset, mapper), batch_size=batch, sampler=InferenceSampler(len(dataset)), drop_last=False,
        num_workers=cfg.DATALOADER.NUM_WORKERS, collate_fn=trivial_batch_collator, worker_init_fn=worker_init_fn)
