"""VG150 in the Scene-Graph-Benchmark (SGB) file format.

Files (see ``specs/data.md``): ``VG-SGG-with-attri.h5`` (or the older ``VG-SGG.h5`` without the
``attributes`` dataset), ``VG-SGG-dicts-with-attri.json`` (or ``VG-SGG-dicts.json``),
``image_data.json`` and one image folder ``VG_100K/{image_id}.jpg``.

The file layout itself (names, h5 datasets, box encoding, raw reads) is
:mod:`sgg.data.datasets.vg150_files`; this module applies SGB's loading rules on top of it. It
reproduces SGB's ``load_info``,
``load_graphs``, ``load_image_filenames`` and ``get_groundtruth(evaluation=True)`` exactly, with
SGB's silent failure modes turned into clear errors:

* a missing file / folder is a :class:`FileNotFoundError` naming it and the config key to fix;
* ``image_data.json`` must have as many usable rows (after dropping the 4 known-corrupt VG images)
  as the h5 has images -- no hard-coded 108,073;
* images missing on disk raise (SGB skipped them, which silently mis-aligned every later row);
* malformed boxes / relation indices raise naming the file and the first bad row.

For the real VG150 files the reference split sizes are 57,723 train / 5,000 val / 26,446 test
images (``num_val_im=5000``, ``filter_empty_rels=True``, no overlap filter).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgg.structures.iou import pairwise_iou_plus1

from . import vg150_files
from .registry import DATASET_FORMAT_REGISTRY
from .vg150_files import BOX_SCALE, CORRUPTED_IMAGE_IDS

logger = logging.getLogger(__name__)

__all__ = [
    "BOX_SCALE",
    "CORRUPTED_IMAGE_IDS",
    "VG150Dataset",
    "load_info",
    "load_graphs",
    "load_image_filenames",
    "empty_split_reason",
    "load_image",
    "load_depth",
    "load_zeroshot_triplets",
    "compute_zeroshot_triplets",
    "imread",
    "dedup_relations",
    "check_on_disk",
    "find_depth_files",
    "triplets_of",
]

_CFG_HINT = (
    "set DATASETS.DATA_DIR (or $SGG_DATA_DIR) to the folder holding the VG150 "
    "files, or generate a synthetic dataset with tools/make_synthetic_vg.py"
)


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"VG150 {what} not found: '{path}'. Fix: {_CFG_HINT}.")


def _require_dir(path: str, what: str) -> None:
    if not os.path.isdir(path):
        raise FileNotFoundError(f"VG150 {what} not found: '{path}'. Fix: {_CFG_HINT}.")


# ----------------------------------------------------------------------------------------------
# Dicts json
# ----------------------------------------------------------------------------------------------
def load_info(dict_file: str) -> Tuple[List[str], List[str], List[str]]:
    """Read the dicts json -> ``(ind_to_classes, ind_to_predicates, ind_to_attributes)``.

    Each list has ``'__background__'`` at index 0 and the names ordered by index, as SGB's
    ``load_info``. ``ind_to_attributes`` is ``[]`` when the json has no ``attribute_to_idx``
    (the older ``VG-SGG-dicts.json``).
    """
    _require_file(dict_file, f"dicts json ({vg150_files.DICTS_FILE})")
    info = vg150_files.read_dicts(dict_file)

    def names(key: str) -> List[str]:
        return vg150_files.index_names(info[key], key, dict_file)

    classes = names(vg150_files.LABEL_TO_IDX)
    predicates = names(vg150_files.PREDICATE_TO_IDX)
    attributes = names(vg150_files.ATTRIBUTE_TO_IDX) if vg150_files.ATTRIBUTE_TO_IDX in info else []
    return classes, predicates, attributes


# ----------------------------------------------------------------------------------------------
# h5 graphs
# ----------------------------------------------------------------------------------------------
def _first_column(arr: np.ndarray, key: str, roidb_file: str) -> np.ndarray:
    """Column 0 of an (n, k) dataset (SGB reads ``labels`` / ``predicates`` as ``[:, 0]``)."""
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"'{roidb_file}': {key} has shape {arr.shape}, expected (n, 1)")
    return arr[:, 0]


def load_graphs(
    roidb_file: str,
    split: str,
    num_im: int = -1,
    num_val_im: int = 5000,
    filter_empty_rels: bool = True,
    filter_non_overlap: bool = False,
) -> Dict[str, object]:
    """SGB ``load_graphs``: select the split's images and cut the h5 arrays per image.

    Returns a dict with ``split_mask`` bool[N_h5] (selected h5 rows, after the overlap filter),
    ``image_index`` / ``first_box`` (their h5 rows and first global box index), ``counts`` (images
    left after each selection step, see :func:`empty_split_reason`),
    ``boxes`` (list of xyxy boxes in the 1024 frame, the h5 dtype (int32), truncated as SGB),
    ``labels`` (list of int64[n]), ``attributes`` (list of int64[n, 10], or ``None`` when the h5
    has no ``attributes``) and ``relations`` (list of int64[m, 3]: subject index, object index
    within the image, predicate).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    if filter_non_overlap and split != "train":
        raise ValueError("filter_non_overlap applies to the train split only (as SGB)")
    _require_file(roidb_file, f"h5 ({vg150_files.H5_FILE})")
    h5 = vg150_files.read_h5(roidb_file)
    data_split = h5[vg150_files.SPLIT]
    first_box_all = h5[vg150_files.IMG_TO_FIRST_BOX]
    last_box_all = h5[vg150_files.IMG_TO_LAST_BOX]
    first_rel_all = h5[vg150_files.IMG_TO_FIRST_REL]
    last_rel_all = h5[vg150_files.IMG_TO_LAST_REL]
    all_labels = _first_column(h5[vg150_files.LABELS], vg150_files.LABELS, roidb_file)
    all_attributes = h5.get(vg150_files.ATTRIBUTES)
    all_boxes = h5[vg150_files.BOXES]
    all_rels = h5[vg150_files.RELATIONSHIPS]
    all_preds = _first_column(h5[vg150_files.PREDICATES], vg150_files.PREDICATES, roidb_file)

    split_flag = vg150_files.SPLIT_TEST if split == "test" else vg150_files.SPLIT_TRAIN
    split_mask = data_split == split_flag
    counts = {"rows": int(split_mask.sum())}
    split_mask &= first_box_all >= 0
    counts["with_boxes"] = int(split_mask.sum())
    if filter_empty_rels:
        split_mask &= first_rel_all >= 0
    counts["usable"] = int(split_mask.sum())

    image_index = np.flatnonzero(split_mask)
    if num_im > -1:
        image_index = image_index[:num_im]
    counts["after_num_im"] = int(image_index.size)
    if num_val_im > 0:
        if split == "val":
            image_index = image_index[:num_val_im]
        elif split == "train":
            image_index = image_index[num_val_im:]
    counts["selected"] = int(image_index.size)
    split_mask = np.zeros(data_split.shape[0], dtype=bool)
    split_mask[image_index] = True

    if all_rels.shape[0] != all_preds.shape[0]:
        raise ValueError(
            f"'{roidb_file}': relationships has {all_rels.shape[0]} rows but predicates has "
            f"{all_preds.shape[0]}"
        )
    all_boxes = vg150_files.decode_boxes_inplace(all_boxes, roidb_file)

    fb = first_box_all[image_index].astype(np.int64)
    lb = last_box_all[image_index].astype(np.int64)
    fr = first_rel_all[image_index].astype(np.int64)
    lr = last_rel_all[image_index].astype(np.int64)
    n_box = lb - fb + 1
    if (n_box <= 0).any():
        r = int(image_index[np.flatnonzero(n_box <= 0)[0]])
        raise ValueError(f"'{roidb_file}': image row {r} has img_to_last_box < img_to_first_box")
    has_rel = fr >= 0
    n_rel = np.where(has_rel, lr - fr + 1, 0)
    if (n_rel < 0).any() or (has_rel & (n_rel == 0)).any():
        r = int(image_index[np.flatnonzero(has_rel & (n_rel <= 0))[0]])
        raise ValueError(f"'{roidb_file}': image row {r} has img_to_last_rel < img_to_first_rel")

    # All selected relations at once: global row ids, owning image, local object indices.
    owner = np.repeat(np.arange(image_index.size), n_rel)
    starts = np.repeat(fr, n_rel)
    offsets = np.arange(owner.size) - np.repeat(np.cumsum(n_rel) - n_rel, n_rel)
    rel_rows = starts + offsets
    obj_idx = all_rels[rel_rows].astype(np.int64) - fb[owner][:, None]
    bad = np.flatnonzero(((obj_idx < 0) | (obj_idx >= n_box[owner][:, None])).any(1))
    if bad.size:
        k = int(bad[0])
        img_row = int(image_index[owner[k]])
        raise ValueError(
            f"'{roidb_file}': relationships row {int(rel_rows[k])} "
            f"{all_rels[rel_rows[k]].tolist()} (global object indices) points outside the objects "
            f"of its image (h5 image row {img_row}, objects {int(fb[owner[k]])}..{int(lb[owner[k]])}). "
            f"The h5 is corrupt."
        )
    rels = np.column_stack([obj_idx, all_preds[rel_rows].astype(np.int64)]).astype(np.int64)

    if filter_non_overlap:
        s_glob = fb[owner] + obj_idx[:, 0]
        o_glob = fb[owner] + obj_idx[:, 1]
        keep_rel = pairwise_iou_plus1(all_boxes[s_glob], all_boxes[o_glob]) > 0.0
        kept_per_img = np.bincount(owner[keep_rel], minlength=image_index.size)
        keep_img = kept_per_img > 0
        split_mask[image_index[~keep_img]] = False
        rels = rels[keep_rel]
        image_index, fb, lb = image_index[keep_img], fb[keep_img], lb[keep_img]
        n_rel = kept_per_img[keep_img]
    counts["kept"] = int(image_index.size)

    rel_bounds = np.cumsum(n_rel)
    rel_list = np.split(rels, rel_bounds[:-1]) if image_index.size else []
    boxes, labels, attributes = [], [], ([] if all_attributes is not None else None)
    for i in range(image_index.size):
        sl = slice(int(fb[i]), int(lb[i]) + 1)
        boxes.append(all_boxes[sl])
        labels.append(all_labels[sl].astype(np.int64))
        if attributes is not None:
            attributes.append(all_attributes[sl].astype(np.int64))
    return {
        "split_mask": split_mask,
        "image_index": image_index,
        "first_box": fb,
        "counts": counts,
        "boxes": boxes,
        "labels": labels,
        "attributes": attributes,
        "relations": [r.reshape(-1, 3) for r in rel_list],
        "all_labels": all_labels,
        "all_predicates": all_preds,
    }


def _suggest_num_val(n: int) -> int:
    """A NUM_VAL_IMAGES that leaves train images when the split has ``n`` usable ones."""
    return max(0, min(n - 1, max(1, n // 10)))


def empty_split_reason(split: str, counts: Dict[str, int], num_val_im: int, num_im: int = -1,
                       filter_empty_rels: bool = True,
                       num_val_key: str = "DATASETS.NUM_VAL_IMAGES") -> Optional[Tuple[str, str]]:
    """Why a split selects no image, as ``(reason, fix)`` (None when it selects some).

    ``counts``: the ``counts`` of :func:`load_graphs` -- ``rows`` (h5 rows with the split's flag),
    ``with_boxes`` (of those, with >= 1 box), ``usable`` (and >= 1 relation when
    ``filter_empty_rels``), ``after_num_im``, ``selected`` (after the val slice) and ``kept``
    (after the overlap filter; ``selected`` when absent). ``num_val_key`` names the setting of
    ``num_val_im`` in the message (the config key, or a command-line flag). Shared by the loader's
    callers (:func:`sgg.data.build.build_dataset`) and :mod:`sgg.data.validate`.
    """
    kept = counts.get("kept", counts["selected"])
    if kept > 0:
        return None
    flag = f"{vg150_files.SPLIT_TEST} (test)" if split == "test" else f"{vg150_files.SPLIT_TRAIN} (train)"
    rows, usable = counts["rows"], counts["usable"]
    need = ">= 1 box and >= 1 relation" if filter_empty_rels else ">= 1 box"
    if rows == 0:
        has = "train images (the val split is cut from them)" if split == "val" else f"{split} images"
        return (f"the h5 has no image row with split == {flag}",
                f"use the files of a dataset that has {has}, or leave this split out of the config")
    if usable == 0:
        return (f"none of its {rows} h5 rows with split == {flag} has {need} ({counts['with_boxes']} have boxes), "
                f"and the loader keeps only those (as SGB)",
                "regenerate the h5 with annotated objects and relations for these images "
                "(tools/validate_dataset.py lists the rows)")
    if counts.get("after_num_im", usable) == 0:
        return (f"num_im = {num_im} keeps none of its {usable} usable images", "pass num_im = -1 (all) or > 0")
    if counts["selected"] == 0:
        if split == "train":
            n = counts.get("after_num_im", usable)
            return (f"{num_val_key} = {num_val_im} sets the first {num_val_im} train images aside for the val split "
                    f"and the h5 has only {n} usable train images ({need}), so none is left "
                    f"for training",
                    f"set {num_val_key} below {n} (e.g. {_suggest_num_val(n)}), or to 0 for no val split")
        if split == "val":
            return (f"{num_val_key} = {num_val_im} sets no train image aside for validation",
                    f"set {num_val_key} > 0 (SGB uses 5000), or leave the val split out of DATASETS.VAL "
                    f"(and set SOLVER.TO_VAL False)")
    return (f"the SGDet overlap filter (MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP) drops all its "
            f"{counts['selected']} images (no relation between overlapping boxes)",
            "set MODEL.ROI_RELATION_HEAD.REQUIRE_BOX_OVERLAP False, or check the boxes with tools/validate_dataset.py")


def load_image_filenames(img_dir: str, image_file: str, num_h5_rows: int, roidb_file: str = "h5"):
    """Read ``image_data.json``, drop the 4 corrupt VG ids and align with the h5 rows.

    Returns ``(filenames, img_info)``, one per h5 row. The usable row count must equal the h5 row
    count (a clear error otherwise; SGB instead asserted 108,073 after skipping images missing on
    disk, which could silently mis-align the rows).
    """
    _require_file(image_file, vg150_files.IMAGE_DATA_FILE)
    info = vg150_files.usable_image_data(vg150_files.read_image_data(image_file))
    if len(info) != num_h5_rows:
        raise ValueError(
            f"'{image_file}' has {len(info)} usable images (after dropping the corrupt VG ids "
            f"{sorted(CORRUPTED_IMAGE_IDS)}) but '{roidb_file}' has {num_h5_rows} image rows: the "
            f"two files must come from the same release (rows are aligned one to one)."
        )
    for k, img in enumerate(info):
        for key in vg150_files.IMAGE_DATA_KEYS:
            if key not in img:
                raise ValueError(f"'{image_file}' entry {k} has no '{key}'")
    fns = [os.path.join(img_dir, vg150_files.image_filename(img["image_id"])) for img in info]
    return fns, info


# ----------------------------------------------------------------------------------------------
# Rules every format shares (the COCO-json reader uses them too)
# ----------------------------------------------------------------------------------------------
def dedup_relations(rels: np.ndarray, rng: Optional[np.random.Generator] = None) -> np.ndarray:
    """One row per (subject, object) pair of ``rels`` int64[m, 3], the predicate drawn uniformly
    over its rows (``rng``, or numpy's global RNG when None).

    Same distribution as SGB's ``np.random.choice`` over the pair's predicate list; the pairs
    keep the order of their first occurrence.
    """
    if rels.shape[0] <= 1:
        return rels
    m = rels.shape[0]
    perm = rng.permutation(m) if rng is not None else np.random.permutation(m)
    key = rels[:, 0] * (int(rels[:, :2].max()) + 1) + rels[:, 1]  # one int per ordered pair
    _, pick = np.unique(key[perm], return_index=True)
    _, first = np.unique(key, return_index=True)
    chosen = perm[pick][np.argsort(first, kind="stable")]
    return rels[chosen]


def check_on_disk(paths: Sequence[str], folder: str, what: str) -> None:
    """A FileNotFoundError naming the count, the first missing files and the fix when any of
    ``paths`` (files of ``folder``) is missing (one ``listdir``, not one stat per file)."""
    try:
        present = set(os.listdir(folder))
    except OSError:
        present = set()
    missing = [p for p in paths if os.path.basename(p) not in present and not os.path.exists(p)]
    if missing:
        shown = ", ".join(f"'{p}'" for p in missing[:5])
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} {what} of this split are missing in '{folder}' "
            f"(first: {shown}). Fix: point the config (DATASETS.DATA_DIR) at the complete "
            f"folder, or pass check_images=False only if you never read them."
        )


def find_depth_files(depth_dir: str, image_ids: Sequence[int]) -> List[str]:
    """``depth_dir/{image_id}.png``, or ``.npy`` when only that one exists, per image id."""
    present = set(os.listdir(depth_dir))
    out = []
    for image_id in image_ids:
        stem = str(int(image_id))
        name = stem + ".png" if (stem + ".png") in present or (stem + ".npy") not in present else stem + ".npy"
        out.append(os.path.join(depth_dir, name))
    return out


def triplets_of(gt_classes: Sequence[np.ndarray], relationships: Sequence[np.ndarray]) -> np.ndarray:
    """All ``(subject class, object class, predicate)`` rows of per-image classes / relations,
    int64[R, 3]."""
    parts = [np.column_stack([c[r[:, 0]], c[r[:, 1]], r[:, 2]]) for c, r in zip(gt_classes, relationships)
             if r.shape[0]]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 3), np.int64)


# ----------------------------------------------------------------------------------------------
# The dataset
# ----------------------------------------------------------------------------------------------
@DATASET_FORMAT_REGISTRY.register(name=vg150_files.FORMAT)
class VG150Dataset:
    """VG150 (SGB h5 + json + images) as a list of plain dataset dicts.

    Args:
        roidb_file: ``VG-SGG-with-attri.h5`` (or ``VG-SGG.h5``).
        dict_file: ``VG-SGG-dicts-with-attri.json`` (or ``VG-SGG-dicts.json``).
        image_file: ``image_data.json``.
        img_dir: folder of ``{image_id}.jpg``.
        split: ``'train'``, ``'val'`` (first ``num_val_im`` train images) or ``'test'``.
        num_val_im: size of the validation slice taken from the train images (SGB: 5000).
        num_im: keep only the first ``num_im`` images of the split before the val slice (-1: all).
        filter_empty_rels: drop images without relations (SGB: always on for relation training).
        filter_non_overlap: train only (ignored otherwise, as SGB): keep relations whose boxes
            overlap (+1 IoU > 0) and drop images left without relations.
        filter_duplicate_rels: train only (ignored otherwise): ``__getitem__`` keeps one predicate,
            drawn uniformly over the annotation rows, per (subject, object) pair, anew each call.
        depth_dir: optional folder of per-image depth maps ``{image_id}.png`` (16 bit) or ``.npy``.
        check_images: verify once that every selected image (and depth map) exists on disk.
        rng: ``np.random.Generator`` for the duplicate-relation draw; ``None`` uses numpy's global
            RNG (``np.random``). Data-loader workers must seed numpy differently per worker (a
            ``worker_init_fn``), or every worker draws the same predicates.

    Reference sizes for the real VG150 files: 57,723 train / 5,000 val / 26,446 test images.

    Attributes kept per selected image (aligned with ``__getitem__``): ``gt_boxes_1024`` (xyxy in
    the 1024 frame, h5 integer dtype, truncated as SGB -- the frame the statistics use),
    ``gt_classes`` int64[n], ``gt_attributes`` int64[n, 10] or ``None``, ``relationships``
    int64[m, 3] (after the overlap filter, duplicates kept), ``filenames``, ``img_info``.
    """

    def __init__(
        self,
        roidb_file: str,
        dict_file: str,
        image_file: str,
        img_dir: str,
        split: str,
        num_val_im: int = 5000,
        num_im: int = -1,
        filter_empty_rels: bool = True,
        filter_non_overlap: bool = False,
        filter_duplicate_rels: bool = False,
        depth_dir: Optional[str] = None,
        check_images: bool = True,
        rng: Optional[np.random.Generator] = None,
    ):
        if split not in ("train", "val", "test"):
            raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
        self.roidb_file = roidb_file
        self.dict_file = dict_file
        self.image_file = image_file
        self.img_dir = img_dir
        self.split = split
        self.num_val_im = num_val_im
        self.num_im = num_im
        self.filter_empty_rels = filter_empty_rels
        self.filter_non_overlap = bool(filter_non_overlap) and split == "train"
        self.filter_duplicate_rels = bool(filter_duplicate_rels) and split == "train"
        self.depth_dir = depth_dir
        self.rng = rng

        _require_file(roidb_file, f"h5 ({vg150_files.H5_FILE})")
        _require_file(image_file, vg150_files.IMAGE_DATA_FILE)
        _require_dir(img_dir, f"image folder ({vg150_files.IMAGE_DIR})")
        self.ind_to_classes, self.ind_to_predicates, self.ind_to_attributes = load_info(dict_file)

        g = load_graphs(roidb_file, split, num_im=num_im, num_val_im=num_val_im,
                        filter_empty_rels=filter_empty_rels,
                        filter_non_overlap=self.filter_non_overlap)
        self._check_label_ranges(g["all_labels"], g["all_predicates"])
        self.split_mask: np.ndarray = g["split_mask"]
        #: images left after each selection step (:func:`empty_split_reason`)
        self.selection_counts: Dict[str, int] = g["counts"]
        self.gt_boxes_1024: List[np.ndarray] = g["boxes"]
        self.gt_classes: List[np.ndarray] = g["labels"]
        self.gt_attributes: Optional[List[np.ndarray]] = g["attributes"]
        self.relationships: List[np.ndarray] = g["relations"]

        fns, info = load_image_filenames(img_dir, image_file, self.split_mask.shape[0], roidb_file)
        sel = np.flatnonzero(self.split_mask)
        self.filenames: List[str] = [fns[i] for i in sel]
        self.img_info: List[dict] = [info[i] for i in sel]
        self._check_boxes_in_images(g["first_box"], sel)

        self._depth_files: Optional[List[str]] = None
        if depth_dir is not None:
            _require_dir(depth_dir, "depth folder")
            self._depth_files = self._find_depth_files(depth_dir)
        if check_images:
            self._check_on_disk(self.filenames, img_dir, "images")
            if self._depth_files is not None:
                self._check_on_disk(self._depth_files, depth_dir, "depth maps")
        logger.info("VG150 %s: %d images from '%s'", split, len(self), roidb_file)

    @classmethod
    def from_files(cls, files, **kwargs) -> "VG150Dataset":
        """The split ``files`` (a :class:`sgg.data.catalog.DatasetFiles`) names: its h5, dicts json,
        ``image_data.json``, image folder and split; ``kwargs`` as the constructor's (filters,
        ``num_val_im``, ``depth_dir``, ...). The constructor of every registered dataset format."""
        return cls(roidb_file=files.roidb_file, dict_file=files.dict_file, image_file=files.image_file,
                   img_dir=files.img_dir, split=files.split, **kwargs)

    # ------------------------------------------------------------------ checks
    def _check_label_ranges(self, labels: np.ndarray, predicates: np.ndarray) -> None:
        C, P = len(self.ind_to_classes), len(self.ind_to_predicates)
        if labels.size and (labels.min() < 1 or labels.max() >= C):
            raise ValueError(
                f"'{self.roidb_file}' has object labels in [{labels.min()}, {labels.max()}] but "
                f"'{self.dict_file}' defines classes 1..{C - 1}: the files do not belong together."
            )
        if predicates.size and (predicates.min() < 1 or predicates.max() >= P):
            raise ValueError(
                f"'{self.roidb_file}' has predicates in [{predicates.min()}, {predicates.max()}] but "
                f"'{self.dict_file}' defines predicates 1..{P - 1}: the files do not belong together."
            )

    def _check_boxes_in_images(self, first_box: np.ndarray, rows: np.ndarray) -> None:
        """The validator's rule (:func:`vg150_files.box_image_fit`) on every box of the split, at
        once: a box entirely outside its image (SGB's clipping makes it empty) is a ValueError
        naming the file, the image and the box; boxes sticking out by more than the tolerance are
        clipped as SGB, with one warning (their count)."""
        n = np.array([b.shape[0] for b in self.gt_boxes_1024], np.int64)
        if not n.sum():
            return
        owner = np.repeat(np.arange(n.size), n)
        width = np.array([int(i["width"]) for i in self.img_info], np.int64)
        height = np.array([int(i["height"]) for i in self.img_info], np.int64)
        boxes = np.concatenate(self.gt_boxes_1024)
        px, outside, beyond = vg150_files.box_image_fit(boxes, width[owner], height[owner])
        local = np.arange(owner.size) - np.repeat(np.cumsum(n) - n, n)

        def where(k: int) -> str:
            i = int(owner[k])
            return (f"{vg150_files.BOXES}[{int(first_box[i]) + int(local[k])}] = "
                    f"{boxes[k].tolist()} (xyxy in the {BOX_SCALE} frame) = {np.round(px[k], 1).tolist()} px "
                    f"of image {i} of the {self.split} split (image id {self.img_info[i]['image_id']}, h5 row "
                    f"{int(rows[i])}, {int(width[i])}x{int(height[i])} in '{self.image_file}')")

        if outside.any():
            raise ValueError(
                f"'{self.roidb_file}': {where(int(np.flatnonzero(outside)[0]))} lies entirely outside its image "
                f"(SGB's clipping makes it an empty box); {int(outside.sum())} such box(es) in this split. "
                f"Fix: correct the box in the h5 or the image's width / height in image_data.json (the two "
                f"files must come from the same release); tools/validate_dataset.py lists every such box."
            )
        if beyond.any():
            logger.warning(
                "VG150 %s: %d box(es) stick out of their image by more than max(%g px, %g of the longer side), "
                "clipped as SGB (first: %s); tools/validate_dataset.py lists them", self.split, int(beyond.sum()),
                vg150_files.BOX_BEYOND_TOLERANCE["pixels"], vg150_files.BOX_BEYOND_TOLERANCE["fraction"],
                where(int(np.flatnonzero(beyond)[0])))

    def empty_reason(self, num_val_key: str = "DATASETS.NUM_VAL_IMAGES") -> Optional[Tuple[str, str]]:
        """``(reason, fix)`` when the split selected no image, else None (:func:`empty_split_reason`)."""
        return empty_split_reason(self.split, self.selection_counts, self.num_val_im, self.num_im,
                                  self.filter_empty_rels, num_val_key)

    def _find_depth_files(self, depth_dir: str) -> List[str]:
        return find_depth_files(depth_dir, [info["image_id"] for info in self.img_info])

    @staticmethod
    def _check_on_disk(paths: Sequence[str], folder: str, what: str) -> None:
        check_on_disk(paths, folder, what)

    # ------------------------------------------------------------------ API
    @property
    def num_classes(self) -> int:
        """Object classes including background (151 for VG150)."""
        return len(self.ind_to_classes)

    @property
    def num_predicates(self) -> int:
        """Predicate classes including background (51 for VG150)."""
        return len(self.ind_to_predicates)

    @property
    def num_attributes(self) -> int:
        return len(self.ind_to_attributes)

    @property
    def categories(self) -> Dict[int, str]:
        return dict(enumerate(self.ind_to_classes))

    def __len__(self) -> int:
        return len(self.filenames)

    def get_img_info(self, i: int) -> dict:
        """The ``image_data.json`` entry of image ``i`` (``image_id``, ``width``, ``height``, ...)."""
        return self.img_info[i]

    def _boxes_pixels(self, i: int) -> np.ndarray:
        """SGB: ``gt_boxes / 1024 * max(w, h)`` (float64) -> float32, clipped to the image."""
        info = self.img_info[i]
        w, h = int(info["width"]), int(info["height"])
        box = vg150_files.boxes_to_pixels(self.gt_boxes_1024[i], w, h).reshape(-1, 4).astype(np.float32)
        return vg150_files.clip_to_image(box, w, h)

    def _dedup_relations(self, rels: np.ndarray) -> np.ndarray:
        return dedup_relations(rels, self.rng)

    def __getitem__(self, i: int) -> dict:
        """Dataset dict (``DESIGN.md``) of image ``i``.

        ``boxes`` float32[N, 4] xyxy in original pixels (rescaled and clipped as SGB; no box is
        removed, so relation indices stay valid), ``labels`` int64[N], ``relations`` int64[M, 3]
        (subject idx, object idx, predicate), ``attributes`` int64[N, 10] when the h5 has them,
        ``depth_file`` when ``depth_dir`` was given.
        """
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        info = self.img_info[i]
        rels = self.relationships[i]
        if self.filter_duplicate_rels:
            rels = self._dedup_relations(rels)
        d = {
            "file_name": self.filenames[i],
            "image_id": int(info["image_id"]),
            "height": int(info["height"]),
            "width": int(info["width"]),
            "boxes": self._boxes_pixels(i),
            "labels": self.gt_classes[i].copy(),
            "relations": rels.astype(np.int64, copy=True),
        }
        if self.gt_attributes is not None:
            d["attributes"] = self.gt_attributes[i].copy()
        if self._depth_files is not None:
            d["depth_file"] = self._depth_files[i]
        return d

    def get_groundtruth(self, i: int) -> dict:
        """Evaluation GT as SGB's ``get_groundtruth(evaluation=True)``.

        ``boxes`` float32[N, 4] (``gt_boxes_1024 / 1024 * max(w, h)``, x clamped to [0, w-1], y to
        [0, h-1]), ``labels`` int64[N], ``relations`` int64[M, 3] with ALL annotation rows
        (duplicate pairs kept), plus ``attributes`` when present, ``image_id``, ``width``, ``height``.
        """
        info = self.img_info[i]
        gt = {
            "image_id": int(info["image_id"]),
            "width": int(info["width"]),
            "height": int(info["height"]),
            "boxes": self._boxes_pixels(i),
            "labels": self.gt_classes[i].copy(),
            "relations": self.relationships[i].astype(np.int64, copy=True),
        }
        if self.gt_attributes is not None:
            gt["attributes"] = self.gt_attributes[i].copy()
        return gt

    def get_triplets(self) -> np.ndarray:
        """All ``(subject class, object class, predicate)`` rows of the split, int64[R, 3]."""
        return triplets_of(self.gt_classes, self.relationships)

    def __repr__(self) -> str:
        return (f"VG150Dataset(split={self.split!r}, images={len(self)}, classes={self.num_classes}, "
                f"predicates={self.num_predicates}, roidb_file={self.roidb_file!r})")


# ----------------------------------------------------------------------------------------------
# Images and depth
# ----------------------------------------------------------------------------------------------
def imread(path: str, flags: int) -> np.ndarray:
    """``cv2.imdecode`` of the file with ``flags`` (the reader of :func:`load_image` /
    :func:`load_depth`): FileNotFoundError when missing, ValueError when it cannot be decoded."""
    import cv2

    if not os.path.isfile(path):
        raise FileNotFoundError(f"image file not found: '{path}'")
    buf = np.fromfile(path, dtype=np.uint8)
    img = cv2.imdecode(buf, flags) if buf.size else None
    if img is None:
        raise ValueError(
            f"cannot decode image '{path}' ({buf.size} bytes): the file is corrupt or not an image. "
            f"Re-download or replace it (SGB drops VG ids {sorted(CORRUPTED_IMAGE_IDS)} for this reason)."
        )
    return img


def load_image(path: str, expected_hw: Optional[Tuple[int, int]] = None) -> np.ndarray:
    """Read an image as uint8 ``[H, W, 3]`` RGB.

    EXIF orientation is ignored (as PIL's ``Image.open(...).convert('RGB')`` in SGB): the VG
    annotations live in the stored pixel frame. Raises naming the file when it is missing or cannot
    be decoded, and when ``expected_hw`` is given and the size differs.
    """
    import cv2

    img = imread(path, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    if expected_hw is not None and tuple(img.shape[:2]) != tuple(int(v) for v in expected_hw):
        raise ValueError(
            f"image '{path}' is {img.shape[0]}x{img.shape[1]} (HxW) but image_data.json says "
            f"{expected_hw[0]}x{expected_hw[1]}: the annotations would not line up."
        )
    return img


def load_depth(path: str, scale: float = 1.0) -> np.ndarray:
    """Read a depth map as float32 ``[H, W]``: a 16-bit (or 8-bit) PNG or a ``.npy`` array.

    PNG values are returned as stored times ``scale`` (the writer decides the unit).
    """
    import cv2

    if path.endswith(".npy"):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"depth file not found: '{path}'")
        d = np.load(path)
        if d.ndim == 3 and d.shape[0] == 1:
            d = d[0]
        elif d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
    else:
        d = imread(path, cv2.IMREAD_UNCHANGED | cv2.IMREAD_IGNORE_ORIENTATION)
        if d.ndim == 3:
            d = d[..., 0]
    if d.ndim != 2:
        raise ValueError(f"depth map '{path}' must be HxW, got shape {d.shape}")
    d = d.astype(np.float32)
    if scale != 1.0:
        d *= np.float32(scale)
    return d


# ----------------------------------------------------------------------------------------------
# Zero-shot triplets
# ----------------------------------------------------------------------------------------------
def load_zeroshot_triplets(path: str) -> np.ndarray:
    """Zero-shot triplets as int64 ``[Z, 3]`` (subject class, object class, predicate).

    Reads SGB's ``zeroshot_triplet.pytorch`` (``torch.save`` of a LongTensor ``[Z, 3]``; also
    ``.pt`` / ``.pth``), a ``.npy`` array or a whitespace/comma separated ``.txt``.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"zero-shot triplet file not found: '{path}'. Fix: set the path in the config, or "
            f"compute one with compute_zeroshot_triplets(train, test)."
        )
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        arr = np.load(path)
    elif ext in (".txt", ".csv"):
        with open(path) as f:
            text = f.read().replace(",", " ")
        rows = [ln.split() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
        arr = np.array(rows, dtype=np.int64).reshape(-1, 3) if rows else np.zeros((0, 3), np.int64)
    else:
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        arr = obj.numpy() if isinstance(obj, torch.Tensor) else np.asarray(obj)
    arr = np.asarray(arr)
    if arr.size == 0:
        return np.zeros((0, 3), np.int64)
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"zero-shot triplets in '{path}' must have shape [Z, 3], got {arr.shape}")
    return arr.astype(np.int64)


def _row_keys(rows: np.ndarray, base: int) -> np.ndarray:
    rows = rows.astype(np.int64)
    return (rows[:, 0] * base + rows[:, 1]) * base + rows[:, 2]


def compute_zeroshot_triplets(train_ds: "VG150Dataset", test_ds: "VG150Dataset") -> np.ndarray:
    """Test triplets ``(subject class, object class, predicate)`` never seen in ``train_ds``.

    Uses the datasets' stored relations (all annotation rows; the train set's own filters apply).
    Returns unique rows sorted lexicographically, int64 ``[Z, 3]``.
    """
    tr = train_ds.get_triplets()
    te = np.unique(test_ds.get_triplets(), axis=0)
    if te.shape[0] == 0:
        return np.zeros((0, 3), np.int64)
    base = int(max(tr.max(initial=0), te.max(initial=0))) + 1
    unseen = ~np.isin(_row_keys(te, base), _row_keys(tr, base))
    return te[unseen].astype(np.int64)
