"""Training targets of the one-stage composite-field model (CoRF-style, ``specs/onestage.md``).

Grid conventions (shared with ``fields.py`` and ``decoder.py``):

* stride ``s`` (default 16); a pixel point ``(x, y)`` of the (resized, unpadded) input image has
  grid coordinates ``(x / s, y / s)``;
* cell ``(i, j)`` is row ``i``, column ``j``; it covers ``[j, j+1) x [i, i+1)`` in grid coordinates
  and its *reference point* is ``(j, i)`` (its top-left corner); every regressed quantity is in
  grid units relative to that point;
* object field: centre cell ``(i, j) = (floor(cy), floor(cx))``, offset ``(cx - j, cy - i)``,
  size ``(w, h) / s``;
* relation field, per predicate ``p`` (1..P, channel ``p - 1``): subject vector
  ``(sx - j, sy - i)``, object vector ``(ox - j, oy - i)`` to the two box centres, and the two
  scales ``0.1 * min(w, h)`` of the subject / object box (grid units).

Object classes 1..C map to heatmap channels 0..C-1 (no background channel); predicates 1..P to
relation channels 0..P-1.

Rules that the spec leaves open, and what this file does:

* **Object heatmap**: CenterNet's ``draw_umich_gaussian`` with CenterNet's ``gaussian_radius``
  (the original formula, quirks included, min overlap 0.7) on the box size in grid units; radius
  ``max(0, int(r))``, sigma ``(2r + 1) / 6``, the Gaussian is cut to the ``(2r+1)^2`` square and
  values below ``eps * max`` are zeroed as in CenterNet; overlapping Gaussians of one class are
  max-merged. The peak is exactly 1 at the centre cell.
* **Shared centre cell**: when several objects have the same centre cell, the offset / size
  targets come from the *largest* box (area in pixels), ties to the lowest index. Every object
  still puts its own peak (value 1) in its class channel. (CenterNet writes objects in order and the
  last one wins; "largest wins" does not depend on the annotation order.)
* **Relation cells**: samples at fractions ``t`` in ``[margin, 1 - margin]`` of the segment subject
  centre -> object centre, spaced at most ``sample_step`` (0.5) cells apart, so every cell the
  segment crosses inside that range holds a sample; the 3x3 patch of cells around each sample's
  cell (clipped to the grid) becomes positive.
* **Collisions**: a (predicate, cell) claimed by several relations goes to the relation whose
  *segment* (subject centre -> object centre) is closest to the cell centre ``(j + 0.5, i + 0.5)``;
  ties go to the first relation in annotation order. So a pair annotated in both directions with
  the same predicate (``a -p-> b`` and ``b -p-> a``: the same segment) keeps only the first.
* Relations with ``subject == object`` are ignored (no segment, the decoder drops them anyway).
"""
from __future__ import annotations

import math
from typing import Dict, List, Optional, Sequence, Tuple

import torch

__all__ = [
    "gaussian_radius",
    "encode_targets",
    "encode_batch",
    "grid_size_of",
    "OBJECT_TARGET_KEYS",
    "RELATION_TARGET_KEYS",
]

#: per-image target keys (shapes in :func:`encode_targets`)
OBJECT_TARGET_KEYS = ("obj_heatmap", "obj_reg_mask", "obj_offset", "obj_size")
RELATION_TARGET_KEYS = ("rel_heatmap", "rel_mask", "rel_subj", "rel_obj", "rel_scale")

#: spacing of the samples along a relation segment, in cells (<= 1 guarantees that every crossed
#: cell is in a sample's 3x3 patch; 0.5 also puts a sample in most crossed cells themselves)
SAMPLE_STEP = 0.5
#: fraction of min(w, h) used as the regressed relation scale (spec: 0.1 * min(w, h))
SCALE_FACTOR = 0.1


def grid_size_of(image_size: Sequence[int], stride: int = 16) -> Tuple[int, int]:
    """``(ceil(h / s), ceil(w / s))``: the grid cells that hold pixels of an ``(h, w)`` image."""
    h, w = int(image_size[0]), int(image_size[1])
    return (int(math.ceil(h / stride)), int(math.ceil(w / stride)))


def gaussian_radius(height: torch.Tensor, width: torch.Tensor, min_overlap: float = 0.7) -> torch.Tensor:
    """CenterNet's ``gaussian_radius`` (the original code, vectorised, float radius).

    ``height``, ``width``: [N] box sizes (grid units). Returns [N] float radii (>= 0); CenterNet
    then uses ``max(0, int(r))``. The three cases are kept exactly as CenterNet wrote them (its
    r1..r3 are not the true roots of the quadratics, but the heatmaps of every CenterNet-derived
    model, CoRF included, are drawn with this formula).
    """
    h, w = height.clamp(min=0), width.clamp(min=0)
    a1 = 1.0
    b1 = h + w
    c1 = w * h * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * a1 * c1).clamp(min=0))) / 2
    a2 = 4.0
    b2 = 2 * (h + w)
    c2 = (1 - min_overlap) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 4 * a2 * c2).clamp(min=0))) / 2
    a3 = 4 * min_overlap
    b3 = -2 * min_overlap * (h + w)
    c3 = (min_overlap - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 4 * a3 * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3).clamp(min=0)


def _point_segment_distance(px: torch.Tensor, py: torch.Tensor, ax: torch.Tensor, ay: torch.Tensor,
                            bx: torch.Tensor, by: torch.Tensor) -> torch.Tensor:
    """Distance of points ``p`` to segments ``a -> b`` (all broadcastable tensors)."""
    dx, dy = bx - ax, by - ay
    len2 = dx * dx + dy * dy
    t = ((px - ax) * dx + (py - ay) * dy) / len2.clamp(min=1e-12)
    t = torch.where(len2 > 0, t.clamp(0, 1), torch.zeros_like(t))
    qx, qy = ax + t * dx, ay + t * dy
    return torch.sqrt((px - qx) ** 2 + (py - qy) ** 2)


def _winners(key: torch.Tensor, priority: torch.Tensor, num_keys: int) -> torch.Tensor:
    """Bool mask of the rows that have the highest ``priority`` among the rows of their ``key``.

    ``priority`` must be unique per row (then exactly one winner per used key).
    """
    best = torch.full((num_keys,), -1, dtype=priority.dtype, device=priority.device)
    best = best.scatter_reduce(0, key, priority, reduce="amax", include_self=True)
    return best[key] == priority


def _priority_from_order(order: torch.Tensor) -> torch.Tensor:
    """``order`` = row indices best first -> unique int64 priorities (higher = better)."""
    n = order.numel()
    prio = torch.empty(n, dtype=torch.long, device=order.device)
    prio[order] = torch.arange(n, 0, -1, device=order.device)
    return prio


def encode_targets(boxes: torch.Tensor, labels: torch.Tensor, relations: torch.Tensor,
                   grid_size: Sequence[int], num_classes: int, num_predicates: int, stride: int = 16,
                   min_overlap: float = 0.7, rel_margin: float = 0.3, scale_factor: float = SCALE_FACTOR,
                   sample_step: float = SAMPLE_STEP) -> Dict[str, torch.Tensor]:
    """Dense targets of ONE image (module docstring for the rules).

    Args:
        boxes: [N, 4] float xyxy pixels of the (resized, unpadded) input image.
        labels: [N] int64 object classes 1..C.
        relations: [M, 3] int64 (subject idx, object idx, predicate 1..P).
        grid_size: (Hg, Wg) of the network output the targets are for (e.g. the padded batch grid).
        num_classes: C (without background); num_predicates: P (without background).
        stride: pixels per cell.
        min_overlap: CenterNet Gaussian radius parameter.
        rel_margin: the positive part of a segment is ``[margin, 1 - margin]`` (spec: 0.25-0.4).
        scale_factor: relation scale = ``scale_factor * min(w, h)`` of the box, grid units.
        sample_step: spacing of the samples along a segment (cells).

    Returns (all on ``boxes.device``; float tensors float32):
        ``obj_heatmap`` [C, Hg, Wg] in [0, 1], 1 exactly at each object's centre cell;
        ``obj_reg_mask`` [Hg, Wg] bool, the centre cells;
        ``obj_offset`` [2, Hg, Wg] (cx - j, cy - i) at the centre cells, 0 elsewhere;
        ``obj_size`` [2, Hg, Wg] (w, h) / stride at the centre cells, 0 elsewhere;
        ``rel_heatmap`` [P, Hg, Wg] 1 at positive (predicate, cell), else 0;
        ``rel_mask`` [P, Hg, Wg] bool, the positive (predicate, cell);
        ``rel_subj`` [P, 2, Hg, Wg] (sx - j, sy - i), subject centre relative to the cell;
        ``rel_obj`` [P, 2, Hg, Wg] (ox - j, oy - i), object centre relative to the cell;
        ``rel_scale`` [P, 2, Hg, Wg] (scale of subject, scale of object).
    """
    if not 0.0 <= rel_margin < 0.5:
        raise ValueError(f"rel_margin must be in [0, 0.5), got {rel_margin}")
    device = boxes.device
    Hg, Wg = int(grid_size[0]), int(grid_size[1])
    C, P = int(num_classes), int(num_predicates)
    HW = Hg * Wg
    f32 = torch.float32
    boxes = boxes.to(f32).reshape(-1, 4)
    labels = labels.to(device=device, dtype=torch.long).reshape(-1)
    relations = relations.to(device=device, dtype=torch.long).reshape(-1, 3)
    N, M = boxes.shape[0], relations.shape[0]
    if labels.numel() != N:
        raise ValueError(f"{N} boxes but {labels.numel()} labels")
    if N and (labels.min() < 1 or labels.max() > C):
        raise ValueError(f"labels must be in 1..{C}, got [{int(labels.min())}, {int(labels.max())}]")
    if M and (relations[:, 2].min() < 1 or relations[:, 2].max() > P):
        raise ValueError(f"predicates must be in 1..{P}, got [{int(relations[:, 2].min())}, "
                         f"{int(relations[:, 2].max())}]")
    if M and (relations[:, :2].min() < 0 or relations[:, :2].max() >= N):
        raise ValueError(f"relations index objects outside 0..{N - 1}")

    out = {
        "obj_heatmap": torch.zeros(C, Hg, Wg, dtype=f32, device=device),
        "obj_reg_mask": torch.zeros(Hg, Wg, dtype=torch.bool, device=device),
        "obj_offset": torch.zeros(2, Hg, Wg, dtype=f32, device=device),
        "obj_size": torch.zeros(2, Hg, Wg, dtype=f32, device=device),
        "rel_heatmap": torch.zeros(P, Hg, Wg, dtype=f32, device=device),
        "rel_mask": torch.zeros(P, Hg, Wg, dtype=torch.bool, device=device),
        "rel_subj": torch.zeros(P, 2, Hg, Wg, dtype=f32, device=device),
        "rel_obj": torch.zeros(P, 2, Hg, Wg, dtype=f32, device=device),
        "rel_scale": torch.zeros(P, 2, Hg, Wg, dtype=f32, device=device),
    }
    if N == 0 or HW == 0:
        return out

    # ---------------------------------------------------------------- objects
    g = boxes / stride
    cx, cy = (g[:, 0] + g[:, 2]) / 2, (g[:, 1] + g[:, 3]) / 2
    w, h = (g[:, 2] - g[:, 0]).clamp(min=0), (g[:, 3] - g[:, 1]).clamp(min=0)
    ci = cy.floor().long().clamp(0, Hg - 1)
    cj = cx.floor().long().clamp(0, Wg - 1)
    cell = ci * Wg + cj                                                      # [N]

    radius = gaussian_radius(h, w, min_overlap).floor()                      # int(r), r >= 0
    sigma = (2 * radius + 1) / 6
    ii = torch.arange(Hg, device=device, dtype=f32)
    jj = torch.arange(Wg, device=device, dtype=f32)
    di = ii[None, :] - ci[:, None].to(f32)                                   # [N, Hg]
    dj = jj[None, :] - cj[:, None].to(f32)                                   # [N, Wg]
    d2 = di[:, :, None] ** 2 + dj[:, None, :] ** 2                           # [N, Hg, Wg]
    gauss = torch.exp(-d2 / (2 * sigma[:, None, None] ** 2))
    inside = (di.abs() <= radius[:, None])[:, :, None] & (dj.abs() <= radius[:, None])[:, None, :]
    gauss = torch.where(inside & (gauss >= torch.finfo(f32).eps), gauss, torch.zeros_like(gauss))
    heat = out["obj_heatmap"].view(C, HW)
    heat.scatter_reduce_(0, (labels - 1)[:, None].expand(N, HW), gauss.reshape(N, HW), reduce="amax",
                         include_self=True)

    # one regression target per centre cell: the largest box, ties to the lowest index
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    order = torch.sort(area, descending=True, stable=True).indices
    win = _winners(cell, _priority_from_order(order), HW)
    wc = cell[win]
    out["obj_reg_mask"].view(HW)[wc] = True
    out["obj_offset"].view(2, HW)[:, wc] = torch.stack([cx - cj.to(f32), cy - ci.to(f32)])[:, win]
    out["obj_size"].view(2, HW)[:, wc] = torch.stack([w, h])[:, win]

    # ---------------------------------------------------------------- relations
    relations = relations[relations[:, 0] != relations[:, 1]]
    M = relations.shape[0]
    if M == 0:
        return out
    s_idx, o_idx, pred = relations[:, 0], relations[:, 1], relations[:, 2] - 1
    sx, sy, ox, oy = cx[s_idx], cy[s_idx], cx[o_idx], cy[o_idx]              # [M]
    length = torch.sqrt((ox - sx) ** 2 + (oy - sy) ** 2)
    span = 1.0 - 2.0 * rel_margin
    # one sample count for all relations (the longest needs the most); shorter ones are denser
    K = int(math.ceil(float(length.max()) * span / sample_step)) + 1 if span > 0 else 1
    if K > 1:
        t = rel_margin + span * torch.arange(K, device=device, dtype=f32) / (K - 1)
    else:
        t = torch.full((1,), 0.5, device=device, dtype=f32)
    px = sx[:, None] + t[None, :] * (ox - sx)[:, None]                       # [M, K]
    py = sy[:, None] + t[None, :] * (oy - sy)[:, None]
    offs = torch.tensor([-1, 0, 1], device=device)
    pi = py.floor().long()[:, :, None, None] + offs[None, None, :, None]      # [M, K, 3, 1]
    pj = px.floor().long()[:, :, None, None] + offs[None, None, None, :]      # [M, K, 1, 3]
    pi, pj = torch.broadcast_tensors(pi, pj)                                 # [M, K, 3, 3]
    rel_row = torch.arange(M, device=device)[:, None, None, None].expand_as(pi)
    valid = (pi >= 0) & (pi < Hg) & (pj >= 0) & (pj < Wg)
    pi, pj, rel_row = pi[valid], pj[valid], rel_row[valid]                  # candidate rows, r-major
    dist = _point_segment_distance(pj.to(f32) + 0.5, pi.to(f32) + 0.5, sx[rel_row], sy[rel_row],
                                   ox[rel_row], oy[rel_row])
    key = pred[rel_row] * HW + pi * Wg + pj                                  # (predicate, cell)
    # closest segment wins; rows are in relation order, so a stable sort breaks ties by relation
    order = torch.sort(dist, stable=True).indices
    win = _winners(key, _priority_from_order(order), P * HW)
    key, r = key[win], rel_row[win]
    p_w, c_w = key // HW, key % HW
    ci_f, cj_f = (c_w // Wg).to(f32), (c_w % Wg).to(f32)
    out["rel_heatmap"].view(P, HW)[p_w, c_w] = 1.0
    out["rel_mask"].view(P, HW)[p_w, c_w] = True
    scale = scale_factor * torch.minimum(w, h)                               # [N]
    subj_vec = torch.stack([sx[r] - cj_f, sy[r] - ci_f], 1)                  # [Q, 2]
    obj_vec = torch.stack([ox[r] - cj_f, oy[r] - ci_f], 1)
    scales = torch.stack([scale[s_idx[r]], scale[o_idx[r]]], 1)
    for name, val in (("rel_subj", subj_vec), ("rel_obj", obj_vec), ("rel_scale", scales)):
        flat = out[name].view(P, 2, HW)
        flat[p_w, :, c_w] = val
    return out


def encode_batch(targets: Sequence[Dict[str, torch.Tensor]],
                 grid_size: Optional[Sequence[int]] = None) -> Dict[str, torch.Tensor]:
    """Stack per-image targets of :func:`encode_targets` into batch tensors.

    Each image's maps are zero-padded at the bottom / right to ``grid_size`` (default: the largest
    (Hg, Wg) among the images), which matches a batch of images padded at the bottom / right. The
    padded cells are negatives of the heatmaps and hold no regression target.

    Returns the same keys with a leading batch dimension: ``obj_heatmap`` [B, C, Hg, Wg],
    ``obj_reg_mask`` [B, Hg, Wg], ``obj_offset`` / ``obj_size`` [B, 2, Hg, Wg], ``rel_heatmap`` /
    ``rel_mask`` [B, P, Hg, Wg], ``rel_subj`` / ``rel_obj`` / ``rel_scale`` [B, P, 2, Hg, Wg].
    """
    if len(targets) == 0:
        raise ValueError("encode_batch needs at least one image")
    if grid_size is None:
        Hg = max(int(t["obj_heatmap"].shape[-2]) for t in targets)
        Wg = max(int(t["obj_heatmap"].shape[-1]) for t in targets)
    else:
        Hg, Wg = int(grid_size[0]), int(grid_size[1])
    out: Dict[str, torch.Tensor] = {}
    for key in targets[0]:
        maps: List[torch.Tensor] = []
        for t in targets:
            x = t[key]
            h, w = x.shape[-2:]
            if h > Hg or w > Wg:
                raise ValueError(f"target '{key}' has grid {h}x{w}, larger than the batch grid {Hg}x{Wg}")
            if (h, w) != (Hg, Wg):
                x = torch.nn.functional.pad(x, (0, Wg - w, 0, Hg - h))
            maps.append(x)
        out[key] = torch.stack(maps)
    return out
