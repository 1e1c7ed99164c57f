"""Pieces shared by the relation predictors (SGB's utils_motifs / utils_relation): the 9-d box
code, its position embedding, SGB's layer init, the class distribution fed to object contexts."""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from sgg.structures import Instances

from ..postprocess import class_aware_nms_labels_batched

__all__ = ["BatchNorm1dAnySize", "box_position_embedding", "check_word_vectors", "class_names",
           "encode_box_info", "fill_context_embeddings", "gt_label_logits", "layer_init", "nms_object_labels",
           "object_class_distribution", "union_up_projection"]


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


def union_up_projection(use_vision: bool, union_dim: int, pooling_dim: int) -> Optional[nn.Linear]:
    """SGB's ``up_dim``: a Xavier-initialised Linear from the union feature width to the pooling
    width when the union features are used and the widths differ, else None."""
    if not use_vision or union_dim == pooling_dim:
        return None
    layer = nn.Linear(union_dim, pooling_dim)
    layer_init(layer)
    return layer


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


def class_names(names: Optional[Sequence[str]], count: int, what: str = "obj_classes",
                count_key: str = "num_obj_classes", generic: str = "class") -> List[str]:
    """``names`` as a list (checked against ``count``, background included), or generic names
    ``["__background__", "<generic>_1", ...]`` when None."""
    if names is None:
        return ["__background__"] + [f"{generic}_{i}" for i in range(1, count)]
    names = list(names)
    if len(names) != count:
        raise ValueError(f"{what} has {len(names)} names, {count_key} is {count}")
    return names


def check_word_vectors(vectors: torch.Tensor, num_rows: int, dim: int, rows: str, what: str = "word_vectors") -> None:
    """A ValueError naming the expected shape ``[num_rows, dim]`` (``rows`` says what the rows are)."""
    want = (int(num_rows), int(dim))
    if tuple(vectors.shape) != want:
        raise ValueError(f"{what} must have shape {want} (rows: {rows}, columns: EMBED_DIM), got {tuple(vectors.shape)}")


@torch.no_grad()
def fill_context_embeddings(ctx: nn.Module, vectors: torch.Tensor) -> None:
    """The class embeddings of a Motifs / VCTree context from ``["start"] + classes`` vectors: rows 1..
    into ``obj_embed1`` (when built) and ``obj_embed2``, every row into the decoder's embedding (when
    built)."""
    vectors = vectors.to(ctx.obj_embed2.weight)
    if hasattr(ctx, "obj_embed1"):
        ctx.obj_embed1.weight.copy_(vectors[1:])
    ctx.obj_embed2.weight.copy_(vectors[1:])
    if hasattr(ctx, "decoder_rnn"):
        ctx.decoder_rnn.obj_embed.weight.copy_(vectors)


def gt_label_logits(labels: torch.Tensor, num_classes: int, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """SGB's PredCls object "logits": ``[N, C+1]`` of -1000 with +1000 at each GT label."""
    out = torch.full((labels.shape[0], num_classes), -1000.0, device=labels.device, dtype=dtype)
    return out.scatter_(1, labels.long().view(-1, 1), 1000.0)


@torch.no_grad()
def nms_object_labels(obj_logits: torch.Tensor, proposals: Sequence[Instances], num_objs: Sequence[int],
                      thresh: float) -> torch.Tensor:
    """SGDet labels ``[sum N_i]`` by greedy class-aware NMS over ``softmax(obj_logits)`` per image, on
    the per-class boxes when the proposals carry ``boxes_per_cls`` (SGB's in-model relabelling)."""
    probs = F.softmax(obj_logits.detach().float(), dim=1).split(list(num_objs))
    boxes = [p.boxes_per_cls if p.has("boxes_per_cls") else p.boxes.tensor for p in proposals]
    return torch.cat(class_aware_nms_labels_batched(probs, boxes, thresh))
