"""The Transformer relation predictor of SGB (``TransformerPredictor`` / ``TransformerContext``,
``roi_relation_predictors.py`` and ``model_transformer.py``).

Pipeline per batch (N objects over all images, M pairs; H = ``hidden_dim``):

1. Object input ``[roi feature (in_channels), class embedding (embed_dim), box position (128)]``:
   the class embedding is ``obj_embed1`` (GloVe-initialised) of the GT label in PredCls and
   ``softmax(detector logits) @ obj_embed1.weight`` in SGCls/SGDet; the position embedding is
   ``bbox_embed`` = ``Linear(9, 32) - ReLU - Dropout - Linear(32, 128) - ReLU - Dropout`` (no batch
   norm, unlike Motifs) of :func:`~.common.encode_box_info`. ``lin_obj`` maps it to H.
2. Object context: ``obj_layers`` post-LN encoder layers (:class:`EncoderLayer`) over the objects of
   each image. The images are padded into ``[B, T, H]`` (only images with objects) and attention
   is restricted to the real objects of the same image by a key-padding mask; the objects are in
   proposal order (the encoder has no position code, so the order does not matter).
3. Object classes: PredCls keeps the GT labels (``obj_logits`` = one-hot x 1000, as Motifs).
   SGCls/SGDet: ``out_obj`` Linear(H, C+1) gives the refined logits and the labels are the argmax
   over 1..C, in training too (no teacher forcing); SGDet test re-labels the boxes by greedy
   class-aware NMS (IoU ``later_nms_thresh``, SGB ``LATER_NMS_PREDICTION_THRES`` 0.5), as Motifs.
4. Edge context: ``lin_edge`` of ``[roi feature, object context, obj_embed2(label)]`` (in that order,
   as SGB, so its weights line up) to H, then ``rel_layers`` encoder layers.
5. ``post_emb`` H -> 2H split into subject / object halves, pair concat ``prod`` (2H);
   ``rel = rel_compress(post_cat(prod) * union) + ctx_compress(prod) + freq_bias(subj, obj)``
   (``up_dim`` Linear when the union feature size differs from ``pooling_dim``).

Encoder layer (SGB's, from attention-is-all-you-need-pytorch): multi-head self-attention with
``w_qs``/``w_ks`` ``Linear(H, heads*key_dim)``, ``w_vs`` ``Linear(H, heads*val_dim)``, scaled dot
product (temperature ``sqrt(key_dim)``, dropout on the attention weights), ``fc``
``Linear(heads*val_dim, H)``, dropout, ``LayerNorm(out + input)``; then the position-wise FFN
``w_1`` H -> inner, ReLU, ``w_2`` inner -> H, dropout, ``LayerNorm(out + input)``. SGB's FFN uses
``Conv1d(kernel 1)``; here they are ``nn.Linear`` with the same parameter count, the same
initialisation distribution and the same function (an SGB weight ``[out, in, 1]`` loads here after
dropping its last dimension). Module names follow SGB (``context_layer.context_obj.layer_stack.i.
slf_attn.w_qs`` ...). Initialisation as SGB: ``w_qs``/``w_ks`` ~ N(0, sqrt(2/(H+key_dim))),
``w_vs`` ~ N(0, sqrt(2/(H+val_dim))), ``fc`` Xavier-normal, ``post_emb`` N(0, 10/sqrt(H)),
``post_cat``/``rel_compress``/``ctx_compress``/``up_dim`` Xavier-normal with zero bias, the rest
PyTorch's defaults.

Parameter count (D = in_channels, E = embed_dim, Pd = pooling_dim, U = union_dim, C1 = C+1,
R1 = P+1, h = num_head, dk/dv = key/val dim, I = inner_dim)::

    layer   = 2*h*dk*(H+1) + h*dv*(2H+1) + 2*H*I + I + 6H        (q, k, v, fc, 2 LayerNorms, FFN)
    context = 2*C1*E + 4544 + (D+E+128+1)*H + (D+H+E+1)*H + (obj_layers+rel_layers)*layer
              [+ (H+1)*C1 out_obj, SGCls/SGDet only]             (4544 = bbox_embed 9-32-128)
    total   = context + (2H^2 + 2H) post_emb + (2H+1)*Pd post_cat + (Pd+1)*R1 rel_compress
              + (2H+1)*R1 ctx_compress
              [+ (U+1)*Pd up_dim, use_vision and U != Pd] [+ C1*C1*R1 freq_bias, use_bias]

Reference quirks
----------------
* SGB crashes without ``PREDICT_USE_VISION`` (``visual_rep`` is never assigned): a plain bug, fixed.
  ``use_vision=False`` drops the union factor as Motifs does:
  ``rel = rel_compress(post_cat(prod)) + ctx_compress(prod) (+ bias)``, and no union features are
  asked for (``uses_union_features`` False, no ``up_dim``).
* SGCls/SGDet commit to the argmax labels also in training (the edge context and the frequency bias
  see predicted, not target, labels; ``obj_labels`` is read only in PredCls): kept, it shapes the
  published numbers.
* The dropout of ``bbox_embed`` (0.1) and of the attention weights (0.1, SGB's
  ``ScaledDotProductAttention`` default, never passed ``DROPOUT_RATE``) are hard-coded in SGB and
  independent of ``TRANSFORMER.DROPOUT_RATE``: kept as the defaults of ``pos_dropout`` /
  ``attn_dropout`` (constructor arguments; no config key), ``DROPOUT_RATE`` drives the dropout
  after ``fc`` and after the FFN as in SGB.
* SGB builds ``out_obj`` also in PredCls, where it gets no gradient: not built here (the
  predictors' convention); an SGB PredCls checkpoint carries the extra key.
* SGB pads every image, so an image with 0 objects has a fully masked attention row (NaN) and a
  batch of only empty images fails on ``max([])``; here empty images are left out of the padded
  batch and a batch without objects gives empty outputs still attached to the graph.
* SGB zeroes the padded rows after each sub-layer (``non_pad_mask``); they never reach a real row
  (keys are masked, the rest is per position) and are dropped at the end, so that is skipped.
* SGDet NMS labels: a box whose every class was suppressed keeps its argmax (SGB gives it the first
  class of value 0 of the flattened matrix), as Motifs (``class_aware_nms_labels_batched``).
* Without ``logits`` on the proposals (SGCls/SGDet) the object embedding uses a uniform class
  distribution and one warning is logged (SGB would fail), as Motifs.
"""
from __future__ import annotations

import logging
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgg.protocol import check_mode
from sgg.structures import Instances

from ..freq_bias import FrequencyBias
from ..word_vectors import random_word_vectors
from .common import (check_word_vectors, class_names, encode_box_info, gt_label_logits, layer_init, nms_object_labels,
                     object_class_distribution, union_up_projection)
from . import RELATION_PREDICTOR_REGISTRY, PredictorOutput

logger = logging.getLogger(__name__)

__all__ = ["TransformerPredictor", "TransformerContext", "TransformerEncoder", "EncoderLayer",
           "MultiHeadAttention", "PositionwiseFeedForward"]


class _Padding:
    """Flat ``[N, ...]`` objects (image-major) <-> padded ``[B, T, ...]`` over the images that
    have objects, with ``valid`` ``[B, T]`` (True on real objects)."""

    def __init__(self, num_objs: Sequence[int], device: torch.device) -> None:
        counts = torch.as_tensor([n for n in num_objs if n > 0], dtype=torch.long, device=device)
        self.batch = int(counts.numel())
        self.max_len = max(num_objs, default=0)
        self.row = torch.repeat_interleave(torch.arange(self.batch, device=device), counts)
        starts = torch.cumsum(counts, 0) - counts
        self.t = torch.arange(self.row.numel(), device=device) - starts[self.row]
        self.valid = torch.arange(self.max_len, device=device)[None, :] < counts[:, None]

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        out = x.new_zeros((self.batch, self.max_len) + tuple(x.shape[1:]))
        out[self.row, self.t] = x
        return out

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        return y[self.row, self.t]


class MultiHeadAttention(nn.Module):
    """SGB's post-LN multi-head self-attention sub-layer: ``LayerNorm(x + Drop(fc(attn(x))))``."""

    def __init__(self, n_head: int, d_model: int, d_k: int, d_v: int, dropout: float = 0.1,
                 attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.n_head, self.d_k, self.d_v = n_head, d_k, d_v
        self.attn_dropout = float(attn_dropout)
        self.w_qs = nn.Linear(d_model, n_head * d_k)
        self.w_ks = nn.Linear(d_model, n_head * d_k)
        self.w_vs = nn.Linear(d_model, n_head * d_v)
        nn.init.normal_(self.w_qs.weight, mean=0.0, std=float(np.sqrt(2.0 / (d_model + d_k))))
        nn.init.normal_(self.w_ks.weight, mean=0.0, std=float(np.sqrt(2.0 / (d_model + d_k))))
        nn.init.normal_(self.w_vs.weight, mean=0.0, std=float(np.sqrt(2.0 / (d_model + d_v))))
        self.layer_norm = nn.LayerNorm(d_model)
        self.fc = nn.Linear(n_head * d_v, d_model)
        nn.init.xavier_normal_(self.fc.weight)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, T, d_model]``, ``valid`` bool ``[B, T]`` (keys that may be attended to)."""
        b, t, _ = x.shape
        q = self.w_qs(x).view(b, t, self.n_head, self.d_k).transpose(1, 2)
        k = self.w_ks(x).view(b, t, self.n_head, self.d_k).transpose(1, 2)
        v = self.w_vs(x).view(b, t, self.n_head, self.d_v).transpose(1, 2)
        # softmax(q k^T / sqrt(d_k)) with padded keys masked out, dropout on the weights, times v
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=valid[:, None, None, :],
                                             dropout_p=self.attn_dropout if self.training else 0.0)
        out = out.transpose(1, 2).reshape(b, t, self.n_head * self.d_v)
        return self.layer_norm(self.dropout(self.fc(out)) + x)


class PositionwiseFeedForward(nn.Module):
    """``LayerNorm(x + Drop(w_2(ReLU(w_1(x)))))``; SGB's 1x1 convolutions as Linear layers."""

    def __init__(self, d_in: int, d_hid: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.w_1 = nn.Linear(d_in, d_hid)
        self.w_2 = nn.Linear(d_hid, d_in)
        self.layer_norm = nn.LayerNorm(d_in)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer_norm(self.dropout(self.w_2(F.relu(self.w_1(x)))) + x)


class EncoderLayer(nn.Module):
    """Self-attention then feed-forward, each post-LN (SGB's ``EncoderLayer``)."""

    def __init__(self, d_model: int, d_inner: int, n_head: int, d_k: int, d_v: int, dropout: float = 0.1,
                 attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.slf_attn = MultiHeadAttention(n_head, d_model, d_k, d_v, dropout=dropout, attn_dropout=attn_dropout)
        self.pos_ffn = PositionwiseFeedForward(d_model, d_inner, dropout=dropout)

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.pos_ffn(self.slf_attn(x, valid))


class TransformerEncoder(nn.Module):
    """A stack of :class:`EncoderLayer` over padded images ``[B, T, d_model]``."""

    def __init__(self, n_layers: int, n_head: int, d_k: int, d_v: int, d_model: int, d_inner: int,
                 dropout: float = 0.1, attn_dropout: float = 0.1) -> None:
        super().__init__()
        self.layer_stack = nn.ModuleList([
            EncoderLayer(d_model, d_inner, n_head, d_k, d_v, dropout=dropout, attn_dropout=attn_dropout)
            for _ in range(n_layers)])

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        for layer in self.layer_stack:
            x = layer(x, valid)
        return x


class TransformerContext(nn.Module):
    """SGB's ``TransformerContext``: object context, object classes and edge context (module doc)."""

    def __init__(self, num_obj_classes: int, in_channels: int, hidden_dim: int, embed_dim: int,
                 word_vectors: torch.Tensor, mode: str, dropout_rate: float = 0.1, obj_layers: int = 4,
                 rel_layers: int = 2, num_head: int = 8, key_dim: int = 64, val_dim: int = 64,
                 inner_dim: int = 2048, later_nms_thresh: float = 0.5, pos_dropout: float = 0.1,
                 attn_dropout: float = 0.1) -> None:
        super().__init__()
        if obj_layers < 1 or rel_layers < 1:
            raise ValueError("TRANSFORMER.OBJ_LAYER and TRANSFORMER.REL_LAYER must be >= 1")
        self.mode = mode
        self.num_obj_classes = num_obj_classes
        self.hidden_dim = hidden_dim
        self.embed_dim = embed_dim
        self.later_nms_thresh = later_nms_thresh
        # word_vectors: [C+1, E], one row per class name (background included)
        self.obj_embed1 = nn.Embedding(num_obj_classes, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_classes, embed_dim)
        with torch.no_grad():
            self.obj_embed1.weight.copy_(word_vectors)
            self.obj_embed2.weight.copy_(word_vectors)
        self.bbox_embed = nn.Sequential(
            nn.Linear(9, 32), nn.ReLU(inplace=True), nn.Dropout(pos_dropout),
            nn.Linear(32, 128), nn.ReLU(inplace=True), nn.Dropout(pos_dropout))
        self.lin_obj = nn.Linear(in_channels + embed_dim + 128, hidden_dim)
        self.lin_edge = nn.Linear(embed_dim + hidden_dim + in_channels, hidden_dim)
        if mode != "predcls":
            self.out_obj = nn.Linear(hidden_dim, num_obj_classes)
        self.context_obj = TransformerEncoder(obj_layers, num_head, key_dim, val_dim, hidden_dim, inner_dim,
                                              dropout=dropout_rate, attn_dropout=attn_dropout)
        self.context_edge = TransformerEncoder(rel_layers, num_head, key_dim, val_dim, hidden_dim, inner_dim,
                                               dropout=dropout_rate, attn_dropout=attn_dropout)
        self._warned_no_logits = False

    def _input_distribution(self, proposals: Sequence[Instances], n: int, ref: torch.Tensor) -> torch.Tensor:
        if not self._warned_no_logits and not all(p.has("logits") for p in proposals):
            logger.warning("%s: proposals carry no 'logits' field (detector class logits); the Transformer "
                           "object embedding uses a uniform class distribution. SGB feeds the "
                           "detector's logits on the boxes here.", self.mode)
            self._warned_no_logits = True
        return object_class_distribution(proposals, n, ref, self.num_obj_classes)

    def forward(self, x: torch.Tensor, proposals: Sequence[Instances], obj_labels: Optional[torch.Tensor]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``[N, in_channels]`` -> (obj_logits ``[N, C+1]``, obj_preds ``[N]``,
        edge_ctx ``[N, hidden]``)."""
        num_objs = [len(p) for p in proposals]
        boxes = [p.boxes.tensor.to(x.dtype) for p in proposals]
        if self.mode == "predcls":
            if obj_labels is None:
                raise ValueError("TransformerPredictor(mode='predcls') needs obj_labels (the GT labels)")
            obj_embed = self.obj_embed1(obj_labels.long())
        else:
            obj_embed = self._input_distribution(proposals, x.shape[0], x) @ self.obj_embed1.weight
        pos_embed = self.bbox_embed(encode_box_info(boxes, [p.image_size for p in proposals]))
        padding = _Padding(num_objs, x.device)

        obj_pre_rep = self.lin_obj(torch.cat([x, obj_embed, pos_embed], dim=1))
        obj_feats = padding.unpad(self.context_obj(padding.pad(obj_pre_rep), padding.valid))

        if self.mode == "predcls":
            obj_preds = obj_labels.long()
            obj_dists = gt_label_logits(obj_preds, self.num_obj_classes, obj_feats.dtype)
        else:
            obj_dists = self.out_obj(obj_feats)
            if self.mode == "sgdet" and not self.training:
                obj_preds = nms_object_labels(obj_dists, proposals, num_objs, self.later_nms_thresh)
            else:
                obj_preds = obj_dists[:, 1:].detach().argmax(dim=1) + 1

        edge_pre_rep = self.lin_edge(torch.cat([x, obj_feats, self.obj_embed2(obj_preds)], dim=1))
        edge_ctx = padding.unpad(self.context_edge(padding.pad(edge_pre_rep), padding.valid))
        return obj_dists, obj_preds, edge_ctx



@RELATION_PREDICTOR_REGISTRY.register()
class TransformerPredictor(nn.Module):
    """SGB's Transformer relation predictor (SGB name, so ``PREDICTOR: "TransformerPredictor"`` works).

    Args:
        num_obj_classes: C+1 (VG150: 151), background included.
        num_rel_classes: P+1 (VG150: 51), "no relation" included.
        in_channels: object ROI feature size (box head output, 4096).
        hidden_dim: context size (``CONTEXT_HIDDEN_DIM`` 512).
        pooling_dim: pair feature size (``CONTEXT_POOLING_DIM`` 4096).
        embed_dim: class embedding size (``EMBED_DIM`` 200).
        obj_classes: C+1 class names (index 0 background); default ``["__background__", "class_1", ...]``.
        pred_dist: ``[C+1, C+1, P+1]`` float frequency statistics for the bias (None: zeros).
        word_vectors: ``[C+1, embed_dim]`` initial class embeddings, rows in the order of
            :attr:`word_vector_names` (= ``obj_classes``); None: the seeded random vectors of
            :func:`~sgg.modeling.relation.word_vectors.random_word_vectors`. The load step fills them
            from GloVe through :meth:`set_word_vectors`; the constructor never opens a file.
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        union_dim: union feature size (default ``in_channels``); an ``up_dim`` Linear maps it to
            ``pooling_dim`` when they differ.
        dropout_rate, obj_layers, rel_layers, num_head, key_dim, val_dim, inner_dim:
            ``TRANSFORMER.{DROPOUT_RATE, OBJ_LAYER, REL_LAYER, NUM_HEAD, KEY_DIM, VAL_DIM, INNER_DIM}``.
        use_vision, use_bias: ``PREDICT_USE_VISION`` / ``PREDICT_USE_BIAS``.
        later_nms_thresh: SGDet class-aware NMS IoU (``TEST.RELATION.LATER_NMS_PREDICTION_THRES``).
        pos_dropout, attn_dropout: dropout of the box embedding and of the attention weights (0.1,
            hard-coded in SGB; see "Reference quirks" in the module doc).
    """

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, in_channels: int = 4096,
                 hidden_dim: int = 512, pooling_dim: int = 4096, embed_dim: int = 200,
                 obj_classes: Optional[Sequence[str]] = None, pred_dist=None,
                 word_vectors: Optional[torch.Tensor] = None, mode: str = "predcls",
                 union_dim: Optional[int] = None, dropout_rate: float = 0.1, obj_layers: int = 4,
                 rel_layers: int = 2, num_head: int = 8, key_dim: int = 64, val_dim: int = 64,
                 inner_dim: int = 2048, use_vision: bool = True, use_bias: bool = True,
                 later_nms_thresh: float = 0.5, pos_dropout: float = 0.1, attn_dropout: float = 0.1) -> None:
        super().__init__()
        check_mode(mode)
        obj_classes = class_names(obj_classes, num_obj_classes)
        self.mode = mode
        self.num_obj_cls = num_obj_classes
        self.num_rel_cls = num_rel_classes
        self.hidden_dim = hidden_dim
        self.pooling_dim = pooling_dim
        self.use_vision = bool(use_vision)
        self.use_bias = bool(use_bias)
        self.uses_union_features = self.use_vision

        self.word_vector_names = obj_classes
        vectors = random_word_vectors(self.word_vector_names, embed_dim) if word_vectors is None else word_vectors
        self._check_word_vectors(vectors, embed_dim)
        self.context_layer = TransformerContext(
            num_obj_classes, in_channels, hidden_dim, embed_dim, vectors, mode, dropout_rate=dropout_rate,
            obj_layers=obj_layers, rel_layers=rel_layers, num_head=num_head, key_dim=key_dim, val_dim=val_dim,
            inner_dim=inner_dim, later_nms_thresh=later_nms_thresh, pos_dropout=pos_dropout,
            attn_dropout=attn_dropout)
        self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
        self.post_cat = nn.Linear(hidden_dim * 2, pooling_dim)
        self.rel_compress = nn.Linear(pooling_dim, num_rel_classes)
        self.ctx_compress = nn.Linear(hidden_dim * 2, num_rel_classes)
        layer_init(self.post_emb, 10.0 * (1.0 / hidden_dim) ** 0.5, normal=True)
        layer_init(self.rel_compress)
        layer_init(self.ctx_compress)
        layer_init(self.post_cat)
        self.up_dim = union_up_projection(self.use_vision, in_channels if union_dim is None else union_dim,
                                          pooling_dim)
        self.freq_bias = FrequencyBias(num_obj_classes, num_rel_classes, pred_dist) if self.use_bias else None

    def _check_word_vectors(self, vectors: torch.Tensor, embed_dim: int) -> None:
        n = len(self.word_vector_names)
        check_word_vectors(vectors, n, embed_dim, f"the {n} class names")

    def word_vector_specs(self) -> Dict[str, Tuple[List[str], int]]:
        """The word vectors this predictor starts from (the load step fills them from GloVe):
        ``{"obj": (class names, embed_dim)}``."""
        return {"obj": (list(self.word_vector_names), self.context_layer.embed_dim)}

    @torch.no_grad()
    def set_word_vectors(self, obj: torch.Tensor) -> None:
        """Initialise ``obj_embed1`` and ``obj_embed2`` from ``obj`` ``[C+1, embed_dim]``, rows in
        the order of :attr:`word_vector_names`."""
        ctx = self.context_layer
        self._check_word_vectors(obj, ctx.embed_dim)
        vectors = obj.to(ctx.obj_embed1.weight)
        ctx.obj_embed1.weight.copy_(vectors)
        ctx.obj_embed2.weight.copy_(vectors)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, num_obj_classes: int, num_rel_classes: int, mode: str,
                    union_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                    pred_dist=None, word_vectors: Optional[torch.Tensor] = None,
                    rel_classes: Optional[Sequence[str]] = None) -> "TransformerPredictor":
        rh = cfg.MODEL.ROI_RELATION_HEAD
        tr = rh.TRANSFORMER
        return cls(
            num_obj_classes=num_obj_classes, num_rel_classes=num_rel_classes, in_channels=in_channels,
            hidden_dim=rh.CONTEXT_HIDDEN_DIM, pooling_dim=rh.CONTEXT_POOLING_DIM, embed_dim=rh.EMBED_DIM,
            obj_classes=obj_classes, pred_dist=pred_dist, word_vectors=word_vectors, mode=mode,
            union_dim=union_dim, dropout_rate=tr.DROPOUT_RATE, obj_layers=tr.OBJ_LAYER, rel_layers=tr.REL_LAYER,
            num_head=tr.NUM_HEAD, key_dim=tr.KEY_DIM, val_dim=tr.VAL_DIM, inner_dim=tr.INNER_DIM,
            use_vision=rh.PREDICT_USE_VISION, use_bias=rh.PREDICT_USE_BIAS,
            later_nms_thresh=cfg.TEST.RELATION.LATER_NMS_PREDICTION_THRES,
        )

    def forward(self, roi_features: torch.Tensor, proposals: Sequence[Instances],
                rel_pairs: Sequence[torch.Tensor], union_features: Optional[torch.Tensor] = None,
                obj_labels: Optional[torch.Tensor] = None) -> PredictorOutput:
        """See :mod:`sgg.modeling.relation.predictors` for the argument shapes."""
        num_objs = [len(p) for p in proposals]
        num_rels = [int(r.shape[0]) for r in rel_pairs]
        x = roi_features
        if sum(num_objs) == 0:
            # nothing to contextualise; keep the outputs attached to the graph for an empty loss
            rel = self.ctx_compress(x.new_zeros(0, 2 * self.hidden_dim))
            obj = x.new_zeros(0, self.num_obj_cls)
            return PredictorOutput([obj] * len(num_objs), [rel] * len(num_rels),
                                   [torch.zeros(0, dtype=torch.long, device=x.device)] * len(num_objs), {})

        obj_dists, obj_preds, edge_ctx = self.context_layer(x, proposals, obj_labels)

        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.hidden_dim)
        head_rep, tail_rep = edge_rep[:, 0], edge_rep[:, 1]
        offsets = np.concatenate([[0], np.cumsum(num_objs)[:-1]]).tolist()
        gp = torch.cat([r.long().reshape(-1, 2) + off for r, off in zip(rel_pairs, offsets)], dim=0).to(x.device)
        prod_rep = torch.cat([head_rep[gp[:, 0]], tail_rep[gp[:, 1]]], dim=1)
        visual_rep = self.post_cat(prod_rep)
        if self.use_vision:
            if union_features is None:
                raise ValueError("TransformerPredictor(use_vision=True) needs union_features")
            visual_rep = visual_rep * (self.up_dim(union_features) if self.up_dim is not None else union_features)
        rel_dists = self.rel_compress(visual_rep) + self.ctx_compress(prod_rep)
        if self.use_bias:
            pair_pred = torch.stack([obj_preds[gp[:, 0]], obj_preds[gp[:, 1]]], dim=1)
            rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)

        return PredictorOutput(list(obj_dists.split(num_objs)), list(rel_dists.split(num_rels)),
                               list(obj_preds.split(num_objs)), {})
