"""Which object pairs the relation head scores, and their predicate labels.

Training (SGB's ``RelationSampling``):

* **GT boxes** (PredCls / SGCls, :meth:`RelationSampler.gtbox_sample`): fg = the annotated pairs
  with their predicate (a pair annotated with several predicates keeps one, chosen at random, as
  SGB's loader does with ``filter_duplicate_rels``); bg = every other ordered pair ``i != j``,
  label 0. At most ``int(batch_size_per_image * positive_fraction)`` fg (random subset), then bg
  fill the batch up to ``batch_size_per_image``.
* **Detected boxes** (SGDet, :meth:`RelationSampler.detect_sample`): every proposal gets an object
  target = the label of its highest-IoU GT box if that IoU >= ``fg_iou_threshold`` else 0 (SGB's
  ``assign_label_to_proposals``). A proposal *matches* GT box g when their labels are equal and
  IoU > ``fg_iou_threshold``; the label compared is the assigned target (``match_labels="assigned"``,
  SGB) or the detector's label (``"detector"``). Each GT relation (s, o, p) yields the matched
  proposal pairs (s', o'), s' != o', at most ``num_sample_per_gt_rel`` of them: the highest
  IoU(s, s') * IoU(o, o') (``gt_rel_sampling="top"``) or drawn without replacement with
  probability proportional to it (``"iou_weighted"``, SGB). bg = ordered pairs of proposals that
  have an object target > 0 (SGB: "only relations between fg proposals"), optionally only
  overlapping ones (``require_overlap``, 0 < IoU < 1), minus every matched pair.
* Test (:meth:`RelationSampler.test_pairs`): all ordered pairs ``i != j`` in row-major order
  (SGDet with ``test_require_overlap``: only pairs with IoU > 0).

All of it is vectorised (one Python iteration per image). Randomness comes from ``generator`` (a
CPU ``torch.Generator``) when given, else from the global CPU RNG, so ``torch.manual_seed`` makes
training reproducible and checkpointed RNG state resumes it. Sampling runs on CPU whatever the
model's device (inputs are a few hundred boxes), so a seed gives the same pairs on CPU and CUDA;
the results are moved back to the proposals' device.

IoUs use the "+1 pixel" convention of maskrcnn_benchmark (``boxlist_iou``), as SGB did.
Images with fewer than two boxes yield no pairs (an empty ``[0, 2]`` tensor; SGB used a dummy
``[[0, 0]]`` pair instead).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch

from sgg.protocol import gives_gt_boxes
from sgg.structures import Instances, pairwise_iou

__all__ = ["RelationSampler", "all_pairs", "dedupe_relations"]

_CPU = torch.device("cpu")


def all_pairs(n: int, device=None) -> torch.Tensor:
    """All ordered pairs ``(i, j)``, ``i != j``, of ``n`` objects, row-major -> int64 ``[n*(n-1), 2]``."""
    if n < 2:
        return torch.zeros(0, 2, dtype=torch.long, device=device)
    eye = torch.eye(n, dtype=torch.bool, device=device)
    return (~eye).nonzero()


def _randperm(n: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    return torch.randperm(n, generator=generator) if n else torch.zeros(0, dtype=torch.long)


def dedupe_relations(relations: torch.Tensor, num_boxes: int,
                     generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One row per (subject, object) pair: duplicates keep one predicate chosen uniformly at random.

    Rows with ``subject == object`` are dropped. ``relations`` int64 ``[M, 3]`` -> ``[M', 3]``
    ordered by pair (subject-major).
    """
    rels = relations.reshape(-1, 3).long()
    rels = rels[rels[:, 0] != rels[:, 1]]
    if rels.shape[0] == 0:
        return rels
    rels = rels[_randperm(rels.shape[0], generator)]
    key = rels[:, 0] * max(num_boxes, 1) + rels[:, 1]
    skey, order = torch.sort(key, stable=True)
    first = torch.ones_like(skey, dtype=torch.bool)
    first[1:] = skey[1:] != skey[:-1]
    return rels[order[first]]


def _cross_matches(head_match: torch.Tensor, tail_match: torch.Tensor) -> Tuple[torch.Tensor, ...]:
    """All (r, p, q) with head_match[r, p] & tail_match[r, q] & p != q, without an [M, N, N] tensor."""
    m = head_match.shape[0]
    h_r, h_p = head_match.nonzero(as_tuple=True)
    t_r, t_q = tail_match.nonzero(as_tuple=True)  # row-major, so grouped by r
    t_cnt = torch.bincount(t_r, minlength=m)
    t_start = torch.cumsum(t_cnt, 0) - t_cnt
    rep = t_cnt[h_r]
    r = h_r.repeat_interleave(rep)
    p = h_p.repeat_interleave(rep)
    grp_start = (torch.cumsum(rep, 0) - rep).repeat_interleave(rep)
    off = torch.arange(r.shape[0]) - grp_start
    q = t_q[t_start[r] + off]
    keep = p != q
    return r[keep], p[keep], q[keep]


def _topk_per_group(group: torch.Tensor, key: torch.Tensor, k: int, num_groups: int) -> torch.Tensor:
    """Indices of the ``k`` largest ``key`` within each ``group`` (ties: input order), group-major."""
    order = torch.sort(key, descending=True, stable=True).indices
    order = order[torch.sort(group[order], stable=True).indices]
    g = group[order]
    cnt = torch.bincount(g, minlength=num_groups)
    start = torch.cumsum(cnt, 0) - cnt
    rank = torch.arange(g.shape[0]) - start[g]
    return order[rank < k]


class RelationSampler:
    """Pair sampling of the relation head (see the module docstring for the rules).

    Args:
        batch_size_per_image: pairs per training image (``BATCH_SIZE_PER_IMAGE``, SGB 1024).
        positive_fraction: at most this fraction of them fg (``POSITIVE_FRACTION``, 0.25).
        num_sample_per_gt_rel: SGDet, proposal pairs per GT relation (``NUM_SAMPLE_PER_GT_REL``, 4).
        fg_iou_threshold: SGDet matching IoU (``MODEL.ROI_HEADS.FG_IOU_THRESHOLD``, 0.5).
        require_overlap: SGDet training bg pairs only between overlapping proposals
            (``REQUIRE_BOX_OVERLAP``).
        test_require_overlap: SGDet test pairs only between overlapping boxes
            (``TEST.RELATION.REQUIRE_OVERLAP``).
        gt_rel_sampling: ``"top"`` (highest IoU products) or ``"iou_weighted"`` (SGB's random draw).
        match_labels: ``"assigned"`` (SGB) or ``"detector"``, the proposal label compared with GT.
    """

    def __init__(self, batch_size_per_image: int = 1024, positive_fraction: float = 0.25,
                 num_sample_per_gt_rel: int = 4, fg_iou_threshold: float = 0.5,
                 require_overlap: bool = False, test_require_overlap: bool = False,
                 gt_rel_sampling: str = "top", match_labels: str = "assigned") -> None:
        if gt_rel_sampling not in ("top", "iou_weighted"):
            raise ValueError(f"gt_rel_sampling must be 'top' or 'iou_weighted', got {gt_rel_sampling!r}")
        if match_labels not in ("assigned", "detector"):
            raise ValueError(f"match_labels must be 'assigned' or 'detector', got {match_labels!r}")
        self.batch_size_per_image = int(batch_size_per_image)
        self.positive_fraction = float(positive_fraction)
        self.num_sample_per_gt_rel = int(num_sample_per_gt_rel)
        self.fg_iou_threshold = float(fg_iou_threshold)
        self.require_overlap = bool(require_overlap)
        self.test_require_overlap = bool(test_require_overlap)
        self.gt_rel_sampling = gt_rel_sampling
        self.match_labels = match_labels

    @classmethod
    def from_config(cls, cfg) -> "RelationSampler":
        rh = cfg.MODEL.ROI_RELATION_HEAD
        return cls(
            batch_size_per_image=rh.BATCH_SIZE_PER_IMAGE, positive_fraction=rh.POSITIVE_FRACTION,
            num_sample_per_gt_rel=rh.NUM_SAMPLE_PER_GT_REL, fg_iou_threshold=cfg.MODEL.ROI_HEADS.FG_IOU_THRESHOLD,
            require_overlap=rh.REQUIRE_BOX_OVERLAP, test_require_overlap=cfg.TEST.RELATION.REQUIRE_OVERLAP,
            gt_rel_sampling=rh.SGDET_GT_REL_SAMPLING, match_labels=rh.SGDET_MATCH_LABELS,
        )

    @property
    def num_pos_per_image(self) -> int:
        return int(self.batch_size_per_image * self.positive_fraction)

    # ------------------------------------------------------------------ test
    def test_pairs(self, proposals: Sequence[Instances], mode: str) -> List[torch.Tensor]:
        """Candidate pairs per image -> list of int64 ``[M_i, 2]`` on each image's device."""
        out = []
        for p in proposals:
            boxes = p.boxes.tensor
            pairs = all_pairs(len(p), device=boxes.device)
            if mode == "sgdet" and self.test_require_overlap and pairs.shape[0]:
                iou = pairwise_iou(boxes, boxes, legacy=True)
                pairs = pairs[iou[pairs[:, 0], pairs[:, 1]] > 0]
            out.append(pairs)
        return out

    # ------------------------------------------------------------------ training, GT boxes
    def _fg_bg(self, fg: torch.Tensor, bg_mask: torch.Tensor,
               generator: Optional[torch.Generator]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Cap fg [K,3] at the positive quota, fill with bg pairs from ``bg_mask`` [N,N]."""
        if fg.shape[0] > self.num_pos_per_image:
            fg = fg[_randperm(fg.shape[0], generator)[: self.num_pos_per_image]]
        bg = bg_mask.nonzero()
        num_bg = max(self.batch_size_per_image - fg.shape[0], 0)
        bg = bg[_randperm(bg.shape[0], generator)[:num_bg]]
        pairs = torch.cat([fg[:, :2], bg], dim=0)
        labels = torch.cat([fg[:, 2], torch.zeros(bg.shape[0], dtype=torch.long)], dim=0)
        return pairs, labels

    def gtbox_sample(self, num_boxes: int, relations: torch.Tensor,
                     generator: Optional[torch.Generator] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        """PredCls/SGCls training pairs of one image (CPU tensors).

        Args:
            num_boxes: N, the GT boxes (= proposals) of the image.
            relations: int64 ``[M, 3]`` (subject idx, object idx, predicate 1..P).
        Returns:
            pairs int64 ``[K, 2]`` (fg first, then bg), labels int64 ``[K]`` (0 = bg).
        """
        rels = dedupe_relations(relations, num_boxes, generator)
        bg_mask = ~torch.eye(num_boxes, dtype=torch.bool)
        bg_mask[rels[:, 0], rels[:, 1]] = False
        return self._fg_bg(rels, bg_mask, generator)

    # ------------------------------------------------------------------ training, detected boxes
    def detect_sample(self, prop_boxes: torch.Tensor, prop_labels: Optional[torch.Tensor],
                      gt_boxes: torch.Tensor, gt_labels: torch.Tensor, relations: torch.Tensor,
                      generator: Optional[torch.Generator] = None
                      ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """SGDet training pairs of one image (CPU tensors).

        Args:
            prop_boxes: ``[Np, 4]`` proposals; prop_labels ``[Np]`` detector labels (only read with
                ``match_labels="detector"``).
            gt_boxes: ``[Ng, 4]``; gt_labels ``[Ng]``; relations int64 ``[M, 3]`` into the GT boxes.
        Returns:
            pairs ``[K, 2]`` into the proposals (fg first), labels ``[K]``, and the proposals'
            object targets ``[Np]`` (matched GT label or 0).
        """
        n_p, n_g = prop_boxes.shape[0], gt_boxes.shape[0]
        gt_labels = gt_labels.long()
        if n_g and n_p:
            ious = pairwise_iou(gt_boxes.float(), prop_boxes.float(), legacy=True)  # [Ng, Np]
            max_iou, arg = ious.max(dim=0)
            obj_targets = torch.where(max_iou >= self.fg_iou_threshold, gt_labels[arg],
                                      torch.zeros_like(arg))
        else:
            ious = torch.zeros(n_g, n_p)
            obj_targets = torch.zeros(n_p, dtype=torch.long)

        if self.match_labels == "assigned" or prop_labels is None:
            match_lab = obj_targets
        else:
            match_lab = prop_labels.long()
        is_match = (gt_labels[:, None] == match_lab[None, :]) & (ious > self.fg_iou_threshold)

        if self.require_overlap and n_p:
            self_iou = pairwise_iou(prop_boxes.float(), prop_boxes.float(), legacy=True)
            bg_mask = (self_iou > 0) & (self_iou < 1)
        else:
            bg_mask = ~torch.eye(n_p, dtype=torch.bool)
        is_fg_obj = obj_targets > 0
        bg_mask &= is_fg_obj[:, None] & is_fg_obj[None, :]

        rels = dedupe_relations(relations, n_g, generator)
        if rels.shape[0] and n_p:
            r, p, q = _cross_matches(is_match[rels[:, 0]], is_match[rels[:, 1]])
            bg_mask[p, q] = False
            score = ious[rels[r, 0], p] * ious[rels[r, 1], q]
            if self.gt_rel_sampling == "iou_weighted":
                u = torch.rand(score.shape[0], generator=generator).clamp_(min=1e-12)
                key = score.clamp(min=1e-12).log() - (-u.log()).log()  # Gumbel top-k
            else:
                key = score
            sel = _topk_per_group(r, key, self.num_sample_per_gt_rel, rels.shape[0])
            fg = torch.stack([p[sel], q[sel], rels[r[sel], 2]], dim=1)
        else:
            fg = torch.zeros(0, 3, dtype=torch.long)
        pairs, labels = self._fg_bg(fg, bg_mask, generator)
        return pairs, labels, obj_targets

    # ------------------------------------------------------------------ batch
    def __call__(self, proposals: Sequence[Instances], targets: Sequence[Instances],
                 relations: Sequence[torch.Tensor], mode: str,
                 generator: Optional[torch.Generator] = None
                 ) -> Tuple[List[torch.Tensor], List[torch.Tensor], List[torch.Tensor]]:
        """Training pairs for a batch.

        Returns per image: pairs int64 ``[K_i, 2]``, predicate labels int64 ``[K_i]``, object
        targets int64 ``[N_i]`` (GT labels with GT boxes; matched GT label or 0 in SGDet), all on
        the proposals' device.
        """
        if len(proposals) != len(targets) or len(proposals) != len(relations):
            raise ValueError(f"got {len(proposals)} proposals, {len(targets)} targets and "
                             f"{len(relations)} relation tensors; need one of each per image")
        all_pairs_, all_labels, all_obj = [], [], []
        for prop, tgt, rel in zip(proposals, targets, relations):
            dev = prop.boxes.tensor.device
            rel = torch.as_tensor(rel).to(_CPU).long().reshape(-1, 3)
            if gives_gt_boxes(mode):
                if len(prop) != len(tgt):
                    raise ValueError(f"{mode} training expects the proposals to be the GT boxes "
                                     f"({len(tgt)}), got {len(prop)}")
                pairs, labels = self.gtbox_sample(len(prop), rel, generator)
                obj = tgt.gt_classes.to(_CPU).long()
            elif mode == "sgdet":
                plab = prop.labels.to(_CPU) if prop.has("labels") else None
                pairs, labels, obj = self.detect_sample(
                    prop.boxes.tensor.detach().to(_CPU), plab, tgt.gt_boxes.tensor.to(_CPU),
                    tgt.gt_classes.to(_CPU), rel, generator)
            else:
                raise ValueError(f"mode must be 'predcls', 'sgcls' or 'sgdet', got {mode!r}")
            all_pairs_.append(pairs.to(dev))
            all_labels.append(labels.to(dev))
            all_obj.append(obj.to(dev))
        return all_pairs_, all_labels, all_obj
