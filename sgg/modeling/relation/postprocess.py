"""Relation head outputs -> :class:`~sgg.structures.SceneGraph` (SGB's relation ``PostProcessor``).

* Objects: PredCls keeps the GT labels with score exactly 1.0. SGCls/SGDet take the label chosen by
  the predictor (Motifs: greedy decoder, plus class-aware NMS in SGDet, as SGB) or, when the
  predictor gives none, the argmax over classes 1..C of ``softmax(refined logits)`` (SGDet: after
  class-aware NMS, SGB's ``obj_prediction_nms``); the score is the softmax probability of that
  label (background excluded from the choice).
* Relations: ``rel_scores = softmax(rel_logits)`` over P+1 columns; rows ordered by triplet score
  ``max_{p>=1} rel_scores[p] * score[s] * score[o]``, descending, stable
  (:meth:`SceneGraph.from_scores`).
* SGDet boxes: ``boxes_per_cls[i, label_i]`` when the proposals carry a ``boxes_per_cls`` field
  ``[N, C+1, 4]`` (SGB regresses with the refined class), else the proposal boxes.

Graphs are in the frame of the proposals (the resized image); the meta-architecture rescales.
"""
from __future__ import annotations

from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

from sgg.structures import Instances, SceneGraph

__all__ = ["class_aware_nms_labels", "class_aware_nms_labels_batched", "postprocess_relations"]


def _iou_per_class(boxes: torch.Tensor) -> torch.Tensor:
    """IoU ("+1" convention, SGB's ``nms_overlaps``) of ``[N, K, 4]`` boxes -> ``[N, N, K]``."""
    lt = torch.max(boxes[:, None, :, :2], boxes[None, :, :, :2])
    rb = torch.min(boxes[:, None, :, 2:], boxes[None, :, :, 2:])
    wh = (rb - lt + 1.0).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area = (boxes[..., 2] - boxes[..., 0] + 1.0) * (boxes[..., 3] - boxes[..., 1] + 1.0)
    return inter / (area[:, None, :] + area[None, :, :] - inter).clamp(min=1e-12)


@torch.no_grad()
def class_aware_nms_labels(probs: torch.Tensor, boxes: torch.Tensor, thresh: float = 0.5) -> torch.Tensor:
    """One label per box by greedy class-aware NMS over a class distribution (SGB ``nms_per_cls``).

    Repeatedly take the (box, class) of highest remaining probability among unlabelled boxes,
    give the box that class, and zero that class for every still unlabelled box overlapping it
    with IoU >= thresh.

    Args:
        probs: ``[N, C+1]`` class probabilities (column 0 = background, never chosen).
        boxes: ``[N, 4]`` (same box for every class) or ``[N, C+1, 4]`` per-class boxes.
    Returns:
        int64 ``[N]`` labels in 1..C. A box whose every class was suppressed gets its unsuppressed
        argmax (SGB would give it 0 = background).
    """
    return class_aware_nms_labels_batched([probs], [boxes], thresh)[0]


@torch.no_grad()
def class_aware_nms_labels_batched(probs: Sequence[torch.Tensor], boxes: Sequence[torch.Tensor],
                                   thresh: float = 0.5) -> List[torch.Tensor]:
    """:func:`class_aware_nms_labels` of several images at once (the same labels as one by one).

    The images are padded to ``max N`` and the greedy loop runs ``max N`` steps of a few device
    ops for the whole batch (no host synchronisation inside the loop), instead of ``sum N`` steps.
    """
    sizes = [int(p.shape[0]) for p in probs]
    nmax = max(sizes, default=0)
    if nmax == 0:
        return [torch.zeros(0, dtype=torch.long, device=p.device) for p in probs]
    dev = probs[0].device
    b, k = len(probs), int(probs[0].shape[1])
    c = k - 1
    # padded rows hold -2 (below the -1 of labelled rows): never picked
    fg = torch.full((b, nmax, c), -2.0, device=dev)
    overlap = torch.zeros(b, nmax, nmax, c, dtype=torch.bool, device=dev)
    for i, (pr, bx) in enumerate(zip(probs, boxes)):
        n = sizes[i]
        if n == 0:
            continue
        fg[i, :n] = pr[:, 1:].float()
        if bx.dim() == 2:
            overlap[i, :n, :n] = (_iou_per_class(bx[:, None, :].float()) >= thresh).expand(n, n, c)
        else:
            overlap[i, :n, :n] = _iou_per_class(bx[:, 1:, :].float()) >= thresh
    num = torch.tensor(sizes, device=dev)
    bidx = torch.arange(b, device=dev)
    cols = torch.arange(c, device=dev)
    labels = torch.zeros(b, nmax, dtype=torch.long, device=dev)
    picked_prob = torch.zeros(b, nmax, device=dev)
    done = torch.zeros(b, nmax, dtype=torch.bool, device=dev)
    for step in range(nmax):
        active = step < num  # [B]: image still has an unlabelled box
        flat = fg.view(b, -1).argmax(dim=1)
        row, cls = flat // c, flat % c
        val = fg.view(b, -1).gather(1, flat[:, None]).squeeze(1)
        labels[bidx, row] = torch.where(active, cls + 1, labels[bidx, row])
        picked_prob[bidx, row] = torch.where(active, val, picked_prob[bidx, row])
        done[bidx, row] |= active
        suppress = overlap[bidx, row].gather(2, cls.view(b, 1, 1).expand(b, nmax, 1)).squeeze(2)
        zero = (suppress & ~done & active[:, None])[:, :, None] & (cols.view(1, 1, c) == cls.view(b, 1, 1))
        fg = fg.masked_fill(zero, 0.0)
        fg[bidx, row] = torch.where(active[:, None], fg.new_full((1, c), -1.0), fg[bidx, row])
    out = []
    for i, pr in enumerate(probs):
        n = sizes[i]
        fallback = pr[:, 1:].argmax(dim=1) + 1
        out.append(torch.where(picked_prob[i, :n] > 0, labels[i, :n], fallback))
    return out


def postprocess_relations(proposals: Sequence[Instances], obj_logits: Sequence[torch.Tensor],
                          rel_logits: Sequence[torch.Tensor], rel_pairs: Sequence[torch.Tensor],
                          mode: str, obj_labels: Optional[Sequence[Optional[torch.Tensor]]] = None,
                          later_nms_thresh: float = 0.5, top_k: Optional[int] = None) -> List[SceneGraph]:
    """Per-image scene graphs from the predictor's logits.

    Args:
        proposals: the head's input boxes (PredCls: with GT ``labels``).
        obj_logits: per image ``[N_i, C+1]`` refined object logits (ignored in PredCls).
        rel_logits: per image ``[M_i, P+1]``; rel_pairs: per image int64 ``[M_i, 2]``.
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        obj_labels: per image labels already chosen by the predictor (or None).
        later_nms_thresh: SGDet class-aware NMS IoU (``TEST.RELATION.LATER_NMS_PREDICTION_THRES``)
            when the predictor chose no labels.
        top_k: keep only the first k relations of each image (None = all).
    """
    results = []
    for i, prop in enumerate(proposals):
        boxes = prop.boxes.tensor
        n = boxes.shape[0]
        given = obj_labels[i] if obj_labels is not None else None
        if mode == "predcls":
            labels = prop.labels.long()
            scores = torch.ones(n, dtype=torch.float32, device=boxes.device)
        else:
            prob = F.softmax(obj_logits[i].float(), dim=-1)
            if given is not None:
                labels = given.long()
            elif mode == "sgdet":
                nms_boxes = prop.boxes_per_cls if prop.has("boxes_per_cls") else boxes
                labels = class_aware_nms_labels(prob, nms_boxes, later_nms_thresh)
            else:
                labels = prob[:, 1:].argmax(dim=1) + 1
            scores = prob.gather(1, labels.view(-1, 1)).view(-1) if n else prob.new_zeros(0)
            if mode == "sgdet" and prop.has("boxes_per_cls") and n:
                boxes = prop.boxes_per_cls[torch.arange(n, device=boxes.device), labels]
        rel_scores = F.softmax(rel_logits[i].float(), dim=-1)
        results.append(SceneGraph.from_scores(boxes, labels, scores, rel_pairs[i], rel_scores,
                                              prop.image_size, top_k=top_k))
    return results
