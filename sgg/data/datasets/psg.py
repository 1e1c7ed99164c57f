"""PSG (OpenPSG's ``psg.json``) used as boxes, without masks, as dataset dicts.

Layout (``specs/datasets.md`` section 4)::

    ROOT/psg.json                    data, test_image_ids, thing_classes, stuff_classes, predicate_classes
    ROOT/coco/<file_name>            the COCO images (or DATA_DIR/coco/<file_name>, OpenPSG's layout
                                     with data/psg and data/coco side by side)

``psg.json`` is one JSON object; an item of its ``data`` list::

    {"file_name": "train2017/000000000009.jpg", "height": 480, "width": 640, "image_id": 9 (or "9"),
     "annotations": [{"bbox": [x1, y1, x2, y2] (pixels), "bbox_mode": 0, "category_id": 0-based}, ...],
     "relations": [[subject, object, 0-based predicate], ...],
     "pan_seg_file_name": ..., "segments_info": ...}          (masks: not read)

Rules (OpenPSG's ``openpsg/datasets/psg.py`` and SGG-Benchmark's PSG reader, boxes only):

* classes = ``thing_classes + stuff_classes`` (stuff after thing), background first:
  ``category_id`` + 1 (C + 1 classes); predicates ``predicate_classes``, background first:
  predicate + 1 (P + 1); every annotation is a box (things and stuff), masks are ignored;
  ``stuff_classes`` may be empty, ``thing_classes`` and ``predicate_classes`` may not;
* ``image_id``: an int or an integral numeric string (the real file has both), read as int;
* an item without boxes or (``filter_empty_rels``) without relations is dropped, in every split;
* test = the items whose ``image_id`` is in ``test_image_ids`` (ids naming no item are ignored,
  counted in a debug log); the other items form the train pool: val = its first ``num_val_im``
  usable items (``DATASETS.NUM_VAL_IMAGES``; SGG-Benchmark uses 1,000) and train = the rest, as
  VG150 does in SGB (train excludes the val items; ``num_val_im`` <= 0: no val, train = all);
  ``num_im`` cuts the usable items of the split's pool first, as VG150's;
* test / val GT (:meth:`get_groundtruth`): exact duplicate (subject, object, predicate) rows are
  removed (first occurrences kept, in order), several predicates on one pair stay (OpenPSG);
  train keeps every row and draws one predicate per (subject, object) pair and call when
  ``filter_duplicate_rels`` (:func:`~sgg.data.datasets.vg150.dedup_relations`); no SGDet
  overlap filter (``filter_non_overlap`` is accepted and not used, as OpenPSG / SGG-Benchmark);
* boxes are clipped to [0, w - 1] x [0, h - 1] (as the other formats); a box the clip empties
  (entirely outside its image) is an error, one sticking out by more than
  ``vg150_files.BOX_BEYOND_TOLERANCE`` is clipped with one warning per file
  (:func:`~sgg.data.datasets.vg150_files.pixel_box_fit`); ``bbox_mode`` must be 0 (XYXY_ABS);
* a missing file (FileNotFoundError), invalid JSON, missing keys, out-of-range class / predicate
  ids, relation indices naming no annotation, inverted boxes, boxes outside their image,
  duplicate image ids: :class:`PSGError` ``file: where: message: fix``.

``img_info`` holds ``image_id``, ``width``, ``height`` and ``file_name`` (relative to the image
folder, :func:`image_dir`).
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, FrozenSet, List, NamedTuple, Optional, Tuple

import numpy as np

from . import vg150_files
from .image_list import (DatasetFormatError, ImageListDataset, RecordChecker, RecordSpec, int_array, is_int,
                         load_json, positive)
from .registry import DATASET_FORMAT_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "NAMED_FOLDERS", "ANNOTATION_FILE", "IMAGE_DIR", "SPLITS", "is_folder", "image_dir",
           "folder_files", "source_files", "annotation_file", "PSGError", "ParsedItem", "load_psg", "read_classes",
           "parse_items", "PSGDataset"]

FORMAT = "psg"
ANNOTATION_FILE = "psg.json"
IMAGE_DIR = "coco"
SPLITS = ("train", "val", "test")
BACKGROUND = vg150_files.BACKGROUND
#: The wording of an item's array checks (:class:`~sgg.data.datasets.image_list.RecordChecker`); the
#: boxes and labels come from the same annotations, so their counts always agree (no count check).
_RECORD = RecordSpec(
    first_id=0, lists_only=True,
    labels_type="a category_id is not an integer", labels_type_fix="give 0-based integer category ids",
    boxes_type="a bbox is not [x1, y1, x2, y2] finite numbers",
    box_fix="correct the bbox ([x1, y1, x2, y2] in pixels of the image) or the item's width / height",
    labels_noun=None, count_fix="",
    label_at="annotations[{}] category_id ", classes_of="thing_classes + stuff_classes: {} names",
    class_fix="use 0-based ids of thing_classes + stuff_classes, or add the class there",
    box_at="annotations[{}] bbox ", box_ref="annotations[{}]",
    rels_type="relations is not a list of [subject, object, predicate] integers",
    rels_type_fix="write each relation as [subject annotation index, object annotation index, predicate id]",
    rel_at="relations[{}]", box_index="an annotation",
    rel_index_fix="point subject / object at annotations of the item",
    predicates_of="the {} predicate_classes",
    predicate_fix="use 0-based ids of predicate_classes, or add the predicate there")

# Folder layout (what sgg.data.catalog asks of every one-folder format).
#: dataset base name -> its folder under DATA_DIR
NAMED_FOLDERS: Dict[str, str] = {"psg": "psg"}


def is_folder(root: str) -> bool:
    """``root`` holds ``psg.json``."""
    return os.path.isfile(os.path.join(root, ANNOTATION_FILE))


def image_dir(root: str) -> str:
    """``root/coco`` when it exists, else the sibling ``root/../coco`` (OpenPSG's data/psg + data/coco)."""
    own = os.path.join(root, IMAGE_DIR)
    if os.path.isdir(own):
        return own
    sibling = os.path.join(os.path.dirname(os.path.normpath(root)), IMAGE_DIR)
    return sibling if os.path.isdir(sibling) else own


def folder_files(root: str, split: str) -> Tuple[str, str]:
    """(annotation file, image folder): ``psg.json`` holds every split."""
    return os.path.join(root, ANNOTATION_FILE), image_dir(root)


def source_files(root: str) -> Tuple[str, ...]:
    return (os.path.join(root, ANNOTATION_FILE),)


def annotation_file(root: str) -> str:
    """``root/psg.json``."""
    return os.path.join(root, ANNOTATION_FILE)


class PSGError(DatasetFormatError):
    """A problem of a ``psg.json``, as ``file: where: message: fix`` (each part an attribute)."""


class ParsedItem(NamedTuple):
    """One item of ``data``: ``boxes`` float64 [n, 4] xyxy pixels (not clipped), ``labels`` int64
    [n] 1..C, ``relations`` int64 [m, 3] (subject, object, predicate 1..P), every row of the file."""

    image_id: int
    file_name: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    relations: np.ndarray


_TOP_KEYS = ("data", "test_image_ids", "thing_classes", "stuff_classes", "predicate_classes")
_ITEM_KEYS = ("file_name", "height", "width", "image_id", "annotations", "relations")


def load_psg(path: str) -> Dict[str, Any]:
    """The JSON object of ``path`` (a ``psg.json``), its top-level keys checked."""
    data = load_json(
        path, ANNOTATION_FILE,
        f"a PSG folder holds {ANNOTATION_FILE} (OpenPSG's data/psg) and the COCO images in coco/ or in the sibling "
        f"folder ../coco. Fix: set DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the folder holding psg/, or add the file",
        lambda e: PSGError(path, "whole file", f"not valid JSON ({e})",
                           "the file is truncated or corrupt: download or rewrite it"))
    if not isinstance(data, dict):
        raise PSGError(path, "top level", "must be a JSON object", f"write an object with {', '.join(_TOP_KEYS)}")
    miss = [k for k in _TOP_KEYS if k not in data]
    if miss:
        raise PSGError(path, "top level", f"has no {', '.join(miss)}",
                       f"use OpenPSG's psg.json (it has {', '.join(_TOP_KEYS)})")
    return data


def read_classes(path: str, data: Optional[Dict[str, Any]] = None) -> Tuple[List[str], List[str]]:
    """(classes, predicates) of ``path``'s psg.json (``data``: its loaded JSON, else read), background
    first: classes = background + thing_classes + stuff_classes."""
    data = load_psg(path) if data is None else data
    lists = {}
    for key in ("thing_classes", "stuff_classes", "predicate_classes"):
        names = data.get(key)
        if not isinstance(names, list) or (not names and key != "stuff_classes"):
            raise PSGError(path, f"'{key}'", "is missing or empty" if key != "stuff_classes" else "is not a list",
                           f"write '{key}' as a list of names (stuff_classes may be [])")
        lists[key] = [str(n) for n in names]
    classes = lists["thing_classes"] + lists["stuff_classes"]
    for key, names in (("thing_classes + stuff_classes", classes), ("predicate_classes", lists["predicate_classes"])):
        if len(set(names)) != len(names):
            twice = next(n for i, n in enumerate(names) if n in names[:i])
            raise PSGError(path, f"'{key}'", f"holds the name '{twice}' twice",
                           "give every class (thing and stuff) and every predicate a distinct name")
    return [BACKGROUND] + classes, [BACKGROUND] + lists["predicate_classes"]


def _image_id(value: Any) -> Optional[int]:
    """``value`` as an int image id: an int, an integral float or an integral numeric string (None otherwise)."""
    if is_int(value):
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return None
    if isinstance(value, float) and np.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _check_modes(path: str, where: str, modes: List[Any]) -> None:
    """Every annotation's ``bbox_mode`` (``modes``) is 0 (XYXY_ABS), else a PSGError."""
    mode_ids = int_array(modes, None)
    bad = (np.flatnonzero(mode_ids != 0) if mode_ids is not None
           else [next(i for i, m in enumerate(modes) if not isinstance(m, int) or isinstance(m, bool))])
    if len(bad):
        raise PSGError(path, where, f"annotations[{bad[0]}] has bbox_mode {modes[bad[0]]!r}, not 0 (XYXY_ABS)",
                       "write boxes as [x1, y1, x2, y2] in pixels with bbox_mode 0")


def parse_items(path: str, data: Optional[Dict[str, Any]] = None,
                num_classes: Optional[int] = None, num_predicates: Optional[int] = None
                ) -> Tuple[List[ParsedItem], FrozenSet[int]]:
    """Every item of ``data`` (``path``'s loaded psg.json, else read), in file order, checked, and the
    set of test image ids. ``num_classes`` / ``num_predicates``: C / P without background (default:
    the file's lists). Raises :class:`PSGError` on the first problem; boxes sticking out of their
    image are logged once (a warning). Vectorised per item."""
    data = load_psg(path) if data is None else data
    if num_classes is None or num_predicates is None:
        classes, predicates = read_classes(path, data)
        num_classes, num_predicates = len(classes) - 1, len(predicates) - 1
    items = data["data"]
    if not isinstance(items, list):
        raise PSGError(path, "'data'", "is not a list of items",
                       "write one {file_name, height, width, image_id, annotations, relations} object per image")
    out: List[ParsedItem] = []
    seen: Dict[int, int] = {}
    check = RecordChecker(_RECORD, PSGError, path, num_classes, num_predicates)
    for k, item in enumerate(items):
        where = f"item {k}"
        miss = [f for f in _ITEM_KEYS if not isinstance(item, dict) or f not in item]
        if miss:
            raise PSGError(path, where, f"has no {', '.join(miss)}",
                           "give every item file_name, height, width, image_id, annotations and relations")
        iid = _image_id(item["image_id"])
        if iid is None:
            raise PSGError(path, where, f"image_id {item['image_id']!r} is not an integer",
                           "give an int (or an integral numeric string) image_id")
        where = f"item {k} (image_id {iid}, '{item['file_name']}')"
        if iid in seen:
            raise PSGError(path, where, f"image_id {iid} is also the id of item {seen[iid]}",
                           "give every item a distinct image_id (or remove the repeated item)")
        seen[iid] = k
        w, h = item["width"], item["height"]
        if not (positive(w) and positive(h)):
            raise PSGError(path, where, f"width {w!r} / height {h!r} is not a size > 0",
                           "give the image's size in pixels")
        w, h = int(w), int(h)
        anns = item["annotations"]
        if not isinstance(anns, list):
            raise PSGError(path, where, "annotations is not a list", "list one {bbox, bbox_mode, category_id} per box")
        try:
            raw_boxes = [a["bbox"] for a in anns]
            cats = [a["category_id"] for a in anns]
            modes = [a.get("bbox_mode", 0) for a in anns]
        except (KeyError, TypeError, AttributeError):
            i = next(i for i, a in enumerate(anns) if not isinstance(a, dict) or "bbox" not in a
                     or "category_id" not in a)
            raise PSGError(path, where, f"annotations[{i}] has no bbox or category_id",
                           "give every annotation a bbox [x1, y1, x2, y2] and a category_id") from None
        boxes, labels, rels = check.check(where, raw_boxes, cats, item["relations"], w, h,
                                          after_boxes=lambda: _check_modes(path, where, modes))
        out.append(ParsedItem(iid, str(item["file_name"]), w, h, boxes, labels, rels))
    check.warn_beyond(logger)
    raw_test = data["test_image_ids"]
    if not isinstance(raw_test, list):
        raise PSGError(path, "'test_image_ids'", "is not a list", "list the image ids of the test split")
    test_ids = [_image_id(v) for v in raw_test]
    if None in test_ids:
        k = test_ids.index(None)
        raise PSGError(path, f"test_image_ids[{k}]", f"{raw_test[k]!r} is not an integer image id",
                       "list int (or integral numeric string) image ids")
    test = frozenset(test_ids)
    unknown = len(test - seen.keys())
    if unknown:
        logger.debug("%s: %d of the %d test_image_ids name no item (ignored)", path, unknown, len(test))
    return out, test


def _unique_rows(rels: np.ndarray) -> np.ndarray:
    """``rels`` without exact duplicate rows, first occurrences kept in order."""
    if len(rels) <= 1:
        return rels
    _, first = np.unique(rels, axis=0, return_index=True)
    return rels[np.sort(first)]


@DATASET_FORMAT_REGISTRY.register(name=FORMAT)
class PSGDataset(ImageListDataset):
    """One split of a PSG folder (``psg.json``, boxes only) as plain dataset dicts (the API of
    :class:`~sgg.data.datasets.coco_json.CocoJsonDataset`; rules in the module docstring).

    Args:
        root: the dataset folder (``root/psg.json``; images in ``root/coco`` or ``root/../coco``).
        split: 'train' | 'val' | 'test' (test: the items of ``test_image_ids``; val: the first
            ``num_val_im`` usable other items; train: the other items after them).
        num_val_im: the size of the val split taken from the head of the train items
            (``DATASETS.NUM_VAL_IMAGES``; train excludes them; <= 0: no val).
        num_im: keep the first ``num_im`` usable items of the split's pool (-1: all), before the
            val cut.
        filter_empty_rels: drop items without relations (items without boxes always go).
        filter_non_overlap: not used (no overlap filter, as OpenPSG).
        filter_duplicate_rels: train only: one predicate drawn per pair in ``__getitem__``.
        depth_dir, check_images, rng: as CocoJsonDataset's.
    """

    def __init__(self, root: str, split: str, num_val_im: int = 5000, num_im: int = -1,
                 filter_empty_rels: bool = True, filter_non_overlap: bool = False,
                 filter_duplicate_rels: bool = False, depth_dir: Optional[str] = None, check_images: bool = True,
                 rng: Optional[np.random.Generator] = None):
        self._set_options(root, split, num_val_im, num_im, filter_empty_rels, filter_duplicate_rels, depth_dir, rng)
        self.has_val_file = False
        self.annotation_file = annotation_file(root)
        self.img_dir = image_dir(root)
        data = load_psg(self.annotation_file)  # read once per instance, not kept
        self.ind_to_classes, self.ind_to_predicates = read_classes(self.annotation_file, data)
        self.ind_to_attributes: List[str] = []
        items, test_ids = parse_items(self.annotation_file, data, len(self.ind_to_classes) - 1,
                                      len(self.ind_to_predicates) - 1)
        del data

        in_test = np.array([it.image_id in test_ids for it in items], bool)
        n_box = np.array([len(it.labels) for it in items], np.int64)
        n_rel = np.array([len(it.relations) for it in items], np.int64)
        pool = in_test if split == "test" else ~in_test
        usable = pool & (n_box > 0) & ((n_rel > 0) if filter_empty_rels else True)
        index = np.flatnonzero(usable)
        counts = {"rows": len(items), "pool": int(pool.sum()), "usable": int(index.size)}
        if num_im > -1:
            index = index[:num_im]
        counts["after_num_im"] = int(index.size)
        if split == "val":
            index = index[:max(num_val_im, 0)]
        elif split == "train" and num_val_im > 0:
            index = index[num_val_im:]
        counts["selected"] = counts["kept"] = int(index.size)
        self.selection_counts = counts
        kept = [items[i] for i in index]
        self.img_info = [{"image_id": it.image_id, "width": it.width, "height": it.height,
                          "file_name": it.file_name} for it in kept]
        self._set_records(kept)
        if split != "train":
            self.relationships = [_unique_rows(r) for r in self.relationships]
        self._attach_files(depth_dir, check_images)
        logger.info("psg %s: %d images from '%s'", split, len(self), self.annotation_file)

    @staticmethod
    def class_names(files) -> Tuple[List[str], List[str]]:
        """(classes, predicates) with background first, from ``files.root``'s psg.json."""
        return read_classes(annotation_file(files.root))

    def empty_reason(self, num_val_key: str = "DATASETS.NUM_VAL_IMAGES") -> Optional[Tuple[str, str]]:
        """``(reason, fix)`` when the split selected no image, else None."""
        c = self.selection_counts
        if c["kept"] > 0:
            return None
        need = ">= 1 annotation and >= 1 relation" if self.filter_empty_rels else ">= 1 annotation"
        pool = "whose image_id is in test_image_ids" if self.split == "test" else "outside test_image_ids"
        if c["rows"] == 0:
            return (f"'{self.annotation_file}' lists no item",
                    "add items to 'data', or leave this split out of the config")
        if c["pool"] == 0:
            fix = ("list the test images' ids in test_image_ids" if self.split == "test"
                   else "leave some items out of test_image_ids")
            return (f"'{self.annotation_file}' has no item {pool}", fix)
        if c["usable"] == 0:
            return (f"none of the {c['pool']} items {pool} of '{self.annotation_file}' has {need}",
                    "annotate boxes and relations")
        if c["after_num_im"] == 0:
            return (f"num_im = {self.num_im} keeps no image", "pass num_im = -1 (all) or > 0")
        n = c["after_num_im"]
        if self.split == "train":
            return (f"{num_val_key} = {self.num_val_im} sets the first {self.num_val_im} train items aside for the "
                    f"val split (psg.json has no val list) and '{self.annotation_file}' has only {n} usable train "
                    f"items", f"set {num_val_key} below {n}")
        return (f"psg.json has no val list: val is the first {num_val_key} usable train items and {num_val_key} = "
                f"{self.num_val_im}", f"set {num_val_key} > 0 (SGG-Benchmark uses 1000)")

    def __repr__(self) -> str:
        return (f"PSGDataset(split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
                f"predicates={self.num_predicates}, annotation_file={self.annotation_file!r}, "
                f"img_dir={self.img_dir!r})")
