"""Scene-graph relation metrics (R, ng-R, mR, ng-mR, zR, ng-zR, A, F), vectorised.

This is the evaluator of Scene-Graph-Benchmark.pytorch (SGB, ``sgg_eval.py``) rewritten around
numpy array operations. It gives the same numbers as the reference loop, bit for bit, including
its quirks (see ``specs/evaluation.md``):

* an image without GT relations (R == 0) is skipped entirely;
* an image without predicted pairs (M == 0) is skipped entirely too (it is *not* counted as a
  recall of 0);
* PredCls: the predicted boxes/labels are replaced by the GT ones and every object score by 1.0;
* IoU uses the maskrcnn_benchmark "+1 pixel" convention in float32 (:func:`box_iou_plus1`);
* pair accuracy (A@K) tests whether a predicted pair is a GT pair with the hash
  ``subj * 1024 + obj`` exactly as the reference (two pairs can alias when an index is >= 1024);
* ng-R ties: the reference used ``np.argsort(-scores.ravel())`` (unstable, so its order among
  equal scores is unspecified). We use a fixed order: descending score, ties broken by ascending
  flat index ``row * P + (predicate - 1)``, i.e. ``np.argsort(-scores.ravel(), kind='stable')``.

Option ``rel_nms_thresh > 0`` (PE-Net's evaluation, ``TEST.RELATION.REL_NMS``; PredCls and SGCls
only, SGDet ignores it): before matching, the graph-constrained list is relabelled by
:func:`~sgg.evaluation.rel_nms.rel_nms` (IoU threshold ``rel_nms_thresh``, PE-Net used 0.6) and
re-sorted by ``score * subj_score * subj_score`` (the subject score SQUARED, PE-Net's quirk, kept;
in PredCls the object scores are 1). A pair whose every predicate was suppressed keeps label 0
(background, never a match) with its background probability as score, as in PE-Net. R@K, mR@K,
zR@K (and A@K) use the re-sorted list; the ng metrics do not change (raw ``rel_scores``).

* rel_nms ties: PE-Net re-sorted with ``np.argsort(-x)`` (unstable, so its order among equal
  scores is unspecified); we use ``np.argsort(-x, kind='stable')`` (ties keep the given
  ``rel_pairs`` order).
* rel_nms A@K: PE-Net zipped the re-sorted ``pred_to_gt`` with the "pair is a GT pair" flags of
  the ORIGINAL order (a mismatch bug); here A@K uses the re-sorted order for both (FIXED).

The work is split in two steps so that a streaming evaluator only keeps O(K + G + R) numbers per
image, never the M x (P+1) score matrix:

1. :func:`make_record` reduces one (ground truth, prediction) pair to an :class:`ImageRecord`:
   the GT, the predicted objects, the first ``max(ks)`` predicted pairs (plus, for PredCls/SGCls,
   the first ``max(ks)`` pairs that are GT pairs, needed by A@K) with their arg-max predicate, and
   the top ``max(100, max(ks))`` (pair, predicate) entries without graph constraint.
2. :func:`evaluate_records` matches the records to their GT (one vectorised match matrix per
   image) and reduces over images with the same numpy reductions as the reference (``np.mean``
   over float64 arrays in image order), so the values equal the reference's to the last bit.

:func:`evaluate_relations` is both steps for research code that holds lists of per-image dicts.
"""
from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass, fields
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from sgg.protocol import MODES, check_mode  # noqa: F401  (MODES: re-exported by sgg.evaluation)
from sgg.structures.iou import box_iou_plus1  # lives with the other box helpers; re-exported here

from .rel_nms import rel_nms

logger = logging.getLogger(__name__)

DEFAULT_KS: Tuple[int, ...] = (20, 50, 100)
#: The reference keeps the top 100 (pair, predicate) entries for the no-graph-constraint metrics.
NG_TOPK = 100
#: Pair hash of the reference's pair accuracy: ``subj * 1024 + obj`` (aliases for indices >= 1024).
PAIR_HASH = 1024
_NO_HIT = np.iinfo(np.int64).max


# --------------------------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------------------------
def to_numpy(x: Any) -> np.ndarray:
    """numpy view of ``x``; torch tensors are ``detach().cpu().numpy()``-ed (dtype kept)."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def get_field(obj: Any, name: str, default: Any = None) -> Any:
    """``obj[name]`` for mappings, else ``getattr(obj, name)``; ``default`` when missing."""
    if isinstance(obj, Mapping):
        return obj.get(name, default)
    return getattr(obj, name, default)


def check_not_empty(num_images: int, what: str) -> None:
    """A ValueError for an evaluation over no image at all (every recall and AP would be NaN)."""
    if int(num_images) == 0:
        raise ValueError(f"{what}: no image to evaluate (empty input), so recall / AP is undefined. Pass the "
                         f"ground truths and predictions of >= 1 image (an empty test split: check it with "
                         f"tools/validate_dataset.py)")


def check_ks(ks: Sequence[int]) -> Tuple[int, ...]:
    out = tuple(int(k) for k in ks)
    if not out or any(k <= 0 for k in out) or len(set(out)) != len(out):
        raise ValueError(f"ks must be distinct positive integers, got {tuple(ks)!r}")
    return out


def ng_topk_for(ks: Sequence[int]) -> int:
    """Number of (pair, predicate) entries kept for the no-graph-constraint metrics."""
    return max(NG_TOPK, max(ks))


def stable_topk_desc(values: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` largest entries of a 1-D array, in descending order, ties by index.

    Exactly ``np.argsort(-values, kind='stable')[:k]``, in O(n + k log k): an ``argpartition``
    threshold, *all* entries tied with it, then a stable sort of those candidates only.
    """
    values = np.asarray(values).ravel()
    n = values.size
    if k >= n or np.isnan(values).any():  # NaN ordering: defer to the full sort
        return np.argsort(-values, kind="stable")[:k]
    if k <= 0:
        return np.zeros(0, dtype=np.int64)
    thr = np.partition(values, n - k)[n - k]
    cand = np.flatnonzero(values >= thr)
    return cand[np.argsort(-values[cand], kind="stable")][:k]


def ng_topk(rel_pairs: np.ndarray, rel_scores: np.ndarray, obj_scores: np.ndarray, k: int):
    """Top ``k`` (pair row, predicate) entries without graph constraint.

    Score of (row i, predicate p) = ``obj_scores[rel_pairs].prod(1)[i] * rel_scores[i, p]``
    (p >= 1), computed with the same expression and dtypes as the reference. Order: descending
    score, ties by ascending flat index. Returns ``(rows int64[k'], predicates int64[k'],
    scores[k'])`` with ``k' = min(k, M * P)``.

    Only rows whose best entry can reach the top ``k`` are expanded: the k-th largest row maximum
    is a lower bound of the k-th largest entry (for non-negative object-pair weights, where
    ``w * max(r) == max(w * r)`` exactly because rounding is monotone).
    """
    num_rows = rel_pairs.shape[0]
    num_pred = rel_scores.shape[1] - 1
    if num_rows == 0 or num_pred <= 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty, np.zeros(0, dtype=np.float32)
    weights = obj_scores[rel_pairs].prod(1)
    preds = rel_scores[:, 1:]
    cand = None
    if num_rows > k and np.all(np.isfinite(weights)) and weights.min() >= 0:
        row_max = weights * preds.max(1)
        if not np.isnan(row_max).any():
            row_thr = np.partition(row_max, num_rows - k)[num_rows - k]
            cand = np.flatnonzero(row_max >= row_thr)
    if cand is None:
        cand = np.arange(num_rows)
        scores = weights[:, None] * preds
    else:
        scores = weights[cand, None] * preds[cand]
    flat = scores.ravel()
    order = stable_topk_desc(flat, k)
    return cand[order // num_pred], order % num_pred + 1, flat[order]


# --------------------------------------------------------------------------------------------
# compact per-image record
# --------------------------------------------------------------------------------------------
@dataclass
class ImageRecord:
    """What the evaluator keeps of one image: O(K + G + R) numbers, all numpy.

    Ground truth: ``gt_boxes float32[G,4]`` (xyxy, original pixels), ``gt_labels int32[G]``,
    ``gt_rels int32[R,3]`` (subj idx, obj idx, predicate 1..P).
    Predicted objects, as given (the PredCls override is applied when scoring):
    ``boxes float32[N,4]``, ``labels int32[N]``, ``scores float32[N]``.
    Graph-constrained candidates: ``rel_rows int64[m]`` = positions in the candidate order
    (ascending): the given ``rel_pairs`` order, or with rel_nms (PredCls/SGCls) the re-sorted
    order; they are the first ``max(ks)`` rows, plus (PredCls/SGCls) the first ``max(ks)`` rows
    whose pair is a GT pair (for A@K). ``rel_pairs int32[m,2]``, ``rel_labels int32[m]`` (1 +
    argmax of ``rel_scores[:, 1:]``; with rel_nms its label, 0 for a fully suppressed pair),
    ``rel_label_scores float32[m]`` (its score).
    No-graph-constraint candidates, best first: ``ng_pairs int32[k,2]``, ``ng_labels int32[k]``,
    ``ng_scores float32[k]`` (object-pair score x predicate score), ``k <= max(100, max(ks))``.
    ``num_pred_rels`` = M, the number of predicted pairs before truncation (M == 0: skipped).
    """

    image_id: int
    num_pred_rels: int
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_rels: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    scores: np.ndarray
    rel_rows: np.ndarray
    rel_pairs: np.ndarray
    rel_labels: np.ndarray
    rel_label_scores: np.ndarray
    ng_pairs: np.ndarray
    ng_labels: np.ndarray
    ng_scores: np.ndarray

    @property
    def nbytes(self) -> int:
        return sum(getattr(self, f.name).nbytes for f in fields(self)
                   if isinstance(getattr(self, f.name), np.ndarray))


#: Array fields of :class:`ImageRecord` grouped by what their first axis counts (used by io.py).
RECORD_GROUPS: Dict[str, Tuple[str, ...]] = {
    "gt_obj": ("gt_boxes", "gt_labels"),
    "gt_rel": ("gt_rels",),
    "obj": ("boxes", "labels", "scores"),
    "rel": ("rel_rows", "rel_pairs", "rel_labels", "rel_label_scores"),
    "ng": ("ng_pairs", "ng_labels", "ng_scores"),
}
RECORD_DTYPES: Dict[str, Any] = {
    "gt_boxes": np.float32, "gt_labels": np.int32, "gt_rels": np.int32,
    "boxes": np.float32, "labels": np.int32, "scores": np.float32,
    "rel_rows": np.int64, "rel_pairs": np.int32, "rel_labels": np.int32,
    "rel_label_scores": np.float32,
    "ng_pairs": np.int32, "ng_labels": np.int32, "ng_scores": np.float32,
}
RECORD_TRAILING: Dict[str, Tuple[int, ...]] = {
    "gt_boxes": (4,), "gt_rels": (3,), "boxes": (4,), "rel_pairs": (2,), "ng_pairs": (2,),
}


def _empty(name: str) -> np.ndarray:
    return np.zeros((0,) + RECORD_TRAILING.get(name, ()), dtype=RECORD_DTYPES[name])


def _pair_in_gt(pairs: np.ndarray, gt_rels: np.ndarray) -> np.ndarray:
    """Reference pair test: ``any(s * 1024 + o == gt_s * 1024 + gt_o)`` per predicted pair
    (a sorted-GT lookup instead of the M x R comparison)."""
    pred_hash = pairs[:, 0].astype(np.int64) * PAIR_HASH + pairs[:, 1]
    gt_hash = np.sort(gt_rels[:, 0].astype(np.int64) * PAIR_HASH + gt_rels[:, 1])
    if len(gt_hash) == 0:
        return np.zeros(len(pred_hash), dtype=bool)
    pos = np.minimum(np.searchsorted(gt_hash, pred_hash), len(gt_hash) - 1)
    return gt_hash[pos] == pred_hash


def _pred_array(prediction: Any, name: str, dtype: Any) -> np.ndarray:
    value = get_field(prediction, name)
    return np.zeros(0, dtype=dtype) if value is None else to_numpy(value)


def check_rel_nms_thresh(rel_nms_thresh: float) -> float:
    """``rel_nms_thresh`` as a float in [0, 1] (0 = off), else a ValueError."""
    value = float(rel_nms_thresh)
    if not 0.0 <= value <= 1.0:  # NaN fails too
        raise ValueError(f"rel_nms_thresh must be in [0, 1] (0 = off; PE-Net used 0.6), got {rel_nms_thresh!r}")
    return value


def make_record(groundtruth: Any, prediction: Any, mode: str, ks: Sequence[int] = DEFAULT_KS,
                image_id: Optional[int] = None,
                num_predicates: Optional[int] = None,
                rel_nms_thresh: float = 0.0) -> ImageRecord:
    """Reduce one image to its compact :class:`ImageRecord` (see the module docstring).

    ``groundtruth``: mapping/object with ``boxes [G,4]``, ``labels [G]``, ``relations [R,3]``
    (and optionally ``image_id``). ``prediction``: ``boxes [N,4]``, ``labels [N]``,
    ``scores [N]``, ``rel_pairs [M,2]`` sorted by triplet score (descending), ``rel_scores
    [M,P+1]`` (column 0 = background). numpy arrays or torch tensors. ``num_predicates``, when
    given, is checked against ``rel_scores``' width. ``rel_nms_thresh > 0``: PE-Net's rel_nms
    evaluation of PredCls/SGCls (module docstring; ignored in SGDet); 0 (default) = off.
    """
    check_mode(mode)
    ks = check_ks(ks)
    rel_nms_thresh = check_rel_nms_thresh(rel_nms_thresh)
    k_max = max(ks)
    if image_id is None:
        image_id = get_field(groundtruth, "image_id", get_field(prediction, "image_id", -1))
    image_id = -1 if image_id is None else int(image_id)

    gt_boxes = to_numpy(get_field(groundtruth, "boxes")).astype(np.float32).reshape(-1, 4)
    gt_labels = to_numpy(get_field(groundtruth, "labels")).astype(np.int64).reshape(-1)
    gt_rels_in = get_field(groundtruth, "relations")
    gt_rels = (np.zeros((0, 3), np.int64) if gt_rels_in is None
               else to_numpy(gt_rels_in).astype(np.int64).reshape(-1, 3))
    if len(gt_labels) != len(gt_boxes):
        raise ValueError(f"image {image_id}: {len(gt_boxes)} GT boxes but {len(gt_labels)} labels")
    if len(gt_rels) and (gt_rels[:, :2].min() < 0 or gt_rels[:, :2].max() >= len(gt_boxes)):
        raise ValueError(f"image {image_id}: GT relation indexes an object outside 0..{len(gt_boxes) - 1}")

    boxes = _pred_array(prediction, "boxes", np.float32).reshape(-1, 4)
    labels = _pred_array(prediction, "labels", np.int64).reshape(-1)
    obj_scores = _pred_array(prediction, "scores", np.float32).reshape(-1)
    pairs_in = get_field(prediction, "rel_pairs")
    rel_pairs = (np.zeros((0, 2), np.int64) if pairs_in is None
                 else to_numpy(pairs_in).astype(np.int64).reshape(-1, 2))
    num_rels = rel_pairs.shape[0]

    record = ImageRecord(
        image_id=image_id, num_pred_rels=num_rels,
        gt_boxes=gt_boxes, gt_labels=gt_labels.astype(np.int32), gt_rels=gt_rels.astype(np.int32),
        boxes=boxes.astype(np.float32), labels=labels.astype(np.int32),
        scores=obj_scores.astype(np.float32),
        rel_rows=_empty("rel_rows"), rel_pairs=_empty("rel_pairs"), rel_labels=_empty("rel_labels"),
        rel_label_scores=_empty("rel_label_scores"), ng_pairs=_empty("ng_pairs"),
        ng_labels=_empty("ng_labels"), ng_scores=_empty("ng_scores"),
    )
    if len(gt_rels) == 0 or num_rels == 0:
        return record  # the reference skips the image for every relation metric

    rel_scores = to_numpy(get_field(prediction, "rel_scores"))
    width = rel_scores.shape[1] if rel_scores.ndim == 2 else -1
    if rel_scores.ndim != 2 or rel_scores.shape[0] != num_rels or width < 2 or \
            (num_predicates is not None and width != num_predicates + 1):
        expected = "P+1" if num_predicates is None else str(num_predicates + 1)
        raise ValueError(f"image {image_id}: rel_scores must be [M, {expected}] with M={num_rels}, "
                         f"got shape {tuple(rel_scores.shape)}")
    if mode == "predcls":
        # The reference scores PredCls with GT objects whatever the prediction says.
        num_objs = len(gt_boxes)
        obj_scores = np.ones(num_objs)
    else:
        num_objs = len(boxes)
        if len(labels) != num_objs or len(obj_scores) != num_objs:
            raise ValueError(f"image {image_id}: {num_objs} predicted boxes but {len(labels)} "
                             f"labels and {len(obj_scores)} scores")
        if mode == "sgcls" and num_objs != len(gt_boxes):
            logger.debug("image %s: SGCls with %d predicted boxes for %d GT boxes",
                         image_id, num_objs, len(gt_boxes))
    if rel_pairs.min() < 0 or rel_pairs.max() >= num_objs:
        raise ValueError(f"image {image_id}: rel_pairs index an object outside 0..{num_objs - 1}")

    use_rel_nms = rel_nms_thresh > 0 and mode != "sgdet"
    if use_rel_nms:
        # PE-Net: relabel with rel_nms (PredCls: on the GT objects, as its evaluator replaces
        # them), then re-sort by score * subj * subj (subject score squared: PE-Net's quirk)
        nms_boxes, nms_classes = (gt_boxes, gt_labels) if mode == "predcls" else (boxes, labels)
        nms_labels, nms_scores = rel_nms(nms_boxes, nms_classes, rel_pairs, rel_scores, rel_nms_thresh)
        subj_scores = obj_scores[rel_pairs[:, 0]]
        order = np.argsort(-(nms_scores * subj_scores * subj_scores), kind="stable")
        cand_pairs = rel_pairs[order]
    else:
        cand_pairs = rel_pairs
    if mode == "sgdet":
        rows = np.arange(min(num_rels, k_max))
    else:
        keep = np.zeros(num_rels, dtype=bool)
        keep[:k_max] = True
        keep[np.flatnonzero(_pair_in_gt(cand_pairs, gt_rels))[:k_max]] = True
        rows = np.flatnonzero(keep)
    record.rel_rows = rows.astype(np.int64)
    record.rel_pairs = cand_pairs[rows].astype(np.int32)
    if use_rel_nms:
        record.rel_labels = nms_labels[order[rows]].astype(np.int32)
        record.rel_label_scores = nms_scores[order[rows]].astype(np.float32)
    else:
        sel_scores = rel_scores[rows, 1:]
        rel_labels = sel_scores.argmax(1)
        record.rel_labels = (rel_labels + 1).astype(np.int32)
        record.rel_label_scores = sel_scores[np.arange(len(rows)), rel_labels].astype(np.float32)

    ng_rows, ng_labels, ng_scores = ng_topk(rel_pairs, rel_scores, obj_scores, ng_topk_for(ks))
    record.ng_pairs = rel_pairs[ng_rows].astype(np.int32)
    record.ng_labels = ng_labels.astype(np.int32)
    record.ng_scores = ng_scores.astype(np.float32)
    return record


# --------------------------------------------------------------------------------------------
# matching and aggregation
# --------------------------------------------------------------------------------------------
def _first_hits(obj_ok: np.ndarray, pairs: np.ndarray, preds: np.ndarray, gt_rels: np.ndarray,
                segments: Sequence[Tuple[int, int, Optional[np.ndarray]]]) -> List[np.ndarray]:
    """For each GT row, the rank of the first candidate that matches it (``_NO_HIT`` if none).

    ``obj_ok[n, g]``: predicted object n has GT object g's label and IoU >= threshold. A
    candidate (s, o, p) matches GT row (gs, go, gp) iff obj_ok[s, gs] & obj_ok[o, go] & p == gp,
    i.e. the reference's triplet equality plus both IoU tests. One ``[candidates, R]`` match
    matrix is built for all candidate lists at once; ``segments`` = ``(start, stop, ranks)``
    slices it into lists, ``ranks`` (None: ``0, 1, ...``) giving each candidate's rank in its
    full list. GT row j is in the union of the first K candidates' matches iff its first-hit
    rank is < K.
    """
    match = (obj_ok[pairs[:, 0, None], gt_rels[None, :, 0]]
             & obj_ok[pairs[:, 1, None], gt_rels[None, :, 1]]
             & (preds[:, None] == gt_rels[None, :, 2]))
    out = []
    for start, stop, ranks in segments:
        part = match[start:stop]
        if stop == start:
            out.append(np.full(len(gt_rels), _NO_HIT, dtype=np.int64))
            continue
        first = part.argmax(0)
        if ranks is not None:
            first = ranks[first]
        out.append(np.where(part.any(0), first, _NO_HIT))
    return out


def zeroshot_mask(gt_triplets: np.ndarray, zeroshot_triplets: np.ndarray) -> np.ndarray:
    """Rows of ``gt_triplets [R,3]`` (subj class, obj class, predicate) in the zero-shot list."""
    zs = to_numpy(zeroshot_triplets).astype(np.int64).reshape(-1, 3)
    if len(gt_triplets) == 0 or len(zs) == 0:
        return np.zeros(len(gt_triplets), dtype=bool)
    both = np.concatenate([gt_triplets.astype(np.int64), zs])
    _, inverse = np.unique(both, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    return np.isin(inverse[: len(gt_triplets)], inverse[len(gt_triplets):])


def _mean(values: np.ndarray) -> float:
    """``np.mean`` (NaN for an empty array, as the reference, without the warning)."""
    if len(values) == 0:
        return float("nan")
    return float(np.mean(values))


def _mean_recall(hits: np.ndarray, counts: np.ndarray, num_predicates: int) -> Tuple[float, List[float]]:
    """Reference mR: per predicate, np.mean over the images containing it (0.0 if none), then a
    Python ``sum_recall += tmp`` over predicates 1..P, divided by P.

    ``hits``, ``counts``: float64 ``[num_images, P+1]`` per-image per-predicate counts.
    """
    present = counts > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = hits / counts
    per_pred: List[float] = []
    sum_recall = 0
    for p in range(1, num_predicates + 1):
        column = ratio[present[:, p], p]
        tmp = 0.0 if len(column) == 0 else np.mean(column)
        per_pred.append(float(tmp))
        sum_recall += tmp
    return float(sum_recall / float(num_predicates)), per_pred


def _f_score(recall: float, mean_recall: float) -> float:
    if math.isnan(recall) or math.isnan(mean_recall):
        return float("nan")
    if recall + mean_recall == 0:
        return 0.0
    return 2.0 * recall * mean_recall / (recall + mean_recall)


def evaluate_records(records: Sequence[ImageRecord], mode: str, num_predicates: int,
                     zeroshot_triplets: Any = None, iou_threshold: float = 0.5,
                     ks: Sequence[int] = DEFAULT_KS,
                     predicate_names: Optional[Sequence[str]] = None) -> Dict[str, Any]:
    """Relation metrics of a list of :class:`ImageRecord` (in the order given).

    ``num_predicates`` = P, foreground predicates (50 on VG150). Returns a dict (fractions):
    ``R@K``, ``ngR@K``, ``mR@K``, ``ngmR@K``, ``F@K``, ``per_predicate_R@K`` and
    ``ng_per_predicate_R@K`` (lists of P floats, predicate 1..P) for each K in ``ks``;
    ``zR@K``/``ngzR@K`` only when ``zeroshot_triplets`` is given (NaN when no counted image has a
    zero-shot GT row); ``A@K`` only for PredCls/SGCls; ``num_images`` (images that counted: R > 0
    and M > 0), ``mode``, and ``predicate_names`` when given. A metric averaged over no image is
    NaN (as ``np.mean([])`` in the reference).
    """
    check_mode(mode)
    ks = check_ks(ks)
    num_predicates = int(num_predicates)
    if num_predicates <= 0:
        raise ValueError(f"num_predicates must be positive, got {num_predicates}")
    if predicate_names is not None:
        predicate_names = [str(n) for n in predicate_names]
        if len(predicate_names) == num_predicates + 1:
            predicate_names = predicate_names[1:]  # drop "__background__"
        if len(predicate_names) != num_predicates:
            raise ValueError(f"{len(predicate_names)} predicate names for {num_predicates} predicates")
    k_max = max(ks)
    k_ng = ng_topk_for(ks)
    need_acc = mode != "sgdet"
    thr = np.float32(iou_threshold)

    fh_r: List[np.ndarray] = []
    fh_ng: List[np.ndarray] = []
    fh_acc: List[np.ndarray] = []
    gt_pred: List[np.ndarray] = []
    gt_trip: List[np.ndarray] = []
    num_gt: List[int] = []
    for rec in records:
        gt_rels = np.asarray(rec.gt_rels, dtype=np.int64).reshape(-1, 3)
        if len(gt_rels) == 0 or rec.num_pred_rels == 0:
            continue
        if gt_rels[:, 2].min() < 1 or gt_rels[:, 2].max() > num_predicates:
            raise ValueError(f"image {rec.image_id}: GT predicate outside 1..{num_predicates}")
        if min(rec.num_pred_rels, k_max) > len(rec.rel_rows) or \
                (len(rec.ng_labels) < k_ng and len(rec.ng_labels) < rec.num_pred_rels * num_predicates):
            raise ValueError(f"image {rec.image_id}: the record keeps fewer candidates than "
                             f"ks={ks} needs (it was made with a smaller max(ks))")
        gt_labels = rec.gt_labels
        if mode == "predcls":
            boxes, labels = rec.gt_boxes, gt_labels
        else:
            boxes, labels = rec.boxes, rec.labels
        obj_ok = (box_iou_plus1(boxes, rec.gt_boxes) >= thr) & (labels[:, None] == gt_labels[None, :])

        m, k = len(rec.rel_rows), len(rec.ng_labels)
        # graph constraint: ranks = positions in the full rel_pairs list
        segments = [(0, m, rec.rel_rows.astype(np.int64)), (m, m + k, None)]
        pairs = [rec.rel_pairs, rec.ng_pairs]
        preds = [rec.rel_labels, rec.ng_labels]
        if need_acc:
            # A@K: the GT-pair rows in order (with rel_nms: the re-sorted order, for the flags
            # too); the first max(ks) of them are stored, so their ranks in the filtered list
            # are exact up to K
            keep = _pair_in_gt(rec.rel_pairs, gt_rels)
            n_keep = int(keep.sum())
            segments.append((m + k, m + k + n_keep, None))
            pairs.append(rec.rel_pairs[keep])
            preds.append(rec.rel_labels[keep])
        hits = _first_hits(obj_ok, np.concatenate(pairs), np.concatenate(preds), gt_rels, segments)
        fh_r.append(hits[0])
        fh_ng.append(hits[1])
        if need_acc:
            fh_acc.append(hits[2])
        gt_pred.append(gt_rels[:, 2])
        gt_trip.append(np.column_stack((gt_labels[gt_rels[:, 0]], gt_labels[gt_rels[:, 1]],
                                        gt_rels[:, 2])))
        num_gt.append(len(gt_rels))

    num_images = len(num_gt)
    out: Dict[str, Any] = {"mode": mode, "num_images": num_images}
    counts = np.asarray(num_gt, dtype=np.float64)
    image_of_row = np.repeat(np.arange(num_images), num_gt)
    if num_images:
        fh_r_all, fh_ng_all = np.concatenate(fh_r), np.concatenate(fh_ng)
        fh_acc_all = np.concatenate(fh_acc) if need_acc else None
        preds = np.concatenate(gt_pred)
        zs = (zeroshot_mask(np.concatenate(gt_trip), zeroshot_triplets)
              if zeroshot_triplets is not None else None)
    else:
        fh_r_all = fh_ng_all = fh_acc_all = preds = np.zeros(0, dtype=np.int64)
        zs = np.zeros(0, dtype=bool) if zeroshot_triplets is not None else None
    cell = image_of_row * (num_predicates + 1) + preds
    num_cells = num_images * (num_predicates + 1)
    pred_counts = np.bincount(cell, minlength=num_cells).astype(np.float64).reshape(
        num_images, num_predicates + 1)
    if zs is not None:
        zs_counts = np.bincount(image_of_row, weights=zs, minlength=num_images)
        zs_images = zs_counts > 0

    def per_image(hit_rows: np.ndarray) -> np.ndarray:
        return np.bincount(image_of_row, weights=hit_rows, minlength=num_images)

    for prefix, fh in (("", fh_r_all), ("ng", fh_ng_all)):
        for k in ks:
            hit = fh < k
            out[f"{prefix}R@{k}"] = _mean(per_image(hit) / counts)
            hits = np.bincount(cell, weights=hit, minlength=num_cells).reshape(
                num_images, num_predicates + 1)
            mr, per_pred = _mean_recall(hits, pred_counts, num_predicates)
            out[f"{prefix}mR@{k}"] = mr
            out[f"{prefix}{'_' if prefix else ''}per_predicate_R@{k}"] = per_pred
            if zs is not None:
                zs_hits = per_image(hit & zs)
                out[f"{prefix}zR@{k}"] = _mean(zs_hits[zs_images] / zs_counts[zs_images])
    if need_acc:
        for k in ks:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out[f"A@{k}"] = (_mean(per_image(fh_acc_all < k)) / _mean(counts)
                                 if num_images else float("nan"))
    for k in ks:
        out[f"F@{k}"] = _f_score(out[f"R@{k}"], out[f"mR@{k}"])
    if predicate_names is not None:
        out["predicate_names"] = list(predicate_names)
    return out


def evaluate_relations(groundtruths: Sequence[Any], predictions: Sequence[Any], mode: str,
                       num_predicates: int, zeroshot_triplets: Any = None,
                       iou_threshold: float = 0.5, ks: Sequence[int] = DEFAULT_KS,
                       predicate_names: Optional[Sequence[str]] = None,
                       rel_nms_thresh: float = 0.0) -> Dict[str, Any]:
    """Relation metrics of per-image GT / prediction dicts (same order, same length).

    GT: ``boxes float[G,4]`` xyxy original pixels, ``labels int[G]``, ``relations int[R,3]``
    (subj idx, obj idx, predicate 1..P). Prediction: ``boxes [N,4]``, ``labels [N]``,
    ``scores [N]``, ``rel_pairs [M,2]`` (sorted by triplet score, descending), ``rel_scores
    [M,P+1]``. numpy or torch. ``zeroshot_triplets``: int ``[Z,3]`` (subj class, obj class,
    predicate) or None (then no zR keys). See :func:`evaluate_records` for the keys. Empty lists
    are a ValueError (no image: the recalls would be NaN). ``rel_nms_thresh``: see
    :func:`make_record` (0 = off).
    """
    if len(groundtruths) != len(predictions):
        raise ValueError(f"{len(groundtruths)} ground truths but {len(predictions)} predictions")
    check_not_empty(len(groundtruths), "evaluate_relations")
    check_mode(mode)
    ks = check_ks(ks)
    rel_nms_thresh = check_rel_nms_thresh(rel_nms_thresh)
    records = [make_record(g, p, mode, ks, image_id=i, num_predicates=num_predicates,
                           rel_nms_thresh=rel_nms_thresh)
               for i, (g, p) in enumerate(zip(groundtruths, predictions))]
    return evaluate_records(records, mode, num_predicates, zeroshot_triplets=zeroshot_triplets,
                            iou_threshold=iou_threshold, ks=ks, predicate_names=predicate_names)


def metric_keys(mode: str, ks: Sequence[int] = DEFAULT_KS, zeroshot: bool = True) -> List[str]:
    """Scalar metric keys :func:`evaluate_records` returns for ``mode``."""
    keys = []
    for name in ("R", "ngR", "mR", "ngmR") + (("zR", "ngzR") if zeroshot else ()) + \
            (("A",) if mode != "sgdet" else ()) + ("F",):
        keys += [f"{name}@{k}" for k in ks]
    return keys
