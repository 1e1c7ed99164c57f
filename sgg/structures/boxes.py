"""Axis-aligned boxes, xyxy float pixels.

Two area conventions exist in the field: the continuous one (``w = x2 - x1``, torchvision) and the
maskrcnn_benchmark "+1 pixel" one (``w = x2 - x1 + 1``) that SGB's evaluator and detector checkpoints
use. Functions take ``legacy=True`` for the latter.
"""
from __future__ import annotations

from typing import Tuple, Union

import torch

Index = Union[int, slice, torch.Tensor]


def box_area(boxes: torch.Tensor, legacy: bool = False) -> torch.Tensor:
    """Area of [N,4] xyxy boxes -> [N]."""
    off = 1.0 if legacy else 0.0
    return (boxes[:, 2] - boxes[:, 0] + off) * (boxes[:, 3] - boxes[:, 1] + off)


def pairwise_iou(a: torch.Tensor, b: torch.Tensor, legacy: bool = False) -> torch.Tensor:
    """IoU between [N,4] and [M,4] xyxy boxes -> [N,M]."""
    off = 1.0 if legacy else 0.0
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt + off).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a, legacy)[:, None] + box_area(b, legacy)[None, :] - inter
    return inter / union.clamp(min=torch.finfo(union.dtype).tiny)


def union_boxes(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Smallest boxes enclosing row-aligned [N,4] ``a`` and ``b`` -> [N,4]."""
    return torch.cat([torch.min(a[:, :2], b[:, :2]), torch.max(a[:, 2:], b[:, 2:])], dim=1)


class Boxes:
    """A [N,4] float tensor of xyxy boxes with the common operations."""

    def __init__(self, tensor: torch.Tensor) -> None:
        tensor = torch.as_tensor(tensor, dtype=torch.float32)
        if tensor.numel() == 0:
            tensor = tensor.reshape(0, 4)
        if tensor.dim() != 2 or tensor.shape[-1] != 4:
            raise ValueError(f"Boxes expects a [N,4] tensor, got shape {tuple(tensor.shape)}")
        self.tensor = tensor

    def __len__(self) -> int:
        return self.tensor.shape[0]

    def __getitem__(self, idx: Index) -> "Boxes":
        t = self.tensor[idx]
        return Boxes(t.view(1, 4) if t.dim() == 1 else t)

    def __repr__(self) -> str:
        return f"Boxes({self.tensor!r})"

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def to(self, device) -> "Boxes":
        return Boxes(self.tensor.to(device))

    def clone(self) -> "Boxes":
        return Boxes(self.tensor.clone())

    def area(self, legacy: bool = False) -> torch.Tensor:
        return box_area(self.tensor, legacy)

    def centers(self) -> torch.Tensor:
        return (self.tensor[:, :2] + self.tensor[:, 2:]) / 2

    def clip(self, image_size: Tuple[int, int], legacy: bool = False) -> "Boxes":
        """Clamp in place to an (height, width) image; legacy clamps to ``size - 1`` as SGB did."""
        h, w = image_size
        off = 1 if legacy else 0
        self.tensor[:, 0::2].clamp_(min=0, max=w - off)
        self.tensor[:, 1::2].clamp_(min=0, max=h - off)
        return self

    def scale(self, sx: float, sy: float) -> "Boxes":
        """Multiply x coordinates by ``sx`` and y by ``sy`` in place."""
        self.tensor[:, 0::2] *= sx
        self.tensor[:, 1::2] *= sy
        return self

    def nonempty(self, threshold: float = 0.0) -> torch.Tensor:
        wh = self.tensor[:, 2:] - self.tensor[:, :2]
        return (wh > threshold).all(dim=1)

    def iou(self, other: "Boxes", legacy: bool = False) -> torch.Tensor:
        return pairwise_iou(self.tensor, other.tensor, legacy)

    @staticmethod
    def cat(items) -> "Boxes":
        items = list(items)
        if not items:
            return Boxes(torch.zeros(0, 4))
        return Boxes(torch.cat([b.tensor for b in items], dim=0))
