"""The grid_sample deformable convolution equals torchvision's deform_conv2d (values and gradients,
float64) on strides, paddings, dilations, DCNv2 masks, maps of size 1 and offsets reaching outside
the map; DeformLayer gives the same output with either implementation; bad names and shapes raise."""
import pytest
import torch
from torchvision.ops import deform_conv2d as tv_deform_conv2d

from sgg.modeling.onestage.deform_conv import deform_conv2d, deform_conv2d_sampled, resolve_deform_impl
from sgg.modeling.onestage.fields import DeformConvTrunk, DeformLayer

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("h,w,k,stride,pad,dil,with_mask", [
    (9, 7, 3, 1, 1, 1, False),
    (9, 7, 3, 1, 1, 1, True),
    (1, 5, 3, 1, 1, 1, False),     # a one-row map
    (8, 11, 3, 2, 1, 1, True),
    (8, 6, 3, 1, 2, 2, False),
    (6, 6, 1, 1, 0, 1, False),     # 1x1 kernel
    (7, 5, (3, 2), 1, (1, 0), 1, False),
])
def test_sampled_equals_torchvision_values_and_gradients(h, w, k, stride, pad, dil, with_mask):
    g = torch.Generator().manual_seed(h * 100 + w)
    kh, kw = (k, k) if isinstance(k, int) else k
    ph, pw = (pad, pad) if isinstance(pad, int) else pad
    ho = (h + 2 * ph - dil * (kh - 1) - 1) // stride + 1
    wo = (w + 2 * pw - dil * (kw - 1) - 1) // stride + 1
    x = torch.randn(2, 4, h, w, generator=g, dtype=torch.float64).requires_grad_()
    weight = torch.randn(3, 4, kh, kw, generator=g, dtype=torch.float64).requires_grad_()
    bias = torch.randn(3, generator=g, dtype=torch.float64).requires_grad_()
    # offsets of several cells: many taps land between pixels, some fully outside the map
    offset = (torch.randn(2, 2 * kh * kw, ho, wo, generator=g, dtype=torch.float64) * 3).requires_grad_()
    mask = torch.rand(2, kh * kw, ho, wo, generator=g, dtype=torch.float64) if with_mask else None
    want = tv_deform_conv2d(x, offset, weight, bias, stride=stride, padding=pad, dilation=dil, mask=mask)
    got = deform_conv2d_sampled(x, offset, weight, bias, stride, pad, dil, mask)
    assert got.shape == want.shape == (2, 3, ho, wo)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    gw = torch.autograd.grad(want.square().sum(), (x, offset, weight, bias))
    gg = torch.autograd.grad(got.square().sum(), (x, offset, weight, bias))
    for name, a, b in zip(("x", "offset", "weight", "bias"), gg, gw):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)


def test_zero_offsets_are_a_plain_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 8, 9, generator=g)
    weight = torch.randn(6, 5, 3, 3, generator=g)
    out = deform_conv2d_sampled(x, torch.zeros(2, 18, 8, 9), weight, None, 1, 1, 1)
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, padding=1), rtol=1e-5, atol=1e-5)


def test_deform_layer_same_output_with_either_implementation():
    torch.manual_seed(3)
    layer = DeformLayer(8, 6, norm="", impl="sampled")
    with torch.no_grad():
        layer.offset.weight.normal_(std=0.3)   # non-zero offsets
    x = torch.randn(2, 8, 7, 9)
    y_s, off_s = layer(x)
    layer.impl = "torchvision"
    y_t, off_t = layer(x)
    assert torch.equal(off_s, off_t) and off_s.abs().max() > 0.1
    torch.testing.assert_close(y_s, y_t, rtol=1e-4, atol=1e-5)
    trunk = DeformConvTrunk(8, 6, num_convs=2, impl="auto")
    assert [m.impl for m in trunk.layers] == ["auto", "auto"]
    assert set(trunk.state_dict()) == set(DeformConvTrunk(8, 6, num_convs=2, impl="torchvision").state_dict())


def test_bad_names_and_shapes_raise():
    assert resolve_deform_impl("auto", torch.device("cpu")) == "sampled"
    assert resolve_deform_impl("auto", torch.device("cuda")) == "torchvision"
    with pytest.raises(ValueError, match="MODEL.ONESTAGE.DEFORM_IMPL"):
        DeformLayer(4, 4, impl="cuda")
    x, w = torch.randn(1, 4, 5, 5), torch.randn(2, 4, 3, 3)
    with pytest.raises(ValueError, match="one offset group"):
        deform_conv2d(x, torch.zeros(1, 36, 5, 5), w, padding=1, impl="sampled")
    with pytest.raises(ValueError, match="does not match"):
        deform_conv2d(x, torch.zeros(1, 18, 4, 4), w, padding=1, impl="sampled")
    with pytest.raises(ValueError, match="one weight group"):
        deform_conv2d(x, torch.zeros(1, 18, 5, 5), torch.randn(2, 2, 3, 3), padding=1, impl="sampled")
