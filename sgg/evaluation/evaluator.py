"""Streaming scene-graph evaluator: ``process`` per batch, ``evaluate`` once, on every rank.

Each rank reduces its images to compact :class:`~sgg.evaluation.sgg_eval.ImageRecord`s as they
come (O(K + G + R) numbers per image, never the M x (P+1) score matrix). ``evaluate`` gathers
the records to rank 0, orders them by ``image_id`` (duplicates, e.g. from a padded distributed
sampler, are dropped) so the numbers do not depend on the number of processes, and scores them.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Dict, List, Optional, Sequence, Union

from sgg.utils import comm
from .detection import records_box_ap
from .sgg_eval import (DEFAULT_KS, ImageRecord, check_ks, check_mode, check_not_empty, check_rel_nms_thresh,
                       evaluate_records, get_field, make_record)

logger = logging.getLogger(__name__)


def order_records(records: Sequence[ImageRecord]) -> List[ImageRecord]:
    """Records sorted by ``image_id`` (first copy of a duplicated id kept). When some record has
    no id (``-1``), the given order is kept as is."""
    records = list(records)
    if not records or any(r.image_id < 0 for r in records):
        return records
    seen = set()
    out = []
    for rec in sorted(records, key=lambda r: r.image_id):
        if rec.image_id in seen:
            continue
        seen.add(rec.image_id)
        out.append(rec)
    if len(out) != len(records):
        logger.info("evaluation: dropped %d duplicated image(s)", len(records) - len(out))
    return out


class SceneGraphEvaluator:
    """Relation metrics (and optionally box AP) of a dataset, one batch at a time.

    Args:
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        num_predicates: P, foreground predicates (50 on VG150).
        zeroshot_triplets: int [Z,3] (subj class, obj class, predicate) or None (no zR keys).
        iou_threshold: IoU for a box to match (TEST.RELATION.IOU_THRESHOLD).
        ks: the K of R@K etc.
        predicate_names: P names (or P+1 with the background first), copied into the result.
        class_names: object class names (background first) or the number of classes; when given,
            ``evaluate`` also reports box AP (``AP50``, ``AP``) as SGB does.
        rel_nms_thresh: PE-Net's ``rel_nms`` evaluation of PredCls/SGCls with this IoU threshold
            (TEST.RELATION.REL_NMS; PE-Net used 0.6; SGDet ignores it); 0 (default) = off, SGB's
            evaluation. See :mod:`sgg.evaluation.sgg_eval`. A subclass with its own
            ``_make_record`` (the Open Images evaluator) does not support it: a ValueError.

    ``process(groundtruths, predictions)``: lists (or one of each) of per-image GT and
    prediction mappings/objects, see :func:`~sgg.evaluation.sgg_eval.make_record`. The image id
    is taken from ``image_id`` of the GT (or the prediction); without one, the arrival order on
    each rank is kept.
    """

    def __init__(self, mode: str, num_predicates: int, zeroshot_triplets: Any = None,
                 iou_threshold: float = 0.5, ks: Sequence[int] = DEFAULT_KS,
                 predicate_names: Optional[Sequence[str]] = None,
                 class_names: Union[Sequence[str], int, None] = None, rel_nms_thresh: float = 0.0):
        self.mode = check_mode(mode)
        self.rel_nms_thresh = check_rel_nms_thresh(rel_nms_thresh)
        if self.rel_nms_thresh > 0 and type(self)._make_record is not SceneGraphEvaluator._make_record:
            raise ValueError(f"{type(self).__name__} does not support rel_nms (rel_nms_thresh="
                             f"{self.rel_nms_thresh}, TEST.RELATION.REL_NMS): it is an option of the VG "
                             f"metrics (SceneGraphEvaluator); set it to 0")
        self.num_predicates = int(num_predicates)
        self.zeroshot_triplets = zeroshot_triplets
        self.iou_threshold = float(iou_threshold)
        self.ks = check_ks(ks)
        self.predicate_names = predicate_names
        self.class_names = class_names
        self.reset()

    def reset(self) -> None:
        self._records: List[ImageRecord] = []
        self._gathered: Optional[List[ImageRecord]] = None

    @property
    def records(self) -> List[ImageRecord]:
        """This rank's records, in arrival order."""
        return self._records

    def process(self, groundtruths: Any, predictions: Any) -> None:
        if isinstance(groundtruths, Mapping) or not isinstance(groundtruths, (list, tuple)):
            groundtruths, predictions = [groundtruths], [predictions]
        if len(groundtruths) != len(predictions):
            raise ValueError(f"{len(groundtruths)} ground truths but {len(predictions)} predictions")
        for gt, pred in zip(groundtruths, predictions):
            image_id = get_field(gt, "image_id", get_field(pred, "image_id", None))
            self._records.append(self._make_record(gt, pred, -1 if image_id is None else image_id))
        self._gathered = None

    def _make_record(self, gt: Any, pred: Any, image_id: int) -> ImageRecord:
        """The compact record of one image (what is gathered and scored)."""
        return make_record(gt, pred, self.mode, self.ks, image_id=image_id, num_predicates=self.num_predicates,
                           rel_nms_thresh=self.rel_nms_thresh)

    def gather_records(self) -> List[ImageRecord]:
        """All ranks' records on rank 0, ordered by image id (other ranks: ``[]``).
        Collective: every rank must call it."""
        if self._gathered is None:
            parts = comm.gather(self._records, dst=0)
            if not comm.is_main_process():
                self._gathered = []  # gathered once: a later call must not start a second gather
                return []
            self._gathered = order_records([rec for part in parts for rec in part])
        return self._gathered

    def evaluate(self) -> Dict[str, Any]:
        """Metrics dict on rank 0 (fractions; keys in :func:`evaluate_records`), ``{}`` elsewhere."""
        records = self.gather_records()
        if not comm.is_main_process():
            return {}
        check_not_empty(len(records), "SceneGraphEvaluator.evaluate")
        metrics = evaluate_records(records, self.mode, self.num_predicates,
                                   zeroshot_triplets=self.zeroshot_triplets,
                                   iou_threshold=self.iou_threshold, ks=self.ks,
                                   predicate_names=self.predicate_names)
        if self.class_names is not None:
            metrics.update(records_box_ap(records, self.mode, self.class_names))
        return metrics

    def save(self, path: str, metadata: Optional[Mapping[str, Any]] = None) -> None:
        """Write the gathered records to a predictions file (rank 0; collective)."""
        from .io import save_predictions

        records = self.gather_records()
        if comm.is_main_process():
            save_predictions(path, records, self.mode, self.ks, metadata=metadata)
