"""The batched one-stage decoder (one candidate list for the whole batch) gives the graphs of the
image-by-image reference decoder (per_image_decoder.py, the pre-batching implementation) on random
fields with many candidates, images of different sizes in one padded batch, ties in the heatmaps,
and every protocol."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))

import per_image_decoder as ref  # noqa: E402
from sgg.modeling.onestage.decoder import (assign_points, decode_fields, decode_objects,  # noqa: E402
                                           decode_objects_batched, decode_relations_batched)
from sgg.modeling.onestage.encoder import grid_size_of  # noqa: E402

S = 16
pytestmark = pytest.mark.usefixtures("one_thread")
FIELDS = ("boxes", "labels", "scores", "rel_pairs", "rel_scores")


def random_fields(B, C, P, H, W, seed, quantise=False):
    g = torch.Generator().manual_seed(seed)
    out = {"obj_logits": torch.randn(B, C, H, W, generator=g) * 2,
           "obj_offset": torch.rand(B, 2, H, W, generator=g),
           "obj_size": torch.rand(B, 2, H, W, generator=g) * 4,
           "rel_logits": torch.randn(B, P, H, W, generator=g) - 1.0,
           "rel_subj": torch.randn(B, P, 2, H, W, generator=g) * 4,
           "rel_obj": torch.randn(B, P, 2, H, W, generator=g) * 4}
    if quantise:  # many exactly equal scores: the tie order (class, row, column) must hold
        out["obj_logits"] = out["obj_logits"].mul(2).round().div(2)
        out["rel_logits"] = out["rel_logits"].mul(2).round().div(2)
    return out


def random_gt(n, h, w, C, g):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w * 0.7, h * 0.7])
    wh = 8 + torch.rand(n, 2, generator=g) * torch.tensor([w * 0.3, h * 0.3])
    boxes = torch.cat([xy, torch.minimum(xy + wh, torch.tensor([w - 1.0, h - 1.0]))], 1)
    return boxes, torch.randint(1, C + 1, (n,), generator=g)


@pytest.mark.parametrize("mode", ["sgdet", "sgcls", "predcls"])
@pytest.mark.parametrize("seed,quantise,filt", [(0, False, True), (1, True, True), (2, False, False),
                                                 (3, True, False)])
def test_batched_decoder_equals_per_image_reference(mode, seed, quantise, filt):
    C, P = 7, 5
    sizes = [(100, 160), (150, 90), (160, 160), (17, 40), (64, 64)]   # grids 7x10, 10x6, 10x10, 2x3, 4x4
    fields = random_fields(len(sizes), C, P, 10, 10, seed, quantise)
    g = torch.Generator().manual_seed(100 + seed)
    gt = [random_gt(n, h, w, C, g) for n, (h, w) in zip([6, 1, 9, 0, 3], sizes)]  # 1 and 0 objects too
    kw = dict(mode=mode, gt_boxes=[b for b, _ in gt], gt_labels=[lab for _, lab in gt], topk_objects=12,
              rel_threshold=0.2, pair_score_filter=filt)
    got = decode_fields(fields, sizes, **kw)
    want = ref.decode_fields(fields, sizes, **kw)
    assert sum(w.num_relations for w in want) > 50   # a real workload, not empty graphs
    for b, (a, w) in enumerate(zip(got, want)):
        for f in FIELDS:
            assert torch.equal(getattr(a, f), getattr(w, f)), (b, f)
        assert a.image_size == w.image_size


def test_objects_of_a_batch_equal_each_image_and_ignore_padding():
    """decode_objects_batched == decode_objects per image (reference), the padded cells of the
    batch holding large logits that would otherwise win the top-k and suppress border peaks."""
    C = 4
    sizes = [(48, 80), (80, 48)]
    f = random_fields(2, C, 1, 5, 5, seed=9, quantise=True)
    for b, (h, w) in enumerate(sizes):
        hv, wv = grid_size_of((h, w), S)
        f["obj_logits"][b, :, hv:, :] = 50.0
        f["obj_logits"][b, :, :, wv:] = 50.0
    dets = decode_objects_batched(f["obj_logits"], f["obj_offset"], f["obj_size"], sizes, topk=7)
    for b, (h, w) in enumerate(sizes):
        want = ref.decode_objects(f["obj_logits"][b], f["obj_offset"][b], f["obj_size"][b], (h, w), topk=7)
        one = decode_objects(f["obj_logits"][b], f["obj_offset"][b], f["obj_size"][b], (h, w), topk=7)
        for got in (dets[b], one):
            assert set(got) == set(want)
            for k in want:
                assert torch.equal(got[k], want[k]), (b, k)
        assert dets[b]["scores"].shape == (7,) and bool((dets[b]["scores"] < 1).all())


def test_relations_only_assign_to_their_own_image():
    """Two images with objects at the same place: each candidate goes to its image's object, even
    when the other image's object is closer or higher-scored."""
    P = 2
    rel_logits = torch.full((2, P, 4, 4), -20.0)
    rel_subj = torch.zeros(2, P, 2, 4, 4)
    rel_obj = torch.zeros(2, P, 2, 4, 4)
    rel_logits[0, 1, 1, 1] = 3.0          # image 0: subject near (0.5, 0.5), object near (3, 3)
    rel_subj[0, 1, :, 1, 1] = torch.tensor([-0.5, -0.5])
    rel_obj[0, 1, :, 1, 1] = torch.tensor([2.0, 2.0])
    centers = [torch.tensor([[0.6, 0.6], [3.0, 3.0]]),
               torch.tensor([[0.5, 0.5], [3.0, 3.0], [1.0, 1.0]])]
    scores = [torch.tensor([0.5, 0.5]), torch.tensor([1.0, 1.0, 1.0])]
    (p0, s0), (p1, s1) = decode_relations_batched(rel_logits, rel_subj, rel_obj, centers, scores,
                                                  [(64, 64), (64, 64)], rel_threshold=0.5)
    assert p0.tolist() == [[0, 1]] and s0.shape == (1, P + 1)
    assert s0[0, 2].item() == pytest.approx(torch.sigmoid(torch.tensor(3.0)).item())
    assert p1.shape == (0, 2) and s1.shape == (0, P + 1)


def test_assign_points_groups_match_one_group_at_a_time():
    g = torch.Generator().manual_seed(4)
    centers = torch.rand(3, 5, 2, generator=g) * 10
    centers[2, 3:] = float("inf")                        # image 2 has 3 objects, padded to 5
    scores = torch.rand(3, 5, generator=g) + 0.1
    scores[2, 3:] = 0.0
    pts = torch.rand(40, 2, generator=g) * 10
    groups = torch.randint(0, 3, (40,), generator=g)
    got = assign_points(pts, centers, scores, groups=groups, chunk=7)
    for k in range(40):
        n = 3 if groups[k] == 2 else 5
        want = ref.assign_points(pts[k:k + 1], centers[groups[k], :n], scores[groups[k], :n])
        assert got[k].item() == want.item()
    assert int(got[groups == 2].max()) < 3
