"""Datasets: each turns files on disk into plain dataset dicts (see DESIGN.md)."""
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
    "VG150Dataset",
    "compute_zeroshot_triplets",
    "load_depth",
    "load_image",
    "load_info",
    "load_zeroshot_triplets",
]
