"""MotifPredictor built from plain arguments, frequency bias, GloVe loading (tiny dims, CPU)."""
import logging

import numpy as np
import pytest
import torch

from sgg.modeling.pretrained import load_pretrained_word_vectors
from sgg.config import get_default_config
from sgg.modeling.relation import (
    RELATION_PREDICTOR_REGISTRY,
    FrequencyBias,
    MotifPredictor,
    class_aware_nms_labels,
    load_word_vectors,
)
from sgg.modeling.relation.predictors.motifs import _SortedPacking, encode_box_info
from sgg.structures import Boxes, Instances

C1, P1, D, H, POOL, E = 5, 4, 32, 16, 24, 6
NAMES = ["__background__", "man", "horse", "traffic light", "tennis_racket"]


def _predictor(mode, **kw):
    args = dict(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                embed_dim=E, obj_classes=NAMES, mode=mode)
    args.update(kw)
    return MotifPredictor(**args)


def _image(n, seed, size=(60, 80), with_logits=True):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 40
    wh = torch.rand(n, 2, generator=g) * 30 + 2
    fields = dict(boxes=Boxes(torch.cat([xy, xy + wh], 1)), labels=torch.randint(1, C1, (n,), generator=g))
    if with_logits:
        fields["logits"] = torch.randn(n, C1, generator=g)
    return Instances(size, **fields)


def _inputs(props, seed=0, union_dim=D):
    g = torch.Generator().manual_seed(seed)
    n = sum(len(p) for p in props)
    pairs = [torch.stack(torch.where(~torch.eye(len(p), dtype=torch.bool)), 1) for p in props]
    m = sum(len(r) for r in pairs)
    return torch.randn(n, D, generator=g), pairs, torch.randn(m, union_dim, generator=g)


def test_importable_and_registered():
    assert RELATION_PREDICTOR_REGISTRY.get("MotifPredictor") is MotifPredictor
    with pytest.raises(ValueError):
        _predictor("detection")


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_forward_backward_every_mode(mode):
    torch.manual_seed(0)
    pred = _predictor(mode, union_dim=20).train()  # union 20 != pooling 24 -> up_dim
    props = [_image(4, 1), _image(3, 2), _image(1, 3)]
    x, pairs, union = _inputs(props, union_dim=20)
    labels = torch.cat([p.labels for p in props])
    out = pred(x, props, pairs, union, obj_labels=labels)
    assert [o.shape for o in out.obj_logits] == [(4, C1), (3, C1), (1, C1)]
    assert [r.shape for r in out.rel_logits] == [(12, P1), (6, P1), (0, P1)]
    loss = sum(r.sum() for r in out.rel_logits) + sum(o.logsumexp(1).sum() for o in out.obj_logits)
    loss.backward()
    ctx = pred.context_layer
    must = {"rel_compress": pred.rel_compress.weight, "post_cat": pred.post_cat.weight,
            "post_emb": pred.post_emb.weight, "up_dim": pred.up_dim.weight,
            "freq_bias": pred.freq_bias.obj_baseline.weight, "obj_ctx_rnn": ctx.obj_ctx_rnn.weight_ih_l0,
            "obj_ctx_rnn_reverse": ctx.obj_ctx_rnn.weight_ih_l0_reverse,
            "edge_ctx_rnn": ctx.edge_ctx_rnn.weight_hh_l0, "pos_embed": ctx.pos_embed[0].weight,
            "obj_embed1": ctx.obj_embed1.weight, "obj_embed2": ctx.obj_embed2.weight}
    if mode != "predcls":
        must["decoder"] = ctx.decoder_rnn.input_linearity.weight
        must["decoder_embed"] = ctx.decoder_rnn.obj_embed.weight
    else:
        assert not hasattr(ctx, "decoder_rnn")
        assert torch.equal(torch.cat(out.obj_labels), labels)
    for name, p in must.items():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    if mode != "predcls":  # teacher forcing: committed labels are the given targets
        assert torch.equal(torch.cat(out.obj_labels), labels)


def test_teacher_forcing_replaces_background_targets():
    pred = _predictor("sgdet").train()
    props = [_image(5, 4)]
    x, pairs, union = _inputs(props)
    targets = torch.tensor([0, 2, 0, 1, 3])
    out = pred(x, props, pairs, union, obj_labels=targets)
    got = out.obj_labels[0]
    assert got[[1, 3, 4]].tolist() == [2, 1, 3]
    assert bool((got >= 1).all())


def test_frequency_bias_is_pred_dist_exactly():
    rng = np.random.default_rng(0)
    pd = np.log(rng.random((C1, C1, P1)).astype(np.float32) + 1e-3)
    fb = FrequencyBias(C1, P1, pd)
    assert torch.equal(fb.obj_baseline.weight, torch.from_numpy(pd).reshape(-1, P1))
    lab = torch.tensor([[1, 2], [4, 0], [3, 3]])
    assert torch.equal(fb(lab), torch.from_numpy(pd)[lab[:, 0], lab[:, 1]])
    pred = _predictor("predcls", pred_dist=pd)
    assert torch.equal(pred.freq_bias.obj_baseline.weight, torch.from_numpy(pd).reshape(-1, P1))
    assert pred.freq_bias.obj_baseline.weight.requires_grad
    assert torch.equal(FrequencyBias(C1, P1).obj_baseline.weight, torch.zeros(C1 * C1, P1))
    with pytest.raises(ValueError):
        FrequencyBias(C1, P1, pd[:, :, :2])
    # the bias is added per pair: vision and context off, only post/rel_compress + bias remain
    pred = _predictor("predcls", pred_dist=pd, use_vision=False).eval()
    props = [_image(3, 5)]
    x, pairs, _ = _inputs(props)
    out = pred(x, props, pairs, None, obj_labels=props[0].labels)
    with torch.no_grad():
        pred.freq_bias.obj_baseline.weight.zero_()
        out0 = pred(x, props, pairs, None, obj_labels=props[0].labels)
    lab = props[0].labels
    exp = torch.from_numpy(pd)[lab[pairs[0][:, 0]], lab[pairs[0][:, 1]]]
    assert torch.allclose(out.rel_logits[0] - out0.rel_logits[0], exp, atol=1e-5)


@pytest.mark.parametrize("mode", ["predcls", "sgcls", "sgdet"])
def test_batched_images_do_not_interact(mode):
    """Packing several images of different lengths gives each image its single-image result."""
    torch.manual_seed(0)
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
    assert torch.equal(alone.obj_labels[0], both.obj_labels[1])


def test_eval_labels_sgcls_greedy_and_sgdet_nms():
    torch.manual_seed(0)
    props = [_image(6, 20)]
    x, pairs, union = _inputs(props)
    with torch.no_grad():
        out = _predictor("sgcls").eval()(x, props, pairs, union)  # no labels at test
        assert torch.equal(out.obj_labels[0], out.obj_logits[0][:, 1:].argmax(1) + 1)
        pred = _predictor("sgdet", later_nms_thresh=0.3).eval()
        out = pred(x, props, pairs, union)
    prob = out.obj_logits[0].softmax(1)
    assert torch.equal(out.obj_labels[0], class_aware_nms_labels(prob, props[0].boxes.tensor, 0.3))


def test_sorted_packing_by_centre_x_descending():
    keys = torch.tensor([1.0, 5.0, 3.0, 7.0, 2.0, 0.0])
    pk = _SortedPacking(keys, [3, 0, 2, 1])
    assert pk.perm.tolist() == [1, 2, 0, 3, 4, 5]
    assert pk.row.tolist() == [0, 0, 0, 1, 1, 2] and pk.t.tolist() == [0, 1, 2, 0, 1, 0]
    assert pk.lengths.tolist() == [3, 2, 1]
    x = torch.arange(12.0).view(6, 2)
    padded = pk.pad(x)
    assert padded.shape == (3, 3, 2) and torch.equal(padded[0, 0], x[1])
    assert torch.equal(pk.unpad(padded), x)


def test_images_with_zero_and_one_box():
    pred = _predictor("sgcls").eval()
    props = [_image(0, 1), _image(1, 2), _image(0, 3)]
    x, pairs, union = _inputs(props)
    with torch.no_grad():
        out = pred(x, props, pairs, union)
    assert [r.shape for r in out.rel_logits] == [(0, P1)] * 3
    assert [o.shape[0] for o in out.obj_logits] == [0, 1, 0]
    empty = [_image(0, 1)]
    x, pairs, union = _inputs(empty)
    out = _predictor("sgdet").train()(x, empty, pairs, union, obj_labels=torch.zeros(0, dtype=torch.long))
    assert out.rel_logits[0].shape == (0, P1) and out.rel_logits[0].requires_grad


def test_missing_logits_warns_once_and_runs(caplog):
    pred = _predictor("sgcls").eval()
    props = [_image(3, 1, with_logits=False)]
    x, pairs, union = _inputs(props)
    with caplog.at_level(logging.WARNING, logger="sgg.modeling.relation.predictors.motifs"), torch.no_grad():
        pred(x, props, pairs, union)
        pred(x, props, pairs, union)
    assert sum("logits" in r.getMessage() for r in caplog.records) == 1


def test_fixed_seed_training_outputs_identical():
    def run():
        torch.manual_seed(3)
        pred = _predictor("sgcls", dropout_rate=0.5, obj_layers=2, rel_layers=2).train()
        props = [_image(4, 1), _image(3, 2)]
        x, pairs, union = _inputs(props)
        torch.manual_seed(5)
        out = pred(x, props, pairs, union, obj_labels=torch.cat([p.labels for p in props]))
        return torch.cat(out.rel_logits).detach(), torch.cat(out.obj_logits).detach()

    (r1, o1), (r2, o2) = run(), run()
    assert torch.equal(r1, r2) and torch.equal(o1, o2)


def test_encode_box_info_hand_case():
    info = encode_box_info([torch.tensor([[0.0, 10.0, 9.0, 29.0]])], [(100, 50)])  # (h, w)
    w, h = 10.0, 20.0
    exp = torch.tensor([[w / 50, h / 100, 5.0 / 50, 20.0 / 100, 0.0, 10 / 100, 9 / 50, 29 / 100, w * h / 5000]])
    assert torch.allclose(info, exp)


def test_from_config():
    cfg = get_default_config()
    rh = cfg.MODEL.ROI_RELATION_HEAD
    rh.CONTEXT_HIDDEN_DIM, rh.CONTEXT_POOLING_DIM, rh.EMBED_DIM, rh.CONTEXT_OBJ_LAYER = 12, 20, 8, 2
    rh.PREDICT_USE_BIAS = False
    cfg.GLOVE_DIR = ""
    pred = MotifPredictor.from_config(cfg, in_channels=D, num_obj_classes=C1, num_rel_classes=P1, mode="sgdet",
                                      obj_classes=NAMES)
    assert pred.hidden_dim == 12 and pred.pooling_dim == 20 and pred.freq_bias is None
    assert pred.context_layer.obj_ctx_rnn.num_layers == 2 and pred.context_layer.obj_embed1.weight.shape == (C1, 8)
    assert pred.mode == "sgdet" and pred.up_dim is not None


# ----------------------------------------------------------------------------- GloVe
VOCAB = {
    "start": [0.5, 0.5, 0.5, 0.5],
    "man": [1.0, 2.0, 3.0, 4.0],
    "horse": [-1.0, 0.0, 1.0, 0.25],
    "traffic": [2.0, 2.0, 0.0, 0.0],
    "light": [0.0, 4.0, 2.0, 1.0],
}


def _write_txt(folder, dim=4):
    path = folder / f"glove.6B.{dim}d.txt"
    path.write_text("".join(f"{w} {' '.join(repr(v) for v in vec)}\n" for w, vec in VOCAB.items()))
    return path


def _write_pt(folder, dim=4):
    words = list(VOCAB)
    torch.save(({w: i for i, w in enumerate(words)}, torch.tensor([VOCAB[w] for w in words]), dim),
               folder / f"glove.6B.{dim}d.pt")


def test_glove_txt_and_pt_cache_identical(tmp_path):
    (tmp_path / "txt").mkdir()
    (tmp_path / "pt").mkdir()
    _write_txt(tmp_path / "txt")
    _write_pt(tmp_path / "pt")
    a = load_word_vectors(NAMES, str(tmp_path / "txt"), dim=4)
    b = load_word_vectors(NAMES, str(tmp_path / "pt"), dim=4)
    assert torch.equal(a, b)
    assert torch.equal(a[1], torch.tensor(VOCAB["man"])) and torch.equal(a[2], torch.tensor(VOCAB["horse"]))
    assert torch.equal(a[3], (torch.tensor(VOCAB["traffic"]) + torch.tensor(VOCAB["light"])) / 2)
    # out of vocabulary (background, tennis_racket): the seeded random rows, same as without GloVe
    rnd = load_word_vectors(NAMES, None, dim=4)
    assert torch.equal(a[0], rnd[0]) and torch.equal(a[4], rnd[4])
    # the load step gives them to the predictor: obj_embed1 rows = class vectors, decoder row 0 = "start"
    pred = MotifPredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                          embed_dim=4, obj_classes=NAMES, mode="sgcls")
    assert load_pretrained_word_vectors(pred, str(tmp_path / "txt"))
    assert torch.equal(pred.context_layer.obj_embed1.weight.detach(), a)
    assert torch.equal(pred.context_layer.obj_embed2.weight.detach(), a)
    assert torch.equal(pred.context_layer.decoder_rnn.obj_embed.weight[0].detach(), torch.tensor(VOCAB["start"]))
    # ... which equals building it with the same vectors (build-then-load = build with the tensor)
    direct = MotifPredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                            embed_dim=4, obj_classes=NAMES, mode="sgcls",
                            word_vectors=load_word_vectors(["start"] + NAMES, str(tmp_path / "txt"), dim=4))
    assert torch.equal(direct.context_layer.decoder_rnn.obj_embed.weight, pred.context_layer.decoder_rnn.obj_embed.weight)
    with pytest.raises(ValueError, match="word_vectors must have shape"):
        MotifPredictor(num_obj_classes=C1, num_rel_classes=P1, in_channels=D, hidden_dim=H, pooling_dim=POOL,
                       embed_dim=4, obj_classes=NAMES, word_vectors=torch.zeros(C1, 4))


def test_glove_missing_warns_once_and_is_deterministic(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="sgg.modeling.relation.word_vectors"):
        torch.manual_seed(1)
        a = load_word_vectors(NAMES, str(tmp_path), dim=8)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    msg = warnings[0].getMessage()
    assert "GLOVE_DIR" in msg and "glove.6B.8d.txt" in msg and str(tmp_path) in msg
    torch.manual_seed(2)  # the global seed does not matter
    assert torch.equal(a, load_word_vectors(NAMES, str(tmp_path), dim=8))
    caplog.clear()
    p1 = _predictor("sgcls")
    with caplog.at_level(logging.WARNING, logger="sgg.modeling.relation.word_vectors"):
        load_pretrained_word_vectors(p1, str(tmp_path))  # no GloVe file: one warning, vectors unchanged
    assert sum(r.levelno == logging.WARNING for r in caplog.records) == 1
    p2 = _predictor("sgcls")
    assert torch.equal(p1.context_layer.obj_embed1.weight, p2.context_layer.obj_embed1.weight)


def test_glove_cache_dir(tmp_path):
    glove = tmp_path / "glove"
    glove.mkdir()
    txt = _write_txt(glove)
    cache = tmp_path / "out"
    a = load_word_vectors(NAMES, str(glove), dim=4, cache_dir=str(cache))
    assert len(list(cache.glob("word_vectors_4d_*.pt"))) == 1
    txt.unlink()  # the cached rows are used without GloVe
    assert torch.equal(load_word_vectors(NAMES, str(glove), dim=4, cache_dir=str(cache)), a)
    assert not list(glove.iterdir())  # nothing written next to GloVe


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_bfloat16_autocast_on_cpu_with_equal_lengths(mode):
    # oneDNN's bf16 LSTM rejected float32 packed inputs of equal lengths; the context LSTMs run
    # in float32 outside autocast.
    torch.manual_seed(0)
    pred = _predictor(mode).train()
    props = [_image(3, 1), _image(3, 2)]
    x, pairs, union = _inputs(props)
    labels = torch.cat([p.labels for p in props])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = pred(x.bfloat16(), props, pairs, union.bfloat16(), obj_labels=labels)
    assert all(torch.isfinite(r.float()).all() for r in out.rel_logits)
    sum(r.float().sum() for r in out.rel_logits).backward()
    assert pred.context_layer.obj_ctx_rnn.weight_ih_l0.grad is not None
