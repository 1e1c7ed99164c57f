"""Relation predictors: the part of the relation head that differs between methods.

Every predictor registered in :data:`RELATION_PREDICTOR_REGISTRY` (the config value
``MODEL.ROI_RELATION_HEAD.PREDICTOR`` is the registered name) follows one protocol:

* ``__init__(**plain keyword arguments)``; ``from_config(cfg, *, in_channels, union_dim,
  num_obj_classes, num_rel_classes, mode, obj_classes=None, pred_dist=None,
  word_vectors=None, rel_classes=None)`` maps the config (``build_relation_head`` passes all of these); the
  constructor reads no file (build first, load after). A predictor with word embeddings starts
  from seeded random vectors (:func:`~sgg.modeling.relation.word_vectors.random_word_vectors`) and
  has ``word_vector_specs() -> {key: (names, dim)}`` and ``set_word_vectors(**{key: tensor})``;
  the load step (:func:`sgg.modeling.pretrained.load_pretrained`) reads GloVe for them.
* modules that cannot learn in a protocol are not built (e.g. no object decoder / classifier in
  PredCls, where the GT labels are used); checkpoints of SGB, which builds them anyway, still load
  (the extra keys are reported and ignored).
* attribute ``uses_union_features`` (bool): whether the head must compute union-box features.
* ``forward(roi_features, proposals, rel_pairs, union_features=None, obj_labels=None)
  -> PredictorOutput`` with ``roi_features`` ``[sum N_i, in_channels]``, ``proposals`` the list of
  :class:`~sgg.structures.Instances` (boxes, image_size, and ``logits`` [N_i, C+1] where the
  detector gave them), ``rel_pairs`` per image int64 ``[M_i, 2]``, ``union_features``
  ``[sum M_i, union_dim]`` and ``obj_labels`` ``[sum N_i]`` (PredCls: GT labels; training: the
  object targets used for teacher forcing; else None).
"""
from __future__ import annotations

from typing import Dict, List, NamedTuple, Optional

import torch

from sgg.registry import Registry

RELATION_PREDICTOR_REGISTRY = Registry("RELATION_PREDICTOR")


class PredictorOutput(NamedTuple):
    """Per-image outputs of a relation predictor.

    obj_logits: ``[N_i, C+1]`` refined object logits.
    rel_logits: ``[M_i, P+1]`` predicate logits, rows aligned with ``rel_pairs``.
    obj_labels: ``[N_i]`` object labels the predictor committed to (used for the frequency bias;
        the post-processor reports them), or None to let the post-processor choose.
    extra_losses: additional ``loss_*`` terms (training), or None.
    """

    obj_logits: List[torch.Tensor]
    rel_logits: List[torch.Tensor]
    obj_labels: Optional[List[torch.Tensor]] = None
    extra_losses: Optional[Dict[str, torch.Tensor]] = None


from .motifs import MotifPredictor  # noqa: E402  (registers itself)
from .imp import IMPPredictor  # noqa: E402,F401
from .transformer import TransformerPredictor  # noqa: E402,F401
from .penet import PENetPredictor  # noqa: E402,F401
from .vctree import VCTreePredictor  # noqa: E402,F401
from .causal import CausalAnalysisPredictor  # noqa: E402,F401

__all__ = ["RELATION_PREDICTOR_REGISTRY", "PredictorOutput", "MotifPredictor", "IMPPredictor", "TransformerPredictor", "PENetPredictor", "VCTreePredictor", "CausalAnalysisPredictor"]
