"""Relation inference over a test split: run the model, stream its graphs into the evaluator."""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional

import torch
from tqdm import tqdm

from sgg.utils import comm
from sgg.utils.device import autocast

logger = logging.getLogger(__name__)

def build_relation_evaluator(cfg, dataset, mode: str):
    """A :class:`~sgg.evaluation.SceneGraphEvaluator` for ``dataset`` (predicate names, zero-shot
    triplets from DATASETS.ZEROSHOT_FILE or the dataset folder, IoU threshold, K, box AP); an
    :class:`~sgg.evaluation.OIEvaluator` (same arguments) when the dataset's class says
    ``evaluator_kind = "oi"`` (the Open Images format). TEST.RELATION.REL_NMS (PE-Net's rel_nms
    evaluation) goes to either; the Open Images evaluator refuses a non-zero value (ValueError)."""
    from sgg.data.catalog import find_zeroshot_file, get_dataset_files
    from sgg.data.datasets import load_zeroshot_triplets
    from sgg.evaluation import OIEvaluator, SceneGraphEvaluator

    zeroshot = None
    name = getattr(dataset, "name", None)
    zs_file = cfg.DATASETS.ZEROSHOT_FILE
    if not zs_file and name:
        zs_file = find_zeroshot_file(get_dataset_files(name, cfg.DATASETS.DATA_DIR)) or ""
    if zs_file:
        zeroshot = load_zeroshot_triplets(zs_file)
    elif name:
        zeroshot = zeroshot_from_train(cfg, dataset)
    evaluator_cls = OIEvaluator if getattr(dataset, "evaluator_kind", "") == "oi" else SceneGraphEvaluator
    return evaluator_cls(mode, dataset.num_predicates - 1, zeroshot_triplets=zeroshot,
                         iou_threshold=cfg.TEST.RELATION.IOU_THRESHOLD, ks=cfg.TEST.TOP_K,
                         predicate_names=dataset.ind_to_predicates[1:],
                         class_names=dataset.ind_to_classes, rel_nms_thresh=cfg.TEST.RELATION.REL_NMS)


def zeroshot_from_train(cfg, dataset):
    """Zero-shot triplets of a dataset without a zero-shot file (``zeroshot_triplet.pytorch`` /
    DATASETS.ZEROSHOT_FILE): the triplets of ``dataset`` never seen in its train split (the cached
    train statistics' ``fg_matrix``), logged with their count; None (no zR) when the train split
    cannot be read, with a warning naming the cause."""
    from sgg.data.catalog import get_dataset_files, train_split_of
    from sgg.data.statistics import get_dataset_statistics, unseen_triplets

    train_name = train_split_of(dataset.name)
    try:
        stats = get_dataset_statistics(get_dataset_files(train_name, cfg.DATASETS.DATA_DIR),
                                       cache_dir=cfg.OUTPUT_DIR or None, num_val_im=cfg.DATASETS.NUM_VAL_IMAGES)
    except (FileNotFoundError, ValueError, KeyError) as e:
        logger.warning("%s: no zero-shot file and the train split '%s' cannot be read (%s): no zR@K",
                       dataset.name, train_name, e)
        return None
    zs = unseen_triplets(stats["fg_matrix"], dataset.get_triplets())
    logger.info("%s: no zero-shot file; zR@K counts its %d triplets never seen in '%s' (write "
                "zeroshot_triplet.pytorch in the dataset folder or set DATASETS.ZEROSHOT_FILE to fix the set)",
                dataset.name, len(zs), train_name)
    return zs


def relation_inference(model: torch.nn.Module, data_loader, evaluator, dtype: str = "float32",
                       max_images: int = -1, predictions_file: Optional[str] = None) -> Dict[str, Any]:
    """Run ``model`` (eval mode, no_grad, autocast for float16/bfloat16) on ``data_loader`` (a
    test loader whose ``dataset.dataset`` has ``get_groundtruth``) and return the evaluator's
    metrics (rank 0; ``{}`` elsewhere). GT comes from the dataset in original pixels, SGB's
    evaluation GT. ``predictions_file``: also save the compact predictions (.npz) for re-scoring.
    """
    dataset = data_loader.dataset.dataset
    index = {int(dataset.get_img_info(i)["image_id"]): i for i in range(len(dataset))}
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    evaluator.reset()
    seen, start = 0, time.perf_counter()
    try:
        with torch.no_grad(), autocast(device, dtype):
            for batch in tqdm(data_loader, desc="inference", disable=not comm.is_main_process(),
                              leave=False):
                graphs = model(batch)
                gts = [dataset.get_groundtruth(index[int(d["image_id"])]) for d in batch]
                evaluator.process(gts, [g.to_numpy() for g in graphs])
                seen += len(batch)
                if 0 < max_images <= seen:
                    break
    finally:
        model.train(was_training)
    elapsed = time.perf_counter() - start
    logger.info("inference: %d images on rank %d in %.1fs (%.1f ms/image)", seen, comm.get_rank(), elapsed,
                1000 * elapsed / max(seen, 1))
    metrics = evaluator.evaluate()  # collective: every rank's records are gathered on rank 0
    if predictions_file and comm.is_main_process():
        # Rank 0 keeps the gathered records; a second gather from the other ranks alone would
        # wait for a rank 0 that never joins it (it crashed 2-process runs at exit).
        evaluator.save(predictions_file, metadata={"dataset": getattr(dataset, "name", "")})
    return metrics


def save_metrics(metrics: Dict[str, Any], output_dir: str, name: str, predicate_frequency=None) -> Dict[str, str]:
    """Rank 0: the report files (txt table, json, per-predicate png) under ``output_dir``; returns
    their paths (``{}`` on other ranks)."""
    if not comm.is_main_process() or not metrics:
        return {}
    from sgg.evaluation import write_report

    os.makedirs(output_dir, exist_ok=True)
    return write_report(metrics, output_dir, name=name, predicate_frequency=predicate_frequency,
                        predicate_names=metrics.get("predicate_names"))
