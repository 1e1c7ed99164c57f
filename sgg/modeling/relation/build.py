"""Config -> :class:`RelationHead`: the predictor of ``MODEL.ROI_RELATION_HEAD.PREDICTOR`` (its
``from_config``) inside the head (``RelationHead.from_config``). Reads no file."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN

from .features import box_head_out_dim
from .head import RelationHead
from .predictors import RELATION_PREDICTOR_REGISTRY

__all__ = ["build_relation_head"]




def _pred_dist(statistics: Optional[Mapping[str, Any]]):
    if not statistics or statistics.get("pred_dist") is None:
        return None
    pd = statistics["pred_dist"]
    return pd if isinstance(pd, torch.Tensor) else np.asarray(pd, dtype=np.float32)


def _names(statistics: Optional[Mapping[str, Any]], key: str, count: int) -> Optional[list]:
    if not statistics or statistics.get(key) is None:
        return None
    names = list(statistics[key])
    if len(names) != count:
        raise ValueError(f"statistics list {len(names)} {key}, the model has {count}")
    return names


def build_relation_head(cfg: CN, detector_box_roi_pool: nn.Module, detector_box_head: nn.Module,
                        statistics: Optional[Mapping[str, Any]], num_obj_classes: int, num_rel_classes: int,
                        mode: str) -> RelationHead:
    """Build the relation head of ``MODEL.ROI_RELATION_HEAD.PREDICTOR``.

    Args:
        detector_box_roi_pool / detector_box_head: the detector's modules; the head deep-copies
            them (object and union branches) so they start from the detector's weights.
        statistics: train statistics (``pred_dist`` float ``[C+1, C+1, P+1]``, ``obj_classes``
            names), see :mod:`sgg.data.statistics`; None = zero frequency bias and generic names.
        num_obj_classes / num_rel_classes: C+1 / P+1.
        mode: 'predcls' | 'sgcls' | 'sgdet' (``sgg.config.protocol_from_config``).
    """
    rh = cfg.MODEL.ROI_RELATION_HEAD
    in_channels = box_head_out_dim(detector_box_head)
    obj_classes = _names(statistics, "obj_classes", num_obj_classes)
    predictor_cls = RELATION_PREDICTOR_REGISTRY.get(rh.PREDICTOR)
    predictor = predictor_cls.from_config(
        cfg, in_channels=in_channels, union_dim=in_channels, num_obj_classes=num_obj_classes,
        num_rel_classes=num_rel_classes, mode=mode, obj_classes=obj_classes, pred_dist=_pred_dist(statistics),
        rel_classes=_names(statistics, "rel_classes", num_rel_classes),
    )
    counts = statistics.get("predicate_counts") if statistics else None
    return RelationHead.from_config(cfg, detector_box_roi_pool, detector_box_head, predictor, mode,
                                    predicate_counts=counts)
