"""Build a whole SGG model from a config."""
from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from sgg.config import protocol_from_config
from sgg.registry import Registry

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")


@META_ARCH_REGISTRY.register(name="GeneralizedRCNN")  # SGB's name for the two-stage model
def build_two_stage(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int):
    """Detector (+ MODEL.PRETRAINED_DETECTOR_CKPT) and the relation head initialised from its box head."""
    from sgg.modeling.detector import build_detector, load_detector_checkpoint
    from sgg.modeling.relation import build_relation_head

    from .two_stage import TwoStageSGG

    mode = protocol_from_config(cfg)
    detector = build_detector(cfg, num_classes=num_obj_classes)
    if cfg.MODEL.PRETRAINED_DETECTOR_CKPT:
        report = load_detector_checkpoint(detector, cfg.MODEL.PRETRAINED_DETECTOR_CKPT)
        logger.info("detector checkpoint %s: %d tensors loaded", cfg.MODEL.PRETRAINED_DETECTOR_CKPT,
                    len(report.get("loaded", [])))
    else:
        logger.warning("MODEL.PRETRAINED_DETECTOR_CKPT is empty: the frozen detector keeps its initial "
                       "weights. Train one with tools/detector_train_net.py and pass its model_final.pth.")
    head = build_relation_head(cfg, detector.box_roi_pool, detector.box_head, statistics,
                               num_obj_classes, num_rel_classes, mode)
    return TwoStageSGG(detector, head, mode)


@META_ARCH_REGISTRY.register(name="OneStageSGG")
def build_one_stage(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int):
    """CoRF-style composite-field model of ``MODEL.ONESTAGE`` (statistics unused)."""
    from .one_stage import OneStageSGG, build_composite_field_net, onestage_kwargs_from_config

    mode = protocol_from_config(cfg)
    net = build_composite_field_net(cfg, num_obj_classes - 1, num_rel_classes - 1)
    return OneStageSGG(net, mode, **onestage_kwargs_from_config(cfg))


def build_sgg_model(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int):
    """The model of MODEL.META_ARCHITECTURE (class counts include background)."""
    builder = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    return builder(cfg, statistics, num_obj_classes, num_rel_classes)
