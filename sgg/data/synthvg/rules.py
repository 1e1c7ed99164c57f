"""SynthVG's relation rule: geometry types, the predicate table and hierarchy, the oracle baseline.

:func:`relation_rule` decides, for every ordered pair of objects, a geometry type from the boxes,
the classes and the per-object depths (part of, has, holding, on, hanging below, in, behind, in
front of, above, under, near) and maps (geometry, subject class, object class) to a coarse
predicate and, for some class pairs, a fine one (``on`` -> ``parked on`` for a vehicle on a
street, ``sitting on`` for a person on a seat, ...). Parts relate only to their whole. The
generator annotates with this rule on exactly the data a loader sees (the loader's boxes and
depths estimated from the written depth map, :func:`estimate_object_depths`);
:func:`rule_predictions` scores an image with it (a training-free oracle baseline).

Predicate hierarchy (:func:`predicate_hierarchy`, written as ``predicate_hierarchy.json``)::

    {"coarse": [...], "fine": [...], "children": {coarse: [fine, ...]},
     "parent": {predicate: coarse}   # every predicate; a coarse one maps to itself
     "parent_idx": {"fine idx": coarse idx}, "coarse_prob": 0.7}
"""
from __future__ import annotations

import functools
from types import SimpleNamespace
from typing import Dict, Optional, Tuple

import numpy as np

from .world import SynthVGConfig, as_config, class_mask, tables

__all__ = [
    "GEOMETRIES", "G", "PREDICATE_TABLE", "rule_tables", "predicate_hierarchy", "relation_geometry",
    "relation_rule", "estimate_object_depths", "rule_predictions",
]

# ----------------------------------------------------------------------------------------------
# Geometry types and the predicate table
# ----------------------------------------------------------------------------------------------
GEOMETRIES = ("none", "part", "whole", "hold", "held", "on", "support", "hang", "hung", "in",
              "contains", "behind", "front", "above", "under", "near")
G = {name: i for i, name in enumerate(GEOMETRIES)}

# (geometry, subject selector, object selector, coarse candidates (first in the vocabulary wins),
#  fine predicate or None). First matching entry wins. A selector is None (any) or tokens matched
# against a class's name, kind and tags. Geometries without entries (held, support, hung,
# contains) give no relation.
_A = None
PREDICATE_TABLE: Tuple[Tuple[str, Optional[Tuple[str, ...]], Optional[Tuple[str, ...]], Tuple[str, ...], Optional[str]], ...] = (
    ("part", ("marking",), _A, ("on", "of"), "painted on"),
    ("part", ("plantpart",), _A, ("on", "of"), "growing on"),
    ("part", ("clothing",), _A, ("of",), "belonging to"),
    ("part", ("handle", "drawer", "door"), _A, ("of",), "attached to"),
    ("part", ("part",), _A, ("of",), "part of"),
    ("part", _A, _A, ("of",), None),
    ("whole", ("person", "animal"), ("foot", "lower"), ("has",), "wears"),
    ("whole", ("person", "animal"), ("clothing",), ("has",), "wearing"),
    ("whole", ("sign", "screen"), ("marking",), ("has",), "says"),
    ("whole", _A, ("material",), ("has",), "made of"),
    ("whole", _A, _A, ("has",), None),
    ("hold", _A, ("food",), ("with", "has"), "eating"),
    ("hold", _A, ("device",), ("with", "has"), "using"),
    ("hold", _A, ("sport",), ("with", "has"), "playing"),
    ("hold", _A, ("carry",), ("with", "has"), "carrying"),
    ("hold", ("person",), _A, ("with", "has"), "holding"),
    ("hold", _A, _A, ("with", "has"), None),
    ("on", ("person",), ("ride",), ("on",), "riding"),
    ("on", ("person",), ("lie",), ("on",), "lying on"),
    ("on", ("person",), ("seat",), ("on",), "sitting on"),
    ("on", ("person",), ("ground",), ("on",), "standing on"),
    ("on", ("animal",), ("ground",), ("on",), "walking on"),
    ("on", ("animal",), ("furniture",), ("on",), "laying on"),
    ("on", ("vehicle",), ("ground",), ("on",), "parked on"),
    ("on", ("fixture",), ("structure",), ("on",), "mounted on"),
    ("on", ("plant",), _A, ("on",), "growing on"),
    ("on", ("item", "container"), ("animal", "vehicle"), ("on",), "on back of"),
    ("on", _A, _A, ("on",), None),
    ("hang", _A, _A, ("under",), "hanging from"),
    ("in", ("person", "animal"), ("area", "ground"), ("in",), "walking in"),
    ("in", _A, _A, ("in",), None),
    ("behind", _A, ("cover",), ("behind",), "covered in"),
    ("behind", _A, _A, ("behind",), None),
    ("front", ("cover",), _A, ("in front of",), "covering"),
    ("front", _A, _A, ("in front of",), None),
    ("above", ("bird", "kite"), _A, ("above",), "flying in"),
    ("above", ("flyer",), _A, ("above",), "over"),
    ("above", ("long", "thin"), _A, ("above",), "across"),
    ("above", _A, _A, ("above",), None),
    ("under", _A, _A, ("under",), None),
    ("near", ("person",), ("work",), ("near",), "at"),
    ("near", ("person", "animal"), ("device", "flyer"), ("near",), "watching"),
    ("near", ("person",), ("person",), ("near",), "and"),
    ("near", ("animal",), ("person", "animal"), ("near",), "looking at"),
    ("near", _A, ("long",), ("near",), "along"),
    ("near", ("vehicle", "furniture", "board", "item"), ("structure", "plant"), ("near",), "against"),
    ("near", ("sign",), _A, ("near",), "for"),
    ("near", ("light", "lamp"), _A, ("near",), "from"),
    ("near", ("pole", "post"), _A, ("near",), "to"),
    ("near", ("fence", "railing", "wire"), _A, ("near",), "between"),
    ("near", _A, _A, ("near",), None),
)

# ----------------------------------------------------------------------------------------------
# Predicate tables derived from a config (cached)
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=16)
def rule_tables(cfg: SynthVGConfig) -> SimpleNamespace:
    """:func:`~.world.tables` plus the rule's predicate tables.

    ``coarse`` / ``fine`` int64 [len(GEOMETRIES), C+1, C+1]: the predicate (0 = none) of a
    (geometry, subject class, object class); ``parent`` {fine: coarse}; ``coarse_names`` /
    ``fine_names`` in vocabulary order; ``coarse_keep`` [P+1] the annotator's salience per
    predicate (multiplies ``keep_prob``). A ValueError when the vocabulary makes the hierarchy
    inconsistent (a fine word with two parents, a word both coarse and fine).
    """
    T = SimpleNamespace(**vars(tables(cfg)))
    C1, preds, pidx = len(T.names), T.predicates, T.pidx
    is_part = T.is_part
    coarse = np.zeros((len(GEOMETRIES), C1, C1), np.int64)
    fine = np.zeros_like(coarse)
    filled = np.zeros_like(coarse, dtype=bool)
    parent: Dict[str, str] = {}
    coarse_set, fine_set = set(), set()
    for geom, ssel, osel, cands, fname in PREDICATE_TABLE:
        c = next((p for p in cands if p in pidx), None)
        f = fname if fname in pidx else None
        if c is None and f is None:
            continue
        if c is None:  # the fine word's parents are all missing: it acts as a coarse word
            c, f = f, None
        g = G[geom]
        m = class_mask(T, ssel)[:, None] & class_mask(T, osel)[None, :] & ~filled[g]
        if geom not in ("part", "whole", "hold"):
            # parts (clothing, body parts, wheels, letters) only relate to their whole
            m &= ~is_part[:, None] & ~is_part[None, :]
        coarse[g][m] = pidx[c]
        if f is not None:
            fine[g][m] = pidx[f]
            if parent.setdefault(f, c) != c:
                raise ValueError(f"fine predicate {f!r} has two coarse parents: {parent[f]!r}, {c!r}")
            fine_set.add(f)
        coarse_set.add(c)
        filled[g] |= m
    both = coarse_set & fine_set
    if both:
        raise ValueError(f"predicates used both as coarse and fine: {sorted(both)}")
    T.coarse, T.fine = coarse, fine
    T.parent = parent
    T.coarse_names = tuple(p for p in preds if p in coarse_set)
    T.fine_names = tuple(p for p in preds if p in fine_set)
    keep = np.ones(len(preds) + 1)
    for p, w in cfg.coarse_keep:
        if p in pidx:
            keep[pidx[p]] = w
    T.coarse_keep = keep
    return T


def predicate_hierarchy(cfg_or_dir="tiny") -> dict:
    """The predicate hierarchy of a config (or SynthVG folder / profile name).

    Returns ``{"coarse": [names], "fine": [names], "children": {coarse: [fine, ...]},
    "parent": {predicate: coarse} (coarse predicates map to themselves; predicates the rule never
    produces map to themselves too), "parent_idx": {str(idx): coarse idx},
    "predicate_to_idx": {...}, "coarse_prob": float}``.
    """
    cfg = as_config(cfg_or_dir)
    T = rule_tables(cfg)
    children = {c: [f for f in T.fine_names if T.parent[f] == c] for c in T.coarse_names}
    parent = {p: T.parent.get(p, p) for p in T.predicates}
    return {
        "coarse": list(T.coarse_names),
        "fine": list(T.fine_names),
        "children": children,
        "parent": parent,
        "parent_idx": {str(T.pidx[p]): T.pidx[q] for p, q in parent.items()},
        "predicate_to_idx": dict(T.pidx),
        "coarse_prob": cfg.coarse_prob,
    }


# ----------------------------------------------------------------------------------------------
# The relation rule (vectorised over ordered pairs)
# ----------------------------------------------------------------------------------------------
def relation_geometry(boxes, labels, depths, cfg) -> np.ndarray:
    """Geometry type (index into ``GEOMETRIES``) of every ordered pair; [N, N] int64, diagonal 0.

    boxes: [N, 4] xyxy pixels; labels: [N] in 1..C; depths: [N] metres (smaller = closer).
    """
    cfg = as_config(cfg)
    T = rule_tables(cfg)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(b)
    if n == 0:
        return np.zeros((0, 0), np.int64)
    lab = np.asarray(labels, np.int64).reshape(-1)
    d = np.asarray(depths, np.float64).reshape(-1)
    x1, y1, x2, y2 = b.T
    w, h = np.maximum(x2 - x1, 1e-6), np.maximum(y2 - y1, 1e-6)
    area = w * h
    cx = (x1 + x2) / 2
    S = lambda a: a[:, None]  # noqa: E731  subject along rows
    O = lambda a: a[None, :]  # noqa: E731  object along columns
    ix = np.minimum(S(x2), O(x2)) - np.maximum(S(x1), O(x1))
    iy = np.minimum(S(y2), O(y2)) - np.maximum(S(y1), O(y1))
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    cont_s, cont_o = inter / S(area), inter / O(area)
    dz = S(d) - O(d)
    adz = np.abs(dz)
    ls, lo = S(lab), O(lab)
    cx_in = (S(cx) >= O(x1)) & (S(cx) <= O(x2))

    part = (T.part_pair[ls, lo] & (cont_s >= cfg.part_contain) & (S(area) <= cfg.part_area * O(area))
            & (dz < 0) & (dz >= -cfg.part_dz))
    hmin, hmax = cfg.hold_range
    hold = (T.can_hold[ls, lo] & (cont_o >= hmin) & (cont_o <= hmax) & (O(area) <= 0.5 * S(area))
            & (adz <= cfg.part_dz))
    tol = 0.05 * S(h) + 1.0
    on_rest = (T.can_support[lo] & ~T.is_ground[lo] & (S(y2) >= O(y1) - tol)
               & (S(y2) <= O(y1) + cfg.on_band * O(h)) & (S(y1) < O(y1)) & cx_in
               & (adz <= cfg.on_dz) & (S(w) <= cfg.on_width * O(w)))
    on_ground = (T.is_ground[lo] & T.standable[ls] & (S(y2) > O(y1) + 1.0) & (S(y2) <= O(y2) + 0.5)
                 & cx_in & (dz < 0))
    on = on_rest | on_ground
    hang = (T.can_hang[ls] & T.can_hold_up[lo] & (np.abs(S(y1) - O(y2)) <= tol) & cx_in
            & (adz <= cfg.on_dz))
    inn = (T.can_contain[lo] & (cont_s >= cfg.in_contain) & (S(area) <= cfg.in_area * O(area))
           & (dz < 0))
    ovl = inter >= cfg.overlap_min * np.minimum(S(area), O(area))
    ovl &= inter > 0
    behind = ovl & (dz >= cfg.front_dz)
    front = ovl & (dz <= -cfg.front_dz)
    hov = np.clip(ix, 0, None) / np.minimum(S(w), O(w))
    gap_above = O(y1) - S(y2)
    above = ((gap_above >= 0) & (gap_above <= cfg.above_gap * np.maximum(S(h), O(h)))
             & (hov >= cfg.above_hov) & (adz <= cfg.near_dz))
    gx = np.maximum(0, np.maximum(S(x1) - O(x2), O(x1) - S(x2)))
    gy = np.maximum(0, np.maximum(S(y1) - O(y2), O(y1) - S(y2)))
    near = ((inter <= 0) & (np.maximum(gx, gy) <= cfg.near_frac * 0.5 * (np.sqrt(S(area)) + np.sqrt(O(area))))
            & (adz <= cfg.near_dz))
    conds = [part, part.T, hold, hold.T, on, on.T, hang, hang.T, inn, inn.T, behind, front,
             above, above.T, near]
    codes = [G[g] for g in ("part", "whole", "hold", "held", "on", "support", "hang", "hung", "in",
                            "contains", "behind", "front", "above", "under", "near")]
    geom = np.select(conds, codes, 0).astype(np.int64)
    np.fill_diagonal(geom, 0)
    return geom


def relation_rule(boxes, labels, depths, cfg="tiny", return_geometry: bool = False):
    """The generator's "true" predicates for every ordered pair of an image.

    Args:
        boxes: [N, 4] xyxy pixels (the loader's boxes, ``loader_boxes``); labels: [N] class ids 1..C;
        depths: [N] per-object depth in metres (``estimate_object_depths``);
        cfg: a SynthVGConfig, a profile name or a SynthVG folder.
    Returns:
        (coarse [N, N] int64, fine [N, N] int64): predicate ids (1..P), 0 = no relation / no fine
        refinement; row = subject, column = object, diagonal 0. With ``return_geometry`` also the
        [N, N] geometry codes (``GEOMETRIES``).
    """
    cfg = as_config(cfg)
    T = rule_tables(cfg)
    geom = relation_geometry(boxes, labels, depths, cfg)
    lab = np.asarray(labels, np.int64).reshape(-1)
    coarse = T.coarse[geom, lab[:, None], lab[None, :]]
    fine = T.fine[geom, lab[:, None], lab[None, :]]
    return (coarse, fine, geom) if return_geometry else (coarse, fine)


def estimate_object_depths(depth_map, boxes, background_min: Optional[int] = None) -> np.ndarray:
    """Per-object depth from a depth map: the most frequent non-background value in its box.

    Objects are flat sprites, so the value that fills most of a box (background excluded) is the
    object's own depth unless it is mostly hidden. depth_map: [H, W] raw integer units (uint16 PNG
    values); boxes: [N, 4] xyxy pixels (rounded to the pixel grid); background_min: values >= this
    are background (ignored when the box holds anything else). Returns [N] int64 raw units.
    """
    dm = np.asarray(depth_map)
    if dm.ndim == 3:
        dm = dm[..., 0] if dm.shape[-1] == 1 else dm[0]
    H, W = dm.shape
    b = np.floor(np.asarray(boxes, np.float64).reshape(-1, 4) + 0.5).astype(np.int64)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, W)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, H)
    if not np.issubdtype(dm.dtype, np.integer) or dm.dtype == np.uint64:
        dm = dm.astype(np.int64)
    out = np.zeros(len(b), np.int64)
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        x2, y2 = max(x2, min(x1 + 1, W)), max(y2, min(y1 + 1, H))
        x1, y1 = min(x1, x2 - 1), min(y1, y2 - 1)
        counts = np.bincount(dm[y1:y2, x1:x2].ravel())
        fg = counts[:background_min] if background_min is not None else counts
        out[i] = int(np.argmax(fg)) if fg.any() else int(np.argmax(counts))
    return out


def _depth_to_raw(depth_map, depth_scale: float, unit: str = "auto") -> np.ndarray:
    """Depth map -> raw integer PNG units. ``unit``: "raw", "metres" or "auto" (integer dtype, or
    floats beyond 100 (no SynthVG depth is that many metres), are raw; other floats are metres)."""
    dm = np.asarray(depth_map)
    if hasattr(depth_map, "detach"):  # a torch tensor
        dm = depth_map.detach().cpu().numpy()
    dm = np.squeeze(dm)
    if unit not in ("auto", "raw", "metres"):
        raise ValueError(f"depth unit must be 'auto', 'raw' or 'metres', got {unit!r}")
    if unit == "auto":
        unit = "raw" if (not np.issubdtype(dm.dtype, np.floating) or float(dm.max(initial=0)) > 100) else "metres"
    if unit == "metres":
        return np.round(dm.astype(np.float64) * depth_scale).astype(np.int64)
    return np.round(dm).astype(np.int64) if np.issubdtype(dm.dtype, np.floating) else dm.astype(np.int64)


def rule_predictions(boxes, labels, depth_map, cfg_or_dataset_dir, fine_share: Optional[float] = None,
                     depth_unit: str = "auto"):
    """Score every ordered pair of an image with the generator's own rule (an oracle baseline).

    Args:
        boxes: [N, 4] xyxy in the depth map's pixel frame (original image size); labels: [N];
        depth_map: [H, W] (or [1, H, W]) raw PNG values (1/depth_scale m; uint16 or their float
            copy) or float metres; ``depth_unit`` ("auto" | "raw" | "metres") says which;
        cfg_or_dataset_dir: SynthVGConfig, profile name or a SynthVG folder (its synthvg_config.json).
        fine_share: score given to the fine predicate when there is one (default 1 - coarse_prob).
    Returns:
        rel_pairs int64 [M, 2] (all N(N-1) ordered pairs) sorted by their best non-background
        score, descending; rel_scores float32 [M, P+1] (column 0 = no relation), rows sum to 1.
    """
    cfg = as_config(cfg_or_dataset_dir)
    P = cfg.num_predicates
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lab = np.asarray(labels, np.int64).reshape(-1)
    n = len(b)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros((0, P + 1), np.float32)
    raw = estimate_object_depths(_depth_to_raw(depth_map, cfg.depth_scale, depth_unit), b, cfg.background_min_mm)
    coarse, fine = relation_rule(b, lab, raw / cfg.depth_scale, cfg)
    s, o = np.nonzero(~np.eye(n, dtype=bool))
    c, f = coarse[s, o], fine[s, o]
    fs = (1.0 - cfg.coarse_prob) if fine_share is None else fine_share
    eps = 1e-3
    scores = np.full((len(s), P + 1), eps, np.float64)
    rows = np.arange(len(s))
    has_c, has_f = c > 0, f > 0
    scores[rows[~has_c], 0] = 1.0
    scores[rows[has_c], c[has_c]] = np.where(has_f[has_c], 1.0 - fs, 1.0)
    scores[rows[has_f], f[has_f]] = fs
    scores /= scores.sum(1, keepdims=True)
    best = scores[:, 1:].max(1)
    order = np.argsort(-best, kind="stable")
    return np.stack([s, o], 1)[order].astype(np.int64), scores[order].astype(np.float32)
