"""VCTree (Tang et al., CVPR 2019) as in SGB's ``VCTreePredictor`` / ``VCTreeLSTMContext``.

Pipeline per batch (N objects over B images, M pairs; D = in_channels, E = embed_dim,
H = hidden_dim, C = num_obj_classes with background, R = num_rel_classes):

1. Object input ``[roi feature (D), class embedding (E), box position (128)]`` as in Motifs:
   ``obj_embed1`` of the GT label in PredCls, ``softmax(detector logits) @ obj_embed1.weight`` in
   SGCls/SGDet; ``pos_embed`` of :func:`~.common.encode_box_info`.
2. Pair scores, one ``[N_i, N_i]`` matrix per image: per object ``[obj_reduce(x.detach()) (128),
   emb_reduce(emb.detach()) (128), box_embed(box code) (128), overlap_embed(overlap code) (128)]``,
   ``score_pre`` -> H, then ``score_sub`` / ``score_obj`` (all + ReLU). For rows ``i`` and columns
   ``j``: ``co[i, j] = p_i^T W p_j`` with ``W = bi_freq_prior.weight.view(C, C)`` and ``p`` the class
   distribution (PredCls one-hot), ``vis[i, j] = vision_prior([sub_j * obj_i, sub_j, obj_i,
   co[i, j]])``, binary logit ``sigmoid(vis) * co``, score ``sigmoid(logit)``. (``vision_prior`` is
   linear, so its product term is one batched matmul: no ``[N, N, 3H+1]`` tensor is built.)
3. Tree per image (:func:`vctree_forest`): root = argmax of the row means of the score matrix; then
   Prim-style, each step attaches the remaining node ``j`` with the highest ``score[i, j]`` to the
   tree node ``i`` giving it. Binary tree: a node's first child is its left child, each next child
   the right child of its previous sibling. Runs on the CPU, batched over the images (``max N_i``
   steps, each vectorised over all images and candidates).
4. Object context: a bidirectional tree-LSTM (:mod:`.tree_lstm`, each direction H/2) over the
   binary trees, evaluated level by level for the whole batch. Object classes: PredCls keeps the GT
   labels (logits +-1000); SGCls/SGDet decode ``[object input, object context]`` with a root-to-leaves
   tree-LSTM of width H fed the embedding of the binary parent's label (see Reference quirks).
5. Edge context: a second bidirectional tree-LSTM over ``[obj_embed2(label), x, object context]``.
6. Head: ``relu(post_emb)`` H -> 2H split into subject / object halves, pair concat -> ``post_cat``
   2H -> pooling_dim, times the union feature (``up_dim`` Linear when the sizes differ),
   ``ctx_compress`` -> R, plus the frequency bias of the committed (subject, object) labels.
7. ``extra_losses`` in training: ``loss_binary`` (SGB ``binary_loss``): per image the mean
   BCE-with-logits of the ``[N_i, N_i]`` binary logits against the symmetric 0/1 matrix of related
   pairs, averaged over the images with objects.

Parameter count (``Lo`` / ``Le`` = obj / edge layers; ``BiTree(k) = 13*h*k + 17*h^2 + 30*h`` with
``h = H / 2`` is a bidirectional tree-LSTM layer of input size ``k``; ``Pd`` = pooling_dim,
``U`` = union_dim)::

    2*C*E + 4608 (pos_embed) + 1536 (box_embed) + 1152 (overlap_embed) + C*C (bi_freq_prior)
    + 128*D + 128*E + 256 (obj_reduce, emb_reduce) + 513*H + 2*H*H + 2*H + 3*H + 2 (score net)
    + BiTree(D + E + 128) + (Lo - 1)*BiTree(H) + BiTree(E + D + H) + (Le - 1)*BiTree(H)
    + [SGCls/SGDet only] (C+1)*E + 6*H*(D + 2*E + 128 + H) + 5*H*H + 11*H + H*C + C (decoder)
    + 2*H*H + 2*H + 2*H*Pd + Pd + Pd*R + R (head) + C*C*R (use_bias) + U*Pd + Pd (use_vision, U != Pd)

Reference quirks (SGB HEAD 6f75881; what this module does):

* **Saturated tree scores** (SGB issue #55): ``bi_freq_prior`` starts at the symmetrised sum over
  predicates of ``pred_dist``, i.e. a sum of ~2R log-probabilities (about -690 for VG150), which
  also enters ``vision_prior``: ``|vis|`` is large from the start and the binary logit
  ``sigmoid(vis) * co`` can never be positive, so the scores sit at 0 (``sigmoid(vis) ~ 1``) or just
  below 0.5 (``sigmoid(vis) ~ 0``), nearly or exactly tied, and ``binary_loss`` stays near ln 2.
  With all scores tied the tree is the star of the root over the other nodes in index order (a
  right chain in the binary tree). KEPT by default (``tree_score="sgb"``), as it shapes the
  published numbers. ``tree_score="paper"`` is the form of the paper and of the original VCTree
  code: ``bi_freq_prior`` starts at the probability that two objects of the classes are related,
  ``1 - P(bg | a, b)`` from ``pred_dist[..., 0]`` (symmetrised mean; 1 without ``pred_dist``),
  the binary loss supervises ``vis`` (logit = ``vis``) and the tree score is ``sigmoid(vis) * co``.
  Same parameters, so checkpoints load either way.
* **Ties in the tree** are broken as SGB's flattened ``max``: the root is the first row of maximal
  mean; at each step the pair (tree node, remaining node) first in (insertion order of the tree
  node, index of the remaining node) among the maximal scores. Kept (it decides the tree whenever
  the scores saturate).
* **Decoder** (SGCls/SGDet): no teacher forcing (the object targets given in training are not
  read); in training the label embedded for the children
  is SAMPLED from ``softmax(logits[1:])``, the committed label is the argmax over ``1..C`` in every
  mode, and it is what ``obj_embed2`` and the frequency bias see, also in training. Kept. (SGB's
  ``multinomial`` over ``softmax(logits)[1:]`` fails when those probabilities underflow; the
  sample is drawn from the renormalised ``softmax(logits[1:])``, the same distribution.)
* **SGDet labels**: SGB's predictor uses the argmax labels, its post-processor re-labels the boxes
  by class-aware NMS. Kept: in SGDet evaluation :class:`PredictorOutput` ``obj_labels`` is None, so
  the post-processor runs the NMS.
* **Overlap code** (``get_overlap_info``): intersections use the "+1" width, areas do not, and
  both are normalised by a fixed 1024^2 rather than the image size; each box counts itself among
  the boxes it intersects. Kept (it is the feature the weights were trained on).
* **Dropout**: one recurrent mask per image per tree-LSTM direction (rate CONTEXT_DROPOUT_RATE,
  only with more than one layer, as SGB) and per image for the decoder (always); drawn from the
  CPU RNG. Kept.
* ``PREDICT_USE_VISION`` / ``PREDICT_USE_BIAS`` are ignored by SGB's VCTree (always on). FIXED:
  honoured (``use_vision`` / ``use_bias``); their defaults (True) give SGB's model.
* ``binary_loss`` is named ``loss_binary`` here (the trainer sums the ``loss*`` keys). Its targets
  are the symmetric matrix of related pairs: SGB builds it from all GT relations (SGDet: every
  matched proposal pair); here from the keyword argument ``rel_binarys`` when given, else from the
  sampled pairs with a predicate label > 0 (``rel_labels``) -- the same matrix in PredCls/SGCls
  unless the positive quota drops GT relations, in SGDet the sampled matched pairs only. The head
  passes ``rel_labels`` to predictors with ``uses_rel_labels = True``; without either argument no
  ``loss_binary`` is returned (one warning) and the score network does not learn.
* Images with no object (SGB crashes) give empty outputs and count nowhere in ``loss_binary``;
  several images per batch work at test time; one-box training batches use BN running statistics.
"""
from __future__ import annotations

import logging
from typing import Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sgg.protocol import check_mode
from sgg.structures import Instances

from ..freq_bias import FrequencyBias
from ..word_vectors import random_word_vectors
from .common import (BatchNorm1dAnySize, box_position_embedding, check_word_vectors, class_names, encode_box_info,
                     fill_context_embeddings, gt_label_logits, layer_init, object_class_distribution,
                     union_up_projection)
from .tree_lstm import BinaryForest, MultiLayerBiTreeLSTM, TreeLSTMDecoder
from . import RELATION_PREDICTOR_REGISTRY, PredictorOutput

logger = logging.getLogger(__name__)

__all__ = ["VCTreeContext", "VCTreeForest", "VCTreePredictor", "binary_loss", "binary_targets", "overlap_info", "vctree_forest"]

TREE_SCORES = ("sgb", "paper")
_IM_SCALE = 1024.0  # SGB's fixed normaliser of the overlap code


# --------------------------------------------------------------------------------- padding helpers
def _pad_index(num_objs: Sequence[int], device) -> Tuple[torch.Tensor, torch.Tensor, int]:
    """(image ``[N]``, slot ``[N]``, max N) of the flat objects in a ``[B, max N]`` layout."""
    counts = torch.as_tensor(list(num_objs), dtype=torch.long, device=device)
    image = torch.repeat_interleave(torch.arange(len(num_objs), device=device), counts)
    starts = torch.cumsum(counts, 0) - counts
    slot = torch.arange(image.shape[0], device=device) - starts[image]
    return image, slot, int(max(num_objs, default=0))


def _pad(x: torch.Tensor, image: torch.Tensor, slot: torch.Tensor, batch: int, nmax: int) -> torch.Tensor:
    out = x.new_zeros((batch, nmax) + tuple(x.shape[1:]))
    out[image, slot] = x
    return out


# --------------------------------------------------------------------------------- box codes
def overlap_info(boxes: Sequence[torch.Tensor]) -> torch.Tensor:
    """SGB's ``get_overlap_info``: 6 overlap features per box -> ``[sum N_i, 6]``.

    Per box ``i`` of an image: number of boxes of the image it intersects (itself included),
    summed intersection area / 1024^2, summed IoU, those two divided by the count, and its area /
    1024^2 (intersections with the "+1" width, the area without).
    """
    num = [int(b.shape[0]) for b in boxes]
    dev = boxes[0].device if len(boxes) else torch.device("cpu")
    if sum(num) == 0:
        return torch.zeros(0, 6, device=dev)
    image, slot, nmax = _pad_index(num, dev)
    flat = torch.cat([b.float() for b in boxes], dim=0)
    bx = _pad(flat, image, slot, len(num), nmax)  # [B, n, 4]
    valid = _pad(torch.ones(flat.shape[0], dtype=torch.bool, device=dev), image, slot, len(num), nmax)
    pair = valid[:, :, None] & valid[:, None, :]
    lt = torch.max(bx[:, :, None, :2], bx[:, None, :, :2])
    rb = torch.min(bx[:, :, None, 2:], bx[:, None, :, 2:])
    wh = (rb - lt + 1.0).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1] * pair
    area1 = (bx[..., 2] - bx[..., 0] + 1.0) * (bx[..., 3] - bx[..., 1] + 1.0)
    union = area1[:, :, None] + area1[:, None, :] - inter
    iou = inter / (union + 1e-9) * pair
    count = (inter > 0).float().sum(2)
    inter_sum = inter.sum(2) / (_IM_SCALE * _IM_SCALE)
    iou_sum = iou.sum(2)
    area = (bx[..., 2] - bx[..., 0]) * (bx[..., 3] - bx[..., 1]) / (_IM_SCALE * _IM_SCALE)
    info = torch.stack([count, inter_sum, iou_sum, inter_sum / (count + 1e-9), iou_sum / (count + 1e-9), area], 2)
    return info[image, slot]


# --------------------------------------------------------------------------------- the trees
class VCTreeForest(NamedTuple):
    """The VCTree of each image, flattened over the batch (node order = the objects' order).

    All int64 CPU tensors ``[sum N_i]`` with per-image (local) indices: ``image``; ``parent`` the
    parent in the maximum spanning tree (-1: root); ``bin_parent`` / ``is_left`` / ``depth`` the
    binary tree (first child = left child, next sibling = right child of the previous one; depth of
    the root 0); ``rank`` the step at which the node joined its tree (root 0).
    """

    num_objs: List[int]
    image: torch.Tensor
    parent: torch.Tensor
    bin_parent: torch.Tensor
    is_left: torch.Tensor
    depth: torch.Tensor
    rank: torch.Tensor

    def offsets(self) -> torch.Tensor:
        counts = torch.as_tensor(self.num_objs, dtype=torch.long)
        return (torch.cumsum(counts, 0) - counts)[self.image]

    def binary(self, device=None) -> BinaryForest:
        """The level schedule of the binary trees (global indices) for :mod:`.tree_lstm`."""
        glob = torch.where(self.bin_parent >= 0, self.bin_parent + self.offsets(), self.bin_parent)
        return BinaryForest(glob, self.is_left, self.depth, self.image, device=device)


@torch.no_grad()
def vctree_forest(scores: torch.Tensor, num_objs: Sequence[int]) -> VCTreeForest:
    """SGB's ``generate_forest`` + ``arbForest_to_biForest`` for a batch.

    Args:
        scores: ``[B, max N, max N]`` pair scores (image ``b`` in ``[b, :N_b, :N_b]``; rows = the
            tree node, columns = the node to attach); read on the CPU.
        num_objs: ``N_b`` per image.
    """
    num_objs = [int(n) for n in num_objs]
    batch, nmax = len(num_objs), max(num_objs, default=0)
    S = scores.detach().float().cpu()[:, :nmax, :nmax]
    S = torch.nan_to_num(S, nan=-float("inf"))
    n = torch.as_tensor(num_objs, dtype=torch.long)
    ar = torch.arange(nmax)
    bi = torch.arange(batch)
    valid = ar[None, :] < n[:, None]
    neg_inf = torch.tensor(-float("inf"))
    roots = torch.tensor([int(S[b, :k, :k].mean(1).argmax()) if k else 0 for b, k in enumerate(num_objs)],
                         dtype=torch.long)
    parent = torch.full((batch, nmax), -1, dtype=torch.long)
    bin_parent = torch.full((batch, nmax), -1, dtype=torch.long)
    is_left = torch.zeros(batch, nmax, dtype=torch.bool)
    depth = torch.zeros(batch, nmax, dtype=torch.long)
    rank = torch.zeros(batch, nmax, dtype=torch.long)
    last_child = torch.full((batch, nmax), -1, dtype=torch.long)
    in_tree = torch.zeros(batch, nmax, dtype=torch.bool)
    has = n > 0
    in_tree[bi[has], roots[has]] = True
    # best link of each outside node so far: score, tree node, and that node's insertion step
    best = S[bi, roots].clone() if nmax else S.new_zeros(batch, 0)
    best_par = roots[:, None].expand(batch, nmax).clone()
    best_pos = torch.zeros(batch, nmax, dtype=torch.long)
    big = nmax * nmax + nmax
    for t in range(1, nmax):
        active = n > t
        b = bi[active]
        cand = (valid & ~in_tree)[b]
        val = torch.where(cand, best[b], neg_inf)
        top = val.max(1, keepdim=True).values
        tie = cand & (val == top)
        # SGB takes the first maximum of the flattened [tree node (insertion order), remaining (index)]
        j = torch.where(tie, best_pos[b] * nmax + ar, torch.full_like(best_pos[b], big)).argmin(1)
        p = best_par[b, j]
        lc = last_child[b, p]
        bp = torch.where(lc >= 0, lc, p)
        parent[b, j] = p
        bin_parent[b, j] = bp
        is_left[b, j] = lc < 0
        depth[b, j] = depth[b, bp] + 1
        rank[b, j] = t
        last_child[b, p] = j
        in_tree[b, j] = True
        row = S[b, j]
        upd = row > best[b]  # strictly: ties keep the earlier tree node
        best[b] = torch.where(upd, row, best[b])
        best_par[b] = torch.where(upd, j[:, None], best_par[b])
        best_pos[b] = torch.where(upd, torch.full_like(best_pos[b], t), best_pos[b])
    image = torch.repeat_interleave(bi, n)
    return VCTreeForest(num_objs, image, parent[valid], bin_parent[valid], is_left[valid], depth[valid], rank[valid])


def binary_targets(num_objs: Sequence[int], rel_pairs: Optional[Sequence[torch.Tensor]] = None,
                   rel_labels: Optional[Sequence[torch.Tensor]] = None,
                   rel_binarys: Optional[Sequence[torch.Tensor]] = None, device=None) -> torch.Tensor:
    """``[B, max N, max N]`` float symmetric 0/1 targets of ``loss_binary``: ``rel_binarys`` (per
    image ``[N_i, N_i]``, non-zero = related) if given, else the pairs of ``rel_pairs`` whose
    ``rel_labels`` is > 0, both orders."""
    batch, nmax = len(num_objs), int(max(num_objs, default=0))
    out = torch.zeros(batch, nmax, nmax, device=device)
    for b, k in enumerate(num_objs):
        if rel_binarys is not None:
            m = rel_binarys[b].to(device)
            if tuple(m.shape) != (k, k):
                raise ValueError(f"rel_binarys[{b}] has shape {tuple(m.shape)}, expected {(k, k)}")
            out[b, :k, :k] = (m > 0).float()
        else:
            fg = rel_pairs[b][rel_labels[b] > 0].long().to(device)
            out[b, fg[:, 0], fg[:, 1]] = 1.0
            out[b, fg[:, 1], fg[:, 0]] = 1.0
    return out


def binary_loss(logits: torch.Tensor, num_objs: Sequence[int], rel_pairs: Optional[Sequence[torch.Tensor]] = None,
                rel_labels: Optional[Sequence[torch.Tensor]] = None,
                rel_binarys: Optional[Sequence[torch.Tensor]] = None) -> torch.Tensor:
    """SGB's ``binary_loss``: per image with objects the mean BCE-with-logits of the ``[N_i, N_i]``
    binary logits (``logits`` ``[B, max N, max N]``) against :func:`binary_targets`, averaged over
    those images. At least one image must have an object."""
    nonempty = [b for b, k in enumerate(num_objs) if k > 0]
    target = binary_targets(num_objs, rel_pairs, rel_labels, rel_binarys, device=logits.device)
    counts = torch.as_tensor(list(num_objs), dtype=logits.dtype, device=logits.device)
    ar = torch.arange(logits.shape[1], device=logits.device)
    valid = ar[None, :] < counts[:, None]
    pair = (valid[:, :, None] & valid[:, None, :]).to(logits.dtype)
    bce = F.binary_cross_entropy_with_logits(logits.float(), target, reduction="none") * pair
    per_image = bce.sum((1, 2)) / (counts * counts).clamp(min=1)
    return per_image[nonempty].mean()


# --------------------------------------------------------------------------------- context
class VCTreeContextOutput(NamedTuple):
    """``obj_dists`` ``[N, C]``, ``obj_preds`` ``[N]``, ``edge_ctx`` ``[N, H]``; ``binary_logits`` /
    ``scores`` ``[B, max N, max N]`` (image ``b`` in ``[b, :N_b, :N_b]``); ``forest`` the trees."""

    obj_dists: torch.Tensor
    obj_preds: torch.Tensor
    edge_ctx: torch.Tensor
    binary_logits: torch.Tensor
    scores: torch.Tensor
    forest: VCTreeForest


def _bi_freq_prior_init(pred_dist, num_obj_classes: int, tree_score: str) -> torch.Tensor:
    c = num_obj_classes
    if pred_dist is None:
        return torch.zeros(c, c) if tree_score == "sgb" else torch.ones(c, c)
    pd = torch.as_tensor(np.asarray(pred_dist) if not isinstance(pred_dist, torch.Tensor) else pred_dist).float()
    if pd.dim() != 3 or pd.shape[0] != c or pd.shape[1] != c:
        raise ValueError(f"pred_dist has shape {tuple(pd.shape)}, expected ({c}, {c}, num_rel_classes)")
    if tree_score == "sgb":
        co = pd.sum(-1)
        return co + co.t()
    related = (1.0 - (pd[..., 0].exp() - 1e-3)).clamp(0.0, 1.0)  # 1 - P(no relation | a, b)
    return 0.5 * (related + related.t())


class VCTreeContext(nn.Module):
    """SGB's ``VCTreeLSTMContext``: tree scores, trees, object context, object classes and edge
    context (module docstring steps 1-5)."""

    def __init__(self, num_obj_classes: int, in_channels: int, hidden_dim: int, embed_dim: int,
                 word_vectors: torch.Tensor, mode: str, pred_dist=None, dropout_rate: float = 0.2,
                 obj_layers: int = 1, rel_layers: int = 1, tree_score: str = "sgb") -> None:
        super().__init__()
        if obj_layers < 1 or rel_layers < 1:
            raise ValueError("CONTEXT_OBJ_LAYER and CONTEXT_REL_LAYER must be >= 1")
        if hidden_dim % 2:
            raise ValueError(f"VCTree's bidirectional tree-LSTMs need an even CONTEXT_HIDDEN_DIM, got {hidden_dim}")
        if tree_score not in TREE_SCORES:
            raise ValueError(f"tree_score must be one of {TREE_SCORES}, got {tree_score!r}")
        self.mode = mode
        self.num_obj_classes = num_obj_classes
        self.obj_dim = in_channels
        self.hidden_dim = hidden_dim
        self.embed_dim = embed_dim
        self.tree_score = tree_score
        # word_vectors: [C+2, E] for ["start"] + class names
        self.obj_embed1 = nn.Embedding(num_obj_classes, embed_dim)
        self.obj_embed2 = nn.Embedding(num_obj_classes, embed_dim)
        with torch.no_grad():
            self.obj_embed1.weight.copy_(word_vectors[1:])
            self.obj_embed2.weight.copy_(word_vectors[1:])
        self.pos_embed = box_position_embedding()
        self.overlap_embed = nn.Sequential(nn.Linear(6, 128), BatchNorm1dAnySize(128, momentum=0.001),
                                           nn.ReLU(inplace=True))
        self.box_embed = nn.Sequential(nn.Linear(9, 128), BatchNorm1dAnySize(128, momentum=0.001),
                                       nn.ReLU(inplace=True))
        # tree scores
        self.bi_freq_prior = nn.Linear(num_obj_classes * num_obj_classes, 1, bias=False)
        with torch.no_grad():
            self.bi_freq_prior.weight.copy_(_bi_freq_prior_init(pred_dist, num_obj_classes, tree_score).view(1, -1))
        self.obj_reduce = nn.Linear(in_channels, 128)
        self.emb_reduce = nn.Linear(embed_dim, 128)
        self.score_pre = nn.Linear(128 * 4, hidden_dim)
        self.score_sub = nn.Linear(hidden_dim, hidden_dim)
        self.score_obj = nn.Linear(hidden_dim, hidden_dim)
        self.vision_prior = nn.Linear(hidden_dim * 3 + 1, 1)  # PyTorch's default init, as SGB
        for lin in (self.obj_reduce, self.emb_reduce, self.score_pre, self.score_sub, self.score_obj):
            layer_init(lin)
        obj_in = in_channels + embed_dim + 128
        self.obj_ctx_rnn = MultiLayerBiTreeLSTM(obj_in, hidden_dim, obj_layers,
                                                dropout_rate if obj_layers > 1 else 0.0)
        if mode != "predcls":
            self.decoder_rnn = TreeLSTMDecoder(num_obj_classes, embed_dim, inputs_dim=obj_in + hidden_dim,
                                               hidden_dim=hidden_dim, dropout=dropout_rate,
                                               embed_vectors=word_vectors)
        self.edge_ctx_rnn = MultiLayerBiTreeLSTM(embed_dim + in_channels + hidden_dim, hidden_dim, rel_layers,
                                                 dropout_rate if rel_layers > 1 else 0.0)
        self._warned_no_logits = False

    def _input_distribution(self, proposals: Sequence[Instances], n: int, ref: torch.Tensor) -> torch.Tensor:
        if not self._warned_no_logits and not all(p.has("logits") for p in proposals):
            logger.warning("%s: proposals carry no 'logits' field (detector class logits); VCTree's object "
                           "embedding and tree scores use a uniform class distribution. SGB feeds the "
                           "detector's logits on the boxes here.", self.mode)
            self._warned_no_logits = True
        return object_class_distribution(proposals, n, ref, self.num_obj_classes)

    def pair_scores(self, x: torch.Tensor, obj_embed: torch.Tensor, box_info: torch.Tensor,
                    overlap: torch.Tensor, dist: torch.Tensor, num_objs: Sequence[int]
                    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Binary logits and tree scores ``[B, max N, max N]`` (SGB's ``vctree_score_net``)."""
        feat = torch.cat([self.obj_reduce(x.detach()), self.emb_reduce(obj_embed.detach()),
                          self.box_embed(box_info), self.overlap_embed(overlap)], dim=1)
        feat = F.relu(self.score_pre(feat))
        sub = F.relu(self.score_sub(feat))
        obj = F.relu(self.score_obj(feat))
        image, slot, nmax = _pad_index(num_objs, x.device)
        batch, hdim, c = len(num_objs), self.hidden_dim, self.num_obj_classes
        sub_p, obj_p = _pad(sub, image, slot, batch, nmax), _pad(obj, image, slot, batch, nmax)
        dist_p = _pad(dist.detach(), image, slot, batch, nmax)
        # co[b, i, j] = sum_{a, c'} dist[i, a] W[a, c'] dist[j, c'], W[a, c'] = weight[a * C + c']
        w_co = self.bi_freq_prior.weight.view(c, c)
        co = torch.matmul(torch.matmul(dist_p, w_co), dist_p.transpose(1, 2))
        # vision_prior([sub_j * obj_i, sub_j, obj_i, co_ij]) split along its input
        w = self.vision_prior.weight.view(-1)
        w_prod, w_sub, w_obj, w_co_in = w[:hdim], w[hdim:2 * hdim], w[2 * hdim:3 * hdim], w[3 * hdim]
        vis = (torch.matmul(obj_p * w_prod, sub_p.transpose(1, 2)) + (sub_p @ w_sub)[:, None, :]
               + (obj_p @ w_obj)[:, :, None] + w_co_in * co + self.vision_prior.bias)
        if self.tree_score == "sgb":
            logits = torch.sigmoid(vis) * co
            scores = torch.sigmoid(logits)
        else:
            logits = vis
            scores = torch.sigmoid(vis) * co
        return logits, scores

    def forward(self, x: torch.Tensor, proposals: Sequence[Instances], obj_labels: Optional[torch.Tensor],
                input_hook: Optional[Callable[[str, torch.Tensor], torch.Tensor]] = None) -> VCTreeContextOutput:
        """``x`` ``[N, in_channels]`` -> :class:`VCTreeContextOutput`. Runs in float32 (outside
        autocast): tree scores decide a discrete structure and tree states accumulate over depth.

        ``input_hook(name, tensor) -> tensor`` (optional) sees, and may replace, the decoder input
        (``"decoder"``, ``[N, D+E+128+H]``, SGCls/SGDet) and the ``[obj_embed2(label), x]`` part of the
        edge input (``"edge"``, ``[N, E+D]``), as :meth:`MotifContext.forward`."""
        num_objs = [len(p) for p in proposals]
        batch = len(num_objs)
        with torch.autocast(device_type=x.device.type, enabled=False):
            x = x.float()
            boxes = [p.boxes.tensor.float() for p in proposals]
            if self.mode == "predcls":
                if obj_labels is None:
                    raise ValueError("VCTreePredictor(mode='predcls') needs obj_labels (the GT labels)")
                labels = obj_labels.long()
                obj_embed = self.obj_embed1(labels)
                dist = F.one_hot(labels, self.num_obj_classes).float()
            else:
                dist = self._input_distribution(proposals, x.shape[0], x)
                obj_embed = dist @ self.obj_embed1.weight
            box_info = encode_box_info(boxes, [p.image_size for p in proposals])
            obj_pre_rep = torch.cat([x, obj_embed, self.pos_embed(box_info)], dim=1)

            logits, scores = self.pair_scores(x, obj_embed, box_info, overlap_info(boxes), dist, num_objs)
            forest = vctree_forest(scores, num_objs)
            tree = forest.binary(device=x.device)

            obj_ctx = self.obj_ctx_rnn(obj_pre_rep, tree, batch)
            if self.mode == "predcls":
                obj_preds = labels
                obj_dists = gt_label_logits(obj_preds, self.num_obj_classes)
            else:
                dec_in = torch.cat([obj_pre_rep, obj_ctx], dim=1)
                if input_hook is not None:
                    dec_in = input_hook("decoder", dec_in)
                obj_dists, obj_preds = self.decoder_rnn(dec_in, tree, batch)
            edge_in = torch.cat([self.obj_embed2(obj_preds), x], dim=1)
            if input_hook is not None:
                edge_in = input_hook("edge", edge_in)
            edge_in = torch.cat([edge_in, obj_ctx], dim=1)
            edge_ctx = self.edge_ctx_rnn(edge_in, tree, batch)
        return VCTreeContextOutput(obj_dists, obj_preds, edge_ctx, logits, scores, forest)


# --------------------------------------------------------------------------------- predictor
@RELATION_PREDICTOR_REGISTRY.register()
class VCTreePredictor(nn.Module):
    """VCTree relation predictor (SGB name, so ``PREDICTOR: "VCTreePredictor"`` works).

    Args:
        num_obj_classes: C+1 (VG150: 151), background included.
        num_rel_classes: P+1 (VG150: 51), "no relation" included.
        in_channels: object ROI feature size (box head output, 4096).
        hidden_dim: tree-LSTM / score-net size (``CONTEXT_HIDDEN_DIM``; SGB's yaml comment and the
            author advise 1024 for VCTree, the default config has 512); even.
        pooling_dim: pair feature size (``CONTEXT_POOLING_DIM`` 4096).
        embed_dim: class embedding size (``EMBED_DIM`` 200).
        obj_classes: C+1 class names (index 0 background); default ``["__background__", "class_1", ...]``.
        pred_dist: ``[C+1, C+1, P+1]`` float log-frequency statistics: the frequency bias and the
            initial ``bi_freq_prior`` (None: zero bias; ``bi_freq_prior`` 0, or 1 for "paper").
        word_vectors: ``[C+2, embed_dim]`` initial class embeddings (rows ``"start"`` + ``obj_classes``);
            None: seeded random vectors (the load step fills GloVe through :meth:`set_word_vectors`).
        mode: 'predcls' | 'sgcls' | 'sgdet'.
        union_dim: union feature size (default ``in_channels``); ``up_dim`` maps it to ``pooling_dim``
            when they differ.
        dropout_rate, obj_layers, rel_layers: ``CONTEXT_DROPOUT_RATE`` / ``CONTEXT_OBJ_LAYER`` /
            ``CONTEXT_REL_LAYER``.
        use_vision, use_bias: ``PREDICT_USE_VISION`` / ``PREDICT_USE_BIAS`` (SGB ignores both: on).
        tree_score: "sgb" (default, SGB's saturating score) or "paper" (see Reference quirks).
    """

    #: the head should pass ``rel_labels`` (the sampled pairs' predicate labels) in training
    uses_rel_labels = True

    def __init__(self, num_obj_classes: int = 151, num_rel_classes: int = 51, in_channels: int = 4096,
                 hidden_dim: int = 512, pooling_dim: int = 4096, embed_dim: int = 200,
                 obj_classes: Optional[Sequence[str]] = None, pred_dist=None,
                 word_vectors: Optional[torch.Tensor] = None, mode: str = "predcls",
                 union_dim: Optional[int] = None, dropout_rate: float = 0.2, obj_layers: int = 1,
                 rel_layers: int = 1, use_vision: bool = True, use_bias: bool = True,
                 tree_score: str = "sgb") -> None:
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
        self._warned_no_targets = False

        self.word_vector_names = ["start"] + obj_classes
        vectors = random_word_vectors(self.word_vector_names, embed_dim) if word_vectors is None else word_vectors
        self._check_word_vectors(vectors, embed_dim)
        self.context_layer = VCTreeContext(num_obj_classes, in_channels, hidden_dim, embed_dim, vectors, mode,
                                           pred_dist=pred_dist, dropout_rate=dropout_rate, obj_layers=obj_layers,
                                           rel_layers=rel_layers, tree_score=tree_score)
        self.post_emb = nn.Linear(hidden_dim, hidden_dim * 2)
        self.post_cat = nn.Linear(hidden_dim * 2, pooling_dim)
        self.ctx_compress = nn.Linear(pooling_dim, num_rel_classes)
        layer_init(self.post_emb, 10.0 * (1.0 / hidden_dim) ** 0.5, normal=True)
        layer_init(self.post_cat)
        layer_init(self.ctx_compress)
        self.up_dim = union_up_projection(self.use_vision, in_channels if union_dim is None else union_dim,
                                          pooling_dim)
        self.freq_bias = FrequencyBias(num_obj_classes, num_rel_classes, pred_dist) if self.use_bias else None

    def _check_word_vectors(self, vectors: torch.Tensor, embed_dim: int) -> None:
        n = len(self.word_vector_names)
        check_word_vectors(vectors, n, embed_dim, f"'start' + the {n - 1} class names")

    def word_vector_specs(self) -> Dict[str, Tuple[List[str], int]]:
        """``{"obj": ("start" + class names, embed_dim)}`` (the load step fills them from GloVe)."""
        return {"obj": (list(self.word_vector_names), self.context_layer.embed_dim)}

    @torch.no_grad()
    def set_word_vectors(self, obj: torch.Tensor) -> None:
        """Initialise ``obj_embed1``, ``obj_embed2`` (rows 1..) and the decoder's embedding (all
        rows) from ``obj`` ``[C+2, embed_dim]``, rows in the order of :attr:`word_vector_names`."""
        self._check_word_vectors(obj, self.context_layer.embed_dim)
        fill_context_embeddings(self.context_layer, obj)

    @classmethod
    def from_config(cls, cfg, *, in_channels: int, num_obj_classes: int, num_rel_classes: int, mode: str,
                    union_dim: Optional[int] = None, obj_classes: Optional[Sequence[str]] = None,
                    pred_dist=None, word_vectors: Optional[torch.Tensor] = None,
                    rel_classes: Optional[Sequence[str]] = None) -> "VCTreePredictor":
        """``rel_classes`` (predicate names) is accepted for the protocol and not used."""
        rh = cfg.MODEL.ROI_RELATION_HEAD
        return cls(
            num_obj_classes=num_obj_classes, num_rel_classes=num_rel_classes, in_channels=in_channels,
            hidden_dim=rh.CONTEXT_HIDDEN_DIM, pooling_dim=rh.CONTEXT_POOLING_DIM, embed_dim=rh.EMBED_DIM,
            obj_classes=obj_classes, pred_dist=pred_dist, word_vectors=word_vectors, mode=mode,
            union_dim=union_dim, dropout_rate=rh.CONTEXT_DROPOUT_RATE, obj_layers=rh.CONTEXT_OBJ_LAYER,
            rel_layers=rh.CONTEXT_REL_LAYER, use_vision=rh.PREDICT_USE_VISION, use_bias=rh.PREDICT_USE_BIAS,
            tree_score=rh.VCTREE.TREE_SCORE,
        )

    def _binary_loss(self, logits: torch.Tensor, num_objs: List[int], rel_pairs, rel_labels, rel_binarys
                     ) -> Optional[torch.Tensor]:
        if rel_binarys is None and rel_labels is None:
            if not self._warned_no_targets:
                logger.warning("VCTreePredictor got neither rel_labels nor rel_binarys in training: no "
                               "loss_binary (SGB's binary_loss), so the tree score network does not learn. "
                               "The relation head should pass rel_labels to predictors with "
                               "uses_rel_labels = True.")
                self._warned_no_targets = True
            return None
        if not any(num_objs):
            return logits.sum() * 0.0 + self.context_layer.vision_prior.weight.sum() * 0.0
        return binary_loss(logits, num_objs, rel_pairs, rel_labels, rel_binarys)

    def forward(self, roi_features: torch.Tensor, proposals: Sequence[Instances],
                rel_pairs: Sequence[torch.Tensor], union_features: Optional[torch.Tensor] = None,
                obj_labels: Optional[torch.Tensor] = None, rel_labels: Optional[Sequence[torch.Tensor]] = None,
                rel_binarys: Optional[Sequence[torch.Tensor]] = None) -> PredictorOutput:
        """See :mod:`sgg.modeling.relation.predictors` for the common arguments. Training only:
        ``rel_labels`` per image ``[M_i]`` predicate labels of ``rel_pairs`` (0 = no relation), or
        ``rel_binarys`` per image ``[N_i, N_i]`` related-pair matrices: the ``loss_binary`` targets."""
        num_objs = [len(p) for p in proposals]
        num_rels = [int(r.shape[0]) for r in rel_pairs]
        x = roi_features
        extra: Dict[str, torch.Tensor] = {}
        if sum(num_objs) == 0:
            # nothing to contextualise; keep the outputs attached to the graph for an empty loss
            rel = self.ctx_compress(x.new_zeros(0, self.pooling_dim))
            obj = x.new_zeros(0, self.num_obj_cls)
            if self.training:
                loss = self._binary_loss(x.new_zeros(len(num_objs), 0, 0), num_objs, rel_pairs, rel_labels, rel_binarys)
                if loss is not None:
                    extra["loss_binary"] = loss
            return PredictorOutput([obj] * len(num_objs), [rel] * len(num_rels),
                                   [torch.zeros(0, dtype=torch.long, device=x.device)] * len(num_objs), extra)

        ctx = self.context_layer(x, proposals, obj_labels)
        obj_preds = ctx.obj_preds
        edge_rep = F.relu(self.post_emb(ctx.edge_ctx)).view(-1, 2, self.hidden_dim)
        head_rep, tail_rep = edge_rep[:, 0], edge_rep[:, 1]
        offsets = np.concatenate([[0], np.cumsum(num_objs)[:-1]]).tolist()
        gp = torch.cat([r.long().reshape(-1, 2) + off for r, off in zip(rel_pairs, offsets)], dim=0).to(x.device)
        prod_rep = self.post_cat(torch.cat([head_rep[gp[:, 0]], tail_rep[gp[:, 1]]], dim=1))
        if self.use_vision:
            if union_features is None:
                raise ValueError("VCTreePredictor(use_vision=True) needs union_features")
            prod_rep = prod_rep * (self.up_dim(union_features) if self.up_dim is not None else union_features)
        rel_dists = self.ctx_compress(prod_rep)
        if self.use_bias:
            pair_pred = torch.stack([obj_preds[gp[:, 0]], obj_preds[gp[:, 1]]], dim=1)
            rel_dists = rel_dists + self.freq_bias.index_with_labels(pair_pred)

        if self.training:
            loss = self._binary_loss(ctx.binary_logits, num_objs, rel_pairs, rel_labels, rel_binarys)
            if loss is not None:
                extra["loss_binary"] = loss
        # SGDet test: the post-processor re-labels by class-aware NMS (SGB); the bias used the argmax
        labels_out = None if (self.mode == "sgdet" and not self.training) else list(obj_preds.split(num_objs))
        return PredictorOutput(list(ctx.obj_dists.split(num_objs)), list(rel_dists.split(num_rels)), labels_out, extra)
