"""Stage 2 of HML as a :class:`~sgg.distill.base.Distillation`: :class:`HMLLoss`, the trainer's
``extra_losses`` term (prediction distillation from the frozen stage-1 parent + parameter
anchoring; the class-balanced CE is installed as the head's own loss).
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn
from yacs.config import CfgNode as CN

from sgg.checkpoint import unwrap_model
from sgg.modeling.relation.head import RelationHead

from ..base import Distillation
from .fisher import fisher_weights
from .heads import RelationHeadTap, build_parent_head, find_relation_head, parent_logits_on_pairs
from .losses import HMLRelationLoss, ParameterAnchoring, PredictionDistillation, class_balanced_weights
from .stage_files import Stage1State
from .stages import validate_hml_config

__all__ = ["HMLLoss"]


class HMLLoss(Distillation):
    """Stage 2 of HML as a trainer ``extra_losses`` callable ``fn(model, batch, outputs)``.

    The three terms of the stage-2 loss, each logged by the trainer:

    * ``loss_rel``: the class-balanced cross-entropy over all predicates. It is the model's own
      term: :meth:`attach` installs an :class:`HMLRelationLoss` with ``class_weights`` as the
      relation head's loss (the head sees the sampled labels; no second CE is computed);
    * ``loss_distill``: ``distill_weight *`` :class:`PredictionDistillation` between the child's
      logits (recorded by a :class:`RelationHeadTap` during the model's forward) and the parent's
      logits on the same pairs (:func:`parent_logits_on_pairs`);
    * ``loss_anchor``: :class:`ParameterAnchoring` of the model's parameters.

    ``loss_refine_obj`` (SGCls/SGDet) stays as the head computes it.

    Args:
        parent_head: the frozen stage-1 relation head (:func:`build_parent_head`).
        distillation, anchoring: the two memory terms.
        class_weights: float ``[P+1]`` for the head's CE (None: unweighted).
        distill_weight: MODEL.HML.DISTILL_WEIGHT (0 skips the parent's forward).
    """

    tapped = "the relation head"
    tap: Optional[RelationHeadTap]

    def __init__(self, parent_head: RelationHead, distillation: PredictionDistillation,
                 anchoring: Optional[ParameterAnchoring], class_weights: Optional[torch.Tensor] = None,
                 distill_weight: float = 1.0) -> None:
        super().__init__()
        self.parent_head = parent_head
        self.distillation = distillation
        self.anchoring = anchoring
        self.class_weights = class_weights
        self.distill_weight = float(distill_weight)

    @classmethod
    def from_config(cls, cfg: CN, model: nn.Module, stage1: Stage1State, predicate_counts: Any,
                    attach: bool = True) -> "HMLLoss":
        """Build stage 2 from the config and the stage-1 memory: parent head (on the model's
        device), class-balanced weights (MODEL.HML.CLASS_BALANCE_BETA over ``predicate_counts``),
        distillation (T, confidence, the hierarchy's stage-1 classes), anchoring
        (θ*, :func:`fisher_weights` of F, SOLVER.LAMBDA_FOR_PARAM, SOLVER.DISTILL_TYPE); then
        :meth:`attach` to ``model`` unless ``attach`` is False. Does not touch the model's weights
        (:func:`init_from_stage1` does)."""
        validate_hml_config(cfg)
        device = next(unwrap_model(model).parameters()).device
        hier = stage1.hierarchy
        _, head = find_relation_head(model)
        num_rel = getattr(head.predictor, "num_rel_cls", hier.num_classes)
        if hier.num_classes != num_rel:
            raise ValueError(f"the stage-1 hierarchy has {hier.num_classes} predicate classes, the model {num_rel}")
        parent = build_parent_head(model, stage1.parent_state_dict).to(device)
        weights = class_balanced_weights(predicate_counts, cfg.MODEL.HML.CLASS_BALANCE_BETA)
        conf = None
        if cfg.MODEL.USE_CONFIDENCE:
            if stage1.confidence is None:
                raise ValueError("MODEL.USE_CONFIDENCE True, but the stage-1 file holds no per-predicate "
                                 "confidence (stage 1 ran without validation)")
            conf = stage1.confidence
        distill = PredictionDistillation(cfg.MODEL.DISTILL_TEMPERATURE, cfg.MODEL.USE_CONFIDENCE, conf,
                                         hier.stage_classes(1)).to(device)
        anchoring = ParameterAnchoring(stage1.theta_star, fisher_weights(stage1.fisher),
                                       cfg.SOLVER.LAMBDA_FOR_PARAM, cfg.SOLVER.DISTILL_TYPE).to(device)
        out = cls(parent, distill, anchoring, class_weights=weights, distill_weight=cfg.MODEL.HML.DISTILL_WEIGHT)
        if attach:
            out.attach(model)
        return out

    def make_tap(self, model: nn.Module) -> RelationHeadTap:
        """Install the weighted CE as the model's relation-head loss and the tap that records the
        head's pairs and logits (:meth:`attach` calls it; :meth:`detach` removes the tap, the
        head keeps its weighted loss). Attach before building the trainer (and its EMA / DDP
        wrapper)."""
        _, head = find_relation_head(model)
        head.loss_evaluator = HMLRelationLoss.like(head.loss_evaluator, class_weights=self.class_weights)
        return RelationHeadTap(head)

    def __call__(self, model: nn.Module, batch: Any = None, outputs: Any = None) -> Dict[str, torch.Tensor]:
        rec = self.pop_record()
        child = torch.cat(rec.rel_logits, dim=0)
        if self.distill_weight > 0:
            parent = parent_logits_on_pairs(self.parent_head, rec.features, rec.proposals, rec.rel_pairs)
            loss_distill = self.distill_weight * self.distillation(child, torch.cat(parent, dim=0))
        else:
            loss_distill = child.sum() * 0.0
        if self.anchoring is not None and self.anchoring.lam > 0:
            loss_anchor = self.anchoring(model)
        else:
            loss_anchor = child.new_zeros((), dtype=torch.float32)
        return {"loss_distill": loss_distill, "loss_anchor": loss_anchor}
