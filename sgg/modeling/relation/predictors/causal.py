"""Unbiased SGG by counterfactual analysis (Tang et al., CVPR 2020, "Unbiased Scene Graph Generation
from Biased Training") as SGB's ``CausalAnalysisPredictor`` (roi_relation_predictors.py).

Shapes: N objects over B images, M pairs; D = in_channels, U = union_dim, E = embed_dim,
H = hidden_dim, Pd = pooling_dim, C = num_obj_classes and R = num_rel_classes (background included).

1. Context (``context_layer``): :class:`~.motifs.MotifContext` ("motifs"),
   :class:`~.vctree.VCTreeContext` ("vctree") or :class:`~.vtranse.VTransEContext` ("vtranse") gives
   object logits ``[N, C]``, committed labels ``[N]`` and an edge feature ``[N, H]``.
2. Pair context ``ctx``: ``post_emb`` (no ReLU) splits the edge feature into subject / object halves;
   motifs / vctree: ``post_cat`` = ``Linear(2H, Pd) + ReLU`` of ``[head_s, tail_o]``; vtranse:
   ``post_emb`` is ``Linear(H, 2 Pd)`` and ``ctx = head_s - tail_o``. With ``spatial_for_vision``
   ``ctx *= spt_emb(pair box code)``, ``spt_emb`` = ``Linear(32, H)-ReLU-Linear(H, Pd)-ReLU`` of
   the 32-d :func:`box_pair_info` (subject, object, union and intersection boxes as
   ``x1, y1, x2, y2, cx, cy, w, h`` over ``max(W, H, 100)``).
3. Branches: ``ctx_compress(ctx)`` (vtranse: no bias), ``vis_compress(union feature)``, the frequency
   bias ``frq`` of the (subject, object) labels. ``fusion_type`` "sum": ``vis + ctx + frq``; "gate":
   ``ctx * sigmoid(vis + frq + ctx_gate_fc(ctx))``.
4. Training ``extra_losses``: ``loss_auxiliary_ctx`` (cross-entropy of ``ctx_compress(ctx)`` with the
   sampled predicate labels), for "sum" also ``loss_auxiliary_vis`` / ``loss_auxiliary_frq``; vctree
   also ``loss_binary`` (:func:`~.vctree.binary_loss`); vtranse in PredCls with ``vtranse_labels
   "sgb"`` also ``loss_refine_obj`` (see quirks). Exponential moving averages (rate
   ``average_ratio`` 0.0005, from 0; buffers, so checkpoints carry them) of the pair box code
   (``untreated_spt``), the separate spatial feature (``untreated_conv_spt``), ``ctx``
   (``avg_post_ctx``), the union feature (``untreated_feat``) and of the context inputs
   (``context_layer.untreated_dcd_feat`` decoder input, ``context_layer.untreated_edg_feat`` the
   ``[obj_embed2(label), x]`` edge input -- vtranse: ``context_layer.untreated_obj_feat`` classifier
   input and ``untreated_edg_feat`` the ``[x, pos]`` edge input), SGB's buffer names.
5. Test with ``effect_analysis`` and ``effect_type`` != "none": a no-grad counterfactual pass of
   the context with those inputs replaced by their averages gives ``ctx_bar`` (times
   ``spt_emb(untreated_spt)`` and ``untreated_conv_spt``) and the pair class probabilities
   ``P_bar``; with ``P`` = the factual pair class probabilities (soft frequency bias
   ``FrequencyBias.index_with_probability``) and the REAL union feature in both terms, L(ctx, P) the
   fused logits::

       TDE = L(ctx, P) - L(ctx_bar, P)     NIE = L(ctx_bar, P) - L(ctx_bar, P_bar)
       TE  = L(ctx, P) - L(ctx_bar, P_bar)

   The returned ``rel_logits`` are the effect; the object logits are the factual ones. Otherwise
   (training, or ``effect_type`` "none") the rel_logits are the factual ``L(ctx, labels)``.

In PredCls the motifs / vctree contexts keep the GT labels (logits +-1000): ``P_bar == P``, so
NIE == 0 and TE == TDE exactly. With "sum" fusion the vision branch cancels in TDE (it does not
depend on the union feature).

Parameter count (the context's own, plus the head; Lo / Le = CONTEXT_OBJ_LAYER / CONTEXT_REL_LAYER)::

    motifs context:  2*C*E + 4608 + Lstm(D+E+128) + (Lo-1)*Lstm(2H) + Lstm(E+H+D) + (Le-1)*Lstm(2H)
                     + 2*(2*H*H + H)  [lin_obj_h, lin_edge_h],  Lstm(k) = 2*(4*H*k + 4*H*H + 8*H)
                     + [SGCls/SGDet] (C+1)*E + 6*H*(D+2E+128+H) + 6*H + 5*H*H + 5*H + H*C + C
    vctree context:  as VCTreePredictor's context (sgg/modeling/relation/predictors/vctree.py)
    vtranse context: C*E + 4608 + (D+E+128)*H + H
                     + [classifier: not PredCls with vtranse_labels "protocol"] C*E + (D+E+128)*C + C
    head (motifs / vctree): 2*H*H + 2*H + 2*H*Pd + Pd + Pd*R + R
    head (vtranse):         2*H*Pd + 2*Pd + Pd*R
    every head:      + U*R + R (vis_compress) + C*C*R (freq_bias)
                     + [gate] Pd*R + R + [spatial_for_vision] 32*H + H + H*Pd + Pd

Reference quirks (SGB HEAD 6f75881; what this module does):

* **SPATIAL_FOR_VISION / EFFECT_ANALYSIS**: False in SGB's defaults.py (and in sgg's config
  defaults), True in SGB's ``e2e_relation_X_101_32_8_FPN_1x.yaml``, which every published Causal
  number used. The constructor defaults follow the yaml (True); :meth:`from_config` reads the
  config, so set both keys True for SGB's published model.
* **VTransE ignores PredCls** (spec): its classifier runs in every protocol, the predicted labels
  (argmax over all C, background included) reach the frequency bias and the edge embedding, and
  SGB trains it with its PredCls ``loss_refine_obj``. KEPT by default (``vtranse_labels="sgb"``; it
  shapes the paper's VTransE numbers): sgg's head has no object loss in PredCls, so the predictor
  returns ``loss_refine_obj`` (cross-entropy with the GT labels) itself there. sgg's post-processor
  still reports the GT labels in PredCls and picks labels over 1..C elsewhere (SGB's as well).
  ``vtranse_labels="protocol"``: PredCls uses the GT labels (``obj_embed1`` / ``pred_layer`` not
  built; NIE == 0 as for motifs / vctree), other protocols commit to the argmax over 1..C.
* **Pd == MLP_HEAD_DIM assertion**: DROPPED. The union feature only enters ``vis_compress``, which
  is ``Linear(U, R)``; with U == Pd (SGB's only allowed case) the model is SGB's.
* **SEPARATE_SPATIAL**: as SGB. The head's
  :class:`~sgg.modeling.relation.features.UnionFeatureExtractor` then returns ``(region, spatial
  [M, Pd])`` (its ``spatial_fc``, SGB's layers) and the context representation is multiplied by the
  spatial part; the head builds that extractor for a predictor whose ``separate_spatial`` is True.
  Like SGB, the spatial part is ``Pd = MLP_HEAD_DIM`` wide, so ``CONTEXT_POOLING_DIM`` must equal it.
* **Averages**: SGB tracks the context-input averages only when EFFECT_ANALYSIS is on during
  training (a model trained without it cannot do TDE) and updates the decoder-input average also in
  PredCls, where no decoder reads it. FIXED: every average is tracked in every training step
  (``EFFECT_ANALYSIS`` only chooses the test output); the PredCls decoder-input average and SGB's
  ``untreated_obj_feat`` of motifs / vctree (read only by an ``all_average`` mode the predictor never
  uses) are not kept. A batch with no pair leaves the pair averages unchanged (SGB: NaN). KEPT:
  ``avg_post_ctx`` and ``untreated_feat`` are tracked but no effect reads them (the union feature of
  the counterfactual is the real one).
* **Pair box code**: as SGB's ``get_box_pair_info``: normalised by ``max(W, H, 100)``; the union and
  intersection boxes get ``w = x2 - x1 + 1`` in NORMALISED units; an empty intersection is all
  zeros (touching boxes are not empty). Kept (the feature the weights were trained on).
* **Frequency bias**: by the committed labels in the factual logits, by the soft pair class
  probabilities in every effect term (so "none" and the first term of TDE differ). Kept.
* ``EFFECT_TYPE`` other than "none" without ``EFFECT_ANALYSIS``: SGB returns the factual logits
  silently; kept, with a warning at construction. With EFFECT_TYPE "none" SGB still runs the
  counterfactual pass; skipped here (same output).
* ``PREDICT_USE_VISION`` / ``PREDICT_USE_BIAS`` are ignored (always on), as SGB. SGB's
  ``binary_loss`` is named ``loss_binary`` (as :class:`~.vctree.VCTreePredictor`); its targets
  come from ``rel_binarys`` or the sampled ``rel_labels`` (``uses_rel_labels``). Without
  ``rel_labels`` in training the auxiliary losses are left out (one warning).
* Images with no object or no pair, several test images per batch (SGB's Motifs asserts one) work.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgg.protocol import check_mode
from sgg.structures import Instances

from ..freq_bias import FrequencyBias
from ..word_vectors import random_word_vectors
from .common import check_word_vectors, class_names, fill_context_embeddings, layer_init
from .motifs import MotifContext
from .vctree import VCTreeContext, binary_loss
from .vtranse import VTRANSE_LABELS, VTransEContext
from . import RELATION_PREDICTOR_REGISTRY, PredictorOutput

logger = logging.getLogger(__name__)

__all__ = ["CausalAnalysisPredictor", "box_info", "box_pair_info", "CONTEXT_LAYERS", "FUSION_TYPES",
           "EFFECT_TYPES"]

CONTEXT_LAYERS = ("motifs", "vctree", "vtranse")
FUSION_TYPES = ("sum", "gate")
EFFECT_TYPES = ("none", "TDE", "NIE", "TE")

# context input (hook name) -> its average buffer on the context module (SGB's names)
_CONTEXT_AVERAGES = {"decoder": "untreated_dcd_feat", "edge": "untreated_edg_feat", "object": "untreated_obj_feat"}


# ------------------------------------------------------------------------------ pair box code
def _corners_centre_size(b: torch.Tensor) -> torch.Tensor:
    """SGB's ``get_box_info(need_norm=False)``: ``[M, 4]`` -> ``[M, 8]`` (x1, y1, x2, y2, cx, cy, w, h)
    with the "+1" width."""
    wh = b[:, 2:4] - b[:, :2] + 1.0
    return torch.cat([b[:, :4], b[:, :2] + 0.5 * wh, wh], dim=1)


def box_info(boxes: Sequence[torch.Tensor], image_sizes: Sequence[Tuple[int, int]]) -> torch.Tensor:
    """SGB's ``get_box_info(need_norm=True)`` per image: ``[N_i, 4]`` boxes and (height, width) ->
    ``[sum N_i, 8]`` corner / centre / size code over ``max(W, H, 100)``."""
    out = [_corners_centre_size(b.float()) / float(max(h, w, 100)) for b, (h, w) in zip(boxes, image_sizes)]
    return torch.cat(out, dim=0) if out else torch.zeros(0, 8)


def box_pair_info(subj: torch.Tensor, obj: torch.Tensor) -> torch.Tensor:
    """SGB's ``get_box_pair_info``: subject and object codes ``[M, 8]`` (:func:`box_info`) ->
    ``[M, 32]`` (subject, object, union box, intersection box; the last all 0 when empty)."""
    union = torch.cat([torch.min(subj[:, :2], obj[:, :2]), torch.max(subj[:, 2:4], obj[:, 2:4])], dim=1)
    inter = torch.cat([torch.max(subj[:, :2], obj[:, :2]), torch.min(subj[:, 2:4], obj[:, 2:4])], dim=1)
    empty = (inter[:, 2] < inter[:, 0]) | (inter[:, 3] < inter[:, 1])
    inter_info = _corners_centre_size(inter).masked_fill(empty[:, None], 0.0)
    return torch.cat([subj, obj, _corners_centre_size(union), inter_info], dim=1)


def _cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    if labels.numel() == 0:  # no pair in the batch: a zero that keeps the graph
        return logits.sum() * 0.0
    return F.cross_entropy(logits.float(), labels.long().to(logits.device))


# ------------------------------------------------------------------------------ predictor
@RELATION_PREDICTOR_REGISTRY.register()
class CausalAnalysisPredictor(nn.Module):
    """SGB's ``CausalAnalysisPredictor`` (module docstring), SGB's name so old configs work.

    Args:
        num_obj_classes: C+1 (VG150: 151), background included.
        num_rel_classes: P+1 (VG150: 51), "no relation" included.
        in_channels: object ROI feature size (box head output, 4096).
        hidden_dim, pooling_dim, embed_dim: ``CONTEXT_HIDDEN_DIM`` / ``CONTEXT_POOLING_DIM`` /
            ``EMBED_DIM``.
        obj_classes: C+1 class names (index 0 background); default generic names.
        pred_dist: ``[C+1, C+1, P+1]`` float log-frequency statistics (frequency bias; VCTree's
            ``bi_freq_prior``); None: zeros.
        word_vectors: ``[C+2, embed_dim]`` initial class embeddings, rows ``"start"`` +
            ``obj_classes``; None: seeded random vectors (the load step fills GloVe through
            :meth:`set_word_vectors`).
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        union_dim: union feature size U (default ``in_channels``).
        context_layer: "motifs" | "vctree" | "vtranse" (``CAUSAL.CONTEXT_LAYER``).
        fusion_type: "sum" | "gate" (``CAUSAL.FUSION_TYPE``).
        effect_type: "none" | "TDE" | "NIE" | "TE", the test output (``CAUSAL.EFFECT_TYPE``).
        effect_analysis: ``CAUSAL.EFFECT_ANALYSIS``: whether ``effect_type`` applies at test.
        spatial_for_vision: ``CAUSAL.SPATIAL_FOR_VISION`` (``spt_emb`` of the pair box code).
        separate_spatial: ``CAUSAL.SEPARATE_SPATIAL``: ``union_features`` is ``(region [M, U],
            spatial [M, Pd])`` and ``ctx`` is multiplied by the spatial part.
        dropout_rate, obj_layers, rel_layers: the motifs / vctree context's (``CONTEXT_*``).
        later_nms_thresh: motifs' SGDet class-aware NMS IoU.
        tree_score: vctree's "sgb" | "paper" (``VCTREE.TREE_SCORE``).
        vtranse_labels: "sgb" | "protocol" (Reference quirks).
        average_ratio: rate of the moving averages (SGB 0.0005).
    """

    #: the head passes ``rel_labels`` (the sampled pairs' predicate labels) in training
    uses_rel_labels = True
    uses_union_features = True

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, in_channels: int = 4096,
                 hidden_dim: int = 512, pooling_dim: int = 4096, embed_dim: int = 200,
                 obj_classes: Optional[Sequence[str]] = None, pred_dist=None,
                 word_vectors: Optional[torch.Tensor] = None, mode: str = "predcls",
                 union_dim: Optional[int] = None, context_layer: str = "motifs", fusion_type: str = "sum",
                 effect_type: str = "none", effect_analysis: bool = True, spatial_for_vision: bool = True,
                 separate_spatial: bool = False, dropout_rate: float = 0.2, obj_layers: int = 1,
                 rel_layers: int = 1, later_nms_thresh: float = 0.5, tree_score: str = "sgb",
                 vtranse_labels: str = "sgb", average_ratio: float = 0.0005) -> None:
        super().__init__()
        check_mode(mode)
        for name, value, allowed in (("context_layer", context_layer, CONTEXT_LAYERS),
                                     ("fusion_type", fusion_type, FUSION_TYPES),
                                     ("effect_type", effect_type, EFFECT_TYPES),
                                     ("vtranse_labels", vtranse_labels, VTRANSE_LABELS)):
            if value not in allowed:
                raise ValueError(f"CausalAnalysisPredictor: {name} must be one of {allowed}, got {value!r}")
        obj_classes = class_names(obj_classes, num_obj_classes)
        if effect_type != "none" and not effect_analysis:
            logger.warning("CausalAnalysisPredictor: EFFECT_TYPE %s without EFFECT_ANALYSIS gives the factual "
                           "logits at test (as SGB); set MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_ANALYSIS True "
                           "for the %s.", effect_type, effect_type)
        self.mode = mode
        self.num_obj_cls = num_obj_classes
        self.num_rel_cls = num_rel_classes
        self.hidden_dim = hidden_dim
        self.pooling_dim = pooling_dim
        self.context_type = context_layer
        self.fusion_type = fusion_type
        self.effect_type = effect_type
        self.effect_analysis = bool(effect_analysis)
        self.spatial_for_vision = bool(spatial_for_vision)
        self.separate_spatial = bool(separate_spatial)
        self.average_ratio = float(average_ratio)
        self.use_vtranse = context_layer == "vtranse"
        self._warned_no_labels = False
        self._warned_zero_averages = False

        self.word_vector_names = ["start"] + obj_classes
        vectors = random_word_vectors(self.word_vector_names, embed_dim) if word_vectors is None else word_vectors
        self._check_word_vectors(vectors, embed_dim)
        if context_layer == "motifs":
            self.context_layer = MotifContext(num_obj_classes, in_channels, hidden_dim, embed_dim, vectors, mode,
                                              dropout_rate=dropout_rate, obj_layers=obj_layers,
                                              rel_layers=rel_layers, later_nms_thresh=later_nms_thresh)
        elif context_layer == "vctree":
            self.context_layer = VCTreeContext(num_obj_classes, in_channels, hidden_dim, embed_dim, vectors, mode,
                                               pred_dist=pred_dist, dropout_rate=dropout_rate, obj_layers=obj_layers,
                                               rel_layers=rel_layers, tree_score=tree_score)
        else:
            self.context_layer = VTransEContext(num_obj_classes, in_channels, hidden_dim, embed_dim, vectors, mode,
                                                labels=vtranse_labels)

        union_dim = in_channels if union_dim is None else union_dim
        self.union_dim = union_dim
        if self.use_vtranse:
            self.edge_dim = pooling_dim
            self.post_emb = nn.Linear(hidden_dim, pooling_dim * 2)
            self.ctx_compress = nn.Linear(pooling_dim, num_rel_classes, bias=False)  # PyTorch's init, as SGB
        else:
            self.edge_dim = hidden_dim
            self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
            self.post_cat = nn.Sequential(nn.Linear(hidden_dim * 2, pooling_dim), nn.ReLU(inplace=True))
            self.ctx_compress = nn.Linear(pooling_dim, num_rel_classes)
            layer_init(self.post_cat[0])
            layer_init(self.ctx_compress)
        layer_init(self.post_emb, 10.0 * (1.0 / hidden_dim) ** 0.5, normal=True)
        self.vis_compress = nn.Linear(union_dim, num_rel_classes)
        layer_init(self.vis_compress)
        if fusion_type == "gate":
            self.ctx_gate_fc = nn.Linear(pooling_dim, num_rel_classes)
            layer_init(self.ctx_gate_fc)
        self.freq_bias = FrequencyBias(num_obj_classes, num_rel_classes, pred_dist)
        if self.spatial_for_vision:
            self.spt_emb = nn.Sequential(nn.Linear(32, hidden_dim), nn.ReLU(inplace=True),
                                         nn.Linear(hidden_dim, pooling_dim), nn.ReLU(inplace=True))
            layer_init(self.spt_emb[0])
            layer_init(self.spt_emb[2])

        # moving averages ("untreated" inputs of the counterfactual), SGB's names
        self.register_buffer("untreated_spt", torch.zeros(32))
        self.register_buffer("untreated_conv_spt", torch.zeros(pooling_dim))
        self.register_buffer("avg_post_ctx", torch.zeros(pooling_dim))
        self.register_buffer("untreated_feat", torch.zeros(union_dim))
        # the context's input averages live on the context module, under SGB's names
        ctx = self.context_layer
        if self.use_vtranse:
            sizes = {"edge": in_channels + 128}
            if ctx.classifies:
                sizes["object"] = in_channels + embed_dim + 128
        else:
            sizes = {"edge": embed_dim + in_channels}
            if mode != "predcls":
                sizes["decoder"] = in_channels + embed_dim + 128 + hidden_dim
        for name, size in sizes.items():
            ctx.register_buffer(_CONTEXT_AVERAGES[name], torch.zeros(size))

    # -------------------------------------------------------------------------- word vectors
    def _check_word_vectors(self, vectors: torch.Tensor, embed_dim: int) -> None:
        n = len(self.word_vector_names)
        check_word_vectors(vectors, n, embed_dim, f"'start' + the {n - 1} class names")

    def word_vector_specs(self) -> Dict[str, Tuple[List[str], int]]:
        """``{"obj": ("start" + class names, embed_dim)}`` (the load step fills them from GloVe)."""
        return {"obj": (list(self.word_vector_names), self.context_layer.embed_dim)}

    @torch.no_grad()
    def set_word_vectors(self, obj: torch.Tensor) -> None:
        """Initialise the context's class embeddings (``obj_embed1`` / ``obj_embed2`` rows 1.., the
        decoder's all rows) from ``obj`` ``[C+2, embed_dim]``, rows in the order of
        :attr:`word_vector_names`."""
        self._check_word_vectors(obj, self.context_layer.embed_dim)
        fill_context_embeddings(self.context_layer, obj)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, num_obj_classes: int, num_rel_classes: int, mode: str,
                    union_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                    pred_dist=None, word_vectors: Optional[torch.Tensor] = None,
                    rel_classes: Optional[Sequence[str]] = None) -> "CausalAnalysisPredictor":
        """``MODEL.ROI_RELATION_HEAD.CAUSAL.*`` and the context keys; ``rel_classes`` is not used."""
        rh = cfg.MODEL.ROI_RELATION_HEAD
        causal = rh.CAUSAL
        if causal.SEPARATE_SPATIAL and union_dim is not None and union_dim != rh.CONTEXT_POOLING_DIM:
            raise ValueError(f"MODEL.ROI_RELATION_HEAD.CAUSAL.SEPARATE_SPATIAL multiplies the context "
                             f"(CONTEXT_POOLING_DIM {rh.CONTEXT_POOLING_DIM}) by the spatial feature, which is "
                             f"MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM ({union_dim}) wide: set them equal (SGB: 4096) "
                             f"or SEPARATE_SPATIAL False")
        return cls(
            num_obj_classes=num_obj_classes, num_rel_classes=num_rel_classes, in_channels=in_channels,
            hidden_dim=rh.CONTEXT_HIDDEN_DIM, pooling_dim=rh.CONTEXT_POOLING_DIM, embed_dim=rh.EMBED_DIM,
            obj_classes=obj_classes, pred_dist=pred_dist, word_vectors=word_vectors, mode=mode,
            union_dim=union_dim, context_layer=causal.CONTEXT_LAYER, fusion_type=causal.FUSION_TYPE,
            effect_type=causal.EFFECT_TYPE, effect_analysis=causal.EFFECT_ANALYSIS,
            spatial_for_vision=causal.SPATIAL_FOR_VISION, separate_spatial=causal.SEPARATE_SPATIAL,
            dropout_rate=rh.CONTEXT_DROPOUT_RATE, obj_layers=rh.CONTEXT_OBJ_LAYER, rel_layers=rh.CONTEXT_REL_LAYER,
            later_nms_thresh=cfg.TEST.RELATION.LATER_NMS_PREDICTION_THRES, tree_score=rh.VCTREE.TREE_SCORE,
            vtranse_labels=causal.VTRANSE_LABELS,
        )

    # -------------------------------------------------------------------------- averages
    @torch.no_grad()
    def _update_average(self, holder: torch.Tensor, value: torch.Tensor) -> None:
        """``holder <- (1 - r) holder + r mean(value)`` in place (SGB's ``moving_average``)."""
        if value.shape[0] == 0:
            return
        holder.mul_(1.0 - self.average_ratio).add_(value.detach().float().mean(0), alpha=self.average_ratio)

    def _track_input(self, name: str, value: torch.Tensor) -> torch.Tensor:
        self._update_average(getattr(self.context_layer, _CONTEXT_AVERAGES[name]), value)
        return value

    def _average_input(self, name: str, value: torch.Tensor) -> torch.Tensor:
        average = getattr(self.context_layer, _CONTEXT_AVERAGES[name])
        return average.to(value.dtype).view(1, -1).expand(value.shape[0], -1)

    def _check_averages(self) -> None:
        if self._warned_zero_averages:
            return
        self._warned_zero_averages = True
        if not any(bool(b.any()) for n, b in self.named_buffers() if "untreated" in n):
            logger.warning("CausalAnalysisPredictor: the moving averages of the counterfactual are all 0 (a model "
                           "that was never trained with this predictor?); the %s is computed against zeros.",
                           self.effect_type)

    # -------------------------------------------------------------------------- pieces
    def _context(self, x: torch.Tensor, proposals: Sequence[Instances], obj_labels: Optional[torch.Tensor],
                 hook: Optional[Callable], counterfactual: bool = False):
        """-> (obj_dists ``[N, C]``, obj_preds ``[N]``, edge_ctx ``[N, H]``, binary logits or None)."""
        if self.context_type == "vctree":
            out = self.context_layer(x, proposals, obj_labels, input_hook=hook)
            return out.obj_dists, out.obj_preds, out.edge_ctx, out.binary_logits
        if self.use_vtranse:
            dists, preds, edge = self.context_layer(x, proposals, obj_labels, input_hook=hook,
                                                    soft_label_embedding=counterfactual)
        else:
            dists, preds, edge = self.context_layer(x, proposals, obj_labels, input_hook=hook)
        return dists, preds, edge, None

    def _pair_context(self, obj_dists: torch.Tensor, edge_ctx: torch.Tensor, gp: torch.Tensor
                      ) -> Tuple[torch.Tensor, torch.Tensor]:
        """-> (``ctx`` ``[M, Pd]`` before the spatial factors, pair class probabilities ``[M, 2, C]``)."""
        edge_rep = self.post_emb(edge_ctx).view(-1, 2, self.edge_dim)
        head, tail = edge_rep[:, 0][gp[:, 0]], edge_rep[:, 1][gp[:, 1]]
        ctx = head - tail if self.use_vtranse else self.post_cat(torch.cat([head, tail], dim=1))
        prob = F.softmax(obj_dists.float(), dim=-1)
        return ctx, torch.stack([prob[gp[:, 0]], prob[gp[:, 1]]], dim=1)

    def _branches(self, vis_dists: torch.Tensor, ctx_rep: torch.Tensor, frq_dists: torch.Tensor
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
        """SGB's ``calculate_logits`` -> (fused logits ``[M, R]``, ``ctx_compress(ctx)``)."""
        ctx_dists = self.ctx_compress(ctx_rep)
        if self.fusion_type == "gate":
            return ctx_dists * torch.sigmoid(vis_dists + frq_dists + self.ctx_gate_fc(ctx_rep)), ctx_dists
        return vis_dists + ctx_dists + frq_dists, ctx_dists

    def _split_union(self, union_features) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
        if self.separate_spatial:
            if not isinstance(union_features, (tuple, list)) or len(union_features) != 2:
                raise ValueError("CausalAnalysisPredictor(separate_spatial=True) needs union_features = "
                                 "(region [M, union_dim], spatial [M, pooling_dim])")
            return union_features[0], union_features[1]
        if union_features is None:
            raise ValueError("CausalAnalysisPredictor needs union_features")
        return union_features, None

    def _empty(self, x: torch.Tensor, num_objs: List[int], num_rels: List[int]) -> PredictorOutput:
        # nothing to contextualise; keep the outputs attached to the graph for an empty loss
        rel = self.ctx_compress(x.new_zeros(0, self.pooling_dim))
        obj = x.new_zeros(0, self.num_obj_cls)
        extra: Dict[str, torch.Tensor] = {}
        if self.training:
            zero = rel.sum() * 0.0
            names = ["loss_auxiliary_ctx"] + (["loss_auxiliary_vis", "loss_auxiliary_frq"]
                                              if self.fusion_type == "sum" else [])
            if self.context_type == "vctree":
                names.append("loss_binary")
            if self.use_vtranse and self.mode == "predcls" and self.context_layer.classifies:
                names.append("loss_refine_obj")
            extra = {n: zero for n in names}
        return PredictorOutput([obj] * len(num_objs), [rel] * len(num_rels),
                               [torch.zeros(0, dtype=torch.long, device=x.device)] * len(num_objs), extra)

    # -------------------------------------------------------------------------- forward
    def forward(self, roi_features: torch.Tensor, proposals: Sequence[Instances],
                rel_pairs: Sequence[torch.Tensor],
                union_features: Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor], None] = None,
                obj_labels: Optional[torch.Tensor] = None, rel_labels: Optional[Sequence[torch.Tensor]] = None,
                rel_binarys: Optional[Sequence[torch.Tensor]] = None) -> PredictorOutput:
        """See :mod:`sgg.modeling.relation.predictors` for the common arguments. Training only:
        ``rel_labels`` per image ``[M_i]`` the sampled pairs' predicate labels (auxiliary losses and
        vctree's ``loss_binary``), ``rel_binarys`` per image ``[N_i, N_i]`` (``loss_binary``
        targets instead of ``rel_labels``)."""
        num_objs = [len(p) for p in proposals]
        num_rels = [int(r.shape[0]) for r in rel_pairs]
        x = roi_features
        union, spatial = self._split_union(union_features)
        if sum(num_objs) == 0:
            return self._empty(x, num_objs, num_rels)

        obj_dists, obj_preds, edge_ctx, bin_logits = self._context(
            x, proposals, obj_labels, self._track_input if self.training else None)
        offsets = np.concatenate([[0], np.cumsum(num_objs)[:-1]]).tolist()
        gp = torch.cat([r.long().reshape(-1, 2) + off for r, off in zip(rel_pairs, offsets)], dim=0).to(x.device)
        ctx_rep, pair_prob = self._pair_context(obj_dists, edge_ctx, gp)
        if self.separate_spatial:
            ctx_rep = ctx_rep * spatial
        spt_code = None
        if self.spatial_for_vision:
            code = box_info([p.boxes.tensor for p in proposals], [p.image_size for p in proposals]).to(x.device)
            spt_code = box_pair_info(code[gp[:, 0]], code[gp[:, 1]])
            ctx_rep = ctx_rep * self.spt_emb(spt_code)
        pair_pred = torch.stack([obj_preds[gp[:, 0]], obj_preds[gp[:, 1]]], dim=1)
        vis_dists = self.vis_compress(union)
        frq_dists = self.freq_bias.index_with_labels(pair_pred)
        rel_dists, ctx_dists = self._branches(vis_dists, ctx_rep, frq_dists)

        extra: Dict[str, torch.Tensor] = {}
        if self.training:
            extra.update(self._losses(ctx_dists, vis_dists, frq_dists, obj_dists, obj_labels, bin_logits,
                                      num_objs, rel_pairs, rel_labels, rel_binarys))
            if spt_code is not None:
                self._update_average(self.untreated_spt, spt_code)
            if spatial is not None:
                self._update_average(self.untreated_conv_spt, spatial)
            self._update_average(self.avg_post_ctx, ctx_rep)
            self._update_average(self.untreated_feat, union)
        elif self.effect_analysis and self.effect_type != "none" and gp.shape[0] > 0:
            rel_dists = self._effect(x, proposals, obj_labels, gp, vis_dists, ctx_rep, pair_prob)

        if self.use_vtranse:
            # SGB's post-processor picks the labels it reports (vtranse's may be background)
            labels_out = None if (not self.training and self.mode != "predcls") else obj_preds
        elif self.context_type == "vctree":
            # SGDet test: the post-processor re-labels by class-aware NMS (SGB); the bias used the argmax
            labels_out = None if (self.mode == "sgdet" and not self.training) else obj_preds
        else:
            labels_out = obj_preds  # motifs: SGDet test labels are already the class-aware NMS ones
        return PredictorOutput(list(obj_dists.split(num_objs)), list(rel_dists.split(num_rels)),
                               None if labels_out is None else list(labels_out.split(num_objs)), extra)

    def _losses(self, ctx_dists, vis_dists, frq_dists, obj_dists, obj_labels, bin_logits, num_objs, rel_pairs,
                rel_labels, rel_binarys) -> Dict[str, torch.Tensor]:
        out: Dict[str, torch.Tensor] = {}
        if rel_labels is None:
            if not self._warned_no_labels:
                logger.warning("CausalAnalysisPredictor got no rel_labels in training: no auxiliary losses%s. The "
                               "relation head passes them to predictors with uses_rel_labels = True.",
                               " and no loss_binary" if (bin_logits is not None and rel_binarys is None) else "")
                self._warned_no_labels = True
        else:
            labels = torch.cat([r.reshape(-1) for r in rel_labels]).long()
            out["loss_auxiliary_ctx"] = _cross_entropy(ctx_dists, labels)
            if self.fusion_type == "sum":
                out["loss_auxiliary_vis"] = _cross_entropy(vis_dists, labels)
                out["loss_auxiliary_frq"] = _cross_entropy(frq_dists, labels)
        if bin_logits is not None and (rel_labels is not None or rel_binarys is not None):
            out["loss_binary"] = binary_loss(bin_logits, num_objs, rel_pairs, rel_labels, rel_binarys)
        if self.use_vtranse and self.mode == "predcls" and self.context_layer.classifies:
            # SGB trains VTransE's PredCls classifier with its loss_refine_obj (GT labels)
            if obj_labels is None:
                raise ValueError("CausalAnalysisPredictor(mode='predcls') needs obj_labels (the GT labels)")
            out["loss_refine_obj"] = _cross_entropy(obj_dists, obj_labels)
        return out

    def _effect(self, x, proposals, obj_labels, gp, vis_dists, ctx_rep, pair_prob) -> torch.Tensor:
        """TDE / NIE / TE logits ``[M, R]`` (module docstring, step 5)."""
        self._check_averages()
        with torch.no_grad():
            obj_dists_bar, _, edge_ctx_bar, _ = self._context(x, proposals, obj_labels, self._average_input,
                                                              counterfactual=True)
            ctx_bar, pair_prob_bar = self._pair_context(obj_dists_bar, edge_ctx_bar, gp)
            if self.separate_spatial:
                ctx_bar = ctx_bar * self.untreated_conv_spt.view(1, -1).to(ctx_bar.dtype)
            if self.spatial_for_vision:
                ctx_bar = ctx_bar * self.spt_emb(self.untreated_spt.view(1, -1))
        frq = self.freq_bias.index_with_probability(pair_prob)
        if self.effect_type == "TDE":
            return self._branches(vis_dists, ctx_rep, frq)[0] - self._branches(vis_dists, ctx_bar, frq)[0]
        frq_bar = self.freq_bias.index_with_probability(pair_prob_bar)
        if self.effect_type == "NIE":
            return self._branches(vis_dists, ctx_bar, frq)[0] - self._branches(vis_dists, ctx_bar, frq_bar)[0]
        return self._branches(vis_dists, ctx_rep, frq)[0] - self._branches(vis_dists, ctx_bar, frq_bar)[0]
