"""Hand-made VG150 files (SGB layout) for tests: explicit arrays in, h5 + json + jpg out.

``write_vg(root, images)`` takes one dict per h5 row::

    {"image_id": 7, "width": 40, "height": 30, "split": 0,       # 0 train, 2 test
     "boxes": [[cx, cy, w, h], ...],                             # 1024 frame, may be []
     "labels": [1, 2, ...],
     "rels": [[s, o, p], ...]}                                   # LOCAL object indices, may be []

and writes ``VG-SGG-with-attri.h5`` / ``VG-SGG-dicts-with-attri.json`` (or, with
``attributes=False``, the older ``VG-SGG.h5`` / ``VG-SGG-dicts.json`` without attributes),
``image_data.json`` and ``VG_100K/{image_id}.jpg``. ``h5_overrides`` replaces whole h5 datasets
(to build corrupt files); ``image_data_insert`` adds entries at given positions of the json list.
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Optional, Sequence

import cv2
import h5py
import numpy as np

CLASSES = ["cat", "dog", "tree"]          # 1, 2, 3
PREDICATES = ["on", "near", "has"]        # 1, 2, 3
ATTRIBUTES = ["red", "big"]               # 1, 2


def xyxy_to_cxcywh(box: Sequence[int]) -> List[int]:
    """Exact inverse for even widths/heights: x1 = cx - w/2, x2 = x1 + w."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    return [x1 + w // 2, y1 + h // 2, w, h]


def vg_arrays(images: Sequence[Dict]) -> Dict[str, np.ndarray]:
    """The h5 datasets for ``images`` (see the module docstring)."""
    first_box, last_box, first_rel, last_rel = [], [], [], []
    boxes, labels, attrs, rels, preds = [], [], [], [], []
    for im in images:
        n, nb = len(im.get("boxes", [])), len(boxes)
        if n:
            first_box.append(nb)
            last_box.append(nb + n - 1)
        else:
            first_box.append(-1)
            last_box.append(-1)
        boxes.extend(im.get("boxes", []))
        labels.extend(im.get("labels", [1] * n))
        attrs.extend(im.get("attributes", [[1] + [0] * 9] * n))
        r = im.get("rels", [])
        if r:
            first_rel.append(len(rels))
            last_rel.append(len(rels) + len(r) - 1)
        else:
            first_rel.append(-1)
            last_rel.append(-1)
        for s, o, p in r:
            rels.append([nb + s, nb + o])
            preds.append([p])
    i32 = lambda a, shape: np.asarray(a, dtype=np.int32).reshape(shape)  # noqa: E731
    return {
        "split": i32([im.get("split", 0) for im in images], (-1,)),
        "img_to_first_box": i32(first_box, (-1,)),
        "img_to_last_box": i32(last_box, (-1,)),
        "img_to_first_rel": i32(first_rel, (-1,)),
        "img_to_last_rel": i32(last_rel, (-1,)),
        "labels": i32(labels, (-1, 1)),
        "boxes_1024": i32(boxes, (-1, 4)),
        "boxes_512": (i32(boxes, (-1, 4)) // 2).astype(np.int32),
        "attributes": i32(attrs, (-1, 10)),
        "relationships": i32(rels, (-1, 2)),
        "predicates": i32(preds, (-1, 1)),
    }


def write_vg(
    root,
    images: Sequence[Dict],
    attributes: bool = True,
    classes: Sequence[str] = CLASSES,
    predicates: Sequence[str] = PREDICATES,
    with_images: bool = True,
    h5_overrides: Optional[Dict[str, np.ndarray]] = None,
    image_data_insert: Sequence[tuple] = (),
) -> Dict[str, str]:
    """Write the dataset under ``root``; returns the VG150Dataset file kwargs."""
    root = str(root)
    os.makedirs(root, exist_ok=True)
    h5_name = "VG-SGG-with-attri.h5" if attributes else "VG-SGG.h5"
    dict_name = "VG-SGG-dicts-with-attri.json" if attributes else "VG-SGG-dicts.json"
    arrays = vg_arrays(images)
    if not attributes:
        arrays.pop("attributes")
    arrays.update(h5_overrides or {})
    roidb = os.path.join(root, h5_name)
    with h5py.File(roidb, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)

    info = {
        "label_to_idx": {c: i + 1 for i, c in enumerate(classes)},
        "idx_to_label": {str(i + 1): c for i, c in enumerate(classes)},
        "predicate_to_idx": {p: i + 1 for i, p in enumerate(predicates)},
        "idx_to_predicate": {str(i + 1): p for i, p in enumerate(predicates)},
        "object_count": {c: 1 for c in classes},
        "predicate_count": {p: 1 for p in predicates},
    }
    if attributes:
        info["attribute_to_idx"] = {a: i + 1 for i, a in enumerate(ATTRIBUTES)}
        info["idx_to_attribute"] = {str(i + 1): a for i, a in enumerate(ATTRIBUTES)}
    dict_file = os.path.join(root, dict_name)
    with open(dict_file, "w") as f:
        json.dump(info, f)

    im_data = [{"image_id": im["image_id"], "width": im.get("width", 40), "height": im.get("height", 30),
                "url": f"https://example.invalid/{im['image_id']}.jpg"} for im in images]
    for pos, entry in sorted(image_data_insert, key=lambda t: -t[0]):
        im_data.insert(pos, entry)
    image_file = os.path.join(root, "image_data.json")
    with open(image_file, "w") as f:
        json.dump(im_data, f)

    img_dir = os.path.join(root, "VG_100K")
    os.makedirs(img_dir, exist_ok=True)
    if with_images:
        for im in images:
            h, w = im.get("height", 30), im.get("width", 40)
            # tiny stand-in image (its pixel size need not match image_data.json for these tests)
            img = np.full((min(h, 16), min(w, 16), 3), im["image_id"] % 255, np.uint8)
            cv2.imwrite(os.path.join(img_dir, f"{im['image_id']}.jpg"), img)
    return {"roidb_file": roidb, "dict_file": dict_file, "image_file": image_file, "img_dir": img_dir}


def full_image(image_id: int, split: int = 0, width: int = 40, height: int = 30, **kw) -> Dict:
    """An image with two overlapping boxes and one relation (0 -> 1, 'near')."""
    d = {"image_id": image_id, "width": width, "height": height, "split": split,
         "boxes": [xyxy_to_cxcywh([0, 0, 10, 10]), xyxy_to_cxcywh([5, 5, 15, 15])],
         "labels": [1, 2], "rels": [[0, 1, 2]]}
    d.update(kw)
    return d
