"""Datasets: each turns files on disk into plain dataset dicts (see DESIGN.md).

One module per format, registered in :data:`DATASET_FORMAT_REGISTRY` under its format name:
``vg150`` (:mod:`.vg150`, the Scene-Graph-Benchmark h5 + json files of :mod:`.vg150_files`).
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

__all__ = [
    "BOX_SCALE",
    "CORRUPTED_IMAGE_IDS",
    "DATASET_FORMAT_REGISTRY",
    "VG150Dataset",
    "compute_zeroshot_triplets",
    "load_depth",
    "load_image",
    "load_info",
    "load_zeroshot_triplets",
]
