"""Re-score a saved predictions file against a dataset split (no model needed)."""
from __future__ import annotations

import logging
from typing import Any, Dict, Optional

import numpy as np

from .io import load_predictions
from .sgg_eval import check_not_empty, evaluate_records

logger = logging.getLogger(__name__)


def check_records_match_dataset(records, dataset, path: str) -> None:
    """Every record's image id must be in ``dataset`` with the same GT (boxes within 1e-3 px,
    labels, relation rows); otherwise a ValueError names the file, the image and the difference."""
    index = {int(dataset.get_img_info(i)["image_id"]): i for i in range(len(dataset))}
    missing = [r.image_id for r in records if r.image_id not in index]
    if missing:
        raise ValueError(f"{path}: {len(missing)} image id(s) are not in the split {dataset!r} "
                         f"(first: {missing[:5]}); score it against the split it was predicted on "
                         f"(DATASETS.TEST)")
    for rec in records:
        gt = dataset.get_groundtruth(index[rec.image_id])
        same = (len(rec.gt_boxes) == len(gt["boxes"])
                and np.allclose(rec.gt_boxes, gt["boxes"], atol=1e-3)
                and np.array_equal(rec.gt_labels, gt["labels"])
                and np.array_equal(rec.gt_rels, gt["relations"]))
        if not same:
            raise ValueError(f"{path}: image {rec.image_id}: the ground truth stored with the predictions "
                             f"differs from the dataset's ({len(rec.gt_boxes)} vs {len(gt['boxes'])} boxes, "
                             f"{len(rec.gt_rels)} vs {len(gt['relations'])} relations); was it made from "
                             f"another version of the dataset files?")
    if len(records) < len(dataset):
        logger.warning("%s holds %d of the split's %d images: metrics cover those only",
                       path, len(records), len(dataset))


def rescore_predictions(path: str, dataset, zeroshot_triplets: Any = None, iou_threshold: float = 0.5,
                        ks: Optional[tuple] = None, with_box_ap: bool = True,
                        prior_pred_dist: Any = None) -> Dict[str, Any]:
    """Metrics of the predictions file ``path`` on ``dataset`` (a VG150Dataset split).

    With ``prior_pred_dist`` (the training statistics' ``pred_dist``) the file's relations are
    replaced by the frequency prior over the file's own objects
    (:func:`~sgg.evaluation.baselines.frequency_prior_on_records`)."""
    loaded = load_predictions(path)
    check_not_empty(len(loaded.records), f"'{path}' on {dataset!r}")
    check_records_match_dataset(loaded.records, dataset, path)
    ks = tuple(loaded.ks if ks is None else ks)
    if max(ks) > max(loaded.ks):
        raise ValueError(f"{path}: saved with ks={loaded.ks}; cannot score K={max(ks)}")
    records = loaded.records
    if prior_pred_dist is not None:
        from .baselines import frequency_prior_on_records

        records = frequency_prior_on_records(records, prior_pred_dist, loaded.mode, ks=ks)
    metrics = evaluate_records(records, loaded.mode, dataset.num_predicates - 1,
                               zeroshot_triplets=zeroshot_triplets, iou_threshold=iou_threshold,
                               ks=ks, predicate_names=dataset.ind_to_predicates[1:])
    if with_box_ap:
        from .detection import records_box_ap

        metrics.update(records_box_ap(records, loaded.mode, dataset.ind_to_classes))
    metrics["mode"] = loaded.mode
    return metrics
