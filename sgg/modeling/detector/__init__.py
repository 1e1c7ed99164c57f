"""Faster R-CNN detector (torchvision parts, SGB conventions)."""
from .anchors import VG_ANCHOR_SIZES, VG_ANCHOR_STRIDES, VG_ASPECT_RATIOS, FPNAnchorGenerator, legacy_cell_anchors
from .build import build_detector
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
    "detector_postprocess",
    "legacy_cell_anchors",
    "make_box_coder",
    "make_box_heads",
    "make_rpn",
    "nms_by_group",
]
