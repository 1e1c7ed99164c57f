"""Relation head losses (SGB's ``RelationLossComputation`` without the attribute branch)."""
from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["RelationLoss"]


class RelationLoss(nn.Module):
    """``loss_rel``: cross-entropy over P+1 predicates (bg included) of all sampled pairs of the
    batch; ``loss_refine_obj``: cross-entropy of the refined object logits against the object
    targets (SGCls: GT labels; SGDet: matched GT label or 0). Both are means over the batch's
    concatenated rows, as in SGB. PredCls refines nothing: ``loss_refine_obj`` is a constant 0
    (SGB's one-hot +-1000 logits give exactly 0 there too).

    ``label_smoothing`` (``LABEL_SMOOTHING_LOSS`` -> 0.01) equals SGB's
    ``Label_Smoothing_Regression(e=0.01)``: target ``(1 - e) * onehot + e / K``.
    """

    def __init__(self, label_smoothing: float = 0.0, refine_obj: bool = True) -> None:
        super().__init__()
        self.label_smoothing = float(label_smoothing)
        self.refine_obj = bool(refine_obj)

    @classmethod
    def from_config(cls, cfg, mode: str) -> "RelationLoss":
        """SGB's ``LABEL_SMOOTHING_LOSS`` (epsilon 0.01); the object refinement loss outside PredCls."""
        return cls(label_smoothing=0.01 if cfg.MODEL.ROI_RELATION_HEAD.LABEL_SMOOTHING_LOSS else 0.0,
                   refine_obj=mode != "predcls")

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if logits.shape[0] == 0:
            # an empty batch: keep the graph (zero gradients) instead of a NaN mean
            return logits.sum() * 0.0
        return F.cross_entropy(logits.float(), labels.long(), label_smoothing=self.label_smoothing)

    def rel_targets(self, labels: torch.Tensor) -> torch.Tensor:
        """The predicate targets this loss trains on for sampled ``labels`` (0..P): the labels
        themselves here; a subclass may map them (HML stage 1: fine -> ignored, a negative index).
        The head gives predictors with label-dependent losses of their own (``uses_rel_labels``)
        these targets, so every loss of a stage sees the same labels."""
        return labels.long()

    def rel_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits [M, P+1]``, ``labels [M]`` (0..P) -> scalar (subclasses change the targets /
        weights here, e.g. HML's coarse targets and class-balanced weights)."""
        return self._ce(logits, labels.to(logits.device))

    def forward(self, rel_logits: Sequence[torch.Tensor], rel_labels: Sequence[torch.Tensor],
                obj_logits: Optional[Sequence[torch.Tensor]] = None,
                obj_targets: Optional[Sequence[torch.Tensor]] = None) -> Dict[str, torch.Tensor]:
        """Per-image lists: rel_logits ``[M_i, P+1]``, rel_labels ``[M_i]``, obj_logits
        ``[N_i, C+1]``, obj_targets ``[N_i]`` -> ``{"loss_rel", "loss_refine_obj"}`` scalars."""
        rl = torch.cat(list(rel_logits), dim=0)
        loss_rel = self.rel_loss(rl, torch.cat(list(rel_labels), dim=0))
        if self.refine_obj and obj_logits is not None and obj_targets is not None:
            ol = torch.cat(list(obj_logits), dim=0)
            loss_obj = self._ce(ol, torch.cat(list(obj_targets), dim=0).to(ol.device))
        else:
            loss_obj = loss_rel.new_zeros(())
        return {"loss_rel": loss_rel, "loss_refine_obj": loss_obj}
