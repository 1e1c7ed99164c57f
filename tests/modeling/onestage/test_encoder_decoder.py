"""One-stage (CoRF-style) target encoder, losses and decoder: hand-checked targets, the perfect-field
round trip (encode the GT, turn the targets into network outputs, decode, recover the GT) on random
scenes and on SynthVG, losses and gradients, SGCls label source, empty images, batch invariance."""
import math
import os

import numpy as np
import pytest
import torch

from sgg.modeling.onestage.decoder import decode_fields
from sgg.modeling.onestage.encoder import encode_batch, encode_targets, gaussian_radius, grid_size_of
from sgg.modeling.onestage.losses import field_losses, focal_loss
from sgg.structures import SceneGraph

S = 16  # stride


pytestmark = pytest.mark.usefixtures("one_thread")


def box_at(cx, cy, w, h):
    """Pixel box of a centre / size given in grid units."""
    return [(cx - w / 2) * S, (cy - h / 2) * S, (cx + w / 2) * S, (cy + h / 2) * S]


def perfect_outputs(t, big=20.0):
    """Batched targets -> raw network outputs that reproduce them."""
    def logit(hm):
        return torch.where(hm == 1, torch.full_like(hm, big), torch.full_like(hm, -big))
    return {"obj_logits": logit(t["obj_heatmap"]), "obj_offset": t["obj_offset"].clone(),
            "obj_size": t["obj_size"].clone(), "rel_logits": logit(t["rel_heatmap"]),
            "rel_subj": t["rel_subj"].clone(), "rel_obj": t["rel_obj"].clone(),
            "rel_scale": t["rel_scale"].clone()}


def random_outputs(B, C, P, H, W, seed=0, requires_grad=False):
    g = torch.Generator().manual_seed(seed)
    shapes = {"obj_logits": (B, C, H, W), "obj_offset": (B, 2, H, W), "obj_size": (B, 2, H, W),
              "rel_logits": (B, P, H, W), "rel_subj": (B, P, 2, H, W), "rel_obj": (B, P, 2, H, W),
              "rel_scale": (B, P, 2, H, W)}
    out = {k: torch.randn(*s, generator=g) for k, s in shapes.items()}
    out["obj_size"] = out["obj_size"].abs() * 3
    out["rel_subj"] *= 4
    out["rel_obj"] *= 4
    return {k: v.requires_grad_(requires_grad) for k, v in out.items()}


def iou(a, b):
    from torchvision.ops import box_iou
    return box_iou(torch.as_tensor(a, dtype=torch.float32).reshape(-1, 4),
                   torch.as_tensor(b, dtype=torch.float32).reshape(-1, 4))


# ------------------------------------------------------------------------------------ encoder
def test_gaussian_radius_matches_centernet_formula():
    # CenterNet's gaussian_radius((8, 8), 0.7): r3 = (-22.4 + sqrt(22.4^2 + 4*2.8*19.2)) / 2 = 2.187
    r = gaussian_radius(torch.tensor([8.0, 2.0]), torch.tensor([8.0, 2.0]), 0.7)
    assert r[0].item() == pytest.approx((-22.4 + math.sqrt(22.4 ** 2 + 4 * 2.8 * 19.2)) / 2, rel=1e-5)
    assert int(r[0]) == 2 and int(r[1]) == 0


def test_object_targets_hand_checked():
    # centre (5.25, 4.75) grid -> cell (row 4, col 5), offset (0.25, 0.75), size (8, 8) -> radius 2
    boxes = torch.tensor([box_at(5.25, 4.75, 8, 8)])
    t = encode_targets(boxes, torch.tensor([2]), torch.zeros(0, 3, dtype=torch.long), (10, 12), 3, 2)
    hm = t["obj_heatmap"]
    assert hm.shape == (3, 10, 12) and hm[0].sum() == 0 and hm[2].sum() == 0
    assert hm[1, 4, 5] == 1 and hm[1].max() == 1
    sigma2 = (5 / 6) ** 2
    assert hm[1, 4, 6].item() == pytest.approx(math.exp(-1 / (2 * sigma2)), rel=1e-6)
    assert hm[1, 6, 7].item() == pytest.approx(math.exp(-8 / (2 * sigma2)), rel=1e-6)
    assert hm[1, 4, 8] == 0 and hm[1, 7, 5] == 0  # outside the (2r+1)^2 square
    assert t["obj_reg_mask"].nonzero().tolist() == [[4, 5]]
    assert torch.allclose(t["obj_offset"][:, 4, 5], torch.tensor([0.25, 0.75]))
    assert torch.allclose(t["obj_size"][:, 4, 5], torch.tensor([8.0, 8.0]))
    assert t["obj_offset"].abs().sum() == pytest.approx(1.0) and t["obj_size"].sum() == 16
    for key in ("rel_heatmap", "rel_subj", "rel_obj", "rel_scale"):
        assert t[key].abs().sum() == 0 and t[key].shape[0] == 2


def test_shared_centre_cell_largest_box_wins_and_both_peaks_stay():
    boxes = torch.tensor([box_at(3.2, 3.3, 1, 1), box_at(3.6, 3.7, 4, 3)])
    t = encode_targets(boxes, torch.tensor([1, 3]), torch.zeros(0, 3, dtype=torch.long), (8, 8), 3, 1)
    assert t["obj_heatmap"][0, 3, 3] == 1 and t["obj_heatmap"][2, 3, 3] == 1
    assert t["obj_reg_mask"].sum() == 1
    assert torch.allclose(t["obj_offset"][:, 3, 3], torch.tensor([0.6, 0.7]), atol=1e-5)
    assert torch.allclose(t["obj_size"][:, 3, 3], torch.tensor([4.0, 3.0]))


def test_same_class_gaussians_are_max_merged():
    boxes = torch.tensor([box_at(2.5, 2.5, 8, 8), box_at(4.5, 2.5, 8, 8)])
    t = encode_targets(boxes, torch.tensor([1, 1]), torch.zeros(0, 3, dtype=torch.long), (6, 8), 1, 1)
    one = encode_targets(boxes[:1], torch.tensor([1]), torch.zeros(0, 3, dtype=torch.long), (6, 8), 1, 1)
    two = encode_targets(boxes[1:], torch.tensor([1]), torch.zeros(0, 3, dtype=torch.long), (6, 8), 1, 1)
    assert torch.equal(t["obj_heatmap"], torch.maximum(one["obj_heatmap"], two["obj_heatmap"]))
    assert t["obj_heatmap"][0, 2, 2] == 1 and t["obj_heatmap"][0, 2, 4] == 1


def test_relation_cells_along_segment_and_vectors_point_at_centres():
    # subject centre (2.5, 2.5), object (7.5, 7.5); margin 0.3 -> samples from (4, 4) to (6, 6)
    boxes = torch.tensor([box_at(2.5, 2.5, 2, 4), box_at(7.5, 7.5, 3, 1)])
    rels = torch.tensor([[0, 1, 2]])
    t = encode_targets(boxes, torch.tensor([1, 2]), rels, (10, 10), 2, 3, rel_margin=0.3)
    expected = set()
    for c in (4, 5, 6):  # sample cells on the diagonal, then their 3x3 patches
        expected |= {(c + di, c + dj) for di in (-1, 0, 1) for dj in (-1, 0, 1)}
    got = {tuple(x) for x in t["rel_mask"][1].nonzero().tolist()}
    assert got == expected
    assert t["rel_mask"][0].sum() == 0 and t["rel_mask"][2].sum() == 0
    assert torch.equal(t["rel_heatmap"], t["rel_mask"].float())
    for (i, j) in expected:
        assert torch.allclose(t["rel_subj"][1, :, i, j], torch.tensor([2.5 - j, 2.5 - i]))
        assert torch.allclose(t["rel_obj"][1, :, i, j], torch.tensor([7.5 - j, 7.5 - i]))
        assert torch.allclose(t["rel_scale"][1, :, i, j], torch.tensor([0.2, 0.1]))
    # vectors are zero off the positive cells
    off = ~t["rel_mask"][1]
    assert t["rel_subj"][1][:, off].abs().sum() == 0
    # the end parts of the segment (fractions < 0.3 and > 0.7) are not positive
    assert not t["rel_mask"][1, 2, 2] and not t["rel_mask"][1, 8, 8]


def test_relation_collision_closest_segment_wins():
    # horizontal a->b on y=5.5 and vertical c->d on x=7.2, same predicate, crossing near (7.2, 5.5)
    boxes = torch.tensor([box_at(2.5, 5.5, 2, 2), box_at(12.5, 5.5, 2, 2), box_at(7.2, 0.5, 2, 2),
                          box_at(7.2, 10.5, 2, 2)])
    labels = torch.tensor([1, 1, 1, 1])
    for rels in (torch.tensor([[0, 1, 1], [2, 3, 1]]), torch.tensor([[2, 3, 1], [0, 1, 1]])):
        t = encode_targets(boxes, labels, rels, (12, 14), 1, 2)
        obj_x = t["rel_obj"][0, 0] + torch.arange(14.0)[None, :]  # absolute object-centre x per cell
        # cell (5, 7): centre (7.5, 5.5) is on the horizontal segment (0) vs 0.3 from the vertical
        assert obj_x[5, 7].item() == pytest.approx(12.5)
        assert obj_x[5, 6].item() == pytest.approx(12.5)
        # cell (4, 7): centre (7.5, 4.5): 1.0 from the horizontal, 0.3 from the vertical
        assert obj_x[4, 7].item() == pytest.approx(7.2)
        assert obj_x[6, 7].item() == pytest.approx(7.2)
    # another predicate does not collide
    t = encode_targets(boxes, labels, torch.tensor([[0, 1, 1], [2, 3, 2]]), (12, 14), 1, 2)
    assert t["rel_mask"][0, 5, 7] and t["rel_mask"][1, 5, 7]


def test_encode_batch_pads_to_the_batch_grid():
    a = encode_targets(torch.tensor([box_at(1.5, 1.5, 2, 2)]), torch.tensor([1]), torch.zeros(0, 3).long(),
                       (4, 6), 2, 2)
    b = encode_targets(torch.tensor([box_at(2.5, 4.5, 2, 2)]), torch.tensor([2]), torch.zeros(0, 3).long(),
                       (6, 4), 2, 2)
    t = encode_batch([a, b])
    assert t["obj_heatmap"].shape == (2, 2, 6, 6) and t["rel_subj"].shape == (2, 2, 2, 6, 6)
    assert t["obj_reg_mask"].dtype == torch.bool and t["obj_reg_mask"][0, 1, 1] and t["obj_reg_mask"][1, 4, 2]
    assert torch.equal(t["obj_heatmap"][0, :, :4, :6], a["obj_heatmap"])
    assert t["obj_heatmap"][0, :, 4:].sum() == 0
    assert encode_batch([a], grid_size=(8, 8))["obj_size"].shape == (1, 2, 8, 8)


# ---------------------------------------------------------------------------- perfect fields
def random_scene(rng, n_obj=5, n_rel=6, grid=32, C=6, P=5, min_gap=6.0):
    centres = []
    while len(centres) < n_obj:
        c = rng.uniform(3, grid - 3, size=2)
        if all(np.hypot(*(c - d)) >= min_gap for d in centres):
            centres.append(c)
    boxes = []
    for c in centres:
        w, h = rng.uniform(2, 5, size=2)
        boxes.append(box_at(c[0], c[1], w, h))
    labels = rng.integers(1, C + 1, size=n_obj)
    pairs = [(s, o) for s in range(n_obj) for o in range(s + 1, n_obj)]
    chosen = rng.choice(len(pairs), size=n_rel, replace=False)
    rels = []
    for k in chosen:  # one direction per unordered pair (the reverse pair would share the segment)
        s, o = pairs[k]
        if rng.random() < 0.5:
            s, o = o, s
        rels.append((s, o, int(rng.integers(1, P + 1))))
    return (torch.tensor(boxes, dtype=torch.float32), torch.as_tensor(labels, dtype=torch.long),
            torch.tensor(rels, dtype=torch.long))


def match_objects(graph, boxes, labels, thr=0.9):
    """GT index -> decoded index with IoU > thr and the same label (-1 if none)."""
    m = iou(boxes, graph.boxes)
    ok = (m > thr) & (labels[:, None] == graph.labels[None, :])
    return torch.where(ok.any(1), (m * ok).argmax(1), torch.full_like(labels, -1))


def triplet_found(graph, s, o, p, min_score=0.5):
    rows = ((graph.rel_pairs[:, 0] == s) & (graph.rel_pairs[:, 1] == o)).nonzero().flatten()
    return bool(rows.numel()) and bool((graph.rel_scores[rows, p] > min_score).any())


def test_perfect_fields_recover_random_scenes_sgdet_and_predcls():
    rng = np.random.default_rng(0)
    C, P = 6, 5
    found = total = 0
    for _ in range(12):
        boxes, labels, rels = random_scene(rng, C=C, P=P)
        t = encode_batch([encode_targets(boxes, labels, rels, (32, 32), C, P)])
        out = perfect_outputs(t)
        g = decode_fields(out, [(512, 512)], mode="sgdet")[0]
        assert g.rel_scores.shape[1] == P + 1 and (g.rel_scores[:, 0] == 0).all()
        match = match_objects(g, boxes, labels)
        assert (match >= 0).all(), "every GT object is decoded with IoU > 0.9 and its label"
        top = g.topk(100)
        for s, o, p in rels.tolist():
            total += 1
            found += triplet_found(top, int(match[s]), int(match[o]), p)
        pc = decode_fields(out, [(512, 512)], mode="predcls", gt_boxes=[boxes], gt_labels=[labels])[0]
        assert torch.equal(pc.boxes, boxes) and torch.equal(pc.labels, labels) and (pc.scores == 1).all()
        for s, o, p in rels.tolist():
            assert triplet_found(pc, s, o, p)
    assert found == total


@pytest.fixture(scope="module")
def synthvg(tmp_path_factory):
    from sgg.data.catalog import get_dataset_files
    from sgg.data.datasets.vg150 import VG150Dataset
    from sgg.data.synthvg import generate_synthvg

    root = tmp_path_factory.mktemp("onestage_synthvg")
    generate_synthvg(os.path.join(str(root), "synthvg_tiny"), profile="tiny", seed=1, num_images=40)
    files = get_dataset_files("synthvg_tiny_train", str(root))
    kw = dict(roidb_file=files.roidb_file, dict_file=files.dict_file, image_file=files.image_file,
              img_dir=files.img_dir)
    return [VG150Dataset(split="train", num_val_im=0, **kw), VG150Dataset(split="test", **kw)]


def test_perfect_fields_synthvg_recall(synthvg):
    """Encode the GT of every SynthVG image in a 512-px input frame (as the mapper resizes), decode
    the perfect fields and score them with the evaluator; the loss of this round trip is the
    encoding's own (objects sharing a centre cell, relations losing every cell to a closer one)."""
    from sgg.evaluation import evaluate_relations

    C, P = synthvg[0].num_classes - 1, synthvg[0].num_predicates - 1
    gts, preds = [], {m: [] for m in ("predcls", "sgcls", "sgdet")}
    for ds in synthvg:
        for i in range(len(ds)):
            gt = ds.get_groundtruth(i)
            h, w = gt["height"], gt["width"]
            f = 512.0 / max(h, w)
            hw = (int(round(h * f)), int(round(w * f)))
            boxes = torch.as_tensor(gt["boxes"]) * f
            labels = torch.as_tensor(gt["labels"])
            t = encode_batch([encode_targets(boxes, labels, torch.as_tensor(gt["relations"]),
                                             grid_size_of(hw, S), C, P)])
            out = perfect_outputs(t)
            gts.append(gt)
            for mode in preds:
                g = decode_fields(out, [hw], mode=mode, gt_boxes=[boxes], gt_labels=[labels])[0]
                preds[mode].append(g.resized((h, w)).to_numpy())
    recall = {m: evaluate_relations(gts, p, m, P)["R@100"] for m, p in preds.items()}
    print(f"SynthVG perfect-field R@100 over {len(gts)} images: {recall}")
    assert recall["predcls"] >= 0.95 and recall["sgcls"] >= 0.95 and recall["sgdet"] >= 0.95


# ------------------------------------------------------------------------------------ losses
def _scene_targets():
    rng = np.random.default_rng(3)
    ims = [random_scene(rng, grid=16, min_gap=4.0), random_scene(rng, grid=16, min_gap=4.0)]
    return encode_batch([encode_targets(b, l, r, (16, 16), 6, 5) for b, l, r in ims])


def test_losses_near_zero_on_perfect_outputs_and_positive_on_random():
    t = _scene_targets()
    perfect = field_losses(perfect_outputs(t), t)
    assert set(perfect) == {"loss_obj_heatmap", "loss_obj_offset", "loss_obj_size", "loss_rel_heatmap",
                            "loss_rel_vector", "loss_rel_scale"}
    assert perfect["loss_obj_heatmap"] < 1e-3 and perfect["loss_rel_heatmap"] < 1e-3
    for k in ("loss_obj_offset", "loss_obj_size", "loss_rel_vector", "loss_rel_scale"):
        assert perfect[k].item() == 0.0
    rand = field_losses(random_outputs(2, 6, 5, 16, 16), t)
    assert all(v.item() > 0 and math.isfinite(v.item()) for v in rand.values())
    # weights apply per term
    half = field_losses(random_outputs(2, 6, 5, 16, 16), t, weights={"rel_vec": 0.5})
    assert half["loss_rel_vector"].item() == pytest.approx(0.5 * rand["loss_rel_vector"].item(), rel=1e-6)
    assert half["loss_obj_size"].item() == pytest.approx(rand["loss_obj_size"].item())


def test_focal_loss_matches_centernet_formula():
    logits = torch.tensor([[2.0, -1.0], [0.5, -3.0]])
    target = torch.tensor([[1.0, 0.5], [0.0, 1.0]])
    p = torch.sigmoid(logits)
    pos = (1 - p[0, 0]) ** 2 * torch.log(p[0, 0]) + (1 - p[1, 1]) ** 2 * torch.log(p[1, 1])
    neg = (1 - 0.5) ** 4 * p[0, 1] ** 2 * torch.log(1 - p[0, 1]) + p[1, 0] ** 2 * torch.log(1 - p[1, 0])
    assert focal_loss(logits, target).item() == pytest.approx((-(pos + neg) / 2).item(), rel=1e-6)
    # no positive: normalised by 1; extreme logits stay finite
    assert math.isfinite(focal_loss(torch.tensor([[1e4, -1e4]]), torch.tensor([[0.0, 1.0]])).item())


def test_gradient_reaches_every_field_and_autocast_is_float32():
    t = _scene_targets()
    out = random_outputs(2, 6, 5, 16, 16, requires_grad=True)
    losses = field_losses(out, t)
    sum(losses.values()).backward()
    for k, v in out.items():
        assert v.grad is not None and v.grad.abs().sum() > 0, k
        assert torch.isfinite(v.grad).all(), k
    with torch.autocast("cpu", dtype=torch.bfloat16):
        half = {k: v.detach().bfloat16() for k, v in out.items()}
        lb = field_losses(half, t)
    assert all(v.dtype == torch.float32 and torch.isfinite(v) for v in lb.values())


# ------------------------------------------------------------------------------------ decoder
def test_sgcls_unmatched_box_takes_heatmap_class_never_gt_label():
    C, P, H, W = 6, 2, 8, 8
    out = {k: v.detach() for k, v in random_outputs(1, C, P, H, W).items()}
    out["obj_logits"].fill_(-20.0)
    out["rel_logits"].fill_(-20.0)
    out["obj_size"].zero_()
    out["obj_offset"].zero_()
    gt = torch.tensor([box_at(3.5, 3.5, 2, 2), box_at(6.5, 1.5, 2, 2)])
    out["obj_logits"][0, 2, 3, 3] = 1.0     # heatmap says class 3 (score 0.731) at box 0's centre
    out["obj_logits"][0, 1, 1, 6] = 3.0     # a real detection of class 2 on box 1
    out["obj_offset"][0, :, 1, 6] = 0.5
    out["obj_size"][0, :, 1, 6] = 2.0
    g = decode_fields(out, [(128, 128)], mode="sgcls", gt_boxes=[gt], gt_labels=[torch.tensor([5, 4])])[0]
    assert g.labels.tolist() == [3, 2]       # the GT labels (5, 4) are ignored in SGCls
    assert g.scores[0].item() == pytest.approx(torch.sigmoid(torch.tensor(1.0)).item())
    assert g.scores[1].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert torch.equal(g.boxes, gt)


def test_decoder_with_no_objects_or_no_relations():
    C, P = 4, 3
    out = {k: v.detach() for k, v in random_outputs(2, C, P, 6, 6).items()}
    out["obj_logits"].fill_(-1e4)  # sigmoid == 0: no detection at all
    for mode in ("sgdet", "sgcls", "predcls"):
        gs = decode_fields(out, [(96, 96), (80, 64)], mode=mode,
                           gt_boxes=[torch.zeros(0, 4), torch.zeros(0, 4)],
                           gt_labels=[torch.zeros(0, dtype=torch.long)] * 2)
        for g in gs:
            assert isinstance(g, SceneGraph) and len(g) == 0 and g.boxes.shape == (0, 4)
            assert g.rel_pairs.shape == (0, 2) and g.rel_scores.shape == (0, P + 1)
            assert g.triplet_scores.shape == (0,) and g.rel_labels.shape == (0,)
    out["rel_logits"].fill_(-20.0)  # objects, but no relation cell above the threshold
    gt = [torch.tensor([box_at(1.5, 1.5, 2, 2), box_at(4.5, 4.5, 2, 2)])] * 2
    g = decode_fields(out, [(96, 96)] * 2, mode="predcls", gt_boxes=gt, gt_labels=[torch.tensor([1, 2])] * 2)[0]
    assert len(g) == 2 and g.rel_pairs.shape == (0, 2) and g.rel_scores.shape == (0, P + 1)
    g = decode_fields({k: v[:1] for k, v in out.items()}, [(96, 96)], mode="sgdet")[0]
    assert g.rel_pairs.shape == (0, 2)


@pytest.mark.parametrize("mode", ["sgdet", "sgcls", "predcls"])
def test_decoding_does_not_depend_on_batch_composition(mode):
    C, P = 5, 4
    sizes = [(100, 160), (150, 90)]           # grids 7x10 and 10x6, batch grid 10x10
    g = torch.Generator().manual_seed(5)
    gt = [torch.tensor([[10.0, 12.0, 60.0, 70.0], [80.0, 20.0, 150.0, 90.0], [30.0, 40.0, 70.0, 95.0]]),
          torch.tensor([[5.0, 5.0, 50.0, 60.0], [40.0, 70.0, 85.0, 140.0]])]
    labels = [torch.tensor([1, 2, 5]), torch.tensor([3, 3])]
    batch = random_outputs(2, C, P, 10, 10, seed=7)
    batch["rel_logits"] = batch["rel_logits"] - 0.5   # a mix of cells above / below the threshold
    singles = []
    for b, (h, w) in enumerate(sizes):
        Hv, Wv = grid_size_of((h, w), S)
        one = {k: v[b:b + 1, ..., :Hv, :Wv].clone() for k, v in batch.items()}
        singles.append(decode_fields(one, [(h, w)], mode=mode, gt_boxes=[gt[b]], gt_labels=[labels[b]],
                                     topk_objects=20)[0])
        # garbage in the padded cells of the batch must not matter
        pad = torch.randn(batch["obj_logits"][b, :, Hv:].shape, generator=g) * 10
        batch["obj_logits"][b, :, Hv:] = pad
    both = decode_fields(batch, sizes, mode=mode, gt_boxes=gt, gt_labels=labels, topk_objects=20)
    assert any(s.num_relations > 0 for s in singles)
    for a, b in zip(singles, both):
        for f in ("boxes", "labels", "scores", "rel_pairs", "rel_scores", "rel_labels", "triplet_scores"):
            assert torch.equal(getattr(a, f), getattr(b, f)), f
        assert a.image_size == b.image_size


def test_decoder_rules_on_a_hand_made_field():
    """Two predicted relation cells of the same triplet keep the max score; a point is assigned to
    the centre with the smallest distance / score; subject == object is dropped."""
    C, P, H, W = 2, 2, 8, 8
    out = {k: v.detach() for k, v in random_outputs(1, C, P, H, W).items()}
    out["rel_logits"].fill_(-20.0)
    boxes = torch.tensor([box_at(1.5, 1.5, 2, 2), box_at(6.5, 6.5, 2, 2), box_at(6.5, 1.5, 2, 2)])
    for (i, j, logit, subj, obj) in [(3, 3, 2.0, (1.5, 1.5), (6.5, 6.5)),     # 0 -> 1, p=1
                                    (4, 4, 1.0, (1.6, 1.4), (6.4, 6.6)),     # 0 -> 1, p=1, lower
                                    (2, 4, 0.5, (6.4, 1.5), (1.5, 1.7)),     # 2 -> 0, p=1
                                    (5, 5, 3.0, (6.5, 6.5), (6.6, 6.4))]:    # 1 -> 1: dropped
        out["rel_logits"][0, 0, i, j] = logit
        out["rel_subj"][0, 0, :, i, j] = torch.tensor([subj[0] - j, subj[1] - i])
        out["rel_obj"][0, 0, :, i, j] = torch.tensor([obj[0] - j, obj[1] - i])
    g = decode_fields(out, [(128, 128)], mode="predcls", gt_boxes=[boxes], gt_labels=[torch.tensor([1, 2, 1])])[0]
    sig = torch.sigmoid
    assert g.rel_pairs.tolist() == [[0, 1], [2, 0]]
    assert torch.allclose(g.rel_scores, torch.tensor([[0.0, sig(torch.tensor(2.0)), 0.0],
                                                      [0.0, sig(torch.tensor(0.5)), 0.0]]))
    assert g.rel_labels.tolist() == [1, 1]


@pytest.mark.gpu
def test_cuda_matches_cpu():
    """Targets, losses and graphs are computed on the inputs' device and agree with the CPU."""
    rng = np.random.default_rng(11)
    scenes = [random_scene(rng) for _ in range(2)]
    dev = torch.device("cuda")
    res = {}
    for d in (torch.device("cpu"), dev):
        t = encode_batch([encode_targets(b.to(d), l.to(d), r.to(d), (32, 32), 6, 5) for b, l, r in scenes])
        assert all(v.device.type == d.type for v in t.values())
        out = perfect_outputs(t)
        noisy = {k: (v + 0.01 * torch.randn(v.shape, generator=torch.Generator().manual_seed(1)).to(d))
                 for k, v in out.items()}
        losses = field_losses(noisy, t)
        graphs = decode_fields(out, [(512, 512)] * 2, mode="sgdet")
        assert all(g.boxes.device.type == d.type and g.rel_scores.device.type == d.type for g in graphs)
        res[d.type] = (t, losses, graphs)
    (tc, lc, gc), (tg, lg, gg) = res["cpu"], res["cuda"]
    for k in tc:
        assert torch.allclose(tc[k].float(), tg[k].cpu().float(), atol=1e-5), k
    for k in lc:
        assert lg[k].item() == pytest.approx(lc[k].item(), rel=1e-4, abs=1e-6), k
    for a, b in zip(gc, gg):
        b = b.to("cpu")
        assert torch.equal(a.labels, b.labels) and torch.allclose(a.boxes, b.boxes, atol=1e-3)
        assert torch.equal(a.rel_pairs, b.rel_pairs) and torch.allclose(a.rel_scores, b.rel_scores, atol=1e-6)
