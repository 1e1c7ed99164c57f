"""PE-Net's ``rel_nms``: greedy per-predicate NMS over relation pairs, vectorised.

PE-Net (VL-Group/PENET, ``sgg_eval.py``; the operation comes from RU-Net / HL-Net) evaluates
PredCls and SGCls after this step. The reference, restated (``W = P + 1`` columns, column 0 the
background)::

    ious      = bbox_overlaps(boxes, boxes)                       # "+1 pixel" IoU, float32
    rel_ious  = min(ious[sub_i, sub_j], ious[obj_i, obj_j])
    l21[i, j] = sum_c sqrt(rel_scores[i, c]**2 + rel_scores[j, c]**2)   # all W columns
    is_overlap = (rel_ious >= nms_thresh) & same subject class & same object class & (l21 > l21_thr)
    cp = rel_scores.copy(); cp[:, 0] = 0; labels = zeros(M)
    repeat M times:
        (i, c) = first flat argmax of cp
        if labels[i] == 0: labels[i] = c
        cp[is_overlap[i, :], c] = 0      # every overlapping row, ALSO rows already picked
        cp[i, :] = -1
    return labels, rel_scores[arange(M), labels]      # the ORIGINAL scores

:func:`rel_nms` gives exactly the reference's labels and scores (tested against the literal
loop) without the ``M x M x W`` ``l21`` tensor and without one Python iteration per pick:

* ``is_overlap`` is needed only where the IoU / class tests pass; those pairs are enumerated in
  row chunks on an ``N x N`` object-level table, and ``l21`` (same expression and dtype as the
  reference: the array as given) is computed on them only, in chunks of <= ~64 MB.
* ``is_overlap`` is symmetric (IoU, label equality and ``l21`` are symmetric, bit for bit: the
  float sums ``a + b`` and ``b + a`` are equal and every ``l21`` entry sums the same sequence), and
  its diagonal never matters (a picked row is overwritten with -1 right after its suppression).

The loop runs in two phases.

Phase 1 (the global maximum is > 0; each pick is a row not yet picked, since column 0 keeps
every unpicked row >= 0 > -1): rounds. Each unpicked row has its current best entry (value
``v_i = max cp[i]``, column ``c_i`` = first argmax), ordered by the total order "value
descending, flat index ``i * W + c_i`` ascending" (the order of ``np.argmax``). A row is *ready*
when ``v_i > 0`` and its entry beats the entry of every unpicked row overlapping it. All ready
rows of a round are picked at once (label ``c_i``; column ``c_i`` of every row overlapping it,
picked or not, set to 0; the row removed). Why this is the sequential greedy:

1. a row's key (value, -flat index) never increases: only a suppression changes an unpicked row,
   and setting an entry to 0 either lowers the maximum, or leaves it (max >= 0 because column 0
   is 0) with its first argmax unchanged or moved to a later column among equal values;
2. a ready row i keeps its entry until it is picked: only a pick of an overlapping row changes
   row i, and every overlapping unpicked row is below i and stays below (1), so none of them can
   be the global maximum while i is unpicked; as ``v_i > 0``, i is picked within phase 1, with
   the entry it has now. In particular ready rows stay ready until picked;
3. two ready rows never overlap (each would beat the other), so their picks commute: a pick
   reads only its own row and writes (zeros) only to the rows overlapping it;
4. the global maximum is always ready, so each round picks >= 1 row.

By 2 and 3 the sequential greedy is a schedule of "pick a ready row" steps, and any two such
schedules reach the same state (ready picks stay enabled and commute; overlapping picks keep
their order); a round is one such schedule. The zeros that later picks write into rows already
picked (the reference's ``is_overlap[i, :]`` does not skip them) are recorded too: phase 2 reads
them.

Phase 2 (the remaining ``U`` iterations, once every unpicked row is <= 0: fully suppressed or
zero scores): the global maximum is 0 and the reference picks the FIRST zero in flat order,
which can be a row already picked that a later suppression gave a zero (a "re-pick": it uses
an iteration, writes its column into its neighbours, and, if that row's label is still 0, sets
its label to that column). Each unpicked row picked here takes column 0, i.e. keeps label 0 and
gets its background probability as score; a row the ``M`` iterations never reach keeps label 0
too. Phase 2 only needs, per row, the first column holding a zero, and is simulated literally
(one numpy step per iteration; ``U`` is 0 for usual softmax scores with P = 50).

Cost: the pair enumeration is ``O(M^2)`` bytes of work in chunks, ``l21`` ``O(E * W)`` on the
``E`` candidate pairs, phase 1 ``O(rounds * E + picks * W)`` (few rounds unless long chains of
overlapping pairs), phase 2 ``O(U * M)``. Scores with a NaN fall back to the literal loop (on
the same overlap pairs).
"""
from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from sgg.structures.iou import box_iou_plus1

__all__ = ["rel_nms", "REL_NMS_L21_THRESH"]

#: The reference's default ``l21_thr``.
REL_NMS_L21_THRESH = 0.7
#: Bound on the temporaries of one chunk (bytes).
_CHUNK_BYTES = 64 << 20


def _overlap_pairs(boxes: np.ndarray, classes: np.ndarray, pairs: np.ndarray, rel_scores: np.ndarray,
                   nms_thresh: float, l21_thr: float) -> Tuple[np.ndarray, np.ndarray]:
    """The pairs ``(i, j)``, ``i < j``, of relation rows with ``is_overlap[i, j]`` (int64 arrays)."""
    num_rels, width = rel_scores.shape
    ious = box_iou_plus1(boxes, boxes)
    # rel_ious >= thr  <=>  both IoUs >= thr (np.minimum propagates NaN, which fails both ways)
    obj_ok = (ious >= nms_thresh) & (classes[:, None] == classes[None, :])
    sub, obj = pairs[:, 0], pairs[:, 1]
    rows = max(1, _CHUNK_BYTES // (4 * max(num_rels, 1)))
    us, vs = [], []
    for start in range(0, num_rels, rows):
        stop = min(num_rels, start + rows)
        ok = obj_ok[sub[start:stop, None], sub[None, :]]
        ok &= obj_ok[obj[start:stop, None], obj[None, :]]
        ok &= np.arange(num_rels)[None, :] > np.arange(start, stop)[:, None]  # i < j
        i, j = np.nonzero(ok)
        us.append(i + start)
        vs.append(j)
    u = np.concatenate(us).astype(np.int64)
    v = np.concatenate(vs).astype(np.int64)
    if len(u) == 0:
        return u, v
    # l21 as the reference: np.sqrt(np.power(a, 2.0) + np.power(b, 2.0)).sum(axis=-1), in the
    # scores' own dtype, on the candidate pairs only
    sq = np.power(rel_scores, 2.0)
    keep = np.zeros(len(u), dtype=bool)
    step = max(1, _CHUNK_BYTES // (3 * width * max(sq.itemsize, 1)))
    for start in range(0, len(u), step):
        stop = min(len(u), start + step)
        l21 = np.sqrt(sq[u[start:stop]] + sq[v[start:stop]]).sum(axis=-1)
        keep[start:stop] = l21 > l21_thr
    return u[keep], v[keep]


def _neighbours(num_rels: int, u: np.ndarray, v: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Both directions of the overlap pairs, grouped by source: ``(src, dst, start)`` with the
    neighbours of row i at ``dst[start[i]:start[i + 1]]``."""
    src = np.concatenate([u, v])
    dst = np.concatenate([v, u])
    order = np.argsort(src, kind="stable")
    src, dst = src[order], dst[order]
    start = np.searchsorted(src, np.arange(num_rels + 1))
    return src, dst, start


def _loop(rel_scores: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The reference loop, literally (used for scores with NaN, where argmax picks the NaN)."""
    num_rels = rel_scores.shape[0]
    overlap = np.zeros((num_rels, num_rels), dtype=bool)
    overlap[u, v] = True
    overlap[v, u] = True
    np.fill_diagonal(overlap, True)  # irrelevant: the picked row is set to -1 right after
    cp = rel_scores.copy()
    cp[:, 0] = 0.0
    labels = np.zeros(num_rels, dtype=np.int64)
    for _ in range(num_rels):
        i, c = np.unravel_index(cp.argmax(), cp.shape)
        if labels[i] == 0:
            labels[i] = c
        cp[overlap[i], c] = 0.0
        cp[i] = -1.0
    return labels


def _rounds(rel_scores: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Phases 1 and 2 of the module docstring."""
    num_rels, width = rel_scores.shape
    cp = rel_scores.copy()
    cp[:, 0] = 0.0
    labels = np.zeros(num_rels, dtype=np.int64)
    active = np.ones(num_rels, dtype=bool)  # not picked yet
    # first column holding a zero, for rows already picked (width: none); phase 2 state
    first_zero = np.full(num_rels, width, dtype=np.int64)
    val = cp.max(1)
    col = cp.argmax(1)
    flat = np.arange(num_rels, dtype=np.int64) * width + col
    all_src, all_dst, start = _neighbours(num_rels, u, v)
    src, dst = all_src, all_dst  # pruned to edges whose source is unpicked
    while True:
        cand = active & (val > 0)
        if not cand.any():
            break
        # a candidate is blocked by an unpicked neighbour whose entry comes first
        e = cand[src] & active[dst]
        s_, d_ = src[e], dst[e]
        beaten = (val[d_] > val[s_]) | ((val[d_] == val[s_]) & (flat[d_] < flat[s_]))
        ready = cand.copy()
        ready[s_[beaten]] = False
        picked = np.flatnonzero(ready)
        labels[picked] = col[picked]
        # suppression: column c_i of every neighbour (ready rows are not neighbours of each other)
        e = ready[src]
        s_, d_ = src[e], dst[e]
        cols = col[s_]
        live = active[d_]
        cp[d_[live], cols[live]] = 0.0
        np.minimum.at(first_zero, d_[~live], cols[~live])
        active[picked] = False
        changed = np.unique(d_[live])
        if len(changed):
            val[changed] = cp[changed].max(1)
            col[changed] = cp[changed].argmax(1)
            flat[changed] = changed * width + col[changed]
        keep = active[src]
        src, dst = src[keep], dst[keep]
    remaining = int(active.sum())
    if remaining:
        # phase 2: every unpicked row is <= 0 with a 0 in column 0; the reference takes the
        # first zero in flat order for the remaining iterations
        first_zero[active] = 0
        for _ in range(remaining):
            i = int(np.argmax(first_zero < width))
            c = int(first_zero[i])
            if labels[i] == 0:
                labels[i] = c
            nb = all_dst[start[i]:start[i + 1]]
            first_zero[nb] = np.minimum(first_zero[nb], c)
            first_zero[i] = width
    return labels


def rel_nms(boxes: Any, classes: Any, rel_pairs: Any, rel_scores: Any, nms_thresh: float = 0.6,
            l21_thr: float = REL_NMS_L21_THRESH) -> Tuple[np.ndarray, np.ndarray]:
    """PE-Net's relation NMS (see the module docstring): ``(labels int64[M], scores[M])``.

    ``boxes [N,4]`` xyxy and ``classes [N]`` of the objects (PredCls: the GT ones), ``rel_pairs
    [M,2]`` (subject, object) indices, ``rel_scores [M,P+1]`` (column 0 = background; dtype kept,
    as the reference computes on the array as given). ``labels[i]`` is the predicate kept for row
    i (0 = background: the row's classes were all suppressed; such a row never matches a GT
    predicate) and ``scores[i] = rel_scores[i, labels[i]]`` (the original score). The same
    numbers as the reference's ``rel_nms(..., nms_thresh, l21_thr)``.
    """
    rel_scores = np.asarray(rel_scores)
    pairs = np.asarray(rel_pairs, dtype=np.int64).reshape(-1, 2)
    num_rels = pairs.shape[0]
    if rel_scores.ndim != 2 or rel_scores.shape[0] != num_rels or rel_scores.shape[1] < 1:
        raise ValueError(f"rel_nms: rel_scores must be [M, P+1] with M={num_rels}, got {tuple(rel_scores.shape)}")
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    classes = np.asarray(classes).reshape(-1)
    if len(classes) != len(boxes):
        raise ValueError(f"rel_nms: {len(boxes)} boxes but {len(classes)} classes")
    if num_rels == 0:
        return np.zeros(0, dtype=np.int64), rel_scores[np.zeros(0, np.int64), np.zeros(0, np.int64)]
    if pairs.min() < 0 or pairs.max() >= len(boxes):
        raise ValueError(f"rel_nms: rel_pairs index an object outside 0..{len(boxes) - 1}")
    u, v = _overlap_pairs(boxes, classes, pairs, rel_scores, nms_thresh, l21_thr)
    if np.isnan(rel_scores).any():
        labels = _loop(rel_scores, u, v)
    else:
        labels = _rounds(rel_scores, u, v)
    return labels, rel_scores[np.arange(num_rels), labels]
