"""Losses of the one-stage composite-field model (``specs/onestage.md``, "Targets and losses").

* :func:`focal_loss`: CenterNet's penalty-reduced pixel-wise focal loss (alpha=2, beta=4) on
  ``sigmoid(logits)``, computed from the logits with ``logsigmoid`` in float32 (no clamping of
  the probabilities is needed), normalised by ``max(1, number of positives)``; a positive is a
  target value of exactly 1 (the Gaussian peak, or a positive relation cell).
* :func:`masked_l1`: L1 at the positive cells, averaged over the positive cells AND the vector
  components (CenterNet's ``RegL1Loss`` normalisation: the sum divided by the number of positive
  entries), 0 (with a gradient path) when there is no positive.
* :func:`field_losses`: the six logged terms of the model.

Default weights (:data:`DEFAULT_WEIGHTS`): ``obj_hm`` 1, ``obj_offset`` 1, ``obj_size`` 0.1 --
CenterNet's (hm 1, off 1, wh 0.1), as sizes are tens of cells while offsets are < 1; ``rel_hm`` 1,
``rel_vec`` 1, ``rel_scale`` 1 -- the relation vectors decide which objects a relation is
associated with, so they keep a full weight although they are in grid units like the sizes (lower
``rel_vec`` to 0.1-0.5 if it dominates the total early in training).

Everything runs in float32 with autocast disabled, so the losses are the same under AMP.
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional

import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_WEIGHTS", "focal_loss", "masked_l1", "field_losses"]

#: loss weights by term (module docstring)
DEFAULT_WEIGHTS: Dict[str, float] = dict(obj_hm=1.0, obj_offset=1.0, obj_size=0.1, rel_hm=1.0,
                                         rel_vec=1.0, rel_scale=1.0)


def _no_autocast(t: torch.Tensor):
    return torch.autocast(device_type=t.device.type, enabled=False)


def focal_loss(logits: torch.Tensor, target_heatmap: torch.Tensor, alpha: float = 2.0,
               beta: float = 4.0) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss, summed over all cells / max(1, num positives).

    Args:
        logits: [..., H, W] raw network output (any float dtype).
        target_heatmap: same shape, values in [0, 1]; exactly 1 marks a positive.

    ``loss = -(sum_pos (1-p)^alpha log p + sum_neg (1-y)^beta p^alpha log(1-p)) / max(1, num_pos)``
    with ``p = sigmoid(logits)``. Returns a float32 scalar.
    """
    if logits.shape != target_heatmap.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and target {tuple(target_heatmap.shape)} differ")
    with _no_autocast(logits):
        x = logits.float()
        y = target_heatmap.to(device=x.device, dtype=torch.float32)
        pos = y == 1
        log_p = F.logsigmoid(x)
        log_1mp = F.logsigmoid(-x)
        p = torch.sigmoid(x)
        pos_term = (1 - p).pow(alpha) * log_p
        neg_term = (1 - y).pow(beta) * p.pow(alpha) * log_1mp
        loss = torch.where(pos, pos_term, neg_term).sum()
        num_pos = pos.sum().clamp(min=1).to(torch.float32)
        return -loss / num_pos


def masked_l1(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the positive cells and the vector components.

    Args:
        pred, target: [B, ..., K, H, W] (K components, e.g. 2 for offsets, or [B, P, 2, H, W]).
        mask: [B, ..., H, W] bool, broadcast over the component dimension ``-3``.

    Returns ``sum(|pred - target| at mask) / max(1, K * num_pos)`` as a float32 scalar.
    ``torch.where`` keeps NaN / inf outputs of negative cells out of the loss and its gradient.
    """
    with _no_autocast(pred):
        x = pred.float()
        y = target.to(device=x.device, dtype=torch.float32)
        if x.shape != y.shape:
            raise ValueError(f"prediction {tuple(x.shape)} and target {tuple(y.shape)} differ")
        m = mask.to(device=x.device, dtype=torch.bool).unsqueeze(-3).expand_as(x)
        err = torch.where(m, (x - y).abs(), torch.zeros_like(x)).sum()
        return err / m.sum().clamp(min=1).to(torch.float32)


def field_losses(outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor],
                 weights: Optional[Mapping[str, float]] = None) -> Dict[str, torch.Tensor]:
    """The weighted loss terms of a batch.

    Args:
        outputs: the network fields (raw): ``obj_logits`` [B,C,H,W], ``obj_offset`` [B,2,H,W],
            ``obj_size`` [B,2,H,W], ``rel_logits`` [B,P,H,W], ``rel_subj`` / ``rel_obj`` /
            ``rel_scale`` [B,P,2,H,W].
        targets: :func:`~sgg.modeling.onestage.encoder.encode_batch` output on the same grid.
        weights: overrides of :data:`DEFAULT_WEIGHTS` (keys ``obj_hm``, ``obj_offset``,
            ``obj_size``, ``rel_hm``, ``rel_vec``, ``rel_scale``); missing keys keep the default.

    Returns float32 scalars ``loss_obj_heatmap``, ``loss_obj_offset``, ``loss_obj_size``,
    ``loss_rel_heatmap``, ``loss_rel_vector`` (subject and object vectors together),
    ``loss_rel_scale``; each already multiplied by its weight. Heatmap losses are normalised by
    the positives of the whole batch, as CenterNet.
    """
    wts = dict(DEFAULT_WEIGHTS)
    if weights:
        unknown = set(weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise KeyError(f"unknown loss weights {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        wts.update({k: float(v) for k, v in weights.items()})
    grid_o, grid_t = tuple(outputs["obj_logits"].shape[-2:]), tuple(targets["obj_heatmap"].shape[-2:])
    if grid_o != grid_t:
        raise ValueError(f"network grid {grid_o} differs from the target grid {grid_t}: encode the "
                         f"targets with the output's (Hg, Wg)")
    obj_mask, rel_mask = targets["obj_reg_mask"], targets["rel_mask"]
    rel_vec_pred = torch.cat([outputs["rel_subj"], outputs["rel_obj"]], dim=-3)
    rel_vec_tgt = torch.cat([targets["rel_subj"], targets["rel_obj"]], dim=-3)
    return {
        "loss_obj_heatmap": wts["obj_hm"] * focal_loss(outputs["obj_logits"], targets["obj_heatmap"]),
        "loss_obj_offset": wts["obj_offset"] * masked_l1(outputs["obj_offset"], targets["obj_offset"], obj_mask),
        "loss_obj_size": wts["obj_size"] * masked_l1(outputs["obj_size"], targets["obj_size"], obj_mask),
        "loss_rel_heatmap": wts["rel_hm"] * focal_loss(outputs["rel_logits"], targets["rel_heatmap"]),
        "loss_rel_vector": wts["rel_vec"] * masked_l1(rel_vec_pred, rel_vec_tgt, rel_mask),
        "loss_rel_scale": wts["rel_scale"] * masked_l1(outputs["rel_scale"], targets["rel_scale"], rel_mask),
    }
