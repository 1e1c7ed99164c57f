"""HML: Hierarchical Memory Learning (Deng et al., ECCV 2022), see ``specs/hml.md``.

Stage 1 trains the relation head on the coarse predicates (fine-labelled pairs are ignored by the
loss, not turned into background). After it, the diagonal empirical Fisher ``F`` of the
relation-predictor parameters is estimated at the stage-1 weights ``θ*`` and saved with them.
Stage 2 trains on all predicates with a class-balanced cross-entropy, plus two memory terms:

* ``loss_anchor`` (model reconstruction): ``λ · mean(w ⊙ (θ* − θ)²)`` (``l2``) or
  ``λ · mean(w ⊙ |θ* − θ|)`` (``l1``), ``w = sigmoid(log10 F − mean(log10 F))``;
* ``loss_distill`` (concept reconstruction): ``KL(parent ‖ child) · T²`` on temperature-softened
  predictions over the stage-1 classes (coarse + background), the frozen stage-1 relation head
  (the "parent") scoring the SAME pairs the child sampled.

The package, by role (each piece usable alone with plain arguments; only the config glue,
:func:`build_hierarchy`, :func:`stage1_dir`, :mod:`.stages` and ``HMLLoss.from_config``, reads a
cfg); every public name is re-exported here:

* :mod:`.hierarchy`: :class:`PredicateHierarchy` (coarse/fine split, stage-1 targets) and
  :func:`build_hierarchy` (from MODEL.HML.HIERARCHY);
* :mod:`.losses`: :func:`class_balanced_weights` (Cui et al. 2019), :class:`HMLRelationLoss` (the
  head's loss with a stage-1 target map and/or class weights), :class:`ParameterAnchoring`,
  :class:`PredictionDistillation`;
* :mod:`.heads`: the model's relation head: :func:`find_relation_head`, :func:`configure_stage1`,
  :func:`relation_head_state`, :func:`build_parent_head`, :func:`init_from_stage1`,
  :func:`parent_logits_on_pairs`, :class:`RelationHeadTap`;
* :mod:`.fisher`: :func:`hml_anchor_params`, :func:`snapshot`, :func:`estimate_fisher`,
  :func:`fisher_weights`;
* :mod:`.stage_files`: :func:`save_stage1` / :func:`load_stage1` (one file, any rank count);
* :mod:`.stages`: config glue (:func:`validate_hml_config`, :func:`stage_config`, ...);
* :mod:`.distillation`: :class:`HMLLoss`, the trainer's ``extra_losses`` term for stage 2 (a
  :class:`~sgg.distill.base.Distillation`).

Layers inside the package: hierarchy <- losses, stage_files <- heads, stages <- fisher <- distillation.

Typical wiring (``sgg/engine/relation.py``)::

    hier = build_hierarchy(cfg, stats)
    # stage 1
    configure_stage1(model, hier)                       # head loss: fine pairs ignored
    Trainer.from_config(stage_config(cfg, 1), model, loader).train()
    params = hml_anchor_params(model)
    fisher = estimate_fisher(model, params, batches, alpha=cfg.SOLVER.ALPHA_FOR_FISHER,
                             num_batches=cfg.MODEL.HML.FISHER_BATCHES)
    save_stage1(stage1_dir(cfg), snapshot(params), fisher, hier, relation_head_state(model))
    # stage 2
    st = load_stage1(stage1_dir(cfg))
    hml_loss = HMLLoss.from_config(cfg, model, st, stats["predicate_counts"])   # attaches itself
    Trainer.from_config(stage_config(cfg, 2), model, loader, extra_losses=[hml_loss]).train()
"""
from .distillation import HMLLoss
from .fisher import all_reduce_mean, estimate_fisher, fisher_weights, hml_anchor_params, snapshot, training_loss
from .heads import (
    RelationHeadTap,
    TapRecord,
    build_parent_head,
    configure_stage1,
    find_relation_head,
    init_from_stage1,
    parent_logits_on_pairs,
    relation_head_state,
)
from .hierarchy import HIERARCHY_FILE, IGNORE_INDEX, PredicateHierarchy, build_hierarchy
from .losses import DISTILL_TYPES, HMLRelationLoss, ParameterAnchoring, PredictionDistillation, class_balanced_weights
from .stage_files import STAGE1_FILE, Stage1State, load_stage1, save_stage1, stage1_dir, stage1_file
from .stages import confidence_from_metrics, stage_config, stage_iterations, stage_steps, validate_hml_config

from . import distillation, fisher, heads, hierarchy, losses, stage_files, stages  # noqa: E402

__all__ = [*hierarchy.__all__, *losses.__all__, *heads.__all__, *fisher.__all__, *stage_files.__all__,
           *stages.__all__, *distillation.__all__]
