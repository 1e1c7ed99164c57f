"""Batching images of different sizes: zero-padding to a common canvas, and running a test batch
in groups of equal canvas (shared by the detector and both meta-architectures)."""
from __future__ import annotations

import math
from typing import Callable, Dict, List, Sequence, Tuple, TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

__all__ = ["map_by_padded_shape", "pad_images", "padded_shape"]


def padded_shape(height: int, width: int, size_divisibility: int) -> Tuple[int, int]:
    """(height, width) rounded up to a multiple of ``size_divisibility`` (>= 1)."""
    div = max(int(size_divisibility), 1)
    return (int(math.ceil(int(height) / div) * div), int(math.ceil(int(width) / div) * div))


def pad_images(images: Sequence[torch.Tensor], size_divisibility: int) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """``[C, H_i, W_i]`` tensors -> (``[B, C, Hp, Wp]`` zero-padded at the bottom / right to a
    multiple of ``size_divisibility``, the unpadded (h, w) of each image)."""
    sizes = [(int(x.shape[-2]), int(x.shape[-1])) for x in images]
    hp, wp = padded_shape(max(s[0] for s in sizes), max(s[1] for s in sizes), size_divisibility)
    batch = images[0].new_zeros((len(images), images[0].shape[0], hp, wp))
    for b, x in zip(batch, images):
        b[:, : x.shape[1], : x.shape[2]].copy_(x)
    return batch, sizes


def map_by_padded_shape(items: Sequence[T], image_of: Callable[[T], torch.Tensor], size_divisibility: int,
                        fn: Callable[[List[T]], List[R]]) -> List[R]:
    """``fn`` over groups of ``items`` whose images have the same padded shape, results back in
    input order. An image's features depend on the zero-padded canvas it is batched on, so test
    batches run this way give every image the canvas it would get alone: outputs do not depend
    on the batch size, the number of ranks or the batch order."""
    groups: Dict[Tuple[int, int], List[int]] = {}
    for i, item in enumerate(items):
        h, w = image_of(item).shape[-2:]
        groups.setdefault(padded_shape(h, w, size_divisibility), []).append(i)
    if len(groups) == 1:
        return fn(list(items))
    out: List[R] = [None] * len(items)  # type: ignore[list-item]
    for idx in groups.values():
        for i, r in zip(idx, fn([items[i] for i in idx])):
            out[i] = r
    return out
