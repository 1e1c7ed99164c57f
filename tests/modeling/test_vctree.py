"""VCTreePredictor (tiny sizes, CPU): shapes and gradients per protocol, the exact parameter count,
the trees (against a port of SGB's gen_tree loop), the level-by-level tree-LSTMs (against SGB's
node-by-node recursion), the score matrix and binary loss against SGB's formulas, permutation
equivariance, the saturated-score quirk and its "paper" option, and a two-stage train step + eval
through ``build_sgg_model``."""
import logging
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sgg.config import get_default_config
from sgg.modeling.relation import RELATION_PREDICTOR_REGISTRY
from sgg.modeling.relation.predictors import VCTreePredictor
from sgg.modeling.relation.predictors.common import encode_box_info
from sgg.modeling.relation.predictors.tree_lstm import BinaryForest
from sgg.modeling.relation.predictors.vctree import (binary_targets, overlap_info, vctree_forest)
from sgg.structures import Boxes, Instances

try:
    from .two_stage_fixtures import DATASET, make_synthvg, tiny_config
except ImportError:  # tests/ is not a package
    from two_stage_fixtures import DATASET, make_synthvg, tiny_config

pytestmark = pytest.mark.usefixtures("one_thread")

C1, P1, D, H, POOL, E = 5, 4, 16, 8, 12, 6
MODES = ("predcls", "sgcls", "sgdet")


def _pred_dist(seed=0):
    """Moderate log-frequencies (sums over P1 predicates of about -4): unsaturated tree scores."""
    rng = np.random.default_rng(seed)
    return np.log(rng.random((C1, C1, P1)).astype(np.float32) + 1e-3)


def _predictor(mode, **kw):
    args = dict(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                embed_dim=E, mode=mode, pred_dist=_pred_dist())
    args.update(kw)
    return VCTreePredictor(**args)


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


# ------------------------------------------------------------------------------ construction
def test_registered_and_checks_arguments():
    assert RELATION_PREDICTOR_REGISTRY.get("VCTreePredictor") is VCTreePredictor
    with pytest.raises(ValueError):
        _predictor("detection")
    with pytest.raises(ValueError, match="even"):
        _predictor("predcls", hidden_dim=7)
    with pytest.raises(ValueError, match="tree_score"):
        _predictor("predcls", tree_score="other")
    with pytest.raises(ValueError, match="word_vectors must have shape"):
        _predictor("sgcls", word_vectors=torch.zeros(C1, E))


def test_from_config_and_word_vectors():
    cfg = get_default_config()
    rh = cfg.MODEL.ROI_RELATION_HEAD
    rh.CONTEXT_HIDDEN_DIM, rh.CONTEXT_POOLING_DIM, rh.EMBED_DIM, rh.CONTEXT_OBJ_LAYER = 12, 20, 8, 2
    rh.PREDICT_USE_BIAS = False
    pred = VCTreePredictor.from_config(cfg, in_channels=D, union_dim=D, num_obj_classes=C1, num_rel_classes=P1,
                                       mode="sgdet")
    assert pred.hidden_dim == 12 and pred.pooling_dim == 20 and pred.freq_bias is None and pred.up_dim is not None
    assert len(pred.context_layer.obj_ctx_rnn.multi_layer_lstm) == 2
    assert pred.context_layer.obj_embed1.weight.shape == (C1, 8)
    names, dim = pred.word_vector_specs()["obj"]
    assert names[0] == "start" and len(names) == C1 + 1 and dim == 8
    vec = torch.randn(C1 + 1, 8)
    pred.set_word_vectors(obj=vec)
    ctx = pred.context_layer
    assert torch.equal(ctx.obj_embed1.weight, vec[1:]) and torch.equal(ctx.obj_embed2.weight, vec[1:])
    assert torch.equal(ctx.decoder_rnn.obj_embed.weight, vec)
    # the same vectors given to the constructor
    built = VCTreePredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=12, embed_dim=8,
                            mode="sgdet", word_vectors=vec)
    assert torch.equal(built.context_layer.decoder_rnn.obj_embed.weight, vec)


# ------------------------------------------------------------------------------ shapes and gradients
def _binary_children(forest):
    has = forest.bin_parent >= 0
    return bool((forest.is_left & has).any()), bool((~forest.is_left & has).any())


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_gradients_every_mode(mode):
    torch.manual_seed(0)
    pred = _predictor(mode, union_dim=10, obj_layers=2).train()  # union 10 != pooling 12 -> up_dim
    props = [_image(6, 1), _image(3, 2), _image(1, 3)]
    x, pairs, union, rel_labels = _inputs(props, union_dim=10)
    labels = _labels(props)
    out = pred(x, props, pairs, union, obj_labels=labels, rel_labels=rel_labels)
    assert [o.shape for o in out.obj_logits] == [(6, C1), (3, C1), (1, C1)]
    assert [r.shape for r in out.rel_logits] == [(30, P1), (6, P1), (0, P1)]
    assert set(out.extra_losses) == {"loss_binary"}
    assert out.extra_losses["loss_binary"].dim() == 0
    assert math.isfinite(float(out.extra_losses["loss_binary"].detach()))
    assert [len(o) for o in out.obj_labels] == [6, 3, 1]
    if mode == "predcls":
        assert torch.equal(torch.cat(out.obj_labels), labels)
        assert not hasattr(pred.context_layer, "decoder_rnn")
    else:  # committed labels: the argmax over 1..C (no teacher forcing)
        logits = torch.cat(out.obj_logits)
        assert torch.equal(torch.cat(out.obj_labels), logits[:, 1:].argmax(1) + 1)
    loss = (sum(r.sum() for r in out.rel_logits) + sum(o.logsumexp(1).sum() for o in out.obj_logits)
            + out.extra_losses["loss_binary"])
    loss.backward()
    # the batch's trees have left and right children, so every cell weight is exercised
    ctx_out = pred.context_layer(x, props, labels)
    assert _binary_children(ctx_out.forest) == (True, True)
    for name, p in pred.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name

    pred.eval()
    with torch.no_grad():
        out = pred(x, props, pairs, union, obj_labels=labels if mode == "predcls" else None)
    assert [o.shape for o in out.obj_logits] == [(6, C1), (3, C1), (1, C1)]
    assert [r.shape for r in out.rel_logits] == [(30, P1), (6, P1), (0, P1)]
    assert not out.extra_losses
    if mode == "sgdet":
        assert out.obj_labels is None  # the post-processor re-labels by class-aware NMS, as SGB
    elif mode == "sgcls":
        assert torch.equal(torch.cat(out.obj_labels), torch.cat(out.obj_logits)[:, 1:].argmax(1) + 1)


def _bitree(k, hid):
    h = hid // 2
    # up cell: px k*h+h, ioffux 6h*k+6h, ioffuh_left/right 2*(6h*h+6h); down cell: px k*h+h,
    # iofux 5h*k+5h, iofuh 5h*h+5h  ->  13*h*k + 17*h^2 + 30*h
    return 13 * h * k + 17 * h * h + 30 * h


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("union_dim,lo,le,use_bias", [(POOL, 1, 1, True), (10, 2, 3, False)])
def test_parameter_count_closed_form(mode, union_dim, lo, le, use_bias):
    pred = _predictor(mode, union_dim=union_dim, obj_layers=lo, rel_layers=le, use_bias=use_bias)
    C, R, Pd, U = C1, P1, POOL, union_dim
    # context: obj_embed1/2 2CE, pos_embed 4608, box_embed 9*128+128+2*128, overlap_embed 6*128+128+2*128,
    # bi_freq_prior C*C, obj_reduce 128D+128, emb_reduce 128E+128, score_pre 512H+H,
    # score_sub/obj 2(H^2+H), vision_prior 3H+1+1, obj tree-LSTM BiTree(D+E+128) + (lo-1) BiTree(H),
    # edge tree-LSTM BiTree(E+D+H) + (le-1) BiTree(H)
    expected = (2 * C * E + 4608 + 1536 + 1152 + C * C + 128 * D + 128 * E + 256 + 513 * H + 2 * H * H + 2 * H
                + 3 * H + 2 + _bitree(D + E + 128, H) + (lo - 1) * _bitree(H, H) + _bitree(E + D + H, H)
                + (le - 1) * _bitree(H, H))
    if mode != "predcls":
        # decoder: embedding (C+1)E, down cell of width H on k = D+E+128+H+E inputs (6Hk + 5H^2 + 11H), out HC+C
        k = D + 2 * E + 128 + H
        expected += (C + 1) * E + 6 * H * k + 5 * H * H + 11 * H + H * C + C
    # head: post_emb 2H^2+2H, post_cat 2H*Pd+Pd, ctx_compress Pd*R+R, freq_bias C*C*R, up_dim U*Pd+Pd
    expected += 2 * H * H + 2 * H + 2 * H * Pd + Pd + Pd * R + R
    expected += C * C * R if use_bias else 0
    expected += U * Pd + Pd if U != Pd else 0
    assert sum(p.numel() for p in pred.parameters()) == expected


# ------------------------------------------------------------------------------ trees
def _sgb_gen_tree(score):
    """SGB's generate_forest / gen_tree for one image: root and children lists (insertion order)."""
    n = score.shape[0]
    root = int(score.mean(1).argmax())
    children = {i: [] for i in range(n)}
    select, remain = [root], [i for i in range(n) if i != root]
    while remain:
        wid = len(remain)
        flat = score[torch.tensor(select)][:, torch.tensor(remain)].reshape(-1)
        best = int(flat.argmax())  # first maximum, as torch.max(0)
        dep, ins = select[best // wid], remain[best % wid]
        children[dep].append(ins)
        select.append(ins)
        remain.remove(ins)
    return root, children


def _check_forest_against_sgb(scores, num_objs):
    padded = torch.zeros(len(num_objs), max(num_objs), max(num_objs))
    for b, (s, n) in enumerate(zip(scores, num_objs)):
        padded[b, :n, :n] = s
    forest = vctree_forest(padded, num_objs)
    start = 0
    for s, n in zip(scores, num_objs):
        parent = forest.parent[start:start + n]
        bparent = forest.bin_parent[start:start + n]
        left = forest.is_left[start:start + n]
        root, children = _sgb_gen_tree(s)
        # spanning tree: one root (argmax of the row means), N-1 edges, every node reaches the root
        assert int(root) == int(s.mean(1).argmax())
        assert (parent == -1).nonzero().view(-1).tolist() == [root]
        assert int((parent >= 0).sum()) == n - 1
        for v in range(n):
            seen, u = set(), v
            while parent[u] >= 0:
                assert u not in seen
                seen.add(u)
                u = int(parent[u])
            assert u == root
        exp_parent = torch.full((n,), -1, dtype=torch.long)
        exp_bparent = torch.full((n,), -1, dtype=torch.long)
        exp_left = torch.zeros(n, dtype=torch.bool)
        for v, kids in children.items():
            for k, c in enumerate(kids):
                exp_parent[c] = v
                exp_bparent[c] = v if k == 0 else kids[k - 1]
                exp_left[c] = k == 0
        assert torch.equal(parent, exp_parent)
        assert torch.equal(bparent, exp_bparent)
        assert torch.equal(left[bparent >= 0], exp_left[bparent >= 0])
        # binary: at most one left and one right child per node
        for side in (True, False):
            kids = bparent[(bparent >= 0) & (left == side)]
            assert len(torch.unique(kids)) == len(kids)
        start += n
    return forest


def test_tree_matches_sgb_gen_tree():
    g = torch.Generator().manual_seed(0)
    num_objs = [7, 1, 4, 9, 2]
    scores = [torch.rand(n, n, generator=g) for n in num_objs]
    _check_forest_against_sgb(scores, num_objs)
    # ties everywhere (quantised scores): the same tie-breaks as SGB's flattened max
    scores = [torch.randint(0, 3, (n, n), generator=g).float() for n in num_objs]
    _check_forest_against_sgb(scores, num_objs)
    # all equal (saturated scores): the root 0 gets every node in index order -> a right chain
    forest = _check_forest_against_sgb([torch.zeros(5, 5)], [5])
    assert forest.parent.tolist() == [-1, 0, 0, 0, 0]
    assert forest.bin_parent.tolist() == [-1, 0, 1, 2, 3] and forest.depth.tolist() == [0, 1, 2, 3, 4]


def test_tree_of_the_predictor_spans_each_image():
    torch.manual_seed(1)
    pred = _predictor("sgcls").eval()
    props = [_image(8, 4), _image(5, 5), _image(1, 6)]
    x, _, _, _ = _inputs(props)
    with torch.no_grad():
        ctx = pred.context_layer(x, props, None)
    scores = [ctx.scores[b, :n, :n] for b, n in enumerate([8, 5, 1])]
    _check_forest_against_sgb(scores, [8, 5, 1])


def test_binary_forest_schedule():
    # image 0: root 1, 1 -L-> 0, 0 -R-> 2; image 1: single root (global 3)
    forest = BinaryForest(parent=torch.tensor([1, -1, 0, -1]), is_left=torch.tensor([True, False, False, False]),
                          depth=torch.tensor([1, 0, 2, 0]), image=torch.tensor([0, 0, 0, 1]))
    assert forest.level_sizes == [2, 1, 1]
    assert [lv.tolist() for lv in forest.levels] == [[1, 3], [0], [2]]
    assert forest.up_left[0].tolist() == [0, 1] and forest.up_right[0].tolist() == [1, 1]  # 1 = zero row
    assert forest.up_left[1].tolist() == [1] and forest.up_right[1].tolist() == [0]
    assert forest.down_parent[1].tolist() == [0] and forest.down_parent[2].tolist() == [0]
    assert torch.equal(forest.unlevel([torch.tensor([1, 3]), torch.tensor([0]), torch.tensor([2])]),
                       torch.arange(4))


# ------------------------------------------------------------------------------ tree-LSTMs vs recursion
def _sgb_up_node(cell, x, left, right):
    px = cell.px(x)
    ioffu = cell.ioffux(x) + cell.ioffuh_left(left[1]) + cell.ioffuh_right(right[1])
    i, o, f_l, f_r, u, r = torch.split(ioffu, ioffu.size(1) // 6, dim=1)
    i, o, f_l, f_r, u, r = (torch.sigmoid(i), torch.sigmoid(o), torch.sigmoid(f_l), torch.sigmoid(f_r),
                            torch.tanh(u), torch.sigmoid(r))
    c = i * u + f_l * left[0] + f_r * right[0]
    h = o * torch.tanh(c)
    return c, r * h + (1 - r) * px


def _sgb_down_node(cell, x, parent):
    px = cell.px(x)
    iofu = cell.iofux(x) + cell.iofuh(parent[1])
    i, o, f, u, r = torch.split(iofu, iofu.size(1) // 5, dim=1)
    i, o, f, u, r = torch.sigmoid(i), torch.sigmoid(o), torch.sigmoid(f), torch.tanh(u), torch.sigmoid(r)
    c = i * u + f * parent[0]
    h = o * torch.tanh(c)
    return c, r * h + (1 - r) * px


def _recursive(forest_local, offsets, x, up, down, decoder=None, feats_dec=None):
    """SGB's node-by-node recursion over the binary trees (global indices)."""
    n = x.shape[0]
    glob_parent = torch.where(forest_local.bin_parent >= 0, forest_local.bin_parent + offsets, forest_local.bin_parent)
    left = {int(p): v for v, p in enumerate(glob_parent.tolist()) if p >= 0 and forest_local.is_left[v]}
    right = {int(p): v for v, p in enumerate(glob_parent.tolist()) if p >= 0 and not forest_local.is_left[v]}
    roots = [v for v in range(n) if glob_parent[v] < 0]
    hu, hd = {}, {}

    def visit_up(v):
        for ch in (left.get(v), right.get(v)):
            if ch is not None:
                visit_up(ch)
        z = x.new_zeros(1, up.h_dim)
        lst = hu[left[v]] if v in left else (z, z)
        rst = hu[right[v]] if v in right else (z, z)
        hu[v] = _sgb_up_node(up, x[v:v + 1], lst, rst)

    def visit_down(v, parent_state):
        hd[v] = _sgb_down_node(down, x[v:v + 1], parent_state)
        for ch in (left.get(v), right.get(v)):
            if ch is not None:
                visit_down(ch, hd[v])

    dec = {}

    def visit_dec(v, parent_state, parent_emb):
        cell = decoder.decoderLSTM
        c, h = _sgb_down_node(cell, torch.cat([feats_dec[v:v + 1], parent_emb.view(1, -1)], 1), parent_state)
        dist = decoder.out(h)
        label = int(F.softmax(dist.view(-1), 0)[1:].argmax()) + 1
        dec[v] = (dist, label)
        for ch in (left.get(v), right.get(v)):
            if ch is not None:
                visit_dec(ch, (c, h), decoder.obj_embed.weight[label + 1])

    for r in roots:
        visit_up(r)
        z = x.new_zeros(1, down.h_dim)
        visit_down(r, (z, z))
        if decoder is not None:
            z = x.new_zeros(1, decoder.hidden_dim)
            visit_dec(r, (z, z), decoder.obj_embed.weight[0])
    out = torch.cat([torch.cat([hu[v][1], hd[v][1]], 1) for v in range(n)])
    if decoder is None:
        return out, None
    return out, (torch.cat([dec[v][0] for v in range(n)]), torch.tensor([dec[v][1] for v in range(n)]))


def test_level_by_level_tree_lstms_equal_sgb_recursion():
    torch.manual_seed(0)
    pred = _predictor("sgcls").eval()
    ctx = pred.context_layer
    num_objs = [7, 3, 1, 5]
    g = torch.Generator().manual_seed(3)
    padded = torch.rand(len(num_objs), 7, 7, generator=g)
    forest = vctree_forest(padded, num_objs)
    tree = forest.binary()
    assert tree.num_levels > 2
    x = torch.randn(sum(num_objs), D + E + 128, requires_grad=True)
    layer = ctx.obj_ctx_rnn.multi_layer_lstm[0]
    got = ctx.obj_ctx_rnn(x, tree, len(num_objs))
    feats_dec = torch.randn(sum(num_objs), D + E + 128 + H)
    dists, commits = ctx.decoder_rnn(feats_dec, tree, len(num_objs))
    exp, (exp_dists, exp_commits) = _recursive(forest, forest.offsets(), x, layer.treeLSTM_foreward.treeLSTM,
                                               layer.treeLSTM_backward.treeLSTM, ctx.decoder_rnn, feats_dec)
    assert torch.allclose(got, exp, atol=1e-6)
    assert torch.allclose(dists, exp_dists, atol=1e-6) and torch.equal(commits, exp_commits)
    # the gradients too
    w = torch.randn_like(got)
    g1 = torch.autograd.grad((got * w).sum(), [x, layer.treeLSTM_foreward.treeLSTM.ioffuh_right.weight])
    g2 = torch.autograd.grad((exp * w).sum(), [x, layer.treeLSTM_foreward.treeLSTM.ioffuh_right.weight])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))


def test_tree_lstm_init_follows_sgb():
    pred = _predictor("sgcls")
    layer = pred.context_layer.obj_ctx_rnn.multi_layer_lstm[0]
    up, down = layer.treeLSTM_foreward.treeLSTM, layer.treeLSTM_backward.treeLSTM
    h = H // 2
    assert torch.equal(up.ioffuh_left.bias[2 * h:4 * h], torch.full((2 * h,), 0.5))
    assert float((up.ioffuh_left.bias[:2 * h].abs().sum() + up.ioffux.bias.abs().sum()).detach()) == 0
    assert torch.equal(down.iofuh.bias[2 * h:3 * h], torch.ones(h))
    # block-orthogonal: each [h, in] row block has orthonormal rows (h <= in)
    for blk in up.ioffux.weight.detach().split(h):
        assert torch.allclose(blk @ blk.t(), torch.eye(h), atol=1e-5)


# ------------------------------------------------------------------------------ scores and binary loss
def test_scores_and_binary_loss_follow_sgb_formulas():
    torch.manual_seed(0)
    pred = _predictor("sgcls").train()
    ctx = pred.context_layer
    props = [_image(4, 1), _image(3, 2), _image(0, 7)]
    x, pairs, union, rel_labels = _inputs(props)
    out = pred(x, props, pairs, union, obj_labels=_labels(props), rel_labels=rel_labels)
    with torch.no_grad():
        c_out = ctx(x, props, None)
        # SGB's vctree_score_net, literally: [N, N, 3H+1] inputs
        dist = torch.cat([p.logits for p in props]).softmax(1)
        obj_embed = dist @ ctx.obj_embed1.weight
        boxes = [p.boxes.tensor for p in props]
        feat = torch.cat([ctx.obj_reduce(x), ctx.emb_reduce(obj_embed), ctx.box_embed(encode_box_info(
            boxes, [p.image_size for p in props])), ctx.overlap_embed(overlap_info(boxes))], 1)
        feat = F.relu(ctx.score_pre(feat))
        sub_all, obj_all = F.relu(ctx.score_sub(feat)), F.relu(ctx.score_obj(feat))
        losses, start = [], 0
        for b, (n, pr, lab) in enumerate(zip([4, 3], pairs, rel_labels)):
            sl = slice(start, start + n)
            sub = sub_all[sl].view(1, n, H).expand(n, n, H)
            obj = obj_all[sl].view(n, 1, H).expand(n, n, H)
            d = dist[sl]
            joint = (d.view(1, n, -1).expand(n, n, -1).unsqueeze(2) * d.view(n, 1, -1).expand(n, n, -1).unsqueeze(3))
            co = ctx.bi_freq_prior(joint.reshape(n * n, -1)).view(n, n)
            vis = ctx.vision_prior(torch.cat([sub * obj, sub, obj, co.unsqueeze(-1)], -1).view(n * n, -1)).view(n, n)
            logit = torch.sigmoid(vis) * co
            assert torch.allclose(c_out.binary_logits[b, :n, :n], logit, atol=1e-5)
            assert torch.allclose(c_out.scores[b, :n, :n], torch.sigmoid(logit), atol=1e-6)
            target = torch.zeros(n, n)
            fg = pr[lab > 0]
            target[fg[:, 0], fg[:, 1]] = 1
            target[fg[:, 1], fg[:, 0]] = 1
            losses.append(F.binary_cross_entropy_with_logits(logit, target))
            start += n
    # mean over the images with objects (the empty third image counts nowhere)
    assert torch.allclose(out.extra_losses["loss_binary"], sum(losses) / 2, atol=1e-5)
    # bi_freq_prior starts at the symmetrised sum over predicates of pred_dist
    co = torch.from_numpy(_pred_dist()).sum(-1)
    assert torch.allclose(ctx.bi_freq_prior.weight.view(C1, C1), co + co.t())


def test_binary_targets_and_loss_from_rel_binarys():
    pairs = [torch.tensor([[0, 1], [2, 0], [1, 2]]), torch.zeros(0, 2, dtype=torch.long)]
    labels = [torch.tensor([3, 1, 0]), torch.zeros(0, dtype=torch.long)]
    t = binary_targets([3, 2], pairs, labels)
    assert t.shape == (2, 3, 3)
    assert t[0].tolist() == [[0, 1, 1], [1, 0, 0], [1, 0, 0]] and float(t[1].sum()) == 0
    given = [torch.tensor([[0, 2, 0], [2, 0, 0], [0, 0, 0]]), torch.ones(2, 2)]
    assert torch.equal(binary_targets([3, 2], rel_binarys=given)[1, :2, :2], torch.ones(2, 2))
    torch.manual_seed(0)
    pred = _predictor("predcls").train()
    props = [_image(3, 1), _image(2, 2)]
    x, pr, union, _ = _inputs(props)
    a = pred(x, props, pr, union, obj_labels=_labels(props), rel_binarys=given).extra_losses["loss_binary"]
    logits = pred.context_layer(x, props, _labels(props)).binary_logits
    tg = binary_targets([3, 2], rel_binarys=given)
    exp = (F.binary_cross_entropy_with_logits(logits[0], tg[0])
           + F.binary_cross_entropy_with_logits(logits[1, :2, :2], tg[1, :2, :2])) / 2
    assert torch.allclose(a, exp, atol=1e-6)


def test_no_relation_targets_warns_once_and_skips_the_loss(caplog):
    pred = _predictor("predcls").train()
    props = [_image(3, 1)]
    x, pairs, union, _ = _inputs(props)
    with caplog.at_level(logging.WARNING, logger="sgg.modeling.relation.predictors.vctree"):
        out = pred(x, props, pairs, union, obj_labels=_labels(props))
        pred(x, props, pairs, union, obj_labels=_labels(props))
    assert not out.extra_losses
    assert sum("rel_labels" in r.getMessage() for r in caplog.records) == 1


def test_overlap_info_hand_case():
    boxes = [torch.tensor([[0.0, 0.0, 9.0, 9.0], [5.0, 5.0, 14.0, 14.0], [100.0, 100.0, 101.0, 103.0]])]
    info = overlap_info(boxes)
    s = 1024.0 ** 2
    inter01 = 5.0 * 5.0  # "+1" widths: [5, 9] x [5, 9]
    iou01 = inter01 / (100 + 100 - inter01 + 1e-9)
    exp0 = [2, (100 + inter01) / s, 1 + iou01, (100 + inter01) / s / 2, (1 + iou01) / 2, 81 / s]
    exp2 = [1, 8 / s, 1, 8 / s, 1, 3 / s]  # its own box only; area without "+1": 1 x 3
    assert torch.allclose(info[0], torch.tensor(exp0), atol=1e-6)
    assert torch.allclose(info[2], torch.tensor(exp2), atol=1e-6)
    # the padding of a smaller image in the batch does not leak
    both = overlap_info([boxes[0][:1], boxes[0]])
    assert torch.allclose(both[1:], info, atol=1e-7) and float(both[0, 0]) == 1


# ------------------------------------------------------------------------------ quirk: saturated scores
def test_saturated_scores_default_and_paper_option():
    # VG-like statistics: most predicates at log(1e-3), column 0 (no relation) dominant
    pd = np.full((C1, C1, 51), np.log(1e-3), dtype=np.float32)
    pd[..., 0] = np.log(0.9 + 1e-3)
    pd[..., 1] = np.log(0.1 + 1e-3)
    args = dict(num_obj_classes=C1, num_rel_classes=51, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                embed_dim=E, pred_dist=pd)
    props = [_image(5, 1)]
    x = torch.randn(5, D)
    torch.manual_seed(0)
    sgb = VCTreePredictor(mode="sgcls", **args).eval()
    with torch.no_grad():
        out = sgb.context_layer(x, props, None)
    co = float(sgb.context_layer.bi_freq_prior.weight[0, 0].detach())
    assert co < -600  # ~2 * 50 * ln(1e-3)
    # the logit sigmoid(vis) * co is never positive and co also enters vis (|w * co| ~ 100): the
    # scores saturate at 0.5 (sigmoid(vis) ~ 0) or 0 (sigmoid(vis) ~ 1), all tied
    assert float(out.binary_logits.max()) <= 0
    top, low = float(out.scores.max()), float(out.scores.min())
    assert top == low and (top == 0.5 or top < 1e-30)
    # all scores tied: the root 0 takes every node in index order (the binary tree is a chain)
    assert out.forest.parent.tolist() == [-1, 0, 0, 0, 0]
    torch.manual_seed(0)
    paper = VCTreePredictor(mode="sgcls", tree_score="paper", **args).eval()
    w = paper.context_layer.bi_freq_prior.weight.view(C1, C1)
    assert torch.allclose(w, torch.full((C1, C1), 0.1), atol=1e-5)  # P(related | a, b)
    with torch.no_grad():
        out = paper.context_layer(x, props, None)
    assert float(out.scores.min()) > 0 and float(out.scores.max()) < 0.1 + 1e-6
    assert torch.allclose(out.scores, torch.sigmoid(out.binary_logits) * 0.1, atol=1e-6)
    assert len(set(out.scores.flatten().tolist())) == 25  # no ties
    # without statistics the "paper" prior is 1 (the score is the vision gate)
    plain = _predictor("sgcls", tree_score="paper", pred_dist=None)
    assert float(plain.context_layer.bi_freq_prior.weight.detach().min()) == 1


def test_paper_option_trains_the_vision_gate():
    torch.manual_seed(0)
    pred = _predictor("sgcls", tree_score="paper", obj_layers=2).train()
    props = [_image(6, 1), _image(3, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    out = pred(x, props, pairs, union, obj_labels=_labels(props), rel_labels=rel_labels)
    (sum(r.sum() for r in out.rel_logits) + sum(o.logsumexp(1).sum() for o in out.obj_logits)
     + out.extra_losses["loss_binary"]).backward()
    for name, p in pred.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    related = 1 - (torch.from_numpy(_pred_dist())[..., 0].exp() - 1e-3)
    assert torch.allclose(pred.context_layer.bi_freq_prior.weight.detach().view(C1, C1),
                          (related + related.t()) / 2, atol=1e-6)
    with torch.no_grad():  # logit = vis, score = sigmoid(vis) * co
        c = pred.context_layer(x, props, None)
        tg = binary_targets([6, 3], pairs, rel_labels)
        exp = (F.binary_cross_entropy_with_logits(c.binary_logits[0], tg[0])
               + F.binary_cross_entropy_with_logits(c.binary_logits[1, :3, :3], tg[1, :3, :3])) / 2
    assert torch.allclose(out.extra_losses["loss_binary"].detach(), exp, atol=1e-6)


def test_fixed_seed_training_outputs_identical():
    def run():
        torch.manual_seed(3)
        pred = _predictor("sgcls", dropout_rate=0.5, obj_layers=2, rel_layers=2).train()
        props = [_image(5, 1), _image(3, 2)]
        x, pairs, union, rel_labels = _inputs(props)
        torch.manual_seed(5)
        out = pred(x, props, pairs, union, obj_labels=_labels(props), rel_labels=rel_labels)
        return torch.cat(out.rel_logits).detach(), torch.cat(out.obj_logits).detach()

    (r1, o1), (r2, o2) = run(), run()
    assert torch.equal(r1, r2) and torch.equal(o1, o2)


# ------------------------------------------------------------------------------ equivariance, batching
@pytest.mark.parametrize("mode", MODES)
def test_eval_outputs_equivariant_under_object_permutation(mode):
    torch.manual_seed(0)
    pred = _predictor(mode).eval()
    a = _image(6, 11)
    x, pairs, union, _ = _inputs([a])
    perm = torch.tensor([3, 0, 5, 1, 4, 2])
    inv = torch.argsort(perm)
    b = Instances(a.image_size, boxes=Boxes(a.boxes.tensor[perm]), labels=a.labels[perm], logits=a.logits[perm])
    # pair (s, o) of b is pair (perm[s], perm[o]) of a
    pa = pairs[0]
    row_of = {tuple(p): i for i, p in enumerate(pa.tolist())}
    pb = torch.stack([inv[pa[:, 0]], inv[pa[:, 1]]], 1)
    union_b = union[torch.tensor([row_of[(int(perm[s]), int(perm[o]))] for s, o in pb.tolist()])]
    with torch.no_grad():
        out_a = pred(x, [a], [pa], union, obj_labels=a.labels)
        out_b = pred(x[perm], [b], [pb], union_b, obj_labels=b.labels)
    assert torch.allclose(out_a.obj_logits[0][perm], out_b.obj_logits[0], atol=1e-5)
    assert torch.allclose(out_a.rel_logits[0][torch.tensor([row_of[(int(perm[s]), int(perm[o]))]
                                                            for s, o in pb.tolist()])],
                          out_b.rel_logits[0], atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_batched_images_do_not_interact(mode):
    torch.manual_seed(0)
    pred = _predictor(mode).eval()
    a, b = _image(5, 10), _image(2, 11)
    xa, pa, ua, _ = _inputs([a], seed=1)
    xb, pb, ub, _ = _inputs([b], seed=2)
    with torch.no_grad():
        alone = pred(xa, [a], pa, ua, obj_labels=a.labels)
        both = pred(torch.cat([xb, xa]), [b, a], pb + pa, torch.cat([ub, ua]),
                    obj_labels=torch.cat([b.labels, a.labels]))
    assert torch.allclose(alone.rel_logits[0], both.rel_logits[1], atol=1e-5)
    assert torch.allclose(alone.obj_logits[0], both.obj_logits[1], atol=1e-5)


def test_images_with_zero_and_one_box():
    pred = _predictor("sgcls").eval()
    props = [_image(0, 1), _image(1, 2), _image(0, 3)]
    x, pairs, union, _ = _inputs(props)
    with torch.no_grad():
        out = pred(x, props, pairs, union)
    assert [r.shape for r in out.rel_logits] == [(0, P1)] * 3 and [o.shape[0] for o in out.obj_logits] == [0, 1, 0]
    empty = [_image(0, 1)]
    x, pairs, union, labels = _inputs(empty)
    out = _predictor("sgdet").train()(x, empty, pairs, union, obj_labels=torch.zeros(0, dtype=torch.long),
                                      rel_labels=labels)
    assert out.rel_logits[0].shape == (0, P1) and out.rel_logits[0].requires_grad
    assert float(out.extra_losses["loss_binary"].detach()) == 0 and out.extra_losses["loss_binary"].requires_grad


def test_bfloat16_autocast_on_cpu():
    torch.manual_seed(0)
    pred = _predictor("sgdet").train()
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union, labels = _inputs(props)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x.bfloat16(), props, pairs, union.bfloat16(), obj_labels=_labels(props), rel_labels=labels)
    assert all(torch.isfinite(r.float()).all() for r in out.rel_logits)
    (sum(r.float().sum() for r in out.rel_logits) + out.extra_losses["loss_binary"]).backward()
    assert pred.context_layer.obj_ctx_rnn.multi_layer_lstm[0].treeLSTM_foreward.treeLSTM.px.weight.grad is not None


# ------------------------------------------------------------------------------ two-stage model
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    from sgg.data.build import build_dataset
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics

    root = make_synthvg(tmp_path_factory.mktemp("vctree_data"), num_images=12)
    out = str(tmp_path_factory.mktemp("vctree_out"))
    stats = get_dataset_statistics(get_dataset_files(f"{DATASET}_train", root), cache_dir=None, num_val_im=2)
    cfg = tiny_config(root, out, "predcls")
    splits = {"train": build_dataset(cfg, f"{DATASET}_train", is_train=True, mode="predcls"),
              "test": build_dataset(cfg, f"{DATASET}_test", is_train=False, mode="predcls")}
    return root, out, stats, splits


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_two_stage_train_step_and_eval(mode, two_stage):
    from sgg.data.mapper import SceneGraphMapper
    from sgg.modeling.meta_arch import build_sgg_model

    root, out, stats, splits = two_stage
    cfg = tiny_config(root, out, mode, "MODEL.ROI_RELATION_HEAD.PREDICTOR", "VCTreePredictor")
    torch.manual_seed(0)
    ds = splits["train"]
    model = build_sgg_model(cfg, stats, ds.num_classes, ds.num_predicates)
    head = model.relation_head
    assert isinstance(head.predictor, VCTreePredictor) and head.predictor.mode == mode
    idx = [i for i in range(len(ds)) if len(ds[i]["relations"]) and len(ds[i]["boxes"]) >= 2][:2]
    mapper = SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    batch = [mapper(ds[i]) for i in idx]
    if mode == "sgdet":  # detections = the GT boxes, as a trained detector would give
        def detect(images, image_sizes, features):
            res = []
            for d, size in zip(batch, image_sizes):
                bx, lab = d["instances"].gt_boxes.tensor.clone(), d["instances"].gt_classes.clone()
                res.append(Instances(size, boxes=Boxes(bx), labels=lab, scores=torch.full((len(lab),), 0.9),
                                     logits=4.0 * F.one_hot(lab, ds.num_classes).float()))
            return res
        model.detector.detect = detect
    model.train()  # the head passes the sampled predicate labels (uses_rel_labels) -> loss_binary
    losses = model(batch)
    assert {"loss_rel", "loss_binary"} <= set(losses)
    if mode != "predcls":
        assert float(losses["loss_refine_obj"].detach()) > 0 and losses["loss_refine_obj"].requires_grad
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    sum(v for k, v in losses.items() if k.startswith("loss")).backward()
    ctx = head.predictor.context_layer
    for p in (head.predictor.ctx_compress.weight, ctx.score_pre.weight, ctx.bi_freq_prior.weight,
              ctx.edge_ctx_rnn.multi_layer_lstm[0].treeLSTM_backward.treeLSTM.iofux.weight):
        assert p.grad is not None and float(p.grad.abs().sum()) > 0

    model.eval()
    test_mapper = SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)
    inputs = [test_mapper(splits["test"][i]) for i in range(2)]
    with torch.no_grad():
        graphs = model(inputs)
    assert len(graphs) == 2
    for g, d in zip(graphs, inputs):
        assert g.image_size == (d["height"], d["width"])
        n = len(g)
        assert g.rel_scores.shape == (g.num_relations, ds.num_predicates)
        if mode == "predcls":
            assert g.num_relations == n * (n - 1)
        if g.num_relations:
            assert torch.allclose(g.rel_scores.sum(1), torch.ones(g.num_relations), atol=1e-5)
