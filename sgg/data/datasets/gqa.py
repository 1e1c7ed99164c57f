"""GQA200 scene graphs (SHA-GCL-for-SGG's ``GQA_200`` files) as dataset dicts.

Layout (``specs/datasets.md`` section 2)::

    ROOT/GQA_200_ID_Info.json        {"ind_to_classes": [201 names], "ind_to_predicates": [101 names]}
    ROOT/GQA_200_Train.json          parallel lists filenames_all, img_info_all, gt_boxes_all,
    ROOT/GQA_200_Test.json           gt_classes_all, relationships_all
    ROOT/images/<filename>
    ROOT/depth/{image_id}.png | .npy             optional depth maps
    ROOT/zeroshot_triplet.pytorch                optional zero-shot triplets

The info file's name lists start with ``__background__`` (ids are used as they are: classes
1..C, predicates 1..P). A split file is one JSON object of parallel lists, one entry per image::

    {"filenames_all": ["2370799.jpg", ...]            (relative to ROOT/images/),
     "img_info_all": [{"width": w, "height": h, ...}, ...],
     "gt_boxes_all": [[[x1, y1, x2, y2], ...] (pixels), ...],
     "gt_classes_all": [[class ids 1..C], ...],
     "relationships_all": [[[subject, object, predicate 1..P], ...], ...]}

Rules (SHA-GCL's ``maskrcnn_benchmark/data/datasets/gqa.py``):

* train is the Train file; test is the Test file without its record :data:`REMOVED_TEST_INDEX`
  (0-based, counted on the raw file, only when the file has that many records; the record is
  skipped unread, so it is not checked either); val is the first ``num_val_im``
  (:data:`DEFAULT_NUM_VAL_IM` in the reference) images of that test list, a subset of test (there
  is no val file);
* a record with no box or (``filter_empty_rels``) no relation is dropped, in every split, before
  the val slice; no overlap filter;
* train: one predicate drawn per (subject, object) pair and call
  (:func:`~sgg.data.datasets.vg150.dedup_relations`); evaluation GT keeps every row and the
  standard (VG) evaluator scores it;
* boxes are clipped to [0, w - 1] x [0, h - 1] (maskrcnn_benchmark's ``clip_to_image``); a box the
  clip empties (entirely outside its image) is an error, one sticking out by more than
  ``vg150_files.BOX_BEYOND_TOLERANCE`` is clipped with one warning per file
  (:func:`~sgg.data.datasets.vg150_files.pixel_box_fit`, as VG150);
* out-of-range class / predicate ids, relation indices that name no box, inverted boxes,
  parallel lists of different lengths, malformed records, a missing info / split file or image:
  errors ``file: where: message: fix``.

``image_id`` is the record's ``img_info["image_id"]`` when that is an integer, else the record's
position in its split file (SHA-GCL's files may hold string ids such as ``"n161313"``; such a
value is kept in ``img_info`` as ``file_image_id``). Image ids must be distinct within a file (an
error names both records). ``img_info`` keeps the file's img_info fields plus ``image_id``,
``width``, ``height`` and ``file_name``.
"""
from __future__ import annotations

import logging
import os
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import vg150_files
from .image_list import (DatasetFormatError, ImageListDataset, RecordChecker, RecordSpec, is_int, load_json,
                         positive)
from .registry import DATASET_FORMAT_REGISTRY

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "NAMED_FOLDERS", "is_folder", "folder_files", "source_files", "INFO_FILE", "TRAIN_FILE",
           "TEST_FILE", "IMAGE_DIR", "SPLITS", "SPLIT_KEYS", "REMOVED_TEST_INDEX", "DEFAULT_NUM_VAL_IM", "GQAError",
           "ParsedRecord", "ParsedRecords", "info_file", "split_file", "read_info", "parse_split", "GQADataset"]

#: The name of this format in ``DATASET_FORMAT_REGISTRY`` and ``DatasetFiles.format``.
FORMAT = "gqa200"
INFO_FILE = "GQA_200_ID_Info.json"
TRAIN_FILE = "GQA_200_Train.json"
TEST_FILE = "GQA_200_Test.json"
IMAGE_DIR = "images"
SPLITS = ("train", "val", "test")
#: The parallel lists of a split file, one entry per image.
SPLIT_KEYS = ("filenames_all", "img_info_all", "gt_boxes_all", "gt_classes_all", "relationships_all")
#: The Test file's record SHA-GCL leaves out of test and val (its 5,580th, 0-based 5579).
REMOVED_TEST_INDEX = 5579
#: The val split's size in SHA-GCL (the first test images): DATASETS.NUM_VAL_IMAGES's reference value.
DEFAULT_NUM_VAL_IM = 5000
BACKGROUND = vg150_files.BACKGROUND
_LAYOUT = (f"a GQA200 folder holds {INFO_FILE}, {TRAIN_FILE}, {TEST_FILE} and {IMAGE_DIR}/. Fix: set "
           f"DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the folder holding the dataset folder (GQA_200_* names: "
           f"DATA_DIR/gqa), or add the file")
#: The wording of a record's array checks (:class:`~sgg.data.datasets.image_list.RecordChecker`).
_RECORD = RecordSpec(
    first_id=1,
    labels_type="gt_classes_all entry is not a list of integers", labels_type_fix="list one class id per box",
    boxes_type="gt_boxes_all entry is not a list of [x1, y1, x2, y2] finite numbers",
    box_fix="correct the box ([x1, y1, x2, y2] in pixels of the image) or the record's img_info width / height",
    labels_noun="class ids", count_fix="give one gt_classes_all id per gt_boxes_all box",
    label_at="class id [{}] = ", classes_of="the {} ind_to_classes names after the background of " + INFO_FILE,
    class_fix=f"use ids of {INFO_FILE} ind_to_classes (0 is the background), or add the class there",
    box_at="box [{}] = ", box_ref="box [{}]",
    rels_type="relationships_all entry is not a list of [subject, object, predicate] integers",
    rels_type_fix="write each relation as [subject box index, object box index, predicate id]",
    rel_at="relation [{}]", box_index="a box index", rel_index_fix="point subject / object at boxes of the record",
    predicates_of="the {} ind_to_predicates names after the background of " + INFO_FILE,
    predicate_fix=f"use ids of {INFO_FILE} ind_to_predicates (0 is the background), or add the predicate there")

# Folder layout (what sgg.data.catalog asks of every one-folder format).
#: SHA-GCL's dataset name -> its folder under DATA_DIR
NAMED_FOLDERS: Dict[str, str] = {"GQA_200": "gqa"}


def is_folder(root: str) -> bool:
    """``root`` holds ``GQA_200_ID_Info.json``."""
    return os.path.isfile(os.path.join(root, INFO_FILE))


def folder_files(root: str, split: str) -> Tuple[str, str]:
    """(annotation file, image folder) of ``split``: the Train file for train, the Test file for val
    and test."""
    return os.path.join(root, TRAIN_FILE if split == "train" else TEST_FILE), os.path.join(root, IMAGE_DIR)


def source_files(root: str) -> Tuple[str, ...]:
    """The files a statistics cache key stamps: the info and the Train file."""
    return os.path.join(root, INFO_FILE), os.path.join(root, TRAIN_FILE)


def info_file(root: str) -> str:
    """``root/GQA_200_ID_Info.json``."""
    return os.path.join(root, INFO_FILE)


def split_file(root: str, split: str) -> str:
    """The file ``split`` is read from: ``GQA_200_Train.json`` for train, ``GQA_200_Test.json`` for
    val and test."""
    return folder_files(root, split)[0]


class GQAError(DatasetFormatError):
    """A problem of a GQA200 file, as ``file: where: message: fix``."""


class ParsedRecord(NamedTuple):
    """One record of a split file: ``index`` its position in the file, ``boxes`` float64 [n, 4]
    xyxy pixels (not clipped), ``labels`` int64 [n] 1..C, ``relations`` int64 [m, 3] (subject,
    object, predicate 1..P), ``info`` the file's img_info dict (a copy)."""

    index: int
    image_id: int
    filename: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    relations: np.ndarray
    info: Dict[str, Any]


def _load_json(path: str, what: str) -> Any:
    """The JSON of ``path`` (``what``: the kind of file, for the error when it is missing)."""
    return load_json(path, what, _LAYOUT, lambda e: GQAError(
        path, "whole file", f"not valid JSON ({e}); the file is truncated or corrupt",
        "download or write it again (check the disk: full, or a copy cut short)"))


def read_info(root: str) -> Tuple[List[str], List[str]]:
    """(classes, predicates) of ``root``'s GQA_200_ID_Info.json, background first (as in the file)."""
    path = info_file(root)
    data = _load_json(path, "info file")
    fix = 'write {"ind_to_classes": ["__background__", classes...], "ind_to_predicates": ["__background__", ...]}'
    if not isinstance(data, dict):
        raise GQAError(path, "top level", "must be a JSON object", fix)
    out = []
    for key in ("ind_to_classes", "ind_to_predicates"):
        names = data.get(key)
        if not isinstance(names, list) or len(names) < 2:
            raise GQAError(path, f"'{key}'", "is missing, not a list or holds no name after the background", fix)
        if names[0] != BACKGROUND:
            raise GQAError(path, f"'{key}'", f"starts with {names[0]!r}, not the background {BACKGROUND!r}",
                           f"put {BACKGROUND!r} first (id 0); the ids of the files count from it")
        names = [str(n) for n in names]
        if len(set(names)) != len(names):
            dup = next(n for k, n in enumerate(names) if n in names[:k])
            raise GQAError(path, f"'{key}'", f"holds the name {dup!r} twice", "give every entry a distinct name")
        out.append(names)
    return out[0], out[1]


class ParsedRecords(list):
    """The records :func:`parse_split` returns; ``rows``: how many the file holds (skipped ones too)."""

    rows: int = 0


def parse_split(path: str, num_classes: int, num_predicates: int, skip: Sequence[int] = ()) -> ParsedRecords:
    """Every record of a split file but those at the positions ``skip`` (left unread), in file
    order, checked (``num_classes`` / ``num_predicates``: C / P without background). Raises
    :class:`GQAError` on the first problem; boxes sticking out of their image are logged once (a
    warning). The result is a list with ``rows``, the number of records in the file."""
    data = _load_json(path, "split file")
    fix_top = "write one JSON object of the parallel lists " + ", ".join(SPLIT_KEYS) + " (one entry per image)"
    if not isinstance(data, dict):
        raise GQAError(path, "top level", "must be a JSON object of parallel lists", fix_top)
    miss = [k for k in SPLIT_KEYS if not isinstance(data.get(k), list)]
    if miss:
        raise GQAError(path, "top level", f"has no list {', '.join(miss)}", fix_top)
    lengths = {k: len(data[k]) for k in SPLIT_KEYS}
    if len(set(lengths.values())) > 1:
        raise GQAError(path, "top level", "the parallel lists differ in length (" +
                       ", ".join(f"{k}: {n}" for k, n in lengths.items()) + ")",
                       "give every list one entry per image, in the same order")
    skip = set(int(k) for k in skip)
    out = ParsedRecords()
    out.rows = lengths["filenames_all"]
    id_owner: Dict[int, int] = {}
    check = RecordChecker(_RECORD, GQAError, path, num_classes, num_predicates)
    columns = zip(*(data[k] for k in SPLIT_KEYS))
    for k, (fn, info, raw_boxes, raw_labels, raw_rels) in enumerate(columns):
        if k in skip:
            continue
        where = f"record {k}"
        if not isinstance(fn, str) or not fn:
            raise GQAError(path, where, f"filenames_all[{k}] = {fn!r} is not a file name",
                           f"give the image's path relative to {IMAGE_DIR}/")
        where = f"image '{fn}' (record {k})"
        if not isinstance(info, dict) or not all(positive(info.get(f)) for f in ("width", "height")):
            raise GQAError(path, where, f"img_info_all[{k}] = {info!r} has no width and height > 0",
                           'give the image\'s size in pixels as img_info "width" and "height"')
        w, h = int(info["width"]), int(info["height"])
        raw_id = info.get("image_id")
        image_id = int(raw_id) if is_int(raw_id) else k
        if image_id in id_owner:
            raise GQAError(path, where, f"image_id {image_id} is also the id of record {id_owner[image_id]} (an "
                           f"integer img_info image_id, else the record's position)",
                           "give every record a distinct integer img_info image_id, or none at all")
        id_owner[image_id] = k
        boxes, labels, rels = check.check(where, raw_boxes, raw_labels, raw_rels, w, h)
        out.append(ParsedRecord(k, image_id, fn, w, h, boxes, labels, rels, dict(info)))
    check.warn_beyond(logger)
    return out


@DATASET_FORMAT_REGISTRY.register(name=FORMAT)
class GQADataset(ImageListDataset):
    """One split of a GQA200 folder as plain dataset dicts (the API of
    :class:`~sgg.data.datasets.coco_json.CocoJsonDataset`; rules in the module docstring).

    Args:
        root: the dataset folder (``root/GQA_200_*.json``, ``root/images/``).
        split: 'train' (the Train file) | 'val' | 'test' (the Test file).
        num_val_im: val = the first ``num_val_im`` test images (SHA-GCL: 5000); <= 0: no val image.
        num_im: keep the first ``num_im`` usable records (-1: all), before the val slice.
        filter_empty_rels: drop records without relations (records without boxes always go).
        filter_non_overlap: not used (no overlap filter for GQA200, as SHA-GCL's dataset).
        filter_duplicate_rels: train only: one predicate drawn per pair in ``__getitem__``.
        depth_dir, check_images, rng: as CocoJsonDataset's.
    """

    #: val comes from the Test file (its first ``num_val_im`` images), there is no val file.
    has_val_file = False

    def __init__(self, root: str, split: str, num_val_im: int = DEFAULT_NUM_VAL_IM, num_im: int = -1,
                 filter_empty_rels: bool = True, filter_non_overlap: bool = False,
                 filter_duplicate_rels: bool = False, depth_dir: Optional[str] = None, check_images: bool = True,
                 rng: Optional[np.random.Generator] = None):
        self._set_options(root, split, num_val_im, num_im, filter_empty_rels, filter_duplicate_rels, depth_dir, rng)
        self.annotation_file = split_file(root, split)
        self.img_dir = os.path.join(root, IMAGE_DIR)
        self.ind_to_classes, self.ind_to_predicates = read_info(root)
        self.ind_to_attributes: List[str] = []
        skip = () if split == "train" else (REMOVED_TEST_INDEX,)
        records = parse_split(self.annotation_file, len(self.ind_to_classes) - 1, len(self.ind_to_predicates) - 1,
                              skip=skip)
        removed = int(bool(skip) and records.rows > REMOVED_TEST_INDEX)

        kept = [r for r in records if len(r.labels) > 0 and (len(r.relations) > 0 or not filter_empty_rels)]
        counts = {"rows": records.rows, "removed": removed, "usable": len(kept)}
        if num_im > -1:
            kept = kept[:num_im]
        counts["after_num_im"] = len(kept)
        if split == "val":
            kept = kept[:max(int(num_val_im), 0)]
        counts["selected"] = counts["kept"] = len(kept)
        self.selection_counts = counts
        self.img_info = []
        for r in kept:
            info = dict(r.info)
            if "image_id" in info and not is_int(info["image_id"]):
                info["file_image_id"] = info["image_id"]
            info.update(image_id=r.image_id, width=r.width, height=r.height, file_name=r.filename)
            self.img_info.append(info)
        self._set_records(kept)
        self._attach_files(depth_dir, check_images)
        logger.info("gqa200 %s: %d images from '%s'", split, len(self), self.annotation_file)

    @staticmethod
    def class_names(files) -> Tuple[List[str], List[str]]:
        """(classes, predicates) with background first, from ``files.root``'s GQA_200_ID_Info.json."""
        return read_info(files.root)

    def _cut_reason(self, num_val_key: str) -> Tuple[str, str]:
        """:meth:`empty_reason`'s last case: the val slice of the test list kept no image."""
        return (f"the val split is the first {num_val_key} test images (there is no GQA200 val file) and "
                f"{num_val_key} = {self.num_val_im}",
                f"set {num_val_key} > 0 (SHA-GCL: {DEFAULT_NUM_VAL_IM}), or leave val out of the config")

    def __repr__(self) -> str:
        return (f"GQADataset(split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
                f"predicates={self.num_predicates}, annotation_file={self.annotation_file!r})")
