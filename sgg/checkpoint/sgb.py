"""Scene-Graph-Benchmark (maskrcnn_benchmark) checkpoints <-> sgg: detectors both ways, whole relation
models (SGB's and PE-Net's, every predictor) into sgg's two-stage relation model.

SGB's VG Faster R-CNN (``pretrained_faster_rcnn/model_final.pth``) is a ``torch.save`` dict with
the state dict under ``"model"`` (keys may start with ``module.``) plus ``"optimizer"``,
``"scheduler"`` and ``"iteration"``, which are ignored. Its key names are maskrcnn_benchmark's;
sgg's detector uses torchvision's module names. The mapping (``i`` = 1..4, ``j = i - 1``):

=====================================================  =============================================
maskrcnn_benchmark (SGB)                               sgg (:class:`FasterRCNNDetector`)
=====================================================  =============================================
``backbone.body.stem.conv1.*`` / ``stem.bn1.*``        ``backbone.body.conv1.*`` / ``body.bn1.*``
``backbone.body.layer{i}.{b}.conv{1,2,3}`` /           the same names (torchvision's Bottleneck /
``bn{1,2,3}`` / ``downsample.{0,1}``                   BasicBlock)
``backbone.fpn.fpn_inner{i}.*`` (1x1 lateral)          ``backbone.fpn.inner_blocks.{j}.0.*``
``backbone.fpn.fpn_layer{i}.*`` (3x3 output)           ``backbone.fpn.layer_blocks.{j}.0.*``
``rpn.head.conv.*``                                    ``rpn.head.conv.0.0.*`` (torchvision >= 0.13;
                                                       ``rpn.head.conv.*`` before)
``rpn.head.cls_logits.*`` / ``rpn.head.bbox_pred.*``   the same names
``roi_heads.box.feature_extractor.fc6/fc7.*``          ``roi_heads.box_head.fc6/fc7.*``
``roi_heads.box.predictor.cls_score/bbox_pred.*``      ``roi_heads.box_predictor.cls_score/bbox_pred.*``
``rpn.anchor_generator.*`` (anchor buffers)            ignored (sgg computes its anchors)
``roi_heads.attribute.*``                              reported as skipped, expected (sgg has no
                                                       attribute head)
``roi_heads.relation.*``, target a detector            reported as skipped, expected
``roi_heads.relation.*``, target a relation model      ``relation_head.*`` (:mod:`.sgb_relation`):
(``build_sgg_model(...).state_dict()``)                same names for every predictor's
                                                       ``predictor.*``; ``box_feature_extractor.fc6/7``
                                                       -> ``box_feature_extractor.head.fc6/7``;
                                                       ``union_feature_extractor.feature_extractor.``
                                                       ``fc6/7`` -> ``union_feature_extractor.head.``
                                                       ``fc6/7``; ``...feature_extractor.pooler.``
                                                       ``reduce_channel.0`` -> ``union_feature_``
                                                       ``extractor.reduce_channel.0``; ``rect_conv.*``
                                                       as is; Transformer ``pos_ffn.w_1/w_2.weight``
                                                       ``[out, in, 1]`` -> ``[out, in]``
relation keys of modules sgg does not build (object    reported as skipped, expected (PredCls object
decoder / classifier in PredCls, PE-Net's              decoder / classifiers and averages, PE-Net's
``linear_pred``, VCTree's second names of its          object branch in PredCls, ``linear_pred``,
decoder embedding / classifier, ...)                   union branch without PREDICT_USE_VISION, ...)
anything else, and mapped names the target model       reported as skipped and *unplaced*
does not have (e.g. ``layer3.6..22`` of a ResNeXt-101
converted for a ResNet-50 config; another predictor
or context than the config's; an attribute model's
``att_feature_extractor``)
=====================================================  =============================================

For a relation model the detector keys land under ``detector.``, the report adds ``defaulted`` (model
tensors SGB may lack, left as initialised: the Causal moving averages, which SGB registers only with
``EFFECT_ANALYSIS``, and ``num_batches_tracked``) and ``reasons`` (why each relation key was
skipped). ``MODEL.WEIGHT`` may name such a file: :func:`sgg.engine.loading.load_trained_model`
(relation_test_net, Predictor) and ``Checkpointer.load`` (the initialisation of training, HML's
stages included) convert it with :func:`load_sgb_relation_checkpoint`, which raises
:class:`UnplacedTensorsError` for unplaced tensors unless ``allow_unplaced`` and
:class:`~sgg.checkpoint.CheckpointError` for model tensors the file lacks. SGB relation
checkpoints carry no class names: they come from ``DATASETS.TRAIN[0]``.

Unplaced tensors are weights the converted state dict would silently lose (usually a backbone of
another depth than the config's, or a relation head of another predictor): :func:`convert_checkpoint_file` refuses them
(:class:`UnplacedTensorsError`, naming the count, examples and the config keys to set, nothing
written) unless ``allow_unplaced`` (``--allow-unplaced``). ``optimizer`` / ``scheduler`` /
``iteration`` of the checkpoint dict are never read.

No detector tensor needs re-laying out, only renaming (checked against both frameworks' code):

* frozen batch norms: maskrcnn_benchmark's ``FrozenBatchNorm2d`` and torchvision's hold the same
  four buffers (``weight``, ``bias``, ``running_mean``, ``running_var``); maskrcnn_benchmark applies
  them without an epsilon, hence ``MODEL.DETECTOR.FROZEN_BN_EPS 0.0``. torchvision's
  ``num_batches_tracked`` does not exist in either frozen BN.
* RPN head: both are conv3x3 + ReLU, then 1x1 convs with ``A`` objectness and ``A * 4`` deltas per
  location; both read the deltas as ``view(N, A, 4, H, W)`` (anchor-major, then dx, dy, dw, dh)
  and enumerate anchors level -> location (row-major) -> cell anchor; sgg's cell anchors follow
  maskrcnn_benchmark's ratio-major order (:mod:`.anchors`).
* box head: both flatten the ``[C, 7, 7]`` pooled map channel-major into fc6 (``12544 = 256 * 49``
  for SGB's detector); ``bbox_pred`` is class-specific ``[C * 4, D]`` with rows
  ``(class 0: dx, dy, dw, dh), (class 1: ...)`` and both box coders decode ``codes[:, 0::4]`` etc.

SGB_COMPAT
----------
For an SGB checkpoint to give SGB's numbers, set (``configs/e2e_relation_X_101_32_8_FPN_1x.yaml``
does; :data:`SGB_COMPAT_OPTS` holds the same as command-line overrides)::

    MODEL.DETECTOR.FROZEN_BN_EPS 0.0         # maskrcnn_benchmark's BN has no epsilon
    MODEL.DETECTOR.LEGACY_BOX_CODING True    # "+1" box widths in anchors, box coder, IoU, NMS, clipping
    MODEL.DETECTOR.ALIGNED_ROI False         # legacy (non-aligned) ROIAlign
    INPUT.TO_BGR255 True                     # BGR, 0..255
    INPUT.PIXEL_MEAN [102.9801, 115.9465, 122.7717]
    INPUT.PIXEL_STD [1.0, 1.0, 1.0]
    MODEL.BACKBONE.CONV_BODY R-101-FPN       # with the next three keys: ResNeXt-101 32x8d
    MODEL.RESNETS.STRIDE_IN_1X1 False        # stride in the 3x3 conv (the released VG detector)
    MODEL.RESNETS.NUM_GROUPS 32
    MODEL.RESNETS.WIDTH_PER_GROUP 8
    MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM 4096
    MODEL.ROI_BOX_HEAD.NUM_CLASSES 151
    INPUT.MIN_SIZE_TEST 600  INPUT.MAX_SIZE_TEST 1000

:func:`sgg.modeling.pretrained.load_detector_checkpoint` (``MODEL.PRETRAINED_DETECTOR_CKPT``) recognises SGB files
(:func:`is_sgb_checkpoint`) and converts them on the fly; ``tools/convert_sgb_checkpoint.py``
converts files in either direction. :func:`sgb_convention_mismatches` lists the numeric
conventions above that a built detector does not follow (logged as a warning on loading).
"""
from __future__ import annotations

import logging
import os
import re
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from .files import CheckpointError, load_model_state

logger = logging.getLogger(__name__)

__all__ = [
    "SGB_COMPAT_OPTS",
    "SGB_PIXEL_MEAN",
    "UnplacedTensorsError",
    "convert_checkpoint_file",
    "format_report",
    "is_sgb_checkpoint",
    "load_sgb_relation_checkpoint",
    "sgb_convention_mismatches",
    "sgb_to_sgg_state_dict",
    "sgg_to_sgb_state_dict",
]

SGB_PIXEL_MEAN = (102.9801, 115.9465, 122.7717)

#: The SGB_COMPAT settings (module docstring) as ``KEY VALUE`` config overrides.
SGB_COMPAT_OPTS: Tuple[str, ...] = (
    "MODEL.DETECTOR.FROZEN_BN_EPS", "0.0",
    "MODEL.DETECTOR.LEGACY_BOX_CODING", "True",
    "MODEL.DETECTOR.ALIGNED_ROI", "False",
    "INPUT.TO_BGR255", "True",
    "INPUT.PIXEL_MEAN", "[102.9801, 115.9465, 122.7717]",
    "INPUT.PIXEL_STD", "[1.0, 1.0, 1.0]",
    "MODEL.BACKBONE.CONV_BODY", "R-101-FPN",
    "MODEL.RESNETS.STRIDE_IN_1X1", "False",
    "MODEL.RESNETS.NUM_GROUPS", "32",
    "MODEL.RESNETS.WIDTH_PER_GROUP", "8",
    "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", "4096",
    "MODEL.ROI_BOX_HEAD.NUM_CLASSES", "151",
    "INPUT.MIN_SIZE_TEST", "600",
    "INPUT.MAX_SIZE_TEST", "1000",
)

_MODULE = "module."
# Key prefixes only maskrcnn_benchmark's detector has (sgg's modules are named differently).
_SGB_MARKERS = ("backbone.body.stem.", "backbone.fpn.fpn_inner", "backbone.fpn.fpn_layer",
                "roi_heads.box.feature_extractor.", "roi_heads.box.predictor.", "roi_heads.relation.")
_SGB_IGNORED = ("rpn.anchor_generator.",)
# Heads of SGB models that sgg's detector does not have: skipped, and expected to be.
_SGB_EXPECTED_SKIPS = ("roi_heads.attribute.", "roi_heads.relation.")
_LAYER_KEY = re.compile(r"^backbone\.body\.layer([1-4])\.(\d+)\.conv([1-3])\.weight$")
# (block type, blocks per stage) -> depth of torchvision's ResNets (maskrcnn_benchmark's R-<depth>)
_DEPTHS = {("basic", (2, 2, 2, 2)): 18, ("basic", (3, 4, 6, 3)): 34, ("bottleneck", (3, 4, 6, 3)): 50,
           ("bottleneck", (3, 4, 23, 3)): 101, ("bottleneck", (3, 8, 36, 3)): 152}
_BODY_BLOCK = r"layer[1-9]\d*\.\d+\.(?:conv[1-3]|bn[1-3]|downsample\.[01])\.[A-Za-z_]+"

Rule = Tuple["re.Pattern[str]", Callable[["re.Match[str]"], str]]


class UnplacedTensorsError(CheckpointError):
    """Tensors of the source checkpoint have no place in the target detector (``unplaced``: their
    keys); the message names the count, examples and the config keys to set."""

    def __init__(self, message: str, unplaced: Sequence[str]) -> None:
        super().__init__(message)
        self.unplaced = list(unplaced)


def _shift(m: "re.Match[str]", group: int, by: int) -> str:
    return str(int(m.group(group)) + by)


def _sgb_rules(rpn_conv: str) -> List[Rule]:
    """maskrcnn_benchmark name -> sgg name (``rpn_conv``: sgg's prefix of the RPN 3x3 conv)."""
    return [
        (re.compile(r"^backbone\.body\.stem\.(conv1|bn1)\.([A-Za-z_]+)$"),
         lambda m: f"backbone.body.{m.group(1)}.{m.group(2)}"),
        (re.compile(rf"^backbone\.body\.({_BODY_BLOCK})$"), lambda m: f"backbone.body.{m.group(1)}"),
        (re.compile(r"^backbone\.fpn\.fpn_inner([1-9])\.(weight|bias)$"),
         lambda m: f"backbone.fpn.inner_blocks.{_shift(m, 1, -1)}.0.{m.group(2)}"),
        (re.compile(r"^backbone\.fpn\.fpn_layer([1-9])\.(weight|bias)$"),
         lambda m: f"backbone.fpn.layer_blocks.{_shift(m, 1, -1)}.0.{m.group(2)}"),
        (re.compile(r"^rpn\.head\.conv\.(weight|bias)$"), lambda m: f"{rpn_conv}.{m.group(1)}"),
        (re.compile(r"^rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)$"),
         lambda m: f"rpn.head.{m.group(1)}.{m.group(2)}"),
        (re.compile(r"^roi_heads\.box\.feature_extractor\.(fc6|fc7)\.(weight|bias)$"),
         lambda m: f"roi_heads.box_head.{m.group(1)}.{m.group(2)}"),
        (re.compile(r"^roi_heads\.box\.predictor\.(cls_score|bbox_pred)\.(weight|bias)$"),
         lambda m: f"roi_heads.box_predictor.{m.group(1)}.{m.group(2)}"),
    ]


_SGG_RULES: List[Rule] = [
    (re.compile(r"^backbone\.body\.(conv1|bn1)\.([A-Za-z_]+)$"),
     lambda m: f"backbone.body.stem.{m.group(1)}.{m.group(2)}"),
    (re.compile(rf"^backbone\.body\.({_BODY_BLOCK})$"), lambda m: f"backbone.body.{m.group(1)}"),
    (re.compile(r"^backbone\.fpn\.inner_blocks\.(\d)\.0\.(weight|bias)$"),
     lambda m: f"backbone.fpn.fpn_inner{_shift(m, 1, 1)}.{m.group(2)}"),
    (re.compile(r"^backbone\.fpn\.layer_blocks\.(\d)\.0\.(weight|bias)$"),
     lambda m: f"backbone.fpn.fpn_layer{_shift(m, 1, 1)}.{m.group(2)}"),
    (re.compile(r"^rpn\.head\.conv(?:\.0\.0)?\.(weight|bias)$"), lambda m: f"rpn.head.conv.{m.group(1)}"),
    (re.compile(r"^rpn\.head\.(cls_logits|bbox_pred)\.(weight|bias)$"),
     lambda m: f"rpn.head.{m.group(1)}.{m.group(2)}"),
    (re.compile(r"^roi_heads\.box_head\.(fc6|fc7)\.(weight|bias)$"),
     lambda m: f"roi_heads.box.feature_extractor.{m.group(1)}.{m.group(2)}"),
    (re.compile(r"^roi_heads\.box_predictor\.(cls_score|bbox_pred)\.(weight|bias)$"),
     lambda m: f"roi_heads.box.predictor.{m.group(1)}.{m.group(2)}"),
]


def _apply(rules: Sequence[Rule], key: str) -> Optional[str]:
    for pattern, fn in rules:
        m = pattern.match(key)
        if m is not None:
            return fn(m)
    return None


def _strip_module(state: Mapping[str, torch.Tensor]) -> "OrderedDict[str, torch.Tensor]":
    return OrderedDict((k[len(_MODULE):] if k.startswith(_MODULE) else k, v) for k, v in state.items())


def _state_of(obj: Mapping) -> Mapping:
    """A checkpoint dict (state under ``"model"``) or a bare state dict -> the state dict."""
    inner = obj.get("model") if isinstance(obj, Mapping) else None
    return inner if isinstance(inner, Mapping) else obj


def _torchvision_rpn_conv_prefix() -> str:
    """Where this torchvision's ``RPNHead`` keeps its 3x3 conv (``conv.0.0`` since 0.13)."""
    from torchvision.models.detection.rpn import RPNHead

    keys = RPNHead(1, 1).state_dict().keys()
    return "rpn.head.conv.0.0" if "conv.0.0.weight" in keys else "rpn.head.conv"


def is_sgb_checkpoint(state: Mapping) -> bool:
    """Whether ``state`` (a state dict, or a checkpoint dict with one under ``"model"``) has
    maskrcnn_benchmark's detector key names (``backbone.body.stem.*``, ``backbone.fpn.fpn_inner*``,
    ``roi_heads.box.feature_extractor.*``, ...; a ``module.`` prefix is allowed)."""
    state = _state_of(state)
    if not isinstance(state, Mapping):
        return False
    for k in state:
        if isinstance(k, str):
            k = k[len(_MODULE):] if k.startswith(_MODULE) else k
            if k.startswith(_SGB_MARKERS):
                return True
    return False


def _shape_hint(sgg_key: str, ckpt_shape: Tuple[int, ...], model_shape: Tuple[int, ...]) -> str:
    """The config key that most likely explains a shape mismatch at ``sgg_key``."""
    if sgg_key.startswith("roi_heads.box_predictor."):
        if "bbox_pred" in sgg_key and ckpt_shape[:1] == (8,) and model_shape[:1] != (8,):
            return "the checkpoint regresses class-agnostic boxes (2 x 4 outputs), which sgg does not support"
        n = ckpt_shape[0] // (4 if "bbox_pred" in sgg_key else 1) if ckpt_shape else "?"
        fix = f"the checkpoint's detector has {n} classes (with background): set MODEL.ROI_BOX_HEAD.NUM_CLASSES {n}"
        if len(ckpt_shape) == 2 == len(model_shape) and ckpt_shape[1] != model_shape[1]:
            fix += f" and MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM {ckpt_shape[1]}"
        return fix + " (a relation model takes the count from its training dataset)"
    if sgg_key.startswith("roi_heads.box_head."):
        fixes = []
        if ckpt_shape[:1] != model_shape[:1]:
            fixes.append(f"set MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM {ckpt_shape[0]}")
        if len(ckpt_shape) == 2 == len(model_shape) and ckpt_shape[1] != model_shape[1]:
            why = ("MODEL.RESNETS.BACKBONE_OUT_CHANNELS x ROI_BOX_HEAD.POOLER_RESOLUTION^2; SGB: 256 x 7 x 7"
                   if ".fc6." in sgg_key else "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM")
            fixes.append(f"the checkpoint's layer takes {ckpt_shape[1]} inputs (= {why})")
        return "; ".join(fixes)
    if sgg_key.startswith("rpn.head.cls_logits"):
        return (f"the checkpoint has {ckpt_shape[0]} anchors per location: MODEL.RPN.ASPECT_RATIOS needs "
                f"{ckpt_shape[0]} ratios (SGB: 0.23232838, 0.63365731, 1.28478321, 3.15089189)")
    if sgg_key.startswith(("backbone.fpn.", "rpn.head.")):
        return "check MODEL.RESNETS.BACKBONE_OUT_CHANNELS (SGB: 256) and MODEL.BACKBONE.CONV_BODY"
    return ("check MODEL.BACKBONE.CONV_BODY, MODEL.RESNETS.NUM_GROUPS and WIDTH_PER_GROUP (SGB's VG "
            "detector: R-101-FPN, 32, 8)")


def _resnet_of(state: Mapping[str, torch.Tensor]) -> Optional[Dict]:
    """The ResNet/ResNeXt body a state dict (SGB's or sgg's ``backbone.body.layer*`` names) holds:
    ``{"blocks": (n1, n2, n3, n4), "block": "basic" | "bottleneck", "depth": int | None,
    "groups": int, "width": int}``; None without such keys."""
    blocks: Dict[int, int] = {}
    bottleneck = False
    for key in state:
        m = _LAYER_KEY.match(key)
        if m is not None:
            stage, index = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), index + 1)
            bottleneck = bottleneck or m.group(3) == "3"
    if not blocks:
        return None
    counts = tuple(blocks.get(i, 0) for i in range(1, 5))
    kind = "bottleneck" if bottleneck else "basic"
    groups, width = 1, 64
    conv2 = state.get("backbone.body.layer1.0.conv2.weight")
    if bottleneck and torch.is_tensor(conv2) and conv2.dim() == 4 and conv2.shape[1] > 0:
        # grouped 3x3: [groups * width, width, 3, 3]
        groups, width = int(conv2.shape[0]) // int(conv2.shape[1]), int(conv2.shape[1])
    return {"blocks": counts, "block": kind, "depth": _DEPTHS.get((kind, counts)), "groups": groups,
            "width": width}


def _describe_resnet(net: Mapping) -> str:
    depth = net["depth"] if net["depth"] is not None else "?"
    name = f"ResNeXt-{depth} {net['groups']}x{net['width']}d" if net["groups"] > 1 else f"ResNet-{depth}"
    return f"{name} ({net['block']} blocks {', '.join(map(str, net['blocks']))} per stage)"


def unplaced_fix(sgb_state: Mapping[str, torch.Tensor],
                 sgg_model_state: Optional[Mapping[str, torch.Tensor]] = None) -> str:
    """What to change when tensors of ``sgb_state`` (SGB names, no ``module.``) have no place in the
    detector of ``sgg_model_state``: the backbone the checkpoint holds and the config keys that
    build it, from the checkpoint's own block counts and grouped-conv shapes."""
    src = _resnet_of(sgb_state)
    dst = _resnet_of(sgg_model_state) if sgg_model_state is not None else None
    compat = ("all settings of SGB's detector: sgg.checkpoint.sgb.SGB_COMPAT_OPTS, as in "
              "configs/e2e_relation_X_101_32_8_FPN_1x.yaml")
    if src is None:
        return ("check MODEL.BACKBONE.CONV_BODY and MODEL.RESNETS.NUM_GROUPS / WIDTH_PER_GROUP / "
                f"STRIDE_IN_1X1 against the checkpoint's detector ({compat})")
    built = f"; the config builds a {_describe_resnet(dst)}" if dst is not None else ""
    if src["depth"] is None:
        return (f"the checkpoint's backbone has {_describe_resnet(src)}, which no R-<depth>-FPN builds{built}; "
                f"check MODEL.BACKBONE.CONV_BODY and MODEL.RESNETS.* ({compat})")
    keys = f"MODEL.BACKBONE.CONV_BODY R-{src['depth']}-FPN"
    if src["block"] == "bottleneck":
        keys += f" MODEL.RESNETS.NUM_GROUPS {src['groups']} MODEL.RESNETS.WIDTH_PER_GROUP {src['width']}"
    return (f"the checkpoint's backbone is a {_describe_resnet(src)}{built}: set {keys} (and "
            f"MODEL.RESNETS.STRIDE_IN_1X1 as the checkpoint was trained: False for SGB's VG detector; {compat})")


def unplaced_message(source: str, unplaced: Sequence[str], sgb_state: Mapping[str, torch.Tensor],
                     sgg_model_state: Optional[Mapping[str, torch.Tensor]] = None, shown: int = 8) -> str:
    """The error for tensors of ``source`` that have no place in the target model: the count,
    ``shown`` example keys and the fix (:func:`unplaced_fix`; for ``roi_heads.relation.*`` keys,
    :func:`~sgg.checkpoint.sgb_relation.relation_unplaced_fix`)."""
    from .sgb_relation import SGB_RELATION, is_relation_model_state, relation_unplaced_fix

    examples = ", ".join(unplaced[:shown]) + (f", ... ({len(unplaced) - shown} more)" if len(unplaced) > shown else "")
    relation = is_relation_model_state(sgg_model_state)
    if relation:
        where = "the relation model of the config"
    else:
        where = "the detector of the config" if sgg_model_state is not None else "sgg's detector (no known name)"
    fixes = []
    rel = [k for k in unplaced if k.startswith(SGB_RELATION)]
    if relation and rel:
        fixes.append(relation_unplaced_fix(rel))
    if len(rel) < len(unplaced):
        det_target = sgg_model_state
        if relation:
            det_target = OrderedDict((k[len("detector."):], v) for k, v in sgg_model_state.items()
                                     if k.startswith("detector."))
        fixes.append(unplaced_fix(sgb_state, det_target))
    return (f"{len(unplaced)} tensors of {source} have no place in {where} and would be lost: {examples}. "
            f"Fix: {'; '.join(fixes)}.")


def _detector_state_dict(state: Mapping[str, torch.Tensor], sgg_model_state: Optional[Mapping[str, torch.Tensor]]
                         ) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, List], List[Tuple]]:
    """The detector mapping of :func:`sgb_to_sgg_state_dict` (``state``: SGB names, no ``module.``);
    also returns the shape mismatches ``[(sgb_key, sgg_key, checkpoint shape, model shape)]``."""
    if sgg_model_state is not None:
        own = set(sgg_model_state)
        rpn_conv = "rpn.head.conv.0.0" if "rpn.head.conv.0.0.weight" in own else "rpn.head.conv"
    else:
        rpn_conv = _torchvision_rpn_conv_prefix()
    rules = _sgb_rules(rpn_conv)
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    report: Dict[str, List] = {"mapped": [], "skipped": [], "expected": [], "unplaced": [], "missing": []}
    mismatched, no_place = [], []
    for key, value in state.items():
        if key.startswith(_SGB_IGNORED):
            continue
        new = _apply(rules, key)
        if new is None:
            report["skipped"].append(key)
            if key.startswith(_SGB_EXPECTED_SKIPS):
                report["expected"].append(key)
            else:
                report["unplaced"].append(key)
            continue
        if sgg_model_state is not None and new not in sgg_model_state:
            report["skipped"].append(key)
            report["unplaced"].append(key)
            no_place.append(key)
            continue
        if sgg_model_state is not None and torch.is_tensor(value):
            a, b = tuple(value.shape), tuple(sgg_model_state[new].shape)
            if a != b:
                mismatched.append((key, new, a, b))
                continue
        out[new] = value
        report["mapped"].append((key, new))
    if no_place:
        logger.warning("%d detector tensors of the SGB checkpoint have no place in the sgg model (e.g. %s): %s",
                       len(no_place), ", ".join(no_place[:3]), unplaced_fix(state, sgg_model_state))
    if sgg_model_state is not None:
        report["missing"] = [k for k in sgg_model_state if k not in out]
    return out, report, mismatched


def _raise_mismatched(mismatched: Sequence[Tuple], what: str) -> None:
    from .sgb_relation import SGG_RELATION, relation_shape_hint

    def hint(n: str, a, b) -> str:
        if n.startswith(SGG_RELATION):
            return relation_shape_hint(n)
        return _shape_hint(n[len("detector."):] if n.startswith("detector.") else n, a, b)

    lines = "\n".join(f"  '{k}' -> '{n}': checkpoint {a}, sgg model {b}; fix: {hint(n, a, b)}"
                      for k, n, a, b in mismatched)
    raise CheckpointError(f"SGB checkpoint does not fit the sgg {what} ({len(mismatched)} tensors "
                          f"with other shapes):\n{lines}")


def _relation_model_state_dict(state: Mapping[str, torch.Tensor], sgg_model_state: Mapping[str, torch.Tensor]
                               ) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, List]]:
    """A whole SGB relation model -> sgg's two-stage relation model (``detector.*`` +
    ``relation_head.*``); see :mod:`.sgb_relation`."""
    from .sgb_relation import SGB_RELATION, SGG_DETECTOR, convert_relation_state, defaulted_keys

    det_target = OrderedDict((k[len(SGG_DETECTOR):], v) for k, v in sgg_model_state.items()
                             if k.startswith(SGG_DETECTOR))
    det_source = OrderedDict((k, v) for k, v in state.items() if not k.startswith(SGB_RELATION))
    det_out, det_report, det_bad = _detector_state_dict(det_source, det_target if det_target else None)
    rel_out, rel_report, rel_bad = convert_relation_state(state, sgg_model_state)
    mismatched = [(k, SGG_DETECTOR + n, a, b) for k, n, a, b in det_bad] + rel_bad
    if mismatched:
        _raise_mismatched(mismatched, "relation model")
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict((SGG_DETECTOR + k, v) for k, v in det_out.items())
    out.update(rel_out)
    # the detector path counts roi_heads.relation.* as expected skips: they are converted here instead
    det_expected = [k for k in det_report["expected"] if not k.startswith(SGB_RELATION)]
    det_skipped = [k for k in det_report["skipped"] if not k.startswith(SGB_RELATION)]
    missing, defaulted = defaulted_keys([k for k in sgg_model_state if k not in out])
    report: Dict[str, List] = {
        "mapped": [(k, SGG_DETECTOR + n) for k, n in det_report["mapped"]] + rel_report["mapped"],
        "expected": det_expected + rel_report["expected"],
        "unplaced": det_report["unplaced"] + rel_report["unplaced"],
        "missing": missing,
        "defaulted": defaulted,
        "reasons": rel_report["reasons"],
    }
    report["skipped"] = det_skipped + rel_report["expected"] + rel_report["unplaced"]
    return out, report


def sgb_to_sgg_state_dict(sgb_state: Mapping[str, torch.Tensor],
                          sgg_model_state: Optional[Mapping[str, torch.Tensor]] = None,
                          ) -> Tuple["OrderedDict[str, torch.Tensor]", Dict[str, List]]:
    """maskrcnn_benchmark state dict -> sgg state dict (module docstring): a detector's, or, when
    ``sgg_model_state`` is a two-stage relation model's (it has ``relation_head.*`` keys), a whole
    SGB relation model's (detector under ``detector.``, ``roi_heads.relation.*`` under
    ``relation_head.``; :mod:`sgg.checkpoint.sgb_relation`).

    Args:
        sgb_state: SGB's state dict (or the whole checkpoint dict: its ``"model"`` is used);
            ``module.`` prefixes are stripped. Tensors are passed through unchanged (no copy), except
            the few re-laid out (Transformer FFN weights: a view without the kernel dimension).
        sgg_model_state: ``build_detector(cfg).state_dict()`` or ``build_sgg_model(...).state_dict()``:
            target names (e.g. the RPN conv's) and shapes to check. None: a detector with the names of
            this torchvision, no shape check, no ``missing``.

    Returns:
        ``(state, report)``: ``state`` with sgg's names; ``report`` =
        ``{"mapped": [(sgb_key, sgg_key), ...], "skipped": [sgb_key, ...] (every key not converted),
        "expected": [sgb_key, ...] (the skipped keys that are expected: heads / modules the target
        does not build), "unplaced": [sgb_key, ...] (the other skipped keys: weights the result
        loses), "missing": [sgg_key, ...] (model keys the checkpoint does not give)}``; a relation
        model's report also has ``"defaulted"`` (model keys an SGB checkpoint may lack, left as
        initialised: Causal moving averages, ``num_batches_tracked``) and ``"reasons"``
        ``{sgb_key: why}`` for its skipped relation keys. Anchor buffers (``rpn.anchor_generator.*``)
        are dropped.

    Raises:
        CheckpointError: a tensor whose shape differs from the model's; the message names the SGB
            key, the sgg key, both shapes and the config key to fix, for every such tensor.
    """
    from .sgb_relation import is_relation_model_state

    state = _strip_module(_state_of(sgb_state))
    if is_relation_model_state(sgg_model_state):
        return _relation_model_state_dict(state, sgg_model_state)
    out, report, mismatched = _detector_state_dict(state, sgg_model_state)
    if mismatched:
        _raise_mismatched(mismatched, "detector")
    return out, report


def _sgg_to_sgb(state: Mapping[str, torch.Tensor]) -> Tuple["OrderedDict[str, torch.Tensor]", List, List[str]]:
    """-> (SGB state, [(sgg_key, sgb_key)], dropped num_batches_tracked keys); raises on unknown keys."""
    out: "OrderedDict[str, torch.Tensor]" = OrderedDict()
    pairs, dropped, unknown = [], [], []
    for key, value in state.items():
        if key.endswith(".num_batches_tracked"):
            dropped.append(key)
            continue
        new = _apply(_SGG_RULES, key)
        if new is None:
            unknown.append(key)
        else:
            out[new] = value
            pairs.append((key, new))
    if unknown:
        hint = (" (a whole relation-model checkpoint? pass prefix 'detector.' / --prefix detector.)"
                if any(k.startswith("detector.") for k in unknown) else
                " (only ResNet/ResNeXt-FPN detectors with frozen BN and no FPN GroupNorm exist in SGB)")
        shown = ", ".join(unknown[:20]) + (f", ... ({len(unknown) - 20} more)" if len(unknown) > 20 else "")
        raise CheckpointError(f"{len(unknown)} keys have no maskrcnn_benchmark name{hint}: {shown}")
    return out, pairs, dropped


def _select(state: Mapping[str, torch.Tensor], prefix: str) -> "OrderedDict[str, torch.Tensor]":
    state = _strip_module(_state_of(state))
    if prefix:
        state = OrderedDict((k[len(prefix):], v) for k, v in state.items() if k.startswith(prefix))
        if not state:
            raise CheckpointError(f"no key starts with '{prefix}'")
    return state


def sgg_to_sgb_state_dict(sgg_detector_state: Mapping[str, torch.Tensor],
                          prefix: str = "") -> "OrderedDict[str, torch.Tensor]":
    """sgg detector state dict -> maskrcnn_benchmark names (the reverse of
    :func:`sgb_to_sgg_state_dict`, which maps the result back exactly).

    ``module.`` is stripped; with ``prefix`` (e.g. ``"detector."`` for a whole relation-model
    checkpoint) only keys under it are used. ``num_batches_tracked`` buffers (trainable BN) are
    dropped: maskrcnn_benchmark's frozen BN has none. Tensors are passed through (no copy).

    Raises:
        CheckpointError: keys with no maskrcnn_benchmark name (e.g. a timm or GroupNorm backbone,
            which SGB's code cannot build); all such keys are named.
    """
    return _sgg_to_sgb(_select(sgg_detector_state, prefix))[0]


def format_report(report: Mapping[str, List], source: str = "SGB checkpoint", max_keys: int = 50) -> str:
    """Human-readable summary of a :func:`sgb_to_sgg_state_dict` report (counts; expected-skipped,
    unplaced, missing and defaulted keys, at most ``max_keys`` of each, with the reason where known)."""
    reasons = report.get("reasons") or {}

    def _keys(keys: Sequence[str]) -> str:
        more = f"\n    ... ({len(keys) - max_keys} more)" if len(keys) > max_keys else ""
        return "".join(f"\n    {k}" + (f"  ({reasons[k]})" if k in reasons else "")
                       for k in keys[:max_keys]) + more

    expected = report.get("expected")
    if expected is None:  # a report of an older caller: every skipped key not unplaced is expected
        expected = [k for k in report["skipped"] if k not in set(report.get("unplaced", ()))]
    unplaced = report.get("unplaced", [])
    defaulted = report.get("defaulted", [])
    lines = [f"{source}: {len(report['mapped'])} tensors mapped, {len(report['skipped'])} skipped, "
             f"{len(report['missing'])} missing (skipped: {len(expected)} expected, {len(unplaced)} unplaced"
             + (f"; {len(defaulted)} left as initialised" if defaulted else "") + ")"]
    if expected:
        lines.append("  skipped, expected (modules the sgg model does not build):" + _keys(expected))
    if unplaced:
        lines.append("  skipped, UNPLACED (weights the sgg model loses):" + _keys(unplaced))
    if report["missing"]:
        lines.append("  missing (left as initialised):" + _keys(report["missing"]))
    if defaulted:
        lines.append("  not in the checkpoint, left as initialised as in SGB:" + _keys(defaulted))
    return "\n".join(lines)


def sgb_convention_mismatches(model: nn.Module) -> List[str]:
    """The SGB_COMPAT numeric conventions (module docstring) that ``model`` does not follow, one
    line per config key to change (empty when it follows all of them or cannot tell)."""
    from torchvision.ops import FrozenBatchNorm2d

    out = []
    backbone = getattr(model, "backbone", None)
    if backbone is not None:
        eps = {float(m.eps) for m in backbone.modules() if isinstance(m, FrozenBatchNorm2d)}
        if eps and eps != {0.0}:
            out.append(f"MODEL.DETECTOR.FROZEN_BN_EPS 0.0 (the backbone's frozen BN has eps {sorted(eps)})")
    rpn, heads = getattr(model, "rpn", None), getattr(model, "roi_heads", None)
    if (rpn is not None and getattr(rpn, "legacy", True) is False) or \
            (heads is not None and getattr(heads, "legacy", True) is False):
        out.append("MODEL.DETECTOR.LEGACY_BOX_CODING True (maskrcnn_benchmark's '+1' box widths)")
    pool = getattr(heads, "box_roi_pool", None)
    if pool is not None and getattr(pool, "aligned", False):
        out.append("MODEL.DETECTOR.ALIGNED_ROI False (maskrcnn_benchmark's ROIAlign is not aligned)")
    if getattr(model, "to_bgr255", True) is False:
        out.append("INPUT.TO_BGR255 True (SGB's input is BGR in 0..255)")
    mean, std = getattr(model, "pixel_mean", None), getattr(model, "pixel_std", None)
    if torch.is_tensor(mean) and not torch.allclose(mean.flatten().cpu(), torch.tensor(SGB_PIXEL_MEAN)):
        out.append(f"INPUT.PIXEL_MEAN {list(SGB_PIXEL_MEAN)}")
    if torch.is_tensor(std) and not torch.equal(std.flatten().cpu(), torch.ones(std.numel())):
        out.append("INPUT.PIXEL_STD [1.0, 1.0, 1.0]")
    return out


def convert_checkpoint_file(src: str, dst: str, *, reverse: bool = False,
                            model_state: Optional[Mapping[str, torch.Tensor]] = None,
                            prefix: str = "", allow_unplaced: bool = False,
                            metadata: Optional[Mapping[str, Any]] = None,
                            loaded: Optional[Mapping[str, Any]] = None) -> Dict[str, List]:
    """Convert a detector (or, with a relation model's ``model_state``, a whole relation-model)
    checkpoint file (``tools/convert_sgb_checkpoint.py``).

    ``reverse=False``: SGB file -> ``dst`` = ``{"model": sgg state dict}``, the layout of sgg's own
    detector checkpoints (what :func:`load_detector_checkpoint` and ``MODEL.WEIGHT`` read).
    ``reverse=True``: sgg detector file (``prefix`` selects the detector inside a whole-model
    checkpoint, e.g. ``"detector."``) -> ``dst`` = ``{"model": state dict}`` with
    maskrcnn_benchmark names, which SGB's ``DetectronCheckpointer`` loads.

    ``model_state`` (``build_detector(cfg).state_dict()``) adds the shape check, the check that
    every tensor has a place in that detector, and the ``missing`` list. Tensors without a place
    (``report["unplaced"]``: a backbone of another depth, unknown heads; not the attribute /
    relation heads or anchors) raise :class:`UnplacedTensorsError` and nothing is written, unless
    ``allow_unplaced`` (then the partial file is written and the caller warns). Written atomically,
    with a ``.sha256`` sidecar; ``metadata`` (the model's class / predicate names, protocol, ...)
    is written beside ``model`` when given. ``loaded``: the object ``src`` holds when the caller has
    already read it (the file is then not read again). Returns the report (see :func:`sgb_to_sgg_state_dict`; for
    ``reverse`` the pairs are ``(sgg_key, sgb_key)``, ``skipped`` lists dropped
    ``num_batches_tracked`` buffers and ``unplaced`` the keys the config's detector lacks).

    Raises:
        FileNotFoundError: ``src`` does not exist.
        CheckpointError: ``src`` is unreadable, holds no state dict, is in the wrong format for
            the direction, or does not fit ``model_state`` (message names keys, shapes, fix);
            :class:`UnplacedTensorsError` for unplaced tensors (above).
    """
    from sgg.utils.io import atomic_torch_save

    from .files import load_checkpoint_file
    from .sgb_relation import is_relation_model_state

    if loaded is None:
        if not os.path.isfile(src):
            raise FileNotFoundError(f"checkpoint file not found: '{src}'")
        loaded = load_checkpoint_file(src)
    obj = loaded
    state = _state_of(obj)
    if not (isinstance(state, Mapping) and state and all(torch.is_tensor(v) for v in state.values())):
        raise CheckpointError(f"'{src}' is not a model checkpoint: expected a state dict (under 'model' or "
                              f"bare), found top-level keys {sorted(map(str, obj))[:10]}")
    if reverse:
        if is_sgb_checkpoint(state):
            raise CheckpointError(f"'{src}' already has maskrcnn_benchmark (SGB) key names; drop --reverse "
                                  f"to convert it to sgg's")
        selected = _select(state, prefix)
        out, pairs, dropped = _sgg_to_sgb(selected)
        # Self-check: the SGB names map back onto the same keys; then the shapes against the model.
        back, _ = sgb_to_sgg_state_dict(out, selected)
        lost = sorted({a for a, _ in pairs} - set(back))
        if lost:
            raise CheckpointError(f"'{src}': these keys do not map back from their SGB names: {lost[:10]}")
        unplaced: List[str] = []
        if model_state is not None:
            unplaced = sgb_to_sgg_state_dict(out, model_state)[1]["unplaced"]
        report = {"mapped": pairs, "skipped": dropped, "unplaced": unplaced, "missing": []}
    else:
        if not is_sgb_checkpoint(state):
            raise CheckpointError(
                f"'{src}' has no maskrcnn_benchmark key names (e.g. backbone.body.stem.conv1.weight, "
                f"roi_heads.box.feature_extractor.fc6.weight): it is not an SGB detector checkpoint. "
                f"sgg checkpoints load as they are; use --reverse to convert one to SGB's names")
        out, report = sgb_to_sgg_state_dict(state, model_state)
    if report["unplaced"] and not allow_unplaced:
        sgb_names = out if reverse else _strip_module(state)
        raise UnplacedTensorsError(
            unplaced_message(f"'{src}'", report["unplaced"], sgb_names, model_state)
            + f" Nothing was written to '{dst}'; to write the partial file anyway pass allow_unplaced=True "
              f"(--allow-unplaced).", report["unplaced"])
    if not reverse and model_state is not None and is_relation_model_state(model_state):
        # a whole relation model: complete, as load_sgb_relation_checkpoint loads it
        if report["missing"]:
            shown = ", ".join(report["missing"][:10]) + (
                f", ... ({len(report['missing']) - 10} more)" if len(report["missing"]) > 10 else "")
            raise CheckpointError(f"'{src}' lacks {len(report['missing'])} tensors of the relation model built from "
                                  f"the config ({shown}): is it a checkpoint of this config's predictor and "
                                  f"protocol? Nothing was written to '{dst}'")
        for k in report.get("defaulted", []):  # tensors SGB may lack: the model's initial values
            out[k] = model_state[k].detach().clone()
    data: Dict[str, Any] = {"model": out}
    if metadata is not None:
        data["metadata"] = dict(metadata)
    atomic_torch_save(data, dst, checksum=True)
    return report


def load_sgb_relation_checkpoint(model: nn.Module, state: Dict[str, torch.Tensor], source: str = "SGB checkpoint",
                                 allow_unplaced: bool = False) -> Dict[str, List]:
    """Load a whole Scene-Graph-Benchmark / PE-Net relation model (maskrcnn_benchmark names: the
    detector and ``roi_heads.relation.*``; a checkpoint dict or its state dict, ``module.`` allowed)
    into sgg's two-stage relation ``model``, converted by
    :func:`~sgg.checkpoint.sgb.sgb_to_sgg_state_dict` (:mod:`sgg.checkpoint.sgb_relation`).

    Keys of modules the sgg model does not build (e.g. the object decoder in PredCls, PE-Net's
    ``linear_pred``) are reported as expected skips. Raises
    :class:`~sgg.checkpoint.sgb.UnplacedTensorsError` when other tensors have no place in the model
    (another predictor, context, or option than the config's), unless ``allow_unplaced`` (then a
    warning); :class:`~sgg.checkpoint.CheckpointError` for a shape mismatch (naming the keys and both
    shapes) or model tensors the checkpoint lacks (except the ones SGB may lack: the report's
    ``defaulted``). Returns the report (logged).
    """
    inner = state.get("model") if isinstance(state.get("model"), dict) else state
    state = OrderedDict((k[len("module."):] if k.startswith("module.") else k, v) for k, v in inner.items())
    own = model.state_dict()
    converted, report = sgb_to_sgg_state_dict(state, own)
    logger.info("%s", format_report(report, source))
    if report["unplaced"]:
        msg = unplaced_message(source, report["unplaced"], state, own)
        if not allow_unplaced:
            raise UnplacedTensorsError(msg + " Nothing was loaded; pass allow_unplaced=True to load the rest "
                                             "anyway.", report["unplaced"])
        logger.warning("%s", msg)
    if report["missing"]:
        shown = ", ".join(report["missing"][:10]) + (
            f", ... ({len(report['missing']) - 10} more)" if len(report["missing"]) > 10 else "")
        raise CheckpointError(f"{source} lacks {len(report['missing'])} tensors of the model built from this "
                              f"config ({shown}): is it a checkpoint of this config's predictor and protocol?")
    load_model_state(model, converted, source=source)
    for fix in sgb_convention_mismatches(getattr(model, "detector", model)):
        logger.warning("%s is an SGB (maskrcnn_benchmark) model; for its numbers set %s", source, fix)
    return report
