"""Open Images V6 scene graphs (PySGG's ``openimages/open_image_v6`` files) as dataset dicts.

Layout (``specs/datasets.md`` section 3)::

    ROOT/annotations/categories_dict.json        {"obj": [C names], "rel": [P names]}
    ROOT/annotations/vrd-{train,val,test}-anno.json
    ROOT/images/{img_fn}.jpg
    ROOT/depth/{image_id}.png | .npy             optional depth maps
    ROOT/zeroshot_triplet.pytorch                optional zero-shot triplets

One split file is a JSON list of records::

    {"img_fn": "000a1249af2bc5f0", "img_size": [w, h], "bbox": [[x1, y1, x2, y2], ...] (pixels),
     "det_labels": [0-based class ids], "rel": [[subject, object, 0-based predicate], ...]}

Rules:

* labels and predicates get + 1 (background 0): C + 1 classes, P + 1 predicates;
* a record with no box or (``filter_empty_rels``) no relation is dropped, in every split; each
  split is its own file (``num_val_im`` is not used); no overlap filter;
* train: one predicate drawn per (subject, object) pair and call
  (:func:`~sgg.data.datasets.vg150.dedup_relations`); evaluation GT keeps every row;
* boxes are clipped to [0, w - 1] x [0, h - 1] (PySGG); a box the clip empties (entirely outside
  its image) is an error, one sticking out by more than ``vg150_files.BOX_BEYOND_TOLERANCE`` is
  clipped with one warning (:func:`~sgg.data.datasets.vg150_files.pixel_box_fit`, as VG150);
* out-of-range class / predicate ids, relation indices that name no box, malformed records, a
  missing categories / split file or image: errors ``file: where: message: fix``.

``image_id`` is the record's position in its split file (``img_fn`` is a hex string); ``img_info``
keeps ``img_fn``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from . import vg150_files
from .registry import DATASET_FORMAT_REGISTRY
from .image_list import ImageListDataset

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "NAMED_FOLDERS", "is_folder", "folder_files", "source_files", "EVALUATOR_KIND", "SPLITS", "CATEGORIES_FILE", "IMAGE_DIR", "OpenImagesError", "split_file",
           "categories_file", "read_categories", "parse_split", "OpenImagesDataset"]

#: The name of this format in ``DATASET_FORMAT_REGISTRY`` and ``DatasetFiles.format``.
FORMAT = "oiv6"
#: The evaluation of this format (``sgg.engine.inference.build_relation_evaluator``).
EVALUATOR_KIND = "oi"
SPLITS = ("train", "val", "test")
ANNOTATION_DIR = "annotations"
CATEGORIES_FILE = os.path.join(ANNOTATION_DIR, "categories_dict.json")
IMAGE_DIR = "images"
IMAGE_EXT = ".jpg"
BACKGROUND = vg150_files.BACKGROUND
_BOX_SCALE = vg150_files.BOX_SCALE
_FIX_BOX = "correct the bbox ([x1, y1, x2, y2] in pixels of the image) or the record's img_size"


def split_file(root: str, split: str) -> str:
    """``root/annotations/vrd-<split>-anno.json``."""
    return os.path.join(root, ANNOTATION_DIR, f"vrd-{split}-anno.json")


def categories_file(root: str) -> str:
    """``root/annotations/categories_dict.json``."""
    return os.path.join(root, CATEGORIES_FILE)


# Folder layout (what sgg.data.catalog asks of every one-folder format).
#: PySGG's dataset name -> its folder under DATA_DIR
NAMED_FOLDERS: Dict[str, str] = {"oiv6": os.path.join("openimages", "open_image_v6")}


def is_folder(root: str) -> bool:
    """``root`` holds ``annotations/categories_dict.json``."""
    return os.path.isfile(categories_file(root))


def folder_files(root: str, split: str) -> Tuple[str, str]:
    """(annotation file, image folder) of ``split``."""
    return split_file(root, split), os.path.join(root, IMAGE_DIR)


def source_files(root: str) -> Tuple[str, ...]:
    """The files a statistics cache key stamps: the categories and the train file."""
    return categories_file(root), split_file(root, "train")


class OpenImagesError(ValueError):
    """A problem of an Open Images file, as ``file: where: message: fix``."""

    def __init__(self, file: str, where: str, message: str, fix: str):
        self.file, self.where, self.message, self.fix = file, where, message, fix
        super().__init__(f"{file}: {where}: {message}: {fix}")


class ParsedRecord(NamedTuple):
    """One record of a split file: ``boxes`` float64 [n, 4] xyxy pixels (not clipped), ``labels``
    int64 [n] 1..C, ``relations`` int64 [m, 3] (subject, object, predicate 1..P)."""

    img_fn: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    relations: np.ndarray


def _load_json(path: str, what: str) -> Any:
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: {what} not found: an Open Images V6 folder holds {CATEGORIES_FILE} and "
            f"{ANNOTATION_DIR}/vrd-{{train,val,test}}-anno.json. Fix: set DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the "
            f"folder holding the dataset folder, or add the file")
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}): the file is truncated or corrupt: rewrite it") from e


def read_categories(root: str) -> Tuple[List[str], List[str]]:
    """(classes, predicates) of ``root``'s categories_dict.json, background first."""
    path = categories_file(root)
    data = _load_json(path, "categories file")
    for key in ("obj", "rel"):
        names = data.get(key) if isinstance(data, dict) else None
        if not isinstance(names, list) or not names:
            raise OpenImagesError(path, f"'{key}'", "is missing or empty",
                                  'write {"obj": [object class names], "rel": [predicate names]}')
        if len(set(map(str, names))) != len(names):
            raise OpenImagesError(path, f"'{key}'", "holds a name twice", "give every entry a distinct name")
    return [BACKGROUND] + [str(n) for n in data["obj"]], [BACKGROUND] + [str(n) for n in data["rel"]]


def _ints(values: Any, shape_cols: Optional[int]) -> Optional[np.ndarray]:
    """``values`` as int64 (None when not a list of integers of that shape)."""
    try:
        arr = np.asarray(values if len(values) else np.zeros((0,) if shape_cols is None else (0, shape_cols)))
    except (TypeError, ValueError):
        return None
    if arr.dtype == object or not (arr.size == 0 or np.issubdtype(arr.dtype, np.integer)):
        return None
    if shape_cols is None:
        return arr.astype(np.int64) if arr.ndim == 1 else None
    return arr.astype(np.int64) if arr.ndim == 2 and arr.shape[1] == shape_cols else None


def parse_split(path: str, num_classes: int, num_predicates: int) -> List[ParsedRecord]:
    """Every record of a split file, in file order, checked (``num_classes`` / ``num_predicates``:
    C / P without background). Raises :class:`OpenImagesError` on the first problem; boxes
    sticking out of their image are logged once (a warning)."""
    data = _load_json(path, "split file")
    if not isinstance(data, list):
        raise OpenImagesError(path, "top level", "must be a JSON list of records",
                              "write one {img_fn, img_size, bbox, det_labels, rel} object per image")
    out: List[ParsedRecord] = []
    beyond_count, first_beyond = 0, ""
    for k, rec in enumerate(data):
        where = f"record {k}"
        need = ("img_fn", "img_size", "bbox", "det_labels", "rel")
        miss = [f for f in need if not isinstance(rec, dict) or f not in rec]
        if miss:
            raise OpenImagesError(path, where, f"has no {', '.join(miss)}",
                                  "give every record img_fn, img_size, bbox, det_labels and rel")
        where = f"image '{rec['img_fn']}' (record {k})"
        size = rec["img_size"]
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in size)):
            raise OpenImagesError(path, where, f"img_size {size!r} is not [width, height] > 0",
                                  "give the image's size in pixels as [width, height]")
        w, h = int(size[0]), int(size[1])
        labels = _ints(rec["det_labels"], None)
        if labels is None:
            raise OpenImagesError(path, where, "det_labels is not a list of integers", "list one class id per box")
        try:
            boxes = np.asarray(rec["bbox"] if len(rec["bbox"]) else np.zeros((0, 4)), np.float64)
        except (TypeError, ValueError):
            boxes = np.zeros((0, 3))
        if boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all():
            raise OpenImagesError(path, where, "bbox is not a list of [x1, y1, x2, y2] finite numbers", _FIX_BOX)
        if len(boxes) != len(labels):
            raise OpenImagesError(path, where, f"has {len(boxes)} boxes but {len(labels)} det_labels",
                                  "give one det_label per box")
        bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
        if bad.size:
            raise OpenImagesError(path, where, f"det_labels[{bad[0]}] = {int(labels[bad[0]])} is out of range "
                                  f"0..{num_classes - 1} (the {num_classes} 'obj' names of {CATEGORIES_FILE})",
                                  "use 0-based ids of categories_dict.json 'obj', or add the class there")
        inverted = np.flatnonzero((boxes[:, 2] < boxes[:, 0]) | (boxes[:, 3] < boxes[:, 1]))
        if inverted.size:
            raise OpenImagesError(path, where, f"bbox[{inverted[0]}] = {boxes[inverted[0]].tolist()} has x2 < x1 "
                                  f"or y2 < y1", _FIX_BOX)
        outside, beyond = vg150_files.pixel_box_fit(boxes, w, h, to_remove=1)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise OpenImagesError(path, where, f"bbox[{i}] = {boxes[i].tolist()} lies entirely outside its "
                                  f"{w}x{h} image (clipped to [0, w - 1] x [0, h - 1] it is empty)", _FIX_BOX)
        if beyond.any():
            beyond_count += int(beyond.sum())
            first_beyond = first_beyond or f"{where}: bbox[{int(np.flatnonzero(beyond)[0])}]"
        rels = _ints(rec["rel"], 3)
        if rels is None:
            raise OpenImagesError(path, where, "rel is not a list of [subject, object, predicate] integers",
                                  "write each relation as [subject box index, object box index, predicate id]")
        bad = np.flatnonzero(((rels[:, :2] < 0) | (rels[:, :2] >= len(boxes))).any(1))
        if bad.size:
            raise OpenImagesError(path, where, f"rel[{bad[0]}] = {rels[bad[0]].tolist()} names a box index outside "
                                  f"0..{len(boxes) - 1}", "point subject / object at boxes of the record")
        bad = np.flatnonzero((rels[:, 2] < 0) | (rels[:, 2] >= num_predicates))
        if bad.size:
            raise OpenImagesError(path, where, f"rel[{bad[0]}] has predicate {int(rels[bad[0], 2])}, out of range "
                                  f"0..{num_predicates - 1} (the {num_predicates} 'rel' names of {CATEGORIES_FILE})",
                                  "use 0-based ids of categories_dict.json 'rel', or add the predicate there")
        rels = rels.copy()
        rels[:, 2] += 1
        out.append(ParsedRecord(str(rec["img_fn"]), w, h, boxes, labels + 1, rels))
    if beyond_count:
        logger.warning("%s: %d box(es) stick out of their image by more than max(%g px, %g of the longer side) "
                       "(first: %s); clipped to [0, w - 1] x [0, h - 1]", path, beyond_count,
                       vg150_files.BOX_BEYOND_TOLERANCE["pixels"], vg150_files.BOX_BEYOND_TOLERANCE["fraction"],
                       first_beyond)
    return out


@DATASET_FORMAT_REGISTRY.register(name=FORMAT)
class OpenImagesDataset(ImageListDataset):
    """One split of an Open Images V6 folder as plain dataset dicts (the API of
    :class:`~sgg.data.datasets.coco_json.CocoJsonDataset`; rules in the module docstring).

    Args:
        root: the dataset folder (``root/annotations/...``, ``root/images/``).
        split: 'train' | 'val' | 'test' (each its own file).
        num_val_im: not used (there is a val file); accepted for the common signature.
        num_im: keep the first ``num_im`` usable records (-1: all).
        filter_empty_rels: drop records without relations (records without boxes always go).
        filter_non_overlap: not used (no overlap filter for Open Images, as PySGG).
        filter_duplicate_rels: train only: one predicate drawn per pair in ``__getitem__``.
        depth_dir, check_images, rng: as CocoJsonDataset's.
    """

    #: ``build_relation_evaluator`` gives datasets of this kind an OIEvaluator.
    evaluator_kind = EVALUATOR_KIND

    def __init__(self, root: str, split: str, num_val_im: int = 0, num_im: int = -1,
                 filter_empty_rels: bool = True, filter_non_overlap: bool = False,
                 filter_duplicate_rels: bool = False, depth_dir: Optional[str] = None, check_images: bool = True,
                 rng: Optional[np.random.Generator] = None):
        if split not in SPLITS:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.root, self.split = root, split
        self.num_val_im, self.num_im = num_val_im, num_im
        self.filter_empty_rels = filter_empty_rels
        self.filter_non_overlap = False
        self.filter_duplicate_rels = bool(filter_duplicate_rels) and split == "train"
        self.depth_dir, self.rng = depth_dir, rng
        self.has_val_file = True
        self.annotation_file = split_file(root, split)
        self.img_dir = os.path.join(root, IMAGE_DIR)
        self.ind_to_classes, self.ind_to_predicates = read_categories(root)
        self.ind_to_attributes: List[str] = []
        records = parse_split(self.annotation_file, len(self.ind_to_classes) - 1, len(self.ind_to_predicates) - 1)

        index = [k for k, r in enumerate(records)
                 if len(r.labels) > 0 and (len(r.relations) > 0 or not filter_empty_rels)]
        counts = {"rows": len(records), "usable": len(index)}
        if num_im > -1:
            index = index[:num_im]
        counts["after_num_im"] = counts["selected"] = counts["kept"] = len(index)
        self.selection_counts = counts
        kept = [records[k] for k in index]
        self.img_info = [{"image_id": k, "width": r.width, "height": r.height, "img_fn": r.img_fn,
                          "file_name": r.img_fn + IMAGE_EXT} for k, r in zip(index, kept)]
        self.gt_boxes_1024 = [r.boxes * (_BOX_SCALE / max(r.width, r.height)) for r in kept]
        self.gt_classes = [r.labels for r in kept]
        self.relationships = [r.relations for r in kept]
        self.gt_boxes = []
        for r in kept:
            b = r.boxes.astype(np.float32)
            b[:, 0::2] = np.clip(b[:, 0::2], 0, r.width - 1)
            b[:, 1::2] = np.clip(b[:, 1::2], 0, r.height - 1)
            self.gt_boxes.append(b)
        self._attach_files(depth_dir, check_images)
        logger.info("oiv6 %s: %d images from '%s'", split, len(self), self.annotation_file)

    @staticmethod
    def class_names(files) -> Tuple[List[str], List[str]]:
        """(classes, predicates) with background first, from ``files.root``'s categories_dict.json."""
        return read_categories(files.root)

    def empty_reason(self, num_val_key: str = "DATASETS.NUM_VAL_IMAGES") -> Optional[Tuple[str, str]]:
        """``(reason, fix)`` when the split selected no image, else None."""
        c = self.selection_counts
        if c["kept"] > 0:
            return None
        need = ">= 1 box and >= 1 relation" if self.filter_empty_rels else ">= 1 box"
        if c["rows"] == 0:
            return (f"'{self.annotation_file}' lists no image", "add records, or leave this split out of the config")
        if c["usable"] == 0:
            return (f"none of the {c['rows']} records of '{self.annotation_file}' has {need}",
                    "annotate boxes and relations")
        return (f"num_im = {self.num_im} keeps no image", "pass num_im = -1 (all) or > 0")

    def __repr__(self) -> str:
        return (f"OpenImagesDataset(split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
                f"predicates={self.num_predicates}, annotation_file={self.annotation_file!r})")
