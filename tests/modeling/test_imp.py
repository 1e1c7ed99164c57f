"""IMPPredictor (iterative message passing): shapes, gradients, parameter count, SGB's dense
formulation as an oracle, permutation equivariance, batching, and a tiny two-stage model (CPU)."""
import math

import pytest
import torch

from sgg.config import get_default_config
from sgg.modeling.relation import RELATION_PREDICTOR_REGISTRY
from sgg.modeling.relation.predictors import IMPPredictor
from sgg.structures import Boxes, Instances

try:
    from .two_stage_fixtures import DATASET, make_synthvg, tiny_config
except ImportError:  # tests/ is not a package
    from two_stage_fixtures import DATASET, make_synthvg, tiny_config

C1, P1, D, H, POOL, U = 5, 4, 12, 8, 10, 6  # C+1, P+1, in_channels, hidden, pooling, union
MODES = ("predcls", "sgcls", "sgdet")


def _predictor(mode, seed=0, **kw):
    args = dict(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                union_dim=U, mode=mode)
    args.update(kw)
    torch.manual_seed(seed)
    return IMPPredictor(**args)


def _image(n, seed, size=(60, 80)):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    return Instances(size, boxes=Boxes(torch.cat([xy, xy + wh], 1)), labels=torch.randint(1, C1, (n,), generator=g),
                     logits=torch.randn(n, C1, generator=g))


def _inputs(props, seed=0, union_dim=U):
    g = torch.Generator().manual_seed(seed)
    n = sum(len(p) for p in props)
    pairs = [torch.stack(torch.where(~torch.eye(len(p), dtype=torch.bool)), 1) for p in props]
    m = sum(len(r) for r in pairs)
    return torch.randn(n, D, generator=g), pairs, torch.randn(m, union_dim, generator=g)


def _labels(props):
    return torch.cat([p.labels for p in props])


def _num_params(module):
    return sum(p.numel() for p in module.parameters())


# ------------------------------------------------------------------------------------ registry
def test_registered_and_validates():
    assert RELATION_PREDICTOR_REGISTRY.get("IMPPredictor") is IMPPredictor
    assert IMPPredictor.uses_union_features is True
    with pytest.raises(ValueError):
        _predictor("detection")
    with pytest.raises(ValueError, match="num_iter"):
        _predictor("sgcls", num_iter=0)
    props = [_image(3, 1)]
    x, pairs, union = _inputs(props)
    with pytest.raises(ValueError, match="union_features"):
        _predictor("sgcls")(x, props, pairs, None)
    with pytest.raises(ValueError, match="obj_labels"):
        _predictor("predcls")(x, props, pairs, union)


def test_from_config_uses_sgb_hard_coded_sizes():
    cfg = get_default_config()
    rh = cfg.MODEL.ROI_RELATION_HEAD
    rh.CONTEXT_HIDDEN_DIM, rh.CONTEXT_POOLING_DIM = 16, 20  # hidden is ignored, as in SGB
    pred = IMPPredictor.from_config(cfg, in_channels=D, union_dim=U, num_obj_classes=C1, num_rel_classes=P1,
                                    mode="sgdet")
    ctx = pred.context_layer
    assert ctx.hidden_dim == 512 and ctx.num_iter == 3 and pred.mode == "sgdet"
    assert ctx.edge_unary.in_features == 20 and tuple(pred.up_dim.weight.shape) == (20, U)
    assert ctx.obj_fc.out_features == C1 and ctx.rel_fc.out_features == P1
    pred = IMPPredictor.from_config(cfg, in_channels=20, union_dim=20, num_obj_classes=C1, num_rel_classes=P1,
                                    mode="predcls")
    assert pred.up_dim is None and pred.context_layer.obj_fc is None
    # the plain constructor keeps SGB's values as defaults
    plain = IMPPredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=D)
    assert plain.context_layer.hidden_dim == 512 and plain.context_layer.num_iter == 3


# --------------------------------------------------------------------------- shapes, gradients
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("training", [True, False])
def test_output_shapes(mode, training):
    pred = _predictor(mode).train(training)
    props = [_image(4, 1), _image(3, 2), _image(1, 3), _image(0, 4)]
    x, pairs, union = _inputs(props)
    labels = _labels(props)
    with torch.set_grad_enabled(training):
        out = pred(x, props, pairs, union, obj_labels=labels if (training or mode == "predcls") else None)
    assert [tuple(o.shape) for o in out.obj_logits] == [(4, C1), (3, C1), (1, C1), (0, C1)]
    assert [tuple(r.shape) for r in out.rel_logits] == [(12, P1), (6, P1), (0, P1), (0, P1)]
    assert out.extra_losses == {}
    if mode == "predcls":
        assert torch.equal(torch.cat(out.obj_labels), labels)
        onehot = torch.full((len(labels), C1), -1000.0)
        onehot[torch.arange(len(labels)), labels] = 1000.0
        assert torch.equal(torch.cat(out.obj_logits), onehot)
    else:
        assert out.obj_labels is None  # the post-processor chooses (argmax / class-aware NMS), as SGB


@pytest.mark.parametrize("mode", MODES)
def test_every_parameter_learns_and_unused_modules_do_not_exist(mode):
    pred = _predictor(mode).train()
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union = _inputs(props)
    out = pred(x, props, pairs, union, obj_labels=_labels(props))
    g = torch.Generator().manual_seed(1)
    rel = torch.cat(out.rel_logits)
    loss = (rel * torch.randn(rel.shape, generator=g)).sum()
    if mode != "predcls":
        loss = loss + torch.cat(out.obj_logits).logsumexp(1).sum()
    loss.backward()
    names = [n for n, _ in pred.named_parameters()]
    for name, p in pred.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert ("context_layer.obj_fc.weight" in names) == (mode != "predcls")
    assert "up_dim.weight" in names and "context_layer.out_edge_w_fc.0.weight" in names
    # one round in PredCls: the node update never reaches a relation logit, its gates are not built
    one = _predictor(mode, num_iter=1).train()
    out = one(x, props, pairs, union, obj_labels=_labels(props))
    loss = (torch.cat(out.rel_logits) * torch.randn(rel.shape, generator=g)).sum()
    if mode != "predcls":
        loss = loss + torch.cat(out.obj_logits).logsumexp(1).sum()
    loss.backward()
    for name, p in one.named_parameters():
        if mode == "predcls" and name == "context_layer.node_gru.weight_hh":
            # the node GRU then runs once, on the zero initial state: W_hh @ 0 has no gradient
            assert p.grad is None or not p.grad.any()
            continue
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert (one.context_layer.out_edge_w_fc is None) == (mode == "predcls")
    assert (one.context_layer.in_edge_w_fc is None) == (mode == "predcls")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("d,h,pd,u,c,r,iters", [(D, H, POOL, U, C1, P1, 3), (D, H, POOL, POOL, C1, P1, 3),
                                                (7, 6, 9, 9, 4, 3, 1), (7, 6, 9, 5, 4, 3, 2)])
def test_parameter_count_closed_form(mode, d, h, pd, u, c, r, iters):
    pred = IMPPredictor(num_obj_classes=c, num_rel_classes=r, in_channels=d, hidden_dim=h, pooling_dim=pd,
                        union_dim=u, num_iter=iters, mode=mode)
    # obj_unary D*H+H, edge_unary Pd*H+H, node and edge GRUCell 2*(6H^2+6H), 4 gates 4*(2H+1),
    # rel_fc H*R+R; + obj_fc H*C+C outside PredCls; + up_dim U*Pd+Pd when U != Pd;
    # - the two node-update gates 2*(2H+1) in PredCls with one round
    expected = d * h + h + pd * h + h + 2 * (6 * h * h + 6 * h) + 4 * (2 * h + 1) + h * r + r
    if mode != "predcls":
        expected += h * c + c
    if u != pd:
        expected += u * pd + pd
    if mode == "predcls" and iters == 1:
        expected -= 2 * (2 * h + 1)
    assert _num_params(pred) == expected


def test_parameter_count_sgb_sizes():
    """VG150 X-101-FPN: D = U = Pd = 4096, H = 512, C+1 = 151, P+1 = 51."""
    base = 2 * (4096 * 512 + 512) + 2 * (6 * 512 * 512 + 6 * 512) + 4 * (2 * 512 + 1) + 512 * 51 + 51
    assert base == 7_377_463
    with torch.device("meta"):
        predcls = IMPPredictor(mode="predcls")
        sgdet = IMPPredictor(mode="sgdet")
        no_pool = IMPPredictor(mode="sgcls", pooling_dim=None, union_dim=1024)
    assert _num_params(predcls) == base
    assert _num_params(sgdet) == base + 512 * 151 + 151 == 7_454_926
    assert no_pool.up_dim is None and no_pool.context_layer.edge_unary.in_features == 1024


def test_initialisation():
    pred = _predictor("sgcls")
    ctx = pred.context_layer
    for lin in (ctx.obj_unary, ctx.edge_unary, ctx.obj_fc, ctx.rel_fc):  # make_fc: Kaiming-uniform a=1
        bound = math.sqrt(3.0 / lin.in_features)
        w = float(lin.weight.detach().abs().max())
        assert 0.5 * bound < w <= bound
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    assert torch.equal(pred.up_dim.bias, torch.zeros_like(pred.up_dim.bias))


# ---------------------------------------------------------------------------------- the oracle
def _sgb_reference(pred, x, union, pairs, num_objs):
    """SGB's ``IMPContext.forward`` written as there: dense [N, M] incidence matrices, lists of
    node / edge factors, every round's node update (also the last one in PredCls)."""
    ctx = pred.context_layer
    offsets = torch.tensor([0] + num_objs[:-1]).cumsum(0)
    gp = torch.cat([p + o for p, o in zip(pairs, offsets)])
    n, m = x.shape[0], gp.shape[0]
    sub2rel = torch.zeros(n, m)
    obj2rel = torch.zeros(n, m)
    sub2rel[gp[:, 0], torch.arange(m)] = 1.0
    obj2rel[gp[:, 1], torch.arange(m)] = 1.0
    union = pred.up_dim(union) if pred.up_dim is not None else union
    obj_rep = ctx.obj_unary(x)
    rel_rep = torch.relu(ctx.edge_unary(union))
    vert = [ctx.node_gru(obj_rep, torch.zeros(n, ctx.hidden_dim))]
    edge = [ctx.edge_gru(rel_rep, torch.zeros(m, ctx.hidden_dim))]
    for i in range(ctx.num_iter):
        sv, ov = vert[i][gp[:, 0]], vert[i][gp[:, 1]]
        ws = ctx.sub_vert_w_fc(torch.cat((sv, edge[i]), 1)) * sv
        wo = ctx.obj_vert_w_fc(torch.cat((ov, edge[i]), 1)) * ov
        edge.append(ctx.edge_gru(ws + wo, edge[i]))
        if ctx.out_edge_w_fc is not None:
            pre_out = ctx.out_edge_w_fc(torch.cat((sv, edge[i]), 1)) * edge[i]
            pre_in = ctx.in_edge_w_fc(torch.cat((ov, edge[i]), 1)) * edge[i]
            vert.append(ctx.node_gru(sub2rel @ pre_out + obj2rel @ pre_in, vert[i]))
    obj = ctx.obj_fc(vert[-1]) if ctx.obj_fc is not None else None
    return obj, ctx.rel_fc(edge[-1])


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_iter", [1, 3])
def test_matches_sgb_dense_formulation(mode, num_iter):
    pred = _predictor(mode, num_iter=num_iter).eval()
    props = [_image(4, 1), _image(0, 5), _image(3, 2)]
    x, pairs, union = _inputs(props)
    pairs[0] = pairs[0][[0, 3, 5, 7, 11]]  # a sparse graph: some objects in no pair
    union = torch.cat([union[[0, 3, 5, 7, 11]], union[12:]])
    with torch.no_grad():
        out = pred(x, props, pairs, union, obj_labels=_labels(props))
        ref_obj, ref_rel = _sgb_reference(pred, x, union, pairs, [len(p) for p in props])
    assert torch.allclose(torch.cat(out.rel_logits), ref_rel, atol=1e-5)
    if mode != "predcls":
        assert torch.allclose(torch.cat(out.obj_logits), ref_obj, atol=1e-5)


# ----------------------------------------------------------------------- symmetry, batching
@pytest.mark.parametrize("mode", MODES)
def test_eval_equivariant_under_object_and_pair_permutation(mode):
    pred = _predictor(mode).eval()
    props = [_image(5, 7)]
    x, pairs, union = _inputs(props)
    perm = torch.tensor([3, 0, 4, 2, 1])  # new object k is old object perm[k]
    inv = torch.argsort(perm)
    rperm = torch.randperm(len(pairs[0]), generator=torch.Generator().manual_seed(0))
    p = props[0]
    props2 = [Instances(p.image_size, boxes=Boxes(p.boxes.tensor[perm]), labels=p.labels[perm],
                        logits=p.logits[perm])]
    pairs2 = [inv[pairs[0]][rperm]]
    with torch.no_grad():
        a = pred(x, props, pairs, union, obj_labels=p.labels)
        b = pred(x[perm], props2, pairs2, union[rperm], obj_labels=p.labels[perm])
    assert torch.allclose(b.rel_logits[0], a.rel_logits[0][rperm], atol=1e-5)
    assert torch.allclose(b.obj_logits[0], a.obj_logits[0][perm], atol=1e-5)


@pytest.mark.parametrize("mode", MODES)
def test_batched_images_do_not_interact(mode):
    pred = _predictor(mode).eval()
    a, b = _image(5, 10), _image(2, 11)
    xa, pa, ua = _inputs([a], seed=1)
    xb, pb, ub = _inputs([b], seed=2)
    with torch.no_grad():
        alone = pred(xa, [a], pa, ua, obj_labels=a.labels)
        both = pred(torch.cat([xb, xa]), [b, a], pb + pa, torch.cat([ub, ua]),
                    obj_labels=torch.cat([b.labels, a.labels]))
    assert torch.allclose(alone.rel_logits[0], both.rel_logits[1], atol=1e-5)
    assert torch.allclose(alone.obj_logits[0], both.obj_logits[1], atol=1e-5)


def test_images_with_no_object_or_no_pair():
    props = [_image(0, 1), _image(1, 2), _image(0, 3)]
    x, pairs, union = _inputs(props)
    with torch.no_grad():
        out = _predictor("sgcls").eval()(x, props, pairs, union)
    assert [tuple(r.shape) for r in out.rel_logits] == [(0, P1)] * 3
    assert [o.shape[0] for o in out.obj_logits] == [0, 1, 0]
    empty = [_image(0, 1)]
    x, pairs, union = _inputs(empty)
    out = _predictor("sgdet").train()(x, empty, pairs, union, obj_labels=torch.zeros(0, dtype=torch.long))
    assert out.rel_logits[0].shape == (0, P1) and out.rel_logits[0].requires_grad


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_bfloat16_autocast_on_cpu(mode):
    pred = _predictor(mode).train()
    props = [_image(3, 1), _image(3, 2)]
    x, pairs, union = _inputs(props)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x.bfloat16(), props, pairs, union.bfloat16(), obj_labels=_labels(props))
    assert all(torch.isfinite(r.float()).all() for r in out.rel_logits)
    sum(r.float().sum() for r in out.rel_logits).backward()
    assert pred.context_layer.node_gru.weight_ih.grad is not None


@pytest.mark.gpu
def test_cuda_matches_cpu_and_runs_under_float16_autocast():
    pred = _predictor("sgcls").eval()
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union = _inputs(props)
    with torch.no_grad():
        ref = pred(x, props, pairs, union)
        dev = torch.device("cuda")
        gpu = pred.to(dev)(x.to(dev), [p.to(dev) for p in props], [r.to(dev) for r in pairs], union.to(dev))
        assert torch.allclose(torch.cat(gpu.rel_logits).cpu(), torch.cat(ref.rel_logits), atol=1e-4)
        assert torch.allclose(torch.cat(gpu.obj_logits).cpu(), torch.cat(ref.obj_logits), atol=1e-4)
        with torch.autocast("cuda", dtype=torch.float16):
            half = pred(x.to(dev), [p.to(dev) for p in props], [r.to(dev) for r in pairs], union.to(dev))
    assert all(torch.isfinite(r.float()).all() for r in half.rel_logits)
    assert torch.allclose(torch.cat(half.rel_logits).float().cpu(), torch.cat(ref.rel_logits), atol=0.05)


# ------------------------------------------------------------------------- two-stage, tiny
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    from sgg.data.build import build_dataset
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics

    root = make_synthvg(tmp_path_factory.mktemp("imp_data"), num_images=12)
    out = str(tmp_path_factory.mktemp("imp_out"))
    stats = get_dataset_statistics(get_dataset_files(f"{DATASET}_train", root), cache_dir=None, num_val_im=2)
    cfg = tiny_config(root, out, "predcls")
    splits = {"train": build_dataset(cfg, f"{DATASET}_train", is_train=True, mode="predcls"),
              "test": build_dataset(cfg, f"{DATASET}_test", is_train=False, mode="predcls")}
    return root, out, stats, splits


def _oracle_detect(model, batch, num_classes):
    """SGDet training on detections equal to the GT boxes (an untrained detector matches none)."""
    def detect(images, image_sizes, features):
        res = []
        for d, size in zip(batch, image_sizes):
            boxes = d["instances"].gt_boxes.tensor.clone()
            labels = d["instances"].gt_classes.clone()
            res.append(Instances(size, boxes=Boxes(boxes), labels=labels, scores=torch.full((len(labels),), 0.9),
                                 logits=4.0 * torch.nn.functional.one_hot(labels, num_classes).float(),
                                 boxes_per_cls=boxes[:, None, :].expand(-1, num_classes, 4).clone()))
        return res
    model.detector.detect = detect


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_two_stage_train_step_and_eval(mode, two_stage):
    from sgg.data.mapper import SceneGraphMapper
    from sgg.modeling.meta_arch import build_sgg_model

    root, out, stats, splits = two_stage
    cfg = tiny_config(root, out, mode, "MODEL.ROI_RELATION_HEAD.PREDICTOR", "IMPPredictor")
    torch.manual_seed(0)
    train, test = splits["train"], splits["test"]
    model = build_sgg_model(cfg, stats, train.num_classes, train.num_predicates)
    pred = model.relation_head.predictor
    assert isinstance(pred, IMPPredictor) and model.relation_head.union_feature_extractor is not None
    assert (pred.context_layer.obj_fc is None) == (mode == "predcls")
    # MLP_HEAD_DIM 32 -> CONTEXT_POOLING_DIM 24 through up_dim; hidden 512 whatever the config says
    assert tuple(pred.up_dim.weight.shape) == (24, 32) and pred.context_layer.hidden_dim == 512

    mapper = SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    idx = [i for i in range(len(train)) if len(train[i]["relations"]) and len(train[i]["boxes"]) >= 2][:2]
    batch = [mapper(train[i]) for i in idx]
    model.train()
    if mode == "sgdet":
        _oracle_detect(model, batch, train.num_classes)
    losses = model(batch)
    assert {"loss_rel", "loss_refine_obj"} <= set(losses)
    assert all(math.isfinite(float(v.detach())) for v in losses.values())
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    for name, p in pred.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    before = pred.context_layer.rel_fc.weight.detach().clone()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1).step()
    assert not torch.equal(before, pred.context_layer.rel_fc.weight)

    model.eval()
    test_mapper = SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)
    inputs = [test_mapper(test[i]) for i in range(min(2, len(test)))]
    with torch.no_grad():
        graphs = model(inputs)
    assert len(graphs) == len(inputs)
    for g, d in zip(graphs, inputs):
        assert g.image_size == (d["height"], d["width"])
        m = g.num_relations
        assert g.rel_scores.shape == (m, test.num_predicates)
        assert torch.allclose(g.rel_scores.sum(1), torch.ones(m), atol=1e-5)
        if mode == "predcls":
            assert m == len(g) * (len(g) - 1)
