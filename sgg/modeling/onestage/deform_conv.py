"""Deformable convolution (DCNv1/v2) in plain PyTorch: ``grid_sample`` + one contraction.

``torchvision.ops.deform_conv2d`` on the CPU loops over the batch and builds its im2col buffer
tap by tap; on a 2-core machine a 3x3 256 -> 64 deformable layer on a 16 x [16, 16, 16] batch
takes ~2.8 s forward + backward there, against ~0.2 s for :func:`deform_conv2d_sampled` (same
numbers to float rounding: the bilinear sampling rule is the same). On CUDA torchvision's kernel
is the default (:func:`resolve_deform_impl`).

The sampling rule (torchvision's / DCN's): output cell ``(i, j)`` and kernel tap ``k = (ki, kj)``
read the input at ``y = i * stride - padding + ki * dilation + dy``,
``x = j * stride - padding + kj * dilation + dx`` with ``(dy, dx) = offset[:, 2k : 2k + 2, i, j]``,
bilinearly, every corner outside the map contributing 0. ``grid_sample(..., align_corners=False)``
with the normalised coordinate ``(2 p + 1) / size - 1`` lands exactly on pixel coordinate ``p``
and pads with zeros the same way, for any map size (including 1).
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
from torchvision.ops import deform_conv2d as tv_deform_conv2d

__all__ = ["DEFORM_IMPLS", "deform_conv2d_sampled", "resolve_deform_impl", "deform_conv2d"]

#: implementations of :func:`deform_conv2d` (``"auto"``: torchvision on CUDA, sampled elsewhere)
DEFORM_IMPLS = ("auto", "torchvision", "sampled")

IntPair = Union[int, Tuple[int, int]]


def deform_conv2d_sampled(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                          bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                          dilation: IntPair = 1, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Deformable convolution by bilinear sampling; the arguments of ``torchvision.ops.deform_conv2d``.

    Args:
        x: ``[B, C, H, W]``.
        offset: ``[B, 2 * kh * kw, Ho, Wo]``, channels ``2k, 2k + 1`` = (dy, dx) of tap ``k``
            (row-major over the kernel), in input pixels.
        weight: ``[O, C, kh, kw]`` (one group); bias ``[O]`` or None.
        mask: DCNv2 modulation ``[B, kh * kw, Ho, Wo]`` or None.

    Returns ``[B, O, Ho, Wo]``. Only one weight group and one offset group are supported (what the
    one-stage heads use); anything else raises with the shapes it got.
    """
    b, c, h, w = x.shape
    o, cw, kh, kw = weight.shape
    taps = kh * kw
    if cw != c:
        raise ValueError(f"deform_conv2d_sampled supports one weight group: input has {c} channels, "
                         f"weight {tuple(weight.shape)}")
    if offset.dim() != 4 or offset.shape[0] != b or offset.shape[1] != 2 * taps:
        raise ValueError(f"deform_conv2d_sampled supports one offset group: offset must be "
                         f"[{b}, {2 * taps}, Ho, Wo], got {tuple(offset.shape)}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = offset.shape[-2:]
    if ho != (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1 or wo != (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1:
        raise ValueError(f"offset spatial size {(ho, wo)} does not match the convolution's output "
                         f"for input {(h, w)}, kernel {(kh, kw)}, stride {(sh, sw)}, padding {(ph, pw)}, "
                         f"dilation {(dh, dw)}")
    if mask is not None and tuple(mask.shape) != (b, taps, ho, wo):
        raise ValueError(f"mask must be [{b}, {taps}, {ho}, {wo}], got {tuple(mask.shape)}")
    dtype, dev = offset.dtype, offset.device
    off = offset.view(b, taps, 2, ho, wo)
    tap_y = (torch.arange(kh, device=dev, dtype=dtype) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, device=dev, dtype=dtype) * dw).repeat(kh)
    base_y = torch.arange(ho, device=dev, dtype=dtype) * sh - ph
    base_x = torch.arange(wo, device=dev, dtype=dtype) * sw - pw
    py = base_y.view(1, 1, ho, 1) + tap_y.view(1, taps, 1, 1) + off[:, :, 0]  # [B, K, Ho, Wo]
    px = base_x.view(1, 1, 1, wo) + tap_x.view(1, taps, 1, 1) + off[:, :, 1]
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
    cols = F.grid_sample(x, grid.view(b, taps * ho, wo, 2).to(x.dtype), mode="bilinear",
                         padding_mode="zeros", align_corners=False).view(b, c, taps, ho, wo)
    if mask is not None:
        cols = cols * mask.to(cols.dtype).unsqueeze(1)
    out = torch.einsum("bckhw,ock->bohw", cols, weight.reshape(o, c, taps).to(cols.dtype))
    if bias is not None:
        out = out + bias.to(out.dtype).view(1, o, 1, 1)
    return out


def resolve_deform_impl(impl: str, device: torch.device) -> str:
    """``"auto"`` -> ``"torchvision"`` on CUDA, ``"sampled"`` elsewhere; other names are checked."""
    if impl not in DEFORM_IMPLS:
        raise ValueError(f"deformable conv implementation (MODEL.ONESTAGE.DEFORM_IMPL) must be one of "
                         f"{DEFORM_IMPLS}, got {impl!r}")
    if impl == "auto":
        return "torchvision" if device.type == "cuda" else "sampled"
    return impl


def deform_conv2d(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                  bias: Optional[torch.Tensor] = None, stride: IntPair = 1, padding: IntPair = 0,
                  dilation: IntPair = 1, mask: Optional[torch.Tensor] = None, impl: str = "auto") -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` or :func:`deform_conv2d_sampled` (``impl``, see
    :func:`resolve_deform_impl`); same arguments, same result."""
    if resolve_deform_impl(impl, x.device) == "torchvision":
        return tv_deform_conv2d(x, offset, weight, bias, stride=_pair(stride), padding=_pair(padding),
                                dilation=_pair(dilation), mask=mask)
    return deform_conv2d_sampled(x, offset, weight, bias, stride, padding, dilation, mask)
