"""What the one-file-per-split formats (``coco_json``, ``oiv6``) share: a dataset of per-image
arrays held in memory, with VG150Dataset's API.

A subclass parses its files in ``__init__`` into ``img_info`` (dicts with ``image_id``,
``width``, ``height``, ``file_name``), ``gt_boxes`` (float32 ``[N, 4]`` xyxy pixels, already
clipped as the format's reference does), ``gt_classes``, ``relationships`` (``[M, 3]`` subject,
object, predicate), ``ind_to_classes`` / ``ind_to_predicates`` (background first), ``img_dir``,
``rng`` and ``filter_duplicate_rels``, then calls :meth:`_attach_files`.
"""
from __future__ import annotations

import os
from typing import Dict, List, Optional

import numpy as np

from .vg150 import check_on_disk, dedup_relations, find_depth_files, triplets_of

__all__ = ["ImageListDataset"]


class ImageListDataset:
    """Base of the in-memory formats (module docstring)."""

    @classmethod
    def from_files(cls, files, **kwargs):
        """The split ``files`` (a :class:`sgg.data.catalog.DatasetFiles` of the class's format) names."""
        ds = cls(root=files.root, split=files.split, **kwargs)
        ds.files = files
        return ds

    def _attach_files(self, depth_dir: Optional[str], check_images: bool) -> None:
        """``filenames`` under ``img_dir``, the depth files of ``depth_dir`` (None: no depth), and,
        with ``check_images``, a check that all of them exist."""
        self.filenames = [os.path.join(self.img_dir, info["file_name"]) for info in self.img_info]
        self._depth_files: Optional[List[str]] = None
        if depth_dir is not None:
            if not os.path.isdir(depth_dir):
                raise FileNotFoundError(f"{depth_dir}: depth folder not found: write the depth maps "
                                        f"({{image_id}}.png / .npy) there, or turn INPUT.LOAD_DEPTH off")
            self._depth_files = find_depth_files(depth_dir, [info["image_id"] for info in self.img_info])
        if check_images:
            check_on_disk(self.filenames, self.img_dir, "images")
            if self._depth_files is not None:
                check_on_disk(self._depth_files, depth_dir, "depth maps")

    # ------------------------------------------------------------------ API (as VG150Dataset)
    @property
    def num_classes(self) -> int:
        return len(self.ind_to_classes)

    @property
    def num_predicates(self) -> int:
        return len(self.ind_to_predicates)

    @property
    def num_attributes(self) -> int:
        return 0

    @property
    def categories(self) -> Dict[int, str]:
        return dict(enumerate(self.ind_to_classes))

    def __len__(self) -> int:
        return len(self.filenames)

    def get_img_info(self, i: int) -> dict:
        return self.img_info[i]

    def __getitem__(self, i: int) -> dict:
        """Dataset dict (``DESIGN.md``): boxes float32 xyxy pixels as the format clips them; the
        train split draws one predicate per (subject, object) pair when ``filter_duplicate_rels``."""
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        rels = self.relationships[i]
        if self.filter_duplicate_rels:
            rels = dedup_relations(rels, self.rng)
        d = self.get_groundtruth(i)
        d["file_name"] = self.filenames[i]
        d["relations"] = rels.astype(np.int64, copy=True)
        if self._depth_files is not None:
            d["depth_file"] = self._depth_files[i]
        return d

    def get_groundtruth(self, i: int) -> dict:
        """Evaluation GT: every relation row (duplicate pairs kept), boxes as ``__getitem__``."""
        info = self.img_info[i]
        return {"image_id": int(info["image_id"]), "width": int(info["width"]), "height": int(info["height"]),
                "boxes": self.gt_boxes[i].copy(), "labels": self.gt_classes[i].copy(),
                "relations": self.relationships[i].astype(np.int64, copy=True)}

    def get_triplets(self) -> np.ndarray:
        return triplets_of(self.gt_classes, self.relationships)
