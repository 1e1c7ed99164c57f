"""COCO-style scene-graph JSON (Maelic/SGG-Benchmark's ``RelationDataset`` files) as dataset dicts.

Layout (``specs/datasets.md`` section 1)::

    ROOT/train/_annotations.coco.json   + the train images (``file_name`` relative to the folder)
    ROOT/val/_annotations.coco.json     optional (see "Splits")
    ROOT/test/_annotations.coco.json
    ROOT/depth/{image_id}.png | .npy    optional depth maps
    ROOT/zeroshot_triplet.pytorch       optional zero-shot triplets

One file = one split::

    {"images":          [{"id", "file_name", "width", "height"}],
     "annotations":     [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "area", "iscrowd"}],
     "categories":      [{"id", "name", "supercategory"}],
     "rel_annotations": [{"id", "image_id", "subject_id", "predicate_id", "object_id"}],
     "rel_categories":  [{"id", "name"}]  (bare strings too: id = position + 1)}

``subject_id`` / ``object_id`` are annotation ids. Rules (ours where the reference drops data
silently):

* ids: the declared category / predicate ids, sorted, become 1..C / 1..P whatever their base
  (0-based files work; the reference turned id 0 into background); a duplicate id or name is an
  error;
* boxes: ``x2 = x + w``, ``y2 = y + h`` (no -1), floats, clamped to [0, W] x [0, H] as the
  reference; a box entirely outside its image (or of size <= 0) is an error, one sticking out by
  more than ``vg150_files.BOX_BEYOND_TOLERANCE`` is clamped with one warning (VG150's rule,
  :func:`~sgg.data.datasets.vg150_files.pixel_box_fit`);
* dangling subject / object ids (not an annotation of that image), undeclared category /
  predicate ids, duplicate image / annotation ids, images missing on disk, a missing train / test
  file: errors naming the file, the id and the fix. :func:`check_split` collects every problem
  (the validator prints them all); the reader raises on the first error with the same text;
* images with >= 1 relation are kept (``filter_empty_rels``); the train-only filters are VG150's
  (:func:`~sgg.data.datasets.vg150.dedup_relations`: one predicate drawn per pair and call; the
  SGDet overlap filter with +1 IoU in the frame whose longer side is 1024); evaluation GT keeps
  every row.

Splits: with ``val/_annotations.coco.json`` present, each split is its own file
(``DATASETS.NUM_VAL_IMAGES`` is not used). Without it, val is the first ``num_val_im`` usable
train images and train the rest, as VG150 (so a converted VG150 folder and its h5 give the same
splits for any ``DATASETS.NUM_VAL_IMAGES``).

Writing (:func:`write_split`): contiguous 1-based ids (Maelic's reader then reads it identically).
Converters: :func:`vg150_to_coco_json` and :func:`coco_json_to_vg150` (``tools/convert_dataset.py``).
"""
from __future__ import annotations

import json
import logging
import os
import shutil
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from sgg.structures.iou import pairwise_iou_plus1

from . import vg150_files
from .registry import DATASET_FORMAT_REGISTRY
from .image_list import ImageListDataset

logger = logging.getLogger(__name__)

__all__ = ["FORMAT", "NAMED_FOLDERS", "is_folder", "folder_files", "source_files", "ANNOTATION_FILE", "SPLITS", "Problem", "CocoJsonError", "ParsedSplit", "split_file",
           "read_split", "check_split", "parse_split", "CocoJsonDataset", "write_split", "vg150_to_coco_json",
           "coco_json_to_vg150", "ROOT_EXTRAS"]

#: The name of this format in ``DATASET_FORMAT_REGISTRY`` and ``DatasetFiles.format``.
FORMAT = "coco_json"
ANNOTATION_FILE = "_annotations.coco.json"
SPLITS = ("train", "val", "test")
BACKGROUND = vg150_files.BACKGROUND
#: Files of a dataset folder's root the converters carry over as they are (plus ``depth/``).
ROOT_EXTRAS = (vg150_files.ZEROSHOT_FILE, "predicate_hierarchy.json", "synthvg_config.json")
_BOX_SCALE = vg150_files.BOX_SCALE


def split_file(root: str, split: str) -> str:
    """``root/<split>/_annotations.coco.json``."""
    return os.path.join(root, split, ANNOTATION_FILE)


# Folder layout (what sgg.data.catalog asks of every one-folder format).
#: dataset base names that map to a fixed folder under DATA_DIR (none: ``<folder>_<split>``)
NAMED_FOLDERS: Dict[str, str] = {}


def is_folder(root: str) -> bool:
    """``root`` holds ``train/_annotations.coco.json``."""
    return os.path.isfile(split_file(root, "train"))


def folder_files(root: str, split: str) -> Tuple[str, str]:
    """(annotation file, image folder) of ``split``: ``<root>/<split>/_annotations.coco.json`` and its folder."""
    ann = split_file(root, split)
    return ann, os.path.dirname(ann)


def source_files(root: str) -> Tuple[str, ...]:
    """The files a statistics cache key stamps: the train file and, when present, the val file."""
    return tuple(p for p in (split_file(root, s) for s in ("train", "val")) if os.path.isfile(p))


# ----------------------------------------------------------------------------------------------
# Problems: one list of checks for the reader and the validator
# ----------------------------------------------------------------------------------------------
class Problem(NamedTuple):
    """One finding of :func:`check_split`; :meth:`line` is ``file: where: message: fix``."""

    severity: str  # "error" | "warning"
    kind: str
    file: str
    where: str
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.file}: {self.where}: {self.message}: {self.fix}"


class CocoJsonError(ValueError):
    """The first error of a split file (``problems``: all found), as ``file: where: message: fix``."""

    def __init__(self, problems: Sequence[Problem]):
        self.problems = list(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        more = f" ({len(errors) - 1} more error(s); tools/validate_dataset.py lists them all)" if len(errors) > 1 else ""
        super().__init__(errors[0].line() + more)


_FIX_IDS = "give every entry a unique integer id"
_FIX_DECLARE = "declare the id in '{}' or correct the reference"
_FIX_BOX = "correct the bbox ([x, y, w, h] in pixels of the image) or the image's width / height"


class ParsedSplit(NamedTuple):
    """Every image of a split file, in file order (no filter applied).

    ``images``: list of ``{id, file_name, width, height}``; ``boxes``: float64 [n, 4] xyxy pixels,
    not clamped; ``labels``: int64 [n] 1..C; ``relations``: int64 [m, 3] (local subject, object,
    predicate 1..P); ``classes`` / ``predicates``: names with ``__background__`` first."""

    path: str
    images: List[dict]
    boxes: List[np.ndarray]
    labels: List[np.ndarray]
    relations: List[np.ndarray]
    classes: List[str]
    predicates: List[str]


def read_split(path: str) -> Dict[str, Any]:
    """The JSON of ``path``: a FileNotFoundError / ValueError naming it when missing or unreadable."""
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path}: split file not found: each split is <root>/<split>/{ANNOTATION_FILE}. Fix: set "
            f"DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the folder holding the dataset folder, or write the file "
            f"(tools/convert_dataset.py --to coco_json)")
    with open(path) as f:
        try:
            data = json.load(f)
        except ValueError as e:
            raise ValueError(f"{path}: not valid JSON ({e}): the file is truncated or corrupt: rewrite it") from e
    if not isinstance(data, dict):
        raise ValueError(f"{path}: must hold a JSON object with images, annotations, categories, rel_annotations, "
                         f"rel_categories: rewrite it in the COCO scene-graph layout")
    return data


def _id_names(entries: Any, key: str, path: str, problems: List[Problem], bare_ok: bool) -> Optional[Dict[int, str]]:
    """``{declared id: name}`` of ``categories`` / ``rel_categories`` (problems for bad entries)."""
    if not isinstance(entries, list) or not entries:
        problems.append(Problem("error", "missing key", path, f"'{key}'", "is missing or empty",
                                f"list the {key} as [{{\"id\": 1, \"name\": ...}}, ...]"))
        return None
    out: Dict[int, str] = {}
    seen_names: Dict[str, int] = {}
    for k, e in enumerate(entries):
        if bare_ok and isinstance(e, str):
            cid, name = k + 1, e
        elif isinstance(e, dict) and "id" in e and "name" in e:
            cid, name = e["id"], e["name"]
        else:
            problems.append(Problem("error", "bad entry", path, f"{key}[{k}]", f"{e!r} has no id / name",
                                    "give each entry an integer id and a name"))
            continue
        if isinstance(cid, bool) or not isinstance(cid, int):
            problems.append(Problem("error", "bad entry", path, f"{key}[{k}]", f"id {cid!r} is not an integer",
                                    _FIX_IDS))
            continue
        if cid in out:
            problems.append(Problem("error", "duplicate id", path, f"{key} id {cid}",
                                    f"is declared twice ('{out[cid]}' and '{name}')", _FIX_IDS))
            continue
        if name in seen_names:
            problems.append(Problem("error", "duplicate name", path, f"{key} id {cid}",
                                    f"name '{name}' is also the name of id {seen_names[name]}",
                                    "give every category a distinct name (merge the two)"))
            continue
        out[cid] = str(name)
        seen_names[name] = cid
    return out


def _int_array(values: List[Any]) -> Tuple[np.ndarray, np.ndarray]:
    """(int64 array, bool mask of the entries that are integers)."""
    ok = np.array([isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values], bool)
    return np.array([int(v) if o else -1 for v, o in zip(values, ok)], np.int64), ok


def _lookup(sorted_ids: np.ndarray, order: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Position (in the original list) of each of ``ids``, -1 when absent."""
    if sorted_ids.size == 0:
        return np.full(ids.shape, -1, np.int64)
    pos = np.clip(np.searchsorted(sorted_ids, ids), 0, sorted_ids.size - 1)
    return np.where(sorted_ids[pos] == ids, order[pos], -1)


def check_split(path: str, data: Optional[Dict[str, Any]] = None, max_per_kind: int = 1000
                ) -> Tuple[Optional[ParsedSplit], List[Problem]]:
    """Check and parse one split file: ``(parsed or None when an error makes it unusable, problems)``.

    The one rule set of the reader (:func:`parse_split` raises on the first error) and the
    validator (:mod:`sgg.data.validate` prints them all). Vectorised over annotations / relations.
    """
    problems: List[Problem] = []
    if data is None:
        data = read_split(path)
    cap: Dict[str, int] = {}

    def add(sev: str, kind: str, where: str, msg: str, fix: str) -> None:
        cap[kind] = cap.get(kind, 0) + 1
        if cap[kind] <= max_per_kind:
            problems.append(Problem(sev, kind, path, where, msg, fix))

    for key in ("images", "annotations", "rel_annotations"):
        if not isinstance(data.get(key), list):
            add("error", "missing key", f"'{key}'", "is missing or not a list",
                f"add the '{key}' list (empty list if there is nothing)")
    cats = _id_names(data.get("categories"), "categories", path, problems, bare_ok=False)
    preds = _id_names(data.get("rel_categories"), "rel_categories", path, problems, bare_ok=True)
    if any(p.severity == "error" for p in problems):
        return None, problems
    cat_ids = np.array(sorted(cats), np.int64)
    pred_ids = np.array(sorted(preds), np.int64)
    classes = [BACKGROUND] + [cats[int(i)] for i in cat_ids]
    predicates = [BACKGROUND] + [preds[int(i)] for i in pred_ids]

    # images
    images_raw = data["images"]
    images: List[dict] = []
    for k, im in enumerate(images_raw):
        miss = [f for f in ("id", "file_name", "width", "height") if not isinstance(im, dict) or f not in im]
        if miss:
            add("error", "bad entry", f"images[{k}]", f"has no {', '.join(miss)}",
                "give every image an id, file_name, width and height")
            continue
        w, h = im["width"], im["height"]
        if not (isinstance(w, (int, float)) and isinstance(h, (int, float)) and w > 0 and h > 0):
            add("error", "bad entry", f"image id {im['id']}", f"has width {w!r}, height {h!r}",
                "give the image's size in pixels (> 0)")
            continue
        images.append({"id": im["id"], "file_name": str(im["file_name"]), "width": int(w), "height": int(h)})
    img_ids, ok = _int_array([im["id"] for im in images])
    for k in np.flatnonzero(~ok):
        add("error", "bad entry", f"images[{k}]", f"id {images[k]['id']!r} is not an integer", _FIX_IDS)
    uniq, counts = np.unique(img_ids[ok], return_counts=True)
    for i in uniq[counts > 1]:
        add("error", "duplicate id", f"image id {int(i)}", f"appears {int(counts[uniq == i][0])} times in 'images'",
            _FIX_IDS)
    img_order = np.argsort(img_ids, kind="stable")
    img_sorted = img_ids[img_order]

    # annotations
    anns = [a for a in data["annotations"] if isinstance(a, dict)]
    if len(anns) != len(data["annotations"]):
        add("error", "bad entry", "'annotations'", "holds entries that are not objects", "rewrite the file")
    need = ("id", "image_id", "category_id", "bbox")
    bad = [k for k, a in enumerate(anns) if any(f not in a for f in need)]
    for k in bad:
        add("error", "bad entry", f"annotations[{k}]",
            f"has no {', '.join(f for f in need if f not in anns[k])}",
            "give every annotation an id, image_id, category_id and bbox")
    if bad:
        anns = [a for k, a in enumerate(anns) if k not in set(bad)]
    ann_ids, ok_a = _int_array([a["id"] for a in anns])
    ann_img_ids, ok_i = _int_array([a["image_id"] for a in anns])
    ann_cat_ids, ok_c = _int_array([a["category_id"] for a in anns])
    for k in np.flatnonzero(~(ok_a & ok_i & ok_c)):
        add("error", "bad entry", f"annotations[{k}]", "id / image_id / category_id is not an integer", _FIX_IDS)
    uniq, counts = np.unique(ann_ids, return_counts=True)
    for i in uniq[counts > 1]:
        add("error", "duplicate id", f"annotation id {int(i)}",
            f"appears {int(counts[uniq == i][0])} times in 'annotations'",
            "give every annotation a unique id (relations refer to them)")
    ann_img = _lookup(img_sorted, img_order, ann_img_ids)
    for k in np.flatnonzero(ann_img < 0):
        add("error", "dangling id", f"annotation id {int(ann_ids[k])}",
            f"refers to image id {int(ann_img_ids[k])}, which is not in 'images'",
            "add the image or remove the annotation")
    label = np.searchsorted(cat_ids, ann_cat_ids) + 1
    declared = np.isin(ann_cat_ids, cat_ids)
    for k in np.flatnonzero(~declared):
        add("error", "undeclared id", f"annotation id {int(ann_ids[k])}",
            f"has category_id {int(ann_cat_ids[k])}, which is not declared in 'categories'",
            _FIX_DECLARE.format("categories"))
    try:
        bbox = np.array([a["bbox"] for a in anns], np.float64).reshape(-1, 4)
    except (TypeError, ValueError):
        bbox = np.full((len(anns), 4), np.nan)
        for k, a in enumerate(anns):
            try:
                bbox[k] = np.asarray(a["bbox"], np.float64).reshape(4)
            except (TypeError, ValueError):
                pass
    bad_box = ~np.isfinite(bbox).all(1) | (bbox[:, 2] <= 0) | (bbox[:, 3] <= 0)
    for k in np.flatnonzero(bad_box):
        add("error", "bad box", f"annotation id {int(ann_ids[k])}",
            f"bbox {[a for a in anns[k]['bbox']] if isinstance(anns[k]['bbox'], list) else anns[k]['bbox']!r} "
            f"is not 4 finite numbers with w, h > 0", _FIX_BOX)
    xyxy = np.concatenate([bbox[:, :2], bbox[:, :2] + bbox[:, 2:]], 1)
    has_img = ann_img >= 0
    wid = np.array([im["width"] for im in images], np.float64)
    hei = np.array([im["height"] for im in images], np.float64)
    check = has_img & ~bad_box
    if check.any():
        outside, beyond = vg150_files.pixel_box_fit(xyxy[check], wid[ann_img[check]], hei[ann_img[check]],
                                                    to_remove=0)
        idx = np.flatnonzero(check)
        for k in idx[outside]:
            im = images[ann_img[k]]
            add("error", "box outside image", f"annotation id {int(ann_ids[k])}",
                f"bbox {bbox[k].tolist()} (xyxy {xyxy[k].tolist()}) lies entirely outside its image (image id "
                f"{im['id']}, {im['width']}x{im['height']})", _FIX_BOX)
        for k in idx[beyond]:
            im = images[ann_img[k]]
            add("warning", "box beyond image", f"annotation id {int(ann_ids[k])}",
                f"bbox {bbox[k].tolist()} sticks out of its image (image id {im['id']}, "
                f"{im['width']}x{im['height']}) by more than max({vg150_files.BOX_BEYOND_TOLERANCE['pixels']:g} px, "
                f"{vg150_files.BOX_BEYOND_TOLERANCE['fraction']:g} of the longer side); clamped to the image",
                _FIX_BOX)

    # relations
    rels = [r for r in data["rel_annotations"] if isinstance(r, dict)]
    need = ("image_id", "subject_id", "predicate_id", "object_id")
    bad = [k for k, r in enumerate(rels) if any(f not in r for f in need)]
    for k in bad:
        add("error", "bad entry", f"rel_annotations[{k}]",
            f"has no {', '.join(f for f in need if f not in rels[k])}",
            "give every relation an image_id, subject_id, predicate_id and object_id")
    if bad:
        rels = [r for k, r in enumerate(rels) if k not in set(bad)]

    def rel_where(k: int) -> str:
        rid = rels[k].get("id")
        return f"rel_annotation id {rid}" if rid is not None else f"rel_annotations[{k}]"

    rel_img_ids, ok1 = _int_array([r["image_id"] for r in rels])
    subj_ids, ok2 = _int_array([r["subject_id"] for r in rels])
    obj_ids, ok3 = _int_array([r["object_id"] for r in rels])
    pred_raw, ok4 = _int_array([r["predicate_id"] for r in rels])
    for k in np.flatnonzero(~(ok1 & ok2 & ok3 & ok4)):
        add("error", "bad entry", rel_where(k), "image_id / subject_id / object_id / predicate_id is not an integer",
            _FIX_IDS)
    rel_ids = np.array([r["id"] for r in rels if "id" in r], dtype=object)
    if rel_ids.size:
        u, c = np.unique(np.array([str(i) for i in rel_ids]), return_counts=True)
        for i in u[c > 1]:
            add("error", "duplicate id", f"rel_annotation id {i}", "appears more than once in 'rel_annotations'",
                _FIX_IDS)
    rel_img = _lookup(img_sorted, img_order, rel_img_ids)
    for k in np.flatnonzero(rel_img < 0):
        add("error", "dangling id", rel_where(k), f"refers to image id {int(rel_img_ids[k])}, which is not in "
            f"'images'", "add the image or remove the relation")
    pred_ok = np.isin(pred_raw, pred_ids)
    for k in np.flatnonzero(~pred_ok):
        add("error", "undeclared id", rel_where(k),
            f"has predicate_id {int(pred_raw[k])}, which is not declared in 'rel_categories'",
            _FIX_DECLARE.format("rel_categories"))
    ann_order = np.argsort(ann_ids, kind="stable")
    ann_sorted = ann_ids[ann_order]
    s_pos = _lookup(ann_sorted, ann_order, subj_ids)
    o_pos = _lookup(ann_sorted, ann_order, obj_ids)
    for role, pos, ids in (("subject_id", s_pos, subj_ids), ("object_id", o_pos, obj_ids)):
        wrong = (pos < 0) | ((pos >= 0) & (ann_img[np.maximum(pos, 0)] != rel_img))
        for k in np.flatnonzero(wrong & (rel_img >= 0)):
            what = ("is not an annotation id" if pos[k] < 0 else
                    f"is an annotation of image id {int(ann_img_ids[pos[k]])}, not of this image")
            add("error", "dangling id", rel_where(k),
                f"{role} {int(ids[k])} {what} (image id {int(rel_img_ids[k])})",
                "point subject_id / object_id at annotations of the relation's image, or remove the relation")

    if cap:
        for kind, n in cap.items():
            if n > max_per_kind:
                problems.append(Problem("error" if any(p.kind == kind and p.severity == "error" for p in problems)
                                        else "warning", kind, path, "...", f"{n - max_per_kind} more",
                                        "see the lines above"))
    if any(p.severity == "error" for p in problems):
        return None, problems

    # per image, in file order (annotations / relations keep their file order within an image)
    n_img = len(images)
    a_sort = np.argsort(ann_img, kind="stable")
    n_box = np.bincount(ann_img, minlength=n_img)
    local = np.empty(len(anns), np.int64)
    local[a_sort] = np.arange(len(anns)) - np.repeat(np.cumsum(n_box) - n_box, n_box)
    bounds = np.cumsum(n_box)[:-1]
    boxes = np.split(xyxy[a_sort], bounds) if n_img else []
    labels = np.split(label[a_sort].astype(np.int64), bounds) if n_img else []
    r_sort = np.argsort(rel_img, kind="stable")
    n_rel = np.bincount(rel_img, minlength=n_img)
    rel_rows = np.column_stack([local[s_pos], local[o_pos], np.searchsorted(pred_ids, pred_raw) + 1]).astype(np.int64)
    relations = np.split(rel_rows[r_sort].reshape(-1, 3), np.cumsum(n_rel)[:-1]) if n_img else []
    return ParsedSplit(path, images, boxes, labels, relations, classes, predicates), problems


def parse_split(path: str) -> ParsedSplit:
    """:func:`check_split` that raises :class:`CocoJsonError` on the first error (its message is
    ``file: where: message: fix``); warnings are logged once."""
    parsed, problems = check_split(path)
    if parsed is None:
        raise CocoJsonError(problems)
    warnings = [p for p in problems if p.severity == "warning"]
    if warnings:
        logger.warning("%d warning(s) in %s (first: %s); tools/validate_dataset.py lists them", len(warnings), path,
                       warnings[0].line())
    return parsed


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------
@DATASET_FORMAT_REGISTRY.register(name=FORMAT)
class CocoJsonDataset(ImageListDataset):
    """One split of a COCO scene-graph JSON folder as plain dataset dicts (the same API as
    :class:`~sgg.data.datasets.vg150.VG150Dataset`; rules in the module docstring).

    Args:
        root: the dataset folder (``root/<split>/_annotations.coco.json``).
        split, num_val_im, num_im, filter_empty_rels, filter_non_overlap, filter_duplicate_rels,
        depth_dir, check_images, rng: as VG150Dataset's. ``num_val_im`` is used only when the
        folder has no ``val`` file.

    Attributes per selected image: ``gt_boxes`` float32 [n, 4] (clamped pixels), ``gt_boxes_1024``
    float64 [n, 4] (the unclamped boxes in the frame whose longer side is 1024: the frame of the
    statistics and the overlap filter, as VG150's), ``gt_classes``, ``relationships`` (after the
    overlap filter, duplicates kept), ``filenames``, ``img_info`` (``image_id``, ``width``,
    ``height``, ``file_name``).
    """

    def __init__(self, root: str, split: str, num_val_im: int = 5000, num_im: int = -1,
                 filter_empty_rels: bool = True, filter_non_overlap: bool = False,
                 filter_duplicate_rels: bool = False, depth_dir: Optional[str] = None, check_images: bool = True,
                 rng: Optional[np.random.Generator] = None):
        if split not in SPLITS:
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.root, self.split = root, split
        self.num_val_im, self.num_im = num_val_im, num_im
        self.filter_empty_rels = filter_empty_rels
        self.filter_non_overlap = bool(filter_non_overlap) and split == "train"
        self.filter_duplicate_rels = bool(filter_duplicate_rels) and split == "train"
        self.depth_dir, self.rng = depth_dir, rng
        self.has_val_file = os.path.isfile(split_file(root, "val"))
        source = split if split != "val" or self.has_val_file else "train"
        self.annotation_file = split_file(root, source)
        self.img_dir = os.path.dirname(self.annotation_file)
        p = parse_split(self.annotation_file)
        self.ind_to_classes, self.ind_to_predicates = p.classes, p.predicates
        self.ind_to_attributes: List[str] = []

        n_box = np.array([len(b) for b in p.labels], np.int64)
        n_rel = np.array([len(r) for r in p.relations], np.int64)
        usable = (n_box > 0) & ((n_rel > 0) if filter_empty_rels else True)
        index = np.flatnonzero(usable)
        counts = {"rows": len(p.images), "usable": int(index.size)}
        if num_im > -1:
            index = index[:num_im]
        counts["after_num_im"] = int(index.size)
        if not self.has_val_file and num_val_im > 0:
            index = index[:num_val_im] if split == "val" else index[num_val_im:] if split == "train" else index
        counts["selected"] = int(index.size)

        wh = [(p.images[i]["width"], p.images[i]["height"]) for i in index]
        self.gt_boxes_1024 = [p.boxes[i] * (_BOX_SCALE / max(w, h)) for i, (w, h) in zip(index, wh)]
        self.gt_classes = [p.labels[i] for i in index]
        self.relationships = [p.relations[i] for i in index]
        if self.filter_non_overlap:
            keep = []
            for k, (b, r) in enumerate(zip(self.gt_boxes_1024, self.relationships)):
                self.relationships[k] = r[pairwise_iou_plus1(b[r[:, 0]], b[r[:, 1]]) > 0.0]
                keep.append(len(self.relationships[k]) > 0)
            index = index[np.asarray(keep, bool)] if keep else index
            sel = np.flatnonzero(keep) if keep else np.zeros(0, np.int64)
            self.gt_boxes_1024 = [self.gt_boxes_1024[k] for k in sel]
            self.gt_classes = [self.gt_classes[k] for k in sel]
            self.relationships = [self.relationships[k] for k in sel]
        counts["kept"] = int(index.size)
        self.selection_counts = counts
        self.img_info = [{"image_id": p.images[i]["id"], "width": p.images[i]["width"],
                          "height": p.images[i]["height"], "file_name": p.images[i]["file_name"]} for i in index]
        self.gt_boxes = []
        for k, i in enumerate(index):
            w, h = p.images[i]["width"], p.images[i]["height"]
            b = p.boxes[i].astype(np.float32)
            b[:, 0::2] = np.clip(b[:, 0::2], 0, w)
            b[:, 1::2] = np.clip(b[:, 1::2], 0, h)
            self.gt_boxes.append(b)
        self._attach_files(depth_dir, check_images)
        logger.info("coco_json %s: %d images from '%s'", split, len(self), self.annotation_file)

    @staticmethod
    def class_names(files) -> Tuple[List[str], List[str]]:
        """(classes, predicates) with background first, from the train file of ``files.root``."""
        p = parse_split(split_file(files.root, "train"))
        return p.classes, p.predicates

    def empty_reason(self, num_val_key: str = "DATASETS.NUM_VAL_IMAGES") -> Optional[Tuple[str, str]]:
        """``(reason, fix)`` when the split selected no image, else None."""
        c = self.selection_counts
        if c["kept"] > 0:
            return None
        need = ">= 1 annotation and >= 1 relation" if self.filter_empty_rels else ">= 1 annotation"
        if c["rows"] == 0:
            return (f"'{self.annotation_file}' lists no image", "add images, or leave this split out of the config")
        if c["usable"] == 0:
            return (f"none of the {c['rows']} images of '{self.annotation_file}' has {need}",
                    "annotate objects and relations (tools/validate_dataset.py checks the file)")
        if c["selected"] == 0 and not self.has_val_file:
            n = c["after_num_im"]
            if self.split == "train":
                return (f"{num_val_key} = {self.num_val_im} sets the first {self.num_val_im} train images aside for "
                        f"the val split (there is no val/{ANNOTATION_FILE}) and the train file has only {n} usable "
                        f"images", f"set {num_val_key} below {n}, or write a val/{ANNOTATION_FILE}")
            if self.split == "val":
                return (f"there is no val/{ANNOTATION_FILE} and {num_val_key} = {self.num_val_im}",
                        f"set {num_val_key} > 0, or write a val/{ANNOTATION_FILE}")
        if c["selected"] == 0:
            return (f"num_im = {self.num_im} keeps no image", "pass num_im = -1 (all) or > 0")
        return (f"the SGDet overlap filter (MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP) drops all its "
                f"{c['selected']} images", "set MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP False")

    def __repr__(self) -> str:
        return (f"CocoJsonDataset(split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
                f"predicates={self.num_predicates}, annotation_file={self.annotation_file!r})")


# ----------------------------------------------------------------------------------------------
# Writing and converting
# ----------------------------------------------------------------------------------------------
def write_split(path: str, *, images: Sequence[dict], boxes: Sequence[Any], labels: Sequence[Any],
                relations: Sequence[Any], class_names: Sequence[str], predicate_names: Sequence[str]) -> dict:
    """Write one split file with contiguous 1-based ids (the one writer of the format).

    ``images``: ``{id, file_name, width, height}`` per image; ``boxes`` [n, 4] xyxy pixels (stored
    as ``[x1, y1, x2 - x1, y2 - y1]``), ``labels`` [n] 1..C, ``relations`` [m, 3] (local subject,
    object, predicate 1..P); names without background. Returns the JSON written."""
    out: Dict[str, Any] = {
        "images": [], "annotations": [], "rel_annotations": [],
        "categories": [{"id": i + 1, "name": n, "supercategory": "object"} for i, n in enumerate(class_names)],
        "rel_categories": [{"id": i + 1, "name": n} for i, n in enumerate(predicate_names)],
    }
    ann_id = rel_id = 0
    for im, b, lab, rel in zip(images, boxes, labels, relations):
        out["images"].append({"id": int(im["id"]), "file_name": str(im["file_name"]), "width": int(im["width"]),
                              "height": int(im["height"])})
        b = np.asarray(b, np.float64).reshape(-1, 4)
        lab = np.asarray(lab, np.int64).reshape(-1)
        rel = np.asarray(rel, np.int64).reshape(-1, 3)
        first = ann_id + 1
        for box, c in zip(b.tolist(), lab.tolist()):
            ann_id += 1
            w, h = box[2] - box[0], box[3] - box[1]
            out["annotations"].append({"id": ann_id, "image_id": int(im["id"]), "category_id": int(c),
                                       "bbox": [box[0], box[1], w, h], "area": w * h, "iscrowd": 0,
                                       "segmentation": []})
        for s, o, pr in rel.tolist():
            rel_id += 1
            out["rel_annotations"].append({"id": rel_id, "image_id": int(im["id"]), "subject_id": first + s,
                                           "predicate_id": int(pr), "object_id": first + o})
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.replace(tmp, path)
    return out


def _link(src: str, dst: str) -> None:
    """Hard-link ``src`` to ``dst`` (a copy across file systems); an existing ``dst`` is replaced."""
    if os.path.lexists(dst):
        os.remove(dst)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _carry_extras(src: str, out: str) -> None:
    """The root files of :data:`ROOT_EXTRAS` and the ``depth/`` folder, linked."""
    for name in ROOT_EXTRAS:
        if os.path.isfile(os.path.join(src, name)):
            _link(os.path.join(src, name), os.path.join(out, name))
    depth = os.path.join(src, vg150_files.DEPTH_DIR)
    if os.path.isdir(depth):
        os.makedirs(os.path.join(out, vg150_files.DEPTH_DIR), exist_ok=True)
        for name in os.listdir(depth):
            _link(os.path.join(depth, name), os.path.join(out, vg150_files.DEPTH_DIR, name))


def _same_folder(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def vg150_to_coco_json(src: str, out: str, num_val_im: int = 5000, link_images: bool = True) -> Dict[str, int]:
    """A VG150-format folder -> a coco_json folder: the splits as the VG150 loader yields them
    (images with >= 1 relation; val = the first ``num_val_im`` train images, no ``val`` file when
    0), image id = ``image_data`` ``image_id``, file ``{image_id}.jpg`` (hard-linked, copied across
    file systems), bbox = the loader's pixel boxes before its clip (``boxes_1024 / 1024 * max(W,
    H)``, so the 1024 integers come back exactly), ids 1-based as in the h5, names from the dicts
    json; attributes are not carried. Returns ``{split: images}``."""
    from .vg150 import VG150Dataset, load_info

    if _same_folder(src, out):
        raise ValueError(f"--out must differ from --src ({src})")
    h5, dicts = vg150_files.LAYOUTS[0]
    for cand_h5, cand_dicts in vg150_files.LAYOUTS:
        if os.path.isfile(os.path.join(src, cand_h5)):
            h5, dicts = cand_h5, cand_dicts
            break
    classes, predicates, _ = load_info(os.path.join(src, dicts))
    sizes = {}
    for split in SPLITS:
        if split == "val" and num_val_im <= 0:
            continue
        ds = VG150Dataset(os.path.join(src, h5), os.path.join(src, dicts), os.path.join(src, vg150_files.IMAGE_DATA_FILE),
                          os.path.join(src, vg150_files.IMAGE_DIR), split, num_val_im=num_val_im, check_images=True)
        os.makedirs(os.path.join(out, split), exist_ok=True)
        images, boxes = [], []
        for i, info in enumerate(ds.img_info):
            w, h = int(info["width"]), int(info["height"])
            name = vg150_files.image_filename(info["image_id"])
            images.append({"id": int(info["image_id"]), "file_name": name, "width": w, "height": h})
            boxes.append(vg150_files.boxes_to_pixels(ds.gt_boxes_1024[i], w, h).astype(np.float64))
            if link_images:
                _link(ds.filenames[i], os.path.join(out, split, name))
        write_split(split_file(out, split), images=images, boxes=boxes, labels=ds.gt_classes,
                    relations=ds.relationships, class_names=classes[1:], predicate_names=predicates[1:])
        sizes[split] = len(images)
    _carry_extras(src, out)
    return sizes


def coco_json_to_vg150(src: str, out: str, link_images: bool = True) -> Dict[str, int]:
    """A coco_json folder -> VG150 files: every image of the split files (val first, then train:
    split 0; test: split 2), image ids kept (unique over the splits, never a corrupt-VG id), boxes
    on the 1024 / 512 grids (``vg150_files.encode_boxes``: x1' = round(x1 s), x2' = max(round(x2 s),
    x1' + 1), cx = x1' + ceil(w' / 2)), inclusive ranges, -1 when empty, image_data.json aligned;
    images linked to ``VG_100K/{image_id}.jpg``. The names of the train file are used; the other
    files must declare the same. Returns ``{split: images}``; with a val file, load the result
    with ``DATASETS.NUM_VAL_IMAGES`` = its image count."""
    if _same_folder(src, out):
        raise ValueError(f"--out must differ from --src ({src})")
    parsed = {s: parse_split(split_file(src, s)) for s in ("val", "train", "test")
              if s != "val" or os.path.isfile(split_file(src, s))}
    if not os.path.isfile(split_file(src, "test")):
        raise FileNotFoundError(f"{split_file(src, 'test')}: split file not found: write the test split too")
    base = parsed["train"]
    for s, p in parsed.items():
        if (p.classes, p.predicates) != (base.classes, base.predicates):
            raise ValueError(f"{p.path}: declares other categories / rel_categories than {base.path}: the VG150 "
                             f"files have one name list; use the same declarations in every split file")
    seen: Dict[int, str] = {}
    rows: Dict[str, list] = {k: [] for k in ("ids", "w", "h", "split", "boxes", "labels", "rels")}
    os.makedirs(os.path.join(out, vg150_files.IMAGE_DIR), exist_ok=True)
    for s, p in parsed.items():
        for im, b, lab, rel in zip(p.images, p.boxes, p.labels, p.relations):
            iid = int(im["id"])
            if iid in seen:
                raise ValueError(f"{p.path}: image id {iid}: also an image of {seen[iid]}: VG150 names images "
                                 f"{{image_id}}.jpg in one folder; give the images unique ids over all splits")
            if iid in vg150_files.CORRUPTED_IMAGE_IDS:
                raise ValueError(f"{p.path}: image id {iid}: is one of the VG ids the VG150 loader drops as corrupt "
                                 f"({sorted(vg150_files.CORRUPTED_IMAGE_IDS)}): renumber the image")
            seen[iid] = p.path
            for k, v in (("ids", iid), ("w", im["width"]), ("h", im["height"]), ("boxes", b), ("labels", lab),
                         ("rels", rel), ("split", vg150_files.SPLIT_TEST if s == "test" else vg150_files.SPLIT_TRAIN)):
                rows[k].append(v)
            if link_images:
                _link(os.path.join(os.path.dirname(p.path), im["file_name"]),
                      os.path.join(out, vg150_files.IMAGE_DIR, vg150_files.image_filename(iid)))
    vg150_files.write_vg150(out, image_ids=rows["ids"], widths=rows["w"], heights=rows["h"], splits=rows["split"],
                            boxes=rows["boxes"], labels=rows["labels"], relations=rows["rels"],
                            class_names=base.classes[1:], predicate_names=base.predicates[1:])
    _carry_extras(src, out)
    return {s: len(p.images) for s, p in parsed.items()}


def folder_to_coco_json(src: str, fmt: str, out: str, link_images: bool = True) -> Dict[str, int]:
    """A folder of another one-folder format (``oiv6``, ``gqa200``, ``psg``; ``fmt`` its
    ``DATASET_FORMAT_REGISTRY`` name) -> a coco_json folder, read by that format's own reader (so
    its rules apply: its filters, its +1 ids, its clipping; evaluation ground truth with every
    relation row). ``train`` holds every image of the format's train pool (read with
    ``num_val_im = 0``); ``val`` is written only when the format has its own val file (oiv6): for
    PSG the coco_json rule "val = the first DATASETS.NUM_VAL_IMAGES train images" is PSG's own
    rule, for GQA200 (whose val is a subset of test) it differs. Image ids are kept when they are
    unique over the written splits, else every image is renumbered 1..N in split order (a warning
    says so); images are written as ``{image_id}{ext}`` beside their split file (hard-linked,
    copied across file systems). Returns ``{split: images}``."""
    from .registry import DATASET_FORMAT_REGISTRY

    if _same_folder(src, out):
        raise ValueError(f"--out must differ from --src ({src})")
    cls = DATASET_FORMAT_REGISTRY.get(fmt)
    datasets = {}
    for split in ("train", "val", "test"):
        ds = cls(src, split, num_val_im=0, check_images=link_images)
        if split == "val" and not getattr(ds, "has_val_file", False):
            continue
        datasets[split] = ds
    ids = [int(info["image_id"]) for ds in datasets.values() for info in ds.img_info]
    renumber = len(set(ids)) != len(ids)
    if renumber:
        logger.warning("%s: image ids repeat across the splits (%d images, %d distinct ids): the images are "
                       "renumbered 1..%d in split order (train, val, test)", src, len(ids), len(set(ids)), len(ids))
    classes, predicates = datasets["train"].ind_to_classes, datasets["train"].ind_to_predicates
    sizes, next_id = {}, 0
    for split, ds in datasets.items():
        images = []
        for i, info in enumerate(ds.img_info):
            next_id += 1
            iid = next_id if renumber else int(info["image_id"])
            name = f"{iid}{os.path.splitext(ds.filenames[i])[1] or '.jpg'}"
            images.append({"id": iid, "file_name": name, "width": int(info["width"]), "height": int(info["height"])})
            if link_images:
                os.makedirs(os.path.join(out, split), exist_ok=True)
                _link(ds.filenames[i], os.path.join(out, split, name))
        write_split(split_file(out, split), images=images, boxes=[b.astype(np.float64) for b in ds.gt_boxes],
                    labels=ds.gt_classes, relations=ds.relationships, class_names=classes[1:],
                    predicate_names=predicates[1:])
        sizes[split] = len(images)
    _carry_extras(src, out)
    return sizes
