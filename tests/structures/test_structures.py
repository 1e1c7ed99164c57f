import pytest
import torch

from sgg.structures import Boxes, Instances, SceneGraph, pairwise_iou, union_boxes


def test_iou_conventions():
    a = torch.tensor([[0.0, 0.0, 9.0, 9.0]])
    b = torch.tensor([[5.0, 5.0, 14.0, 14.0]])
    # continuous: inter 4*4=16, areas 81+81 -> 16/146
    assert pairwise_iou(a, b).item() == pytest.approx(16 / 146)
    # legacy +1: inter 5*5=25, areas 100+100 -> 25/175
    assert pairwise_iou(a, b, legacy=True).item() == pytest.approx(25 / 175)
    # touching boxes overlap by one pixel in the legacy convention only
    c = torch.tensor([[9.0, 0.0, 18.0, 9.0]])
    assert pairwise_iou(a, c).item() == 0.0
    assert pairwise_iou(a, c, legacy=True).item() == pytest.approx(10 / 190)


def test_boxes_ops():
    b = Boxes(torch.tensor([[-5.0, 2.0, 30.0, 8.0], [1.0, 1.0, 1.0, 4.0]]))
    assert b.nonempty().tolist() == [True, False]
    b.clip((10, 20))
    assert b.tensor[0].tolist() == [0.0, 2.0, 20.0, 8.0]
    b.clip((10, 20), legacy=True)
    assert b.tensor[0].tolist() == [0.0, 2.0, 19.0, 8.0]
    assert Boxes(torch.zeros(0)).tensor.shape == (0, 4)
    with pytest.raises(ValueError, match=r"\[N,4\]"):
        Boxes(torch.zeros(3, 5))
    u = union_boxes(torch.tensor([[0.0, 5, 3, 9]]), torch.tensor([[2.0, 1, 7, 6]]))
    assert u.tolist() == [[0.0, 1.0, 7.0, 9.0]]


def test_instances_index_and_length_check():
    inst = Instances((10, 20), boxes=Boxes(torch.rand(3, 4)), labels=torch.tensor([1, 2, 3]))
    sub = inst[torch.tensor([True, False, True])]
    assert len(sub) == 2 and sub.labels.tolist() == [1, 3]
    assert inst[1].labels.tolist() == [2]
    with pytest.raises(ValueError, match="length 2"):
        inst.scores = torch.ones(2)
    with pytest.raises(AttributeError, match="no field 'scores'"):
        inst.scores
    both = Instances.cat([inst, sub])
    assert len(both) == 5 and both.labels.tolist() == [1, 2, 3, 1, 3]


def test_scene_graph_ordering_is_reference_triplet_score():
    scores = torch.tensor([1.0, 0.5, 0.2])
    pairs = torch.tensor([[0, 1], [1, 2], [2, 0], [0, 2]])
    rel = torch.tensor([
        [0.1, 0.6, 0.3],   # max fg 0.6 * 1.0 * 0.5 = 0.30
        [0.0, 0.2, 0.8],   # 0.8 * 0.5 * 0.2 = 0.08
        [0.5, 0.25, 0.25], # 0.25 * 0.2 * 1.0 = 0.05 (tie in fg columns -> first, predicate 1)
        [0.1, 0.1, 0.8],   # 0.8 * 1.0 * 0.2 = 0.16
    ])
    sg = SceneGraph.from_scores(torch.zeros(3, 4), torch.tensor([1, 2, 3]), scores, pairs, rel, (10, 10))
    assert sg.rel_pairs.tolist() == [[0, 1], [0, 2], [1, 2], [2, 0]]
    assert sg.rel_labels.tolist() == [1, 2, 2, 1]
    assert torch.allclose(sg.triplet_scores, torch.tensor([0.30, 0.16, 0.08, 0.05]))
    assert sg.topk(2).num_relations == 2
    d = sg.to_numpy()
    assert d["rel_scores"].shape == (4, 3) and d["rel_pairs"].dtype.kind == "i"


def test_scene_graph_stable_ties_and_resize():
    pairs = torch.tensor([[0, 1], [1, 0]])
    rel = torch.tensor([[0.5, 0.5], [0.5, 0.5]])
    sg = SceneGraph.from_scores(torch.tensor([[0.0, 0, 10, 10], [5.0, 5, 10, 20]]), torch.tensor([1, 1]),
                                torch.ones(2), pairs, rel, (20, 10))
    assert sg.rel_pairs.tolist() == [[0, 1], [1, 0]]
    big = sg.resized((40, 30))
    assert big.boxes[1].tolist() == [15.0, 10.0, 30.0, 40.0] and big.image_size == (40, 30)
    empty = SceneGraph.from_scores(torch.zeros(1, 4), torch.tensor([1]), torch.ones(1),
                                   torch.zeros(0, 2, dtype=torch.long), torch.zeros(0, 3), (5, 5))
    assert empty.num_relations == 0 and empty.rel_labels.shape == (0,)
