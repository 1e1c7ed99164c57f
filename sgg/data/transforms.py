"""Augmentations applied identically to an image, its boxes and an optional depth map.

Every transform is a callable ``t(image, boxes=None, depth=None) -> (image, boxes, depth)`` on
numpy arrays: ``image`` uint8 ``[H, W, 3]`` (RGB), ``boxes`` float32 ``[N, 4]`` xyxy pixels
(continuous convention: a box ``[x1, x2]`` covers pixel columns ``x1 .. x2 - 1``), ``depth``
float32 ``[H, W]`` (metres) or ``[H, W, C]`` (an encoding, channels last, e.g. the 3 HHA channels
of ``depth_encoding.py``: every channel gets the same geometry). Random choices are drawn once per call (from ``numpy.random``, which the data
loader seeds per worker), so the image, its boxes and its depth always receive the same geometry.

* :class:`ResizeShortestEdge`: maskrcnn_benchmark's ``Resize`` (shorter side sampled from
  ``min_sizes``, longer side at most ``max_size``, integer truncation as SGB). Images bilinear
  when enlarged, area-averaged when shrunk (SGB's PIL resize antialiases);
  depth with nearest neighbour by default (``depth_interp="nearest"``: no invented depths between
  a foreground object and the background behind it) or ``"linear"``; both with the same
  half-pixel-centre mapping (``cv2.INTER_NEAREST_EXACT`` / ``INTER_LINEAR``) as the boxes, which
  are scaled by ``(new_w / w, new_h / h)``.
* :class:`RandomFlip`: horizontal (``x -> W - x``) or vertical. SGB keeps horizontal flip off
  (``MODEL.FLIP_AUG False``) because of left/right predicates.
* :class:`ColorJitter`: brightness, contrast, saturation, hue as torchvision's ``ColorJitter``
  (random factors, random order); the depth map is never touched.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import cv2
import numpy as np

Arrays = Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]

_DEPTH_INTERP = {"nearest": cv2.INTER_NEAREST_EXACT, "linear": cv2.INTER_LINEAR}


def get_resize_size(height: int, width: int, min_size: int, max_size: int) -> Tuple[int, int]:
    """maskrcnn_benchmark ``Resize.get_size`` -> (new_h, new_w)."""
    size = float(min_size)
    if max_size is not None and max_size > 0:
        min_orig, max_orig = float(min(width, height)), float(max(width, height))
        if max_orig / min_orig * size > max_size:
            size = int(round(max_size * min_orig / max_orig))
    size = int(size)
    if (width <= height and width == size) or (height <= width and height == size):
        return height, width
    if width < height:
        return int(size * height / width), size
    return size, int(size * width / height)


class ResizeShortestEdge:
    """Resize so the shorter side is a size drawn from ``min_sizes`` (longer side <= ``max_size``)."""

    def __init__(self, min_sizes: Sequence[int] | int, max_size: int, depth_interp: str = "nearest") -> None:
        if isinstance(min_sizes, (int, np.integer)):
            min_sizes = (min_sizes,)
        self.min_sizes = tuple(int(s) for s in min_sizes)
        if not self.min_sizes:
            raise ValueError("ResizeShortestEdge needs at least one size")
        if depth_interp not in _DEPTH_INTERP:
            raise ValueError(f"depth_interp must be one of {sorted(_DEPTH_INTERP)}, got {depth_interp!r}")
        self.max_size = int(max_size)
        self.depth_interp = depth_interp

    def __call__(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                 depth: Optional[np.ndarray] = None) -> Arrays:
        h, w = image.shape[:2]
        sizes = self.min_sizes
        size = sizes[np.random.randint(len(sizes))] if len(sizes) > 1 else sizes[0]
        nh, nw = get_resize_size(h, w, size, self.max_size)
        if (nh, nw) == (h, w):
            return image, boxes, depth
        # Shrinking: area averaging, close to the antialiased PIL bilinear resize SGB used.
        interp = cv2.INTER_AREA if (nh < h and nw < w) else cv2.INTER_LINEAR
        image = cv2.resize(image, (nw, nh), interpolation=interp)
        if boxes is not None:
            boxes = boxes * np.array([nw / w, nh / h, nw / w, nh / h], dtype=np.float32)
        if depth is not None:
            resized = cv2.resize(depth, (nw, nh), interpolation=_DEPTH_INTERP[self.depth_interp])
            depth = resized.reshape(nh, nw, *depth.shape[2:])  # cv2 drops a trailing channel axis of size 1
        return image, boxes, depth

    def __repr__(self) -> str:
        return f"ResizeShortestEdge(min_sizes={self.min_sizes}, max_size={self.max_size})"


class RandomFlip:
    """Flip with probability ``prob``, horizontally (default) or vertically."""

    def __init__(self, prob: float = 0.5, horizontal: bool = True) -> None:
        self.prob = float(prob)
        self.horizontal = bool(horizontal)

    def __call__(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                 depth: Optional[np.ndarray] = None) -> Arrays:
        if self.prob <= 0 or np.random.rand() >= self.prob:
            return image, boxes, depth
        axis = 1 if self.horizontal else 0
        image = np.ascontiguousarray(np.flip(image, axis=axis))
        if depth is not None:
            depth = np.ascontiguousarray(np.flip(depth, axis=axis))
        if boxes is not None:
            boxes = boxes.copy()
            if self.horizontal:
                w = image.shape[1]
                boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
            else:
                h = image.shape[0]
                boxes[:, [1, 3]] = h - boxes[:, [3, 1]]
        return image, boxes, depth

    def __repr__(self) -> str:
        return f"RandomFlip(prob={self.prob}, horizontal={self.horizontal})"


class ColorJitter:
    """torchvision-style colour jitter on a uint8 RGB image; boxes and depth pass through."""

    def __init__(self, brightness: float = 0.0, contrast: float = 0.0, saturation: float = 0.0,
                 hue: float = 0.0) -> None:
        if not 0.0 <= hue <= 0.5:
            raise ValueError(f"hue jitter must be in [0, 0.5], got {hue}")
        self.brightness, self.contrast, self.saturation, self.hue = (float(brightness), float(contrast),
                                                                     float(saturation), float(hue))

    @property
    def active(self) -> bool:
        return any(v > 0 for v in (self.brightness, self.contrast, self.saturation, self.hue))

    @staticmethod
    def _gray(img: np.ndarray) -> np.ndarray:
        return img @ np.array([0.299, 0.587, 0.114], dtype=np.float32)

    def __call__(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                 depth: Optional[np.ndarray] = None) -> Arrays:
        if not self.active:
            return image, boxes, depth
        img = image.astype(np.float32)
        for op in np.random.permutation(4):
            if op == 0 and self.brightness > 0:
                img = img * np.random.uniform(max(0.0, 1 - self.brightness), 1 + self.brightness)
            elif op == 1 and self.contrast > 0:
                f = np.random.uniform(max(0.0, 1 - self.contrast), 1 + self.contrast)
                img = (img - self._gray(img).mean()) * f + self._gray(img).mean()
            elif op == 2 and self.saturation > 0:
                f = np.random.uniform(max(0.0, 1 - self.saturation), 1 + self.saturation)
                g = self._gray(img)[..., None]
                img = (img - g) * f + g
            elif op == 3 and self.hue > 0:
                shift = np.random.uniform(-self.hue, self.hue)
                hsv = cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2HSV_FULL)
                hsv[..., 0] = (hsv[..., 0].astype(np.int32) + int(round(shift * 256))) % 256
                img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB_FULL).astype(np.float32)
            img = np.clip(img, 0, 255)
        return img.round().astype(np.uint8), boxes, depth

    def __repr__(self) -> str:
        return (f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
                f"saturation={self.saturation}, hue={self.hue})")


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence) -> None:
        self.transforms: List = list(transforms)

    def __call__(self, image: np.ndarray, boxes: Optional[np.ndarray] = None,
                 depth: Optional[np.ndarray] = None) -> Arrays:
        if depth is not None and depth.shape[:2] != image.shape[:2]:
            raise ValueError(f"depth map {depth.shape[:2]} and image {image.shape[:2]} differ in size: "
                             f"they must be pixel-aligned before augmentation")
        for t in self.transforms:
            image, boxes, depth = t(image, boxes, depth)
        return image, boxes, depth

    def __repr__(self) -> str:
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


def build_transforms(is_train: bool, *, min_size_train: Sequence[int] = (600,), max_size_train: int = 1000,
                     min_size_test: int = 600, max_size_test: int = 1000, hflip_prob: float = 0.0,
                     vflip_prob: float = 0.0, brightness: float = 0.0, contrast: float = 0.0,
                     saturation: float = 0.0, hue: float = 0.0, depth_interp: str = "nearest") -> Compose:
    """SGB's pipeline: colour jitter (train), resize, flips (train). Test: resize only."""
    if not is_train:
        return Compose([ResizeShortestEdge(min_size_test, max_size_test, depth_interp)])
    ts: List = []
    jitter = ColorJitter(brightness, contrast, saturation, hue)
    if jitter.active:
        ts.append(jitter)
    ts.append(ResizeShortestEdge(min_size_train, max_size_train, depth_interp))
    if hflip_prob > 0:
        ts.append(RandomFlip(hflip_prob, horizontal=True))
    if vflip_prob > 0:
        ts.append(RandomFlip(vflip_prob, horizontal=False))
    return Compose(ts)
