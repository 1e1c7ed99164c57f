"""The VG150 files of Scene-Graph-Benchmark (SGB): names, h5 layout, box encoding, raw read / write.

The one module that knows how a VG150-format dataset sits on disk (``specs/data.md``)::

    ROOT/VG-SGG-with-attri.h5           (the older release: VG-SGG.h5, no ``attributes``)
    ROOT/VG-SGG-dicts-with-attri.json   (the older release: VG-SGG-dicts.json)
    ROOT/image_data.json                one {image_id, width, height, ...} per h5 row, after
                                        dropping the 4 known-corrupt VG ids
    ROOT/VG_100K/{image_id}.jpg
    ROOT/depth/{image_id}.png | .npy    optional depth maps
    ROOT/zeroshot_triplet.pytorch       optional zero-shot triplets

h5 datasets (N images, O objects, R relations): ``split`` (N,) 0 train / 2 test;
``img_to_first_box`` / ``img_to_last_box`` / ``img_to_first_rel`` / ``img_to_last_rel`` (N,)
inclusive ranges, -1 when empty; ``labels`` (O, 1) 1..C; ``boxes_1024`` / ``boxes_512`` (O, 4)
int32 ``[cx, cy, w, h]`` in a frame whose longer side is 1024 (512); ``relationships`` (R, 2)
GLOBAL object indices (subject, object); ``predicates`` (R, 1) 1..P; ``attributes`` (O, 10)
0-padded attribute ids (optional).

Here: the names as constants, the box encode / decode, :func:`read_h5` / :func:`read_dicts` /
:func:`read_image_data` (the stored arrays and json, as they are) and :func:`write_vg150` (plain
per-image arrays in, the three annotation files out). The loader's rules (split selection,
filters, pixel boxes) live in :mod:`sgg.data.datasets.vg150`, the checks in
:mod:`sgg.data.validate`.
"""
from __future__ import annotations

import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import h5py
import numpy as np

__all__ = [
    "FORMAT", "H5_FILE", "DICTS_FILE", "H5_FILE_NO_ATTRIBUTES", "DICTS_FILE_NO_ATTRIBUTES", "LAYOUTS",
    "IMAGE_DATA_FILE", "IMAGE_DIR", "DEPTH_DIR", "ZEROSHOT_FILE", "BOX_SCALE", "CORRUPTED_IMAGE_IDS",
    "SPLIT_TRAIN", "SPLIT_TEST", "NUM_ATTRIBUTE_COLUMNS", "SPLIT", "IMG_TO_FIRST_BOX", "IMG_TO_LAST_BOX",
    "IMG_TO_FIRST_REL", "IMG_TO_LAST_REL", "LABELS", "BOXES", "RELATIONSHIPS", "PREDICATES", "ATTRIBUTES",
    "PER_IMAGE_KEYS", "REQUIRED_KEYS", "BACKGROUND", "LABEL_TO_IDX", "IDX_TO_LABEL", "PREDICATE_TO_IDX",
    "IDX_TO_PREDICATE", "ATTRIBUTE_TO_IDX", "IDX_TO_ATTRIBUTE", "IMAGE_DATA_KEYS", "boxes_key",
    "image_filename", "encode_boxes", "decode_boxes", "decode_boxes_inplace", "boxes_to_pixels",
    "clip_to_image", "loader_boxes", "box_image_fit", "pixel_box_fit", "BOX_BEYOND_TOLERANCE", "read_h5", "h5_shapes",
    "read_dicts", "index_names", "read_image_data", "usable_image_data", "write_json", "write_vg150",
]

#: The name of this format in ``DATASET_FORMAT_REGISTRY`` and ``DatasetFiles.format``.
FORMAT = "vg150"

# ------------------------------------------------------------------------------------- file names
H5_FILE = "VG-SGG-with-attri.h5"
DICTS_FILE = "VG-SGG-dicts-with-attri.json"
H5_FILE_NO_ATTRIBUTES = "VG-SGG.h5"
DICTS_FILE_NO_ATTRIBUTES = "VG-SGG-dicts.json"
#: (h5, dicts json) of the two releases, newest first.
LAYOUTS = ((H5_FILE, DICTS_FILE), (H5_FILE_NO_ATTRIBUTES, DICTS_FILE_NO_ATTRIBUTES))
IMAGE_DATA_FILE = "image_data.json"
IMAGE_DIR = "VG_100K"
DEPTH_DIR = "depth"
ZEROSHOT_FILE = "zeroshot_triplet.pytorch"

# ------------------------------------------------------------------------------------- h5 layout
#: Boxes are stored in a frame whose longer side is this many pixels (``boxes_1024``).
BOX_SCALE = 1024
#: VG image ids that SGB drops from ``image_data.json`` (files known to be corrupt).
CORRUPTED_IMAGE_IDS = frozenset({1592, 1722, 4616, 4617})
SPLIT_TRAIN, SPLIT_TEST = 0, 2
NUM_ATTRIBUTE_COLUMNS = 10

SPLIT = "split"
IMG_TO_FIRST_BOX, IMG_TO_LAST_BOX = "img_to_first_box", "img_to_last_box"
IMG_TO_FIRST_REL, IMG_TO_LAST_REL = "img_to_first_rel", "img_to_last_rel"
LABELS = "labels"
BOXES = f"boxes_{BOX_SCALE}"
RELATIONSHIPS = "relationships"
PREDICATES = "predicates"
ATTRIBUTES = "attributes"
#: (N,) datasets, one row per image
PER_IMAGE_KEYS = (SPLIT, IMG_TO_FIRST_BOX, IMG_TO_LAST_BOX, IMG_TO_FIRST_REL, IMG_TO_LAST_REL)
#: what the loader reads (``attributes`` and ``boxes_512`` are optional)
REQUIRED_KEYS = PER_IMAGE_KEYS + (LABELS, BOXES, RELATIONSHIPS, PREDICATES)

# ------------------------------------------------------------------------------------- json keys
BACKGROUND = "__background__"
LABEL_TO_IDX, IDX_TO_LABEL = "label_to_idx", "idx_to_label"
PREDICATE_TO_IDX, IDX_TO_PREDICATE = "predicate_to_idx", "idx_to_predicate"
ATTRIBUTE_TO_IDX, IDX_TO_ATTRIBUTE = "attribute_to_idx", "idx_to_attribute"
#: keys every ``image_data.json`` entry has
IMAGE_DATA_KEYS = ("image_id", "width", "height")


def boxes_key(scale: int) -> str:
    """The h5 dataset of boxes in the ``scale`` frame (``boxes_1024``, ``boxes_512``)."""
    return f"boxes_{int(scale)}"


def image_filename(image_id: int) -> str:
    """File name of an image in ``VG_100K/``."""
    return f"{int(image_id)}.jpg"


# ------------------------------------------------------------------------------------- boxes
def encode_boxes(boxes_xyxy, width: int, height: int, scale: int = BOX_SCALE) -> np.ndarray:
    """xyxy pixel boxes -> int32 [cx, cy, w, h] in the frame whose longer side is ``scale``.

    Chosen so the reference decode (x1 = int(cx - w/2), x2 = x1 + w) returns exactly the rounded
    scaled corners: x1e = round(x1 * s), w = round(x2 * s) - x1e, cx = x1e + ceil(w / 2).
    """
    s = scale / max(width, height)
    b = np.round(np.asarray(boxes_xyxy, np.float64).reshape(-1, 4) * s).astype(np.int64)
    w = np.maximum(b[:, 2] - b[:, 0], 1)
    h = np.maximum(b[:, 3] - b[:, 1], 1)
    return np.stack([b[:, 0] + (w + 1) // 2, b[:, 1] + (h + 1) // 2, w, h], 1).astype(np.int32)


def _cxcywh_to_xyxy_inplace(b: np.ndarray) -> np.ndarray:
    # float results assigned back into the integer array: x1 = int(cx - w / 2), truncated
    b[:, :2] = b[:, :2] - b[:, 2:] / 2
    b[:, 2:] = b[:, :2] + b[:, 2:]
    return b


def decode_boxes_inplace(all_boxes: np.ndarray, roidb_file: str) -> np.ndarray:
    """``[cx, cy, w, h]`` -> xyxy in place on the stored (int32) array, exactly as SGB, after
    checking the rows (a ValueError naming ``roidb_file`` and the first bad row).

    ``x1 = cx - w / 2`` is computed in float and assigned back into the integer array, i.e.
    truncated toward zero (``cx=10, w=5 -> x1 = int(7.5) = 7``), then ``x2 = x1 + w``.
    """
    if all_boxes.ndim != 2 or all_boxes.shape[1] != 4:
        raise ValueError(f"'{roidb_file}': boxes_{BOX_SCALE} must have shape (O, 4), got {all_boxes.shape}")
    bad = np.flatnonzero((all_boxes[:, :2] < 0).any(1))
    if bad.size:
        r = int(bad[0])
        raise ValueError(
            f"'{roidb_file}': boxes_{BOX_SCALE} row {r} has a negative centre {all_boxes[r].tolist()} "
            f"([cx, cy, w, h]); {bad.size} bad row(s) in all. The h5 is corrupt or not in SGB format."
        )
    bad = np.flatnonzero((all_boxes[:, 2:] <= 0).any(1))
    if bad.size:
        r = int(bad[0])
        raise ValueError(
            f"'{roidb_file}': boxes_{BOX_SCALE} row {r} has a non-positive size {all_boxes[r].tolist()} "
            f"([cx, cy, w, h]); {bad.size} empty box(es) in all. The h5 is corrupt or not in SGB format."
        )
    return _cxcywh_to_xyxy_inplace(all_boxes)


def boxes_to_pixels(boxes_xyxy, width: int, height: int, scale: int = BOX_SCALE) -> np.ndarray:
    """xyxy boxes of the ``scale`` frame -> original pixels: ``boxes / scale * max(W, H)`` (float64)."""
    return np.asarray(boxes_xyxy) / scale * max(width, height)


def clip_to_image(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """SGB's ``BoxList.clip_to_image`` (TO_REMOVE = 1), in place: x in [0, W - 1], y in [0, H - 1]."""
    boxes[:, 0::2] = np.clip(boxes[:, 0::2], 0, width - 1)
    boxes[:, 1::2] = np.clip(boxes[:, 1::2], 0, height - 1)
    return boxes


#: A box may stick out of its image by this much before it counts as "beyond" the image:
#: ``max(pixels, fraction * max(W, H))`` (rounding in the 1024 frame moves a border a few pixels;
#: SGB's own VG150 has boxes that touch or cross the border by that much).
BOX_BEYOND_TOLERANCE = {"pixels": 2.0, "fraction": 0.01}


def box_image_fit(boxes_xyxy, widths, heights, scale: int = BOX_SCALE):
    """How decoded boxes sit in their images: the one rule of the loader and the validator.

    ``boxes_xyxy`` [n, 4]: decoded boxes in the ``scale`` frame (:func:`decode_boxes_inplace`);
    ``widths`` / ``heights`` [n] (or scalars): the size of each box's image (``image_data.json``).
    Returns ``(pixels, outside, beyond)``: ``pixels`` float64 [n, 4] the boxes in original pixels
    before clipping (:func:`boxes_to_pixels`'s formula); ``outside`` bool [n] boxes that
    SGB's ``clip_to_image`` (x to [0, W - 1], y to [0, H - 1]) turns into an empty box (entirely
    outside: an error); ``beyond`` bool [n] the other boxes that stick out of the image by more
    than :data:`BOX_BEYOND_TOLERANCE` (clipped as SGB: a warning).
    """
    b = np.asarray(boxes_xyxy).reshape(-1, 4)
    n = b.shape[0]
    w = np.broadcast_to(np.asarray(widths, np.float64), (n,))
    h = np.broadcast_to(np.asarray(heights, np.float64), (n,))
    px = b / scale * np.maximum(w, h)[:, None]
    outside, beyond = pixel_box_fit(px, w, h, to_remove=1)
    return px, outside, beyond


def pixel_box_fit(px, widths, heights, to_remove: int = 1):
    """The rule of :func:`box_image_fit` on boxes already in pixels (xyxy ``px`` [n, 4]).

    ``to_remove``: the clip of the format -- 1 for SGB's ``clip_to_image`` (x to [0, W - 1]), 0
    for a clamp to [0, W] (the COCO-json reader). Returns ``(outside, beyond)`` bool [n]: boxes the
    clip turns into empty ones (an error), and the others sticking out by more than
    :data:`BOX_BEYOND_TOLERANCE` (clipped: a warning).
    """
    px = np.asarray(px, np.float64).reshape(-1, 4)
    n = px.shape[0]
    w = np.broadcast_to(np.asarray(widths, np.float64), (n,))
    h = np.broadcast_to(np.asarray(heights, np.float64), (n,))
    outside = (px[:, 0] >= w - to_remove) | (px[:, 1] >= h - to_remove) | (px[:, 2] <= 0) | (px[:, 3] <= 0)
    tol = np.maximum(BOX_BEYOND_TOLERANCE["pixels"], BOX_BEYOND_TOLERANCE["fraction"] * np.maximum(w, h))
    beyond = ~outside & ((px[:, 0] < -tol) | (px[:, 1] < -tol) | (px[:, 2] > w + tol) | (px[:, 3] > h + tol))
    return outside, beyond


def decode_boxes(boxes_cxcywh, width: int, height: int, scale: int = BOX_SCALE) -> np.ndarray:
    """The reference (SGB) decode: int32 in-place cxcywh -> xyxy, then / scale * max(W, H)."""
    b = _cxcywh_to_xyxy_inplace(np.array(boxes_cxcywh, dtype=np.int32).reshape(-1, 4))
    return boxes_to_pixels(b, width, height, scale)


def loader_boxes(boxes_cxcywh, width: int, height: int, scale: int = BOX_SCALE) -> np.ndarray:
    """The boxes a VG150 loader hands out: ``decode_boxes`` then SGB's ``clip_to_image``
    (x in [0, W - 1], y in [0, H - 1]), float64."""
    return clip_to_image(decode_boxes(boxes_cxcywh, width, height, scale), width, height)


# ------------------------------------------------------------------------------------- reading
_FIX_CORRUPT = ("re-download it, or regenerate it (SGB's preprocessing; tools/make_synthetic_vg.py for "
                "SynthVG), and check the disk (full, or a copy cut short)")


def _h5_error(roidb_file: str, e: BaseException) -> OSError:
    """The error of an h5 that h5py cannot read, naming the file (h5py's own message does not)."""
    if isinstance(e, FileNotFoundError) and not os.path.exists(roidb_file):
        return FileNotFoundError(f"VG150 h5 not found: '{roidb_file}'")
    size = f"{os.path.getsize(roidb_file)} bytes, " if os.path.isfile(roidb_file) else ""
    return OSError(f"cannot read the h5 '{roidb_file}' ({size}h5py: {e}): the file is truncated, corrupt or "
                   f"unreadable. Fix: {_FIX_CORRUPT}")


def h5_shapes(roidb_file: str) -> Dict[str, tuple]:
    """``{dataset name: shape}`` of every dataset in the h5 (reads no data). An unreadable file
    (truncated, corrupt) is an OSError naming it."""
    try:
        with h5py.File(roidb_file, "r") as h5:
            return {k: tuple(h5[k].shape) for k in h5.keys()}
    except (OSError, RuntimeError) as e:
        raise _h5_error(roidb_file, e) from e


def read_h5(roidb_file: str, keys: Sequence[str] = REQUIRED_KEYS,
            optional: Sequence[str] = (ATTRIBUTES,)) -> Dict[str, np.ndarray]:
    """The stored arrays ``keys`` (all must exist: a ValueError lists the missing ones) and those of
    ``optional`` the file has, as stored (``labels`` / ``predicates`` are (n, 1)). The whole file is
    read here (nothing is read later, e.g. in data-loader workers); an unreadable file (truncated,
    corrupt) is an OSError naming it and the fix."""
    try:
        with h5py.File(roidb_file, "r") as h5:
            missing = [k for k in keys if k not in h5]
            if missing:
                raise ValueError(f"'{roidb_file}' lacks dataset(s) {missing}: not an SGB VG-SGG h5")
            return {k: h5[k][()] for k in list(keys) + [k for k in optional if k in h5]}
    except (OSError, RuntimeError) as e:
        raise _h5_error(roidb_file, e) from e


def _read_json(path: str, what: str) -> Any:
    """``json.load`` of ``path``; a ValueError naming the file when it is not valid JSON."""
    with open(path, "r") as f:
        try:
            return json.load(f)
        except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
            size = os.path.getsize(path) if os.path.isfile(path) else 0
            raise ValueError(f"cannot read the {what} '{path}' ({size} bytes): it is not valid JSON ({e}), the "
                             f"file is truncated or corrupt. Fix: {_FIX_CORRUPT}") from e


def read_dicts(dict_file: str) -> Dict[str, Any]:
    """The dicts json as stored; a ValueError naming the file when it is not valid JSON or lacks
    ``label_to_idx`` / ``predicate_to_idx``."""
    info = _read_json(dict_file, "dicts json")
    if not isinstance(info, dict):
        raise ValueError(f"'{dict_file}' must hold a JSON object (label_to_idx, predicate_to_idx, ...): "
                         f"not an SGB VG-SGG dicts json")
    for key in (LABEL_TO_IDX, PREDICATE_TO_IDX):
        if key not in info:
            raise ValueError(f"'{dict_file}' has no '{key}': not an SGB VG-SGG dicts json")
    return info


def index_names(name_to_idx: Mapping[str, int], what: str, dict_file: str) -> List[str]:
    """SGB ``load_info``: add ``__background__`` at 0 and sort names by their index (which must be
    contiguous 1..K: a ValueError otherwise)."""
    name_to_idx = dict(name_to_idx)
    name_to_idx[BACKGROUND] = 0
    names = sorted(name_to_idx, key=lambda k: name_to_idx[k])
    idx = [int(name_to_idx[n]) for n in names]
    if idx != list(range(len(names))):
        raise ValueError(
            f"'{dict_file}': {what} indices must be contiguous 1..K (0 is '{BACKGROUND}'), "
            f"got sorted indices {idx[:10]}{'...' if len(idx) > 10 else ''}"
        )
    return names


def read_image_data(image_file: str) -> List[dict]:
    """``image_data.json`` as stored (all entries, the corrupt VG ids included); a ValueError naming
    the file when it is not valid JSON or not a list."""
    im_data = _read_json(image_file, IMAGE_DATA_FILE)
    if not isinstance(im_data, list):
        raise ValueError(f"'{image_file}' must hold a JSON list of {{image_id, width, height}}")
    return im_data


def usable_image_data(entries: Sequence[dict]) -> List[dict]:
    """The entries aligned one to one with the h5 rows: all but the corrupt VG ids."""
    return [img for img in entries if int(img["image_id"]) not in CORRUPTED_IMAGE_IDS]


# ------------------------------------------------------------------------------------- writing
def write_json(obj: Any, path: str) -> None:
    """JSON as the VG150 files are written: compact, keys in insertion order."""
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, sort_keys=False)


def _name_maps(names: Sequence[str], to_idx: str, to_name: str) -> Dict[str, Dict[str, Any]]:
    return {to_idx: {n: i + 1 for i, n in enumerate(names)},
            to_name: {str(i + 1): n for i, n in enumerate(names)}}


def _counts(names: Sequence[str], ids: np.ndarray) -> Dict[str, int]:
    c = np.bincount(ids, minlength=len(names) + 1)
    return {n: int(c[i + 1]) for i, n in enumerate(names)}


def write_vg150(
    out_dir: str,
    *,
    image_ids: Sequence[int],
    widths: Sequence[int],
    heights: Sequence[int],
    splits: Sequence[int],
    boxes: Sequence[Any],
    labels: Sequence[Any],
    relations: Sequence[Any],
    class_names: Sequence[str],
    predicate_names: Sequence[str],
    attributes: Optional[Sequence[Any]] = None,
    attribute_names: Optional[Sequence[str]] = None,
    extra_info: Optional[Mapping[str, Any]] = None,
) -> Dict[str, Any]:
    """Write the h5, the dicts json and ``image_data.json`` of a VG150-format dataset to ``out_dir``.

    One entry per image (= h5 row, in this order) in each sequence: ``image_ids`` (never one of
    the corrupt VG ids, which the loader drops), ``widths`` / ``heights`` (pixels), ``splits``
    (:data:`SPLIT_TRAIN` 0 / :data:`SPLIT_TEST` 2; val = the first train images), ``boxes``
    ``[n, 4]`` xyxy pixels (encoded with :func:`encode_boxes` on the 1024 and 512 grids),
    ``labels`` ``[n]`` in 1..C, ``relations`` ``[m, 3]`` (LOCAL subject index, object index,
    predicate 1..P) and, with ``attribute_names``, ``attributes`` ``[n, 10]`` 0-padded ids.
    ``class_names`` / ``predicate_names`` / ``attribute_names``: 1-based, background excluded.
    Without attributes the older release's names (``VG-SGG.h5``, ``VG-SGG-dicts.json``) are used.
    ``extra_info``: more keys for the dicts json, after the name maps and counts.

    Images and depth maps are not written here (``VG_100K/`` + :func:`image_filename`). Returns
    ``{roidb_file, dict_file, image_file, dicts}`` (``dicts``: the json content written).
    """
    n = len(image_ids)
    lengths = {"widths": len(widths), "heights": len(heights), "splits": len(splits), "boxes": len(boxes),
               "labels": len(labels), "relations": len(relations)}
    if (attributes is None) != (attribute_names is None):
        raise ValueError("give both attributes and attribute_names, or neither")
    if attributes is not None:
        lengths["attributes"] = len(attributes)
    if any(v != n for v in lengths.values()):
        raise ValueError(f"one entry per image: {n} image_ids but {lengths}")
    if n == 0:
        raise ValueError("write_vg150 needs at least one image")
    bad_ids = sorted(set(int(i) for i in image_ids) & CORRUPTED_IMAGE_IDS)
    if bad_ids:
        raise ValueError(f"image ids {bad_ids} are VG ids the loader drops as corrupt "
                         f"({sorted(CORRUPTED_IMAGE_IDS)}); use other ids")
    C, P = len(class_names), len(predicate_names)

    first_box, last_box = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    first_rel, last_rel = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    b1024, b512, labs, attrs, rels, preds = [], [], [], [], [], []
    nobj = nrel = 0
    for i in range(n):
        lab = np.asarray(labels[i], np.int64).reshape(-1)
        rel = np.asarray(relations[i], np.int64).reshape(-1, 3)
        box = np.asarray(boxes[i]).reshape(-1, 4)
        k, m = len(lab), len(rel)
        if box.shape[0] != k:
            raise ValueError(f"image {image_ids[i]}: {box.shape[0]} boxes but {k} labels")
        if k and (lab.min() < 1 or lab.max() > C):
            raise ValueError(f"image {image_ids[i]}: labels must be in 1..{C}, got {lab.tolist()}")
        if m and (rel[:, :2].min() < 0 or rel[:, :2].max() >= k or rel[:, 2].min() < 1 or rel[:, 2].max() > P):
            raise ValueError(f"image {image_ids[i]}: relations must be (subject < {k}, object < {k}, "
                             f"predicate in 1..{P}), got {rel.tolist()}")
        if k:
            first_box[i], last_box[i] = nobj, nobj + k - 1
        if m:
            first_rel[i], last_rel[i] = nrel, nrel + m - 1
        b1024.append(encode_boxes(box, widths[i], heights[i], BOX_SCALE))
        b512.append(encode_boxes(box, widths[i], heights[i], 512))
        labs.append(lab)
        if attributes is not None:
            a = np.asarray(attributes[i], np.int64).reshape(-1, NUM_ATTRIBUTE_COLUMNS)
            if a.shape[0] != k:
                raise ValueError(f"image {image_ids[i]}: {a.shape[0]} attribute rows but {k} labels")
            attrs.append(a)
        rels.append(rel[:, :2] + nobj)
        preds.append(rel[:, 2])
        nobj, nrel = nobj + k, nrel + m

    def cat(xs, shape, dt):
        return np.concatenate(xs).reshape(shape).astype(dt)

    data = {
        SPLIT: np.array([int(s) for s in splits], np.int32),
        IMG_TO_FIRST_BOX: first_box, IMG_TO_LAST_BOX: last_box,
        IMG_TO_FIRST_REL: first_rel, IMG_TO_LAST_REL: last_rel,
        LABELS: cat(labs, (-1, 1), np.int64),
        BOXES: cat(b1024, (-1, 4), np.int32),
        boxes_key(512): cat(b512, (-1, 4), np.int32),
        RELATIONSHIPS: cat(rels, (-1, 2), np.int32),
        PREDICATES: cat(preds, (-1, 1), np.int64),
    }
    if attributes is not None:
        data[ATTRIBUTES] = cat(attrs, (-1, NUM_ATTRIBUTE_COLUMNS), np.int64)
    h5_name, dicts_name = LAYOUTS[0] if attributes is not None else LAYOUTS[1]
    os.makedirs(out_dir, exist_ok=True)
    roidb_file = os.path.join(out_dir, h5_name)
    with h5py.File(roidb_file, "w", track_order=False) as f:
        for k, v in data.items():
            f.create_dataset(k, data=v, track_times=False)

    info: Dict[str, Any] = {}
    info.update(_name_maps(class_names, LABEL_TO_IDX, IDX_TO_LABEL))
    info.update(_name_maps(predicate_names, PREDICATE_TO_IDX, IDX_TO_PREDICATE))
    if attribute_names is not None:
        info.update(_name_maps(attribute_names, ATTRIBUTE_TO_IDX, IDX_TO_ATTRIBUTE))
    info["object_count"] = _counts(class_names, data[LABELS][:, 0])
    info["predicate_count"] = _counts(predicate_names, data[PREDICATES][:, 0])
    if attribute_names is not None:
        a = data[ATTRIBUTES].ravel()
        info["attribute_count"] = _counts(attribute_names, a[a > 0])
    for k, v in (extra_info or {}).items():
        if k in info:
            raise ValueError(f"extra_info key '{k}' is one of the dicts json's own keys")
        info[k] = v
    dict_file = os.path.join(out_dir, dicts_name)
    write_json(info, dict_file)
    image_file = os.path.join(out_dir, IMAGE_DATA_FILE)
    write_json([{"image_id": int(i), "width": int(w), "height": int(h), "url": None, "coco_id": None,
                 "flickr_id": None} for i, w, h in zip(image_ids, widths, heights)], image_file)
    return {"roidb_file": roidb_file, "dict_file": dict_file, "image_file": image_file, "dicts": info}
