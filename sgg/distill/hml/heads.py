"""The model's relation head in HML: find it, swap its loss for stage 1, copy it as the frozen
stage-1 "parent", score the child's pairs with that parent, and record (without changing anything)
what the child head saw and produced in its training forward (:class:`RelationHeadTap`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn

from sgg.checkpoint import unwrap_model
from sgg.modeling.relation.head import RelationHead

from ..base import Tap
from .hierarchy import PredicateHierarchy
from .losses import HMLRelationLoss
from .stage_files import Stage1State

__all__ = [
    "RelationHeadTap",
    "TapRecord",
    "build_parent_head",
    "configure_stage1",
    "find_relation_head",
    "init_from_stage1",
    "parent_logits_on_pairs",
    "relation_head_state",
]


# ---------------------------------------------------------------------------------------------
# The head inside the model
# ---------------------------------------------------------------------------------------------
def find_relation_head(model: nn.Module) -> Tuple[str, RelationHead]:
    """``(module path, head)`` of the :class:`RelationHead` inside ``model`` (DDP unwrapped; the path
    is "" when ``model`` is the head)."""
    model = unwrap_model(model)
    for name, m in model.named_modules():
        if isinstance(m, RelationHead):
            return name, m
    raise ValueError(f"{type(model).__name__} contains no RelationHead (HML works on two-stage relation models)")


def configure_stage1(model: nn.Module, hierarchy: PredicateHierarchy) -> HMLRelationLoss:
    """Make the model's relation head train stage 1: its loss ignores fine-labelled pairs. Call
    before building the trainer (the loss module is part of the model)."""
    _, head = find_relation_head(model)
    head.loss_evaluator = HMLRelationLoss.like(head.loss_evaluator, target_map=hierarchy.stage1_target_map())
    return head.loss_evaluator


def relation_head_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The relation head's state dict on CPU (the parent's weights; the detector is shared and
    frozen, so it is not part of the memory)."""
    _, head = find_relation_head(model)
    return {k: v.detach().cpu().clone() for k, v in head.state_dict().items()}


# ---------------------------------------------------------------------------------------------
# The frozen parent
# ---------------------------------------------------------------------------------------------
def build_parent_head(model: nn.Module, state_dict: Optional[Mapping[str, torch.Tensor]] = None) -> RelationHead:
    """A frozen copy (eval mode, no grad, same device) of ``model``'s relation head, loaded with
    ``state_dict`` (the stage-1 head's, strict) when given. It is not a submodule of the model, so
    neither the optimizer, nor DDP, nor checkpoints see it. Build it before attaching a
    :class:`RelationHeadTap` to the child (a deep copy would carry the tap's hooks along; they
    record nothing in eval mode, but hold a copy of the tap)."""
    _, head = find_relation_head(model)
    parent = copy.deepcopy(head)
    if state_dict is not None:
        parent.load_state_dict(dict(state_dict), strict=True)
    parent.requires_grad_(False)
    return parent.eval()


def init_from_stage1(model: nn.Module, state: Stage1State) -> None:
    """Start stage 2 from the stage-1 relation head (MODEL.HML.FRESH_INIT_STAGE2 False)."""
    _, head = find_relation_head(model)
    head.load_state_dict(dict(state.parent_state_dict), strict=True)


@torch.no_grad()
def parent_logits_on_pairs(parent_head: RelationHead, features: Mapping[str, torch.Tensor],
                           proposals: Sequence[Any], rel_pairs: Sequence[torch.Tensor]) -> List[torch.Tensor]:
    """Predicate logits of ``parent_head`` (eval mode, no grad) on GIVEN pairs: its own object
    and union feature extractors, then its predictor, exactly as its eval forward does, but on
    ``rel_pairs`` instead of all pairs. PredCls passes the proposals' labels as object labels (as
    eval does); SGCls/SGDet let the parent classify the objects itself.

    Args: ``features`` the detector's maps, ``proposals`` per image (as the child's predictor saw
    them), ``rel_pairs`` per image int64 ``[M_i, 2]``. Returns per image ``[M_i, P+1]`` (detached),
    rows aligned with ``rel_pairs``. The head's train/eval state is restored afterwards.
    """
    was_training = parent_head.training
    parent_head.eval()
    try:
        proposals = list(proposals)
        roi = parent_head.box_feature_extractor(features, proposals)
        union = None
        if parent_head.use_union_features:
            union = parent_head.union_feature_extractor(features, proposals, rel_pairs)
        obj_labels = None
        if parent_head.mode == "predcls":
            obj_labels = torch.cat([p.labels.long() for p in proposals]) if proposals else None
        out = parent_head.predictor(roi, proposals, rel_pairs, union, obj_labels=obj_labels)
        return [r.detach() for r in out.rel_logits]
    finally:
        parent_head.train(was_training)


# ---------------------------------------------------------------------------------------------
# The tap on the child head
# ---------------------------------------------------------------------------------------------
@dataclass
class TapRecord:
    """What a RelationHead saw and produced in one forward (see :class:`RelationHeadTap`)."""

    features: Any = None
    proposals: Optional[List[Any]] = None
    rel_pairs: Optional[List[torch.Tensor]] = None
    rel_logits: Optional[List[torch.Tensor]] = None
    rel_labels: Optional[List[torch.Tensor]] = None
    obj_labels: Optional[torch.Tensor] = None


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


class RelationHeadTap(Tap):
    """Forward hooks on a :class:`RelationHead` that record, for its latest training forward, the
    detector features, the proposals and sampled pairs its predictor got, the predicate logits
    (attached to the graph) and the sampled labels. Nothing in the head changes: the hooks only
    read. ``pop()`` returns the record (a :class:`TapRecord`) and forgets it (so the features are
    not held longer); ``remove()`` takes the hooks off.

    ``training_only`` (default True): eval forwards (validation) are not recorded.
    """

    record: Optional[TapRecord]

    def __init__(self, head: RelationHead, training_only: bool = True) -> None:
        super().__init__()
        self.head = head
        self.training_only = training_only
        self._handles = [
            head.register_forward_pre_hook(self._head_pre, with_kwargs=True),
            head.predictor.register_forward_pre_hook(self._pred_pre, with_kwargs=True),
            head.predictor.register_forward_hook(self._pred_post, with_kwargs=True),
            head.loss_evaluator.register_forward_pre_hook(self._loss_pre, with_kwargs=True),
        ]

    def _active(self) -> bool:
        return self.head.training or not self.training_only

    def _head_pre(self, module, args, kwargs):
        if self._active():
            self.record = TapRecord(features=_arg(args, kwargs, 0, "features"))

    def _pred_pre(self, module, args, kwargs):
        if self._active() and self.record is not None:
            self.record.proposals = list(_arg(args, kwargs, 1, "proposals"))
            self.record.rel_pairs = list(_arg(args, kwargs, 2, "rel_pairs"))
            self.record.obj_labels = _arg(args, kwargs, 4, "obj_labels")

    def _pred_post(self, module, args, kwargs, output):
        if self._active() and self.record is not None:
            self.record.rel_logits = list(output.rel_logits)

    def _loss_pre(self, module, args, kwargs):
        if self._active() and self.record is not None:
            self.record.rel_labels = list(_arg(args, kwargs, 1, "rel_labels"))

    def is_complete(self, record: Optional[TapRecord]) -> bool:
        """A record whose predictor ran (it holds the child's logits)."""
        return record is not None and record.rel_logits is not None
