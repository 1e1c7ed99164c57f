"""CausalAnalysisPredictor (tiny sizes, CPU): shapes, gradients and the modules built per context
layer / fusion / protocol, the exact parameter count, the moving averages (training only, in the
state dict), the counterfactual identities of the spec (PredCls NIE == 0 and TE == TDE; sum-fusion
TDE independent of the union feature; TDE == 0 when the inputs equal their averages), the effects
against hand computations, VTransE's label quirk and its option, and a two-stage train step + TDE
evaluation through ``build_sgg_model``."""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgg.config import get_default_config
from sgg.modeling.relation import RELATION_PREDICTOR_REGISTRY
from sgg.modeling.relation.predictors import CausalAnalysisPredictor
from sgg.modeling.relation.predictors.causal import box_info, box_pair_info
from sgg.structures import Boxes, Instances

try:
    from .two_stage_fixtures import DATASET, make_synthvg, tiny_config
except ImportError:  # tests/ is not a package
    from two_stage_fixtures import DATASET, make_synthvg, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

C1, P1, D, H, POOL, E = 5, 4, 16, 8, 12, 6
MODES = ("predcls", "sgcls", "sgdet")
CONTEXTS = ("motifs", "vctree", "vtranse")
FUSIONS = ("sum", "gate")
R_AVG = 0.0005


def _pred_dist(seed=0):
    rng = np.random.default_rng(seed)
    return np.log(rng.random((C1, C1, P1)).astype(np.float32) + 1e-3)


def _predictor(context, mode, fusion="sum", **kw):
    args = dict(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                embed_dim=E, mode=mode, pred_dist=_pred_dist(), context_layer=context, fusion_type=fusion)
    args.update(kw)
    return CausalAnalysisPredictor(**args)


def _image(n, seed, size=(60, 80)):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    return Instances(size, boxes=Boxes(torch.cat([xy, xy + wh], 1)),
                     labels=torch.randint(1, C1, (n,), generator=g), logits=torch.randn(n, C1, generator=g))


def _pairs(n):
    return torch.stack(torch.where(~torch.eye(n, dtype=torch.bool)), 1)


def _inputs(props, seed=0, union_dim=D):
    g = torch.Generator().manual_seed(seed)
    n = sum(len(p) for p in props)
    pairs = [_pairs(len(p)) for p in props]
    m = sum(len(r) for r in pairs)
    rel_labels = [torch.randint(0, P1, (len(r),), generator=g) for r in pairs]
    return torch.randn(n, D, generator=g), pairs, torch.randn(m, union_dim, generator=g), rel_labels


def _labels(props):
    return torch.cat([p.labels for p in props])


def _average_names(pred):
    return [n for n, _ in pred.named_buffers() if "untreated" in n or n == "avg_post_ctx"]


@torch.no_grad()
def _randomise_averages(pred, seed=0):
    """Averages as after training (non-zero), so the counterfactual differs from the factual."""
    g = torch.Generator().manual_seed(seed)
    for name in _average_names(pred):
        buf = pred.get_buffer(name)
        buf.copy_(torch.randn(buf.shape, generator=g))
    pred.untreated_spt.abs_().mul_(0.3)  # a plausible normalised box code


def _eval(pred, x, props, pairs, union, effect, mode):
    pred.effect_type = effect
    with torch.no_grad():
        return pred(x, props, pairs, union, obj_labels=_labels(props) if mode == "predcls" else None)


# ------------------------------------------------------------------------------ construction
def test_registered_and_checks_arguments():
    assert RELATION_PREDICTOR_REGISTRY.get("CausalAnalysisPredictor") is CausalAnalysisPredictor
    assert CausalAnalysisPredictor.uses_rel_labels and CausalAnalysisPredictor.uses_union_features
    with pytest.raises(ValueError):
        _predictor("motifs", "detection")
    for bad in (dict(context="lstm"), dict(fusion="product"), dict(effect_type="tde"),
                dict(vtranse_labels="other")):
        args = dict(context="motifs", mode="predcls")
        args.update(bad)
        with pytest.raises(ValueError, match="must be one of"):
            _predictor(**args)
    with pytest.raises(ValueError, match="word_vectors must have shape"):
        _predictor("vtranse", "sgcls", word_vectors=torch.zeros(C1, E))


def test_effect_without_effect_analysis_warns_and_gives_the_factual_logits(caplog):
    torch.manual_seed(0)
    with caplog.at_level(logging.WARNING):
        pred = _predictor("motifs", "sgcls", effect_type="TDE", effect_analysis=False).eval()
    assert "without EFFECT_ANALYSIS" in caplog.text
    _randomise_averages(pred)
    props = [_image(4, 1)]
    x, pairs, union, _ = _inputs(props)
    tde = _eval(pred, x, props, pairs, union, "TDE", "sgcls").rel_logits[0]
    none = _eval(pred, x, props, pairs, union, "none", "sgcls").rel_logits[0]
    assert torch.equal(tde, none)


def test_from_config_and_word_vectors():
    cfg = get_default_config()
    rh = cfg.MODEL.ROI_RELATION_HEAD
    rh.CONTEXT_HIDDEN_DIM, rh.CONTEXT_POOLING_DIM, rh.EMBED_DIM, rh.CONTEXT_OBJ_LAYER = 12, 20, 8, 2
    rh.CAUSAL.CONTEXT_LAYER, rh.CAUSAL.FUSION_TYPE, rh.CAUSAL.EFFECT_TYPE = "vctree", "gate", "NIE"
    rh.CAUSAL.EFFECT_ANALYSIS, rh.CAUSAL.SPATIAL_FOR_VISION = True, False
    rh.VCTREE.TREE_SCORE = "paper"
    pred = CausalAnalysisPredictor.from_config(cfg, in_channels=D, union_dim=10, num_obj_classes=C1,
                                               num_rel_classes=P1, mode="sgdet", rel_classes=["a"] * P1)
    assert pred.hidden_dim == 12 and pred.pooling_dim == 20 and pred.context_type == "vctree"
    assert pred.fusion_type == "gate" and pred.effect_type == "NIE" and pred.effect_analysis
    assert not pred.spatial_for_vision and not hasattr(pred, "spt_emb") and hasattr(pred, "ctx_gate_fc")
    assert pred.context_layer.tree_score == "paper" and len(pred.context_layer.obj_ctx_rnn.multi_layer_lstm) == 2
    assert pred.vis_compress.in_features == 10 and pred.untreated_feat.shape == (10,)
    # the config defaults are SGB's defaults.py: motifs, sum, no effect, no spatial embedding
    pred = CausalAnalysisPredictor.from_config(get_default_config(), in_channels=D, union_dim=D,
                                               num_obj_classes=C1, num_rel_classes=P1, mode="predcls")
    assert pred.context_type == "motifs" and pred.fusion_type == "sum" and pred.effect_type == "none"
    assert not pred.spatial_for_vision and not pred.effect_analysis
    cfg = get_default_config()
    cfg.MODEL.ROI_RELATION_HEAD.CAUSAL.SEPARATE_SPATIAL = True
    # the spatial part is MLP_HEAD_DIM (union_dim) wide and multiplies the CONTEXT_POOLING_DIM context
    with pytest.raises(ValueError, match="SEPARATE_SPATIAL.*CONTEXT_POOLING_DIM 4096.*MLP_HEAD_DIM \\(16\\)"):
        CausalAnalysisPredictor.from_config(cfg, in_channels=D, union_dim=D, num_obj_classes=C1,
                                            num_rel_classes=P1, mode="predcls")
    cfg.MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM = D
    pred = CausalAnalysisPredictor.from_config(cfg, in_channels=D, union_dim=D, num_obj_classes=C1,
                                               num_rel_classes=P1, mode="predcls")
    assert pred.separate_spatial


@pytest.mark.parametrize("context,mode,labels", [("motifs", "sgdet", "sgb"), ("vctree", "sgcls", "sgb"),
                                                 ("vtranse", "sgcls", "sgb"), ("vtranse", "predcls", "protocol")])
def test_word_vectors(context, mode, labels):
    pred = _predictor(context, mode, vtranse_labels=labels)
    names, dim = pred.word_vector_specs()["obj"]
    assert names[0] == "start" and len(names) == C1 + 1 and dim == E
    vec = torch.randn(C1 + 1, E)
    pred.set_word_vectors(obj=vec)
    ctx = pred.context_layer
    assert torch.equal(ctx.obj_embed2.weight, vec[1:])
    assert hasattr(ctx, "obj_embed1") == (context != "vtranse" or labels == "sgb")
    if hasattr(ctx, "obj_embed1"):
        assert torch.equal(ctx.obj_embed1.weight, vec[1:])
    if hasattr(ctx, "decoder_rnn"):
        assert torch.equal(ctx.decoder_rnn.obj_embed.weight, vec)
    built = _predictor(context, mode, vtranse_labels=labels, word_vectors=vec)
    assert torch.equal(built.context_layer.obj_embed2.weight, vec[1:])


# ------------------------------------------------------------------------------ pair box code
def _sgb_get_box_info(boxes, need_norm=True, size=None):
    """SGB's utils_relation.get_box_info (``size`` = BoxList.size = (W, H))."""
    wh = boxes[:, 2:] - boxes[:, :2] + 1.0
    center_box = torch.cat((boxes[:, :2] + 0.5 * wh, wh), 1)
    box_info = torch.cat((boxes, center_box), 1)
    if need_norm:
        box_info = box_info / float(max(max(size[0], size[1]), 100))
    return box_info


def _sgb_get_box_pair_info(box1, box2):
    """SGB's utils_relation.get_box_pair_info."""
    unionbox = box1[:, :4].clone()
    unionbox[:, 0] = torch.min(box1[:, 0], box2[:, 0])
    unionbox[:, 1] = torch.min(box1[:, 1], box2[:, 1])
    unionbox[:, 2] = torch.max(box1[:, 2], box2[:, 2])
    unionbox[:, 3] = torch.max(box1[:, 3], box2[:, 3])
    union_info = _sgb_get_box_info(unionbox, need_norm=False)
    inter = box1[:, :4].clone()
    inter[:, 0] = torch.max(box1[:, 0], box2[:, 0])
    inter[:, 1] = torch.max(box1[:, 1], box2[:, 1])
    inter[:, 2] = torch.min(box1[:, 2], box2[:, 2])
    inter[:, 3] = torch.min(box1[:, 3], box2[:, 3])
    case1 = torch.nonzero(inter[:, 2].contiguous().view(-1) < inter[:, 0].contiguous().view(-1)).view(-1)
    case2 = torch.nonzero(inter[:, 3].contiguous().view(-1) < inter[:, 1].contiguous().view(-1)).view(-1)
    inter_info = _sgb_get_box_info(inter, need_norm=False)
    if case1.numel() > 0:
        inter_info[case1, :] = 0
    if case2.numel() > 0:
        inter_info[case2, :] = 0
    return torch.cat((box1, box2, union_info, inter_info), 1)


def test_pair_box_code_matches_sgb():
    imgs = [_image(6, 1, size=(60, 80)), _image(4, 2, size=(50, 40))]  # the second normalised by 100
    # touching and disjoint boxes
    imgs.append(Instances((200, 150), boxes=Boxes(torch.tensor([[0.0, 0, 10, 10], [10, 10, 20, 20], [30, 0, 40, 5]]))))
    code = box_info([p.boxes.tensor for p in imgs], [p.image_size for p in imgs])
    start = 0
    for p in imgs:
        n = len(p)
        h, w = p.image_size
        ref = _sgb_get_box_info(p.boxes.tensor, size=(w, h))
        assert torch.allclose(code[start:start + n], ref)
        pr = _pairs(n)
        got = box_pair_info(code[start + pr[:, 0]], code[start + pr[:, 1]])
        assert torch.allclose(got, _sgb_get_box_pair_info(ref[pr[:, 0]], ref[pr[:, 1]]))
        start += n
    pair = box_pair_info(code[[-3, -3]], code[[-1, -2]])
    assert float(pair[0, 24:].abs().sum()) == 0  # disjoint: empty intersection
    assert float(pair[1, 24:].abs().sum()) > 0  # touching corners: not empty


# ------------------------------------------------------------------------------ shapes and gradients
def _training_loss(out, mode):
    loss = sum(r.sum() for r in out.rel_logits) + sum(out.extra_losses.values())
    if mode != "predcls":  # the head's loss_refine_obj
        loss = loss + sum(o.logsumexp(1).sum() for o in out.obj_logits)
    return loss


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("context", CONTEXTS)
def test_shapes_gradients_and_built_modules(context, mode, fusion):
    torch.manual_seed(0)
    pred = _predictor(context, mode, fusion, effect_type="TDE").train()
    props = [_image(6, 1), _image(3, 2), _image(1, 3)]
    x, pairs, union, rel_labels = _inputs(props)
    labels = _labels(props)
    out = pred(x, props, pairs, union, obj_labels=labels, rel_labels=rel_labels)
    assert [o.shape for o in out.obj_logits] == [(6, C1), (3, C1), (1, C1)]
    assert [r.shape for r in out.rel_logits] == [(30, P1), (6, P1), (0, P1)]
    keys = {"loss_auxiliary_ctx"} | ({"loss_auxiliary_vis", "loss_auxiliary_frq"} if fusion == "sum" else set())
    keys |= {"loss_binary"} if context == "vctree" else set()
    keys |= {"loss_refine_obj"} if (context, mode) == ("vtranse", "predcls") else set()
    assert set(out.extra_losses) == keys
    for v in out.extra_losses.values():
        assert v.dim() == 0 and math.isfinite(float(v.detach()))
    _training_loss(out, mode).backward()
    for name, p in pred.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    # modules that cannot learn are not built
    ctx = pred.context_layer
    assert hasattr(ctx, "decoder_rnn") == (context != "vtranse" and mode != "predcls")
    assert hasattr(pred, "ctx_gate_fc") == (fusion == "gate")
    assert hasattr(pred, "post_cat") == (context != "vtranse")
    assert hasattr(pred, "spt_emb")  # SPATIAL_FOR_VISION: the constructor follows SGB's yaml
    if context == "vtranse":
        assert pred.ctx_compress.bias is None and pred.post_emb.out_features == 2 * POOL
        assert hasattr(ctx, "pred_layer")  # "sgb": classifies in PredCls too

    pred.eval()
    _randomise_averages(pred)
    with torch.no_grad():
        out = pred(x, props, pairs, union, obj_labels=labels if mode == "predcls" else None)
    assert [o.shape for o in out.obj_logits] == [(6, C1), (3, C1), (1, C1)]
    assert [r.shape for r in out.rel_logits] == [(30, P1), (6, P1), (0, P1)]
    assert not out.extra_losses
    assert all(torch.isfinite(r).all() for r in out.rel_logits)
    if mode == "predcls" and context != "vtranse":
        assert torch.equal(torch.cat(out.obj_labels), labels)
    elif context == "vtranse" and mode != "predcls":
        assert out.obj_labels is None  # the post-processor picks 1..C (SGDet: class-aware NMS)
    elif context == "vctree" and mode == "sgdet":
        assert out.obj_labels is None
    elif mode == "sgcls":
        assert torch.equal(torch.cat(out.obj_labels), torch.cat(out.obj_logits)[:, 1:].argmax(1) + 1)


@pytest.mark.parametrize("mode", MODES)
def test_vtranse_label_quirk_and_protocol_option(mode):
    torch.manual_seed(0)
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    labels = _labels(props)
    sgb = _predictor("vtranse", mode).train()
    with torch.no_grad():
        sgb.context_layer.pred_layer.bias[0] = 100.0  # the classifier prefers the background
    out = sgb(x, props, pairs, union, obj_labels=labels, rel_labels=rel_labels)
    assert bool((torch.cat(out.obj_labels) == 0).all())  # SGB: argmax over all classes, also in PredCls
    if mode == "predcls":  # trained by SGB's PredCls loss_refine_obj, returned by the predictor
        assert torch.allclose(out.extra_losses["loss_refine_obj"], F.cross_entropy(torch.cat(out.obj_logits), labels))

    proto = _predictor("vtranse", mode, vtranse_labels="protocol").train()
    if mode == "predcls":
        assert not hasattr(proto.context_layer, "pred_layer") and not hasattr(proto.context_layer, "obj_embed1")
        assert not hasattr(proto.context_layer, "untreated_obj_feat")
    else:
        with torch.no_grad():
            proto.context_layer.pred_layer.bias[0] = 100.0
    out = proto(x, props, pairs, union, obj_labels=labels, rel_labels=rel_labels)
    assert "loss_refine_obj" not in out.extra_losses
    preds = torch.cat(out.obj_labels)
    if mode == "predcls":
        assert torch.equal(preds, labels)
        assert torch.equal(torch.cat(out.obj_logits).argmax(1), labels)
    else:
        assert bool((preds >= 1).all()) and torch.equal(preds, torch.cat(out.obj_logits)[:, 1:].argmax(1) + 1)
    _training_loss(out, mode).backward()
    for name, p in proto.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


# ------------------------------------------------------------------------------ parameter count
def _lstm(k, h):  # bidirectional nn.LSTM layer of input size k
    return 2 * (4 * h * k + 4 * h * h + 8 * h)


def _bitree(k, hid):  # bidirectional tree-LSTM layer (see test_vctree.py)
    h = hid // 2
    return 13 * h * k + 17 * h * h + 30 * h


def _context_count(context, mode, C, D, E, H, lo, le, classifies):
    if context == "motifs":
        n = (2 * C * E + 4608 + _lstm(D + E + 128, H) + (lo - 1) * _lstm(2 * H, H) + _lstm(E + H + D, H)
             + (le - 1) * _lstm(2 * H, H) + 2 * (2 * H * H + H))
        if mode != "predcls":
            n += (C + 1) * E + 6 * H * (D + 2 * E + 128 + H) + 6 * H + 5 * H * H + 5 * H + H * C + C
        return n
    if context == "vctree":
        n = (2 * C * E + 4608 + 1536 + 1152 + C * C + 128 * D + 128 * E + 256 + 513 * H + 2 * H * H + 2 * H
             + 3 * H + 2 + _bitree(D + E + 128, H) + (lo - 1) * _bitree(H, H) + _bitree(E + D + H, H)
             + (le - 1) * _bitree(H, H))
        if mode != "predcls":
            n += (C + 1) * E + 6 * H * (D + 2 * E + 128 + H) + 5 * H * H + 11 * H + H * C + C
        return n
    n = C * E + 4608 + (D + E + 128) * H + H
    if classifies:
        n += C * E + (D + E + 128) * C + C
    return n


def _head_count(context, fusion, spatial, C, R, H, Pd, U):
    if context == "vtranse":
        n = 2 * H * Pd + 2 * Pd + Pd * R
    else:
        n = 2 * H * H + 2 * H + 2 * H * Pd + Pd + Pd * R + R
    n += U * R + R + C * C * R
    n += Pd * R + R if fusion == "gate" else 0
    n += 32 * H + H + H * Pd + Pd if spatial else 0
    return n


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("context", CONTEXTS)
@pytest.mark.parametrize("fusion,spatial,union_dim,lo,le,labels", [("sum", True, D, 1, 1, "sgb"),
                                                                   ("gate", False, POOL, 2, 3, "protocol")])
def test_parameter_count_closed_form(context, mode, fusion, spatial, union_dim, lo, le, labels):
    pred = _predictor(context, mode, fusion, spatial_for_vision=spatial, union_dim=union_dim, obj_layers=lo,
                      rel_layers=le, vtranse_labels=labels)
    classifies = mode != "predcls" or labels == "sgb"
    ctx = _context_count(context, mode, C1, D, E, H, lo, le, classifies)
    assert sum(p.numel() for p in pred.context_layer.parameters()) == ctx
    expected = ctx + _head_count(context, fusion, spatial, C1, P1, H, POOL, union_dim)
    assert sum(p.numel() for p in pred.parameters()) == expected


def test_parameter_count_at_the_reference_sizes_equals_sgb():
    """SGB's X-101-FPN Causal-Motifs-sum PredCls (D = U = Pd = 4096, H 512, E 200, C 151, R 51,
    SPATIAL_FOR_VISION): SGB's count minus its unused PredCls decoder."""
    C, R, D_, H_, Pd, E_ = 151, 51, 4096, 512, 4096, 200
    with torch.device("meta"):
        pred = CausalAnalysisPredictor(num_obj_classes=C, num_rel_classes=R, in_channels=D_, hidden_dim=H_,
                                       pooling_dim=Pd, embed_dim=E_, mode="predcls",
                                       word_vectors=torch.zeros(C + 1, E_))
    sgb_decoder = (C + 1) * E_ + 6 * H_ * (D_ + 2 * E_ + 128 + H_) + 6 * H_ + 5 * H_ * H_ + 5 * H_ + H_ * C + C
    sgb_total = (_context_count("motifs", "sgcls", C, D_, E_, H_, 1, 1, True)
                 + _head_count("motifs", "sum", True, C, R, H_, Pd, D_))
    assert sum(p.numel() for p in pred.parameters()) == sgb_total - sgb_decoder


# ------------------------------------------------------------------------------ moving averages
def test_averages_update_in_training_only_and_are_saved():
    torch.manual_seed(0)
    pred = _predictor("motifs", "sgcls").train()
    names = set(_average_names(pred))
    assert names == {"untreated_spt", "untreated_conv_spt", "avg_post_ctx", "untreated_feat",
                     "context_layer.untreated_dcd_feat", "context_layer.untreated_edg_feat"}
    assert all(float(pred.get_buffer(n).abs().sum()) == 0 for n in names)  # from 0
    props = [_image(5, 1), _image(3, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    labels = _labels(props)
    seen = {}

    def record(name, t):
        seen[name] = t.detach().clone()
        return t

    out = pred(x, props, pairs, union, obj_labels=labels, rel_labels=rel_labels)
    code = box_info([p.boxes.tensor for p in props], [p.image_size for p in props])
    gp = torch.cat([pairs[0], pairs[1] + 5])
    spt = box_pair_info(code[gp[:, 0]], code[gp[:, 1]])
    assert torch.allclose(pred.untreated_spt, R_AVG * spt.mean(0), atol=1e-9)
    assert torch.allclose(pred.untreated_feat, R_AVG * union.mean(0), atol=1e-9)
    assert float(pred.untreated_conv_spt.abs().sum()) == 0  # no separate spatial feature
    assert float(pred.avg_post_ctx.abs().sum()) > 0
    # the context inputs: replay the context (deterministic here: teacher forcing, one layer)
    ctx = pred.context_layer
    first = {n: ctx.get_buffer(b).clone()
             for n, b in (("edge", "untreated_edg_feat"), ("decoder", "untreated_dcd_feat"))}
    pred.context_layer(x, props, labels, input_hook=record)
    assert seen["edge"].shape == (8, E + D) and seen["decoder"].shape == (8, D + E + 128 + H)
    assert torch.allclose(seen["edge"], torch.cat([ctx.obj_embed2(labels), x], 1))  # teacher-forced labels
    for name in ("edge", "decoder"):
        assert torch.allclose(first[name], R_AVG * seen[name].mean(0), atol=1e-9), name
    # a second step: (1 - r) * old + r * mean
    before = pred.untreated_feat.clone()
    union2 = torch.randn_like(union)
    pred(x, props, pairs, union2, obj_labels=labels, rel_labels=rel_labels)
    assert torch.allclose(pred.untreated_feat, (1 - R_AVG) * before + R_AVG * union2.mean(0), atol=1e-9)
    # a batch without any pair leaves the pair averages unchanged (SGB: NaN)
    state = {n: pred.get_buffer(n).clone() for n in names}
    one = [_image(1, 7)]
    x1, pairs1, union1, labels1 = _inputs(one)
    out = pred(x1, one, pairs1, union1, obj_labels=_labels(one), rel_labels=labels1)
    for n in ("untreated_spt", "avg_post_ctx", "untreated_feat"):
        assert torch.equal(state[n], pred.get_buffer(n)), n
    assert all(bool(torch.isfinite(pred.get_buffer(n)).all()) for n in names)
    assert all(float(v.detach()) == 0 for v in out.extra_losses.values())
    state = {n: pred.get_buffer(n).clone() for n in names}
    # evaluation (any effect) changes nothing
    pred.eval()
    for effect in ("none", "TDE", "NIE", "TE"):
        _eval(pred, x, props, pairs, union, effect, "sgcls")
    assert all(torch.equal(state[n], pred.get_buffer(n)) for n in names)
    # the state dict carries them
    sd = pred.state_dict()
    assert names <= set(sd)
    fresh = _predictor("motifs", "sgcls")
    fresh.load_state_dict(sd)
    assert all(torch.equal(state[n], fresh.get_buffer(n)) for n in names)


@pytest.mark.parametrize("context,mode,labels,expected", [
    ("motifs", "predcls", "sgb", {"untreated_edg_feat"}),
    ("vctree", "sgdet", "sgb", {"untreated_edg_feat", "untreated_dcd_feat"}),
    ("vtranse", "predcls", "sgb", {"untreated_edg_feat", "untreated_obj_feat"}),
    ("vtranse", "predcls", "protocol", {"untreated_edg_feat"}),
])
def test_context_averages_kept_per_context(context, mode, labels, expected):
    pred = _predictor(context, mode, vtranse_labels=labels)
    got = {n.split(".")[-1] for n, _ in pred.named_buffers() if n.startswith("context_layer.untreated")}
    assert got == expected
    sizes = {"untreated_edg_feat": D + 128 if context == "vtranse" else E + D,
             "untreated_dcd_feat": D + E + 128 + H, "untreated_obj_feat": D + E + 128}
    for n in got:
        assert pred.context_layer.get_buffer(n).shape == (sizes[n],)


# ------------------------------------------------------------------------------ the effects
@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("context,labels", [("motifs", "sgb"), ("vctree", "sgb"), ("vtranse", "protocol")])
def test_predcls_nie_is_zero_and_te_equals_tde(context, labels, fusion):
    torch.manual_seed(0)
    pred = _predictor(context, "predcls", fusion, vtranse_labels=labels).eval()
    _randomise_averages(pred)
    props = [_image(5, 1), _image(3, 2)]
    x, pairs, union, _ = _inputs(props)
    nie = torch.cat(_eval(pred, x, props, pairs, union, "NIE", "predcls").rel_logits)
    tde = torch.cat(_eval(pred, x, props, pairs, union, "TDE", "predcls").rel_logits)
    te = torch.cat(_eval(pred, x, props, pairs, union, "TE", "predcls").rel_logits)
    assert int(torch.count_nonzero(nie)) == 0
    assert torch.equal(te, tde)
    assert float(tde.abs().max()) > 1e-3


def test_vtranse_sgb_predcls_has_an_indirect_effect():
    """With the reference labels VTransE classifies in PredCls: P_bar != P, so NIE != 0."""
    torch.manual_seed(0)
    pred = _predictor("vtranse", "predcls").eval()
    _randomise_averages(pred)
    props = [_image(5, 1)]
    x, pairs, union, _ = _inputs(props)
    nie = _eval(pred, x, props, pairs, union, "NIE", "predcls").rel_logits[0]
    assert float(nie.abs().max()) > 1e-4


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
@pytest.mark.parametrize("context", CONTEXTS)
def test_sum_tde_does_not_depend_on_the_union_feature(context, mode):
    torch.manual_seed(0)
    props = [_image(5, 1), _image(3, 2)]
    x, pairs, union, _ = _inputs(props)
    other = torch.randn_like(union) * 3
    for fusion in FUSIONS:
        pred = _predictor(context, mode, fusion).eval()
        _randomise_averages(pred)
        a = torch.cat(_eval(pred, x, props, pairs, union, "TDE", mode).rel_logits)
        b = torch.cat(_eval(pred, x, props, pairs, other, "TDE", mode).rel_logits)
        if fusion == "sum":
            assert torch.allclose(a, b, atol=1e-5)
        else:  # the gate mixes the vision branch into the effect
            assert not torch.allclose(a, b, atol=1e-3)


def _force_class(pred, k):
    """Make the object classifier commit to class k for every object (a huge bias)."""
    ctx = pred.context_layer
    with torch.no_grad():
        if hasattr(ctx, "pred_layer"):
            ctx.pred_layer.bias[k] = 1e4
        elif hasattr(ctx, "decoder_rnn"):
            lin = ctx.decoder_rnn.out_obj if hasattr(ctx.decoder_rnn, "out_obj") else ctx.decoder_rnn.out
            lin.bias[k] = 1e4


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
@pytest.mark.parametrize("context", CONTEXTS)
def test_tde_is_zero_when_the_inputs_equal_their_averages(context, mode, fusion):
    torch.manual_seed(0)
    pred = _predictor(context, mode, fusion).eval()
    _force_class(pred, 2)
    n = 3
    box = torch.tensor([[10.0, 12.0, 30.0, 40.0]])
    img = Instances((60, 80), boxes=Boxes(box.repeat(n, 1)), labels=torch.full((n,), 2),
                    logits=torch.randn(1, C1).repeat(n, 1))
    props = [img]
    x = torch.randn(1, D).repeat(n, 1)
    pairs = [_pairs(n)]
    union = torch.randn(n * (n - 1), D)
    seen = {}

    def record(name, t):
        seen[name] = t.detach().clone()
        return t

    with torch.no_grad():
        pred.context_layer(x, props, _labels(props), input_hook=record)
        for name, t in seen.items():
            # identical objects (the decoder input holds the position-dependent object context: it
            # only reaches P_bar, which TDE does not read)
            assert name == "decoder" or torch.allclose(t, t[:1].expand_as(t)), name
            buf = {"edge": "untreated_edg_feat", "decoder": "untreated_dcd_feat", "object": "untreated_obj_feat"}[name]
            pred.context_layer.get_buffer(buf).copy_(t[0])
        code = box_info([box], [(60, 80)])
        pred.untreated_spt.copy_(box_pair_info(code, code)[0])
    tde = _eval(pred, x, props, pairs, union, "TDE", mode).rel_logits[0]
    none = _eval(pred, x, props, pairs, union, "none", mode).rel_logits[0]
    assert float(none.abs().max()) > 1e-3
    assert float(tde.abs().max()) < 1e-5


def _factual_by_hand(pred, x, props, pairs, union, obj_labels):
    """rel logits, ctx and pair class probabilities from the modules, as SGB's calculate_logits."""
    obj_dists, obj_preds, edge = pred.context_layer(x, props, obj_labels)[:3]
    gp = torch.cat([r + off for r, off in zip(pairs, np.cumsum([0] + [len(p) for p in props])[:-1].tolist())])
    return _head_by_hand(pred, props, gp, union, obj_dists, obj_preds, edge, pred.spt_emb(
        box_pair_info(*[box_info([p.boxes.tensor for p in props], [p.image_size for p in props])[gp[:, i]]
                        for i in (0, 1)])))


def _head_by_hand(pred, props, gp, union, obj_dists, obj_preds, edge, spatial):
    rep = pred.post_emb(edge).view(-1, 2, pred.edge_dim)
    s, o = rep[gp[:, 0], 0], rep[gp[:, 1], 1]
    ctx = s - o if pred.use_vtranse else F.relu(pred.post_cat[0](torch.cat([s, o], 1)))
    ctx = ctx * spatial
    prob = F.softmax(obj_dists, 1)
    pair_prob = torch.stack([prob[gp[:, 0]], prob[gp[:, 1]]], 1)
    w = pred.freq_bias.obj_baseline.weight
    frq = w[obj_preds[gp[:, 0]] * C1 + obj_preds[gp[:, 1]]]
    vis = union @ pred.vis_compress.weight.t() + pred.vis_compress.bias
    c = pred.ctx_compress(ctx)
    if pred.fusion_type == "gate":
        rel = c * torch.sigmoid(vis + frq + pred.ctx_gate_fc(ctx))
    else:
        rel = vis + c + frq
    return rel, ctx, pair_prob, gp, vis


@pytest.mark.parametrize("fusion", FUSIONS)
@pytest.mark.parametrize("context,mode", [("motifs", "sgcls"), ("vctree", "predcls"), ("vtranse", "sgdet")])
def test_effects_against_hand_computation(context, mode, fusion):
    torch.manual_seed(0)
    pred = _predictor(context, mode, fusion).eval()
    _randomise_averages(pred)
    props = [_image(5, 1), _image(3, 2)]
    x, pairs, union, _ = _inputs(props)
    labels = _labels(props) if mode == "predcls" else None
    with torch.no_grad():
        rel, ctx, prob, gp, vis = _factual_by_hand(pred, x, props, pairs, union, labels)
        # counterfactual: the context inputs replaced by their averages
        ctxm = pred.context_layer

        def average(name, t):
            buf = {"edge": "untreated_edg_feat", "decoder": "untreated_dcd_feat", "object": "untreated_obj_feat"}[name]
            return ctxm.get_buffer(buf).view(1, -1).expand(t.shape[0], -1)

        kw = {"soft_label_embedding": True} if context == "vtranse" else {}
        d_bar, p_bar, e_bar = ctxm(x, props, labels, input_hook=average, **kw)[:3]
        _, ctx_bar, prob_bar, _, _ = _head_by_hand(pred, props, gp, union, d_bar, p_bar, e_bar,
                                                   pred.spt_emb(pred.untreated_spt.view(1, -1)))
        w = pred.freq_bias.obj_baseline.weight

        def soft(pp):
            return (pp[:, 0, :, None] * pp[:, 1, None, :]).reshape(len(pp), -1) @ w

        def fuse(c, f):
            cc = pred.ctx_compress(c)
            return cc * torch.sigmoid(vis + f + pred.ctx_gate_fc(c)) if fusion == "gate" else vis + cc + f

        expected = {"none": rel, "TDE": fuse(ctx, soft(prob)) - fuse(ctx_bar, soft(prob)),
                    "NIE": fuse(ctx_bar, soft(prob)) - fuse(ctx_bar, soft(prob_bar)),
                    "TE": fuse(ctx, soft(prob)) - fuse(ctx_bar, soft(prob_bar))}
        if fusion == "sum":  # the branches that cancel
            cc = pred.ctx_compress
            assert torch.allclose(expected["TDE"], cc(ctx) - cc(ctx_bar), atol=1e-4)
            assert torch.allclose(expected["NIE"], soft(prob) - soft(prob_bar), atol=1e-4)
    for effect, exp in expected.items():
        got = torch.cat(_eval(pred, x, props, pairs, union, effect, mode).rel_logits)
        assert torch.allclose(got, exp, atol=1e-4), effect
    # EFFECT_ANALYSIS off: the factual logits whatever the effect type
    pred.effect_analysis = False
    assert torch.allclose(torch.cat(_eval(pred, x, props, pairs, union, "TDE", mode).rel_logits), rel, atol=1e-4)
    # obj logits are the factual ones in every case
    pred.effect_analysis = True
    out = _eval(pred, x, props, pairs, union, "TE", mode)
    assert torch.allclose(torch.cat(out.obj_logits), ctxm(x, props, labels)[0], atol=1e-5)


def test_training_logits_are_factual_with_labelled_bias():
    torch.manual_seed(0)
    pred = _predictor("motifs", "predcls", effect_type="TDE").train()
    _randomise_averages(pred)
    pred.context_layer.pos_embed[1].eval()  # same BN statistics in both calls
    props = [_image(5, 1)]
    x, pairs, union, rel_labels = _inputs(props)
    out = pred(x, props, pairs, union, obj_labels=_labels(props), rel_labels=rel_labels)
    rel = _factual_by_hand(pred, x, props, pairs, union, _labels(props))[0]
    assert torch.allclose(out.rel_logits[0], rel, atol=1e-5)
    labels = rel_labels[0]
    ctx = rel - pred.vis_compress(union) - pred.freq_bias.index_with_labels(labels.new_tensor(
        [[int(props[0].labels[s]), int(props[0].labels[o])] for s, o in pairs[0].tolist()]))
    assert torch.allclose(out.extra_losses["loss_auxiliary_ctx"], F.cross_entropy(ctx, labels), atol=1e-5)
    assert torch.allclose(out.extra_losses["loss_auxiliary_vis"],
                          F.cross_entropy(pred.vis_compress(union), labels), atol=1e-6)


def test_without_rel_labels_the_auxiliary_losses_are_left_out_with_one_warning(caplog):
    pred = _predictor("vctree", "predcls").train()
    props = [_image(4, 1)]
    x, pairs, union, _ = _inputs(props)
    with caplog.at_level(logging.WARNING):
        out = pred(x, props, pairs, union, obj_labels=_labels(props))
        pred(x, props, pairs, union, obj_labels=_labels(props))
    assert not out.extra_losses
    assert caplog.text.count("no rel_labels") == 1 and "no loss_binary" in caplog.text
    # rel_binarys alone give vctree's loss_binary
    out = pred(x, props, pairs, union, obj_labels=_labels(props), rel_binarys=[torch.eye(4)])
    assert set(out.extra_losses) == {"loss_binary"}


def test_separate_spatial_feature_multiplies_ctx_and_is_averaged():
    torch.manual_seed(0)
    pred = _predictor("motifs", "predcls", separate_spatial=True, spatial_for_vision=False).train()
    props = [_image(4, 1)]
    x, pairs, union, rel_labels = _inputs(props)
    spatial = torch.rand(len(pairs[0]), POOL)
    with pytest.raises(ValueError, match="separate_spatial"):
        pred(x, props, pairs, union, obj_labels=_labels(props), rel_labels=rel_labels)
    pred(x, props, pairs, (union, spatial), obj_labels=_labels(props), rel_labels=rel_labels)
    assert torch.allclose(pred.untreated_conv_spt, R_AVG * spatial.mean(0), atol=1e-9)
    pred.eval()
    _randomise_averages(pred)
    a = _eval(pred, x, props, pairs, (union, spatial), "TDE", "predcls").rel_logits[0]
    b = _eval(pred, x, props, pairs, (union, spatial * 2), "TDE", "predcls").rel_logits[0]
    assert not torch.allclose(a, b, atol=1e-4)


# ------------------------------------------------------------------------------ batching, edge cases
@pytest.mark.parametrize("context", CONTEXTS)
def test_eval_tde_equivariant_under_object_permutation(context):
    torch.manual_seed(0)
    pred = _predictor(context, "sgcls", "gate").eval()
    _randomise_averages(pred)
    a = _image(6, 11)
    x, pairs, union, _ = _inputs([a])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    inv = torch.argsort(perm)
    b = Instances(a.image_size, boxes=Boxes(a.boxes.tensor[perm]), labels=a.labels[perm], logits=a.logits[perm])
    pa = pairs[0]
    row_of = {tuple(p): i for i, p in enumerate(pa.tolist())}
    pb = torch.stack([inv[pa[:, 0]], inv[pa[:, 1]]], 1)
    rows = torch.tensor([row_of[(int(perm[s]), int(perm[o]))] for s, o in pb.tolist()])
    out_a = _eval(pred, x, [a], [pa], union, "TDE", "sgcls")
    out_b = _eval(pred, x[perm], [b], [pb], union[rows], "TDE", "sgcls")
    assert torch.allclose(out_a.obj_logits[0][perm], out_b.obj_logits[0], atol=1e-5)
    assert torch.allclose(out_a.rel_logits[0][rows], out_b.rel_logits[0], atol=1e-5)


@pytest.mark.parametrize("context", CONTEXTS)
def test_batched_images_do_not_interact_at_test(context):
    torch.manual_seed(0)
    pred = _predictor(context, "sgdet").eval()
    _randomise_averages(pred)
    a, b = _image(5, 10), _image(2, 11)
    xa, pa, ua, _ = _inputs([a], seed=1)
    xb, pb, ub, _ = _inputs([b], seed=2)
    alone = _eval(pred, xa, [a], pa, ua, "TE", "sgdet")
    both = _eval(pred, torch.cat([xb, xa]), [b, a], pb + pa, torch.cat([ub, ua]), "TE", "sgdet")
    assert torch.allclose(alone.rel_logits[0], both.rel_logits[1], atol=1e-5)
    assert torch.allclose(alone.obj_logits[0], both.obj_logits[1], atol=1e-5)


@pytest.mark.parametrize("context", CONTEXTS)
def test_images_with_zero_and_one_box(context):
    pred = _predictor(context, "sgcls", effect_type="TDE").eval()
    props = [_image(0, 1), _image(1, 2), _image(0, 3)]
    x, pairs, union, _ = _inputs(props)
    with torch.no_grad():
        out = pred(x, props, pairs, union)
    assert [r.shape for r in out.rel_logits] == [(0, P1)] * 3 and [o.shape[0] for o in out.obj_logits] == [0, 1, 0]
    empty = [_image(0, 1)]
    x, pairs, union, labels = _inputs(empty)
    out = _predictor(context, "predcls").train()(x, empty, pairs, union, obj_labels=torch.zeros(0, dtype=torch.long),
                                                 rel_labels=labels)
    assert out.rel_logits[0].shape == (0, P1) and out.rel_logits[0].requires_grad
    assert "loss_auxiliary_ctx" in out.extra_losses
    for v in out.extra_losses.values():
        assert float(v.detach()) == 0 and v.requires_grad


@pytest.mark.parametrize("context", CONTEXTS)
def test_bfloat16_autocast_on_cpu(context):
    torch.manual_seed(0)
    pred = _predictor(context, "sgdet", effect_type="TDE").train()
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union, labels = _inputs(props)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x.bfloat16(), props, pairs, union.bfloat16(), obj_labels=_labels(props), rel_labels=labels)
    assert all(torch.isfinite(r.float()).all() for r in out.rel_logits)
    (sum(r.float().sum() for r in out.rel_logits) + sum(out.extra_losses.values())).backward()
    assert pred.ctx_compress.weight.grad is not None
    assert pred.untreated_feat.dtype == torch.float32 and float(pred.untreated_feat.abs().sum()) > 0
    pred.eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x.bfloat16(), props, pairs, union.bfloat16())
    assert all(torch.isfinite(r.float()).all() for r in out.rel_logits)


# ------------------------------------------------------------------------------ two-stage model
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    from sgg.data.build import build_dataset
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics

    root = make_synthvg(tmp_path_factory.mktemp("causal_data"), num_images=10)
    out = str(tmp_path_factory.mktemp("causal_out"))
    stats = get_dataset_statistics(get_dataset_files(f"{DATASET}_train", root), cache_dir=None, num_val_im=2)
    cfg = tiny_config(root, out, "predcls")
    splits = {"train": build_dataset(cfg, f"{DATASET}_train", is_train=True, mode="predcls"),
              "test": build_dataset(cfg, f"{DATASET}_test", is_train=False, mode="predcls")}
    return root, out, stats, splits


@pytest.mark.parametrize("mode,context,fusion,separate", [
    ("predcls", "motifs", "sum", False), ("predcls", "vtranse", "gate", False), ("sgdet", "motifs", "sum", False),
    ("sgdet", "vctree", "gate", False), ("sgcls", "motifs", "sum", True)])
def test_two_stage_train_step_and_tde_eval(mode, context, fusion, separate, two_stage):
    from sgg.data.mapper import SceneGraphMapper
    from sgg.modeling.meta_arch import build_sgg_model
    try:
        from .test_two_stage import check_graph, oracle_detect, with_relations
    except ImportError:
        from test_two_stage import check_graph, oracle_detect, with_relations

    root, out_dir, stats, splits = two_stage
    cfg = tiny_config(root, out_dir, mode, "MODEL.ROI_RELATION_HEAD.PREDICTOR", "CausalAnalysisPredictor",
                      "MODEL.ROI_RELATION_HEAD.CAUSAL.CONTEXT_LAYER", context,
                      "MODEL.ROI_RELATION_HEAD.CAUSAL.FUSION_TYPE", fusion,
                      "MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_ANALYSIS", "True",
                      "MODEL.ROI_RELATION_HEAD.CAUSAL.EFFECT_TYPE", "TDE",
                      "MODEL.ROI_RELATION_HEAD.CAUSAL.SPATIAL_FOR_VISION", "True",
                      *(("MODEL.ROI_RELATION_HEAD.CAUSAL.SEPARATE_SPATIAL", "True",
                         "MODEL.ROI_RELATION_HEAD.CONTEXT_POOLING_DIM", "32") if separate else ()))
    train, test = splits["train"], splits["test"]
    torch.manual_seed(0)
    model = build_sgg_model(cfg, stats, train.num_classes, train.num_predicates)
    pred = model.relation_head.predictor
    assert isinstance(pred, CausalAnalysisPredictor) and pred.mode == mode and pred.context_type == context
    assert pred.effect_type == "TDE" and pred.vis_compress.in_features == 32  # MLP_HEAD_DIM 32 (pooling 24)
    union = model.relation_head.union_feature_extractor
    assert hasattr(union, "spatial_fc") == separate == union.separate_spatial

    mapper = SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    batch = [mapper(train[i]) for i in with_relations(train, 2)]
    model.train()
    if mode == "sgdet":
        oracle_detect(model, batch, train.num_classes)
    losses = model(batch)
    expected = {"loss_rel", "loss_auxiliary_ctx"} | ({"loss_auxiliary_vis", "loss_auxiliary_frq"}
                                                     if fusion == "sum" else set())
    expected |= {"loss_binary"} if context == "vctree" else set()
    expected |= {"loss_refine_obj"} if context == "vtranse" else set()
    assert expected <= set(losses)
    for k, v in losses.items():
        assert v.dim() == 0 and math.isfinite(float(v.detach())), k
    if context == "vtranse":  # SGB's PredCls object loss of VTransE's classifier
        assert float(losses["loss_refine_obj"].detach()) > 0
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    for p in (pred.ctx_compress.weight, pred.vis_compress.weight, pred.spt_emb[0].weight, pred.post_emb.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0
    assert float(pred.untreated_feat.abs().sum()) > 0 and float(pred.untreated_spt.abs().sum()) > 0
    assert float(pred.context_layer.untreated_edg_feat.abs().sum()) > 0
    if separate:  # the spatial branch learns and its average is tracked
        assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in union.spatial_fc.parameters())
        assert float(pred.untreated_conv_spt.abs().sum()) > 0

    if mode == "sgdet":
        del model.detector.detect  # back to the detector's own detections
    model.eval()
    idx = [0, 1]
    inputs = [SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)(test[i]) for i in idx]
    with torch.no_grad():
        graphs = model(inputs)
        pred.effect_type = "none"
        factual = model(inputs)
    for g, d, i in zip(graphs, inputs, idx):
        check_graph(g, d, mode, test.get_groundtruth(i), test.num_classes, test.num_predicates)
    if mode == "predcls":  # the same pairs; TDE scores are not the factual ones
        assert any(g.num_relations for g in graphs)
        for g, f in zip(graphs, factual):
            if g.num_relations:
                order_g = {tuple(p): s for p, s in zip(g.rel_pairs.tolist(), g.rel_scores)}
                diffs = [float((order_g[tuple(p)] - s).abs().max()) for p, s in zip(f.rel_pairs.tolist(), f.rel_scores)]
                assert max(diffs) > 1e-6
