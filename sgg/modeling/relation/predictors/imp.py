"""Iterative Message Passing (Xu et al., CVPR 2017) as in SGB's ``IMPPredictor`` / ``IMPContext``.

A graph over all images of the batch at once: one node per object (N = sum N_i), one edge per
candidate pair (M = sum M_i, pair indices made global by per-image object offsets), H = hidden_dim.

1. Unary inputs: ``obj_unary`` Linear(in_channels, H) of the ROI feature (no ReLU); ``edge_unary``
   Linear(pooling_dim, H) + ReLU of the union feature (after ``up_dim`` Linear(union_dim,
   pooling_dim) when the two sizes differ, SGB's ``union_single_not_match``).
2. Initial states: ``v_0 = node_gru(obj_unary, 0)``, ``e_0 = edge_gru(edge_unary, 0)``.
3. ``num_iter`` rounds, both updates from the states of round t (a simultaneous update):

   * edge: ``e_{t+1} = edge_gru(sigma(w_s[v_s, e_t]) * v_s + sigma(w_o[v_o, e_t]) * v_o, e_t)`` with
     ``v_s`` / ``v_o`` the subject / object node states ``v_t`` of the pair;
   * node: ``v_{t+1} = node_gru(sum_{pairs with subject n} sigma(w_out[v_s, e_t]) * e_t
     + sum_{pairs with object n} sigma(w_in[v_o, e_t]) * e_t, v_t)``, the sums an ``index_add``
     over the global pair indices (SGB multiplies dense ``[N, M]`` incidence matrices).

   The four gates ``w_*`` are Linear(2H, 1) + sigmoid.
4. ``rel_fc`` Linear(H, P+1) of the last edge states; ``obj_fc`` Linear(H, C+1) of the last node
   states (SGCls / SGDet). PredCls returns the GT labels as SGB's one-hot logits (+-1000).

No frequency bias, no word embeddings, no box geometry, no extra losses. ``obj_unary``,
``edge_unary``, ``obj_fc``, ``rel_fc`` use SGB's ``make_fc`` init (Kaiming-uniform, a=1, bias 0),
``up_dim`` Xavier-normal with bias 0, the GRU cells and gates PyTorch's default init. Module names
follow SGB (``context_layer.obj_unary``, ``context_layer.sub_vert_w_fc.0``, ``up_dim``, ...).

Parameters (D = in_channels, U = union_dim, Pd = pooling_dim, H = hidden_dim, C = num_obj_classes,
R = num_rel_classes, both with background)::

    D*H + H  +  Pd*H + H  +  2 * (6*H*H + 6*H)  +  4 * (2*H + 1)  +  H*R + R
    + (H*C + C  outside PredCls)  +  (U*Pd + Pd  if U != Pd)

(minus ``2 * (2*H + 1)`` in PredCls when ``num_iter == 1``: the node-update gates are not built).
SGB's VG150 X-101-FPN sizes (D = U = Pd = 4096, H = 512, C = 151, R = 51): 7,377,463 parameters in
PredCls, 7,454,926 in SGCls / SGDet (SGB's PredCls model also holds ``obj_fc``: 7,454,926).

Reference quirks
----------------
* Hidden size 512 and 3 iterations are hard-coded in SGB (``IMPContext(..., hidden_dim=512,
  num_iter=3)``; ``CONTEXT_HIDDEN_DIM`` is ignored). Kept: ``hidden_dim=512`` and ``num_iter=3`` are
  the constructor defaults and :meth:`IMPPredictor.from_config` passes them whatever the config
  says; other values are constructor arguments (no config key).
* ``PREDICT_USE_BIAS`` and ``PREDICT_USE_VISION`` are ignored (SGB hard-codes ``use_bias = False``
  and always uses the union feature). Kept.
* ``up_dim`` and ``edge_unary`` are two Linear layers in a row without a non-linearity (when
  ``MLP_HEAD_DIM != CONTEXT_POOLING_DIM``). Kept by default (it shapes the optimisation and SGB's
  checkpoints carry it); ``pooling_dim=None`` feeds the union feature straight to ``edge_unary``.
* SGB builds ``obj_fc`` in PredCls too, where it gets no gradient. Not built here (the predictor
  convention); SGB PredCls checkpoints carry its two extra keys. Likewise, with ``num_iter == 1``
  the node-update gates (``out_edge_w_fc``, ``in_edge_w_fc``) cannot reach the PredCls outputs and
  are not built (``node_gru.weight_hh`` then gets no gradient either: the node GRU runs once, on the
  zero initial state); and in PredCls the last node update (which feeds only ``obj_fc``) is
  skipped, which changes no output.
* The node update of round t reads the edge states ``e_t`` from before that round's edge update,
  i.e. both updates are simultaneous (as in the paper's formulation). Kept.
* Message sums: SGB builds dense ``[N, M]`` sub2rel / obj2rel matrices for the whole batch
  (O(N*M) memory); here ``index_add`` over the pair indices, the same sums (on CUDA the addition
  order, hence the last bits, may vary between runs).
* SGB's initial hidden states are float32 zeros whatever the autocast dtype; here PyTorch's
  default (zeros of the input dtype), the same values.
* SGDet / SGCls object labels are left to the post-processor (SGB: class-aware NMS in SGDet, argmax
  in SGCls), as SGB's IMP commits to none in the model.
"""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from sgg.protocol import check_mode
from sgg.structures import Instances

from .common import class_names, gt_label_logits, union_up_projection
from . import RELATION_PREDICTOR_REGISTRY, PredictorOutput

__all__ = ["IMPPredictor", "IMPContext", "make_fc"]


def make_fc(dim_in: int, dim_out: int) -> nn.Linear:
    """maskrcnn_benchmark's ``make_fc``: Linear with Kaiming-uniform (a=1) weight and zero bias."""
    fc = nn.Linear(dim_in, dim_out)
    nn.init.kaiming_uniform_(fc.weight, a=1)
    nn.init.zeros_(fc.bias)
    return fc


def _gate(hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(hidden_dim * 2, 1), nn.Sigmoid())


class IMPContext(nn.Module):
    """SGB's ``IMPContext``: message passing between object nodes and pair edges (module doc).

    Args:
        num_obj_classes / num_rel_classes: C+1 / P+1.
        in_channels: ROI feature size; edge_dim: size of the edge input (SGB: pooling_dim).
        hidden_dim / num_iter: SGB's hard-coded 512 / 3.
        mode: 'predcls' builds no object classifier.
    """

    def __init__(self, num_obj_classes: int, num_rel_classes: int, in_channels: int, edge_dim: int,
                 hidden_dim: int = 512, num_iter: int = 3, mode: str = "predcls") -> None:
        super().__init__()
        check_mode(mode)
        if num_iter < 1:
            raise ValueError(f"IMP needs num_iter >= 1 (otherwise objects and pairs exchange no message), "
                             f"got {num_iter}")
        self.mode = mode
        self.hidden_dim = hidden_dim
        self.num_iter = num_iter
        # SGB's construction order (the same random draws for the same seed)
        self.rel_fc = make_fc(hidden_dim, num_rel_classes)
        self.obj_fc = make_fc(hidden_dim, num_obj_classes) if mode != "predcls" else None
        self.obj_unary = make_fc(in_channels, hidden_dim)
        self.edge_unary = make_fc(edge_dim, hidden_dim)
        self.edge_gru = nn.GRUCell(input_size=hidden_dim, hidden_size=hidden_dim)
        self.node_gru = nn.GRUCell(input_size=hidden_dim, hidden_size=hidden_dim)
        self.sub_vert_w_fc = _gate(hidden_dim)
        self.obj_vert_w_fc = _gate(hidden_dim)
        # node updates reach the relation logits only through a later edge update
        self.updates_nodes_last = mode != "predcls"
        if self.updates_nodes_last or num_iter >= 2:
            self.out_edge_w_fc = _gate(hidden_dim)
            self.in_edge_w_fc = _gate(hidden_dim)
        else:
            self.out_edge_w_fc = self.in_edge_w_fc = None

    def forward(self, x: torch.Tensor, edge_features: torch.Tensor, pairs: torch.Tensor
                ) -> Tuple[Optional[torch.Tensor], torch.Tensor]:
        """``x`` ``[N, in_channels]``, ``edge_features`` ``[M, edge_dim]``, ``pairs`` ``[M, 2]`` global
        (subject, object) node indices -> (obj_logits ``[N, C+1]`` or None in PredCls, rel_logits
        ``[M, P+1]``)."""
        sub, obj = pairs[:, 0], pairs[:, 1]
        vert = self.node_gru(self.obj_unary(x))
        edge = self.edge_gru(torch.relu(self.edge_unary(edge_features)))
        for t in range(self.num_iter):
            sub_vert, obj_vert = vert[sub], vert[obj]
            msg_to_edge = (self.sub_vert_w_fc(torch.cat([sub_vert, edge], 1)) * sub_vert
                           + self.obj_vert_w_fc(torch.cat([obj_vert, edge], 1)) * obj_vert)
            new_edge = self.edge_gru(msg_to_edge, edge)
            if t < self.num_iter - 1 or self.updates_nodes_last:
                pre_out = self.out_edge_w_fc(torch.cat([sub_vert, edge], 1)) * edge
                pre_in = self.in_edge_w_fc(torch.cat([obj_vert, edge], 1)) * edge
                ctx = pre_out.new_zeros(vert.shape[0], pre_out.shape[1])
                ctx = ctx.index_add(0, sub, pre_out).index_add(0, obj, pre_in)
                vert = self.node_gru(ctx, vert)
            edge = new_edge
        obj_logits = self.obj_fc(vert) if self.obj_fc is not None else None
        return obj_logits, self.rel_fc(edge)


@RELATION_PREDICTOR_REGISTRY.register()
class IMPPredictor(nn.Module):
    """Iterative Message Passing relation predictor (SGB name, ``PREDICTOR: "IMPPredictor"``).

    Args:
        num_obj_classes: C+1 (VG150: 151), background included.
        num_rel_classes: P+1 (VG150: 51), "no relation" included.
        in_channels: object ROI feature size (box head output, 4096).
        hidden_dim: node / edge state size (SGB hard-codes 512).
        num_iter: message passing rounds (SGB hard-codes 3).
        pooling_dim: edge input size of ``edge_unary`` (``CONTEXT_POOLING_DIM`` 4096); an ``up_dim``
            Linear maps the union feature to it when ``union_dim`` differs. None: ``edge_unary``
            reads the union feature directly (no ``up_dim``).
        union_dim: union feature size (default ``in_channels``).
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        obj_classes, pred_dist, word_vectors: accepted for the common predictor signature and
            unused (IMP has no class embedding and no frequency bias).
    """

    uses_union_features = True

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, in_channels: int = 4096,
                 hidden_dim: int = 512, num_iter: int = 3, pooling_dim: Optional[int] = 4096,
                 union_dim: Optional[int] = None, mode: str = "predcls",
                 obj_classes: Optional[Sequence[str]] = None, pred_dist=None,
                 word_vectors: Optional[torch.Tensor] = None) -> None:
        super().__init__()
        check_mode(mode)
        if obj_classes is not None:
            class_names(obj_classes, num_obj_classes)  # checks the count
        self.mode = mode
        self.num_obj_cls = num_obj_classes
        self.num_rel_cls = num_rel_classes
        self.hidden_dim = hidden_dim
        union_dim = in_channels if union_dim is None else union_dim
        edge_dim = union_dim if pooling_dim is None else pooling_dim
        self.pooling_dim = edge_dim
        self.context_layer = IMPContext(num_obj_classes, num_rel_classes, in_channels, edge_dim,
                                        hidden_dim=hidden_dim, num_iter=num_iter, mode=mode)
        self.up_dim = union_up_projection(True, union_dim, edge_dim)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, num_obj_classes: int, num_rel_classes: int, mode: str,
                    union_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                    pred_dist=None, word_vectors: Optional[torch.Tensor] = None,
                    rel_classes: Optional[Sequence[str]] = None) -> "IMPPredictor":
        """SGB's sizes: hidden 512 and 3 rounds are hard-coded there (``CONTEXT_HIDDEN_DIM`` is not
        read); ``CONTEXT_POOLING_DIM`` is the edge input size."""
        rh = cfg.MODEL.ROI_RELATION_HEAD
        return cls(num_obj_classes=num_obj_classes, num_rel_classes=num_rel_classes, in_channels=in_channels,
                   hidden_dim=512, num_iter=3, pooling_dim=rh.CONTEXT_POOLING_DIM, union_dim=union_dim,
                   mode=mode, obj_classes=obj_classes, pred_dist=pred_dist, word_vectors=word_vectors)

    def forward(self, roi_features: torch.Tensor, proposals: Sequence[Instances],
                rel_pairs: Sequence[torch.Tensor], union_features: Optional[torch.Tensor] = None,
                obj_labels: Optional[torch.Tensor] = None) -> PredictorOutput:
        """See :mod:`sgg.modeling.relation.predictors` for the argument shapes."""
        if union_features is None:
            raise ValueError("IMPPredictor needs union_features (its edges start from them)")
        num_objs = [len(p) for p in proposals]
        num_rels = [int(r.shape[0]) for r in rel_pairs]
        x = roi_features
        dev = x.device
        counts = torch.as_tensor(num_objs, dtype=torch.long, device=dev)
        offsets = torch.cumsum(counts, 0) - counts
        if rel_pairs:
            rel_counts = torch.as_tensor(num_rels, dtype=torch.long, device=dev)
            pairs = torch.cat([r.reshape(-1, 2).to(device=dev, dtype=torch.long) for r in rel_pairs], dim=0)
            pairs = pairs + torch.repeat_interleave(offsets, rel_counts).unsqueeze(1)
        else:
            pairs = torch.zeros(0, 2, dtype=torch.long, device=dev)

        edge_in = self.up_dim(union_features) if self.up_dim is not None else union_features
        obj_dists, rel_dists = self.context_layer(x, edge_in, pairs)

        if self.mode == "predcls":
            if obj_labels is None:
                raise ValueError("IMPPredictor(mode='predcls') needs obj_labels (the GT labels)")
            labels = obj_labels.to(device=dev, dtype=torch.long)
            obj_dists = gt_label_logits(labels, self.num_obj_cls, x.dtype)
            committed = list(labels.split(num_objs))
        else:
            committed = None  # argmax (SGCls) / class-aware NMS (SGDet) in the post-processor, as SGB
        return PredictorOutput(list(obj_dists.split(num_objs)), list(rel_dists.split(num_rels)), committed, {})
