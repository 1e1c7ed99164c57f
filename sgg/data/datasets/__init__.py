"""Datasets: each turns files on disk into plain dataset dicts (see DESIGN.md).

One module per format, registered in :data:`DATASET_FORMAT_REGISTRY` under its format name:
``vg150`` (:mod:`.vg150`, the Scene-Graph-Benchmark h5 + json files of :mod:`.vg150_files`),
``coco_json`` (:mod:`.coco_json`, COCO-style scene-graph JSON, one file per split),
``oiv6`` (:mod:`.open_images`, PySGG's Open Images V6 files), ``gqa200`` (:mod:`.gqa`, SHA-GCL's
GQA200 files), ``psg`` (:mod:`.psg`, OpenPSG's psg.json used as boxes).
"""
from .registry import DATASET_FORMAT_REGISTRY
from .vg150 import (
    BOX_SCALE,
    CORRUPTED_IMAGE_IDS,
    VG150Dataset,
    compute_zeroshot_triplets,
    load_depth,
    load_image,
    load_info,
    load_zeroshot_triplets,
)
from .coco_json import CocoJsonDataset  # noqa: E402  (registers "coco_json")
from .open_images import OpenImagesDataset  # noqa: E402  (registers "oiv6")
from .gqa import GQADataset  # noqa: E402  (registers "gqa200")
from .psg import PSGDataset  # noqa: E402  (registers "psg")


def dataset_class_names(files):
    """(object class names, predicate names), background first, of the dataset ``files`` (a
    ``sgg.data.catalog.DatasetFiles``) without building it: its format's ``class_names(files)``,
    the dicts json for vg150."""
    cls = DATASET_FORMAT_REGISTRY.get(files.format)
    if hasattr(cls, "class_names"):
        return cls.class_names(files)
    classes, predicates, _ = load_info(files.dict_file)
    return classes, predicates


__all__ = [
    "BOX_SCALE",
    "CocoJsonDataset",
    "dataset_class_names",
    "GQADataset",
    "PSGDataset",
    "CORRUPTED_IMAGE_IDS",
    "DATASET_FORMAT_REGISTRY",
    "OpenImagesDataset",
    "VG150Dataset",
    "compute_zeroshot_triplets",
    "load_depth",
    "load_image",
    "load_info",
    "load_zeroshot_triplets",
]
