"""The SynthVG world: vocabulary, what each class is, how it looks, and the generator config.

Each object class has a fixed look (shape x colour x texture, derived from its name, so the same
class looks the same in every profile and seed) and a kind (person, animal, vehicle, furniture,
ground, clothing, body part, ...) with tags (``ride``, ``seat``, ``carry``, ``food``, ...). Parts
(clothing, body parts, wheels, letters, ...) belong to wholes of given kinds and sit in a slot
(top, upper, lower, foot, side, bottom, any). Class frequencies follow a Zipf law over a fixed
popularity rank.

:class:`SynthVGConfig` holds every knob of the generator; :data:`PROFILES` are ``tiny``,
``small`` and ``vg150``; :func:`make_config` resolves class and predicate names;
:func:`load_config` reads the config a SynthVG folder was generated with; :func:`tables` derives
the per-config class masks, sampling pools and looks that the layout, the renderer and the
relation rule use.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = [
    "VG150_OBJECTS", "VG150_PREDICATES", "VG150_RANK", "READABLE_RANK", "READABLE_PREDICATES", "PART_KINDS",
    "ROOT_KINDS", "SHAPES", "COLOURS", "TEXTURES", "CONFIG_FILE", "SynthVGConfig", "PROFILES", "make_config",
    "as_config", "load_config", "config_from_dict", "config_to_json", "class_info", "class_mask", "tables",
]

#: The resolved config of a SynthVG folder (``rule_predictions`` / ``load_config`` read it).
CONFIG_FILE = "synthvg_config.json"

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


def as_config(cfg_or_dir) -> SynthVGConfig:
    """A resolved config from a SynthVGConfig, its json dict, a profile name or a SynthVG folder."""
    if isinstance(cfg_or_dir, SynthVGConfig):
        return cfg_or_dir if cfg_or_dir.class_names else make_config(cfg_or_dir)
    if isinstance(cfg_or_dir, dict):
        return config_from_dict(cfg_or_dir)
    if isinstance(cfg_or_dir, (str, os.PathLike)):
        if os.path.isdir(cfg_or_dir):
            return load_config(cfg_or_dir)
        return make_config(str(cfg_or_dir))
    raise TypeError(f"expected a SynthVGConfig, a dict, a profile name or a dataset folder, got {type(cfg_or_dir)}")


def load_config(dataset_dir: str) -> SynthVGConfig:
    """The config a SynthVG folder was generated with (``synthvg_config.json``)."""
    path = os.path.join(dataset_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} not found: is {dataset_dir} a SynthVG folder? "
                                "Generate one with tools/make_synthetic_vg.py")
    with open(path) as f:
        d = json.load(f)
    return config_from_dict(d)


def config_from_dict(d: dict) -> SynthVGConfig:
    """The resolved config of a :func:`config_to_json` dict (unknown keys ignored)."""
    def tup(v):
        return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else v

    known = {f.name for f in dataclasses.fields(SynthVGConfig)}
    return make_config(SynthVGConfig(**{k: tup(v) for k, v in d.items() if k in known}))


def config_to_json(cfg: SynthVGConfig) -> dict:
    """The config as a json-able dict (tuples as lists), as written to ``synthvg_config.json``."""
    d = dataclasses.asdict(cfg)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in d.items()}


# ----------------------------------------------------------------------------------------------
# Tables derived from a config (cached)
# ----------------------------------------------------------------------------------------------
def class_info(name: str) -> Tuple[str, Tuple[str, ...], Tuple[str, ...], str]:
    """``(kind, tags, kinds of whole it is a part of, part slot)`` of a class name."""
    return _CLASS_INFO.get(name, ("item", (), (), "any"))


def class_mask(T: SimpleNamespace, sel: Optional[Sequence[str]]) -> np.ndarray:
    """bool [C+1]: the classes of ``tables(cfg)`` whose name, kind or a tag is in ``sel`` (None:
    every class); never the background."""
    m = np.zeros(len(T.names), bool)
    for c in range(1, len(T.names)):
        m[c] = sel is None or bool(T.tokens[c] & set(sel))
    return m


@functools.lru_cache(maxsize=16)
def tables(cfg: SynthVGConfig) -> SimpleNamespace:
    """What a resolved config's classes are and how they are sampled and drawn.

    ``names`` (background first), ``kind``, ``tokens`` (name, kind and tags per class),
    ``predicates`` / ``pidx`` (1-based); bool class masks ``is_part``, ``is_ground``,
    ``can_support``, ``standable``, ``can_hang``, ``can_hold_up``, ``can_contain`` [C+1] and
    ``part_pair`` / ``can_hold`` [C+1, C+1] (subject row, object column); Zipf sampling pools
    ``(class ids, cumulative weights)`` or None: ``roots``, ``grounds``, ``areas``, ``hangers`` and
    per class ``parts_of``, ``hold_items``, ``on_children``, ``in_children``; ``look`` per class
    ``(shape, colour, texture)`` indices.
    """
    names = ("__background__",) + tuple(cfg.class_names)
    C1 = len(names)
    preds = tuple(cfg.predicate_names)
    pidx = {p: i + 1 for i, p in enumerate(preds)}
    kind = [""] + [class_info(n)[0] for n in names[1:]]
    tokens = [set()] + [{n, class_info(n)[0], *class_info(n)[1]} for n in names[1:]]

    def kinds(*ks) -> np.ndarray:
        return np.array([k in ks for k in kind])

    def tag(t) -> np.ndarray:
        return np.array([t in tok for tok in tokens])

    T = SimpleNamespace(names=names, kind=kind, tokens=tokens, num_classes=C1 - 1, predicates=preds, pidx=pidx)

    def mask(sel) -> np.ndarray:
        return class_mask(T, sel)

    part_pair = np.zeros((C1, C1), bool)
    for s in range(1, C1):
        k, _, wholes, _ = class_info(names[s])
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
