"""Open Images relation metrics (R@50, mAP / wmAP of relations and phrases, score_wtd, mR@50),
giving PySGG's numbers (``pysgg/data/datasets/evaluation/oi/{oi_evaluation,ap_eval_rel}.py``)
on the same predictions, vectorised with numpy. The rules are ``specs/datasets.md``, "OI
evaluation":

* **Candidates** (per image): each predicted pair keeps its 2 best predicates (columns 1..P of
  ``rel_scores``, background column 0 ignored), scored ``(scores[s] * scores[o]) * rel_score`` in
  float32. The best 100 of the M x 2 candidates are kept (the caller's pair order only matters
  for ties), then those scoring ``<= 1e-5`` are dropped.
* **R@K** (micro): a candidate hits GT row j when its (subject label, predicate, object label)
  equals the row's and both box IoUs are ``>= iou_threshold``; it may hit several rows (duplicate
  rows included). R@K = (sum over images of the number of GT rows hit by the first K candidates)
  / (number of GT rows + 1e-12). Images without predictions count their GT rows as missed.
* **AP** per predicate c, all images pooled: the candidates of predicate c sorted by score; each
  looks at the GT rows of c in its image: overlap = ``min(IoU_s, IoU_o)`` (rel) or the IoU of the
  union boxes (phr), times 0 where a label differs; the first arg-max row is a TP when its
  overlap is ``> iou_threshold`` (strict) and no earlier candidate took it, else an FP (no
  fallback to another row). VOC all-point AP. Candidates of an image without a GT row of c
  (or without any GT row) are FPs.
* **mAP** = sum of the P APs / P (predicates absent from the GT count 0); **wmAP** = sum of
  ``AP_c * npos_c / sum(npos)`` (NaN when no image has a GT row, where PySGG divides 0 by 0);
  ``score_wtd`` = 0.2 R@50 + 0.4 wmAP_rel + 0.4 wmAP_phr (PySGG's ``w_final_score``),
  ``final_score`` the same with the plain mAPs.
* **mR@50** is the classic VG mean recall of :func:`~sgg.evaluation.sgg_eval.evaluate_records`
  (graph constraint, arg-max predicate, caller's pair order, images without GT rows or without
  predicted pairs skipped, PredCls scored on the GT objects), reused as it is. The whole classic
  dict (R, ng-R, mR, ... at 20/50/100) is returned under ``"classic"``.

Choices where the spec is silent, all following PySGG's code:

* **Ties** are ordered by the same numpy calls on the same arrays as PySGG: the top-2 predicates
  of a pair by ``np.argsort(-rel_scores[:, 1:], axis=1)`` (their scores by
  ``-np.sort(-rel_scores[:, 1:], axis=1)``), the 100 candidates by ``np.argsort(-s.ravel())`` of
  the float32 ``[M, 2]`` score matrix (flat index ``2 * row + rank``), and each predicate's pooled
  detections (image order, then candidate order within an image) by ``np.argsort(-confidence)``
  on float64 (PySGG concatenates them onto ``np.empty(0)``). All use numpy's default, unstable
  ``kind='quicksort'``: with distinct scores the order is unique; among equal scores it is
  whatever that numpy build's default sort gives, identical to PySGG's on the same numpy and CPU
  (it is not guaranteed to be the index order).
* The OI part scores the prediction's own boxes, labels and object scores in every mode, as
  PySGG (no PredCls override there; PredCls predictions carry the GT boxes/labels and scores of
  1.0 anyway). The classic part applies its PredCls override as the VG evaluator does.
* Thresholds: ``iou_threshold`` (0.5, PySGG's fixed value) is used for R@K (``>=``), AP
  (``>``) and the classic metrics (``>=``), compared in float32. The 1e-5 cut is in float32.
* Degenerate boxes: overlaps are computed and reduced with PySGG's operations (``np.minimum``,
  multiplication by the label mask, ``max``/first ``argmax``), so a NaN IoU (zero-area box) makes
  that detection an FP as in PySGG.

Vectorisation: per image, one ``[candidates, GT rows]`` matrix per test (labels, predicate,
IoUs, overlaps) gives every candidate's R hits and its AP arg-max row; the greedy VOC matching is
vectorised too (a detection is a TP iff its arg-max overlap passes and it is the first passing
detection, in score order, with that arg-max row), so the only Python loops are over images and
over the P predicates.

Research code::

    from sgg.evaluation.oi_eval import evaluate_oi_relations
    m = evaluate_oi_relations(gts, preds, "sgdet", num_predicates=30)
    m["score_wtd"], m["R@50"], m["wmAP_rel"], m["wmAP_phr"], m["mR@50"]

Training / test loops use :class:`OIEvaluator` (``process`` per batch, ``evaluate`` on every
rank, result on rank 0), the same interface as :class:`~sgg.evaluation.SceneGraphEvaluator`.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from sgg.structures.iou import box_iou_plus1
from sgg.utils import comm
from .evaluator import SceneGraphEvaluator
from .sgg_eval import (DEFAULT_KS, ImageRecord, check_ks, check_mode, check_not_empty,
                       evaluate_records, get_field, make_record, to_numpy)

logger = logging.getLogger(__name__)

__all__ = ["OI_TOPK", "OI_PREDICATES_PER_PAIR", "OI_MIN_SCORE", "OIImageRecord", "OIEvaluator",
           "make_oi_record", "evaluate_oi_records", "evaluate_oi_relations", "format_oi_report"]

#: candidates kept per image (PySGG ``topk``)
OI_TOPK = 100
#: predicates kept per pair (PySGG ``prd_k``)
OI_PREDICATES_PER_PAIR = 2
#: candidates scoring <= this are dropped (PySGG ``det_scores_top > 0.00001``, float32)
OI_MIN_SCORE = np.float32(1e-5)
#: R@K computed (50 is the reported one, 100 is logged by PySGG too)
OI_RECALL_KS = (50, 100)
_NO_HIT = np.iinfo(np.int64).max


# --------------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------------
def _array(value: Any, name: str, where: str, trailing: Optional[int], dtype: Any) -> np.ndarray:
    """``value`` as a numpy array of ``dtype``: 1-D (``trailing`` None) or ``[n, trailing]``; None
    or an empty array is an empty one. ValueError naming ``where`` and ``name`` otherwise."""
    if value is None:
        return np.zeros((0,) if trailing is None else (0, trailing), dtype=dtype)
    arr = to_numpy(value)
    if arr.size == 0:
        return np.zeros((0,) if trailing is None else (0, trailing), dtype=dtype)
    if trailing is None and arr.ndim != 1:
        raise ValueError(f"{where}: {name} must be 1-D, got shape {tuple(arr.shape)}")
    if trailing is not None and (arr.ndim != 2 or arr.shape[1] != trailing):
        raise ValueError(f"{where}: {name} must have shape [n, {trailing}], got {tuple(arr.shape)}")
    return arr.astype(dtype, copy=False)


def _checked_inputs(groundtruth: Any, prediction: Any, num_predicates: int, where: str):
    """The arrays of one image, checked (shapes, lengths, index and predicate ranges)."""
    gt_boxes = _array(get_field(groundtruth, "boxes"), "GT boxes", where, 4, np.float32)
    gt_labels = _array(get_field(groundtruth, "labels"), "GT labels", where, None, np.int64)
    gt_rels = _array(get_field(groundtruth, "relations"), "GT relations", where, 3, np.int64)
    if len(gt_labels) != len(gt_boxes):
        raise ValueError(f"{where}: {len(gt_boxes)} GT boxes but {len(gt_labels)} GT labels")
    if len(gt_rels):
        if gt_rels[:, :2].min() < 0 or gt_rels[:, :2].max() >= len(gt_boxes):
            raise ValueError(f"{where}: GT relations index an object outside 0..{len(gt_boxes) - 1}")
        if gt_rels[:, 2].min() < 1 or gt_rels[:, 2].max() > num_predicates:
            raise ValueError(f"{where}: GT relation predicate outside 1..{num_predicates}")

    boxes = _array(get_field(prediction, "boxes"), "predicted boxes", where, 4, np.float32)
    labels = _array(get_field(prediction, "labels"), "predicted labels", where, None, np.int64)
    scores = _array(get_field(prediction, "scores"), "predicted object scores", where, None, np.float32)
    if len(labels) != len(boxes) or len(scores) != len(boxes):
        raise ValueError(f"{where}: {len(boxes)} predicted boxes but {len(labels)} labels and "
                         f"{len(scores)} object scores")
    rel_pairs = _array(get_field(prediction, "rel_pairs"), "rel_pairs", where, 2, np.int64)
    num_rels = len(rel_pairs)
    rel_scores_in = get_field(prediction, "rel_scores")
    if num_rels == 0:
        rel_scores = np.zeros((0, num_predicates + 1), dtype=np.float32)
        if rel_scores_in is not None and to_numpy(rel_scores_in).size:
            raise ValueError(f"{where}: rel_scores has entries but rel_pairs is empty")
    else:
        rel_scores = to_numpy(rel_scores_in) if rel_scores_in is not None else np.zeros(0)
        if rel_scores.ndim != 2 or rel_scores.shape != (num_rels, num_predicates + 1):
            raise ValueError(f"{where}: rel_scores must have shape [M, P+1] = [{num_rels}, "
                             f"{num_predicates + 1}] (column 0 = background), got "
                             f"{tuple(rel_scores.shape)}")
        rel_scores = rel_scores.astype(np.float32, copy=False)
        if rel_pairs.min() < 0 or rel_pairs.max() >= len(boxes):
            raise ValueError(f"{where}: rel_pairs index a predicted object outside 0..{len(boxes) - 1}")
    return gt_boxes, gt_labels, gt_rels, boxes, labels, scores, rel_pairs, rel_scores


def _check_num_predicates(num_predicates: Any) -> int:
    if isinstance(num_predicates, bool) or int(num_predicates) != num_predicates or int(num_predicates) <= 0:
        raise ValueError(f"num_predicates must be a positive integer, got {num_predicates!r}")
    return int(num_predicates)


# --------------------------------------------------------------------------------------------
# per-image record
# --------------------------------------------------------------------------------------------
@dataclass
class OIImageRecord:
    """What the OI evaluator keeps of one image: O(N + G + R + 100) numbers.

    ``vg``: the VG evaluator's :class:`~sgg.evaluation.sgg_eval.ImageRecord` of the image (GT
    boxes/labels/rows, predicted boxes/labels/scores, the classic candidates), used for mR@50 and
    as the source of the objects. ``pairs int32[n,2]`` (object indices), ``predicates int32[n]``
    (1..P) and ``scores float32[n]``: the kept OI candidates (n <= 100), in PySGG's order.
    """

    vg: ImageRecord
    pairs: np.ndarray
    predicates: np.ndarray
    scores: np.ndarray

    @property
    def image_id(self) -> int:
        return self.vg.image_id

    @property
    def nbytes(self) -> int:
        return self.vg.nbytes + self.pairs.nbytes + self.predicates.nbytes + self.scores.nbytes


def oi_candidates(rel_pairs: np.ndarray, rel_scores: np.ndarray, obj_scores: np.ndarray
                  ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """PySGG's kept candidates of one image: ``(pairs int64[n,2], predicates int64[n] (1..P),
    scores float32[n])``, best first (see the module docstring for the tie order)."""
    num_pred = rel_scores.shape[1] - 1
    if len(rel_pairs) == 0 or num_pred <= 0:
        return (np.zeros((0, 2), np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    prd = rel_scores[:, 1:].astype(np.float32, copy=False)
    k = min(OI_PREDICATES_PER_PAIR, num_pred)
    top_labels = np.argsort(-prd, axis=1)[:, :k]           # PySGG: det_labels_prd
    top_scores = -np.sort(-prd, axis=1)[:, :k]              # PySGG: det_scores_prd
    obj_scores = obj_scores.astype(np.float32, copy=False)
    pair_scores = obj_scores[rel_pairs[:, 0]] * obj_scores[rel_pairs[:, 1]]
    spo = pair_scores[:, None] * top_scores                 # float32 [M, k]
    flat = np.argsort(-spo.ravel())[:OI_TOPK]               # PySGG: argsort_desc(...)[:topk]
    rows, ranks = flat // k, flat % k
    scores = spo[rows, ranks]
    keep = scores > OI_MIN_SCORE
    rows, ranks, scores = rows[keep], ranks[keep], scores[keep]
    return rel_pairs[rows], top_labels[rows, ranks].astype(np.int64) + 1, scores


def make_oi_record(groundtruth: Any, prediction: Any, mode: str, num_predicates: int,
                   image_id: Optional[int] = None, ks: Sequence[int] = DEFAULT_KS) -> OIImageRecord:
    """Reduce one image to its :class:`OIImageRecord`. Inputs as
    :func:`~sgg.evaluation.sgg_eval.make_record` (``ks``: those of the classic metrics)."""
    check_mode(mode)
    num_predicates = _check_num_predicates(num_predicates)
    if image_id is None:
        image_id = get_field(groundtruth, "image_id", get_field(prediction, "image_id", -1))
    image_id = -1 if image_id is None else int(image_id)
    where = f"image {image_id}"
    (_, _, _, _, _, obj_scores, rel_pairs, rel_scores) = _checked_inputs(
        groundtruth, prediction, num_predicates, where)
    vg = make_record(groundtruth, prediction, mode, ks, image_id=image_id,
                     num_predicates=num_predicates)
    pairs, predicates, scores = oi_candidates(rel_pairs, rel_scores, obj_scores)
    return OIImageRecord(vg=vg, pairs=pairs.astype(np.int32), predicates=predicates.astype(np.int32),
                         scores=scores.astype(np.float32))


# --------------------------------------------------------------------------------------------
# matching and aggregation
# --------------------------------------------------------------------------------------------
def _union_boxes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.concatenate([np.minimum(a[:, :2], b[:, :2]), np.maximum(a[:, 2:], b[:, 2:])], 1)


def _argmax_rows(overlaps: np.ndarray, valid: np.ndarray, same_pred: np.ndarray,
                 thr: np.float32) -> Tuple[np.ndarray, np.ndarray]:
    """PySGG's per-detection decision, for all detections at once. For each row (detection):
    over the GT rows of its predicate (``same_pred``), ``overlaps * valid`` (labels equal), max and
    first arg-max; ``ok`` = some row is valid and that max is ``> thr``. Returns ``(ok, row)``."""
    ov = overlaps * valid.astype(np.float32)
    ov = np.where(same_pred, ov, np.float32(-np.inf))
    with np.errstate(invalid="ignore"):
        ovmax = ov.max(1)
        ok = valid.any(1) & (ovmax > thr)
    return ok, ov.argmax(1)


def _match_image(rec: OIImageRecord, thr: np.float32):
    """Per image: first-hit rank of every GT row (R@K), and each candidate's AP decision
    ``(rel_ok, rel_row, phr_ok, phr_row)``."""
    vg = rec.vg
    gt_rels = np.asarray(vg.gt_rels, dtype=np.int64).reshape(-1, 3)
    n, num_rows = len(rec.predicates), len(gt_rels)
    if n == 0 or num_rows == 0:
        no = np.zeros(n, dtype=bool)
        zero = np.zeros(n, dtype=np.int64)
        return np.full(num_rows, _NO_HIT, dtype=np.int64), no, zero, no.copy(), zero.copy()
    boxes, labels = vg.boxes, vg.labels.astype(np.int64)
    gt_boxes, gt_labels = vg.gt_boxes, vg.gt_labels.astype(np.int64)
    cs, co = rec.pairs[:, 0].astype(np.int64), rec.pairs[:, 1].astype(np.int64)
    gs, go, gp = gt_rels[:, 0], gt_rels[:, 1], gt_rels[:, 2]

    obj_iou = box_iou_plus1(boxes, gt_boxes)                  # [N, G] float32
    iou_s = obj_iou[cs[:, None], gs[None, :]]                 # [n, R]
    iou_o = obj_iou[co[:, None], go[None, :]]
    same_pred = rec.predicates.astype(np.int64)[:, None] == gp[None, :]
    labels_ok = (labels[cs][:, None] == gt_labels[gs][None, :]) & \
                (labels[co][:, None] == gt_labels[go][None, :])
    valid = same_pred & labels_ok

    # R@K: triplet equal and both IoU >= thr; first hitting candidate of each GT row
    with np.errstate(invalid="ignore"):
        hit = valid & (iou_s >= thr) & (iou_o >= thr)
    first_hit = np.where(hit.any(0), hit.argmax(0), _NO_HIT).astype(np.int64)

    # AP: relationship overlap = min(IoU_s, IoU_o); phrase overlap = IoU of the union boxes
    rel_ok, rel_row = _argmax_rows(np.minimum(iou_s, iou_o), valid, same_pred, thr)
    cand_union = _union_boxes(boxes[cs], boxes[co])
    gt_union = _union_boxes(gt_boxes[gs], gt_boxes[go])
    phr_ok, phr_row = _argmax_rows(box_iou_plus1(cand_union, gt_union), valid, same_pred, thr)
    return first_hit, rel_ok, rel_row, phr_ok, phr_row


def voc_ap(tp: np.ndarray, fp: np.ndarray, npos: int) -> float:
    """All-point VOC AP of detections in score order (``tp``/``fp`` float64 0/1), PySGG's
    ``ap_eval`` + ``get_ap`` arithmetic."""
    tp = np.cumsum(tp)
    fp = np.cumsum(fp)
    rec = tp / (float(npos) + 1e-12)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    mrec = np.concatenate(([0.0], rec, [1.0]))
    mpre = np.concatenate(([0.0], prec, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]            # precision envelope, from the right
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def _first_true_per_key(ok: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """``tp[d]`` = ``ok[d]`` and no earlier ``ok`` detection has the same key (greedy matching)."""
    tp = np.zeros(len(ok), dtype=np.float64)
    pos = np.flatnonzero(ok)
    if len(pos):
        _, first = np.unique(keys[pos], return_index=True)
        tp[pos[first]] = 1.0
    return tp


def evaluate_oi_records(records: Sequence[OIImageRecord], mode: str, num_predicates: int,
                        zeroshot_triplets: Any = None, iou_threshold: float = 0.5,
                        ks: Sequence[int] = DEFAULT_KS,
                        predicate_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """OI metrics of a list of :class:`OIImageRecord` (in the order given: it is PySGG's image
    order, which decides ties between images). Keys (fractions):

    ``R@50`` (micro), ``R@100_oi`` (micro, PySGG logs it), ``per_image_R@50`` /
    ``per_image_R@100`` (PySGG's logged per-image means, *not* R@50); ``mAP_rel``, ``wmAP_rel``,
    ``mAP_phr``, ``wmAP_phr``; ``AP_rel`` / ``AP_phr`` (P floats, predicate 1..P); ``npos``
    (P ints: GT rows per predicate); ``score_wtd`` = 0.2 R@50 + 0.4 wmAP_rel + 0.4 wmAP_phr,
    ``final_score`` = 0.2 R@50 + 0.4 mAP_rel + 0.4 mAP_phr; ``mR@50`` and ``per_predicate_R@50``
    (the classic VG mean recall) and ``classic`` (the VG evaluator's whole dict for ``ks``,
    with zR@K when ``zeroshot_triplets`` is given);
    ``num_images`` (all images, with or without GT rows or predictions), ``num_gt_rels``,
    ``mode``, and ``predicate_names`` when given.
    """
    check_mode(mode)
    num_predicates = _check_num_predicates(num_predicates)
    ks = check_ks(ks)
    if 50 not in ks:
        raise ValueError(f"ks must contain 50 (mR@50 is reported), got {ks}")
    if predicate_names is not None:
        predicate_names = [str(n) for n in predicate_names]
        if len(predicate_names) == num_predicates + 1:
            predicate_names = predicate_names[1:]  # drop "__background__"
        if len(predicate_names) != num_predicates:
            raise ValueError(f"{len(predicate_names)} predicate names for {num_predicates} predicates")
    if not 0.0 <= float(iou_threshold) <= 1.0:
        raise ValueError(f"iou_threshold must be in [0, 1], got {iou_threshold}")
    thr = np.float32(iou_threshold)
    records = list(records)

    first_hits, gt_preds, per_image = [], [], {k: [] for k in OI_RECALL_KS}
    img, preds, scores = [], [], []
    rel_ok, rel_key, phr_ok, phr_key = [], [], [], []
    row_offset = 0
    for i, rec in enumerate(records):
        gt_rels = np.asarray(rec.vg.gt_rels, dtype=np.int64).reshape(-1, 3)
        if len(gt_rels) and (gt_rels[:, 2].min() < 1 or gt_rels[:, 2].max() > num_predicates):
            raise ValueError(f"image {rec.image_id}: GT predicate outside 1..{num_predicates}")
        if len(rec.predicates) and (rec.predicates.min() < 1 or rec.predicates.max() > num_predicates):
            raise ValueError(f"image {rec.image_id}: candidate predicate outside 1..{num_predicates}")
        fh, r_ok, r_row, p_ok, p_row = _match_image(rec, thr)
        first_hits.append(fh)
        gt_preds.append(gt_rels[:, 2])
        for k in OI_RECALL_KS:
            per_image[k].append(float(int((fh < k).sum())) / float(len(gt_rels) + 1e-12))
        n = len(rec.predicates)
        img.append(np.full(n, i, dtype=np.int64))
        preds.append(rec.predicates.astype(np.int64))
        scores.append(rec.scores)
        rel_ok.append(r_ok)
        rel_key.append(row_offset + r_row)
        phr_ok.append(p_ok)
        phr_key.append(row_offset + p_row)
        row_offset += len(gt_rels)

    def cat(parts, dtype):
        return np.concatenate(parts).astype(dtype, copy=False) if parts else np.zeros(0, dtype)

    first_hit = cat(first_hits, np.int64)
    gt_pred = cat(gt_preds, np.int64)
    img, preds, scores = cat(img, np.int64), cat(preds, np.int64), cat(scores, np.float32)
    rel_ok, rel_key = cat(rel_ok, bool), cat(rel_key, np.int64)
    phr_ok, phr_key = cat(phr_ok, bool), cat(phr_key, np.int64)

    all_gt = len(gt_pred)
    out: Dict[str, Any] = {"mode": mode, "num_images": len(records), "num_gt_rels": int(all_gt)}
    recalls = {k: float(int((first_hit < k).sum())) / (float(all_gt) + 1e-12) for k in OI_RECALL_KS}
    npos = np.bincount(gt_pred, minlength=num_predicates + 1)[1:].astype(np.int64)
    all_npos = int(npos.sum())

    ap = {"rel": [], "phr": []}
    for c in range(1, num_predicates + 1):
        sel = np.flatnonzero(preds == c)                      # pooled: image order, then rank
        order = sel[np.argsort(-scores[sel].astype(np.float64))]  # PySGG: np.argsort(-confidence)
        for kind, ok, key in (("rel", rel_ok, rel_key), ("phr", phr_ok, phr_key)):
            tp = _first_true_per_key(ok[order], key[order])
            ap[kind].append(voc_ap(tp, 1.0 - tp, int(npos[c - 1])))

    for kind in ("rel", "phr"):
        m_ap, w_ap = 0.0, 0.0
        for c in range(num_predicates):
            with np.errstate(invalid="ignore", divide="ignore"):
                w_ap += ap[kind][c] * float(npos[c]) / float(all_npos)  # PySGG: NaN if all_npos == 0
            m_ap += ap[kind][c]
        m_ap /= num_predicates
        out[f"mAP_{kind}"] = float(m_ap)
        out[f"wmAP_{kind}"] = float(w_ap)
        out[f"AP_{kind}"] = [float(a) for a in ap[kind]]
    out["npos"] = [int(x) for x in npos]
    out["R@50"] = recalls[50]
    out["R@100_oi"] = recalls[100]
    for k in OI_RECALL_KS:
        out[f"per_image_R@{k}"] = float(np.mean(per_image[k])) if records else float("nan")
    out["final_score"] = float(0.4 * out["mAP_rel"] + 0.2 * recalls[50] + 0.4 * out["mAP_phr"])
    out["score_wtd"] = float(0.4 * out["wmAP_rel"] + 0.2 * recalls[50] + 0.4 * out["wmAP_phr"])

    classic = evaluate_records([rec.vg for rec in records], mode, num_predicates,
                               zeroshot_triplets=zeroshot_triplets, iou_threshold=iou_threshold,
                               ks=ks, predicate_names=predicate_names)
    out["mR@50"] = classic["mR@50"]
    out["per_predicate_R@50"] = list(classic["per_predicate_R@50"])
    out["classic"] = classic
    if predicate_names is not None:
        out["predicate_names"] = list(predicate_names)
    return out


def evaluate_oi_relations(groundtruths: Sequence[Any], predictions: Sequence[Any], mode: str,
                          num_predicates: int, zeroshot_triplets: Any = None,
                          iou_threshold: float = 0.5, ks: Sequence[int] = DEFAULT_KS,
                          predicate_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Open Images metrics of per-image GT / prediction dicts (same order, same length): the
    same inputs and arguments, in the same order, as
    :func:`~sgg.evaluation.sgg_eval.evaluate_relations`, so switching is one name.

    GT: ``boxes float[G,4]`` xyxy original pixels, ``labels int[G]``, ``relations int[R,3]``
    (subj idx, obj idx, predicate 1..P). Prediction: ``boxes [N,4]``, ``labels [N]``,
    ``scores [N]``, ``rel_pairs [M,2]``, ``rel_scores [M,P+1]`` (column 0 = background; the OI
    metrics re-sort the candidates, the classic mR@50 uses the given order). numpy or torch.
    ``zeroshot_triplets``: only for the classic part (``classic["zR@K"]``). ``iou_threshold``:
    box IoU threshold (PySGG: 0.5). ``ks``: K of the classic metrics (must contain 50). See
    :func:`evaluate_oi_records` for the keys. Empty lists, mismatched lengths, wrong shapes or
    out-of-range indices / predicates are a ValueError.
    """
    if len(groundtruths) != len(predictions):
        raise ValueError(f"{len(groundtruths)} ground truths but {len(predictions)} predictions")
    check_not_empty(len(groundtruths), "evaluate_oi_relations")
    check_mode(mode)
    num_predicates = _check_num_predicates(num_predicates)
    ks = check_ks(ks)
    records = [make_oi_record(g, p, mode, num_predicates, image_id=i, ks=ks)
               for i, (g, p) in enumerate(zip(groundtruths, predictions))]
    return evaluate_oi_records(records, mode, num_predicates, zeroshot_triplets=zeroshot_triplets,
                               iou_threshold=iou_threshold, ks=ks, predicate_names=predicate_names)


# --------------------------------------------------------------------------------------------
# streaming evaluator
# --------------------------------------------------------------------------------------------
class OIEvaluator(SceneGraphEvaluator):
    """Open Images metrics of a dataset, one batch at a time; the interface of
    :class:`~sgg.evaluation.SceneGraphEvaluator` (``process``, ``evaluate``, ``reset``,
    ``records``, ``gather_records``, ``save``).

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_predicates: P, foreground predicates.
        zeroshot_triplets: int [Z,3] or None; used by the classic metrics only
            (``classic["zR@K"]``).
        iou_threshold: box IoU threshold (PySGG: 0.5).
        ks: K of the classic metrics (must contain 50).
        predicate_names: P names (or P+1 with the background first), copied into the result.
        class_names: object class names (background first) or their number; when given,
            ``evaluate`` also reports box AP (``AP50``, ``AP``) as PySGG's OI evaluation does.

    The arguments are SceneGraphEvaluator's, in the same order (a drop-in swap).

    Each rank keeps one :class:`OIImageRecord` per image; ``evaluate`` gathers them to rank 0
    (:func:`sgg.utils.comm.gather`), orders them by ``image_id`` dropping duplicates
    (:func:`~sgg.evaluation.order_records`, as SceneGraphEvaluator), and scores them there.
    """

    def __init__(self, mode: str, num_predicates: int, zeroshot_triplets: Any = None,
                 iou_threshold: float = 0.5, ks: Sequence[int] = DEFAULT_KS,
                 predicate_names: Optional[Sequence[str]] = None,
                 class_names: Union[Sequence[str], int, None] = None, rel_nms_thresh: float = 0.0):
        # rel_nms is an option of the VG metrics: SceneGraphEvaluator refuses a non-zero value here
        super().__init__(mode, _check_num_predicates(num_predicates), zeroshot_triplets=zeroshot_triplets,
                         iou_threshold=iou_threshold, ks=ks, predicate_names=predicate_names,
                         class_names=class_names, rel_nms_thresh=rel_nms_thresh)
        if 50 not in self.ks:
            raise ValueError(f"ks must contain 50 (mR@50 is reported), got {self.ks}")

    def _make_record(self, gt: Any, pred: Any, image_id: int) -> OIImageRecord:
        return make_oi_record(gt, pred, self.mode, self.num_predicates, image_id=image_id, ks=self.ks)

    def evaluate(self) -> Dict[str, Any]:
        """Metrics dict on rank 0 (keys in :func:`evaluate_oi_records`), ``{}`` elsewhere."""
        records = self.gather_records()
        if not comm.is_main_process():
            return {}
        check_not_empty(len(records), "OIEvaluator.evaluate")
        metrics = evaluate_oi_records(records, self.mode, self.num_predicates,
                                      zeroshot_triplets=self.zeroshot_triplets,
                                      iou_threshold=self.iou_threshold, ks=self.ks,
                                      predicate_names=self.predicate_names)
        if self.class_names is not None and records:
            from .detection import records_box_ap

            metrics.update(records_box_ap([rec.vg for rec in records], self.mode, self.class_names))
        return metrics

    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Write the gathered records' classic part (the VG predictions file) on rank 0
        (collective). The file re-scores the classic metrics; the OI candidates are not in it."""
        from .io import save_predictions

        records = self.gather_records()
        if comm.is_main_process():
            save_predictions(path, [rec.vg for rec in records], self.mode, self.ks, metadata=metadata)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------
def _pct(x: Any) -> str:
    x = float(x)
    return "nan" if math.isnan(x) else "{:.2f}".format(100 * x)


def format_oi_report(metrics: Mapping[str, Any],
                     predicate_names: Optional[Sequence[str]] = None) -> str:
    """PySGG's Open Images block (percentages): rel / phr mAP and weighted mAP with the
    per-predicate ``AP / weighted AP (npos share)``, recall@50/100 (micro and per image), the
    final scores, then mR@50 (classic)."""
    ap_rel, ap_phr = metrics["AP_rel"], metrics["AP_phr"]
    num = len(ap_rel)
    names = predicate_names if predicate_names is not None else metrics.get("predicate_names")
    names = [str(i) for i in range(1, num + 1)] if names is None else [str(n) for n in names]
    if len(names) == num + 1:
        names = names[1:]
    npos = metrics.get("npos", [0] * num)
    total = float(sum(npos))

    def per_class(aps) -> str:
        parts = []
        for name, a, n in zip(names, aps, npos):
            share = n / total if total else float("nan")
            parts.append("{}: {:.3f} / {:.3f} ({:.6f})".format(name, 100 * a, 100 * a * share, share))
        return ", ".join(parts)

    sep = "=" * 80
    lines = [sep, "openimage evaluation (mode={}, images={}):".format(metrics.get("mode", "?"),
                                                                      metrics.get("num_images", "?")),
             "rel mAP: {}, weighted rel mAP: {}".format(_pct(metrics["mAP_rel"]), _pct(metrics["wmAP_rel"])),
             "rel AP perclass: AP/ weighted-AP (recall)", per_class(ap_rel), "",
             "phr mAP: {}, weighted phr mAP: {}".format(_pct(metrics["mAP_phr"]), _pct(metrics["wmAP_phr"])),
             "phr AP perclass: AP/ weighted-AP (recall)", per_class(ap_phr), ""]
    if "R@100_oi" in metrics:
        lines.append("recall@50: {}, recall@100: {}".format(_pct(metrics["R@50"]), _pct(metrics["R@100_oi"])))
    else:
        lines.append("recall@50: {}".format(_pct(metrics["R@50"])))
    if "per_image_R@50" in metrics and "per_image_R@100" in metrics:
        lines.append("recall@50: {}, recall@100: {} (per images)".format(
            _pct(metrics["per_image_R@50"]), _pct(metrics["per_image_R@100"])))
    lines += ["weighted_res: 0.4 * w_rel_mAP + 0.2 * recall@50 + 0.4 * w_phr_mAP",
              "final_score:{}  weighted final_score: {}".format(_pct(metrics["final_score"]),
                                                                _pct(metrics["score_wtd"]))]
    if "mR@50" in metrics:
        lines.append("mR@50 (classic VG mean recall): {}".format(_pct(metrics["mR@50"])))
    if "AP50" in metrics:
        lines.append("Detection evaluation mAp={:.4f}".format(float(metrics["AP50"])))
    lines.append(sep)
    return "\n".join(lines) + "\n"
