"""The output type of every SGG model: objects plus scored relations, in original image pixels."""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Dict, Optional, Tuple

import numpy as np
import torch


@dataclass
class SceneGraph:
    """A predicted (or ground-truth) scene graph of one image.

    Shapes (N objects, M relations, P predicates + background column 0):
      boxes [N,4] float xyxy pixels of the frame ``image_size`` = (height, width);
      labels [N] int64 (1..C); scores [N] float (PredCls: all 1.0);
      rel_pairs [M,2] int64 (subject idx, object idx) sorted by ``triplet_scores`` descending;
      rel_scores [M,P+1] float (softmax incl. background); rel_labels [M] int64 = 1 + argmax over
      columns 1..P; triplet_scores [M] = rel_scores[rel_labels] * scores[s] * scores[o].
    """

    boxes: torch.Tensor
    labels: torch.Tensor
    scores: torch.Tensor
    rel_pairs: torch.Tensor
    rel_scores: torch.Tensor
    rel_labels: torch.Tensor
    triplet_scores: torch.Tensor
    image_size: Tuple[int, int]

    @classmethod
    def from_scores(cls, boxes: torch.Tensor, labels: torch.Tensor, scores: torch.Tensor,
                    rel_pairs: torch.Tensor, rel_scores: torch.Tensor, image_size: Tuple[int, int],
                    top_k: Optional[int] = None) -> "SceneGraph":
        """Order relations as the reference post-processor does.

        Triplet score = max_{p>=1} rel_scores[:, p] * scores[s] * scores[o]; rows sorted by it,
        descending, stable (equal scores keep their input order). ``top_k`` keeps the first k rows.
        """
        rel_pairs = rel_pairs.long().reshape(-1, 2)
        if rel_scores.shape[0]:
            fg_max, fg_arg = rel_scores[:, 1:].max(dim=1)
            rel_labels = fg_arg + 1
            trip = fg_max * scores[rel_pairs[:, 0]] * scores[rel_pairs[:, 1]]
            order = torch.sort(trip, descending=True, stable=True).indices
            if top_k is not None:
                order = order[:top_k]
            rel_pairs, rel_scores = rel_pairs[order], rel_scores[order]
            rel_labels, trip = rel_labels[order], trip[order]
        else:
            rel_labels = torch.zeros(0, dtype=torch.long, device=rel_pairs.device)
            trip = torch.zeros(0, dtype=rel_scores.dtype, device=rel_pairs.device)
        return cls(boxes, labels.long(), scores, rel_pairs, rel_scores, rel_labels, trip,
                   (int(image_size[0]), int(image_size[1])))

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def num_relations(self) -> int:
        return int(self.rel_pairs.shape[0])

    def to(self, device) -> "SceneGraph":
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for k, v in kw.items():
            if isinstance(v, torch.Tensor):
                kw[k] = v.to(device)
        return SceneGraph(**kw)

    def resized(self, image_size: Tuple[int, int]) -> "SceneGraph":
        """The same graph with boxes rescaled to another (height, width) frame."""
        h0, w0 = self.image_size
        h1, w1 = image_size
        scale = self.boxes.new_tensor([w1 / w0, h1 / h0, w1 / w0, h1 / h0])
        return replace(self, boxes=self.boxes * scale, image_size=(int(h1), int(w1)))

    def topk(self, k: int) -> "SceneGraph":
        """The first ``k`` relations (they are already sorted)."""
        return replace(self, rel_pairs=self.rel_pairs[:k], rel_scores=self.rel_scores[:k],
                       rel_labels=self.rel_labels[:k], triplet_scores=self.triplet_scores[:k])

    def to_numpy(self) -> Dict[str, np.ndarray]:
        """The evaluator's prediction dict (boxes, labels, scores, rel_pairs, rel_scores)."""
        def cpu(t):
            return t.detach().float().cpu().numpy() if t.is_floating_point() else t.detach().cpu().numpy()
        return {
            "boxes": cpu(self.boxes),
            "labels": cpu(self.labels),
            "scores": cpu(self.scores),
            "rel_pairs": cpu(self.rel_pairs),
            "rel_scores": cpu(self.rel_scores),
        }
