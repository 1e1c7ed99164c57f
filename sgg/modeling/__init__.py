"""Models: backbones, the detector, relation heads, one-stage heads and the meta-architectures.

Subpackages are imported explicitly (``from sgg.modeling.detector import build_detector``); this
file stays minimal so that importing one part does not pull in all the others.
"""
