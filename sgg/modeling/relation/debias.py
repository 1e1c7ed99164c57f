"""Post-hoc debiasing at test time for every predictor: logit adjustment by the training
predicate frequency (Menon et al., ICLR 2021, "Long-tail learning via logit adjustment").

``adjusted[:, p] = logits[:, p] - tau * log(prior_p)`` for the predicates p = 1..P, with
``prior_p = count_p / sum(count_1..P)`` from the train statistics (a count of 0 is taken as 1, so an
unseen predicate gets a finite boost); the background column 0 is left as it is (it is not a
predicate the ranking chooses). ``tau = 0`` is the identity (the default,
``MODEL.ROI_RELATION_HEAD.LOGIT_ADJUSTMENT_TAU``). Larger ``tau`` moves recall from the frequent
predicates to the rare ones: R@K goes down, mR@K up. Applied to the predicate logits before the
softmax of the post-processor, in evaluation only (training is unchanged). The Causal predictor's
TDE is the other test-time debiasing; both can be combined.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

__all__ = ["LogitAdjustment"]


class LogitAdjustment(nn.Module):
    """``forward(logits [M, P+1]) -> [M, P+1]`` adjusted logits (module docstring).

    Args:
        predicate_counts: ``[P+1]`` train counts (index 0 = background, unused), or None (then
            ``tau`` must be 0).
        tau: strength (0 = off).
    The log-prior is a non-persistent buffer: it is recomputed from the counts a model is built
    with (the checkpoint's metadata carries them), so checkpoints do not change.
    """

    def __init__(self, predicate_counts: Optional[Sequence[float]] = None, tau: float = 0.0,
                 num_rel_classes: Optional[int] = None) -> None:
        super().__init__()
        self.tau = float(tau)
        if predicate_counts is None:
            if self.tau != 0.0:
                raise ValueError("logit adjustment with tau != 0 needs the train predicate counts")
            n = int(num_rel_classes or 1)
            log_prior = torch.zeros(n)
        else:
            counts = torch.as_tensor(predicate_counts, dtype=torch.float64).reshape(-1).clamp(min=1.0)
            counts[0] = 1.0
            log_prior = torch.log(counts / counts[1:].sum())
            log_prior[0] = 0.0
        self.register_buffer("log_prior", log_prior.float(), persistent=False)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        if self.tau == 0.0:
            return logits
        if logits.shape[-1] != self.log_prior.numel():
            raise ValueError(f"logit adjustment: {logits.shape[-1]} predicate columns, the counts have "
                             f"{self.log_prior.numel()}")
        return logits - self.tau * self.log_prior.to(logits.dtype)

    def extra_repr(self) -> str:
        return f"tau={self.tau}"
