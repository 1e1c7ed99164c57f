"""Train-set statistics for the frequency bias (SGB ``get_VG_statistics`` / ``get_dataset_statistics``).

The reference computes them on the VG150 *train* split built with ``num_val_im=5000`` (the
dataset's own value here), ``num_im=-1``, ``filter_empty_rels=True``, ``filter_non_overlap=True``
and ``filter_duplicate_rels=False`` -- whatever the experiment's own filters are -- and on the
boxes of the 1024 frame as the loader stores them (integer xyxy, truncated):

* ``fg[s_cls, o_cls, p]`` += 1 for every (overlap-filtered) train relation row;
* ``bg[s_cls, o_cls]`` += 1 for every ordered pair ``i != j`` of objects of an image whose boxes
  strictly intersect (area of ``(min x2 - max x1).clip(0) * (min y2 - max y1).clip(0)`` > 0); an
  image without any such pair contributes all its ordered pairs;
* ``bg += 1``; ``fg[:, :, 0] = bg``; ``pred_dist = log(fg / fg.sum(2) + 1e-3)`` as float32.

:func:`get_dataset_statistics` computes this once and caches it as
``{cache_dir}/{name}_statistics.npz`` together with a key of the source files (path, size, mtime),
so a changed dataset is recomputed. Every registered format works: the reference train set is
built by the format's class (``from_files``) and counted from its per-image ``gt_classes``,
``relationships`` and ``gt_boxes_1024`` (boxes in the frame whose longer side is 1024: VG150's
integers, coco_json's pixels rescaled), so a VG150 folder and its coco_json conversion give the
same statistics. Under ``torch.distributed`` rank 0 computes and writes, the
other ranks wait and read.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

from sgg.utils import comm
from sgg.utils.io import atomic_write

from .datasets.registry import DATASET_FORMAT_REGISTRY
from .datasets.vg150 import VG150Dataset
from .datasets.vg150_files import FORMAT as VG150_FORMAT

logger = logging.getLogger(__name__)

__all__ = [
    "box_filter",
    "compute_statistics",
    "get_VG_statistics",
    "get_dataset_statistics",
    "statistics_cache_key",
    "frequency_prior_predictions",
]

_CACHE_VERSION = 1
_FILE_KEYS = ("roidb_file", "dict_file", "image_file", "img_dir")


def box_filter(boxes: np.ndarray, must_overlap: bool = True) -> np.ndarray:
    """Ordered object pairs ``(i, j)``, ``i != j``, used as background candidates (SGB ``box_filter``).

    With ``must_overlap`` only pairs whose xyxy boxes strictly intersect (no ``+1``); if an image
    has none, all ordered pairs. Returns int64 ``[K, 2]``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    n = boxes.shape[0]
    all_possib = ~np.eye(n, dtype=bool)
    if must_overlap:
        lt = np.maximum(boxes[:, None, :2], boxes[None, :, :2])
        rb = np.minimum(boxes[:, None, 2:], boxes[None, :, 2:])
        wh = (rb - lt).clip(min=0)
        overlaps = (wh[..., 0] * wh[..., 1] > 0) & all_possib
        if overlaps.any():
            return np.argwhere(overlaps).astype(np.int64)
    return np.argwhere(all_possib).astype(np.int64)


def compute_statistics(train_data, must_overlap: bool = True, progress: bool = True) -> Dict[str, Any]:
    """Count the statistics on an already-built dataset of any format (whatever its filters).

    Returns ``fg_matrix`` int64 ``[C+1, C+1, P+1]`` (``[:, :, 0]`` holds ``bg``), ``bg_matrix``
    int64 ``[C+1, C+1]`` (with the ``+1``), ``pred_dist`` float32 ``[C+1, C+1, P+1]``,
    ``predicate_counts`` int64 ``[P+1]`` (relation rows per predicate, index 0 = 0),
    ``object_counts`` int64 ``[C+1]`` (objects per class), ``obj_classes``, ``rel_classes``,
    ``att_classes`` (lists of names) and ``num_images``.
    """
    C1, P1 = train_data.num_classes, train_data.num_predicates
    fg_keys, bg_keys = [], []
    it = range(len(train_data))
    if progress and comm.is_main_process() and len(train_data) > 1000:
        from tqdm import tqdm

        it = tqdm(it, desc="relation statistics", mininterval=2.0)
    for i in it:
        cls = np.asarray(train_data.gt_classes[i], dtype=np.int64)
        rels = np.asarray(train_data.relationships[i], dtype=np.int64).reshape(-1, 3)
        boxes = train_data.gt_boxes_1024[i]
        fg_keys.append((cls[rels[:, 0]] * C1 + cls[rels[:, 1]]) * P1 + rels[:, 2])
        pairs = box_filter(boxes, must_overlap=must_overlap)
        bg_keys.append(cls[pairs[:, 0]] * C1 + cls[pairs[:, 1]])
    cat = lambda ks: np.concatenate(ks) if ks else np.zeros(0, np.int64)  # noqa: E731
    fg = np.bincount(cat(fg_keys), minlength=C1 * C1 * P1).astype(np.int64).reshape(C1, C1, P1)
    bg = np.bincount(cat(bg_keys), minlength=C1 * C1).astype(np.int64).reshape(C1, C1)

    predicate_counts = fg.sum(axis=(0, 1))
    predicate_counts[0] = 0
    object_counts = np.bincount(
        cat([np.asarray(c, dtype=np.int64) for c in train_data.gt_classes]), minlength=C1
    ).astype(np.int64)

    bg += 1
    fg[:, :, 0] = bg
    pred_dist = np.log(fg / fg.sum(2)[:, :, None] + 1e-3).astype(np.float32)
    return {
        "fg_matrix": fg,
        "bg_matrix": bg,
        "pred_dist": pred_dist,
        "predicate_counts": predicate_counts,
        "object_counts": object_counts,
        "obj_classes": list(train_data.ind_to_classes),
        "rel_classes": list(train_data.ind_to_predicates),
        "att_classes": list(train_data.ind_to_attributes),
        "num_images": int(len(train_data)),
    }


def _reference_train_set(files: Any, num_val_im: int):
    if not isinstance(files, Mapping):  # a DatasetFiles of any format
        return DATASET_FORMAT_REGISTRY.get(files.format).from_files(
            dataclasses.replace(files, split="train"), num_val_im=num_val_im, num_im=-1, filter_empty_rels=True, filter_non_overlap=True,
            filter_duplicate_rels=False, check_images=False)
    return VG150Dataset(
        roidb_file=files["roidb_file"], dict_file=files["dict_file"], image_file=files["image_file"],
        img_dir=files["img_dir"], split="train", num_val_im=num_val_im, num_im=-1,
        filter_empty_rels=True, filter_non_overlap=True, filter_duplicate_rels=False,
        check_images=False,
    )


def _is_reference_train_set(ds, num_val_im: int) -> bool:
    return (ds.split == "train" and ds.num_val_im == num_val_im and ds.num_im == -1
            and ds.filter_empty_rels and ds.filter_non_overlap)


def get_VG_statistics(roidb_file: str, dict_file: str, image_file: str, img_dir: str,
                      num_val_im: int = 5000, must_overlap: bool = True) -> Dict[str, Any]:
    """SGB's ``get_VG_statistics`` + ``VGDataset.get_statistics`` on the reference train split."""
    files = dict(roidb_file=roidb_file, dict_file=dict_file, image_file=image_file, img_dir=img_dir)
    return compute_statistics(_reference_train_set(files, num_val_im), must_overlap=must_overlap)


def _file_stamp(path: str) -> list:
    st = os.stat(path)
    return [os.path.realpath(path), int(st.st_size), int(st.st_mtime_ns)]


def statistics_cache_key(files: Any, num_val_im: int) -> str:
    """Hash of the source files (real path, size, mtime) and the settings: changes when they do.
    ``files``: a mapping with the VG150 files, or a ``DatasetFiles`` of any format (its
    ``source_files()``)."""
    if not isinstance(files, Mapping) and getattr(files, "format", VG150_FORMAT) != VG150_FORMAT:
        payload = {"version": _CACHE_VERSION, "num_val_im": int(num_val_im), "format": files.format,
                   "files": [_file_stamp(p) for p in files.source_files()]}
        return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    if not isinstance(files, Mapping):
        files = {k: getattr(files, k) for k in _FILE_KEYS}
    payload = {
        "version": _CACHE_VERSION,
        "num_val_im": int(num_val_im),
        "files": {k: _file_stamp(files[k]) for k in ("roidb_file", "dict_file", "image_file")},
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def _save(path: str, stats: Dict[str, Any], key: str) -> None:
    arrays = {k: (np.asarray(v, dtype=np.str_) if k.endswith("_classes") else np.asarray(v))
              for k, v in stats.items()}
    atomic_write(path, lambda f: np.savez(f, cache_key=np.asarray(key), **arrays))


def _load(path: str, key: str) -> Optional[Dict[str, Any]]:
    if not os.path.isfile(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if "cache_key" not in z.files or str(z["cache_key"]) != key:
                return None
            out = {k: z[k] for k in z.files if k != "cache_key"}
    except (OSError, ValueError, KeyError) as e:  # truncated / foreign file: recompute
        logger.warning("ignoring unreadable statistics cache '%s' (%s)", path, e)
        return None
    for k in list(out):
        if k.endswith("_classes"):
            out[k] = [str(s) for s in out[k].tolist()]
    out["num_images"] = int(out["num_images"])
    return out


def get_dataset_statistics(
    train_dataset_or_files: Union[VG150Dataset, Mapping[str, Any], Any],
    cache_dir: Optional[str] = None,
    name: Optional[str] = None,
    num_val_im: Optional[int] = None,
) -> Dict[str, Any]:
    """Statistics of the train split, computed once and cached.

    Args:
        train_dataset_or_files: a ``catalog.DatasetFiles`` of the train split (any format), a
            dataset built by ``from_files`` (a :class:`VG150Dataset` or a dataset with ``files``;
            its files and ``num_val_im`` are used; it is reused as is when it already is the
            reference train set), or a mapping with ``roidb_file``, ``dict_file``, ``image_file``,
            ``img_dir`` (and optionally ``num_val_im``) of a VG150 folder.
        cache_dir: where ``{name}_statistics.npz`` lives (SGB: ``OUTPUT_DIR``); ``None``: no cache
            (rank 0 computes and broadcasts).
        name: cache file prefix (SGB: the joined ``DATASETS.TRAIN`` names); default: the h5 stem
            (vg150), the folder name (other formats).
        num_val_im: overrides the validation slice size (default: the dataset's, else 5000).

    Returns the dict of :func:`compute_statistics`.
    """
    src = train_dataset_or_files
    if isinstance(src, VG150Dataset):
        ds: Optional[Any] = src
        files: Any = {k: getattr(ds, k) for k in _FILE_KEYS}
        nv = ds.num_val_im if num_val_im is None else num_val_im
    elif hasattr(src, "files") and hasattr(src, "gt_classes"):  # a dataset of another format
        ds, files = src, src.files
        nv = ds.num_val_im if num_val_im is None else num_val_im
    elif not isinstance(src, Mapping) and getattr(src, "format", VG150_FORMAT) != VG150_FORMAT:
        ds, files = None, src
        nv = num_val_im if num_val_im is not None else 5000
    else:
        ds = None
        src = train_dataset_or_files
        if not isinstance(src, Mapping):  # e.g. sgg.data.catalog.DatasetFiles
            src = {k: getattr(src, k) for k in (*_FILE_KEYS, "num_val_im") if hasattr(src, k)}
        missing = [k for k in _FILE_KEYS if k not in src]
        if missing:
            raise KeyError(f"get_dataset_statistics needs the files {list(_FILE_KEYS)}; missing {missing}")
        files = {k: src[k] for k in _FILE_KEYS}
        nv = num_val_im if num_val_im is not None else int(src.get("num_val_im", 5000))

    def compute() -> Dict[str, Any]:
        data = ds if ds is not None and _is_reference_train_set(ds, nv) else _reference_train_set(files, nv)
        logger.info("computing relation statistics on %d train images of '%s'", len(data), _where(files))
        return compute_statistics(data)

    if cache_dir is None:
        return comm.broadcast_object(compute() if comm.is_main_process() else None)

    if name is None:
        name = (os.path.splitext(os.path.basename(files["roidb_file"]))[0] if isinstance(files, Mapping)
                else os.path.basename(os.path.normpath(files.root)))
    path = os.path.join(cache_dir, f"{name}_statistics.npz")
    key = statistics_cache_key(files, nv)
    stats = None
    if comm.is_main_process():
        stats = _load(path, key)
        if stats is None:
            stats = compute()
            _save(path, stats, key)
            logger.info("saved relation statistics to '%s'", path)
        else:
            logger.info("loaded relation statistics from '%s'", path)
    comm.synchronize()
    if not comm.is_main_process():
        stats = _load(path, key)
        if stats is None:  # cache_dir not shared with rank 0 (multi-node): compute locally
            logger.warning("statistics cache '%s' not visible on rank %d; computing locally", path, comm.get_rank())
            stats = compute()
    return stats


def _where(files: Any) -> str:
    return files["roidb_file"] if isinstance(files, Mapping) else files.root


def unseen_triplets(fg_matrix, triplets) -> np.ndarray:
    """The rows of ``triplets`` (``[M, 3]`` subject class, object class, predicate; e.g. a test
    split's ``get_triplets()``) whose train count ``fg_matrix[s, o, p]`` is 0: the zero-shot
    triplets of a dataset without a zero-shot file. Unique rows, sorted lexicographically, int64."""
    fg = np.asarray(fg_matrix)
    t = np.unique(np.asarray(triplets, dtype=np.int64).reshape(-1, 3), axis=0)
    if t.shape[0] == 0:
        return np.zeros((0, 3), np.int64)
    inside = ((t >= 0) & (t < np.array(fg.shape))).all(1)
    seen = np.zeros(len(t), bool)
    seen[inside] = fg[t[inside, 0], t[inside, 1], t[inside, 2]] > 0
    return t[~seen]


def frequency_prior_predictions(pred_dist, labels, pairs):
    """Frequency-baseline relation scores: ``softmax(pred_dist[labels[s], labels[o]])``.

    Args:
        pred_dist: ``[C+1, C+1, P+1]`` log-frequencies (numpy or torch).
        labels: ``[N]`` object classes of one image.
        pairs: ``[M, 2]`` (subject index, object index) into ``labels``.
    Returns ``[M, P+1]`` scores (rows sum to 1), torch if ``pred_dist`` is a tensor else numpy float32.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(pred_dist, torch.Tensor):
        labels = torch.as_tensor(labels, dtype=torch.long, device=pred_dist.device)
        pairs = torch.as_tensor(pairs, dtype=torch.long, device=pred_dist.device).reshape(-1, 2)
        logits = pred_dist[labels[pairs[:, 0]], labels[pairs[:, 1]]]
        return torch.softmax(logits.float(), dim=-1)
    pred_dist = np.asarray(pred_dist)
    labels = np.asarray(labels, dtype=np.int64)
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    logits = pred_dist[labels[pairs[:, 0]], labels[pairs[:, 1]]].astype(np.float64)
    logits -= logits.max(axis=-1, keepdims=True) if logits.shape[0] else 0.0
    e = np.exp(logits)
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float32)
