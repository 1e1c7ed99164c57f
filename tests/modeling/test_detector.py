"""Backbones, anchors and the Faster R-CNN detector (tiny R-18-FPN on small images, CPU)."""
import math

import pytest
import torch
from torch import nn

from sgg.checkpoint import CheckpointError
from sgg.config import get_default_config
from sgg.modeling.backbone import ResNetFPN, TimmFPN, build_backbone
from sgg.modeling.pretrained import load_backbone_weights, load_detector_checkpoint
from sgg.modeling.detector import (
    BoxHeads,
    FasterRCNNDetector,
    FPNAnchorGenerator,
    LegacyBoxCoder,
    LevelRoIAlign,
    build_detector,
    detector_postprocess,
    legacy_cell_anchors,
    make_box_coder,
)
from sgg.structures import Boxes, Instances

VG_RATIOS = (0.23232838, 0.63365731, 1.28478321, 3.15089189)
NUM_CLASSES = 6  # 5 object classes + background
STRIDES = [4, 8, 16, 32, 64]


def tiny_cfg(*opts):
    cfg = get_default_config()
    cfg.merge_from_list([
        "MODEL.BACKBONE.CONV_BODY", "R-18-FPN",
        "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 16,
        "MODEL.ROI_BOX_HEAD.MLP_HEAD_DIM", 32,
        "MODEL.ROI_BOX_HEAD.NUM_CLASSES", NUM_CLASSES,
        "MODEL.RPN.PRE_NMS_TOP_N_TRAIN", 300, "MODEL.RPN.PRE_NMS_TOP_N_TEST", 300,
        "MODEL.RPN.FPN_POST_NMS_TOP_N_TRAIN", 100, "MODEL.RPN.FPN_POST_NMS_TOP_N_TEST", 100,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE", 32,
        *opts,
    ])
    return cfg


def tiny_detector(*opts, seed=0):
    torch.manual_seed(seed)
    return build_detector(tiny_cfg(*opts))


def make_inputs(with_empty=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    first = {"image": torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8),
             "height": 128, "width": 192,
             "instances": Instances((64, 96), gt_boxes=Boxes(torch.tensor([[8.0, 6.0, 40.0, 50.0],
                                                                             [30.0, 20.0, 90.0, 60.0]])),
                                    gt_classes=torch.tensor([1, 4]))}
    second = {"image": torch.randint(0, 256, (3, 80, 72), generator=g, dtype=torch.uint8),
              "height": 80, "width": 72,
              "instances": Instances((80, 72), gt_boxes=Boxes(torch.tensor([[10.0, 10.0, 60.0, 70.0]])),
                                     gt_classes=torch.tensor([2]))}
    if with_empty:
        second["instances"] = Instances((80, 72), gt_boxes=Boxes(torch.zeros(0, 4)),
                                        gt_classes=torch.zeros(0, dtype=torch.int64))
    return [first, second]


# ------------------------------------------------------------------------------------------------
# Backbones
# ------------------------------------------------------------------------------------------------
def test_resnet_fpn_levels_channels_and_strides():
    torch.manual_seed(0)
    bb = ResNetFPN(depth=18, out_channels=16, freeze_at=2)
    out = bb(torch.randn(2, 3, 64, 96))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert bb.strides == dict(zip(out, STRIDES))
    for (name, f), s in zip(out.items(), STRIDES):
        assert f.shape == (2, 16, math.ceil(64 / s), math.ceil(96 / s)), name


def test_freeze_at_and_frozen_bn_without_epsilon():
    bb = ResNetFPN(depth=18, out_channels=8, freeze_at=2, bn_eps=0.0)
    frozen = {n.split(".")[1] for n, p in bb.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}
    assert all(p.requires_grad for n, p in bb.named_parameters() if n.startswith(("body.layer2", "fpn.")))
    bn = bb.body.bn1
    assert bn.eps == 0.0
    bn.weight.fill_(2.0)
    bn.bias.fill_(1.0)
    bn.running_mean.fill_(3.0)
    bn.running_var.fill_(4.0)
    x = torch.full((1, 64, 2, 2), 5.0)
    # maskrcnn_benchmark: scale = w / sqrt(var) = 1, bias = b - mean * scale = -2  ->  5 * 1 - 2
    assert torch.allclose(bn(x), torch.full_like(x, 3.0))
    assert ResNetFPN(depth=18, out_channels=8, freeze_at=0).body.conv1.weight.requires_grad


def test_stride_in_1x1_and_resnext_from_the_name():
    cfg = get_default_config()
    cfg.merge_from_list(["MODEL.BACKBONE.CONV_BODY", "X-50-32x4d-FPN", "MODEL.RESNETS.STRIDE_IN_1X1", True,
                         "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 8])
    bb = build_backbone(cfg)
    block = bb.body.layer2[0]
    assert block.conv2.groups == 32 and block.conv1.stride == (2, 2) and block.conv2.stride == (1, 1)
    out = bb(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in out.values()] == [16, 8, 4, 2, 1]
    cfg.merge_from_list(["MODEL.RESNETS.STRIDE_IN_1X1", False])
    block = build_backbone(cfg).body.layer2[0]
    assert block.conv1.stride == (1, 1) and block.conv2.stride == (2, 2)


def test_backbone_weights_from_a_local_file(tmp_path):
    """Build first (random init, no file), then the load step copies torchvision-layout weights;
    errors name the key, the shapes and the setting."""
    from torchvision.models import resnet18

    torch.manual_seed(1)
    ref = resnet18(weights=None)
    path = tmp_path / "r18.pth"
    torch.save(ref.state_dict(), path)
    bb = ResNetFPN(depth=18, out_channels=8)
    assert not torch.equal(bb.body.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    load_backbone_weights(bb, str(path))
    assert torch.equal(bb.body.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    bad = dict(ref.state_dict())
    bad["layer1.0.conv1.weight"] = torch.zeros(3, 3, 3, 3)
    torch.save(bad, path)
    with pytest.raises(ValueError, match=r"layer1\.0\.conv1\.weight.*\(3, 3, 3, 3\).*\(64, 64, 3, 3\)"):
        load_backbone_weights(bb, str(path))
    with pytest.raises(FileNotFoundError, match="MODEL.BACKBONE.WEIGHTS.*local files only"):
        load_backbone_weights(bb, str(tmp_path / "missing.pth"))


def test_timm_backbone_weights_through_the_load_step(tmp_path):
    """timm backbones are built without weights; the load step has timm read the local file (its own
    filtering) and copies them in, without moving the global RNG."""
    import timm

    torch.manual_seed(3)
    ref = timm.create_model("resnet18", pretrained=False)
    path = tmp_path / "timm_r18.pth"
    torch.save(ref.state_dict(), path)
    cfg = get_default_config()
    cfg.merge_from_list(["MODEL.BACKBONE.CONV_BODY", "timm:resnet18-FPN", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 8])
    bb = build_backbone(cfg)
    rng = torch.get_rng_state()
    load_backbone_weights(bb, str(path))
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.equal(bb.body.layer3[1].conv2.weight, ref.layer3[1].conv2.weight)
    assert torch.equal(bb.body.bn1.running_var, ref.bn1.running_var)


def test_timm_backbone_levels_and_freeze():
    cfg = get_default_config()
    cfg.merge_from_list(["MODEL.BACKBONE.CONV_BODY", "timm:resnet18-FPN", "MODEL.RESNETS.BACKBONE_OUT_CHANNELS", 8,
                         "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 2])
    bb = build_backbone(cfg)
    assert isinstance(bb, TimmFPN)
    out = bb(torch.randn(1, 3, 64, 96))
    assert list(out) == ["0", "1", "2", "3", "pool"]
    assert [tuple(f.shape[-2:]) for f in out.values()] == [(16, 24), (8, 12), (4, 6), (2, 3), (1, 2)]
    frozen = {n.split(".")[1].split("_")[0] for n, p in bb.named_parameters() if not p.requires_grad}
    assert frozen == {"conv1", "layer1"}  # (its batch norms are frozen buffers, not parameters)


def test_timm_channels_last_swin_is_permuted():
    bb = TimmFPN("swin_tiny_patch4_window7_224", out_channels=8,
                 model_kwargs=dict(embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)))
    out = bb(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape) for f in out.values()] == [(1, 8, 16, 24), (1, 8, 8, 12), (1, 8, 4, 6), (1, 8, 2, 3),
                                                      (1, 8, 1, 2)]


def test_unknown_backbone_lists_the_accepted_forms():
    cfg = get_default_config()
    cfg.merge_from_list(["MODEL.BACKBONE.CONV_BODY", "R-50-C4"])
    with pytest.raises(KeyError, match="R-<depth>-FPN"):
        build_backbone(cfg)


# ------------------------------------------------------------------------------------------------
# Anchors, box coding, pooler levels
# ------------------------------------------------------------------------------------------------
def test_anchors_one_size_per_level_with_vg_ratios():
    gen = FPNAnchorGenerator((32, 64, 128, 256, 512), VG_RATIOS, STRIDES)
    assert gen.num_anchors_per_location() == [4] * 5
    for size, cell in zip((32, 64, 128, 256, 512), gen.cell_anchors):
        w, h = cell[:, 2] - cell[:, 0], cell[:, 3] - cell[:, 1]
        assert torch.allclose((w * h).sqrt(), torch.full((4,), float(size)), rtol=0.03)
        assert torch.allclose(h / w, torch.tensor(VG_RATIOS), rtol=0.08)
        assert torch.allclose(cell[:, :2] + cell[:, 2:], torch.zeros(4, 2), atol=1.0)  # centred on 0
    # Fixed strides even where image / feature size would say otherwise (96 / 2 = 48 on 'pool').
    from torchvision.models.detection.image_list import ImageList

    feats = [torch.zeros(1, 1, math.ceil(96 / s), math.ceil(96 / s)) for s in STRIDES]
    anchors = gen(ImageList(torch.zeros(1, 3, 96, 96), [(96, 96)]), feats)[0]
    counts = [f.shape[-2] * f.shape[-1] * 4 for f in feats]
    assert anchors.shape == (sum(counts), 4) and anchors.dtype == torch.float32
    pool = anchors[-counts[-1]:]
    centres = ((pool[:, 0] + pool[:, 2]) / 2).unique()
    assert torch.allclose(centres, torch.tensor([0.0, 64.0]), atol=1.0)


def test_legacy_anchors_match_maskrcnn_benchmark_by_hand():
    cell = legacy_cell_anchors(4, (32,), VG_RATIOS)
    # base 4x4 box at 1.5; ratio 0.2323: w = round(sqrt(16 / r)) = 8, h = round(8 r) = 2; x8 -> 64 x 16
    assert cell[0].tolist() == [-30.0, -6.0, 33.0, 9.0]
    gen = FPNAnchorGenerator((32, 64, 128, 256, 512), VG_RATIOS, STRIDES, legacy=True)
    assert torch.equal(gen.cell_anchors[0], cell)


def test_box_coders_round_trip_and_legacy_width():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 40.0], [0.0, 0.0, 9.0, 9.0]])
    gt = torch.tensor([[12.0, 18.0, 60.0, 45.0], [1.0, 2.0, 8.0, 11.0]])
    for legacy in (False, True):
        coder = make_box_coder((10.0, 10.0, 5.0, 5.0), legacy)
        deltas = coder.encode_single(gt, boxes)
        assert torch.allclose(coder.decode_single(deltas, boxes), gt, atol=1e-4)
    legacy = LegacyBoxCoder((1.0, 1.0, 1.0, 1.0))
    # [0, 0, 9, 9] is 10 px wide in the "+1" convention: doubling gives [-5, -5, 14, 14]
    out = legacy.decode_single(torch.tensor([[0.0, 0.0, math.log(2), math.log(2)]]), boxes[1:])
    assert torch.allclose(out, torch.tensor([[-5.0, -5.0, 14.0, 14.0]]))


def test_pooler_level_assignment_and_shape():
    pool = LevelRoIAlign(["0", "1", "2", "3"], 7, 2, (0.25, 0.125, 0.0625, 0.03125))
    boxes = torch.tensor([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 56, 56], [0, 0, 5, 5], [0, 0, 900, 900.0]])
    assert pool.map_boxes_to_levels(boxes).tolist() == [2, 1, 0, 0, 3]
    feats = {str(i): torch.randn(2, 4, 64 // 2 ** i, 64 // 2 ** i) for i in range(4)}
    out = pool(feats, [boxes[:2], boxes[2:]], [(256, 256), (256, 256)])
    assert out.shape == (5, 4, 7, 7)
    # the box of image 1 on level 0 is pooled from image 1's map
    from torchvision.ops import roi_align

    ref = roi_align(feats["0"], torch.tensor([[1, 0, 0, 56, 56.0]]), 7, 0.25, 2, aligned=True)
    assert torch.allclose(out[2], ref[0])


# ------------------------------------------------------------------------------------------------
# The detector
# ------------------------------------------------------------------------------------------------
def test_preprocess_bgr255_and_padding():
    model = tiny_detector()
    img = torch.zeros(3, 50, 70, dtype=torch.uint8)
    img[:, 0, 0] = torch.tensor([10, 20, 30], dtype=torch.uint8)  # RGB
    images, sizes = model.preprocess([{"image": img}])
    assert images.shape == (1, 3, 64, 96) and sizes == [(50, 70)]
    # BGR 0..255 minus SGB's mean, std 1
    assert torch.allclose(images[0, :, 0, 0], torch.tensor([30 - 102.9801, 20 - 115.9465, 10 - 122.7717]))
    assert images[0, :, 50:, :].abs().sum() == 0 and images[0, :, :, 70:].abs().sum() == 0
    rgb = tiny_detector("INPUT.TO_BGR255", False, "INPUT.PIXEL_MEAN", [0.5, 0.5, 0.5],
                        "INPUT.PIXEL_STD", [0.25, 0.25, 0.5])
    images, _ = rgb.preprocess([{"image": img}])
    expected = (torch.tensor([10, 20, 30]) / 255.0 - 0.5) / torch.tensor([0.25, 0.25, 0.5])
    assert torch.allclose(images[0, :, 0, 0], expected)


def test_training_losses_are_finite_and_give_gradients():
    model = tiny_detector()
    model.train()
    losses = model(make_inputs())
    assert set(losses) == {"loss_objectness", "loss_rpn_box_reg", "loss_classifier", "loss_box_reg"}
    assert all(v.dim() == 0 and torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()
    for name in ("rpn.head.cls_logits.weight", "rpn.head.bbox_pred.weight", "roi_heads.box_head.fc6.weight",
                 "roi_heads.box_predictor.cls_score.weight", "roi_heads.box_predictor.bbox_pred.weight",
                 "backbone.fpn.layer_blocks.0.0.weight", "backbone.body.layer4.0.conv1.weight"):
        g = dict(model.named_parameters())[name].grad
        assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0, name
    assert dict(model.named_parameters())["backbone.body.conv1.weight"].grad is None  # frozen stem


def test_image_without_gt_boxes_trains():
    model = tiny_detector()
    model.train()
    losses = model(make_inputs(with_empty=True))
    assert all(torch.isfinite(v) for v in losses.values())
    sum(losses.values()).backward()


def test_group_norm_backbone_for_training_from_scratch():
    model = tiny_detector("MODEL.DETECTOR.BACKBONE_NORM", "GN", "MODEL.FPN.USE_GN", True,
                          "MODEL.BACKBONE.FREEZE_CONV_BODY_AT", 0)
    assert isinstance(model.backbone.body.bn1, nn.GroupNorm)
    model.train()
    losses = model(make_inputs())
    assert all(torch.isfinite(v) for v in losses.values())


def test_eval_returns_capped_single_label_detections():
    model = tiny_detector("MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 10)
    model.eval()
    with torch.no_grad():
        out = model(make_inputs())
    assert len(out) == 2
    for inst, size in zip(out, [(64, 96), (80, 72)]):
        assert isinstance(inst, Instances) and inst.image_size == size
        assert 0 < len(inst) <= 10
        assert isinstance(inst.boxes, Boxes)
        assert inst.logits.shape == (len(inst), NUM_CLASSES)
        assert inst.boxes_per_cls.shape == (len(inst), NUM_CLASSES, 4)
        assert len(torch.unique(inst.boxes.tensor, dim=0)) == len(inst)  # no box twice
        assert inst.labels.dtype == torch.int64 and ((inst.labels >= 1) & (inst.labels < NUM_CLASSES)).all()
        assert (inst.scores > 0.01).all() and (inst.scores[:-1] >= inst.scores[1:]).all()
        # the label is the best class of its box's own softmax among those kept: its score is its prob
        probs = inst.logits.softmax(-1)
        assert torch.allclose(probs[torch.arange(len(inst)), inst.labels], inst.scores, atol=1e-6)
        b = inst.boxes.tensor
        assert (b[:, 0] >= 0).all() and (b[:, 2] <= size[1]).all() and (b[:, 3] <= size[0]).all()
    # detect() gives inference results even when the module is in training mode
    model.train()
    with torch.no_grad():
        images, sizes = model.preprocess(make_inputs())
        dets = model.detect(images, sizes, model.backbone(images))
    assert all(isinstance(d, Instances) and len(d) <= 10 for d in dets)
    orig = detector_postprocess(out[0], 128, 192)
    assert orig.image_size == (128, 192)
    assert torch.allclose(orig.boxes.tensor, out[0].boxes.tensor * 2)


def _heads(**kw):
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    return BoxHeads(LevelRoIAlign(), TwoMLPHead(4, 4), FastRCNNPredictor(4, 4), **kw)


def test_postprocess_nms_then_one_label_per_box_by_hand():
    heads = _heads(score_thresh=0.05, nms_thresh=0.3, detections_per_img=80)
    # 3 proposals x 4 classes (0 = bg); boxes_per_cls identical for every class.
    boxes = torch.tensor([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60.0]])[:, None].expand(3, 4, 4)
    scores = torch.tensor([[0.1, 0.5, 0.3, 0.1],     # p0: best class 1
                           [0.1, 0.45, 0.40, 0.05],  # p1: class 1 suppressed by p0 -> keeps class 2 (0.40)
                           [0.1, 0.2, 0.6, 0.1]])    # p2: far away -> class 2
    logits = scores.log()
    inst = heads._filter(logits, boxes.clone(), scores, (100, 100))
    # p1's class 2 (0.40) beats p0's class 2 (0.30) and suppresses it; p0 keeps class 1 anyway
    assert inst.labels.tolist() == [2, 1, 2]
    assert torch.allclose(inst.scores, torch.tensor([0.6, 0.5, 0.40]))
    assert torch.equal(inst.logits, logits[[2, 0, 1]])
    # without the duplicate filter a box may carry several labels
    multi = _heads(score_thresh=0.05, nms_thresh=0.3, nms_filter_duplicates=False)
    inst = multi._filter(logits, boxes.clone(), scores, (100, 100))
    assert len(inst) == 6  # p0: classes 1, 3; p1: class 2; p2: classes 1, 2, 3
    capped = _heads(score_thresh=0.05, nms_thresh=0.3, detections_per_img=2)
    assert capped._filter(logits, boxes.clone(), scores, (100, 100)).scores.tolist() == pytest.approx([0.6, 0.5])


def test_checkpoint_round_trip_gives_identical_detections(tmp_path):
    model = tiny_detector(seed=0).eval()
    path = tmp_path / "det.pth"
    torch.save({"model": model.state_dict(), "iteration": 7}, path)
    other = tiny_detector(seed=1).eval()
    report = load_detector_checkpoint(other, str(path))
    assert not report["missing"] and not report["unexpected"]
    assert len(report["loaded"]) == len(model.state_dict())
    inputs = make_inputs()
    with torch.no_grad():
        a, b = model(inputs), other(inputs)
    for x, y in zip(a, b):
        assert torch.equal(x.boxes.tensor, y.boxes.tensor) and torch.equal(x.labels, y.labels)
        assert torch.equal(x.scores, y.scores)
    # DDP prefix and a sub-model prefix
    torch.save({"model": {"module.detector." + k: v for k, v in model.state_dict().items()}}, path)
    assert not load_detector_checkpoint(other, str(path), prefix="detector.")["missing"]


def test_checkpoint_shape_mismatch_names_the_key(tmp_path):
    model = tiny_detector()
    sd = model.state_dict()
    sd["roi_heads.box_predictor.cls_score.weight"] = torch.zeros(NUM_CLASSES + 1, 32)
    path = tmp_path / "bad.pth"
    torch.save({"model": sd}, path)
    with pytest.raises(CheckpointError, match=r"roi_heads\.box_predictor\.cls_score\.weight.*\(7, 32\).*\(6, 32\)"):
        load_detector_checkpoint(model, str(path))


def test_legacy_options_build_and_run():
    model = tiny_detector("MODEL.DETECTOR.LEGACY_BOX_CODING", True, "MODEL.DETECTOR.ALIGNED_ROI", False,
                          "MODEL.DETECTOR.FROZEN_BN_EPS", 0.0)
    assert isinstance(model, FasterRCNNDetector)
    assert model.box_roi_pool.aligned is False and model.box_roi_pool.legacy
    assert isinstance(model.rpn.box_coder, LegacyBoxCoder) and isinstance(model.roi_heads.box_coder, LegacyBoxCoder)
    assert model.backbone.body.bn1.eps == 0.0
    model.train()
    assert all(torch.isfinite(v) for v in model(make_inputs()).values())
    model.eval()
    with torch.no_grad():
        out = model(make_inputs())
    assert all((o.boxes.tensor[:, 2] <= 95).all() for o in out[:1])  # clipped to width - 1


def test_num_classes_override_and_exposed_parts():
    torch.manual_seed(0)
    model = build_detector(tiny_cfg(), num_classes=13)
    assert model.num_classes == 13
    assert model.box_predictor.bbox_pred.out_features == 13 * 4
    assert model.box_head.fc6.in_features == 16 * 7 * 7 and model.box_head.fc7.out_features == 32
    from torchvision.ops import MultiScaleRoIAlign

    assert isinstance(model.box_roi_pool, MultiScaleRoIAlign)


def test_channels_last_detector_gives_the_same_detections():
    ref = tiny_detector("MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 10).eval()
    cl = tiny_detector("MODEL.ROI_HEADS.DETECTIONS_PER_IMG", 10, "MODEL.DETECTOR.CHANNELS_LAST", True).eval()
    assert cl.channels_last and not ref.channels_last
    assert cl.backbone.body.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    images, _ = cl.preprocess(make_inputs())
    assert images.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        a, b = ref(make_inputs()), cl(make_inputs())
    for x, y in zip(a, b):
        assert torch.equal(x.labels, y.labels)
        assert torch.allclose(x.boxes.tensor, y.boxes.tensor, atol=1e-3)
        assert torch.allclose(x.scores, y.scores, atol=1e-5)
