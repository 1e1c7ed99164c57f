"""CUDAGraphRunner: the eager fallbacks (CPU) and, on a GPU, graph replay equal to the eager network."""
import copy

import pytest
import torch

from sgg.modeling.meta_arch.one_stage import OneStageSGG
from sgg.modeling.onestage.backbone import build_onestage_backbone
from sgg.modeling.onestage.fields import CompositeFieldNet
from sgg.structures import SceneGraph
from sgg.utils.cuda_graph import CUDAGraphRunner

pytestmark = pytest.mark.usefixtures("one_thread")


def _tiny_net(obj="conv", rel="conv"):
    torch.manual_seed(0)
    trunks = {"conv": dict(trunk="conv", width=16, num_convs=2, norm="BN"),
              "deform": dict(trunk="deform", width=16, num_convs=2),
              "transformer": dict(trunk="transformer", width=32, num_layers=1, num_heads=4, num_freqs=4)}
    return CompositeFieldNet(build_onestage_backbone("R-18"), 4, 3, obj_head_kwargs=trunks[obj],
                             rel_head_kwargs=trunks[rel]).eval()


def _assert_same(a, b, **tol):
    """Nested dicts / lists of tensors: equal keys, lengths, shapes, dtypes and values within ``tol``."""
    torch.testing.assert_close(a, b, **tol)


def test_runner_falls_back_to_eager_without_cuda_or_with_gradients():
    net = _tiny_net()
    runner = CUDAGraphRunner(net)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = runner(x)
        _assert_same(out, net(x), rtol=0, atol=0)
    y = runner(x)  # gradients enabled: eager, differentiable
    y["obj_logits"].sum().backward()
    assert net.obj_head.logits.weight.grad is not None
    assert runner.stats == {"captures": 0, "replays": 0, "eager": 2} and runner.num_graphs == 0
    with pytest.raises(ValueError, match="max_graphs"):
        CUDAGraphRunner(net, max_graphs=-1)


def test_onestage_model_with_cuda_graphs_on_cpu_decodes_the_same_graphs():
    torch.manual_seed(1)
    images = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8), torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)]
    batch = [{"image": im, "height": 2 * im.shape[1], "width": 2 * im.shape[2]} for im in images]
    graphs = {}
    for flag in (False, True):
        model = OneStageSGG(_tiny_net(), "sgdet", rel_threshold=0.05, pair_score_filter=False, cuda_graphs=flag).eval()
        with torch.no_grad():
            graphs[flag] = model(batch)
    assert (model.graph_runner is not None and model.graph_runner.stats["eager"] == 2
            and model.graph_runner.stats["captures"] == 0)
    for a, b in zip(graphs[False], graphs[True]):
        assert isinstance(b, SceneGraph) and len(a) > 0 and a.num_relations > 0
        assert torch.equal(a.boxes, b.boxes) and torch.equal(a.labels, b.labels)
        assert torch.equal(a.rel_pairs, b.rel_pairs) and torch.equal(a.rel_scores, b.rel_scores)
    twin = copy.deepcopy(model)  # e.g. the EMA copy: its runner drives its own network
    assert twin.graph_runner is not model.graph_runner and twin.graph_runner.fn is twin.net


@pytest.mark.gpu
@pytest.mark.parametrize("trunks,amp", [(("conv", "conv"), None), (("deform", "transformer"), torch.bfloat16)])
def test_replayed_graph_equals_the_eager_network(trunks, amp):
    dev = torch.device("cuda")
    net = _tiny_net(*trunks).to(dev)
    runner = CUDAGraphRunner(net, max_graphs=2)
    gen = torch.Generator().manual_seed(0)
    xs = [torch.randn(2, 3, 64, 96, generator=gen).to(dev) for _ in range(3)]
    tol = dict(rtol=1e-5, atol=1e-5) if amp is None else dict(rtol=2e-2, atol=2e-2)
    with torch.no_grad(), torch.autocast("cuda", dtype=amp or torch.float16, enabled=amp is not None):
        outs = [runner(x) for x in xs]  # one capture, then replays with new inputs
        for x, out in zip(xs, outs):  # earlier outputs are copies: not overwritten by later replays
            _assert_same(out, net(x), **tol)
        assert runner.stats["captures"] == 1 and runner.stats["replays"] == 3
        for shape in ((1, 3, 64, 64), (1, 3, 32, 32), (2, 3, 64, 96)):  # 3 shapes, 2 graphs kept
            x = torch.randn(shape, generator=gen).to(dev)
            _assert_same(runner(x), net(x), **tol)
        assert runner.num_graphs == 2 and runner.stats["captures"] == 4
        with torch.no_grad():  # in-place weight update (load_state_dict, EMA): seen without recapture
            net.obj_head.logits.bias.add_(1.0)
        _assert_same(runner(xs[0]), net(xs[0]), **tol)
        assert runner.stats["captures"] == 4
        net.obj_head.logits.bias = torch.nn.Parameter(net.obj_head.logits.bias.detach() - 2.0)  # replaced
        _assert_same(runner(xs[0]), net(xs[0]), **tol)
        assert runner.stats["captures"] == 5 and runner.num_graphs == 1
