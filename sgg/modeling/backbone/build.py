"""``build_backbone(cfg)``: ``MODEL.BACKBONE.CONV_BODY`` -> an FPN backbone module.

Accepted ``CONV_BODY`` values:

* ``R-<depth>-FPN`` (depth 18, 34, 50, 101, 152): torchvision ResNet; ``R-101-FPN`` with
  ``MODEL.RESNETS.NUM_GROUPS 32`` and ``WIDTH_PER_GROUP 8`` is ResNeXt-101-32x8d (SGB's way).
* ``X-<depth>-<G>x<W>d-FPN`` (e.g. ``X-101-32x8d-FPN``): ResNeXt with the groups/width of the name.
* ``timm:<model name>[-FPN]``: any timm model with ``features_only`` support (Swin, ConvNeXt, ...).
* any name registered in :data:`BACKBONE_REGISTRY` (a class with ``from_config(cfg)``).

Every backbone returns an ``OrderedDict`` ``'0','1','2','3','pool'`` of ``out_channels`` maps at
strides 4..64 and has attributes ``out_channels`` and ``strides``.
"""
from __future__ import annotations

from torch import nn

from sgg.registry import Registry

from .resnet_fpn import RESNET_NAME, ResNetFPN
from .timm_backbone import TimmFPN, parse_timm_kwargs  # noqa: F401  (re-exported)

#: name -> a backbone class with ``from_config(cfg)``; ``CONV_BODY`` patterns map onto "ResNetFPN" /
#: "TimmFPN".
BACKBONE_REGISTRY = Registry("BACKBONE")
BACKBONE_REGISTRY.register(name="ResNetFPN")(ResNetFPN)
BACKBONE_REGISTRY.register(name="TimmFPN")(TimmFPN)


def build_backbone(cfg) -> nn.Module:
    """The backbone named by ``MODEL.BACKBONE.CONV_BODY`` (see the module docstring)."""
    body = cfg.MODEL.BACKBONE.CONV_BODY
    if body in BACKBONE_REGISTRY:
        return BACKBONE_REGISTRY.get(body).from_config(cfg)
    if body.startswith("timm:"):
        return BACKBONE_REGISTRY.get("TimmFPN").from_config(cfg)
    if RESNET_NAME.match(body):
        return BACKBONE_REGISTRY.get("ResNetFPN").from_config(cfg)
    raise KeyError(
        f"MODEL.BACKBONE.CONV_BODY '{body}' is unknown: use R-<depth>-FPN (R-50-FPN, R-101-FPN), "
        f"X-101-32x8d-FPN, timm:<model>-FPN, or a registered name ({', '.join(BACKBONE_REGISTRY.names())})")
