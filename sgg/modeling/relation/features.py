"""Object and union-box features of the relation head (SGB's box feature extractor and
``RelationFeatureExtractor``).

Both extractors hold their OWN deep copies of the detector's ROI pooler and box head (torchvision
``MultiScaleRoIAlign`` + ``TwoMLPHead``): they start from the detector's fc6/fc7 weights and are
trained with the relation head while the detector stays frozen, as in SGB.
"""
from __future__ import annotations

import copy
import math
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torchvision.ops import roi_align

from sgg.structures import Instances, union_boxes

__all__ = ["ObjectFeatureExtractor", "UnionFeatureExtractor", "box_head_out_dim", "rect_masks"]


def box_head_out_dim(box_head: nn.Module) -> int:
    """Output size of a box head (``fc7.out_features`` of torchvision's TwoMLPHead)."""
    for attr in ("fc7", "fc6"):
        layer = getattr(box_head, attr, None)
        if isinstance(layer, nn.Linear):
            return layer.out_features
    if hasattr(box_head, "out_channels"):
        return int(box_head.out_channels)
    raise ValueError(f"cannot tell the output size of {type(box_head).__name__}; give it an "
                     f"'out_channels' attribute or an fc7 Linear layer")


def _output_size(pooler: nn.Module) -> Tuple[int, int]:
    size = getattr(pooler, "output_size", 7)
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _autocast_enabled(device_type: str) -> bool:
    try:
        return bool(torch.is_autocast_enabled(device_type))
    except TypeError:  # torch < 2.4
        return bool(torch.is_autocast_enabled() if device_type == "cuda" else torch.is_autocast_cpu_enabled())


def _image_sizes(proposals: Sequence[Instances]) -> List[Tuple[int, int]]:
    return [tuple(p.image_size) for p in proposals]


class ObjectFeatureExtractor(nn.Module):
    """ROI features of every box: ``box_head(box_roi_pool(features, boxes))`` -> ``[sum N_i, D]``."""

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, copy_modules: bool = True) -> None:
        super().__init__()
        self.pooler = copy.deepcopy(box_roi_pool) if copy_modules else box_roi_pool
        self.head = copy.deepcopy(box_head) if copy_modules else box_head
        self.out_channels = box_head_out_dim(self.head)

    def forward(self, features: Dict[str, torch.Tensor], proposals: Sequence[Instances]) -> torch.Tensor:
        boxes = [p.boxes.tensor for p in proposals]
        n = sum(b.shape[0] for b in boxes)
        if n == 0:
            ref = next(iter(features.values()))
            return ref.new_zeros(0, self.out_channels)
        pooled = self.pooler(features, boxes, _image_sizes(proposals))
        return self.head(pooled)


def rect_masks(subj: torch.Tensor, obj: torch.Tensor, rect_size: int, frame: str = "image",
               image_size: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """The 2-channel subject/object rectangle masks of SGB's union feature -> ``[M, 2, S, S]``.

    Boxes ``[M, 4]`` are rescaled into an ``S x S`` grid and a cell ``(y, x)`` is inside when
    ``floor(x1) <= x <= ceil(x2)`` and ``floor(y1) <= y <= ceil(y2)`` (SGB's inclusive rule).
    ``frame="image"`` rescales the whole image (height, width) = ``image_size`` to the grid, as SGB
    does (``BoxList.resize((S, S))``); ``frame="union"`` rescales the pair's union box, as the
    original neural-motifs did.
    """
    m = subj.shape[0]
    dev = subj.device
    if frame == "image":
        if image_size is None:
            raise ValueError("rect_masks(frame='image') needs image_size=(height, width)")
        h, w = image_size
        origin = subj.new_zeros(m, 2)
        scale = subj.new_tensor([rect_size / w, rect_size / h]).expand(m, 2)
    elif frame == "union":
        u = union_boxes(subj, obj)
        origin = u[:, :2]
        scale = rect_size / (u[:, 2:] - u[:, :2]).clamp(min=1e-6)
    else:
        raise ValueError(f"frame must be 'image' or 'union', got {frame!r}")
    rng = torch.arange(rect_size, device=dev)
    xs = rng.view(1, 1, -1)
    ys = rng.view(1, -1, 1)
    out = []
    for b in (subj, obj):
        xy1 = ((b[:, :2] - origin) * scale).floor().long()
        xy2 = ((b[:, 2:] - origin) * scale).ceil().long()
        inside = ((xs >= xy1[:, 0].view(-1, 1, 1)) & (xs <= xy2[:, 0].view(-1, 1, 1))
                  & (ys >= xy1[:, 1].view(-1, 1, 1)) & (ys <= xy2[:, 1].view(-1, 1, 1)))
        out.append(inside)
    return torch.stack(out, dim=1).to(subj.dtype)


class UnionFeatureExtractor(nn.Module):
    """Union-box features of each pair (SGB's ``RelationFeatureExtractor``) -> ``[sum M_i, D]``.

    ``head(pool(union box) + rect_conv(rect_masks(subject, object)))`` where ``rect_conv`` is
    conv 2->C/2 k7 s2 p3, ReLU, BN, maxpool 3 s2 p1, conv C/2->C k3 p1, ReLU, BN, which takes the
    ``S x S`` masks (``S = 4 * resolution - 1`` = 27 for 7x7 pooling, SGB) to ``resolution x
    resolution``. With ``pool_all_levels`` (``POOLING_ALL_LEVELS``, SGB default) the union box is
    ROI-aligned on EVERY FPN level, the results concatenated and reduced back to C channels by a
    3x3 conv + ReLU (SGB's ``Pooler(cat_all_levels=True)``); otherwise the pooler's usual
    level-by-size assignment is used. Pairs are processed ``chunk_size`` at a time so an image with
    thousands of SGDet pairs needs bounded memory for the pooled maps.

    ``separate_spatial`` (SGB's ``CAUSAL.SEPARATE_SPATIAL``): the mask feature is not added to the
    pooled union box; the output is the pair ``(head(pool(union box)) [M, D],
    spatial_fc(rect_conv(masks)) [M, D])`` with ``spatial_fc`` = Linear(C * resolution^2, D/2), ReLU,
    Linear(D/2, D), ReLU (SGB's layers and ``make_fc`` initialisation), D = the box head's output size.

    Args:
        box_roi_pool: the detector's ``MultiScaleRoIAlign`` (deep-copied).
        box_head: the detector's box head (deep-copied; fc6 input = C * resolution^2).
        in_channels: C, channels of the FPN maps (inferred from fc6 when None).
        pool_all_levels, rect_size (default 4 * resolution - 1), mask_frame ("image" | "union"),
        chunk_size, separate_spatial: see above.
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, in_channels: Optional[int] = None,
                 pool_all_levels: bool = True, rect_size: Optional[int] = None,
                 mask_frame: str = "image", chunk_size: int = 4096, copy_modules: bool = True,
                 separate_spatial: bool = False) -> None:
        super().__init__()
        self.pooler = copy.deepcopy(box_roi_pool) if copy_modules else box_roi_pool
        self.head = copy.deepcopy(box_head) if copy_modules else box_head
        self.out_channels = box_head_out_dim(self.head)
        self.resolution = _output_size(self.pooler)
        if in_channels is None:
            fc6 = getattr(self.head, "fc6", None)
            if not isinstance(fc6, nn.Linear):
                raise ValueError("in_channels is needed when the box head has no fc6 Linear layer")
            in_channels = fc6.in_features // (self.resolution[0] * self.resolution[1])
        self.in_channels = int(in_channels)
        self.pool_all_levels = bool(pool_all_levels)
        self.featmap_names = list(getattr(self.pooler, "featmap_names", ["0", "1", "2", "3"]))
        self.sampling_ratio = int(getattr(self.pooler, "sampling_ratio", 2))
        if self.pool_all_levels:
            n_lv = len(self.featmap_names)
            self.reduce_channel = nn.Sequential(
                nn.Conv2d(self.in_channels * n_lv, self.in_channels, kernel_size=3, padding=1),
                nn.ReLU(inplace=True),
            )
            nn.init.kaiming_normal_(self.reduce_channel[0].weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(self.reduce_channel[0].bias)
        self.rect_size = int(rect_size) if rect_size is not None else 4 * self.resolution[0] - 1
        if mask_frame not in ("image", "union"):
            raise ValueError(f"mask_frame must be 'image' or 'union', got {mask_frame!r}")
        self.mask_frame = mask_frame
        c = self.in_channels
        self.rect_conv = nn.Sequential(
            nn.Conv2d(2, c // 2, kernel_size=7, stride=2, padding=3, bias=True),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(c // 2, momentum=0.01),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
            nn.Conv2d(c // 2, c, kernel_size=3, stride=1, padding=1, bias=True),
            nn.ReLU(inplace=True),
            nn.BatchNorm2d(c, momentum=0.01),
        )
        out = self._rect_out_size(self.rect_size)
        if out != self.resolution[0]:
            raise ValueError(f"rect_size {self.rect_size} gives {out}x{out} mask features, the pooler "
                             f"gives {self.resolution}; use rect_size = 4 * resolution - 1")
        self.chunk_size = max(int(chunk_size), 1)
        self.separate_spatial = bool(separate_spatial)
        if self.separate_spatial:
            d = self.out_channels
            fc1 = nn.Linear(c * self.resolution[0] * self.resolution[1], d // 2)
            fc2 = nn.Linear(d // 2, d)
            for fc in (fc1, fc2):  # SGB's make_fc
                nn.init.kaiming_uniform_(fc.weight, a=1)
                nn.init.zeros_(fc.bias)
            self.spatial_fc = nn.Sequential(fc1, nn.ReLU(inplace=True), fc2, nn.ReLU(inplace=True))

    @staticmethod
    def _rect_out_size(s: int) -> int:
        s = (s + 2 * 3 - 7) // 2 + 1
        return (s + 2 * 1 - 3) // 2 + 1

    def _pool_all_levels(self, levels: Sequence[torch.Tensor], rois: torch.Tensor,
                         image_sizes: List[Tuple[int, int]]) -> torch.Tensor:
        """``rois [K, 5]`` (batch index, x1, y1, x2, y2) ROI-aligned on every level (``levels`` in
        ``featmap_names`` order), concatenated, reduced to C channels. The batch-index form needs
        no per-image box lists (no host sync)."""
        max_h = max(s[0] for s in image_sizes)
        # The detector's pooler knows its level scales and ROIAlign flavour (sgg's LevelRoIAlign);
        # a plain torchvision MultiScaleRoIAlign infers powers of 2 and uses legacy ROIAlign.
        scales = getattr(self.pooler, "scales", None)
        aligned = bool(getattr(self.pooler, "aligned", False))
        pooled = []
        for i, feat in enumerate(levels):
            scale = scales[i] if scales else 2.0 ** round(math.log2(feat.shape[-2] / max_h))
            pooled.append(roi_align(feat, rois.to(feat.dtype), self.resolution, spatial_scale=scale,
                                    sampling_ratio=self.sampling_ratio, aligned=aligned))
        return self.reduce_channel(torch.cat(pooled, dim=1))

    def forward(self, features: Dict[str, torch.Tensor], proposals: Sequence[Instances],
                rel_pairs: Sequence[torch.Tensor]) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        ref = features[self.featmap_names[0]]
        total = sum(int(r.shape[0]) for r in rel_pairs)
        if total == 0:
            empty = ref.new_zeros(0, self.out_channels)
            return (empty, empty.clone()) if self.separate_spatial else empty
        # flat list of (image, subject box, object box) over the batch
        img_ids, subj, obj = [], [], []
        for i, (p, pairs) in enumerate(zip(proposals, rel_pairs)):
            b = p.boxes.tensor
            subj.append(b[pairs[:, 0]])
            obj.append(b[pairs[:, 1]])
            img_ids.append(torch.full((pairs.shape[0],), i, dtype=torch.long, device=b.device))
        subj, obj, img_ids = torch.cat(subj), torch.cat(obj), torch.cat(img_ids)
        sizes = _image_sizes(proposals)
        levels = [features[n] for n in self.featmap_names]
        if self.pool_all_levels and _autocast_enabled(ref.device.type):
            # torchvision's ROIAlign runs in float32 under autocast and wants contiguous NCHW maps:
            # convert the levels once here, not once per chunk.
            levels = [f.float().contiguous() for f in levels]
        outs, spatial = [], []
        for start in range(0, total, self.chunk_size):
            sl = slice(start, start + self.chunk_size)
            s, o, ids = subj[sl], obj[sl], img_ids[sl]
            u = union_boxes(s, o)
            if self.pool_all_levels:
                pooled = self._pool_all_levels(levels, torch.cat([ids[:, None].to(u.dtype), u], dim=1), sizes)
            else:
                # per-image box lists for the pooler (images absent from the chunk get empty lists)
                counts = torch.bincount(ids, minlength=len(proposals)).tolist()
                pooled = self.pooler(features, list(torch.split(u, counts)), sizes)
            if self.mask_frame == "image":
                hw = torch.tensor(sizes, dtype=s.dtype, device=s.device)[ids]  # [m, 2] (h, w)
                masks = self._image_frame_masks(s, o, hw)
            else:
                masks = rect_masks(s, o, self.rect_size, frame="union")
            if self.separate_spatial:
                outs.append(self.head(pooled))
                spatial.append(self.spatial_fc(self.rect_conv(masks).flatten(1)))
            else:
                outs.append(self.head(pooled + self.rect_conv(masks)))
        if self.separate_spatial:
            return torch.cat(outs, dim=0), torch.cat(spatial, dim=0)
        return torch.cat(outs, dim=0)

    def _image_frame_masks(self, s: torch.Tensor, o: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
        # rect_masks with a per-pair image size (pairs of different images share a chunk)
        scale = torch.stack([self.rect_size / hw[:, 1], self.rect_size / hw[:, 0]], dim=1).repeat(1, 2)
        return rect_masks(s * scale, o * scale, self.rect_size, frame="image",
                          image_size=(self.rect_size, self.rect_size))
