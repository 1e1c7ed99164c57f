"""Frequency bias: a trainable log-prior over predicates for each (subject class, object class)."""
from __future__ import annotations

from typing import Optional, Union

import numpy as np
import torch
from torch import nn

__all__ = ["FrequencyBias"]


class FrequencyBias(nn.Module):
    """``logits[p] += W[s * (C+1) + o, p]`` (SGB's ``FrequencyBias``).

    ``W`` is an ``nn.Embedding((C+1)*(C+1), P+1)`` initialised with ``pred_dist`` (float
    ``[C+1, C+1, P+1]``, ``log(fg / fg.sum(-1) + 1e-3)`` from the train statistics, see
    specs/data.md) and trained with the rest of the predictor. Without ``pred_dist`` it starts at 0.
    """

    def __init__(self, num_obj_classes: int, num_rel_classes: int,
                 pred_dist: Optional[Union[np.ndarray, torch.Tensor]] = None) -> None:
        super().__init__()
        self.num_objs = int(num_obj_classes)
        self.num_rels = int(num_rel_classes)
        self.obj_baseline = nn.Embedding(self.num_objs * self.num_objs, self.num_rels)
        with torch.no_grad():
            if pred_dist is None:
                self.obj_baseline.weight.zero_()
            else:
                pd = torch.as_tensor(np.asarray(pred_dist) if not isinstance(pred_dist, torch.Tensor) else pred_dist)
                expected = (self.num_objs, self.num_objs, self.num_rels)
                if tuple(pd.shape) != expected:
                    raise ValueError(f"pred_dist has shape {tuple(pd.shape)}, expected {expected} "
                                     f"(num_obj_classes, num_obj_classes, num_rel_classes)")
                self.obj_baseline.weight.copy_(pd.reshape(-1, self.num_rels).float())

    def index_with_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """``labels`` int64 ``[M, 2]`` (subject class, object class) -> ``[M, P+1]``."""
        return self.obj_baseline(labels[:, 0].long() * self.num_objs + labels[:, 1].long())

    def index_with_probability(self, pair_prob: torch.Tensor) -> torch.Tensor:
        """Soft version: ``pair_prob`` ``[M, 2, C+1]`` class distributions -> expected bias ``[M, P+1]``."""
        joint = pair_prob[:, 0, :, None] * pair_prob[:, 1, None, :]
        return joint.flatten(1) @ self.obj_baseline.weight  # flatten(1): also for M = 0 pairs

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.index_with_labels(labels)
