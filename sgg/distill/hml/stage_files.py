"""The stage-1 memory on disk: one ``torch.save`` file (θ*, F, hierarchy, parent head weights,
optional per-predicate confidence) in the stage-1 folder, readable on any rank count with
``weights_only=True`` (:func:`save_stage1` / :func:`load_stage1`).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import torch
from yacs.config import CfgNode as CN

from sgg.utils.io import atomic_torch_save

from .hierarchy import PredicateHierarchy

logger = logging.getLogger(__name__)

__all__ = [
    "STAGE1_FILE",
    "Stage1State",
    "load_stage1",
    "save_stage1",
    "stage1_dir",
    "stage1_file",
]

#: File name of the stage-1 memory (θ*, F, hierarchy, parent weights) inside the stage-1 folder.
STAGE1_FILE = "hml_stage1.pth"
_FORMAT = "sgg-hml-stage1"
_VERSION = 1


def stage1_dir(cfg: CN) -> str:
    """Folder of stage 1's checkpoints and stage file: MODEL.HML.STAGE1_DIR or OUTPUT_DIR/stage1."""
    return cfg.MODEL.HML.STAGE1_DIR or os.path.join(cfg.OUTPUT_DIR, "stage1")


def stage1_file(directory: str) -> str:
    return directory if directory.endswith(".pth") else os.path.join(directory, STAGE1_FILE)


@dataclass
class Stage1State:
    """The stage-1 memory, as :func:`load_stage1` returns it (CPU tensors)."""

    theta_star: Dict[str, torch.Tensor]
    fisher: Dict[str, torch.Tensor]
    hierarchy: PredicateHierarchy
    parent_state_dict: Dict[str, torch.Tensor]
    confidence: Optional[torch.Tensor] = None
    meta: Dict[str, Any] = field(default_factory=dict)


def _cpu(d: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    return {str(k): v.detach().cpu().contiguous().clone() for k, v in d.items()}


def save_stage1(directory: str, theta_star: Mapping[str, torch.Tensor], fisher: Mapping[str, torch.Tensor],
                hierarchy: PredicateHierarchy, parent_state_dict: Mapping[str, torch.Tensor],
                confidence: Optional[torch.Tensor] = None, meta: Optional[Mapping[str, Any]] = None) -> str:
    """Write the stage-1 memory to ``directory/hml_stage1.pth`` atomically (one ``torch.save``
    of a dict of CPU tensors and plain values, readable with ``weights_only=True``) and return the
    path. Plain I/O: in a distributed run call it on rank 0 only, then ``comm.synchronize()``.

    ``theta_star`` / ``fisher``: ``{parameter name: tensor}`` with the same keys and shapes;
    ``parent_state_dict``: the stage-1 relation head's state dict (:func:`relation_head_state`);
    ``confidence``: optional float ``[P+1]`` per-predicate validation recall of the stage-1 model;
    ``meta``: optional plain values (iterations, predictor name, ...).
    """
    if set(theta_star) != set(fisher):
        raise ValueError("theta_star and fisher must have the same parameter names")
    bad = [n for n in theta_star if tuple(theta_star[n].shape) != tuple(fisher[n].shape)]
    if bad:
        raise ValueError(f"theta_star and fisher differ in shape for {bad[:5]}")
    obj = {
        "format": _FORMAT,
        "version": _VERSION,
        "theta_star": _cpu(theta_star),
        "fisher": _cpu(fisher),
        "hierarchy": hierarchy.to_dict(),
        "parent": _cpu(parent_state_dict),
        "confidence": None if confidence is None else torch.as_tensor(confidence, dtype=torch.float32).cpu().clone(),
        "meta": dict(meta or {}),
    }
    path = stage1_file(directory)
    atomic_torch_save(obj, path)
    logger.info("HML stage-1 memory (%d anchored tensors, %d entries) saved to %s", len(theta_star),
                sum(t.numel() for t in theta_star.values()), path)
    return path


def load_stage1(directory: str) -> Stage1State:
    """Read :func:`save_stage1`'s file (``directory`` or the file path itself) onto the CPU."""
    path = stage1_file(directory)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"HML stage-1 file not found: {path}. Run stage 1 first (MODEL.HML.STAGE 1 or 0) or point "
            f"MODEL.HML.STAGE1_DIR at the folder that holds {STAGE1_FILE}.")
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("format") != _FORMAT:
        raise ValueError(f"{path} is not an HML stage-1 file")
    if int(obj.get("version", 0)) > _VERSION:
        raise ValueError(f"{path} has format version {obj['version']}; this sgg reads up to {_VERSION}")
    return Stage1State(theta_star=dict(obj["theta_star"]), fisher=dict(obj["fisher"]),
                       hierarchy=PredicateHierarchy.from_dict(obj["hierarchy"]),
                       parent_state_dict=dict(obj["parent"]), confidence=obj.get("confidence"),
                       meta=dict(obj.get("meta") or {}))
