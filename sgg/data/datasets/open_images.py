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

import logging
import os
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from . import vg150_files
from .registry import DATASET_FORMAT_REGISTRY
from .image_list import DatasetFormatError, ImageListDataset, RecordChecker, RecordSpec, load_json

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
_LAYOUT = (f"an Open Images V6 folder holds {CATEGORIES_FILE} and {ANNOTATION_DIR}/vrd-{{train,val,test}}-anno.json. "
           f"Fix: set DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the folder holding the dataset folder, or add the file")
#: The wording of a record's array checks (:class:`~sgg.data.datasets.image_list.RecordChecker`).
_RECORD = RecordSpec(
    first_id=0,
    labels_type="det_labels is not a list of integers", labels_type_fix="list one class id per box",
    boxes_type="bbox is not a list of [x1, y1, x2, y2] finite numbers",
    box_fix="correct the bbox ([x1, y1, x2, y2] in pixels of the image) or the record's img_size",
    labels_noun="det_labels", count_fix="give one det_label per box",
    label_at="det_labels[{}] = ", classes_of="the {} 'obj' names of " + CATEGORIES_FILE,
    class_fix="use 0-based ids of categories_dict.json 'obj', or add the class there",
    box_at="bbox[{}] = ", box_ref="bbox[{}]",
    rels_type="rel is not a list of [subject, object, predicate] integers",
    rels_type_fix="write each relation as [subject box index, object box index, predicate id]",
    rel_at="rel[{}]", box_index="a box index", rel_index_fix="point subject / object at boxes of the record",
    predicates_of="the {} 'rel' names of " + CATEGORIES_FILE,
    predicate_fix="use 0-based ids of categories_dict.json 'rel', or add the predicate there")


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


class OpenImagesError(DatasetFormatError):
    """A problem of an Open Images file, as ``file: where: message: fix``."""


class ParsedRecord(NamedTuple):
    """One record of a split file: ``boxes`` float64 [n, 4] xyxy pixels (not clipped), ``labels``
    int64 [n] 1..C, ``relations`` int64 [m, 3] (subject, object, predicate 1..P)."""

    img_fn: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    relations: np.ndarray


def read_categories(root: str) -> Tuple[List[str], List[str]]:
    """(classes, predicates) of ``root``'s categories_dict.json, background first."""
    path = categories_file(root)
    data = load_json(path, "categories file", _LAYOUT)
    for key in ("obj", "rel"):
        names = data.get(key) if isinstance(data, dict) else None
        if not isinstance(names, list) or not names:
            raise OpenImagesError(path, f"'{key}'", "is missing or empty",
                                  'write {"obj": [object class names], "rel": [predicate names]}')
        if len(set(map(str, names))) != len(names):
            raise OpenImagesError(path, f"'{key}'", "holds a name twice", "give every entry a distinct name")
    return [BACKGROUND] + [str(n) for n in data["obj"]], [BACKGROUND] + [str(n) for n in data["rel"]]


def parse_split(path: str, num_classes: int, num_predicates: int) -> List[ParsedRecord]:
    """Every record of a split file, in file order, checked (``num_classes`` / ``num_predicates``:
    C / P without background). Raises :class:`OpenImagesError` on the first problem; boxes
    sticking out of their image are logged once (a warning)."""
    data = load_json(path, "split file", _LAYOUT)
    if not isinstance(data, list):
        raise OpenImagesError(path, "top level", "must be a JSON list of records",
                              "write one {img_fn, img_size, bbox, det_labels, rel} object per image")
    out: List[ParsedRecord] = []
    check = RecordChecker(_RECORD, OpenImagesError, path, num_classes, num_predicates)
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
        boxes, labels, rels = check.check(where, rec["bbox"], rec["det_labels"], rec["rel"], w, h)
        out.append(ParsedRecord(str(rec["img_fn"]), w, h, boxes, labels, rels))
    check.warn_beyond(logger)
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
        self._set_options(root, split, num_val_im, num_im, filter_empty_rels, filter_duplicate_rels, depth_dir, rng)
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
        self._set_records(kept)
        self._attach_files(depth_dir, check_images)
        logger.info("oiv6 %s: %d images from '%s'", split, len(self), self.annotation_file)

    @staticmethod
    def class_names(files) -> Tuple[List[str], List[str]]:
        """(classes, predicates) with background first, from ``files.root``'s categories_dict.json."""
        return read_categories(files.root)

    def __repr__(self) -> str:
        return (f"OpenImagesDataset(split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
                f"predicates={self.num_predicates}, annotation_file={self.annotation_file!r})")
