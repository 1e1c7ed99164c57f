"""Two-stage relation head: pair sampling, object/union features, predictors, loss, post-processing.

``from sgg.modeling.relation import MotifPredictor`` builds a predictor from plain arguments;
:func:`build_relation_head` builds the whole head from a config.
"""
from .build import build_relation_head
from .features import ObjectFeatureExtractor, UnionFeatureExtractor, rect_masks
from .freq_bias import FrequencyBias
from .head import RelationHead
from .loss import RelationLoss
from .postprocess import class_aware_nms_labels, postprocess_relations
from .predictors import RELATION_PREDICTOR_REGISTRY, MotifPredictor, PredictorOutput
from .sampling import RelationSampler, all_pairs, dedupe_relations
from .word_vectors import load_word_vectors

__all__ = [
    "FrequencyBias",
    "MotifPredictor",
    "ObjectFeatureExtractor",
    "PredictorOutput",
    "RELATION_PREDICTOR_REGISTRY",
    "RelationHead",
    "RelationLoss",
    "RelationSampler",
    "UnionFeatureExtractor",
    "all_pairs",
    "build_relation_head",
    "class_aware_nms_labels",
    "dedupe_relations",
    "load_word_vectors",
    "postprocess_relations",
    "rect_masks",
]
