"""PENetPredictor (PE-Net, VL-Group/PENET's PrototypeEmbeddingNetwork): shapes per protocol, gradients
and absent unused modules, closed-form parameter counts, the three prototype losses against hand
values and the reference's formulas, word vectors, the BN double update, permutation equivariance,
and a two-stage train step + eval through build_sgg_model (tiny dims, CPU)."""
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from sgg.config import get_default_config
from sgg.modeling.pretrained import load_pretrained_word_vectors
from sgg.modeling.relation import RELATION_PREDICTOR_REGISTRY
from sgg.modeling.relation.predictors.penet import (
    PENetPredictor,
    prototype_distance_loss,
    prototype_l21_loss,
    prototype_margin_loss,
)
from sgg.structures import Boxes, Instances

pytestmark = pytest.mark.usefixtures("one_thread")

# C+1, P+1, in_channels, union_dim, hidden (object branch), mlp, embed, vis2sem hidden, project_head out
C1, P1, D, U, H, M, E, V, Q = 5, 6, 12, 10, 8, 8, 6, 12, 10
OBJ_NAMES = ["__background__", "man", "horse", "traffic light", "tennis_racket"]
REL_NAMES = ["__background__", "on", "has", "next to", "riding", "wearing"]
MODES = ("predcls", "sgcls", "sgdet")


def _predictor(mode, **kw):
    args = dict(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, union_dim=U, hidden_dim=H, mlp_dim=M,
                embed_dim=E, vis2sem_dim=V, proj_dim=Q, obj_classes=OBJ_NAMES, rel_classes=REL_NAMES, mode=mode)
    args.update(kw)
    return PENetPredictor(**args)


def _image(n, seed, size=(60, 80)):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    return Instances(size, boxes=Boxes(torch.cat([xy, xy + wh], 1)),
                     labels=torch.randint(1, C1, (n,), generator=g), logits=torch.randn(n, C1, generator=g))


def _inputs(props, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = sum(len(p) for p in props)
    pairs = [torch.stack(torch.where(~torch.eye(len(p), dtype=torch.bool)), 1) for p in props]
    m = sum(len(r) for r in pairs)
    labels = [torch.randint(0, P1, (len(r),), generator=g) for r in pairs]
    return torch.randn(n, D, generator=g), pairs, torch.randn(m, U, generator=g), labels


def _param_count(mode, D, U, H, M, E, V, Q, C, R):
    """Closed form of the parameter count (C, R with background; MLP hidden of W_* is M // 2):

    relation branch (every protocol)
      post_emb                 D*2M + 2M
      obj_embed, rel_embed     C*E + R*E
      W_sub, W_obj, W_pred     3 * (E*(M/2) + M/2 + (M/2)*M + M)
      gate_sub/obj/pred        3 * (2M*M + M)
      vis2sem                  M*V + V + V*M + M
      project_head             M*M + M + M*Q + Q
      linear_sub/obj/rel_rep   3 * (M*M + M)
      norm_sub/obj/rel_rep     3 * 2M
      down_samp                U*M + M + M*M + M
      logit_scale              1
    object branch (SGCls / SGDet only)
      pos_embed                9*32 + 32 + 2*32 + 32*128 + 128
      obj_embed1               C*E
      lin_obj_cyx              (D + E + 128)*H + H
      out_obj                  H*C + C
    """
    h = M // 2
    n = (D * 2 * M + 2 * M + C * E + R * E + 3 * (E * h + h + h * M + M) + 3 * (2 * M * M + M)
         + (M * V + V + V * M + M) + (M * M + M + M * Q + Q) + 3 * (M * M + M) + 3 * 2 * M
         + (U * M + M + M * M + M) + 1)
    if mode != "predcls":
        n += (9 * 32 + 32 + 2 * 32 + 32 * 128 + 128) + C * E + (D + E + 128) * H + H + H * C + C
    return n


def _count(module):
    return sum(p.numel() for p in module.parameters())


# --------------------------------------------------------------------------------------- registry
def test_registered_under_both_names():
    assert RELATION_PREDICTOR_REGISTRY.get("PENetPredictor") is PENetPredictor
    assert RELATION_PREDICTOR_REGISTRY.get("PrototypeEmbeddingNetwork") is PENetPredictor
    with pytest.raises(ValueError):
        _predictor("detection")
    with pytest.raises(ValueError, match="rel_classes"):
        _predictor("predcls", rel_classes=REL_NAMES[:3])


# --------------------------------------------------------------------------------- shapes / gradients
@pytest.mark.parametrize("mode", MODES)
def test_shapes_train_and_eval(mode):
    torch.manual_seed(0)
    pred = _predictor(mode)
    props = [_image(4, 1), _image(3, 2), _image(1, 3)]
    x, pairs, union, rel_labels = _inputs(props)
    labels = torch.cat([p.labels for p in props])
    for training in (True, False):
        pred.train(training)
        with torch.set_grad_enabled(training):
            out = pred(x, props, pairs, union, obj_labels=labels if (training or mode == "predcls") else None,
                       rel_labels=rel_labels if training else None)
        assert [o.shape for o in out.obj_logits] == [(4, C1), (3, C1), (1, C1)]
        assert [r.shape for r in out.rel_logits] == [(12, P1), (6, P1), (0, P1)]
        assert [lab.shape for lab in out.obj_labels] == [(4,), (3,), (1,)]
        obj_labels = torch.cat(out.obj_labels)
        assert obj_labels.dtype == torch.int64 and bool((obj_labels >= 1).all() and (obj_labels < C1).all())
        if mode == "predcls":
            assert torch.equal(obj_labels, labels)
            assert torch.equal(torch.cat(out.obj_logits), 2000.0 * F.one_hot(labels, C1) - 1000.0)
        elif mode == "sgcls" or training:  # argmax over 1..C, also in training (no teacher forcing)
            assert torch.equal(obj_labels, torch.cat(out.obj_logits)[:, 1:].argmax(1) + 1)
        if training:
            assert set(out.extra_losses) == {"loss_l21", "loss_dist2", "loss_dis"}
            assert all(v.dim() == 0 and v.requires_grad for v in out.extra_losses.values())
        else:
            assert out.extra_losses == {}
        # logits are cosines times exp(logit_scale)
        bound = float(pred.logit_scale.detach().exp()) + 1e-4
        assert float(torch.cat(out.rel_logits).detach().abs().max()) <= bound


@pytest.mark.parametrize("mode", MODES)
def test_every_built_parameter_learns_and_unused_modules_do_not_exist(mode):
    torch.manual_seed(0)
    pred = _predictor(mode).train()
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    labels = torch.cat([p.labels for p in props])
    out = pred(x, props, pairs, union, obj_labels=labels, rel_labels=rel_labels)
    loss = F.cross_entropy(torch.cat(out.rel_logits), torch.cat(rel_labels)) + sum(out.extra_losses.values())
    if mode != "predcls":  # the head's loss_refine_obj
        loss = loss + F.cross_entropy(torch.cat(out.obj_logits), labels)
    loss.backward()
    for name, p in pred.named_parameters():
        assert p.grad is not None and float(p.grad.abs().sum()) > 0, name
    assert not hasattr(pred, "linear_pred")  # built and never used by the reference
    object_branch = ("pos_embed", "obj_embed1", "lin_obj_cyx", "out_obj")
    for name in object_branch:
        assert hasattr(pred, name) == (mode != "predcls"), name
    names = {n.split(".")[0] for n, _ in pred.named_parameters()}
    assert "linear_pred" not in names and (mode != "predcls" or not names & set(object_branch))


@pytest.mark.parametrize("mode", MODES)
def test_parameter_count_closed_form(mode):
    assert _count(_predictor(mode)) == _param_count(mode, D, U, H, M, E, V, Q, C1, P1)
    # union_dim defaults to in_channels, vis2sem / project_head to 2 * mlp_dim
    pred = PENetPredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, mlp_dim=M,
                          embed_dim=E, mode=mode)
    assert _count(pred) == _param_count(mode, D, D, H, M, E, 2 * M, 2 * M, C1, P1)


@pytest.mark.parametrize("mode", MODES)
def test_from_config_uses_the_reference_sizes(mode):
    """VG150 X-101-FPN: D = U = 4096, hidden 512, mlp 2048, GloVe 300, C = 151, R = 51 (built on the
    meta device: no memory, no init cost)."""
    cfg = get_default_config()
    cfg.MODEL.ROI_RELATION_HEAD.CONTEXT_HIDDEN_DIM = 512
    with torch.device("meta"):
        pred = PENetPredictor.from_config(cfg, in_channels=4096, union_dim=4096, num_obj_classes=151,
                                          num_rel_classes=51, mode=mode)
    assert (pred.mlp_dim, pred.embed_dim, pred.vis2sem_dim, pred.proj_dim) == (2048, 300, 4096, 4096)
    assert pred.vis2sem[2].p == 0.2 and pred.dropout_rel.p == 0.2
    assert pred.rel_classes == ["__background__"] + [f"predicate_{i}" for i in range(1, 51)]
    assert _count(pred) == _param_count(mode, 4096, 4096, 512, 2048, 300, 4096, 4096, 151, 51)
    # predcls: 103,796,921; the reference builds linear_pred (2048*2048 + 2048) on top, and in
    # PredCls also the object branch
    assert _count(pred) == {"predcls": 103_796_921}.get(mode, 106_241_092)
    names = ["__background__"] + [f"r{i}" for i in range(1, 51)]
    with torch.device("meta"):
        pred = PENetPredictor.from_config(cfg, in_channels=4096, union_dim=4096, num_obj_classes=151,
                                          num_rel_classes=51, mode=mode, rel_classes=names)
    assert pred.word_vector_specs()["rel"] == (names, 300)
    # PENET.MLP_DIM (0 = the reference's 2048) sets M; vis2sem / project_head follow as 2M
    cfg.MODEL.ROI_RELATION_HEAD.PENET.MLP_DIM = 256
    with torch.device("meta"):
        pred = PENetPredictor.from_config(cfg, in_channels=4096, union_dim=4096, num_obj_classes=151,
                                          num_rel_classes=51, mode=mode)
    assert (pred.mlp_dim, pred.vis2sem_dim, pred.proj_dim) == (256, 512, 512)
    assert _count(pred) == _param_count(mode, 4096, 4096, 512, 256, 300, 512, 512, 151, 51)


# ---------------------------------------------------------------------------------------- losses
def _reference_losses(rel_rep, proto, labels):
    """The reference's three losses as written there (sort-based, with R in place of 51)."""
    r = proto.shape[0]
    pn = proto / proto.norm(dim=1, keepdim=True)
    simil = pn @ pn.clone().detach().t()
    l21 = torch.norm(torch.norm(simil, p=2, dim=1), p=1) / (r * r)
    a = proto.unsqueeze(1).expand(-1, r, -1)
    b = proto.detach().unsqueeze(0).expand(r, -1, -1)
    dis = (a - b).norm(dim=2) ** 2
    top = torch.sort(dis, dim=1)[0][:, :2].sum(dim=1)
    dist = torch.max(torch.zeros(r), -top + 7.0).mean()
    k = labels.shape[0]
    dset = (rel_rep.unsqueeze(1).expand(-1, r, -1) - proto.unsqueeze(0).expand(k, -1, -1)).norm(dim=2) ** 2
    mask = torch.ones(k, r)
    mask[torch.arange(k), labels] = 0
    pos = dset[torch.arange(k), labels]
    neg = torch.sort(dset * mask, dim=1)[0][:, :11].sum(dim=1) / 10
    dis_loss = torch.max(torch.zeros(k), pos - neg + 1.0).mean()
    return l21, dist, dis_loss


def test_losses_by_hand_on_three_prototypes():
    proto = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    # normalised rows e1, e1, e2: S = [[1,1,0],[1,1,0],[0,0,1]], row norms sqrt2, sqrt2, 1, over 3^2
    assert torch.isclose(prototype_l21_loss(proto), torch.tensor((2 * math.sqrt(2) + 1) / 9))
    # squared distances d01 = 4, d02 = 5, d12 = 13 -> nearest 4, 4, 5 -> relu(7 - .) = 3, 3, 2
    assert torch.isclose(prototype_distance_loss(proto, 7.0), torch.tensor(8 / 3))
    assert torch.isclose(prototype_distance_loss(proto, 4.5), torch.tensor((0.5 + 0.5 + 0) / 3))
    # r = (1,1): g = (1, 5, 2); r = (2,0): g = (1, 1, 8)
    rel = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    labels = torch.tensor([1, 2])
    # 2 negatives each (R - 1 < 10): g- = 1.5 and 1 -> relu(5 - 1.5 + 1) = 4.5, relu(8 - 1 + 1) = 8
    assert torch.isclose(prototype_margin_loss(rel, proto, labels, 1.0, 10), torch.tensor((4.5 + 8) / 2))
    # one nearest negative: g- = 1 and 1 -> 5, 8
    assert torch.isclose(prototype_margin_loss(rel, proto, labels, 1.0, 1), torch.tensor((5 + 8) / 2))
    # the positive far closer than the negatives: 0
    assert float(prototype_margin_loss(torch.tensor([[1.0, 0.1]]), proto, torch.tensor([0]), 1.0, 10)) == 0.0
    # an ignored row (negative label: a fine predicate in HML's stage 1) is left out of the mean
    with_ignored = prototype_margin_loss(torch.cat([rel, torch.tensor([[9.0, 9.0]])]), proto,
                                         torch.tensor([1, 2, -100]), 1.0, 10)
    assert torch.isclose(with_ignored, torch.tensor((4.5 + 8) / 2))
    only_ignored = prototype_margin_loss(rel.clone().requires_grad_(), proto, torch.tensor([-100, -100]), 1.0, 10)
    assert float(only_ignored.detach()) == 0.0 and only_ignored.requires_grad
    # no pair: 0 with a graph
    empty = prototype_margin_loss(torch.zeros(0, 2, requires_grad=True), proto.requires_grad_(), torch.zeros(0))
    assert float(empty.detach()) == 0.0 and empty.requires_grad


def test_losses_equal_the_reference_formulas_values_and_gradients():
    g = torch.Generator().manual_seed(0)
    r, q, k = 14, 9, 7  # R >= 11: the reference's "[:, :11] / 10" is the mean of 10 negatives
    proto_a = (torch.randn(r, q, generator=g) * 0.8).requires_grad_()
    rel_a = torch.randn(k, q, generator=g).requires_grad_()
    labels = torch.randint(0, r, (k,), generator=g)
    proto_b = proto_a.detach().clone().requires_grad_()
    rel_b = rel_a.detach().clone().requires_grad_()
    ours = (prototype_l21_loss(proto_a), prototype_distance_loss(proto_a, 7.0),
            prototype_margin_loss(rel_a, proto_a, labels, 1.0, 10))
    ref = _reference_losses(rel_b, proto_b, labels)
    for a, b in zip(ours, ref):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5)
        assert float(b.detach()) > 0
    sum(ours).backward()
    sum(ref).backward()
    assert torch.allclose(proto_a.grad, proto_b.grad, atol=1e-5)
    assert torch.allclose(rel_a.grad, rel_b.grad, atol=1e-5)


def test_extra_losses_and_logits_through_forward():
    torch.manual_seed(0)
    pred = _predictor("predcls").train()
    seen = []  # project_head runs on the pair representations r, then on the prototypes c
    pred.project_head.register_forward_hook(lambda mod, inp, out: seen.append(out.detach()))
    props = [_image(3, 1), _image(2, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    out = pred(x, props, pairs, union, obj_labels=torch.cat([p.labels for p in props]), rel_labels=rel_labels)
    rel_rep, proto = seen
    assert rel_rep.shape == (8, Q) and proto.shape == (P1, Q)
    cos = F.normalize(rel_rep, dim=1) @ F.normalize(proto, dim=1).t()
    assert torch.allclose(torch.cat(out.rel_logits), cos / 0.07, atol=1e-4)  # logit_scale = log(1/0.07)
    exp = {"loss_l21": prototype_l21_loss(proto), "loss_dist2": prototype_distance_loss(proto, 7.0),
           "loss_dis": prototype_margin_loss(rel_rep, proto, torch.cat(rel_labels), 1.0, 10)}
    for k, v in exp.items():
        assert torch.allclose(out.extra_losses[k], v, atol=1e-6), k
    assert float(out.extra_losses["loss_dist2"].detach()) > 0 and float(out.extra_losses["loss_dis"].detach()) > 0


def test_without_rel_labels_loss_dis_is_left_out_with_one_warning(caplog):
    pred = _predictor("sgcls").train()
    props = [_image(3, 1)]
    x, pairs, union, _ = _inputs(props)
    with caplog.at_level(logging.WARNING, logger="sgg.modeling.relation.predictors.penet"):
        out = pred(x, props, pairs, union, obj_labels=props[0].labels)
        pred(x, props, pairs, union, obj_labels=props[0].labels)
    assert set(out.extra_losses) == {"loss_l21", "loss_dist2"}
    assert sum("rel_labels" in r.getMessage() for r in caplog.records) == 1


# ------------------------------------------------------------------------------------- quirks
def test_pos_embed_batchnorm_updated_twice_per_training_step():
    props = [_image(4, 1), _image(3, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    outs, means = [], []
    for twice in (True, False):
        torch.manual_seed(0)
        pred = _predictor("sgcls", pos_embed_twice=twice, dropout_rate=0.0).train()
        outs.append(pred(x, props, pairs, union, obj_labels=torch.cat([p.labels for p in props]),
                         rel_labels=rel_labels))
        means.append(pred.pos_embed[1].running_mean.clone())
        assert int(pred.pos_embed[1].num_batches_tracked) == (2 if twice else 1)
    mom = 0.001  # running = mu * (1 - (1 - m)^2) = mu * m * (2 - m) after two updates, mu * m after one
    assert torch.allclose(means[0], means[1] * (2 - mom), atol=1e-9)
    assert float(means[1].abs().sum()) > 0
    assert torch.equal(torch.cat(outs[0].obj_logits), torch.cat(outs[1].obj_logits))
    assert torch.equal(torch.cat(outs[0].rel_logits), torch.cat(outs[1].rel_logits))


@pytest.mark.parametrize("mode", MODES)
def test_eval_equivariant_under_object_permutation(mode):
    torch.manual_seed(0)
    pred = _predictor(mode).eval()
    a = _image(5, 7)
    x, pairs, union, _ = _inputs([a], seed=3)
    perm = torch.tensor([3, 0, 4, 1, 2])
    inv = torch.argsort(perm)
    b = Instances(a.image_size, boxes=Boxes(a.boxes.tensor[perm]), labels=a.labels[perm], logits=a.logits[perm])
    pairs_b = inv[pairs[0]]  # the same pairs, in the permuted object indices
    with torch.no_grad():
        oa = pred(x, [a], pairs, union, obj_labels=a.labels if mode == "predcls" else None)
        ob = pred(x[perm], [b], [pairs_b], union, obj_labels=b.labels if mode == "predcls" else None)
    assert torch.allclose(oa.obj_logits[0][perm], ob.obj_logits[0], atol=1e-5)
    assert torch.equal(oa.obj_labels[0][perm], ob.obj_labels[0])
    assert torch.allclose(oa.rel_logits[0], ob.rel_logits[0], atol=1e-5)


def test_batched_images_equal_one_at_a_time():
    torch.manual_seed(0)
    pred = _predictor("sgdet").eval()
    a, b = _image(5, 10), _image(2, 11)
    xa, pa, ua, _ = _inputs([a], seed=1)
    xb, pb, ub, _ = _inputs([b], seed=2)
    with torch.no_grad():
        alone = pred(xa, [a], pa, ua)
        both = pred(torch.cat([xb, xa]), [b, a], pb + pa, torch.cat([ub, ua]))
    assert torch.allclose(alone.rel_logits[0], both.rel_logits[1], atol=1e-5)
    assert torch.allclose(alone.obj_logits[0], both.obj_logits[1], atol=1e-5)
    assert torch.equal(alone.obj_labels[0], both.obj_labels[1])


def test_eval_per_object_path_equals_training_per_pair_path_without_dropout():
    torch.manual_seed(0)
    pred = _predictor("sgcls").eval()
    props = [_image(5, 10), _image(3, 11)]
    x, pairs, union, _ = _inputs(props, seed=1)
    with torch.no_grad():
        per_object = pred(x, props, pairs, union)
        for m in pred.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        pred.train()
        pred.pos_embed.eval()  # BN on its running statistics, as at test
        per_pair = pred(x, props, pairs, union, obj_labels=torch.cat([p.labels for p in props]))
    assert torch.equal(torch.cat(per_object.obj_labels), torch.cat(per_pair.obj_labels))
    assert torch.allclose(torch.cat(per_object.rel_logits), torch.cat(per_pair.rel_logits), atol=1e-5)


def test_bfloat16_autocast_on_cpu():
    torch.manual_seed(0)
    pred = _predictor("sgdet").train()
    props = [_image(3, 1), _image(3, 2)]
    x, pairs, union, rel_labels = _inputs(props)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x, props, pairs, union, obj_labels=torch.cat([p.labels for p in props]), rel_labels=rel_labels)
    assert all(v.dtype == torch.float32 for v in out.extra_losses.values())  # losses in float32
    total = sum(out.extra_losses.values()) + torch.cat(out.rel_logits).float().sum()
    assert math.isfinite(float(total.detach()))
    total.backward()
    assert pred.W_pred.layers[0].weight.grad is not None


def test_images_with_zero_and_one_box():
    pred = _predictor("sgcls").eval()
    props = [_image(0, 1), _image(1, 2), _image(0, 3)]
    x, pairs, union, labels = _inputs(props)
    with torch.no_grad():
        out = pred(x, props, pairs, union)
    assert [r.shape for r in out.rel_logits] == [(0, P1)] * 3
    assert [o.shape[0] for o in out.obj_logits] == [0, 1, 0]
    pred.train()
    out = pred(x, props, pairs, union, obj_labels=torch.cat([p.labels for p in props]), rel_labels=labels)
    assert all(math.isfinite(float(v.detach())) for v in out.extra_losses.values())
    assert float(out.extra_losses["loss_dis"].detach()) == 0.0
    sum(out.extra_losses.values()).backward()


# ------------------------------------------------------------------------------------ word vectors
VOCAB = {
    "man": [1.0, 2.0, 3.0, 4.0, 0.0, 1.0],
    "horse": [-1.0, 0.0, 1.0, 0.25, 2.0, 2.0],
    "on": [0.5, 0.5, 0.5, 0.5, 0.5, 0.5],
    "next": [2.0, 2.0, 0.0, 0.0, 1.0, 3.0],
    "to": [0.0, 4.0, 2.0, 1.0, 1.0, 1.0],
}


def test_word_vectors_specs_set_and_load_step(tmp_path):
    pred = _predictor("sgcls")
    specs = pred.word_vector_specs()
    assert specs == {"obj": (OBJ_NAMES, E), "rel": (REL_NAMES, E)}
    # seeded random start, independent of the global RNG
    torch.manual_seed(123)
    other = _predictor("sgcls")
    assert torch.equal(pred.rel_embed.weight, other.rel_embed.weight)
    assert torch.equal(pred.obj_embed.weight, pred.obj_embed1.weight)
    (tmp_path / f"glove.6B.{E}d.txt").write_text(
        "".join(f"{w} {' '.join(repr(v) for v in vec)}\n" for w, vec in VOCAB.items()))
    assert load_pretrained_word_vectors(pred, str(tmp_path))
    assert torch.equal(pred.obj_embed.weight[1].detach(), torch.tensor(VOCAB["man"]))
    assert torch.equal(pred.obj_embed1.weight[2].detach(), torch.tensor(VOCAB["horse"]))
    assert torch.equal(pred.rel_embed.weight[1].detach(), torch.tensor(VOCAB["on"]))
    # a predicate's vector is the mean of its words' vectors
    mean = (torch.tensor(VOCAB["next"]) + torch.tensor(VOCAB["to"])) / 2
    assert torch.equal(pred.rel_embed.weight[3].detach(), mean)
    # build-then-load equals building with the tensors
    direct = _predictor("predcls", word_vectors={"obj": pred.obj_embed.weight.detach(),
                                                 "rel": pred.rel_embed.weight.detach()})
    assert torch.equal(direct.obj_embed.weight, pred.obj_embed.weight)
    assert torch.equal(direct.rel_embed.weight, pred.rel_embed.weight)
    with pytest.raises(ValueError, match="word vectors must have shape"):
        _predictor("predcls", rel_word_vectors=torch.zeros(P1 + 1, E))


# ---------------------------------------------------------------------- through build_sgg_model
@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    from sgg.data.build import build_dataset
    from sgg.data.catalog import get_dataset_files
    from sgg.data.statistics import get_dataset_statistics
    from two_stage_fixtures import DATASET, make_synthvg

    root = make_synthvg(tmp_path_factory.mktemp("penet_data"), num_images=10)
    out = str(tmp_path_factory.mktemp("penet_out"))
    stats = get_dataset_statistics(get_dataset_files(f"{DATASET}_train", root), cache_dir=None, num_val_im=2)
    from two_stage_fixtures import tiny_config

    cfg = tiny_config(root, out, "predcls")
    splits = {"train": build_dataset(cfg, f"{DATASET}_train", is_train=True, mode="predcls"),
              "test": build_dataset(cfg, f"{DATASET}_test", is_train=False, mode="predcls")}
    return root, out, stats, splits


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_two_stage_train_step_and_eval(mode, two_stage, monkeypatch):
    from sgg.data.mapper import SceneGraphMapper
    from sgg.modeling.meta_arch import build_sgg_model
    from test_two_stage import check_graph, oracle_detect, with_relations
    from two_stage_fixtures import tiny_config

    # tiny sizes instead of the reference's 2048 / 300 (no config key holds them)
    monkeypatch.setattr(PENetPredictor, "REFERENCE_SIZES", {"mlp_dim": 16, "embed_dim": 8, "dropout_rate": 0.2})
    root, out_dir, stats, splits = two_stage
    cfg = tiny_config(root, out_dir, mode, "MODEL.ROI_RELATION_HEAD.PREDICTOR", "PENetPredictor")
    train, test = splits["train"], splits["test"]
    torch.manual_seed(0)
    model = build_sgg_model(cfg, stats, train.num_classes, train.num_predicates)
    pred = model.relation_head.predictor
    assert isinstance(pred, PENetPredictor) and pred.mode == mode and pred.mlp_dim == 16
    assert len(pred.rel_classes) == train.num_predicates
    assert hasattr(pred, "out_obj") == (mode != "predcls")

    # RelationHead passes the sampled predicate labels to a predictor with uses_rel_labels (loss_dis)
    mapper = SceneGraphMapper.from_config(cfg, is_train=True, mode=mode)
    batch = [mapper(train[i]) for i in with_relations(train, 2)]
    model.train()
    if mode == "sgdet":
        oracle_detect(model, batch, train.num_classes)
    losses = model(batch)
    assert {"loss_rel", "loss_l21", "loss_dist2", "loss_dis"} <= set(losses)
    assert float(losses["loss_dis"].detach()) > 0
    for k, v in losses.items():
        assert v.dim() == 0 and math.isfinite(float(v.detach())), k
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    assert float(pred.logit_scale.grad.abs()) > 0 and float(pred.W_pred.layers[0].weight.grad.abs().sum()) > 0
    if mode != "predcls":
        assert float(pred.out_obj.weight.grad.abs().sum()) > 0
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = pred.gate_pred.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, pred.gate_pred.weight)

    if mode == "sgdet":
        del model.detector.detect  # back to the detector's own detections
    model.eval()
    idx = [0, 1]
    inputs = [SceneGraphMapper.from_config(cfg, is_train=False, mode=mode)(test[i]) for i in idx]
    with torch.no_grad():
        graphs = model(inputs)
    for g, d, i in zip(graphs, inputs, idx):
        check_graph(g, d, mode, test.get_groundtruth(i), test.num_classes, test.num_predicates)
