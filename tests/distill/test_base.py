"""The Distillation contract (sgg.distill.base): a toy method through the real Trainer, and the
attach / detach bookkeeping of HML's HMLLoss and STDG's DepthTeacherDistillation (every hook they
install is gone after detach; detach twice is safe; attach replaces the previous tap)."""
import pytest
import torch
from torch import nn
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.ops import MultiScaleRoIAlign

from sgg.distill import (
    DepthTeacherDistillation,
    Distillation,
    FieldTap,
    HMLLoss,
    PredictionDistillation,
    RelationHeadTap,
    Tap,
    build_parent_head,
)
from sgg.modeling.relation import MotifPredictor, RelationHead


def hook_counts(model: nn.Module):
    """{module path: (forward hooks, forward pre-hooks)} of every submodule."""
    return {n: (len(m._forward_hooks), len(m._forward_pre_hooks)) for n, m in model.named_modules()}


# ----------------------------------------------------------------------------- a toy method
class OutputTap(Tap):
    """Keeps the latest training output of one module."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self._handles = [module.register_forward_hook(self._hook)]

    def _hook(self, module, args, output):
        if module.training:
            self.record = output


class ShrinkOutputs(Distillation):
    """Toy method: ``loss_shrink = weight * mean(y²)`` of the tapped layer's outputs ``y``, and
    ``shrink_mean = mean(y)`` as a logged-only scalar."""

    tapped = "the layer"

    def __init__(self, weight: float) -> None:
        super().__init__()
        self.weight = weight

    @classmethod
    def from_config(cls, cfg, model, attach=True):
        out = cls(cfg["weight"])
        return out.attach(model) if attach else out

    def make_tap(self, model):
        return OutputTap(model.layer)

    def __call__(self, model, batch, outputs=None):
        y = self.pop_record()
        return {"loss_shrink": self.weight * y.float().pow(2).mean(), "shrink_mean": y.detach().mean()}


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(2, 1)

    def forward(self, batch):
        return {"loss_fit": (self.layer(batch) - 1.0).pow(2).mean()}


X = torch.tensor([[0.5, -1.0], [2.0, 0.25], [-0.75, 1.5]])


def test_toy_distillation_through_the_trainer(tmp_path):
    from sgg.engine.trainer import Trainer

    torch.manual_seed(0)
    model = Toy()
    ref = Toy()
    ref.load_state_dict(model.state_dict())
    before = hook_counts(model)
    distill = ShrinkOutputs.from_config({"weight": 0.5}, model, attach=False)
    assert isinstance(distill, Distillation) and distill.tap is None
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, [X, X], opt, max_iter=2, device="cpu", extra_losses=[distill],
                      output_dir=str(tmp_path), handle_sigterm=False)
    with distill.attached(trainer.model) as d:
        assert d is distill and isinstance(distill.tap, OutputTap)
        assert hook_counts(model)["layer"] == (1, 0)
        assert trainer.train() == "completed"
    assert distill.tap is None and hook_counts(model) == before

    # iteration 1 by hand: the extra term is summed into the loss, its other scalar only logged
    y = ref.layer(X)
    fit, shrink = (y - 1.0).pow(2).mean(), 0.5 * y.pow(2).mean()
    window = trainer.storage.pop_window()
    assert window["loss_fit"][0] == pytest.approx(fit.item(), rel=1e-6)
    assert window["loss_shrink"][0] == pytest.approx(shrink.item(), rel=1e-6)
    assert window["shrink_mean"][0] == pytest.approx(y.mean().item(), rel=1e-6)
    assert window["total_loss"][0] == pytest.approx((fit + shrink).item(), rel=1e-6)
    # ... and its gradient reaches the step
    (fit + shrink).backward()
    with torch.no_grad():
        for p in ref.parameters():
            p -= 0.1 * p.grad
    y2 = ref.layer(X)
    assert window["loss_shrink"][1] == pytest.approx(0.5 * y2.pow(2).mean().item(), rel=1e-5)


def test_toy_distillation_errors_and_context_manager():
    model = Toy()
    distill = ShrinkOutputs(1.0)
    with pytest.raises(RuntimeError, match="ShrinkOutputs is not attached"):
        distill(model, X)
    with distill.attach(model):
        model.eval()
        model(X)  # eval forwards are not recorded
        with pytest.raises(RuntimeError, match="the layer ran no training forward before ShrinkOutputs"):
            distill(model, X)
        model.train()
        model(X)
        assert set(distill(model, X)) == {"loss_shrink", "shrink_mean"}
        assert distill.tap.record is None  # popped
    assert distill.tap is None and hook_counts(model)["layer"] == (0, 0)
    with pytest.raises(TypeError):
        Distillation()  # abstract: from_config and __call__ are the subclass's


# ----------------------------------------------------------------------------- HML and STDG
def _relation_model():
    torch.manual_seed(0)
    pool, box_head = MultiScaleRoIAlign(["0", "1", "2", "3"], 7, 2), TwoMLPHead(8 * 49, 32)
    pred = MotifPredictor(num_obj_classes=5, num_rel_classes=5, in_channels=32, hidden_dim=16, pooling_dim=24,
                          embed_dim=10, mode="predcls")
    model = nn.Module()
    model.detector = nn.Linear(3, 3)
    model.relation_head = RelationHead(pool, box_head, pred, "predcls")
    return model


def _hml_loss(model):
    return HMLLoss(build_parent_head(model), PredictionDistillation(), None)


def _stdg():
    class OneStage(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = nn.Conv2d(3, 4, 3)

    student = OneStage()
    return student, DepthTeacherDistillation(OneStage())


def test_methods_are_distillations():
    assert issubclass(HMLLoss, Distillation) and issubclass(DepthTeacherDistillation, Distillation)
    assert issubclass(RelationHeadTap, Tap) and issubclass(FieldTap, Tap)


@pytest.mark.parametrize("method", ["hml", "stdg"])
def test_attach_returns_self_and_detach_removes_every_hook(method):
    if method == "hml":
        model = _relation_model()
        distill = _hml_loss(model)
        tap_type = RelationHeadTap
    else:
        model, distill = _stdg()
        tap_type = FieldTap
    before = hook_counts(model)
    assert distill.attach(model) is distill
    assert isinstance(distill.tap, tap_type)
    attached = hook_counts(model)
    assert sum(f + p for f, p in attached.values()) > sum(f + p for f, p in before.values())
    assert distill.attach(model) is distill  # re-attaching replaces the tap, no hook left behind
    assert hook_counts(model) == attached
    distill.detach()
    assert distill.tap is None and hook_counts(model) == before
    distill.detach()  # twice is safe
    assert hook_counts(model) == before
    with pytest.raises(RuntimeError, match="not attached"):
        distill(model, [])
    with distill.attached(model):
        assert hook_counts(model) == attached
    assert hook_counts(model) == before
    with distill.attach(model) as d:  # a context manager that detaches on exit
        assert d is distill
    assert distill.tap is None and hook_counts(model) == before


def test_attach_to_an_unfit_model_keeps_the_previous_tap():
    model = _relation_model()
    distill = _hml_loss(model)
    distill.attach(model)
    attached = hook_counts(model)
    with pytest.raises(ValueError, match="no RelationHead"):
        distill.attach(nn.Linear(2, 2))
    assert hook_counts(model) == attached and distill.tap is not None
    distill.detach()

    student, stdg = _stdg()
    stdg.attach(student)
    with pytest.raises(TypeError, match="one-stage model"):
        stdg.attach(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="teacher itself"):
        stdg.attach(stdg.teacher.model)
    assert stdg.tap is not None and stdg.tap.net is student.net
    stdg.detach()
    assert hook_counts(student)[""] == (0, 0) and hook_counts(student)["net"] == (0, 0)


def test_distill_does_not_import_the_engine():
    """Layers point down: sgg.distill is below sgg.engine (DESIGN.md)."""
    import subprocess
    import sys

    code = ("import sys, sgg.distill, sgg.distill.hml; "
            "bad = sorted(m for m in sys.modules if m.startswith('sgg.engine')); "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
