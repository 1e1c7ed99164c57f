"""Dataset names -> files.

Names are SGB's for Visual Genome (``VG_stanford_filtered_with_attribute_{train,val,test}`` in
``DATA_DIR/vg``; ``VG_stanford_filtered_{split}`` for the older ``VG-SGG.h5`` release), and
``<folder>_<split>`` for any folder under ``DATA_DIR`` that holds VG150-format files, such as the
SynthVG datasets ``synthvg_tiny_train`` -> ``DATA_DIR/synthvg_tiny``.

Every name resolves to a :class:`DatasetFiles` that also says the dataset's format (the key of
``sgg.data.datasets.DATASET_FORMAT_REGISTRY``), decided by what the folder holds. The one-folder
formats of :data:`FOLDER_FORMATS` each say how to recognise their folder (``is_folder``), where a
split's annotation file and images are (``folder_files``), which files stamp a statistics cache
(``source_files``) and which dataset names map to a fixed folder under DATA_DIR
(``NAMED_FOLDERS``):

* ``coco_json`` (:mod:`sgg.data.datasets.coco_json`): ``<root>/train/_annotations.coco.json``;
* ``oiv6`` (:mod:`sgg.data.datasets.open_images`): ``<root>/annotations/categories_dict.json``
  (PySGG's names ``oiv6_{train,val,test}`` -> ``DATA_DIR/openimages/open_image_v6``);
* ``gqa200`` (:mod:`sgg.data.datasets.gqa`): ``<root>/GQA_200_ID_Info.json`` (SHA-GCL's names
  ``GQA_200_{train,val,test}`` -> ``DATA_DIR/gqa``);
* ``psg`` (:mod:`sgg.data.datasets.psg`): ``<root>/psg.json`` (``psg_{split}`` -> ``DATA_DIR/psg``);
* ``vg150`` otherwise (the SGB names always, and any folder with a VG150 h5): ``roidb_file`` /
  ``dict_file`` / ``image_file`` / ``img_dir`` from :mod:`sgg.data.datasets.vg150_files`;
  ``annotation_file`` is empty.

Every format has ``root``, ``depth_dir`` (``root/depth``) and ``zeroshot_file``
(``root/zeroshot_triplet.pytorch``); :meth:`DatasetFiles.source_files` lists the annotation files
(what a statistics cache key stamps).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional, Tuple

from .datasets import coco_json, gqa, open_images, psg, vg150_files

SPLITS = ("train", "val", "test")

# (h5, dicts json) of the two VG150 releases, newest first.
VG_LAYOUTS = vg150_files.LAYOUTS

_SGB_NAMES = {
    "VG_stanford_filtered_with_attribute": ("vg", VG_LAYOUTS[0]),
    "VG_stanford_filtered": ("vg", VG_LAYOUTS[1]),
}
#: The one-folder formats, tried in this order on a folder without a VG150 h5 (module docstring).
FOLDER_FORMATS = (coco_json, open_images, gqa, psg)
_FOLDER_FORMAT = {m.FORMAT: m for m in FOLDER_FORMATS}


@dataclass(frozen=True)
class DatasetFiles:
    """Where one dataset split lives on disk, and in which format (``DATASET_FORMAT_REGISTRY`` name)."""

    name: str
    split: str
    root: str
    roidb_file: str = ""
    dict_file: str = ""
    image_file: str = ""
    img_dir: str = ""
    depth_dir: str = ""
    zeroshot_file: str = ""
    format: str = vg150_files.FORMAT
    #: coco_json: the split's ``<root>/<split>/_annotations.coco.json`` (may be absent for val);
    #: oiv6: ``<root>/annotations/vrd-<split>-anno.json``
    annotation_file: str = ""

    def source_files(self) -> Tuple[str, ...]:
        """The annotation files the dataset's content comes from (the format's ``source_files``)."""
        if self.format in _FOLDER_FORMAT:
            return tuple(_FOLDER_FORMAT[self.format].source_files(self.root))
        return (self.roidb_file, self.dict_file, self.image_file)


def resolve_data_dir(data_dir: str) -> str:
    """DATASETS.DATA_DIR, or $SGG_DATA_DIR when it is empty, or ./datasets."""
    return data_dir or os.environ.get("SGG_DATA_DIR", "") or "datasets"


def split_name(name: str) -> Tuple[str, str]:
    for s in SPLITS:
        if name.endswith("_" + s):
            return name[: -len(s) - 1], s
    raise KeyError(
        f"dataset name '{name}' must end in _train, _val or _test "
        f"(e.g. VG_stanford_filtered_with_attribute_train or synthvg_small_test)"
    )


def train_split_of(name: str) -> str:
    """The train split of the dataset a split name belongs to (``synthvg_small_test`` ->
    ``synthvg_small_train``): where its statistics come from."""
    return split_name(name)[0] + "_train"


def get_dataset_files(name: str, data_dir: str = "") -> DatasetFiles:
    """Resolve a dataset name of DATASETS.TRAIN/VAL/TEST to its files and format (existence of the
    files not checked here)."""
    data_dir = resolve_data_dir(data_dir)
    base, split = split_name(name)
    if base not in _SGB_NAMES:
        root = os.path.join(data_dir, base)
        fmt = folder_format(root)
        if fmt is not None:
            return folder_dataset_files(fmt, root, split, name)
        for fmt in FOLDER_FORMATS:
            sub = fmt.NAMED_FOLDERS.get(base)
            if sub and folder_format(os.path.join(data_dir, sub)) is fmt:
                return folder_dataset_files(fmt, os.path.join(data_dir, sub), split, name)
    if base in _SGB_NAMES:
        folder, (h5, dicts) = _SGB_NAMES[base]
        root = os.path.join(data_dir, folder)
    else:
        root = os.path.join(data_dir, base)
        h5, dicts = VG_LAYOUTS[0]
        for cand_h5, cand_dicts in VG_LAYOUTS:
            if os.path.exists(os.path.join(root, cand_h5)):
                h5, dicts = cand_h5, cand_dicts
                break
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"dataset '{name}': folder {root} does not exist. Set DATASETS.DATA_DIR (or $SGG_DATA_DIR) "
                f"to the folder that contains '{base}/', or generate SynthVG data with "
                f"`python tools/make_synthetic_vg.py --out {root}`"
            )
    return DatasetFiles(
        name=name,
        split=split,
        root=root,
        roidb_file=os.path.join(root, h5),
        dict_file=os.path.join(root, dicts),
        image_file=os.path.join(root, vg150_files.IMAGE_DATA_FILE),
        img_dir=os.path.join(root, vg150_files.IMAGE_DIR),
        depth_dir=os.path.join(root, vg150_files.DEPTH_DIR),
        zeroshot_file=os.path.join(root, vg150_files.ZEROSHOT_FILE),
        format=vg150_files.FORMAT,
    )


def has_vg150_h5(root: str) -> bool:
    return any(os.path.exists(os.path.join(root, h5)) for h5, _ in VG_LAYOUTS)


def folder_format(root: str):
    """The module of :data:`FOLDER_FORMATS` whose folder ``root`` is (None: none, or ``root`` holds a
    VG150 h5)."""
    if not os.path.isdir(root) or has_vg150_h5(root):
        return None
    return next((fmt for fmt in FOLDER_FORMATS if fmt.is_folder(root)), None)


def folder_dataset_files(fmt, root: str, split: str, name: str = "") -> DatasetFiles:
    """The :class:`DatasetFiles` of split ``split`` of the folder ``root`` of format ``fmt`` (a
    module of :data:`FOLDER_FORMATS` or its ``FORMAT`` name)."""
    fmt = _FOLDER_FORMAT[fmt] if isinstance(fmt, str) else fmt
    ann, img_dir = fmt.folder_files(root, split)
    return DatasetFiles(name=name or f"{os.path.basename(os.path.normpath(root))}_{split}", split=split,
                        root=root, img_dir=img_dir, depth_dir=os.path.join(root, vg150_files.DEPTH_DIR),
                        zeroshot_file=os.path.join(root, vg150_files.ZEROSHOT_FILE), format=fmt.FORMAT,
                        annotation_file=ann)


def is_coco_json_folder(root: str) -> bool:
    """``root`` holds ``train/_annotations.coco.json`` and no VG150 h5 (the coco_json format)."""
    return folder_format(root) is coco_json


def coco_json_files(root: str, split: str, name: str = "") -> DatasetFiles:
    """The :class:`DatasetFiles` of split ``split`` of the coco_json folder ``root``."""
    return folder_dataset_files(coco_json, root, split, name)


def is_oiv6_folder(root: str) -> bool:
    """``root`` holds ``annotations/categories_dict.json`` and no VG150 h5 (the oiv6 format)."""
    return folder_format(root) is open_images


def oiv6_files(root: str, split: str, name: str = "") -> DatasetFiles:
    """The :class:`DatasetFiles` of split ``split`` of the Open Images V6 folder ``root``."""
    return folder_dataset_files(open_images, root, split, name)


def find_zeroshot_file(files: DatasetFiles, configured: str = "") -> Optional[str]:
    """The zero-shot triplet file to use: the configured one, else the dataset's own if present."""
    if configured:
        if not os.path.isfile(configured):
            raise FileNotFoundError(f"DATASETS.ZEROSHOT_FILE={configured} does not exist")
        return configured
    return files.zeroshot_file if os.path.isfile(files.zeroshot_file) else None
