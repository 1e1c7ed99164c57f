"""One-stage model network: stride-16 backbones and the composite-field heads (CPU, tiny)."""
import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models import resnet as tv_resnet

from sgg.modeling.pretrained import load_backbone_weights
from sgg.modeling.onestage.backbone import DilatedResNet, TimmFPN16, build_onestage_backbone
from sgg.modeling.onestage.fields import (
    OBJECT_FIELDS,
    RELATION_FIELDS,
    CompositeFieldNet,
    DeformLayer,
    FourierPositionEncoding,
    TransformerTrunk,
    prior_bias,
)

H, W = 64, 96  # -> 4 x 6 grid at stride 16
HG, WG = 4, 6
C, P = 5, 3

TINY_SWIN = dict(embed_dim=16, depths=(2, 2, 2, 2), num_heads=(1, 1, 1, 1))  # depth 2: shifted windows too
TRUNKS = {
    "conv": dict(trunk="conv", width=16, num_convs=2),
    "conv_bn": dict(trunk="conv", width=16, num_convs=3, norm="BN"),
    "deform": dict(trunk="deform", width=16, num_convs=2),
    "transformer": dict(trunk="transformer", width=32, num_layers=2, num_heads=4, num_freqs=4),
}


def _backbone(kind: str):
    if kind == "R-18":
        return build_onestage_backbone("R-18")
    return build_onestage_backbone("timm:swin_tiny_patch4_window7_224", out_channels=16, **TINY_SWIN)


def _net(kind="R-18", obj="conv", rel="conv"):
    return CompositeFieldNet(_backbone(kind), C, P, obj_head_kwargs=TRUNKS[obj], rel_head_kwargs=TRUNKS[rel])


def _field_loss(out):
    return sum(out[k].float().square().mean() for k in OBJECT_FIELDS + RELATION_FIELDS)


# ------------------------------------------------------------------------------------------------
# Backbones
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("depth", [18, 50])
def test_dilated_resnet_stride_16_and_torchvision_parameter_shapes(depth):
    torch.manual_seed(0)
    bb = DilatedResNet(depth=depth)
    assert bb.stride == 16 and bb.out_channels == (512 if depth == 18 else 2048)
    out = bb(torch.randn(1, 3, H, W))
    assert out.shape == (1, bb.out_channels, HG, WG)
    assert bb(torch.randn(1, 3, 72, 100)).shape[-2:] == (5, 7)  # ceil(H / 16): the encoder's grid
    ref = getattr(tv_resnet, f"resnet{depth}")().state_dict()
    ref = {k: tuple(v.shape) for k, v in ref.items() if not k.startswith("fc.")}
    assert {k: tuple(v.shape) for k, v in bb.state_dict().items()} == ref
    # the stage that used to stride keeps dilation 1; every 3x3 conv after it is dilated by 2
    l4 = bb.layer4
    first3x3 = l4[0].conv1 if depth == 18 else l4[0].conv2
    assert first3x3.stride == (1, 1) and first3x3.dilation == (1, 1)
    assert l4[0].downsample[0].stride == (1, 1)
    assert l4[-1].conv2.dilation == (2, 2) and l4[-1].conv2.padding == (2, 2)
    assert bb.layer3[0].conv1.stride == (2, 2) or bb.layer3[0].conv2.stride == (2, 2)


def test_dilated_resnet_loads_torchvision_weights_and_freezes(tmp_path):
    torch.manual_seed(0)
    ref = tv_resnet.resnet18()
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = DilatedResNet(depth=18, norm="FrozenBN", freeze_at=2)
    load_backbone_weights(bb, str(path), "MODEL.ONESTAGE.BACKBONE_WEIGHTS")  # the load step
    assert torch.equal(bb.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    assert torch.equal(bb.bn1.running_var, ref.bn1.running_var)
    frozen = {n.split(".")[0] for n, p in bb.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # (FrozenBN has buffers, not parameters)
    with pytest.raises(FileNotFoundError, match="MODEL.ONESTAGE.BACKBONE_WEIGHTS"):
        load_backbone_weights(bb, str(tmp_path / "missing.pth"), "MODEL.ONESTAGE.BACKBONE_WEIGHTS")


def test_timm_fpn16_swin_and_resnet():
    torch.manual_seed(0)
    swin = _backbone("swin")
    assert isinstance(swin, TimmFPN16) and swin._channels_last and swin.stride == 16
    assert swin(torch.randn(2, 3, H, W)).shape == (2, 16, HG, WG)
    assert swin(torch.randn(1, 3, 128, 128)).shape == (1, 16, 8, 8)  # other size, same model
    res = build_onestage_backbone("timm:resnet18", out_channels=8)
    assert not res._channels_last and res(torch.randn(1, 3, H, W)).shape == (1, 8, HG, WG)


def test_timm_fpn16_output_norm():
    """FPN_NORM "BN": the FPN output is batch-normalised (unit scale in train mode, whatever the
    weights' scale); "" keeps the plain FPN; a bad name names the config key."""
    torch.manual_seed(0)
    plain = build_onestage_backbone("timm:resnet18", out_channels=8)
    normed = build_onestage_backbone("timm:resnet18", out_channels=8, norm="BN")
    assert plain.norm is None and isinstance(normed.norm, torch.nn.BatchNorm2d)
    assert set(normed.state_dict()) - set(plain.state_dict()) == {
        "norm.weight", "norm.bias", "norm.running_mean", "norm.running_var", "norm.num_batches_tracked"}
    with torch.no_grad():
        normed.output.weight.mul_(100.0)   # the blow-up seen when training from scratch
        y = normed(torch.randn(4, 3, H, W))
    assert y.shape == (4, 8, HG, WG)
    assert y.mean(dim=(0, 2, 3)).abs().max() < 1e-4
    assert (y.var(dim=(0, 2, 3), unbiased=False) - 1).abs().max() < 1e-2
    with pytest.raises(ValueError, match="MODEL.ONESTAGE.FPN_NORM"):
        build_onestage_backbone("timm:resnet18", out_channels=8, norm="LN")


def test_build_onestage_backbone_names():
    assert isinstance(build_onestage_backbone("R-34", norm="GN"), DilatedResNet)
    with pytest.raises(KeyError, match="R-50"):
        build_onestage_backbone("R-152")
    with pytest.raises(KeyError, match="timm:"):
        build_onestage_backbone("R-50-FPN")


# ------------------------------------------------------------------------------------------------
# Heads and the composite-field net
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["R-18", "swin"])
@pytest.mark.parametrize("trunk", list(TRUNKS))
def test_output_keys_and_shapes(kind, trunk):
    torch.manual_seed(0)
    net = _net(kind, trunk, trunk)
    out = net(torch.randn(2, 3, H, W))
    assert set(out) == set(OBJECT_FIELDS + RELATION_FIELDS) | {"offsets", "features"}
    shapes = {"obj_logits": (2, C, HG, WG), "obj_offset": (2, 2, HG, WG), "obj_size": (2, 2, HG, WG),
              "rel_logits": (2, P, HG, WG), "rel_subj": (2, P, 2, HG, WG), "rel_obj": (2, P, 2, HG, WG),
              "rel_scale": (2, P, 2, HG, WG)}
    for k, shape in shapes.items():
        assert tuple(out[k].shape) == shape, k
        assert out[k].dtype == torch.float32 and torch.isfinite(out[k]).all(), k
    assert out["features"].shape == (2, net.backbone.out_channels, HG, WG)
    n_deform = 4 if trunk == "deform" else 0
    assert len(out["offsets"]) == n_deform
    assert all(o.shape == (2, 18, HG, WG) for o in out["offsets"])


def test_logit_bias_prior():
    net = _net("R-18", "conv", "transformer")
    assert prior_bias(0.1) == pytest.approx(-2.1972, abs=1e-4)
    assert torch.allclose(net.obj_head.logits.bias, torch.full((C,), -2.1972), atol=1e-4)
    assert torch.allclose(net.rel_head.logits.bias, torch.full((P,), -2.1972), atol=1e-4)
    for head in (net.obj_head, net.rel_head):  # the other output convs start at 0 bias
        convs = [head.offset, head.size] if head is net.obj_head else [head.regression]
        assert all(float(c.bias.detach().abs().max()) == 0.0 for c in convs)
    out = net.eval()(torch.randn(1, 3, H, W))
    assert abs(out["obj_logits"].sigmoid().mean().item() - 0.1) < 0.03


def test_deform_offsets_zero_at_init_and_trained_by_the_field_loss():
    torch.manual_seed(0)
    net = _net("R-18", "deform", "deform")
    out = net(torch.randn(2, 3, H, W))
    for o in out["offsets"]:
        assert float(o.detach().abs().max()) == 0.0
        o.retain_grad()
    _field_loss(out).backward()
    for o in out["offsets"]:
        assert o.grad is not None and float(o.grad.abs().max()) > 0
    layers = list(net.obj_head.trunk.layers) + list(net.rel_head.trunk.layers)
    assert len(layers) == 4
    for layer in layers:
        assert float(layer.offset.weight.grad.abs().max()) > 0


def test_deform_layer_at_init_is_a_plain_conv():
    torch.manual_seed(0)
    layer = DeformLayer(4, 6)
    x = torch.randn(1, 4, 5, 7)
    y, offset = layer(x)
    assert offset.shape == (1, 18, 5, 7)
    ref = F.relu(F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1))
    assert torch.allclose(y, ref, atol=1e-5)


def test_gradient_reaches_the_backbone():
    torch.manual_seed(0)
    for kind in ("R-18", "swin"):
        net = _net(kind, "conv", "transformer")
        _field_loss(net(torch.randn(2, 3, H, W))).backward()
        first = next(p for p in net.backbone.parameters() if p.requires_grad)
        assert first.grad is not None and float(first.grad.abs().max()) > 0, kind


def test_transformer_trunk_is_position_aware():
    torch.manual_seed(0)
    pe = FourierPositionEncoding(8, num_freqs=4)
    feats = pe.features(HG, WG, torch.device("cpu"))
    assert feats.shape == (HG * WG, 16)
    assert torch.cdist(feats, feats).add(torch.eye(HG * WG)).min() > 1e-3  # every cell distinct
    trunk = TransformerTrunk(8, width=32, num_layers=2, num_heads=4, num_freqs=4).eval()
    y, offsets = trunk(torch.ones(1, 8, HG, WG))  # constant input: only the position varies
    assert y.shape == (1, 32, HG, WG) and offsets == []
    cells = y.flatten(2)[0].T  # [cells, width]
    assert torch.cdist(cells, cells).add(torch.eye(HG * WG)).min() > 1e-3


def test_state_dict_round_trip_reproduces_outputs():
    torch.manual_seed(0)
    net = _net("R-18", "deform", "conv_bn").eval()
    x = torch.randn(1, 3, H, W)
    with torch.no_grad():
        net(x)  # (eval: BN running statistics untouched, but exercise buffers anyway)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
        ref = net(x)
    torch.manual_seed(1)
    other = _net("R-18", "deform", "conv_bn").eval()
    other.load_state_dict(net.state_dict())
    with torch.no_grad():
        out = other(x)
    for k in OBJECT_FIELDS + RELATION_FIELDS + ("features",):
        assert torch.equal(out[k], ref[k]), k


def test_bf16_autocast_on_cpu():
    torch.manual_seed(0)
    net = _net("R-18", "deform", "transformer")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(torch.randn(1, 3, H, W))
        loss = _field_loss(out)
    loss.backward()
    assert all(out[k].dtype == torch.float32 for k in OBJECT_FIELDS + RELATION_FIELDS)
    assert all(o.dtype == torch.float32 and o.shape == (1, 18, HG, WG) for o in out["offsets"])
    assert math.isfinite(loss.item())
    assert float(net.backbone.conv1.weight.grad.abs().max()) > 0
