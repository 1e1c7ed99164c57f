"""Predictors that need no training, scored with the same evaluator as the models.

- ``frequency_prior``: the training predicate distribution of each (subject class, object class)
  (SGB's ``pred_dist``, which initialises ``FrequencyBias``), on GT boxes and labels.
- ``geometric_rule``: SynthVG's own relation rule on GT boxes and labels, with object depth read
  from the depth map: an upper-bound-like oracle showing that the images carry the signal.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Sequence

import numpy as np
from tqdm import tqdm

from ..utils import comm

logger = logging.getLogger(__name__)

BASELINES = ("frequency_prior", "geometric_rule")


def all_ordered_pairs(n: int) -> np.ndarray:
    """Every (i, j), i != j, row-major -> int64 [n(n-1), 2]."""
    s, o = np.nonzero(~np.eye(n, dtype=bool))
    return np.stack([s, o], 1).astype(np.int64)


def order_by_triplet_score(rel_pairs: np.ndarray, rel_scores: np.ndarray,
                           obj_scores: np.ndarray):
    """Sort rows by ``max_{p>=1} rel_scores * s * o`` descending, stable (the post-processor's order)."""
    if len(rel_pairs) == 0:
        return rel_pairs, rel_scores
    trip = rel_scores[:, 1:].max(1) * obj_scores[rel_pairs[:, 0]] * obj_scores[rel_pairs[:, 1]]
    order = np.argsort(-trip, kind="stable")
    return rel_pairs[order], rel_scores[order]


def prior_over_objects(boxes, labels, scores, pred_dist: np.ndarray) -> dict:
    """Prediction dict of the frequency prior over given objects: every ordered pair scored by
    ``softmax(pred_dist[ls, lo])``, ranked by triplet score."""
    from ..data.statistics import frequency_prior_predictions

    labels = np.asarray(labels, np.int64)
    scores = np.asarray(scores, np.float32)
    pairs = all_ordered_pairs(len(labels))
    rel_scores = frequency_prior_predictions(pred_dist, labels, pairs)
    pairs, rel_scores = order_by_triplet_score(pairs, rel_scores, scores)
    return {"boxes": boxes, "labels": labels, "scores": scores, "rel_pairs": pairs, "rel_scores": rel_scores}


def frequency_prior_prediction(groundtruth: dict, pred_dist: np.ndarray) -> dict:
    """PredCls prediction of the frequency prior for one image (GT boxes and labels, scores 1)."""
    labels = groundtruth["labels"]
    return prior_over_objects(groundtruth["boxes"], labels, np.ones(len(labels), np.float32), pred_dist)


def frequency_prior_on_records(records, pred_dist: np.ndarray, mode: str, ks=None) -> list:
    """The frequency prior run through a model's OWN objects: for every evaluator record (a
    model's saved predictions), keep the predicted boxes, labels and scores (PredCls: the GT ones,
    as the evaluator's override does), score every ordered pair of them by ``softmax(pred_dist[ls,
    lo])`` and re-rank by triplet score. Comparing a model with this isolates what its relation
    predictions add over its object predictions. Returns new records (same ground truth)."""
    from .sgg_eval import DEFAULT_KS, make_record

    out = []
    for r in records:
        gt = {"boxes": r.gt_boxes, "labels": r.gt_labels, "relations": r.gt_rels}
        if mode == "predcls":
            pred = frequency_prior_prediction(gt, pred_dist)
        else:
            pred = prior_over_objects(r.boxes, r.labels, r.scores, pred_dist)
        out.append(make_record(gt, pred, mode, ks=ks or DEFAULT_KS, image_id=r.image_id))
    return out


def geometric_rule_prediction(groundtruth: dict, depth_map_m: np.ndarray, synth_cfg) -> dict:
    """PredCls prediction of SynthVG's rule for one image; ``depth_map_m`` in metres."""
    from ..data.synthvg import rule_predictions

    labels = np.asarray(groundtruth["labels"], np.int64)
    pairs, rel_scores = rule_predictions(groundtruth["boxes"], labels, depth_map_m, synth_cfg,
                                         depth_unit="metres")
    return {"boxes": groundtruth["boxes"], "labels": labels,
            "scores": np.ones(len(labels), np.float32), "rel_pairs": pairs, "rel_scores": rel_scores}


def run_baselines(cfg, names: Sequence[str] = BASELINES, split_name: Optional[str] = None,
                  max_images: int = -1) -> Dict[str, dict]:
    """Score the named baselines on the first DATASETS.TEST split (PredCls protocol).

    Returns ``{name: metrics}`` on rank 0 and writes ``<name>`` reports (txt, json, png) to
    OUTPUT_DIR. The statistics come from the train split of the same dataset (cached in OUTPUT_DIR).
    """
    from ..data.catalog import find_zeroshot_file, get_dataset_files, train_split_of
    from ..data.datasets import DATASET_FORMAT_REGISTRY, load_depth, load_zeroshot_triplets
    from ..data.statistics import get_dataset_statistics
    from . import SceneGraphEvaluator, write_report

    unknown = set(names) - set(BASELINES)
    if unknown:
        raise ValueError(f"unknown baseline(s) {sorted(unknown)}; choose from {BASELINES}")
    split_name = split_name or cfg.DATASETS.TEST[0]
    files = get_dataset_files(split_name, cfg.DATASETS.DATA_DIR)
    train_files = get_dataset_files(train_split_of(split_name), cfg.DATASETS.DATA_DIR)
    stats = get_dataset_statistics(train_files, cache_dir=cfg.OUTPUT_DIR,
                                   num_val_im=cfg.DATASETS.NUM_VAL_IMAGES)
    synth_cfg = None
    if "geometric_rule" in names:
        from ..data import synthvg

        if not os.path.isfile(os.path.join(files.root, "synthvg_config.json")):
            raise FileNotFoundError(f"geometric_rule needs a SynthVG dataset: {files.root} has no "
                                    "synthvg_config.json (drop it with --baselines frequency_prior)")
        synth_cfg = synthvg.load_config(files.root)
    dataset = DATASET_FORMAT_REGISTRY.get(files.format).from_files(
        files, num_val_im=cfg.DATASETS.NUM_VAL_IMAGES, depth_dir=files.depth_dir if synth_cfg is not None else None)
    zs_file = find_zeroshot_file(files, cfg.DATASETS.ZEROSHOT_FILE)
    zeroshot = load_zeroshot_triplets(zs_file) if zs_file else None
    num_predicates = dataset.num_predicates - 1
    evaluators = {n: SceneGraphEvaluator("predcls", num_predicates, zeroshot_triplets=zeroshot,
                                         iou_threshold=cfg.TEST.RELATION.IOU_THRESHOLD,
                                         ks=cfg.TEST.TOP_K,
                                         predicate_names=dataset.ind_to_predicates[1:])
                  for n in names}
    predictors: Dict[str, Callable[[int, dict], dict]] = {
        "frequency_prior": lambda i, gt: frequency_prior_prediction(gt, stats["pred_dist"]),
        "geometric_rule": lambda i, gt: geometric_rule_prediction(
            gt, load_depth(dataset[i]["depth_file"], scale=1.0 / synth_cfg.depth_scale), synth_cfg),
    }
    # Each rank scores a contiguous shard; the evaluator gathers and orders by image id.
    n = len(dataset) if max_images < 0 else min(max_images, len(dataset))
    world, rank = comm.get_world_size(), comm.get_rank()
    lo, hi = rank * n // world, (rank + 1) * n // world
    for i in tqdm(range(lo, hi), desc="baselines", disable=not comm.is_main_process()):
        gt = dataset.get_groundtruth(i)
        for name in names:
            evaluators[name].process(gt, predictors[name](i, gt))
    results = {}
    for name in names:
        metrics = evaluators[name].evaluate()
        if comm.is_main_process():
            metrics["mode"] = "predcls"
            write_report(metrics, cfg.OUTPUT_DIR, name=name,
                         predicate_frequency=stats["predicate_counts"],
                         predicate_names=dataset.ind_to_predicates[1:])
            results[name] = metrics
    return results
