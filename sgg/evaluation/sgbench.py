"""Interop with sgbench (PyPI ``sgbench`` 1.0.0, github lorjul/sgbench): its JSON files both ways.

Export (:func:`export_sgbench`) writes our predictions as an sgbench predictions file, version 1,
and optionally the ground truth as the subset of OpenPSG's ``psg.json`` that sgbench reads, so
the same run can be scored by that independent package::

    sgbench --help   # e.g. sgbench GT.json PRED.json

Import (:func:`load_sgbench_predictions`, :func:`evaluate_sgbench_predictions`) reads an sgbench
predictions file written by any framework and scores it with our SGB-exact evaluator against
the ground truth of our dataset split.

Layouts (ids 0-based in both files; ours are 1-based with background 0, so export subtracts 1
and import adds 1):

* predictions: ``{"version": 1, "images": [{"id": image id, "annotation": [{"bbox": [x1, y1,
  x2, y2], "category": c}], "triplets": [[s, o, p], ...] best first, "ng_triplets": optional
  [[s, o, p], ...] best first}]}``; ``s``/``o`` index ``annotation``. The README's keys
  ``bboxes``/``categories`` are not read by sgbench 1.0.0 and not by us.
* ground truth: ``{"predicate_classes": [...], "thing_classes": [...], "stuff_classes": [],
  "test_image_ids": [...], "data": [{"image_id", "relations": [[s, o, p], ...], "annotations":
  [{"bbox": [x1, y1, x2, y2], "category_id": c}]}]}``.

Image ids are our integer ids, written as JSON integers in both files (sgbench matches ``id`` to
``image_id`` by equality, so the JSON types must agree). On import, a digit-only string id
(``"2343"``) is accepted as the integer.

Decisions:

* Export: a predicted box with label 0 (background) cannot be written (sgbench asserts
  ``category >= 0`` and any category >= 0 could match a GT box), so it is a ValueError naming
  the image and box. PredCls records are exported with the GT boxes and labels (what our
  evaluator scores). ``triplets`` = the record's graph-constrained list: its exact prefix (the
  first ``min(M, max(ks))`` pairs, with their arg-max predicate) followed, for PredCls/SGCls, by
  the further GT-pair rows kept for A@K (so a re-import scores A@K identically; they sit at
  ranks >= max(ks), so sgbench's R@K for K <= max(ks) is unaffected). ``ng_triplets`` = the
  record's no-graph-constraint list. sgbench always scores K = 20, 50, 100: a file saved with
  ``max(ks) < 100`` only has ``max(ks)`` exact ranks (a warning says so).
* Import: triplets carry no scores, only an order. The record gets the triplets in the given
  order with synthetic strictly decreasing scores ``1 / (1 + rank)`` and object scores 1.0;
  the evaluator never re-sorts, so R@K takes the first K. Exact duplicate triplets are dropped
  keeping the first (as sgbench). SGB's R@K is graph-constrained (one predicate per pair): when
  a pair repeats with another predicate, ``repeated_pairs="first"`` (default) keeps its first
  (best) row and drops the later ones from the graph-constrained list (a warning counts them);
  ``"error"`` refuses the file. No-graph-constraint metrics rank ``ng_triplets`` when given,
  else every (deduplicated) row of ``triplets`` including the repeated pairs. An ng list shorter
  than what the evaluator's completeness check expects is padded with never-matching entries
  (pair (0, 0), predicate 0): entries not in the file never count as hits.
* Matching follows our evaluator, i.e. SGB's definitions, not sgbench's: R@K / mR@K / ng /
  zR / A@K with IoU >= threshold in the "+1 pixel" convention and a match per (box pair, GT
  row) instead of sgbench's one-GT-per-box assignment, GT duplicate rows kept, and mR averaged
  over all P predicates (absent = 0). An image with GT relations but no predicted triplet is
  skipped (SGB) where sgbench counts R = 0. Numbers therefore differ slightly from sgbench's own.
* ``mode`` is not in the file and must be given. SGDet/SGCls score the file's boxes and
  categories; PredCls scores the GT objects, so the file's ``annotation`` must be the GT
  objects in GT order (checked: count, categories, boxes within 1e-2 px).
* Images: every prediction id must be a GT image (else a ValueError naming the extra ids); every
  GT image with >= 1 relation must be predicted (else a ValueError naming the missing ids)
  unless ``missing="skip"`` (those images are left out, with a warning).
"""
from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgg.utils.io import atomic_write

from .io import PredictionsFile, load_predictions
from .sgg_eval import (DEFAULT_KS, ImageRecord, _pair_in_gt, check_ks, check_mode, check_not_empty,
                       evaluate_records, get_field, ng_topk_for, to_numpy)

logger = logging.getLogger(__name__)

SGBENCH_VERSION = 1
_PREDCLS_BOX_ATOL = 1e-2


class SgbenchFileError(ValueError):
    """An sgbench predictions file we cannot read or that does not fit the ground truth."""


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------
def _write_json(path: str, obj: Any) -> str:
    path = os.fspath(path)
    text = json.dumps(obj)
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))
    return path


def _box_list(boxes: np.ndarray) -> List[List[float]]:
    return [[float(v) for v in box] for box in np.asarray(boxes, dtype=np.float64).reshape(-1, 4)]


def _triplet_list(pairs: np.ndarray, predicates: np.ndarray) -> List[List[int]]:
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    predicates = np.asarray(predicates, dtype=np.int64).reshape(-1)
    return [[int(s), int(o), int(p) - 1] for (s, o), p in zip(pairs, predicates)]


def _export_image(rec: ImageRecord, mode: str) -> Dict[str, Any]:
    if mode == "predcls":
        boxes, labels = rec.gt_boxes, rec.gt_labels
    else:
        boxes, labels = rec.boxes, rec.labels
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    bad = np.flatnonzero(labels < 1)
    if len(bad):
        raise ValueError(f"image {rec.image_id}: box {int(bad[0])} has label {int(labels[bad[0]])} "
                         f"(background); sgbench needs a category >= 0 for every box")
    # rel_rows ascending: the exact prefix 0..min(M, max(ks))-1, then (PredCls/SGCls) the extra
    # GT-pair rows kept for A@K, written in order right after it
    ng_keep = np.asarray(rec.ng_labels).reshape(-1) >= 1  # never write padding rows
    return {
        "id": int(rec.image_id),
        "annotation": [{"bbox": b, "category": int(c) - 1} for b, c in zip(_box_list(boxes), labels)],
        "triplets": _triplet_list(rec.rel_pairs, rec.rel_labels),
        "ng_triplets": _triplet_list(np.asarray(rec.ng_pairs)[ng_keep],
                                     np.asarray(rec.ng_labels)[ng_keep]),
    }


def sgbench_predictions_dict(records: Sequence[ImageRecord], mode: str) -> Dict[str, Any]:
    """The sgbench predictions JSON object (version 1) of ``records``."""
    check_mode(mode)
    return {"version": SGBENCH_VERSION, "images": [_export_image(r, mode) for r in records]}


def sgbench_groundtruth_dict(records: Sequence[ImageRecord], num_predicates: Optional[int] = None,
                             predicate_names: Optional[Sequence[str]] = None,
                             class_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """The psg.json subset sgbench reads, from the GT stored in ``records``.

    ``predicate_classes`` are ``predicate_names`` (P names, or P+1 with background first) or
    ``"predicate_<i>"`` placeholders for ``num_predicates``; ``thing_classes`` are
    ``class_names`` (without background; a leading ``__background__`` is dropped) when given,
    else placeholders up to the largest label; ``stuff_classes`` is empty."""
    if predicate_names is not None:
        names = [str(n) for n in predicate_names]
        if num_predicates is not None and len(names) == int(num_predicates) + 1:
            names = names[1:]
        elif names and names[0] == "__background__":
            names = names[1:]
        if num_predicates is not None and len(names) != int(num_predicates):
            raise ValueError(f"{len(names)} predicate names for {num_predicates} predicates")
    elif num_predicates is not None:
        names = [f"predicate_{i}" for i in range(1, int(num_predicates) + 1)]
    else:
        raise ValueError("sgbench ground truth needs num_predicates or predicate_names "
                         "(it reads the predicate count from 'predicate_classes')")
    data = []
    max_label = 0
    for rec in records:
        labels = np.asarray(rec.gt_labels, dtype=np.int64).reshape(-1)
        rels = np.asarray(rec.gt_rels, dtype=np.int64).reshape(-1, 3)
        if len(labels) and labels.min() < 1:
            raise ValueError(f"image {rec.image_id}: a GT box has label 0 (background)")
        if len(rels) and (rels[:, 2].min() < 1 or rels[:, 2].max() > len(names)):
            raise ValueError(f"image {rec.image_id}: GT predicate outside 1..{len(names)}")
        max_label = max(max_label, int(labels.max()) if len(labels) else 0)
        data.append({
            "image_id": int(rec.image_id),
            "relations": [[int(s), int(o), int(p) - 1] for s, o, p in rels],
            "annotations": [{"bbox": b, "category_id": int(c) - 1}
                            for b, c in zip(_box_list(rec.gt_boxes), labels)],
        })
    if class_names is not None:
        things = [str(n) for n in class_names]
        if things and things[0] == "__background__":
            things = things[1:]
    else:
        things = [f"class_{i}" for i in range(1, max_label + 1)]
    return {"thing_classes": things, "stuff_classes": [], "predicate_classes": names,
            "test_image_ids": [d["image_id"] for d in data], "data": data}


def _as_records(source: Any, mode: Optional[str]) -> Tuple[List[ImageRecord], str, tuple]:
    if isinstance(source, (str, os.PathLike)):
        source = load_predictions(source)
    if isinstance(source, PredictionsFile):
        if mode is not None and check_mode(mode) != source.mode:
            raise ValueError(f"mode {mode!r} given for a predictions file made in {source.mode!r}")
        return list(source.records), source.mode, tuple(source.ks)
    records = list(source)
    if mode is None:
        raise ValueError("export_sgbench of a list of ImageRecord needs mode=")
    return records, check_mode(mode), tuple(DEFAULT_KS)


def export_sgbench(records_or_predictions_file: Any, path_pred: str, path_gt: Optional[str] = None,
                   mode: Optional[str] = None, num_predicates: Optional[int] = None,
                   predicate_names: Optional[Sequence[str]] = None,
                   class_names: Optional[Sequence[str]] = None) -> Dict[str, str]:
    """Write predictions (a :class:`PredictionsFile`, the path of our ``.npz``, or a list of
    :class:`ImageRecord` with ``mode``) as an sgbench predictions file ``path_pred``, and, with
    ``path_gt``, the ground truth stored in the records as sgbench's psg.json subset (needs
    ``num_predicates`` or ``predicate_names``). Returns ``{"predictions": path, "groundtruth":
    path}`` (the latter only when written). See the module docstring for the rules."""
    records, mode, ks = _as_records(records_or_predictions_file, mode)
    if max(ks) < 100:
        logger.warning("predictions kept with ks=%s: sgbench's R@K for K > %d is not meaningful",
                       ks, max(ks))
    out = {"predictions": _write_json(path_pred, sgbench_predictions_dict(records, mode))}
    if path_gt is not None:
        gt = sgbench_groundtruth_dict(records, num_predicates, predicate_names, class_names)
        out["groundtruth"] = _write_json(path_gt, gt)
    return out


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------
def _gt_index(groundtruths: Any) -> Dict[int, Any]:
    """``{image_id: gt}`` from a dataset (``get_groundtruth``/``get_img_info``), a mapping
    ``{image_id: gt}`` or a sequence of GT dicts holding ``image_id``."""
    if hasattr(groundtruths, "get_groundtruth") and hasattr(groundtruths, "get_img_info"):
        return {int(groundtruths.get_img_info(i)["image_id"]): _LazyGT(groundtruths, i)
                for i in range(len(groundtruths))}
    if isinstance(groundtruths, Mapping):
        return {int(k): v for k, v in groundtruths.items()}
    index = {}
    for i, gt in enumerate(groundtruths):
        image_id = get_field(gt, "image_id")
        if image_id is None:
            raise ValueError(f"ground truth {i} has no image_id (needed to match sgbench ids)")
        index[int(image_id)] = gt
    return index


class _LazyGT:
    """A dataset's GT of image ``i``, read on first use (GT loading may be slow)."""

    def __init__(self, dataset: Any, i: int):
        self.dataset, self.i, self._gt = dataset, i, None

    def get(self) -> Any:
        if self._gt is None:
            self._gt = self.dataset.get_groundtruth(self.i)
        return self._gt


def _resolve(gt: Any) -> Any:
    return gt.get() if isinstance(gt, _LazyGT) else gt


def _num_relations(gt: Any) -> int:
    rels = get_field(gt, "relations")
    return 0 if rels is None else int(to_numpy(rels).reshape(-1, 3).shape[0])


def _int_array(value: Any, width: int, what: str) -> np.ndarray:
    if value is None or (isinstance(value, list) and len(value) == 0):
        return np.zeros((0, width), dtype=np.int64)
    arr = np.asarray(value)
    if arr.ndim != 2 or arr.shape[1] != width or not (
            np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.bool_)):
        if arr.ndim == 2 and arr.shape[1] == width and np.issubdtype(arr.dtype, np.floating) \
                and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            return arr.astype(np.int64)
        raise ValueError(f"{what} must be a list of [{', '.join('spo'[:width])}] integer rows")
    return arr.astype(np.int64)


def _dedup_first(rows: np.ndarray) -> np.ndarray:
    if len(rows) == 0:
        return rows
    _, first = np.unique(rows, axis=0, return_index=True)
    return rows[np.sort(first)]


def _image_id(raw: Any, where: str) -> int:
    if isinstance(raw, bool):
        raise SgbenchFileError(f"{where}: image id {raw!r} is not an integer")
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str) and raw.strip().lstrip("-").isdigit():
        return int(raw)
    raise SgbenchFileError(f"{where}: image id {raw!r} is not an integer (our image ids are integers)")


def read_sgbench_predictions(path_pred: str) -> List[Dict[str, Any]]:
    """The ``images`` of an sgbench predictions file, checked for shape (not against any GT):
    a list of ``{"id": int, "boxes": float64[N,4], "categories": int64[N], "triplets":
    int64[T,3], "ng_triplets": int64[U,3] or None}`` (all 0-based, as in the file)."""
    path = os.fspath(path_pred)
    if not os.path.isfile(path):
        raise SgbenchFileError(f"{path}: no such sgbench predictions file")
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        raise SgbenchFileError(f"{path}: not a JSON file ({e}); sgbench's panoptic ZIP files are "
                               f"not supported") from e
    if not isinstance(data, dict) or "images" not in data:
        raise SgbenchFileError(f"{path}: not an sgbench predictions file (no 'images' list)")
    if data.get("version") != SGBENCH_VERSION:
        raise SgbenchFileError(f"{path}: unsupported sgbench predictions version "
                               f"{data.get('version')!r} (this reads version {SGBENCH_VERSION})")
    if not isinstance(data["images"], list):
        raise SgbenchFileError(f"{path}: 'images' must be a list")
    out, seen = [], set()
    for n, img in enumerate(data["images"]):
        where = f"{path}: images[{n}]"
        if not isinstance(img, dict) or "id" not in img:
            raise SgbenchFileError(f"{where}: an image entry needs an 'id'")
        image_id = _image_id(img["id"], where)
        where = f"{path}: image {image_id}"
        if image_id in seen:
            raise SgbenchFileError(f"{where}: listed twice")
        seen.add(image_id)
        if "annotation" not in img:
            hint = " (sgbench 1.0.0 reads 'annotation', not the README's 'bboxes'/'categories')" \
                if "bboxes" in img or "categories" in img else ""
            raise SgbenchFileError(f"{where}: no 'annotation' list{hint}")
        if "seg_filename" in img and not img["annotation"]:
            raise SgbenchFileError(f"{where}: segmentation-mask predictions are not supported")
        boxes, cats = [], []
        for j, ann in enumerate(img["annotation"] or []):
            try:
                box = [float(v) for v in ann["bbox"][:4]]
                cat = ann["category"]
            except (KeyError, TypeError, ValueError, IndexError) as e:
                raise SgbenchFileError(f"{where}: annotation[{j}] needs 'bbox' [x1, y1, x2, y2] and "
                                       f"'category' ({e!r})") from e
            if len(box) != 4 or not np.all(np.isfinite(box)):
                raise SgbenchFileError(f"{where}: annotation[{j}] bbox {ann['bbox']!r} is not 4 finite numbers")
            if isinstance(cat, bool) or not isinstance(cat, int):
                raise SgbenchFileError(f"{where}: annotation[{j}] category {cat!r} is not an integer")
            boxes.append(box)
            cats.append(cat)
        entry = {"id": image_id, "boxes": np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                 "categories": np.asarray(cats, dtype=np.int64)}
        for key in ("triplets", "ng_triplets"):
            if key == "triplets" and key not in img:
                raise SgbenchFileError(f"{where}: no 'triplets' list")
            value = img.get(key)
            if key == "ng_triplets" and not value:
                entry[key] = None
                continue
            try:
                entry[key] = _int_array(value, 3, key)
            except ValueError as e:
                raise SgbenchFileError(f"{where}: {e}") from e
        out.append(entry)
    return out


def _check_ranges(entry: Dict[str, Any], where: str, num_classes: Optional[int],
                  num_predicates: int) -> None:
    cats = entry["categories"]
    hi = f"..{num_classes - 1}" if num_classes is not None else "+"
    bad = np.flatnonzero((cats < 0) | ((cats >= num_classes) if num_classes is not None else False))
    if len(bad):
        raise SgbenchFileError(f"{where}: annotation[{int(bad[0])}] category {int(cats[bad[0]])} "
                               f"is outside 0{hi} (0-based)")
    n = len(cats)
    for key in ("triplets", "ng_triplets"):
        rows = entry[key]
        if rows is None or len(rows) == 0:
            continue
        bad = np.flatnonzero((rows[:, :2] < 0).any(1) | (rows[:, :2] >= n).any(1))
        if len(bad):
            raise SgbenchFileError(f"{where}: {key}[{int(bad[0])}] = {rows[bad[0]].tolist()} indexes a box "
                                   f"outside 0..{n - 1} ({n} annotations)")
        bad = np.flatnonzero((rows[:, 2] < 0) | (rows[:, 2] >= num_predicates))
        if len(bad):
            raise SgbenchFileError(f"{where}: {key}[{int(bad[0])}] predicate {int(rows[bad[0], 2])} is "
                                   f"outside 0..{num_predicates - 1} (0-based)")


def _record(entry: Dict[str, Any], gt: Any, mode: str, ks: Tuple[int, ...], num_predicates: int,
            repeated_pairs: str, where: str) -> Tuple[ImageRecord, int]:
    gt_boxes = to_numpy(get_field(gt, "boxes")).astype(np.float32).reshape(-1, 4)
    gt_labels = to_numpy(get_field(gt, "labels")).astype(np.int64).reshape(-1)
    rels_in = get_field(gt, "relations")
    gt_rels = (np.zeros((0, 3), np.int64) if rels_in is None
               else to_numpy(rels_in).astype(np.int64).reshape(-1, 3))
    boxes = entry["boxes"].astype(np.float32)
    labels = entry["categories"] + 1
    if mode == "predcls":
        same = (len(labels) == len(gt_labels) and np.array_equal(labels, gt_labels)
                and np.allclose(boxes, gt_boxes, atol=_PREDCLS_BOX_ATOL))
        if not same:
            raise SgbenchFileError(f"{where}: PredCls scores the GT objects, but the file's "
                                   f"{len(labels)} annotations are not the {len(gt_labels)} GT boxes and "
                                   f"categories in GT order; score it as sgcls or sgdet")
    triplets = _dedup_first(entry["triplets"])
    _, first_of_pair = np.unique(triplets[:, :2], axis=0, return_index=True) if len(triplets) else (None, [])
    first_of_pair = np.sort(np.asarray(first_of_pair, dtype=np.int64))
    repeated = len(triplets) - len(first_of_pair)
    if repeated and repeated_pairs == "error":
        raise SgbenchFileError(f"{where}: {repeated} triplet(s) repeat a (subject, object) pair with another "
                               f"predicate; graph-constrained R@K allows one predicate per pair "
                               f"(repeated_pairs='first' keeps the first)")
    graph = triplets[first_of_pair]
    ng = entry["ng_triplets"]
    ng = triplets if ng is None else _dedup_first(ng)

    k_max = max(ks)
    num_rels = len(graph)
    pairs = graph[:, :2]
    if mode == "sgdet" or num_rels == 0:
        rows = np.arange(min(num_rels, k_max))
    else:
        keep = np.zeros(num_rels, dtype=bool)
        keep[:k_max] = True
        keep[np.flatnonzero(_pair_in_gt(pairs, gt_rels))[:k_max]] = True
        rows = np.flatnonzero(keep)
    k_ng = ng_topk_for(ks)
    ng = ng[:k_ng]
    ng_pairs, ng_labels = ng[:, :2], ng[:, 2] + 1
    need = min(k_ng, num_rels * num_predicates)
    if len(ng) < need:  # entries absent from the file never match: predicate 0 (background)
        pad = need - len(ng)
        ng_pairs = np.concatenate([ng_pairs, np.zeros((pad, 2), np.int64)])
        ng_labels = np.concatenate([ng_labels, np.zeros(pad, np.int64)])
    ng_scores = 1.0 / (1.0 + np.arange(len(ng_labels), dtype=np.float64))
    if len(ng) < len(ng_labels):
        ng_scores[len(ng):] = 0.0
    record = ImageRecord(
        image_id=int(entry["id"]), num_pred_rels=num_rels,
        gt_boxes=gt_boxes, gt_labels=gt_labels.astype(np.int32), gt_rels=gt_rels.astype(np.int32),
        boxes=boxes, labels=labels.astype(np.int32), scores=np.ones(len(labels), np.float32),
        rel_rows=rows.astype(np.int64), rel_pairs=pairs[rows].astype(np.int32),
        rel_labels=(graph[rows, 2] + 1).astype(np.int32),
        rel_label_scores=(1.0 / (1.0 + rows)).astype(np.float32),
        ng_pairs=ng_pairs.astype(np.int32).reshape(-1, 2), ng_labels=ng_labels.astype(np.int32),
        ng_scores=ng_scores.astype(np.float32),
    )
    return record, repeated


def load_sgbench_predictions(path_pred: str, groundtruths: Any, mode: str, num_predicates: int,
                             ks: Sequence[int] = DEFAULT_KS, num_classes: Optional[int] = None,
                             repeated_pairs: str = "first", missing: str = "error") -> List[ImageRecord]:
    """Read an sgbench predictions file (version 1) into the :class:`ImageRecord` list our
    evaluator scores, in the file's image order.

    ``groundtruths``: our dataset split (``get_groundtruth``/``get_img_info``), a mapping
    ``{image_id: gt}`` or a sequence of GT dicts with ``image_id`` (``boxes``, ``labels`` 1-based,
    ``relations`` with predicates 1..P). ``num_predicates`` = P (foreground); ``num_classes`` =
    foreground object classes (checks categories < num_classes when given). ``repeated_pairs``:
    ``"first"`` or ``"error"``; ``missing``: ``"error"`` or ``"skip"`` (see the module
    docstring). Raises :class:`SgbenchFileError` naming the file and the image."""
    path = os.fspath(path_pred)
    check_mode(mode)
    ks = check_ks(ks)
    num_predicates = int(num_predicates)
    if repeated_pairs not in ("first", "error"):
        raise ValueError(f"repeated_pairs must be 'first' or 'error', got {repeated_pairs!r}")
    if missing not in ("error", "skip"):
        raise ValueError(f"missing must be 'error' or 'skip', got {missing!r}")
    entries = read_sgbench_predictions(path)
    index = _gt_index(groundtruths)
    extra = [e["id"] for e in entries if e["id"] not in index]
    if extra:
        raise SgbenchFileError(f"{path}: {len(extra)} image id(s) are not in the ground truth "
                               f"(first: {extra[:5]}); score it against the split it was predicted on")
    predicted = {e["id"] for e in entries}
    missing_ids = [i for i, gt in index.items() if i not in predicted and _num_relations(_resolve(gt)) > 0]
    if missing_ids:
        msg = (f"{path}: {len(missing_ids)} ground-truth image id(s) with relations have no predictions "
               f"(first: {missing_ids[:5]})")
        if missing == "error":
            raise SgbenchFileError(msg + "; pass missing='skip' to score the predicted images only")
        logger.warning("%s; scoring the predicted images only", msg)
    records, repeated_images = [], 0
    for entry in entries:
        where = f"{path}: image {entry['id']}"
        _check_ranges(entry, where, num_classes, num_predicates)
        record, repeated = _record(entry, _resolve(index[entry["id"]]), mode, ks, num_predicates,
                                   repeated_pairs, where)
        repeated_images += bool(repeated)
        records.append(record)
    if repeated_images:
        logger.warning("%s: %d image(s) repeat a (subject, object) pair with several predicates; the "
                       "graph-constrained metrics keep each pair's first triplet", path, repeated_images)
    return records


def evaluate_sgbench_predictions(path_pred: str, groundtruths: Any, mode: str, num_predicates: int,
                                 zeroshot_triplets: Any = None, iou_threshold: float = 0.5,
                                 ks: Sequence[int] = DEFAULT_KS,
                                 predicate_names: Optional[Sequence[str]] = None,
                                 num_classes: Optional[int] = None, repeated_pairs: str = "first",
                                 missing: str = "error") -> Dict[str, Any]:
    """Our metrics (:func:`~sgg.evaluation.sgg_eval.evaluate_records`' dict, plus ``mode``) of an
    sgbench predictions file on ``groundtruths`` (see :func:`load_sgbench_predictions`)."""
    records = load_sgbench_predictions(path_pred, groundtruths, mode, num_predicates, ks=ks,
                                       num_classes=num_classes, repeated_pairs=repeated_pairs,
                                       missing=missing)
    check_not_empty(len(records), f"'{os.fspath(path_pred)}'")
    metrics = evaluate_records(records, mode, num_predicates, zeroshot_triplets=zeroshot_triplets,
                               iou_threshold=iou_threshold, ks=ks, predicate_names=predicate_names)
    metrics["mode"] = mode
    return metrics
