"""SynthVG: a synthetic scene-graph dataset written in the exact VG150 (Scene-Graph-Benchmark) files.

No real dataset can be downloaded everywhere, and a user needs an end-to-end run before they have
Visual Genome. ``generate_synthvg(out_dir, profile)`` writes the VG150 files (h5 + dicts json +
image_data.json + JPEG folder), true depth maps and a zero-shot triplet file, so every loader,
model and metric runs unchanged on it.

The package, by role:

* :mod:`.world` -- vocabulary, class kinds and looks, :class:`SynthVGConfig` and its profiles;
* :mod:`.layout` -- where the objects of an image go (and at what depth);
* :mod:`.render` -- the image and its depth map, drawn back to front;
* :mod:`.rules` -- the relation rule (geometry + classes + depth -> coarse / fine predicate), the
  predicate hierarchy and the rule's oracle predictions;
* :mod:`.scene` -- one image: layout, render, sparse annotation;
* :mod:`.writer` -- the dataset: worker pool, zero-shot triplets, files (through
  :mod:`sgg.data.datasets.vg150_files`).
"""
from ..datasets.vg150_files import decode_boxes, encode_boxes, loader_boxes
from .rules import (GEOMETRIES, PREDICATE_TABLE, estimate_object_depths, predicate_hierarchy, relation_geometry,
                    relation_rule, rule_predictions)
from .scene import generate_image
from .world import (COLOURS, PROFILES, READABLE_PREDICATES, READABLE_RANK, SHAPES, TEXTURES, VG150_OBJECTS,
                    VG150_PREDICATES, VG150_RANK, SynthVGConfig, load_config, make_config)
from .writer import CORRUPTED_VG_IDS, generate_synthvg, make_image_ids

__all__ = [
    "VG150_OBJECTS", "VG150_PREDICATES", "VG150_RANK", "READABLE_RANK", "READABLE_PREDICATES", "CORRUPTED_VG_IDS",
    "COLOURS", "SHAPES", "TEXTURES", "GEOMETRIES", "PREDICATE_TABLE", "PROFILES", "SynthVGConfig", "make_config",
    "load_config", "generate_synthvg", "generate_image", "relation_geometry", "relation_rule", "rule_predictions",
    "predicate_hierarchy", "estimate_object_depths", "encode_boxes", "decode_boxes", "loader_boxes",
    "make_image_ids",
]
