"""FPN backbones: torchvision ResNet/ResNeXt and timm models (see ``build.py`` for CONV_BODY)."""
from .build import BACKBONE_REGISTRY, build_backbone, parse_timm_kwargs
from .resnet_fpn import FPN_STRIDES, ResNetFPN
from .timm_backbone import TimmFPN

__all__ = [
    "BACKBONE_REGISTRY",
    "FPN_STRIDES",
    "ResNetFPN",
    "TimmFPN",
    "build_backbone",
    "parse_timm_kwargs",
]
