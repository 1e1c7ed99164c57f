"""What the in-memory formats (``coco_json``, ``oiv6``, ``gqa200``, ``psg``) share: a dataset of
per-image arrays held in memory, with VG150Dataset's API, and the checks of the record readers.

A subclass parses its files in ``__init__`` into ``img_info`` (dicts with ``image_id``,
``width``, ``height``, ``file_name``), ``gt_boxes`` (float32 ``[N, 4]`` xyxy pixels, already
clipped as the format's reference does), ``gt_classes``, ``relationships`` (``[M, 3]`` subject,
object, predicate), ``ind_to_classes`` / ``ind_to_predicates`` (background first), ``img_dir``,
``rng`` and ``filter_duplicate_rels``, then calls :meth:`_attach_files`. The record formats
(``oiv6``, ``gqa200``, ``psg``) fill the arrays with :meth:`ImageListDataset._set_records`.

For the record readers: :class:`DatasetFormatError` (the base of each format's error class),
:func:`load_json`, :func:`int_array`, :func:`is_int`, :func:`positive` and
:class:`RecordChecker`, the array checks of one record (boxes, labels, relations) worded by the
format's :class:`RecordSpec`.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import vg150_files
from .vg150 import check_on_disk, dedup_relations, find_depth_files, triplets_of

__all__ = ["ImageListDataset", "DatasetFormatError", "load_json", "int_array", "is_int", "positive", "RecordSpec",
           "RecordChecker"]


class DatasetFormatError(ValueError):
    """A problem of a dataset file, as ``file: where: message: fix`` (each part an attribute).
    Each format raises its own subclass (``OpenImagesError``, ``GQAError``, ``PSGError``)."""

    def __init__(self, file: str, where: str, message: str, fix: str):
        self.file, self.where, self.message, self.fix = file, where, message, fix
        super().__init__(f"{file}: {where}: {message}: {fix}")


def load_json(path: str, what: str, layout: str,
              invalid: Optional[Callable[[ValueError], Exception]] = None) -> Any:
    """The JSON of ``path``. A missing file: FileNotFoundError ``path: <what> not found: <layout>``
    (``layout``: what the format's folder holds and the fix); invalid JSON: the exception
    ``invalid(error)`` (default: a ValueError ``path: not valid JSON (...): the file is truncated
    or corrupt: rewrite it``)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: {what} not found: {layout}")
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            if invalid is None:
                raise ValueError(f"{path}: not valid JSON ({e}): the file is truncated or corrupt: rewrite it") from e
            raise invalid(e) from e


def int_array(values: Any, shape_cols: Optional[int], lists_only: bool = False) -> Optional[np.ndarray]:
    """``values`` as int64, ``[n]`` (``shape_cols`` None) or ``[n, shape_cols]``; None when not a
    sequence of integers (bools are not) of that shape. ``lists_only``: None also for anything but
    a list or tuple (an empty dict or string too)."""
    if lists_only and not isinstance(values, (list, tuple)):
        return None
    try:
        arr = np.asarray(values if len(values) else np.zeros((0,) if shape_cols is None else (0, shape_cols)))
    except (TypeError, ValueError):
        return None
    if arr.dtype == object or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        return None
    if shape_cols is None:
        return arr.astype(np.int64) if arr.ndim == 1 else None
    return arr.astype(np.int64) if arr.ndim == 2 and arr.shape[1] == shape_cols else None


def is_int(v: Any) -> bool:
    """``v`` is an int (Python or numpy), not a bool."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def positive(v: Any) -> bool:
    """``v`` is a finite int or float > 0, not a bool."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0


class RecordSpec(NamedTuple):
    """How one format names the fields of a record in :class:`RecordChecker`'s errors.

    ``first_id``: the first class / predicate id of the files (0: read as id + 1, background 0;
    1: read as they are). ``lists_only``: labels / relations must be JSON lists (see
    :func:`int_array`). Templates: ``label_at`` / ``box_at`` / ``box_ref`` / ``rel_at`` take the
    index (``{}``), ``classes_of`` / ``predicates_of`` the number of names (``{}``). Every other
    field is a message or fix as written."""

    first_id: int
    labels_type: str          # labels not a list of integers
    labels_type_fix: str
    boxes_type: str           # boxes not [n, 4] finite numbers
    box_fix: str              # the fix of every box error
    labels_noun: Optional[str]  # "has n boxes but m <labels_noun>" (None: no count check)
    count_fix: str
    label_at: str             # "det_labels[{}] = "
    classes_of: str           # "the {} 'obj' names of ..."
    class_fix: str
    box_at: str               # "bbox[{}] = "
    box_ref: str              # "bbox[{}]" (the boxes-beyond warning)
    rels_type: str            # relations not [m, 3] integers
    rels_type_fix: str
    rel_at: str               # "rel[{}]"
    box_index: str            # "a box index": what a relation index names
    rel_index_fix: str
    predicates_of: str        # "the {} 'rel' names of ..."
    predicate_fix: str
    lists_only: bool = False


class RecordChecker:
    """The array checks of the records of one file ``path``, raising ``error`` (a
    :class:`DatasetFormatError` subclass) worded by ``spec`` (``num_classes`` / ``num_predicates``:
    C / P without background). Boxes sticking out of their image by more than
    ``vg150_files.BOX_BEYOND_TOLERANCE`` are counted; :meth:`warn_beyond` logs them once."""

    def __init__(self, spec: RecordSpec, error: Callable[..., DatasetFormatError], path: str,
                 num_classes: int, num_predicates: int):
        self.spec, self.error, self.path = spec, error, path
        self.num_classes, self.num_predicates = num_classes, num_predicates
        self.beyond_count, self.first_beyond = 0, ""

    def check(self, where: str, raw_boxes: Any, raw_labels: Any, raw_relations: Any, width: int, height: int,
              after_boxes: Optional[Callable[[], None]] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(boxes, labels, relations)`` of one record (``where``: its place in the file): boxes
        float64 [n, 4] xyxy pixels (not clipped), labels int64 [n] 1..C, relations int64 [m, 3]
        (subject, object, predicate 1..P). Checked in this order, the first problem raised: labels
        are integers, boxes [n, 4] finite, as many boxes as labels, (``after_boxes()``, the
        format's own check), class ids in range, no inverted box, no box entirely outside its
        ``width`` x ``height`` image (clipped to [0, w - 1] x [0, h - 1]), relations [m, 3]
        integers naming boxes of the record, predicate ids in range. Vectorised per record."""
        s, err, path, w, h = self.spec, self.error, self.path, width, height
        labels = int_array(raw_labels, None, s.lists_only)
        if labels is None:
            raise err(path, where, s.labels_type, s.labels_type_fix)
        try:
            boxes = np.asarray(raw_boxes if len(raw_boxes) else np.zeros((0, 4)), np.float64)
        except (TypeError, ValueError):
            boxes = np.zeros((0, 3))
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise err(path, where, s.boxes_type, s.box_fix)
        if s.labels_noun is not None and len(boxes) != len(labels):
            raise err(path, where, f"has {len(boxes)} boxes but {len(labels)} {s.labels_noun}", s.count_fix)
        if after_boxes is not None:
            after_boxes()
        lo, hi = s.first_id, s.first_id + self.num_classes - 1
        bad = np.flatnonzero((labels < lo) | (labels > hi))
        if bad.size:
            raise err(path, where, f"{s.label_at.format(bad[0])}{int(labels[bad[0]])} is out of range {lo}..{hi} "
                      f"({s.classes_of.format(self.num_classes)})", s.class_fix)
        inverted = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if inverted.size:
            raise err(path, where, f"{s.box_at.format(inverted[0])}{boxes[inverted[0]].tolist()} has x2 < x1 or "
                      f"y2 < y1", s.box_fix)
        outside, beyond = vg150_files.pixel_box_fit(boxes, w, h, to_remove=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise err(path, where, f"{s.box_at.format(i)}{boxes[i].tolist()} lies entirely outside its {w}x{h} "
                      f"image (clipped to [0, w - 1] x [0, h - 1] it is empty)", s.box_fix)
        if beyond.any():
            self.beyond_count += int(beyond.sum())
            self.first_beyond = self.first_beyond or f"{where}: {s.box_ref.format(int(np.flatnonzero(beyond)[0]))}"
        rels = int_array(raw_relations, 3, s.lists_only)
        if rels is None:
            raise err(path, where, s.rels_type, s.rels_type_fix)
        bad = np.flatnonzero(((rels[:, :2] < 0) | (rels[:, :2] >= len(boxes))).any(1))
        if bad.size:
            raise err(path, where, f"{s.rel_at.format(bad[0])} = {rels[bad[0]].tolist()} names {s.box_index} "
                      f"outside 0..{len(boxes) - 1}", s.rel_index_fix)
        lo, hi = s.first_id, s.first_id + self.num_predicates - 1
        bad = np.flatnonzero((rels[:, 2] < lo) | (rels[:, 2] > hi))
        if bad.size:
            raise err(path, where, f"{s.rel_at.format(bad[0])} has predicate {int(rels[bad[0], 2])}, out of range "
                      f"{lo}..{hi} ({s.predicates_of.format(self.num_predicates)})", s.predicate_fix)
        if s.first_id == 0:
            labels = labels + 1
            rels = rels.copy()
            rels[:, 2] += 1
        return boxes, labels, rels

    def warn_beyond(self, logger: logging.Logger) -> None:
        """One warning on ``logger`` for the file's boxes that stick out of their image (none: no log)."""
        if self.beyond_count:
            logger.warning("%s: %d box(es) stick out of their image by more than max(%g px, %g of the longer side) "
                           "(first: %s); clipped to [0, w - 1] x [0, h - 1]", self.path, self.beyond_count,
                           vg150_files.BOX_BEYOND_TOLERANCE["pixels"], vg150_files.BOX_BEYOND_TOLERANCE["fraction"],
                           self.first_beyond)


class ImageListDataset:
    """Base of the in-memory formats (module docstring)."""

    @classmethod
    def from_files(cls, files, **kwargs):
        """The split ``files`` (a :class:`sgg.data.catalog.DatasetFiles` of the class's format) names."""
        ds = cls(root=files.root, split=files.split, **kwargs)
        ds.files = files
        return ds

    def _set_options(self, root: str, split: str, num_val_im: int, num_im: int, filter_empty_rels: bool,
                     filter_duplicate_rels: bool, depth_dir: Optional[str], rng: Optional[np.random.Generator]) -> None:
        """The constructor arguments every record format (``oiv6``, ``gqa200``, ``psg``) keeps as they
        are; ``split`` must be 'train', 'val' or 'test'; no overlap filter (``filter_non_overlap``
        False); ``filter_duplicate_rels`` only for train."""
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.root, self.split = root, split
        self.num_val_im, self.num_im = num_val_im, num_im
        self.filter_empty_rels = filter_empty_rels
        self.filter_non_overlap = False
        self.filter_duplicate_rels = bool(filter_duplicate_rels) and split == "train"
        self.depth_dir, self.rng = depth_dir, rng

    def _attach_files(self, depth_dir: Optional[str], check_images: bool) -> None:
        """``filenames`` under ``img_dir``, the depth files of ``depth_dir`` (None: no depth), and,
        with ``check_images``, a check that all of them exist."""
        self.filenames = [os.path.join(self.img_dir, info["file_name"]) for info in self.img_info]
        self._depth_files: Optional[List[str]] = None
        if depth_dir is not None:
            if not os.path.isdir(depth_dir):
                raise FileNotFoundError(f"{depth_dir}: depth folder not found: write the depth maps "
                                        f"({{image_id}}.png / .npy) there, or turn INPUT.LOAD_DEPTH off")
            self._depth_files = find_depth_files(depth_dir, [info["image_id"] for info in self.img_info])
        if check_images:
            check_on_disk(self.filenames, self.img_dir, "images")
            if self._depth_files is not None:
                check_on_disk(self._depth_files, depth_dir, "depth maps")

    def _set_records(self, kept: Sequence[Any]) -> None:
        """``gt_boxes_1024`` (the boxes in the frame whose longer side is ``BOX_SCALE``),
        ``gt_classes``, ``relationships`` and ``gt_boxes`` (float32, clipped to [0, w - 1] x
        [0, h - 1]) of the ``kept`` records (each with ``boxes`` float64 xyxy pixels, ``labels``,
        ``relations``, ``width`` and ``height``)."""
        self.gt_boxes_1024 = [r.boxes * (vg150_files.BOX_SCALE / max(r.width, r.height)) for r in kept]
        self.gt_classes = [r.labels for r in kept]
        self.relationships = [r.relations for r in kept]
        self.gt_boxes = []
        for r in kept:
            b = r.boxes.astype(np.float32)
            b[:, 0::2] = np.clip(b[:, 0::2], 0, r.width - 1)
            b[:, 1::2] = np.clip(b[:, 1::2], 0, r.height - 1)
            self.gt_boxes.append(b)

    def empty_reason(self, num_val_key: str = "DATASETS.NUM_VAL_IMAGES") -> Optional[Tuple[str, str]]:
        """``(reason, fix)`` when the split selected no image, else None, from ``selection_counts``
        (``rows``, ``usable``, ``after_num_im``, ``kept``) in the words of the record formats
        (``oiv6``, ``gqa200``); a cut after ``num_im`` that keeps nothing is worded by the
        format's :meth:`_cut_reason`. ``coco_json`` and ``psg`` word theirs themselves."""
        c = self.selection_counts
        if c["kept"] > 0:
            return None
        need = ">= 1 box and >= 1 relation" if self.filter_empty_rels else ">= 1 box"
        if c["rows"] == 0:
            return (f"'{self.annotation_file}' lists no image", "add records, or leave this split out of the config")
        if c["usable"] == 0:
            return (f"none of the {c['rows']} records of '{self.annotation_file}' has {need}",
                    "annotate boxes and relations")
        if c["after_num_im"] == 0:
            return (f"num_im = {self.num_im} keeps no image", "pass num_im = -1 (all) or > 0")
        return self._cut_reason(num_val_key)

    def _cut_reason(self, num_val_key: str) -> Tuple[str, str]:
        """``(reason, fix)`` of :meth:`empty_reason` when the format's cut after ``num_im`` (a val
        slice) kept no image; a format without such a cut never gets here."""
        raise NotImplementedError(f"{type(self).__name__} selects no image after num_im but has no cut")

    # ------------------------------------------------------------------ API (as VG150Dataset)
    @property
    def num_classes(self) -> int:
        return len(self.ind_to_classes)

    @property
    def num_predicates(self) -> int:
        return len(self.ind_to_predicates)

    @property
    def num_attributes(self) -> int:
        return 0

    @property
    def categories(self) -> Dict[int, str]:
        return dict(enumerate(self.ind_to_classes))

    def __len__(self) -> int:
        return len(self.filenames)

    def get_img_info(self, i: int) -> dict:
        return self.img_info[i]

    def __getitem__(self, i: int) -> dict:
        """Dataset dict (``DESIGN.md``): boxes float32 xyxy pixels as the format clips them; the
        train split draws one predicate per (subject, object) pair when ``filter_duplicate_rels``."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        rels = self.relationships[i]
        if self.filter_duplicate_rels:
            rels = dedup_relations(rels, self.rng)
        d = self.get_groundtruth(i)
        d["file_name"] = self.filenames[i]
        d["relations"] = rels.astype(np.int64, copy=True)
        if self._depth_files is not None:
            d["depth_file"] = self._depth_files[i]
        return d

    def get_groundtruth(self, i: int) -> dict:
        """Evaluation GT: every relation row (duplicate pairs kept), boxes as ``__getitem__``."""
        info = self.img_info[i]
        return {"image_id": int(info["image_id"]), "width": int(info["width"]), "height": int(info["height"]),
                "boxes": self.gt_boxes[i].copy(), "labels": self.gt_classes[i].copy(),
                "relations": self.relationships[i].astype(np.int64, copy=True)}

    def get_triplets(self) -> np.ndarray:
        return triplets_of(self.gt_classes, self.relationships)
