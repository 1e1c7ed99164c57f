"""Distillation and memory terms built by the trainer, not by the model (DESIGN.md, data flow 5):
they take the model (and frozen stage-1 parameters / a frozen parent) and return extra ``loss_*``
terms. :mod:`sgg.distill.hml`: Hierarchical Memory Learning (specs/hml.md);
:mod:`sgg.distill.depth_teacher`: the STDG depth teacher of the one-stage model (specs/onestage.md)."""
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
from .hierarchy import HIERARCHY_FILE, IGNORE_INDEX, PredicateHierarchy
from .hml import (
    STAGE1_FILE,
    HMLLoss,
    HMLRelationLoss,
    ParameterAnchoring,
    PredictionDistillation,
    RelationHeadTap,
    Stage1State,
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
    training_loss,
    validate_hml_config,
)

from . import depth_teacher, hierarchy, hml

__all__ = [*depth_teacher.__all__, *hierarchy.__all__, *hml.__all__]
