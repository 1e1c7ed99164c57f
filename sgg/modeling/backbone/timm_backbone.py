"""Any timm backbone (``features_only``) with the same FPN as the ResNets.

Config: ``MODEL.BACKBONE.CONV_BODY "timm:<model name>-FPN"`` (the ``-FPN`` suffix is optional),
e.g. ``timm:convnext_tiny-FPN``, ``timm:swin_tiny_patch4_window7_224-FPN``,
``timm:resnet50-FPN``. The output is the ResNet-FPN layout: ``'0','1','2','3','pool'`` at strides
4, 8, 16, 32, 64, so the RPN, the poolers and the relation head work unchanged.

* Levels: by default the feature levels at reductions 4, 8, 16, 32 (``feature_info``); pass
  ``out_indices`` (``MODEL.BACKBONE.TIMM_OUT_INDICES``) to choose others -- they must then still be
  four levels at those strides.
* Channels-last outputs (Swin: ``output_fmt == 'NHWC'``) are permuted to NCHW.
* Swin models are created with ``strict_img_size=False`` so any padded input size works; extra
  constructor arguments come from ``model_kwargs`` (``MODEL.BACKBONE.TIMM_KWARGS``, a Python dict
  literal such as ``"{'drop_path_rate': 0.2}"``).
* Weights: ``pretrained=False`` always; a local file (``MODEL.BACKBONE.WEIGHTS``) is loaded through
  timm's ``pretrained_cfg_overlay=dict(file=...)`` (timm's own key filtering); nothing is downloaded.
* Batch norms (if the model has any) are frozen (``timm.layers.freeze_batch_norm_2d``) unless
  ``freeze_bn=False`` (``MODEL.DETECTOR.BACKBONE_NORM`` other than ``FrozenBN``): detection
  batches are too small for batch statistics; the model's other norms (LayerNorm) are untouched.
* ``freeze_at``: 0 trains everything; ``k >= 1`` freezes every parameter registered before the
  module that produces level ``k - 1`` (1 = the stem, 2 = the stem and the stride-4 stage, ...), the
  meaning of ``FREEZE_CONV_BODY_AT`` for ResNets.
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from typing import Dict, Optional, Sequence

import torch
from torch import nn
from .resnet_fpn import FPN_STRIDES, make_fpn

logger = logging.getLogger(__name__)

_WANTED_REDUCTIONS = (4, 8, 16, 32)


def _norm_name(name: str) -> str:
    name = name[len("model."):] if name.startswith("model.") else name
    return name.replace(".", "_")


def parse_timm_kwargs(text: str) -> dict:
    """``TIMM_KWARGS`` (a Python dict literal, "" = none) -> dict."""
    import ast

    if not text:
        return {}
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as e:
        raise ValueError(f"MODEL.BACKBONE.TIMM_KWARGS must be a Python dict literal, got {text!r}") from e
    if not isinstance(value, dict):
        raise ValueError(f"MODEL.BACKBONE.TIMM_KWARGS must be a dict, got {text!r}")
    return value


def timm_features_kwargs(name: str, **kwargs) -> dict:
    """The ``timm.create_model`` arguments of a ``features_only`` body: Swin models get
    ``strict_img_size=False`` (any input size) unless ``kwargs`` say otherwise."""
    kw = {"strict_img_size": False} if name.startswith("swin") else {}
    kw.update(kwargs)
    return kw


def create_timm_features(name: str, **kwargs) -> nn.Module:
    """``timm.create_model(name, features_only=True, pretrained=False)`` (random init; weights come
    from the load step, :func:`sgg.modeling.pretrained.load_backbone_weights`). The module gets
    ``timm_name`` / ``timm_kwargs`` attributes so the load step can build timm's pretrained copy."""
    import timm

    kw = timm_features_kwargs(name, **kwargs)
    body = timm.create_model(name, pretrained=False, features_only=True, **kw)
    body.timm_name, body.timm_kwargs = name, kw
    return body


class TimmFPN(nn.Module):
    """``timm.create_model(name, features_only=True)`` + FPN (see the module docstring).

    ``forward(x [B,3,H,W]) -> OrderedDict('0','1','2','3','pool' -> [B, out_channels, H/s, W/s])``.
    """

    strides: Dict[str, int] = FPN_STRIDES

    def __init__(self, name: str, out_channels: int = 256, freeze_at: int = 0,
                 out_indices: Sequence[int] = (), freeze_bn: bool = True,
                 model_kwargs: Optional[dict] = None, fpn_norm: str = "") -> None:
        super().__init__()
        kwargs = dict(model_kwargs or {})
        if out_indices:
            kwargs["out_indices"] = tuple(int(i) for i in out_indices)
        self.body = create_timm_features(name, **kwargs)
        info = self.body.feature_info
        reductions = list(info.reduction())
        if out_indices:
            picked = list(range(len(reductions)))
        else:
            picked = [reductions.index(r) for r in _WANTED_REDUCTIONS if r in reductions]
        got = [reductions[i] for i in picked]
        if got != list(_WANTED_REDUCTIONS):
            raise ValueError(
                f"timm backbone '{name}' gives feature levels at reductions {reductions}; the FPN needs "
                f"exactly four at {list(_WANTED_REDUCTIONS)} (choose them with MODEL.BACKBONE.TIMM_OUT_INDICES)")
        self._picked = picked
        self._channels_last = str(getattr(self.body, "output_fmt", "NCHW")).upper().endswith("NHWC")
        channels = [info.channels()[i] for i in picked]
        self._module_names = [info.module_name()[i] for i in picked]
        self.fpn = make_fpn(channels, out_channels, fpn_norm)
        self.out_channels = out_channels
        if freeze_bn:
            from timm.layers import freeze_batch_norm_2d

            self.body = freeze_batch_norm_2d(self.body)
        self._freeze(freeze_at)

    @classmethod
    def from_config(cls, cfg) -> "TimmFPN":
        """``MODEL.BACKBONE.CONV_BODY`` ``timm:<name>[-FPN]`` with ``MODEL.BACKBONE.TIMM_*``,
        ``MODEL.RESNETS.BACKBONE_OUT_CHANNELS``, ``MODEL.FPN.USE_GN``, ``MODEL.DETECTOR.BACKBONE_NORM``."""
        name = cfg.MODEL.BACKBONE.CONV_BODY[len("timm:"):]
        if name.endswith("-FPN"):
            name = name[: -len("-FPN")]
        bb = cfg.MODEL.BACKBONE
        return cls(name, out_channels=cfg.MODEL.RESNETS.BACKBONE_OUT_CHANNELS, freeze_at=bb.FREEZE_CONV_BODY_AT,
                   out_indices=tuple(bb.TIMM_OUT_INDICES), model_kwargs=parse_timm_kwargs(bb.TIMM_KWARGS),
                   freeze_bn=cfg.MODEL.DETECTOR.BACKBONE_NORM == "FrozenBN",
                   fpn_norm="GN" if cfg.MODEL.FPN.USE_GN else "")

    def _freeze(self, freeze_at: int) -> None:
        if freeze_at <= 0:
            return
        params = list(self.body.named_parameters())
        stop = len(params)
        if freeze_at - 1 < len(self._module_names):
            prefix = _norm_name(self._module_names[freeze_at - 1]) + "_"
            for i, (n, _) in enumerate(params):
                if _norm_name(n).startswith(prefix):
                    stop = i
                    break
        for _, p in params[:stop]:
            p.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> "OrderedDict[str, torch.Tensor]":
        feats = self.body(x)
        out = OrderedDict()
        for k, i in enumerate(self._picked):
            f = feats[i]
            if self._channels_last:
                f = f.permute(0, 3, 1, 2)
            out[str(k)] = f.contiguous()
        return self.fpn(out)
