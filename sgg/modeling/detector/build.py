"""Config -> detector (reads no file: detector checkpoints, sgg's and SGB's, are read by the load
step, :func:`sgg.modeling.pretrained.load_detector_checkpoint`).

The detector's keys (``MODEL.DETECTOR.*``, ``MODEL.BACKBONE.TIMM_*``) are declared and documented in
:mod:`sgg.config.defaults`. SGB checkpoints want ``MODEL.DETECTOR.FROZEN_BN_EPS 0.0
MODEL.DETECTOR.LEGACY_BOX_CODING True MODEL.DETECTOR.ALIGNED_ROI False`` with SGB's ``INPUT``
defaults (BGR 0..255, mean subtracted) (the full list of keys is the SGB_COMPAT note of :mod:`sgg.checkpoint.sgb`).
"""
from __future__ import annotations

import logging
from typing import Dict, Optional

from sgg.modeling.backbone import build_backbone

from .faster_rcnn import FasterRCNNDetector, make_box_heads, make_rpn

logger = logging.getLogger(__name__)





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

    Random init; backbone weights (``MODEL.BACKBONE.WEIGHTS``) and detector checkpoints are read by
    the load step (:mod:`sgg.modeling.pretrained`).
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
