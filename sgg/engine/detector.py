"""The detector train / test job (SGB's step 1, ``sgg detector_train_net``), as library code.

Training: box losses (RPN objectness + box regression, ROI classification + box regression);
validation on ``DATASETS.VAL[0]`` every ``SOLVER.VAL_PERIOD`` iterations reports box AP
(``AP50``, SGB's "mAP", and COCO ``AP``); the best AP50 checkpoint is kept. The number of classes
comes from the dataset (151 on VG150, the profile's on SynthVG), not from
``MODEL.ROI_BOX_HEAD.NUM_CLASSES``. After training (or with :func:`test_detector`) every
``DATASETS.TEST`` split is evaluated; the metrics go to
``OUTPUT_DIR/inference/<dataset>/detection.json`` (fractions).

The detector never sees GT at test time: its loaders use the SGDet protocol. The box AP itself is
computed by :func:`sgg.evaluation.detection.evaluate_detection`; :func:`evaluate_detector` only runs
the model over a loader and gathers the records.
"""
from __future__ import annotations

import json
import logging
import os
from functools import partial
from typing import Any, Dict, Sequence

import torch

from sgg.checkpoint import Checkpointer
from sgg.modeling.detector import FasterRCNNDetector, build_detector, detector_postprocess
from sgg.utils import comm
from sgg.utils.device import resolve_device

logger = logging.getLogger(__name__)

MODE = "sgdet"  # the detector never sees GT at test time


@torch.no_grad()
def evaluate_detector(model: FasterRCNNDetector, data_loader, class_names: Sequence[str] | int,
                      max_images: int = -1) -> Dict[str, float]:
    """Box AP (SGB's COCO evaluation, ``AP50`` and ``AP``) of ``model`` on a test loader.

    Detections are mapped back to the original image; GT boxes come from the mapper's
    ``instances`` (mapped back the same way). Every rank runs its shard; rank 0 evaluates and the
    result is broadcast. ``max_images`` (> 0) stops early (quick validation).
    """
    from sgg.data.build import require_images
    from sgg.evaluation.detection import evaluate_detection

    dataset = getattr(getattr(data_loader, "dataset", None), "dataset", None)
    if dataset is not None:
        require_images(dataset)  # an empty split: an error naming it, never an AP of NaN
    was_training = model.training
    model.eval()
    records = []
    seen = 0
    try:
        for batch in data_loader:
            outputs = model(batch)
            for d, det in zip(batch, outputs):
                h, w = int(d["height"]), int(d["width"])
                det = detector_postprocess(det, h, w)
                gt = d["instances"]
                rh, rw = gt.image_size
                gt_boxes = gt.gt_boxes.tensor.detach().cpu().clone()
                gt_boxes[:, 0::2] *= w / rw
                gt_boxes[:, 1::2] *= h / rh
                records.append((
                    int(d["image_id"]),
                    {"boxes": gt_boxes.numpy(), "labels": gt.gt_classes.cpu().numpy()},
                    {"boxes": det.boxes.tensor.cpu().numpy(), "labels": det.labels.cpu().numpy(),
                     "scores": det.scores.cpu().numpy()},
                ))
            seen += len(batch)
            if 0 < max_images <= seen:
                break
    finally:
        model.train(was_training)
    gathered = comm.gather(records, dst=0)
    metrics: Dict[str, float] = {}
    if comm.is_main_process():
        allrec = [r for part in gathered for r in part]
        metrics = evaluate_detection([r[1] for r in allrec], [r[2] for r in allrec], class_names, "sgdet")
        logger.info("detection on %d images: AP50 %.2f, AP %.2f", len(allrec), 100 * metrics["AP50"],
                    100 * metrics["AP"])
    return comm.broadcast_object(metrics, src=0)


def _build(cfg, num_classes: int) -> FasterRCNNDetector:
    if num_classes != cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES:
        logger.info("the dataset has %d classes (with background); MODEL.ROI_BOX_HEAD.NUM_CLASSES %d is "
                    "overridden", num_classes, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)
    model = build_detector(cfg, num_classes=num_classes)
    logger.info("detector:\n%s", model)
    return model


def _evaluate_splits(cfg, model, loaders: Dict[str, Any]) -> Dict[str, Dict[str, float]]:
    """Box AP of ``model`` on each ``{name: test loader}``; rank 0 writes ``detection.json``."""
    results = {}
    for name, loader in loaders.items():
        classes = loader.dataset.dataset.ind_to_classes
        results[name] = evaluate_detector(model, loader, classes)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            out = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "detection.json"), "w") as f:
                json.dump(results[name], f, indent=2)
        logger.info("%s: AP50 %.2f  AP %.2f", name, 100 * results[name]["AP50"], 100 * results[name]["AP"])
    return results


def _test_loaders(cfg) -> Dict[str, Any]:
    from sgg.data.build import build_test_loader

    return {name: build_test_loader(cfg, name, mode=MODE) for name in cfg.DATASETS.TEST}


def train_detector(cfg, resume: bool = True) -> Dict[str, Any]:
    """Train the detector of ``cfg`` on DATASETS.TRAIN (module docstring); resume from
    OUTPUT_DIR's last checkpoint when ``resume`` (else start from MODEL.WEIGHT, if set).

    Returns ``{"state": trainer state, <test split>: {"AP50": ..., "AP": ..., ...}, ...}``; the
    test splits are evaluated only when training completed or stopped early (not after a
    preemption: SIGTERM, after which the command exits with status 143).
    """
    from torch.utils.data import ConcatDataset

    from sgg.data.build import build_dataset, build_test_loader, build_train_loader

    from .hooks import EvalHook, default_hooks
    from .trainer import Trainer

    train_sets = [build_dataset(cfg, n, is_train=True, mode=MODE) for n in cfg.DATASETS.TRAIN]
    model = _build(cfg, train_sets[0].num_classes)
    train_set = train_sets[0] if len(train_sets) == 1 else ConcatDataset(train_sets)

    def data_loader(start_iter: int):
        return build_train_loader(cfg, mode=MODE, start_iter=start_iter, dataset=train_set)

    evaluate_fn = None
    if cfg.DATASETS.VAL:
        val_loader = build_test_loader(cfg, cfg.DATASETS.VAL[0], mode=MODE)
        classes = val_loader.dataset.dataset.ind_to_classes
        evaluate_fn = partial(evaluate_detector, data_loader=val_loader, class_names=classes)

    hooks = default_hooks(cfg, evaluate_fn)
    for h in hooks:
        # SOLVER.VAL_METRIC defaults to the relation metric R@100; a detector is judged by AP50.
        if isinstance(h, EvalHook) and h.metric == "R@100":
            h.metric = "AP50"
    trainer = Trainer.from_config(cfg, model, data_loader, evaluate_fn=evaluate_fn, hooks=hooks)
    trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=resume)
    state = trainer.train()
    results: Dict[str, Any] = {"state": state}
    if state == "preempted":  # the command exits with status 143 (sgg.cli.PREEMPTED_EXIT_STATUS)
        logger.warning("training stopped by SIGTERM: no test (run the command again to resume and test)")
    if state in ("completed", "stopped_early") and cfg.DATASETS.TEST:
        results.update(_evaluate_splits(cfg, trainer.model, _test_loaders(cfg)))
    return results


def test_detector(cfg, weights: str = "") -> Dict[str, Dict[str, float]]:
    """Load ``weights`` (a checkpoint file, or a directory whose ``last_checkpoint`` names one;
    default MODEL.WEIGHT, else OUTPUT_DIR) and return the box AP of every DATASETS.TEST split
    (``{split: {"AP50": ..., "AP": ..., ...}}``). Needs no training data: the number of classes
    comes from the test split."""
    loaders = _test_loaders(cfg)
    if not loaders:
        logger.warning("DATASETS.TEST is empty: nothing to evaluate")
        return {}
    model = _build(cfg, next(iter(loaders.values())).dataset.dataset.num_classes)
    model.to(resolve_device(cfg.MODEL.DEVICE))
    Checkpointer(model, cfg.OUTPUT_DIR).load(weights or cfg.MODEL.WEIGHT or cfg.OUTPUT_DIR, model_only=True)
    return _evaluate_splits(cfg, model, loaders)
