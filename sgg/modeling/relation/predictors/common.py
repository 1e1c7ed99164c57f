"""Pieces shared by the relation predictors (SGB's utils_motifs / utils_relation): the 9-d box
code, its position embedding, SGB's layer init, the class distribution fed to object contexts."""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgg.structures import Instances

__all__ = ["BatchNorm1dAnySize", "box_position_embedding", "encode_box_info", "layer_init",
           "object_class_distribution"]


def encode_box_info(boxes: Sequence[torch.Tensor], image_sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """SGB's 9 box features per box: ``(w/W, h/H, cx/W, cy/H, x1/W, y1/H, x2/W, y2/H, wh/WH)``
    with the "+1" width (``w = x2 - x1 + 1``). ``boxes`` per image ``[N_i, 4]``, ``image_sizes``
    (height, width) per image -> ``[sum N_i, 9]``."""
    out = []
    for b, (hei, wid) in zip(boxes, image_sizes):
        wh = b[:, 2:] - b[:, :2] + 1.0
        xy = b[:, :2] + 0.5 * wh
        w, h = wh[:, :1], wh[:, 1:]
        x, y = xy[:, :1], xy[:, 1:]
        x1, y1, x2, y2 = b.split(1, dim=1)
        out.append(torch.cat([w / wid, h / hei, x / wid, y / hei, x1 / wid, y1 / hei, x2 / wid,
                              y2 / hei, w * h / (wid * hei)], dim=1))
    return torch.cat(out, dim=0)


def layer_init(layer: nn.Linear, init_para: float = 0.1, normal: bool = False) -> None:
    """SGB's ``layer_init``: N(0, init_para) if ``normal`` else Xavier-normal; bias 0."""
    if normal:
        nn.init.normal_(layer.weight, mean=0.0, std=init_para)
    else:
        nn.init.xavier_normal_(layer.weight, gain=1.0)
    nn.init.zeros_(layer.bias)


class BatchNorm1dAnySize(nn.BatchNorm1d):
    """BatchNorm1d that falls back to running statistics for a single-sample training batch
    (batch statistics of one box are undefined; SGB would raise)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] <= 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                False, 0.0, self.eps)
        return super().forward(x)


def box_position_embedding() -> nn.Sequential:
    """SGB's ``pos_embed``: ``Linear(9, 32) - BN(32, momentum 0.001) - Linear(32, 128) - ReLU`` of
    :func:`encode_box_info` (Motifs, VCTree, Causal, PE-Net)."""
    return nn.Sequential(nn.Linear(9, 32), BatchNorm1dAnySize(32, momentum=0.001), nn.Linear(32, 128),
                         nn.ReLU(inplace=True))


def object_class_distribution(proposals: Sequence[Instances], n: int, ref: torch.Tensor,
                              num_obj_classes: int) -> torch.Tensor:
    """``[n, C+1]`` softmax of the detector's class logits on the boxes (SGCls / SGDet input of the
    object embeddings), or a uniform distribution when the proposals carry no ``logits``."""
    if all(p.has("logits") for p in proposals):
        logits = torch.cat([p.logits for p in proposals], dim=0).detach()
        return F.softmax(logits.to(ref.dtype), dim=1)
    return ref.new_full((n, num_obj_classes), 1.0 / num_obj_classes)
