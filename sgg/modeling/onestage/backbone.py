"""Backbones of the one-stage (composite-field) model: a single feature map at output stride 16.

``forward(images [B, 3, H, W]) -> [B, out_channels, Hg, Wg]`` with ``Hg = ceil(H / 16)``,
``Wg = ceil(W / 16)`` (exactly ``H / 16`` for multiples of 16, e.g. 512 x 512 -> 32 x 32). Every
backbone here has the attributes ``out_channels`` and ``stride`` (= 16).

* :class:`DilatedResNet` (``R-18``, ``R-34``, ``R-50``, ``R-101``): torchvision ResNet whose last
  stage keeps stride 16 and dilates its 3x3 convs by 2 instead (DeepLab / CoRF's ResNet-50). The
  parameters keep torchvision's names and shapes (``conv1``, ``bn1``, ``layer{1..4}``; no ``fc``),
  so an ImageNet torchvision state dict loads as is.
* :class:`TimmFPN16` (``timm:<model name>``): a timm ``features_only`` model (Swin-S in CoRF) and
  a one-level FPN merging the stride-32 map into the stride-16 map.

Weights are read from local files only (nothing is downloaded); ``""`` = random initialisation.
"""
from __future__ import annotations

import logging
from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet as tv_resnet

from sgg.modeling.backbone.resnet_fpn import NORMS, norm_factory
from sgg.modeling.backbone.timm_backbone import create_timm_features

logger = logging.getLogger(__name__)

__all__ = ["DilatedResNet", "TimmFPN16", "build_onestage_backbone", "ONESTAGE_RESNET_DEPTHS"]

#: depth -> (block, blocks per stage) of the dilated ResNets
ONESTAGE_RESNET_DEPTHS = {
    18: (tv_resnet.BasicBlock, [2, 2, 2, 2]),
    34: (tv_resnet.BasicBlock, [3, 4, 6, 3]),
    50: (tv_resnet.Bottleneck, [3, 4, 6, 3]),
    101: (tv_resnet.Bottleneck, [3, 4, 23, 3]),
}


def _dilate_basic_layer(layer: nn.Sequential, dilation: int = 2) -> None:
    """Turn a stride-2 BasicBlock stage into a stride-1 stage with dilated 3x3 convs.

    torchvision refuses ``replace_stride_with_dilation`` for BasicBlock, so the same rule as its
    Bottleneck path is applied by hand: the conv that used to stride (block 0 ``conv1``, and the
    1x1 ``downsample``) gets stride 1 and keeps dilation 1; every 3x3 conv after it sees the
    would-be half-resolution map and so gets ``dilation`` (padding = dilation keeps the size).
    Only strides / dilations / paddings change; parameter shapes stay those of the plain ResNet.
    """
    first = layer[0]
    first.conv1.stride = (1, 1)
    if first.downsample is not None:
        first.downsample[0].stride = (1, 1)
    convs = [first.conv2] + [c for block in list(layer)[1:] for c in (block.conv1, block.conv2)]
    for conv in convs:
        conv.dilation = (dilation, dilation)
        conv.padding = (dilation, dilation)


class DilatedResNet(nn.Module):
    """torchvision ResNet-18/34/50/101 with a dilated last stage: output stride 16.

    Args:
        depth: 18, 34 (BasicBlock; small test nets), 50 or 101 (Bottleneck).
        norm: ``"BN"`` (trainable batch statistics, default), ``"SyncBN"``, ``"FrozenBN"``
            (for pretrained weights and small batches) or ``"GN"`` (from scratch).
        freeze_at: 0 trains everything, 1 freezes the stem, ``k >= 2`` the stem and
            ``layer1..layer{k-1}`` (maskrcnn_benchmark's ``FREEZE_CONV_BODY_AT``).

    ``forward(x [B, 3, H, W]) -> [B, out_channels, ceil(H/16), ceil(W/16)]`` (the ``layer4`` map;
    ``out_channels`` = 512 for 18/34, 2048 for 50/101).

    The state dict uses torchvision's names (``conv1``, ``bn1``, ``layer1..4``) without ``fc``, so
    ImageNet weights load without renaming (the load step,
    :func:`sgg.modeling.pretrained.load_backbone_weights`; ``MODEL.ONESTAGE.BACKBONE_WEIGHTS``).
    """

    stride: int = 16

    def __init__(self, depth: int = 50, norm: str = "BN", freeze_at: int = 0) -> None:
        super().__init__()
        if depth not in ONESTAGE_RESNET_DEPTHS:
            raise ValueError(f"DilatedResNet depth must be one of {sorted(ONESTAGE_RESNET_DEPTHS)}, got {depth}")
        if norm not in NORMS:
            raise ValueError(f"DilatedResNet norm must be one of {NORMS}, got {norm!r}")
        block, layers = ONESTAGE_RESNET_DEPTHS[depth]
        bottleneck = block is tv_resnet.Bottleneck
        net = tv_resnet.ResNet(block, layers, norm_layer=norm_factory(norm),
                               replace_stride_with_dilation=[False, False, bottleneck])
        if not bottleneck:
            _dilate_basic_layer(net.layer4, dilation=2)
        # torchvision's attribute names, so that its state dicts load without renaming
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = net.layer1, net.layer2, net.layer3, net.layer4
        self.depth = depth
        self.out_channels = 512 * block.expansion
        self.freeze_at = int(freeze_at)
        self._freeze(self.freeze_at)

    def _freeze(self, freeze_at: int) -> None:
        if freeze_at <= 0:
            return
        stages = [[self.conv1, self.bn1]] + [[getattr(self, f"layer{i}")] for i in range(1, 5)]
        for modules in stages[:freeze_at]:
            for m in modules:
                for p in m.parameters():
                    p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, H, W]`` (normalised float) -> ``[B, out_channels, ceil(H/16), ceil(W/16)]``."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TimmFPN16(nn.Module):
    """timm ``features_only`` backbone + a one-level FPN to output stride 16.

    The stride-16 and stride-32 levels of ``feature_info`` go through 1x1 laterals to
    ``out_channels``; the stride-32 lateral is upsampled (nearest, to the stride-16 map's size, so
    odd sizes work) and added to the stride-16 lateral; a 3x3 conv gives the output.

    Args:
        name: timm model name, e.g. ``"swin_small_patch4_window7_224"`` (CoRF's Swin-S),
            ``"convnext_tiny"``, ``"resnet50"``.
        out_channels: channels of the output map.
        img_size: passed to ``timm.create_model`` when not None. Swin models are created with
            ``strict_img_size=False`` (timm then builds the shifted-window masks for the actual
            input size on each forward), so any input size multiple of the patch size runs; pass
            ``img_size`` where a model needs the training size at construction (e.g. ViT-style
            position embeddings, or a Swin window clamp for inputs smaller than 224).
        norm: ``""`` (default, the plain FPN) or a norm of ``NORMS`` (``"BN"``, ``"GN"``, ...)
            after the output conv. From scratch the un-normalised output grew to a spatial std of
            ~100-270 within 150 iterations (MobileNetV3 on SynthVG, AdamW 2e-3), the deformable
            heads' offset gradients with it, and training diverged; ``"BN"`` keeps it at unit scale.
        **timm_kwargs: more ``timm.create_model`` arguments (``drop_path_rate``, ``embed_dim``,
            ``depths``, ``out_indices``, ...).

    Channels-last outputs (Swin: ``output_fmt == NHWC``) are permuted to NCHW.

    ``forward(x [B, 3, H, W]) -> [B, out_channels, Hg, Wg]``, ``Hg, Wg`` the size of the model's
    stride-16 level (``H / 16`` for multiples of 32).
    """

    stride: int = 16

    def __init__(self, name: str = "swin_small_patch4_window7_224", out_channels: int = 256,
                 img_size: Optional[Union[int, Tuple[int, int]]] = None,
                 norm: str = "", **timm_kwargs) -> None:
        super().__init__()
        if norm and norm not in NORMS:
            raise ValueError(f"TimmFPN16 norm (MODEL.ONESTAGE.FPN_NORM) must be '' or one of {NORMS}, got {norm!r}")
        kwargs = {} if img_size is None else {"img_size": img_size}
        kwargs.update(timm_kwargs)
        self.body = create_timm_features(name, **kwargs)
        info = self.body.feature_info
        reductions = list(info.reduction())
        if 16 not in reductions or 32 not in reductions:
            raise ValueError(f"timm backbone '{name}' gives feature levels at reductions {reductions}; "
                             f"TimmFPN16 needs one at 16 and one at 32 (check out_indices)")
        # the last level of each reduction (a model may repeat a reduction, e.g. several stages at 32)
        self._i16 = len(reductions) - 1 - reductions[::-1].index(16)
        self._i32 = len(reductions) - 1 - reductions[::-1].index(32)
        c16, c32 = info.channels()[self._i16], info.channels()[self._i32]
        self._channels_last = str(getattr(self.body, "output_fmt", "NCHW")).upper().endswith("NHWC")
        self.lateral16 = nn.Conv2d(c16, out_channels, 1)
        self.lateral32 = nn.Conv2d(c32, out_channels, 1)
        self.output = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        for conv in (self.lateral16, self.lateral32, self.output):
            nn.init.kaiming_uniform_(conv.weight, a=1)  # torchvision FPN's init
            nn.init.zeros_(conv.bias)
        self.norm = norm_factory(norm)(out_channels) if norm else None
        self.name = name
        self.out_channels = out_channels

    def _nchw(self, f: torch.Tensor) -> torch.Tensor:
        return f.permute(0, 3, 1, 2) if self._channels_last else f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, 3, H, W]`` -> ``[B, out_channels, Hg, Wg]`` (stride 16)."""
        feats = self.body(x)
        f16, f32 = self._nchw(feats[self._i16]), self._nchw(feats[self._i32])
        top = self.lateral32(f32)
        merged = self.lateral16(f16) + F.interpolate(top, size=f16.shape[-2:], mode="nearest")
        out = self.output(merged)
        return out if self.norm is None else self.norm(out)


def build_onestage_backbone(name: str, **kw) -> nn.Module:
    """Name -> stride-16 backbone.

    * ``"R-18"``, ``"R-34"``, ``"R-50"``, ``"R-101"`` -> :class:`DilatedResNet` (``depth`` from the
      name; ``kw``: ``norm``, ``freeze_at``).
    * ``"timm:<model name>"`` -> :class:`TimmFPN16` (``kw``: ``out_channels``,
      ``img_size``, ``norm`` and any ``timm.create_model`` argument).
    """
    if name.startswith("timm:"):
        model = name[len("timm:"):]
        if not model:
            raise ValueError("backbone 'timm:' needs a model name, e.g. 'timm:swin_small_patch4_window7_224'")
        return TimmFPN16(model, **kw)
    if name.startswith("R-") and name[2:].isdigit() and int(name[2:]) in ONESTAGE_RESNET_DEPTHS:
        return DilatedResNet(depth=int(name[2:]), **kw)
    known = ", ".join(f"R-{d}" for d in ONESTAGE_RESNET_DEPTHS)
    raise KeyError(f"one-stage backbone {name!r} is unknown: use {known} (dilated ResNet, stride 16) "
                   f"or timm:<model name> (timm features + one-level FPN to stride 16)")
