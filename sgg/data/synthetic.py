"""SynthVG: a synthetic scene-graph dataset written in the exact VG150 (Scene-Graph-Benchmark) files.

No real dataset can be downloaded everywhere, and a user needs an end-to-end run before they have
Visual Genome. ``generate_synthvg(out_dir, profile)`` writes::

    OUT/VG-SGG-with-attri.h5           h5 in the SGB layout (specs/data.md), see below
    OUT/VG-SGG-dicts-with-attri.json   label/predicate/attribute maps (1-based), counts, depth_scale
    OUT/image_data.json                one {image_id, width, height, url, coco_id, flickr_id} per h5 row
    OUT/VG_100K/{image_id}.jpg         RGB images (JPEG, quality ``jpeg_quality``)
    OUT/depth/{image_id}.png           true depth, 16-bit PNG in MILLIMETRES
                                       (metres = value / depth_scale, depth_scale = 1000)
    OUT/zeroshot_triplet.pytorch       torch.save(LongTensor[Z, 3]) of (subject class, object class,
                                       predicate), 1-based: the test triplets never annotated in train
    OUT/predicate_hierarchy.json       coarse -> fine predicates and fine -> coarse parent (see below)
    OUT/synthvg_config.json            the resolved ``SynthVGConfig`` (``rule_predictions`` reads it)
    OUT/README.md                      a short description of the above

h5 datasets (N images, O objects, R relations): ``split`` (N,) int32 0 train / 2 test;
``img_to_first_box`` / ``img_to_last_box`` / ``img_to_first_rel`` / ``img_to_last_rel`` (N,) int32,
inclusive, -1 when empty; ``labels`` (O, 1) int64 in 1..C; ``boxes_1024`` / ``boxes_512`` (O, 4)
int32 [cx, cy, w, h] in a frame whose longer side is 1024 (512), encoded so that the reference
decode (x1 = int(cx - w/2), x2 = x1 + w, then * max(W, H) / 1024) returns the drawn pixel box
(x2, y2 exclusive) up to 0.5 / (1024 / max(W, H)) px; ``relationships`` (R, 2) int32 GLOBAL object
indices (subject, object); ``predicates`` (R, 1) int64 in 1..P; ``attributes`` (O, 10) int64: the
first column is the object's colour attribute (1-based), the rest 0.

Image ids start at 1 and skip the ids SGB drops as corrupted VG images (1592, 1722, 4616, 4617).
Split: every image is test with probability ``test_fraction`` (0.3), drawn from its own RNG, so
train and test are interleaved in file order. A few images (``no_rel_fraction``) keep their objects
but no relations (the loader must filter them); every image has >= 1 object.

The world
---------
Each object class has a fixed look (shape x colour x texture, derived from its name, so the same
class looks the same in every profile and seed) and a kind (person, animal, vehicle, furniture,
ground, clothing, body part, ...). A scene is a ground or room region, free "root" objects and
structured children: parts inside their whole (a shirt on a person), items held at the side of a
person, objects resting on a support, contents inside a container, fixtures hanging below a
support. Every object is a flat fronto-parallel sprite at its own depth (metres); sprites are drawn
back to front (painter's z-buffer) over a background whose depth falls from 20 m (top row) to 10 m
(bottom row), and the depth map is written with the same z-buffer. Object depths (<= 9.5 m) are
drawn independently of their image position, so only occlusion / depth tells ``behind`` from
``in front of``.

Relations: ``relation_rule`` decides, for every ordered pair, a geometry type from the boxes, the
classes and the per-object depths (part of, has, holding, on, hanging below, in, behind, in front
of, above, under, near) and maps (geometry, subject class, object class) to a coarse predicate and,
for some class pairs, a fine one (``on`` -> ``parked on`` for a vehicle on a street, ``sitting on``
for a person on a seat, ...). The generator annotates with this rule on exactly the data a loader
sees: the decoded h5 boxes clipped to the image as SGB does (``loader_boxes``) and the per-object
depth estimated from the written depth map
(``estimate_object_depths``). Annotation is sparse (each true relation kept with probability
``keep_prob`` x a per-coarse salience, at most ``max_rels_per_image``) and uses the coarse word
with probability ``coarse_prob`` (0.7) and the fine word otherwise. Layout objects that would be
mostly hidden (their estimated depth would not be their own) are not drawn, so every drawn object is
annotated. Parts (clothing, body parts, wheels, letters, ...) relate only to their whole. Class frequencies follow a
Zipf law over a fixed popularity rank. ``num_zeroshot`` (subject, object, predicate) triplets that
are rare in train are withheld from the train annotation; ``zeroshot_triplet.pytorch`` lists every
test triplet absent from train.

Predicate hierarchy (``predicate_hierarchy.json``)::

    {"coarse": [...], "fine": [...], "children": {coarse: [fine, ...]},
     "parent": {predicate: coarse}   # every predicate; a coarse one maps to itself
     "parent_idx": {"fine idx": coarse idx}, "coarse_prob": 0.7}

Determinism: each image uses ``np.random.default_rng([seed, index, stream])``, so a run with any
number of workers writes the same files; the same seed gives byte-identical h5 / json files.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, List, Optional, Tuple, Union

import cv2
import numpy as np

logger = logging.getLogger(__name__)

__all__ = [
    "VG150_OBJECTS", "VG150_PREDICATES", "CORRUPTED_VG_IDS", "PROFILES", "SynthVGConfig",
    "make_config", "generate_synthvg", "generate_image", "relation_rule", "rule_predictions",
    "predicate_hierarchy", "estimate_object_depths", "encode_boxes", "decode_boxes", "loader_boxes",
    "make_image_ids", "load_config",
]

# ----------------------------------------------------------------------------------------------
# Vocabulary
# ----------------------------------------------------------------------------------------------
VG150_OBJECTS: Tuple[str, ...] = (
    "airplane", "animal", "arm", "bag", "banana", "basket", "beach", "bear", "bed", "bench",
    "bike", "bird", "board", "boat", "book", "boot", "bottle", "bowl", "box", "boy", "branch",
    "building", "bus", "cabinet", "cap", "car", "cat", "chair", "child", "clock", "coat",
    "counter", "cow", "cup", "curtain", "desk", "dog", "door", "drawer", "ear", "elephant",
    "engine", "eye", "face", "fence", "finger", "flag", "flower", "food", "fork", "fruit",
    "giraffe", "girl", "glass", "glove", "guy", "hair", "hand", "handle", "hat", "head", "helmet",
    "hill", "horse", "house", "jacket", "jean", "kid", "kite", "lady", "lamp", "laptop", "leaf",
    "leg", "letter", "light", "logo", "man", "men", "motorcycle", "mountain", "mouth", "neck",
    "nose", "number", "orange", "pant", "paper", "paw", "people", "person", "phone", "pillow",
    "pizza", "plane", "plant", "plate", "player", "pole", "post", "pot", "racket", "railing",
    "rock", "roof", "room", "screen", "seat", "sheep", "shelf", "shirt", "shoe", "short",
    "sidewalk", "sign", "sink", "skateboard", "ski", "skier", "sneaker", "snow", "sock", "stand",
    "street", "surfboard", "table", "tail", "tie", "tile", "tire", "toilet", "towel", "tower",
    "track", "train", "tree", "truck", "trunk", "umbrella", "vase", "vegetable", "vehicle",
    "wave", "wheel", "window", "windshield", "wing", "wire", "woman", "zebra",
)
VG150_PREDICATES: Tuple[str, ...] = (
    "above", "across", "against", "along", "and", "at", "attached to", "behind", "belonging to",
    "between", "carrying", "covered in", "covering", "eating", "flying in", "for", "from",
    "growing on", "hanging from", "has", "holding", "in", "in front of", "laying on", "looking at",
    "lying on", "made of", "mounted on", "near", "of", "on", "on back of", "over", "painted on",
    "parked on", "part of", "playing", "riding", "says", "sitting on", "standing on", "to",
    "under", "using", "walking in", "walking on", "watching", "wearing", "wears", "with",
)
# SGB's VGDataset drops these ids (known-corrupt VG images); SynthVG never uses them.
CORRUPTED_VG_IDS: Tuple[int, ...] = (1592, 1722, 4616, 4617)

# Popularity rank (Zipf) for the vg150 profile: roughly VG's object frequency order.
_VG150_RANK_HEAD = (
    "man", "person", "window", "tree", "building", "shirt", "woman", "sign", "head", "hand",
    "car", "table", "hair", "leg", "people", "pole", "plate", "fence", "ear", "street", "light",
    "leaf", "jacket", "hat", "boy", "girl", "wheel", "chair", "door", "train", "pant", "eye",
    "nose", "tail", "bus", "plane", "bike", "track", "elephant", "horse", "giraffe", "zebra",
    "dog", "cat", "bird", "cow", "sheep", "bear", "boat", "truck", "motorcycle", "flower",
    "plant", "bag", "bottle", "cup", "glass", "bowl", "box", "lamp", "clock", "helmet", "cap",
    "shoe", "boot", "sneaker", "short", "jean", "coat", "glove", "tie", "sock", "face", "mouth",
    "neck", "arm", "finger", "paw", "wing", "engine", "tire", "windshield", "roof", "handle",
    "drawer", "tile", "branch", "trunk", "letter", "number", "logo", "food", "pizza", "banana",
    "orange", "fruit", "vegetable", "fork", "phone", "laptop", "screen", "book", "paper",
    "pillow", "towel", "umbrella", "racket", "kite", "skateboard", "surfboard", "ski", "board",
    "bench", "bed", "desk", "counter", "shelf", "cabinet", "sink", "toilet", "stand", "seat",
    "vase", "pot", "basket", "house", "tower", "railing", "post", "wire", "rock", "hill",
    "mountain", "beach", "snow", "wave", "sidewalk", "room", "curtain", "flag", "airplane",
    "vehicle", "animal", "kid", "child", "lady", "guy", "men", "player", "skier",
)
VG150_RANK: Tuple[str, ...] = _VG150_RANK_HEAD + tuple(
    n for n in VG150_OBJECTS if n not in _VG150_RANK_HEAD)

# Readable class order for tiny / small (first 12 / 30), by popularity rank.
READABLE_RANK: Tuple[str, ...] = (
    "person", "car", "table", "street", "dog", "chair", "shirt", "hand", "wheel", "cup", "box",
    "lamp", "window", "building", "tree", "hat", "sign", "plate", "horse", "bike", "bench", "pant",
    "shoe", "bottle", "letter", "pole", "bag", "cat", "bird", "sidewalk", "head", "leg", "leaf",
    "bus", "bed", "fence", "helmet", "phone", "pizza", "kite", "umbrella", "bowl", "vase",
    "flower", "room", "snow", "clock", "laptop", "boat", "truck", "skateboard", "jacket", "hair",
    "ear", "tail", "tire", "door", "roof", "book",
)
READABLE_RANK = READABLE_RANK + tuple(n for n in VG150_RANK if n not in READABLE_RANK)

# Predicate order for tiny / small: the first ``num_predicates`` are used (tiny 10, small 16).
READABLE_PREDICATES: Tuple[str, ...] = (
    "on", "has", "near", "behind", "in front of", "in", "wearing", "sitting on", "parked on", "of",
    "above", "under", "with", "standing on", "riding", "holding", "hanging from", "mounted on",
    "part of", "walking on", "carrying", "eating", "painted on", "lying on", "says", "using",
    "along", "at", "over", "growing on", "looking at", "on back of", "wears", "covering",
    "belonging to", "laying on", "attached to", "watching", "and", "flying in", "walking in",
    "covered in", "made of", "playing", "against", "for", "from", "to", "between", "across",
)
assert sorted(READABLE_PREDICATES) == sorted(VG150_PREDICATES)

# ----------------------------------------------------------------------------------------------
# Class semantics: kind, tags, (for parts) the kinds of whole they belong to, and the part slot.
# ----------------------------------------------------------------------------------------------
PART_KINDS = ("clothing", "bodypart", "part", "marking")
ROOT_KINDS = ("person", "animal", "flyer", "vehicle", "board", "furniture", "structure", "plant",
              "container", "item", "fixture")

_P = ("person",)
_PA = ("person", "animal")
# name: (kind, tags, wholes, slot)
_CLASS_INFO: Dict[str, Tuple[str, Tuple[str, ...], Tuple[str, ...], str]] = {}


def _ci(names: str, kind: str, tags: Tuple[str, ...] = (), wholes: Tuple[str, ...] = (), slot: str = "any"):
    for n in names.split(","):
        _CLASS_INFO[n.strip()] = (kind, tags, wholes, slot)


_ci("man,woman,boy,girl,child,kid,lady,guy,men,people,person,player,skier", "person")
_ci("animal,bear,cat,cow,dog,sheep,giraffe,zebra", "animal")
_ci("horse,elephant", "animal", ("ride",))
_ci("bird", "flyer")
_ci("kite", "flyer", ("sport",))
_ci("airplane,plane", "flyer")
_ci("car,truck,vehicle", "vehicle", ("contain",))
_ci("bus,train", "vehicle", ("contain",))
_ci("bike,motorcycle", "vehicle", ("ride",))
_ci("boat", "vehicle", ("ride", "contain"))
_ci("skateboard", "board", ("ride", "sport"))
_ci("surfboard", "board", ("ride", "carry"))
_ci("ski,board", "board", ("ride",))
_ci("street,sidewalk,track", "ground", ("long",))
_ci("beach", "ground", ("lie",))
_ci("snow", "ground", ("cover",))
_ci("hill,mountain,wave", "ground")
_ci("room", "area")
_ci("chair,bench,seat,toilet", "furniture", ("seat",))
_ci("bed", "furniture", ("seat", "lie"))
_ci("table,counter,desk,sink,stand", "furniture", ("work",))
_ci("cabinet,shelf", "furniture")
_ci("building,house", "structure", ("contain",))
_ci("tower", "structure")
_ci("pole,post", "structure", ("thin",))
_ci("fence,railing", "structure", ("long",))
_ci("wire", "structure", ("long", "thin"))
_ci("rock", "structure", ("support",))
_ci("tree,plant,flower", "plant")
_ci("box,basket", "container", ("carry",))
_ci("bowl,pot,vase", "container")
_ci("bag", "item", ("carry",))
_ci("umbrella", "item", ("carry", "cover"))
_ci("banana,food,fruit,orange,pizza,vegetable", "item", ("food",))
_ci("phone,laptop", "item", ("device",))
_ci("racket", "item", ("sport",))
_ci("paper", "item", ("cover",))
_ci("towel", "item", ("cover", "hang"))
_ci("plate", "item", ("support",))
_ci("book,bottle,cup,fork,glass,pillow", "item")
_ci("sign", "fixture", ("mount",))
_ci("screen", "fixture", ("device", "mount"))
_ci("clock", "fixture", ("mount",))
_ci("light,lamp", "fixture", ("hang", "mount"))
_ci("flag", "fixture", ("hang", "mount"))
_ci("curtain", "fixture", ("hang", "cover"))
# parts: clothing (of persons), body parts, object parts, markings
_ci("hat,cap,helmet", "clothing", ("upper",), _P, "top")
_ci("shirt,jacket,coat,tie", "clothing", ("upper",), _P, "upper")
_ci("pant,jean,short", "clothing", ("lower",), _P, "lower")
_ci("shoe,boot,sneaker,sock", "clothing", ("foot",), _P, "foot")
_ci("glove", "clothing", ("upper",), _P, "side")
_ci("hand,finger,arm", "bodypart", (), _P, "side")
_ci("hair", "bodypart", (), _PA, "top")
_ci("head,face,ear,eye,nose,mouth,neck", "bodypart", (), _PA, "top")
_ci("leg", "bodypart", (), _PA, "foot")
_ci("paw", "bodypart", (), ("animal",), "foot")
_ci("tail", "bodypart", (), ("animal",), "side")
_ci("wing", "bodypart", (), ("flyer",), "side")
_ci("wheel,tire", "part", (), ("vehicle",), "bottom")
_ci("windshield", "part", (), ("vehicle",), "top")
_ci("engine", "part", (), ("vehicle", "flyer"), "any")
_ci("window,roof", "part", (), ("structure", "vehicle"), "top")
_ci("door", "part", (), ("structure", "vehicle", "furniture"), "any")
_ci("handle", "part", (), ("vehicle", "furniture", "container"), "any")
_ci("drawer", "part", (), ("furniture",), "any")
_ci("tile", "part", ("material",), ("structure", "furniture"), "any")
_ci("branch,leaf", "part", ("plantpart",), ("plant",), "any")
_ci("trunk", "part", ("plantpart",), ("plant",), "lower")
_ci("letter,number,logo", "marking", (), ("vehicle", "fixture", "structure", "board"), "any")
assert set(_CLASS_INFO) == set(VG150_OBJECTS), set(VG150_OBJECTS) ^ set(_CLASS_INFO)

# Size priors: (height range as a fraction of image height, aspect w/h range).
_KIND_SIZE = {
    "person": ((0.30, 0.55), (0.35, 0.55)), "animal": ((0.18, 0.35), (1.1, 1.8)),
    "flyer": ((0.08, 0.16), (1.2, 2.2)), "vehicle": ((0.15, 0.30), (1.4, 2.4)),
    "board": ((0.04, 0.07), (2.5, 4.5)), "furniture": ((0.15, 0.30), (1.0, 2.0)),
    "structure": ((0.35, 0.75), (0.5, 1.2)), "plant": ((0.25, 0.55), (0.5, 0.9)),
    "container": ((0.10, 0.20), (0.8, 1.5)), "item": ((0.07, 0.14), (0.6, 1.5)),
    "fixture": ((0.08, 0.16), (0.6, 1.4)),
}
_CLASS_SIZE = {
    "pole": ((0.40, 0.80), (0.06, 0.14)), "post": ((0.30, 0.60), (0.08, 0.16)),
    "tower": ((0.50, 0.80), (0.25, 0.45)), "fence": ((0.10, 0.20), (3.0, 6.0)),
    "railing": ((0.08, 0.16), (3.0, 6.0)), "wire": ((0.02, 0.04), (8.0, 14.0)),
    "tree": ((0.40, 0.70), (0.6, 0.9)), "flower": ((0.08, 0.15), (0.6, 1.0)),
    "train": ((0.18, 0.30), (2.5, 4.0)), "bus": ((0.18, 0.30), (1.8, 2.6)),
    "bike": ((0.15, 0.25), (1.3, 1.8)), "motorcycle": ((0.15, 0.25), (1.3, 1.8)),
    "plate": ((0.04, 0.07), (1.8, 2.6)), "table": ((0.15, 0.25), (1.5, 2.5)),
    "bed": ((0.15, 0.25), (1.6, 2.4)), "curtain": ((0.25, 0.45), (0.4, 0.8)),
    "rock": ((0.10, 0.20), (1.0, 1.8)), "umbrella": ((0.10, 0.18), (1.2, 1.8)),
}
_PART_SLOT = {  # w range, h range (fractions of the whole), vertical placement
    "top": ((0.30, 0.50), (0.15, 0.25)), "upper": ((0.45, 0.70), (0.20, 0.30)),
    "lower": ((0.40, 0.60), (0.20, 0.30)), "foot": ((0.20, 0.35), (0.07, 0.12)),
    "side": ((0.15, 0.25), (0.10, 0.18)), "bottom": ((0.18, 0.28), (0.25, 0.40)),
    "any": ((0.15, 0.35), (0.15, 0.35)),
}
_SLOT_CAPACITY = {"top": 1, "upper": 1, "lower": 1, "foot": 2, "side": 2, "bottom": 2, "any": 2}
_MAX_PARTS = {"person": 3, "animal": 2, "vehicle": 2, "structure": 2, "fixture": 1, "plant": 1,
              "flyer": 1, "furniture": 1, "container": 1, "board": 1}

# Looks: 8 shapes x 12 colours x 4 textures, a fixed injective map from the VG150 name index.
# Shapes fill >= ~70% of their box (and touch its four sides), so an object's own depth is the
# most frequent value in its box unless it is mostly hidden.
SHAPES = ("rectangle", "ellipse", "trapezoid", "octagon", "cross", "ring", "hexagon", "inv_trapezoid")
COLOURS: Tuple[Tuple[str, Tuple[int, int, int]], ...] = (  # name, BGR
    ("red", (30, 30, 220)), ("green", (30, 170, 30)), ("blue", (220, 90, 20)),
    ("yellow", (20, 220, 235)), ("cyan", (220, 215, 40)), ("magenta", (200, 40, 200)),
    ("orange", (20, 140, 255)), ("purple", (140, 30, 110)), ("white", (240, 240, 240)),
    ("brown", (30, 70, 125)), ("pink", (190, 160, 255)), ("black", (35, 35, 35)),
)
TEXTURES = ("solid", "stripes", "dots", "checker")
_BACKGROUNDS = ((150, 140, 130), (120, 135, 125), (135, 125, 145), (110, 115, 130),
                (145, 150, 150), (125, 120, 110))

# ----------------------------------------------------------------------------------------------
# Geometry types and the predicate table
# ----------------------------------------------------------------------------------------------
GEOMETRIES = ("none", "part", "whole", "hold", "held", "on", "support", "hang", "hung", "in",
              "contains", "behind", "front", "above", "under", "near")
G = {name: i for i, name in enumerate(GEOMETRIES)}

# (geometry, subject selector, object selector, coarse candidates (first in the vocabulary wins),
#  fine predicate or None). First matching entry wins. A selector is None (any) or tokens matched
# against a class's name, kind and tags. Geometries without entries (held, support, hung,
# contains) give no relation.
_A = None
PREDICATE_TABLE: Tuple[Tuple[str, Optional[Tuple[str, ...]], Optional[Tuple[str, ...]], Tuple[str, ...], Optional[str]], ...] = (
    ("part", ("marking",), _A, ("on", "of"), "painted on"),
    ("part", ("plantpart",), _A, ("on", "of"), "growing on"),
    ("part", ("clothing",), _A, ("of",), "belonging to"),
    ("part", ("handle", "drawer", "door"), _A, ("of",), "attached to"),
    ("part", ("part",), _A, ("of",), "part of"),
    ("part", _A, _A, ("of",), None),
    ("whole", ("person", "animal"), ("foot", "lower"), ("has",), "wears"),
    ("whole", ("person", "animal"), ("clothing",), ("has",), "wearing"),
    ("whole", ("sign", "screen"), ("marking",), ("has",), "says"),
    ("whole", _A, ("material",), ("has",), "made of"),
    ("whole", _A, _A, ("has",), None),
    ("hold", _A, ("food",), ("with", "has"), "eating"),
    ("hold", _A, ("device",), ("with", "has"), "using"),
    ("hold", _A, ("sport",), ("with", "has"), "playing"),
    ("hold", _A, ("carry",), ("with", "has"), "carrying"),
    ("hold", ("person",), _A, ("with", "has"), "holding"),
    ("hold", _A, _A, ("with", "has"), None),
    ("on", ("person",), ("ride",), ("on",), "riding"),
    ("on", ("person",), ("lie",), ("on",), "lying on"),
    ("on", ("person",), ("seat",), ("on",), "sitting on"),
    ("on", ("person",), ("ground",), ("on",), "standing on"),
    ("on", ("animal",), ("ground",), ("on",), "walking on"),
    ("on", ("animal",), ("furniture",), ("on",), "laying on"),
    ("on", ("vehicle",), ("ground",), ("on",), "parked on"),
    ("on", ("fixture",), ("structure",), ("on",), "mounted on"),
    ("on", ("plant",), _A, ("on",), "growing on"),
    ("on", ("item", "container"), ("animal", "vehicle"), ("on",), "on back of"),
    ("on", _A, _A, ("on",), None),
    ("hang", _A, _A, ("under",), "hanging from"),
    ("in", ("person", "animal"), ("area", "ground"), ("in",), "walking in"),
    ("in", _A, _A, ("in",), None),
    ("behind", _A, ("cover",), ("behind",), "covered in"),
    ("behind", _A, _A, ("behind",), None),
    ("front", ("cover",), _A, ("in front of",), "covering"),
    ("front", _A, _A, ("in front of",), None),
    ("above", ("bird", "kite"), _A, ("above",), "flying in"),
    ("above", ("flyer",), _A, ("above",), "over"),
    ("above", ("long", "thin"), _A, ("above",), "across"),
    ("above", _A, _A, ("above",), None),
    ("under", _A, _A, ("under",), None),
    ("near", ("person",), ("work",), ("near",), "at"),
    ("near", ("person", "animal"), ("device", "flyer"), ("near",), "watching"),
    ("near", ("person",), ("person",), ("near",), "and"),
    ("near", ("animal",), ("person", "animal"), ("near",), "looking at"),
    ("near", _A, ("long",), ("near",), "along"),
    ("near", ("vehicle", "furniture", "board", "item"), ("structure", "plant"), ("near",), "against"),
    ("near", ("sign",), _A, ("near",), "for"),
    ("near", ("light", "lamp"), _A, ("near",), "from"),
    ("near", ("pole", "post"), _A, ("near",), "to"),
    ("near", ("fence", "railing", "wire"), _A, ("near",), "between"),
    ("near", _A, _A, ("near",), None),
)


# ----------------------------------------------------------------------------------------------
# Config and profiles
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SynthVGConfig:
    """Every knob of the generator. ``make_config`` resolves ``class_names`` / ``predicate_names``."""

    profile: str = "tiny"
    seed: int = 0
    num_images: int = 60
    image_size: Tuple[int, int] = (64, 128)   # each of width and height uniform in [min, max]
    num_classes: int = 12
    num_predicates: int = 10
    objects_per_image: Tuple[int, int] = (3, 8)
    max_rels_per_image: int = 10
    keep_prob: float = 0.6                     # sparse annotation
    coarse_prob: float = 0.7                   # use the coarse word when a fine one exists
    # annotator salience per coarse predicate (multiplies keep_prob); others 1.0
    coarse_keep: Tuple[Tuple[str, float], ...] = (
        ("near", 0.35), ("behind", 0.6), ("in front of", 0.6), ("above", 0.5), ("under", 0.4),
        ("of", 0.6), ("in", 0.8))
    test_fraction: float = 0.3
    no_rel_fraction: float = 0.03
    num_zeroshot: int = 3                      # triplets withheld from train
    zeroshot_max_train: int = 20               # only triplets this rare in train are withheld
    zipf_alpha: float = 1.0
    p_ground: float = 0.55
    p_area: float = 0.25                       # a room when there is no ground
    p_on: float = 0.4
    p_hold: float = 0.35
    p_in: float = 0.4
    p_hang: float = 0.15
    p_part: float = 0.55
    jpeg_quality: int = 90
    depth_scale: float = 1000.0                # PNG units per metre (millimetres)
    object_depth: Tuple[float, float] = (1.0, 7.5)
    background_depth: Tuple[float, float] = (20.0, 10.0)  # top row, bottom row (metres)
    min_box: int = 4
    # relation rule thresholds (metres / fractions)
    part_contain: float = 0.9
    part_area: float = 0.5
    part_dz: float = 0.3
    hold_range: Tuple[float, float] = (0.15, 0.85)
    on_band: float = 0.25
    on_dz: float = 0.5
    on_width: float = 1.5
    in_contain: float = 0.85
    in_area: float = 0.6
    overlap_min: float = 0.2
    front_dz: float = 0.8
    above_gap: float = 0.5
    above_hov: float = 0.3
    near_frac: float = 0.5
    near_dz: float = 1.5
    class_names: Optional[Tuple[str, ...]] = None      # 1-based order (index 0 = background)
    predicate_names: Optional[Tuple[str, ...]] = None
    class_rank: Optional[Tuple[str, ...]] = None       # popularity order for the Zipf law

    @property
    def background_min_mm(self) -> int:
        """Depth values at or beyond this (raw PNG units) are background, never an object."""
        return int(round(min(self.background_depth) * self.depth_scale))


PROFILES: Dict[str, SynthVGConfig] = {
    "tiny": SynthVGConfig(profile="tiny"),
    "small": SynthVGConfig(
        profile="small", num_images=3000, image_size=(128, 256), num_classes=30, num_predicates=16,
        objects_per_image=(4, 12), max_rels_per_image=16, num_zeroshot=10),
    "vg150": SynthVGConfig(
        profile="vg150", num_images=10000, image_size=(256, 512), num_classes=150,
        num_predicates=50, objects_per_image=(6, 20), max_rels_per_image=25, num_zeroshot=50,
        zeroshot_max_train=10),
}


def make_config(profile: Union[str, SynthVGConfig] = "tiny", **overrides) -> SynthVGConfig:
    """A resolved config: ``PROFILES[profile]`` with ``overrides``, class / predicate names filled.

    ``image_size`` may be an int (square images of that side) or (min, max).
    """
    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"unknown SynthVG profile {profile!r}; known: {sorted(PROFILES)}")
    base = PROFILES[profile] if isinstance(profile, str) else profile
    overrides = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(overrides) - {f.name for f in dataclasses.fields(SynthVGConfig)}
    if unknown:
        raise TypeError(f"unknown SynthVGConfig fields: {sorted(unknown)}")
    if "image_size" in overrides:
        s = overrides["image_size"]
        overrides["image_size"] = (int(s), int(s)) if np.isscalar(s) else tuple(int(v) for v in s)
    for k in ("objects_per_image", "hold_range", "object_depth", "background_depth"):
        if k in overrides:
            overrides[k] = tuple(overrides[k])
    if "coarse_keep" in overrides and isinstance(overrides["coarse_keep"], dict):
        overrides["coarse_keep"] = tuple(sorted(overrides["coarse_keep"].items()))
    # Changing the counts re-derives the names unless names are given explicitly.
    if ("num_classes" in overrides or "profile" in overrides) and "class_names" not in overrides:
        overrides["class_names"] = None
        overrides.setdefault("class_rank", None)
    if ("num_predicates" in overrides or "profile" in overrides) and "predicate_names" not in overrides:
        overrides["predicate_names"] = None
    cfg = dataclasses.replace(base, **overrides)
    vg = cfg.profile == "vg150"
    rank = tuple(cfg.class_rank) if cfg.class_rank else (VG150_RANK if vg else READABLE_RANK)
    if cfg.class_names is None:
        if cfg.num_classes < 1 or cfg.num_classes > len(rank):
            raise ValueError(f"num_classes must be in 1..{len(rank)}, got {cfg.num_classes}")
        names = tuple(sorted(rank[: cfg.num_classes]))
    else:
        names = tuple(cfg.class_names)
    rank = tuple(n for n in rank if n in names) + tuple(n for n in names if n not in rank)
    if cfg.predicate_names is None:
        order = VG150_PREDICATES if vg else READABLE_PREDICATES
        if cfg.num_predicates < 1 or cfg.num_predicates > len(order):
            raise ValueError(f"num_predicates must be in 1..{len(order)}, got {cfg.num_predicates}")
        if vg and cfg.num_predicates < len(order):
            order = READABLE_PREDICATES  # truncate by importance, not alphabetically
        preds = tuple(sorted(order[: cfg.num_predicates]))
    else:
        preds = tuple(cfg.predicate_names)
    if cfg.image_size[0] < 16 or cfg.image_size[1] < cfg.image_size[0]:
        raise ValueError(f"image_size must be (min, max) with 16 <= min <= max, got {cfg.image_size}")
    lo, hi = cfg.objects_per_image
    if lo < 1 or hi < lo:
        raise ValueError(f"objects_per_image must be (min >= 1, max >= min), got {cfg.objects_per_image}")
    return dataclasses.replace(cfg, class_names=names, predicate_names=preds, class_rank=rank,
                               num_classes=len(names), num_predicates=len(preds))


def _as_config(cfg_or_dir) -> SynthVGConfig:
    if isinstance(cfg_or_dir, SynthVGConfig):
        return cfg_or_dir if cfg_or_dir.class_names else make_config(cfg_or_dir)
    if isinstance(cfg_or_dir, dict):
        return _config_from_dict(cfg_or_dir)
    if isinstance(cfg_or_dir, (str, os.PathLike)):
        if os.path.isdir(cfg_or_dir):
            return load_config(cfg_or_dir)
        return make_config(str(cfg_or_dir))
    raise TypeError(f"expected a SynthVGConfig, a dict, a profile name or a dataset folder, got {type(cfg_or_dir)}")


def load_config(dataset_dir: str) -> SynthVGConfig:
    """The config a SynthVG folder was generated with (``synthvg_config.json``)."""
    path = os.path.join(dataset_dir, "synthvg_config.json")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {dataset_dir} a SynthVG folder? "
                                "Generate one with tools/make_synthetic_vg.py")
    with open(path) as f:
        d = json.load(f)
    return _config_from_dict(d)


def _config_from_dict(d: dict) -> SynthVGConfig:
    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v

    known = {f.name for f in dataclasses.fields(SynthVGConfig)}
    return make_config(SynthVGConfig(**{k: tup(v) for k, v in d.items() if k in known}))


def _config_to_json(cfg: SynthVGConfig) -> dict:
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# Tables derived from a config (cached)
# ----------------------------------------------------------------------------------------------
def _class_info(name: str):
    return _CLASS_INFO.get(name, ("item", (), (), "any"))


@functools.lru_cache(maxsize=16)
def _tables(cfg: SynthVGConfig) -> SimpleNamespace:
    names = ("__background__",) + tuple(cfg.class_names)
    C1 = len(names)
    preds = tuple(cfg.predicate_names)
    pidx = {p: i + 1 for i, p in enumerate(preds)}
    kind = [""] + [_class_info(n)[0] for n in names[1:]]
    tokens = [set()] + [{n, _class_info(n)[0], *_class_info(n)[1]} for n in names[1:]]

    def mask(sel) -> np.ndarray:
        m = np.zeros(C1, bool)
        for c in range(1, C1):
            m[c] = sel is None or bool(tokens[c] & set(sel))
        return m

    def kinds(*ks) -> np.ndarray:
        return np.array([k in ks for k in kind])

    def tag(t) -> np.ndarray:
        return np.array([t in tok for tok in tokens])

    T = SimpleNamespace(names=names, kind=kind, num_classes=C1 - 1, predicates=preds, pidx=pidx)
    part_pair = np.zeros((C1, C1), bool)
    for s in range(1, C1):
        k, _, wholes, _ = _class_info(names[s])
        if k in PART_KINDS:
            part_pair[s] = kinds(*wholes)
            if k == "marking":  # markings belong on signs / screens / clocks, not lamps
                part_pair[s] &= ~kinds("fixture") | mask(("sign", "screen", "clock"))
    T.part_pair = part_pair
    person, animal = kinds("person"), kinds("animal")
    holdable = kinds("item") | tag("carry")
    T.can_hold = (person[:, None] & holdable[None, :]) | (animal[:, None] & tag("food")[None, :])
    T.is_ground = kinds("ground")
    T.is_part = kinds(*PART_KINDS)
    T.can_support = kinds("furniture", "vehicle", "animal", "board", "structure", "container",
                          "plant") | tag("support")
    T.standable = kinds("person", "animal", "vehicle", "furniture", "structure", "plant", "board",
                        "container", "item", "fixture")
    T.can_hang = kinds("fixture") & tag("hang") | (kinds("item") & tag("hang"))
    T.can_hold_up = kinds("structure", "furniture", "plant")
    T.can_contain = kinds("container", "area") | (kinds("vehicle", "structure") & tag("contain"))

    # predicate tables [G, C+1, C+1]
    is_part = T.is_part
    coarse = np.zeros((len(GEOMETRIES), C1, C1), np.int64)
    fine = np.zeros_like(coarse)
    filled = np.zeros_like(coarse, dtype=bool)
    parent: Dict[str, str] = {}
    coarse_set, fine_set = set(), set()
    for geom, ssel, osel, cands, fname in PREDICATE_TABLE:
        c = next((p for p in cands if p in pidx), None)
        f = fname if fname in pidx else None
        if c is None and f is None:
            continue
        if c is None:  # the fine word's parents are all missing: it acts as a coarse word
            c, f = f, None
        g = G[geom]
        m = mask(ssel)[:, None] & mask(osel)[None, :] & ~filled[g]
        if geom not in ("part", "whole", "hold"):
            # parts (clothing, body parts, wheels, letters) only relate to their whole
            m &= ~is_part[:, None] & ~is_part[None, :]
        coarse[g][m] = pidx[c]
        if f is not None:
            fine[g][m] = pidx[f]
            if parent.setdefault(f, c) != c:
                raise ValueError(f"fine predicate {f!r} has two coarse parents: {parent[f]!r}, {c!r}")
            fine_set.add(f)
        coarse_set.add(c)
        filled[g] |= m
    both = coarse_set & fine_set
    if both:
        raise ValueError(f"predicates used both as coarse and fine: {sorted(both)}")
    T.coarse, T.fine = coarse, fine
    T.parent = parent
    T.coarse_names = tuple(p for p in preds if p in coarse_set)
    T.fine_names = tuple(p for p in preds if p in fine_set)
    keep = np.ones(len(preds) + 1)
    for p, w in cfg.coarse_keep:
        if p in pidx:
            keep[pidx[p]] = w
    T.coarse_keep = keep

    # sampling lists (class ids with Zipf weights from the popularity rank)
    rank = {n: i for i, n in enumerate(cfg.class_rank)}
    zipf = np.array([0.0] + [1.0 / (rank[n] + 1) ** cfg.zipf_alpha for n in names[1:]])

    def pool(m: np.ndarray):
        ids = np.nonzero(m)[0]
        ids = ids[ids > 0]
        if len(ids) == 0:
            return None
        cw = np.cumsum(zipf[ids])
        return ids, cw / cw[-1]

    T.roots = pool(kinds(*ROOT_KINDS))
    T.grounds = pool(kinds("ground"))
    T.areas = pool(kinds("area"))
    T.parts_of = [None] + [pool(part_pair[:, c]) for c in range(1, C1)]
    T.hold_items = [None] + [pool(T.can_hold[c]) for c in range(1, C1)]
    item_like = kinds("item", "container")
    on_children = [None]
    in_children = [None]
    for c in range(1, C1):
        k, toks = kind[c], tokens[c]
        if not T.can_support[c]:
            m = None
        elif k == "furniture":
            m = item_like | kinds("fixture", "animal") | (person if toks & {"seat", "lie"} else 0)
        elif k == "vehicle":
            m = person | item_like
        elif k == "animal":
            m = person | item_like if "ride" in toks else item_like | kinds("flyer")
        elif k == "board":
            m = person
        elif k == "structure":
            m = kinds("fixture", "flyer") | (person | animal if "support" in toks else 0)
        elif k == "plant":
            m = kinds("flyer", "fixture")
        elif k == "container":
            m = kinds("item")
        else:  # items that support (plates)
            m = tag("food")
        on_children.append(pool(np.asarray(m, bool)) if m is not None else None)
        if not T.can_contain[c]:
            m = None
        elif k == "container":
            m = kinds("item") | mask(("flower",))
        elif k == "area":
            m = None  # rooms hold root objects through placement
        else:  # vehicles / buildings hold people
            m = person
        in_children.append(pool(m) if m is not None else None)
    T.on_children, T.in_children = on_children, in_children
    T.hangers = pool(T.can_hang)
    # looks
    look = []
    for n in names:
        i = VG150_OBJECTS.index(n) if n in VG150_OBJECTS else (sum(map(ord, n)) * 31 + len(n)) % 384
        combo = (i * 97 + 13) % (len(SHAPES) * len(COLOURS) * len(TEXTURES))
        look.append((combo % len(SHAPES), (combo // len(SHAPES)) % len(COLOURS),
                     combo // (len(SHAPES) * len(COLOURS))))
    T.look = look
    return T


def predicate_hierarchy(cfg_or_dir="tiny") -> dict:
    """The predicate hierarchy of a config (or SynthVG folder / profile name).

    Returns ``{"coarse": [names], "fine": [names], "children": {coarse: [fine, ...]},
    "parent": {predicate: coarse} (coarse predicates map to themselves; predicates the rule never
    produces map to themselves too), "parent_idx": {str(idx): coarse idx},
    "predicate_to_idx": {...}, "coarse_prob": float}``.
    """
    cfg = _as_config(cfg_or_dir)
    T = _tables(cfg)
    children = {c: [f for f in T.fine_names if T.parent[f] == c] for c in T.coarse_names}
    parent = {p: T.parent.get(p, p) for p in T.predicates}
    return {
        "coarse": list(T.coarse_names),
        "fine": list(T.fine_names),
        "children": children,
        "parent": parent,
        "parent_idx": {str(T.pidx[p]): T.pidx[q] for p, q in parent.items()},
        "predicate_to_idx": dict(T.pidx),
        "coarse_prob": cfg.coarse_prob,
    }


# ----------------------------------------------------------------------------------------------
# The relation rule (vectorised over ordered pairs)
# ----------------------------------------------------------------------------------------------
def relation_geometry(boxes, labels, depths, cfg) -> np.ndarray:
    """Geometry type (index into ``GEOMETRIES``) of every ordered pair; [N, N] int64, diagonal 0.

    boxes: [N, 4] xyxy pixels; labels: [N] in 1..C; depths: [N] metres (smaller = closer).
    """
    cfg = _as_config(cfg)
    T = _tables(cfg)
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    n = len(b)
    if n == 0:
        return np.zeros((0, 0), np.int64)
    lab = np.asarray(labels, np.int64).reshape(-1)
    d = np.asarray(depths, np.float64).reshape(-1)
    x1, y1, x2, y2 = b.T
    w, h = np.maximum(x2 - x1, 1e-6), np.maximum(y2 - y1, 1e-6)
    area = w * h
    cx = (x1 + x2) / 2
    S = lambda a: a[:, None]  # noqa: E731  subject along rows
    O = lambda a: a[None, :]  # noqa: E731  object along columns
    ix = np.minimum(S(x2), O(x2)) - np.maximum(S(x1), O(x1))
    iy = np.minimum(S(y2), O(y2)) - np.maximum(S(y1), O(y1))
    inter = np.clip(ix, 0, None) * np.clip(iy, 0, None)
    cont_s, cont_o = inter / S(area), inter / O(area)
    dz = S(d) - O(d)
    adz = np.abs(dz)
    ls, lo = S(lab), O(lab)
    cx_in = (S(cx) >= O(x1)) & (S(cx) <= O(x2))

    part = (T.part_pair[ls, lo] & (cont_s >= cfg.part_contain) & (S(area) <= cfg.part_area * O(area))
            & (dz < 0) & (dz >= -cfg.part_dz))
    hmin, hmax = cfg.hold_range
    hold = (T.can_hold[ls, lo] & (cont_o >= hmin) & (cont_o <= hmax) & (O(area) <= 0.5 * S(area))
            & (adz <= cfg.part_dz))
    tol = 0.05 * S(h) + 1.0
    on_rest = (T.can_support[lo] & ~T.is_ground[lo] & (S(y2) >= O(y1) - tol)
               & (S(y2) <= O(y1) + cfg.on_band * O(h)) & (S(y1) < O(y1)) & cx_in
               & (adz <= cfg.on_dz) & (S(w) <= cfg.on_width * O(w)))
    on_ground = (T.is_ground[lo] & T.standable[ls] & (S(y2) > O(y1) + 1.0) & (S(y2) <= O(y2) + 0.5)
                 & cx_in & (dz < 0))
    on = on_rest | on_ground
    hang = (T.can_hang[ls] & T.can_hold_up[lo] & (np.abs(S(y1) - O(y2)) <= tol) & cx_in
            & (adz <= cfg.on_dz))
    inn = (T.can_contain[lo] & (cont_s >= cfg.in_contain) & (S(area) <= cfg.in_area * O(area))
           & (dz < 0))
    ovl = inter >= cfg.overlap_min * np.minimum(S(area), O(area))
    ovl &= inter > 0
    behind = ovl & (dz >= cfg.front_dz)
    front = ovl & (dz <= -cfg.front_dz)
    hov = np.clip(ix, 0, None) / np.minimum(S(w), O(w))
    gap_above = O(y1) - S(y2)
    above = ((gap_above >= 0) & (gap_above <= cfg.above_gap * np.maximum(S(h), O(h)))
             & (hov >= cfg.above_hov) & (adz <= cfg.near_dz))
    gx = np.maximum(0, np.maximum(S(x1) - O(x2), O(x1) - S(x2)))
    gy = np.maximum(0, np.maximum(S(y1) - O(y2), O(y1) - S(y2)))
    near = ((inter <= 0) & (np.maximum(gx, gy) <= cfg.near_frac * 0.5 * (np.sqrt(S(area)) + np.sqrt(O(area))))
            & (adz <= cfg.near_dz))
    conds = [part, part.T, hold, hold.T, on, on.T, hang, hang.T, inn, inn.T, behind, front,
             above, above.T, near]
    codes = [G[g] for g in ("part", "whole", "hold", "held", "on", "support", "hang", "hung", "in",
                            "contains", "behind", "front", "above", "under", "near")]
    geom = np.select(conds, codes, 0).astype(np.int64)
    np.fill_diagonal(geom, 0)
    return geom


def relation_rule(boxes, labels, depths, cfg="tiny", return_geometry: bool = False):
    """The generator's "true" predicates for every ordered pair of an image.

    Args:
        boxes: [N, 4] xyxy pixels (the loader's boxes, ``loader_boxes``); labels: [N] class ids 1..C;
        depths: [N] per-object depth in metres (``estimate_object_depths``);
        cfg: a SynthVGConfig, a profile name or a SynthVG folder.
    Returns:
        (coarse [N, N] int64, fine [N, N] int64): predicate ids (1..P), 0 = no relation / no fine
        refinement; row = subject, column = object, diagonal 0. With ``return_geometry`` also the
        [N, N] geometry codes (``GEOMETRIES``).
    """
    cfg = _as_config(cfg)
    T = _tables(cfg)
    geom = relation_geometry(boxes, labels, depths, cfg)
    lab = np.asarray(labels, np.int64).reshape(-1)
    coarse = T.coarse[geom, lab[:, None], lab[None, :]]
    fine = T.fine[geom, lab[:, None], lab[None, :]]
    return (coarse, fine, geom) if return_geometry else (coarse, fine)


def estimate_object_depths(depth_map, boxes, background_min: Optional[int] = None) -> np.ndarray:
    """Per-object depth from a depth map: the most frequent non-background value in its box.

    Objects are flat sprites, so the value that fills most of a box (background excluded) is the
    object's own depth unless it is mostly hidden. depth_map: [H, W] raw integer units (uint16 PNG
    values); boxes: [N, 4] xyxy pixels (rounded to the pixel grid); background_min: values >= this
    are background (ignored when the box holds anything else). Returns [N] int64 raw units.
    """
    dm = np.asarray(depth_map)
    if dm.ndim == 3:
        dm = dm[..., 0] if dm.shape[-1] == 1 else dm[0]
    H, W = dm.shape
    b = np.floor(np.asarray(boxes, np.float64).reshape(-1, 4) + 0.5).astype(np.int64)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, W)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, H)
    if not np.issubdtype(dm.dtype, np.integer) or dm.dtype == np.uint64:
        dm = dm.astype(np.int64)
    out = np.zeros(len(b), np.int64)
    for i, (x1, y1, x2, y2) in enumerate(b.tolist()):
        x2, y2 = max(x2, min(x1 + 1, W)), max(y2, min(y1 + 1, H))
        x1, y1 = min(x1, x2 - 1), min(y1, y2 - 1)
        counts = np.bincount(dm[y1:y2, x1:x2].ravel())
        fg = counts[:background_min] if background_min is not None else counts
        out[i] = int(np.argmax(fg)) if fg.any() else int(np.argmax(counts))
    return out


def _depth_to_raw(depth_map, depth_scale: float, unit: str = "auto") -> np.ndarray:
    """Depth map -> raw integer PNG units. ``unit``: "raw", "metres" or "auto" (integer dtype, or
    floats beyond 100 (no SynthVG depth is that many metres), are raw; other floats are metres)."""
    dm = np.asarray(depth_map)
    if hasattr(depth_map, "detach"):  # a torch tensor
        dm = depth_map.detach().cpu().numpy()
    dm = np.squeeze(dm)
    if unit not in ("auto", "raw", "metres"):
        raise ValueError(f"depth unit must be 'auto', 'raw' or 'metres', got {unit!r}")
    if unit == "auto":
        unit = "raw" if (not np.issubdtype(dm.dtype, np.floating) or float(dm.max(initial=0)) > 100) else "metres"
    if unit == "metres":
        return np.round(dm.astype(np.float64) * depth_scale).astype(np.int64)
    return np.round(dm).astype(np.int64) if np.issubdtype(dm.dtype, np.floating) else dm.astype(np.int64)


def rule_predictions(boxes, labels, depth_map, cfg_or_dataset_dir, fine_share: Optional[float] = None,
                     depth_unit: str = "auto"):
    """Score every ordered pair of an image with the generator's own rule (an oracle baseline).

    Args:
        boxes: [N, 4] xyxy in the depth map's pixel frame (original image size); labels: [N];
        depth_map: [H, W] (or [1, H, W]) raw PNG values (1/depth_scale m; uint16 or their float
            copy) or float metres; ``depth_unit`` ("auto" | "raw" | "metres") says which;
        cfg_or_dataset_dir: SynthVGConfig, profile name or a SynthVG folder (its synthvg_config.json).
        fine_share: score given to the fine predicate when there is one (default 1 - coarse_prob).
    Returns:
        rel_pairs int64 [M, 2] (all N(N-1) ordered pairs) sorted by their best non-background
        score, descending; rel_scores float32 [M, P+1] (column 0 = no relation), rows sum to 1.
    """
    cfg = _as_config(cfg_or_dataset_dir)
    P = cfg.num_predicates
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    lab = np.asarray(labels, np.int64).reshape(-1)
    n = len(b)
    if n < 2:
        return np.zeros((0, 2), np.int64), np.zeros((0, P + 1), np.float32)
    raw = estimate_object_depths(_depth_to_raw(depth_map, cfg.depth_scale, depth_unit), b, cfg.background_min_mm)
    coarse, fine = relation_rule(b, lab, raw / cfg.depth_scale, cfg)
    s, o = np.nonzero(~np.eye(n, dtype=bool))
    c, f = coarse[s, o], fine[s, o]
    fs = (1.0 - cfg.coarse_prob) if fine_share is None else fine_share
    eps = 1e-3
    scores = np.full((len(s), P + 1), eps, np.float64)
    rows = np.arange(len(s))
    has_c, has_f = c > 0, f > 0
    scores[rows[~has_c], 0] = 1.0
    scores[rows[has_c], c[has_c]] = np.where(has_f[has_c], 1.0 - fs, 1.0)
    scores[rows[has_f], f[has_f]] = fs
    scores /= scores.sum(1, keepdims=True)
    best = scores[:, 1:].max(1)
    order = np.argsort(-best, kind="stable")
    return np.stack([s, o], 1)[order].astype(np.int64), scores[order].astype(np.float32)


# ----------------------------------------------------------------------------------------------
# Boxes in the SGB h5 frame
# ----------------------------------------------------------------------------------------------
def encode_boxes(boxes_xyxy, width: int, height: int, scale: int = 1024) -> np.ndarray:
    """xyxy pixel boxes -> int32 [cx, cy, w, h] in the frame whose longer side is ``scale``.

    Chosen so the reference decode (x1 = int(cx - w/2), x2 = x1 + w) returns exactly the rounded
    scaled corners: x1e = round(x1 * s), w = round(x2 * s) - x1e, cx = x1e + ceil(w / 2).
    """
    s = scale / max(width, height)
    b = np.round(np.asarray(boxes_xyxy, np.float64).reshape(-1, 4) * s).astype(np.int64)
    w = np.maximum(b[:, 2] - b[:, 0], 1)
    h = np.maximum(b[:, 3] - b[:, 1], 1)
    return np.stack([b[:, 0] + (w + 1) // 2, b[:, 1] + (h + 1) // 2, w, h], 1).astype(np.int32)


def decode_boxes(boxes_cxcywh, width: int, height: int, scale: int = 1024) -> np.ndarray:
    """The reference (SGB) decode: int32 in-place cxcywh -> xyxy, then / scale * max(W, H)."""
    b = np.array(boxes_cxcywh, dtype=np.int32).reshape(-1, 4)
    b[:, :2] = b[:, :2] - b[:, 2:] / 2
    b[:, 2:] = b[:, :2] + b[:, 2:]
    return b / scale * max(width, height)


def loader_boxes(boxes_cxcywh, width: int, height: int, scale: int = 1024) -> np.ndarray:
    """The boxes a VG150 loader hands out: ``decode_boxes`` then SGB's ``clip_to_image``
    (x in [0, W - 1], y in [0, H - 1]). The generator annotates on exactly these."""
    b = decode_boxes(boxes_cxcywh, width, height, scale)
    b[:, 0::2] = np.clip(b[:, 0::2], 0, width - 1)
    b[:, 1::2] = np.clip(b[:, 1::2], 0, height - 1)
    return b


def make_image_ids(n: int) -> np.ndarray:
    """The first ``n`` image ids: 1, 2, ... skipping ``CORRUPTED_VG_IDS``."""
    bad = set(CORRUPTED_VG_IDS)
    ids = np.arange(1, n + len(bad) + 1, dtype=np.int64)
    return ids[~np.isin(ids, list(bad))][:n]


# ----------------------------------------------------------------------------------------------
# Layout (per image)
# ----------------------------------------------------------------------------------------------
def _pick(rng, pool) -> int:
    ids, cum = pool  # class ids, normalised cumulative Zipf weights
    return int(ids[min(int(np.searchsorted(cum, rng.random(), side="right")), len(ids) - 1)])


def _size(rng, name: str, kind: str, W: int, H: int) -> Tuple[float, float]:
    (h0, h1), (a0, a1) = _CLASS_SIZE.get(name, _KIND_SIZE.get(kind, _KIND_SIZE["item"]))
    h = rng.uniform(h0, h1) * H
    w = min(h * rng.uniform(a0, a1), 0.95 * W)
    return w, h


class _Layout:
    def __init__(self, cfg: SynthVGConfig, T, rng, W: int, H: int, budget: int):
        self.cfg, self.T, self.rng, self.W, self.H, self.budget = cfg, T, rng, W, H, budget
        self.boxes: List[List[int]] = []
        self.labels: List[int] = []
        self.z: List[float] = []

    def full(self) -> bool:
        return len(self.labels) >= self.budget

    def add(self, c: int, box, z: float) -> Optional[int]:
        x1, y1, x2, y2 = box
        b = [int(round(max(0.0, x1))), int(round(max(0.0, y1))),
             int(round(min(float(self.W), x2))), int(round(min(float(self.H), y2)))]
        if b[2] - b[0] < self.cfg.min_box or b[3] - b[1] < self.cfg.min_box or self.full():
            return None
        self.boxes.append(b)
        self.labels.append(int(c))
        self.z.append(float(z))
        return len(self.labels) - 1

    # -- children ------------------------------------------------------------------------------
    def parts(self, i: int):
        T, rng = self.T, self.rng
        c = self.labels[i]
        pool = T.parts_of[c]
        if pool is None or rng.random() >= self.cfg.p_part:
            return
        x1, y1, x2, y2 = self.boxes[i]
        pw, ph = x2 - x1, y2 - y1
        n = 1 + rng.binomial(max(_MAX_PARTS.get(T.kind[c], 1) - 1, 0), 0.5)
        used: Dict[str, int] = {}
        left = rng.random() < 0.5
        for k in range(n):
            p = _pick(rng, pool)
            slot = _class_info(T.names[p])[3]
            (w0, w1), (h0, h1) = _PART_SLOT[slot]
            w, h = rng.uniform(w0, w1) * pw, rng.uniform(h0, h1) * ph
            taken = used.get(slot, 0)
            if taken >= _SLOT_CAPACITY[slot]:
                continue  # parts do not pile up on each other
            used[slot] = taken + 1
            side_left = left != bool(taken)  # a second foot / hand / wheel goes to the other side
            if slot == "top":
                py = rng.uniform(0.0, 0.08) * ph
                px = (pw - w) / 2 + rng.uniform(-0.1, 0.1) * pw
            elif slot in ("upper", "lower"):
                py = rng.uniform(*((0.22, 0.35) if slot == "upper" else (0.55, 0.65))) * ph
                px = (pw - w) / 2 + rng.uniform(-0.05, 0.05) * pw
            elif slot in ("foot", "bottom"):
                py = ph - h - rng.uniform(0.0, 0.03) * ph
                px = rng.uniform(0.02, 0.12) * pw if side_left else pw - w - rng.uniform(0.02, 0.12) * pw
            elif slot == "side":
                py = rng.uniform(0.35, 0.55) * ph
                px = rng.uniform(0.0, 0.08) * pw if side_left else pw - w - rng.uniform(0.0, 0.08) * pw
            else:  # "any": two such parts take the left and right halves
                px = rng.uniform(0, pw / 2 - w) if side_left else rng.uniform(pw / 2, pw - w)
                py = rng.uniform(0, ph - h)
            px, py = min(max(px, 0.0), pw - w), min(max(py, 0.0), ph - h)
            self.add(p, (x1 + px, y1 + py, x1 + px + w, y1 + py + h), self.z[i] - 0.05 - 0.01 * k)

    def hold(self, i: int):
        T, rng = self.T, self.rng
        pool = T.hold_items[self.labels[i]]
        if pool is None or rng.random() >= self.cfg.p_hold:
            return
        x1, y1, x2, y2 = self.boxes[i]
        pw, ph = x2 - x1, y2 - y1
        c = _pick(rng, pool)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        s = min(1.0, 0.35 * ph / h, 0.5 * pw / w)
        w, h = w * s, h * s
        f = rng.uniform(0.3, 0.7)
        bx1 = x2 - f * w if rng.random() < 0.5 else x1 - (1 - f) * w
        cy = y1 + rng.uniform(0.35, 0.7) * ph
        self.add(c, (bx1, cy - h / 2, bx1 + w, cy + h / 2), self.z[i] - 0.05)

    def rest_on(self, i: int) -> Optional[int]:
        T, rng = self.T, self.rng
        pool = T.on_children[self.labels[i]]
        if pool is None or rng.random() >= self.cfg.p_on:
            return None
        x1, y1, x2, y2 = self.boxes[i]
        sw, sh = x2 - x1, y2 - y1
        c = _pick(rng, pool)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        s = min(1.0, 1.3 * sw / w)
        w, h = w * s, h * s
        bottom = y1 + min(rng.uniform(0.1, 1.0) * 0.2 * sh, 0.5 * h)
        cx = x1 + rng.uniform(0.15, 0.85) * sw
        return self.add(c, (cx - w / 2, bottom - h, cx + w / 2, bottom), self.z[i] - 0.05)

    def contain(self, i: int) -> Optional[int]:
        T, rng = self.T, self.rng
        pool = T.in_children[self.labels[i]]
        if pool is None or rng.random() >= self.cfg.p_in:
            return None
        x1, y1, x2, y2 = self.boxes[i]
        cw, ch = x2 - x1, y2 - y1
        c = _pick(rng, pool)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        s = min(rng.uniform(0.3, 0.6) * ch / h, 0.55 * cw / w)
        w, h = w * s, h * s
        bx, by = x1 + rng.uniform(0, cw - w), y1 + rng.uniform(0, ch - h)
        return self.add(c, (bx, by, bx + w, by + h), self.z[i] - 0.05)

    def hang(self, i: int):
        T, rng = self.T, self.rng
        if T.hangers is None or not T.can_hold_up[self.labels[i]] or rng.random() >= self.cfg.p_hang:
            return
        x1, y1, x2, y2 = self.boxes[i]
        c = _pick(rng, T.hangers)
        w, h = _size(rng, T.names[c], T.kind[c], self.W, self.H)
        w = min(w, x2 - x1)
        if y2 + 0.5 * h > self.H:
            return
        cx = x1 + rng.uniform(0.2, 0.8) * (x2 - x1)
        top = y2 - rng.uniform(0.0, 0.03) * h
        self.add(c, (cx - w / 2, top, cx + w / 2, top + h), self.z[i] - 0.05)

    def children(self, i: int, level: int = 0):
        self.parts(i)
        self.hold(i)
        if level == 0:
            for j in (self.rest_on(i), self.contain(i)):
                if j is not None:
                    self.children(j, level + 1)
            self.hang(i)


def _sample_layout(cfg: SynthVGConfig, T, rng, W: int, H: int) -> _Layout:
    lo, hi = cfg.objects_per_image
    L = _Layout(cfg, T, rng, W, H, int(rng.integers(lo, hi + 1)))
    zmin, zmax = cfg.object_depth
    zfar = min(cfg.background_depth)
    region, region_kind = None, None
    u = rng.random()
    if T.grounds is not None and u < cfg.p_ground:
        c = _pick(rng, T.grounds)
        gh = rng.uniform(0.2, 0.4) * H
        gx1 = rng.uniform(0, 0.3) * W if rng.random() < 0.5 else 0.0
        gx2 = W - (rng.uniform(0, 0.3) * W if rng.random() < 0.5 else 0.0)
        region = L.add(c, (gx1, H - gh, gx2, H), rng.uniform(zmax + 0.3, zfar - 1.2))
        region_kind = "ground"
    elif T.areas is not None and rng.random() < cfg.p_area:
        c = _pick(rng, T.areas)
        aw, ah = rng.uniform(0.65, 1.0) * W, rng.uniform(0.65, 1.0) * H
        ax, ay = rng.uniform(0, W - aw), rng.uniform(0, H - ah)
        region = L.add(c, (ax, ay, ax + aw, ay + ah), rng.uniform(zfar - 1.0, zfar - 0.5))
        region_kind = "area"
    attempts = 0
    while not L.full() and attempts < 4 * L.budget:
        attempts += 1
        c = _pick(rng, T.roots)
        kind = T.kind[c]
        w, h = _size(rng, T.names[c], kind, W, H)
        mode = "free"
        if region_kind == "ground" and T.standable[c] and rng.random() < 0.75:
            mode = "ground"
        elif kind == "flyer":
            mode = "sky"
        elif region_kind == "area" and rng.random() < 0.8:
            mode = "area"
            ax1, ay1, ax2, ay2 = L.boxes[region]
            w, h = min(w, 0.9 * (ax2 - ax1)), min(h, 0.9 * (ay2 - ay1))
        # A few tries to keep objects from hiding each other (VG annotates visible things).
        others = np.array([b for j, b in enumerate(L.boxes) if j != region], np.float64).reshape(-1, 4)
        best, best_cover = None, 2.0
        for _ in range(6):
            if mode == "ground":
                gx1, gy1, gx2, gy2 = L.boxes[region]
                gw, gh = gx2 - gx1, gy2 - gy1
                bottom = rng.uniform(gy1 + 0.1 * gh, gy2)
                cx = rng.uniform(gx1 + 0.1 * gw, gx2 - 0.1 * gw)
            elif mode == "sky":
                bottom = rng.uniform(0.15, 0.55) * H
                cx = rng.uniform(0, W)
            elif mode == "area":
                ax1, ay1, ax2, ay2 = L.boxes[region]
                bottom = rng.uniform(ay1 + h, ay2)
                cx = rng.uniform(ax1 + w / 2, ax2 - w / 2)
            else:
                bottom = rng.uniform(0.35, 1.0) * H
                cx = rng.uniform(0, W)
            box = np.array([max(cx - w / 2, 0), max(bottom - h, 0), min(cx + w / 2, W), min(bottom, H)])
            cover = _max_cover(box, others)
            if cover < best_cover:
                best, best_cover = box, cover
            if cover <= 0.4:
                break
        i = L.add(c, best, rng.uniform(zmin, zmax))
        if i is not None:
            L.children(i)
    return L


def _max_cover(box: np.ndarray, others: np.ndarray) -> float:
    """Largest share of either box that one box of ``others`` and ``box`` have in common."""
    if len(others) == 0:
        return 0.0
    iw = np.clip(np.minimum(box[2], others[:, 2]) - np.maximum(box[0], others[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], others[:, 3]) - np.maximum(box[1], others[:, 1]), 0, None)
    inter = iw * ih
    a = max((box[2] - box[0]) * (box[3] - box[1]), 1e-6)
    ao = np.maximum((others[:, 2] - others[:, 0]) * (others[:, 3] - others[:, 1]), 1e-6)
    return float(np.max(np.maximum(inter / a, inter / ao)))


# ----------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------
def _shape_mask(shape: int, w: int, h: int) -> np.ndarray:
    m = np.zeros((h, w), np.uint8)
    name = SHAPES[shape]
    X, Y = w - 1, h - 1
    sh = 4  # sub-pixel bits for cv2 drawing
    f = float(1 << sh)

    def poly(pts):
        cv2.fillPoly(m, [np.round(np.array(pts, np.float64) * f).astype(np.int32)], 1,
                     lineType=cv2.LINE_8, shift=sh)

    if name == "rectangle":
        m[:] = 1
    elif name in ("ellipse", "ring"):
        center = (int(round(X / 2 * f)), int(round(Y / 2 * f)))
        cv2.ellipse(m, center, (int(round(X / 2 * f)), int(round(Y / 2 * f))), 0, 0, 360, 1, -1,
                    cv2.LINE_8, sh)
        if name == "ring":
            cv2.ellipse(m, center, (int(round(X * 0.2 * f)), int(round(Y * 0.2 * f))), 0, 0, 360,
                        0, -1, cv2.LINE_8, sh)
    elif name == "trapezoid":
        poly([(0, Y), (X, Y), (3 * X / 4, 0), (X / 4, 0)])
    elif name == "inv_trapezoid":
        poly([(0, 0), (X, 0), (3 * X / 4, Y), (X / 4, Y)])
    elif name == "octagon":
        a, b = X * 0.28, Y * 0.28
        poly([(a, 0), (X - a, 0), (X, b), (X, Y - b), (X - a, Y), (a, Y), (0, Y - b), (0, b)])
    elif name == "hexagon":
        poly([(X / 4, 0), (3 * X / 4, 0), (X, Y / 2), (3 * X / 4, Y), (X / 4, Y), (0, Y / 2)])
    elif name == "cross":
        m[int(h / 4): max(int(3 * h / 4), int(h / 4) + 1), :] = 1
        m[:, int(w / 4): max(int(3 * w / 4), int(w / 4) + 1)] = 1
    # keep the box tight: every side touched
    if not m[0].any():
        m[0, w // 2] = 1
    if not m[-1].any():
        m[-1, w // 2] = 1
    if not m[:, 0].any():
        m[h // 2, 0] = 1
    if not m[:, -1].any():
        m[h // 2, -1] = 1
    return m  # uint8 0/1


def _texture(rng, texture: int, colour, w: int, h: int) -> np.ndarray:
    """A w x h BGR patch: the class colour (brightness jitter) with a texture in a second tone."""
    g = rng.uniform(0.85, 1.15)
    c1 = [min(255.0, v * g) for v in colour]
    c2 = [v * 0.35 for v in c1] if sum(c1) > 450 else [v * 0.4 + 153.0 for v in c1]
    out = np.empty((h, w, 3), np.uint8)
    cv2.rectangle(out, (0, 0), (w, h), c1, -1)  # cv2 fills are much faster than numpy broadcasting
    name = TEXTURES[texture]
    if name == "solid":
        return out
    p = min(max(int(round(min(w, h) / 5)), 3), 8)
    ph = int(rng.integers(0, p))
    yy, xx = np.arange(ph, h + ph), np.arange(ph, w + ph)
    if name == "stripes":
        m = np.broadcast_to(((yy // max(p // 2, 1)) % 2 == 1)[:, None], (h, w))
    elif name == "dots":
        r = max(p * 0.3, 0.8)
        m = ((xx % p - (p - 1) / 2) ** 2)[None, :] + ((yy % p - (p - 1) / 2) ** 2)[:, None] <= r * r
    else:
        q = max(p // 2, 2)
        m = ((yy // q) % 2)[:, None] != ((xx // q) % 2)[None, :]
    second = np.empty_like(out)
    cv2.rectangle(second, (0, 0), (w, h), c2, -1)
    _paste(out, second, np.ascontiguousarray(m, dtype=np.uint8))
    return out


@functools.lru_cache(maxsize=4)
def _noise_bank(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """A fixed field of pixel noise (uint8 positive / negative parts), cropped per image."""
    n = np.random.default_rng(12345).integers(-5, 6, size=(size, size, 3), dtype=np.int16)
    return np.maximum(n, 0).astype(np.uint8), np.maximum(-n, 0).astype(np.uint8)


def _background_depth(cfg: SynthVGConfig, W: int, H: int) -> np.ndarray:
    dtop, dbot = cfg.background_depth
    t = np.linspace(0.0, 1.0, H)[:, None]
    return np.repeat(np.round((dtop + (dbot - dtop) * t) * cfg.depth_scale).astype(np.uint16), W, axis=1)


def _paste(dst: np.ndarray, src: np.ndarray, mask: np.ndarray):
    """dst[mask] = src[mask] in place (``dst`` may be a view); cv2 is ~10x faster than numpy here."""
    out = cv2.copyTo(src, mask, dst)
    if not np.shares_memory(out, dst):  # pragma: no cover - cv2 always writes a matching view
        np.copyto(dst, out)


def _visible_objects(cfg: SynthVGConfig, W: int, H: int, boxes, z_raw, masks, max_rounds: int = 4):
    """Objects to draw: mostly hidden ones (whose estimated depth is not their own) are removed.

    Removing an object uncovers what is behind it, so the test repeats a few times. Returns
    (keep [N] bool, the depth map of the kept objects, their estimated depths).
    """
    keep = np.ones(len(boxes), bool)
    dec = loader_boxes(encode_boxes(boxes, W, H), W, H)
    for _ in range(max_rounds):
        depth = _background_depth(cfg, W, H)
        idx = np.nonzero(keep)[0]
        for i in sorted(idx.tolist(), key=lambda i: (-z_raw[i], i)):  # far to near
            x1, y1, x2, y2 = boxes[i]
            _paste(depth[y1:y2, x1:x2], np.full((y2 - y1, x2 - x1), z_raw[i], np.uint16), masks[i])
        est = estimate_object_depths(depth, dec[idx], cfg.background_min_mm)
        ok = est == z_raw[idx]
        if ok.all():
            break
        if not ok.any():  # never empty an image: keep the nearest object
            ok[int(np.argmin(z_raw[idx]))] = True
        keep[idx[~ok]] = False
    return keep, depth, est


def _render(cfg: SynthVGConfig, T, rng, W: int, H: int, boxes, labels, z_raw, masks) -> np.ndarray:
    """Painter's algorithm (far to near), the same order as the depth map."""
    top, bot = (np.array(_BACKGROUNDS[int(i)], np.float64) for i in rng.choice(len(_BACKGROUNDS), 2))
    t = np.linspace(0.0, 1.0, H)[:, None]
    grad = (top[None, :] * (1 - t) + bot[None, :] * t).astype(np.uint8)[:, None, :]
    img = cv2.resize(grad, (W, H), interpolation=cv2.INTER_NEAREST)
    for i in sorted(range(len(labels)), key=lambda i: (-z_raw[i], i)):
        x1, y1, x2, y2 = boxes[i]
        _, colour, texture = T.look[labels[i]]
        _paste(img[y1:y2, x1:x2], _texture(rng, texture, COLOURS[colour][1], x2 - x1, y2 - y1), masks[i])
    size = 64 * int(math.ceil((max(W, H) + 64) / 64))
    pos, neg = _noise_bank(size)
    ox, oy = int(rng.integers(0, size - W + 1)), int(rng.integers(0, size - H + 1))
    return cv2.subtract(cv2.add(img, pos[oy:oy + H, ox:ox + W]), neg[oy:oy + H, ox:ox + W])


# ----------------------------------------------------------------------------------------------
# One image
# ----------------------------------------------------------------------------------------------
def generate_image(cfg: SynthVGConfig, index: int, render: bool = True) -> dict:
    """Layout, render and annotate image ``index`` (0-based) of the dataset ``cfg`` describes.

    Returns ``{index, split (0/2), width, height, boxes int64[n,4] xyxy pixels (x2, y2 exclusive),
    labels int64[n], depth_raw int64[n] (true object depth, PNG units), relations int64[m,3]
    (local subject, local object, predicate), coarse/fine [n,n] (the rule's predicates for the
    annotated objects), image uint8[H,W,3] BGR, depth uint16[H,W], num_hidden}``. Objects of the
    layout that would be mostly hidden (their estimated depth is not their own) are not drawn.
    """
    cfg = _as_config(cfg)
    T = _tables(cfg)
    rng_layout = np.random.default_rng([cfg.seed, index, 0])
    rng_render = np.random.default_rng([cfg.seed, index, 1])
    rng_ann = np.random.default_rng([cfg.seed, index, 2])
    split = 2 if rng_layout.random() < cfg.test_fraction else 0
    lo, hi = cfg.image_size
    W, H = int(rng_layout.integers(lo, hi + 1)), int(rng_layout.integers(lo, hi + 1))
    L = _sample_layout(cfg, T, rng_layout, W, H)
    boxes = np.array(L.boxes, np.int64).reshape(-1, 4)
    labels = np.array(L.labels, np.int64)
    z_raw = np.round(np.array(L.z) * cfg.depth_scale).astype(np.int64)
    masks = [_shape_mask(T.look[c][0], x2 - x1, y2 - y1) for c, (x1, y1, x2, y2) in zip(labels, boxes)]
    drawn, depth, est = _visible_objects(cfg, W, H, boxes, z_raw, masks)
    boxes, labels, z_raw = boxes[drawn], labels[drawn], z_raw[drawn]
    masks = [m for m, d in zip(masks, drawn) if d]
    img = _render(cfg, T, rng_render, W, H, boxes, labels, z_raw, masks) if render else None
    # Annotate on what a loader sees: decoded h5 boxes and depths estimated from the depth map.
    dec = loader_boxes(encode_boxes(boxes, W, H), W, H)
    vis = est == z_raw  # all but rare leftovers of the visibility loop
    if not vis.any():
        vis[int(np.argmin(z_raw))] = True
    boxes, labels, z_raw, dec, est = boxes[vis], labels[vis], z_raw[vis], dec[vis], est[vis]
    coarse, fine = relation_rule(dec, labels, est / cfg.depth_scale, cfg)
    s, o = np.nonzero(coarse > 0)
    c, f = coarse[s, o], fine[s, o]
    u_keep, u_fine = rng_ann.random(len(s)), rng_ann.random(len(s))
    keep = u_keep < cfg.keep_prob * T.coarse_keep[c]
    pred = np.where((f > 0) & (u_fine >= cfg.coarse_prob), f, c)
    rels = np.stack([s, o, pred], 1)[keep].astype(np.int64)
    if len(rels) > cfg.max_rels_per_image:
        sel = np.sort(rng_ann.choice(len(rels), cfg.max_rels_per_image, replace=False))
        rels = rels[sel]
    if rng_ann.random() < cfg.no_rel_fraction:
        rels = rels[:0]
    out = {"index": index, "split": split, "width": W, "height": H, "boxes": boxes,
           "labels": labels, "depth_raw": z_raw, "relations": rels.reshape(-1, 3),
           "coarse": coarse, "fine": fine,
           "num_hidden": int((~drawn).sum() + (~vis).sum())}
    if render:
        out["image"], out["depth"] = img, depth
    return out


def _work(args) -> dict:
    cfg, index, image_id, out_dir = args
    r = generate_image(cfg, index)
    img, depth = r.pop("image"), r.pop("depth")
    r.pop("coarse"), r.pop("fine")
    if not cv2.imwrite(os.path.join(out_dir, "VG_100K", f"{image_id}.jpg"), img,
                       [cv2.IMWRITE_JPEG_QUALITY, cfg.jpeg_quality]):
        raise IOError(f"could not write image {image_id}.jpg under {out_dir}")
    if not cv2.imwrite(os.path.join(out_dir, "depth", f"{image_id}.png"), depth,
                       [cv2.IMWRITE_PNG_COMPRESSION, 1]):
        raise IOError(f"could not write depth {image_id}.png under {out_dir}")
    r["image_id"] = image_id
    return r


def _init_worker():
    cv2.setNumThreads(1)


# ----------------------------------------------------------------------------------------------
# Dataset
# ----------------------------------------------------------------------------------------------
def _triplet_rows(records: List[dict], split: int) -> np.ndarray:
    rows = [np.stack([r["labels"][r["relations"][:, 0]], r["labels"][r["relations"][:, 1]],
                      r["relations"][:, 2]], 1) for r in records if r["split"] == split and len(r["relations"])]
    return np.concatenate(rows) if rows else np.zeros((0, 3), np.int64)


def _choose_zeroshot(cfg: SynthVGConfig, records: List[dict]) -> np.ndarray:
    """Triplets to withhold from train: present in test, rare in train (<= zeroshot_max_train and
    together <= 5% of the train relations), never a predicate's last train example."""
    tr, te = _triplet_rows(records, 0), _triplet_rows(records, 2)
    if cfg.num_zeroshot <= 0 or len(te) == 0 or len(tr) == 0:
        return np.zeros((0, 3), np.int64)
    tr_u, tr_n = np.unique(tr, axis=0, return_counts=True)
    count = {tuple(t): int(n) for t, n in zip(tr_u.tolist(), tr_n.tolist())}
    pred_left = np.bincount(tr[:, 2], minlength=cfg.num_predicates + 1)
    cand = [t for t in np.unique(te, axis=0).tolist() if 1 <= count.get(tuple(t), 0) <= cfg.zeroshot_max_train]
    rng = np.random.default_rng([cfg.seed, 1 << 30])
    budget = max(1, int(0.05 * len(tr)))
    chosen = []
    for k in rng.permutation(len(cand)).tolist():
        t = cand[k]
        n = count[tuple(t)]
        if n > budget or pred_left[t[2]] - n < 1:
            continue
        chosen.append(t)
        budget -= n
        pred_left[t[2]] -= n
        if len(chosen) == cfg.num_zeroshot:
            break
    return np.array(sorted(chosen), np.int64).reshape(-1, 3)


def _write_h5(path: str, records: List[dict]):
    import h5py

    n = len(records)
    first_box, last_box = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    first_rel, last_rel = np.full(n, -1, np.int32), np.full(n, -1, np.int32)
    b1024, b512, labels, attrs, rels, preds = [], [], [], [], [], []
    nobj = nrel = 0
    for i, r in enumerate(records):
        k, m = len(r["labels"]), len(r["relations"])
        if k:
            first_box[i], last_box[i] = nobj, nobj + k - 1
        if m:
            first_rel[i], last_rel[i] = nrel, nrel + m - 1
        b1024.append(encode_boxes(r["boxes"], r["width"], r["height"], 1024))
        b512.append(encode_boxes(r["boxes"], r["width"], r["height"], 512))
        labels.append(r["labels"])
        attrs.append(r["attributes"])
        rels.append(r["relations"][:, :2] + nobj)
        preds.append(r["relations"][:, 2])
        nobj, nrel = nobj + k, nrel + m
    cat = lambda xs, shape, dt: (np.concatenate(xs) if xs else np.zeros(0)).reshape(shape).astype(dt)  # noqa: E731
    data = {
        "split": np.array([r["split"] for r in records], np.int32),
        "img_to_first_box": first_box, "img_to_last_box": last_box,
        "img_to_first_rel": first_rel, "img_to_last_rel": last_rel,
        "labels": cat(labels, (-1, 1), np.int64),
        "boxes_1024": cat(b1024, (-1, 4), np.int32),
        "boxes_512": cat(b512, (-1, 4), np.int32),
        "relationships": cat(rels, (-1, 2), np.int32),
        "predicates": cat(preds, (-1, 1), np.int64),
        "attributes": cat(attrs, (-1, 10), np.int64),
    }
    with h5py.File(path, "w", track_order=False) as f:
        for k, v in data.items():
            f.create_dataset(k, data=v, track_times=False)


def _json_dump(obj, path: str):
    with open(path, "w") as f:
        json.dump(obj, f, indent=None, sort_keys=False)


_README = """# SynthVG ({profile}, seed {seed})

Synthetic scene-graph dataset in the Scene-Graph-Benchmark VG150 file layout, written by
`tools/make_synthetic_vg.py` (library: `sgg.data.synthetic`).

- `VG-SGG-with-attri.h5`, `VG-SGG-dicts-with-attri.json`, `image_data.json`, `VG_100K/*.jpg`:
  the VG150 files (boxes_1024 / boxes_512 as [cx, cy, w, h]; split 0 = train, 2 = test).
- `depth/{{image_id}}.png`: 16-bit depth in millimetres (metres = value / {depth_scale:g}).
- `zeroshot_triplet.pytorch`: LongTensor [Z, 3] (subject, object, predicate), 1-based.
- `predicate_hierarchy.json`: coarse predicates, their fine refinements, and each predicate's parent.
- `synthvg_config.json`: the generator config (for `sgg.data.synthetic.rule_predictions`).

{num_images} images ({train} train / {test} test), {num_objects} objects, {num_relations} relations,
{num_classes} object classes, {num_predicates} predicates.
"""


def generate_synthvg(out_dir: str, profile: Union[str, SynthVGConfig] = "tiny", seed: int = 0,
                     workers: int = 1, progress: bool = False, **overrides) -> dict:
    """Write a SynthVG dataset to ``out_dir``; returns a summary dict.

    profile: "tiny" | "small" | "vg150" (or a SynthVGConfig); overrides: any SynthVGConfig field
    (num_images, image_size, num_classes, num_predicates, ...). workers: processes for rendering
    (the output does not depend on it).
    """
    t0 = time.perf_counter()
    cfg = make_config(profile, seed=seed, **overrides)
    T = _tables(cfg)
    out_dir = str(out_dir)
    for sub in ("", "VG_100K", "depth"):
        os.makedirs(os.path.join(out_dir, sub), exist_ok=True)
    ids = make_image_ids(cfg.num_images)
    jobs = [(cfg, i, int(ids[i]), out_dir) for i in range(cfg.num_images)]
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(jobs), desc="SynthVG", unit="img")
    records: List[dict] = []
    if workers and workers > 1:
        import multiprocessing as mp
        with mp.get_context().Pool(workers, initializer=_init_worker) as pool:
            for r in pool.imap(_work, jobs, chunksize=max(1, min(64, len(jobs) // (4 * workers) or 1))):
                records.append(r)
                if bar is not None:
                    bar.update()
    else:
        for j in jobs:
            records.append(_work(j))
            if bar is not None:
                bar.update()
    if bar is not None:
        bar.close()
    t_render = time.perf_counter() - t0

    # zero-shot: withhold a few rare train triplets that occur in test
    withheld = _choose_zeroshot(cfg, records)
    dropped = 0
    if len(withheld):
        wset = set(map(tuple, withheld.tolist()))
        for r in records:
            if r["split"] != 0 or not len(r["relations"]):
                continue
            rel = r["relations"]
            trip = np.stack([r["labels"][rel[:, 0]], r["labels"][rel[:, 1]], rel[:, 2]], 1)
            keep = np.array([tuple(t) not in wset for t in trip.tolist()])
            dropped += int((~keep).sum())
            r["relations"] = rel[keep]
    colour_attr = np.array([0] + [T.look[c][1] + 1 for c in range(1, T.num_classes + 1)], np.int64)
    for r in records:
        a = np.zeros((len(r["labels"]), 10), np.int64)
        a[:, 0] = colour_attr[r["labels"]]
        r["attributes"] = a

    tr_set = set(map(tuple, _triplet_rows(records, 0).tolist()))
    te_t = np.unique(_triplet_rows(records, 2), axis=0)
    zs = np.array([t for t in te_t.tolist() if tuple(t) not in tr_set], np.int64).reshape(-1, 3)

    # files
    _write_h5(os.path.join(out_dir, "VG-SGG-with-attri.h5"), records)
    C, P = cfg.num_classes, cfg.num_predicates
    all_labels = np.concatenate([r["labels"] for r in records])
    all_preds = np.concatenate([r["relations"][:, 2] for r in records])
    obj_count = np.bincount(all_labels, minlength=C + 1)
    pred_count = np.bincount(all_preds, minlength=P + 1)
    attr_count = np.bincount(colour_attr[all_labels], minlength=len(COLOURS) + 1)
    names, preds = ("__background__",) + cfg.class_names, ("__background__",) + cfg.predicate_names
    info = {
        "label_to_idx": {n: i for i, n in enumerate(names) if i},
        "idx_to_label": {str(i): n for i, n in enumerate(names) if i},
        "predicate_to_idx": {p: i for i, p in enumerate(preds) if i},
        "idx_to_predicate": {str(i): p for i, p in enumerate(preds) if i},
        "attribute_to_idx": {c: i + 1 for i, (c, _) in enumerate(COLOURS)},
        "idx_to_attribute": {str(i + 1): c for i, (c, _) in enumerate(COLOURS)},
        "object_count": {n: int(obj_count[i]) for i, n in enumerate(names) if i},
        "predicate_count": {p: int(pred_count[i]) for i, p in enumerate(preds) if i},
        "attribute_count": {c: int(attr_count[i + 1]) for i, (c, _) in enumerate(COLOURS)},
        "depth_scale": cfg.depth_scale,
        "depth_unit": "millimetre",
        "depth_dir": "depth",
        "synthvg": {"profile": cfg.profile, "seed": cfg.seed},
    }
    _json_dump(info, os.path.join(out_dir, "VG-SGG-dicts-with-attri.json"))
    _json_dump([{"image_id": int(r["image_id"]), "width": int(r["width"]), "height": int(r["height"]),
                 "url": None, "coco_id": None, "flickr_id": None} for r in records],
               os.path.join(out_dir, "image_data.json"))
    hier = predicate_hierarchy(cfg)
    _json_dump(hier, os.path.join(out_dir, "predicate_hierarchy.json"))
    _json_dump(_config_to_json(cfg), os.path.join(out_dir, "synthvg_config.json"))
    import torch

    torch.save(torch.as_tensor(zs, dtype=torch.long), os.path.join(out_dir, "zeroshot_triplet.pytorch"))

    split = np.array([r["split"] for r in records])
    nobj = np.array([len(r["labels"]) for r in records])
    nrel = np.array([len(r["relations"]) for r in records])
    summary = {
        "out_dir": out_dir,
        "profile": cfg.profile,
        "seed": cfg.seed,
        "num_images": len(records),
        "num_classes": C,
        "num_predicates": P,
        "splits": {name: {"images": int((split == s).sum()), "objects": int(nobj[split == s].sum()),
                          "relations": int(nrel[split == s].sum()),
                          "images_without_relations": int(((split == s) & (nrel == 0)).sum())}
                   for name, s in (("train", 0), ("test", 2))},
        "predicate_count": {p: int(pred_count[i]) for i, p in enumerate(preds) if i},
        "object_count": {n: int(obj_count[i]) for i, n in enumerate(names) if i},
        "coarse_predicates": hier["coarse"],
        "fine_predicates": hier["fine"],
        "num_zeroshot_triplets": int(len(zs)),
        "num_withheld_triplets": int(len(withheld)),
        "num_withheld_relations": dropped,
        "num_hidden_objects": int(sum(r["num_hidden"] for r in records)),
        "seconds": time.perf_counter() - t0,
        "seconds_render": t_render,
    }
    with open(os.path.join(out_dir, "README.md"), "w") as f:
        f.write(_README.format(profile=cfg.profile, seed=cfg.seed, depth_scale=cfg.depth_scale,
                               num_images=len(records), train=summary["splits"]["train"]["images"],
                               test=summary["splits"]["test"]["images"], num_objects=int(nobj.sum()),
                               num_relations=int(nrel.sum()), num_classes=C, num_predicates=P))
    logger.info("SynthVG %s: %d images, %d objects, %d relations in %.1fs", cfg.profile,
                len(records), int(nobj.sum()), int(nrel.sum()), summary["seconds"])
    return summary
