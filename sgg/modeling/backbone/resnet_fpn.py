"""torchvision ResNet / ResNeXt bodies with a Feature Pyramid Network.

``ResNetFPN`` maps an image batch ``[B, 3, H, W]`` (``H, W`` multiples of 32) to an
``OrderedDict`` of ``out_channels``-channel maps ``'0', '1', '2', '3', 'pool'`` at strides
4, 8, 16, 32, 64 -- the layout of maskrcnn_benchmark's ``R-50-FPN`` / ``R-101-FPN`` /
``X-101-32x8d-FPN`` that Scene-Graph-Benchmark (SGB) detectors were trained with.

Conventions that matter for weights trained elsewhere:

* Batch norms are ``torchvision.ops.FrozenBatchNorm2d`` by default (statistics and affine frozen,
  as SGB). ``bn_eps=0.0`` reproduces maskrcnn_benchmark's BN, which has no epsilon
  (``scale = weight * running_var ** -0.5``); torchvision ImageNet weights were trained with 1e-5.
  ``norm="GN"`` (or ``BN`` / ``SyncBN``) trains the normalisation instead: needed from scratch.
* ``stride_in_1x1=True`` puts the stride of each stage's first bottleneck in the 1x1 conv (MSRA
  ResNet, maskrcnn_benchmark ``STRIDE_IN_1X1 True``); ``False`` keeps torchvision's stride in the
  3x3 conv (the released SGB X-101-32x8d detector, ``STRIDE_IN_1X1 False``).
* ``freeze_at`` as maskrcnn_benchmark's ``FREEZE_CONV_BODY_AT``: 0 trains everything, 1 freezes
  the stem, ``k >= 2`` the stem and ``layer1..layer{k-1}``.

State-dict layout: ``body.conv1``, ``body.bn1``, ``body.layer{1..4}.{i}.conv{1,2,3}`` /
``bn{1,2,3}`` / ``downsample.{0,1}`` (torchvision's names) and ``fpn.inner_blocks.{0..3}.0``
(1x1 lateral), ``fpn.layer_blocks.{0..3}.0`` (3x3 output) of
``torchvision.ops.FeaturePyramidNetwork``.
"""
from __future__ import annotations

import logging
import math
import re
from collections import OrderedDict
from functools import partial
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch import nn
from torchvision.models import resnet as tv_resnet
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

logger = logging.getLogger(__name__)

#: depth -> (block, blocks per stage)
RESNET_SPECS: Dict[int, Tuple[type, List[int]]] = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
    152: (tv_resnet.Bottleneck, [3, 8, 36, 3]),
}

#: output name -> stride of the FPN levels (the same for every backbone built here)
FPN_STRIDES: Dict[str, int] = OrderedDict([("0", 4), ("1", 8), ("2", 16), ("3", 32), ("pool", 64)])


NORMS = ("FrozenBN", "BN", "SyncBN", "GN")

#: ``CONV_BODY`` names of the torchvision ResNets / ResNeXts
RESNET_NAME = re.compile(r"^(?P<kind>[RX])-(?P<depth>\d+)(-(?P<groups>\d+)x(?P<width>\d+)d)?-FPN$")


def group_norm(num_channels: int) -> nn.GroupNorm:
    """GroupNorm with 32 groups (fewer when ``num_channels`` is not a multiple of 32)."""
    return nn.GroupNorm(math.gcd(32, int(num_channels)), num_channels)


def norm_factory(norm: str, bn_eps: float = 1e-5) -> Callable[[int], nn.Module]:
    """``norm`` -> ``fn(num_channels) -> nn.Module``.

    ``FrozenBN`` (SGB; for pretrained weights), ``BN`` / ``SyncBN`` (trainable batch statistics),
    ``GN`` (:func:`group_norm`: the choice for training from scratch, e.g. on SynthVG where no
    ImageNet weights are available -- a random-init net with frozen identity BN diverges).
    """
    if norm == "FrozenBN":
        return partial(FrozenBatchNorm2d, eps=bn_eps)
    if norm == "BN":
        return nn.BatchNorm2d
    if norm == "SyncBN":
        return nn.SyncBatchNorm
    if norm == "GN":
        return group_norm
    raise ValueError(f"backbone norm must be one of {NORMS}, got {norm!r}")


def _move_stride_to_1x1(layer: nn.Sequential) -> None:
    """MSRA-style bottleneck: the first block strides in conv1 (1x1) instead of conv2 (3x3).

    Both give ``ceil(H / 2)`` outputs, so shapes (and weights) are unchanged.
    """
    block = layer[0]
    if not isinstance(block, tv_resnet.Bottleneck):
        return
    stride = block.conv2.stride
    if stride != (1, 1):
        block.conv1.stride = stride
        block.conv2.stride = (1, 1)


def make_fpn(in_channels: Sequence[int], out_channels: int, norm: str = "") -> FeaturePyramidNetwork:
    """torchvision FPN with a max-pooled extra level (maskrcnn_benchmark's ``LastLevelMaxPool``)."""
    if norm not in ("", "GN"):
        raise ValueError(f"FPN norm must be '' or 'GN', got {norm!r}")
    return FeaturePyramidNetwork(list(in_channels), out_channels, extra_blocks=LastLevelMaxPool(),
                                 norm_layer=group_norm if norm == "GN" else None)


class ResNetFPN(nn.Module):
    """ResNet/ResNeXt body (``self.body``) + FPN with a max-pooled 5th level (``self.fpn``).

    Args:
        depth: 18, 34, 50, 101 or 152 (18/34 are BasicBlock nets, handy as tiny test backbones).
        groups, width_per_group: ResNeXt cardinality and width (X-101-32x8d: 32, 8).
        stride_in_1x1: see the module docstring.
        out_channels: FPN channels (256 in SGB).
        freeze_at: see the module docstring.
        bn_eps: epsilon of the frozen batch norms (0.0 = maskrcnn_benchmark).
        norm: body normalisation, see :func:`norm_factory` (default ``FrozenBN``).
        fpn_norm: ``"GN"`` puts GroupNorm in the FPN convs (``MODEL.FPN.USE_GN``); "" = none.

    ``forward(x [B,3,H,W]) -> OrderedDict('0','1','2','3','pool' -> [B, out_channels, H/s, W/s])``.

    ImageNet weights (torchvision's ResNet layout) go into ``self.body`` through the load step,
    :func:`sgg.modeling.pretrained.load_backbone_weights` (``MODEL.BACKBONE.WEIGHTS``).
    """

    strides: Dict[str, int] = FPN_STRIDES

    def __init__(self, depth: int = 50, groups: int = 1, width_per_group: int = 64,
                 stride_in_1x1: bool = False, out_channels: int = 256, freeze_at: int = 2,
                 bn_eps: float = 1e-5, norm: str = "FrozenBN", fpn_norm: str = "") -> None:
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        block, layers = RESNET_SPECS[depth]
        if block is tv_resnet.BasicBlock and (groups != 1 or width_per_group != 64):
            raise ValueError(f"ResNet-{depth} uses BasicBlock, which supports only groups=1, "
                             f"width_per_group=64 (got {groups}, {width_per_group})")
        net = tv_resnet.ResNet(block, layers, groups=groups, width_per_group=width_per_group,
                               norm_layer=norm_factory(norm, bn_eps))
        if stride_in_1x1:
            for name in ("layer2", "layer3", "layer4"):
                _move_stride_to_1x1(getattr(net, name))
        self.body = IntermediateLayerGetter(
            net, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"})
        c2 = 64 * block.expansion
        in_channels = [c2, c2 * 2, c2 * 4, c2 * 8]
        self.fpn = make_fpn(in_channels, out_channels, fpn_norm)
        self.out_channels = out_channels
        self.freeze_at = freeze_at
        self._freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg) -> "ResNetFPN":
        """``MODEL.BACKBONE.CONV_BODY`` ``R-<depth>-FPN`` / ``X-<depth>-<G>x<W>d-FPN`` with
        ``MODEL.RESNETS.*``, ``MODEL.FPN.USE_GN`` and ``MODEL.DETECTOR.BACKBONE_NORM / FROZEN_BN_EPS``."""
        body = cfg.MODEL.BACKBONE.CONV_BODY
        m = RESNET_NAME.match(body)
        if m is None:
            raise ValueError(f"MODEL.BACKBONE.CONV_BODY '{body}' is not of the form R-<depth>-FPN or "
                             f"X-<depth>-<G>x<W>d-FPN")
        groups, width = cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP
        if m.group("groups"):
            groups, width = int(m.group("groups")), int(m.group("width"))
        elif m.group("kind") == "X":
            raise ValueError(f"'{body}': give ResNeXt groups and width in the name, e.g. X-101-32x8d-FPN")
        return cls(
            depth=int(m.group("depth")), groups=groups, width_per_group=width,
            stride_in_1x1=cfg.MODEL.RESNETS.STRIDE_IN_1X1, out_channels=cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS,
            freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT, bn_eps=float(cfg.MODEL.DETECTOR.FROZEN_BN_EPS),
            norm=cfg.MODEL.DETECTOR.BACKBONE_NORM, fpn_norm="GN" if cfg.MODEL.FPN.USE_GN else "",
        )

    def _freeze(self, freeze_at: int) -> None:
        if freeze_at <= 0:
            return
        stages = [[self.body.conv1, self.body.bn1]] + [[getattr(self.body, f"layer{i}")] for i in range(1, 5)]
        for modules in stages[:freeze_at]:
            for m in modules:
                for p in m.parameters():
                    p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        return self.fpn(self.body(x))
