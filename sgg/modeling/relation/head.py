"""The relation head shared by every predictor (SGB's ``ROIRelationHead``).

``RelationHead.forward(features, proposals, targets=None, relations=None)``:

* training: sample pairs and their predicate labels (:class:`RelationSampler`, under
  ``torch.no_grad``), object ROI features, union features of the sampled pairs, predictor, losses
  -> ``{"loss_rel", "loss_refine_obj", ...}``;
* eval: all ordered pairs, features, predictor, post-processing -> ``list[SceneGraph]`` in the
  proposals' (resized) frame. ``targets`` / ``relations`` are never read in eval mode, so SGDet
  inference runs without any ground truth.

The protocol ``mode`` ('predcls' | 'sgcls' | 'sgdet') is fixed at construction.

Inputs (the detector's contract): ``features`` an OrderedDict of FPN maps ('0'..'3', 'pool');
``proposals`` one :class:`~sgg.structures.Instances` per image with ``boxes`` and, depending on the
protocol, ``labels`` (PredCls: GT labels; SGCls training: GT labels; SGDet: detector labels),
``scores`` and ``logits`` (detector class logits ``[N, C+1]``, SGDet and, where the meta-arch runs
the detector's classifier on the GT boxes as SGB does, SGCls), optionally ``boxes_per_cls``;
``targets`` (training) with ``gt_boxes`` and ``gt_classes``; ``relations`` (training) one int64
``[M, 3]`` tensor (subject idx, object idx, predicate 1..P) per image, indexing the target boxes.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from sgg.protocol import check_mode
from sgg.structures import Instances, SceneGraph

from .features import ObjectFeatureExtractor, UnionFeatureExtractor
from .loss import RelationLoss
from .postprocess import postprocess_relations
from .sampling import RelationSampler

__all__ = ["RelationHead"]



class RelationHead(nn.Module):
    """Pair sampling + object/union features + predictor + loss / post-processing.

    Args:
        box_roi_pool: the detector's ROI pooler (torchvision ``MultiScaleRoIAlign``).
        box_head: the detector's box head (torchvision ``TwoMLPHead``). Two trainable deep copies
            are made, one for object features and one for union features (the detector's own
            modules are untouched), both starting from its fc6/fc7 weights as in SGB.
        predictor: a relation predictor (see :mod:`sgg.modeling.relation.predictors`).
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        sampler: pair sampling rules (default :class:`RelationSampler` with SGB's defaults).
        loss: loss module (default :class:`RelationLoss`).
        pool_all_levels, mask_frame, rect_size, union_chunk_size: union feature options
            (:class:`UnionFeatureExtractor`).
        in_channels: FPN channels (inferred from the box head's fc6 when None).
        later_nms_thresh: SGDet class-aware NMS IoU used when the predictor chooses no labels.
        rel_top_k: keep only the best k relations per image at test (None: all n(n-1) pairs,
            which the evaluator needs for the no-graph-constraint metrics).
        logit_adjustment: test-time debiasing of the predicate logits
            (:class:`~sgg.modeling.relation.debias.LogitAdjustment`; None = off).
        generator: default CPU ``torch.Generator`` for the sampling (None: global RNG).
    """

    def __init__(self, box_roi_pool: nn.Module, box_head: nn.Module, predictor: nn.Module, mode: str,
                 sampler: Optional[RelationSampler] = None, loss: Optional[nn.Module] = None,
                 pool_all_levels: bool = True, mask_frame: str = "image", rect_size: Optional[int] = None,
                 union_chunk_size: int = 4096, in_channels: Optional[int] = None,
                 later_nms_thresh: float = 0.5, rel_top_k: Optional[int] = None,
                 generator: Optional[torch.Generator] = None,
                 logit_adjustment: Optional[nn.Module] = None) -> None:
        super().__init__()
        check_mode(mode)
        self.mode = mode
        self.box_feature_extractor = ObjectFeatureExtractor(box_roi_pool, box_head)
        self.use_union_features = bool(getattr(predictor, "uses_union_features", True))
        if self.use_union_features:
            self.union_feature_extractor = UnionFeatureExtractor(
                box_roi_pool, box_head, in_channels=in_channels, pool_all_levels=pool_all_levels,
                rect_size=rect_size, mask_frame=mask_frame, chunk_size=union_chunk_size,
                separate_spatial=bool(getattr(predictor, "separate_spatial", False)))
        else:
            self.union_feature_extractor = None
        self.predictor = predictor
        self.sampler = sampler if sampler is not None else RelationSampler()
        self.loss_evaluator = loss if loss is not None else RelationLoss(refine_obj=mode != "predcls")
        self.later_nms_thresh = float(later_nms_thresh)
        self.rel_top_k = rel_top_k
        self.generator = generator
        # test-time debiasing of the predicate logits (None: off); see sgg.modeling.relation.debias
        self.logit_adjustment = logit_adjustment

    @classmethod
    def from_config(cls, cfg, box_roi_pool: nn.Module, box_head: nn.Module, predictor: nn.Module,
                    mode: str, predicate_counts: Optional[Sequence[float]] = None) -> "RelationHead":
        """``predicate_counts`` ``[P+1]``: train counts for ``LOGIT_ADJUSTMENT_TAU`` (test-time debiasing)."""
        from .debias import LogitAdjustment

        rh = cfg.MODEL.ROI_RELATION_HEAD
        tau = float(rh.LOGIT_ADJUSTMENT_TAU)
        if tau and predicate_counts is None:
            raise ValueError("MODEL.ROI_RELATION_HEAD.LOGIT_ADJUSTMENT_TAU needs the train predicate counts "
                             "(statistics['predicate_counts'] / the checkpoint's metadata)")
        return cls(
            box_roi_pool, box_head, predictor, mode, sampler=RelationSampler.from_config(cfg),
            loss=RelationLoss.from_config(cfg, mode), pool_all_levels=rh.POOLING_ALL_LEVELS,
            mask_frame=rh.RECT_MASK_FRAME, union_chunk_size=rh.UNION_CHUNK_SIZE,
            later_nms_thresh=cfg.TEST.RELATION.LATER_NMS_PREDICTION_THRES, rel_top_k=rh.TEST_REL_TOP_K or None,
            logit_adjustment=LogitAdjustment(predicate_counts, tau) if tau else None,
        )

    @torch.no_grad()
    def init_from_detector(self, box_head: nn.Module) -> None:
        """Copy the detector's box head weights (fc6/fc7) into the object and union branches, which
        start from them as in SGB; called by the load step after the detector's weights are read."""
        state = box_head.state_dict()
        self.box_feature_extractor.head.load_state_dict(state)
        if self.union_feature_extractor is not None:
            self.union_feature_extractor.head.load_state_dict(state)

    @property
    def out_channels(self) -> int:
        return self.box_feature_extractor.out_channels

    def forward(self, features: Dict[str, torch.Tensor], proposals: Sequence[Instances],
                targets: Optional[Sequence[Instances]] = None,
                relations: Optional[Sequence[torch.Tensor]] = None,
                generator: Optional[torch.Generator] = None
                ) -> Union[Dict[str, torch.Tensor], List[SceneGraph]]:
        """Training: dict of ``loss_*`` scalars. Eval: one :class:`SceneGraph` per image.

        ``generator`` overrides the head's default sampling generator for this call.
        """
        proposals = list(proposals)
        if self.training:
            if targets is None or relations is None:
                raise ValueError("RelationHead in training mode needs targets and relations")
            with torch.no_grad():
                rel_pairs, rel_labels, obj_targets = self.sampler(
                    proposals, targets, relations, self.mode,
                    generator=generator if generator is not None else self.generator)
            # teacher-forcing / PredCls labels: the object targets (GT labels with GT boxes)
            obj_labels = torch.cat(obj_targets) if proposals else None
            if self.mode == "predcls":
                obj_labels = torch.cat([p.labels.long() for p in proposals])
        else:
            rel_pairs = self.sampler.test_pairs(proposals, self.mode)
            rel_labels = obj_targets = None
            obj_labels = torch.cat([p.labels.long() for p in proposals]) if self.mode == "predcls" else None

        roi_features = self.box_feature_extractor(features, proposals)
        union_features = None
        if self.use_union_features:
            union_features = self.union_feature_extractor(features, proposals, rel_pairs)
        extra = {}
        if self.training and getattr(self.predictor, "uses_rel_labels", False):
            # predictors whose own losses need the sampled predicates get the loss's targets (HML's
            # stage 1 ignores fine-labelled pairs in those losses too)
            targets_of = getattr(self.loss_evaluator, "rel_targets", None)
            extra["rel_labels"] = rel_labels if targets_of is None else [targets_of(r) for r in rel_labels]
        out = self.predictor(roi_features, proposals, rel_pairs, union_features, obj_labels=obj_labels, **extra)

        if not self.training:
            rel_logits = out.rel_logits
            if self.logit_adjustment is not None:
                rel_logits = [self.logit_adjustment(r) for r in rel_logits]
            return postprocess_relations(proposals, out.obj_logits, rel_logits, rel_pairs, self.mode,
                                         obj_labels=out.obj_labels, later_nms_thresh=self.later_nms_thresh,
                                         top_k=self.rel_top_k)

        losses = self.loss_evaluator(out.rel_logits, rel_labels, out.obj_logits,
                                     obj_targets if self.mode != "predcls" else None)
        if out.extra_losses:
            losses.update(out.extra_losses)
        return losses
