"""Scene-graph evaluation: SGB-exact relation metrics, box AP, streaming evaluator, reports.

Research code::

    from sgg.evaluation import evaluate_relations
    metrics = evaluate_relations(gts, preds, "predcls", num_predicates=50)
    metrics["R@50"], metrics["mR@100"], metrics["per_predicate_R@100"]

Training / test loops use :class:`SceneGraphEvaluator` (``process`` per batch, ``evaluate`` on
every rank, result on rank 0); :func:`save_predictions` / :func:`evaluate_predictions_file`
re-score a run without the model.
"""
from .detection import coco_box_ap, evaluate_detection, records_box_ap
from .evaluator import SceneGraphEvaluator, order_records
from .io import (PredictionsFile, PredictionsFileError, evaluate_predictions_file,
                 load_predictions, save_predictions)
from .oi_eval import (OIEvaluator, OIImageRecord, evaluate_oi_records, evaluate_oi_relations,
                      format_oi_report, make_oi_record)
from .report import (format_metrics, format_report, format_summary_table, is_oi_metrics,
                     plot_per_predicate_recall, predicate_order,
                     write_json, write_report)
from .rel_nms import rel_nms
from .sgbench import (SgbenchFileError, evaluate_sgbench_predictions, export_sgbench,
                      load_sgbench_predictions)
from .sgg_eval import (DEFAULT_KS, MODES, NG_TOPK, ImageRecord, box_iou_plus1, evaluate_records,
                       evaluate_relations, make_record, metric_keys, stable_topk_desc,
                       zeroshot_mask)

__all__ = [
    "DEFAULT_KS", "MODES", "NG_TOPK", "ImageRecord", "PredictionsFile", "PredictionsFileError",
    "SceneGraphEvaluator", "box_iou_plus1", "coco_box_ap", "evaluate_detection",
    "evaluate_predictions_file", "evaluate_records", "evaluate_relations", "format_metrics", "format_report",
    "format_summary_table", "is_oi_metrics", "load_predictions", "make_record", "metric_keys", "order_records",
    "plot_per_predicate_recall", "predicate_order", "records_box_ap", "rel_nms", "save_predictions",
    "stable_topk_desc",
    "write_json", "write_report", "zeroshot_mask",
    "OIEvaluator", "OIImageRecord", "evaluate_oi_records", "evaluate_oi_relations", "format_oi_report",
    "make_oi_record", "SgbenchFileError", "evaluate_sgbench_predictions", "export_sgbench",
    "load_sgbench_predictions",
]
