"""PE-Net, the Prototype-based Embedding Network (Zheng et al., CVPR 2023), as in VL-Group/PENET's
``PrototypeEmbeddingNetwork`` (``roi_relation_predictors.py``, HEAD 9c9f507).

Sizes: D = ``in_channels`` (object ROI feature), U = ``union_dim``, M = ``mlp_dim`` (2048),
E = ``embed_dim`` (GloVe 300), H = ``hidden_dim`` (``CONTEXT_HIDDEN_DIM`` 512), V = ``vis2sem_dim``
(2M), Q = ``proj_dim`` (2M), C = ``num_obj_classes`` (C+1 with background), R = ``num_rel_classes``
(P+1 with "no relation"). ``MLP(a, b, c)`` = ``Linear(a, b) - ReLU - Linear(b, c)``.

Pipeline (N objects over all images, K pairs):

1. Objects (SGCls / SGDet only; PredCls keeps the GT labels and builds none of this):
   ``out_obj(lin_obj_cyx([roi feature, softmax(detector logits) @ obj_embed1, pos_embed(box)]))``
   (two Linears, no non-linearity between, no context) gives the refined logits ``[N, C]``; the
   committed label is their argmax over 1..C (also in training: no teacher forcing), and in SGDet
   test greedy class-aware NMS on them (``later_nms_thresh``, SGB ``LATER_NMS_PREDICTION_THRES``).
2. Entities: ``post_emb`` ``Linear(D, 2M)`` of the ROI feature, viewed ``[N, 2, M]``; the subject
   representation x_s is half 1, the object representation x_o half 0. With t = ``obj_embed``
   (GloVe) of the committed label: ``s = W_sub(t_s) + g_s * vis2sem(x_s)``,
   ``g_s = sigmoid(gate_sub([W_sub(t_s), vis2sem(x_s)]))``, then
   ``s = LayerNorm(s + Drop(ReLU(linear_sub(s))))``; the same for o with ``W_obj`` / ``gate_obj`` /
   ``linear_obj`` / ``norm_obj``. ``vis2sem = Linear(M, V) - ReLU - Drop - Linear(V, M)`` (shared).
3. Pair: ``F = ReLU(s + o) - (s - o)^2``; ``u = vis2sem(down_samp(union))`` with
   ``down_samp = MLP(U, M, M)``; ``r = F - sigmoid(gate_pred([F, u])) * u``;
   ``r = LayerNorm(r + Drop(ReLU(linear_rel_rep(r))))``; ``r = project_head(Drop(ReLU(r)))``.
4. Prototypes: ``c = project_head(Drop(ReLU(W_pred(rel_embed.weight))))`` ``[R, Q]``, one per
   predicate (``rel_embed``: GloVe of the predicate name, the mean of its words' vectors).
5. Logits: ``cos(r, c) * exp(logit_scale)`` ``[K, R]`` (``logit_scale`` learned, init
   ``log(1 / 0.07)``): ordinary logits for the head's cross-entropy. No frequency bias.

``W_sub``, ``W_obj``, ``W_pred`` = ``MLP(E, M // 2, M)``, ``gate_*`` = ``Linear(2M, M)``,
``project_head`` = ``MLP(M, M, Q)``; every ``Linear`` has PyTorch's default init except
``lin_obj_cyx`` / ``out_obj`` (maskrcnn-benchmark ``make_fc``: Kaiming-uniform a=1, bias 0).

Extra losses (training), the reference's ``add_losses`` under ``loss_*`` names:

* ``loss_l21`` (reference ``l21_loss``): ``sum_i ||S_i||_2 / R^2`` with ``S = C_n C_n^T``, C_n the
  L2-normalised prototypes, the right factor detached.
* ``loss_dist2`` (reference ``dist_loss2``): ``mean_i relu(proto_margin - min_{j != i}
  ||c_i - sg(c_j)||^2)`` (``proto_margin`` gamma2 = 7).
* ``loss_dis`` (reference ``loss_dis``): ``mean_k relu(g+ - g- + dis_margin)`` with
  ``g_j = ||r_k - c_j||^2``, g+ at the pair's predicate label (background included) and g- the
  mean of the ``num_neg`` (k1 = 10) smallest others (``dis_margin`` gamma1 = 1). It needs the
  sampled predicate labels: the head passes them as ``rel_labels`` (attribute
  ``uses_rel_labels``); without them it is left out (one warning).

Reference quirks (what this module does with each):

* ``linear_pred`` (``Linear(M, M)``) is built and never used: not built here. In PredCls the whole
  object branch (``pos_embed``, ``obj_embed1``, ``lin_obj_cyx``, ``out_obj``) gets no gradient:
  not built either (the convention of every sgg predictor); PE-Net PredCls checkpoints therefore
  carry extra keys, which the loader reports and ignores.
* ``pos_embed`` runs twice per forward (the first output discarded), so in training its
  BatchNorm running statistics are updated twice per step (an effective momentum of about
  0.002 instead of 0.001). It shapes SGCls/SGDet test outputs, so it is KEPT by default
  (``pos_embed_twice=True``; the discarded pass runs without autograd); ``False`` updates once.
  At test time the second pass changes nothing and is skipped.
* ``51`` hard-coded in the three losses (the l21 normaliser ``51 * 51``, the prototype-distance
  matrix, the ``loss_dis`` mask) and ``.cuda()`` hard-coded: FIXED (R = ``num_rel_classes`` and
  the input's device); identical numbers on VG150 (R = 51).
* ``loss_dis``'s g- sums the 11 smallest masked distances (the zeroed positive + 10 negatives) and
  divides by 10, wrong when R < 11: FIXED as the mean of ``min(num_neg, R - 1)`` nearest
  negatives (identical when R >= 11). The ``[K, R, Q]`` difference tensors of the reference are
  replaced by ``|a|^2 + |b|^2 - 2 a.b`` (clamped at 0) in float32 (memory; equal to rounding).
* Cosine normalisation without an epsilon (NaN for a zero vector): ``F.normalize`` (eps 1e-12).
* ``rel_nms`` (PE-Net's evaluation in PredCls/SGCls, from RU-Net/HL-Net: a per-predicate greedy
  NMS over pairs with overlapping subject AND object boxes of the same classes, IoU 0.6, then
  ranking by ``rel score * subject score * subject score``, the subject score SQUARED instead of
  subject times object) is evaluation-side post-processing, so it is not in this module: it is
  the evaluator option ``TEST.RELATION.REL_NMS 0.6`` (any predictor; 0 = off, SGB's evaluation;
  :func:`sgg.evaluation.rel_nms.rel_nms`, ``SceneGraphEvaluator(rel_nms_thresh=...)``). The README
  numbers of PredCls/SGCls use it (in PredCls the object scores are 1, so only the NMS matters).
  Kept: the subject score squared, background for a pair whose every predicate is suppressed.
  FIXED: A@K uses the re-sorted order for its GT-pair flags too (PE-Net zipped the re-sorted
  matches with the original order's flags).
* The subject is the SECOND half of ``post_emb`` and the object the first: kept (same weights).
* SGCls/SGDet training embeds the argmax labels, not the object targets (no teacher forcing):
  kept. ``obj_labels`` are read in PredCls only.
* ``down_samp`` takes ``CONTEXT_POOLING_DIM`` inputs in the reference, which must equal the union
  feature size there; here its input size is ``union_dim``.
* SGDet NMS: a box whose every class is suppressed keeps its argmax (the reference gives 0), the
  shared helper's choice (:func:`~sgg.modeling.relation.postprocess.class_aware_nms_labels`).
* Word vectors: the reference embeds an object name by GloVe of its longest word and a predicate
  by the mean of its words (row 0 random); the load step here averages the words of both.

Batching: all pairs of all images at once. In training the subject / object representations are
computed per pair (dropout masks per pair, as the reference); at test time, where dropout is the
identity, they are computed once per object and gathered (the same values, far less work).
"""
from __future__ import annotations

import logging
import math
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgg.protocol import check_mode
from sgg.structures import Instances

from ..word_vectors import random_word_vectors
from .common import (box_position_embedding, class_names, encode_box_info, gt_label_logits, nms_object_labels,
                     object_class_distribution)
from . import RELATION_PREDICTOR_REGISTRY, PredictorOutput

logger = logging.getLogger(__name__)

__all__ = ["PENetPredictor", "PENetMLP", "fusion_func", "prototype_l21_loss", "prototype_distance_loss",
           "prototype_margin_loss"]


class PENetMLP(nn.Module):
    """``num_layers`` Linears with ReLU between (none after the last); the reference's ``MLP``
    (same parameter names: ``layers.{i}``)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int = 2) -> None:
        super().__init__()
        h = [hidden_dim] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(n, k) for n, k in zip([input_dim] + h, h + [output_dim]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x


def fusion_func(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PE-Net's subject-object fusion ``ReLU(x + y) - (x - y)^2``."""
    return F.relu(x + y) - (x - y) ** 2


def _make_fc(dim_in: int, dim_out: int) -> nn.Linear:
    """maskrcnn-benchmark's ``make_fc``: Kaiming-uniform (a=1) weight, zero bias."""
    fc = nn.Linear(dim_in, dim_out)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.zeros_(fc.bias)
    return fc


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``[A, B]`` squared Euclidean distances of the rows of ``a`` ``[A, Q]`` and ``b`` ``[B, Q]``."""
    d = (a * a).sum(1, keepdim=True) + (b * b).sum(1).unsqueeze(0) - 2.0 * (a @ b.t())
    return d.clamp(min=0.0)


def prototype_l21_loss(proto: torch.Tensor) -> torch.Tensor:
    """Reference ``l21_loss``: ``sum_i ||S_i||_2 / R^2``, ``S = C_n sg(C_n)^T``, C_n the L2-normalised
    prototypes ``proto`` ``[R, Q]``."""
    cn = F.normalize(proto, dim=1)
    sim = cn @ cn.detach().t()
    r = proto.shape[0]
    return sim.norm(p=2, dim=1).sum() / float(r * r)


def prototype_distance_loss(proto: torch.Tensor, margin: float = 7.0) -> torch.Tensor:
    """Reference ``dist_loss2``: ``mean_i relu(margin - min_{j != i} ||c_i - sg(c_j)||^2)``."""
    r = proto.shape[0]
    if r < 2:
        return proto.sum() * 0.0
    d = _sq_dists(proto, proto.detach())
    eye = torch.eye(r, dtype=torch.bool, device=proto.device)
    nearest = d.masked_fill(eye, float("inf")).min(dim=1).values
    return F.relu(margin - nearest).mean()


def prototype_margin_loss(rel_rep: torch.Tensor, proto: torch.Tensor, labels: torch.Tensor,
                          margin: float = 1.0, num_neg: int = 10) -> torch.Tensor:
    """Reference ``loss_dis``: ``mean_k relu(g+ - g- + margin)``, ``g_j = ||r_k - c_j||^2``, g+ at
    ``labels[k]``, g- the mean of the ``min(num_neg, R - 1)`` smallest other distances.
    ``rel_rep`` ``[K, Q]``, ``proto`` ``[R, Q]``, ``labels`` ``[K]`` in 0..R-1; rows with a
    negative label (an ignored target, e.g. a fine predicate in HML's stage 1) are left out."""
    labels = labels.long().to(rel_rep.device)
    keep = labels >= 0
    if not bool(keep.all()):
        rel_rep, labels = rel_rep[keep], labels[keep]
    k_rows, r = rel_rep.shape[0], proto.shape[0]
    k = min(int(num_neg), r - 1)
    if k_rows == 0 or k < 1:
        return rel_rep.sum() * 0.0 + proto.sum() * 0.0
    d = _sq_dists(rel_rep, proto)
    pos_mask = F.one_hot(labels, r).bool()
    g_pos = d.gather(1, labels.view(-1, 1)).squeeze(1)
    g_neg = d.masked_fill(pos_mask, float("inf")).topk(k, dim=1, largest=False).values.mean(dim=1)
    return F.relu(g_pos - g_neg + margin).mean()


@RELATION_PREDICTOR_REGISTRY.register(name="PrototypeEmbeddingNetwork")
@RELATION_PREDICTOR_REGISTRY.register()
class PENetPredictor(nn.Module):
    """PE-Net relation predictor (registered as ``PENetPredictor`` and under the reference's name
    ``PrototypeEmbeddingNetwork``). See the module docstring for the architecture and quirks.

    Args:
        num_obj_classes: C+1 (VG150: 151), background included.
        num_rel_classes: P+1 (VG150: 51), "no relation" included; one prototype each.
        in_channels: object ROI feature size D (box head output, 4096).
        union_dim: union feature size U (default ``in_channels``), input of ``down_samp``.
        hidden_dim: object branch width (``CONTEXT_HIDDEN_DIM`` 512).
        mlp_dim: M, width of the semantic space (reference 2048, hard-coded there).
        embed_dim: E, word vector size (reference GloVe 300, hard-coded there).
        dropout_rate: every dropout (reference 0.2, hard-coded there).
        vis2sem_dim: hidden size of ``vis2sem`` (default 2M = 4096 as the reference).
        proj_dim: output size of ``project_head`` (default 2M = 4096 as the reference).
        obj_classes: C+1 names (index 0 background); default ``["__background__", "class_1", ...]``.
        rel_classes: P+1 predicate names (index 0 "no relation"); default
            ``["__background__", "predicate_1", ...]``.
        word_vectors: initial object vectors ``[C+1, E]`` (rows = ``obj_classes``), or a mapping
            ``{"obj": ..., "rel": ...}``; None: seeded random vectors
            (:func:`~sgg.modeling.relation.word_vectors.random_word_vectors`). GloVe is read by
            the load step, which calls :meth:`set_word_vectors`; the constructor opens no file.
        rel_word_vectors: initial predicate vectors ``[P+1, E]`` (rows = ``rel_classes``).
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        later_nms_thresh: SGDet test class-aware NMS IoU (``LATER_NMS_PREDICTION_THRES`` 0.5).
        logit_scale_init: initial ``logit_scale`` (reference ``log(1 / 0.07)``).
        proto_margin, dis_margin, num_neg: gamma2 (7), gamma1 (1) and k1 (10) of the losses.
        pos_embed_twice: update the position BatchNorm statistics twice per training step as the
            reference (see "Reference quirks").
    """

    #: the values :meth:`from_config` passes for the sizes the reference hard-codes (no config key)
    REFERENCE_SIZES: Dict[str, float] = {"mlp_dim": 2048, "embed_dim": 300, "dropout_rate": 0.2}

    uses_union_features = True
    uses_rel_labels = True

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, in_channels: int = 4096,
                 union_dim: Optional[int] = None, hidden_dim: int = 512, mlp_dim: int = 2048,
                 embed_dim: int = 300, dropout_rate: float = 0.2, vis2sem_dim: Optional[int] = None,
                 proj_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                 rel_classes: Optional[Sequence[str]] = None,
                 word_vectors: Union[None, torch.Tensor, Mapping[str, torch.Tensor]] = None,
                 rel_word_vectors: Optional[torch.Tensor] = None, mode: str = "predcls",
                 later_nms_thresh: float = 0.5, logit_scale_init: float = math.log(1 / 0.07),
                 proto_margin: float = 7.0, dis_margin: float = 1.0, num_neg: int = 10,
                 pos_embed_twice: bool = True) -> None:
        super().__init__()
        check_mode(mode)
        obj_classes = class_names(obj_classes, num_obj_classes)
        rel_classes = class_names(rel_classes, num_rel_classes, "rel_classes", "num_rel_classes", "predicate")
        if mlp_dim % 2:
            raise ValueError(f"mlp_dim must be even (W_sub/W_obj/W_pred hidden size mlp_dim // 2), got {mlp_dim}")
        self.mode = mode
        self.num_obj_cls = num_obj_classes
        self.num_rel_cls = num_rel_classes
        self.obj_classes, self.rel_classes = obj_classes, rel_classes
        self.in_channels = in_channels
        self.union_dim = in_channels if union_dim is None else union_dim
        self.hidden_dim = hidden_dim
        self.mlp_dim = mlp_dim
        self.embed_dim = embed_dim
        self.vis2sem_dim = 2 * mlp_dim if vis2sem_dim is None else vis2sem_dim
        self.proj_dim = 2 * mlp_dim if proj_dim is None else proj_dim
        self.later_nms_thresh = float(later_nms_thresh)
        self.proto_margin = float(proto_margin)
        self.dis_margin = float(dis_margin)
        self.num_neg = int(num_neg)
        self.pos_embed_twice = bool(pos_embed_twice)
        self._warned_no_logits = False
        self._warned_no_rel_labels = False

        if isinstance(word_vectors, Mapping):
            obj_vecs, rel_vecs = word_vectors.get("obj"), word_vectors.get("rel", rel_word_vectors)
        else:
            obj_vecs, rel_vecs = word_vectors, rel_word_vectors
        if obj_vecs is None:
            obj_vecs = random_word_vectors(obj_classes, embed_dim)
        if rel_vecs is None:
            rel_vecs = random_word_vectors(rel_classes, embed_dim)
        self._check_vectors("obj", obj_vecs)
        self._check_vectors("rel", rel_vecs)

        m, p = mlp_dim, dropout_rate
        # relation branch
        self.post_emb = nn.Linear(in_channels, 2 * m)
        self.obj_embed = nn.Embedding(num_obj_classes, embed_dim)
        self.rel_embed = nn.Embedding(num_rel_classes, embed_dim)
        self.W_sub = PENetMLP(embed_dim, m // 2, m)
        self.W_obj = PENetMLP(embed_dim, m // 2, m)
        self.W_pred = PENetMLP(embed_dim, m // 2, m)
        self.gate_sub = nn.Linear(2 * m, m)
        self.gate_obj = nn.Linear(2 * m, m)
        self.gate_pred = nn.Linear(2 * m, m)
        self.vis2sem = nn.Sequential(nn.Linear(m, self.vis2sem_dim), nn.ReLU(True), nn.Dropout(p),
                                     nn.Linear(self.vis2sem_dim, m))
        self.project_head = PENetMLP(m, m, self.proj_dim)
        self.linear_sub = nn.Linear(m, m)
        self.linear_obj = nn.Linear(m, m)
        self.linear_rel_rep = nn.Linear(m, m)
        self.norm_sub = nn.LayerNorm(m)
        self.norm_obj = nn.LayerNorm(m)
        self.norm_rel_rep = nn.LayerNorm(m)
        self.dropout_sub = nn.Dropout(p)
        self.dropout_obj = nn.Dropout(p)
        self.dropout_rel_rep = nn.Dropout(p)
        self.dropout_rel = nn.Dropout(p)
        self.dropout_pred = nn.Dropout(p)
        self.down_samp = PENetMLP(self.union_dim, m, m)
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        # object branch: its outputs reach no loss in PredCls
        if mode != "predcls":
            self.pos_embed = box_position_embedding()
            self.obj_embed1 = nn.Embedding(num_obj_classes, embed_dim)
            self.out_obj = _make_fc(hidden_dim, num_obj_classes)
            self.lin_obj_cyx = _make_fc(in_channels + embed_dim + 128, hidden_dim)
        self.set_word_vectors(obj=obj_vecs, rel=rel_vecs)

    # ------------------------------------------------------------------ construction / word vectors
    def _check_vectors(self, key: str, vectors: torch.Tensor) -> None:
        names = self.obj_classes if key == "obj" else self.rel_classes
        want = (len(names), self.embed_dim)
        if tuple(vectors.shape) != want:
            raise ValueError(f"{key} word vectors must have shape {want} (rows: the {want[0]} "
                             f"{'object class' if key == 'obj' else 'predicate'} names, columns: embed_dim), "
                             f"got {tuple(vectors.shape)}")

    def word_vector_specs(self) -> Dict[str, Tuple[List[str], int]]:
        """The word vectors this predictor starts from (the load step fills them from GloVe):
        ``{"obj": (object class names, embed_dim), "rel": (predicate names, embed_dim)}``."""
        return {"obj": (list(self.obj_classes), self.embed_dim), "rel": (list(self.rel_classes), self.embed_dim)}

    @torch.no_grad()
    def set_word_vectors(self, obj: Optional[torch.Tensor] = None, rel: Optional[torch.Tensor] = None) -> None:
        """Initialise ``obj_embed`` (and ``obj_embed1`` where built) from ``obj`` ``[C+1, E]`` and
        ``rel_embed`` from ``rel`` ``[P+1, E]``, rows in the order of :meth:`word_vector_specs`."""
        if obj is not None:
            self._check_vectors("obj", obj)
            self.obj_embed.weight.copy_(obj.to(self.obj_embed.weight))
            if hasattr(self, "obj_embed1"):
                self.obj_embed1.weight.copy_(obj.to(self.obj_embed1.weight))
        if rel is not None:
            self._check_vectors("rel", rel)
            self.rel_embed.weight.copy_(rel.to(self.rel_embed.weight))

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, num_obj_classes: int, num_rel_classes: int, mode: str,
                    union_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                    pred_dist=None, word_vectors: Optional[torch.Tensor] = None,
                    rel_classes: Optional[Sequence[str]] = None) -> "PENetPredictor":
        """``CONTEXT_HIDDEN_DIM`` (object branch), ``PENET.MLP_DIM`` (0: the reference's) and
        ``LATER_NMS_PREDICTION_THRES``; the sizes the reference hard-codes come from
        :attr:`REFERENCE_SIZES` (mlp 2048, GloVe 300, dropout 0.2; vis2sem / project_head 2 * mlp). ``pred_dist`` is unused (PE-Net has no frequency bias;
        ``PREDICT_USE_BIAS`` / ``PREDICT_USE_VISION`` are ignored as in the reference)."""
        rh = cfg.MODEL.ROI_RELATION_HEAD
        sizes = cls.REFERENCE_SIZES
        return cls(
            num_obj_classes=num_obj_classes, num_rel_classes=num_rel_classes, in_channels=in_channels,
            union_dim=union_dim, hidden_dim=rh.CONTEXT_HIDDEN_DIM,
            mlp_dim=int(rh.PENET.MLP_DIM) if rh.PENET.MLP_DIM > 0 else int(sizes["mlp_dim"]),
            embed_dim=int(sizes["embed_dim"]), dropout_rate=float(sizes["dropout_rate"]),
            obj_classes=obj_classes, rel_classes=rel_classes, word_vectors=word_vectors, mode=mode,
            later_nms_thresh=cfg.TEST.RELATION.LATER_NMS_PREDICTION_THRES,
        )

    # ------------------------------------------------------------------ forward
    def _refine_obj_labels(self, x: torch.Tensor, proposals: Sequence[Instances],
                           obj_labels: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """(obj_logits ``[N, C]``, committed labels ``[N]``)."""
        n = x.shape[0]
        if self.mode == "predcls":
            if obj_labels is None:
                raise ValueError("PENetPredictor(mode='predcls') needs obj_labels (the GT labels)")
            preds = obj_labels.long().to(x.device)
            dists = gt_label_logits(preds, self.num_obj_cls, x.dtype)
            return dists, preds
        if not self._warned_no_logits and not all(p.has("logits") for p in proposals):
            logger.warning("%s: proposals carry no 'logits' field (detector class logits); the PE-Net "
                           "object embedding uses a uniform class distribution.", self.mode)
            self._warned_no_logits = True
        obj_embed = object_class_distribution(proposals, n, x, self.num_obj_cls) @ self.obj_embed1.weight
        box_info = encode_box_info([p.boxes.tensor.to(x.dtype) for p in proposals],
                                   [p.image_size for p in proposals])
        if self.training and self.pos_embed_twice:
            with torch.no_grad():  # the reference's first, discarded pass: one more BN statistics update
                self.pos_embed(box_info)
        pos_embed = self.pos_embed(box_info)
        dists = self.out_obj(self.lin_obj_cyx(torch.cat([x, obj_embed.to(x.dtype), pos_embed], dim=1)))
        if self.mode == "sgdet" and not self.training:
            preds = nms_object_labels(dists, proposals, [len(p) for p in proposals],
                                      self.later_nms_thresh).to(x.device)
        else:
            preds = dists.detach()[:, 1:].argmax(dim=1) + 1
        return dists, preds.long()

    def _entity(self, t: torch.Tensor, xv: torch.Tensor, w: nn.Module, gate: nn.Linear, linear: nn.Linear,
                drop: nn.Dropout, norm: nn.LayerNorm) -> torch.Tensor:
        """``s = W(t) + g * vis2sem(x)``, ``g = sigmoid(gate([W(t), vis2sem(x)]))``, then the
        residual block ``LayerNorm(s + Drop(ReLU(linear(s))))``; rows independent."""
        emb = w(t)
        sem = self.vis2sem(xv)
        s = emb + sem * torch.sigmoid(gate(torch.cat([emb, sem], dim=-1)))
        return norm(drop(F.relu(linear(s))) + s)

    def prototypes(self) -> torch.Tensor:
        """``[R, proj_dim]`` predicate prototypes (before normalisation)."""
        return self.project_head(self.dropout_pred(F.relu(self.W_pred(self.rel_embed.weight))))

    def forward(self, roi_features: torch.Tensor, proposals: Sequence[Instances],
                rel_pairs: Sequence[torch.Tensor], union_features: Optional[torch.Tensor] = None,
                obj_labels: Optional[torch.Tensor] = None,
                rel_labels: Optional[Sequence[torch.Tensor]] = None) -> PredictorOutput:
        """See :mod:`sgg.modeling.relation.predictors` for the argument shapes; ``rel_labels``
        (training) per image int64 ``[M_i]`` predicate labels of ``rel_pairs`` (0 = no relation),
        needed by ``loss_dis``."""
        x = roi_features
        num_objs = [len(p) for p in proposals]
        num_rels = [int(r.shape[0]) for r in rel_pairs]
        if union_features is None:
            if sum(num_rels):
                raise ValueError("PENetPredictor needs union_features")
            union_features = x.new_zeros(0, self.union_dim)
        obj_dists, obj_preds = self._refine_obj_labels(x, proposals, obj_labels)

        offsets = np.concatenate([[0], np.cumsum(num_objs)[:-1]]).tolist() if num_objs else []
        gp = torch.cat([r.long().reshape(-1, 2).to(x.device) + off for r, off in zip(rel_pairs, offsets)], dim=0) \
            if rel_pairs else torch.zeros(0, 2, dtype=torch.long, device=x.device)
        si, oi = gp[:, 0], gp[:, 1]

        entity_rep = self.post_emb(x).view(-1, 2, self.mlp_dim)
        sub_rep, obj_rep = entity_rep[:, 1], entity_rep[:, 0]
        t = self.obj_embed(obj_preds)
        sub_args = (self.W_sub, self.gate_sub, self.linear_sub, self.dropout_sub, self.norm_sub)
        obj_args = (self.W_obj, self.gate_obj, self.linear_obj, self.dropout_obj, self.norm_obj)
        if self.training:  # per pair: independent dropout masks per pair, as the reference
            sub = self._entity(t[si], sub_rep[si], *sub_args)
            obj = self._entity(t[oi], obj_rep[oi], *obj_args)
        else:  # dropout is the identity: once per object, then gathered
            sub = self._entity(t, sub_rep, *sub_args)[si]
            obj = self._entity(t, obj_rep, *obj_args)[oi]
        fusion_so = fusion_func(sub, obj)

        sem_pred = self.vis2sem(self.down_samp(union_features.to(fusion_so.dtype)))
        rel_rep = fusion_so - sem_pred * torch.sigmoid(self.gate_pred(torch.cat([fusion_so, sem_pred], dim=-1)))
        rel_rep = self.norm_rel_rep(self.dropout_rel_rep(F.relu(self.linear_rel_rep(rel_rep))) + rel_rep)
        rel_rep = self.project_head(self.dropout_rel(F.relu(rel_rep)))
        proto = self.prototypes()
        rel_dists = F.normalize(rel_rep, dim=1) @ F.normalize(proto, dim=1).t() * self.logit_scale.exp()

        extra: Dict[str, torch.Tensor] = {}
        if self.training:
            extra = self._losses(rel_rep, proto, rel_labels)
        return PredictorOutput(list(obj_dists.split(num_objs)), list(rel_dists.split(num_rels)),
                               list(obj_preds.split(num_objs)), extra)

    def _losses(self, rel_rep: torch.Tensor, proto: torch.Tensor,
                rel_labels: Optional[Sequence[torch.Tensor]]) -> Dict[str, torch.Tensor]:
        # float32 outside autocast: distances of large vectors lose their meaning in half precision
        with torch.autocast(device_type=rel_rep.device.type, enabled=False):
            proto32, rel32 = proto.float(), rel_rep.float()
            out = {"loss_l21": prototype_l21_loss(proto32),
                   "loss_dist2": prototype_distance_loss(proto32, self.proto_margin)}
            if rel_labels is None:
                if not self._warned_no_rel_labels:
                    logger.warning("PENetPredictor: training without rel_labels (the sampled predicate "
                                   "labels); loss_dis is left out. RelationHead passes them to predictors "
                                   "with uses_rel_labels = True.")
                    self._warned_no_rel_labels = True
            else:
                labels = torch.cat([r.reshape(-1) for r in rel_labels]) if len(rel_labels) else \
                    torch.zeros(0, dtype=torch.long)
                if labels.shape[0] != rel32.shape[0]:
                    raise ValueError(f"rel_labels give {labels.shape[0]} labels for {rel32.shape[0]} pairs")
                out["loss_dis"] = prototype_margin_loss(rel32, proto32, labels, self.dis_margin, self.num_neg)
        return out
