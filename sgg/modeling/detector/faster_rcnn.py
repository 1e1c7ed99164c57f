"""Faster R-CNN (FPN) from torchvision parts, with Scene-Graph-Benchmark's conventions.

:class:`FasterRCNNDetector` = backbone (``sgg.modeling.backbone``) + :class:`RPN` + :class:`BoxHeads`.

* Input (``preprocess``): the mapper's ``image`` (RGB, 0..255, uint8 or float, ``[3, H, W]``,
  already resized). ``to_bgr255=True`` (``INPUT.TO_BGR255``, SGB/maskrcnn_benchmark): channels
  reversed to BGR, values kept in 0..255, then ``(x - PIXEL_MEAN) / PIXEL_STD``; ``False``: RGB
  scaled to 0..1, then ``(x - PIXEL_MEAN) / PIXEL_STD`` (so torchvision/timm ImageNet weights want
  ``TO_BGR255 False, PIXEL_MEAN [0.485, 0.456, 0.406], PIXEL_STD [0.229, 0.224, 0.225]``). The
  batch is zero-padded (after normalisation, as maskrcnn_benchmark) to a multiple of
  ``size_divisibility`` at the bottom/right.
* Boxes are xyxy float pixels of the resized frame throughout; ``detector_postprocess`` maps
  detections back to the original image.
* ``legacy=True`` (``MODEL.DETECTOR.LEGACY_BOX_CODING``) reproduces maskrcnn_benchmark's "+1"
  pixel convention everywhere it changes numbers: anchors (``anchors.py``), box coding
  (``w = x2 - x1 + 1``, ``x2 = ctr + w/2 - 1``), IoU for matching, NMS, clipping to
  ``size - 1``, the small-box filter and the FPN level of a box in the pooler. Use it (with
  ``ALIGNED_ROI False`` and ``FROZEN_BN_EPS 0``) for SGB detector checkpoints.
* ``aligned`` (``MODEL.DETECTOR.ALIGNED_ROI``): half-pixel-corrected ROIAlign (detectron2's
  ROIAlignV2); ``False`` is the legacy ROIAlign of maskrcnn_benchmark and torchvision.

Post-processing (SGDet, SGB's ``PostProcessor`` with ``NMS_FILTER_DUPLICATES``): softmax scores,
class-specific boxes decoded and clipped, per class ``score > SCORE_THRESH`` (0.01) and NMS
(0.3), at most ``POST_NMS_PER_CLS_TOPN`` per class; then ONE label per box: each proposal keeps
only its best-scoring class among those that survived NMS; finally the ``DETECTIONS_PER_IMG`` (80)
best, sorted by score (SGB kept ties at the 80th score and proposal order; here exactly the top
80, sorted).

Not reproduced from maskrcnn_benchmark (training-only details): ``RPN.STRADDLE_THRESH`` (anchors
crossing the image border are NOT ignored in the RPN loss) and ``RPN.FPN_POST_NMS_PER_BATCH``
(the post-NMS top-N is always per image, as SGB's configs set it).
"""
from __future__ import annotations

import math
from functools import partial
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads, fastrcnn_loss
from torchvision.models.detection.rpn import RegionProposalNetwork, RPNHead, concat_box_prediction_layers
from torchvision.ops import MultiScaleRoIAlign, batched_nms, roi_align

from sgg.structures import Boxes, Instances, pairwise_iou
from sgg.structures.image_batch import pad_images

from .anchors import FPNAnchorGenerator

Tensor = torch.Tensor
_BBOX_XFORM_CLIP = math.log(1000.0 / 16)


# ----------------------------------------------------------------------------------------------
# Box conventions
# ----------------------------------------------------------------------------------------------
class LegacyBoxCoder(det_utils.BoxCoder):
    """maskrcnn_benchmark's ``BoxCoder``: widths ``x2 - x1 + 1`` and ``x2 = ctr + w/2 - 1``."""

    def encode_single(self, reference_boxes: Tensor, proposals: Tensor) -> Tensor:
        wx, wy, ww, wh = self.weights
        ex_w = proposals[:, 2] - proposals[:, 0] + 1
        ex_h = proposals[:, 3] - proposals[:, 1] + 1
        ex_x = proposals[:, 0] + 0.5 * ex_w
        ex_y = proposals[:, 1] + 0.5 * ex_h
        gt_w = reference_boxes[:, 2] - reference_boxes[:, 0] + 1
        gt_h = reference_boxes[:, 3] - reference_boxes[:, 1] + 1
        gt_x = reference_boxes[:, 0] + 0.5 * gt_w
        gt_y = reference_boxes[:, 1] + 0.5 * gt_h
        return torch.stack((wx * (gt_x - ex_x) / ex_w, wy * (gt_y - ex_y) / ex_h,
                            ww * torch.log(gt_w / ex_w), wh * torch.log(gt_h / ex_h)), dim=1)

    def decode_single(self, rel_codes: Tensor, boxes: Tensor) -> Tensor:
        boxes = boxes.to(rel_codes.dtype)
        widths = boxes[:, 2] - boxes[:, 0] + 1
        heights = boxes[:, 3] - boxes[:, 1] + 1
        ctr_x = boxes[:, 0] + 0.5 * widths
        ctr_y = boxes[:, 1] + 0.5 * heights
        wx, wy, ww, wh = self.weights
        dx = rel_codes[:, 0::4] / wx
        dy = rel_codes[:, 1::4] / wy
        dw = (rel_codes[:, 2::4] / ww).clamp(max=self.bbox_xform_clip)
        dh = (rel_codes[:, 3::4] / wh).clamp(max=self.bbox_xform_clip)
        pcx = dx * widths[:, None] + ctr_x[:, None]
        pcy = dy * heights[:, None] + ctr_y[:, None]
        pw = torch.exp(dw) * widths[:, None]
        ph = torch.exp(dh) * heights[:, None]
        return torch.stack((pcx - 0.5 * pw, pcy - 0.5 * ph, pcx + 0.5 * pw - 1, pcy + 0.5 * ph - 1),
                           dim=2).flatten(1)


def make_box_coder(weights: Sequence[float], legacy: bool = False) -> det_utils.BoxCoder:
    cls = LegacyBoxCoder if legacy else det_utils.BoxCoder
    return cls(tuple(float(w) for w in weights), bbox_xform_clip=_BBOX_XFORM_CLIP)


def clip_boxes(boxes: Tensor, image_size: Tuple[int, int], legacy: bool = False) -> Tensor:
    """Clamp ``[..., 4]`` xyxy boxes to an (h, w) image (legacy: to ``size - 1``). Not in place."""
    h, w = image_size
    off = 1 if legacy else 0
    x = boxes[..., 0::2].clamp(min=0, max=w - off)
    y = boxes[..., 1::2].clamp(min=0, max=h - off)
    return torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)


def nms_by_group(boxes: Tensor, scores: Tensor, groups: Tensor, threshold: float,
                 legacy: bool = False) -> Tensor:
    """``batched_nms``; legacy IoU uses "+1" areas (the same as continuous IoU of boxes grown by 1)."""
    if legacy:
        boxes = boxes + boxes.new_tensor([0.0, 0.0, 1.0, 1.0])
    return batched_nms(boxes.float(), scores.float(), groups, threshold)


def _rank_within_groups(groups: Tensor, num_groups: int) -> Tensor:
    """For an index list already in priority order: position of each entry within its group."""
    if groups.numel() == 0:
        return groups.clone()
    order = torch.sort(groups, stable=True).indices
    g_sorted = groups[order]
    counts = torch.bincount(g_sorted, minlength=num_groups)
    starts = torch.cumsum(counts, 0) - counts
    rank_sorted = torch.arange(groups.numel(), device=groups.device) - starts[g_sorted]
    rank = torch.empty_like(rank_sorted)
    rank[order] = rank_sorted
    return rank


# ----------------------------------------------------------------------------------------------
# ROI pooling
# ----------------------------------------------------------------------------------------------
class LevelRoIAlign(MultiScaleRoIAlign):
    """FPN ROIAlign with fixed level scales (a ``MultiScaleRoIAlign``, same call signature).

    ``forward(features: dict, boxes: list of [K_i, 4] xyxy (resized frame), image_shapes) ->
    [sum K_i, C, output, output]``. Each box goes to level
    ``floor(4 + log2(sqrt(area) / 224 + 1e-6))`` clamped to the available levels (maskrcnn_benchmark's
    ``LevelMapper``; legacy: "+1" area). ``scales`` are fixed (``POOLER_SCALES``) instead of being
    guessed from the feature sizes; ``aligned`` selects the half-pixel-corrected ROIAlign.
    ``image_shapes`` is accepted for torchvision compatibility and unused.
    """

    def __init__(self, featmap_names: Sequence[str] = ("0", "1", "2", "3"), output_size: int = 7,
                 sampling_ratio: int = 2, scales: Sequence[float] = (0.25, 0.125, 0.0625, 0.03125),
                 aligned: bool = True, legacy: bool = False, canonical_scale: int = 224,
                 canonical_level: int = 4) -> None:
        super().__init__(list(featmap_names), output_size, sampling_ratio,
                         canonical_scale=canonical_scale, canonical_level=canonical_level)
        if len(scales) != len(featmap_names):
            raise ValueError(f"{len(featmap_names)} pooled feature maps but {len(scales)} scales "
                             f"(MODEL.ROI_BOX_HEAD.POOLER_SCALES)")
        self.scales = [float(s) for s in scales]
        self.aligned = bool(aligned)
        self.legacy = bool(legacy)
        self.k_min = int(round(-math.log2(self.scales[0])))
        self.k_max = int(round(-math.log2(self.scales[-1])))

    def map_boxes_to_levels(self, boxes: Tensor) -> Tensor:
        """[K, 4] -> int64 [K] level index (0 = finest)."""
        off = 1.0 if self.legacy else 0.0
        area = (boxes[:, 2] - boxes[:, 0] + off) * (boxes[:, 3] - boxes[:, 1] + off)
        s = area.clamp(min=0).sqrt()
        lvl = torch.floor(self.canonical_level + torch.log2(s / self.canonical_scale + 1e-6))
        return (lvl.clamp(min=self.k_min, max=self.k_max) - self.k_min).to(torch.int64)

    def forward(self, x: Dict[str, Tensor], boxes: List[Tensor],
                image_shapes: Optional[List[Tuple[int, int]]] = None) -> Tensor:
        feats = [x[k] for k in self.featmap_names]
        # float32 boxes and pooling whatever the feature dtype: fp16 cannot hold pixel coordinates.
        concat = torch.cat([b.float() for b in boxes], dim=0)
        ids = torch.cat([torch.full((len(b), 1), i, dtype=concat.dtype, device=concat.device)
                         for i, b in enumerate(boxes)], dim=0)
        rois = torch.cat([ids, concat], dim=1)

        def pool(feat: Tensor, r: Tensor, scale: float) -> Tensor:
            out = roi_align(feat.float(), r, output_size=self.output_size, spatial_scale=scale,
                            sampling_ratio=self.sampling_ratio, aligned=self.aligned)
            return out.to(feat.dtype)

        if len(feats) == 1:
            return pool(feats[0], rois, self.scales[0])
        levels = self.map_boxes_to_levels(concat)
        outs, idxs = [], []
        for lvl, (feat, scale) in enumerate(zip(feats, self.scales)):
            idx = torch.nonzero(levels == lvl).squeeze(1)
            outs.append(pool(feat, rois[idx], scale))
            idxs.append(idx)
        out = torch.cat(outs, dim=0)
        result = out.new_empty(out.shape)
        result[torch.cat(idxs)] = out
        return result


# ----------------------------------------------------------------------------------------------
# RPN
# ----------------------------------------------------------------------------------------------
class RPN(RegionProposalNetwork):
    """torchvision's RPN with the train/test top-N chosen per call and optional legacy conventions.

    Proposal selection (maskrcnn_benchmark FPN, per image): the ``pre_nms_top_n`` best anchors of
    each level, decoded, clipped, small boxes removed, NMS per level (``nms_thresh``), then the
    ``post_nms_top_n`` best over all levels (SGB's ``FPN_POST_NMS_TOP_N_*``).
    """

    def __init__(self, anchor_generator: FPNAnchorGenerator, head: nn.Module, *,
                 fg_iou_thresh: float = 0.7, bg_iou_thresh: float = 0.3,
                 batch_size_per_image: int = 256, positive_fraction: float = 0.5,
                 pre_nms_top_n_train: int = 2000, pre_nms_top_n_test: int = 1000,
                 post_nms_top_n_train: int = 2000, post_nms_top_n_test: int = 1000,
                 nms_thresh: float = 0.7, min_size: float = 0.0, legacy: bool = False) -> None:
        super().__init__(anchor_generator, head, fg_iou_thresh, bg_iou_thresh, batch_size_per_image,
                         positive_fraction,
                         dict(training=pre_nms_top_n_train, testing=pre_nms_top_n_test),
                         dict(training=post_nms_top_n_train, testing=post_nms_top_n_test), nms_thresh)
        self.legacy = bool(legacy)
        self.min_size = float(min_size) if legacy else max(float(min_size), 1e-3)
        self.box_coder = make_box_coder((1.0, 1.0, 1.0, 1.0), legacy)
        if legacy:
            self.box_similarity = partial(pairwise_iou, legacy=True)

    def _top_n(self, objectness: Tensor, num_anchors_per_level: List[int], n: int) -> Tensor:
        r, offset = [], 0
        for ob in objectness.split(num_anchors_per_level, 1):
            k = min(n, ob.shape[1])
            r.append(ob.topk(k, dim=1).indices + offset)
            offset += ob.shape[1]
        return torch.cat(r, dim=1)

    def filter_proposals(self, proposals: Tensor, objectness: Tensor, image_shapes: List[Tuple[int, int]],
                         num_anchors_per_level: List[int], is_train: Optional[bool] = None
                         ) -> Tuple[List[Tensor], List[Tensor]]:
        """``proposals [B, A_total, 4]``, ``objectness [B*A_total, 1]`` -> per image boxes, scores."""
        is_train = self.training if is_train is None else is_train
        key = "training" if is_train else "testing"
        pre_n, post_n = self._pre_nms_top_n[key], self._post_nms_top_n[key]
        num_images, device = proposals.shape[0], proposals.device
        objectness = objectness.detach().float().reshape(num_images, -1)
        levels = torch.cat([torch.full((n,), i, dtype=torch.int64, device=device)
                            for i, n in enumerate(num_anchors_per_level)])
        top = self._top_n(objectness, num_anchors_per_level, pre_n)
        batch_idx = torch.arange(num_images, device=device)[:, None]
        scores = torch.sigmoid(objectness[batch_idx, top])            # [B, K]
        boxes = proposals[batch_idx, top]                             # [B, K, 4]
        lvl = levels[top]                                             # [B, K]
        num_levels = len(num_anchors_per_level)
        img = batch_idx.expand_as(lvl)
        hw = torch.tensor(image_shapes, dtype=boxes.dtype, device=device)   # [B, 2]
        off = 1.0 if self.legacy else 0.0
        maxx = (hw[:, 1] - off)[:, None]
        maxy = (hw[:, 0] - off)[:, None]
        x = boxes[..., 0::2].clamp(min=0).minimum(maxx[..., None])
        y = boxes[..., 1::2].clamp(min=0).minimum(maxy[..., None])
        boxes = torch.stack((x[..., 0], y[..., 0], x[..., 1], y[..., 1]), dim=-1)
        ws = boxes[..., 2] - boxes[..., 0] + off
        hs = boxes[..., 3] - boxes[..., 1] + off
        keep = (ws >= self.min_size) & (hs >= self.min_size) & (scores >= self.score_thresh)
        boxes, scores, img, lvl = boxes[keep], scores[keep], img[keep], lvl[keep]
        k = nms_by_group(boxes, scores, img * num_levels + lvl, self.nms_thresh, self.legacy)
        k = k[_rank_within_groups(img[k], num_images) < post_n]
        boxes, scores, img = boxes[k], scores[k], img[k]
        out_boxes, out_scores = [], []
        for i in range(num_images):
            m = img == i
            out_boxes.append(boxes[m])
            out_scores.append(scores[m])
        return out_boxes, out_scores

    def forward(self, images: ImageList, features: Dict[str, Tensor],
                targets: Optional[List[Dict[str, Tensor]]] = None, is_train: Optional[bool] = None
                ) -> Tuple[List[Tensor], Dict[str, Tensor]]:
        """-> (proposals: list of [P_i, 4], losses). ``is_train`` (default ``self.training``) picks
        the top-N settings; losses are computed when ``is_train`` and ``targets`` is given."""
        is_train = self.training if is_train is None else is_train
        feats = list(features.values())
        objectness, deltas = self.head(feats)
        anchors = self.anchor_generator(images, feats)
        num_images = len(anchors)
        num_anchors_per_level = [o[0].numel() for o in objectness]
        objectness, deltas = concat_box_prediction_layers(objectness, deltas)
        proposals = self.box_coder.decode(deltas.detach().float(), anchors).view(num_images, -1, 4)
        boxes, _ = self.filter_proposals(proposals, objectness, images.image_sizes, num_anchors_per_level,
                                         is_train=is_train)
        losses: Dict[str, Tensor] = {}
        if is_train:
            if targets is None:
                raise ValueError("RPN training needs targets (GT boxes)")
            labels, matched_gt_boxes = self.assign_targets_to_anchors(anchors, targets)
            regression_targets = self.box_coder.encode(matched_gt_boxes, anchors)
            loss_objectness, loss_rpn_box_reg = self.compute_loss(objectness.float(), deltas.float(), labels,
                                                                  regression_targets)
            losses = {"loss_objectness": loss_objectness, "loss_rpn_box_reg": loss_rpn_box_reg}
        return boxes, losses


# ----------------------------------------------------------------------------------------------
# Box head
# ----------------------------------------------------------------------------------------------
class BoxHeads(RoIHeads):
    """Fast R-CNN box branch: ``box_roi_pool`` (:class:`LevelRoIAlign`), ``box_head``
    (``TwoMLPHead``: ``fc6``, ``fc7``), ``box_predictor`` (``FastRCNNPredictor``: ``cls_score``
    ``[C]``, ``bbox_pred`` ``[C*4]``, class-specific), SGB post-processing (module docstring).

    ``losses(features, proposals, image_sizes, targets) -> {loss_classifier, loss_box_reg}``;
    ``inference(features, proposals, image_sizes) -> list[Instances]`` with ``boxes`` (Boxes),
    ``labels`` int64 (1..C-1), ``scores``, ``logits [N, C]`` (class logits of the kept proposal),
    ``boxes_per_cls [N, C, 4]`` (every class's decoded box, as SGB passes to relation heads).
    """

    def __init__(self, box_roi_pool: LevelRoIAlign, box_head: nn.Module, box_predictor: nn.Module, *,
                 fg_iou_thresh: float = 0.5, bg_iou_thresh: float = 0.5, batch_size_per_image: int = 512,
                 positive_fraction: float = 0.25, bbox_reg_weights: Sequence[float] = (10.0, 10.0, 5.0, 5.0),
                 score_thresh: float = 0.01, nms_thresh: float = 0.3, detections_per_img: int = 80,
                 post_nms_per_cls_topn: int = 300, nms_filter_duplicates: bool = True,
                 legacy: bool = False) -> None:
        super().__init__(box_roi_pool, box_head, box_predictor, fg_iou_thresh, bg_iou_thresh,
                         batch_size_per_image, positive_fraction, tuple(bbox_reg_weights), score_thresh,
                         nms_thresh, detections_per_img)
        self.legacy = bool(legacy)
        self.box_coder = make_box_coder(bbox_reg_weights, legacy)
        if legacy:
            self.box_similarity = partial(pairwise_iou, legacy=True)
        self.post_nms_per_cls_topn = int(post_nms_per_cls_topn)
        self.nms_filter_duplicates = bool(nms_filter_duplicates)

    def assign_targets_to_proposals(self, proposals, gt_boxes, gt_labels):
        # torchvision's, with ``self.box_similarity`` (legacy "+1" IoU when asked) instead of box_iou.
        matched_idxs, labels = [], []
        for props, gt, gl in zip(proposals, gt_boxes, gt_labels):
            if gt.numel() == 0:
                matched = torch.zeros((props.shape[0],), dtype=torch.int64, device=props.device)
                lab = torch.zeros((props.shape[0],), dtype=torch.int64, device=props.device)
            else:
                m = self.proposal_matcher(self.box_similarity(gt, props))
                matched = m.clamp(min=0)
                lab = gl[matched].to(torch.int64)
                lab[m == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0
                lab[m == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1
            matched_idxs.append(matched)
            labels.append(lab)
        return matched_idxs, labels

    def box_features(self, features: Dict[str, Tensor], boxes: List[Tensor],
                     image_sizes: List[Tuple[int, int]]) -> Tensor:
        """fc7 features ``[sum K_i, MLP_HEAD_DIM]`` of the given boxes."""
        return self.box_head(self.box_roi_pool(features, boxes, image_sizes))

    def losses(self, features: Dict[str, Tensor], proposals: List[Tensor], image_sizes: List[Tuple[int, int]],
               targets: List[Dict[str, Tensor]]) -> Dict[str, Tensor]:
        proposals, _, labels, regression_targets = self.select_training_samples(proposals, targets)
        class_logits, box_regression = self.box_predictor(self.box_features(features, proposals, image_sizes))
        loss_cls, loss_box = fastrcnn_loss(class_logits.float(), box_regression.float(), labels,
                                           regression_targets)
        return {"loss_classifier": loss_cls, "loss_box_reg": loss_box}

    def inference(self, features: Dict[str, Tensor], proposals: List[Tensor],
                  image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        class_logits, box_regression = self.box_predictor(self.box_features(features, proposals, image_sizes))
        return self.postprocess(class_logits.float(), box_regression.float(), proposals, image_sizes)

    def forward(self, features, proposals, image_shapes, targets=None):
        if self.training:
            return self.losses(features, proposals, image_shapes, targets)
        return self.inference(features, proposals, image_shapes)

    def postprocess(self, class_logits: Tensor, box_regression: Tensor, proposals: List[Tensor],
                    image_sizes: List[Tuple[int, int]]) -> List[Instances]:
        """``class_logits [R, C]``, ``box_regression [R, C*4]`` over all images -> detections."""
        num_classes = class_logits.shape[-1]
        counts = [len(p) for p in proposals]
        boxes = self.box_coder.decode_single(box_regression, torch.cat(proposals).float())
        boxes = boxes.reshape(-1, num_classes, 4)
        scores = F.softmax(class_logits, -1)
        out = []
        for lg, bx, sc, size in zip(class_logits.split(counts), boxes.split(counts), scores.split(counts),
                                    image_sizes):
            out.append(self._filter(lg, clip_boxes(bx, size, self.legacy), sc, size))
        return out

    def _filter(self, logits: Tensor, boxes: Tensor, scores: Tensor, size: Tuple[int, int]) -> Instances:
        num_props, num_classes = scores.shape
        r, c = torch.nonzero(scores[:, 1:] > self.score_thresh, as_tuple=True)
        c = c + 1
        s = scores[r, c]
        k = nms_by_group(boxes[r, c], s, c, self.nms_thresh, self.legacy)   # score-descending
        r, c, s = r[k], c[k], s[k]
        if self.post_nms_per_cls_topn > 0:
            sel = _rank_within_groups(c, num_classes) < self.post_nms_per_cls_topn
            r, c, s = r[sel], c[sel], s[sel]
        if self.nms_filter_duplicates:
            # One label per box: among the classes that survived NMS, the best-scoring one.
            dist = scores.new_zeros((num_props, num_classes))
            dist[r, c] = s
            best, best_c = dist.max(dim=1)
            r = torch.nonzero(best > 0).squeeze(1)
            c, s = best_c[r], best[r]
        n = s.numel() if self.detections_per_img <= 0 else min(self.detections_per_img, s.numel())
        top = s.topk(n).indices
        r, c, s = r[top], c[top], s[top]
        return Instances(size, boxes=Boxes(boxes[r, c]), labels=c, scores=s, logits=logits[r],
                         boxes_per_cls=boxes[r])


# ----------------------------------------------------------------------------------------------
# The detector
# ----------------------------------------------------------------------------------------------
def make_rpn(in_channels: int, *, anchor_sizes: Sequence[int] = (32, 64, 128, 256, 512),
             aspect_ratios: Sequence[float] = (0.23232838, 0.63365731, 1.28478321, 3.15089189),
             anchor_strides: Sequence[int] = (4, 8, 16, 32, 64), legacy: bool = False, **kwargs) -> RPN:
    """RPN with VG anchors; ``kwargs`` go to :class:`RPN` (top-N, IoU thresholds, ...)."""
    anchor_generator = FPNAnchorGenerator(anchor_sizes, aspect_ratios, anchor_strides, legacy=legacy)
    head = RPNHead(in_channels, anchor_generator.num_anchors_per_location()[0])
    return RPN(anchor_generator, head, legacy=legacy, **kwargs)


def make_box_heads(in_channels: int, num_classes: int, *, mlp_head_dim: int = 4096,
                   pooler_resolution: int = 7, pooler_sampling_ratio: int = 2,
                   pooler_scales: Sequence[float] = (0.25, 0.125, 0.0625, 0.03125), aligned: bool = True,
                   legacy: bool = False, **kwargs) -> BoxHeads:
    """Pooler (levels '0'..'3') + fc6/fc7 + class-specific predictor; ``kwargs`` go to :class:`BoxHeads`."""
    names = [str(i) for i in range(len(pooler_scales))]
    pool = LevelRoIAlign(names, pooler_resolution, pooler_sampling_ratio, pooler_scales, aligned=aligned,
                         legacy=legacy)
    head = TwoMLPHead(in_channels * pooler_resolution ** 2, mlp_head_dim)
    predictor = FastRCNNPredictor(mlp_head_dim, num_classes)
    # maskrcnn_benchmark's initialisation (torchvision keeps nn.Linear's default).
    for fc in (head.fc6, head.fc7):
        nn.init.kaiming_uniform_(fc.weight, a=1)
        nn.init.zeros_(fc.bias)
    nn.init.normal_(predictor.cls_score.weight, std=0.01)
    nn.init.normal_(predictor.bbox_pred.weight, std=0.001)
    nn.init.zeros_(predictor.cls_score.bias)
    nn.init.zeros_(predictor.bbox_pred.bias)
    return BoxHeads(pool, head, predictor, legacy=legacy, **kwargs)


class FasterRCNNDetector(nn.Module):
    """Two-stage object detector: ``backbone`` -> ``rpn`` -> ``roi_heads`` (see module docstring).

    ``forward(batched_inputs)``: list of mapper dicts (``image`` [3,H,W] RGB 0..255; in training
    ``instances`` with ``gt_boxes`` (Boxes, resized frame) and ``gt_classes``). Training ->
    ``{loss_objectness, loss_rpn_box_reg, loss_classifier, loss_box_reg}``; eval ->
    ``list[Instances]`` in the resized frame (see :class:`BoxHeads` for the fields).
    """

    def __init__(self, backbone: nn.Module, rpn: RPN, roi_heads: BoxHeads, *,
                 pixel_mean: Sequence[float] = (102.9801, 115.9465, 122.7717),
                 pixel_std: Sequence[float] = (1.0, 1.0, 1.0), to_bgr255: bool = True,
                 size_divisibility: int = 32, channels_last: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        self.rpn = rpn
        self.roi_heads = roi_heads
        self.to_bgr255 = bool(to_bgr255)
        self.size_divisibility = int(size_divisibility)
        # NHWC convolutions (cuDNN's fast path for grouped ResNeXt convs and tensor cores); the
        # results are the same up to floating-point summation order.
        self.channels_last = bool(channels_last)
        if self.channels_last:
            self.backbone.to(memory_format=torch.channels_last)
            self.rpn.head.to(memory_format=torch.channels_last)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)

    # Parts the relation head copies / reuses.
    @property
    def box_roi_pool(self) -> LevelRoIAlign:
        return self.roi_heads.box_roi_pool

    @classmethod
    def from_config(cls, cfg, num_classes: Optional[int] = None) -> "FasterRCNNDetector":
        """Faster R-CNN of ``cfg``; ``num_classes`` (with background) defaults to
        ``MODEL.ROI_BOX_HEAD.NUM_CLASSES``. Random init: weights come from the load step."""
        import logging

        from sgg.modeling.backbone import build_backbone

        kw = _detector_kwargs(cfg, num_classes)
        if cfg.MODEL.BACKBONE.WEIGHTS and cfg.INPUT.TO_BGR255 and not cfg.MODEL.BACKBONE.CONV_BODY.startswith("timm:"):
            logging.getLogger(__name__).info(
                "INPUT.TO_BGR255 is True (SGB's BGR 0..255 input); torchvision ImageNet weights expect "
                "TO_BGR255 False, PIXEL_MEAN [0.485, 0.456, 0.406], PIXEL_STD [0.229, 0.224, 0.225]")
        backbone = build_backbone(cfg)
        rpn = make_rpn(backbone.out_channels, **kw["rpn"])
        box = dict(kw["box"])
        roi_heads = make_box_heads(backbone.out_channels, box.pop("num_classes"), **box)
        return cls(backbone, rpn, roi_heads, **kw["model"])

    @property
    def box_head(self) -> TwoMLPHead:
        return self.roi_heads.box_head

    @property
    def box_predictor(self) -> FastRCNNPredictor:
        return self.roi_heads.box_predictor

    @property
    def num_classes(self) -> int:
        return self.roi_heads.box_predictor.cls_score.out_features

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, image: Tensor) -> Tensor:
        """One RGB 0..255 ``[3, H, W]`` image -> normalised float ``[3, H, W]`` on the model's device."""
        x = image.to(self.device, non_blocking=True).float()
        x = x.flip(0) if self.to_bgr255 else x / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def preprocess(self, batched_inputs: Sequence[dict]) -> Tuple[Tensor, List[Tuple[int, int]]]:
        """-> (images ``[B, 3, Hp, Wp]`` normalised and zero-padded to ``size_divisibility``,
        image_sizes ``[(h, w)]`` before padding)."""
        batch, sizes = pad_images([self.normalize(d["image"]) for d in batched_inputs], self.size_divisibility)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        return batch, sizes

    def _targets(self, batched_inputs: Sequence[dict]) -> List[Dict[str, Tensor]]:
        targets = []
        for d in batched_inputs:
            if "instances" not in d:
                raise KeyError("detector training needs 'instances' (gt_boxes, gt_classes) in every input")
            inst = d["instances"]
            boxes = inst.gt_boxes.tensor.to(self.device).float()
            if not self.rpn.legacy and len(boxes):
                # Zero-width GT boxes (VG clips to size - 1) would give log(0) regression targets.
                boxes = torch.cat([boxes[:, :2], torch.maximum(boxes[:, 2:], boxes[:, :2] + 1)], dim=1)
            targets.append({"boxes": boxes, "labels": inst.gt_classes.to(self.device).long()})
        return targets

    def detect(self, images: Tensor, image_sizes: List[Tuple[int, int]],
               features: Dict[str, Tensor]) -> List[Instances]:
        """Inference on already computed features (test-time RPN settings, whatever the mode).

        Used by the two-stage model, which runs the (frozen) detector under ``torch.no_grad()``.
        Returns detections in the frame of ``images`` (the resized frame).
        """
        proposals, _ = self.rpn(ImageList(images, image_sizes), features, None, is_train=False)
        return self.roi_heads.inference(features, proposals, image_sizes)

    def forward(self, batched_inputs: Sequence[dict]):
        images, image_sizes = self.preprocess(batched_inputs)
        features = self.backbone(images)
        if not self.training:
            return self.detect(images, image_sizes, features)
        targets = self._targets(batched_inputs)
        proposals, losses = self.rpn(ImageList(images, image_sizes), features, targets, is_train=True)
        losses.update(self.roi_heads.losses(features, proposals, image_sizes, targets))
        return losses


def detector_postprocess(instances: Instances, height: int, width: int) -> Instances:
    """Detections of the resized frame -> the original ``height x width`` image (new Instances)."""
    rh, rw = instances.image_size
    sx, sy = width / max(rw, 1), height / max(rh, 1)
    out = Instances((height, width))
    for k, v in instances.get_fields().items():
        if k == "boxes":
            v = Boxes(v.tensor.clone()).scale(sx, sy)
        elif k == "boxes_per_cls":
            v = v * v.new_tensor([sx, sy, sx, sy])
        out.set(k, v)
    return out


def _detector_kwargs(cfg, num_classes: Optional[int] = None) -> Dict:
    """Plain keyword arguments of every part, read from ``cfg`` (cfg stops here)."""
    m = cfg.MODEL
    if m.CLS_AGNOSTIC_BBOX_REG:
        raise ValueError("MODEL.CLS_AGNOSTIC_BBOX_REG True is not supported: the box head regresses "
                         "one box per class (as SGB's VG detectors)")
    det = m.DETECTOR
    legacy = bool(det.LEGACY_BOX_CODING)
    if num_classes is None:
        num_classes = m.ROI_BOX_HEAD.NUM_CLASSES
    rpn = dict(
        anchor_sizes=tuple(m.RPN.ANCHOR_SIZES),
        aspect_ratios=tuple(m.RPN.ASPECT_RATIOS),
        anchor_strides=tuple(m.RPN.ANCHOR_STRIDE),
        fg_iou_thresh=m.RPN.FG_IOU_THRESHOLD,
        bg_iou_thresh=m.RPN.BG_IOU_THRESHOLD,
        batch_size_per_image=m.RPN.BATCH_SIZE_PER_IMAGE,
        positive_fraction=m.RPN.POSITIVE_FRACTION,
        pre_nms_top_n_train=m.RPN.PRE_NMS_TOP_N_TRAIN,
        pre_nms_top_n_test=m.RPN.PRE_NMS_TOP_N_TEST,
        # maskrcnn_benchmark FPN: the per-image cap over all levels is FPN_POST_NMS_TOP_N_*.
        post_nms_top_n_train=m.RPN.FPN_POST_NMS_TOP_N_TRAIN,
        post_nms_top_n_test=m.RPN.FPN_POST_NMS_TOP_N_TEST,
        nms_thresh=m.RPN.NMS_THRESH,
        min_size=float(m.RPN.MIN_SIZE),
        legacy=legacy,
    )
    box = dict(
        num_classes=int(num_classes),
        mlp_head_dim=m.ROI_BOX_HEAD.MLP_HEAD_DIM,
        pooler_resolution=m.ROI_BOX_HEAD.POOLER_RESOLUTION,
        pooler_sampling_ratio=m.ROI_BOX_HEAD.POOLER_SAMPLING_RATIO,
        pooler_scales=tuple(m.ROI_BOX_HEAD.POOLER_SCALES),
        aligned=bool(det.ALIGNED_ROI),
        legacy=legacy,
        fg_iou_thresh=m.ROI_HEADS.FG_IOU_THRESHOLD,
        bg_iou_thresh=m.ROI_HEADS.BG_IOU_THRESHOLD,
        batch_size_per_image=m.ROI_HEADS.BATCH_SIZE_PER_IMAGE,
        positive_fraction=m.ROI_HEADS.POSITIVE_FRACTION,
        bbox_reg_weights=tuple(m.ROI_HEADS.BBOX_REG_WEIGHTS),
        score_thresh=m.ROI_HEADS.SCORE_THRESH,
        nms_thresh=m.ROI_HEADS.NMS,
        detections_per_img=m.ROI_HEADS.DETECTIONS_PER_IMG,
        post_nms_per_cls_topn=m.ROI_HEADS.POST_NMS_PER_CLS_TOPN,
        nms_filter_duplicates=m.ROI_HEADS.NMS_FILTER_DUPLICATES,
    )
    model = dict(
        pixel_mean=tuple(cfg.INPUT.PIXEL_MEAN),
        pixel_std=tuple(cfg.INPUT.PIXEL_STD),
        to_bgr255=cfg.INPUT.TO_BGR255,
        size_divisibility=cfg.DATALOADER.SIZE_DIVISIBILITY,
        channels_last=bool(det.CHANNELS_LAST),
    )
    return {"rpn": rpn, "box": box, "model": model}
