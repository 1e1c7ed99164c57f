"""Neural Motifs (Zellers et al., CVPR 2018) as in SGB's ``MotifPredictor`` / ``LSTMContext``.

Pipeline per batch (N objects over all images, M pairs):

1. Object input ``[roi feature (in_channels), class embedding (embed_dim), box position (128)]``:
   the class embedding is ``obj_embed1`` (GloVe-initialised) of the GT label in PredCls, and
   ``softmax(detector logits) @ obj_embed1.weight`` in SGCls/SGDet; the position embedding is
   ``Linear(9, 32) - BN - Linear(32, 128) - ReLU`` of :func:`encode_box_info`.
2. Objects of each image are sorted by box centre x, DESCENDING (SGB/neural-motifs: "higher scores
   first" on ``cx / (max cx + 1)``), and a BiLSTM (``obj_layers``) + ``Linear(2H, H)`` gives the
   object context.
3. Object classes: PredCls keeps the GT labels. SGCls/SGDet decode ``[object input, object
   context]`` in the same order with SGB's ``DecoderRNN`` (a highway LSTM cell with a recurrent
   dropout mask fixed per sequence, fed the embedding of the previous object's class): teacher
   forcing with the object targets in training (a target 0 is replaced by the predicted class),
   greedy argmax over 1..C at test; SGDet test then re-labels the boxes with greedy class-aware
   NMS (IoU ``later_nms_thresh``, SGB ``LATER_NMS_PREDICTION_THRES`` 0.5).
4. Edge context: BiLSTM (``rel_layers``) + ``Linear(2H, H)`` over ``[obj_embed2(class), roi
   feature, object context]`` in the same order.
5. ``post_emb`` H -> 2H split into subject / object halves, pair concat -> ``post_cat`` 2H ->
   pooling_dim, times the union feature (``use_vision``; ``up_dim`` Linear when the union feature
   size differs), ``rel_compress`` -> P+1, plus the frequency bias of the (subject, object)
   classes (``use_bias``).

Differences from SGB: images of different lengths in one batch are packed correctly (SGB's
``sort_by_score`` assumed images already ordered by size, mixing objects of different images
otherwise), several images per batch work at test time, images with 0 objects or no pairs are
allowed, and a box fully suppressed by the SGDet NMS keeps its argmax instead of label 0.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from sgg.protocol import check_mode
from sgg.structures import Instances

from ..freq_bias import FrequencyBias
from ..word_vectors import random_word_vectors
from .common import (box_position_embedding, check_word_vectors, class_names, encode_box_info, fill_context_embeddings,
                     gt_label_logits, layer_init, nms_object_labels, object_class_distribution, union_up_projection)
from . import RELATION_PREDICTOR_REGISTRY, PredictorOutput

logger = logging.getLogger(__name__)

__all__ = ["MotifPredictor", "MotifContext", "DecoderRNN", "encode_box_info"]  # encode_box_info: re-exported


class _SortedPacking:
    """Sort objects of each image by a key (descending, stable) and move between the flat
    ``[N, ...]`` layout and a padded ``[B, T, ...]`` layout of the non-empty images."""

    def __init__(self, keys: torch.Tensor, num_objs: Sequence[int]) -> None:
        dev = keys.device
        counts = torch.as_tensor(list(num_objs), dtype=torch.long, device=dev)
        img = torch.repeat_interleave(torch.arange(len(num_objs), device=dev), counts)
        o1 = torch.sort(keys, descending=True, stable=True).indices
        perm = o1[torch.sort(img[o1], stable=True).indices]
        starts = torch.cumsum(counts, 0) - counts
        img_sorted = img[perm]
        nonempty = [i for i, n in enumerate(num_objs) if n > 0]
        remap = torch.full((len(num_objs),), -1, dtype=torch.long, device=dev)
        remap[torch.as_tensor(nonempty, dtype=torch.long, device=dev)] = torch.arange(len(nonempty), device=dev)
        self.perm = perm
        self.row = remap[img_sorted]
        self.t = torch.arange(perm.shape[0], device=dev) - starts[img_sorted]
        self.lengths = torch.as_tensor([num_objs[i] for i in nonempty], dtype=torch.long)  # CPU
        self.batch = len(nonempty)
        self.max_len = int(max(num_objs)) if len(num_objs) else 0
        self.num = perm.shape[0]

    def pad(self, x: torch.Tensor, fill: float = 0) -> torch.Tensor:
        out = x.new_full((self.batch, self.max_len) + tuple(x.shape[1:]), fill)
        out[self.row, self.t] = x[self.perm]
        return out

    def unpad(self, y: torch.Tensor) -> torch.Tensor:
        out = y.new_empty((self.num,) + tuple(y.shape[2:]))
        out[self.perm] = y[self.row, self.t]
        return out

    def run_lstm(self, lstm: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
        padded = self.pad(x)
        # LSTMs run in float32 outside autocast: oneDNN's CPU bf16 LSTM rejects float32 packed
        # inputs of equal lengths, and recurrent state accumulates rounding in low precision.
        with torch.autocast(device_type=padded.device.type, enabled=False):
            packed = pack_padded_sequence(padded.float(), self.lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=self.max_len)
        return self.unpad(out)


class DecoderRNN(nn.Module):
    """SGB's object decoder: a highway LSTM cell run over the sorted objects of each image.

    Input at step t: ``[inputs[t], embed(previous class)]`` (``embed`` row 0 = "start", row k+1 =
    class k). Output: class logits ``[N, C+1]`` and the committed classes ``[N]``.
    """

    def __init__(self, num_obj_classes: int, embed_dim: int, inputs_dim: int, hidden_dim: int,
                 rnn_drop: float, embed_vectors: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        self.num_obj_classes = num_obj_classes
        self.embed_dim = embed_dim
        self.hidden_size = hidden_dim
        self.rnn_drop = float(rnn_drop)
        self.obj_embed = nn.Embedding(num_obj_classes + 1, embed_dim)
        if embed_vectors is not None:
            with torch.no_grad():
                self.obj_embed.weight.copy_(embed_vectors)
        self.input_linearity = nn.Linear(inputs_dim + embed_dim, 6 * hidden_dim, bias=True)
        self.state_linearity = nn.Linear(hidden_dim, 5 * hidden_dim, bias=True)
        self.out_obj = nn.Linear(hidden_dim, num_obj_classes)
        with torch.no_grad():
            nn.init.zeros_(self.state_linearity.bias)
            nn.init.zeros_(self.input_linearity.bias)

    def lstm_equations(self, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                       dropout_mask: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        H = self.hidden_size
        pi = self.input_linearity(x)
        ps = self.state_linearity(h)
        i = torch.sigmoid(pi[:, 0 * H:1 * H] + ps[:, 0 * H:1 * H])
        f = torch.sigmoid(pi[:, 1 * H:2 * H] + ps[:, 1 * H:2 * H])
        g = torch.tanh(pi[:, 2 * H:3 * H] + ps[:, 2 * H:3 * H])
        o = torch.sigmoid(pi[:, 3 * H:4 * H] + ps[:, 3 * H:4 * H])
        c = i * g + f * c
        out = o * torch.tanh(c)
        hw = torch.sigmoid(pi[:, 4 * H:5 * H] + ps[:, 4 * H:5 * H])
        out = hw * out + (1 - hw) * pi[:, 5 * H:6 * H]
        if dropout_mask is not None and self.training:
            out = out * dropout_mask
        return out, c

    def forward(self, inputs: torch.Tensor, labels: Optional[torch.Tensor] = None
                ) -> Tuple[torch.Tensor, torch.Tensor]:
        """``inputs`` padded ``[B, T, D]``; ``labels`` padded ``[B, T]`` for teacher forcing (None:
        greedy). Returns padded logits ``[B, T, C+1]`` and classes ``[B, T]``."""
        B, T, _ = inputs.shape
        h = inputs.new_zeros(B, self.hidden_size)
        c = inputs.new_zeros(B, self.hidden_size)
        prev = self.obj_embed.weight[0].unsqueeze(0).expand(B, self.embed_dim)
        mask = None
        if self.training and self.rnn_drop > 0:
            # drawn from the CPU RNG (as SGB) so a seed gives the same mask on any device
            keep = (torch.rand(B, self.hidden_size) > self.rnn_drop).to(inputs.dtype)
            mask = (keep / (1.0 - self.rnn_drop)).to(inputs.device)
        dists, commits = [], []
        for t in range(T):
            h, c = self.lstm_equations(torch.cat([inputs[:, t], prev], dim=1), h, c, mask)
            dist = self.out_obj(h)
            best = dist[:, 1:].detach().argmax(dim=1) + 1
            if labels is not None:
                lab = labels[:, t].long()
                lab = torch.where(lab == 0, best, lab)
            else:
                lab = best
            dists.append(dist)
            commits.append(lab)
            prev = self.obj_embed(lab + 1)
        return torch.stack(dists, dim=1), torch.stack(commits, dim=1)


class MotifContext(nn.Module):
    """SGB's ``LSTMContext``: object context, object classes and edge context (see module doc)."""

    def __init__(self, num_obj_classes: int, in_channels: int, hidden_dim: int, embed_dim: int,
                 word_vectors: torch.Tensor, mode: str, dropout_rate: float = 0.2,
                 obj_layers: int = 1, rel_layers: int = 1, later_nms_thresh: float = 0.5) -> None:
        super().__init__()
        if obj_layers < 1 or rel_layers < 1:
            raise ValueError("CONTEXT_OBJ_LAYER and CONTEXT_REL_LAYER must be >= 1")
        self.mode = mode
        self.num_obj_classes = num_obj_classes
        self.obj_dim = in_channels
        self.hidden_dim = hidden_dim
        self.embed_dim = embed_dim
        self.later_nms_thresh = later_nms_thresh
        # word_vectors: [C+2, E] for ["start"] + class names
        self.obj_embed1 = nn.Embedding(num_obj_classes, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_classes, embed_dim)
        with torch.no_grad():
            self.obj_embed1.weight.copy_(word_vectors[1:])
            self.obj_embed2.weight.copy_(word_vectors[1:])
        self.pos_embed = box_position_embedding()
        obj_in = in_channels + embed_dim + 128
        self.obj_ctx_rnn = nn.LSTM(input_size=obj_in, hidden_size=hidden_dim, num_layers=obj_layers,
                                   dropout=dropout_rate if obj_layers > 1 else 0.0, bidirectional=True)
        if mode != "predcls":
            self.decoder_rnn = DecoderRNN(num_obj_classes, embed_dim, inputs_dim=obj_in + hidden_dim,
                                          hidden_dim=hidden_dim, rnn_drop=dropout_rate,
                                          embed_vectors=word_vectors)
        self.edge_ctx_rnn = nn.LSTM(input_size=embed_dim + hidden_dim + in_channels, hidden_size=hidden_dim,
                                    num_layers=rel_layers, dropout=dropout_rate if rel_layers > 1 else 0.0,
                                    bidirectional=True)
        self.lin_obj_h = nn.Linear(hidden_dim * 2, hidden_dim)
        self.lin_edge_h = nn.Linear(hidden_dim * 2, hidden_dim)
        self._warned_no_logits = False

    def _input_distribution(self, proposals: Sequence[Instances], n: int, ref: torch.Tensor) -> torch.Tensor:
        if not self._warned_no_logits and not all(p.has("logits") for p in proposals):
            logger.warning("%s: proposals carry no 'logits' field (detector class logits); the Motifs "
                           "object embedding uses a uniform class distribution. SGB feeds the "
                           "detector's logits on the boxes here.", self.mode)
            self._warned_no_logits = True
        return object_class_distribution(proposals, n, ref, self.num_obj_classes)

    def forward(self, x: torch.Tensor, proposals: Sequence[Instances], obj_labels: Optional[torch.Tensor],
                input_hook: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``x`` ``[N, in_channels]`` -> (obj_logits ``[N, C+1]``, obj_preds ``[N]``,
        edge_ctx ``[N, hidden]``).

        ``input_hook(name, tensor) -> tensor`` (optional) sees, and may replace, two inputs:
        ``"decoder"`` the decoder input ``[N, D+E+128+H]`` (SGCls/SGDet) and ``"edge"`` the
        ``[obj_embed2(label), x]`` part ``[N, E+D]`` of the edge input (the Causal predictor tracks
        their averages in training and substitutes them in its counterfactual pass)."""
        num_objs = [len(p) for p in proposals]
        boxes = [p.boxes.tensor.to(x.dtype) for p in proposals]
        if self.mode == "predcls":
            if obj_labels is None:
                raise ValueError("MotifPredictor(mode='predcls') needs obj_labels (the GT labels)")
            obj_embed = self.obj_embed1(obj_labels.long())
        else:
            obj_embed = self._input_distribution(proposals, x.shape[0], x) @ self.obj_embed1.weight
        pos_embed = self.pos_embed(encode_box_info(boxes, [p.image_size for p in proposals]))
        obj_pre_rep = torch.cat([x, obj_embed, pos_embed], dim=1)

        cx = torch.cat([(b[:, 0] + b[:, 2]) * 0.5 for b in boxes])
        packing = _SortedPacking(cx, num_objs)
        obj_ctx = self.lin_obj_h(packing.run_lstm(self.obj_ctx_rnn, obj_pre_rep))

        if self.mode == "predcls":
            obj_preds = obj_labels.long()
            obj_dists = gt_label_logits(obj_preds, self.num_obj_classes, x.dtype)
        else:
            dec_flat = torch.cat([obj_pre_rep, obj_ctx], dim=1)
            if input_hook is not None:
                dec_flat = input_hook("decoder", dec_flat)
            dec_in = packing.pad(dec_flat)
            teacher = None
            if self.training:
                if obj_labels is None:
                    raise ValueError("MotifPredictor training in sgcls/sgdet needs obj_labels (object targets)")
                teacher = packing.pad(obj_labels.long())
            dists, commits = self.decoder_rnn(dec_in, teacher)
            obj_dists = packing.unpad(dists)
            obj_preds = packing.unpad(commits)
            if self.mode == "sgdet" and not self.training:
                obj_preds = nms_object_labels(obj_dists, proposals, num_objs, self.later_nms_thresh)

        edge_in = torch.cat([self.obj_embed2(obj_preds), x], dim=1)
        if input_hook is not None:
            edge_in = input_hook("edge", edge_in)
        edge_in = torch.cat([edge_in, obj_ctx], dim=1)
        edge_ctx = self.lin_edge_h(packing.run_lstm(self.edge_ctx_rnn, edge_in))
        return obj_dists, obj_preds, edge_ctx



@RELATION_PREDICTOR_REGISTRY.register()
class MotifPredictor(nn.Module):
    """Neural Motifs relation predictor (SGB name, so ``PREDICTOR: "MotifPredictor"`` works).

    Args:
        num_obj_classes: C+1 (VG150: 151), background included.
        num_rel_classes: P+1 (VG150: 51), "no relation" included.
        in_channels: object ROI feature size (box head output, 4096).
        hidden_dim: context LSTM size (``CONTEXT_HIDDEN_DIM`` 512).
        pooling_dim: pair feature size (``CONTEXT_POOLING_DIM`` 4096).
        embed_dim: class embedding size (``EMBED_DIM`` 200).
        obj_classes: C+1 class names (index 0 background); default ``["__background__", "class_1", ...]``.
        pred_dist: ``[C+1, C+1, P+1]`` float frequency statistics for the bias (None: zeros).
        word_vectors: ``[C+2, embed_dim]`` initial class embeddings, rows in the order of
            :attr:`word_vector_names` (``"start"``, then ``obj_classes``); None: the seeded random
            vectors of :func:`~sgg.modeling.relation.word_vectors.random_word_vectors`. GloVe vectors
            are read by the load step (:func:`sgg.modeling.pretrained.load_pretrained`), which calls
            :meth:`set_word_vectors`; the constructor never opens a file.
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        union_dim: union feature size (default ``in_channels``); an ``up_dim`` Linear maps it to
            ``pooling_dim`` when they differ.
        dropout_rate, obj_layers, rel_layers: ``CONTEXT_DROPOUT_RATE`` / ``CONTEXT_OBJ_LAYER`` /
            ``CONTEXT_REL_LAYER``.
        use_vision, use_bias: ``PREDICT_USE_VISION`` / ``PREDICT_USE_BIAS``.
        later_nms_thresh: SGDet class-aware NMS IoU (``TEST.RELATION.LATER_NMS_PREDICTION_THRES``).
    """

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, in_channels: int = 4096,
                 hidden_dim: int = 512, pooling_dim: int = 4096, embed_dim: int = 200,
                 obj_classes: Optional[Sequence[str]] = None, pred_dist=None,
                 word_vectors: Optional[torch.Tensor] = None, mode: str = "predcls",
                 union_dim: Optional[int] = None, dropout_rate: float = 0.2, obj_layers: int = 1,
                 rel_layers: int = 1, use_vision: bool = True, use_bias: bool = True,
                 later_nms_thresh: float = 0.5) -> None:
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

        self.word_vector_names = ["start"] + obj_classes
        vectors = random_word_vectors(self.word_vector_names, embed_dim) if word_vectors is None else word_vectors
        self._check_word_vectors(vectors, embed_dim)
        self.context_layer = MotifContext(num_obj_classes, in_channels, hidden_dim, embed_dim, vectors, mode,
                                          dropout_rate=dropout_rate, obj_layers=obj_layers,
                                          rel_layers=rel_layers, later_nms_thresh=later_nms_thresh)
        self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
        self.post_cat = nn.Linear(hidden_dim * 2, pooling_dim)
        self.rel_compress = nn.Linear(pooling_dim, num_rel_classes, bias=True)
        layer_init(self.post_emb, 10.0 * (1.0 / hidden_dim) ** 0.5, normal=True)
        layer_init(self.post_cat)
        layer_init(self.rel_compress)
        self.up_dim = union_up_projection(self.use_vision, in_channels if union_dim is None else union_dim,
                                          pooling_dim)
        self.freq_bias = FrequencyBias(num_obj_classes, num_rel_classes, pred_dist) if self.use_bias else None

    def _check_word_vectors(self, vectors: torch.Tensor, embed_dim: int) -> None:
        n = len(self.word_vector_names)
        check_word_vectors(vectors, n, embed_dim, f"'start' + the {n - 1} class names")

    def word_vector_specs(self) -> Dict[str, Tuple[List[str], int]]:
        """The word vectors this predictor starts from (the load step fills them from GloVe):
        ``{"obj": ("start" + class names, embed_dim)}``."""
        return {"obj": (list(self.word_vector_names), self.context_layer.embed_dim)}

    @torch.no_grad()
    def set_word_vectors(self, obj: torch.Tensor) -> None:
        """Initialise the class embeddings (``obj_embed1``, ``obj_embed2`` and the object decoder's)
        from ``obj`` ``[C+2, embed_dim]``, rows in the order of :attr:`word_vector_names`."""
        self._check_word_vectors(obj, self.context_layer.embed_dim)
        fill_context_embeddings(self.context_layer, obj)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, num_obj_classes: int, num_rel_classes: int, mode: str,
                    union_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                    pred_dist=None, word_vectors: Optional[torch.Tensor] = None,
                    rel_classes: Optional[Sequence[str]] = None) -> "MotifPredictor":
        rh = cfg.MODEL.ROI_RELATION_HEAD
        return cls(
            num_obj_classes=num_obj_classes, num_rel_classes=num_rel_classes, in_channels=in_channels,
            hidden_dim=rh.CONTEXT_HIDDEN_DIM, pooling_dim=rh.CONTEXT_POOLING_DIM, embed_dim=rh.EMBED_DIM,
            obj_classes=obj_classes, pred_dist=pred_dist, word_vectors=word_vectors, mode=mode,
            union_dim=union_dim, dropout_rate=rh.CONTEXT_DROPOUT_RATE, obj_layers=rh.CONTEXT_OBJ_LAYER,
            rel_layers=rh.CONTEXT_REL_LAYER, use_vision=rh.PREDICT_USE_VISION, use_bias=rh.PREDICT_USE_BIAS,
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
            rel = self.rel_compress(x.new_zeros(0, self.pooling_dim))
            obj = x.new_zeros(0, self.num_obj_cls)
            return PredictorOutput([obj] * len(num_objs), [rel] * len(num_rels),
                                   [torch.zeros(0, dtype=torch.long, device=x.device)] * len(num_objs), {})

        obj_dists, obj_preds, edge_ctx = self.context_layer(x, proposals, obj_labels)

        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.hidden_dim)
        head_rep, tail_rep = edge_rep[:, 0], edge_rep[:, 1]
        offsets = np.concatenate([[0], np.cumsum(num_objs)[:-1]]).tolist()
        gp = torch.cat([r.long().reshape(-1, 2) + off for r, off in zip(rel_pairs, offsets)], dim=0).to(x.device)
        prod_rep = self.post_cat(torch.cat([head_rep[gp[:, 0]], tail_rep[gp[:, 1]]], dim=1))
        if self.use_vision:
            if union_features is None:
                raise ValueError("MotifPredictor(use_vision=True) needs union_features")
            prod_rep = prod_rep * (self.up_dim(union_features) if self.up_dim is not None else union_features)
        rel_dists = self.rel_compress(prod_rep)
        if self.use_bias:
            pair_pred = torch.stack([obj_preds[gp[:, 0]], obj_preds[gp[:, 1]]], dim=1)
            rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)

        return PredictorOutput(list(obj_dists.split(num_objs)), list(rel_dists.split(num_rels)),
                               list(obj_preds.split(num_objs)), {})
