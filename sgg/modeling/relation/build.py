"""Config -> :class:`RelationHead` (the only place the relation head reads the config)."""
from __future__ import annotations

from typing import Any, Mapping, Optional

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode as CN


from .features import box_head_out_dim
from .head import RelationHead
from .loss import RelationLoss
from .predictors import RELATION_PREDICTOR_REGISTRY
from .sampling import RelationSampler

__all__ = ["build_relation_head"]




def _pred_dist(statistics: Optional[Mapping[str, Any]]):
    if not statistics or statistics.get("pred_dist") is None:
        return None
    pd = statistics["pred_dist"]
    return pd if isinstance(pd, torch.Tensor) else np.asarray(pd, dtype=np.float32)


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
    obj_classes = None
    if statistics and statistics.get("obj_classes") is not None:
        obj_classes = list(statistics["obj_classes"])
        if len(obj_classes) != num_obj_classes:
            raise ValueError(f"statistics list {len(obj_classes)} object classes, the model has {num_obj_classes}")
    cache_dir = cfg.OUTPUT_DIR if rh.WORD_VECTOR_CACHE else None
    predictor_cls = RELATION_PREDICTOR_REGISTRY.get(rh.PREDICTOR)
    predictor = predictor_cls.from_config(
        cfg, in_channels=in_channels, union_dim=in_channels, num_obj_classes=num_obj_classes,
        num_rel_classes=num_rel_classes, mode=mode, obj_classes=obj_classes, pred_dist=_pred_dist(statistics),
        word_vector_cache_dir=cache_dir,
    )
    sampler = RelationSampler(
        batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE, positive_fraction=rh.POSITIVE_FRACTION,
        num_sample_per_gt_rel=rh.NUM_SAMPLE_PER_GT_REL, fg_iou_threshold=cfg.MODEL.ROI_HEADS.FG_IOU_THRESHOLD,
        require_overlap=rh.REQUIRE_BOX_OVERLAP, test_require_overlap=cfg.TEST.RELATION.REQUIRE_OVERLAP,
        gt_rel_sampling=rh.SGDET_GT_REL_SAMPLING, match_labels=rh.SGDET_MATCH_LABELS,
    )
    loss = RelationLoss(label_smoothing=0.01 if rh.LABEL_SMOOTHING_LOSS else 0.0, refine_obj=mode != "predcls")
    return RelationHead(
        detector_box_roi_pool, detector_box_head, predictor, mode, sampler=sampler, loss=loss,
        pool_all_levels=rh.POOLING_ALL_LEVELS, mask_frame=rh.RECT_MASK_FRAME,
        union_chunk_size=rh.UNION_CHUNK_SIZE, later_nms_thresh=cfg.TEST.RELATION.LATER_NMS_PREDICTION_THRES,
        rel_top_k=rh.TEST_REL_TOP_K or None,
    )
