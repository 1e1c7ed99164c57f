"""Composite-field heads of the one-stage model (CoRF-style): object fields and relation fields.

Field conventions (shared with ``encoder.py`` / ``losses.py`` / ``decoder.py``):

* The fields live on the backbone's stride-``s`` grid (``s = 16``): ``[.., Hg, Wg]``. A point
  ``(x, y)`` in input pixels has grid coordinates ``(x / s, y / s)``; cell ``(i, j)`` is row ``i``,
  column ``j`` and its reference point is ``(j, i)`` in grid coordinates (x first).
* Every regressed quantity is in grid units, relative to the cell's reference point:

  - object centre ``= (j + obj_offset[0], i + obj_offset[1])``; box size
    ``(w, h) = (obj_size[0], obj_size[1])``;
  - subject centre ``= (j + rel_subj[p, 0], i + rel_subj[p, 1])``, object centre
    ``= (j + rel_obj[p, 0], i + rel_obj[p, 1])``; ``rel_scale[p]`` = (subject scale,
    object scale) in grid units.

* Object channel ``k`` is object label ``k + 1`` (no background channel); predicate channel ``p``
  is predicate ``p + 1`` (no "no relation" channel).
* All fields are raw outputs: logits stay logits (the loss and the decoder apply the sigmoid),
  offsets / sizes / vectors / scales are plain linear outputs. They are returned in float32 even
  under ``torch.autocast`` (the sigmoid / focal loss want the precision; the maps are small).

Head trunks (``trunk=``): ``"conv"`` (3x3 conv [+ norm] + ReLU, ``num_convs`` times),
``"deform"`` (the same with a deformable 3x3 conv -- torchvision's kernel on CUDA, a ``grid_sample``
implementation elsewhere -- and a zero-initialised offset conv per layer; the offsets are returned for the STDG depth teacher) or ``"transformer"`` (1x1 projection,
Fourier positional encoding of the normalised cell coordinates, pre-LN transformer blocks). A
1x1 output conv per field follows the trunk.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import DeformConv2d

from sgg.modeling.backbone.resnet_fpn import norm_factory
from sgg.modeling.onestage.deform_conv import deform_conv2d, resolve_deform_impl

__all__ = [
    "OBJECT_FIELDS",
    "RELATION_FIELDS",
    "TRUNKS",
    "CompositeFieldNet",
    "ConvTrunk",
    "DeformConvTrunk",
    "DeformLayer",
    "FourierPositionEncoding",
    "ObjectFieldHead",
    "PreLNBlock",
    "RelationFieldHead",
    "TransformerTrunk",
    "build_trunk",
    "prior_bias",
]

#: keys of the object fields, in the order of :class:`ObjectFieldHead`'s outputs
OBJECT_FIELDS = ("obj_logits", "obj_offset", "obj_size")
#: keys of the relation fields, in the order of :class:`RelationFieldHead`'s outputs
RELATION_FIELDS = ("rel_logits", "rel_subj", "rel_obj", "rel_scale")
TRUNKS = ("conv", "deform", "transformer")
_TRUNK_NORMS = ("", "BN", "SyncBN", "GN")


def prior_bias(prior_prob: float = 0.1) -> float:
    """Logit bias giving sigmoid = ``prior_prob`` at init: ``-log((1 - p) / p)`` (-2.19 for 0.1)."""
    return -math.log((1.0 - prior_prob) / prior_prob)


def _norm(norm: str, channels: int) -> Optional[nn.Module]:
    if norm not in _TRUNK_NORMS:
        raise ValueError(f"head norm must be one of {_TRUNK_NORMS}, got {norm!r}")
    return norm_factory(norm)(channels) if norm else None


def _init_conv(conv: nn.Module) -> None:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)


# ------------------------------------------------------------------------------------------------
# Trunks: forward(x [B, Cin, Hg, Wg]) -> (y [B, width, Hg, Wg], offsets: list of [B, 18, Hg, Wg])
# ------------------------------------------------------------------------------------------------
class ConvTrunk(nn.Module):
    """``num_convs`` x (3x3 conv [+ norm] + ReLU).

    Args:
        in_channels: channels of the input map.
        width: channels of every conv.
        num_convs: number of conv layers (CoRF: 2-4).
        norm: ``""`` (none, conv bias), ``"BN"``, ``"SyncBN"`` or ``"GN"``.

    ``forward(x [B, in_channels, Hg, Wg]) -> (y [B, width, Hg, Wg], [])``.
    """

    def __init__(self, in_channels: int, width: int = 256, num_convs: int = 2, norm: str = "") -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        layers: List[nn.Module] = []
        for k in range(num_convs):
            conv = nn.Conv2d(in_channels if k == 0 else width, width, 3, padding=1, bias=not norm)
            _init_conv(conv)
            layers.append(conv)
            n = _norm(norm, width)
            if n is not None:
                layers.append(n)
            layers.append(nn.ReLU(inplace=True))
        self.layers = nn.Sequential(*layers)
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        return self.layers(x), []


class DeformLayer(nn.Module):
    """3x3 ``DeformConv2d`` [+ norm] + ReLU whose offsets come from a zero-initialised 3x3 conv.

    At init the offsets are 0, so the layer starts as a plain 3x3 conv.

    ``forward(x [B, in_channels, H, W]) -> (y [B, out_channels, H, W], offset [B, 18, H, W])``.
    The offset layout is torchvision's: channels ``2k, 2k + 1`` are the (dy, dx) displacement, in
    feature-map cells, of kernel tap ``k`` (taps row-major over the 3x3 window).

    The deformable conv runs in the weights' dtype with autocast off: torchvision has no bf16 CPU
    kernel, and its CUDA autocast rule casts to float32 anyway.

    ``impl`` (:data:`~sgg.modeling.onestage.deform_conv.DEFORM_IMPLS`): ``"auto"`` runs
    torchvision's kernel on CUDA and the ``grid_sample`` implementation elsewhere (~14x faster on a
    CPU, same numbers); the parameters (``conv.weight``, ``conv.bias``) are the same either way.
    """

    def __init__(self, in_channels: int, out_channels: int, norm: str = "", impl: str = "auto") -> None:
        super().__init__()
        resolve_deform_impl(impl, torch.device("cpu"))  # validates the name
        self.impl = impl
        self.offset = nn.Conv2d(in_channels, 2 * 3 * 3, 3, padding=1)
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv = DeformConv2d(in_channels, out_channels, 3, padding=1, bias=not norm)
        _init_conv(self.conv)
        self.norm = _norm(norm, out_channels)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        dtype = self.conv.weight.dtype
        offset = self.offset(x).to(dtype)
        with torch.autocast(device_type=x.device.type, enabled=False):
            y = deform_conv2d(x.to(dtype), offset, self.conv.weight, self.conv.bias, stride=self.conv.stride,
                              padding=self.conv.padding, dilation=self.conv.dilation, impl=self.impl)
        if self.norm is not None:
            y = self.norm(y)
        return F.relu(y, inplace=True), offset


class DeformConvTrunk(nn.Module):
    """``num_convs`` x :class:`DeformLayer`; returns every layer's offsets.

    ``forward(x [B, in_channels, Hg, Wg]) -> (y [B, width, Hg, Wg], offsets)``, ``offsets`` a list
    of ``num_convs`` tensors ``[B, 18, Hg, Wg]`` (first layer first).
    """

    def __init__(self, in_channels: int, width: int = 256, num_convs: int = 2, norm: str = "",
                 impl: str = "auto") -> None:
        super().__init__()
        if num_convs < 1:
            raise ValueError(f"num_convs must be >= 1, got {num_convs}")
        self.layers = nn.ModuleList(
            DeformLayer(in_channels if k == 0 else width, width, norm, impl) for k in range(num_convs))
        self.out_channels = width

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        offsets = []
        for layer in self.layers:
            x, offset = layer(x)
            offsets.append(offset)
        return x, offsets


class FourierPositionEncoding(nn.Module):
    """Learned projection of fixed Fourier features of the normalised cell coordinates.

    Cell ``(i, j)`` of an ``Hg x Wg`` grid has normalised coordinates
    ``u = (j + 0.5) / Wg``, ``v = (i + 0.5) / Hg`` in (0, 1); with ``num_freqs`` frequencies ``f``
    geometrically spaced in ``[1, max_freq]`` (cycles per image side) the features
    ``sin(2 pi f u), cos(2 pi f u), sin(2 pi f v), cos(2 pi f v)`` (``4 * num_freqs``) go through
    a linear layer to ``dim``.

    ``forward(hg, wg, device, dtype) -> [hg * wg, dim]`` (row-major cells, as ``flatten(2)``).
    """

    def __init__(self, dim: int, num_freqs: int = 16, max_freq: float = 32.0) -> None:
        super().__init__()
        if num_freqs < 1:
            raise ValueError(f"num_freqs must be >= 1, got {num_freqs}")
        freqs = torch.logspace(0.0, math.log2(max_freq), num_freqs, base=2.0) if num_freqs > 1 \
            else torch.ones(1)
        self.register_buffer("freqs", freqs, persistent=False)
        self.proj = nn.Linear(4 * num_freqs, dim)

    def features(self, hg: int, wg: int, device: torch.device) -> torch.Tensor:
        """The fixed Fourier features ``[hg * wg, 4 * num_freqs]`` (float32)."""
        v = (torch.arange(hg, device=device, dtype=torch.float32) + 0.5) / hg
        u = (torch.arange(wg, device=device, dtype=torch.float32) + 0.5) / wg
        vv, uu = torch.meshgrid(v, u, indexing="ij")
        freqs = self.freqs.to(device=device, dtype=torch.float32)
        au = 2 * math.pi * uu.reshape(-1, 1) * freqs
        av = 2 * math.pi * vv.reshape(-1, 1) * freqs
        return torch.cat([au.sin(), au.cos(), av.sin(), av.cos()], dim=1)

    def forward(self, hg: int, wg: int, device: torch.device) -> torch.Tensor:
        return self.proj(self.features(hg, wg, device))


class PreLNBlock(nn.Module):
    """Pre-LN transformer encoder block: ``x + attn(LN(x))``, then ``x + mlp(LN(x))``.

    ``forward(x [B, N, dim]) -> [B, N, dim]``.
    """

    def __init__(self, dim: int = 256, num_heads: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"transformer width {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = float(dropout)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(hidden, dim), nn.Dropout(dropout))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, n, d)))
        return x + self.mlp(self.norm2(x))


class TransformerTrunk(nn.Module):
    """Transformer refiner (CoRF "+T"): 1x1 projection to ``width``, + Fourier positional encoding,
    ``num_layers`` pre-LN blocks over all cells, a final LayerNorm, back to a map.

    ``forward(x [B, in_channels, Hg, Wg]) -> (y [B, width, Hg, Wg], [])``.
    """

    def __init__(self, in_channels: int, width: int = 256, num_layers: int = 6, num_heads: int = 8,
                 mlp_ratio: float = 4.0, dropout: float = 0.0, num_freqs: int = 16, max_freq: float = 32.0) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        self.input_proj = nn.Conv2d(in_channels, width, 1)
        self.pos = FourierPositionEncoding(width, num_freqs, max_freq)
        self.blocks = nn.ModuleList(PreLNBlock(width, num_heads, mlp_ratio, dropout) for _ in range(num_layers))
        self.norm = nn.LayerNorm(width)
        self.out_channels = width
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        x = self.input_proj(x)
        b, c, hg, wg = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # [B, Hg*Wg, width], row-major cells
        tokens = tokens + self.pos(hg, wg, x.device).to(tokens.dtype)
        for block in self.blocks:
            tokens = block(tokens)
        tokens = self.norm(tokens)
        return tokens.transpose(1, 2).reshape(b, c, hg, wg), []


def build_trunk(trunk: str, in_channels: int, width: int = 256, num_convs: int = 2, norm: str = "",
                num_layers: int = 6, num_heads: int = 8, mlp_ratio: float = 4.0, dropout: float = 0.0,
                num_freqs: int = 16, max_freq: float = 32.0, deform_impl: str = "auto") -> nn.Module:
    """``trunk`` name -> trunk module (arguments a trunk does not use are ignored).

    * ``"conv"``: :class:`ConvTrunk` (``width``, ``num_convs``, ``norm``).
    * ``"deform"``: :class:`DeformConvTrunk` (``width``, ``num_convs``, ``norm``, ``deform_impl``).
    * ``"transformer"``: :class:`TransformerTrunk` (``width``, ``num_layers``, ``num_heads``,
      ``mlp_ratio``, ``dropout``, ``num_freqs``, ``max_freq``).
    """
    if trunk == "conv":
        return ConvTrunk(in_channels, width, num_convs, norm)
    if trunk == "deform":
        return DeformConvTrunk(in_channels, width, num_convs, norm, deform_impl)
    if trunk == "transformer":
        return TransformerTrunk(in_channels, width, num_layers, num_heads, mlp_ratio, dropout, num_freqs, max_freq)
    raise ValueError(f"head trunk must be one of {TRUNKS}, got {trunk!r}")


def _output_conv(in_channels: int, out_channels: int, bias: float = 0.0) -> nn.Conv2d:
    conv = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.normal_(conv.weight, std=0.01)
    nn.init.constant_(conv.bias, bias)
    return conv


# ------------------------------------------------------------------------------------------------
# Heads
# ------------------------------------------------------------------------------------------------
class ObjectFieldHead(nn.Module):
    """CenterNet-style object fields: class heatmaps, sub-cell centre offsets, box sizes.

    Args:
        in_channels: channels of the backbone map.
        num_classes: object classes WITHOUT background (VG150: 150); channel ``k`` = label ``k + 1``.
        trunk: ``"conv"``, ``"deform"`` or ``"transformer"`` (see :func:`build_trunk`).
        width: trunk width.
        prior_prob: initial sigmoid of the class logits (bias ``-log((1 - p) / p)``, -2.19).
        **trunk_kwargs: the other :func:`build_trunk` arguments (``num_convs``, ``norm``,
            ``num_layers``, ``num_heads``, ...).

    ``forward(x [B, in_channels, Hg, Wg]) -> (fields, offsets)``; ``fields``:
    ``obj_logits [B, C, Hg, Wg]``, ``obj_offset [B, 2, Hg, Wg]`` ((dx, dy) of the centre from the
    cell's reference point), ``obj_size [B, 2, Hg, Wg]`` ((w, h)), all grid units, raw, float32;
    ``offsets``: the deformable trunk's ``[B, 18, Hg, Wg]`` offsets ([] for other trunks).
    """

    def __init__(self, in_channels: int, num_classes: int, trunk: str = "conv", width: int = 256,
                 prior_prob: float = 0.1, **trunk_kwargs) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes (without background) must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.trunk = build_trunk(trunk, in_channels, width=width, **trunk_kwargs)
        self.logits = _output_conv(width, num_classes, prior_bias(prior_prob))
        self.offset = _output_conv(width, 2)
        self.size = _output_conv(width, 2)

    def forward(self, x: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor]]:
        y, offsets = self.trunk(x)
        fields = {"obj_logits": self.logits(y).float(), "obj_offset": self.offset(y).float(),
                  "obj_size": self.size(y).float()}
        return fields, offsets


class RelationFieldHead(nn.Module):
    """Relation affinity fields: per predicate a confidence, vectors to the subject and object
    centres, and two scales (7 channels per predicate).

    Args:
        in_channels: channels of the backbone map.
        num_predicates: predicates WITHOUT "no relation" (VG150: 50); channel ``p`` = predicate ``p + 1``.
        trunk, width, prior_prob, **trunk_kwargs: as :class:`ObjectFieldHead`.

    ``forward(x [B, in_channels, Hg, Wg]) -> (fields, offsets)``; ``fields`` (grid units, raw,
    float32): ``rel_logits [B, P, Hg, Wg]``, ``rel_subj [B, P, 2, Hg, Wg]`` ((dx, dy) from the
    cell's reference point to the subject centre), ``rel_obj [B, P, 2, Hg, Wg]`` (same, object
    centre), ``rel_scale [B, P, 2, Hg, Wg]`` ((subject scale, object scale));
    ``offsets`` as :class:`ObjectFieldHead`.
    """

    def __init__(self, in_channels: int, num_predicates: int, trunk: str = "conv", width: int = 256,
                 prior_prob: float = 0.1, **trunk_kwargs) -> None:
        super().__init__()
        if num_predicates < 1:
            raise ValueError(f"num_predicates (without background) must be >= 1, got {num_predicates}")
        self.num_predicates = num_predicates
        self.trunk = build_trunk(trunk, in_channels, width=width, **trunk_kwargs)
        self.logits = _output_conv(width, num_predicates, prior_bias(prior_prob))
        # channels 6p .. 6p + 5 of predicate p: subj (dx, dy), obj (dx, dy), scales (subj, obj)
        self.regression = _output_conv(width, 6 * num_predicates)

    def forward(self, x: torch.Tensor) -> Tuple[Dict[str, torch.Tensor], List[torch.Tensor]]:
        y, offsets = self.trunk(x)
        b, _, hg, wg = y.shape
        reg = self.regression(y).float().reshape(b, self.num_predicates, 6, hg, wg)
        fields = {"rel_logits": self.logits(y).float(), "rel_subj": reg[:, :, 0:2], "rel_obj": reg[:, :, 2:4],
                  "rel_scale": reg[:, :, 4:6]}
        return fields, offsets


class CompositeFieldNet(nn.Module):
    """Backbone (stride 16) + :class:`ObjectFieldHead` + :class:`RelationFieldHead`.

    Args:
        backbone: module mapping ``[B, 3, H, W]`` to one map ``[B, out_channels, Hg, Wg]``, with
            attribute ``out_channels`` (and ``stride``, default 16), e.g. from
            :func:`sgg.modeling.onestage.backbone.build_onestage_backbone`.
        num_classes: object classes without background.
        num_predicates: predicates without "no relation".
        obj_head_kwargs, rel_head_kwargs: keyword arguments of the two heads (``trunk``,
            ``width``, ``num_convs``, ``norm``, ``num_layers``, ...).

    ``forward(images [B, 3, H, W] normalised float) -> dict``:

    * ``obj_logits [B, C, Hg, Wg]``, ``obj_offset [B, 2, Hg, Wg]``, ``obj_size [B, 2, Hg, Wg]``;
    * ``rel_logits [B, P, Hg, Wg]``, ``rel_subj`` / ``rel_obj`` / ``rel_scale [B, P, 2, Hg, Wg]``;
    * ``offsets``: list of the deformable offsets ``[B, 18, Hg, Wg]``, object head's layers then
      relation head's ([] without a deformable trunk);
    * ``features``: the backbone map ``[B, out_channels, Hg, Wg]`` (for feature distillation).

    Fields are raw (no sigmoid) and float32; see the module docstring for the grid conventions.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, num_predicates: int,
                 obj_head_kwargs: Optional[Dict[str, Any]] = None,
                 rel_head_kwargs: Optional[Dict[str, Any]] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.stride = int(getattr(backbone, "stride", 16))
        in_channels = int(backbone.out_channels)
        self.obj_head = ObjectFieldHead(in_channels, num_classes, **dict(obj_head_kwargs or {}))
        self.rel_head = RelationFieldHead(in_channels, num_predicates, **dict(rel_head_kwargs or {}))
        self.num_classes = num_classes
        self.num_predicates = num_predicates

    @classmethod
    def from_config(cls, cfg, num_classes: int, num_predicates: int) -> "CompositeFieldNet":
        """The field network of ``cfg.MODEL.ONESTAGE`` (class counts WITHOUT background); random init
        (``MODEL.ONESTAGE.BACKBONE_WEIGHTS`` is read by the load step)."""
        from sgg.modeling.backbone.build import parse_timm_kwargs
        from sgg.modeling.onestage.backbone import build_onestage_backbone

        o = cfg.MODEL.ONESTAGE
        if o.BACKBONE.startswith("timm:"):
            backbone = build_onestage_backbone(o.BACKBONE, norm=o.FPN_NORM, **parse_timm_kwargs(o.TIMM_KWARGS))
        else:
            backbone = build_onestage_backbone(o.BACKBONE, norm=o.BACKBONE_NORM, freeze_at=o.FREEZE_AT)

        def head_kwargs(trunk: str) -> Dict[str, Any]:
            return dict(trunk=trunk, width=o.HEAD_WIDTH, num_convs=o.HEAD_CONVS, norm=o.HEAD_NORM,
                        num_layers=o.TRANSFORMER_LAYERS, num_heads=o.TRANSFORMER_HEADS, deform_impl=o.DEFORM_IMPL)

        return cls(backbone, num_classes, num_predicates, obj_head_kwargs=head_kwargs(o.OBJ_TRUNK),
                   rel_head_kwargs=head_kwargs(o.REL_TRUNK))

    def forward(self, images: torch.Tensor) -> Dict[str, Any]:
        features = self.backbone(images)
        obj, obj_offsets = self.obj_head(features)
        rel, rel_offsets = self.rel_head(features)
        return {**obj, **rel, "offsets": obj_offsets + rel_offsets, "features": features}
