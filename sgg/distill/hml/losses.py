"""The HML loss terms (plain tensors and modules, no cfg inside):

* :func:`class_balanced_weights` (Cui et al. 2019) and :class:`HMLRelationLoss`, the relation
  head's loss with a stage-1 target map (stage 1) and/or class weights (stage 2);
* :class:`ParameterAnchoring`, model reconstruction: ``λ · mean(w ⊙ (θ* − θ)²)`` (``l2``) or
  ``λ · mean(w ⊙ |θ* − θ|)`` (``l1``);
* :class:`PredictionDistillation`, concept reconstruction: ``KL(parent ‖ child) · T²`` over the
  stage-1 classes.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgg.checkpoint import unwrap_model
from sgg.modeling.relation.loss import RelationLoss

from .hierarchy import IGNORE_INDEX

__all__ = [
    "DISTILL_TYPES",
    "HMLRelationLoss",
    "ParameterAnchoring",
    "PredictionDistillation",
    "class_balanced_weights",
]

#: values of SOLVER.DISTILL_TYPE: the penalty of :class:`ParameterAnchoring`
DISTILL_TYPES = ("l2", "l1")


# ---------------------------------------------------------------------------------------------
# Class-balanced weights and the head's loss
# ---------------------------------------------------------------------------------------------
def class_balanced_weights(counts: Union[Sequence[float], np.ndarray, torch.Tensor], beta: float,
                           background_count: Optional[float] = None) -> torch.Tensor:
    """Class-balanced weights (Cui et al., CVPR 2019): ``w_c ∝ 1 / E_c`` with the effective number
    of samples ``E_c = (1 - β^{n_c}) / (1 - β)``, normalised so that ``sum(w) = P + 1`` (the
    number of classes, as in the paper).

    Args:
        counts: ``[P+1]`` samples per class; index 0 is background (``statistics
            ["predicate_counts"]`` holds 0 there).
        beta: β in [0, 1) (0: all weights 1; β → 1: inverse frequency).
        background_count: overrides ``counts[0]``.

    Background: when its count is unknown (<= 0), it is treated as a class with unboundedly many
    samples, ``E_0 = 1 / (1 - β)`` (the limit of ``E`` for ``n → ∞``; there are always more
    background pairs than pairs of any predicate), i.e. it gets the weight of the most frequent
    (saturated) predicates. A foreground class with 0 samples counts as 1 sample (it is never a
    target, so its weight only enters the normalisation).

    Returns float32 ``[P+1]``.
    """
    if not 0.0 <= beta < 1.0:
        raise ValueError(f"beta must be in [0, 1), got {beta}")
    n = torch.as_tensor(np.asarray(torch.as_tensor(counts).cpu().numpy(), dtype=np.float64)).reshape(-1).clone()
    if background_count is not None:
        n[0] = float(background_count)
    eff = (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n.clamp(min=1.0))) / (1.0 - beta)
    if n[0] <= 0:
        eff[0] = 1.0 / (1.0 - beta)
    w = 1.0 / eff
    w = w / w.sum() * n.numel()
    return w.float()


class HMLRelationLoss(RelationLoss):
    """The relation head's loss for the HML stages (drop-in for :class:`RelationLoss`).

    ``loss_rel``: cross-entropy of the predicate logits, where the labels first go through
    ``target_map`` (int64 ``[P+1]``, e.g. :meth:`PredicateHierarchy.stage1_target_map`: fine ->
    :data:`IGNORE_INDEX`, stage 1) and rows are weighted by ``class_weights`` (float ``[P+1]``, e.g.
    :func:`class_balanced_weights`, stage 2). The reduction is PyTorch's: the weighted mean
    ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over the non-ignored rows (so the loss scale matches the
    unweighted loss while rare classes count more); a batch whose rows are all ignored gives a 0
    that keeps the graph. ``loss_refine_obj`` is :class:`RelationLoss`'s, unchanged.

    The weights and map are non-persistent buffers: checkpoints of the model stay loadable
    without HML.
    """

    def __init__(self, label_smoothing: float = 0.0, refine_obj: bool = True,
                 class_weights: Optional[torch.Tensor] = None, target_map: Optional[torch.Tensor] = None) -> None:
        super().__init__(label_smoothing=label_smoothing, refine_obj=refine_obj)
        self.register_buffer("class_weights", None if class_weights is None
                             else torch.as_tensor(class_weights, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("target_map", None if target_map is None
                             else torch.as_tensor(target_map, dtype=torch.long).clone(), persistent=False)

    @classmethod
    def like(cls, loss: nn.Module, **kwargs: Any) -> "HMLRelationLoss":
        """Same label smoothing / refine_obj as an existing head loss."""
        return cls(label_smoothing=getattr(loss, "label_smoothing", 0.0), refine_obj=getattr(loss, "refine_obj", True),
                   **kwargs)

    def rel_targets(self, labels: torch.Tensor) -> torch.Tensor:
        labels = labels.long()
        if self.target_map is None:
            return labels
        m = self.target_map.to(labels.device)
        return torch.where(labels >= 0, m[labels.clamp(min=0)], labels)

    def rel_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """``logits`` ``[M, P+1]``, ``labels`` ``[M]`` (0..P) -> scalar."""
        targets = self.rel_targets(labels.to(logits.device))
        if logits.shape[0] == 0 or not bool((targets != IGNORE_INDEX).any()):
            return logits.sum() * 0.0
        w = self.class_weights.to(logits.device) if self.class_weights is not None else None
        return F.cross_entropy(logits.float(), targets, weight=w, ignore_index=IGNORE_INDEX,
                               label_smoothing=self.label_smoothing)


# ---------------------------------------------------------------------------------------------
# Parameter anchoring
# ---------------------------------------------------------------------------------------------
class ParameterAnchoring:
    """Model reconstruction: ``lam * mean(w ⊙ (θ* − θ)²)`` (``kind="l2"``) or
    ``lam * mean(w ⊙ |θ* − θ|)`` (``"l1"``), the mean over all anchored entries of all tensors.

    Args:
        theta_star: ``{parameter name: tensor}`` (names of ``model.named_parameters()``).
        weights: same keys and shapes (e.g. :func:`fisher_weights`); None = all 1.
        lam: λ (SOLVER.LAMBDA_FOR_PARAM). kind: SOLVER.DISTILL_TYPE.

    Call with the model (parameters looked up by name, DDP unwrapped) or with a
    ``{name: parameter}`` mapping. Gradient: ``lam * 2 w (θ − θ*) / n`` (l2),
    ``lam * w * sign(θ − θ*) / n`` (l1), ``n`` = number of anchored entries. Computed in float32.
    """

    def __init__(self, theta_star: Mapping[str, torch.Tensor], weights: Optional[Mapping[str, torch.Tensor]] = None,
                 lam: float = 1.0, kind: str = "l2") -> None:
        if kind not in DISTILL_TYPES:
            raise ValueError(f"kind (SOLVER.DISTILL_TYPE) must be one of {DISTILL_TYPES}, got {kind!r}")
        if not theta_star:
            raise ValueError("ParameterAnchoring needs at least one anchored tensor")
        self.names = list(theta_star)
        self.theta_star = {n: theta_star[n].detach().float() for n in self.names}
        if weights is None:
            self.weights = {n: torch.ones_like(t) for n, t in self.theta_star.items()}
        else:
            missing = [n for n in self.names if n not in weights]
            if missing:
                raise KeyError(f"anchoring weights miss {missing[:5]}")
            self.weights = {n: weights[n].detach().float() for n in self.names}
            bad = [n for n in self.names if self.weights[n].shape != self.theta_star[n].shape]
            if bad:
                raise ValueError(f"anchoring weights and θ* differ in shape for {bad[:5]}")
        self.lam = float(lam)
        self.kind = kind
        self.numel = sum(t.numel() for t in self.theta_star.values())
        self._model_ref: Optional[int] = None
        self._params: Optional[List[torch.Tensor]] = None

    def to(self, device: Union[str, torch.device]) -> "ParameterAnchoring":
        self.theta_star = {n: t.to(device) for n, t in self.theta_star.items()}
        self.weights = {n: t.to(device) for n, t in self.weights.items()}
        return self

    def _resolve(self, model_or_params: Union[nn.Module, Mapping[str, torch.Tensor]]) -> List[torch.Tensor]:
        if isinstance(model_or_params, Mapping):
            src = model_or_params
        else:
            model = unwrap_model(model_or_params)
            if self._params is not None and self._model_ref == id(model):
                return self._params
            src = dict(model.named_parameters())
        missing = [n for n in self.names if n not in src]
        if missing:
            raise KeyError(f"the model has no parameters {missing[:5]} that θ* anchors "
                           f"({len(missing)} missing): was the stage-1 model a different predictor?")
        params = [src[n] for n in self.names]
        bad = [n for n, p in zip(self.names, params) if p.shape != self.theta_star[n].shape]
        if bad:
            raise ValueError(f"parameter shapes differ from θ* for {bad[:5]}")
        if not isinstance(model_or_params, Mapping):
            self._model_ref, self._params = id(unwrap_model(model_or_params)), params
        return params

    def __call__(self, model_or_params: Union[nn.Module, Mapping[str, torch.Tensor]]) -> torch.Tensor:
        params = self._resolve(model_or_params)
        dev = params[0].device
        if next(iter(self.theta_star.values())).device != dev:
            self.to(dev)
        total = params[0].new_zeros((), dtype=torch.float32)
        for n, p in zip(self.names, params):
            d = self.theta_star[n] - p.float()
            d = d * d if self.kind == "l2" else d.abs()
            total = total + (self.weights[n] * d).sum()
        return self.lam * total / self.numel


# ---------------------------------------------------------------------------------------------
# Prediction distillation
# ---------------------------------------------------------------------------------------------
class PredictionDistillation(nn.Module):
    """Concept reconstruction: ``T² · mean_rows sum_{c ∈ parent classes} c_w · p_c (log p_c − log q_c)``
    with ``p = softmax(parent_logits[:, classes] / T)``, ``q = softmax(child_logits[:, classes] / T)``,
    i.e. ``KL(parent ‖ child) · T²`` over the classes the parent was trained on (stage-1 coarse
    predicates + background); the other columns play no part.

    Args:
        temperature: T (MODEL.DISTILL_TEMPERATURE).
        use_confidence: weight class ``c``'s term by ``confidence[c]`` (MODEL.USE_CONFIDENCE).
        confidence: float ``[P+1]`` indexed by predicate id, the parent's per-predicate recall on
            validation (:func:`confidence_from_metrics`; background 1.0).
        parent_classes: int class indices (e.g. ``hierarchy.stage_classes(1)``); None = all.

    ``forward(child_logits, parent_logits)``: ``[M, P+1]`` tensors or per-image lists of them, rows
    aligned (the same pairs). No rows -> a 0 that keeps the child's graph.

    With confidence weights the term is the confidence-weighted cross-entropy of the released code
    (``-sum_c c_w p_c log q_c``) minus a constant of the parent (``-sum_c c_w p_c log p_c``): same
    gradient, 0 when the child equals the parent, but no longer a divergence: it can be negative,
    and its optimum moves the child towards the classes the parent is confident in.
    """

    def __init__(self, temperature: float = 2.0, use_confidence: bool = False,
                 confidence: Optional[torch.Tensor] = None, parent_classes: Optional[Sequence[int]] = None) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.use_confidence = bool(use_confidence)
        if self.use_confidence and confidence is None:
            raise ValueError("use_confidence needs the parent's per-predicate confidence (validation recall)")
        self.register_buffer("confidence", None if confidence is None
                             else torch.as_tensor(confidence, dtype=torch.float32).clone(), persistent=False)
        self.register_buffer("parent_classes", None if parent_classes is None
                             else torch.as_tensor(parent_classes, dtype=torch.long).clone(), persistent=False)

    def forward(self, child_logits: Union[torch.Tensor, Sequence[torch.Tensor]],
                parent_logits: Union[torch.Tensor, Sequence[torch.Tensor]]) -> torch.Tensor:
        if not torch.is_tensor(child_logits):
            child_logits = torch.cat(list(child_logits), dim=0)
        if not torch.is_tensor(parent_logits):
            parent_logits = torch.cat(list(parent_logits), dim=0)
        if child_logits.shape[0] != parent_logits.shape[0]:
            raise ValueError(f"child and parent scored different pairs: {child_logits.shape[0]} vs "
                             f"{parent_logits.shape[0]} rows")
        if child_logits.shape[0] == 0:
            return child_logits.sum() * 0.0
        T = self.temperature
        cl, pl = child_logits.float(), parent_logits.detach().float().to(child_logits.device)
        if self.parent_classes is not None:
            cls = self.parent_classes.to(cl.device)
            cl, pl = cl.index_select(1, cls), pl.index_select(1, cls)
        log_p = F.log_softmax(pl / T, dim=1)
        log_q = F.log_softmax(cl / T, dim=1)
        term = log_p.exp() * (log_p - log_q)
        if self.use_confidence:
            conf = self.confidence.to(cl.device)
            if self.parent_classes is not None:
                conf = conf.index_select(0, self.parent_classes.to(cl.device))
            term = term * conf
        return term.sum(dim=1).mean() * (T * T)
