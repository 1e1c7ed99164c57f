"""Meta-architectures: a whole SGG model from images to :class:`~sgg.structures.SceneGraph`s."""
from .build import META_ARCH_REGISTRY, build_sgg_model
from .one_stage import OneStageSGG
from .two_stage import TwoStageSGG

__all__ = ["META_ARCH_REGISTRY", "OneStageSGG", "TwoStageSGG", "build_sgg_model"]
