"""The evaluation protocol (PredCls / SGCls / SGDet): its names, how a config chooses it, and which
ground truth a model may see under it. The one place that knows this; everything else gets the
protocol as a value (``mode``).

* ``predcls``: GT boxes and GT labels are given; the model predicts predicates.
* ``sgcls``: GT boxes are given; the model classifies the objects and predicts predicates.
* ``sgdet``: nothing is given; the model detects the objects.

The config chooses it with SGB's two keys, ``MODEL.ROI_RELATION_HEAD.USE_GT_BOX`` and
``USE_GT_OBJECT_LABEL``. Pure Python: importing this module loads no torch.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Tuple

__all__ = ["GT_KEYS", "MODES", "VISIBLE_GT_FIELDS", "check_mode", "gives_gt_boxes", "gives_gt_labels",
           "protocol_from_config", "protocol_from_flags", "visible_inputs"]

#: the three protocols, in the order of SGB's tables
MODES: Tuple[str, ...] = ("predcls", "sgcls", "sgdet")

#: keys of a mapper output that carry ground truth (the evaluator needs them; models mostly not)
GT_KEYS: Tuple[str, ...] = ("instances", "relations")

#: the ``instances`` fields a model may read at test time under each protocol
VISIBLE_GT_FIELDS: Mapping[str, Tuple[str, ...]] = {
    "predcls": ("gt_boxes", "gt_classes"),
    "sgcls": ("gt_boxes",),
    "sgdet": (),
}


def check_mode(mode: str) -> str:
    """``mode`` itself when it names a protocol; a ValueError naming the choices otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


def gives_gt_boxes(mode: str) -> bool:
    """Whether the model gets the GT boxes under ``mode`` (PredCls, SGCls)."""
    return "gt_boxes" in VISIBLE_GT_FIELDS[check_mode(mode)]


def gives_gt_labels(mode: str) -> bool:
    """Whether the model gets the GT labels under ``mode`` (PredCls)."""
    return "gt_classes" in VISIBLE_GT_FIELDS[check_mode(mode)]


def protocol_from_flags(use_gt_box: bool, use_gt_object_label: bool) -> str:
    """SGB's two switches -> the protocol name."""
    if use_gt_box:
        return "predcls" if use_gt_object_label else "sgcls"
    return "sgdet"


def protocol_from_config(cfg: Any) -> str:
    """'predcls' | 'sgcls' | 'sgdet' from ``MODEL.ROI_RELATION_HEAD.USE_GT_BOX`` / ``USE_GT_OBJECT_LABEL``."""
    rh = cfg.MODEL.ROI_RELATION_HEAD
    return protocol_from_flags(rh.USE_GT_BOX, rh.USE_GT_OBJECT_LABEL)


def visible_inputs(d: Dict[str, Any], mode: str) -> Dict[str, Any]:
    """A shallow copy of a mapper output with only the GT that ``mode`` allows at test time.

    ``predcls``: ``instances`` with ``gt_boxes`` and ``gt_classes``; ``sgcls``: ``instances`` with
    ``gt_boxes`` only; ``sgdet``: no ``instances``. ``relations`` are always removed.
    """
    keep = VISIBLE_GT_FIELDS[check_mode(mode)]
    out = {k: v for k, v in d.items() if k not in GT_KEYS}
    if keep and "instances" in d:
        inst = d["instances"]
        out["instances"] = type(inst)(inst.image_size, **{k: inst.get(k) for k in keep if inst.has(k)})
    return out
