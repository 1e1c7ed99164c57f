"""The predicate hierarchy of HML: which predicates are coarse (learnt in stage 1) and which are fine
refinements of a coarse one (learnt in stage 2).

Predicate ids are 1-based as everywhere in ``sgg`` (0 = background / "no relation"). A hierarchy
holds, for the ``P`` predicates:

* ``coarse_ids``: the stage-1 predicates (sorted);
* ``fine_ids``: every other predicate 1..P (sorted);
* ``parent``: ``[P+1]`` ints, ``parent[0] = 0``, ``parent[c] = c`` for a coarse ``c``, ``parent[f]`` =
  the coarse predicate ``f`` refines, or 0 when the source declares none (the frequency split
  knows no parents).

Sources: :meth:`PredicateHierarchy.from_frequency` (the K most frequent predicates of train are
coarse, as the HML paper does on VG150), :meth:`~PredicateHierarchy.from_file` (JSON, see there) and
:meth:`~PredicateHierarchy.from_dataset_dir` (the ``predicate_hierarchy.json`` a SynthVG folder
holds); :func:`build_hierarchy` picks one of them from ``MODEL.HML.HIERARCHY``.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from yacs.config import CfgNode as CN

logger = logging.getLogger(__name__)

__all__ = ["IGNORE_INDEX", "PredicateHierarchy", "HIERARCHY_FILE", "build_hierarchy"]

#: Target of a pair that the loss skips (``F.cross_entropy``'s default ``ignore_index``).
IGNORE_INDEX = -100

#: The file name a dataset folder declares its hierarchy in (SynthVG writes it).
HIERARCHY_FILE = "predicate_hierarchy.json"

_BACKGROUND = "__background__"


def _as_names(predicate_names: Optional[Sequence[str]]) -> Optional[List[str]]:
    """``predicate_names`` with or without ``'__background__'`` at 0 -> the ``[P+1]`` list."""
    if predicate_names is None:
        return None
    names = [str(n) for n in predicate_names]
    if not names or names[0] != _BACKGROUND:
        names = [_BACKGROUND] + names
    return names


class PredicateHierarchy:
    """Coarse / fine split of the predicates 1..P (see the module doc).

    Args:
        num_predicates: P (background excluded).
        coarse_ids: the coarse (stage-1) predicate ids, each in 1..P.
        parent: optional ``[P+1]`` parents (``parent[c] == c`` for coarse ``c``; a fine predicate's
            parent must be coarse or 0 = unknown). Default: coarse map to themselves, fine to 0.
        names: optional ``[P+1]`` predicate names (``'__background__'`` first) or ``[P]``.
    """

    def __init__(self, num_predicates: int, coarse_ids: Sequence[int], parent: Optional[Sequence[int]] = None,
                 names: Optional[Sequence[str]] = None) -> None:
        P = int(num_predicates)
        if P < 1:
            raise ValueError(f"num_predicates must be >= 1, got {P}")
        coarse = sorted({int(c) for c in coarse_ids})
        bad = [c for c in coarse if not 1 <= c <= P]
        if bad:
            raise ValueError(f"coarse predicate ids must be in 1..{P}, got {bad}")
        if not coarse:
            raise ValueError("a predicate hierarchy needs at least one coarse predicate")
        if parent is None:
            par = [0] * (P + 1)
            for c in coarse:
                par[c] = c
        else:
            par = [int(p) for p in parent]
            if len(par) != P + 1:
                raise ValueError(f"parent must have P+1 = {P + 1} entries, got {len(par)}")
        cset = set(coarse)
        if par[0] != 0:
            raise ValueError("parent[0] (background) must be 0")
        for p in range(1, P + 1):
            if p in cset and par[p] != p:
                raise ValueError(f"coarse predicate {p} must be its own parent, got {par[p]}")
            if p not in cset and par[p] != 0 and par[p] not in cset:
                raise ValueError(f"fine predicate {p} has parent {par[p]}, which is not coarse")
        self.num_predicates = P
        self.coarse_ids: List[int] = coarse
        self.fine_ids: List[int] = [p for p in range(1, P + 1) if p not in cset]
        self.parent: List[int] = par
        nm = _as_names(names)
        if nm is not None and len(nm) != P + 1:
            raise ValueError(f"names must list the P = {P} predicates (background optional), got {len(nm) - 1}")
        self.names: Optional[List[str]] = nm

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_frequency(cls, predicate_counts: Union[Sequence[int], np.ndarray, torch.Tensor], num_coarse: int,
                       names: Optional[Sequence[str]] = None) -> "PredicateHierarchy":
        """The ``num_coarse`` most frequent predicates are coarse (ties: lower id first).

        ``predicate_counts``: ``[P+1]`` train counts per predicate (index 0, background, is
        ignored), e.g. ``statistics["predicate_counts"]``. Fine predicates get parent 0 (the counts
        say nothing about which coarse word a fine one refines).
        """
        counts = np.asarray(torch.as_tensor(predicate_counts).cpu().numpy(), dtype=np.float64).reshape(-1)
        P = counts.shape[0] - 1
        k = int(num_coarse)
        if k < 1:
            raise ValueError(f"num_coarse (MODEL.HML.NUM_COARSE) must be >= 1, got {k}")
        if k >= P:
            logger.warning("num_coarse %d >= number of predicates %d: every predicate is coarse, stage 1 "
                           "and stage 2 see the same classes", k, P)
            k = P
        fg = counts[1:]
        order = np.lexsort((np.arange(P), -fg))  # count descending, then id ascending
        coarse = (order[:k] + 1).tolist()
        return cls(P, coarse, names=names)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any],
                  predicate_names: Optional[Sequence[str]] = None) -> "PredicateHierarchy":
        """From a parsed hierarchy file (see :meth:`from_file`) or from :meth:`to_dict`'s output."""
        if "num_predicates" in data and "parent" in data and isinstance(data["parent"], (list, tuple)):
            return cls(int(data["num_predicates"]), data["coarse"], data["parent"],
                       names=data.get("names") or predicate_names)
        names = _as_names(predicate_names)
        idx_of: Dict[str, int]
        if "predicate_to_idx" in data:
            idx_of = {str(k): int(v) for k, v in data["predicate_to_idx"].items()}
            if names is not None:
                disagree = [n for n, i in idx_of.items() if i >= len(names) or names[i] != n]
                if disagree or len(idx_of) != len(names) - 1:
                    raise ValueError(f"the hierarchy's predicate_to_idx disagrees with the dataset's predicate "
                                     f"names (e.g. {disagree[:5]})")
            else:
                names = [_BACKGROUND] + [n for n, _ in sorted(idx_of.items(), key=lambda kv: kv[1])]
        elif names is not None:
            idx_of = {n: i for i, n in enumerate(names) if i > 0}
        else:
            raise ValueError("a hierarchy file without 'predicate_to_idx' needs the dataset's predicate names")
        P = len(names) - 1

        def resolve(x: Union[str, int]) -> int:
            if isinstance(x, int) or (isinstance(x, str) and x.isdigit() and x not in idx_of):
                i = int(x)
                if not 1 <= i <= P:
                    raise ValueError(f"predicate id {i} is outside 1..{P}")
                return i
            if x not in idx_of:
                raise ValueError(f"unknown predicate {x!r} in the hierarchy (known: {sorted(idx_of)})")
            return idx_of[x]

        if "coarse" not in data:
            raise ValueError("a hierarchy file needs a 'coarse' list of predicates")
        coarse = [resolve(c) for c in data["coarse"]]
        cset = set(coarse)
        parent = [0] * (P + 1)
        for c in coarse:
            parent[c] = c
        pairs = []
        if isinstance(data.get("parent"), Mapping):
            pairs = [(resolve(k), resolve(v)) for k, v in data["parent"].items()]
        elif isinstance(data.get("children"), Mapping):
            pairs = [(resolve(f), resolve(c)) for c, fs in data["children"].items() for f in fs]
        for child, par in pairs:
            if child in cset:
                if par != child:
                    raise ValueError(f"coarse predicate {names[child]!r} has parent {names[par]!r}; a coarse "
                                     f"predicate must be its own parent")
                continue
            if par not in cset:
                raise ValueError(f"predicate {names[child]!r} has parent {names[par]!r}, which is not coarse")
            parent[child] = par
        orphans = [names[p] for p in range(1, P + 1) if parent[p] == 0]
        if orphans:
            logger.warning("predicate hierarchy: %d predicates are neither coarse nor given a parent; they are "
                           "fine (stage 2 only): %s", len(orphans), orphans)
        return cls(P, coarse, parent, names=names)

    @classmethod
    def from_file(cls, path: str, predicate_names: Optional[Sequence[str]] = None) -> "PredicateHierarchy":
        """Read a JSON hierarchy.

        Accepted layouts (names or 1-based ids):

        * ``{"coarse": [names], "parent": {fine_name: coarse_name, ...}}`` (coarse predicates may
          appear in ``parent`` mapping to themselves; predicates in neither are fine, parent 0);
        * ``{"coarse": [...], "children": {coarse_name: [fine_name, ...]}}``;
        * SynthVG's ``predicate_hierarchy.json`` (``coarse``, ``fine``, ``children``, ``parent``,
          ``predicate_to_idx``, ...), whose ``predicate_to_idx`` gives the ids;
        * :meth:`to_dict`'s output.

        ``predicate_names``: the dataset's names (``ind_to_predicates``, background first or not);
        needed when the file has no ``predicate_to_idx``, checked against it otherwise.
        """
        if not os.path.isfile(path):
            raise FileNotFoundError(f"predicate hierarchy file not found: {path}")
        with open(path, "r") as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: not valid JSON: {e}") from e
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: a hierarchy file holds a JSON object")
        try:
            return cls.from_dict(data, predicate_names)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from e

    @classmethod
    def from_dataset_dir(cls, dataset_dir: str, predicate_names: Optional[Sequence[str]] = None
                         ) -> "PredicateHierarchy":
        """The hierarchy a dataset folder declares in ``predicate_hierarchy.json`` (SynthVG)."""
        path = os.path.join(dataset_dir, HIERARCHY_FILE)
        if not os.path.isfile(path):
            raise FileNotFoundError(
                f"MODEL.HML.HIERARCHY 'dataset': {dataset_dir} declares no predicate hierarchy ({HIERARCHY_FILE} "
                f"is missing). Use 'frequency' (the NUM_COARSE most frequent predicates) or a JSON file path.")
        return cls.from_file(path, predicate_names)

    def to_dict(self) -> Dict[str, Any]:
        """Plain (JSON / ``torch.load(weights_only=True)``-safe) form; :meth:`from_dict` reads it."""
        return {"num_predicates": self.num_predicates, "coarse": list(self.coarse_ids),
                "parent": list(self.parent), "names": list(self.names) if self.names else None}

    # -- queries ---------------------------------------------------------------------------------
    @property
    def num_classes(self) -> int:
        """P+1 (background included)."""
        return self.num_predicates + 1

    @property
    def coarse_names(self) -> List[str]:
        return [self.name(c) for c in self.coarse_ids]

    def name(self, idx: int) -> str:
        return self.names[idx] if self.names else str(idx)

    def children(self) -> Dict[int, List[int]]:
        """coarse id -> its fine ids (declared parents only)."""
        out: Dict[int, List[int]] = {c: [] for c in self.coarse_ids}
        for f in self.fine_ids:
            if self.parent[f]:
                out[self.parent[f]].append(f)
        return out

    def stage_classes(self, stage: int) -> torch.Tensor:
        """int64 class indices a stage trains on, background included: stage 1 ``[0, coarse...]``,
        stage 2 ``[0, 1, ..., P]``."""
        if stage == 1:
            return torch.tensor([0] + self.coarse_ids, dtype=torch.long)
        if stage == 2:
            return torch.arange(self.num_predicates + 1, dtype=torch.long)
        raise ValueError(f"HML stages are 1 and 2, got {stage}")

    def stage1_target_map(self) -> torch.Tensor:
        """int64 ``[P+1]``: label -> stage-1 target (background and coarse kept, fine -> IGNORE)."""
        m = torch.arange(self.num_predicates + 1, dtype=torch.long)
        if self.fine_ids:
            m[torch.tensor(self.fine_ids, dtype=torch.long)] = IGNORE_INDEX
        return m

    def stage1_targets(self, rel_labels: torch.Tensor) -> torch.Tensor:
        """Stage-1 targets of predicate labels (int ``[...]`` in 0..P): a pair labelled with a fine
        predicate becomes :data:`IGNORE_INDEX` (it is skipped by the loss, NOT turned into
        background); background and coarse labels are kept. Entries already < 0 stay as they are."""
        labels = rel_labels.long()
        m = self.stage1_target_map().to(labels.device)
        if labels.numel() and int(labels.max()) > self.num_predicates:
            raise ValueError(f"predicate label {int(labels.max())} > P = {self.num_predicates}")
        return torch.where(labels >= 0, m[labels.clamp(min=0)], labels)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PredicateHierarchy):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return (f"PredicateHierarchy(P={self.num_predicates}, coarse={self.coarse_names}, "
                f"{len(self.fine_ids)} fine)")


def _train_dir(cfg: CN) -> str:
    """The folder of DATASETS.TRAIN[0] (where a dataset declares its hierarchy)."""
    from sgg.data.catalog import get_dataset_files

    return get_dataset_files(cfg.DATASETS.TRAIN[0], cfg.DATASETS.DATA_DIR).root


def build_hierarchy(cfg: CN, statistics: Mapping[str, Any], dataset_dir: Optional[str] = None) -> PredicateHierarchy:
    """The hierarchy of MODEL.HML.HIERARCHY from the train ``statistics`` (``predicate_counts``,
    ``rel_classes``; see :mod:`sgg.data.statistics`). ``dataset_dir`` (for "dataset") defaults to
    the folder of DATASETS.TRAIN[0]."""
    spec = cfg.MODEL.HML.HIERARCHY
    names = statistics.get("rel_classes")
    if spec == "frequency":
        hier = PredicateHierarchy.from_frequency(statistics["predicate_counts"], cfg.MODEL.HML.NUM_COARSE, names)
        declared = dataset_dir
        if declared is None:
            try:
                declared = _train_dir(cfg)
            except Exception:  # noqa: BLE001 - only for the hint below; the dataset's errors come when it is built
                declared = None
        if declared is not None and os.path.isfile(os.path.join(declared, HIERARCHY_FILE)):
            logger.warning("MODEL.HML.HIERARCHY frequency: the %d most frequent train predicates are coarse, although "
                           "%s declares a predicate hierarchy (%s). Rare predicates that the dataset calls coarse "
                           "are then learnt only in the class-balanced stage 2; set MODEL.HML.HIERARCHY dataset to "
                           "use the declared one", cfg.MODEL.HML.NUM_COARSE, declared, HIERARCHY_FILE)
    elif spec == "dataset":
        hier = PredicateHierarchy.from_dataset_dir(dataset_dir if dataset_dir is not None else _train_dir(cfg), names)
    else:
        hier = PredicateHierarchy.from_file(spec, names)
    logger.info("HML predicate hierarchy (%s): %d coarse %s, %d fine", spec, len(hier.coarse_ids),
                hier.coarse_names, len(hier.fine_ids))
    return hier
