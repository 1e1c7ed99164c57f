"""The one-stage decoder as it was before batching (image by image), kept as the reference the
batched :mod:`sgg.modeling.onestage.decoder` is tested against (same rules).
One change: the sigmoid is the decoder's ``stable_sigmoid`` (float64, rounded to float32), since a
float32 CPU sigmoid can differ in the last bit with an element's position in memory.

The rules are those of the library decoder's module docstring.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.ops import box_iou

from sgg.structures import SceneGraph

from sgg.modeling.onestage.decoder import stable_sigmoid
from sgg.modeling.onestage.encoder import grid_size_of

__all__ = ["decode_fields", "decode_objects", "decode_relations", "assign_points", "MODES"]

MODES = ("predcls", "sgcls", "sgdet")
#: elements of the [candidates, objects] distance matrix computed at once
ASSIGN_CHUNK = 1 << 22
_DIST_EPS = 1e-6


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
    h, w = int(image_size[0]), int(image_size[1])
    Hv, Wv = grid_size_of((h, w), stride)
    Hv, Wv = min(Hv, obj_logits.shape[-2]), min(Wv, obj_logits.shape[-1])
    # contiguous before any elementwise op: CPU kernels take a vector path on contiguous memory and a
    # scalar one on strided views, which can differ in the last bit (batch composition would show)
    heat = stable_sigmoid(obj_logits[:, :Hv, :Wv])
    device = heat.device
    if heat.numel() == 0:
        return {"boxes": torch.zeros(0, 4, device=device), "labels": torch.zeros(0, dtype=torch.long, device=device),
                "scores": torch.zeros(0, device=device), "centers": torch.zeros(0, 2, device=device),
                "heat": heat}
    peaks = F.max_pool2d(heat[None], 3, stride=1, padding=1)[0]
    nms = torch.where(peaks == heat, heat, torch.zeros_like(heat))
    scores, idx = _stable_topk(nms.reshape(-1), int(topk))
    keep = scores > 0
    scores, idx = scores[keep], idx[keep]
    cls, cell = idx // (Hv * Wv), idx % (Hv * Wv)
    i, j = cell // Wv, cell % Wv
    off = obj_offset[:, :Hv, :Wv].float().reshape(2, -1)[:, cell].contiguous()
    size = obj_size[:, :Hv, :Wv].float().reshape(2, -1)[:, cell].clamp(min=0)
    cx, cy = j.float() + off[0], i.float() + off[1]
    boxes = torch.stack([cx - size[0] / 2, cy - size[1] / 2, cx + size[0] / 2, cy + size[1] / 2], 1) * stride
    boxes = _clip(boxes, h, w)
    return {"boxes": boxes, "labels": cls + 1, "scores": scores, "centers": torch.stack([cx, cy], 1),
            "heat": heat}


def _stable_topk(values: torch.Tensor, k: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` largest of a 1-D tensor, descending, ties to the lower index (same on every device
    and backend, unlike ``torch.topk``): a topk threshold, every entry tied with it, a stable sort."""
    k = min(k, values.numel())
    if k <= 0:
        return values[:0], torch.zeros(0, dtype=torch.long, device=values.device)
    thr = torch.topk(values, k).values[-1]
    cand = torch.nonzero(values >= thr).flatten()
    order = torch.sort(values[cand], descending=True, stable=True).indices[:k]
    idx = cand[order]
    return values[idx], idx


def _clip(boxes: torch.Tensor, h: int, w: int) -> torch.Tensor:
    x = boxes[:, 0::2].clamp(0, max(w - 1, 0))
    y = boxes[:, 1::2].clamp(0, max(h - 1, 0))
    return torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], 1)


def assign_points(points: torch.Tensor, centers: torch.Tensor, center_scores: torch.Tensor,
                  chunk: int = ASSIGN_CHUNK) -> torch.Tensor:
    """Index of the centre minimising ``(distance + 1e-6) / score`` for each point.

    Args: points [K, 2], centers [N, 2] (same units), center_scores [N] (> 0; 0 is treated as
    the smallest positive float). Returns int64 [K] (N >= 1 required). The [K, N] matrix is
    computed ``chunk`` elements at a time.
    """
    K, N = points.shape[0], centers.shape[0]
    if N == 0:
        raise ValueError("assign_points needs at least one centre")
    inv = 1.0 / center_scores.float().clamp(min=torch.finfo(torch.float32).tiny)
    rows = max(1, int(chunk) // max(N, 1))
    out = []
    for start in range(0, K, rows):
        d = torch.cdist(points[start:start + rows].float(), centers.float(), compute_mode="donot_use_mm_for_euclid_dist")
        out.append(((d + _DIST_EPS) * inv[None, :]).argmin(dim=1))
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.long, device=points.device)


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
    P = rel_logits.shape[0]
    device = rel_logits.device
    N = centers.shape[0]
    empty = (torch.zeros(0, 2, dtype=torch.long, device=device), torch.zeros(0, P + 1, device=device))
    Hv, Wv = grid_size_of(image_size, stride)
    Hv, Wv = min(Hv, rel_logits.shape[-2]), min(Wv, rel_logits.shape[-1])
    if N < 2 or Hv * Wv == 0:
        return empty
    conf = stable_sigmoid(rel_logits[:, :Hv, :Wv])
    p, i, j = torch.nonzero(conf > rel_threshold, as_tuple=True)
    if p.numel() == 0:
        return empty
    score = conf[p, i, j]
    ref = torch.stack([j, i], 1).float()
    subj_pts = ref + rel_subj[:, :, :Hv, :Wv].float()[p, :, i, j].contiguous()
    obj_pts = ref + rel_obj[:, :, :Hv, :Wv].float()[p, :, i, j].contiguous()
    centers, obj_scores = centers.float().to(device), obj_scores.float().to(device)
    s = assign_points(subj_pts, centers, obj_scores)
    o = assign_points(obj_pts, centers, obj_scores)
    keep = s != o
    if score_filter:
        keep &= score > torch.minimum(obj_scores[s], obj_scores[o]) / 2
    s, o, p, score = s[keep], o[keep], p[keep], score[keep]
    if s.numel() == 0:
        return empty
    flat = (s * N + o) * P + p
    uniq, inv = torch.unique(flat, return_inverse=True)
    best = torch.zeros(uniq.numel(), device=device).scatter_reduce(0, inv, score, reduce="amax",
                                                                    include_self=False)
    pair_key, pred = uniq // P, uniq % P
    pairs, pair_inv = torch.unique(pair_key, return_inverse=True)
    rel_scores = torch.zeros(pairs.numel(), P + 1, device=device)
    rel_scores[pair_inv, pred + 1] = best
    rel_pairs = torch.stack([pairs // N, pairs % N], 1)
    return rel_pairs, rel_scores


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
    """:func:`sgg.modeling.onestage.decoder.decode_fields`, image by image (argument checks left out)."""
    B = outputs["obj_logits"].shape[0]
    device = outputs["obj_logits"].device
    graphs: List[SceneGraph] = []
    for b in range(B):
        hw = (int(image_sizes[b][0]), int(image_sizes[b][1]))
        if mode == "predcls":
            boxes = gt_boxes[b].to(device=device, dtype=torch.float32).reshape(-1, 4)
            labels = gt_labels[b].to(device=device, dtype=torch.long).reshape(-1)
            scores = torch.ones(boxes.shape[0], device=device)
        else:
            det = decode_objects(outputs["obj_logits"][b], outputs["obj_offset"][b], outputs["obj_size"][b], hw,
                                 stride=stride, topk=topk_objects)
            if mode == "sgdet":
                boxes, labels, scores = det["boxes"], det["labels"], det["scores"]
            else:
                boxes = gt_boxes[b].to(device=device, dtype=torch.float32).reshape(-1, 4)
                labels, scores = _sgcls_labels(boxes, det, stride, sgcls_iou)
        if mode == "sgdet":
            centers = det["centers"]
        else:
            centers = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1) / stride
        rel_pairs, rel_scores = decode_relations(
            outputs["rel_logits"][b], outputs["rel_subj"][b], outputs["rel_obj"][b], centers, scores, hw,
            stride=stride, rel_threshold=rel_threshold, score_filter=pair_score_filter and mode != "predcls")
        graphs.append(SceneGraph.from_scores(boxes, labels, scores, rel_pairs, rel_scores, hw,
                                             top_k=max_relations))
    return graphs
