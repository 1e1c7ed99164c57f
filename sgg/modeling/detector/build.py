"""Config -> detector (:meth:`FasterRCNNDetector.from_config`; reads no file: detector
checkpoints, sgg's and SGB's, are read by the load step,
:func:`sgg.modeling.pretrained.load_detector_checkpoint`).

The detector's keys (``MODEL.DETECTOR.*``, ``MODEL.BACKBONE.TIMM_*``) are declared and documented in
:mod:`sgg.config.defaults`. SGB checkpoints want ``MODEL.DETECTOR.FROZEN_BN_EPS 0.0
MODEL.DETECTOR.LEGACY_BOX_CODING True MODEL.DETECTOR.ALIGNED_ROI False`` with SGB's ``INPUT``
defaults (BGR 0..255, mean subtracted); the full list of keys is the SGB_COMPAT note of
:mod:`sgg.checkpoint.sgb`.
"""
from __future__ import annotations

from typing import Optional

from .faster_rcnn import FasterRCNNDetector

__all__ = ["build_detector"]


def build_detector(cfg, num_classes: Optional[int] = None) -> FasterRCNNDetector:
    """Faster R-CNN from ``cfg``; ``num_classes`` (with background) defaults to
    ``MODEL.ROI_BOX_HEAD.NUM_CLASSES`` (151 for VG; pass the dataset's for SynthVG).

    Random init; backbone weights (``MODEL.BACKBONE.WEIGHTS``) and detector checkpoints are read by
    the load step (:mod:`sgg.modeling.pretrained`).
    """
    return FasterRCNNDetector.from_config(cfg, num_classes)
