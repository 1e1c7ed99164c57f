"""Two-stage SGG: a frozen Faster R-CNN detector, then a relation head (SGB's GeneralizedRCNN
with RELATION_ON).

Training: the detector (backbone, RPN, box head) is frozen and kept in eval mode, as in SGB; only
the relation head learns. Inference takes its inputs through :func:`visible_inputs`, so the
model cannot see ground truth that the protocol withholds (SGDet: none; SGCls: boxes; PredCls:
boxes and labels).
"""
from __future__ import annotations

import logging
from typing import List, Sequence

import torch
from torch import nn

from sgg.protocol import check_mode, visible_inputs
from sgg.structures import Instances, SceneGraph
from sgg.structures.image_batch import map_by_padded_shape

logger = logging.getLogger(__name__)


class TwoStageSGG(nn.Module):
    """``detector`` (:class:`~sgg.modeling.detector.FasterRCNNDetector`) + ``relation_head``
    (:class:`~sgg.modeling.relation.RelationHead`) for protocol ``mode``.

    ``forward(batched_inputs)`` takes mapper outputs; training returns ``{"loss_rel",
    "loss_refine_obj"}``, inference a list of :class:`SceneGraph` in original image pixels.
    """

    def __init__(self, detector: nn.Module, relation_head: nn.Module, mode: str) -> None:
        super().__init__()
        check_mode(mode)
        self.detector = detector
        self.relation_head = relation_head
        self.mode = mode
        for p in self.detector.parameters():
            p.requires_grad_(False)
        self.detector.eval()

    def train(self, mode: bool = True) -> "TwoStageSGG":
        super().train(mode)
        self.detector.eval()  # frozen: BN statistics and dropout stay in inference mode
        return self

    def _gt_proposals(self, inputs: Sequence[dict], images: torch.Tensor, image_sizes, features) -> List[Instances]:
        device = images.device
        proposals = []
        for d, size in zip(inputs, image_sizes):
            inst = d["instances"]
            boxes = inst.gt_boxes.to(device)
            fields = {"boxes": boxes, "scores": torch.ones(len(boxes), device=device)}
            if self.mode == "predcls" or self.training:
                fields["labels"] = inst.gt_classes.to(device).long()
            proposals.append(Instances(size, **fields))
        if self.mode == "sgcls":
            # SGB feeds the detector's class distribution on the GT boxes to the object context.
            roi_heads = self.detector.roi_heads
            box_feats = roi_heads.box_features(features, [p.boxes.tensor for p in proposals], image_sizes)
            logits, _ = roi_heads.box_predictor(box_feats)
            for p, lg in zip(proposals, logits.split([len(p) for p in proposals])):
                p.logits = lg
        return proposals

    def forward(self, batched_inputs: Sequence[dict]):
        if self.training:
            return self._forward(batched_inputs)
        batched_inputs = [visible_inputs(d, self.mode) for d in batched_inputs]
        # An image's features depend on the zero-padded canvas it is batched on (the FPN top-down
        # path and GroupNorm see the padding everywhere on small images): run equal canvases together.
        div = int(getattr(self.detector, "size_divisibility", 1))
        return map_by_padded_shape(batched_inputs, lambda d: d["image"], div, self._forward)

    def _forward(self, batched_inputs: Sequence[dict]):
        with torch.no_grad():
            images, image_sizes = self.detector.preprocess(batched_inputs)
            features = self.detector.backbone(images)
            if self.mode == "sgdet":
                proposals = self.detector.detect(images, image_sizes, features)
            else:
                proposals = self._gt_proposals(batched_inputs, images, image_sizes, features)
        if self.training:
            device = images.device
            targets = [d["instances"].to(device) for d in batched_inputs]
            relations = [d["relations"].to(device) for d in batched_inputs]
            return self.relation_head(features, proposals, targets, relations)
        graphs: List[SceneGraph] = self.relation_head(features, proposals)
        return [g.resized((d["height"], d["width"])) for g, d in zip(graphs, batched_inputs)]
