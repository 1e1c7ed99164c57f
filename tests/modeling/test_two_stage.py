"""TwoStageSGG end to end on a tiny SynthVG: losses and gradients (frozen detector), the output
contract of inference for each protocol, images without boxes / relations, that inference reads
only the ground truth its protocol allows, and batch-size invariance of the test graphs."""
import math

import pytest
import torch

from sgg.data.build import build_dataset
from sgg.data.catalog import get_dataset_files
from sgg.data.mapper import SceneGraphMapper
from sgg.data.statistics import get_dataset_statistics
from sgg.modeling.meta_arch import build_sgg_model
from sgg.modeling.meta_arch.two_stage import TwoStageSGG
from sgg.structures import Boxes, Instances, SceneGraph

try:
    from .two_stage_fixtures import DATASET, PROTOCOLS, make_synthvg, tiny_config
except ImportError:  # tests/ is not a package
    from two_stage_fixtures import DATASET, PROTOCOLS, make_synthvg, tiny_config

DETECTIONS_PER_IMG = 8  # MODEL.ROI_HEADS.DETECTIONS_PER_IMG of tiny_opts


# ------------------------------------------------------------------------------------------ fixtures
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return make_synthvg(tmp_path_factory.mktemp("two_stage_data"), num_images=24)


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("two_stage_out"))


@pytest.fixture(scope="module")
def statistics(data_root):
    files = get_dataset_files(f"{DATASET}_train", data_root)
    return get_dataset_statistics(files, cache_dir=None, num_val_im=2)


@pytest.fixture(scope="module")
def splits(data_root, out_dir):
    cfg = tiny_config(data_root, out_dir, "predcls")
    return {"train": build_dataset(cfg, f"{DATASET}_train", is_train=True, mode="predcls"),
            "test": build_dataset(cfg, f"{DATASET}_test", is_train=False, mode="predcls")}


def build_model(data_root, out_dir, statistics, splits, mode, seed=0):
    cfg = tiny_config(data_root, out_dir, mode)
    torch.manual_seed(seed)
    ds = splits["train"]
    model = build_sgg_model(cfg, statistics, ds.num_classes, ds.num_predicates)
    assert isinstance(model, TwoStageSGG) and model.mode == mode
    return model, cfg


def mapped(cfg, dataset, indices, is_train, mode):
    mapper = SceneGraphMapper.from_config(cfg, is_train=is_train, mode=mode)
    return [mapper(dataset[i]) for i in indices]


def with_relations(dataset, count):
    idx = [i for i in range(len(dataset)) if len(dataset[i]["relations"]) and len(dataset[i]["boxes"]) >= 2]
    assert len(idx) >= count
    return idx[:count]


def oracle_detect(model, batch, num_classes):
    """Replace the (untrained) detector's SGDet detections by the GT boxes of ``batch``, so SGDet
    training has proposals that match GT (fg pairs) as a trained detector would give."""
    def detect(images, image_sizes, features):
        out = []
        for d, size in zip(batch, image_sizes):
            boxes = d["instances"].gt_boxes.tensor.clone()
            labels = d["instances"].gt_classes.clone()
            logits = 4.0 * torch.nn.functional.one_hot(labels, num_classes).float()
            out.append(Instances(size, boxes=Boxes(boxes), labels=labels, scores=torch.full((len(labels),), 0.9),
                                 logits=logits, boxes_per_cls=boxes[:, None, :].expand(-1, num_classes, 4).clone()))
        return out
    model.detector.detect = detect


def assert_frozen_detector(model):
    assert not model.detector.training
    assert all(not m.training for m in model.detector.modules())
    for name, p in model.detector.named_parameters():
        assert not p.requires_grad, name
        assert p.grad is None, name


def empty_like(d):
    """``d`` with no GT box and no relation (SGB crashed on these)."""
    e = dict(d)
    e["instances"] = Instances(d["instances"].image_size, gt_boxes=Boxes(torch.zeros(0, 4)),
                               gt_classes=torch.zeros(0, dtype=torch.int64))
    e["relations"] = torch.zeros(0, 3, dtype=torch.int64)
    return e


def without_relations(d):
    e = dict(d)
    e["relations"] = torch.zeros(0, 3, dtype=torch.int64)
    return e


class Poison:
    """Fails on any use: a GT entry the model must not read."""

    def __init__(self, what):
        object.__setattr__(self, "_what", what)

    def __getattr__(self, name):
        raise AssertionError(f"inference read {self._what}.{name}")

    def __len__(self):
        raise AssertionError(f"inference read len({self._what})")

    def __iter__(self):
        raise AssertionError(f"inference iterated {self._what}")

    def __getitem__(self, i):
        raise AssertionError(f"inference indexed {self._what}")


def assert_same_graphs(a, b, exact=True, atol=1e-5):
    assert len(a) == len(b)
    for ga, gb in zip(a, b):
        assert ga.image_size == gb.image_size
        if exact:
            for f in ("boxes", "labels", "scores", "rel_pairs", "rel_scores", "rel_labels", "triplet_scores"):
                assert torch.equal(getattr(ga, f), getattr(gb, f)), f
            continue
        assert torch.equal(ga.labels, gb.labels)
        assert torch.allclose(ga.boxes, gb.boxes, atol=1e-3)
        assert torch.allclose(ga.scores, gb.scores, atol=atol)
        assert ga.num_relations == gb.num_relations
        # compare per pair: near-tied triplet scores may swap places under float noise
        rows_b = {tuple(p): i for i, p in enumerate(gb.rel_pairs.tolist())}
        assert set(rows_b) == set(map(tuple, ga.rel_pairs.tolist()))
        perm = torch.tensor([rows_b[tuple(p)] for p in ga.rel_pairs.tolist()], dtype=torch.long)
        assert torch.allclose(ga.rel_scores, gb.rel_scores[perm], atol=atol)
        assert torch.allclose(ga.triplet_scores, gb.triplet_scores[perm], atol=atol)


def check_graph(g, d, mode, gt, num_classes, num_predicates):
    """The inference contract of DESIGN.md ("Data flow" 3) for graph ``g`` of input ``d``."""
    assert isinstance(g, SceneGraph)
    h, w = d["height"], d["width"]
    assert g.image_size == (h, w)
    n = len(g)
    assert g.boxes.shape == (n, 4) and g.boxes.dtype == torch.float32
    if n:
        assert bool((g.boxes[:, 0::2] >= -1e-3).all() and (g.boxes[:, 0::2] <= w + 1e-3).all())
        assert bool((g.boxes[:, 1::2] >= -1e-3).all() and (g.boxes[:, 1::2] <= h + 1e-3).all())
        assert bool((g.boxes[:, 2:] >= g.boxes[:, :2]).all())
        assert int(g.labels.min()) >= 1 and int(g.labels.max()) < num_classes
    assert g.labels.dtype == torch.int64 and g.scores.shape == (n,)
    m = g.num_relations
    assert g.rel_pairs.shape == (m, 2) and g.rel_pairs.dtype == torch.int64
    assert g.rel_scores.shape == (m, num_predicates) and g.rel_labels.shape == (m,)
    assert g.triplet_scores.shape == (m,)
    if mode != "sgdet":
        # all ordered pairs of the GT boxes (TEST_REL_TOP_K 0)
        assert m == n * (n - 1)
    if m:
        assert bool((g.rel_pairs[:, 0] != g.rel_pairs[:, 1]).all())
        assert int(g.rel_pairs.min()) >= 0 and int(g.rel_pairs.max()) < n
        assert len(set(map(tuple, g.rel_pairs.tolist()))) == m
        assert torch.allclose(g.rel_scores.sum(1), torch.ones(m), atol=1e-5)
        assert bool((g.triplet_scores[:-1] >= g.triplet_scores[1:]).all())
        fg_max, fg_arg = g.rel_scores[:, 1:].max(1)
        assert torch.equal(g.rel_labels, fg_arg + 1)
        expect = fg_max * g.scores[g.rel_pairs[:, 0]] * g.scores[g.rel_pairs[:, 1]]
        assert torch.allclose(g.triplet_scores, expect, atol=1e-6)
    gt_boxes = torch.as_tensor(gt["boxes"], dtype=torch.float32)
    if mode == "predcls":
        assert torch.equal(g.labels, torch.as_tensor(gt["labels"], dtype=torch.int64))
        assert torch.equal(g.scores, torch.ones(n))
    else:
        assert bool((g.scores > 0).all() and (g.scores <= 1).all())
    if mode in ("predcls", "sgcls"):
        # the GT boxes, back in original pixels (resize round trip)
        assert torch.allclose(g.boxes, gt_boxes, atol=0.05)
    else:
        assert n <= DETECTIONS_PER_IMG


# ------------------------------------------------------------------------------------------ training
@pytest.mark.parametrize("mode", PROTOCOLS)
def test_training_losses_reach_the_relation_head_only(mode, data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, mode)
    ds = splits["train"]
    batch = mapped(cfg, ds, with_relations(ds, 2), is_train=True, mode=mode)
    detector_state = {k: v.clone() for k, v in model.detector.state_dict().items()}

    model.train()
    assert model.training and model.relation_head.training
    assert_frozen_detector(model)
    if mode == "sgdet":
        # the untrained detector's boxes rarely match GT: first check that its (bg-only) batch
        # gives finite losses, then train on detections that match GT
        losses = model(batch)
        assert all(math.isfinite(float(v.detach())) for v in losses.values())
        oracle_detect(model, batch, ds.num_classes)
    losses = model(batch)
    expected = {"loss_rel"} | ({"loss_refine_obj"} if mode != "predcls" else set())
    assert expected <= set(losses)
    for k, v in losses.items():
        assert v.dim() == 0 and math.isfinite(float(v.detach())), k
    assert float(losses["loss_rel"].detach()) > 0 and losses["loss_rel"].requires_grad
    if mode != "predcls":
        assert float(losses["loss_refine_obj"].detach()) > 0 and losses["loss_refine_obj"].requires_grad

    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    rel_compress = model.relation_head.predictor.rel_compress
    assert rel_compress.weight.grad is not None and float(rel_compress.weight.grad.abs().sum()) > 0
    obj_branch = model.relation_head.box_feature_extractor
    assert any(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in obj_branch.parameters())
    assert_frozen_detector(model)

    # an optimiser over the whole model moves the relation head and not the detector
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    before = rel_compress.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, rel_compress.weight)
    for k, v in model.detector.state_dict().items():
        assert torch.equal(v, detector_state[k]), k
    model.eval()
    assert not model.training and not model.relation_head.training and not model.detector.training


# ----------------------------------------------------------------------------------------- inference
@pytest.mark.parametrize("mode", PROTOCOLS)
def test_inference_output_contract(mode, data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, mode)
    ds = splits["test"]
    idx = list(range(min(3, len(ds))))
    inputs = mapped(cfg, ds, idx, is_train=False, mode=mode)
    # the test resize changes the frame: the graphs must come back in original pixels
    assert any(tuple(d["image"].shape[1:]) != (d["height"], d["width"]) for d in inputs)
    model.eval()
    with torch.no_grad():
        graphs = model(inputs)
    assert len(graphs) == len(inputs)
    for g, d, i in zip(graphs, inputs, idx):
        check_graph(g, d, mode, ds.get_groundtruth(i), ds.num_classes, ds.num_predicates)
    if mode == "sgdet":
        assert sum(len(g) for g in graphs) > 0 and sum(g.num_relations for g in graphs) > 0


# ------------------------------------------------------------------------------ degenerate images
@pytest.mark.parametrize("mode", PROTOCOLS)
def test_images_without_boxes_or_relations(mode, data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, mode)
    train, test = splits["train"], splits["test"]
    a, b, c = mapped(cfg, train, with_relations(train, 3), is_train=True, mode=mode)
    batches = {
        "mixed": [a, empty_like(b), without_relations(c)],
        "all_empty": [empty_like(a), empty_like(b)],
        "no_relation": [without_relations(a)],
        "one_box": [dict(a, instances=a["instances"][:1], relations=torch.zeros(0, 3, dtype=torch.int64))],
    }
    model.train()
    for name, batch in batches.items():
        model.zero_grad(set_to_none=True)
        losses = model(batch)
        assert "loss_rel" in losses, name
        assert all(math.isfinite(float(v.detach())) for v in losses.values()), (name, losses)
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        if total.requires_grad:
            total.backward()
        assert_frozen_detector(model)
        if name == "mixed" and mode != "sgdet":
            assert model.relation_head.predictor.rel_compress.weight.grad is not None

    model.eval()
    t = mapped(cfg, test, [0, 1], is_train=False, mode=mode)
    inputs = [t[0], empty_like(t[1]), without_relations(t[1]),
              dict(t[0], instances=t[0]["instances"][:1])]
    with torch.no_grad():
        graphs = model(inputs)
    assert len(graphs) == 4
    for g, d in zip(graphs, inputs):
        assert g.image_size == (d["height"], d["width"])
        assert torch.allclose(g.rel_scores.sum(1), torch.ones(g.num_relations), atol=1e-5)
    if mode != "sgdet":
        assert len(graphs[1]) == 0 and graphs[1].num_relations == 0
        assert graphs[1].rel_scores.shape == (0, test.num_predicates)
        assert len(graphs[3]) == 1 and graphs[3].num_relations == 0
        # an image without relations is scored like any other (relations are never read at test)
        assert len(graphs[2]) == len(t[1]["instances"]) and graphs[2].num_relations > 0
    with torch.no_grad():
        alone = model([empty_like(t[1])])
    assert alone[0].image_size == (t[1]["height"], t[1]["width"])


# ------------------------------------------------------------------------- GT visible at test time
def test_sgdet_inference_never_reads_ground_truth(data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, "sgdet")
    ds = splits["test"]
    inputs = mapped(cfg, ds, [0, 1], is_train=False, mode="sgdet")
    model.eval()
    with torch.no_grad():
        ref = model(inputs)
        poisoned = model([dict(d, instances=Poison("instances"), relations=Poison("relations")) for d in inputs])
        absent = model([{k: v for k, v in d.items() if k not in ("instances", "relations")} for d in inputs])
    assert sum(len(g) for g in ref) > 0
    assert_same_graphs(ref, poisoned)
    assert_same_graphs(ref, absent)


def test_sgcls_inference_never_reads_gt_labels(data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, "sgcls")
    ds = splits["test"]
    inputs = mapped(cfg, ds, [0, 1], is_train=False, mode="sgcls")
    boxes_only = [dict(d, instances=Instances(d["instances"].image_size, gt_boxes=d["instances"].gt_boxes),
                       relations=Poison("relations")) for d in inputs]
    wrong_labels = []
    for d in inputs:
        inst = d["instances"]
        wrong = (inst.gt_classes % (ds.num_classes - 1)) + 1  # every label changed
        assert not torch.equal(wrong, inst.gt_classes)
        wrong_labels.append(dict(d, instances=Instances(inst.image_size, gt_boxes=inst.gt_boxes, gt_classes=wrong)))
    model.eval()
    with torch.no_grad():
        ref = model(inputs)
        assert_same_graphs(ref, model(boxes_only))
        assert_same_graphs(ref, model(wrong_labels))
    for g, d in zip(ref, inputs):
        assert len(g) == len(d["instances"])


def test_predcls_inference_never_reads_relations(data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, "predcls")
    inputs = mapped(cfg, splits["test"], [0, 1], is_train=False, mode="predcls")
    model.eval()
    with torch.no_grad():
        ref = model(inputs)
        assert_same_graphs(ref, model([dict(d, relations=Poison("relations")) for d in inputs]))


# ---------------------------------------------------------------------------- batch invariance
def _padded(d, div=32):
    h, w = d["image"].shape[1:]
    return (math.ceil(h / div) * div, math.ceil(w / div) * div)


@pytest.mark.parametrize("mode", ["predcls", "sgcls"])
def test_several_images_per_batch_equal_one_at_a_time(mode, data_root, out_dir, statistics, splits):
    model, cfg = build_model(data_root, out_dir, statistics, splits, mode)
    ds = splits["train"]  # more images than test: several sizes
    inputs = mapped(cfg, ds, range(len(ds)), is_train=False, mode=mode)
    # images whose zero-padded batch canvas differs (portrait and landscape) and two of one shape
    by_shape = {}
    for d in inputs:
        by_shape.setdefault(_padded(d), []).append(d)
    assert len(by_shape) >= 3
    same = next(v for v in by_shape.values() if len(v) >= 2)[:2]
    batch = [v[0] for v in by_shape.values()][:4] + same
    assert len({_padded(d) for d in batch}) >= 3
    model.eval()
    with torch.no_grad():
        together = model(batch)
        alone = [model([d])[0] for d in batch]
        reversed_ = model(batch[::-1])[::-1]
    assert_same_graphs(together, alone, exact=False)
    assert_same_graphs(together, reversed_, exact=False)


# ------------------------------------------------------------------------------ test-time debiasing
def test_logit_adjustment_module_by_hand():
    from sgg.modeling.relation.debias import LogitAdjustment

    logits = torch.tensor([[0.5, 1.0, 2.0, 0.0]])
    assert LogitAdjustment([0, 6, 3, 0], tau=0.0)(logits) is logits  # tau 0: the identity
    # prior over predicates 1..3 = (6, 3, 1) / 10 (a count of 0 counts as 1); background untouched
    out = LogitAdjustment([0, 6, 3, 0], tau=2.0)(logits)
    expected = torch.tensor([[0.5, 1.0 - 2 * math.log(0.6), 2.0 - 2 * math.log(0.3), 0.0 - 2 * math.log(0.1)]])
    assert torch.allclose(out, expected)
    with pytest.raises(ValueError, match="predicate counts"):
        LogitAdjustment(None, tau=1.0)


@pytest.mark.parametrize("mode", ["predcls", "sgdet"])
def test_logit_adjustment_through_the_model(mode, data_root, out_dir, statistics, splits):
    """MODEL.ROI_RELATION_HEAD.LOGIT_ADJUSTMENT_TAU: with tau the predicate distribution of every
    pair is softmax(log p - tau * log prior); tau 0 builds no adjustment and changes nothing."""
    from sgg.modeling.meta_arch import build_sgg_model

    ds = splits["test"]
    idx = list(range(min(3, len(ds))))
    plain, cfg = build_model(data_root, out_dir, statistics, splits, mode, seed=3)
    assert plain.relation_head.logit_adjustment is None
    tau = 0.7
    cfg_t = tiny_config(data_root, out_dir, mode, "MODEL.ROI_RELATION_HEAD.LOGIT_ADJUSTMENT_TAU", str(tau))
    adjusted = build_sgg_model(cfg_t, statistics, ds.num_classes, ds.num_predicates)
    adjusted.load_state_dict(plain.state_dict())  # the adjustment adds no parameter / persistent buffer
    inputs = mapped(cfg, ds, idx, is_train=False, mode=mode)
    plain.eval()
    adjusted.eval()
    with torch.no_grad():
        a, b = plain(inputs), adjusted(inputs)
    counts = torch.as_tensor(statistics["predicate_counts"], dtype=torch.float64).clamp(min=1)
    log_prior = torch.log(counts / counts[1:].sum())
    log_prior[0] = 0
    checked = 0
    for ga, gb in zip(a, b):
        assert torch.equal(ga.boxes, gb.boxes) and torch.equal(ga.labels, gb.labels)
        # rows are re-ranked: match them by pair
        rows_a = {tuple(p.tolist()): r for p, r in zip(ga.rel_pairs, ga.rel_scores)}
        for p, r in zip(gb.rel_pairs, gb.rel_scores):
            want = torch.softmax(torch.log(rows_a[tuple(p.tolist())].double()) - tau * log_prior, dim=0)
            assert torch.allclose(r.double(), want, atol=1e-5)
            checked += 1
    assert checked > 0
