"""Dataset dict -> model input (see DESIGN.md, "Data flow").

:class:`SceneGraphMapper` reads the image (and depth map), applies the augmentations of
``transforms.py`` to image, boxes and depth together, and returns::

    {"image": uint8 Tensor [3, H, W] (RGB, resized),
     "image_id": int, "file_name": str,
     "height": int, "width": int,                 # ORIGINAL size (image_data.json)
     "instances": Instances((H, W), gt_boxes=Boxes [N, 4] (resized frame), gt_classes=int64 [N]
                            [, gt_attributes=int64 [N, 10]]),       # GT
     "relations": int64 Tensor [M, 3],            # GT: (subject idx, object idx, predicate)
     "depth": float32 Tensor [1, H, W]}           # only when depth loading is on: metres (x
                                                  # INPUT.DEPTH_SCALE), or [3, H, W] encoded
                                                  # (INPUT.DEPTH_ENCODING, depth_encoding.py)

GT is ALWAYS in the dict, at test time too, because the evaluator needs it. The keys that hold
GT are :data:`GT_KEYS`; what a model may read at test time depends on the protocol:
PredCls -> GT boxes and labels, SGCls -> GT boxes, SGDet -> nothing. Models must take their test
inputs through :func:`visible_inputs` (or read only what it keeps), so that SGDet inference works
with every GT key removed.
"""
from __future__ import annotations

import copy
import logging
import os
from typing import Any, Callable, Dict, Optional, Sequence

import numpy as np
import torch
from yacs.config import CfgNode as CN

from sgg.protocol import GT_KEYS, MODES, visible_inputs  # noqa: F401  (visible_inputs: re-exported)
from sgg.structures import Boxes, Instances

from .depth_encoding import ENCODINGS, encode_depth, is_encoded_depth
from .transforms import Compose, build_transforms

logger = logging.getLogger(__name__)







def _default_image_loader(path: str) -> np.ndarray:
    from .datasets.vg150 import load_image

    return load_image(path)


def _default_depth_loader(path: str, scale: float) -> np.ndarray:
    from .datasets.vg150 import load_depth

    return load_depth(path, scale)


class SceneGraphMapper:
    """Callable turning a dataset dict into a model input (module docstring).

    Build it from keywords, ``SceneGraphMapper(is_train=True, mode="sgdet", min_size_train=(600,),
    ...)``, or from a config, ``SceneGraphMapper.from_config(cfg, is_train, mode, **overrides)``
    (keywords given there override the config's values).

    Args (keywords):
        is_train: training augmentations (random size, flips, jitter) vs the test resize.
        mode: ``predcls | sgcls | sgdet``; the output is the same in every mode (GT included), the
            mode is what :meth:`visible` filters with.
        min_size_train, max_size_train, min_size_test, max_size_test: resize (SGB ``INPUT.*``).
        hflip_prob, vflip_prob: flip probabilities (train only).
        brightness, contrast, saturation, hue: colour jitter (train only, never on depth).
        load_depth: read ``dataset_dict["depth_file"]`` and return ``depth``.
        depth_interp: ``"nearest"`` or ``"linear"``; depth_scale: multiplies stored depth values.
        depth_encoding: ``""`` (raw depth ``[1, H, W]``), ``"hha"`` or ``"normalized"``: ``depth``
            is :func:`~sgg.data.depth_encoding.encode_depth` of the map at the image's original
            resolution, ``[3, H, W]``, then transformed with the image (same resize and flips;
            colour jitter never touches it). A ``.npy`` file holding ``[3, H, W]`` (made by
            ``tools/encode_depth.py``) is taken as the ready encoding.
        depth_focal: focal length (original pixels) of the HHA back-projection (<= 0: image width).
        transforms: a ready :class:`~sgg.data.transforms.Compose` (replaces the above).
        image_loader: ``path -> uint8 [H, W, 3] RGB`` (default ``vg150.load_image``).
        depth_loader: ``(path, scale) -> float32 [H, W]`` (default ``vg150.load_depth``).
    """

    @classmethod
    def from_config(cls, cfg: CN, is_train: bool = True, mode: str = "sgdet", **overrides: Any) -> "SceneGraphMapper":
        inp = cfg.INPUT
        params: Dict[str, Any] = dict(
            min_size_train=tuple(inp.MIN_SIZE_TRAIN),
            max_size_train=inp.MAX_SIZE_TRAIN,
            min_size_test=inp.MIN_SIZE_TEST,
            max_size_test=inp.MAX_SIZE_TEST,
            # SGB flips with probability 0.5 when MODEL.FLIP_AUG is on (off by default).
            hflip_prob=0.5 if cfg.MODEL.FLIP_AUG else 0.0,
            vflip_prob=inp.VERTICAL_FLIP_PROB_TRAIN,
            brightness=inp.BRIGHTNESS,
            contrast=inp.CONTRAST,
            saturation=inp.SATURATION,
            hue=inp.HUE,
            load_depth=bool(inp.LOAD_DEPTH),
            depth_interp=inp.DEPTH_INTERP,
            depth_scale=float(inp.DEPTH_SCALE),
            depth_encoding=inp.DEPTH_ENCODING,
            depth_focal=float(inp.DEPTH_FOCAL),
        )
        params.update(overrides)
        return cls(is_train, mode, **params)

    def __init__(self, is_train: bool = True, mode: str = "sgdet", *, min_size_train: Sequence[int] = (600,),
               max_size_train: int = 1000, min_size_test: int = 600, max_size_test: int = 1000,
               hflip_prob: float = 0.0, vflip_prob: float = 0.0, brightness: float = 0.0,
               contrast: float = 0.0, saturation: float = 0.0, hue: float = 0.0, load_depth: bool = False,
               depth_interp: str = "nearest", depth_scale: float = 1.0, depth_encoding: str = "",
               depth_focal: float = 0.0, transforms: Optional[Compose] = None,
               image_loader: Optional[Callable[[str], np.ndarray]] = None,
               depth_loader: Optional[Callable[[str, float], np.ndarray]] = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.is_train = bool(is_train)
        self.mode = mode
        self.load_depth = bool(load_depth)
        self.depth_scale = float(depth_scale)
        self.depth_interp = depth_interp
        if depth_encoding not in ("",) + ENCODINGS:
            raise ValueError(f"INPUT.DEPTH_ENCODING must be '' or one of {ENCODINGS}, got {depth_encoding!r}")
        self.depth_encoding = depth_encoding
        self.depth_focal = float(depth_focal)
        self.transforms = transforms if transforms is not None else build_transforms(
            self.is_train, min_size_train=min_size_train, max_size_train=max_size_train,
            min_size_test=min_size_test, max_size_test=max_size_test, hflip_prob=hflip_prob,
            vflip_prob=vflip_prob, brightness=brightness, contrast=contrast, saturation=saturation, hue=hue,
            depth_interp=depth_interp)
        self.image_loader = image_loader or _default_image_loader
        self.depth_loader = depth_loader or _default_depth_loader

    def visible(self, d: Dict[str, Any]) -> Dict[str, Any]:
        """:func:`visible_inputs` with this mapper's mode."""
        return visible_inputs(d, self.mode)

    def _read_depth(self, path: str, hw: Sequence[int]) -> np.ndarray:
        """The depth of an image of size ``hw``, pixel-aligned with it: float32 ``[H, W]`` (raw,
        times ``depth_scale``) or, with ``depth_encoding``, the encoding ``[H, W, 3]`` (channels
        last, as the transforms take it), computed at this (original) resolution."""
        import cv2

        encoded = None
        if path.lower().endswith(".npy") and os.path.isfile(path):
            try:
                peek = np.load(path, mmap_mode="r")
            except (ValueError, OSError) as e:  # truncated / pickled .npy: name the file
                raise ValueError(f"cannot read depth map '{path}': {e}") from e
            if is_encoded_depth(peek):
                if not self.depth_encoding:
                    raise ValueError(f"'{path}' holds a 3-channel depth encoding {tuple(peek.shape)} but "
                                     f"INPUT.DEPTH_ENCODING is empty (raw depth expected): set INPUT.DEPTH_ENCODING "
                                     f"to the encoding's mode, or point the depth folder at raw depth maps")
                encoded = np.ascontiguousarray(np.asarray(peek, dtype=np.float32).transpose(1, 2, 0))
            del peek
        depth = encoded if encoded is not None else self.depth_loader(path, self.depth_scale)
        h, w = int(hw[0]), int(hw[1])
        if depth.shape[:2] != (h, w):
            dh, dw = depth.shape[:2]
            if abs(dw / dh - w / h) > 0.01 * (w / h):
                raise ValueError(f"depth map '{path}' is {dh}x{dw} (HxW) but its image is {h}x{w}: the aspect "
                                 f"ratios differ, so the depth cannot be aligned with the image")
            interp = cv2.INTER_NEAREST_EXACT if self.depth_interp == "nearest" else cv2.INTER_LINEAR
            depth = cv2.resize(depth, (w, h), interpolation=interp)
        depth = depth.astype(np.float32, copy=False)
        if self.depth_encoding and encoded is None:
            depth = np.ascontiguousarray(
                encode_depth(depth, self.depth_encoding, focal=self.depth_focal or None).transpose(1, 2, 0))
        return depth

    def __call__(self, dataset_dict: Dict[str, Any]) -> Dict[str, Any]:
        d = copy.copy(dataset_dict)
        image = self.image_loader(d["file_name"])
        height, width = int(d["height"]), int(d["width"])
        boxes = np.asarray(d.get("boxes", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
        ih, iw = image.shape[:2]
        if (ih, iw) != (height, width):
            # Annotations live in the (height, width) frame of image_data.json; follow the pixels.
            logger.warning("image '%s' is %dx%d (HxW) but the dataset says %dx%d; boxes are rescaled to the "
                           "image", d["file_name"], ih, iw, height, width)
            boxes = boxes * np.array([iw / width, ih / height, iw / width, ih / height], dtype=np.float32)
        depth = None
        if self.load_depth:
            if "depth_file" not in d:
                raise KeyError(f"depth loading is on (INPUT.LOAD_DEPTH) but image '{d['file_name']}' has no "
                               f"depth_file: build the dataset with its depth folder")
            try:
                depth = self._read_depth(d["depth_file"], (ih, iw))
            except FileNotFoundError as e:
                raise FileNotFoundError(
                    f"depth map '{d['depth_file']}' of image '{d['file_name']}' does not exist: INPUT.LOAD_DEPTH "
                    f"is on, so every image needs a depth map ({{image_id}}.png 16-bit or .npy) in the depth "
                    f"folder '{os.path.dirname(d['depth_file'])}'. Add the missing maps, or set INPUT.LOAD_DEPTH "
                    f"False (RGB-only models never read depth)") from e

        image, boxes, depth = self.transforms(image, boxes, depth)
        h, w = image.shape[:2]
        fields = {
            "gt_boxes": Boxes(torch.from_numpy(np.ascontiguousarray(boxes, dtype=np.float32))),
            "gt_classes": torch.as_tensor(np.asarray(d.get("labels", np.zeros(0)), dtype=np.int64)),
        }
        if "attributes" in d:
            fields["gt_attributes"] = torch.as_tensor(np.asarray(d["attributes"], dtype=np.int64))
        out = {
            "image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
            "image_id": d["image_id"],
            "file_name": d["file_name"],
            "height": height,
            "width": width,
            "instances": Instances((h, w), **fields),
            "relations": torch.as_tensor(np.asarray(d.get("relations", np.zeros((0, 3))),
                                                    dtype=np.int64).reshape(-1, 3)),
        }
        if depth is not None:
            depth = np.ascontiguousarray(depth.transpose(2, 0, 1) if depth.ndim == 3 else depth[None],
                                         dtype=np.float32)
            out["depth"] = torch.from_numpy(depth)
        return out
