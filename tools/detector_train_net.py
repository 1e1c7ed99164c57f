#!/usr/bin/env python
"""Train (or evaluate) the Faster R-CNN detector on a VG150-format dataset (SGB step 1).

    torchrun --nproc_per_node=4 tools/detector_train_net.py --config-file CONFIG.yaml \
        SOLVER.IMS_PER_BATCH 8 OUTPUT_DIR output/detector
    python tools/detector_train_net.py --config-file CONFIG.yaml --eval-only MODEL.WEIGHT output/detector

Training: box losses (RPN objectness + box regression, ROI classification + box regression);
validation on ``DATASETS.VAL[0]`` every ``SOLVER.VAL_PERIOD`` iterations reports box AP
(``AP50``, SGB's "mAP", and COCO ``AP``); the best AP50 checkpoint is kept. The number of classes
comes from the training dataset (151 on VG150, the profile's on SynthVG). After training (or with
``--eval-only``) every ``DATASETS.TEST`` split is evaluated; the metrics go to
``OUTPUT_DIR/inference/<dataset>/detection.json``. ``--eval-only`` loads ``MODEL.WEIGHT`` (a file,
or a directory whose ``last_checkpoint`` names one), else ``OUTPUT_DIR``'s last checkpoint.
"""
from __future__ import annotations

import json
import logging
import os
import sys
from functools import partial

from torch.utils.data import ConcatDataset

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from sgg.checkpoint import Checkpointer  # noqa: E402
from sgg.data.build import build_dataset, build_test_loader, build_train_loader  # noqa: E402
from sgg.engine import (  # noqa: E402
    EvalHook,
    Trainer,
    default_argument_parser,
    default_hooks,
    resolve_device,
    setup,
    shutdown_distributed,
)
from sgg.modeling.detector import build_detector, evaluate_detector  # noqa: E402
from sgg.utils import comm  # noqa: E402

logger = logging.getLogger("sgg.detector_train_net")
MODE = "sgdet"  # the detector never sees GT at test time


def evaluate_all(cfg, model, names):
    results = {}
    for name in names:
        loader = build_test_loader(cfg, name, mode=MODE)
        classes = loader.dataset.dataset.ind_to_classes
        results[name] = evaluate_detector(model, loader, classes)
        if comm.is_main_process() and cfg.OUTPUT_DIR:
            out = os.path.join(cfg.OUTPUT_DIR, "inference", name)
            os.makedirs(out, exist_ok=True)
            with open(os.path.join(out, "detection.json"), "w") as f:
                json.dump(results[name], f, indent=2)
        logger.info("%s: AP50 %.2f  AP %.2f", name, 100 * results[name]["AP50"], 100 * results[name]["AP"])
    return results


def main(args):
    cfg = setup(args)
    train_sets = [build_dataset(cfg, n, is_train=True, mode=MODE) for n in cfg.DATASETS.TRAIN]
    num_classes = train_sets[0].num_classes
    if num_classes != cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES:
        logger.info("the dataset has %d classes (with background); MODEL.ROI_BOX_HEAD.NUM_CLASSES %d is "
                    "overridden", num_classes, cfg.MODEL.ROI_BOX_HEAD.NUM_CLASSES)
    model = build_detector(cfg, num_classes=num_classes)
    logger.info("detector:\n%s", model)

    if args.eval_only:
        model.to(resolve_device(cfg.MODEL.DEVICE))
        Checkpointer(model, cfg.OUTPUT_DIR).load(cfg.MODEL.WEIGHT or cfg.OUTPUT_DIR, model_only=True)
        return evaluate_all(cfg, model, cfg.DATASETS.TEST)

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
    trainer.resume_or_load(cfg.MODEL.WEIGHT, resume=args.resume)
    state = trainer.train()
    if state in ("completed", "stopped_early") and cfg.DATASETS.TEST:
        evaluate_all(cfg, trainer.model, cfg.DATASETS.TEST)
    return state


if __name__ == "__main__":
    try:
        main(default_argument_parser("Faster R-CNN detector training (SGB step 1)").parse_args())
    finally:
        shutdown_distributed()
