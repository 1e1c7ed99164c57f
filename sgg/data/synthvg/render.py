"""SynthVG rendering: the image and its depth map, drawn back to front.

Every object is a flat sprite of its class's look (shape x colour x texture, :mod:`.world`) at
its own depth; sprites are drawn far to near (painter's z-buffer) over a background whose depth
falls from ``background_depth[0]`` (top row) to ``background_depth[1]`` (bottom row), and the
depth map (uint16, ``depth_scale`` units per metre) is written with the same z-buffer. Objects
that would be mostly hidden are not drawn (:func:`visible_objects`).
"""
from __future__ import annotations

import functools
import math
from typing import Tuple

import cv2
import numpy as np

from ..datasets.vg150_files import encode_boxes, loader_boxes
from .rules import estimate_object_depths
from .world import COLOURS, SHAPES, TEXTURES, SynthVGConfig

__all__ = ["shape_mask", "visible_objects", "render_image"]

_BACKGROUNDS = ((150, 140, 130), (120, 135, 125), (135, 125, 145), (110, 115, 130),
                (145, 150, 150), (125, 120, 110))


def shape_mask(shape: int, w: int, h: int) -> np.ndarray:
    """uint8 0/1 [h, w] mask of shape ``SHAPES[shape]`` filling its box and touching all four sides."""
    m = np.zeros((h, w), np.uint8)
    name = SHAPES[shape]
    X, Y = w - 1, h - 1
    sh = 4  # sub-pixel bits for cv2 drawing
    f = float(1 << sh)

    def poly(pts):
        cv2.fillPoly(m, [np.round(np.array(pts, np.float64) * f).astype(np.int32)], 1,
                     lineType=cv2.LINE_8, shift=sh)

    if name == "rectangle":
        m[:] = 1
    elif name in ("ellipse", "ring"):
        center = (int(round(X / 2 * f)), int(round(Y / 2 * f)))
        cv2.ellipse(m, center, (int(round(X / 2 * f)), int(round(Y / 2 * f))), 0, 0, 360, 1, -1,
                    cv2.LINE_8, sh)
        if name == "ring":
            cv2.ellipse(m, center, (int(round(X * 0.2 * f)), int(round(Y * 0.2 * f))), 0, 0, 360,
                        0, -1, cv2.LINE_8, sh)
    elif name == "trapezoid":
        poly([(0, Y), (X, Y), (3 * X / 4, 0), (X / 4, 0)])
    elif name == "inv_trapezoid":
        poly([(0, 0), (X, 0), (3 * X / 4, Y), (X / 4, Y)])
    elif name == "octagon":
        a, b = X * 0.28, Y * 0.28
        poly([(a, 0), (X - a, 0), (X, b), (X, Y - b), (X - a, Y), (a, Y), (0, Y - b), (0, b)])
    elif name == "hexagon":
        poly([(X / 4, 0), (3 * X / 4, 0), (X, Y / 2), (3 * X / 4, Y), (X / 4, Y), (0, Y / 2)])
    elif name == "cross":
        m[int(h / 4): max(int(3 * h / 4), int(h / 4) + 1), :] = 1
        m[:, int(w / 4): max(int(3 * w / 4), int(w / 4) + 1)] = 1
    # keep the box tight: every side touched
    if not m[0].any():
        m[0, w // 2] = 1
    if not m[-1].any():
        m[-1, w // 2] = 1
    if not m[:, 0].any():
        m[h // 2, 0] = 1
    if not m[:, -1].any():
        m[h // 2, -1] = 1
    return m  # uint8 0/1


def _texture(rng, texture: int, colour, w: int, h: int) -> np.ndarray:
    """A w x h BGR patch: the class colour (brightness jitter) with a texture in a second tone."""
    g = rng.uniform(0.85, 1.15)
    c1 = [min(255.0, v * g) for v in colour]
    c2 = [v * 0.35 for v in c1] if sum(c1) > 450 else [v * 0.4 + 153.0 for v in c1]
    out = np.empty((h, w, 3), np.uint8)
    cv2.rectangle(out, (0, 0), (w, h), c1, -1)  # cv2 fills are much faster than numpy broadcasting
    name = TEXTURES[texture]
    if name == "solid":
        return out
    p = min(max(int(round(min(w, h) / 5)), 3), 8)
    ph = int(rng.integers(0, p))
    yy, xx = np.arange(ph, h + ph), np.arange(ph, w + ph)
    if name == "stripes":
        m = np.broadcast_to(((yy // max(p // 2, 1)) % 2 == 1)[:, None], (h, w))
    elif name == "dots":
        r = max(p * 0.3, 0.8)
        m = ((xx % p - (p - 1) / 2) ** 2)[None, :] + ((yy % p - (p - 1) / 2) ** 2)[:, None] <= r * r
    else:
        q = max(p // 2, 2)
        m = ((yy // q) % 2)[:, None] != ((xx // q) % 2)[None, :]
    second = np.empty_like(out)
    cv2.rectangle(second, (0, 0), (w, h), c2, -1)
    _paste(out, second, np.ascontiguousarray(m, dtype=np.uint8))
    return out


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed field of pixel noise (uint8 positive / negative parts), cropped per image."""
    n = np.random.default_rng(12345).integers(-5, 6, size=(size, size, 3), dtype=np.int16)
    return np.maximum(n, 0).astype(np.uint8), np.maximum(-n, 0).astype(np.uint8)


def _background_depth(cfg: SynthVGConfig, W: int, H: int) -> np.ndarray:
    dtop, dbot = cfg.background_depth
    t = np.linspace(0.0, 1.0, H)[:, None]
    return np.repeat(np.round((dtop + (dbot - dtop) * t) * cfg.depth_scale).astype(np.uint16), W, axis=1)


def _paste(dst: np.ndarray, src: np.ndarray, mask: np.ndarray):
    """dst[mask] = src[mask] in place (``dst`` may be a view); cv2 is ~10x faster than numpy here."""
    out = cv2.copyTo(src, mask, dst)
    if not np.shares_memory(out, dst):  # pragma: no cover - cv2 always writes a matching view
        np.copyto(dst, out)


def visible_objects(cfg: SynthVGConfig, W: int, H: int, boxes, z_raw, masks, max_rounds: int = 4):
    """Objects to draw: mostly hidden ones (whose estimated depth is not their own) are removed.

    Removing an object uncovers what is behind it, so the test repeats a few times. Returns
    (keep [N] bool, the depth map of the kept objects, their estimated depths).
    """
    keep = np.ones(len(boxes), bool)
    dec = loader_boxes(encode_boxes(boxes, W, H), W, H)
    for _ in range(max_rounds):
        depth = _background_depth(cfg, W, H)
        idx = np.nonzero(keep)[0]
        for i in sorted(idx.tolist(), key=lambda i: (-z_raw[i], i)):  # far to near
            x1, y1, x2, y2 = boxes[i]
            _paste(depth[y1:y2, x1:x2], np.full((y2 - y1, x2 - x1), z_raw[i], np.uint16), masks[i])
        est = estimate_object_depths(depth, dec[idx], cfg.background_min_mm)
        ok = est == z_raw[idx]
        if ok.all():
            break
        if not ok.any():  # never empty an image: keep the nearest object
            ok[int(np.argmin(z_raw[idx]))] = True
        keep[idx[~ok]] = False
    return keep, depth, est


def render_image(cfg: SynthVGConfig, T, rng, W: int, H: int, boxes, labels, z_raw, masks) -> np.ndarray:
    """The uint8 BGR [H, W, 3] image: painter's algorithm (far to near), the same order as the
    depth map, over a vertical gradient, plus a crop of fixed pixel noise."""
    top, bot = (np.array(_BACKGROUNDS[int(i)], np.float64) for i in rng.choice(len(_BACKGROUNDS), 2))
    t = np.linspace(0.0, 1.0, H)[:, None]
    grad = (top[None, :] * (1 - t) + bot[None, :] * t).astype(np.uint8)[:, None, :]
    img = cv2.resize(grad, (W, H), interpolation=cv2.INTER_NEAREST)
    for i in sorted(range(len(labels)), key=lambda i: (-z_raw[i], i)):
        x1, y1, x2, y2 = boxes[i]
        _, colour, texture = T.look[labels[i]]
        _paste(img[y1:y2, x1:x2], _texture(rng, texture, COLOURS[colour][1], x2 - x1, y2 - y1), masks[i])
    size = 64 * int(math.ceil((max(W, H) + 64) / 64))
    pos, neg = _noise_bank(size)
    ox, oy = int(rng.integers(0, size - W + 1)), int(rng.integers(0, size - H + 1))
    return cv2.subtract(cv2.add(img, pos[oy:oy + H, ox:ox + W]), neg[oy:oy + H, ox:ox + W])
