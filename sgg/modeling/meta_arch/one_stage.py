"""One-stage SGG (CoRF-style composite fields): one network predicts object and relation fields on
a stride-16 grid, a vectorised decoder turns them into :class:`~sgg.structures.SceneGraph`s.

Training: the mapper's GT (boxes in the resized frame, labels, relations) is encoded into dense
targets on the padded batch grid and the six field losses are returned. Inference takes its
inputs through :func:`~sgg.protocol.visible_inputs` (SGDet reads no GT; SGCls only the GT boxes;
PredCls boxes and labels) and returns graphs in original image pixels, like the two-stage model.

Config keys: ``MODEL.ONESTAGE.*`` in :mod:`sgg.config.defaults`.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from sgg.protocol import check_mode, protocol_from_config, visible_inputs
from sgg.structures import SceneGraph
from sgg.structures.image_batch import map_by_padded_shape, pad_images

logger = logging.getLogger(__name__)

__all__ = ["OneStageSGG"]




class OneStageSGG(nn.Module):
    """``net`` (:class:`~sgg.modeling.onestage.fields.CompositeFieldNet`) + target encoding, losses
    and decoding, for protocol ``mode``.

    Args:
        net: the field network (``net.stride``, ``net.num_classes`` C and ``net.num_predicates`` P
            without background).
        mode: "predcls" | "sgcls" | "sgdet" (what the model may read at test time).
        pixel_mean, pixel_std, to_bgr255: input normalisation of the uint8 RGB mapper images
            (``to_bgr255``: BGR 0..255 minus mean, else RGB / 255, then (x - mean) / std).
        input_key: the mapper key the network reads: ``"image"`` (default, RGB) or ``"depth"``
            (the STDG depth model, ``MODEL.STDG.MODE "depth"``: the mapper's 3-channel depth
            encoding ``[3, H, W]`` in [0, 1], normalised as ``(x - pixel_mean) / pixel_std`` with no
            /255 and no channel flip; ``MODEL.STDG.DEPTH_PIXEL_MEAN`` 0 / ``DEPTH_PIXEL_STD`` 1
            by default, i.e. the encoding as it is).
        size_divisibility: the batch is zero-padded to a multiple of this (>= the stride).
        min_overlap, rel_margin: target encoding (:func:`~sgg.modeling.onestage.encoder.encode_targets`).
        loss_weights: :func:`~sgg.modeling.onestage.losses.field_losses` weights.
        topk_objects, rel_threshold, max_relations, sgcls_iou: decoding
            (:func:`~sgg.modeling.onestage.decoder.decode_fields`).
        cuda_graphs: at inference on CUDA, run the network through a
            :class:`~sgg.utils.cuda_graph.CUDAGraphRunner` (one graph per padded batch shape).

    ``forward(batched_inputs)`` takes mapper dicts; training returns ``{loss_obj_heatmap,
    loss_obj_offset, loss_obj_size, loss_rel_heatmap, loss_rel_vector, loss_rel_scale}``,
    inference a list of :class:`SceneGraph` in original image pixels. ``forward_fields(images)``
    is the raw network (used by the depth teacher and the export). The network reads
    ``d[input_key]`` of every input (:meth:`input_tensors`).
    """

    def __init__(self, net: nn.Module, mode: str, *, pixel_mean: Sequence[float] = (0.485, 0.456, 0.406),
                 pixel_std: Sequence[float] = (0.229, 0.224, 0.225), to_bgr255: bool = False,
                 size_divisibility: int = 32, min_overlap: float = 0.7, rel_margin: float = 0.3,
                 loss_weights: Optional[Mapping[str, float]] = None, topk_objects: int = 100,
                 rel_threshold: float = 0.1, max_relations: Optional[int] = None, sgcls_iou: float = 0.5,
                 pair_score_filter: bool = True, input_key: str = "image", cuda_graphs: bool = False) -> None:
        super().__init__()
        check_mode(mode)
        if input_key not in ("image", "depth"):
            raise ValueError(f"input_key must be 'image' or 'depth', got {input_key!r}")
        self.input_key = input_key
        self.net = net
        self.mode = mode
        self.stride = int(getattr(net, "stride", 16))
        self.num_classes = int(net.num_classes)
        self.num_predicates = int(net.num_predicates)
        self.to_bgr255 = bool(to_bgr255)
        self.size_divisibility = max(int(size_divisibility), self.stride)
        if self.size_divisibility % self.stride:
            raise ValueError(f"size_divisibility {size_divisibility} must be a multiple of the stride {self.stride}")
        self.min_overlap = float(min_overlap)
        self.rel_margin = float(rel_margin)
        self.loss_weights = dict(loss_weights or {})
        self.topk_objects = int(topk_objects)
        self.rel_threshold = float(rel_threshold)
        self.max_relations = int(max_relations) if max_relations else None
        self.sgcls_iou = float(sgcls_iou)
        self.pair_score_filter = bool(pair_score_filter)
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean, dtype=torch.float32).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std, dtype=torch.float32).view(-1, 1, 1), False)
        self.graph_runner = None
        if cuda_graphs:
            from sgg.utils.cuda_graph import CUDAGraphRunner

            self.graph_runner = CUDAGraphRunner(self.net)

    @classmethod
    def from_config(cls, cfg, num_obj_classes: int, num_rel_classes: int) -> "OneStageSGG":
        """The model of ``cfg.MODEL.ONESTAGE`` (class counts WITH background) for the config's
        protocol; ``MODEL.STDG.MODE "depth"`` makes it read the depth encoding (``input_key="depth"``,
        ``MODEL.STDG.DEPTH_PIXEL_MEAN`` / ``DEPTH_PIXEL_STD``)."""
        from sgg.modeling.onestage.fields import CompositeFieldNet

        o = cfg.MODEL.ONESTAGE
        stdg = cfg.MODEL.STDG
        if stdg.MODE == "depth":
            inputs = dict(input_key="depth", pixel_mean=tuple(stdg.DEPTH_PIXEL_MEAN),
                          pixel_std=tuple(stdg.DEPTH_PIXEL_STD), to_bgr255=False)
        else:
            inputs = dict(input_key="image", pixel_mean=tuple(cfg.INPUT.PIXEL_MEAN),
                          pixel_std=tuple(cfg.INPUT.PIXEL_STD), to_bgr255=bool(cfg.INPUT.TO_BGR255))
        net = CompositeFieldNet.from_config(cfg, num_obj_classes - 1, num_rel_classes - 1)
        return cls(
            net, protocol_from_config(cfg), **inputs,
            size_divisibility=max(int(cfg.DATALOADER.SIZE_DIVISIBILITY), 16),
            min_overlap=o.MIN_OVERLAP, rel_margin=o.REL_MARGIN,
            loss_weights=dict(obj_hm=o.LOSS_OBJ_HEATMAP, obj_offset=o.LOSS_OBJ_OFFSET, obj_size=o.LOSS_OBJ_SIZE,
                              rel_hm=o.LOSS_REL_HEATMAP, rel_vec=o.LOSS_REL_VECTOR, rel_scale=o.LOSS_REL_SCALE),
            topk_objects=o.TOPK_OBJECTS, rel_threshold=o.REL_THRESHOLD, max_relations=o.MAX_RELATIONS or None,
            sgcls_iou=o.SGCLS_IOU, pair_score_filter=o.PAIR_SCORE_FILTER, cuda_graphs=o.CUDA_GRAPHS,
        )

    @property
    def device(self) -> torch.device:
        return self.pixel_mean.device

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 RGB ``[3, H, W]`` (or float 0..255) -> normalised float on the model's device.
        With ``input_key="depth"``: the float depth encoding ``[3, H, W]`` -> ``(x - mean) / std``."""
        x = image.to(self.device, non_blocking=True).float()
        if self.input_key == "depth":
            if x.dim() != 3 or x.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(f"the depth model reads a {self.pixel_mean.shape[0]}-channel depth encoding "
                                 f"[C, H, W], got 'depth' of shape {tuple(x.shape)}: set INPUT.DEPTH_ENCODING "
                                 f"('hha' or 'normalized')")
            return (x - self.pixel_mean) / self.pixel_std
        x = x.flip(0) if self.to_bgr255 else x / 255.0
        return (x - self.pixel_mean) / self.pixel_std

    def input_tensors(self, batched_inputs: Sequence[dict]) -> List[torch.Tensor]:
        """The per-image tensors the network reads: ``d[self.input_key]`` of every input."""
        missing = [i for i, d in enumerate(batched_inputs) if self.input_key not in d]
        if missing:
            hint = (" (the depth model reads the mapper's 'depth': set INPUT.LOAD_DEPTH True and "
                    "INPUT.DEPTH_ENCODING)" if self.input_key == "depth" else "")
            raise KeyError(f"inputs {missing} have no '{self.input_key}'{hint}")
        return [d[self.input_key] for d in batched_inputs]

    def preprocess(self, images: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, List[Tuple[int, int]]]:
        """-> (``[B, C, Hp, Wp]`` normalised, zero-padded at the bottom / right to
        ``size_divisibility``; the unpadded (h, w) of each image)."""
        return pad_images([self.normalize(x) for x in images], self.size_divisibility)

    def forward_fields(self, images: torch.Tensor) -> Dict[str, Any]:
        return self.net(images)

    def encode(self, batched_inputs: Sequence[dict], grid_size: Tuple[int, int]) -> Dict[str, torch.Tensor]:
        """Dense targets of the batch on ``grid_size`` (the network's output grid)."""
        from sgg.modeling.onestage.encoder import encode_batch, encode_targets

        per_image = []
        for d in batched_inputs:
            if "instances" not in d or "relations" not in d:
                raise KeyError("one-stage training needs 'instances' (gt_boxes, gt_classes) and 'relations' "
                               "in every input (the mapper's training output)")
            inst = d["instances"]
            per_image.append(encode_targets(
                inst.gt_boxes.tensor.to(self.device).float(), inst.gt_classes.to(self.device).long(),
                d["relations"].to(self.device).long(), grid_size, self.num_classes, self.num_predicates,
                stride=self.stride, min_overlap=self.min_overlap, rel_margin=self.rel_margin))
        return encode_batch(per_image, grid_size)

    def losses(self, fields: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        from sgg.modeling.onestage.losses import field_losses

        return field_losses(fields, targets, self.loss_weights)

    def forward(self, batched_inputs: Sequence[dict]):
        if self.training:
            images, _ = self.preprocess(self.input_tensors(batched_inputs))
            fields = self.net(images)
            targets = self.encode(batched_inputs, tuple(fields["obj_logits"].shape[-2:]))
            return self.losses(fields, targets)
        return self.inference(batched_inputs)

    def inference(self, batched_inputs: Sequence[dict], fields: Optional[Mapping[str, torch.Tensor]] = None
                  ) -> List[SceneGraph]:
        """Graphs of a test batch in original pixels. Without ``fields`` the batch runs in groups
        of equal padded shape (:func:`~sgg.structures.image_batch.map_by_padded_shape`), so the
        graphs do not depend on TEST.IMS_PER_BATCH or the batch order (as the two-stage model).
        ``fields`` (the network's output for the whole batch, padded to its largest image) skips
        the network."""
        inputs = [visible_inputs(d, self.mode) for d in batched_inputs]
        if fields is not None:
            return self._decode(inputs, fields)
        return map_by_padded_shape(inputs, lambda d: self.input_tensors([d])[0], self.size_divisibility,
                                   self._decode)

    def _decode(self, inputs: Sequence[dict], fields: Optional[Mapping[str, torch.Tensor]] = None
                ) -> List[SceneGraph]:
        from sgg.modeling.onestage.decoder import decode_fields

        images, sizes = self.preprocess(self.input_tensors(inputs))
        if fields is None:
            fields = self.net(images) if self.graph_runner is None else self.graph_runner(images)
        gt_boxes = gt_labels = None
        if self.mode != "sgdet":
            gt_boxes = [d["instances"].gt_boxes.tensor.to(self.device).float() for d in inputs]
        if self.mode == "predcls":
            gt_labels = [d["instances"].gt_classes.to(self.device).long() for d in inputs]
        graphs = decode_fields(fields, sizes, stride=self.stride, mode=self.mode, gt_boxes=gt_boxes,
                               gt_labels=gt_labels, topk_objects=self.topk_objects,
                               rel_threshold=self.rel_threshold, max_relations=self.max_relations,
                               sgcls_iou=self.sgcls_iou, pair_score_filter=self.pair_score_filter)
        return [g.resized((int(d["height"]), int(d["width"]))) for g, d in zip(graphs, inputs)]
