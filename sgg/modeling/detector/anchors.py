"""RPN anchors on fixed FPN strides, with VG's aspect ratios.

Visual Genome detectors (SGB) use one anchor size per FPN level, sizes (32, 64, 128, 256, 512) on
strides (4, 8, 16, 32, 64), and the aspect ratios (0.23232838, 0.63365731, 1.28478321, 3.15089189),
ratio = height / width, enumerated ratio-major: 4 anchors per location.

:class:`FPNAnchorGenerator` is a ``torchvision`` ``AnchorGenerator`` (same call signature and
anchor order: level, then location row-major, then anchor) with two changes:

* the strides are the configured ones, not ``image_size // feature_size``: torchvision's
  inference gives the wrong stride on the max-pooled level whenever the padded size / 32 is odd;
* ``legacy=True`` builds the cell anchors exactly as maskrcnn_benchmark's ``generate_anchors``
  (a ``stride x stride`` base box at ``(stride - 1) / 2``, widths rounded on that base box, the
  "+1" width convention), which SGB checkpoints were trained with. The default follows torchvision
  (anchors centred on 0, ``w = size / sqrt(ratio)``, ``h = size * sqrt(ratio)``, rounded).
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

VG_ANCHOR_SIZES = (32, 64, 128, 256, 512)
VG_ANCHOR_STRIDES = (4, 8, 16, 32, 64)
VG_ASPECT_RATIOS = (0.23232838, 0.63365731, 1.28478321, 3.15089189)


def _whctrs(anchor: np.ndarray):
    w = anchor[2] - anchor[0] + 1
    h = anchor[3] - anchor[1] + 1
    return w, h, anchor[0] + 0.5 * (w - 1), anchor[1] + 0.5 * (h - 1)


def _mkanchors(ws: np.ndarray, hs: np.ndarray, x_ctr: float, y_ctr: float) -> np.ndarray:
    ws, hs = ws[:, None], hs[:, None]
    return np.hstack((x_ctr - 0.5 * (ws - 1), y_ctr - 0.5 * (hs - 1),
                      x_ctr + 0.5 * (ws - 1), y_ctr + 0.5 * (hs - 1)))


def legacy_cell_anchors(stride: int, sizes: Sequence[float], aspect_ratios: Sequence[float]) -> torch.Tensor:
    """maskrcnn_benchmark ``generate_anchors(stride, sizes, aspect_ratios)`` -> float32 [A, 4].

    Order: ratio-major, then size (``A = len(aspect_ratios) * len(sizes)``).
    """
    anchor = np.array([1, 1, stride, stride], dtype=np.float64) - 1
    w, h, x_ctr, y_ctr = _whctrs(anchor)
    ratios = np.asarray(aspect_ratios, dtype=np.float64)
    ws = np.round(np.sqrt(w * h / ratios))
    hs = np.round(ws * ratios)
    by_ratio = _mkanchors(ws, hs, x_ctr, y_ctr)
    scales = np.asarray(sizes, dtype=np.float64) / stride
    out = []
    for a in by_ratio:
        w, h, x_ctr, y_ctr = _whctrs(a)
        out.append(_mkanchors(w * scales, h * scales, x_ctr, y_ctr))
    return torch.from_numpy(np.vstack(out)).float()


class FPNAnchorGenerator(AnchorGenerator):
    """Anchors for FPN levels with fixed strides (see the module docstring).

    Args:
        sizes: one size (or a tuple of sizes) per level.
        aspect_ratios: height / width ratios, shared by every level.
        strides: one stride per level (same length as ``sizes``).
        legacy: maskrcnn_benchmark cell anchors.

    ``forward(image_list, feature_maps) -> list (one per image) of float32 [sum_l H_l*W_l*A, 4]``.
    """

    def __init__(self, sizes: Sequence = VG_ANCHOR_SIZES, aspect_ratios: Sequence[float] = VG_ASPECT_RATIOS,
                 strides: Sequence[int] = VG_ANCHOR_STRIDES, legacy: bool = False) -> None:
        sizes = tuple(tuple(s) if isinstance(s, (tuple, list)) else (s,) for s in sizes)
        if len(strides) != len(sizes):
            raise ValueError(f"{len(sizes)} anchor sizes but {len(strides)} strides: give one of each per "
                             f"FPN level (MODEL.RPN.ANCHOR_SIZES / ANCHOR_STRIDE)")
        ratios = tuple(float(r) for r in aspect_ratios)
        super().__init__(sizes, (ratios,) * len(sizes))
        self.strides = tuple(int(s) for s in strides)
        self.legacy = bool(legacy)
        if self.legacy:
            self.cell_anchors = [legacy_cell_anchors(st, sz, ratios) for st, sz in zip(self.strides, sizes)]
        else:
            self.cell_anchors = [c.float() for c in self.cell_anchors]

    def forward(self, image_list: ImageList, feature_maps: List[torch.Tensor]) -> List[torch.Tensor]:
        if len(feature_maps) != len(self.strides):
            raise ValueError(f"{len(feature_maps)} feature maps but anchors for {len(self.strides)} levels")
        device = feature_maps[0].device
        grid_sizes = [tuple(fm.shape[-2:]) for fm in feature_maps]
        strides = [[torch.tensor(s, dtype=torch.int64, device=device)] * 2 for s in self.strides]
        # float32 even under autocast: fp16 cannot hold pixel coordinates of large images exactly.
        self.set_cell_anchors(torch.float32, device)
        per_level = self.grid_anchors(grid_sizes, strides)
        anchors = torch.cat(per_level)
        return [anchors for _ in range(len(image_list.image_sizes))]
