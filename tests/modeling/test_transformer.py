"""TransformerPredictor (SGB's): shapes, gradients, parameter count, padding, permutation
equivariance, the reference quirks, and a two-stage train step + eval (tiny dims, CPU)."""
import math

import numpy as np
import pytest
import torch

from sgg.config import get_default_config
from sgg.modeling.relation import RELATION_PREDICTOR_REGISTRY, class_aware_nms_labels
from sgg.modeling.relation.predictors import TransformerPredictor
from sgg.structures import Boxes, Instances

try:
    from .two_stage_fixtures import DATASET, make_synthvg, single_thread, tiny_config
except ImportError:  # tests/ is not a package
    from two_stage_fixtures import DATASET, make_synthvg, single_thread, tiny_config

MODES = ("predcls", "sgcls", "sgdet")
C1, P1, D, H, POOL, E = 5, 4, 16, 8, 10, 6
HEADS, DK, DV, INNER, LO, LR = 2, 4, 3, 12, 3, 2
NAMES = ["__background__", "man", "horse", "traffic light", "tennis_racket"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    with single_thread():
        yield


def _predictor(mode, **kw):
    args = dict(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                embed_dim=E, obj_classes=NAMES, mode=mode, num_head=HEADS, key_dim=DK, val_dim=DV,
                inner_dim=INNER, obj_layers=LO, rel_layers=LR)
    args.update(kw)
    return TransformerPredictor(**args)


def _image(n, seed, size=(60, 80), with_logits=True):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    fields = dict(boxes=Boxes(torch.cat([xy, xy + wh], 1)), labels=torch.randint(1, C1, (n,), generator=g))
    if with_logits:
        fields["logits"] = torch.randn(n, C1, generator=g)
    return Instances(size, **fields)


def _pairs(n):
    return torch.stack(torch.where(~torch.eye(n, dtype=torch.bool)), 1)


def _inputs(props, seed=0, union_dim=D):
    g = torch.Generator().manual_seed(seed)
    n = sum(len(p) for p in props)
    pairs = [_pairs(len(p)) for p in props]
    m = sum(len(r) for r in pairs)
    return torch.randn(n, D, generator=g), pairs, torch.randn(m, union_dim, generator=g)


def _labels(props):
    return torch.cat([p.labels for p in props])


def test_registered_and_mode_checked():
    assert RELATION_PREDICTOR_REGISTRY.get("TransformerPredictor") is TransformerPredictor
    with pytest.raises(ValueError):
        _predictor("detection")
    with pytest.raises(ValueError, match="word_vectors must have shape"):
        _predictor("predcls", word_vectors=torch.zeros(C1 + 1, E))


# ------------------------------------------------------------------------------ shapes, gradients
@pytest.mark.parametrize("mode", MODES)
def test_shapes_train_and_eval(mode):
    torch.manual_seed(0)
    pred = _predictor(mode)
    props = [_image(4, 1), _image(3, 2), _image(1, 3)]
    x, pairs, union = _inputs(props)
    for training in (True, False):
        pred.train(training)
        with torch.set_grad_enabled(training):
            out = pred(x, props, pairs, union, obj_labels=_labels(props) if training or mode == "predcls" else None)
        assert [o.shape for o in out.obj_logits] == [(4, C1), (3, C1), (1, C1)]
        assert [r.shape for r in out.rel_logits] == [(12, P1), (6, P1), (0, P1)]
        assert [l.shape for l in out.obj_labels] == [(4,), (3,), (1,)]
        assert all(bool((l >= 1).all() and (l < C1).all()) for l in out.obj_labels)
        assert out.extra_losses == {}
        if mode == "predcls":
            assert torch.equal(torch.cat(out.obj_labels), _labels(props))
            logits = torch.cat(out.obj_logits)
            assert torch.equal(logits.argmax(1), _labels(props)) and float(logits.max()) == 1000.0


@pytest.mark.parametrize("mode", MODES)
def test_every_parameter_learns_and_unused_modules_do_not_exist(mode):
    torch.manual_seed(0)
    pred = _predictor(mode, union_dim=7).train()  # union 7 != pooling 10 -> up_dim
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union = _inputs(props, union_dim=7)
    out = pred(x, props, pairs, union, obj_labels=_labels(props))
    loss = sum(r.pow(2).sum() for r in out.rel_logits) + sum(o.logsumexp(1).sum() for o in out.obj_logits)
    loss.backward()
    for name, p in pred.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert hasattr(pred.context_layer, "out_obj") == (mode != "predcls")
    assert pred.up_dim is not None and pred.uses_union_features


# ------------------------------------------------------------------------------ parameter count
def _layer_params(h, dk, dv, hid, inner):
    # q, k: 2*h*dk*(H+1); v: h*dv*(H+1); fc: h*dv*H + H; 2 LayerNorms: 4H; FFN: 2*H*I + I + H
    return 2 * h * dk * (hid + 1) + h * dv * (2 * hid + 1) + 2 * hid * inner + inner + 6 * hid


def _expected_params(mode, d, hid, pool, e, c1, r1, h, dk, dv, inner, lo, lr, union=None, use_bias=True):
    """total = 2*C1*E (obj_embed1/2) + 4544 (bbox_embed 9-32-128) + (D+E+129)*H (lin_obj)
    + (D+H+E+1)*H (lin_edge) + (Lo+Lr)*layer + [(H+1)*C1 out_obj, not PredCls]
    + (2H^2+2H) post_emb + (2H+1)*Pd post_cat + (Pd+1)*R1 rel_compress + (2H+1)*R1 ctx_compress
    + [(U+1)*Pd up_dim, U != Pd] + [C1^2*R1 freq_bias]."""
    n = 2 * c1 * e + (9 * 32 + 32 + 32 * 128 + 128) + (d + e + 128 + 1) * hid + (d + hid + e + 1) * hid
    n += (lo + lr) * _layer_params(h, dk, dv, hid, inner)
    if mode != "predcls":
        n += (hid + 1) * c1
    n += 2 * hid * hid + 2 * hid + (2 * hid + 1) * pool + (pool + 1) * r1 + (2 * hid + 1) * r1
    if union is not None and union != pool:
        n += (union + 1) * pool
    if use_bias:
        n += c1 * c1 * r1
    return n


def _count(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("mode", MODES)
def test_parameter_count_closed_form(mode):
    assert 9 * 32 + 32 + 32 * 128 + 128 == 4544
    args = (D, H, POOL, E, C1, P1, HEADS, DK, DV, INNER, LO, LR)
    assert _count(_predictor(mode)) == _expected_params(mode, *args, union=D)
    assert _count(_predictor(mode, union_dim=POOL)) == _expected_params(mode, *args, union=POOL)
    assert _count(_predictor(mode, use_bias=False)) == _expected_params(mode, *args, union=D, use_bias=False)
    # no vision: no up_dim, the rest unchanged
    assert _count(_predictor(mode, use_vision=False)) == _expected_params(mode, *args, union=None)
    # the SGB sizes (X-101-FPN: D = Pd = 4096, H 512, E 200, 151/51 classes, 4+2 layers of 8x64, 2048)
    sgb = TransformerPredictor(mode=mode)
    assert _count(sgb) == _expected_params(mode, 4096, 512, 4096, 200, 151, 51, 8, 64, 64, 2048, 4, 2, union=4096)
    # one encoder layer of SGB: 2*8*64*513 + 8*64*1025 + 2*512*2048 + 2048 + 6*512
    assert _count(sgb.context_layer.context_obj.layer_stack[0]) == 3152384


# ------------------------------------------------------------------------ padding, permutations
@pytest.mark.parametrize("mode", MODES)
def test_padding_does_not_leak_across_images(mode):
    torch.manual_seed(0)
    pred = _predictor(mode).eval()
    a, b = _image(5, 10), _image(2, 11)
    xa, pa, ua = _inputs([a], seed=1)
    xb, pb, ub = _inputs([b], seed=2)
    lab = (lambda *ps: _labels(ps)) if mode == "predcls" else (lambda *ps: None)
    with torch.no_grad():
        alone_a = pred(xa, [a], pa, ua, obj_labels=lab(a))
        alone_b = pred(xb, [b], pb, ub, obj_labels=lab(b))
        both = pred(torch.cat([xb, xa]), [b, a], pb + pa, torch.cat([ub, ua]), obj_labels=lab(b, a))
    for alone, k in ((alone_b, 0), (alone_a, 1)):
        assert torch.allclose(alone.rel_logits[0], both.rel_logits[k], atol=1e-5)
        assert torch.allclose(alone.obj_logits[0], both.obj_logits[k], atol=1e-5)
        assert torch.equal(alone.obj_labels[0], both.obj_labels[k])


@pytest.mark.parametrize("mode", MODES)
def test_eval_equivariant_under_object_permutation(mode):
    torch.manual_seed(0)
    pred = _predictor(mode).eval()
    img = _image(6, 20)
    x, pairs, union = _inputs([img], seed=3)
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    inv = torch.argsort(perm)
    img_p = Instances(img.image_size, boxes=Boxes(img.boxes.tensor[perm]), labels=img.labels[perm],
                      logits=img.logits[perm])
    pairs_p = inv[pairs[0]]  # the same pairs, in the same order, with the new object indices
    lab = img.labels if mode == "predcls" else None
    with torch.no_grad():
        ref = pred(x, [img], pairs, union, obj_labels=lab)
        out = pred(x[perm], [img_p], [pairs_p], union, obj_labels=None if lab is None else lab[perm])
    assert torch.allclose(out.obj_logits[0], ref.obj_logits[0][perm], atol=1e-5)
    assert torch.equal(out.obj_labels[0], ref.obj_labels[0][perm])
    assert torch.allclose(out.rel_logits[0], ref.rel_logits[0], atol=1e-5)


# ------------------------------------------------------------------------------ labels and quirks
def test_sgcls_training_commits_to_argmax_not_targets():
    torch.manual_seed(0)
    pred = _predictor("sgcls").train()
    props = [_image(5, 4)]
    x, pairs, union = _inputs(props)
    targets = torch.tensor([0, 2, 0, 1, 3])
    out = pred(x, props, pairs, union, obj_labels=targets)
    assert torch.equal(out.obj_labels[0], out.obj_logits[0][:, 1:].argmax(1) + 1)
    out2 = pred(x, props, pairs, union, obj_labels=None)  # targets are never read
    assert out2.rel_logits[0].shape == (20, P1)


def test_eval_labels_sgcls_argmax_and_sgdet_nms():
    torch.manual_seed(0)
    props = [_image(6, 20)]
    x, pairs, union = _inputs(props)
    with torch.no_grad():
        out = _predictor("sgcls").eval()(x, props, pairs, union)
        assert torch.equal(out.obj_labels[0], out.obj_logits[0][:, 1:].argmax(1) + 1)
        out = _predictor("sgdet", later_nms_thresh=0.3).eval()(x, props, pairs, union)
    prob = out.obj_logits[0].softmax(1)
    assert torch.equal(out.obj_labels[0], class_aware_nms_labels(prob, props[0].boxes.tensor, 0.3))


def test_rel_logits_decompose_into_visual_context_and_bias():
    rng = np.random.default_rng(0)
    pd = np.log(rng.random((C1, C1, P1)).astype(np.float32) + 1e-3)
    torch.manual_seed(0)
    pred = _predictor("predcls", pred_dist=pd).eval()
    props = [_image(3, 5)]
    x, pairs, union = _inputs(props)
    lab = props[0].labels
    with torch.no_grad():
        out = pred(x, props, pairs, union, obj_labels=lab)
        _, _, edge_ctx = pred.context_layer(x, props, lab)
        rep = pred.post_emb(edge_ctx).view(-1, 2, H)
        prod = torch.cat([rep[pairs[0][:, 0], 0], rep[pairs[0][:, 1], 1]], 1)
        exp = (pred.rel_compress(pred.post_cat(prod) * pred.up_dim(union)) + pred.ctx_compress(prod)
               + torch.from_numpy(pd)[lab[pairs[0][:, 0]], lab[pairs[0][:, 1]]])
    assert torch.allclose(out.rel_logits[0], exp, atol=1e-5)


def test_without_vision_runs_without_union_features():
    # SGB crashes here (visual_rep unassigned); sgg drops the union factor as Motifs does
    pred = _predictor("sgcls", use_vision=False).eval()
    assert not pred.uses_union_features and pred.up_dim is None
    props = [_image(3, 1)]
    x, pairs, _ = _inputs(props)
    with torch.no_grad():
        out = pred(x, props, pairs, None)
    assert out.rel_logits[0].shape == (6, P1)
    with pytest.raises(ValueError, match="union_features"):
        _predictor("sgcls").eval()(x, props, pairs, None)


def test_images_with_zero_and_one_box():
    pred = _predictor("sgcls").eval()
    props = [_image(0, 1), _image(1, 2), _image(0, 3)]
    x, pairs, union = _inputs(props)
    with torch.no_grad():
        out = pred(x, props, pairs, union)
    assert [r.shape for r in out.rel_logits] == [(0, P1)] * 3
    assert [o.shape[0] for o in out.obj_logits] == [0, 1, 0]
    assert all(torch.isfinite(o).all() for o in out.obj_logits)
    empty = [_image(0, 1), _image(0, 2)]
    x, pairs, union = _inputs(empty)
    out = _predictor("sgdet").train()(x, empty, pairs, union, obj_labels=torch.zeros(0, dtype=torch.long))
    assert out.rel_logits[0].shape == (0, P1) and out.rel_logits[0].requires_grad


def test_word_vectors_and_from_config():
    pred = _predictor("sgcls")
    names, dim = pred.word_vector_specs()["obj"]
    assert names == NAMES and dim == E
    vec = torch.arange(C1 * E, dtype=torch.float32).view(C1, E)
    pred.set_word_vectors(obj=vec)
    assert torch.equal(pred.context_layer.obj_embed1.weight.detach(), vec)
    assert torch.equal(pred.context_layer.obj_embed2.weight.detach(), vec)
    assert torch.equal(_predictor("sgcls", word_vectors=vec).context_layer.obj_embed1.weight.detach(), vec)
    with pytest.raises(ValueError):
        pred.set_word_vectors(obj=torch.zeros(C1 + 1, E))

    cfg = get_default_config()
    rh = cfg.MODEL.ROI_RELATION_HEAD
    rh.CONTEXT_HIDDEN_DIM, rh.CONTEXT_POOLING_DIM, rh.EMBED_DIM = 12, 20, 8
    rh.TRANSFORMER.OBJ_LAYER, rh.TRANSFORMER.REL_LAYER, rh.TRANSFORMER.NUM_HEAD = 3, 1, 2
    rh.TRANSFORMER.KEY_DIM, rh.TRANSFORMER.VAL_DIM, rh.TRANSFORMER.INNER_DIM = 5, 7, 9
    rh.TRANSFORMER.DROPOUT_RATE, rh.PREDICT_USE_BIAS = 0.3, False
    pred = TransformerPredictor.from_config(cfg, in_channels=D, union_dim=D, num_obj_classes=C1,
                                            num_rel_classes=P1, mode="sgdet", obj_classes=NAMES)
    ctx = pred.context_layer
    assert pred.hidden_dim == 12 and pred.pooling_dim == 20 and pred.freq_bias is None
    assert len(ctx.context_obj.layer_stack) == 3 and len(ctx.context_edge.layer_stack) == 1
    attn = ctx.context_obj.layer_stack[0].slf_attn
    assert attn.w_qs.weight.shape == (10, 12) and attn.w_vs.weight.shape == (14, 12) and attn.attn_dropout == 0.1
    assert attn.dropout.p == 0.3 and ctx.context_obj.layer_stack[0].pos_ffn.w_1.weight.shape == (9, 12)
    assert ctx.obj_embed1.weight.shape == (C1, 8) and pred.up_dim is not None and pred.mode == "sgdet"


def test_bfloat16_autocast_on_cpu():
    torch.manual_seed(0)
    pred = _predictor("sgdet").train()
    props = [_image(3, 1), _image(2, 2)]
    x, pairs, union = _inputs(props)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x.bfloat16(), props, pairs, union.bfloat16(), obj_labels=_labels(props))
    assert all(torch.isfinite(r.float()).all() for r in out.rel_logits)
    sum(r.float().sum() for r in out.rel_logits).backward()
    assert pred.context_layer.context_obj.layer_stack[0].slf_attn.w_qs.weight.grad is not None


# ------------------------------------------------------------------------------ two-stage model
TR_OPTS = ("MODEL.ROI_RELATION_HEAD.PREDICTOR", "TransformerPredictor",
           "MODEL.ROI_RELATION_HEAD.TRANSFORMER.OBJ_LAYER", "1", "MODEL.ROI_RELATION_HEAD.TRANSFORMER.REL_LAYER", "1",
           "MODEL.ROI_RELATION_HEAD.TRANSFORMER.NUM_HEAD", "2", "MODEL.ROI_RELATION_HEAD.TRANSFORMER.KEY_DIM", "4",
           "MODEL.ROI_RELATION_HEAD.TRANSFORMER.VAL_DIM", "4", "MODEL.ROI_RELATION_HEAD.TRANSFORMER.INNER_DIM", "16")


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    from sgg.data.build import build_dataset
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics

    root = make_synthvg(tmp_path_factory.mktemp("tr_data"), num_images=8)
    out = str(tmp_path_factory.mktemp("tr_out"))
    stats = get_dataset_statistics(get_dataset_files(f"{DATASET}_train", root), cache_dir=None, num_val_im=2)
    cfg = tiny_config(root, out, "predcls", *TR_OPTS)
    train = build_dataset(cfg, f"{DATASET}_train", is_train=True, mode="predcls")
    test = build_dataset(cfg, f"{DATASET}_test", is_train=False, mode="predcls")
    return root, out, stats, train, test


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_two_stage_train_step_and_eval(mode, two_stage):
    from sgg.data.mapper import SceneGraphMapper
    from sgg.modeling.meta_arch import build_sgg_model

    root, out, stats, train, test = two_stage
    cfg = tiny_config(root, out, mode, *TR_OPTS)
    torch.manual_seed(0)
    model = build_sgg_model(cfg, stats, train.num_classes, train.num_predicates)
    pred = model.relation_head.predictor
    assert isinstance(pred, TransformerPredictor) and pred.mode == mode
    assert len(pred.context_layer.context_obj.layer_stack) == 1 and pred.hidden_dim == 16

    idx = [i for i in range(len(train)) if len(train[i]["relations"]) and len(train[i]["boxes"]) >= 2][:2]
    mapper = SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    model.train()
    losses = model([mapper(train[i]) for i in idx])
    assert "loss_rel" in losses and losses["loss_rel"].requires_grad
    if mode != "predcls":
        assert losses["loss_refine_obj"].requires_grad
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    sum(losses.values()).backward()
    assert pred.ctx_compress.weight.grad is not None and float(pred.ctx_compress.weight.grad.abs().sum()) > 0

    mapper = SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)
    inputs = [mapper(test[i]) for i in range(min(2, len(test)))]
    model.eval()
    with torch.no_grad():
        graphs = model(inputs)
    assert len(graphs) == len(inputs)
    for g, d in zip(graphs, inputs):
        assert g.image_size == (d["height"], d["width"])
        assert g.rel_scores.shape == (g.num_relations, train.num_predicates)
        assert torch.allclose(g.rel_scores.sum(1), torch.ones(g.num_relations), atol=1e-5)
        if mode == "predcls":
            assert g.num_relations == len(g) * (len(g) - 1)
