"""One-stage SGG parts (CoRF-style composite fields), usable without a config:

* :mod:`.backbone`: stride-16 backbones (dilated ResNet, timm + one-level FPN);
* :mod:`.fields`: object / relation field heads and their trunks, :class:`CompositeFieldNet`;
* :mod:`.encoder`: GT -> dense training targets; :mod:`.losses`: focal + L1 field losses;
* :mod:`.decoder`: fields -> :class:`~sgg.structures.SceneGraph` (vectorised, on the fields' device).

The whole model (preprocessing, protocol logic) is :class:`sgg.modeling.meta_arch.OneStageSGG`.
"""
from .backbone import DilatedResNet, TimmFPN16, build_onestage_backbone
from .decoder import decode_fields, decode_objects, decode_relations
from .encoder import encode_batch, encode_targets, gaussian_radius, grid_size_of
from .fields import CompositeFieldNet, ObjectFieldHead, RelationFieldHead, build_trunk
from .losses import DEFAULT_WEIGHTS, field_losses, focal_loss

__all__ = [
    "DEFAULT_WEIGHTS",
    "CompositeFieldNet",
    "DilatedResNet",
    "ObjectFieldHead",
    "RelationFieldHead",
    "TimmFPN16",
    "build_onestage_backbone",
    "build_trunk",
    "decode_fields",
    "decode_objects",
    "decode_relations",
    "encode_batch",
    "encode_targets",
    "field_losses",
    "focal_loss",
    "gaussian_radius",
    "grid_size_of",
]
