"""One SynthVG image: layout -> visibility -> render -> annotation (:func:`generate_image`).

Each image uses ``np.random.default_rng([seed, index, stream])`` (streams: 0 layout, 1 render,
2 annotation), so an image depends only on the config and its index. The annotation applies the
relation rule (:mod:`.rules`) to what a loader will see: the boxes after the h5 encode / decode
and clipping, and the per-object depths estimated from the rendered depth map. It is sparse
(each true relation kept with probability ``keep_prob`` x a per-coarse salience, at most
``max_rels_per_image``) and uses the coarse word with probability ``coarse_prob`` and the fine
word otherwise; a few images (``no_rel_fraction``) keep their objects but no relation. Every
image is test with probability ``test_fraction``.
"""
from __future__ import annotations

import numpy as np

from ..datasets.vg150_files import SPLIT_TEST, SPLIT_TRAIN, encode_boxes, loader_boxes
from .layout import sample_layout
from .render import render_image, shape_mask, visible_objects
from .rules import relation_rule, rule_tables
from .world import SynthVGConfig, as_config

__all__ = ["generate_image"]


def generate_image(cfg: SynthVGConfig, index: int, render: bool = True) -> dict:
    """Layout, render and annotate image ``index`` (0-based) of the dataset ``cfg`` describes.

    Returns ``{index, split (0/2), width, height, boxes int64[n,4] xyxy pixels (x2, y2 exclusive),
    labels int64[n], depth_raw int64[n] (true object depth, PNG units), relations int64[m,3]
    (local subject, local object, predicate), coarse/fine [n,n] (the rule's predicates for the
    annotated objects), image uint8[H,W,3] BGR, depth uint16[H,W], num_hidden}``. Objects of the
    layout that would be mostly hidden (their estimated depth is not their own) are not drawn.
    """
    cfg = as_config(cfg)
    T = rule_tables(cfg)
    rng_layout = np.random.default_rng([cfg.seed, index, 0])
    rng_render = np.random.default_rng([cfg.seed, index, 1])
    rng_ann = np.random.default_rng([cfg.seed, index, 2])
    split = SPLIT_TEST if rng_layout.random() < cfg.test_fraction else SPLIT_TRAIN
    lo, hi = cfg.image_size
    W, H = int(rng_layout.integers(lo, hi + 1)), int(rng_layout.integers(lo, hi + 1))
    L = sample_layout(cfg, T, rng_layout, W, H)
    boxes = np.array(L.boxes, np.int64).reshape(-1, 4)
    labels = np.array(L.labels, np.int64)
    z_raw = np.round(np.array(L.z) * cfg.depth_scale).astype(np.int64)
    masks = [shape_mask(T.look[c][0], x2 - x1, y2 - y1) for c, (x1, y1, x2, y2) in zip(labels, boxes)]
    drawn, depth, est = visible_objects(cfg, W, H, boxes, z_raw, masks)
    boxes, labels, z_raw = boxes[drawn], labels[drawn], z_raw[drawn]
    masks = [m for m, d in zip(masks, drawn) if d]
    img = render_image(cfg, T, rng_render, W, H, boxes, labels, z_raw, masks) if render else None
    # Annotate on what a loader sees: decoded h5 boxes and depths estimated from the depth map.
    dec = loader_boxes(encode_boxes(boxes, W, H), W, H)
    vis = est == z_raw  # all but rare leftovers of the visibility loop
    if not vis.any():
        vis[int(np.argmin(z_raw))] = True
    boxes, labels, z_raw, dec, est = boxes[vis], labels[vis], z_raw[vis], dec[vis], est[vis]
    coarse, fine = relation_rule(dec, labels, est / cfg.depth_scale, cfg)
    s, o = np.nonzero(coarse > 0)
    c, f = coarse[s, o], fine[s, o]
    u_keep, u_fine = rng_ann.random(len(s)), rng_ann.random(len(s))
    keep = u_keep < cfg.keep_prob * T.coarse_keep[c]
    pred = np.where((f > 0) & (u_fine >= cfg.coarse_prob), f, c)
    rels = np.stack([s, o, pred], 1)[keep].astype(np.int64)
    if len(rels) > cfg.max_rels_per_image:
        sel = np.sort(rng_ann.choice(len(rels), cfg.max_rels_per_image, replace=False))
        rels = rels[sel]
    if rng_ann.random() < cfg.no_rel_fraction:
        rels = rels[:0]
    out = {"index": index, "split": split, "width": W, "height": H, "boxes": boxes,
           "labels": labels, "depth_raw": z_raw, "relations": rels.reshape(-1, 3),
           "coarse": coarse, "fine": fine,
           "num_hidden": int((~drawn).sum() + (~vis).sum())}
    if render:
        out["image"], out["depth"] = img, depth
    return out
