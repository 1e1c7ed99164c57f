"""Faster R-CNN detector (torchvision parts, SGB conventions) and its config keys."""
from .anchors import VG_ANCHOR_SIZES, VG_ANCHOR_STRIDES, VG_ASPECT_RATIOS, FPNAnchorGenerator, legacy_cell_anchors
from .build import (
    build_detector,
    detector_kwargs_from_config,
    evaluate_detector,
    load_detector_checkpoint,
)
from .faster_rcnn import (
    RPN,
    BoxHeads,
    FasterRCNNDetector,
    LegacyBoxCoder,
    LevelRoIAlign,
    clip_boxes,
    detector_postprocess,
    make_box_coder,
    make_box_heads,
    make_rpn,
    nms_by_group,
)
from .sgb_compat import is_sgb_checkpoint, sgb_to_sgg_state_dict, sgg_to_sgb_state_dict

__all__ = [
    "RPN",
    "VG_ANCHOR_SIZES",
    "VG_ANCHOR_STRIDES",
    "VG_ASPECT_RATIOS",
    "BoxHeads",
    "FPNAnchorGenerator",
    "FasterRCNNDetector",
    "LegacyBoxCoder",
    "LevelRoIAlign",
    "build_detector",
    "clip_boxes",
    "detector_kwargs_from_config",
    "detector_postprocess",
    "evaluate_detector",
    "is_sgb_checkpoint",
    "legacy_cell_anchors",
    "load_detector_checkpoint",
    "make_box_coder",
    "make_box_heads",
    "make_rpn",
    "nms_by_group",
    "sgb_to_sgg_state_dict",
    "sgg_to_sgb_state_dict",
]
