"""Distillation and memory terms built by the trainer, not by the model (DESIGN.md, data flow 5):
they take the model (and frozen stage-1 parameters / a frozen parent) and return extra ``loss_*``
terms. :mod:`sgg.distill.base`: the :class:`Distillation` contract both methods follow;
:mod:`sgg.distill.hml`: Hierarchical Memory Learning (specs/hml.md);
:mod:`sgg.distill.depth_teacher`: the STDG depth teacher of the one-stage model (specs/onestage.md)."""
from .base import Distillation, Tap
from .depth_teacher import (
    STDG_MODES,
    DepthTeacherDistillation,
    FieldTap,
    FrozenTeacher,
    build_depth_teacher,
    feature_mse,
    load_teacher_weights,
    masked_offset_mse,
    teacher_config,
    valid_cell_mask,
    validate_stdg_config,
)
from .hml import (
    HIERARCHY_FILE,
    IGNORE_INDEX,
    STAGE1_FILE,
    HMLLoss,
    HMLRelationLoss,
    ParameterAnchoring,
    PredicateHierarchy,
    PredictionDistillation,
    RelationHeadTap,
    Stage1State,
    TapRecord,
    all_reduce_mean,
    build_hierarchy,
    build_parent_head,
    class_balanced_weights,
    configure_stage1,
    confidence_from_metrics,
    estimate_fisher,
    find_relation_head,
    fisher_weights,
    hml_anchor_params,
    init_from_stage1,
    load_stage1,
    parent_logits_on_pairs,
    relation_head_state,
    save_stage1,
    snapshot,
    stage1_dir,
    stage1_file,
    stage_config,
    stage_iterations,
    stage_steps,
    training_loss,
    validate_hml_config,
)

from . import base, depth_teacher, hml

__all__ = [*base.__all__, *depth_teacher.__all__, *hml.__all__]
