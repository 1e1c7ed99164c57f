"""Fields -> scene graphs (``specs/onestage.md``, "Decoding").

Grid conventions are those of :mod:`sgg.modeling.onestage.encoder` (cell ``(i, j)`` has the
reference point ``(j, i)`` in grid units = pixels / stride).

For the whole batch at once (no loop over images or candidates; every step is vectorised on the
outputs' device, with a handful of host synchronisations per batch), and per image as follows:

1. Only the cells that hold pixels of the unpadded image, ``(ceil(h/s), ceil(w/s))``, are read, so
   a graph does not depend on the padding, i.e. on the other images of its batch.
2. **Objects** (SGDet, and the detections SGCls labels its boxes with): ``sigmoid(obj_logits)``,
   3x3 max-pool peak NMS, the ``topk_objects`` best (class, cell) entries, box = centre
   ``(j + ox, i + oy)`` and size ``(w, h)`` times the stride, clipped to
   ``[0, w-1] x [0, h-1]`` (maskrcnn_benchmark's ``clip_to_image``); score = peak value; equal
   scores are ranked by (class, row, column), so the result is the same on every device. Entries
   with score exactly 0 (suppressed by the NMS) are dropped.
3. **Relations**: every (predicate, cell) with ``sigmoid(rel_logits) > rel_threshold`` gives a
   subject point ``(j + vx, i + vy)`` and an object point. Each point is assigned to the object
   whose centre minimises ``(distance + 1e-6) / (object score * relation score)`` (the relation
   score is the same for every object of one candidate, so it does not change the choice; the
   ``1e-6`` grid units only break exact-zero distances in favour of the higher-scored object).
   Object centres are the regressed (unclipped) centres in SGDet and the GT box centres in
   PredCls / SGCls. Candidates with subject == object are dropped; in SGDet / SGCls a candidate
   is kept only when its score > ``min(score_s, score_o) / 2``. Per (subject, object, predicate)
   the maximum score is kept.
4. Per pair the P scores form ``rel_scores [M, P+1]``; column 0 (background) is 0 and the other
   columns are independent sigmoid confidences (0 for a predicate that had no candidate), NOT a
   softmax. :meth:`SceneGraph.from_scores` orders the pairs by ``max_p rel_scores * score_s *
   score_o`` (stable; pairs enter in ascending ``(s, o)`` order).

Protocols:

* ``sgdet``: predicted boxes; GT is never read.
* ``predcls``: objects = GT boxes with GT labels, scores 1.
* ``sgcls``: objects = GT boxes. A GT box takes the label and score of the decoded detection (the
  same top-k as SGDet) that maximises ``IoU * score`` among those with IoU >= ``sgcls_iou`` (0.5;
  several GT boxes may take the same detection; ties go to the higher-ranked detection). A GT box
  without such a detection takes the class with the highest heatmap value at its centre cell
  ``floor(centre / stride)`` and that value as its score -- never its GT label (the reference
  leaked GT labels there; ``gt_labels`` is not read in SGCls).
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from torchvision.ops import box_iou

from sgg.protocol import MODES, check_mode
from sgg.structures import SceneGraph

from .encoder import grid_size_of

__all__ = ["decode_fields", "decode_objects", "decode_objects_batched", "decode_relations",
           "decode_relations_batched", "assign_points", "MODES"]

#: elements of the [candidates, objects] distance matrix computed at once
ASSIGN_CHUNK = 1 << 22
_DIST_EPS = 1e-6


def stable_sigmoid(logits: torch.Tensor) -> torch.Tensor:
    """float32 ``sigmoid`` whose value does not depend on where an element sits in memory.

    CPU kernels compute the SIMD body and the scalar tail of a contiguous run with different exp
    approximations, so ``torch.sigmoid`` on float32 can differ in the last bit between an image
    decoded alone and the same image inside a batch (or with another thread count). Computed in
    float64 and rounded to float32, both paths give the same float32 (they differ far below
    float32 resolution), so graphs are the same whatever the batch. Other devices apply one
    formula to every element (and may lack float64, e.g. MPS): plain float32 there.
    """
    if logits.device.type == "cpu":
        return torch.sigmoid(logits.double()).float()
    return torch.sigmoid(logits.float())


def decode_objects(obj_logits: torch.Tensor, obj_offset: torch.Tensor, obj_size: torch.Tensor,
                   image_size: Sequence[int], stride: int = 16, topk: int = 100,
                   ) -> Dict[str, torch.Tensor]:
    """Objects of ONE image from its fields (module docstring, step 2).

    Args:
        obj_logits: [C, Hg, Wg]; obj_offset, obj_size: [2, Hg, Wg] (grid may be padded, only the
            ``grid_size_of(image_size, stride)`` cells are read).
        image_size: (h, w) of the unpadded input image (pixels).

    Returns ``boxes`` [K, 4] float32 pixels xyxy (clipped), ``labels`` [K] int64 1..C, ``scores``
    [K] float32 (descending), ``centers`` [K, 2] float32 grid units (unclipped regressed centres),
    ``heat`` [C, Hv, Wv] the sigmoid heatmap of the valid cells (before the NMS).
    """
    return decode_objects_batched(obj_logits[None], obj_offset[None], obj_size[None], [image_size],
                                  stride=stride, topk=topk)[0]


def _valid_cells(image_sizes: Sequence[Sequence[int]], grid: Tuple[int, int], stride: int, device
                 ) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
    """``[B, Hg, Wg]`` bool mask of the cells holding pixels of each unpadded image, and the valid
    grid size ``(Hv, Wv)`` of each image."""
    hg, wg = grid
    valid_hw = []
    for hw in image_sizes:
        hv, wv = grid_size_of((int(hw[0]), int(hw[1])), stride)
        valid_hw.append((min(hv, hg), min(wv, wg)))
    hv = torch.tensor([v[0] for v in valid_hw], device=device)
    wv = torch.tensor([v[1] for v in valid_hw], device=device)
    rows = torch.arange(hg, device=device)[None, :, None] < hv[:, None, None]
    cols = torch.arange(wg, device=device)[None, None, :] < wv[:, None, None]
    return rows & cols, valid_hw


def decode_objects_batched(obj_logits: torch.Tensor, obj_offset: torch.Tensor, obj_size: torch.Tensor,
                           image_sizes: Sequence[Sequence[int]], stride: int = 16, topk: int = 100,
                           ) -> List[Dict[str, torch.Tensor]]:
    """Objects of every image of a batch (module docstring, step 2), without a loop over images.

    Args: obj_logits [B, C, Hg, Wg], obj_offset / obj_size [B, 2, Hg, Wg], image_sizes (h, w) per
    image. Returns one dict per image as :func:`decode_objects`.

    The padded cells of each image are zeroed before the 3x3 peak NMS (a sigmoid is > 0, so they
    never suppress a valid peak) and never selected, so an image's objects do not depend on its
    batch. Per image the ``topk`` largest non-zero peaks are kept, ties ranked by (class, row,
    column): one top-k per row gives each image's k-th value, every entry >= it (and > 0) is a
    candidate, and two stable sorts (score descending, then image) rank them.
    """
    B, C, hg, wg = obj_logits.shape
    device = obj_logits.device
    heat = stable_sigmoid(obj_logits)
    valid, valid_hw = _valid_cells(image_sizes, (hg, wg), stride, device)
    masked = heat * valid[:, None].to(heat.dtype)
    peaks = _max3x3(masked)
    nms = torch.where(peaks == masked, masked, torch.zeros_like(masked)).reshape(B, -1)
    k = min(int(topk), nms.shape[1])
    if k > 0:
        thr = torch.topk(nms, k, dim=1).values[:, -1:]
        b, idx = torch.nonzero((nms >= thr) & (nms > 0), as_tuple=True)
    else:
        b = idx = torch.zeros(0, dtype=torch.long, device=device)
    scores = nms[b, idx]
    order = torch.sort(scores, descending=True, stable=True).indices
    order = order[torch.sort(b[order], stable=True).indices]      # image-major, score-descending
    b, idx, scores = b[order], idx[order], scores[order]
    counts = torch.bincount(b, minlength=B)
    first = torch.cumsum(counts, 0) - counts
    rank = torch.arange(b.numel(), device=device) - first[b]
    keep = rank < k
    b, idx, scores = b[keep], idx[keep], scores[keep]
    cls, cell = idx // (hg * wg), idx % (hg * wg)
    i, j = cell // wg, cell % wg
    off = obj_offset.float()[b, :, i, j]                           # [K, 2]
    size = obj_size.float()[b, :, i, j].clamp(min=0)
    cx, cy = j.float() + off[:, 0], i.float() + off[:, 1]
    boxes = torch.stack([cx - size[:, 0] / 2, cy - size[:, 1] / 2, cx + size[:, 0] / 2, cy + size[:, 1] / 2],
                        1) * stride
    centers = torch.stack([cx, cy], 1)
    labels = cls + 1
    per_image = torch.bincount(b, minlength=B).tolist()
    out = []
    for n, (bx, lab, sc, ctr) in enumerate(zip(boxes.split(per_image), labels.split(per_image),
                                               scores.split(per_image), centers.split(per_image))):
        h, w = int(image_sizes[n][0]), int(image_sizes[n][1])
        hv, wv = valid_hw[n]
        out.append({"boxes": _clip(bx, h, w), "labels": lab, "scores": sc, "centers": ctr,
                    "heat": heat[n, :, :hv, :wv]})
    return out


def _max3x3(x: torch.Tensor) -> torch.Tensor:
    """``max_pool2d(x, 3, stride=1, padding=1)`` of a ``[..., H, W]`` tensor as two separable passes
    of elementwise maxima (exact; several times faster than the CPU pooling kernel)."""
    if x.numel() == 0:
        return x
    p = F.pad(x, (1, 1, 1, 1), value=float("-inf"))
    rows = torch.maximum(torch.maximum(p[..., :-2], p[..., 1:-1]), p[..., 2:])
    return torch.maximum(torch.maximum(rows[..., :-2, :], rows[..., 1:-1, :]), rows[..., 2:, :])


def _clip(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x = boxes[:, 0::2].clamp(0, max(w - 1, 0))
    y = boxes[:, 1::2].clamp(0, max(h - 1, 0))
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def assign_points(points: torch.Tensor, centers: torch.Tensor, center_scores: torch.Tensor,
                  chunk: int = ASSIGN_CHUNK, groups: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Index of the centre minimising ``(distance + 1e-6) / score`` for each point.

    Args: points [K, 2]; centers [N, 2] (same units) and center_scores [N] (> 0; 0 is treated as
    the smallest positive float) -- or, with ``groups`` [K] (int64 in [0, G), e.g. the image of
    each point), centers [G, N, 2] and center_scores [G, N] per group: a point chooses among its
    group's centres only. Padding a group to N: centre ``inf`` (infinite distance) placed after
    the real centres, which then always win (ties go to the lower index).
    Returns int64 [K] (N >= 1 required). The distance matrix is computed ``chunk`` elements at a
    time (with groups: the points are laid out [G, max points per group, 2] and go through one
    batched ``cdist`` per chunk).
    """
    K, N = points.shape[0], centers.shape[-2]
    if N == 0:
        raise ValueError("assign_points needs at least one centre")
    inv = 1.0 / center_scores.float().clamp(min=torch.finfo(torch.float32).tiny)
    centers = centers.float()
    if groups is None:
        centers, inv = centers[None], inv[None]
        groups = torch.zeros(K, dtype=torch.long, device=points.device)
    G = centers.shape[0]
    if K == 0:
        return torch.zeros(0, dtype=torch.long, device=points.device)
    order = torch.sort(groups, stable=True).indices
    g_sorted = groups[order]
    counts = torch.bincount(g_sorted, minlength=G)
    rank = torch.arange(K, device=points.device) - (torch.cumsum(counts, 0) - counts)[g_sorted]
    kmax = int(counts.max())
    padded = points.new_zeros(G, kmax, 2, dtype=torch.float32)
    padded[g_sorted, rank] = points[order].float()
    rows = max(1, int(chunk) // max(G * N, 1))
    best = torch.empty(G, kmax, dtype=torch.long, device=points.device)
    for start in range(0, kmax, rows):
        d = torch.cdist(padded[:, start:start + rows], centers, compute_mode="donot_use_mm_for_euclid_dist")
        best[:, start:start + rows] = ((d + _DIST_EPS) * inv[:, None, :]).argmin(dim=2)
    out = torch.empty(K, dtype=torch.long, device=points.device)
    out[order] = best[g_sorted, rank]
    return out


def decode_relations(rel_logits: torch.Tensor, rel_subj: torch.Tensor, rel_obj: torch.Tensor,
                     centers: torch.Tensor, obj_scores: torch.Tensor, image_size: Sequence[int],
                     stride: int = 16, rel_threshold: float = 0.1, score_filter: bool = True,
                     ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Relations of ONE image among given objects (module docstring, steps 3-4).

    Args:
        rel_logits: [P, Hg, Wg]; rel_subj, rel_obj: [P, 2, Hg, Wg] (only the valid cells are read).
        centers: [N, 2] object centres in grid units; obj_scores: [N].
        image_size: (h, w) of the unpadded input image.
        score_filter: keep a candidate only if its score > min(score_s, score_o) / 2 (SGDet/SGCls).

    Returns ``rel_pairs`` int64 [M, 2] in ascending (s, o) order and ``rel_scores`` float32
    [M, P+1] (column 0 = 0).
    """
    return decode_relations_batched(rel_logits[None], rel_subj[None], rel_obj[None], [centers], [obj_scores],
                                    [image_size], stride=stride, rel_threshold=rel_threshold,
                                    score_filter=score_filter)[0]


def decode_relations_batched(rel_logits: torch.Tensor, rel_subj: torch.Tensor, rel_obj: torch.Tensor,
                             centers: Sequence[torch.Tensor], obj_scores: Sequence[torch.Tensor],
                             image_sizes: Sequence[Sequence[int]], stride: int = 16,
                             rel_threshold: float = 0.1, score_filter: bool = True,
                             ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
    """Relations of every image of a batch (module docstring, steps 3-4), without a loop over images.

    Args: rel_logits [B, P, Hg, Wg], rel_subj / rel_obj [B, P, 2, Hg, Wg], centers / obj_scores
    per image ([Nb, 2] grid units, [Nb]), image_sizes (h, w) per image. Returns per image
    ``(rel_pairs [M, 2], rel_scores [M, P+1])`` as :func:`decode_relations`.

    One candidate list for the batch (image, predicate, row, column) over the valid cells of each
    image; the objects are padded to the batch's largest count with score 0 and a centre at
    infinity, so a point is only ever assigned to an object of its own image; one ``unique`` over
    (image, subject, object, predicate) keeps the best score.
    """
    B, P, hg, wg = rel_logits.shape
    device = rel_logits.device
    if not (len(centers) == len(obj_scores) == len(image_sizes) == B):
        raise ValueError(f"{B} images in the relation fields but {len(centers)} centre sets, "
                         f"{len(obj_scores)} score sets and {len(image_sizes)} image sizes")
    counts = [int(c.shape[0]) for c in centers]
    n_max = max(counts, default=0)

    def empty():
        return (torch.zeros(0, 2, dtype=torch.long, device=device), torch.zeros(0, P + 1, device=device))

    if n_max < 2 or rel_logits.numel() == 0:
        return [empty() for _ in range(B)]
    valid, _ = _valid_cells(image_sizes, (hg, wg), stride, device)
    enough = torch.tensor([n >= 2 for n in counts], device=device)
    valid &= enough[:, None, None]
    conf = stable_sigmoid(rel_logits)
    b, p, i, j = torch.nonzero((conf > rel_threshold) & valid[:, None], as_tuple=True)
    if b.numel() == 0:
        return [empty() for _ in range(B)]
    score = conf[b, p, i, j]
    ref = torch.stack([j, i], 1).float()
    subj_pts = ref + rel_subj.float()[b, p, :, i, j]
    obj_pts = ref + rel_obj.float()[b, p, :, i, j]
    pad_c = pad_sequence([c.float().to(device).reshape(-1, 2) for c in centers], batch_first=True,
                         padding_value=float("inf"))
    pad_s = pad_sequence([sc.float().to(device).reshape(-1) for sc in obj_scores], batch_first=True)
    s = assign_points(subj_pts, pad_c, pad_s, groups=b)
    o = assign_points(obj_pts, pad_c, pad_s, groups=b)
    keep = s != o
    if score_filter:
        keep &= score > torch.minimum(pad_s[b, s], pad_s[b, o]) / 2
    b, s, o, p, score = b[keep], s[keep], o[keep], p[keep], score[keep]
    if b.numel() == 0:
        return [empty() for _ in range(B)]
    flat = ((b * n_max + s) * n_max + o) * P + p
    uniq, inv = torch.unique(flat, return_inverse=True)
    best = torch.zeros(uniq.numel(), device=device).scatter_reduce(0, inv, score, reduce="amax",
                                                                    include_self=False)
    pair_key, pred = uniq // P, uniq % P
    pairs, pair_inv = torch.unique(pair_key, return_inverse=True)
    rel_scores = torch.zeros(pairs.numel(), P + 1, device=device)
    rel_scores[pair_inv, pred + 1] = best
    img = pairs // (n_max * n_max)
    rel_pairs = torch.stack([pairs // n_max % n_max, pairs % n_max], 1)
    per_image = torch.bincount(img, minlength=B).tolist()
    return list(zip(rel_pairs.split(per_image), rel_scores.split(per_image)))


def _sgcls_labels(gt_boxes: torch.Tensor, det: Dict[str, torch.Tensor], stride: int, iou_threshold: float,
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Labels and scores of GT boxes from the detections, else from the heatmap at the centre."""
    G = gt_boxes.shape[0]
    heat = det["heat"]                                            # [C, Hv, Wv]
    Hv, Wv = heat.shape[-2:]
    cx = (gt_boxes[:, 0] + gt_boxes[:, 2]) / 2 / stride
    cy = (gt_boxes[:, 1] + gt_boxes[:, 3]) / 2 / stride
    ci = cy.floor().long().clamp(0, max(Hv - 1, 0))
    cj = cx.floor().long().clamp(0, max(Wv - 1, 0))
    if heat.numel():
        hm_scores, hm_cls = heat[:, ci, cj].max(dim=0)            # [G]
    else:
        hm_scores = torch.zeros(G, device=gt_boxes.device)
        hm_cls = torch.zeros(G, dtype=torch.long, device=gt_boxes.device)
    labels, scores = hm_cls + 1, hm_scores
    if det["boxes"].shape[0]:
        iou = box_iou(gt_boxes, det["boxes"])                     # [G, K]
        cand = torch.where(iou >= iou_threshold, iou * det["scores"][None, :], torch.full_like(iou, -1.0))
        best_score, best = cand.max(dim=1)
        matched = best_score >= 0
        labels = torch.where(matched, det["labels"][best], labels)
        scores = torch.where(matched, det["scores"][best], scores)
    return labels, scores


def decode_fields(outputs: Mapping[str, torch.Tensor], image_sizes: Sequence[Sequence[int]], stride: int = 16,
                  mode: str = "sgdet", gt_boxes: Optional[Sequence[torch.Tensor]] = None,
                  gt_labels: Optional[Sequence[torch.Tensor]] = None, topk_objects: int = 100,
                  rel_threshold: float = 0.1, max_relations: Optional[int] = None,
                  sgcls_iou: float = 0.5, pair_score_filter: bool = True) -> List[SceneGraph]:
    """Scene graphs of a batch from the network fields (module docstring).

    Args:
        outputs: raw fields ``obj_logits`` [B,C,Hg,Wg], ``obj_offset`` / ``obj_size`` [B,2,Hg,Wg],
            ``rel_logits`` [B,P,Hg,Wg], ``rel_subj`` / ``rel_obj`` [B,P,2,Hg,Wg] (``rel_scale``
            is not used).
        image_sizes: (h, w) of each unpadded input image (pixels).
        stride: pixels per cell.
        mode: ``sgdet`` | ``sgcls`` | ``predcls``.
        gt_boxes: per image [Ni, 4] pixel boxes in the input frame (SGCls, PredCls).
        gt_labels: per image [Ni] labels 1..C (PredCls only).
        topk_objects: detections kept per image (SGDet, and the SGCls matching pool).
        rel_threshold: minimum sigmoid confidence of a relation cell.
        max_relations: keep the first ``max_relations`` pairs after sorting (None: all). The
            evaluator's R/mR/ng-R need only the top 100; pair accuracy (A@K, PredCls/SGCls) needs
            the GT pairs further down too, so keep all there.
        sgcls_iou: IoU a detection needs with a GT box to give it its label (SGCls).
        pair_score_filter: the reference's rule (SGDet / SGCls) keeping a candidate only when its
            score > min(score_s, score_o) / 2; False keeps every candidate above ``rel_threshold``.

    Returns one :class:`SceneGraph` per image, boxes in the input-image frame,
    ``image_size = image_sizes[b]``. A graph with no object or no relation is valid and empty:
    ``boxes`` [0, 4] (when no object), ``rel_pairs`` [0, 2], ``rel_scores`` [0, P+1].
    """
    check_mode(mode)
    B = outputs["obj_logits"].shape[0]
    if len(image_sizes) != B:
        raise ValueError(f"{B} images in the outputs but {len(image_sizes)} image sizes")
    if mode != "sgdet" and (gt_boxes is None or len(gt_boxes) != B):
        raise ValueError(f"mode {mode!r} needs gt_boxes for each of the {B} images")
    if mode == "predcls" and (gt_labels is None or len(gt_labels) != B):
        raise ValueError(f"mode 'predcls' needs gt_labels for each of the {B} images")
    device = outputs["obj_logits"].device
    sizes = [(int(hw[0]), int(hw[1])) for hw in image_sizes]
    dets = None
    if mode != "predcls":
        dets = decode_objects_batched(outputs["obj_logits"], outputs["obj_offset"], outputs["obj_size"], sizes,
                                      stride=stride, topk=topk_objects)
    objects = []
    for b in range(B):
        if mode == "sgdet":
            det = dets[b]
            objects.append((det["boxes"], det["labels"], det["scores"], det["centers"]))
            continue
        boxes = gt_boxes[b].to(device=device, dtype=torch.float32).reshape(-1, 4)
        if mode == "predcls":
            labels = gt_labels[b].to(device=device, dtype=torch.long).reshape(-1)
            scores = torch.ones(boxes.shape[0], device=device)
        else:
            labels, scores = _sgcls_labels(boxes, dets[b], stride, sgcls_iou)
        centers = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) / stride
        objects.append((boxes, labels, scores, centers))
    relations = decode_relations_batched(
        outputs["rel_logits"], outputs["rel_subj"], outputs["rel_obj"], [o[3] for o in objects],
        [o[2] for o in objects], sizes, stride=stride, rel_threshold=rel_threshold,
        score_filter=pair_score_filter and mode != "predcls")
    return [SceneGraph.from_scores(boxes, labels, scores, rel_pairs, rel_scores, hw, top_k=max_relations)
            for (boxes, labels, scores, _), (rel_pairs, rel_scores), hw in zip(objects, relations, sizes)]
