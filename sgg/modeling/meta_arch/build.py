"""Build a whole SGG model from a config."""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from sgg.config import protocol_from_config
from sgg.registry import Registry

logger = logging.getLogger(__name__)

META_ARCH_REGISTRY = Registry("META_ARCH")


@META_ARCH_REGISTRY.register(name="GeneralizedRCNN")  # SGB's name for the two-stage model
def build_two_stage(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int):
    """Detector and the relation head whose object / union branches copy its box head (the load
    step, :func:`sgg.modeling.pretrained.load_pretrained`, reads MODEL.PRETRAINED_DETECTOR_CKPT)."""
    from sgg.modeling.detector import build_detector
    from sgg.modeling.relation import build_relation_head

    from .two_stage import TwoStageSGG

    mode = protocol_from_config(cfg)
    detector = build_detector(cfg, num_classes=num_obj_classes)
    head = build_relation_head(cfg, detector.box_roi_pool, detector.box_head, statistics,
                               num_obj_classes, num_rel_classes, mode)
    return TwoStageSGG(detector, head, mode)


@META_ARCH_REGISTRY.register(name="OneStageSGG")
def build_one_stage(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int):
    """CoRF-style composite-field model of ``MODEL.ONESTAGE`` (statistics unused)."""
    from .one_stage import OneStageSGG

    return OneStageSGG.from_config(cfg, num_obj_classes, num_rel_classes)


def _names(given: Optional[Sequence[str]], count: int, key: str, count_key: str, generic: str) -> List[str]:
    """Plain ``str`` names (checkpoints load with ``weights_only``; statistics hold numpy strings)."""
    from sgg.modeling.relation.predictors.common import class_names

    return [str(n) for n in class_names(given, count, f"statistics {key}", count_key, generic)]


def model_metadata(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int,
                   num_rel_classes: int) -> Dict[str, Any]:
    """What inference needs to know about a model besides its weights and config (kept in every
    checkpoint as ``"metadata"``): class and predicate names (background first; generic names
    when ``statistics`` has none), the protocol, the meta-architecture and the train predicate
    counts (the head -> tail order of the per-predicate report). Plain Python values."""
    stats = statistics or {}
    counts = stats.get("predicate_counts")
    return {
        "class_names": _names(stats.get("obj_classes"), num_obj_classes, "obj_classes", "num_obj_classes", "class"),
        "predicate_names": _names(stats.get("rel_classes"), num_rel_classes, "rel_classes", "num_rel_classes",
                                  "predicate"),
        "protocol": protocol_from_config(cfg),
        "meta_architecture": cfg.MODEL.META_ARCHITECTURE,
        "predicate_counts": None if counts is None else [int(c) for c in np.asarray(counts).reshape(-1)],
    }


def build_sgg_model(cfg, statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int):
    """The model of MODEL.META_ARCHITECTURE (class counts include background), randomly initialised:
    nothing is read from disk (:func:`sgg.modeling.pretrained.load_pretrained` is the load step).

    ``statistics``: plain metadata (``obj_classes`` / ``rel_classes`` names, ``pred_dist`` the
    frequency-bias table ``[C+1, C+1, P+1]``, ``predicate_counts``), see
    :mod:`sgg.data.statistics`; None = generic names and a zero frequency bias. The model gets a
    ``metadata`` attribute (:func:`model_metadata`) that checkpoints carry."""
    builder = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)
    model = builder(cfg, statistics, num_obj_classes, num_rel_classes)
    model.metadata = model_metadata(cfg, statistics, num_obj_classes, num_rel_classes)
    return model
