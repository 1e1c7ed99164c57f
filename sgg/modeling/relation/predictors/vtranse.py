"""VTransE's object and edge features as SGB's ``VTransEFeature`` (model_vtranse.py), the third
context layer of :class:`~sgg.modeling.relation.predictors.causal.CausalAnalysisPredictor`.

No context between objects (D = in_channels, E = embed_dim, H = hidden_dim, C = num_obj_classes
with background):

* object classes: ``pred_layer`` ``Linear(D+E+128, C)`` of ``[x, class embedding (obj_embed1), box
  position (pos_embed)]`` (class embedding as Motifs: of the GT label in PredCls,
  ``softmax(detector logits) @ obj_embed1.weight`` otherwise);
* edge feature: ``relu(fc_layer([x, box position, obj_embed2(label)]))`` ``[N, H]``.

``labels="sgb"`` (the reference) classifies in EVERY protocol, PredCls included, and commits to the
argmax over all C classes (background included); ``labels="protocol"`` keeps the GT labels in
PredCls (``obj_embed1`` and ``pred_layer`` are then not built: nothing would train them) and
commits to the argmax over 1..C elsewhere. See the Reference quirks of
:mod:`~sgg.modeling.relation.predictors.causal`.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgg.structures import Instances

from .common import box_position_embedding, encode_box_info, gt_label_logits, object_class_distribution
from .imp import make_fc

__all__ = ["VTransEContext", "VTRANSE_LABELS"]

VTRANSE_LABELS = ("sgb", "protocol")


class VTransEContext(nn.Module):
    """SGB's ``VTransEFeature`` (module docstring).

    Args:
        num_obj_classes: C (background included).
        in_channels: D, the object ROI feature size.
        hidden_dim: H, the edge feature size.
        embed_dim: E.
        word_vectors: ``[C+1, E]`` rows ``"start"`` + class names (row 0 is not used here).
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        labels: "sgb" | "protocol" (module docstring).
    """

    def __init__(self, num_obj_classes: int, in_channels: int, hidden_dim: int, embed_dim: int,
                 word_vectors: torch.Tensor, mode: str, labels: str = "sgb") -> None:
        super().__init__()
        if labels not in VTRANSE_LABELS:
            raise ValueError(f"vtranse labels must be one of {VTRANSE_LABELS}, got {labels!r}")
        self.mode = mode
        self.labels = labels
        self.num_obj_classes = num_obj_classes
        self.obj_dim = in_channels
        self.hidden_dim = hidden_dim
        self.embed_dim = embed_dim
        #: whether the context classifies the objects (always in SGB; not in PredCls with "protocol")
        self.classifies = mode != "predcls" or labels == "sgb"
        if self.classifies:
            self.obj_embed1 = nn.Embedding(num_obj_classes, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_classes, embed_dim)
        with torch.no_grad():
            if self.classifies:
                self.obj_embed1.weight.copy_(word_vectors[1:])
            self.obj_embed2.weight.copy_(word_vectors[1:])
        self.pos_embed = box_position_embedding()
        if self.classifies:
            self.pred_layer = make_fc(in_channels + embed_dim + 128, num_obj_classes)
        self.fc_layer = make_fc(in_channels + 128 + embed_dim, hidden_dim)

    def forward(self, x: torch.Tensor, proposals: Sequence[Instances], obj_labels: Optional[torch.Tensor],
                input_hook: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None,
                soft_label_embedding: bool = False) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``[N, D]`` -> (obj_logits ``[N, C]``, obj_preds ``[N]``, edge_ctx ``[N, H]``).

        ``input_hook(name, tensor) -> tensor`` (optional) sees, and may replace, the classifier
        input (``"object"``, ``[x, emb, pos]`` ``[N, D+E+128]``; only where the context classifies)
        and the ``[x, pos]`` part of the edge input (``"edge"``, ``[N, D+128]``).
        ``soft_label_embedding``: embed ``softmax(obj_logits) @ obj_embed2.weight`` instead of the
        committed label (SGB's counterfactual pass)."""
        boxes = [p.boxes.tensor.to(x.dtype) for p in proposals]
        pos_embed = self.pos_embed(encode_box_info(boxes, [p.image_size for p in proposals]))
        if self.mode == "predcls" and obj_labels is None:
            raise ValueError("the VTransE context in mode 'predcls' needs obj_labels (the GT labels)")
        if self.classifies:
            if self.mode == "predcls":
                obj_embed = self.obj_embed1(obj_labels.long())
            else:
                dist = object_class_distribution(proposals, x.shape[0], x, self.num_obj_classes)
                obj_embed = dist @ self.obj_embed1.weight
            obj_pre_rep = torch.cat([x, obj_embed, pos_embed], dim=1)
            if input_hook is not None:
                obj_pre_rep = input_hook("object", obj_pre_rep)
            obj_dists = self.pred_layer(obj_pre_rep)
            if self.labels == "sgb":
                obj_preds = obj_dists.detach().argmax(dim=1)
            else:
                obj_preds = obj_dists[:, 1:].detach().argmax(dim=1) + 1
        else:
            obj_preds = obj_labels.long()
            obj_dists = gt_label_logits(obj_preds, self.num_obj_classes, x.dtype)
        edge_vis = torch.cat([x, pos_embed], dim=1)
        if input_hook is not None:
            edge_vis = input_hook("edge", edge_vis)
        if soft_label_embedding:
            prob = F.softmax(obj_dists.float(), dim=1)
            obj_embed2 = prob.to(edge_vis.dtype) @ self.obj_embed2.weight.to(edge_vis.dtype)
        else:
            obj_embed2 = self.obj_embed2(obj_preds)
        edge_ctx = F.relu(self.fc_layer(torch.cat([edge_vis, obj_embed2.to(edge_vis.dtype)], dim=1)))
        return obj_dists, obj_preds, edge_ctx
