"""``build_backbone(cfg)``: ``MODEL.BACKBONE.CONV_BODY`` -> an FPN backbone module.

Accepted ``CONV_BODY`` values:

* ``R-<depth>-FPN`` (depth 18, 34, 50, 101, 152): torchvision ResNet; ``R-101-FPN`` with
  ``MODEL.RESNETS.NUM_GROUPS 32`` and ``WIDTH_PER_GROUP 8`` is ResNeXt-101-32x8d (SGB's way).
* ``X-<depth>-<G>x<W>d-FPN`` (e.g. ``X-101-32x8d-FPN``): ResNeXt with the groups/width of the name.
* ``timm:<model name>[-FPN]``: any timm model with ``features_only`` support (Swin, ConvNeXt, ...).
* any name registered in :data:`BACKBONE_REGISTRY` (a function ``fn(cfg) -> nn.Module``).

Every backbone returns an ``OrderedDict`` ``'0','1','2','3','pool'`` of ``out_channels`` maps at
strides 4..64 and has attributes ``out_channels`` and ``strides``.
"""
from __future__ import annotations

import ast
import re

from torch import nn

from sgg.registry import Registry

from .resnet_fpn import ResNetFPN
from .timm_backbone import TimmFPN

#: name -> ``fn(cfg) -> nn.Module``; ``CONV_BODY`` patterns map onto "ResNetFPN" / "TimmFPN".
BACKBONE_REGISTRY = Registry("BACKBONE")

_RESNET_RE = re.compile(r"^(?P<kind>[RX])-(?P<depth>\d+)(-(?P<groups>\d+)x(?P<width>\d+)d)?-FPN$")


def _fpn_norm(cfg) -> str:
    return "GN" if cfg.MODEL.FPN.USE_GN else ""


@BACKBONE_REGISTRY.register(name="ResNetFPN")
def build_resnet_fpn_backbone(cfg) -> ResNetFPN:
    body = cfg.MODEL.BACKBONE.CONV_BODY
    m = _RESNET_RE.match(body)
    if m is None:
        raise ValueError(f"MODEL.BACKBONE.CONV_BODY '{body}' is not of the form R-<depth>-FPN or "
                         f"X-<depth>-<G>x<W>d-FPN")
    groups, width = cfg.MODEL.RESNETS.NUM_GROUPS, cfg.MODEL.RESNETS.WIDTH_PER_GROUP
    if m.group("groups"):
        groups, width = int(m.group("groups")), int(m.group("width"))
    elif m.group("kind") == "X":
        raise ValueError(f"'{body}': give ResNeXt groups and width in the name, e.g. X-101-32x8d-FPN")
    return ResNetFPN(
        depth=int(m.group("depth")),
        groups=groups,
        width_per_group=width,
        stride_in_1x1=cfg.MODEL.RESNETS.STRIDE_IN_1X1,
        out_channels=cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS,
        freeze_at=cfg.MODEL.BACKBONE.FREEZE_CONV_BODY_AT,
        bn_eps=float(cfg.MODEL.DETECTOR.FROZEN_BN_EPS),
        norm=cfg.MODEL.DETECTOR.BACKBONE_NORM,
        fpn_norm=_fpn_norm(cfg),
    )


def parse_timm_kwargs(text: str) -> dict:
    """``MODEL.BACKBONE.TIMM_KWARGS`` (a Python dict literal, "" = none) -> dict."""
    if not text:
        return {}
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"MODEL.BACKBONE.TIMM_KWARGS must be a Python dict literal, got {text!r}") from e
    if not isinstance(value, dict):
        raise ValueError(f"MODEL.BACKBONE.TIMM_KWARGS must be a dict, got {text!r}")
    return value


@BACKBONE_REGISTRY.register(name="TimmFPN")
def build_timm_fpn_backbone(cfg) -> TimmFPN:
    body = cfg.MODEL.BACKBONE.CONV_BODY
    name = body[len("timm:"):]
    if name.endswith("-FPN"):
        name = name[: -len("-FPN")]
    bb = cfg.MODEL.BACKBONE
    return TimmFPN(
        name,
        out_channels=cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS,
        freeze_at=bb.FREEZE_CONV_BODY_AT,
        out_indices=tuple(bb.TIMM_OUT_INDICES),
        model_kwargs=parse_timm_kwargs(bb.TIMM_KWARGS),
        freeze_bn=cfg.MODEL.DETECTOR.BACKBONE_NORM == "FrozenBN",
        fpn_norm=_fpn_norm(cfg),
    )


def build_backbone(cfg) -> nn.Module:
    """The backbone named by ``MODEL.BACKBONE.CONV_BODY`` (see the module docstring)."""
    body = cfg.MODEL.BACKBONE.CONV_BODY
    if body in BACKBONE_REGISTRY:
        return BACKBONE_REGISTRY.get(body)(cfg)
    if body.startswith("timm:"):
        return BACKBONE_REGISTRY.get("TimmFPN")(cfg)
    if _RESNET_RE.match(body):
        return BACKBONE_REGISTRY.get("ResNetFPN")(cfg)
    raise KeyError(
        f"MODEL.BACKBONE.CONV_BODY '{body}' is unknown: use R-<depth>-FPN (R-50-FPN, R-101-FPN), "
        f"X-101-32x8d-FPN, timm:<model>-FPN, or a registered name ({', '.join(BACKBONE_REGISTRY.names())})")
