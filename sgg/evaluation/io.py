"""Predictions file: the compact evaluation records of a run, to re-score it without the model.

One ``.npz`` (no pickle). For each group of per-image arrays (see
:data:`~sgg.evaluation.sgg_eval.RECORD_GROUPS`) the images' arrays are concatenated along their
first axis, with ``<group>_offsets int64[n+1]`` giving image i's slice
``offsets[i]:offsets[i+1]``. Besides: ``image_ids int64[n]``, ``num_pred_rels int64[n]`` and
``__meta__``, a JSON string ``{"format": "sgg-predictions", "version": 1, "mode", "ks",
"ng_topk", "num_images", "metadata": {...}}``.
"""
from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from sgg.utils.io import atomic_write

from .sgg_eval import (DEFAULT_KS, RECORD_DTYPES, RECORD_GROUPS, RECORD_TRAILING, ImageRecord,
                       check_ks, check_mode, check_not_empty, evaluate_records, ng_topk_for)

FORMAT_NAME = "sgg-predictions"
FORMAT_VERSION = 1


class PredictionsFileError(ValueError):
    """A file that is not a readable sgg predictions file."""


@dataclass
class PredictionsFile:
    records: List[ImageRecord]
    mode: str
    ks: tuple
    metadata: Dict[str, Any] = field(default_factory=dict)


def save_predictions(path: str, records: Sequence[ImageRecord], mode: str,
                     ks: Sequence[int] = DEFAULT_KS,
                     metadata: Optional[Mapping[str, Any]] = None) -> str:
    """Write ``records`` (made with ``mode`` and ``ks``) to ``path`` (``.npz``; written to a
    temporary file then renamed). ``metadata`` must be JSON-serialisable. Returns the path."""
    check_mode(mode)
    ks = check_ks(ks)
    records = list(records)
    meta = {"format": FORMAT_NAME, "version": FORMAT_VERSION, "mode": mode, "ks": list(ks),
            "ng_topk": ng_topk_for(ks), "num_images": len(records),
            "metadata": dict(metadata or {})}
    arrays: Dict[str, np.ndarray] = {
        "__meta__": np.array(json.dumps(meta)),
        "image_ids": np.array([r.image_id for r in records], dtype=np.int64),
        "num_pred_rels": np.array([r.num_pred_rels for r in records], dtype=np.int64),
    }
    for group, names in RECORD_GROUPS.items():
        lengths = [len(getattr(r, names[0])) for r in records]
        arrays[f"{group}_offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        for name in names:
            parts = [np.asarray(getattr(r, name), dtype=RECORD_DTYPES[name]).reshape(
                (-1,) + RECORD_TRAILING.get(name, ())) for r in records]
            arrays[name] = np.concatenate(parts) if parts else np.zeros(
                (0,) + RECORD_TRAILING.get(name, ()), dtype=RECORD_DTYPES[name])
    path = os.fspath(path)
    if not path.endswith(".npz"):
        path += ".npz"
    atomic_write(path, lambda f: np.savez_compressed(f, **arrays))
    return path


def load_predictions(path: str) -> PredictionsFile:
    """Read a file written by :func:`save_predictions`. Raises :class:`PredictionsFileError`
    (naming the file) for a missing, corrupted or foreign file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise PredictionsFileError(f"{path}: no such predictions file")
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise PredictionsFileError(f"{path}: not a readable sgg predictions file ({e})") from e
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise PredictionsFileError(f"{path}: not an sgg predictions file (a bare .npy array, "
                                   "not an .npz archive)")
    try:
        with data:
            arrays = {name: data[name] for name in data.files}
    except Exception as e:  # truncated / corrupted archive members: zlib, zipfile, numpy errors
        raise PredictionsFileError(f"{path}: corrupted predictions file ({e})") from e
    if "__meta__" not in arrays:
        raise PredictionsFileError(f"{path}: not an sgg predictions file (no '__meta__' entry)")
    try:
        meta = json.loads(str(arrays["__meta__"]))
    except ValueError as e:
        raise PredictionsFileError(f"{path}: unreadable '__meta__' entry ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise PredictionsFileError(f"{path}: not an sgg predictions file (format "
                                   f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    if meta.get("version") != FORMAT_VERSION:
        raise PredictionsFileError(f"{path}: unsupported predictions file version "
                                   f"{meta.get('version')!r} (this sgg reads {FORMAT_VERSION})")
    try:
        mode = check_mode(meta["mode"])
        ks = check_ks(meta["ks"])
        records = _unpack(arrays)
    except (KeyError, ValueError, TypeError, IndexError) as e:
        raise PredictionsFileError(f"{path}: corrupted predictions file ({e})") from e
    if len(records) != meta.get("num_images"):
        raise PredictionsFileError(f"{path}: holds {len(records)} images, header says "
                                   f"{meta.get('num_images')}")
    return PredictionsFile(records=records, mode=mode, ks=ks, metadata=meta.get("metadata", {}))


def _unpack(arrays: Dict[str, np.ndarray]) -> List[ImageRecord]:
    image_ids = arrays["image_ids"].astype(np.int64).reshape(-1)
    num_pred_rels = arrays["num_pred_rels"].astype(np.int64).reshape(-1)
    n = len(image_ids)
    if len(num_pred_rels) != n:
        raise ValueError("image_ids and num_pred_rels differ in length")
    per_field: Dict[str, List[np.ndarray]] = {}
    for group, names in RECORD_GROUPS.items():
        offsets = arrays[f"{group}_offsets"].astype(np.int64).reshape(-1)
        if len(offsets) != n + 1 or offsets[0] != 0 or np.any(np.diff(offsets) < 0):
            raise ValueError(f"bad offsets of group {group!r}")
        for name in names:
            values = arrays[name]
            trailing = RECORD_TRAILING.get(name, ())
            if values.shape[1:] != trailing or len(values) != offsets[-1]:
                raise ValueError(f"array {name!r} has shape {values.shape}, expected "
                                 f"({offsets[-1]},) + {trailing}")
            values = values.astype(RECORD_DTYPES[name], copy=False)
            per_field[name] = np.split(values, offsets[1:-1])
    return [ImageRecord(image_id=int(image_ids[i]), num_pred_rels=int(num_pred_rels[i]),
                        **{name: parts[i] for name, parts in per_field.items()})
            for i in range(n)]


def evaluate_predictions_file(path: str, num_predicates: int, zeroshot_triplets: Any = None,
                              iou_threshold: float = 0.5, ks: Optional[Sequence[int]] = None,
                              predicate_names: Optional[Sequence[str]] = None,
                              class_names: Any = None) -> Dict[str, Any]:
    """Re-score a saved predictions file. ``ks`` defaults to the file's; a K larger than the
    file's largest K cannot be scored (fewer candidates were kept) and raises ValueError."""
    loaded = load_predictions(path)
    check_not_empty(len(loaded.records), f"'{path}'")
    ks = loaded.ks if ks is None else check_ks(ks)
    if max(ks) > max(loaded.ks):
        raise ValueError(f"{path}: saved with ks={loaded.ks}; cannot score K={max(ks)}")
    metrics = evaluate_records(loaded.records, loaded.mode, num_predicates,
                               zeroshot_triplets=zeroshot_triplets, iou_threshold=iou_threshold,
                               ks=ks, predicate_names=predicate_names)
    if class_names is not None:
        from .detection import records_box_ap

        metrics.update(records_box_ap(loaded.records, loaded.mode, class_names))
    return metrics
