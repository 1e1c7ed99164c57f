"""Depth maps -> the 3-channel input of the STDG depth teacher (specs/onestage.md, "STDG depth teacher").

:func:`encode_depth` turns a metric depth map ``float32 [H, W]`` (metres, ``0`` = missing) into
``float32 [3, H, W]``, every channel in ``[0, 1]``:

``mode="hha"`` -- HHA-like (Gupta et al., ECCV 2014), simplified for a level pinhole camera:

* channel 0, **disparity**: ``min(1, min_depth / depth)`` (``min_depth`` 1 m by default): absolute
  inverse depth, as HHA's first channel; closer is brighter, depths below ``min_depth`` saturate.
* channel 1, **height** above the lowest visible point: every pixel is back-projected with a
  pinhole camera (principal point at the image centre ``((W - 1) / 2, (H - 1) / 2)``, focal length
  ``focal`` pixels, default the image width), the camera assumed level (no roll, no pitch), so the
  height is ``-(v - cy) * depth / focal`` (image rows grow downwards); minus its minimum over the
  image, divided by its maximum over the image (per-image ``[0, 1]``; 0 when the image is flat).
* channel 2, **angle** between the local surface normal and the vertical (up) direction, divided by
  180 degrees: floors 0, walls and fronto-parallel surfaces 0.5, ceilings 1. The normal is the
  cross product of the back-projected points' central differences along the columns and the rows
  (``np.gradient``), turned towards the camera. Two points of a plane differ by a vector in that
  plane, so a planar surface gets one exact angle everywhere (its edges included).

``mode="normalized"`` -- ``depth / max(depth)`` replicated to the 3 channels (``(0, 1]``).

Missing depth (``0``, negative or non-finite values) is filled with the depth of the NEAREST valid
pixel (Euclidean distance, ``cv2.distanceTransformWithLabels``) before encoding, so holes take the
depth of the surface beside them rather than a far plane that would invent depth edges (and
normals) around them. A map without any valid pixel encodes to all zeros.

The focal length and ``min_depth`` are in the units of the map given (pixels of THIS resolution,
metres): encode at the original image resolution, before any resize (the mapper does).

:func:`encode_depth_folder` (used by ``tools/encode_depth.py``) converts a folder of depth maps
(16-bit PNG in millimetres, or ``.npy`` in metres) to ``{stem}.npy`` float16 ``[3, H, W]`` files,
which the mapper reads as ready encodings (``INPUT.DEPTH_ENCODING`` set and such a file in the
depth folder).
"""
from __future__ import annotations

import logging
import os
from typing import Dict, List, Optional

import numpy as np

from sgg.utils.io import atomic_numpy_save

logger = logging.getLogger(__name__)

__all__ = ["ENCODINGS", "encode_depth", "encode_depth_folder", "fill_missing_depth", "is_encoded_depth",
           "read_depth_file"]

#: the values of ``INPUT.DEPTH_ENCODING`` / ``mode`` ("" = raw depth, no encoding)
ENCODINGS = ("hha", "normalized")
_DEPTH_EXTS = (".png", ".npy")


def fill_missing_depth(depth: np.ndarray) -> np.ndarray:
    """``float [H, W]`` with missing entries (``<= 0`` or non-finite) replaced by the depth of the
    nearest valid pixel (float64 copy). All-missing -> zeros."""
    d = np.asarray(depth, dtype=np.float64)
    valid = np.isfinite(d) & (d > 0)
    if valid.all():
        return d.copy()
    if not valid.any():
        return np.zeros_like(d)
    import cv2

    # distance to the nearest ZERO pixel of ``src``: the valid pixels are the zeros, and with
    # DIST_LABEL_PIXEL every pixel gets the label of its nearest one
    src = (~valid).astype(np.uint8)
    _, labels = cv2.distanceTransformWithLabels(src, cv2.DIST_L2, cv2.DIST_MASK_PRECISE,
                                                labelType=cv2.DIST_LABEL_PIXEL)
    lut = np.zeros(int(labels.max()) + 1, np.float64)
    lut[labels[valid]] = d[valid]
    return lut[labels]


def encode_depth(depth_m: np.ndarray, mode: str = "hha", focal: Optional[float] = None,
                 min_depth: float = 1.0) -> np.ndarray:
    """Encode a depth map for the depth teacher (module docstring for the channels).

    Args:
        depth_m: float ``[H, W]`` depth in metres; ``0`` (or negative / non-finite) = missing.
        mode: ``"hha"`` (disparity, height, angle) or ``"normalized"`` (depth / max, x3).
        focal: focal length in pixels of this map for the HHA back-projection (None or <= 0: the
            image width, i.e. a ~53 degree horizontal field of view).
        min_depth: HHA disparity = ``min(1, min_depth / depth)`` (metres).

    Returns:
        float32 ``[3, H, W]``, every value in ``[0, 1]``.
    """
    if mode not in ENCODINGS:
        raise ValueError(f"depth encoding must be one of {ENCODINGS}, got {mode!r} (INPUT.DEPTH_ENCODING)")
    d = np.asarray(depth_m)
    if d.ndim != 2:
        raise ValueError(f"encode_depth expects a depth map [H, W], got shape {d.shape}")
    if min_depth <= 0:
        raise ValueError(f"min_depth must be > 0 metres, got {min_depth}")
    h, w = d.shape
    d = fill_missing_depth(d)
    out = np.zeros((3, h, w), np.float32)
    dmax = float(d.max()) if d.size else 0.0
    if dmax <= 0:
        return out
    if mode == "normalized":
        out[:] = (d / dmax).astype(np.float32)[None]
        return out

    f = float(focal) if focal is not None and focal > 0 else float(w)
    out[0] = np.minimum(1.0, min_depth / d)
    # back-projection, camera frame: x right, y down, z forward
    u = np.arange(w, dtype=np.float64) - (w - 1) / 2.0
    v = np.arange(h, dtype=np.float64) - (h - 1) / 2.0
    x = u[None, :] * d / f
    y = v[:, None] * d / f
    height = -y
    height = height - height.min()
    hmax = float(height.max())
    out[1] = height / hmax if hmax > 0 else 0.0
    points = np.stack([x, y, d], axis=-1)  # [H, W, 3]
    if h > 1 and w > 1:
        du = np.gradient(points, axis=1)
        dv = np.gradient(points, axis=0)
        normal = np.cross(du, dv)  # [H, W, 3]
        # towards the camera: n . P < 0
        facing_away = (normal * points).sum(-1) > 0
        normal[facing_away] *= -1.0
        norm = np.linalg.norm(normal, axis=-1)
        up_component = -normal[..., 1] / np.maximum(norm, 1e-12)  # n . (0, -1, 0)
        angle = np.arccos(np.clip(up_component, -1.0, 1.0)) / np.pi
        out[2] = np.where(norm > 0, angle, 0.5)  # degenerate normal: treated as fronto-parallel
    else:
        out[2] = 0.5
    return out


def is_encoded_depth(array: np.ndarray) -> bool:
    """Whether ``array`` is a ready 3-channel encoding ``[3, H, W]`` (else a raw map ``[H, W]``)."""
    return array.ndim == 3 and array.shape[0] == 3


def read_depth_file(path: str, png_scale: float = 0.001, npy_scale: float = 1.0) -> np.ndarray:
    """A raw depth map in metres, float32 ``[H, W]``: 16-bit PNG times ``png_scale`` (mm -> m by
    default) or ``.npy`` times ``npy_scale``. Raises naming the file when it cannot be read."""
    from .datasets.vg150 import load_depth

    scale = npy_scale if path.lower().endswith(".npy") else png_scale
    try:
        return load_depth(path, scale)
    except Exception as e:  # noqa: BLE001 - missing, truncated, not an image, wrong shape: one message
        raise ValueError(f"cannot read depth map '{path}': {e}") from e


def encode_depth_folder(depth_dir: str, out_dir: str, mode: str = "hha", *, focal: Optional[float] = None,
                        min_depth: float = 1.0, png_scale: float = 0.001, npy_scale: float = 1.0,
                        overwrite: bool = False, progress: bool = True) -> Dict[str, int]:
    """Encode every ``*.png`` / ``*.npy`` depth map of ``depth_dir`` into ``out_dir/{stem}.npy``
    (float16 ``[3, H, W]``, :func:`encode_depth`). Existing outputs are kept unless ``overwrite``.

    Returns ``{"written": n, "skipped": n}``. Raises ``FileNotFoundError`` when ``depth_dir`` holds
    no depth map and ``ValueError`` naming the first file that cannot be read.
    """
    if not os.path.isdir(depth_dir):
        raise FileNotFoundError(f"depth folder '{depth_dir}' does not exist")
    if mode not in ENCODINGS:
        raise ValueError(f"mode must be one of {ENCODINGS}, got {mode!r}")
    names = sorted(n for n in os.listdir(depth_dir) if n.lower().endswith(_DEPTH_EXTS))
    if not names:
        raise FileNotFoundError(f"no depth maps (*.png, *.npy) in '{depth_dir}'")
    if os.path.abspath(depth_dir) == os.path.abspath(out_dir):
        raise ValueError(f"--out must differ from --depth-dir ('{depth_dir}'): the encodings would replace "
                         f"the .npy depth maps")
    os.makedirs(out_dir, exist_ok=True)
    stems: Dict[str, str] = {}
    for n in names:
        stem = os.path.splitext(n)[0]
        if stem in stems:
            raise ValueError(f"'{depth_dir}' holds both {stems[stem]} and {n}: keep one depth map per image")
        stems[stem] = n
    iterator: List[str] = names
    if progress:
        from tqdm import tqdm

        iterator = tqdm(names, desc=f"encoding depth ({mode})")
    written = skipped = 0
    for n in iterator:
        dst = os.path.join(out_dir, os.path.splitext(n)[0] + ".npy")
        if not overwrite and os.path.isfile(dst):
            skipped += 1
            continue
        depth = read_depth_file(os.path.join(depth_dir, n), png_scale, npy_scale)
        enc = encode_depth(depth, mode, focal=focal, min_depth=min_depth).astype(np.float16)
        atomic_numpy_save(dst, enc)
        written += 1
    logger.info("encoded %d depth maps (%s) from %s into %s (%d kept)", written, mode, depth_dir, out_dir, skipped)
    return {"written": written, "skipped": skipped}
