"""Config -> detector, and loading detector checkpoints (sgg's own and SGB's).

The detector's keys (``MODEL.DETECTOR.*``, ``MODEL.BACKBONE.TIMM_*``) are declared and documented in
:mod:`sgg.config.defaults`. SGB checkpoints want ``MODEL.DETECTOR.FROZEN_BN_EPS 0.0
MODEL.DETECTOR.LEGACY_BOX_CODING True MODEL.DETECTOR.ALIGNED_ROI False`` with SGB's ``INPUT``
defaults (BGR 0..255, mean subtracted); :func:`load_detector_checkpoint` reads SGB's files directly
(the full list of keys is the SGB_COMPAT note of :mod:`sgg.checkpoint.sgb`).
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence

import torch
from torch import nn
from yacs.config import CfgNode as CN

from sgg.checkpoint import load_model_state
from sgg.modeling.backbone import build_backbone, load_state_dict_file

from .faster_rcnn import FasterRCNNDetector, detector_postprocess, make_box_heads, make_rpn

logger = logging.getLogger(__name__)

# Top-level modules of FasterRCNNDetector's state dict.
_DETECTOR_ROOTS = ("backbone.", "rpn.", "roi_heads.")




def detector_kwargs_from_config(cfg, num_classes: Optional[int] = None) -> Dict:
    """Plain keyword arguments of every part, read from ``cfg`` (cfg stops here)."""
    m = cfg.MODEL
    if m.CLS_AGNOSTIC_BBOX_REG:
        raise ValueError("MODEL.CLS_AGNOSTIC_BBOX_REG True is not supported: the box head regresses "
                         "one box per class (as SGB's VG detectors)")
    det = m.DETECTOR
    legacy = bool(det.LEGACY_BOX_CODING)
    if num_classes is None:
        num_classes = m.ROI_BOX_HEAD.NUM_CLASSES
    rpn = dict(
        anchor_sizes=tuple(m.RPN.ANCHOR_SIZES),
        aspect_ratios=tuple(m.RPN.ASPECT_RATIOS),
        anchor_strides=tuple(m.RPN.ANCHOR_STRIDE),
        fg_iou_thresh=m.RPN.FG_IOU_THRESHOLD,
        bg_iou_thresh=m.RPN.BG_IOU_THRESHOLD,
        batch_size_per_image=m.RPN.BATCH_SIZE_PER_IMAGE,
        positive_fraction=m.RPN.POSITIVE_FRACTION,
        pre_nms_top_n_train=m.RPN.PRE_NMS_TOP_N_TRAIN,
        pre_nms_top_n_test=m.RPN.PRE_NMS_TOP_N_TEST,
        # maskrcnn_benchmark FPN: the per-image cap over all levels is FPN_POST_NMS_TOP_N_*.
        post_nms_top_n_train=m.RPN.FPN_POST_NMS_TOP_N_TRAIN,
        post_nms_top_n_test=m.RPN.FPN_POST_NMS_TOP_N_TEST,
        nms_thresh=m.RPN.NMS_THRESH,
        min_size=float(m.RPN.MIN_SIZE),
        legacy=legacy,
    )
    box = dict(
        num_classes=int(num_classes),
        mlp_head_dim=m.ROI_BOX_HEAD.MLP_HEAD_DIM,
        pooler_resolution=m.ROI_BOX_HEAD.POOLER_RESOLUTION,
        pooler_sampling_ratio=m.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
        pooler_scales=tuple(m.ROI_BOX_HEAD.POOLER_SCALES),
        aligned=bool(det.ALIGNED_ROI),
        legacy=legacy,
        fg_iou_thresh=m.ROI_HEADS.FG_IOU_THRESHOLD,
        bg_iou_thresh=m.ROI_HEADS.BG_IOU_THRESHOLD,
        batch_size_per_image=m.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        positive_fraction=m.ROI_HEADS.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(m.ROI_HEADS.BBOX_REG_WEIGHTS),
        score_thresh=m.ROI_HEADS.SCORE_THRESH,
        nms_thresh=m.ROI_HEADS.NMS,
        detections_per_img=m.ROI_HEADS.DETECTIONS_PER_IMG,
        post_nms_per_cls_topn=m.ROI_HEADS.POST_NMS_PER_CLS_TOPN,
        nms_filter_duplicates=m.ROI_HEADS.NMS_FILTER_DUPLICATES,
    )
    model = dict(
        pixel_mean=tuple(cfg.INPUT.PIXEL_MEAN),
        pixel_std=tuple(cfg.INPUT.PIXEL_STD),
        to_bgr255=cfg.INPUT.TO_BGR255,
        size_divisibility=cfg.DATALOADER.SIZE_DIVISIBILITY,
        channels_last=bool(det.CHANNELS_LAST),
    )
    return {"rpn": rpn, "box": box, "model": model}


def build_detector(cfg, num_classes: Optional[int] = None) -> FasterRCNNDetector:
    """Faster R-CNN from ``cfg``; ``num_classes`` (with background) defaults to
    ``MODEL.ROI_BOX_HEAD.NUM_CLASSES`` (151 for VG; pass the dataset's for SynthVG).

    Only local weights: the backbone's ``MODEL.BACKBONE.WEIGHTS``; a detector checkpoint is loaded
    separately with :func:`load_detector_checkpoint`.
    """
    kw = detector_kwargs_from_config(cfg, num_classes)
    if cfg.MODEL.BACKBONE.WEIGHTS and cfg.INPUT.TO_BGR255 and not cfg.MODEL.BACKBONE.CONV_BODY.startswith("timm:"):
        logger.info("INPUT.TO_BGR255 is True (SGB's BGR 0..255 input); torchvision ImageNet weights expect "
                    "TO_BGR255 False, PIXEL_MEAN [0.485, 0.456, 0.406], PIXEL_STD [0.229, 0.224, 0.225]")
    backbone = build_backbone(cfg)
    rpn = make_rpn(backbone.out_channels, **kw["rpn"])
    box = dict(kw["box"])
    roi_heads = make_box_heads(backbone.out_channels, box.pop("num_classes"), **box)
    return FasterRCNNDetector(backbone, rpn, roi_heads, **kw["model"])


def load_detector_checkpoint(model: nn.Module, path: str, prefix: str = "") -> Dict[str, List[str]]:
    """Load a detector checkpoint: sgg's own, or Scene-Graph-Benchmark's (maskrcnn_benchmark names).

    ``path`` is a file or a directory whose ``last_checkpoint`` names one (SGB's test command
    passes the training OUTPUT_DIR as ``MODEL.PRETRAINED_DETECTOR_CKPT``). The state dict is read
    from ``"model"`` (or a bare state dict; ``"optimizer"``, ``"scheduler"``, ``"iteration"`` are
    ignored) and ``module.`` is stripped. With ``prefix`` only keys under it are used (prefix
    removed), e.g. ``prefix="detector."``; without one, a whole sgg relation-model checkpoint
    (``detector.*`` keys only) is recognised and its detector taken.

    An SGB file (:func:`~.sgb_compat.is_sgb_checkpoint`) is converted with
    :func:`~.sgb_compat.sgb_to_sgg_state_dict`: anchor buffers are ignored, attribute / relation
    heads and unknown keys are skipped, and a warning lists the SGB_COMPAT config keys the model
    does not follow (see :mod:`.sgb_compat`).

    A tensor whose shape differs from the model's raises :class:`sgg.checkpoint.CheckpointError`
    naming the key(s) and both shapes. Returns ``{"loaded": [...], "missing": [...],
    "unexpected": [...], "skipped": [...], "format": "sgg" | "sgb"}`` (sgg key names, except
    ``skipped``/``unexpected`` which name the file's keys; logged).
    """
    from sgg.checkpoint import Checkpointer

    from .sgb_compat import format_report, is_sgb_checkpoint, sgb_convention_mismatches, sgb_to_sgg_state_dict

    if not os.path.exists(path):
        raise FileNotFoundError(
            f"detector checkpoint not found: '{path}'. Point MODEL.PRETRAINED_DETECTOR_CKPT at SGB's "
            f"pretrained_faster_rcnn/model_final.pth (read as is), a file of tools/convert_sgb_checkpoint.py, "
            f"or a detector trained with tools/detector_train_net.py (a file, or its OUTPUT_DIR).")
    path = Checkpointer(model).resolve(path)
    state = load_state_dict_file(path)
    if not prefix and not any(k.startswith(_DETECTOR_ROOTS) for k in state) \
            and any(k.startswith("detector.") for k in state):
        prefix = "detector."
        logger.info("'%s' is a whole-model checkpoint: loading its 'detector.*' tensors", path)
    if prefix:
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        if not state:
            raise KeyError(f"detector checkpoint '{path}' has no key starting with '{prefix}'")
    own = model.state_dict()
    if is_sgb_checkpoint(state):
        state, report = sgb_to_sgg_state_dict(state, own)
        logger.info("%s", format_report(report, f"SGB detector checkpoint '{path}'"))
        for fix in sgb_convention_mismatches(model):
            logger.warning("'%s' is an SGB (maskrcnn_benchmark) detector; for its numbers set %s", path, fix)
        load_model_state(model, state, source=f"SGB detector checkpoint '{path}'")
        return {"loaded": list(state), "missing": report["missing"], "unexpected": [],
                "skipped": report["skipped"], "format": "sgb"}
    missing, unexpected = load_model_state(model, state, source=f"detector checkpoint '{path}'")
    loaded = [k for k in state if k in own]
    logger.info("detector checkpoint '%s': %d tensors loaded, %d missing, %d unexpected", path, len(loaded),
                len(missing), len(unexpected))
    return {"loaded": loaded, "missing": missing, "unexpected": unexpected, "skipped": unexpected,
            "format": "sgg"}


@torch.no_grad()
def evaluate_detector(model: FasterRCNNDetector, data_loader, class_names: Sequence[str] | int,
                      max_images: int = -1) -> Dict[str, float]:
    """Box AP (SGB's COCO evaluation, ``AP50`` and ``AP``) of ``model`` on a test loader.

    Detections are mapped back to the original image; GT boxes come from the mapper's
    ``instances`` (mapped back the same way). Every rank runs its shard; rank 0 evaluates and the
    result is broadcast. ``max_images`` (> 0) stops early (quick validation).
    """
    from sgg.evaluation.detection import evaluate_detection
    from sgg.utils import comm

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
